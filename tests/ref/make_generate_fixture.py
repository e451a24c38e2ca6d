#!/usr/bin/env python3
"""Writes tests/fixtures/generate/generate.json: HF transformers' greedy generate on the tiny GPT-OSS models of
tests/fixtures/model/ (made by tests/ref/make_model_fixtures.py), without and with their PEFT adapters.
tests/test_decode.c checks that gptoss' KV-cache generation gives the same tokens, token for token.

    python3 tests/ref/make_generate_fixture.py     (torch, transformers 5, peft)

Per case: the model and adapter directories, a prompt of random ids, the stop ids (the config's eos, 63),
max_new_tokens, and HF's tokens (stop token included when reached). The models run in fp32 (bf16 weights
upcast exactly; the MXFP4 experts dequantized by transformers, exact in bf16), eager attention (sinks).
A prompt is kept only when every generated step's top-1/top-2 logit margin is at least MIN_MARGIN, so a
1e-6 difference between two fp32 implementations cannot flip a token; the margin is recorded. The script
also checks that HF's cached generate equals the argmax of a full forward over the same tokens.
"""
import json
import os

import torch
from peft import PeftModel
from transformers import GptOssForCausalLM, Mxfp4Config

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = "tests/fixtures/model"
OUT = os.path.join(ROOT, "tests", "fixtures", "generate", "generate.json")
MAX_NEW = 24       # prompt 5 + 24 > the sliding window of 8
PROMPT_LEN = 5
MIN_MARGIN = 1e-3
CASES = [  # name, base, adapter (None: the base alone)
    ("bf16", "bf16", None),
    ("bf16+adapter_bf16", "bf16", "adapter_bf16"),
    ("bf16+adapter_down", "bf16", "adapter_down"),
    ("mxfp4", "mxfp4", None),
    ("mxfp4+adapter_q", "mxfp4", "adapter_q"),
]


def load(base, adapter):
    path = os.path.join(ROOT, MODELS, base)
    kw = {"dtype": torch.float32, "attn_implementation": "eager"}
    if base == "mxfp4":
        kw["quantization_config"] = Mxfp4Config(dequantize=True)
    model = GptOssForCausalLM.from_pretrained(path, **kw).float()
    if adapter:
        model = PeftModel.from_pretrained(model, os.path.join(ROOT, MODELS, adapter)).float()
    return model.eval()


def generate(model, prompt, eos):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=62,
                             output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt):].tolist()
    margin = min(float(l[0].topk(2).values[0] - l[0].topk(2).values[1]) for l in out.logits)
    # Without the cache: argmax of a full forward at each step gives the same tokens.
    seq = list(prompt)
    with torch.no_grad():
        for t in tokens:
            logits = model(torch.tensor([seq])).logits[0, -1]
            assert int(logits.argmax()) == t, "HF generate differs from its own full forward"
            seq.append(t)
    return tokens, margin


def main():
    cases = []
    for name, base, adapter in CASES:
        model = load(base, adapter)
        eos = [model.config.eos_token_id]
        for seed in range(100):
            gen = torch.Generator().manual_seed(1000 + seed)
            prompt = torch.randint(0, model.config.vocab_size - 4, (PROMPT_LEN,), generator=gen).tolist()
            tokens, margin = generate(model, prompt, eos)
            if margin >= MIN_MARGIN:
                break
        else:
            raise SystemExit(f"{name}: no prompt with a margin >= {MIN_MARGIN}")
        print(f"{name}: prompt {prompt} -> {len(tokens)} tokens, smallest margin {margin:.4f}")
        cases.append({"name": name, "model": f"{MODELS}/{base}",
                      "adapter": f"{MODELS}/{adapter}" if adapter else None, "prompt": prompt, "stop": eos,
                      "max_new_tokens": MAX_NEW, "tokens": tokens, "min_margin": margin})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"made_by": "tests/ref/make_generate_fixture.py", "cases": cases}, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
