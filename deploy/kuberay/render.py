"""Write rayrag/configs/serve_config.yaml into deploy/kuberay/rayservice.yaml's `serveConfigV2`.

The RayService must serve the same application `serve deploy rayrag/configs/serve_config.yaml`
does, so the manifest's serve config is generated from that file rather than kept by hand:

    python deploy/kuberay/render.py           # rewrite the serveConfigV2 block in place
    python deploy/kuberay/render.py --check   # exit 1 when the manifest is stale (CI)

Only the block under `serveConfigV2: |` is rewritten; the rest of the manifest (and its
comments) is left as written. Everything but `http_options.host` is copied: in Kubernetes the
Serve proxy must listen on 0.0.0.0, or KubeRay's serve Service (pod port 8000) cannot reach
it. tests/test_deploy.py checks the manifest is current and the config deploys.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "rayrag" / "configs" / "serve_config.yaml"
MANIFEST = Path(__file__).resolve().with_name("rayservice.yaml")
# The block scalar's header line and its body: every following line that is indented deeper
# than the key, or blank.
_BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2: \|\n(?P<body>(?:(?P=indent)[ ]+.*\n|[ ]*\n)*)",
                    re.MULTILINE)
POD_HTTP_HOST = "0.0.0.0"


def serve_config_v2(serve_config: dict[str, Any]) -> dict[str, Any]:
    """The serve config as the RayService deploys it: the file's, bound to every interface."""
    rendered = dict(serve_config)
    rendered["http_options"] = {**serve_config.get("http_options", {}), "host": POD_HTTP_HOST}
    return rendered


def render(manifest: str, serve_config: dict[str, Any]) -> str:
    """`manifest` with its serveConfigV2 block replaced by `serve_config` (as YAML text)."""
    match = _BLOCK.search(manifest)
    if match is None:
        raise SystemExit("render.py: no `serveConfigV2: |` block in the manifest")
    indent = match["indent"] + "  "
    text = yaml.safe_dump(serve_config_v2(serve_config), sort_keys=False, default_flow_style=False)
    body = "".join(indent + line + "\n" if line else "\n" for line in text.splitlines())
    return manifest[: match.start("body")] + body + manifest[match.end("body"):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the manifest is stale.")
    args = parser.parse_args(argv)
    current = MANIFEST.read_text(encoding="utf-8")
    fresh = render(current, yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8")))
    if args.check:
        if fresh != current:
            print(f"{MANIFEST.relative_to(REPO)} is stale: run python deploy/kuberay/render.py",
                  file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
