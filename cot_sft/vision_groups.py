"""Parameter groups of the vision-alignment stage (issue 19): the vision tower and projector on
their own LR (`vision_lr_ratio` times the decoder's), and an optional decoder freeze: for the first
`steps` optimizer steps only the vision side learns; then the decoder joins.

Why a lower LR on the vision side (measured, BENCHMARKS.md "Issue 19, part 2"): trained jointly at
the decoder's LR, the projector's output grew from norm 2 to 100-250 and collapsed onto one vector
(99.9 % of its energy in the mean over image tokens), and transcription accuracy stayed at 0; at a
quarter of the decoder's LR its norm stayed near 10, the image tokens kept distinct features, and
the tiny VLM learned to read.

Kimi-VL trains MoonViT on caption/OCR pairs before joint training; the tiny VLM's decoder, trained
jointly from the start, learned to ignore the image. With the decoder frozen, the only way to
lower the loss on a transcription is to make the image features say what the glyphs are.

How "frozen" is made exact under DeepSpeed (rl.dist.build_deepspeed builds AdamW once, over the
parameters that require grad at that time, so a parameter frozen by requires_grad=False could
never be unfrozen without rebuilding the engine, and ZeRO's gradient hooks are registered at
build time):

  - every parameter is in the optimizer, in two groups (vision side, decoder);
  - the decoder group's LR multiplier is 0 while frozen: AdamW then changes nothing, weight decay
    included (p * (1 - 0 * wd) and p - 0 * update are p, bit for bit);
  - while frozen, a gradient hook replaces the decoder's gradients by zeros, so they neither enter
    the global clip norm (which would shrink the tower's steps) nor Adam's moments;
  - after unfreezing, the decoder's LR warms up again over `warmup` steps: its Adam moments start
    from zero at that point, like a fresh optimizer's.

The backward still runs through the decoder (the tower's gradient flows through it); only the
decoder's weight updates are off.
"""

from __future__ import annotations

from typing import Callable

import torch

from rl.vision import vision_side_names


class VisionDecoderGroups:
    """Parameter groups, LR multipliers and gradient hooks of a freeze of `steps` steps."""

    def __init__(self, model: torch.nn.Module, steps: int, vision_lr_ratio: float = 1.0):
        vision = set(vision_side_names(model))
        if not vision:
            raise ValueError(f"{type(model).__name__} has no vision tower or projector: nothing would train "
                             "while its decoder is frozen")
        params = dict(model.named_parameters())
        self.steps = steps
        self.vision_lr_ratio = vision_lr_ratio
        self.vision_names = sorted(vision)
        self.decoder_names = [n for n in params if n not in vision]
        self.groups = [[params[n] for n in self.vision_names], [params[n] for n in self.decoder_names]]
        self._hooks: list = []

    def lr_lambdas(self, base: Callable[[int], float], warmup: int) -> list[Callable[[int], float]]:
        """LambdaLR multipliers of the two groups: the vision side follows `base` times
        `vision_lr_ratio`; the decoder is 0 for steps < self.steps, then `base` times a linear
        re-warm-up over `warmup` steps (none when there is no freeze)."""
        n, ratio = self.steps, self.vision_lr_ratio

        def vision(step: int) -> float:
            return ratio * base(step)

        def decoder(step: int) -> float:
            if step < n:
                return 0.0
            return base(step) * (min(1.0, (step - n + 1) / max(1, warmup)) if n else 1.0)

        return [vision, decoder]

    def frozen(self, step: int) -> bool:
        return step < self.steps

    def at_step(self, step: int) -> None:
        """Call before the step's backward: zero the decoder's gradients while it is frozen."""
        if self.frozen(step) and not self._hooks:
            self._hooks = [p.register_hook(torch.zeros_like) for p in self.groups[1]]
        elif not self.frozen(step) and self._hooks:
            for h in self._hooks:
                h.remove()
            self._hooks = []
