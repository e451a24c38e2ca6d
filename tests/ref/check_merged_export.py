#!/usr/bin/env python3
"""Checks a merged model written by `gptoss export --merged` with HF transformers + PEFT (tests/cli_export.sh).

    check_merged_export.py --data rows.jsonl --case BASE,ADAPTER,EXPORT,OURS_EVAL_JSON [--case ...]

(several cases in one run: torch and transformers take most of the time to import)

1. transformers loads EXPORT as a plain GptOssForCausalLM (MXFP4 exports with Mxfp4Config(dequantize=True)),
   and HF's token-weighted mean next-token loss on the pre-tokenized rows equals ours (`gptoss eval --model
   EXPORT --data rows --json`, in eval.json) within 1e-5 relative: both run fp32 on the same stored weights.
2. bf16 exports: every merged weight equals PEFT's own merge (merge_and_unload of BASE + ADAPTER in fp32)
   rounded to bf16. Our fp32 sum may round differently from torch's in the last fp32 bit, which can move a
   bf16 rounding by one step: at most 1 bf16 ulp, in under 0.1% of the elements.
3. The logits of the export and of the unmerged BASE + ADAPTER are printed (bf16/4-bit rounding of the merged
   weights; informational).
Exit 0: pass, 1: fail, 77: torch/transformers/peft not importable (the caller skips).
"""
import argparse
import json
import sys

try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import GptOssForCausalLM, Mxfp4Config
except ImportError as e:  # the test is skipped where the Python stack is missing
    print(f"skip: {e}")
    sys.exit(77)


def load(path, mxfp4):
    kw = {"dtype": torch.float32, "attn_implementation": "eager"}
    if mxfp4:
        kw["quantization_config"] = Mxfp4Config(dequantize=True)
    return GptOssForCausalLM.from_pretrained(path, **kw).float().eval()


def rows_of(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((r["input_ids"], r.get("labels", r["input_ids"])))
    return rows


def mean_loss(model, rows):
    total, n = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(torch.tensor([ids])).logits[0].double()
            lab = torch.tensor(labels[1:])
            keep = lab != -100
            lp = torch.log_softmax(logits[:-1], dim=-1)
            total += float(-lp[keep, lab[keep]].sum())
            n += int(keep.sum())
    return total / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--case", action="append", required=True, help="BASE,ADAPTER,EXPORT,OURS_EVAL_JSON")
    args = ap.parse_args()
    ok = True
    for case in args.case:
        base, adapter, export, ours = case.split(",")
        print(f"== {export}")
        ok &= check(argparse.Namespace(base=base, adapter=adapter, export=export, data=args.data, ours=ours))
    print("ok" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def check(args):
    cfg = json.load(open(f"{args.export}/config.json"))
    mxfp4 = cfg.get("quantization_config", {}).get("quant_method") == "mxfp4"
    base_cfg = json.load(open(f"{args.base}/config.json"))
    base_mxfp4 = base_cfg.get("quantization_config", {}).get("quant_method") == "mxfp4"
    ok = True

    exported = load(args.export, mxfp4)
    rows = rows_of(args.data)
    hf = mean_loss(exported, rows)
    ours = json.load(open(args.ours))["mean_token_loss"]
    rel = abs(hf - ours) / abs(hf)
    print(f"mean token loss of the export: HF {hf:.8f}, gptoss {ours:.8f}, rel diff {rel:.2e} (tolerance 1e-5)")
    ok &= rel <= 1e-5

    peft = PeftModel.from_pretrained(load(args.base, base_mxfp4), args.adapter).float().eval()
    ids = torch.tensor([rows[0][0]])
    with torch.no_grad():
        a, b = exported(ids).logits, peft(ids).logits
    print(f"logits, export vs unmerged base + adapter (rounding of the merged weights, informational): "
          f"max |diff| / max |logit| = {float((a - b).abs().max() / b.abs().max()):.3g}")

    if not mxfp4:
        merged = peft.merge_and_unload().state_dict()
        saved = load_file(f"{args.export}/model.safetensors")
        worst_ulps, n_diff, n_all = 0, 0, 0
        for name, w in merged.items():
            if name not in saved:
                continue
            want = w.float()
            if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
                want = want.reshape(saved[name].shape)
            want16 = want.to(torch.bfloat16).view(torch.int16).int()
            got16 = saved[name].view(torch.int16).int()
            d = (want16 - got16).abs()
            worst_ulps = max(worst_ulps, int(d.max()))
            n_diff += int((d > 0).sum())
            n_all += d.numel()
        print(f"weights vs PEFT merge_and_unload rounded to bf16: {n_diff} of {n_all} differ, by at most "
              f"{worst_ulps} bf16 ulp (tolerance 1 ulp in under 0.1%)")
        ok &= worst_ulps <= 1 and n_diff <= n_all * 1e-3 and n_all > 0
    return ok


if __name__ == "__main__":
    main()
