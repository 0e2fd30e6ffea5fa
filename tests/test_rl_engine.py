"""Rollout engine vs learner on the same weights (issue 5): log-prob agreement in fp32 and bf16,
and weight sync after a real update.

One in-process vLLM engine per dtype and one in-process learner rank per dtype, shared by every
test of the module, on the short-SFT'd tiny model (`sft_checkpoint`): a random model is
near-uniform, so two computations of it agree whatever they get wrong.

    pytest tests/test_rl_engine.py -m integration -q -s      # -s prints the measured numbers
"""

from __future__ import annotations

import dataclasses

import pytest

from experiments.bench_logprobs import sampled_logprob_gap
from prompts.chat import encode_prompt
from prompts.schema import load_prompt_rows
from rl.dist import DeepSpeedConfig, free_port
from rl.learner import Episode, Learner
from rollout.engine import EngineConfig, SamplingConfig

pytestmark = pytest.mark.integration

FP32_TOL = 0.01  # the bound on mean |delta log p| per token in fp32 (measured ~3e-7)
BF16_TOL = 0.03  # our stated bound in bf16 (measured ~3e-3 mean, ~0.1 max)
TOL = {"float32": FP32_TOL, "bfloat16": BF16_TOL}
SAMPLING = SamplingConfig(n=4, temperature=1.0, max_tokens=48, seed=0)


@pytest.fixture(scope="module")
def tokenizer(sft_checkpoint):
    from rl.modeling import load_tokenizer

    return load_tokenizer(sft_checkpoint)


@pytest.fixture(scope="module")
def rows(arith_data):
    return load_prompt_rows(arith_data / "train.jsonl")[:16]


@pytest.fixture(scope="module")
def prompts(rows, tokenizer):
    return [encode_prompt(tokenizer, r.chat()) for r in rows]


@pytest.fixture(scope="module")
def engines(sft_checkpoint):
    from rollout.engine import VLLMEngine

    engines = {}
    try:
        for dtype in ("float32", "bfloat16"):
            engines[dtype] = VLLMEngine(EngineConfig(model=str(sft_checkpoint), dtype=dtype, kv_cache_gib=0.25,
                                                     max_model_len=1024, seed=0, cpu_threads=1))
        yield engines
    finally:
        for e in engines.values():
            e.close()


@pytest.fixture(scope="module")
def learners(sft_checkpoint):
    out = {}
    for dtype in ("float32", "bfloat16"):
        learner = Learner(threads=1)
        learner.setup(str(sft_checkpoint), DeepSpeedConfig(bf16=dtype == "bfloat16", lr=1e-3), 0, 1,
                      f"127.0.0.1:{free_port()}", 4096, 512, seed=0)
        out[dtype] = learner
    return out


@pytest.fixture(scope="module")
def probe(rows, tokenizer):
    """A fixed prompt + a reference-style answer: the sequence whose log-probs are compared
    before and after each sync."""
    prompt = encode_prompt(tokenizer, rows[-1].chat())
    answer = tokenizer.encode(f"<think>\nPlan: add the numbers column by column.\n</think>\n"
                              f"The answer is \\boxed{{{rows[-1].answer}}}.<|im_end|>", add_special_tokens=False)
    return prompt + answer, len(prompt)


def mean_abs(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sampled_token_logprobs_agree(engines, learners, prompts, dtype):
    gap = sampled_logprob_gap(engines[dtype], learners[dtype], prompts, SAMPLING)
    print(f"\n[logprob agreement {dtype}] mean |d| {gap['mean_abs']:.2e}  max |d| {gap['max_abs']:.2e}  "
          f"over {gap['tokens']} tokens / {gap['sequences']} seqs")
    assert gap["tokens"] >= 300 and gap["sequences"] == len(prompts) * SAMPLING.n
    assert gap["mean_abs"] <= TOL[dtype]
    # Not a degenerate policy: the sampled tokens are far from uniform over the 320-token vocab
    # (log 1/320 = -5.8), so an off-by-one or a dropped position would not go unnoticed.
    assert gap["engine_logprob_mean"] > -3.0


def real_episodes(engine, prompts, seed: int) -> list[Episode]:
    """k samples per prompt from the engine, with rewards that differ inside every group.

    48-token responses of the short-SFT model never reach a boxed answer, so the verifier would
    score them all 0 (an all-equal group has no advantage, nothing to learn). The reward here is a
    rule on the text instead: the share of digits in it."""
    gens = engine.generate(prompts, SAMPLING.model_copy(update={"seed": seed}))
    return [Episode(g.prompt_index, prompts[g.prompt_index], g.token_ids,
                    sum(c.isdigit() for c in g.text) / max(1, len(g.text)), sum(g.logprobs)) for g in gens]


def groups_with_signal(eps: list[Episode], n: int) -> list[Episode]:
    """The first n groups whose rewards differ (an all-equal group has no advantage: a policy
    trained enough samples some prompts' 48-token prefixes alike), renumbered 0..n-1."""
    by_group: dict[int, list[Episode]] = {}
    for e in eps:
        by_group.setdefault(e.group, []).append(e)
    kept = [g for g in by_group.values() if max(e.reward for e in g) > min(e.reward for e in g)][:n]
    assert len(kept) == n, f"only {len(kept)} of {len(by_group)} groups have differing rewards"
    return [dataclasses.replace(e, group=i) for i, g in enumerate(kept) for e in g]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weight_sync_after_a_real_update(engines, learners, prompts, probe, dtype):
    engine, learner = engines[dtype], learners[dtype]
    seq, plen = probe
    engine_before = engine.score([seq], [plen])[0]
    learner_before = learner.token_logprobs([seq], [plen])[0]
    assert mean_abs(engine_before, learner_before) <= TOL[dtype]

    eps = groups_with_signal(real_episodes(engine, prompts[:16], seed=1), 8)
    mbs = [[e for e in eps if e.group < 4], [e for e in eps if e.group >= 4]]
    stats = learner.train_iteration(mbs, [4, 4], 0.1, "mean", False, True)
    assert stats["steps"] == 2 and stats["skipped_steps"] == 0 and stats["loss"] > 0

    sync = engine.load_weights(learner.export_weights(dtype=dtype))
    print(f"\n[weight sync {dtype}] {sync['tensors']:.0f} tensors in {sync['seconds']:.3f}s")
    engine_after = engine.score([seq], [plen])[0]
    learner_after = learner.token_logprobs([seq], [plen])[0]
    moved = mean_abs(engine_after, engine_before)
    agree = mean_abs(engine_after, learner_after)
    print(f"[weight sync {dtype}] probe moved {moved:.3e} by the update; engine vs learner after sync {agree:.2e}")
    assert agree <= TOL[dtype]
    assert moved > 10 * TOL[dtype]  # the sync really changed the engine (so the check above can fail)
    assert sync["tensors"] == len(learner.engine.module.state_dict())

    # Sampling after the sync is from the new weights too (no stale prefix cache).
    gap = sampled_logprob_gap(engine, learner, prompts[:4], SAMPLING.model_copy(update={"n": 2, "seed": 7}))
    assert gap["mean_abs"] <= TOL[dtype]


def test_bf16_export_to_an_fp32_engine_is_not_a_sync(engines, learners, probe):
    """What the driver must not do: ship bf16-rounded weights to an fp32 engine. The engine then
    samples from a different policy than the learner's (here after the fp32 test's update)."""
    seq, plen = probe
    engine, learner = engines["float32"], learners["float32"]
    engine.load_weights(learner.export_weights(dtype="bfloat16"))
    rounded = mean_abs(engine.score([seq], [plen])[0], learner.token_logprobs([seq], [plen])[0])
    engine.load_weights(learner.export_weights(dtype="float32"))
    exact = mean_abs(engine.score([seq], [plen])[0], learner.token_logprobs([seq], [plen])[0])
    print(f"\n[fp32 engine] probe |d| with bf16 export {rounded:.2e}, with fp32 export {exact:.2e}")
    assert exact < 1e-4 < rounded
