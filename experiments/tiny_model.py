"""Build the embedded tiny policy: a byte-level tokenizer and a small Qwen2 decoder, saved as an
ordinary Hugging Face checkpoint directory that both `transformers` and vLLM load natively.

Why these choices:
- Byte-level BPE with an empty merge list: every string is encodable (GSM8K/MATH text in the
  tagging CLI too), one ASCII character is one token (so the arithmetic trace is easy to learn),
  and it is the same tokenizer family as Qwen2, so nothing here is special-cased downstream.
- Qwen2 architecture: supported by `transformers` and vLLM's CPU and GPU backends; sized after
  a measurement (a ~4M-parameter Qwen2 learns carry traces in minutes; docs/INSTALL.md, "The
  tiny policy is big enough").
- ChatML chat template with `<think>`/`</think>` as single added tokens, the format the RL
  verifier expects; `<|im_end|>` ends a turn and is the EOS for generation.

    python -m experiments.tiny_model --out checkpoints/tiny-init
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]


def build_tokenizer(model_max_length: int = 2048, extra_special_tokens: Sequence[str] = (),
                    chat_template: str = CHAT_TEMPLATE):
    """A byte-level tokenizer with 256 byte tokens, ChatML specials and think tags; then
    `extra_special_tokens` (a VLM's media tokens), so the ids before them are the same for every
    tiny checkpoint."""
    # tokenizers, transformers: seconds to import; only when a tokenizer is built
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.add_tokens(THINK_TOKENS)
    if extra_special_tokens:
        tok.add_special_tokens(list(extra_special_tokens))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=model_max_length,
    )


def padded_vocab_size(tokenizer) -> int:
    """The embedding rows for `tokenizer`: its size padded to a multiple of 64 for kernels."""
    return ((len(tokenizer) + 63) // 64) * 64


def write_build_files(out: Path, tokenizer, meta: dict[str, Any]) -> None:
    """What every tiny checkpoint carries besides its weights and tokenizer: a generation config
    (EOS and pad from the tokenizer) and `thinkrl_build.json` (who built it, seed, sizes)."""
    from transformers import GenerationConfig  # transformers takes seconds to import

    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(out)
    (out / "thinkrl_build.json").write_text(json.dumps(meta, indent=2) + "\n")


# Qwen2-0.5B's layer shape (its config.json) with the embedded 320-token vocabulary, and 34 layers
# instead of 24 to make up for the 151,936-row embedding: 507M parameters, random weights. (A
# vocabulary the tokenizer cannot decode would let the engine sample ids it cannot detokenize.)
QWEN2_05B_LAYERS = dict(hidden_size=896, num_layers=34, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                        max_positions=2048)


def build_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 1024,
    max_positions: int = 2048,
) -> Path:
    """Write a randomly initialised tiny Qwen2 + tokenizer to `out_dir` and return it."""
    # torch, transformers: seconds to import; only when a model is built
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(max_positions)
    config = Qwen2Config(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_build_files(out, tokenizer, {"built_by": "experiments.tiny_model", "seed": seed,
                                       "params": model.num_parameters()})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="checkpoints/tiny-init")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args(argv)
    path = build_tiny_checkpoint(args.out, seed=args.seed, num_layers=args.layers, hidden_size=args.hidden)
    print(f"wrote tiny checkpoint to {path}")


if __name__ == "__main__":
    main()
