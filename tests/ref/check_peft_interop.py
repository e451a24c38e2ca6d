#!/usr/bin/env python3
"""PEFT interop of the adapter `gptoss train` exports (tests/cli_peft_interop.sh).

    check_peft_interop.py --base MODEL_DIR --adapter RUN_DIR/adapter --data rows.jsonl \
        --ours eval_adapter.json --ours-base eval_base.json

1. adapter_config.json holds what PEFT reads: peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, use_rslora,
   target_modules, target_parameters, base_model_name_or_path.
2. PeftModel.from_pretrained puts every tensor of adapter_model.safetensors into HF's GptOssForCausalLM:
   get_peft_model_state_dict equals the file, key for key and bit for bit (nothing missing, nothing extra).
3. HF's token-weighted mean next-token loss on the pre-tokenized rows, with the adapter, equals gptoss's
   (`gptoss eval --adapter`, in --ours) within 1e-5 relative (the issue's tolerance: both compute in fp32 on the
   same bf16-stored weights and differ only in summation order, ~1e-6).
4. The adapter matters: the base loss (--ours-base) differs from the adapted one by more than 100 times that
   tolerance, so check 3 cannot pass with an adapter that PEFT silently ignored.
Exit 0: pass, 1: fail, 77: torch/transformers/peft not importable (the caller decides whether that skips).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The HF side of the loss (model loading in fp32, the token-weighted mean) is check_merged_export.py's; its
# import exits 77 where torch/transformers/peft are missing.
from check_merged_export import load, mean_loss, rows_of  # noqa: E402

import torch  # noqa: E402
from peft import PeftModel, get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

TOL = 1e-5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--ours-base", required=True)
    args = ap.parse_args()
    ok = True

    cfg = json.load(open(f"{args.adapter}/adapter_config.json"))
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM"}
    for k, v in want.items():
        if cfg.get(k) != v:
            print(f"FAIL adapter_config.json: {k} is {cfg.get(k)!r}, want {v!r}")
            ok = False
    for k in ("r", "lora_alpha", "use_rslora", "target_modules", "target_parameters", "base_model_name_or_path"):
        if k not in cfg:
            print(f"FAIL adapter_config.json: no {k}")
            ok = False
    print(f"adapter: r {cfg.get('r')}, alpha {cfg.get('lora_alpha')}, rslora {cfg.get('use_rslora')}, "
          f"modules {cfg.get('target_modules')}, parameters {cfg.get('target_parameters')}")

    model = PeftModel.from_pretrained(load(args.base, False), args.adapter).float().eval()
    loaded = get_peft_model_state_dict(model)
    saved = load_file(f"{args.adapter}/adapter_model.safetensors")
    missing, extra = sorted(set(saved) - set(loaded)), sorted(set(loaded) - set(saved))
    differ = [k for k in saved if k in loaded and not torch.equal(saved[k], loaded[k].float())]
    print(f"tensors: {len(saved)} in the file, {len(loaded)} in the PEFT model; not loaded {len(missing)}, "
          f"extra {len(extra)}, different {len(differ)}")
    for name, keys in (("not loaded", missing), ("extra", extra), ("different", differ)):
        if keys:
            print(f"FAIL {name}: {keys[:5]}")
            ok = False
    nonzero_b = sum(int(saved[k].abs().max() > 0) for k in saved if "lora_B" in k)
    print(f"lora_B tensors that are not all zero: {nonzero_b} of {sum('lora_B' in k for k in saved)}")

    rows = rows_of(args.data)
    hf = mean_loss(model, rows)
    ours = json.load(open(args.ours))["mean_token_loss"]
    base = json.load(open(args.ours_base))["mean_token_loss"]
    rel = abs(hf - ours) / abs(hf)
    print(f"mean token loss with the adapter: HF+PEFT {hf:.8f}, gptoss {ours:.8f}, rel diff {rel:.2e} "
          f"(tolerance {TOL:g}); base alone (gptoss) {base:.8f}")
    if not rel <= TOL:
        print("FAIL loss differs")
        ok = False
    if not abs(base - ours) > 100 * TOL * abs(ours):
        print("FAIL the adapter barely changes the loss: the comparison would not show a PEFT that ignores it")
        ok = False
    print("ok" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
