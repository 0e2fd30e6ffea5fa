"""MATH-Vision testmini -> prompt rows: a real multimodal math prompt set (issue 9).

    python -m prompts.mathv --input DATA/mathv/testmini.jsonl --output data/mathv/testmini.jsonl

(DATA: the public data folder, docs/INSTALL.md, "Public data".)

Source format (one JSON object per line, 304 rows): id, question, options (five option texts, or
[] for a free-form problem), answer (the letter for multiple choice), solution (mostly null),
level (1-5), subject (16 subjects) and image (one figure, relative to the file).

MATH-Vision ships ONE figure per problem. Where a question names several figures (`<image1>`,
`<image2>`, ...) that figure is a composite whose panels are drawn labelled "<image1>:",
"<image2>:", ...; a single-figure question's figure is unlabelled. So:
  - exactly one `<imageK>` in the question and options: the figure replaces it in place (an
    interleaved text / image / text message);
  - otherwise: the figure comes first and the text keeps its labels verbatim, so they match the
    labels drawn in the composite (e.g. "(A) <image1>" options name panels of the figure).
Numbered labels are not `<image>` slots (see prompts/images.py), so these rows load as is.

Multiple choice (options given): verifier "multiple_choice" (rl.rewards.MultipleChoiceVerifier),
answer = the letter, metadata["options"] = the option texts in letter order (what
`VerifyItem.from_row` reads), written into the prompt as "(A) ..." lines. When the options are
only their own labels ("A", "(A)", "A)": the real options are drawn in the figure) the prompt says
so and metadata["options"] holds the letters. A free-form problem whose answer is a single letter
(its options are drawn, not listed) also uses "multiple_choice"; all others use "math".
difficulty = level, domain = subject.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from prompts.images import InlineImage
from prompts.schema import DataError, PromptRow, iter_raw_rows, load_prompt_rows, row_from_dict, write_jsonl

LABEL_RE = re.compile(r"<image\d+>")
LETTERS = "ABCDEFGHIJ"


def _only_labels(options: list[str]) -> bool:
    """True when each option is just its own letter: "A", "(A)", "A)", "A."."""
    return all(re.fullmatch(rf"\(?{LETTERS[i]}[).]?", o.strip()) for i, o in enumerate(options))


def _choices_block(options: list[str]) -> str:
    if _only_labels(options):
        shown = ", ".join(f"({LETTERS[i]})" for i in range(len(options)))
        return f"\n\nChoices: {shown}, as drawn in the figure."
    return "\n\nChoices:\n" + "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def _content(text: str, image: str | InlineImage) -> list[dict[str, Any]]:
    """The user message's parts: the figure in place of a single label, else first."""
    image_part = {"type": "image", "image": image}
    if len(LABEL_RE.findall(text)) == 1:
        before, after = LABEL_RE.split(text)
        parts = [{"type": "text", "text": before}, image_part, {"type": "text", "text": after}]
        return [p for p in parts if p["type"] == "image" or p["text"].strip()]
    return [image_part, {"type": "text", "text": text}]


def convert_row(raw: dict[str, Any], base_dir: Path, *, embed_images: bool = False) -> dict[str, Any]:
    """One MATH-Vision row as a prompt-row dict. Raises KeyError/ValueError on a malformed row."""
    options = [str(o) for o in raw["options"]]
    answer = str(raw["answer"]).strip()
    image_path = (base_dir / raw["image"]).absolute()
    image: str | InlineImage = str(image_path)
    if embed_images:
        image = InlineImage.from_bytes(image_path.read_bytes(), raw["image"])
    text = raw["question"].strip()
    metadata: dict[str, Any] = {"source": "MATH-Vision testmini", "source_id": str(raw["id"])}
    if options:
        if not re.fullmatch(f"[{LETTERS[: len(options)]}]", answer):
            raise ValueError(f"multiple-choice answer {answer!r} is not one of the {len(options)} option letters")
        text += _choices_block(options)
        metadata["options"] = list(LETTERS[: len(options)]) if _only_labels(options) else options
        verifier = "multiple_choice"
    else:
        verifier = "multiple_choice" if re.fullmatch(r"[A-E]", answer) else "math"
    if raw.get("solution"):
        metadata["solution"] = raw["solution"]
    return {
        "id": f"mathv-{raw['id']}",
        "prompt": [{"role": "user", "content": _content(text, image)}],
        "answer": answer,
        "difficulty": int(raw["level"]),
        "domain": str(raw["subject"]),
        "verifier": verifier,
        "metadata": metadata,
    }


def convert(input_path: str | Path, *, embed_images: bool = False) -> list[PromptRow]:
    """Every row of a MATH-Vision JSONL file as a prompt row; errors name file:line.

    Image paths are written absolute (or the bytes embedded), so the output can live anywhere."""
    input_path = Path(input_path)
    out = []
    for where, raw in iter_raw_rows(input_path):
        try:
            row = convert_row(raw, input_path.parent, embed_images=embed_images)
        except KeyError as e:
            raise DataError(f"{where}: missing MATH-Vision field {e}") from None
        except (OSError, ValueError, TypeError) as e:
            raise DataError(f"{where}: {e}") from None
        out.append(row_from_dict(row, where))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="MATH-Vision JSONL (e.g. testmini.jsonl, images/ beside it)")
    ap.add_argument("--output", required=True, help="prompt-row JSONL to write")
    ap.add_argument("--embed-images", action="store_true", help="inline the image bytes (a self-contained file)")
    args = ap.parse_args(argv)
    write_jsonl(args.output, convert(args.input, embed_images=args.embed_images))
    rows = load_prompt_rows(args.output)  # what we wrote must load, every image checked
    mc = sum(r.verifier == "multiple_choice" for r in rows)
    print(f"wrote {len(rows)} rows ({mc} multiple choice) to {args.output}; all images validated")


if __name__ == "__main__":
    main()
