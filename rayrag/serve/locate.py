"""Where a replica finds its bundle and model: resolved where it runs, never where the app
was built (`serve build` may run on a laptop without them; a cluster node has its own disk)."""

from __future__ import annotations

from pathlib import Path

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError


def locate_bundle(ref: str | Path) -> Path:
    """The bundle a ref names, here; a ConfigError saying how to make one when it is not."""
    bundle = Path(ref)
    if not (bundle / "manifest.json").is_file():
        raise ConfigError(
            f"no index bundle at {bundle}: run `make demo` or `rayrag ingest`, "
            "or pass bundle=PATH / set RAYRAG_BUNDLE"
        )
    return bundle.resolve()


def locate_model(ref: str | Path, config: RAGConfig) -> Path:
    """The checkpoint a ref names, here: a registry URI (`models:/NAME@ALIAS`) is downloaded
    once to `tracking.model_cache`; a ConfigError when there is none."""
    if str(ref).startswith("models:/"):
        from rayrag.tracking.model_registry import resolve_model

        model = resolve_model(str(ref), config.tracking)
    else:
        model = Path(ref)
    if not (model / "config.json").is_file():
        raise ConfigError(
            f"no generator checkpoint at {model}: run `make demo` or `rayrag train`, "
            "or pass model=PATH / set RAYRAG_MODEL"
        )
    return model.resolve()
