"""Shared, session-scoped fixtures. Keep this small: each fixture is expensive and reused.

- `arith_data`: the embedded arithmetic task, generated once (sft/train/eval JSONL in one dir).
- `gpu` marker: tests that need CUDA; without it they are marked skipped here, so `pytest -m gpu`
  on a CPU box reports them as skipped, never as passed.
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
