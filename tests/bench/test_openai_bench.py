"""Bench openai at its quick size: the shape of its output, and that both sides sent the same
bytes and got the same answer."""

from __future__ import annotations

import json
import math

from rayrag.bench import BENCHES, openai_backend


def test_openai_bench_quick_compares_the_backend_with_direct_httpx(monkeypatch):
    monkeypatch.setattr(openai_backend, "QUICK", {"requests": 5, "rounds": 2})
    result = json.loads(json.dumps(openai_backend.run(quick=True)))
    assert BENCHES["openai"] == "rayrag.bench.openai_backend"
    assert result["bench"] == "openai" and result["quick"] is True
    assert result["requests_per_round"] == 5 and result["rounds"] == 2
    assert result["requests_served"] == 4 * 5 * 2  # four competitors, every request reached it
    assert result["same_body"] is True and result["same_text"] is True
    assert result["passages"] == 5 and result["prompt_chars"] > 5 * 600
    competitors = {"direct", "backend", "direct_stream", "backend_stream"}
    assert set(result["per_request_ms"]) == competitors
    assert all(v > 0 for v in result["per_request_ms"].values())
    assert set(result["overhead_ms"]) == {"json", "stream"}
    assert set(result["ratios"]) == {"backend_vs_direct", "backend_vs_direct_stream"}
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
