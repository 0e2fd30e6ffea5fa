"""Keep a local Ray cluster on 127.0.0.1.

Ray 2.60 on Linux turns `--node-ip-address 127.0.0.1` (and `ray.init(_node_ip_address=...)`) into
the machine's own network address, and its GCS, raylet, agents and Ray client server then listen
on that address or on all interfaces (`ss -ltn` during a demo run: `*:6379`, `192.0.2.2:10001`,
...). It keeps loopback only where `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` is false (the default on
macOS and Windows); that flag is what `ray._private.services.get_node_ip_address` checks. With it
set to 0 every server of the node binds 127.0.0.1, and the node cannot join other machines: set
it only for a single-machine cluster (experiments/demo.sh, the tests' nodes, `rl/train.py`
without an address). Ray's token authentication stays on as well.
"""

from __future__ import annotations

import os

import ray
from ray._private import ray_constants

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def keep_loopback() -> None:
    """Before `ray.init` starts a local cluster in this process: its node keeps 127.0.0.1. Ray
    reads the flag when it is imported, so it is set in the module too (and in the environment
    the cluster's processes inherit)."""
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_local_cluster(num_cpus: int | None) -> None:
    """Start a one-machine Ray cluster in this process, every server on 127.0.0.1, no dashboard
    (the RL driver without an address, and benchmarks)."""
    keep_loopback()  # Ray would otherwise bind its servers to the machine's address
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_loopback_address(address: str | None) -> bool:
    """Does a Ray address ("127.0.0.1:6379", "ray://localhost:10001", ...) name this machine's
    loopback? ("auto", "local", None: no.)"""
    if not address or ":" not in address:
        return False
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def keep_loopback_for(address: str | None) -> None:
    """Before `ray.init(address=...)`: a client of a loopback-only cluster must keep 127.0.0.1 too,
    or Ray turns it into the machine's address, where nothing listens; a client of a cluster at
    a network address must not (its node address would then be 127.0.0.1)."""
    if is_loopback_address(address):
        keep_loopback()
    elif address and ":" in address:
        allow_other_nodes()


def connect_or_start(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (loopback kept only for a loopback address,
    `keep_loopback_for`), or with none start a local one on 127.0.0.1 (`init_local_cluster`)."""
    if address:
        keep_loopback_for(address)
        ray.init(address=address, log_to_driver=False)
    else:
        init_local_cluster(num_cpus)


def allow_other_nodes() -> None:
    """Undo `keep_loopback` in this process (a client of a multi-node cluster after a local one)."""
    for key in LOOPBACK_ENV:
        os.environ.pop(key, None)
    ray_constants.ENABLE_RAY_CLUSTER = True
