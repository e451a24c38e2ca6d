#!/usr/bin/env python3
"""Conversation rows and their pre-tokenized twins for tests/cli_eval.sh (gptoss eval on conversations).

Writes tests/fixtures/eval/:
  conversations.jsonl           two HuggingFaceH4/Multilingual-Thinking rows (the first and the eighth of
                                data/samples/multilingual_sample.jsonl, every column kept, "thinking": null on
                                system and user), a developer multi-turn "messages" row, and a flat row
                                (developer/user/analysis/final columns, no "messages")
  tokens_<case>.jsonl           the same rows as {"input_ids", "labels"} made here, without gptoss: rendered
                                by HF's own chat template machinery and tokenized by HF `tokenizers`
                                (tests/fixtures/tokenizer/tokenizer.json), one file per case below

The render and the trained spans come from make_harmony_fixture.py (transformers' render_jinja_template on
tests/fixtures/harmony/chat_template.jinja with {% generation %} blocks around what gptoss trains, the
template's clock pinned). A flat row renders as [system: developer, user, assistant{thinking: analysis,
content: final}], the column mapping data/data.h documents. Labels: a token's id when its bytes lie inside a
trained span, -100 otherwise (train_on all: every token); a token that straddles a span edge is an error
here (spans start after <|message|> and end with a special token, so none should).

Usage: python3 tests/ref/make_eval_conv_fixture.py   (needs transformers and tokenizers)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_harmony_fixture as mhf  # noqa: E402  (pins the template clock on import)
import transformers.utils.chat_template_utils as ctu  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

ROOT = mhf.ROOT
OUT = os.path.join(ROOT, "tests/fixtures/eval")
SAMPLE = os.path.join(ROOT, "data/samples/multilingual_sample.jsonl")

# name -> (train_on, reasoning effort, date): the defaults of `gptoss eval` first (2025-08-05 is
# template.date's default in trainer/config.c), then the flags changed (tests/cli_eval.sh passes the same).
CASES = {
    "assistant": ("assistant", "medium", "2025-08-05"),
    "final": ("final", "low", "2026-02-28"),
    "all": ("all", "high", "2025-08-05"),
}


def rows():
    sample = [json.loads(line) for line in open(SAMPLE, encoding="utf-8")]
    return [
        sample[0],
        sample[7],
        {"messages": [{"role": "developer", "content": "Answer briefly.\nUse the user's language."},
                      {"role": "user", "content": "日本の首都はどこですか？"},
                      {"role": "assistant", "thinking": "dropped: not the last turn", "content": "東京です。"},
                      {"role": "user", "content": "And of France?"},
                      {"role": "assistant", "thinking": "The capital of France is Paris.",
                       "content": "Paris."}]},
        {"developer": "You are terse.", "user": "What is 12 × 12?", "analysis": "12 × 12 = 144.",
         "final": "144", "id": 17},
    ]


def messages_of(row):
    if "messages" in row:
        return row["messages"]
    return [{"role": "system", "content": row["developer"]}, {"role": "user", "content": row["user"]},
            {"role": "assistant", "thinking": row["analysis"], "content": row["final"]}]


def tokens_of(tok, template, msgs, train_on, effort, date):
    mhf.PinnedClock.date = date
    kw = {"reasoning_effort": effort}
    (text,), _ = ctu.render_jinja_template([msgs], chat_template=template, add_generation_prompt=False, **kw)
    spans = [[0, len(text.encode())]]
    if train_on != "all":
        (t2,), (idx,) = ctu.render_jinja_template([msgs], chat_template=mhf.generation_template(template, train_on),
                                                  add_generation_prompt=False, return_assistant_tokens_mask=True,
                                                  **kw)
        assert t2 == text
        spans = mhf.byte_spans(text, idx)
    enc = tok.encode(text, add_special_tokens=False)
    ids, labels = enc.ids, []
    for i, (a, b) in zip(ids, enc.offsets):
        a, b = len(text[:a].encode()), len(text[:b].encode())
        inside = any(s <= a and b <= e for s, e in spans)
        if not inside and any(a < e and s < b for s, e in spans):
            raise SystemExit(f"token {i} at bytes [{a}, {b}) straddles a trained span {spans}")
        labels.append(i if inside else -100)
    return ids, labels


def main():
    template = open(mhf.TEMPLATE, encoding="utf-8").read()
    tok = Tokenizer.from_file(mhf.TOKENIZER)
    os.makedirs(OUT, exist_ok=True)
    rs = rows()
    with open(os.path.join(OUT, "conversations.jsonl"), "w", encoding="utf-8") as f:
        for r in rs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    for name, (train_on, effort, date) in CASES.items():
        n_tok = n_lab = 0
        with open(os.path.join(OUT, f"tokens_{name}.jsonl"), "w") as f:
            for r in rs:
                ids, labels = tokens_of(tok, template, messages_of(r), train_on, effort, date)
                f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
                n_tok += len(ids)
                n_lab += sum(x != -100 for x in labels[1:])
        print(f"{name}: {len(rs)} rows, {n_tok} tokens, {n_lab} targets")


if __name__ == "__main__":
    main()
