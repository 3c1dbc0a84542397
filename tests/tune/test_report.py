"""Sweep reporting: marginal sensitivity, the top-trials table and the two plots."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from rayrag.tune.report import (
    TrialRecord,
    format_sensitivity,
    format_top_trials,
    plot_objective_by,
    plot_objective_grid,
    sensitivity,
    sensitivity_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def completed(trial_id: str, objective: float, **params) -> TrialRecord:
    return TrialRecord(
        trial_id,
        params,
        "completed",
        {"objective": objective, "recall_at_5": objective + 0.1, "p50_ms": 41.6},
    )


@pytest.fixture
def records() -> list[TrialRecord]:
    # lora_rank moves the objective by 0.4 (0.20 vs 0.60); top_k by 0.04 (0.38 vs 0.42).
    return [
        completed("t1", 0.18, lora_rank=0, top_k=2, retriever="bm25"),
        completed("t2", 0.22, lora_rank=0, top_k=4, retriever="dense"),
        completed("t3", 0.58, lora_rank=8, top_k=2, retriever="dense"),
        completed("t4", 0.62, lora_rank=8, top_k=4, retriever="bm25"),
        # ASHA stopped it after a lucky first report: must not enter any mean.
        TrialRecord(
            "t5",
            {"lora_rank": 0, "top_k": 2, "retriever": "bm25"},
            "stopped",
            {"objective": 0.99},
            iterations=1,
        ),
        TrialRecord(
            "t6",
            {"lora_rank": 16, "top_k": 8, "retriever": "dense"},
            "error",
            {},
            error="CUDA out of memory. " + "x" * 300,
        ),
    ]


def by_knob(rows: list[dict]) -> dict[str, dict]:
    return {row["knob"]: row for row in rows}


def test_objective_only_for_completed_trials():
    assert completed("a", 0.5).objective == 0.5
    assert TrialRecord("b", {}, "stopped", {"objective": 0.9}).objective is None
    assert TrialRecord("c", {}, "completed", {}).objective is None


def test_sensitivity_ranks_the_knob_that_matters_first(records):
    rows = sensitivity(records, ["top_k", "retriever", "lora_rank"])
    assert [row["knob"] for row in rows] == ["lora_rank", "top_k", "retriever"]

    lora, top_k, retriever = (
        by_knob(rows)["lora_rank"],
        by_knob(rows)["top_k"],
        by_knob(rows)["retriever"],
    )
    assert lora["means"] == pytest.approx({0: 0.20, 8: 0.60})  # 16 only errored: absent
    assert lora["counts"] == {0: 2, 8: 2}
    assert lora["range"] == pytest.approx(0.40)
    assert lora["best_value"] == 8
    assert lora["values_seen"] == 2
    assert top_k["means"] == pytest.approx({2: 0.38, 4: 0.42})
    assert top_k["range"] == pytest.approx(0.04)
    assert top_k["best_value"] == 4
    assert retriever["means"] == pytest.approx({"bm25": 0.40, "dense": 0.40})
    assert retriever["range"] == pytest.approx(0.0)


def test_spearman_sign_and_when_it_is_undefined(records):
    rows = by_knob(sensitivity(records, ["lora_rank", "top_k", "retriever"]))
    assert rows["lora_rank"]["spearman"] > 0.8
    assert 0 < rows["top_k"]["spearman"] < rows["lora_rank"]["spearman"]
    assert rows["retriever"]["spearman"] is None  # strings have no rank order

    falling = [
        completed(f"c{size}", 1.0 - size / 1000, chunk_size=size) for size in (128, 256, 512)
    ]
    assert by_knob(sensitivity(falling, ["chunk_size"]))["chunk_size"]["spearman"] == pytest.approx(
        -1.0
    )
    two_trials = falling[:2]
    assert sensitivity(two_trials, ["chunk_size"])[0]["spearman"] is None
    one_value = [completed(f"s{i}", 0.1 * i, chunk_size=256) for i in range(3)]
    row = sensitivity(one_value, ["chunk_size"])[0]
    assert row["spearman"] is None
    assert row["range"] == 0.0 and row["values_seen"] == 1 and row["best_value"] == 256


def test_record_missing_a_knob_is_skipped_for_that_knob():
    records = [
        completed("a", 0.2, top_k=2, lora_rank=0),
        completed("b", 0.6, top_k=4),
        completed("c", 0.4, lora_rank=4),
    ]
    rows = by_knob(sensitivity(records, ["top_k", "lora_rank"]))
    assert rows["top_k"]["means"] == pytest.approx({2: 0.2, 4: 0.6})
    assert rows["lora_rank"]["means"] == pytest.approx({0: 0.2, 4: 0.4})
    assert rows["lora_rank"]["counts"] == {0: 1, 4: 1}


def test_sensitivity_with_no_completed_trials():
    rows = sensitivity([TrialRecord("x", {"top_k": 2}, "error", error="boom")], ["top_k"])
    assert rows == [
        {
            "knob": "top_k",
            "means": {},
            "counts": {},
            "values_seen": 0,
            "range": 0.0,
            "best_value": None,
            "spearman": None,
        }
    ]
    assert "no completed trials" in format_sensitivity(rows)
    assert sensitivity_table(rows) == []


def test_format_sensitivity_lists_knobs_in_order(records):
    text = format_sensitivity(sensitivity(records, ["top_k", "lora_rank"]))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["knob", "range", "best", "spearman"]
    assert lines[2].startswith("lora_rank") and lines[3].startswith("top_k")
    assert "0: 0.2 (n=2), 8: 0.6 (n=2)" in lines[2]
    assert format_sensitivity([]) == "no knobs"


def test_sensitivity_table_is_flat(records):
    table = sensitivity_table(sensitivity(records, ["lora_rank", "top_k"]))
    assert table[0] == {
        "knob": "lora_rank",
        "value": 0,
        "mean_objective": pytest.approx(0.2),
        "trials": 2,
        "range": pytest.approx(0.4),
    }
    assert [(row["knob"], row["value"]) for row in table] == [
        ("lora_rank", 0),
        ("lora_rank", 8),
        ("top_k", 2),
        ("top_k", 4),
    ]


def test_format_top_trials_orders_and_summarises(records):
    text = format_top_trials(records, ["lora_rank", "top_k"], n=3)
    lines = text.splitlines()
    assert lines[0].split() == [
        "rank",
        "trial",
        "lora_rank",
        "top_k",
        "objective",
        "context_recall",
        "recall_at_5",
        "answer_f1",
        "p50_ms",
        "val_loss",
    ]
    assert [line.split()[:2] for line in lines[2:5]] == [["1", "t4"], ["2", "t3"], ["3", "t2"]]
    assert lines[2].split() == ["1", "t4", "8", "4", "0.62", "-", "0.72", "-", "42", "-"]
    assert "t5" not in "\n".join(lines[2:5])  # stopped, however lucky its report
    assert "6 trials: 4 completed, 1 stopped early, 1 errored" in text
    error_line = next(line for line in lines if "errors:" in line)
    assert "t6: CUDA out of memory." in error_line
    assert len(error_line) < 130  # the 300-char message is cut to ~100


def test_format_top_trials_shows_at_most_three_errors():
    failed = [TrialRecord(f"e{i}", {}, "error", error=f"failure {i}") for i in range(5)]
    text = format_top_trials(failed, ["top_k"])
    assert text.startswith("no completed trials")
    assert "failure 2" in text and "failure 3" not in text and "2 more" in text


@pytest.mark.parametrize(
    "make_plot",
    [
        lambda recs: plot_objective_grid(recs, row_knob="lora_rank", col_knob="top_k"),
        lambda recs: plot_objective_by(recs, knob="lora_rank"),
    ],
    ids=["grid", "by"],
)
def test_plots_save_as_png(make_plot, records, tmp_path):
    # A grid hole ((0, 8) never completed) and a record lacking a knob must both be fine.
    recs = [*records, completed("t7", 0.5, lora_rank=16, top_k=8), completed("t8", 0.3, top_k=2)]
    fig = make_plot(recs)
    assert isinstance(fig, Figure)
    path = tmp_path / "plot.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_grid_annotates_means_counts_and_holes(records):
    fig = plot_objective_grid(records, row_knob="lora_rank", col_knob="top_k")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.18\nn=1", "0.22\nn=1", "0.58\nn=1", "0.62\nn=1"]
    holes = plot_objective_grid(
        [*records, completed("t7", 0.5, lora_rank=16, top_k=8)],
        row_knob="lora_rank",
        col_knob="top_k",
    )
    assert [t.get_text() for t in holes.axes[0].texts].count("-") == 4  # 3x3 grid, 5 filled
    assert len(holes.axes) == 2  # heatmap and colorbar


@pytest.mark.parametrize("make_plot", [plot_objective_grid, plot_objective_by], ids=["grid", "by"])
def test_plots_with_no_completed_trials(make_plot, tmp_path):
    stopped = [TrialRecord("s", {"chunk_size": 128, "top_k": 2, "lora_rank": 0}, "stopped")]
    for recs in ([], stopped):
        fig = make_plot(recs)
        assert "no completed trials" in [t.get_text() for t in fig.axes[0].texts]
        fig.savefig(tmp_path / "empty.png")
        assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_sensitivity_of_a_metric_every_trial_reports_includes_stopped_trials():
    # The first rung's validation loss: the stopped trial (top_k 2) counts, the failed one not.
    recs = [
        TrialRecord("a", {"top_k": 2}, "stopped", {"first_val_loss": 4.4}),
        TrialRecord("b", {"top_k": 8}, "completed", {"objective": 0.3, "first_val_loss": 4.1}),
        TrialRecord("c", {"top_k": 8}, "completed", {"objective": 0.3, "first_val_loss": 4.3}),
        TrialRecord("d", {"top_k": 4}, "error", {"first_val_loss": 1.0}),
        TrialRecord("e", {"top_k": 4}, "stopped", {}),
    ]
    (row,) = sensitivity(recs, ["top_k"], metric="first_val_loss", lower_is_better=True)
    assert row["means"] == {2: pytest.approx(4.4), 8: pytest.approx(4.2)}
    assert (
        row["counts"] == {2: 1, 8: 2}
        and row["best_value"] == 8
        and row["range"] == pytest.approx(0.2)
    )
    (by_objective,) = sensitivity(recs, ["top_k"])  # the objective: completed trials only
    assert by_objective["means"] == {8: pytest.approx(0.3)} and by_objective["range"] == 0.0
    assert "mean val_loss per value" in format_sensitivity([row], measure="val_loss")
    assert sensitivity_table([row], measure="val_loss")[0] == {
        "knob": "top_k",
        "value": 2,
        "mean_val_loss": 4.4,
        "trials": 1,
        "range": pytest.approx(0.2),
    }
