#!/usr/bin/env python3
"""Reference fixtures for gptoss's MXFP4 and NF4 code (tests/test_quant.c reads them).

  tests/fixtures/quant/mxfp4.safetensors
    src [E, R, C] f32          values to quantize (bf16-representable, with ties, zeros, -0, saturating maxima)
    blocks [E, R, C/32, 16] u8 / scales [E, R, C/32] u8
                               the packing gptoss expects, made here by a bit-level transcription of OpenAI's
                               triton_kernels downcast_to_mxfp (ROUND_UP scales; the rule transformers'
                               quantize_to_mxfp4 uses)
    hf_dequant [E, C, R] f32   transformers.integrations.mxfp4.convert_moe_packed_tensors(blocks, scales):
                               the independent reference for dequantization and for the [E, in, out] layout
  tests/fixtures/quant/nf4.safetensors (made by bitsandbytes itself, quantize_4bit on the CPU)
    {small,mid,big}.weight + .absmax/.quant_map/[.nested_absmax/.nested_quant_map]/.quant_state.bitsandbytes__nf4
                               exactly what bnb's Linear4bit state dict holds (QuantState.as_dict(packed=True))
      small: [3, 21] (odd count, one partial block), no nested absmax
      mid:   [5, 70] (partial last block), nested
      big:   [129, 130] (263 blocks: two nested blocks, the second partial), nested
    {name}.src f32, {name}.dequant f32 (bnb dequantize_4bit), {name}.absmax_plain f32 (absmax before nesting)

With --gptoss BIN it also checks init-model's output against the libraries (nothing is written for this):
transformers loads the tiny bf16 and mxfp4 models with no missing or unexpected keys and finite logits; the
mxfp4 experts equal this script's packing of the bf16 model's experts; the nf4 experts' packed codes equal
bitsandbytes' quantize_4bit of the bf16 experts and bnb dequantizes them.

Run: python3 tests/ref/make_quant_fixture.py [--gptoss build/gptoss]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file, load_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "quant")
FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_pack(x):
    """x [..., C] float32 -> (blocks [..., C/32, 16] u8, scales [..., C/32] u8), triton's bit-level rule."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    *pre, C = x.shape
    g = x.reshape(*pre, C // 32, 32)
    amax = np.abs(g).max(axis=-1, keepdims=True).astype(np.float32)
    ds = (amax / np.float32(6.0)).astype(np.float32).view(np.uint32)
    ds = ((ds.astype(np.uint64) + 0x007FFFFF) & 0x7F800000).astype(np.uint32)  # round the scale up to 2^k
    scale = ds.view(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale == 0, np.float32(0), np.float32(1) / scale).astype(np.float32)
    q = (g * inv).astype(np.float32).view(np.uint32).astype(np.int64)
    sign, exp, man = q & 0x80000000, (q >> 23) & 0xFF, q & 0x7FFFFF
    sub = exp < 127  # below 1.0: E2M1 subnormal / zero region, shift the mantissa with its implicit bit
    shift = np.clip(127 - exp - 1, 0, 63)
    man = np.where(sub, (0x400000 | (man >> 1)) >> shift, man)
    exp = np.maximum(exp, 126) - 126
    code = np.minimum((((exp << 2) | (man >> 21)) + 1) >> 1, 7) | (sign >> 28)
    code = code.astype(np.uint8).reshape(*pre, C // 2, 2)
    blocks = (code[..., 0] | (code[..., 1] << 4)).reshape(*pre, C // 32, 16)
    return blocks.astype(np.uint8), (ds >> 23).astype(np.uint8).reshape(*pre, C // 32)


def make_mxfp4():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    rng = np.random.default_rng(1234)
    E, R, C = 2, 3, 96
    src = rng.normal(0, 0.02, size=(E, R, C)).astype(np.float32)
    src[0, 1, 32:64] = 0.0  # an all-zero block: scale byte 0
    src[0, 2, :32] = np.array([6, -6, 0.25, -0.25, 0.75, 1.25, -1.75, 2.5, 3.5, 5.0, -5.0, -0.0] + [0.1] * 20)
    src[1, 0, 32:64] = rng.normal(0, 1e3, size=32)  # large scale
    src[1, 1, 64:96] = rng.normal(0, 1e-30, size=32)  # tiny scale (exponent near the bottom)
    src = torch.from_numpy(src).to(torch.bfloat16).float().numpy()  # what a bf16 checkpoint holds
    blocks, scales = mxfp4_pack(src)
    hf = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    assert tuple(hf.shape) == (E, C, R), hf.shape
    # Sanity: our own LUT reading of the packing agrees with transformers', and the values are near src.
    lut = np.array(FP4, dtype=np.float32)
    lo, hi = lut[blocks & 15], lut[blocks >> 4]
    mine = np.stack([lo, hi], axis=-1).reshape(E, R, C // 32, 32) * np.ldexp(1.0, scales.astype(np.int32) - 127)[..., None]
    mine = mine.reshape(E, R, C).astype(np.float32)
    assert np.array_equal(mine, hf.numpy().transpose(0, 2, 1)), "LUT dequant != convert_moe_packed_tensors"
    step = np.ldexp(1.0, scales.astype(np.int32) - 127)[..., None]  # the widest FP4 gap (4..6) is 2 steps
    assert np.all(np.abs(mine.reshape(E, R, C // 32, 32) - src.reshape(E, R, C // 32, 32)) <= step)
    save_file({"src": torch.from_numpy(src), "blocks": torch.from_numpy(blocks), "scales": torch.from_numpy(scales),
               "hf_dequant": hf.contiguous()}, os.path.join(OUT, "mxfp4.safetensors"))
    print("mxfp4: blocks/scales verified with transformers' convert_moe_packed_tensors")


def bnb_dequant(q, qs):
    """bitsandbytes' dequantize_4bit by its default (torch) kernels. bitsandbytes 0.50.2's CPU C kernel
    (what F.dequantize_4bit runs here) returns wrong values for some shapes whose rows do not hold whole
    64-blocks, e.g. [4, 96]; the default kernels are the documented semantics and agree with it elsewhere."""
    import bitsandbytes.functional as F
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    absmax = qs.absmax
    if qs.nested:
        code2 = qs.state2.code
        absmax = (code2[qs.absmax.long()].view(-1) * qs.state2.absmax.repeat_interleave(qs.state2.blocksize)[: qs.absmax.numel()]
                  + qs.offset)
    return _dequantize_4bit_compute(q.reshape(-1), absmax.float(), qs.code, qs.blocksize, qs.shape, torch.float32)


def make_nf4():
    import bitsandbytes.functional as F

    rng = np.random.default_rng(99)
    out = {}
    for name, shape, nested in [("small", (3, 21), False), ("mid", (5, 70), True), ("big", (129, 130), True)]:
        src = torch.from_numpy(rng.normal(0, 0.05, size=shape).astype(np.float32))
        src.view(-1)[:64] *= 0.0 if name == "mid" else 1.0  # mid: an all-zero first block
        q, qs = F.quantize_4bit(src, blocksize=64, compress_statistics=nested, quant_type="nf4")
        _, qs_plain = F.quantize_4bit(src, blocksize=64, compress_statistics=False, quant_type="nf4")
        deq = bnb_dequant(q, qs)
        out[f"{name}.weight"] = q.contiguous()
        for k, v in qs.as_dict(packed=True).items():
            out[f"{name}.weight.{k}"] = v.contiguous()
        out[f"{name}.src"] = src
        out[f"{name}.dequant"] = deq.float().contiguous()
        out[f"{name}.absmax_plain"] = qs_plain.absmax.float().contiguous()
    save_file(out, os.path.join(OUT, "nf4.safetensors"))
    print("nf4: made by bitsandbytes", __import__("bitsandbytes").__version__, "quantize_4bit on the CPU")


def check_init_model(gptoss):
    """init-model's tiny outputs against transformers and bitsandbytes."""
    import bitsandbytes.functional as F
    import transformers
    from transformers import GptOssForCausalLM

    transformers.logging.set_verbosity_error()
    tmp = tempfile.mkdtemp(prefix="gptoss-quant-ref-")
    for q in ["bf16", "mxfp4", "nf4"]:
        subprocess.run([gptoss, "init-model", "--preset", "tiny", "--vocab", "512", "--quant", q, "--seed", "7",
                        "--out", os.path.join(tmp, q)], check=True, stdout=subprocess.DEVNULL)
    ids = torch.arange(1, 21).unsqueeze(0)
    for q in ["bf16", "mxfp4"]:
        m, info = GptOssForCausalLM.from_pretrained(os.path.join(tmp, q), output_loading_info=True, dtype=torch.float32)
        bad = {k: v for k, v in info.items() if v}
        assert not bad, f"transformers loading {q}: {bad}"
        logits = m(ids).logits
        assert torch.isfinite(logits).all()
        print(f"init-model {q}: GptOssForCausalLM.from_pretrained OK (no missing/unexpected keys), logits finite")
    bf = load_file(os.path.join(tmp, "bf16", "model.safetensors"))
    mx = load_file(os.path.join(tmp, "mxfp4", "model.safetensors"))
    nf = load_file(os.path.join(tmp, "nf4", "model.safetensors"))
    cfg = json.load(open(os.path.join(tmp, "bf16", "config.json")))
    worst = 0.0
    for l in range(cfg["num_hidden_layers"]):
        for proj in ["gate_up_proj", "down_proj"]:
            w = bf[f"model.layers.{l}.mlp.experts.{proj}"].float().transpose(1, 2).contiguous().numpy()  # [E, out, in]
            blocks, scales = mxfp4_pack(w)
            assert np.array_equal(blocks, mx[f"model.layers.{l}.mlp.experts.{proj}_blocks"].numpy()), (l, proj)
            assert np.array_equal(scales, mx[f"model.layers.{l}.mlp.experts.{proj}_scales"].numpy()), (l, proj)
            for e in range(w.shape[0]):
                key = f"model.layers.{l}.mlp.experts.{proj}s.{e}.weight"
                q, qs_bnb = F.quantize_4bit(torch.from_numpy(w[e]), blocksize=64, compress_statistics=True,
                                            quant_type="nf4")
                assert torch.equal(q.view(-1), nf[key].view(-1)), key
                qs = F.QuantState.from_dict({k[len(key) + 1:]: v for k, v in nf.items() if k.startswith(key + ".")},
                                            device="cpu")
                ours = bnb_dequant(nf[key], qs).numpy()
                theirs = bnb_dequant(q, qs_bnb).numpy()
                worst = max(worst, float(np.abs(ours - theirs).max() / np.abs(w[e]).max()))
    print("init-model mxfp4: experts == this script's packing of the bf16 model's experts")
    # The nested absmax codes may differ where the mean (offset) rounds differently: bounded by one 8-bit step.
    assert worst <= 1e-2, worst
    print("init-model nf4: packed codes == bitsandbytes quantize_4bit of the bf16 experts; dequantized through")
    print(f"  bnb's QuantState.from_dict, within {worst:.2g} (relative to max|w|) of bnb's own double quantization")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptoss", help="a built gptoss binary: also check init-model's output")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    make_mxfp4()
    make_nf4()
    if args.gptoss:
        check_init_model(args.gptoss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
