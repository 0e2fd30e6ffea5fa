"""Input and output of the tagging CLI: reading any prompt set into `PromptRow`s, and the
append-only, resumable output.

Input. `.jsonl`/`.json` (one object per line) and `.parquet` are read here, so a bad row is named
by file and line; a directory saved with `datasets.Dataset.save_to_disk`, and other files that
`datasets` has a loader for (`.csv`, `.tsv`, `.arrow`, `.jsonl.gz`, ...), go through `datasets`
and are named by row number. Field names are mapped (`FieldMap`):

    prompt   a chat message list, or a plain string (becomes one user message)
    answer   reference answer. `answer_format`: "raw" (as is), "boxed" (last \\boxed{...} of the
             text, brace-matched, e.g. MATH `solution`), "gsm8k" (what follows the last `####`,
             thousands separators dropped), or "auto" (per row: gsm8k if the text has `####`,
             boxed if it has `\\boxed`, else raw). An extracted answer's full text is kept in
             metadata["solution"].
    id       the id field; without one (GSM8K has none) the id is "<file stem>-<row index>",
             stable as long as the file is.
    verifier `FieldMap.verifier` if set, else the row's own `verifier`, else "integer" for
             gsm8k-format answers and "math" otherwise.

Image parts (`{"type": "image", "image": path or bytes}`, see prompts/images.py) are checked
here as `load_prompt_rows` checks them: a relative path resolves against the input file's
directory (a saved dataset directory: against that directory) and is made absolute, and every
image is decoded once and held to the pixel budget; a row whose image fails is a bad row, named
by file:line and image number.

A known difficulty label (`FieldMap.known_difficulty_field`, default the row's `difficulty`; e.g.
MATH's `level`, "Level 3" -> 3) is copied to metadata["known_difficulty"], as an int where one can
be read from it, and never overwritten: the output's `difficulty` is the tagged bucket. Every other
unmapped field is kept in `metadata`.

Output. Finished rows are appended a chunk at a time (one write, flush, fsync), so a killed
run loses at most the chunk in flight. JSONL output is its own progress file; parquet output
keeps a JSONL progress file next to it (`<out>.partial.jsonl`) and is written from it, atomically,
when the run completes. On start the progress file is read: a torn last line (the run died
mid-write) is cut off and its row redone; every complete row's id counts as done.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from prompts.images import DEFAULT_MAX_IMAGE_PIXELS
from prompts.schema import DataError, PromptRow, check_row_images
from rl.rewards.extract import find_boxes

_OWN_SUFFIXES = (".jsonl", ".json", ".parquet")
_DATASETS_BUILDERS = {".csv": "csv", ".tsv": "csv", ".arrow": "arrow", ".gz": "json", ".txt": "text"}


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FieldMap:
    """The config's `fields` section (the docstring above says what each does)."""

    prompt_field: str = "prompt"
    answer_field: str = "answer"
    id_field: str | None = None  # None: "id" when the row has one, else "<stem>-<index>"
    answer_format: Literal["auto", "raw", "boxed", "gsm8k"] = "auto"
    verifier: str | None = None  # None: the row's own, else by answer format
    known_difficulty_field: str = "difficulty"


@dataclass(frozen=True)
class BadRow:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


# -- reading -----------------------------------------------------------------------------------


def iter_source(path: str | Path, split: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
    """(location, raw row or None, error) for every row of a file or saved dataset directory."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        yield from _iter_datasets(path, split, from_disk=True)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq  # pyarrow: only for Parquet files

        for i, raw in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}:row {i}", raw, ""
    elif path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{lineno}", None, f"invalid JSON ({e.msg})"
                    continue
                if isinstance(raw, dict):
                    yield f"{path}:{lineno}", raw, ""
                else:
                    yield f"{path}:{lineno}", None, f"expected a JSON object, got {type(raw).__name__}"
    else:
        yield from _iter_datasets(path, split, from_disk=False)


def _iter_datasets(path: Path, split: str | None, from_disk: bool) -> Iterator[tuple[str, dict | None, str]]:
    import datasets  # datasets takes seconds to import; only for a Hub dataset

    if from_disk:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            pick = split or ("train" if "train" in ds else (names[0] if len(names) == 1 else None))
            if pick not in ds:
                raise DataError(f"{path}: dataset has splits {names}; choose one with `split`")
            ds = ds[pick]
    else:
        builder = _DATASETS_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataError(f"{path}: unknown file type {path.suffix!r} (jsonl, json, parquet, csv, arrow, "
                            "or a directory saved by datasets)")
        kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    for i, raw in enumerate(ds, start=1):
        yield f"{path}:row {i}", dict(raw), ""


def last_boxed(text: str) -> str | None:
    """Content of the last top-level \\boxed{...} / \\fbox{...} (the verifiers' `find_boxes`)."""
    boxes = find_boxes(text)
    return boxes[-1][2].strip() if boxes else None


def gsm8k_final(text: str) -> str | None:
    """The number after the last `####` ("1,000" -> "1000")."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", tail):
        tail = tail.replace(",", "")
    return tail or None


def _answer(value: Any, fmt: str) -> tuple[str, str]:
    """(reference answer, format used). Raises ValueError with a reason."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a string or a number, got {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if fmt == "auto":
        fmt = "gsm8k" if "####" in text else "boxed" if re.search(r"\\(?:boxed|fbox)\s*\{", text) else "raw"
    if fmt == "boxed":
        ans = last_boxed(text)
        if ans is None:
            raise ValueError("has no complete \\boxed{...} (answer format 'boxed')")
    elif fmt == "gsm8k":
        ans = gsm8k_final(text)
        if ans is None:
            raise ValueError("has no '#### <answer>' line (answer format 'gsm8k')")
    else:
        ans = text.strip()
    if not ans:
        raise ValueError("is empty")
    return ans, fmt


def _level(value: Any) -> Any:
    """An int from a label like 3, 3.0, "3" or "Level 3"; anything else is kept as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (m := re.fullmatch(r"\D*?(-?\d+)\D*", value.strip())):
        return int(m.group(1))
    return value


def map_row(raw: dict[str, Any], index: int, stem: str, fm: FieldMap) -> PromptRow:
    """One raw row as a `PromptRow` under the field map. Raises ValueError with a reason."""
    prompt = raw.get(fm.prompt_field)
    if prompt is None:
        raise ValueError(f"missing prompt field {fm.prompt_field!r}")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"prompt field {fm.prompt_field!r} is empty")
        prompt = [{"role": "user", "content": prompt}]
    elif not isinstance(prompt, list):
        raise ValueError(f"prompt field {fm.prompt_field!r} must be a string or chat messages")
    if raw.get(fm.answer_field) is None:
        raise ValueError(f"missing answer field {fm.answer_field!r}")
    try:
        answer, fmt = _answer(raw[fm.answer_field], fm.answer_format)
    except ValueError as e:
        raise ValueError(f"answer field {fm.answer_field!r} {e}") from None
    if fm.id_field is not None:
        if raw.get(fm.id_field) is None:
            raise ValueError(f"missing id field {fm.id_field!r}")
        rid = str(raw[fm.id_field])
    else:
        rid = str(raw["id"]) if raw.get("id") is not None else f"{stem}-{index}"

    consumed = {fm.prompt_field, fm.answer_field, "id" if fm.id_field is None else fm.id_field}
    consumed |= {"metadata", "difficulty", "domain", "verifier", "pass_rate"}
    meta = {k: v for k, v in raw.items() if k not in consumed}
    meta.update(raw.get("metadata") or {})
    if fmt in ("boxed", "gsm8k"):
        meta.setdefault("solution", raw[fm.answer_field])
    known = raw.get(fm.known_difficulty_field)
    if known is None and fm.known_difficulty_field != "difficulty":
        known = (raw.get("metadata") or {}).get(fm.known_difficulty_field)
    if known is not None:
        meta.setdefault("known_difficulty", _level(known))
    verifier = fm.verifier or raw.get("verifier") or ("integer" if fmt == "gsm8k" else "math")
    domain = raw.get("domain")
    fields = {
        "id": rid,
        "prompt": prompt,
        "answer": answer,
        "verifier": verifier,
        "domain": domain if isinstance(domain, str) and domain.strip() else None,
        "metadata": meta,
    }
    try:
        return PromptRow.model_validate(fields)
    except Exception as e:  # pydantic ValidationError: report the first problem only
        errs = getattr(e, "errors", lambda: [{"loc": (), "msg": str(e)}])()
        loc = ".".join(str(p) for p in errs[0]["loc"])
        raise ValueError(f"field '{loc}': {errs[0]['msg']}") from None


def load_rows(
    path: str | Path, fm: FieldMap, split: str | None = None
) -> tuple[list[tuple[str, PromptRow]], list[BadRow]]:
    """Every row that maps cleanly (with its location), and every one that does not. A repeated
    id is a bad row (the first occurrence is kept)."""
    stem = Path(path).name.split(".")[0]
    base_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    good: list[tuple[str, PromptRow]] = []
    bad: list[BadRow] = []
    first_at: dict[str, str] = {}
    for index, (where, raw, err) in enumerate(iter_source(path, split)):
        if raw is None:
            bad.append(BadRow(where, err))
            continue
        try:
            row = map_row(raw, index, stem, fm)
        except ValueError as e:
            bad.append(BadRow(where, str(e)))
            continue
        if row.id in first_at:
            bad.append(BadRow(where, f"duplicate id {row.id!r} (first at {first_at[row.id]})"))
            continue
        first_at[row.id] = where
        if row.has_images():
            try:
                check_row_images(row, where, base_dir, DEFAULT_MAX_IMAGE_PIXELS)
            except DataError as e:
                bad.append(BadRow(where, str(e).removeprefix(f"{where}: ")))
                continue
        good.append((where, row))
    return good, bad


# -- writing -----------------------------------------------------------------------------------


def same_file(a: str | Path, b: str | Path) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _read_progress(path: Path) -> list[dict[str, Any]]:
    """Complete rows of a JSONL progress file; a torn last line is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1  # the torn tail starts after the last newline
    rows = []
    for lineno, line in enumerate(data[:keep].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{path}:{lineno}: not valid JSON; the output is damaged (move it aside or "
                            "set run.overwrite=true)") from None
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
    return rows


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with path.open("ab") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


class TagOutput:
    """The output file(s): done ids on start, chunk appends, parquet at the end.

    `dropped_path` (when given) receives rows that are tagged but not kept (e.g. guessable rows
    under guess.drop), so a resumed run knows they are done and they can be audited.
    """

    def __init__(self, path: str | Path, dropped_path: str | Path | None = None, overwrite: bool = False):
        self.path = Path(path)
        self.parquet = self.path.suffix == ".parquet"
        self.progress = self.path.with_name(self.path.name + ".partial.jsonl") if self.parquet else self.path
        self.dropped = Path(dropped_path) if dropped_path else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for p in (self.path, self.progress, self.dropped):
                if p is not None:
                    p.unlink(missing_ok=True)
        if self.parquet and self.path.exists() and not self.progress.exists():
            import pyarrow.parquet as pq  # pyarrow: only for Parquet files

            _append(self.progress, pq.read_table(self.path).to_pylist())

    def load_done(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(kept rows, dropped rows) already written by earlier runs."""
        return _read_progress(self.progress), (_read_progress(self.dropped) if self.dropped else [])

    def read_all(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(kept rows, dropped rows) after `finalize`."""
        kept = read_output(self.path) if self.path.exists() else []
        return kept, (_read_progress(self.dropped) if self.dropped else [])

    def append(self, kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> None:
        if dropped:
            if self.dropped is None:
                raise ValueError("dropped rows but no dropped-rows file configured")
            _append(self.dropped, dropped)
        _append(self.progress, kept)

    def finalize(self) -> None:
        """Parquet: write the whole output atomically from the progress file, then remove it.
        JSONL: an empty output file still exists after a run that kept no rows."""
        if not self.parquet:
            self.progress.touch()
            return
        # pyarrow: only for Parquet files
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = _read_progress(self.progress)
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(self.path)
        self.progress.unlink(missing_ok=True)


def read_output(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a tagged output (JSONL or parquet), as dicts."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # pyarrow: only for Parquet files

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
