"""Joining Ray: the one place a rayrag job starts a local Ray instance when none is running.

Offline jobs (ingest, tune, the benches) call `ensure_ray` before their first Ray call, so
that `num_cpus` comes from the config (`ingest.num_cpus`) and Ray's dashboard and log
forwarding stay off in a command-line run; an existing `ray.init` or cluster is joined as is.
"""

from __future__ import annotations

from rayrag.config import RAGConfig


def ensure_ray(config: RAGConfig) -> None:
    """Start Ray with the config's CPUs unless this process is already connected."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=config.ingest.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
