"""Weight sync learner -> vLLM engine for a policy of >= 0.5B parameters, on this machine (issue 17 item 5).

The path a run takes (rl/train.py's `export_weights` and `rollout.recovery.EngineGroup.sync_weights`),
on a local Ray cluster on 127.0.0.1: one learner rank actor (DeepSpeed, the config's ZeRO stage
and dtype) packs its weights into byte buckets in the engine's dtype (`Learner.export_weights`);
the buckets go through Ray's object store to one engine actor (`VLLMEngine.load_weights`), which
stages them on its EngineCore and reloads them in place. The policy is a randomly initialised
Qwen2 with Qwen2-0.5B's layers (hidden 896, MLP 4,864, 14 heads, 2 KV heads), 34 of them, and
the embedded tokenizer: 507M parameters, built locally (nothing is downloaded).

Reported per sync (`--syncs` of them): seconds for the export (learner), the load (engine:
transfer, staging, reload) and both; and peaks while syncing, sampled every 0.1 s: the driver's
RSS, the learner's and the engine's (actor + EngineCore) PSS, and the object store, as the growth
of /dev/shm (Ray's plasma store is a shared-memory file there).

    python -m experiments.bench_weight_sync --out runs/bench_weight_sync.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

from experiments.tiny_model import QWEN2_05B_LAYERS, build_tiny_checkpoint
from rl.dist import DeepSpeedConfig
from rl.learner import Learner
from rl.ray_loopback import init_local_cluster
from rollout.engine import EngineConfig, make_rollout_actor

GIB = 1 << 30


def pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total


class Peaks:
    """Sample memory in a thread until stopped; keep the maximum of each series."""

    def __init__(self, groups: dict[str, list[int]], interval_s: float = 0.1):
        self.groups, self.interval_s = groups, interval_s
        self.shm0 = shutil.disk_usage("/dev/shm").used
        self.peak = {"driver_rss": 0, "object_store_shm": 0, **{k: 0 for k in groups}}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = {"driver_rss": psutil.Process().memory_info().rss,
                   "object_store_shm": shutil.disk_usage("/dev/shm").used - self.shm0,
                   **{k: pss(p) for k, p in self.groups.items()}}
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
            self.stop.wait(self.interval_s)

    def __enter__(self) -> Peaks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def gib(self) -> dict[str, float]:
        return {f"{k}_gib": v / GIB for k, v in self.peak.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--bucket-mb", type=int, default=256)
    ap.add_argument("--zero-stage", type=int, default=1, choices=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_weight_sync_"))
    try:
        policy = build_tiny_checkpoint(work / "qwen2-0.5b-random", seed=0, **QWEN2_05B_LAYERS)
        params = json.loads((policy / "thinkrl_build.json").read_text())["params"]
        init_local_cluster(num_cpus=2)
        learner = ray.remote(num_cpus=1)(Learner).remote(args.threads)
        engine = make_rollout_actor(1.0).remote(EngineConfig(model=str(policy), dtype="bfloat16", kv_cache_gib=0.5,
                                                             max_model_len=512, cpu_threads=args.threads))
        ray.get(learner.setup.remote(str(policy), DeepSpeedConfig(zero_stage=args.zero_stage, bf16=True), 0, 1,
                                     ray.get(learner.address.remote(True)), 4096, 512, 0), timeout=900)
        ray.get(engine.ready.remote(), timeout=900)
        engine_procs = ray.get(engine.processes.remote())
        groups = {"learner_pss": [ray.get(learner.ping.remote())],
                  "engine_pss": [engine_procs["pid"], *(p for p, _ in engine_procs["procs"])]}
        probe_seq = [[1, 2, 3, 4, 5, 6, 7, 8]]  # scored, not sampled: ids past the tokenizer's would not decode
        probe = ray.get(engine.score.remote(probe_seq, [2]), timeout=300)
        syncs = []
        for _ in range(args.syncs):
            with Peaks(groups) as peaks:
                t = time.perf_counter()
                buckets = learner.export_weights.remote(bucket_mb=args.bucket_mb, dtype="bfloat16")
                ray.wait([buckets], timeout=900)
                t_export = time.perf_counter() - t
                loaded = ray.get(engine.load_weights.remote(buckets), timeout=900)
                total = time.perf_counter() - t
                del buckets
            syncs.append({"export_s": t_export, "load_s": total - t_export, "engine_reload_s": loaded["seconds"],
                          "total_s": total, "tensors": loaded["tensors"], **peaks.gib()})
            print(json.dumps(syncs[-1]), flush=True)
        after = ray.get(engine.score.remote(probe_seq, [2]), timeout=300)
        # The learner's bf16-rounded copy of the same weights went in: the engine's log-probs stay put.
        drift = max(abs(a - b) for a, b in zip(probe[0], after[0]))
        if drift > 1e-2:
            raise AssertionError(f"engine log-probs moved by {drift:.3g} across a sync of unchanged weights")
        ray.get(engine.close.remote(), timeout=60)
        result = {"command": " ".join(["python -m experiments.bench_weight_sync", *sys.argv[1:]]), "params": params,
                  "bucket_mb": args.bucket_mb, "zero_stage": args.zero_stage, "syncs": syncs,
                  "best_total_s": min(s["total_s"] for s in syncs), "probe_logprob_drift": drift}
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
