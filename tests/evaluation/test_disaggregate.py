"""Disaggregation on hand-made frames:
group means, CIs, gaps, small slices, worst groups, charts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rayrag.config import RAGConfig
from rayrag.evaluation.disaggregate import (
    MISSING,
    disaggregate,
    gap_tags,
    group_label,
    log_disaggregation,
    metric_key,
    plot_metric,
    slices,
)


def eval_config(**changes):
    return RAGConfig().evaluation.model_copy(
        update={
            "bootstrap_samples": 100,
            "ci_level": 0.9,
            "gap_threshold": 0.1,
            "min_slice_size": 3,
            **changes,
        }
    )


@pytest.fixture
def frame():
    # hops=1: f1 mean 1.0 (n=4); hops=2: f1 mean 0.25 (n=4); hops=3: f1 0.0 but n=1 (too small)
    # leaks: hops=2 leaks twice (rate .5): the worst group for a lower-is-better metric.
    return pd.DataFrame(
        {
            "answer_f1": [1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.0, 0.0],
            "pii_leak_rate": [0, 0, 0, 0, 1, 1, 0, 0, 0],
            "citation_precision": [1.0, None, 1.0, 1.0, 0.5, 0.5, None, None, None],
            "hops": [1, 1, 1, 1, 2, 2, 2, 2, 3],
            "region": ["eu", "us", "eu", "us", "eu", "us", "eu", "us", None],
        },
        dtype=object,
    )


def test_group_means_overall_and_differences(frame):
    report = disaggregate(
        frame,
        ["answer_f1", "pii_leak_rate", "citation_precision"],
        ["hops", "region"],
        eval_config(),
        seed=0,
    )
    assert report["overall"]["answer_f1"] == pytest.approx(5 / 9, abs=1e-6)
    groups = {g["value"]: g for g in report["by_key"]["hops"]["answer_f1"]["groups"]}
    assert groups["1"]["metric"] == 1.0 and groups["1"]["n"] == 4
    assert groups["2"]["metric"] == pytest.approx(0.25) and groups["2"]["n"] == 4
    assert groups["2"]["difference"] == pytest.approx(0.25 - 5 / 9, abs=1e-6)
    # undefined values are left out of means and counts
    cp = {g["value"]: g for g in report["by_key"]["hops"]["citation_precision"]["groups"]}
    assert (
        cp["1"]["metric"] == 1.0
        and cp["1"]["n"] == 3
        and cp["3"]["metric"] is None
        and cp["3"]["n"] == 0
    )
    assert report["overall"]["citation_precision"] == pytest.approx(4 / 5)
    # a missing metadata value is its own group
    assert MISSING in {g["value"] for g in report["by_key"]["region"]["answer_f1"]["groups"]}
    json.dumps(report)  # JSON-able


def test_planted_gap_is_flagged_and_small_slice_is_not(frame):
    report = disaggregate(frame, ["answer_f1"], ["hops"], eval_config(), seed=0)
    groups = {g["value"]: g for g in report["by_key"]["hops"]["answer_f1"]["groups"]}
    assert groups["1"]["flagged"] and groups["2"]["flagged"]
    assert not groups["3"]["flagged"]  # |0 - .56| is a gap, but n=1 < min_slice_size
    assert {(f["key"], f["group"]) for f in report["flags"]} == {("hops", "1"), ("hops", "2")}
    assert report["by_key"]["hops"]["answer_f1"]["worst"] == "3"  # reported even when unflagged
    quiet = disaggregate(frame, ["answer_f1"], ["hops"], eval_config(gap_threshold=0.5), seed=0)
    assert quiet["flags"] == []


def test_bootstrap_ci_contains_the_group_mean_and_is_seeded(frame):
    a = disaggregate(frame, ["answer_f1"], ["hops"], eval_config(), seed=3)
    b = disaggregate(frame, ["answer_f1"], ["hops"], eval_config(), seed=3)
    assert a == b
    for group in a["by_key"]["hops"]["answer_f1"]["groups"]:
        low, high = group["ci"]
        assert low <= group["metric"] <= high
    none = disaggregate(frame, ["answer_f1"], ["hops"], eval_config(bootstrap_samples=0), seed=0)
    assert all(g["ci"] is None for g in none["by_key"]["hops"]["answer_f1"]["groups"])


def test_worst_group_of_a_lower_is_better_metric_is_the_highest(frame):
    report = disaggregate(frame, ["pii_leak_rate", "answer_f1"], ["hops"], eval_config(), seed=0)
    assert report["by_key"]["hops"]["pii_leak_rate"]["worst"] == "2"
    assert report["by_key"]["hops"]["answer_f1"]["worst"] == "3"
    assert gap_tags(report)["gap_flag/pii_leak_rate/hops"] == "2"


def test_flat_slices_and_labels(frame):
    flat = slices(disaggregate(frame, ["answer_f1"], ["hops"], eval_config(), seed=0))
    assert flat["hops=2"] == {"answer_f1": 0.25, "n": 4.0}
    assert group_label(2.0) == "2" and group_label(None) == MISSING and group_label("a b") == "a b"


def test_metric_key_meets_mlflows_name_rule():
    import re

    assert metric_key("answer_f1", "doc type", "a=b/c") == "answer_f1/doc type/a_b_c"
    assert metric_key("recall_at_5", "hops", 2) == "recall_at_5/hops/2"
    for name in (metric_key("m", "..", "é:x"), metric_key("m", "", ".")):
        assert re.fullmatch(r"[0-9A-Za-z_.\- /]+", name)
        assert all(part.strip(".") for part in name.split("/"))


class _RecordingRun:
    run_id = "r1"

    def __init__(self):
        self.tags, self.dicts, self.figures = {}, {}, {}

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_dict(self, data, artifact_file):
        self.dicts[artifact_file] = data

    def log_figure(self, fig, artifact_file):
        self.figures[artifact_file] = fig


def test_charts_and_logging(frame):
    report = disaggregate(
        frame, ["answer_f1", "pii_leak_rate"], ["hops", "region"], eval_config(), seed=0
    )
    fig = plot_metric(report, "answer_f1")
    # a bar per group of each key: hops 1, 2, 3; region eu, us, missing
    assert len(fig.axes[0].patches) == 3 + 3
    run = _RecordingRun()
    log_disaggregation(run, report)
    assert set(run.figures) == {"disaggregation/answer_f1.png", "disaggregation/pii_leak_rate.png"}
    assert run.tags["gap_flag/answer_f1/hops"] == "3"
    assert run.dicts["disaggregation/report.json"] is report
