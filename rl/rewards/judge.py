"""Model-based verifier: a CoT judge that reasons, then gives a JSON verdict.

For answers a rule cannot check (free-form, proofs, non-math references) k1.5 uses a
chain-of-thought reward model that reasons before its verdict (§2.3 "Reward modeling for math":
the CoT RM reached 98.5% accuracy against 84.4% for a classic value-head RM). We keep its shape:
the judge sees question, reference and the response's answer part, writes a short reasoning and
then {"reasoning": ..., "verdict": "correct" | "incorrect"}. A missing or unparsable verdict is
never a pass: score 0, reason `judge_unparsable`, and it is counted in `JudgeVerifier.stats`.

The judge talks to any `TextGenerator` (transports.py: an in-process or Ray-actor vLLM engine, or
an OpenAI-compatible HTTP endpoint). With `structured=True` the schema below is passed as
`json_schema` so a constrained decoder always emits valid JSON; `maxLength` on the reasoning keeps
the object short enough to close within `max_tokens`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Protocol, Sequence

from rl.rewards.base import Reason, Verifier, VerifyItem, VerifyResult
from rl.rewards.config import JudgeConfig
from rl.rewards.extract import answer_part, clean_text

TEMPLATE = """You are grading the final answer of a response to a problem against a reference answer.
Judge only whether the final answer is equivalent to the reference (equal values, same set of
solutions, same choice); ignore style and the quality of the reasoning.

Problem:
{question}

Reference answer:
{reference}

Response (final part):
{response}

First reason briefly, then give your verdict. Reply with one JSON object and nothing after it:
{{"reasoning": "<short reasoning>", "verdict": "correct" or "incorrect"}}
"""


def verdict_schema(reasoning_max_chars: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": reasoning_max_chars},
            "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
        },
        "required": ["reasoning", "verdict"],
        "additionalProperties": False,
    }


class TextGenerator(Protocol):
    """What a judge needs from a model: n completions per prompt (rollout.engine.VLLMEngine has it)."""

    def generate_text(
        self,
        prompts: list[str],
        *,
        max_tokens: int,
        temperature: float,
        n: int = 1,
        seed: int | None = None,
        json_schema: dict | None = None,
    ) -> list[list[str]]: ...


def parse_verdict(text: str, max_tries: int = 64) -> bool | None:
    """The verdict of the last JSON object in `text` that has one; None if there is none."""
    decoder = json.JSONDecoder(strict=False)  # a model may put raw control characters in strings
    pos = len(text)
    for _ in range(max_tries):
        pos = text.rfind("{", 0, pos)
        if pos < 0:
            return None
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except ValueError:
            continue
        verdict = obj.get("verdict") if isinstance(obj, dict) else None
        if isinstance(verdict, str) and verdict.strip().lower() in ("correct", "incorrect"):
            return verdict.strip().lower() == "correct"
    return None


class JudgeVerifier(Verifier):
    """Scores a batch with one batched call to the judge model."""

    name = "judge"
    rule_based = False

    def __init__(self, generator: TextGenerator, cfg: JudgeConfig | None = None) -> None:
        self.generator, self.cfg = generator, cfg or JudgeConfig()
        self.stats: Counter[str] = Counter()  # correct / incorrect / unparsable / error

    def render(self, item: VerifyItem) -> str | None:
        """The judge prompt, or None when thinking never closed (nothing to judge)."""
        text, _ = answer_part(clean_text(item.response), item.require_think)
        if text is None:
            return None
        tail = text.strip()[-self.cfg.response_max_chars :]
        return TEMPLATE.format(question=item.question or "(not given)", reference=item.reference, response=tail)

    def __call__(self, batch: Sequence[VerifyItem]) -> list[VerifyResult]:
        prompts = [self.render(it) for it in batch]
        todo = [i for i, p in enumerate(prompts) if p is not None]
        results = [VerifyResult(0.0, Reason.UNTERMINATED_THINK, {"format_ok": False}) for _ in batch]
        if not todo:
            return results
        schema = verdict_schema(self.cfg.reasoning_max_chars) if self.cfg.structured else None
        try:
            outs = self.generator.generate_text(
                [prompts[i] for i in todo], max_tokens=self.cfg.max_tokens,
                temperature=self.cfg.temperature, n=1, seed=self.cfg.seed, json_schema=schema,
            )  # fmt: skip
            err = "no output"
            if len(outs) != len(todo):
                raise RuntimeError(f"judge returned {len(outs)} outputs for {len(todo)} prompts")
        except Exception as e:  # transport gave up after its own timeout/retries
            outs = [[] for _ in todo]
            err = f"{type(e).__name__}: {e}"[:300]
        for i, out in zip(todo, outs):
            results[i] = self._score(out[0] if out else None, err)
        return results

    def _score(self, text: str | None, err: str) -> VerifyResult:
        if text is None:
            self.stats["error"] += 1
            return VerifyResult(0.0, Reason.JUDGE_ERROR, {"error": err})
        verdict = parse_verdict(text)
        m = {"judge_output": text[-2000:]}
        if verdict is None:
            self.stats["unparsable"] += 1
            return VerifyResult(0.0, Reason.JUDGE_UNPARSABLE, m)
        self.stats["correct" if verdict else "incorrect"] += 1
        return VerifyResult(float(verdict), Reason.JUDGE_CORRECT if verdict else Reason.JUDGE_INCORRECT, m)

    def verify_one(self, item: VerifyItem) -> VerifyResult:
        return self([item])[0]
