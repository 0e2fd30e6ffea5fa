"""Turning prompt rows into token ids through the checkpoint's own chat template.

One function for every stage (SFT, rollout, tagging, eval) so the prompt the policy is trained
on is byte-for-byte the prompt it is sampled with. We render to text and then encode, instead of
`apply_chat_template(tokenize=True)`, because the latter's return type changed across
transformers releases (list vs BatchEncoding).
"""

from __future__ import annotations

from typing import Any


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of the conversation so far plus the assistant header (generation prompt)."""
    return tokenizer.encode(render_chat(tokenizer, messages, True), add_special_tokens=False)


def encode_sft_example(
    tokenizer: Any, messages: list[dict[str, Any]], response: str
) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + assistant response and a mask that is True on the assistant tokens
    (the response and its end-of-turn token), False on system/user/template tokens."""
    prompt_ids = encode_prompt(tokenizer, messages)
    full = render_chat(tokenizer, messages + [{"role": "assistant", "content": response}], False)
    full_ids = tokenizer.encode(full, add_special_tokens=False)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not render the prompt as a prefix of the full conversation")
    # Train on the response and the end-of-turn token (so the model learns to stop), not on the
    # template's trailing newline after it.
    eos = tokenizer.eos_token_id
    end = len(full_ids)
    while end > len(prompt_ids) and full_ids[end - 1] != eos:
        end -= 1
    if end == len(prompt_ids):
        end = len(full_ids)
    ids = full_ids[:end]
    mask = [False] * len(prompt_ids) + [True] * (end - len(prompt_ids))
    return ids, mask
