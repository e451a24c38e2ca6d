#!/usr/bin/env python3
"""Reference fixtures for tests/test_optim.c (optim/: AdamW, 8-bit AdamW, schedules, clipping).

    python3 tests/ref/make_optim_fixture.py [--out tests/fixtures/optim] [--cuda]

Needs torch, transformers, safetensors, numpy, and bitsandbytes (pip install bitsandbytes; 0.50.2 runs
its 8-bit optimizers on the CPU). Writes, all small:

  adamw_torch.safetensors    torch.optim.AdamW(foreach=False) trajectory: two tensors, 12 steps, a
                             different lr each step, weight decay, some always-zero gradients (eps path)
  adamw8_bnb_cpu.safetensors bitsandbytes.optim.AdamW8bit on CPU tensors (bnb's CPU backend): a 4500-value
                             tensor (8-bit states, 18 blocks, the last one partial), a 300-value one (fp32
                             states, under min_8bit_size), 12 steps; plus bnb's two quantization maps
  adamw8_kernel_ref.safetensors  the same run through kernel_ref_step below, a numpy transcription of
                             bnb's CUDA kernels (kOptimizerStatic8bit2StateBlockwise for the 8-bit tensor,
                             kOptimizer32bit2State for the small one), operation by operation in fp32
  adamw8_bnb_cuda.safetensors  (with --cuda, on a machine with an NVIDIA GPU) bnb's CUDA kernels themselves;
                             made on the GPU machine (no registry there) by carrying the pip-installed
                             package: its *.py files plus libbitsandbytes_cuda13*.so in a directory on
                             PYTHONPATH (the committed one: bnb 0.50.2 on an H200, torch 2.11+cu130)
  clip.safetensors           torch.nn.utils.clip_grad_norm_ on three tensors, a clipping and a no-op case
  schedules.json             HF transformers' get_scheduler lr for every step of several schedules

Inputs (initial parameters, gradients) are not stored: they come from a 32-bit integer hash that
tests/test_optim.c computes identically (gen_unit), so the fixtures hold only results.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file

M32 = 0xFFFFFFFF
STEPS = 12
# lr of each step (1-based step t uses LRS[t-1]); varied so a wrong step's lr shows.
LRS = [1e-3 * (1.0 + 0.5 * math.sin(t)) for t in range(1, STEPS + 1)]


def mix32(x):
    """lowbias32 integer hash (C: gen_mix32)."""
    x = x & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def gen_unit(seed, n):
    """n float32 values in [-1, 1): exact in fp32, so C reproduces them bit for bit (C: gen_unit)."""
    i = np.arange(n, dtype=np.uint64)
    h = mix32((i * 0x9E3779B1 + seed) & M32)
    return ((h >> 8).astype(np.float32) * np.float32(2.0**-24)) * np.float32(2.0) - np.float32(1.0)


def gen_param(seg, n):
    return gen_unit(1000 + seg, n) * np.float32(0.5)


def gen_grad(seg, step, n):
    """Gradient of segment seg at 1-based step: per-256-block scales 1, 1/4, 1/16, 1/64 (blocks with
    different absmax), every 97th element always 0 (v stays 0: the eps path), and segment 0's block 3 all
    zero for the first two steps (a LoRA A at init: absmax 0, the kernel's 0/0 path)."""
    g = gen_unit(7919 * step + 31 * seg + 1, n)
    i = np.arange(n)
    g = g * np.exp2(-2.0 * ((i // 256) % 4)).astype(np.float32)
    g[i % 97 == 0] = 0.0
    if seg == 0 and step <= 2:
        g[(i // 256) == 3] = 0.0
    return g.astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# torch AdamW
def make_adamw_torch(out):
    sizes = [300, 77]
    betas, eps, wd = (0.9, 0.99), 1e-6, 0.1
    params = [torch.nn.Parameter(torch.from_numpy(gen_param(s, n))) for s, n in enumerate(sizes)]
    opt = torch.optim.AdamW(params, lr=LRS[0], betas=betas, eps=eps, weight_decay=wd, foreach=False)
    tensors = {}
    for t in range(1, STEPS + 1):
        for s, (p, n) in enumerate(zip(params, sizes)):
            p.grad = torch.from_numpy(gen_grad(s, t, n))
        for group in opt.param_groups:
            group["lr"] = LRS[t - 1]
        opt.step()
        if t == 1:
            for s, p in enumerate(params):
                tensors[f"step1.param.{s}"] = p.detach().numpy().copy()
    for s, p in enumerate(params):
        tensors[f"final.param.{s}"] = p.detach().numpy().copy()
        tensors[f"final.m.{s}"] = opt.state[p]["exp_avg"].numpy().copy()
        tensors[f"final.v.{s}"] = opt.state[p]["exp_avg_sq"].numpy().copy()
    tensors["lrs"] = np.array(LRS, dtype=np.float64)
    meta = {"source": f"torch {torch.__version__} torch.optim.AdamW(foreach=False)",
            "sizes": json.dumps(sizes), "steps": str(STEPS), "beta1": repr(betas[0]), "beta2": repr(betas[1]),
            "eps": repr(eps), "weight_decay": repr(wd)}
    save_file(tensors, os.path.join(out, "adamw_torch.safetensors"), metadata=meta)


# ---------------------------------------------------------------------------------------------------
# 8-bit AdamW
SIZES8 = [4500, 300]
BETAS8, EPS8, WD8 = (0.9, 0.995), 1e-8, 0.05


def run_bnb(device):
    import bitsandbytes as bnb

    params = [torch.nn.Parameter(torch.from_numpy(gen_param(s, n)).to(device)) for s, n in enumerate(SIZES8)]
    opt = bnb.optim.AdamW8bit(params, lr=LRS[0], betas=BETAS8, eps=EPS8, weight_decay=WD8)
    snaps = {}
    for t in range(1, STEPS + 1):
        for s, (p, n) in enumerate(zip(params, SIZES8)):
            p.grad = torch.from_numpy(gen_grad(s, t, n)).to(device)
        for group in opt.param_groups:
            group["lr"] = LRS[t - 1]
        opt.step()
        if t == 1:
            for s, p in enumerate(params):
                snaps[f"step1.param.{s}"] = p.detach().cpu().numpy().copy()
            snaps["step1.m8.0"] = opt.state[params[0]]["state1"].cpu().numpy().copy()
            snaps["step1.v8.0"] = opt.state[params[0]]["state2"].cpu().numpy().copy()
    st0, st1 = opt.state[params[0]], opt.state[params[1]]
    assert st0["state1"].dtype == torch.uint8 and st1["state1"].dtype == torch.float32
    snaps["final.param.0"] = params[0].detach().cpu().numpy().copy()
    snaps["final.param.1"] = params[1].detach().cpu().numpy().copy()
    snaps["final.m8.0"] = st0["state1"].cpu().numpy().copy()
    snaps["final.v8.0"] = st0["state2"].cpu().numpy().copy()
    snaps["final.absmax1.0"] = st0["absmax1"].cpu().numpy().copy()
    snaps["final.absmax2.0"] = st0["absmax2"].cpu().numpy().copy()
    snaps["final.m.1"] = st1["state1"].cpu().numpy().copy()
    snaps["final.v.1"] = st1["state2"].cpu().numpy().copy()
    snaps["qmap1"] = st0["qmap1"].cpu().numpy().copy()
    snaps["qmap2"] = st0["qmap2"].cpu().numpy().copy()
    return snaps, bnb.__version__


# The kernel transcription. f32 = np.float32 everywhere; numpy keeps float32 for float32 operands.
f32 = np.float32


def quantize_ref(qmap, signed, x):
    """bnb quantize_2D: binary search from code 127 with strides 64..1, then the nearer neighbour."""
    code = np.full(x.shape, 127, dtype=np.int64)
    below = np.zeros(x.shape, dtype=np.int64)
    above = np.full(x.shape, 255, dtype=np.int64)
    below_val = np.full(x.shape, f32(-1.0) if signed else f32(0.0), dtype=np.float32)
    above_val = np.full(x.shape, f32(1.0), dtype=np.float32)
    val = qmap[code]
    stride = 64
    while stride > 0:
        gt = x > val
        below = np.where(gt, code, below)
        below_val = np.where(gt, val, below_val)
        above = np.where(gt, above, code)
        above_val = np.where(gt, above_val, val)
        code = np.where(gt, code + stride, code - stride)
        val = qmap[code]
        stride //= 2
    gt = x > val
    up = np.where(x > (above_val + val) * f32(0.5), above, code)
    down = np.where(x < (below_val + val) * f32(0.5), below, code)
    return np.where(gt, up, down)


def kernel_ref_8bit(p, g, c1, c2, absmax1, absmax2, qmap1, qmap2, step, lr):
    beta1, beta2, eps, wd, lr = f32(BETAS8[0]), f32(BETAS8[1]), f32(EPS8), f32(WD8), f32(lr)
    corr1 = f32(1.0) - np.power(beta1, f32(step))
    corr2 = np.sqrt(f32(1.0) - np.power(beta2, f32(step)))
    step_size = (-lr * corr2) / corr1
    n = p.size
    nb = (n + 255) // 256
    pad = nb * 256 - n
    # The kernel loads past-the-end slots as g = 0, code1 = 128, code2 = 0.
    gp = np.concatenate([g, np.zeros(pad, np.float32)]).reshape(nb, 256)
    c1p = np.concatenate([c1, np.full(pad, 128, np.uint8)]).reshape(nb, 256)
    c2p = np.concatenate([c2, np.zeros(pad, np.uint8)]).reshape(nb, 256)
    finite = np.isfinite(gp)
    gz = np.where(finite, gp, f32(0.0))
    s2 = qmap2[c2p] * absmax2[:, None]
    s2 = s2 * beta2 + (f32(1.0) - beta2) * gz * gz
    s1 = qmap1[c1p] * absmax1[:, None]
    s1 = s1 * beta1 + (f32(1.0) - beta1) * gz
    s1 = np.where(finite, s1, f32(0.0)).astype(np.float32)
    s2 = np.where(finite, s2, f32(0.0)).astype(np.float32)
    new_max1 = np.abs(s1).max(axis=1).astype(np.float32)
    new_max2 = np.abs(s2).max(axis=1).astype(np.float32)
    s1, s2, finite = s1.reshape(-1)[:n], s2.reshape(-1)[:n], finite.reshape(-1)[:n]
    blk = np.arange(n) // 256
    upd = p + step_size * (s1 / (np.sqrt(s2) + corr2 * eps))
    if wd > 0:
        upd = upd * (f32(1.0) - lr * wd)
    p_new = np.where(finite, upd, p).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        q1 = quantize_ref(qmap1, True, (s1 / new_max1[blk]).astype(np.float32))
        q2 = quantize_ref(qmap2, False, (s2 / new_max2[blk]).astype(np.float32))
    flip = np.signbit(qmap1[q1]) != np.signbit(s1)
    q1 = np.where(flip, np.where(s1 > 0, q1 + 1, q1 - 1), q1) % 256
    return p_new, q1.astype(np.uint8), q2.astype(np.uint8), new_max1, new_max2


def kernel_ref_f32(p, g, m, v, step, lr):
    beta1, beta2, eps, wd, lr = f32(BETAS8[0]), f32(BETAS8[1]), f32(EPS8), f32(WD8), f32(lr)
    corr1 = f32(1.0) - np.power(beta1, f32(step))
    corr2 = np.sqrt(f32(1.0) - np.power(beta2, f32(step)))
    step_size = -lr * corr2 / corr1
    m = m * beta1 + (f32(1.0) - beta1) * g
    v = v * beta2 + (f32(1.0) - beta2) * (g * g)
    p = p + step_size * (m / (np.sqrt(v) + eps * corr2))
    if wd > 0:
        p = p * (f32(1.0) - lr * wd)
    return p.astype(np.float32), m.astype(np.float32), v.astype(np.float32)


def run_kernel_ref(qmap1, qmap2):
    n0, n1 = SIZES8
    nb = (n0 + 255) // 256
    p0, p1 = gen_param(0, n0), gen_param(1, n1)
    c1, c2 = np.zeros(n0, np.uint8), np.zeros(n0, np.uint8)
    a1, a2 = np.zeros(nb, np.float32), np.zeros(nb, np.float32)
    m1, v1 = np.zeros(n1, np.float32), np.zeros(n1, np.float32)
    snaps = {}
    for t in range(1, STEPS + 1):
        p0, c1, c2, a1, a2 = kernel_ref_8bit(p0, gen_grad(0, t, n0), c1, c2, a1, a2, qmap1, qmap2, t, LRS[t - 1])
        p1, m1, v1 = kernel_ref_f32(p1, gen_grad(1, t, n1), m1, v1, t, LRS[t - 1])
        if t == 1:
            snaps["step1.param.0"], snaps["step1.param.1"] = p0.copy(), p1.copy()
            snaps["step1.m8.0"], snaps["step1.v8.0"] = c1.copy(), c2.copy()
    snaps.update({"final.param.0": p0, "final.param.1": p1, "final.m8.0": c1, "final.v8.0": c2,
                  "final.absmax1.0": a1, "final.absmax2.0": a2, "final.m.1": m1, "final.v.1": v1,
                  "qmap1": qmap1, "qmap2": qmap2})
    return snaps


def meta8(source):
    return {"source": source, "sizes": json.dumps(SIZES8), "steps": str(STEPS), "beta1": repr(BETAS8[0]),
            "beta2": repr(BETAS8[1]), "eps": repr(EPS8), "weight_decay": repr(WD8), "min_8bit_size": "4096"}


def make_adamw8(out, cuda):
    lrs = np.array(LRS, dtype=np.float64)
    if cuda:
        snaps, ver = run_bnb("cuda")
        snaps["lrs"] = lrs
        name = torch.cuda.get_device_name(0)
        save_file(snaps, os.path.join(out, "adamw8_bnb_cuda.safetensors"),
                  metadata=meta8(f"bitsandbytes {ver} CUDA kernels on {name}, torch {torch.__version__}"))
        return
    snaps, ver = run_bnb("cpu")
    snaps["lrs"] = lrs
    save_file(snaps, os.path.join(out, "adamw8_bnb_cpu.safetensors"),
              metadata=meta8(f"bitsandbytes {ver} CPU backend, torch {torch.__version__}"))
    import bitsandbytes.functional as F

    ref = run_kernel_ref(F.create_dynamic_map(signed=True).numpy(), F.create_dynamic_map(signed=False).numpy())
    ref["lrs"] = lrs
    save_file(ref, os.path.join(out, "adamw8_kernel_ref.safetensors"),
              metadata=meta8(f"tests/ref/make_optim_fixture.py numpy transcription of bitsandbytes {ver} "
                             "CUDA kernels kOptimizerStatic8bit2StateBlockwise + kOptimizer32bit2State"))


# ---------------------------------------------------------------------------------------------------
# Clipping
def make_clip(out):
    sizes = [50, 7, 300]
    tensors, cases = {}, [("clip", 0.5), ("noop", 1000.0)]
    for name, max_norm in cases:
        params = [torch.nn.Parameter(torch.zeros(n)) for n in sizes]
        for s, (p, n) in enumerate(zip(params, sizes)):
            p.grad = torch.from_numpy(gen_grad(s, 1, n))
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        tensors[f"{name}.norm"] = np.array([norm.item()], dtype=np.float64)
        tensors[f"{name}.max_norm"] = np.array([max_norm], dtype=np.float64)
        for s, p in enumerate(params):
            tensors[f"{name}.grad.{s}"] = p.grad.numpy().copy()
    save_file(tensors, os.path.join(out, "clip.safetensors"),
              metadata={"source": f"torch {torch.__version__} torch.nn.utils.clip_grad_norm_",
                        "sizes": json.dumps(sizes)})


# ---------------------------------------------------------------------------------------------------
# Schedules
def make_schedules(out):
    import transformers
    from transformers import get_scheduler

    # (our name, HF name, lr, total steps, warmup steps, warmup ratio, min_lr_rate)
    cases = [
        ("constant", "constant", 2e-4, 20, 0, 0.0, 0.0),
        ("constant", "constant_with_warmup", 2e-4, 20, 5, 0.0, 0.0),
        ("linear", "linear", 1e-3, 37, 4, 0.0, 0.0),
        ("linear", "linear", 1e-3, 37, 0, 0.1, 0.0),
        ("cosine", "cosine", 3e-4, 50, 0, 0.0, 0.0),
        ("cosine", "cosine", 3e-4, 53, 0, 0.03, 0.0),
        ("cosine_min_lr", "cosine_with_min_lr", 2e-4, 41, 3, 0.0, 0.1),
        ("cosine_min_lr", "cosine_with_min_lr", 2e-4, 41, 0, 0.25, 0.1),
    ]
    res = []
    for ours, hf, lr, total, wsteps, wratio, min_rate in cases:
        # HF TrainingArguments.get_warmup_steps: steps when given, else ceil(ratio * total).
        warm = wsteps if wsteps > 0 else math.ceil(total * wratio)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        kw = {"min_lr_rate": min_rate} if hf == "cosine_with_min_lr" else None
        sch = get_scheduler(hf, opt, num_warmup_steps=warm, num_training_steps=total,
                            scheduler_specific_kwargs=kw)
        lrs = []
        for _ in range(total + 2):  # two past the end: the formulas' clamping
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        res.append({"kind": ours, "hf_name": hf, "lr": lr, "total_steps": total, "warmup_steps": wsteps,
                    "warmup_ratio": wratio, "min_lr_rate": min_rate, "resolved_warmup": warm, "lrs": lrs})
    with open(os.path.join(out, "schedules.json"), "w") as f:
        json.dump({"source": f"transformers {transformers.__version__} get_scheduler + torch LambdaLR",
                   "cases": res}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "optim"))
    ap.add_argument("--cuda", action="store_true", help="only write adamw8_bnb_cuda.safetensors (needs a GPU)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.cuda:
        make_adamw8(a.out, cuda=True)
        return
    make_adamw_torch(a.out)
    make_adamw8(a.out, cuda=False)
    make_clip(a.out)
    make_schedules(a.out)


if __name__ == "__main__":
    main()
