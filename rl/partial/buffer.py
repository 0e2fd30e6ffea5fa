"""The replay buffer of k1.5 partial rollouts (arXiv 2501.12599 §2.6.2): trajectories generated a
segment per iteration, and the prompt groups they belong to.

One iteration, as the driver runs it:

    n_new = buf.fresh_prompts(capacity)          # slots the running trajectories leave, in prompts
    fresh = [(pid, prompt_ids[pid]) for pid in sampler.sample(n_new, it, exclude=buf.prompts_in_flight())]
    requests = buf.next_requests(fresh)          # continued first (n=1: prompt + response so far),
                                                 # then the fresh prompts (n=k), each with its max_tokens
    buf.record(requests, generate(requests), it) # one list of n generations per request
    groups = buf.pop_complete()                  # score, reward and train these
    checkpoint["replay_buffer"] = buf.state_dict()

(`next_requests` / `record` are `running`, `start_group` and `add_segment` in that order.)

How groups wait. A group of k samples of one prompt is released for training only when all k are
final, so that the baseline (the group's mean reward) and the length reward see the whole group.
Until then the group stays in the buffer as a whole: members still running are continued each
iteration; members already final wait, untouched, holding no generation slot. A group therefore
waits at most max_segments - 1 iterations after its first segment. The price: a waiting member's
last segment was sampled under the weights of the iteration it finished in, up to
max_segments - 1 updates before the one it is trained in (`Trajectory.segment_iterations` records
it; `released_metrics` reports the lag as `partial_stale_iterations_mean`).

A trajectory is final when the engine ended it (EOS or a stop string: finish reason "stop"), or it
is cut (finish reason "length", so it gets `reward.truncated_reward`): at `max_segments` segments,
at `max_response_tokens` (rollout.sampling.max_tokens), when a segment stopped short of its budget
with "length" (the engine's context, max_model_len, is full), or when its tail repeats
(`rl.partial.repeat`, marked `repeat_stop`).

Exact resume: `state_dict()` is plain JSON (lists, ints, floats, strings), saved in the
checkpoint's trainer state after the iteration's complete groups were popped and trained on, and
`from_state_dict` restores it exactly, so a resumed run continues every partial trajectory and
trains none twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Sequence

from rl.partial.repeat import RepeatRule

STATE_FORMAT = 1


@dataclass
class Trajectory:
    """One sample of one prompt, possibly unfinished, with the segments generated so far.

    Segment s covers response tokens [segment_ends[s-1], segment_ends[s]) (the first starts at 0)
    and was sampled in iteration segment_iterations[s], under that iteration's weights; so were
    its `logprobs` (the engine's, of the sampled tokens)."""

    prompt_id: str
    group_id: int  # unique within the run (the buffer counts them)
    sample_index: int  # 0 .. k-1 within the group
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per response token
    text: str = ""  # the segments' texts, concatenated
    segment_ends: list[int] = field(default_factory=list)
    segment_iterations: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # None: running; "length": cut (truncated reward); else the engine's
    repeat_stop: bool = False  # cut because its tail repeats

    @property
    def key(self) -> tuple[int, int]:
        return self.group_id, self.sample_index

    @property
    def num_segments(self) -> int:
        return len(self.segment_ends)

    @property
    def final(self) -> bool:
        return self.finish_reason is not None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def continuation_prompt(self) -> list[int]:
        """What the engine is given to continue this trajectory: the prompt and every earlier segment."""
        return self.prompt_ids + self.response_ids

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(f"trajectory record has keys {sorted(d)}, expected {sorted(names)}")
        t = cls(**{k: list(v) if isinstance(v, list) else v for k, v in d.items()})  # no list shared with `d`
        t._check()
        return t

    def _check(self) -> None:
        ends = self.segment_ends
        if len(self.logprobs) != len(self.response_ids):
            raise ValueError(f"trajectory {self.key}: {len(self.logprobs)} log-probs for {len(self.response_ids)} tokens")
        its = self.segment_iterations
        if len(its) != len(ends) or any(b <= a for a, b in zip(its, its[1:])):
            raise ValueError(f"trajectory {self.key}: segment iterations {its} for {len(ends)} segments "
                             "(one per segment, increasing)")
        if any(b < a for a, b in zip([0, *ends], ends)) or (ends and ends[-1] != len(self.response_ids)):
            raise ValueError(f"trajectory {self.key}: segment ends {ends} do not tile {len(self.response_ids)} tokens")


@dataclass(frozen=True)
class PartialSettings:
    """What the buffer needs of the config (`from_config`): group size and the segment limits."""

    group_size: int  # k, rollout.sampling.n
    segment_tokens: int
    max_segments: int
    max_response_tokens: int  # rollout.sampling.max_tokens: the cap on a whole response
    repeat: RepeatRule | None = None  # None: no repeat detection

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.segment_tokens < 1 or self.max_segments < 1 or self.max_response_tokens < 1:
            raise ValueError(f"PartialSettings needs positive sizes, got {self}")

    @classmethod
    def from_config(cls, cfg: Any) -> PartialSettings | None:
        """From a validated `RLConfig` (which fills max_segments); None while rollout.partial is off."""
        rc, pc = cfg.rollout, cfg.rollout.partial
        if not pc.enabled:
            return None
        repeat = RepeatRule(pc.repeat_ngram, pc.repeat_min_count, pc.repeat_min_tokens) if pc.repeat_ngram else None
        return cls(rc.sampling.n, pc.segment_tokens, pc.max_segments, rc.sampling.max_tokens, repeat)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartialSettings:
        d = dict(d)
        d["repeat"] = RepeatRule(**d["repeat"]) if d.get("repeat") is not None else None
        return cls(**d)


@dataclass
class SegmentRequest:
    """One engine request of an iteration: `n` = len(keys) samples continuing `prompt_ids` (the
    prompt, then the trajectory's earlier segments) by at most `max_tokens` new tokens each;
    sample j belongs to trajectory keys[j]. A continuation has n = 1; a fresh prompt n = k."""

    prompt_ids: list[int]
    max_tokens: int
    keys: list[tuple[int, int]]

    @property
    def n(self) -> int:
        return len(self.keys)


class ReplayBuffer:
    """The prompt groups in flight: every group from its first segment until all k of its samples
    are final and `pop_complete` releases it. Groups are kept in the order they started (their
    ids increase), so continuations, releases and the state are in one deterministic order."""

    def __init__(self, settings: PartialSettings):
        self.settings = settings
        self._groups: dict[int, list[Trajectory]] = {}
        self._next_group_id = 0

    # -- what is held --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Trajectories held, running and waiting."""
        return sum(len(g) for g in self._groups.values())

    @property
    def num_groups(self) -> int:
        return len(self._groups)

    def trajectories(self) -> Iterable[Trajectory]:
        for group in self._groups.values():
            yield from group

    def running(self) -> list[Trajectory]:
        """The unfinished trajectories, oldest group first: the next iteration continues these first."""
        return [t for t in self.trajectories() if not t.final]

    def waiting(self) -> list[Trajectory]:
        """Final trajectories whose group still has running members."""
        return [t for t in self.trajectories() if t.final]

    def prompts_in_flight(self) -> set[str]:
        """Prompt ids of the groups held (the sampler should not draw them again meanwhile)."""
        return {g[0].prompt_id for g in self._groups.values()}

    # -- the next iteration's batch ------------------------------------------------------------

    def fresh_slots(self, capacity: int) -> int:
        """Sequences left for fresh prompts in a batch of `capacity` sequences (prompts_per_iteration
        x k) once every running trajectory has its slot; waiting ones take none."""
        return max(0, capacity - len(self.running()))

    def fresh_prompts(self, capacity: int) -> int:
        """Fresh prompt groups (k sequences each) that fit in what `fresh_slots` leaves."""
        return self.fresh_slots(capacity) // self.settings.group_size

    def segment_budget(self, t: Trajectory) -> int:
        """max_tokens of `t`'s next segment: segment_tokens, or less near the response cap."""
        return min(self.settings.segment_tokens, self.settings.max_response_tokens - len(t.response_ids))

    # -- recording a segment -------------------------------------------------------------------

    def start_group(self, prompt_id: str, prompt_ids: Sequence[int]) -> int:
        """A new group of k empty trajectories of one prompt; returns its id. Its samples are keyed
        (id, 0) .. (id, k-1) for `add_segment`."""
        gid = self._next_group_id
        self._next_group_id += 1
        self._groups[gid] = [Trajectory(prompt_id, gid, j, list(prompt_ids)) for j in range(self.settings.group_size)]
        return gid

    def get(self, key: tuple[int, int]) -> Trajectory:
        gid, j = key
        if gid not in self._groups or not 0 <= j < len(self._groups[gid]):
            raise KeyError(f"no trajectory {key} in the replay buffer")
        return self._groups[gid][j]

    def add_segment(self, key: tuple[int, int], token_ids: Sequence[int], logprobs: Sequence[float],
                    finish_reason: str, iteration: int, text: str = "") -> Trajectory:
        """Append the segment the engine generated for trajectory `key` in `iteration` (under that
        iteration's weights) and decide whether the trajectory is now final (module docstring).
        Raises ValueError for a final trajectory, a second segment in one iteration, more tokens
        than `segment_budget` or log-probs that do not match the tokens."""
        t = self.get(key)
        if t.final:
            raise ValueError(f"trajectory {key} is final ({t.finish_reason}): it takes no more segments")
        budget = self.segment_budget(t)
        if t.segment_iterations and iteration <= t.segment_iterations[-1]:
            raise ValueError(f"trajectory {key} already has a segment from iteration {t.segment_iterations[-1]}; "
                             f"got one from iteration {iteration}")
        if len(logprobs) != len(token_ids):
            raise ValueError(f"trajectory {key}: {len(logprobs)} log-probs for {len(token_ids)} tokens")
        if len(token_ids) > budget:
            raise ValueError(f"trajectory {key}: a segment of {len(token_ids)} tokens, over its budget of {budget}")
        t.response_ids += token_ids
        t.logprobs += [float(x) for x in logprobs]
        t.text += text
        t.segment_ends.append(len(t.response_ids))
        t.segment_iterations.append(iteration)
        s = self.settings
        if finish_reason != "length":  # the response ended itself (EOS, a stop string) or was aborted
            t.finish_reason = finish_reason
        elif s.repeat is not None and s.repeat.find(t.response_ids) is not None:
            t.finish_reason, t.repeat_stop = "length", True
        elif (t.num_segments >= s.max_segments or len(t.response_ids) >= s.max_response_tokens
              or len(token_ids) < budget):  # short of the budget with "length": the context is full
            t.finish_reason = "length"
        return t

    def next_requests(self, fresh: Sequence[tuple[str, Sequence[int]]]) -> list[SegmentRequest]:
        """The iteration's engine requests: every running trajectory (oldest group first), then a
        new group for each fresh (prompt id, prompt token ids). The order is deterministic, so
        seeding the call by position (rl.checkpoint.rollout_seed) samples what an uninterrupted
        run does after a resume."""
        requests = [SegmentRequest(t.continuation_prompt(), self.segment_budget(t), [t.key]) for t in self.running()]
        for prompt_id, prompt_ids in fresh:
            group = self._groups[self.start_group(prompt_id, prompt_ids)]
            requests.append(SegmentRequest(list(prompt_ids), self.segment_budget(group[0]), [t.key for t in group]))
        return requests

    def record(self, requests: Sequence[SegmentRequest], outputs: Sequence[Sequence[Any]], iteration: int) -> None:
        """`outputs[i]`: the n generations of requests[i], in sample order, each with token_ids,
        logprobs, finish_reason and text (`rollout.engine.Generation`); added with `add_segment`."""
        if len(outputs) != len(requests):
            raise ValueError(f"{len(outputs)} outputs for {len(requests)} requests")
        for req, gens in zip(requests, outputs):
            if len(gens) != req.n:
                raise ValueError(f"{len(gens)} generations for a request of n = {req.n} (trajectories {req.keys})")
            for key, g in zip(req.keys, gens):
                self.add_segment(key, g.token_ids, g.logprobs, g.finish_reason, iteration, g.text)

    def pop_complete(self) -> list[list[Trajectory]]:
        """Remove and return the groups whose k trajectories are all final, oldest first, each in
        sample order: these are scored and trained on, once."""
        done = [gid for gid, g in self._groups.items() if all(t.final for t in g)]
        return [self._groups.pop(gid) for gid in done]

    # -- checkpoint ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the buffer holds, as JSON-serialisable values (the checkpoint's trainer state)."""
        return {
            "format": STATE_FORMAT,
            "settings": self.settings.to_dict(),
            "next_group_id": self._next_group_id,
            "groups": [[t.to_dict() for t in g] for g in self._groups.values()],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], settings: PartialSettings | None = None) -> ReplayBuffer:
        """The buffer `state_dict` described. With `settings` (the resumed run's), those are used from
        here on; the group size must be the saved one (a group of k could never complete with
        another k). Other limits may change: they apply from the next segment on."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"replay buffer state format {state.get('format')!r}, expected {STATE_FORMAT}")
        saved = PartialSettings.from_dict(state["settings"])
        if settings is not None and settings.group_size != saved.group_size:
            raise ValueError(f"the checkpoint's replay buffer holds groups of {saved.group_size} samples; "
                             f"rollout.sampling.n is now {settings.group_size}")
        buf = cls(settings or saved)
        buf._next_group_id = int(state["next_group_id"])
        for records in state["groups"]:
            group = [Trajectory.from_dict(r) for r in records]
            gid = group[0].group_id
            if ([t.group_id for t in group] != [gid] * len(group) or [t.sample_index for t in group] != list(range(len(group)))
                    or len(group) != saved.group_size or gid in buf._groups or gid >= buf._next_group_id):
                raise ValueError(f"replay buffer state: group {gid} is malformed")
            buf._groups[gid] = group
        return buf

    # -- metrics -------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """The buffer after an iteration: what the dashboard plots as its size."""
        running = self.running()
        return {
            "partial_buffer_groups": float(self.num_groups),
            "partial_buffer_trajectories": float(len(self)),
            "partial_buffer_running": float(len(running)),
            "partial_buffer_waiting": float(len(self) - len(running)),
            "partial_buffer_tokens": float(sum(len(t.response_ids) for t in self.trajectories())),
        }


def restore_buffer(saved: dict[str, Any] | None, settings: PartialSettings | None) -> ReplayBuffer | None:
    """The replay buffer a run starts with, or goes back to after a learner restart: the
    checkpoint's (`TrainerState.replay_buffer`), else an empty one. `settings` None: partial
    rollouts are off, and there is no buffer; a checkpoint still holding unfinished trajectories is
    then an error rather than trajectories dropped without a word."""
    if settings is None:
        held = sum(len(g) for g in (saved or {}).get("groups", []))
        if held:
            raise ValueError(f"the checkpoint's replay buffer holds {held} trajectories of partial rollouts, but "
                             "rollout.partial.enabled is false: resume with it on to continue them")
        return None
    return ReplayBuffer(settings) if saved is None else ReplayBuffer.from_state_dict(saved, settings)


def released_metrics(groups: list[list[Trajectory]], iteration: int) -> dict[str, float]:
    """The groups released (and trained on) in `iteration`: segments per trajectory, how many were
    cut or stopped for repeating, and how many updates old their last segment is."""
    trajs = [t for g in groups for t in g]
    if not trajs:
        return {"partial_released_trajectories": 0.0}
    n = float(len(trajs))
    return {
        "partial_released_trajectories": n,
        "partial_segments_mean": sum(t.num_segments for t in trajs) / n,
        "partial_segments_max": float(max(t.num_segments for t in trajs)),
        "partial_multi_segment_frac": sum(t.num_segments > 1 for t in trajs) / n,
        "partial_truncated_frac": sum(t.truncated for t in trajs) / n,
        "partial_repeat_stops": float(sum(t.repeat_stop for t in trajs)),
        "partial_stale_iterations_mean": sum(iteration - t.segment_iterations[-1] for t in trajs) / n,
    }
