#!/usr/bin/env python3
"""HF's token-weighted mean next-token loss of a GptOss model on pre-tokenized rows (tests/cli_eval.sh).

    eval_hf_loss.py --model DIR --data rows.jsonl

Prints {"mean_token_loss": x, "tokens": n}: transformers' GptOssForCausalLM in fp32 (eager attention), the
sum of -log p(label) over every label that is not -100 (labels unshifted) divided by their count, over the
whole file; the loading and the loss are check_merged_export.py's. Exit 77 where torch/transformers/peft are
not importable (the caller decides whether that skips).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_merged_export import load, mean_loss, rows_of  # noqa: E402  (exits 77 without the stack)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    rows = rows_of(args.data)
    loss = mean_loss(load(args.model, False), rows)
    tokens = sum(sum(x != -100 for x in labels[1:]) for _, labels in rows)
    print(json.dumps({"mean_token_loss": loss, "tokens": tokens}))


if __name__ == "__main__":
    main()
