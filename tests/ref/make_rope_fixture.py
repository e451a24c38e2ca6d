#!/usr/bin/env python3
"""Writes tests/fixtures/cpu_ops/rope.txt: cos/sin tables from transformers' GptOssRotaryEmbedding for
a few RoPE configurations (GPT-OSS-20B's YaRN, the CPU tests' head_dim 8, truncate on, plain RoPE), so
that test_ops_fd checks model/cpu/rope.c against HF rather than against itself.

Format, one record per line, whitespace separated:
  case NAME head_dim rope_theta yarn(0/1) factor beta_fast beta_slow orig_max_pos truncate(0/1)
  cos POS v_0 ... v_{head_dim/2-1}     (HF's cos, already multiplied by the attention factor)
  sin POS v_0 ...
Run: python3 tests/ref/make_rope_fixture.py   (torch + transformers; written with transformers 5.23)
"""
import os

import torch
from transformers import GptOssConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding

CASES = [
    # name, head_dim, theta, yarn, factor, beta_fast, beta_slow, orig, truncate
    ("gptoss20b", 64, 150000.0, 1, 32.0, 32.0, 1.0, 4096, 0),
    ("tiny_hd8", 8, 150000.0, 1, 32.0, 32.0, 1.0, 4096, 0),
    ("truncate", 16, 10000.0, 1, 8.0, 16.0, 2.0, 2048, 1),
    ("plain", 16, 10000.0, 0, 1.0, 0.0, 0.0, 0, 0),
]
POSITIONS = [0, 1, 5, 127, 4095, 70000]


def main():
    out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "cpu_ops", "rope.txt")
    lines = []
    for name, hd, theta, yarn, factor, bf, bs, orig, trunc in CASES:
        if yarn:
            rp = {"rope_type": "yarn", "rope_theta": theta, "factor": factor, "beta_fast": bf, "beta_slow": bs,
                  "original_max_position_embeddings": orig, "truncate": bool(trunc)}
        else:
            rp = {"rope_type": "default", "rope_theta": theta}
        cfg = GptOssConfig(head_dim=hd, hidden_size=2 * hd, num_attention_heads=2, num_key_value_heads=1,
                           num_hidden_layers=1, rope_parameters=rp)
        emb = GptOssRotaryEmbedding(cfg)
        x = torch.zeros(1, dtype=torch.float32)
        pos = torch.tensor([POSITIONS], dtype=torch.long)
        cos, sin = emb(x, pos)
        lines.append(f"case {name} {hd} {theta!r} {yarn} {factor!r} {bf!r} {bs!r} {orig} {trunc}")
        for i, p in enumerate(POSITIONS):
            lines.append(f"cos {p} " + " ".join(repr(float(v)) for v in cos[0, i]))
            lines.append(f"sin {p} " + " ".join(repr(float(v)) for v in sin[0, i]))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
