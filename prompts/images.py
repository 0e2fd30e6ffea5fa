"""Image parts of prompt rows: the accepted forms, load-time checks, and decoding (issue 9).

An image part is {"type": "image", "image": X}, where X is one of

    "imgs/a.png"                         a file path. A relative path resolves against the prompt
                                         file's directory; `load_prompt_rows` rewrites every path
                                         to an absolute one, so rollout workers on other nodes and
                                         the learner never depend on their cwd.
    {"bytes_b64": "<base64>"}            inline bytes in JSON/JSONL ("name" optional, for messages)
    {"bytes": b"...", "path": "a.png"}   the Hugging Face `datasets` Image-feature dict, as parquet
                                         and Arrow hold it. As in `datasets`, bytes win when both
                                         are set; a dict with only a path is a path.

Inline images are kept base64-encoded in memory (the JSON form), so a row round-trips through
`write_jsonl` unchanged and pickles cheaply to Ray workers; `open_image` decodes on demand.
URLs are refused: loading must not depend on the network, so download first.

Checks made at load time (every image, before any row is returned):
  - the file exists / the base64 decodes;
  - Pillow identifies the image and its size is within the pixel budget, read from the header
    before any pixel is decoded (so a decompression bomb is rejected without being expanded);
  - the whole image decodes (`Image.load()`), catching truncated and corrupt files.

Pixel budget: `DEFAULT_MAX_IMAGE_PIXELS` = 3584 x 3584 = 12,845,056, the default `max_pixels`
of the Qwen2-VL / Qwen2.5-VL image processors: the largest image a VLM policy consumes before
its processor downscales, so storing more is only memory on the rollout workers. A tighter
1792 x 1792 budget would reject three MATH-Vision testmini figures (2520 x 1807, 2520 x 2529,
2520 x 2761), which are real problems, not bombs.

Placeholders: a bare `<image>` in a text part is a slot marker (the LLaVA / Qwen-VL convention,
one marker per image). Over a whole row, the number of `<image>` occurrences in text must be
<= the number of image parts; fewer is fine (an image without a marker sits where its part is).
Numbered labels such as MATH-Vision's `<image1>`, `<image2>` are not slots and are not counted:
MATH-Vision ships one composite figure per problem whose panels are drawn labelled
"<image1>:", "<image2>:", ..., so those labels refer to panels of a single image.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from PIL import Image

    from prompts.schema import PromptRow

DEFAULT_MAX_IMAGE_PIXELS = 3584 * 3584
PLACEHOLDER = "<image>"


class InlineImage(BaseModel):
    """Image bytes carried in the row itself, base64-encoded."""

    model_config = ConfigDict(extra="forbid")
    bytes_b64: str
    name: str | None = None  # the source file name if known (HF's "path"); messages only

    @classmethod
    def from_bytes(cls, data: bytes, name: str | None = None) -> InlineImage:
        return cls(bytes_b64=base64.b64encode(data).decode("ascii"), name=name)

    def data(self) -> bytes:
        return base64.b64decode(self.bytes_b64, validate=True)


ImageSource = str | InlineImage


def coerce_image_field(value: Any) -> Any:
    """Map the HF Image-feature dict {"bytes", "path"} onto our forms; leave the rest to pydantic."""
    if not isinstance(value, dict) or "bytes_b64" in value or not {"bytes", "path"} & set(value):
        return value
    extra = sorted(set(value) - {"bytes", "path"})
    if extra:
        raise ValueError(f"unknown keys {extra} in an image dict (expected 'bytes' and 'path', or 'bytes_b64')")
    data, path = value.get("bytes"), value.get("path")
    if data is None:
        if path is None:
            raise ValueError("image dict has neither 'bytes' nor 'path'")
        return path
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("'bytes' must be raw bytes (in JSON, put base64 text under 'bytes_b64')")
    return InlineImage.from_bytes(bytes(data), path)


def describe(src: ImageSource) -> str:
    """How an image is named in error messages."""
    if isinstance(src, InlineImage):
        return f"inline bytes {src.name!r}" if src.name else "inline bytes"
    return repr(src)


class ImageError(Exception):
    """One image failed a check; the caller adds the file, row and image to the message."""


def resolve_image_path(path: str, base_dir: Path) -> str:
    """An absolute, normalized path; relative ones resolve against `base_dir` (symlinks kept)."""
    if "://" in path:
        raise ImageError("URLs are not fetched at load time; download the image and give its path")
    return os.path.normpath(base_dir.absolute() / path)


def _open(src: ImageSource) -> Image.Image:
    from PIL import Image  # Pillow: only image rows; text-only processes never load it

    if isinstance(src, InlineImage):
        try:
            data = src.data()
        except binascii.Error as e:
            raise ImageError(f"'bytes_b64' is not valid base64 ({e})") from None
        return Image.open(io.BytesIO(data))
    if not os.path.isfile(src):
        raise ImageError(f"no such file {src}")
    return Image.open(src)


def check_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """Open one image, check its size against the budget, decode it fully; return (width, height)."""
    from PIL import Image  # Pillow: only image rows; text-only processes never load it

    try:
        with _open(src) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{w}x{h} = {w * h:,} pixels is over the budget of {max_pixels:,} (max_image_pixels)")
            im.load()
    except Image.DecompressionBombError as e:  # Pillow's own limit, if set below ours
        raise ImageError(f"over Pillow's MAX_IMAGE_PIXELS ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise ImageError(f"does not decode as an image ({type(e).__name__}: {e})") from None
    return w, h


def count_placeholders(row: PromptRow) -> int:
    """Occurrences of the bare `<image>` slot marker in the row's text (all messages)."""
    n = 0
    for m in row.prompt:
        parts = [m.content] if isinstance(m.content, str) else [getattr(p, "text", "") for p in m.content]
        n += sum(t.count(PLACEHOLDER) for t in parts)
    return n


def open_image(src: ImageSource) -> Image.Image:
    """Decode one image to RGB (what VLM processors and vLLM's multi_modal_data expect)."""
    with _open(src) as im:
        return im.convert("RGB")


def row_images(row: PromptRow) -> list[Image.Image]:
    """A row's images in message order, decoded now (rows hold only paths or bytes).

    Paths are used as stored: rows from `load_prompt_rows` hold absolute paths."""
    return [open_image(src) for src in row.images()]
