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
    Check: undo the steps.                         self-verification by the inverse operations
    6074-1187:
    ...
    = 4887 ok
    4887+394:
    ...
    = 5281 ok
    Check again to be sure:                        redundant re-checking ("overthinking"):
    ...                                            a geometric number of further passes
    </think>
    \\boxed{6074}

Why it has the properties the length penalty needs:
- **Length varies a lot at equal correctness.** The number of redundant re-checks is drawn per
  trace (geometric, `p_recheck`), so the k samples of one prompt differ by whole passes over the
  work while all being right: a check pass costs as much as the work itself.
- **Removing the redundancy does not hurt accuracy**: a re-check after a passing check never
  changes the answer in the data.
- **But some checking really catches errors.** In `slip_prob` of the traces the work holds an
  *uncorrected* slip (one column written one too high). The first check then finds a mismatch
  ("= 4888 != 4887. Mismatch: redo from 4887+1187."), the steps from there are redone and
  checked again. A policy that drops every check keeps its own slips; one that keeps the first
  check and drops the rest loses nothing. So the penalty's trade-off is not trivial.

    python -m experiments.long_cot --out data/long --seed 0
"""

from __future__ import annotations

import random

from experiments.arith import Problem, column_lines, generate, split_args, write_splits

RECHECK_PHRASES = (
    "Check again to be sure:",
    "Let me verify once more:",
    "One more check, to be safe:",
    "Am I sure? Check again:",
)


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
    p: Problem, rng: random.Random, slip_prob: float = 0.2, p_recheck: float = 0.7,
    first_check_prob: float = 0.45, max_checks: int = 12, explore_prob: float = 0.15,
) -> str:
    """The assistant message: <think>plan, [exploration], work, checks</think> then the boxed answer.

    Checks: the first pass is made with probability `first_check_prob` (always after a slip:
    that is what it is for), each further one with probability `p_recheck`, up to `max_checks`.
    A pass that finds a mismatch redoes the steps from the wrong one, and one more pass follows."""
    steps = len(p.ops)
    lines = [f"Plan: {p.expression}, {steps} step{'s' if steps > 1 else ''}, left to right, then check."]
    if rng.random() < explore_prob:
        lines.append(exploration(p))
    slip_at = rng.randrange(steps) if rng.random() < slip_prob else None
    values = [p.operands[0]]
    _work(p, 0, values, lines, rng, slip_at)
    n_checks = 1 if slip_at is not None or rng.random() < first_check_prob else 0
    while n_checks and n_checks < max_checks and rng.random() < p_recheck:
        n_checks += 1
    done = 0
    while done < n_checks:
        lines.append("Check: undo the steps." if done == 0 else RECHECK_PHRASES[rng.randrange(len(RECHECK_PHRASES))])
        wrong = _check(p, values, lines)
        done += 1
        if wrong is not None:
            del values[wrong + 1:]
            _work(p, wrong, values, lines, rng, None)
            n_checks = max(n_checks, done + 1)  # redone steps are checked again
    if values[-1] != p.answer:  # a slip left unchecked: cannot happen (a slip forces a check)
        raise AssertionError(f"trace for {p.expression} ends at {values[-1]}, not {p.answer}")
    think = "\n".join(lines)
    return f"<think>\n{think}\n</think>\n\\boxed{{{values[-1]}}}"


def generate_long_task(seed: int, n_sft: int, n_train: int, n_eval: int, slip_prob: float = 0.2,
                       p_recheck: float = 0.7) -> dict[str, list[dict]]:
    """Splits as `arith.generate` draws them (eval balanced over problem kinds, no expression
    shared across splits); SFT rows carry long-CoT traces."""
    return generate(seed, n_sft, n_train, n_eval, slip_prob,
                    make_response=lambda p, rng, s: long_cot_response(p, rng, s, p_recheck))


def main(argv: list[str] | None = None) -> None:
    ap = split_args(__doc__, "data/long", 0.2, "share of traces whose work holds a slip")
    ap.add_argument("--p-recheck", type=float, default=0.7, help="chance of each further check pass")
    args = ap.parse_args(argv)
    write_splits(generate_long_task(args.seed, args.n_sft, args.n_train, args.n_eval, args.slip_prob,
                                    args.p_recheck), args.out)


if __name__ == "__main__":
    main()
