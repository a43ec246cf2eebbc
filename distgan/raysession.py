"""Connecting to Ray: an existing cluster when there is one, else a local one on 127.0.0.1."""

from __future__ import annotations

import logging
import os


def connect(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (as `ray job submit` sets it), or start a
    private local one bound to the loopback interface. Token auth stays as Ray sets it."""
    import ray

    if ray.is_initialized():
        return
    from .console import is_verbose

    # Ray's start-up lines (the banner, the token-auth notice) only in verbose mode.
    common = {"logging_level": logging.INFO if is_verbose() else logging.ERROR,
              "configure_logging": True, "log_to_driver": True}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **common)
    else:
        # The dashboard (bound to loopback) also serves the state API that Ray Train polls.
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 _node_ip_address="127.0.0.1", **common)
