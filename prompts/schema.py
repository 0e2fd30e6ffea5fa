"""Typed prompt records shared by every stage (SFT, tagging, rollout, verification, sampling).

A prompt row on disk (JSONL / parquet / anything `datasets` loads) has:

    id          str, unique within the set
    prompt      chat messages: [{"role": "system"|"user"|"assistant", "content": str | [parts]}]
                A part is {"type": "text", "text": ...} or {"type": "image", "image": X}, X a file
                path or inline bytes (forms, checks and the `<image>` placeholder rule: images.py;
                text-only policies reject image parts).
    answer      reference answer, a string (a list/tuple/set reference is written as LaTeX, e.g. "(1, 2)")
    difficulty  known or tagged label: an int level (larger = harder) or None
    domain      e.g. "arithmetic", "algebra", or None
    verifier    which verifier scores this row ("math" by default; see rl.rewards)
    metadata    free-form dict carried through untouched (e.g. MATH "level", "type")
    pass_rate   optional tagged pass rate in [0, 1] (seeds the samplers' tracker)

`load_prompt_rows` reads a whole file and validates every row, and every image (resolved to an
absolute path, decoded, within the pixel budget), before returning anything, so a bad row stops
the run with its file and line number and nothing is trained on a half-read set.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from prompts.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageError,
    ImageSource,
    InlineImage,
    check_image,
    coerce_image_field,
    count_placeholders,
    describe,
    resolve_image_path,
)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image"] = "image"
    # a path (relative to the prompt file) or inline bytes; tagged so errors name the right form
    image: Annotated[
        Union[Annotated[str, Tag("path")], Annotated[InlineImage, Tag("inline")]],
        Discriminator(lambda v: "path" if isinstance(v, str) else "inline"),
    ]

    @field_validator("image", mode="before")
    @classmethod
    def _hf_image_dict(cls, v: Any) -> Any:
        return coerce_image_field(v)


def _part_type(v: Any) -> Any:
    """A part's "type"; a dict without one is an image part if it has "image", else text."""
    if isinstance(v, dict):
        return v.get("type", "image" if "image" in v else "text")
    return getattr(v, "type", None)


# Tagged unions, so a bad part is reported against the form it claims to be, not the first one.
Part = Annotated[Union[Annotated[TextPart, Tag("text")], Annotated[ImagePart, Tag("image")]], Discriminator(_part_type)]
Content = Annotated[
    Union[Annotated[str, Tag("str")], Annotated[list[Part], Tag("parts")]],
    Discriminator(lambda v: "str" if isinstance(v, str) else "parts"),
]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Content

    @field_validator("content", mode="before")
    @classmethod
    def _drop_null_keys(cls, v: Any) -> Any:
        # Parquet/Arrow stores parts as structs with every field, e.g. a text part read back as
        # {"type": "text", "text": "q", "image": None}; a null key is an absent key.
        if isinstance(v, list):
            return [{k: x for k, x in p.items() if x is not None} if isinstance(p, dict) else p for p in v]
        return v

    def text(self) -> str:
        """The message's text with image parts left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[ImageSource]:
        if isinstance(self.content, str):
            return []
        return [p.image for p in self.content if isinstance(p, ImagePart)]


class PromptRow(BaseModel):
    """One prompt. Unknown top-level keys are kept in `metadata` by the loader, not dropped."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: list[Message] = Field(min_length=1)
    answer: str
    difficulty: int | None = None
    domain: str | None = None
    verifier: str = "math"
    metadata: dict[str, Any] = Field(default_factory=dict)
    pass_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    def question(self) -> str:
        """Text of the last user message (what verifiers and judges are shown)."""
        users = [m for m in self.prompt if m.role == "user"]
        return users[-1].text() if users else ""

    def chat(self) -> list[dict[str, Any]]:
        """Messages as plain dicts for `tokenizer.apply_chat_template`."""
        return [m.model_dump() for m in self.prompt]

    def images(self) -> list[ImageSource]:
        """Every image part's source (path or inline bytes), in message order."""
        return [src for m in self.prompt for src in m.images()]

    def has_images(self) -> bool:
        return bool(self.images())


class DataError(ValueError):
    """A data file failed validation; the message names the file and row."""


_KNOWN = set(PromptRow.model_fields)


def row_from_dict(raw: dict[str, Any], where: str) -> PromptRow:
    """Validate one raw dict; extra keys go to metadata. `where` is e.g. "train.jsonl:12"."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if "answer" not in raw or raw["answer"] is None:
        raise DataError(f"{where}: missing required field 'answer'")
    if "prompt" not in raw:
        raise DataError(f"{where}: missing required field 'prompt'")
    prompt = raw["prompt"]
    if isinstance(prompt, str):
        raise DataError(
            f"{where}: field 'prompt' must be a list of chat messages, got a plain string "
            "(wrap it as [{\"role\": \"user\", \"content\": ...}])"
        )
    known = {k: v for k, v in raw.items() if k in _KNOWN}
    extra = {k: v for k, v in raw.items() if k not in _KNOWN}
    if extra:
        meta = known.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"{where}: field 'metadata' must be an object, got {type(meta).__name__}")
        known["metadata"] = {**extra, **(meta or {})}
    try:
        row = PromptRow.model_validate(known)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{where}: field '{loc}': {first['msg']}") from None
    slots, n_images = count_placeholders(row), len(row.images())
    if slots > n_images:
        raise DataError(f"{where}: {slots} '<image>' placeholder(s) in the text but {n_images} image(s) in the row")
    return row


def check_row_images(row: PromptRow, where: str, base_dir: Path, max_pixels: int) -> None:
    """Make every image path absolute (in place) and check each image; DataError names the image."""
    k = 0
    for m in row.prompt:
        for part in [] if isinstance(m.content, str) else m.content:
            if not isinstance(part, ImagePart):
                continue
            k, written = k + 1, part.image
            try:
                if isinstance(part.image, str):
                    part.image = resolve_image_path(part.image, base_dir)
                check_image(part.image, max_pixels)
            except ImageError as e:  # named as written in the file; "no such file" shows the resolved path
                raise DataError(f"{where}: image {k} ({describe(written)}): {e}") from None


def iter_raw_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Read every row of a JSONL/JSON/parquet file as (location, dict). Errors name file:line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # pyarrow: only for Parquet files

        for i, raw in enumerate(pq.read_table(path).to_pylist(), start=1):
            rows.append((f"{path}:row {i}", raw))
    else:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    if not rows:
        raise DataError(f"{path}: file is empty (no rows)")
    return rows


def load_prompt_rows(path: str | Path, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list[PromptRow]:
    """Load and validate a whole prompt file, images included (paths made absolute, each image
    decoded, width * height <= `max_image_pixels`); raise DataError naming the first bad row,
    image or duplicate ids."""
    located = [(where, row_from_dict(raw, where)) for where, raw in iter_raw_rows(path)]
    dups = sorted(k for k, n in Counter(r.id for _, r in located).items() if n > 1)
    if dups:
        shown = ", ".join(dups[:10]) + (" …" if len(dups) > 10 else "")
        raise DataError(f"{path}: duplicate prompt ids ({len(dups)}): {shown}")
    base_dir = Path(path).parent
    for where, row in located:
        check_row_images(row, where, base_dir, max_image_pixels)
    return [row for _, row in located]


def write_jsonl(path: str | Path, rows: list[dict[str, Any]] | list[BaseModel]) -> None:
    """Write rows atomically (tmp file + rename) so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            d = r.model_dump(exclude_none=True) if isinstance(r, BaseModel) else r
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tmp.replace(path)
