"""The image side of a vision-language policy, read from its checkpoint: how many placeholder
tokens an image becomes, the pixel tensors of the transformers forward, and vLLM's
`multi_modal_data`. One object serves the rollout engine, the learner, SFT and the tagging CLI,
so the placeholder expansion is the same on every side (the classic VLM RL bug is a trainer
that expands `<image>` differently from the engine; then log pi_theta and log pi_ref are of
different sequences).

Prompts are tokenized with ONE placeholder token per image (what the chat template emits);
vLLM expands it to `num_tokens(image)` copies itself, and the learner receives the engine's
expanded prompt ids (`Generation.prompt_token_ids`), checked against `expand` here.

    vision = load_vision(checkpoint_dir)   # None for a text-only policy
    vision.engine_inputs(images)           # vLLM multi_modal_data
    vision.pixel_inputs(images)            # kwargs of the HF forward (pixel_values, grid)

Families: `kimi_k25` (MoonViT-3D tower + patch merger + DeepSeek-V3 MoE, the Kimi-VL line;
see experiments/tiny_vlm.py for why this class). Add a family by subclassing `VisionIO` and
registering its `model_type` in `_FAMILIES`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence


class VisionIO:
    """Interface: image -> placeholder count, pixel inputs, engine inputs."""

    image_token_id: int
    # Media tokens a response must never contain (placeholders, begin/end markers): HF and vLLM
    # give a sampled placeholder different meanings, so the engine bans them from sampling.
    media_token_ids: tuple[int, ...] = ()

    def num_tokens(self, image) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def pixel_inputs(self, images: Sequence[Any]) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def engine_inputs(self, images: Sequence[Any]) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def expand(self, input_ids: Sequence[int], images: Sequence[Any]) -> list[int]:
        """Replace the i-th single placeholder with num_tokens(images[i]) copies (what vLLM's
        prompt replacement does). Raises ValueError if placeholders and images do not pair up."""
        counts = [self.num_tokens(im) for im in images]
        out: list[int] = []
        for t in input_ids:
            if t == self.image_token_id:
                if not counts:
                    raise ValueError(f"more image placeholders (token {self.image_token_id}) than images ({len(images)})")
                out.extend([t] * counts.pop(0))
            else:
                out.append(t)
        if counts:
            raise ValueError(f"{len(counts)} image(s) without a placeholder token {self.image_token_id} in the prompt")
        return out

    def expanded_len(self, input_ids: Sequence[int], images: Sequence[Any]) -> int:
        return len(input_ids) + sum(self.num_tokens(im) - 1 for im in images)

    def check_expanded(self, input_ids: Sequence[int], images: Sequence[Any], where: str = "") -> None:
        """An already expanded sequence must hold exactly the placeholders its images need."""
        have = sum(1 for t in input_ids if t == self.image_token_id)
        want = sum(self.num_tokens(im) for im in images)
        if have != want:
            raise ValueError(f"{where}image placeholder mismatch: {have} placeholder tokens in the ids, "
                             f"the {len(images)} image(s) need {want}")


class KimiK25Vision(VisionIO):
    """MoonViT navit preprocessing as vLLM's `KimiK25FusedVisionProcessor` does it (and
    transformers' Kimi_K25ImageProcessor, which needs torchvision; not installed on CPU here):
    never upscale; shrink to at most `in_patch_limit` patches and `patch_limit_on_one_side`
    patches a side; pad bottom/right to a multiple of patch x merge; (x/255 - mean)/std;
    row-major patches. One LLM token per merge x merge patches."""

    modality = "vision_chunk"  # vLLM's kimi_k25 takes images under this modality, not "image"

    def __init__(self, image_token_id: int, media_proc_cfg: dict[str, Any]):
        c = media_proc_cfg
        self.image_token_id = image_token_id
        self.patch = int(c["patch_size"])
        merge = c["merge_kernel_size"]
        self.merge = int(merge[0] if isinstance(merge, (list, tuple)) else merge)
        self.max_patches = int(c["in_patch_limit"])
        self.max_side = int(c["patch_limit_on_one_side"])
        self.mean = list(c["image_mean"])
        self.std = list(c["image_std"])

    @classmethod
    def from_pretrained(cls, path: Path, config: dict[str, Any]) -> KimiK25Vision:
        pre = path / "preprocessor_config.json"
        if not pre.exists():
            raise FileNotFoundError(f"{path}: kimi_k25 checkpoint without preprocessor_config.json")
        proc = json.loads(pre.read_text())
        if "media_proc_cfg" not in proc:
            raise ValueError(f"{pre}: no 'media_proc_cfg' (vLLM's Kimi processor reads it)")
        vision = cls(int(config["image_token_id"]), proc["media_proc_cfg"])
        keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                "media_placeholder_token_id")
        vision.media_token_ids = tuple(sorted({int(config[k]) for k in keys if config.get(k) is not None}))
        return vision

    def resize_plan(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(new_w, new_h, padded_w, padded_h)."""
        p, side = self.patch, self.max_side
        s1 = math.sqrt(self.max_patches / (max(1.0, width // p) * max(1.0, height // p)))
        scale = min(1.0, s1, side * p / width, side * p / height)
        new_w = min(max(1, int(width * scale)), side * p)
        new_h = min(max(1, int(height * scale)), side * p)
        f = p * self.merge
        return new_w, new_h, new_w + (f - new_w % f) % f, new_h + (f - new_h % f) % f

    def num_tokens(self, image) -> int:
        _, _, pw, ph = self.resize_plan(*image.size)
        return (pw // self.patch) * (ph // self.patch) // (self.merge * self.merge)

    def pixel_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """{"pixel_values": [patches, 3, p, p] float32, "image_grid_thw": [n, 3]}."""
        # numpy, torch, Pillow: only pixel inputs need them; the engine side stays light
        import numpy as np
        import torch
        from PIL import Image

        p = self.patch
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        patches, grids = [], []
        for img in images:
            img = img.convert("RGB")
            new_w, new_h, pw, ph = self.resize_plan(*img.size)
            if (new_w, new_h) != img.size:
                img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
            canvas = np.zeros((ph, pw, 3), dtype=np.uint8)
            canvas[:new_h, :new_w] = np.asarray(img)
            x = (canvas.astype(np.float32) / 255.0 - mean) / std
            gh, gw = ph // p, pw // p
            x = x.reshape(gh, p, gw, p, 3).transpose(0, 2, 4, 1, 3)
            patches.append(x.reshape(gh * gw, 3, p, p))
            grids.append([1, gh, gw])
        return {
            "pixel_values": torch.from_numpy(np.concatenate(patches)),
            "image_grid_thw": torch.tensor(grids, dtype=torch.long),
        }

    def engine_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        return {self.modality: [{"type": "image", "image": im, "uuid": None} for im in images]}


_FAMILIES: dict[str, type] = {"kimi_k25": KimiK25Vision}
# Submodule names of vision encoders in transformers VLMs (Kimi/LLaVA: vision_tower, Qwen-VL: visual).
_TOWER_NAMES = ("vision_tower", "visual", "vision_model")


def _param_names_under(model, modules: tuple[str, ...]) -> list[str]:
    """Names of the parameters inside a submodule named one of `modules` (any path component)."""
    return [n for n, _ in model.named_parameters() if any(part in modules for part in n.split("."))]


def freeze_vision_tower(model) -> list[str]:
    """Set requires_grad=False on the vision encoder's parameters (not the projector); returns
    their state-dict names. Raises if the model has no recognisable vision tower."""
    names = _param_names_under(model, _TOWER_NAMES)
    if not names:
        raise ValueError(f"{type(model).__name__} has no vision tower (looked for {_TOWER_NAMES}) to freeze")
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    return names


# Projectors from vision features to the decoder's embeddings (Kimi: mm_projector, LLaVA:
# multi_modal_projector; Qwen-VL's merger sits inside `visual`).
_PROJECTOR_NAMES = ("mm_projector", "multi_modal_projector")


def vision_side_names(model) -> list[str]:
    """Names of the vision tower's and projector's parameters; every other parameter is the
    decoder's (embeddings and LM head included). Empty for a text-only model."""
    return _param_names_under(model, _TOWER_NAMES + _PROJECTOR_NAMES)


def is_vision_config(config: dict[str, Any]) -> bool:
    return "vision_config" in config


def load_vision(checkpoint: str | Path) -> VisionIO | None:
    """The checkpoint's image I/O, or None for a text-only policy."""
    path = Path(checkpoint)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        return None  # e.g. a hub id on a cluster; text-only callers need nothing from here
    config = json.loads(cfg_file.read_text())
    if not is_vision_config(config):
        return None
    family = _FAMILIES.get(config.get("model_type", ""))
    if family is None:
        raise NotImplementedError(
            f"{cfg_file}: vision-language model_type {config.get('model_type')!r} has no image I/O in "
            f"rl/vision.py (supported: {sorted(_FAMILIES)})"
        )
    return family.from_pretrained(path, config)

