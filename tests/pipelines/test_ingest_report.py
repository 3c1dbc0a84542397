"""Ingest's plots: two PNGs from counts alone."""

from __future__ import annotations

from rayrag.pipelines.ingest_report import plot_ingest


def test_plots_are_pngs(tmp_path):
    paths = plot_ingest(["d1", "d1", "d2"], {"PERSON": 3, "EMAIL_ADDRESS": 1}, tmp_path)
    assert [p.name for p in paths] == ["chunks_per_document.png", "pii_by_entity.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert len(plot_ingest([], {}, tmp_path)) == 2  # an empty corpus still plots (empty charts)
