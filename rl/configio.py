"""Load a stage's typed config from YAML, with `key.sub=value` overrides from the command line.

A file may start from another: `base: rl_long.yaml` (a path relative to the file) loads that
file first and deep-merges this one over it, so a variant (e.g. the length-penalty arm of a
paired run) states only what differs. Bases may chain; a cycle is an error.

Every stage has one pydantic schema with `extra="forbid"`, so a mistyped key stops the run with a
message naming the file and the key, before anything is built or trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override failed validation; the message names the file and key."""


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if d.get(k) is None:  # absent, or an empty `section:` in YAML
            d[k] = {}
        d = d[k]
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: sections merge key by key, any other value replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, its `base:` chain resolved."""
    p = Path(path)
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: 'base' chain is a cycle ({' -> '.join(str(s) for s in _seen)} -> {p})")
    if not p.exists():
        where = f" (the 'base' of {_seen[-1]})" if _seen else ""
        raise ConfigError(f"{p}: config file not found{where}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{p}: 'base' must be a file path, got {base!r}")
    return deep_merge(read_yaml(p.parent / base, _seen + (p.resolve(),)), raw)


def load_config(model: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read YAML at `path` (or start empty; a `base:` file first), apply `a.b=value` overrides
    (values parsed as YAML), and validate against `model`."""
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    where = str(path) if path else "<defaults>"
    from_cli: set[str] = set()
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value")
        key, value = ov.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override {ov!r}: the value is not valid YAML (quote strings)") from None
        _set_dotted(raw, key.strip(), parsed)
        from_cli.add(key.strip())
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            src = " (from --set)" if any(key == k or key.startswith(k + ".") for k in from_cli) else ""
            if err["type"] == "extra_forbidden":
                msgs.append(f"unknown key '{key}'{src}")
            elif not key:  # a check across keys (model validator): its message names them
                msgs.append(str(err["msg"]).removeprefix("Value error, "))
            else:
                msgs.append(f"key '{key}'{src}: {err['msg']}")
        raise ConfigError(f"{where}: " + "; ".join(msgs)) from None


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the fully-resolved config next to a run's outputs (what actually ran)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
