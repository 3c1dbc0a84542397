"""`build_app(args) -> Application`: the whole serve graph, and `app` for `serve run`.

    serve run rayrag.serve.app:app                       # default config, or $RAYRAG_CONFIG
    serve run rayrag.serve.app:build_app config=rayrag/configs/demo.yaml bundle=B model=CKPT
    serve deploy rayrag/configs/serve_config.yaml        # the same builder, from a config file
    rayrag serve [--config demo]                         # the convenience wrapper

Arguments (all optional; Serve passes `key=value` pairs as strings): `config` (a name in
rayrag/configs/ or a YAML path), `bundle`, `model`, and `set` (comma-separated `section.key=value`
overrides). The bundle and model fall back to $RAYRAG_BUNDLE / $RAYRAG_MODEL, then to
`serve.bundle` / `serve.model` in the config, whose defaults are where `make demo` leaves
them. `model` may be a registry URI, `models:/rayrag-generator@champion`: the version it
names is downloaded (once) and served, and its digest is the answers' `model_version`. Each stage
gets its resources and limits from `serve.*`: fractional CPUs so the six stages fit a laptop,
`max_ongoing_requests` per replica, and on the Ingress `max_queued_requests`, so overload becomes a
fast 503 instead of a growing queue.

`app` is built on first access (PEP 562), so importing this module needs no bundle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.serve import Application

from rayrag.config import RAGConfig, resolve_config
from rayrag.serve.locate import locate_bundle, locate_model

DEFAULT_BUNDLE = ".rayrag/demo/bundle"
DEFAULT_MODEL = ".rayrag/demo/model"


def resolve_refs(args: dict[str, Any]) -> tuple[RAGConfig, str, str]:
    """(config, bundle ref, model ref) from the builder args, the environment and the config,
    without touching the disk: `serve build` runs where the artefacts may not be. A relative
    ref that exists here is made absolute (a local `serve run`); otherwise it is passed on as
    given and each replica resolves it where it runs (a cluster node, a container's workdir)."""
    overrides = [s for s in str(args.get("set") or "").split(",") if s.strip()]
    config = resolve_config(args.get("config") or os.environ.get("RAYRAG_CONFIG"), overrides)
    bundle = str(
        args.get("bundle")
        or os.environ.get("RAYRAG_BUNDLE")
        or config.serve.bundle
        or DEFAULT_BUNDLE
    )
    model = str(
        args.get("model") or os.environ.get("RAYRAG_MODEL") or config.serve.model or DEFAULT_MODEL
    )
    if Path(bundle).exists():
        bundle = str(Path(bundle).resolve())
    if not model.startswith("models:/") and Path(model).exists():
        model = str(Path(model).resolve())
    return config, bundle, model


def resolve(args: dict[str, Any]) -> tuple[RAGConfig, Path, Path]:
    """(config, bundle, model), checked here: what `rayrag serve` verifies before Ray starts.
    With `generator.backend: openai` no checkpoint is read: the model ref is passed unchecked."""
    config, bundle, model = resolve_refs(args)
    if config.generator.backend == "openai":
        return config, locate_bundle(bundle), Path(model)
    return config, locate_bundle(bundle), locate_model(model, config)


def shard_placement(config: RAGConfig) -> dict[str, Any]:
    """With generator.num_shards > 1, the Generator replica's placement group: its own bundle
    plus one per ExpertShard (a GPU each when the cluster has GPUs), gang-scheduled together;
    the shards the replica starts land in those bundles."""
    shards = config.generator.num_shards
    if shards <= 1:
        return {}
    from rayrag.generator.sharded import cluster_gpus

    gpus = cluster_gpus()
    shard_bundle = {
        "CPU": config.generator.shard_num_cpus,
        **({"GPU": 1} if gpus >= shards else {}),
    }
    return {
        "placement_group_bundles": [{"CPU": config.serve.generator_num_cpus}]
        + [shard_bundle] * shards,
        "placement_group_strategy": "PACK",
    }


def pin_prompt(config: RAGConfig, model: str = "") -> RAGConfig:
    """The config with `tracking.prompt_version` pinned (`pin_reader_prompt`): the config's
    pin, else the `prompt_version` tag of the registry version `model` names, else the built-in
    template's version, so every stage and every answer names the same prompt."""
    return pin_served_prompt(config, model)[0]


def pin_served_prompt(config: RAGConfig, model: str = "") -> tuple[RAGConfig, str | None]:
    """`pin_prompt` and the pinned version's template text, loaded once here and handed to the
    Generator stage, so its replicas serve it without reaching MLflow."""
    from rayrag.generator.prompt import pin_reader_prompt
    from rayrag.tracking.model_registry import model_prompt_tag

    return pin_reader_prompt(config, model_prompt_tag(model, config.tracking))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The deployment graph: Ingress over Redactor, Retriever, Ranker, Generator, Guard."""
    from rayrag.serve.deployments import (
        GeneratorStage,
        GuardStage,
        RankerStage,
        RedactorStage,
        RetrieverStage,
    )
    from rayrag.serve.ingress import Ingress

    config, bundle, model = resolve_refs(dict(args or {}))
    config, template = pin_served_prompt(config, model)
    s = config.serve
    config_json = config.model_dump_json()

    def stage(num_cpus: float) -> dict[str, Any]:
        return {
            "num_replicas": s.num_replicas,
            "max_ongoing_requests": s.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": num_cpus},
        }

    redactor = RedactorStage.options(**stage(s.stage_num_cpus)).bind(config_json, str(bundle))
    retriever = RetrieverStage.options(**stage(s.stage_num_cpus)).bind(config_json, str(bundle))
    ranker = RankerStage.options(**stage(s.stage_num_cpus)).bind(config_json, str(bundle))
    generator = GeneratorStage.options(
        **stage(s.generator_num_cpus), **shard_placement(config)
    ).bind(config_json, str(model), template)
    guard = GuardStage.options(**stage(s.stage_num_cpus)).bind(config_json, str(bundle))
    return Ingress.options(
        **stage(s.stage_num_cpus), max_queued_requests=s.max_queued_requests
    ).bind(redactor, retriever, ranker, generator, guard, config_json, str(bundle))


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
