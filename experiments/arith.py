"""The embedded default task: multi-operand integer arithmetic with long-CoT traces.

Why this task: it is verifiable by a rule (the reference is an integer), generated locally and
deterministically from a seed (no dataset hub), and its difficulty is a *known* label, so the
tagging CLI, the curriculum sampler and the dashboards can be checked against ground truth.

Difficulty is graded by digits x operands x operator mix:

    level = digits + (operands - 2) + (1 if the expression has a minus sign else 0)

so "3+4" is level 1 and "5281-394+1187" is level 6. Intermediate results never go negative
(subtrahends are drawn no larger than the running value), so every step is a column operation.

The SFT traces show the cognitive moves the k1.5 report asks of long-CoT data (§2.2 "long-CoT
supervised fine-tuning": planning, evaluation, reflection, exploration): a plan, column-by-column
work with carries and borrows, a self-check by the inverse operation, and, in a fraction of
traces, a caught-and-corrected slip ("Wait, ... Fix: ...").

    python -m experiments.arith --out data/arith --seed 0
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prompts.schema import write_jsonl

DOMAIN = "arithmetic"
MAX_DIGITS = 4
OPERAND_COUNTS = (2, 3)
OP_MIXES = ("+", "-", "+-")


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]  # len(operands) - 1, each "+" or "-"
    digits: int
    mix: str

    @property
    def expression(self) -> str:
        out = str(self.operands[0])
        for op, x in zip(self.ops, self.operands[1:]):
            out += f"{op}{x}"
        return out

    @property
    def answer(self) -> int:
        value = self.operands[0]
        for op, x in zip(self.ops, self.operands[1:]):
            value = value + x if op == "+" else value - x
        return value

    @property
    def level(self) -> int:
        return difficulty_level(self.digits, len(self.operands), self.mix)


def difficulty_level(digits: int, operands: int, mix: str) -> int:
    return digits + (operands - 2) + (1 if "-" in mix else 0)


MAX_LEVEL = difficulty_level(MAX_DIGITS, max(OPERAND_COUNTS), "+-")


def _draw_number(rng: random.Random, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def make_problem(rng: random.Random, digits: int, operands: int, mix: str) -> Problem:
    """Draw one problem. The first operand has exactly `digits` digits; later ones up to that."""
    if mix == "+-":
        ops = [rng.choice("+-") for _ in range(operands - 1)]
        if "-" not in ops:  # a mixed problem must mix
            ops[rng.randrange(len(ops))] = "-"
        if "+" not in ops and operands > 2:
            ops[0] = "+"
    else:
        ops = [mix] * (operands - 1)
    value = _draw_number(rng, digits)
    nums = [value]
    for op in ops:
        x = _draw_number(rng, rng.randint(max(1, digits - 1), digits))
        if op == "-":
            x = min(x, value)
            value -= x
        else:
            value += x
        nums.append(x)
    return Problem(tuple(nums), tuple(ops), digits, mix)


# ---------------------------------------------------------------------------------------------
# Long-CoT traces
# ---------------------------------------------------------------------------------------------


def column_lines(a: int, b: int, op: str, slip: int | None) -> tuple[list[str], int]:
    """Column-by-column work for a (op) b, least significant digit first, in a compact notation
    (`7+5+0=12 w2 c1`: digit sum with carry-in, write 2, carry 1; `2-9-0<0 12-9=3 b1`: borrow).
    Compact lines matter: the tiny model learns per token, and every token of a trace costs SFT
    and rollout time. If `slip` is a column index, that column is first written wrong by one,
    then caught and fixed (the reflection move)."""
    da, db = str(a)[::-1], str(b)[::-1]
    n = max(len(da), len(db))
    lines: list[str] = []
    carry = 0
    out_digits: list[str] = []
    for i in range(n):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if op == "+":
            s = x + y + carry
            digit, new_carry = s % 10, s // 10
            line = f"{x}+{y}+{carry}={s} w{digit} c{new_carry}"
            if slip == i:
                wrong = s + 1
                lines.append(f"{x}+{y}+{carry}={wrong} w{wrong % 10} c{wrong // 10}")
                lines.append(f"Wait, {x}+{y}+{carry}={s} not {wrong}. Fix:")
        else:
            s = x - y - carry
            if s < 0:
                digit, new_carry = s + 10, 1
                line = f"{x}-{y}-{carry}<0 {x + 10}-{y}-{carry}={digit} b1"
            else:
                digit, new_carry = s, 0
                line = f"{x}-{y}-{carry}={digit} b0"
            if slip == i:
                wrong = (digit + 1) % 10
                lines.append(line.replace(f"={digit} b", f"={wrong} b", 1))
                lines.append(f"Wait, that digit is {digit} not {wrong}. Fix:")
        lines.append(line)
        out_digits.append(str(digit))
        carry = new_carry
    if op == "+" and carry:
        lines.append(f"c{carry} w{carry}")
        out_digits.append(str(carry))
    result = int("".join(reversed(out_digits)))
    return lines, result


def cot_response(p: Problem, rng: random.Random, slip_prob: float = 0.15) -> str:
    """The assistant message for SFT: <think>plan, work, check</think> then the boxed answer."""
    steps = len(p.ops)
    first, rest = p.operands[0], list(zip(p.ops, p.operands[1:]))
    lines = [f"Plan: {p.expression} in {steps} step{'s' if steps > 1 else ''}, left to right."]
    slip_step = rng.randrange(steps) if rng.random() < slip_prob else None
    value = first
    history = [value]
    for k, (op, x) in enumerate(rest):
        lines.append(f"{value}{op}{x}:")
        slip = None
        if slip_step == k:
            slip = rng.randrange(max(len(str(value)), len(str(x))))
        work, value = column_lines(value, x, op, slip)
        lines.extend(work)
        lines.append(f"= {value}")
        history.append(value)
    # Self-check by undoing the steps in reverse (inverse operations).
    checks = []
    v = value
    for (op, x), prev in zip(reversed(rest), reversed(history[:-1])):
        inv = "-" if op == "+" else "+"
        checks.append(f"{v}{inv}{x}={prev}")
        v = prev
    lines.append("Check: " + ", ".join(checks) + " ok")
    think = "\n".join(lines)
    return f"<think>\n{think}\n</think>\n\\boxed{{{value}}}"


def prompt_messages(p: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Compute {p.expression}"}]


def prompt_row(p: Problem, idx: str) -> dict:
    return {
        "id": idx,
        "prompt": prompt_messages(p),
        "answer": str(p.answer),
        "difficulty": p.level,
        "domain": DOMAIN,
        "verifier": "math",
        "metadata": {"digits": p.digits, "operands": len(p.operands), "ops": p.mix},
    }


def generate(
    seed: int,
    n_sft: int,
    n_train: int,
    n_eval: int,
    slip_prob: float = 0.15,
    make_row: Callable[[Problem, str], dict] = prompt_row,
    make_response: Callable[[Problem, random.Random, float], str] | None = None,
) -> dict[str, list[dict]]:
    """Deterministic splits with no expression shared between them.

    `sft` rows carry a `response` (the CoT trace); `train` is the RL prompt set; `eval` is held out
    and balanced over the problem kinds (digits x operands x operator mix: equal counts, up to
    one), so every level is present; levels made of more kinds get more prompts. `make_row`
    builds a prompt row from a problem and its id (the image task, arith_image.py, swaps in its
    own; it must not draw from the generator's rng, so both tasks get the same problems).
    `make_response(problem, rng, slip_prob)` writes an SFT trace (default `cot_response`; the
    long-CoT task, long_cot.py, swaps in its own).
    """
    make_response = make_response or cot_response
    rng = random.Random(seed)
    combos = [(d, m, mix) for d in range(1, MAX_DIGITS + 1) for m in OPERAND_COUNTS for mix in OP_MIXES]
    seen: set[str] = set()

    def draw(split: str, n: int) -> list[dict]:
        rows = []
        mine: set[str] = set()
        attempts = 0
        while len(rows) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"could not draw {n} distinct problems for split {split}")
            d, m, mix = combos[len(rows) % len(combos)] if split == "eval" else rng.choice(combos)
            p = make_problem(rng, d, m, mix)
            # Never share an expression across splits; inside the SFT split repeats are fine
            # (1-digit sums have only 100 distinct problems).
            if p.expression in seen or (split != "sft" and p.expression in mine):
                continue
            mine.add(p.expression)
            row = make_row(p, f"{split}-{len(rows):06d}")
            if split == "sft":
                row["response"] = make_response(p, rng, slip_prob)
            rows.append(row)
        seen.update(mine)
        return rows

    # Eval first so small levels (1-digit problems are few) are not exhausted by the other splits.
    out = {"eval": draw("eval", n_eval)}
    out["train"] = draw("train", n_train)
    out["sft"] = draw("sft", n_sft)
    return out


def split_args(doc: str, out: str, slip_prob: float, slip_help: str) -> argparse.ArgumentParser:
    """The command line every embedded task shares: where, seed, split sizes, slip share."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=out, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-sft", type=int, default=20000)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=420)
    ap.add_argument("--slip-prob", type=float, default=slip_prob, help=slip_help)
    return ap


def write_splits(splits: dict[str, list[dict]], out_dir: str) -> None:
    out = Path(out_dir)
    for name, rows in splits.items():
        write_jsonl(out / f"{name}.jsonl", rows)
        print(f"wrote {len(rows):6d} rows to {out / (name + '.jsonl')}")


def main(argv: list[str] | None = None) -> None:
    args = split_args(__doc__, "data/arith", 0.15, "share of traces with a caught slip").parse_args(argv)
    write_splits(generate(args.seed, args.n_sft, args.n_train, args.n_eval, args.slip_prob), args.out)


if __name__ == "__main__":
    main()
