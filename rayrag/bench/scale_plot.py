"""Log-log PNG plots of `rayrag bench scale` curves (one file per curve), for docs/SCALING.md.

matplotlib with the Agg backend (no display needed); each PNG is written through
`rayrag.atomic.atomic_path`, so a reader never sees half a plot. On log-log axes a power law
y ~ x^b is a straight line of slope b; each series' legend entry carries its fitted slope.

The bench writes its plots to its output folder; the tracked pictures docs/SCALING.md embeds
are refreshed only on request, from a saved full run:

    python -m rayrag.bench.scale_plot .rayrag/bench/scale/scale.json --docs   # from the repo root
    python -m rayrag.bench.scale_plot RESULT.json --out DIR                   # anywhere else
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: benches run on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from rayrag.atomic import atomic_path  # noqa: E402
from rayrag.errors import ConfigError  # noqa: E402

_MARKERS = "osD^v<>p"
RESULT_FILE = "scale.json"  # the bench's result, beside its plots
DOCS_PAGE = "SCALING.md"  # the page that embeds the pictures; marks the docs folder


def plot_curve(curve: dict[str, Any], slopes: dict[str, float | None], path: Path) -> Path:
    """One curve's series on log-log axes, written atomically to `path` (PNG)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    try:
        for i, (name, points) in enumerate(curve["series"].items()):
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            slope = slopes.get(name)
            label = name if slope is None else f"{name} (slope {slope:.2f})"
            ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], label=label)
        dense = curve.get("meta", {}).get("dense_equivalent_ms")
        if curve["name"] == "moe" and dense:  # the reference the MoE is compared against
            for name, ms in dense.items():
                ax.axhline(ms, linestyle="--", linewidth=1, color="grey")
                ax.annotate(
                    f"dense equivalent {name}",
                    (0.02, ms),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color="grey",
                    va="bottom",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(curve["x"])
        ax.set_ylabel(curve["y"])
        ax.set_title(f"rayrag bench scale: {curve['name']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
            tmp.chmod(0o644)  # a plot for docs/, readable like any other file there
    finally:
        plt.close(fig)
    return path


def write_plots(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """`scaling_<curve>.png` in `out_dir` for every curve in a scale result; the paths written."""
    out_dir = Path(out_dir)
    slopes = result.get("slopes", {})
    return [
        plot_curve(curve, slopes.get(name, {}), out_dir / f"scaling_{name}.png")
        for name, curve in result["curves"].items()
    ]


def docs_folder(docs_dir: str | Path = "docs") -> Path:
    """The repository's docs folder (relative to the working directory), checked by its
    SCALING.md: a one-line ConfigError elsewhere."""
    folder = Path(docs_dir)
    if not (folder / DOCS_PAGE).is_file():
        raise ConfigError(
            f"no {folder / DOCS_PAGE}: refresh the docs' pictures from the repository root"
        )
    return folder


def refresh_docs(result: dict[str, Any], docs_dir: str | Path = "docs") -> list[Path]:
    """docs/scaling_<curve>.png from a full scale result; a quick one is refused (ConfigError)."""
    if result.get("quick", True):
        raise ConfigError(
            "the docs' pictures come from a full `rayrag bench scale` run; this result is quick"
        )
    return write_plots(result, docs_folder(docs_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rayrag.bench.scale_plot",
        description="Plot a saved `rayrag bench scale` result.",
    )
    parser.add_argument("result", type=Path, help="the bench's scale.json")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--docs", action="store_true", help="refresh docs/scaling_*.png (full runs only)"
    )
    where.add_argument("--out", type=Path, help="write the PNGs to this folder instead")
    args = parser.parse_args(argv)
    try:
        result = json.loads(args.result.read_text(encoding="utf-8"))
        if args.docs:
            paths = refresh_docs(result)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            paths = write_plots(result, args.out)
    except (OSError, ValueError, KeyError, ConfigError) as error:
        print(f"scale_plot: {error}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
