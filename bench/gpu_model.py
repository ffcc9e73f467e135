"""A random-initialised model folder with the shape of Qwen2.5-0.5B or -1.5B (bf16 weights) and the
SmolLM2 tokenizer (its ids fit in Qwen's vocabulary): `python bench/gpu_model.py 0.5b OUT_DIR TOKENIZER_DIR`.
The GPU benchmark needs the shape, not the weights, and nothing can be downloaded on the device machine."""

import shutil
import sys
from pathlib import Path

SHAPES = {  # Qwen2.5's published configs
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}


def main(size: str, out: str, tokenizer: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2, **SHAPES[size])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    for f in Path(tokenizer).iterdir():
        shutil.copy(f, Path(out) / f.name)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")


if __name__ == "__main__":
    main(*sys.argv[1:4])
