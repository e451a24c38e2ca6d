#!/usr/bin/env python3
"""Writes tests/fixtures/model/: tiny GPT-OSS models (bf16, MXFP4, NF4), PEFT LoRA adapters made by PEFT, and
HF's logits, per-token losses and LoRA gradients for them. tests/test_model_ref.c, tests/test_lora.c and
tests/cli_eval.sh compare gptoss against these.

    python3 tests/ref/make_model_fixtures.py     (torch, transformers 5, peft >= 0.17, bitsandbytes, safetensors)

Two tiny configs that cannot hide bugs (DESIGN.md): 4 layers, 4 query heads on 2 KV heads, a sliding window of
8 on even layers (sequences are 17-32 long), 4 experts with top-2, nonzero biases and sinks, rope and swiglu
settings that differ from the 20B defaults (so a hard-coded value fails) and a swiglu limit low enough that
~10% of gate and ~20% of up values are clamped; hidden != 2*intermediate, hidden != heads*head_dim and
hidden != intermediate (a transposed down_proj would not fit):
  family "bf16": hidden 24, intermediate 16, head_dim 8 (q 32)     -- small, to keep the fixtures small
  family "q":    hidden 32, intermediate 64, head_dim 16 (q 64)    -- multiples of 32 (MXFP4) and 64 (NF4)

What is made (model/):
  bf16/    family bf16: config.json + model.safetensors, saved by HF's save_pretrained (experts
           gate_up_proj [E,D,2I], down_proj [E,I,D]).
  mxfp4/   family q with every expert quantized by the packer below into the openai layout
           (*_blocks [E,out,in/32,16], *_scales [E,out,in/32]); the packing is checked against transformers'
           convert_moe_packed_tensors, and the directory is loaded back with transformers (dequantize=True) and
           must give the very weights the reference used.
  nf4/     family q (same bf16 weights as mxfp4/ before quantization) in the Unsloth bitsandbytes layout:
           per-expert experts.gate_up_projs.{e} / down_projs.{e} (double quantization) and the attention
           projections (single) quantized to NF4 BY BITSANDBYTES ITSELF (bitsandbytes.functional.quantize_4bit
           on the CPU; QuantState.as_dict(packed=True) gives the stored tensors); router as router.linear; the
           down_projs of the last layer are left bf16 (unquantized tensors exist in such files).
           bitsandbytes dequantizes to the compute dtype (bf16); gptoss keeps the dequantized weight in fp32
           (quant_map[code] * absmax), so the reference uses that fp32 product; the script checks it against
           bitsandbytes' generic dequantization (exact) and checks that every code is the level nearest to
           w/absmax.
  adapter_bf16/, adapter_q/  PEFT save_pretrained of a LoRA on all seven types for each family:
           target_modules q,k,v,o and target_parameters mlp.experts.gate_up_proj + mlp.experts.down_proj
           (r 3, alpha 6), with every B set to random nonzero values after get_peft_model.
  adapter_down/  a second PEFT adapter for family bf16: q_proj, o_proj and only mlp.experts.down_proj,
           use_rslora, r 2, alpha 3 (one expert parameter: its keys have no base_layer. segment).
  ref_{bf16,mxfp4,nf4}.safetensors: ids (I32 [T]), targets (I32 [T], next token or -1), logits (F32 [T,V]),
           token_loss (F32 [T], 0 where ignored), loss (F32 [1], mean over targets) and n_targets (I32 [1]) of
           the base + its all-seven adapter, and the loss of the base alone (loss_base).
  grad_{bf16,mxfp4}.safetensors: d(mean loss) / d every LoRA A and B, under adapter_model.safetensors' key
           names (not for nf4: the gradient code does not depend on the storage format; kept small).
  eval.jsonl, eval_ref.json: pre-tokenized rows (one with -100 labels, one without labels) and HF's
           token-weighted mean next-token loss, keyed "base/adapter" ("bf16/none", "bf16/adapter_bf16",
           "bf16/adapter_down", "mxfp4/adapter_q", ...).

The reference runs in fp32 (model.float()) on the bf16-rounded (or dequantized) weights, eager attention.
Each fixture sequence is one document: HF's eager attention does not separate packed documents.
"""
import json
import math
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import bitsandbytes.functional as bnbf
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from bitsandbytes.backends.utils import _get_4bit_code
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

OUT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "fixtures", "model"))
SEED = 1234
T_REF = 32  # length of the logits/gradient sequence (> sliding window 8)


def tiny_config(hidden, intermediate, head_dim):
    n_layers = 4
    return GptOssConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=8,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
        rope_parameters={"rope_type": "yarn", "factor": 8.0, "beta_fast": 32.0, "beta_slow": 1.0,
                         "truncate": False, "original_max_position_embeddings": 256, "rope_theta": 10000.0},
        max_position_embeddings=2048, rms_norm_eps=1e-5, swiglu_limit=2.0, tie_word_embeddings=False,
        attention_bias=True, eos_token_id=63, pad_token_id=62, bos_token_id=61,
        attn_implementation="eager")


def init_weights(model, gen):
    """Weights of order one (HF's std 0.02 init makes every logit ~0 and hides bugs)."""
    cfg = model.config
    sd = model.state_dict()
    new = {}
    for name, p in sd.items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            v = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
        elif name.endswith("sinks"):
            v = torch.randn(p.shape, generator=gen)
        elif name.endswith("bias"):
            v = 0.2 * torch.randn(p.shape, generator=gen)
        elif name == "model.embed_tokens.weight":
            v = torch.randn(p.shape, generator=gen)
        elif name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            v = torch.randn(p.shape, generator=gen) * 1.5 / math.sqrt(p.shape[1])  # [E, in, out]
        elif name.endswith("router.weight"):
            v = torch.randn(p.shape, generator=gen) * 2.0 / math.sqrt(cfg.hidden_size)
        else:  # [out, in] linears, lm_head
            v = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
        new[name] = v.to(torch.bfloat16).float()  # bf16-exact values
    model.load_state_dict(new)


# ------------------------------------------------------------------------------------------------------
# MXFP4: blocks of 32 along the input dimension, one E8M0 scale each; byte j of a block holds element 2j in
# its low nibble and 2j+1 in its high nibble.
FP4 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_pack(w):
    """w [..., out, in] fp32 -> blocks U8 [..., out, in/32, 16], scales U8 [..., out, in/32]."""
    *pre, rows, cols = w.shape
    b = w.reshape(*pre, rows, cols // 32, 32)
    amax = b.abs().amax(dim=-1)
    # the smallest power of two that maps the block's largest magnitude into [0, 6]
    e = torch.where(amax > 0, torch.ceil(torch.log2(amax / 6.0)), torch.full_like(amax, -127.0))
    e = e.clamp(-127, 127)
    x = b / torch.exp2(e)[..., None]
    # nearest FP4 code (ties to the lower index, deterministic)
    mag = (x.abs()[..., None] - FP4[:8]).abs().argmin(dim=-1)
    codes = torch.where((x < 0) & (mag > 0), mag + 8, mag).to(torch.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    scales = (e + 127).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def mxfp4_unpack(blocks, scales):
    lo, hi = (blocks & 0x0F).long(), (blocks >> 4).long()
    vals = torch.stack([FP4[lo], FP4[hi]], dim=-1).flatten(-2)  # [..., out, in/32, 32]
    vals = vals * torch.exp2(scales.float() - 127.0)[..., None]
    return vals.flatten(-2)


# ------------------------------------------------------------------------------------------------------
# NF4 through bitsandbytes (CPU), double quantization like the Unsloth checkpoints.
def nf4_quantize(w_out_in, nested):
    """w [out, in] (bf16-exact fp32) -> (stored tensors dict suffix -> tensor, fp32 dequantized weight).
    nested: double quantization (8-bit absmax with its own absmax per 256 blocks and an offset)."""
    w16 = w_out_in.to(torch.bfloat16).contiguous()
    q, st = bnbf.quantize_4bit(w16, blocksize=64, compress_statistics=nested, quant_type="nf4",
                               quant_storage=torch.uint8)
    stored = {"weight": q}
    for k, v in st.as_dict(packed=True).items():
        stored["weight." + k] = v
    # fp32 dequantization, the formula gptoss uses: quant_map[code] * absmax, absmax undone from its nested
    # 8-bit form: nested_quant_map[u8] * nested_absmax[block / 256] + nested_offset.
    codes = torch.stack([(q.flatten() >> 4), (q.flatten() & 0x0F)], dim=-1).flatten().long()
    if nested:
        absmax_u8 = st.absmax.long()
        nested_absmax = st.state2.absmax.float()
        absmax = st.state2.code.float()[absmax_u8] * nested_absmax[torch.arange(absmax_u8.numel()) // 256] + st.offset
    else:
        absmax = st.absmax.float()
    n = w_out_in.numel()
    deq = (st.code.float()[codes[:n]] * absmax[torch.arange(n) // 64]).reshape(w_out_in.shape)
    # check against bitsandbytes' generic dequantization (backends/default/ops.py, the reference for its
    # kernels). Its native CPU kernel (0.50.2) is NOT used: it is wrong when a row is shorter than a block
    # (here gate_up rows of 32 < 64), see model/NOTES.md.
    code = _get_4bit_code("nf4", q.device)
    absmax_ref = bnbf.dequantize_blockwise(st.absmax, st.state2) + st.offset if nested else st.absmax
    ref32 = _dequantize_4bit_compute(q.reshape(-1), absmax_ref, code, 64, st.shape, torch.float32)
    assert torch.equal(ref32, deq), "NF4: fp32 dequantization differs from bitsandbytes'"
    # and independently of bitsandbytes' dequantization: every code is the NF4 level nearest to w/absmax
    # (the absmax it was quantized with, before the nested 8-bit rounding)
    x = w16.float().flatten()
    blocks_absmax = x.reshape(-1, 64).abs().amax(dim=1)
    nearest = (x[:, None] / blocks_absmax.repeat_interleave(64)[:, None] - code[None, :]).abs()
    picked = nearest.gather(1, codes[:n, None]).squeeze(1)
    assert torch.all(picked <= nearest.min(dim=1).values + 1e-6), "NF4: a code is not the nearest level"
    return stored, deq


# ------------------------------------------------------------------------------------------------------
def write_config(dirname, cfg, quantization_config=None):
    d = cfg.to_dict()
    d["architectures"] = ["GptOssForCausalLM"]
    d["dtype"] = "bfloat16"
    d.pop("_name_or_path", None)
    if quantization_config is not None:
        d["quantization_config"] = quantization_config
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)


def make_mxfp4(base_sd, cfg, dirname):
    """Writes dirname (openai MXFP4 layout); returns the state dict of dequantized experts (HF layout)."""
    out = {}
    deq = dict(base_sd)
    for name, v in base_sd.items():
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            packed_w = v.transpose(1, 2).contiguous()  # HF [E, in, out] -> packed [E, out, in]
            blocks, scales = mxfp4_pack(packed_w)
            ours = mxfp4_unpack(blocks, scales)                    # [E, out, in]
            theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, in, out]
            assert torch.equal(ours.transpose(1, 2), theirs), f"{name}: MXFP4 packing disagrees with transformers"
            err = (theirs - v).abs().max().item() / v.abs().max().item()
            assert err < 0.25, f"{name}: MXFP4 error {err} too large"
            out[name + "_blocks"] = blocks
            out[name + "_scales"] = scales
            deq[name] = theirs
        else:
            out[name] = v.to(torch.bfloat16)
    os.makedirs(dirname, exist_ok=True)
    save_file({k: x.contiguous() for k, x in out.items()}, os.path.join(dirname, "model.safetensors"),
              metadata={"format": "pt"})
    write_config(dirname, cfg, {"quant_method": "mxfp4",
                                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                           "model.embed_tokens", "lm_head"]})
    # transformers must read the directory back into exactly these weights
    hf = GptOssForCausalLM.from_pretrained(dirname, quantization_config=Mxfp4Config(dequantize=True),
                                           dtype=torch.float32)
    for k, v in hf.state_dict().items():
        assert torch.equal(v.float(), deq[k].float()), f"{k}: transformers reads the MXFP4 file differently"
    return deq


def make_nf4(base_sd, cfg, dirname):
    """Writes dirname (Unsloth bitsandbytes layout); returns the fp32 dequantized state dict (HF layout)."""
    out = {}
    deq = dict(base_sd)
    L = cfg.num_hidden_layers
    for name, v in base_sd.items():
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            pre, kind = name.rsplit(".", 1)
            layer = int(name.split(".")[2])
            per = []
            for e in range(v.shape[0]):
                w = v[e].t().contiguous()  # HF slice [in, out] -> Linear weight [out, in]
                key = f"{pre}.{kind}s.{e}"
                if kind == "down_proj" and layer == L - 1:
                    out[key + ".weight"] = w.to(torch.bfloat16)   # left unquantized
                    per.append(w)
                else:
                    stored, dw = nf4_quantize(w, nested=True)
                    for suffix, t in stored.items():
                        out[f"{key}.{suffix}"] = t
                    per.append(dw)
                out[key + ".bias"] = base_sd[name + "_bias"][e].to(torch.bfloat16)
            deq[name] = torch.stack([p.t() for p in per])
        elif name.endswith("_bias") and ".experts." in name:
            continue  # written per expert above
        elif any(name.endswith(f"self_attn.{p}_proj.weight") for p in "qkvo"):
            stored, dw = nf4_quantize(v, nested=False)
            for suffix, t in stored.items():
                out[name[: -len("weight")] + suffix] = t
            deq[name] = dw
        elif ".mlp.router." in name:
            out[name.replace(".mlp.router.", ".mlp.router.linear.")] = v.to(torch.bfloat16)
        else:
            out[name] = v.to(torch.bfloat16)
    os.makedirs(dirname, exist_ok=True)
    save_file({k: x.contiguous() for k, x in out.items()}, os.path.join(dirname, "model.safetensors"),
              metadata={"format": "pt"})
    write_config(dirname, cfg, {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8",
                                "llm_int8_skip_modules": ["router", "lm_head", "embed_tokens"]})
    return deq


# ------------------------------------------------------------------------------------------------------
def lora_key(param_name):
    """PEFT parameter name -> adapter_model.safetensors key (the adapter name segment removed)."""
    return param_name.replace(".default.", ".")


def randomize_lora_b(peft_model, gen, std):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def check_expert_layout(peft_model, cfg):
    """The mapping gptoss relies on (lora/peft.c), checked against PEFT's own delta weight: for expert e,
    A_e = A[e*r:(e+1)*r, :] (expert-major rows), B_e[:, k] = B[:, k*E + e] (rank-major columns), and the
    delta of the HF parameter [E, in, out] is scale * (B_e A_e)^T."""
    E = cfg.num_local_experts
    n = 0
    for name, mod in peft_model.named_modules():
        if type(mod).__name__ != "ParamWrapper":
            continue
        A = mod.lora_A["default"].weight.detach()
        B = mod.lora_B["default"].weight.detach()
        r = mod.r["default"]
        s = mod.scaling["default"]
        delta = mod.get_delta_weight("default")  # [E, in, out]
        for e in range(E):
            Ae = A[e * r:(e + 1) * r]
            Be = B[:, [k * E + e for k in range(r)]]
            ours = s * (Be @ Ae)
            assert torch.allclose(ours.t(), delta[e], rtol=1e-5, atol=1e-6), f"{name}: expert LoRA layout differs"
        n += 1
    assert n > 0


def run_reference(model, ids, labels):
    """fp32 forward + backward; returns logits, per-token losses, mean loss, n targets."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids[None], labels=labels[None])
    logits = out.logits[0].float()
    targets = torch.cat([labels[1:], torch.tensor([-100])])
    tl = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    n = int((targets != -100).sum())
    assert torch.allclose(tl.sum() / n, out.loss.float(), rtol=1e-6), "per-token losses do not sum to HF's loss"
    if out.loss.requires_grad:
        out.loss.backward()
    targets = torch.where(targets == -100, torch.full_like(targets, -1), targets)
    return logits.detach(), tl.detach(), out.loss.detach().float(), targets, n


def eval_loss(model, rows):
    """Token-weighted mean next-token loss over rows (HF convention: labels unshifted, -100 ignored)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor(row["input_ids"])
            labels = torch.tensor(row.get("labels", row["input_ids"]))
            out = model(input_ids=ids[None], labels=labels[None])
            n = int((labels[1:] != -100).sum())
            total += float(out.loss.double()) * n
            count += n
    return total / count, count


def fp32_model(cfg, sd):
    m = GptOssForCausalLM(cfg)
    m.load_state_dict(sd)
    return m.float().eval()


def make_adapter(cfg, sd, dirname, gen, **kw):
    """A PEFT LoRA made by PEFT on the fp32 model, every B set to random nonzero values, saved by PEFT."""
    pm = get_peft_model(fp32_model(cfg, sd), LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **kw))
    randomize_lora_b(pm, gen, 0.3)
    check_expert_layout(pm, cfg)
    pm.save_pretrained(dirname)
    readme = os.path.join(dirname, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    return set(load_file(os.path.join(dirname, "adapter_model.safetensors")).keys())


ALL_SEVEN = dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                 target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])


def reference(vname, cfg, sd, adapter, adapter_keys, ids, labels, with_grads):
    """ref_<vname>.safetensors (and grad_<vname>.safetensors) for base sd + the adapter directory."""
    _, _, loss_base, _, _ = run_reference(fp32_model(cfg, sd), ids, labels)
    peft_m = PeftModel.from_pretrained(fp32_model(cfg, sd), adapter, is_trainable=True).float()
    logits, tl, loss, targets, n = run_reference(peft_m, ids, labels)
    save_file({"ids": ids.to(torch.int32), "targets": targets.to(torch.int32), "logits": logits.contiguous(),
               "token_loss": tl.contiguous(), "loss": loss.reshape(1), "loss_base": loss_base.reshape(1),
               "n_targets": torch.tensor([n], dtype=torch.int32)},
              os.path.join(OUT, f"ref_{vname}.safetensors"), metadata={"format": "pt"})
    if with_grads:
        grads = {}
        for name, p in peft_m.named_parameters():
            if "lora_" in name:
                assert p.grad is not None and p.grad.abs().max() > 0, f"{name}: no gradient"
                grads[lora_key(name)] = p.grad.detach().float().contiguous()
        assert set(grads) == adapter_keys, "gradient keys differ from the adapter's keys"
        save_file(grads, os.path.join(OUT, f"grad_{vname}.safetensors"), metadata={"format": "pt"})
    print(f"{vname}: loss {loss.item():.6f} (base alone {loss_base.item():.6f}) over {n} targets")


def eval_refs(cfg, sd, rows, adapters):
    res = {}
    e, count = eval_loss(fp32_model(cfg, sd), rows)
    res["none"] = e
    for name in adapters:
        res[name], _ = eval_loss(PeftModel.from_pretrained(fp32_model(cfg, sd), os.path.join(OUT, name)).float(), rows)
    return res, count


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    # --- family 1: bf16, hidden 24, intermediate 16, 4 heads of 8
    cfg = tiny_config(24, 16, 8)
    model = GptOssForCausalLM(cfg)
    init_weights(model, gen)
    model.to(torch.bfloat16).save_pretrained(os.path.join(OUT, "bf16"))
    gc = os.path.join(OUT, "bf16", "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    bf16_sd = {k: v.float() for k, v in model.state_dict().items()}
    saved = load_file(os.path.join(OUT, "bf16", "model.safetensors"))
    E, D, I = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    assert tuple(saved["model.layers.0.mlp.experts.gate_up_proj"].shape) == (E, D, 2 * I)
    assert tuple(saved["model.layers.0.mlp.experts.down_proj"].shape) == (E, I, D)
    keys_bf16 = make_adapter(cfg, bf16_sd, os.path.join(OUT, "adapter_bf16"), gen, r=3, lora_alpha=6, **ALL_SEVEN)
    make_adapter(cfg, bf16_sd, os.path.join(OUT, "adapter_down"), gen, r=2, lora_alpha=3, use_rslora=True,
                 target_modules=["q_proj", "o_proj"], target_parameters=["mlp.experts.down_proj"])

    # --- family 2: 4-bit experts, hidden 32, intermediate 64, 4 heads of 16
    cfg_q = tiny_config(32, 64, 16)
    model_q = GptOssForCausalLM(cfg_q)
    init_weights(model_q, gen)
    q_sd = {k: v.float() for k, v in model_q.to(torch.bfloat16).state_dict().items()}
    mx_sd = make_mxfp4(q_sd, cfg_q, os.path.join(OUT, "mxfp4"))
    nf_sd = make_nf4(q_sd, cfg_q, os.path.join(OUT, "nf4"))
    keys_q = make_adapter(cfg_q, q_sd, os.path.join(OUT, "adapter_q"), gen, r=3, lora_alpha=6, **ALL_SEVEN)

    # --- reference sequence: one document longer than the window, labels with a masked prefix
    ids = torch.randint(0, cfg.vocab_size, (T_REF,), generator=gen)
    labels = ids.clone()
    labels[:5] = -100
    reference("bf16", cfg, bf16_sd, os.path.join(OUT, "adapter_bf16"), keys_bf16, ids, labels, True)
    reference("mxfp4", cfg_q, mx_sd, os.path.join(OUT, "adapter_q"), keys_q, ids, labels, True)
    reference("nf4", cfg_q, nf_sd, os.path.join(OUT, "adapter_q"), keys_q, ids, labels, False)

    # --- eval rows: a masked prompt, a row without labels, a longer row
    rows = []
    for n, mask in ((24, 6), (17, None), (30, 0)):
        r_ids = torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist()
        row = {"input_ids": r_ids}
        if mask is not None:
            row["labels"] = [-100] * mask + r_ids[mask:]
        rows.append(row)
    with open(os.path.join(OUT, "eval.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    # flat keys "base/adapter" so that tests/cli_eval.sh can read them with grep
    eval_ref = {"rows": len(rows)}
    for vname, c, sd, adapters in (("bf16", cfg, bf16_sd, ["adapter_bf16", "adapter_down"]),
                                   ("mxfp4", cfg_q, mx_sd, ["adapter_q"]), ("nf4", cfg_q, nf_sd, ["adapter_q"])):
        res, eval_ref["tokens"] = eval_refs(c, sd, rows, adapters)
        for k, v in res.items():
            eval_ref[f"{vname}/{k}"] = v
    with open(os.path.join(OUT, "eval_ref.json"), "w") as f:
        json.dump(eval_ref, f, indent=2)
    print("eval:", json.dumps(eval_ref))

    # how much of the swiglu clamp the references exercise (printed, so a regeneration shows it)
    for name, c, sd in (("bf16", cfg, bf16_sd), ("mxfp4", cfg_q, mx_sd)):
        g, u = clamp_stats(fp32_model(c, sd), ids)
        print(f"swiglu ({name}): {g:.1%} of gate values and {u:.1%} of up values clamped")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


def clamp_stats(model, ids):
    seen = []

    def hook(mod, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        idx = args[1] if len(args) > 1 else next(v for k, v in kwargs.items() if "ind" in k)
        for e in idx.unique().tolist():
            tok = (idx == e).any(-1)
            gu = x[tok] @ mod.gate_up_proj[e] + mod.gate_up_proj_bias[e]
            seen.append(gu)

    hs = [l.mlp.experts.register_forward_hook(hook, with_kwargs=True) for l in model.model.layers]
    with torch.no_grad():
        model(input_ids=ids[None])
    for h in hs:
        h.remove()
    gu = torch.cat(seen)
    lim = model.config.swiglu_limit
    return (gu[:, 0::2] > lim).float().mean().item(), (gu[:, 1::2].abs() > lim).float().mean().item()


if __name__ == "__main__":
    main()
