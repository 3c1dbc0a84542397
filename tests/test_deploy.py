"""deploy/: the KubeRay RayService serves rayrag/configs/serve_config.yaml, the MLflow server script
passes flags `mlflow server` has, and every Secret, volume and image the manifests name exists.

No cluster and no network: the RayService is checked against the structure of KubeRay's
ray.io/v1 types (the field names and required fields of RayServiceSpec, RayClusterSpec,
HeadGroupSpec and WorkerGroupSpec, written out below), its serve config against Ray's own
ServeDeploySchema and rayrag's config, and the MLflow script against the installed CLI.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from rayrag.config import RAGConfig, resolve_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
MANIFEST = DEPLOY / "kuberay" / "rayservice.yaml"
MLFLOW_SCRIPT = DEPLOY / "mlflow" / "mlflow-server.sh"

# KubeRay ray.io/v1 (ray-operator/apis/ray/v1/rayservice_types.go, raycluster_types.go): the
# json field names the CRD accepts; an unknown one is dropped or rejected by the API server.
RAYSERVICE_SPEC_FIELDS = {
    "serveConfigV2",
    "rayClusterConfig",
    "serveService",
    "upgradeStrategy",
    "excludeHeadPodFromServeSvc",
    "rayClusterDeletionDelaySeconds",
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
}
RAYCLUSTER_SPEC_FIELDS = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "gcsFaultToleranceOptions",
    "managedBy",
    "upgradeStrategy",
    "authOptions",
}
HEAD_GROUP_FIELDS = {
    "serviceType",
    "headService",
    "enableIngress",
    "rayStartParams",
    "template",
    "resources",
    "labels",
}
WORKER_GROUP_FIELDS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "idleTimeoutSeconds",
    "suspend",
    "resources",
    "labels",
}
WORKER_GROUP_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}


def _load_render():
    spec = importlib.util.spec_from_file_location(
        "rayrag_deploy_render", DEPLOY / "kuberay" / "render.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def serve_file() -> dict[str, Any]:
    return yaml.safe_load(
        (REPO / "rayrag" / "configs" / "serve_config.yaml").read_text(encoding="utf-8")
    )


def _documents() -> list[dict[str, Any]]:
    """Every Kubernetes object under deploy/ (Grafana's JSON is not one)."""
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def _ray_groups(rayservice: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return {
        "head": cluster["headGroupSpec"],
        **{g["groupName"]: g for g in cluster["workerGroupSpecs"]},
    }


def _containers(pod_templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for t in pod_templates for c in t["spec"]["containers"]]


# --- the serve config ----------------------------------------------------------------------


def test_the_manifest_is_rendered_from_the_serve_config(rayservice, serve_file):
    current = MANIFEST.read_text(encoding="utf-8")
    assert render.render(current, serve_file) == current, "run python deploy/kuberay/render.py"
    assert render.main(["--check"]) == 0
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded["applications"] == serve_file["applications"]
    assert {k: v for k, v in embedded.items() if k != "http_options"} == {
        k: v for k, v in serve_file.items() if k != "http_options"
    }


def test_a_stale_manifest_is_detected_and_rewritten(serve_file):
    current = MANIFEST.read_text(encoding="utf-8")
    stale = current.replace(
        "      - name: Guard\n        num_replicas: 1",
        "      - name: Guard\n        num_replicas: 3",
    )
    assert stale != current
    assert render.render(stale, serve_file) == current


def test_serve_config_v2_deploys_the_rayrag_graph(rayservice):
    from ray.serve.schema import ServeDeploySchema

    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    deploy = ServeDeploySchema.model_validate(embedded)
    assert deploy.http_options.host == "0.0.0.0"  # reachable through KubeRay's serve Service
    for app in deploy.applications:
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        args = app.args or {}
        overrides = [s for s in str(args.get("set") or "").split(",") if s.strip()]
        config = resolve_config(args.get("config"), overrides)
        assert isinstance(config, RAGConfig)
        # A tracking_uri in the config would win over the pods' MLFLOW_TRACKING_URI.
        assert config.tracking.tracking_uri is None
    serve_port = embedded["http_options"]["port"]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "serve", "containerPort": serve_port} in head["ports"]


# --- the RayService's structure ------------------------------------------------------------


def test_rayservice_has_kuberays_structure(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    spec = rayservice["spec"]
    assert set(spec) <= RAYSERVICE_SPEC_FIELDS and {"serveConfigV2", "rayClusterConfig"} <= set(
        spec
    )
    assert isinstance(spec["serveConfigV2"], str)  # a YAML string, not a mapping
    cluster = spec["rayClusterConfig"]
    assert set(cluster) <= RAYCLUSTER_SPEC_FIELDS
    assert cluster["autoscalerOptions"]["upscalingMode"] in UPSCALING_MODES
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS and {"rayStartParams", "template"} <= set(head)
    names = [g["groupName"] for g in cluster["workerGroupSpecs"]]
    assert len(names) == len(set(names))
    for group in cluster["workerGroupSpecs"]:
        assert WORKER_GROUP_REQUIRED <= set(group) <= WORKER_GROUP_FIELDS, group["groupName"]
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    for name, group in _ray_groups(rayservice).items():
        # map[string]string in the CRD: an unquoted number is rejected by the API server.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name


def test_ray_containers_have_resources_and_the_gpu_group_has_gpus(rayservice):
    groups = _ray_groups(rayservice)
    assert groups["head"]["rayStartParams"]["num-cpus"] == "0"  # as cluster.yaml's head
    for name, group in groups.items():
        ray_container = group["template"]["spec"]["containers"][0]  # KubeRay's Ray container
        resources = ray_container["resources"]
        assert {"cpu", "memory"} <= set(resources["limits"]), name
        assert resources["requests"] == resources["limits"], name
        gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
        if name == "gpu":
            assert gpus >= 1 and ray_container["image"].endswith("-gpu")
            assert group["minReplicas"] >= 1  # rayrag uses the GPUs present, not those it could get
        else:
            assert gpus == 0 and ray_container["image"].endswith("-cpu")
    assert "gpu" in groups and "cpu" in groups


def test_ray_versions_agree_across_pyproject_manifest_image_and_this_venv(rayservice):
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    minor = re.search(r'"ray\[[^\]]*\]>=(\d+\.\d+),', pyproject)[1]
    version = rayservice["spec"]["rayClusterConfig"]["rayVersion"]
    assert version.startswith(minor + ".") and ray.__version__.startswith(minor + ".")
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert f"ARG RAY_IMAGE=rayproject/ray:{version}-py311-cpu" in dockerfile
    assert f"rayproject/ray:{version}-py311-gpu" in dockerfile
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    pin = re.search(r"^TORCH_PIN\s*:?=\s*(\S+)", makefile, re.MULTILINE)[1]
    assert f"ARG TORCH_PIN={pin}\n" in dockerfile
    assert "pip install --no-cache-dir -e ." in dockerfile  # rayrag/configs/ next to the package


# --- secrets, volumes, MLflow wiring -------------------------------------------------------


def _env_vars(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for c in containers for e in c.get("env", [])]


def test_every_secret_reference_names_a_secret_defined_in_deploy(rayservice):
    docs = _documents()
    defined = {
        (d["metadata"]["name"], key)
        for d in docs
        if d["kind"] == "Secret"
        for key in {**d.get("data", {}), **d.get("stringData", {})}
    }
    templates = [g["template"] for g in _ray_groups(rayservice).values()]
    templates += [d["spec"]["template"] for d in docs if d["kind"] == "Deployment"]
    env = _env_vars(_containers(templates))
    refs = [e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref in refs:
        assert (ref["name"], ref["key"]) in defined, ref
    # Secrets only from Secrets: nothing that looks like one has a literal value.
    for var in env:
        if re.search(r"KEY|SECRET|PASSWORD|TOKEN|STORE_URI", var["name"]):
            assert "value" not in var, var["name"]
    for value in [d for d in docs if d["kind"] == "Secret"]:
        # an example, never a secret
        assert all(v == "" for v in value.get("stringData", {}).values())


def test_every_ray_container_gets_the_secrets_rayrag_reads_and_the_mlflow_service(rayservice):
    config = RAGConfig()
    needed = {
        config.governance.redaction.hmac_key_env,
        config.governance.redaction.encryption_key_env,
        config.serve.keys_env,
    }
    (service,) = [
        d for d in _documents() if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow"
    ]
    mlflow_url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    for name, group in _ray_groups(rayservice).items():
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        assert all("secretKeyRef" in env[n]["valueFrom"] for n in needed), name
        assert env["MLFLOW_TRACKING_URI"]["value"] == mlflow_url, name
        mounts = {
            m["mountPath"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]
        }
        assert any(env["RAYRAG_BUNDLE"]["value"].startswith(m + "/") for m in mounts), name


def test_every_volume_claim_is_a_shared_claim_defined_in_deploy(rayservice):
    claims = {
        d["metadata"]["name"]: d for d in _documents() if d["kind"] == "PersistentVolumeClaim"
    }
    for name, group in _ray_groups(rayservice).items():
        for volume in group["template"]["spec"]["volumes"]:
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]
            # every pod reads the bundle
            assert "ReadWriteMany" in claim["spec"]["accessModes"], name


def test_mlflow_deployment_and_service_fit_together():
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "mlflow" / "mlflow.yaml").read_text())
    }
    deployment, service = docs["Deployment"], docs["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports and ports["http"] == 5000
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["command"] == ["/usr/local/bin/mlflow-server.sh"]
    dockerfile = (DEPLOY / "mlflow" / "Dockerfile").read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    mlflow_pin = re.search(r'"(mlflow[^"]*)"', pyproject)[1]
    assert f'"{mlflow_pin}" psycopg2-binary boto3' in dockerfile
    assert "COPY deploy/mlflow/mlflow-server.sh /usr/local/bin/mlflow-server.sh" in dockerfile


# --- the MLflow server script --------------------------------------------------------------


def _script_flags() -> list[str]:
    text = MLFLOW_SCRIPT.read_text(encoding="utf-8")
    command = text[text.index("exec mlflow server") :]
    return re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", command)


def test_every_flag_the_script_passes_is_one_mlflow_server_has():
    flags = _script_flags()
    assert {
        "--backend-store-uri",
        "--artifacts-destination",
        "--serve-artifacts",
        "--host",
        "--port",
        "--allowed-hosts",
    } <= set(flags)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    mlflow = Path(sys.executable).parent / "mlflow"
    help_text = subprocess.run(
        [str(mlflow), "server", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    known = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text))
    assert set(flags) <= known, set(flags) - known


def _run_script(**env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], **env}
    return subprocess.run(
        ["bash", str(MLFLOW_SCRIPT)], capture_output=True, text=True, env=clean, timeout=30
    )


@pytest.mark.parametrize(
    "env, needle",
    [
        ({}, "set MLFLOW_BACKEND_STORE_URI"),
        (
            {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:pw@db:5432/mlflow"},
            "set MLFLOW_ARTIFACTS_DESTINATION",
        ),
        (
            {
                "MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db",
                "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/a",
            },
            "must be a shared database",
        ),
        (
            {
                "MLFLOW_BACKEND_STORE_URI": "postgresql://u:pw@db/mlflow",
                "MLFLOW_ARTIFACTS_DESTINATION": "/tmp/art",
            },
            "must be object storage",
        ),
    ],
    ids=["no-backend", "no-artifacts", "sqlite-backend", "local-artifacts"],
)
def test_the_script_refuses_to_start_without_a_shared_store(env, needle):
    result = _run_script(**env)
    assert result.returncode != 0 and result.stdout == ""
    assert needle in result.stderr and result.stderr.count("\n") == 1  # one line
    assert "pw" not in result.stderr  # a password in the URI is never echoed


# --- the LLM serve config (docs/GPU.md) ------------------------------------------------------

LLM_FILE = REPO / "rayrag" / "configs" / "serve_llm_config.yaml"
LLM_CONFIG_SOURCE = "llm/_internal/serve/core/configs/llm_config.py"


def _pydantic_fields(source: Path, cls: str) -> set[str]:
    """The annotated fields of class `cls` in `source` (Ray Serve LLM's pydantic models, read
    from Ray's installed source: importing them needs vLLM, which a CPU machine lacks)."""
    import ast

    tree = ast.parse(source.read_text(encoding="utf-8"))
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return {
        s.target.id
        for s in node.body
        if isinstance(s, ast.AnnAssign)
        and isinstance(s.target, ast.Name)
        and not s.target.id.startswith("_")
    }


def test_the_llm_serve_config_deploys_a_moe_with_expert_parallelism_beside_rayrag():
    from ray.serve.schema import ServeDeploySchema

    deploy = ServeDeploySchema.model_validate(yaml.safe_load(LLM_FILE.read_text()))
    apps = {a.name: a for a in deploy.applications}
    assert set(apps) == {"llm", "rayrag"}
    llm, rag = apps["llm"], apps["rayrag"]
    assert llm.import_path == "ray.serve.llm:build_openai_app" and llm.route_prefix == "/llm"
    source = Path(ray.__file__).parent / LLM_CONFIG_SOURCE
    (model,) = llm.args["llm_configs"]
    assert set(model) <= _pydantic_fields(source, "LLMConfig"), set(model)
    loading = model["model_loading_config"]
    assert set(loading) <= _pydantic_fields(source, "ModelLoadingConfig")
    assert model["engine_kwargs"]["enable_expert_parallel"] is True  # vLLM's EP for MoE layers

    # The rayrag app's Generator sends its prompts to that model, on the same proxy.
    assert rag.import_path == "rayrag.serve.app:build_app" and rag.route_prefix == "/"
    config = resolve_config(rag.args["config"], rag.args["set"].split(","))
    backend = config.generator.openai
    assert config.generator.backend == "openai" and backend.model == loading["model_id"]
    assert backend.base_url == f"http://127.0.0.1:{deploy.http_options.port}{llm.route_prefix}/v1"
    assert backend.api_key_env == ""  # the in-cluster LLM takes no key
