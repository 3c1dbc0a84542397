"""The scale bench's curves at toy sizes (format, loose sanity), its slope and ratio maths, plots.

The ingest and serve curves are tested with their modules (tests/bench/test_scale_ingest_serve.py);
here they appear only as hand-written curve dicts.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayrag.bench import BENCHES, run_bench, scale, scale_moe, scale_plot, scale_ppr, scale_search
from rayrag.bench.scale_plot import write_plots
from rayrag.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_curve_format(curve: dict, name: str) -> None:
    """The contract every curve module returns (rayrag/bench/scale.py docstring)."""
    assert curve["name"] == name
    assert isinstance(curve["x"], str) and isinstance(curve["y"], str)
    assert curve["series"]
    for points in curve["series"].values():
        xs = [x for x, _ in points]
        assert xs == sorted(xs) and len(set(xs)) == len(xs), xs
        assert all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for p in points for v in p
        )
        assert all(y > 0 for _, y in points), points
    assert all(isinstance(v, (int, float)) for v in curve["per_unit"].values())
    assert isinstance(curve["meta"], dict)
    json.dumps(curve)  # the CLI prints it


def test_search_curve_format_and_exact_search_grows_with_the_index():
    curve = scale_search.curve(sizes=(500, 5_000), hnsw_max=500, timed_queries=9)
    assert_curve_format(curve, "search")
    assert set(curve["series"]) == {"flat", "ivf", "hnsw", "ivf_acl"}
    assert [x for x, _ in curve["series"]["hnsw"]] == [500]  # HNSW stops at hnsw_max
    flat = dict(curve["series"]["flat"])
    # Exact search scans every vector: 10x the vectors must not be much faster (loose: noise).
    assert flat[5_000] > 0.7 * flat[500], flat
    detail = curve["meta"]["sizes_detail"]["5000"]
    assert set(detail["recall_at_10"]) == {"ivf", "ivf_acl"}
    assert all(0 <= r <= 1 for r in detail["recall_at_10"].values())
    assert detail["ivf"]["factory"].startswith("IVF")


def test_embedding_like_vectors_are_unit_norm_and_clustered():
    vectors = scale_search.embedding_like(2_000, seed=1)
    assert vectors.shape == (2_000, scale_search.DIM)
    assert abs(float((vectors**2).sum(axis=1).mean()) - 1) < 1e-4
    # Clustered: the nearest other vector is far closer than in uniform noise (cosine ~0.2).
    sims = vectors[:200] @ vectors.T
    sims[range(200), range(200)] = -1
    assert float(sims.max(axis=1).mean()) > 0.5


def test_ppr_curve_format_and_networkx_cap():
    curve = scale_ppr.curve(sizes=(300, 3_000), networkx_max=300, queries=4)
    assert_curve_format(curve, "ppr")
    assert len(curve["series"]["sparse"]) == 2 and len(curve["series"]["networkx"]) == 1
    # the local solver `kg.ppr_method: auto` picks past 20k nodes
    assert len(curve["series"]["push"]) == 2
    assert curve["per_unit"]["sparse_ms_per_query_per_1m_edges"] > 0
    detail = curve["meta"]["sizes_detail"]["3000"]
    assert 0.5 <= detail["push_top10_overlap"] <= 1 and 0 <= detail["push_top10_identical"] <= 1


def test_moe_curve_format_at_toy_dims(monkeypatch):
    monkeypatch.setenv("RAYRAG_BENCH_THREADS", "1")
    curve = scale_moe.curve(experts=(2, 8), d_model=16, ffn_dim=32, tokens=64, rounds=1)
    assert_curve_format(curve, "moe")
    assert set(curve["series"]) == {"train_step", "forward"}
    assert [x for x, _ in curve["series"]["train_step"]] == [2, 8]
    meta = curve["meta"]
    assert meta["torch_threads"] == 1 and meta["dense_equivalent_ms"]["train_step"] > 0
    # Fixed active parameters: total expert weights grow with E, the per-token share does not.
    assert meta["total_expert_params"]["8"] == 4 * meta["total_expert_params"]["2"]


def test_loglog_slope_recovers_a_power_law():
    points = [[x, 3.0 * x**0.75] for x in (10, 100, 1_000, 10_000)]
    assert scale.loglog_slope(points) == pytest.approx(0.75, abs=1e-9)
    assert scale.loglog_slope([[10, 1.0], [100, 10.0]]) == pytest.approx(1.0)
    assert scale.loglog_slope([[10, 1.0]]) is None


def _curve(name: str, x: str, y: str, series: dict[str, list[list[float]]], **meta) -> dict:
    return {"name": name, "x": x, "y": y, "series": series, "per_unit": {"unit": 1.0}, "meta": meta}


def synthetic_curves() -> dict[str, dict]:
    return {
        "ingest": _curve(
            "ingest", "corpus_tokens", "seconds", {"pipeline": [[1_000, 2.0], [10_000, 18.0]]}
        ),
        "search": _curve(
            "search",
            "vectors",
            "ms_p50",
            {"flat": [[10_000, 1.0], [1_000_000, 100.0]], "hnsw": [[10_000, 0.2], [30_000, 0.3]]},
        ),
        "ppr": _curve(
            "ppr",
            "graph_nodes",
            "ms_p50",
            {
                "sparse": [[1_000, 1.0], [300_000, 150.0]],
                "networkx": [[1_000, 8.0], [10_000, 80.0]],
            },
        ),
        "serve": _curve(
            "serve", "replicas", "requests_per_s", {"requests_per_s": [[1, 10.0], [2, 19.0]]}
        ),
        "moe": _curve(
            "moe",
            "experts",
            "ms_median_step",
            {"train_step": [[8, 100.0], [64, 130.0]], "forward": [[8, 30.0], [64, 33.0]]},
            cpu_ms={"train_step/8": 90.0, "train_step/64": 108.0},
            dense_equivalent_ms={"train_step": 95.0, "forward": 28.0},
        ),
    }


def test_ratios_follow_the_contract():
    ratios = scale.summarise(synthetic_curves(), quick=True)["ratios"]
    assert ratios["moe_time_e64_vs_e8_fixed_active"] == 1.3
    assert ratios["moe_time_e64_vs_e8_fixed_active_cpu"] == 1.2
    assert ratios["moe_time_e64_vs_e8_fixed_active_forward"] == 1.1
    assert ratios["serve_throughput_2_vs_1_replicas"] == 1.9
    assert ratios["search_p50_1m_vs_10k_flat"] == 100.0
    assert ratios["search_p50_30k_vs_10k_hnsw"] == 1.5
    assert ratios["ppr_p50_largest_vs_smallest"] == 150.0
    assert ratios["ppr_p50_largest_vs_smallest_networkx"] == 10.0
    assert ratios["ingest_linearity"] == pytest.approx(0.9)


def test_summary_slopes_and_plots_are_png(tmp_path: Path):
    result = scale.summarise(synthetic_curves(), quick=True)
    assert result["bench"] == "scale"
    assert result["slopes"]["search"]["flat"] == pytest.approx(1.0)
    assert result["slopes"]["moe"]["train_step"] == pytest.approx(
        math.log(1.3) / math.log(8), abs=1e-3
    )
    paths = write_plots(result, tmp_path / "plots")
    assert sorted(p.name for p in paths) == sorted(f"scaling_{n}.png" for n in result["curves"])
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list((tmp_path / "plots").glob(".*.tmp"))  # atomic writes leave no temp files


def test_scale_writes_to_its_output_folder_and_docs_only_on_request(tmp_path: Path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "SCALING.md").write_text("# How rayrag's cost grows\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAYRAG_BENCH_OUT", raising=False)
    monkeypatch.setattr(
        scale, "CURVES", {"ppr": SimpleNamespace(curve=lambda quick: synthetic_curves()["ppr"])}
    )
    full = scale.run(quick=False)  # a full run writes to .rayrag/bench/scale, not docs/
    assert [Path(p) for p in full["plots"]] == [Path(".rayrag/bench/scale/scaling_ppr.png")]
    assert json.loads(Path(full["result_file"]).read_text())["ratios"] == full["ratios"]
    assert sorted(p.name for p in docs.iterdir()) == ["SCALING.md"]
    monkeypatch.setenv("RAYRAG_BENCH_OUT", str(tmp_path / "elsewhere"))
    assert Path(scale.run(quick=True)["plots"][0]).parent == tmp_path / "elsewhere" / "scale"
    assert (
        Path(scale.run(quick=True, out_dir=tmp_path / "given")["plots"][0]).parent
        == tmp_path / "given" / "scale"
    )
    assert sorted(p.name for p in docs.iterdir()) == ["SCALING.md"]
    with pytest.raises(ConfigError, match="full run"):
        scale.run(quick=True, docs=True)
    written = scale.run(quick=False, docs=True)["docs_plots"]  # the explicit request
    assert [Path(p) for p in written] == [Path("docs/scaling_ppr.png")]
    assert (docs / "scaling_ppr.png").read_bytes()[:8] == PNG_MAGIC


def test_docs_pictures_come_from_a_saved_full_result_in_the_repository_root(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    result = scale.summarise(synthetic_curves(), quick=False)
    saved = tmp_path / "scale.json"
    saved.write_text(json.dumps(result))
    # no docs/SCALING.md here: not the repository root
    assert scale_plot.main([str(saved), "--docs"]) == 1
    assert "SCALING.md" in capsys.readouterr().err and not (tmp_path / "docs").exists()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "SCALING.md").write_text("x")
    saved_quick = tmp_path / "quick.json"
    saved_quick.write_text(json.dumps(scale.summarise(synthetic_curves(), quick=True)))
    # a quick run never becomes the docs' figures
    assert scale_plot.main([str(saved_quick), "--docs"]) == 1
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["SCALING.md"]
    assert scale_plot.main([str(saved), "--docs"]) == 0
    assert sorted(p.name for p in (tmp_path / "docs").glob("scaling_*.png")) == sorted(
        f"scaling_{name}.png" for name in result["curves"]
    )
    assert scale_plot.main([str(saved), "--out", str(tmp_path / "plots")]) == 0
    assert len(list((tmp_path / "plots").glob("scaling_*.png"))) == len(result["curves"])


def test_scale_is_a_registered_bench_and_runs_end_to_end(monkeypatch, tmp_path: Path):
    assert BENCHES["scale"] == "rayrag.bench.scale"
    assert callable(importlib.import_module(BENCHES["scale"]).run)
    # The runner over real (tiny) ppr and moe curves; ingest and serve are tested with B2's modules.
    monkeypatch.setenv("RAYRAG_BENCH_THREADS", "1")
    monkeypatch.setenv("RAYRAG_BENCH_OUT", str(tmp_path / "out"))
    monkeypatch.setattr(
        scale,
        "CURVES",
        {
            "ppr": SimpleNamespace(
                curve=lambda quick: scale_ppr.curve(sizes=(300, 3_000), queries=3)
            ),
            "moe": SimpleNamespace(
                curve=lambda quick: scale_moe.curve(
                    experts=(8, 64), d_model=16, ffn_dim=32, tokens=64, rounds=1
                )
            ),
        },
    )
    result = json.loads(json.dumps(run_bench("scale", quick=True)))
    assert result["bench"] == "scale" and set(result["curves"]) == {"ppr", "moe"}
    assert result["ratios"]["moe_time_e64_vs_e8_fixed_active"] > 0
    assert result["ratios"]["ppr_nodes_largest_vs_smallest"] == pytest.approx(10, rel=0.2)
    assert set(result["slopes"]["ppr"]) == {"sparse", "push", "networkx"}
    assert result["ratios"]["ppr_push_vs_sparse_at_largest"] > 0
    assert [Path(p).name for p in result["plots"]] == ["scaling_ppr.png", "scaling_moe.png"]
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in result["plots"])
    assert all(Path(p).parent == tmp_path / "out" / "scale" for p in result["plots"])


def test_run_bench_passes_options_and_names_the_ones_a_bench_lacks(monkeypatch):
    with pytest.raises(ConfigError, match="bench kg takes no option bundle"):
        run_bench("kg", quick=True, bundle="b")
    seen = {}
    monkeypatch.setattr(
        scale,
        "run",
        lambda quick, out_dir=None, docs=False: (
            seen.update(quick=quick, out_dir=out_dir, docs=docs) or {"bench": "scale", "ratios": {}}
        ),
    )
    run_bench("scale", quick=True, out_dir="o", docs=None)  # None: the option was not given
    assert seen == {"quick": True, "out_dir": "o", "docs": False}
