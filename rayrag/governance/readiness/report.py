"""The readiness report: the sixteen checks, their content-free evidence, and where it goes.

`ReadinessReport` holds one `Check` per checklist item (four areas, four checks each) and
renders as JSON (the CLI's last line), as markdown (an MLflow artifact of a run in
`<prefix>-readiness`) and as metrics (`passed`, `total`, `check.<name>`). The Prometheus and
Grafana helpers read the names a metrics endpoint exposes and the series a dashboard's panels
query, so the `slo_metrics` probe can compare the two (readiness.py runs the probes).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig, configs_dir

AREAS = ("privacy", "quality", "safety", "operations")
CHECKS: tuple[tuple[str, str], ...] = (
    ("pii_detection", "privacy"),
    ("access_control", "privacy"),
    ("logging_policy", "privacy"),
    ("retention_configured", "privacy"),
    ("regression_suite", "quality"),
    ("eval_versioned_with_prompt", "quality"),
    ("ab_plan", "quality"),
    ("prompt_pinned", "quality"),
    ("input_safety", "safety"),
    ("output_moderation", "safety"),
    ("escalation_path", "safety"),
    ("red_team", "safety"),
    ("tracing", "operations"),
    ("rollback_tested", "operations"),
    ("slo_metrics", "operations"),
    ("cost_attribution", "operations"),
)
DASHBOARD = configs_dir() / "grafana" / "rayrag-dashboard.json"
MAX_EVIDENCE_CHARS = 240
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")
_METRIC_REF = re.compile(r"\bray_rayrag_[a-z0-9_]+")


@dataclass(frozen=True)
class Check:
    """One checklist item: passed or not, and a short content-free `evidence` string."""

    name: str
    area: str
    passed: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReadinessReport:
    """The sixteen checks in checklist order, plus the MLflow run the report went to."""

    checks: list[Check]
    target: str = ""
    run_id: str | None = None

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def ok(self) -> bool:
        return self.passed == self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "total": self.total,
            "checks": [c.to_json() for c in self.checks],
        }

    def markdown(self) -> str:
        """The report for MLflow and humans: a summary line, then one table per area."""
        lines = [f"# rayrag readiness: {self.passed}/{self.total} checks passed", ""]
        if self.target:
            lines += [f"Target: `{self.target}`", ""]
        for area in AREAS:
            lines += [f"## {area}", "", "| check | result | evidence |", "|---|---|---|"]
            for check in (c for c in self.checks if c.area == area):
                evidence = check.evidence.replace("|", "\\|")
                lines.append(
                    f"| {check.name} | {'PASS' if check.passed else 'FAIL'} | {evidence} |"
                )
            lines.append("")
        return "\n".join(lines)


def clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[: MAX_EVIDENCE_CHARS - 3] + "..."


def exposed_metrics(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (`ray_rayrag_requests_total`, `..._bucket`)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _METRIC_LINE.match(line)
            if match:
                names.add(match.group(1))
    return names


def dashboard_metrics(path: Path) -> set[str]:
    """The `ray_rayrag_*` series every panel query of a Grafana dashboard JSON reads."""
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    refs: set[str] = set()
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            refs |= set(_METRIC_REF.findall(str(target.get("expr", ""))))
    return refs


def log_report(report: ReadinessReport, config: RAGConfig, tracker: Any = None) -> str | None:
    """The markdown and JSON report as artifacts of a run in `<prefix>-readiness`; the run id."""
    from rayrag.tracking.tracker import Tracker, compose_run_name

    tracker = tracker or Tracker(config.tracking)
    tags = {"readiness": "passed" if report.ok else "failed", "target": report.target}
    name = compose_run_name("readiness", config, report.target)
    with tracker.start_run("readiness", config, tags=tags, run_name=name) as run:
        run.log_metrics(
            {
                "passed": report.passed,
                "total": report.total,
                **{f"check.{c.name}": float(c.passed) for c in report.checks},
            }
        )
        run.log_text(report.markdown(), "readiness.md")
        run.log_dict(report.to_json(), "readiness.json")
        report.run_id = run.run_id
    return report.run_id
