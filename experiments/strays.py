"""Count the processes a thinkrl run can leave behind, and fail if there are any (issue 16: no
stray processes after `make test` and after `make demo`).

    python -m experiments.strays --since 1733390000 --wait-s 30

Strays are vLLM EngineCore and worker processes, Ray processes (`ray::` workers and actors, the
raylet, the GCS, `ray start`) and engine reapers (rollout/reaper.py) started at or after
`--since` (epoch seconds; 0: any). `.ci/run` runs it after `make test`. It waits up to
`--wait-s` for them to exit (shutdown takes seconds), then lists what is left and exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import psutil


def kind_of(title: str) -> str:
    """EngineCore, VllmWorker (vLLM 0.32 titles them "VLLM::Worker..."), ray:: (Ray workers and
    actors) or other (raylet, GCS, the driver, verifier workers, ...)."""
    if "EngineCore" in title:
        return "EngineCore"
    if re.search(r"VllmWorker|VLLM::Worker", title):
        return "VllmWorker"
    if title.startswith("ray::"):
        return "ray::"
    return "other"


RAY_DAEMONS = re.compile(r"/ray/core/src/ray/(raylet/raylet|gcs/gcs_server)\b|\bray start\b|-m rollout\.reaper\b")


def is_stray(title: str) -> bool:
    return kind_of(title) != "other" or bool(RAY_DAEMONS.search(title))


def strays(since: float) -> list[tuple[int, str]]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.info["create_time"] < since:
                continue
            title = " ".join(p.info["cmdline"] or [])
            if is_stray(title):
                out.append((p.info["pid"], title[:160]))
        except psutil.Error:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--since", type=float, default=0.0, help="count processes started at or after (epoch s)")
    ap.add_argument("--wait-s", type=float, default=30.0, help="how long stragglers get to exit")
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.wait_s
    left = strays(args.since)
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = strays(args.since)
    if left:
        print(f"{len(left)} stray process(es) left behind:", file=sys.stderr)
        for pid, title in left:
            print(f"  {pid}  {title}", file=sys.stderr)
        return 1
    print("no stray processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
