"""Typed YAML configs with `--set a.b=value` overrides (rl/configio.py), on the real SFT schema."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cot_sft.config import SFTConfig
from rl.configio import ConfigError, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]

BASE = """\
run_name: t
init_checkpoint: ckpt
data:
  train_file: rows.jsonl
train:
  max_steps: 10
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_file_and_defaults(tmp_path):
    cfg = load_config(SFTConfig, write(tmp_path, BASE))
    assert cfg.run_name == "t" and cfg.init_checkpoint == "ckpt" and cfg.data.train_file == "rows.jsonl"
    assert cfg.train.max_steps == 10
    assert cfg.train.row_tokens == 1024 and cfg.optim.zero_stage == 1  # untouched defaults


@pytest.mark.parametrize(
    "extra, key",
    [
        ("learning_rate: 0.1\n", "learning_rate"),                       # top level
        ("optim:\n  lr: 0.1\n  warmup: 5\n", "optim.warmup"),            # nested
        ("eval:\n  engine:\n    kv_cache: 1\n", "eval.engine.kv_cache"),  # two levels down
    ],
)
def test_unknown_key_names_file_and_dotted_key(tmp_path, extra, key):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ")
    assert f"unknown key '{key}'" in msg


def test_typo_inside_section_is_not_silently_dropped(tmp_path):
    # `max_step` instead of `max_steps`: the default (400) must not quietly win.
    path = write(tmp_path, BASE.replace("max_steps", "max_step"))
    with pytest.raises(ConfigError, match=r"unknown key 'train\.max_step'"):
        load_config(SFTConfig, path)


@pytest.mark.parametrize(
    "yaml_text, key, why",
    [
        (BASE.replace("max_steps: 10", "max_steps: many"), "train.max_steps", "valid integer"),
        (BASE.replace("max_steps: 10", "max_steps: 0"), "train.max_steps", "greater than 0"),
        (BASE + "optim:\n  zero_stage: 5\n", "optim.zero_stage", "0, 1, 2 or 3"),
        (BASE + "eval:\n  engine:\n    dtype: int8\n", "eval.engine.dtype", "bfloat16"),
        (BASE.replace("  train_file: rows.jsonl\n", "  max_seq_len: 64\n"), "data.train_file", "required"),
    ],
)
def test_wrong_value_names_the_key(tmp_path, yaml_text, key, why):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and f"key '{key}'" in msg and why in msg


def test_every_error_is_reported_at_once(tmp_path):
    path = write(tmp_path, BASE + "optim:\n  lr: -1\n  lrr: 1\n")
    msg = str(pytest.raises(ConfigError, load_config, SFTConfig, path).value)
    assert "key 'optim.lr'" in msg and "unknown key 'optim.lrr'" in msg


def test_overrides(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(
        SFTConfig,
        path,
        [
            "train.max_steps=25",           # int, replaces the file's 10
            "optim.lr=3e-4",                # float (PyYAML reads "3e-4" as a string; pydantic converts)
            "optim.bf16=false",             # bool
            "train.time_budget_s=null",     # null
            "run_name=exp-7",               # string
            "eval.engine.kv_cache_gib=0.25",  # creates eval.engine (its model is set at run time)
            "data.max_examples=100",
            "data.max_examples=200",        # the last override wins
        ],
    )
    assert cfg.train.max_steps == 25 and cfg.train.warmup_steps == 20
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.optim.bf16 is False
    assert cfg.train.time_budget_s is None and cfg.run_name == "exp-7"
    assert cfg.eval.engine.kv_cache_gib == 0.25
    assert cfg.data.max_examples == 200 and cfg.data.train_file == "rows.jsonl"


def test_override_into_empty_yaml_section(tmp_path):
    # `eval:` with nothing under it is None in YAML; an override must still be able to fill it.
    cfg = load_config(SFTConfig, write(tmp_path, BASE + "eval:\n"), ["eval.num_prompts=7"])
    assert cfg.eval.num_prompts == 7


def test_override_without_a_file():
    cfg = load_config(SFTConfig, None, ["data.train_file=x.jsonl", "init_checkpoint=c", "train.max_steps=64"])
    assert cfg.data.train_file == "x.jsonl" and cfg.init_checkpoint == "c" and cfg.train.max_steps == 64


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.max_stepz=3", r"unknown key 'train\.max_stepz' \(from --set\)"),
        ("train.max_steps=abc", r"key 'train\.max_steps' \(from --set\): Input should be a valid integer"),
        ("train.max_steps", r"override 'train\.max_steps': expected key=value"),
        ("data.train_file.x=1", r"'train_file' is not a section"),
        ("optim.betas=[0.9", r"override 'optim\.betas=\[0\.9': the value is not valid YAML"),
    ],
)
def test_bad_overrides(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(SFTConfig, write(tmp_path, BASE), [override])


def test_bad_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: config file not found"):
        load_config(SFTConfig, missing)
    listy = write(tmp_path, "- a\n- b\n", "list.yaml")
    with pytest.raises(ConfigError, match=f"{listy}: top level must be a mapping"):
        load_config(SFTConfig, listy)
    broken = write(tmp_path, "run_name: t\ndata:\n  train_file: [a\n", "broken.yaml")
    with pytest.raises(ConfigError, match=rf"{broken}:\d+: invalid YAML"):
        load_config(SFTConfig, broken)
    bad_indent = write(tmp_path, "run_name: t\n data: 1\n", "indent.yaml")
    with pytest.raises(ConfigError, match=rf"{bad_indent}:2: invalid YAML"):
        load_config(SFTConfig, bad_indent)


def test_dump_round_trips(tmp_path):
    cfg = load_config(SFTConfig, write(tmp_path, BASE), ["optim.lr=0.002", "eval.file=e.jsonl"])
    out = tmp_path / "run" / "sft_config.yaml"
    dump_config(cfg, out)
    assert load_config(SFTConfig, out) == cfg


def test_shipped_demo_config_validates():
    cfg = load_config(SFTConfig, REPO / "experiments/configs/sft_demo.yaml")
    assert cfg.init_checkpoint == "runs/demo/init" and cfg.data.train_file == "data/arith/sft.jsonl"
    assert cfg.train.row_tokens <= cfg.train.tokens_per_microbatch <= cfg.train.tokens_per_step


def make_target_stages(target: str) -> tuple[str, list[str]]:
    """(PREP_CONFIG, [each SFT_STAGES config, then SFT_CONFIG]) of a `make` target, read from the
    Makefile as experiments/demo.sh receives them (file names under experiments/configs/)."""
    text = (REPO / "Makefile").read_text()
    recipe = text.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    env = dict(kv.split("=", 1) for kv in shlex.split(recipe.replace("\\\n", " ")) if re.match(r"^[A-Z_0-9]+=", kv))
    prep = Path(env.get("PREP_CONFIG", "prep_demo.yaml")).name  # demo.sh's defaults
    stages = env.get("SFT_STAGES", "").split() + [env.get("SFT_CONFIG", "sft_demo.yaml")]
    return prep, [Path(x).name for x in stages]


def test_make_targets_stages_are_read_from_the_makefile():
    assert make_target_stages("demo") == ("prep_demo.yaml", ["sft_demo.yaml"])
    assert make_target_stages("demo-image") == (
        "prep_image_demo.yaml", ["sft_image_lang.yaml", "align_image_demo.yaml", "sft_image_demo.yaml"])


@pytest.mark.parametrize("target", ["demo", "demo-long", "demo-image"])
def test_demo_prepares_what_its_sft_configs_start_from(target):
    # `make <target>` runs experiments.prepare on its PREP_CONFIG, then each SFT stage in order: the
    # first must start from the tiny model prepare builds, each later one from the checkpoint of the
    # one before, and every stage's rows must be a task prepare writes.
    from experiments.prepare import PrepConfig

    prep, sft = make_target_stages(target)
    configs = REPO / "experiments/configs"
    p = load_config(PrepConfig, configs / prep)
    stages = [load_config(SFTConfig, configs / name) for name in sft]
    assert stages[0].init_checkpoint == p.tiny_model.out
    for before, after in zip(stages, stages[1:]):
        assert Path(after.init_checkpoint) == Path(before.output_dir) / before.run_name / "checkpoint", after.run_name
    task_dirs = {Path(t.out) for t in p.tasks}
    assert all(Path(s.data.train_file).parent in task_dirs for s in stages)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.row_tokens=512"], r"data\.max_seq_len \(1024\) > train\.row_tokens \(512\)"),
        (["data.max_seq_len=512", "train.row_tokens=1024", "train.tokens_per_microbatch=512"],
         r"train\.row_tokens \(1024\) > train\.tokens_per_microbatch \(512\)"),
    ],
)
def test_sizes_that_cannot_pack_are_config_errors(tmp_path, overrides, match):
    # Otherwise the first long example would stop the run mid-training (plan_bins / pack_by_budget).
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match=rf"^{path}: {match}"):
        load_config(SFTConfig, path, overrides)
    assert load_config(SFTConfig, path, ["train.row_tokens=1024", "data.max_seq_len=1024"])  # equal is fine


RL_BASE = """\
policy: ckpt
data: {train_file: t.jsonl, max_prompt_tokens: 100}
rollout: {sampling: {max_tokens: 400}}
learner: {tokens_per_microbatch: 1000}
"""


def test_rl_row_tokens_defaults_to_the_longest_possible_sample(tmp_path):
    from rl.config import RLConfig

    assert load_config(RLConfig, write(tmp_path, RL_BASE)).learner.row_tokens == 500


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["learner.row_tokens=499"],
         r"learner\.row_tokens \(499\) < data\.max_prompt_tokens \+ rollout\.sampling\.max_tokens \(100 \+ 400 = 500\)"),
        (["rollout.sampling.max_tokens=1000", "learner.row_tokens=1100"],
         r"learner\.row_tokens \(1100\) > learner\.tokens_per_microbatch \(1000\)"),
    ],
)
def test_rl_sizes_that_cannot_pack_are_config_errors(tmp_path, overrides, match):
    # Otherwise the first long rollout would stop the run mid-training (pack_groups).
    from rl.config import RLConfig

    path = write(tmp_path, RL_BASE)
    with pytest.raises(ConfigError, match=rf"^{path}: {match}"):
        load_config(RLConfig, path, overrides)
    assert load_config(RLConfig, path, ["learner.row_tokens=500"]).learner.row_tokens == 500


@pytest.mark.parametrize("name", ["rl_demo", "rl_lenpen", "rl_prioritized"])
def test_shipped_rl_configs_validate(name):
    from rl.config import RLConfig

    cfg = load_config(RLConfig, REPO / f"experiments/configs/{name}.yaml")
    assert cfg.learner.row_tokens >= cfg.data.max_prompt_tokens + cfg.rollout.sampling.max_tokens


@pytest.mark.parametrize("name, differs", [
    ("rl_lenpen", {"run_name", "objective.length_penalty_weight", "objective.length_penalty_warmup"}),
    ("rl_prioritized", {"run_name", "sampler.kind", "sampler.floor"}),
])
def test_paired_rl_configs_differ_from_the_demo_only_where_they_say(name, differs):
    # They are overlays (`base: rl_demo.yaml`), so a change to the demo reaches both arms.
    from rl.config import RLConfig

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    demo = flat(load_config(RLConfig, REPO / "experiments/configs/rl_demo.yaml").model_dump())
    arm = flat(load_config(RLConfig, REPO / f"experiments/configs/{name}.yaml").model_dump())
    assert {k for k in demo.keys() | arm.keys() if demo.get(k) != arm.get(k)} == differs


# -- rollout.partial (k1.5 §2.6.2 partial rollouts) and objective.partial_segments ----------------


def test_partial_rollouts_are_off_by_default_and_exclude_is_the_loss_default(tmp_path):
    from rl.config import RLConfig

    cfg = load_config(RLConfig, write(tmp_path, RL_BASE))
    assert (cfg.rollout.partial.enabled, cfg.rollout.partial.max_segments) == (False, None)
    assert cfg.rollout.partial.repeat_ngram == 0 and cfg.rollout.partial.repeat_penalty == 0.0
    assert cfg.objective.partial_segments == "exclude"
    # Off, nothing partial is checked: 'include' with the engine's log-probs is a plain run's setting.
    load_config(RLConfig, write(tmp_path, RL_BASE), ["objective.partial_segments=include", "objective.ref_logprobs=engine"])


def test_partial_max_segments_defaults_to_the_response_cap(tmp_path):
    from rl.config import RLConfig

    on = ["rollout.partial.enabled=true", "rollout.partial.segment_tokens=150"]
    path = write(tmp_path, RL_BASE)
    assert load_config(RLConfig, path, on).rollout.partial.max_segments == 3  # ceil(400 / 150)
    assert load_config(RLConfig, path, on + ["rollout.partial.max_segments=5"]).rollout.partial.max_segments == 5


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["rollout.partial.segment_tokens=400"],
         r"rollout\.partial\.segment_tokens \(400\) must be < rollout\.sampling\.max_tokens \(400\)"),
        (["rollout.partial.segment_tokens=100", "rollout.partial.repeat_penalty=0.5"],
         r"rollout\.partial\.repeat_penalty \(0\.5\) is set but rollout\.partial\.repeat_ngram is 0"),
        (["rollout.partial.segment_tokens=100", "objective.partial_segments=include", "objective.ref_logprobs=engine"],
         r"objective\.partial_segments 'include' needs objective\.ref_logprobs 'learner'"),
        (["rollout.partial.max_segments=1"], r"key 'rollout\.partial\.max_segments'.*greater than or equal to 2"),
        (["rollout.partial.repeat_min_count=1"], r"key 'rollout\.partial\.repeat_min_count'.*greater than or equal to 2"),
        (["rollout.partial.segment_token=100"], r"unknown key 'rollout\.partial\.segment_token'"),
        (["objective.partial_segments=some"], r"key 'objective\.partial_segments'.*'exclude' or 'include'"),
        (["rollout.partial.segment_tokens=100", "rollout.engine.model=ckpt", "rollout.engine.max_model_len=499"],
         r"rollout\.engine\.max_model_len \(499\) must be >= data\.max_prompt_tokens \+ rollout\.sampling\.max_tokens \(500\)"),
    ],
)
def test_partial_config_errors_name_the_key(tmp_path, overrides, match):
    from rl.config import RLConfig

    path = write(tmp_path, RL_BASE)
    with pytest.raises(ConfigError, match=rf"^{path}: .*{match}"):
        load_config(RLConfig, path, ["rollout.partial.enabled=true", *overrides])
