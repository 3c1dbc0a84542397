"""cluster.yaml: Ray's own launcher checks accept it, and its nodes install what `make venv` does.

`ray up` runs `prepare_config` (defaults, merged setup commands, per-type worker limits) and
`validate_config` (jsonschema against ray/autoscaler/ray-schema.json plus Ray's cross-field
checks) before it talks to the cloud; this test runs exactly those two steps, offline. The
rest reads the file the way a node would: mounts that exist, the Makefile's torch pin, the
Ray version pyproject pins, and the environment deploy/cluster/node-env.sh gives each node.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rayrag.config import RAGConfig

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
CPU_TORCH_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
NVIDIA_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p5.")


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text(encoding="utf-8"))


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to the file before any cloud call (commands._bootstrap_config)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def torch_pin() -> str:
    match = re.search(r"^TORCH_PIN\s*:?=\s*(\S+)\s*$", MAKEFILE, re.MULTILINE)
    assert match, "Makefile has no TORCH_PIN"
    return match[1]


def ray_minor() -> str:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'"ray\[[^\]]*\]>=(\d+\.\d+),<(\d+\.\d+)"', pyproject)
    assert match, "pyproject.toml has no ray[...]>=X.Y,<X.Z pin"
    return match[1]


def test_rays_schema_and_config_fill_accept_the_file(cluster):
    jsonschema.validate(cluster, json.loads(RAY_SCHEMA.read_text()))  # the file as written
    prepared = ray_up_checks(cluster)  # and as `ray up` fills it in
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize(
    "break_it, needle",
    [
        (
            lambda c: c["available_node_types"]["cpu_worker"].update(min_worker=1),
            "'min_worker' was unexpected",
        ),
        (lambda c: c.update(max_workers="12"), "'12' is not of type 'integer'"),
        (lambda c: c.update(head_start_ray_commands="ray start --head"), "is not of type 'array'"),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
            "0.5 is not of type 'integer'",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
            "'node_config' is a required property",
        ),
        (lambda c: c.update(max_workers=0), "smaller than the sum of `min_workers`"),
        (
            lambda c: c.update(head_node_type="gpu_head"),
            "`head_node_type` must be one of `available_node_types`",
        ),
    ],
    ids=[
        "misspelled-key",
        "string-count",
        "string-commands",
        "fractional-gpu",
        "no-node-config",
        "cap-below-minimum",
        "unknown-head-type",
    ],
)
def test_the_validator_is_live_a_broken_copy_is_rejected(cluster, break_it, needle):
    broken = copy.deepcopy(cluster)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as info:
        ray_up_checks(broken)
    assert needle in str(info.value)


def test_node_types_offer_the_resources_they_are_for(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]["resources"]
    assert head["CPU"] == 0 and head["GPU"] == 0  # nothing schedules on the head
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    cpu = [t for t in workers.values() if t["resources"]["GPU"] == 0]
    gpu = [t for t in workers.values() if t["resources"]["GPU"] > 0]
    assert cpu and gpu
    for node_type in workers.values():
        resources = node_type["resources"]
        assert resources["CPU"] > 0 and resources["memory"] > 0
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
    assert all(t["node_config"]["InstanceType"].startswith(NVIDIA_FAMILIES) for t in gpu)
    assert not any(t["node_config"]["InstanceType"].startswith(NVIDIA_FAMILIES) for t in cpu)
    assert all(t["min_workers"] >= 1 for t in cpu)  # Serve has a node to land on at once
    # One image everywhere, with an NVIDIA driver and a Python `make venv` accepts (>= 3.10):
    # not Ray's latest_dlami, an Ubuntu 18.04 image whose system Python is 3.6.
    (image,) = {t["node_config"]["ImageId"] for t in types.values()}
    assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/")
    assert "nvidia-driver" in image and "ubuntu-22.04" in image
    # rayrag picks GPU paths from the GPUs present (ray.cluster_resources()), not from what the
    # autoscaler could add: a GPU type scaled to zero would leave them unused.
    assert all(t["min_workers"] >= 1 for t in gpu)
    # The global cap is the sum of the types' caps: neither limit is dead configuration.
    assert cluster["max_workers"] == sum(t["max_workers"] for t in workers.values())


def test_file_mounts_ship_what_make_venv_and_serve_deploy_read(cluster):
    mounts = cluster["file_mounts"]
    outside = {remote: local for remote, local in mounts.items() if local.startswith("~")}
    # The one source outside the repo is the secrets file, so it can never be committed.
    assert outside == {"~/.rayrag/cluster.env": "~/.rayrag/cluster.env"}
    assert (REPO / "deploy" / "cluster" / "cluster.env.example").is_file()
    for remote, local in mounts.items():
        if remote in outside:
            continue
        assert (REPO / local).exists(), f"file_mounts source {local} is not in the repo"
        assert remote == "~/rayrag/" + Path(local).name  # the checkout's layout, under ~/rayrag
    shipped = {Path(local).name for remote, local in mounts.items() if remote not in outside}
    assert {"rayrag", "deploy", "pyproject.toml", "README.md", "Makefile"} <= shipped
    # What the commands run from the mounts exists here.
    commands = " ".join(_all_commands(cluster))
    for script in ("deploy/cluster/node-env.sh", "deploy/mlflow/mlflow-server.sh"):
        assert f"~/rayrag/{script}" in commands and (REPO / script).is_file()


def _all_commands(config: dict[str, Any]) -> list[str]:
    keys = (
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    commands = [c for key in keys for c in config.get(key, [])]
    for node_type in config["available_node_types"].values():
        commands += node_type.get("worker_setup_commands", [])
    return commands


def test_every_command_is_valid_bash(cluster):
    for command in _all_commands(cluster):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, f"{command!r}: {result.stderr}"


def test_every_node_installs_rayrag_like_make_venv_with_the_makefiles_torch_pin(cluster):
    pin = torch_pin()
    assert re.search(r"^venv:", MAKEFILE, re.MULTILINE)
    prepared = ray_up_checks(cluster)
    common = prepared["setup_commands"]
    installs = {
        "head": prepared["head_setup_commands"],
        "cpu_worker": prepared["worker_setup_commands"],
        "gpu_worker": prepared["available_node_types"]["gpu_worker"]["worker_setup_commands"],
    }
    for node_type, commands in installs.items():
        # A node type's own list replaces the merged one, so it must repeat the common steps.
        assert commands[: len(common)] == common, node_type
        (make,) = [c for c in commands if c.startswith("make -C ~/rayrag venv")]
        if "TORCH_PIN=" in make:  # an override must keep the Makefile's pin
            assert re.search(rf'TORCH_PIN="{re.escape(pin)}[ "]', make), node_type
        if node_type == "gpu_worker":
            assert CPU_TORCH_INDEX not in make  # PyPI's Linux wheel: the CUDA build
            assert any(
                "torch.cuda.is_available()" in c and "faiss.get_num_gpus()" in c for c in commands
            )
        else:
            assert CPU_TORCH_INDEX in make
        assert any(f"startswith('{ray_minor()}.')" in c for c in commands), node_type


def test_the_ray_version_the_nodes_check_is_the_one_pyproject_pins():
    assert ray.__version__.startswith(ray_minor() + ".")


def test_the_shared_disk_is_mounted_from_the_providers_region(cluster):
    (mount,) = [c for c in cluster["setup_commands"] if "mount -t nfs4" in c]
    assert f".efs.{cluster['provider']['region']}.amazonaws.com" in mount
    assert cluster["provider"]["availability_zone"].startswith(cluster["provider"]["region"])


def _makefile_exports() -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)\s*:?=\s*(\S+)\s*$", MAKEFILE, re.MULTILINE))


def _node_env(home: Path) -> dict[str, str]:
    script = REPO / "deploy" / "cluster" / "node-env.sh"
    result = subprocess.run(
        ["bash", "-c", f'. "{script}" && env -0'],
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)


def test_node_env_gives_every_node_the_venv_the_makefile_env_the_secrets_and_mlflow(tmp_path):
    (tmp_path / ".rayrag").mkdir()
    (tmp_path / ".rayrag" / "head_ip").write_text("10.0.3.7\n")
    (tmp_path / ".rayrag" / "cluster.env").write_text("RAYRAG_HMAC_KEY=k-not-a-real-key-0123\n")
    env = _node_env(tmp_path)
    assert env["PATH"].startswith(f"{tmp_path}/rayrag/.venv/bin:")
    exports = _makefile_exports()
    assert exports and {k: env.get(k) for k in exports} == exports
    assert env["RAYRAG_HMAC_KEY"] == "k-not-a-real-key-0123"
    assert env["MLFLOW_TRACKING_URI"] == "http://10.0.3.7:5000"
    assert env["RAYRAG_BUNDLE"] == "/mnt/rayrag/bundle"
    assert env["RAYRAG_MODEL"].startswith("models:/")
    # A tracking server named in cluster.env wins; without a head address the head is local.
    (tmp_path / ".rayrag" / "cluster.env").write_text(
        "MLFLOW_TRACKING_URI=https://mlflow.example.internal\n"
    )
    assert _node_env(tmp_path)["MLFLOW_TRACKING_URI"] == "https://mlflow.example.internal"
    (tmp_path / ".rayrag" / "cluster.env").unlink()
    (tmp_path / ".rayrag" / "head_ip").unlink()
    assert _node_env(tmp_path)["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


def test_the_env_example_names_every_secret_and_setting_the_nodes_read(cluster):
    text = (REPO / "deploy" / "cluster" / "cluster.env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^(\w+)=", text, re.MULTILINE))
    config = RAGConfig()
    redaction = config.governance.redaction
    needed = {
        redaction.hmac_key_env,
        redaction.encryption_key_env,
        config.serve.keys_env,
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
    }
    commands = " ".join(_all_commands(cluster))
    needed |= set(re.findall(r"\$\{?(RAYRAG_\w+|MLFLOW_\w+)", commands))
    assert needed <= names, needed - names
    # Every value in the example is empty or an obvious placeholder: no secret ever lands here.
    for name, value in re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE):
        assert value == "" or "CHANGE-ME" in value, name
