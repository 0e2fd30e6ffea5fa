"""SFT data: validated rows -> token ids with an assistant-only loss mask -> packed steps.

Every row is validated before anything is tokenized, so a bad row stops the run with its file and
line (nothing is trained on a half-read set). Only assistant tokens are trained (system/user and
template tokens masked), as in the Kimi-VL report's SFT stage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from prompts.chat import encode_sft_example
from prompts.images import DEFAULT_MAX_IMAGE_PIXELS, open_image
from prompts.schema import DataError, PromptRow, check_row_images, iter_raw_rows, row_from_dict
from rl.packing import Sample


@dataclass
class SFTExample:
    row: PromptRow
    response: str


def load_sft_rows(path: str | Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list[SFTExample]:
    """Every row validated (images: exist, decode, within the pixel budget) before any is used."""
    out = []
    for where, raw in iter_raw_rows(path):
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a JSON object")
        response = raw.get("response")
        if not isinstance(response, str) or not response.strip():
            raise DataError(f"{where}: missing or non-string field 'response' (the assistant CoT to train on)")
        rest = {k: v for k, v in raw.items() if k != "response"}
        row = row_from_dict(rest, where)
        if row.has_images():
            check_row_images(row, where, Path(path).parent, max_image_pixels)
        out.append(SFTExample(row, response))
    return out


def encode_example(tokenizer, row: PromptRow, response: str, images: list[Image.Image],
                   vision=None) -> tuple[list[int], list[bool]]:
    """Token ids and assistant-only loss mask of one row; with `images` (decoded, in the row's
    order), its image placeholders expanded as the engine expands them (`vision`)."""
    ids, mask = encode_sft_example(tokenizer, row.chat(), response)
    if not images:
        return ids, mask
    full = vision.expand(ids, images)
    n_prompt = len(full) - (len(ids) - mask.index(True))  # mask is False...False True...True
    return full, [j >= n_prompt for j in range(len(full))]


def tokenize_examples(tokenizer, examples: list[SFTExample], max_seq_len: int,
                      vision=None) -> tuple[list[Sample], int]:
    """Returns (samples, number dropped for exceeding max_seq_len). Image rows need `vision`
    (rl.vision.load_vision of the policy): their placeholders are expanded here, and the
    samples keep the image sources (decoded again per step, not held in memory)."""
    samples, dropped = [], 0
    for i, ex in enumerate(examples):
        sources = ex.row.images()
        if sources and vision is None:
            raise DataError(f"row {ex.row.id!r} has images but the policy is text-only")
        ids, mask = encode_example(tokenizer, ex.row, ex.response, [open_image(src) for src in sources], vision)
        if len(ids) > max_seq_len:
            dropped += 1
            continue
        samples.append(Sample(ids, mask, i, list(sources)))
    return samples, dropped


def step_batches(samples: list[Sample], tokens_per_step: int, seed: int):
    """Endless stream of optimizer-step batches (lists of samples of about `tokens_per_step`
    tokens), reshuffled every epoch with a seeded RNG. Yields (epoch, batch)."""
    rng = random.Random(seed)
    epoch = 0
    while True:
        order = list(range(len(samples)))
        rng.shuffle(order)
        batch: list[Sample] = []
        size = 0
        for i in order:
            s = samples[i]
            if batch and size + len(s.ids) > tokens_per_step:
                yield epoch, batch
                batch, size = [], 0
            batch.append(s)
            size += len(s.ids)
        if batch:
            yield epoch, batch
        epoch += 1
