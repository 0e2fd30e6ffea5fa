"""Run a command and report the peak memory of everything it started, Ray daemons included.

`ray start` daemonizes the head, so the demo's processes are not all descendants of the command.
We therefore sample three numbers every `--interval` seconds over every process that appeared
after the start (the command's tree, the Ray daemons and workers, vLLM and verifier processes):
  - tree PSS: summed proportional set size (a page shared by n processes counts 1/n in each),
    the resident memory of the process set without double counting: the headline number;
  - tree RSS: summed RSS (shared pages counted once per process, so this over-counts);
  - system used: MemTotal - MemAvailable minus its value before the start (what the machine lost).

    python -m experiments.peak_mem --out runs/demo_peak_mem.json -- make demo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import psutil


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the peaks as JSON here")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    before = {p.pid for p in psutil.process_iter()}
    base_used = psutil.virtual_memory().total - psutil.virtual_memory().available
    peak = {"tree_pss_gib": 0.0, "tree_rss_gib": 0.0, "system_used_delta_gib": 0.0}
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = pss = 0
            for p in psutil.process_iter(["pid"]):
                if p.info["pid"] in before:
                    continue
                try:
                    mem = p.memory_full_info()  # reads /proc/<pid>/smaps_rollup
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                rss, pss = rss + mem.rss, pss + mem.pss
            vm = psutil.virtual_memory()
            peak["tree_rss_gib"] = max(peak["tree_rss_gib"], rss / 2**30)
            peak["tree_pss_gib"] = max(peak["tree_pss_gib"], pss / 2**30)
            peak["system_used_delta_gib"] = max(peak["system_used_delta_gib"], (vm.total - vm.available - base_used) / 2**30)
            done.wait(args.interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    result = {"cmd": " ".join(cmd), "rc": rc, "wall_s": time.time() - t0, **{k: round(v, 3) for k, v in peak.items()}}
    print(json.dumps(result), file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
