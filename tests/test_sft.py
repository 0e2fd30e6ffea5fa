"""Long-CoT SFT warm start: the assistant-only loss mask, bad input through the real entry
(`cot_sft.train.main`), and -- as an integration test -- a short real SFT whose checkpoint vLLM
loads and greedy-decodes in the trained format (the `sft_checkpoint` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cot_sft.data import load_sft_rows, step_batches, tokenize_examples
from cot_sft.train import lr_multiplier, main
from experiments.arith import generate
from prompts.chat import encode_prompt, encode_sft_example
from prompts.schema import DataError
from rl.configio import ConfigError
from rl.modeling import load_policy, load_tokenizer, packed_ce_sum
from rl.packing import Sample, pack

MESSAGES = [
    {"role": "system", "content": "Think step by step."},
    {"role": "user", "content": "Compute 27+15"},
]
RESPONSE = "<think>\nd1: 7+5+0=12 -> 2 carry 1\nd2: 2+1+1=4 -> 4 carry 0\n= 42\n</think>\nThe answer is \\boxed{42}."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A 1-layer tiny Qwen2 checkpoint with the embedded tokenizer."""
    from experiments.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=1, intermediate_size=128)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """The tiny model loaded the way the trainer loads it (fp32), and its tokenizer."""
    return load_policy(tiny_dir).eval(), load_tokenizer(tiny_dir)


# -- the loss mask -----------------------------------------------------------------------------


def test_mask_covers_the_response_and_end_of_turn_only(tiny):
    _, tok = tiny
    ids, mask = encode_sft_example(tok, MESSAGES, RESPONSE)
    prompt_ids = encode_prompt(tok, MESSAGES)
    n_prompt = len(prompt_ids)
    assert ids[:n_prompt] == prompt_ids  # the prompt trained on is the prompt sampled with
    assert mask == [False] * n_prompt + [True] * (len(ids) - n_prompt)
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == RESPONSE + "<|im_end|>"
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    # nothing of the prompt: system, user, and the template's <|im_start|>assistant\n header
    assert tok.decode([t for t, m in zip(ids, mask) if not m]) == (
        "<|im_start|>system\nThink step by step.<|im_end|>\n<|im_start|>user\nCompute 27+15<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # the think tags are single tokens, trained
    think = tok.convert_tokens_to_ids("<think>")
    assert ids[n_prompt] == think and mask[n_prompt]


def test_earlier_assistant_turns_are_context_not_targets(tiny):
    _, tok = tiny
    convo = MESSAGES + [{"role": "assistant", "content": "42"}, {"role": "user", "content": "And 1+1?"}]
    ids, mask = encode_sft_example(tok, convo, "2")
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == "2<|im_end|>"


def _loss(model, sample: Sample, targets_from: Sample | None = None) -> float:
    """Packed summed CE of `sample`, optionally with the *labels* of another sample (same length):
    the inputs stay those of `sample`, only the training targets change."""
    batch = pack([[sample]])
    if targets_from is not None:
        batch.targets = pack([[targets_from]]).targets
    with torch.no_grad():
        return packed_ce_sum(model, batch).item()


def _with_label(sample: Sample, t: int, new: int) -> Sample:
    ids = list(sample.ids)
    ids[t] = new
    return Sample(ids, sample.target_mask, sample.index)


def test_changing_a_prompt_label_changes_nothing_an_assistant_label_changes_the_loss(tiny):
    model, tok = tiny
    ids, mask = encode_sft_example(tok, MESSAGES, RESPONSE)
    s = Sample(ids, mask, 0)
    base = _loss(model, s)
    other = tok.convert_tokens_to_ids("Z")

    prompt_positions = [t for t in range(len(ids)) if not mask[t]]
    assert len(prompt_positions) > 30  # system, user and template tokens
    # every prompt label changed at once (position 0 has no label: nothing predicts it)
    relabeled = s
    for t in prompt_positions:
        relabeled = _with_label(relabeled, t, other if ids[t] != other else other + 1)
    assert pack([[relabeled]]).targets.equal(pack([[s]]).targets)
    assert _loss(model, s, targets_from=relabeled) == base

    # any single assistant label, including the first response token and the final <|im_end|>
    answer_positions = [t for t in range(len(ids)) if mask[t]]
    for t in [answer_positions[0], answer_positions[len(answer_positions) // 2], answer_positions[-1]]:
        changed = _loss(model, s, targets_from=_with_label(s, t, other if ids[t] != other else other + 1))
        assert abs(changed - base) > 1e-3, t


def test_packed_sft_row_loss_is_the_sum_of_its_examples(tiny):
    """Two encoded examples in one packed row: the loss is the sum of their separate losses, every
    response token counted once, and relabelling the neighbour's prompt changes no target."""
    model, tok = tiny
    a = Sample(*encode_sft_example(tok, MESSAGES, RESPONSE), 0)
    b = Sample(*encode_sft_example(tok, [{"role": "user", "content": "Compute 3+4"}],
                                   "<think>\n= 7\n</think>\nThe answer is \\boxed{7}."), 1)
    batch = pack([[a, b]])
    assert batch.num_targets == (sum(a.target_mask) + sum(b.target_mask))
    with torch.no_grad():
        both = packed_ce_sum(model, batch).item()
    assert both == pytest.approx(_loss(model, a) + _loss(model, b), abs=1e-4)
    b_relabeled = _with_label(b, 3, tok.convert_tokens_to_ids("Q"))  # inside "<|im_start|>user"
    assert pack([[a, b_relabeled]]).targets.equal(batch.targets)


# -- data helpers --------------------------------------------------------------------------------


def test_tokenize_drops_and_counts_over_long_examples(tmp_path, tiny):
    _, tok = tiny
    path = write_rows(tmp_path / "sft.jsonl", sft_rows(6))
    examples = load_sft_rows(path)
    lens = [len(encode_sft_example(tok, e.row.chat(), e.response)[0]) for e in examples]
    limit = sorted(lens)[2]
    samples, dropped = tokenize_examples(tok, examples, limit)
    assert dropped == sum(n > limit for n in lens) and len(samples) == 6 - dropped
    assert all(len(s.ids) <= limit for s in samples)
    assert [s.index for s in samples] == [i for i, n in enumerate(lens) if n <= limit]


def test_step_batches_cover_each_epoch_once_within_budget():
    samples = [Sample([0] * n, [True] * n, i) for i, n in enumerate([30, 50, 20, 70, 40, 10, 60])]
    stream = step_batches(samples, tokens_per_step=100, seed=0)
    by_epoch: dict[int, list[int]] = {}
    for _ in range(12):
        epoch, batch = next(stream)
        assert sum(len(s.ids) for s in batch) <= 100 or len(batch) == 1
        by_epoch.setdefault(epoch, []).extend(s.index for s in batch)
    full = [e for e in by_epoch if e < max(by_epoch)]
    assert full and all(sorted(by_epoch[e]) == list(range(7)) for e in full)
    assert by_epoch[0] != by_epoch[1]  # reshuffled each epoch
    a, b = step_batches(samples, 100, seed=0), step_batches(samples, 100, seed=0)
    assert all([s.index for s in next(a)[1]] == [s.index for s in next(b)[1]] for _ in range(10))


def test_lr_schedule():
    warm, total, floor = 10, 110, 0.1
    assert lr_multiplier(0, warm, total, floor) == pytest.approx(0.1)
    assert lr_multiplier(9, warm, total, floor) == pytest.approx(1.0)
    assert lr_multiplier(10, warm, total, floor) == pytest.approx(1.0)
    assert lr_multiplier(60, warm, total, floor) == pytest.approx(floor + (1 - floor) * 0.5)
    assert lr_multiplier(110, warm, total, floor) == pytest.approx(floor)
    assert lr_multiplier(500, warm, total, floor) == pytest.approx(floor)
    assert lr_multiplier(0, 0, total, floor) == pytest.approx(1.0)


# -- bad input stops the real entry before anything is written ------------------------------------


def sft_rows(n: int) -> list[dict]:
    return generate(seed=5, n_sft=n, n_train=1, n_eval=30)["sft"]


def write_rows(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    for lineno, text in (raw_lines or {}).items():
        lines[lineno - 1] = text
    path.write_text("".join(line + "\n" for line in lines))
    return path


def config(tmp_path: Path, train_file: Path, extra: str = "", init: Path | None = None) -> Path:
    """An SFT config on `train_file`; `init` defaults to a checkpoint that does not exist, which
    the runs that stop on their rows (before the tokenizer is loaded) never read."""
    p = tmp_path / "sft.yaml"
    p.write_text(
        f"run_name: bad\noutput_dir: {tmp_path / 'runs'}\ninit_checkpoint: {init or tmp_path / 'no-init'}\n"
        f"data:\n  train_file: {train_file}\n  max_seq_len: 1024\n"
        "train:\n  max_steps: 2\n  tokens_per_step: 2048\n  tokens_per_microbatch: 2048\n  row_tokens: 1024\n"
        + extra
    )
    return p


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD_ROWS = {
    # name: (row 3 of 5 replaced by this JSON, expected message after "<file>:3: ")
    "no_answer": (lambda r: _without(r, "answer"), "missing required field 'answer'"),
    "null_answer": (lambda r: {**r, "answer": None}, "missing required field 'answer'"),
    "prompt_is_a_string": (lambda r: {**r, "prompt": "Compute 1+1"}, "field 'prompt' must be a list of chat messages"),
    "prompt_is_a_number": (lambda r: {**r, "prompt": 7}, "field 'prompt'"),
    "content_is_a_number": (lambda r: {**r, "prompt": [{"role": "user", "content": 7}]}, "field 'prompt.0.content"),
    "no_response": (lambda r: _without(r, "response"), "missing or non-string field 'response'"),
    # Image rows train (VLM policies); an image that is not there stops the run before anything is written.
    "missing_image": (
        lambda r: {**r, "prompt": [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}]},
        "image 1 ('x.png'): no such file",
    ),
}


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_row_stops_the_run_naming_file_and_line(tmp_path, case):
    make, msg = BAD_ROWS[case]
    rows = sft_rows(5)
    data = write_rows(tmp_path / "sft.jsonl", rows[:2] + [make(rows[2])] + rows[3:])
    with pytest.raises(DataError) as e:
        main(["--config", str(config(tmp_path, data)), "--no-eval"])
    assert str(e.value).startswith(f"{data}:3: ") and msg in str(e.value)
    assert_nothing_written(tmp_path)


def test_invalid_json_line_stops_the_run(tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", sft_rows(4), raw_lines={4: '{"id": "x", "prompt": ['})
    with pytest.raises(DataError, match=rf"^{data}:4: invalid JSON"):
        main(["--config", str(config(tmp_path, data)), "--no-eval"])
    assert_nothing_written(tmp_path)


def test_empty_file_stops_the_run(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("")
    with pytest.raises(DataError, match=rf"^{data}: file is empty"):
        main(["--config", str(config(tmp_path, data)), "--no-eval"])
    assert_nothing_written(tmp_path)


def test_bad_eval_file_stops_the_run_before_training(tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", sft_rows(3))
    evalf = write_rows(tmp_path / "eval.jsonl", [_without(r, "response") for r in sft_rows(3)] + [{"id": "e"}])
    cfg = config(tmp_path, data, f"eval:\n  file: {evalf}\n")
    with pytest.raises(DataError, match=rf"^{evalf}:4: missing required field 'answer'"):
        main(["--config", str(cfg)])
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "extra, override, key",
    [
        ("train:\n  max_stepz: 3\n", [], "train.max_stepz"),
        ("", ["--set", "optim.learning_rate=0.1"], "optim.learning_rate"),
        ("shuffle: true\n", [], "shuffle"),
    ],
)
def test_unknown_config_key_stops_the_run(tmp_path, extra, override, key):
    data = write_rows(tmp_path / "sft.jsonl", sft_rows(3))
    cfg = config(tmp_path, data)
    text = cfg.read_text()
    if extra.startswith("train:"):  # a typo inside an existing section
        text = text.replace("train:\n", extra)
    else:
        text += extra
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        main(["--config", str(cfg), "--no-eval", *override])
    assert str(e.value).startswith(f"{cfg}: ") and f"unknown key '{key}'" in str(e.value)
    assert_nothing_written(tmp_path)


def test_no_example_fits_stops_the_run(tmp_path, tiny_dir):
    data = write_rows(tmp_path / "sft.jsonl", sft_rows(3))
    with pytest.raises(DataError, match=rf"^{data}: no example fits data.max_seq_len=16"):
        main(["--config", str(config(tmp_path, data, init=tiny_dir)), "--no-eval", "--set", "data.max_seq_len=16"])
    assert_nothing_written(tmp_path)


def test_no_model_configured_stops_the_run(tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", sft_rows(3))
    cfg = config(tmp_path, data)
    cfg.write_text(re.sub(r"init_checkpoint: .*\n", "", cfg.read_text()))
    with pytest.raises(ConfigError, match=rf"^{cfg}: key 'init_checkpoint': Field required"):
        main(["--config", str(cfg), "--no-eval"])
    assert_nothing_written(tmp_path)


# -- integration: the SFT checkpoint loads in vLLM and generates in the trained format ------------

FORMAT = re.compile(r"<think>\n.+\n</think>\n\\boxed\{\d+\}", re.S)


@pytest.mark.integration
def test_sft_checkpoint_generates_the_trained_format(sft_checkpoint, arith_data):
    from prompts.schema import load_prompt_rows
    from rollout.engine import EngineConfig, SamplingConfig, VLLMEngine

    rows = load_prompt_rows(arith_data / "train.jsonl")[:20]
    with VLLMEngine(EngineConfig(model=str(sft_checkpoint), kv_cache_gib=0.25, max_model_len=1024)) as engine:
        gens = engine.generate(
            [encode_prompt(engine.tokenizer, r.chat()) for r in rows],
            SamplingConfig(n=1, temperature=0.0, max_tokens=768),
        )
    bad = [(r.id, g.finish_reason, g.text[-120:]) for r, g in zip(rows, gens)
           if not (FORMAT.fullmatch(g.text) and g.finish_reason == "stop")]
    # A checkpoint saved wrong (weights, tied embeddings, dtype, chat template) formats none of
    # them. The 80-step 4M model's greedy decoding loops on a prompt or two ("1111..." up to
    # max_tokens), and which ones depends on the CPU's bf16 kernels: 59 of 60 formatted on the
    # 2-core Xeon, while the 60-step model of earlier versions formatted 47 of 60.
    assert len(bad) <= 2, bad
