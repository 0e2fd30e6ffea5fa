"""The long-CoT embedded task: the arithmetic problems of `arith.py`, with *thinking* traces of
realistic, variable length -- the shape of a Thinking model's output that the k1.5 length
control (§2.3.3), partial rollouts (§2.6.2) and long2short (§2.4) are about.

Same prompts, answers and difficulty labels as the short task (so the rule verifier, the
samplers and the tagging CLI need nothing new); only the SFT traces differ. A trace is

    <think>
    Plan: 5281-394+1187, 2 steps, left to right, then check.
    [Idea: ... No, ... Back to the plan.]          exploring a wrong route, backtracking (15 %)
    5281-394:                                      the work: one column per line, as in arith.py
    1-4-0<0 11-4-0=7 b1
    ...
    = 4887
    4887+1187:
    ...
    = 6074
    Check: undo the steps.                         self-verification by the inverse operations (80 %,
    6074-1187:                                     always after a slip)
    ...
    = 4887 ok
    4887+394:
    ...
    = 5281 ok
    </think>
    \\boxed{6074}
    Hmm, wait. Let me double-check that. Yes, ...  second-guessing the settled answer ("overthinking",
    Hmm, wait. Let me double-check that. Yes, ...  55 %): 1 + a geometric number of lines, up to 30

Why it has the properties the length penalty needs:
- **Length varies a lot at equal correctness.** Whether and how long a trace second-guesses its
  answer is drawn per trace, so the k samples of one prompt differ by hundreds of tokens while
  all being right (data: p50 429, p95 1,570, max 2,423 tokens).
- **Removing the redundancy cannot hurt accuracy**: the second-guessing comes after the boxed
  answer and restates no value, so it can neither change nor corrupt the answer. Two earlier
  designs made the redundancy re-checks that redo the columns, then re-reads that restate the
  values; each was another chance to slip or mis-copy, so long traces were wrong more often and
  RL without any penalty already removed them (BENCHMARKS.md).
- **But the checking really catches errors.** In `slip_prob` of the traces the work holds an
  *uncorrected* slip (one column written one too high). The check then finds a mismatch
  ("= 4888 != 4887. Mismatch: redo from 4887+1187."), the steps from there are redone and
  checked again. A policy that drops the check keeps its own slips, so a penalty that takes the
  check out along with the second-guessing costs accuracy: the trade-off is not trivial.

    python -m experiments.long_cot --out data/long --seed 0
"""

from __future__ import annotations

import random

from experiments.arith import Problem, column_lines, generate, split_args, write_splits

# Second-guessing after the answer is given. The line restates no value, so it cannot corrupt the
# answer (a re-check that redoes the columns can slip, a re-read can mis-copy: BENCHMARKS.md). It is
# one line, repeated: a bank of 12 varied sentences was garbled by the 4M-parameter model after its
# SFT budget, and the garbled text sometimes held a second, wrong \boxed{}.
OVERTHINK_LINE = "Hmm, wait. Let me double-check that. Yes, it is right."


def slipped_lines(a: int, b: int, op: str, rng: random.Random) -> tuple[list[str], int] | None:
    """Column work for a (op) b with one column's written digit one too high and *not* caught:
    the result is then exactly 10**col too large. None if no column can take the slip (all 9s).
    Only upward slips: a later subtraction from the wrong value stays non-negative."""
    lines, value = column_lines(a, b, op, None)
    cols = []
    for i, line in enumerate(lines[: max(len(str(a)), len(str(b)))]):
        digit = int(line.split(" w")[1][0]) if op == "+" else int(line.rsplit("=", 1)[1][0])
        if digit < 9:
            cols.append((i, digit))
    if not cols:
        return None
    i, digit = rng.choice(cols)
    line = lines[i]
    if op == "+":
        head, tail = line.split("=", 1)
        s, rest = tail.split(" w", 1)
        lines[i] = f"{head}={int(s) + 1} w{digit + 1}{rest[1:]}"
    else:
        head, tail = line.rsplit("=", 1)
        lines[i] = f"{head}={digit + 1}{tail[1:]}"
    return lines, value + 10**i


def _work(p: Problem, start: int, values: list[int], lines: list[str], rng: random.Random, slip_at: int | None):
    """Forward work for steps start.. of `p`, from values[start]; appends lines and values."""
    for k in range(start, len(p.ops)):
        op, x = p.ops[k], p.operands[k + 1]
        a = values[k]
        lines.append(f"{a}{op}{x}:")
        slipped = slipped_lines(a, x, op, rng) if k == slip_at else None
        work, v = slipped if slipped else column_lines(a, x, op, None)
        lines.extend(work)
        lines.append(f"= {v}")
        values.append(v)


def _check(p: Problem, values: list[int], lines: list[str]) -> int | None:
    """Undo the steps from the last: (v inv x) with column work, compared with the value before.
    Returns the index of the first step found wrong (None if every step checks)."""
    for k in reversed(range(len(p.ops))):
        op, x = p.ops[k], p.operands[k + 1]
        inv = "-" if op == "+" else "+"
        v = values[k + 1]
        lines.append(f"{v}{inv}{x}:")
        work, back = column_lines(v, x, inv, None)
        lines.extend(work)
        if back != values[k]:
            lines.append(f"= {back} != {values[k]}. Mismatch: redo from {values[k]}{op}{x}.")
            return k
        lines.append(f"= {back} ok")
    return None


def exploration(p: Problem) -> str:
    """A wrong route tried and abandoned (the k1.5 'exploration' move)."""
    if len(p.ops) == 2 and p.ops == ("-", "+"):
        a, b, c = p.operands
        return (f"Idea: add {b}+{c} first, then subtract? No: {a}-{b}+{c} is not {a}-({b}+{c}). "
                "Back to the plan.")
    if len(p.ops) == 2:
        return f"Idea: start with the last two numbers? The order matters with {''.join(p.ops)}; back to the plan."
    a, b = p.operands
    return f"Idea: round {b} to a multiple of 10 first? The columns are just as short. Back to the plan."


def long_cot_response(
    p: Problem, rng: random.Random, slip_prob: float = 0.2, overthink_prob: float = 0.55,
    p_more: float = 0.9, max_overthink: int = 30, first_check_prob: float = 0.8, explore_prob: float = 0.15,
) -> str:
    """The assistant message: <think>plan, [exploration], work, [check]</think>, the boxed answer,
    then [second-guessing].

    The check pass is made with probability `first_check_prob`, and always after a slip: that is
    what it is for. A pass that finds a mismatch redoes the steps from the wrong one, and a second
    pass checks the redone work. With probability `overthink_prob` the answer is followed by
    1 + Geometric(1 - `p_more`) lines of second-guessing (at most `max_overthink`)."""
    steps = len(p.ops)
    lines = [f"Plan: {p.expression}, {steps} step{'s' if steps > 1 else ''}, left to right, then check."]
    if rng.random() < explore_prob:
        lines.append(exploration(p))
    slip_at = rng.randrange(steps) if rng.random() < slip_prob else None
    values = [p.operands[0]]
    _work(p, 0, values, lines, rng, slip_at)
    if slip_at is not None or rng.random() < first_check_prob:
        lines.append("Check: undo the steps.")
        wrong = _check(p, values, lines)
        if wrong is not None:
            del values[wrong + 1:]
            _work(p, wrong, values, lines, rng, None)
            lines.append("Check the redone steps:")
            if _check(p, values, lines) is not None:
                raise AssertionError(f"redone work for {p.expression} does not check")
    if values[-1] != p.answer:  # a slip left unchecked: cannot happen (a slip forces a check)
        raise AssertionError(f"trace for {p.expression} ends at {values[-1]}, not {p.answer}")
    extra = []
    if rng.random() < overthink_prob:
        n = 1
        while n < max_overthink and rng.random() < p_more:
            n += 1
        extra = [OVERTHINK_LINE] * n
    think = "\n".join(lines)
    return "\n".join([f"<think>\n{think}\n</think>\n\\boxed{{{values[-1]}}}", *extra])


def generate_long_task(seed: int, n_sft: int, n_train: int, n_eval: int, slip_prob: float = 0.2,
                       overthink_prob: float = 0.55) -> dict[str, list[dict]]:
    """Splits as `arith.generate` draws them (eval balanced over problem kinds, no expression
    shared across splits); SFT rows carry long-CoT traces."""
    return generate(seed, n_sft, n_train, n_eval, slip_prob,
                    make_response=lambda p, rng, s: long_cot_response(p, rng, s, overthink_prob))


def main(argv: list[str] | None = None) -> None:
    ap = split_args(__doc__, "data/long", 0.2, "share of traces whose work holds a slip")
    ap.add_argument("--overthink-prob", type=float, default=0.55, help="share of traces that second-guess the answer")
    args = ap.parse_args(argv)
    write_splits(generate_long_task(args.seed, args.n_sft, args.n_train, args.n_eval, args.slip_prob,
                                    args.overthink_prob), args.out)


if __name__ == "__main__":
    main()
