#!/usr/bin/env python3
"""Reference renders of GPT-OSS's chat template for tests/test_harmony.c.

Renders a set of conversations through tests/fixtures/harmony/chat_template.jinja (GPT-OSS's HF
chat_template.jinja as quoted in llama.cpp's models/templates/openai-gpt-oss-120b.jinja) with
transformers' own jinja2 environment (render_jinja_template: the sandbox, trim/lstrip settings and
globals that apply_chat_template uses), with the template's clock (strftime_now) pinned to each case's
date.

The trained spans come from the same machinery HF uses for assistant masks: a copy of the template with
{% generation %} blocks around what gptoss trains (train_on=assistant: the last turn's thinking + <|end|>
and its content + <|return|>; train_on=final: content + <|return|>), rendered with
return_assistant_tokens_mask. Spans are converted from character to UTF-8 byte offsets.

When tests/fixtures/tokenizer/tokenizer.json exists (the tokenizer tests' small BPE with the Harmony
special tokens), each render is also tokenized with HF `tokenizers` (special tokens parsed in the whole
string, as apply_chat_template(tokenize=True) does) and the ids are recorded.

Writes tests/fixtures/harmony/renders.json. Usage: python3 tests/ref/make_harmony_fixture.py
"""
import datetime as _dt
import json
import os

import transformers.utils.chat_template_utils as ctu

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TEMPLATE = os.path.join(ROOT, "tests/fixtures/harmony/chat_template.jinja")
TOKENIZER = os.path.join(ROOT, "tests/fixtures/tokenizer/tokenizer.json")
OUT = os.path.join(ROOT, "tests/fixtures/harmony/renders.json")

# The last-turn analysis line (the tool-call branch has the same expression, after another line).
THINK_END = ('{%- if "thinking" in message %}\n                {{- '
             '"<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}')
FINAL_RETURN = '"<|start|>assistant<|channel|>final<|message|>" + message.content + "<|return|>" }}'


def generation_template(text, train_on):
    """The template with {% generation %} around the spans gptoss trains under train_on."""
    analysis = ('{%- if "thinking" in message %}\n                {{- '
                '"<|start|>assistant<|channel|>analysis<|message|>" }}{% generation %}'
                '{{- message.thinking + "<|end|>" }}{% endgeneration %}')
    final = ('"<|start|>assistant<|channel|>final<|message|>" }}{% generation %}'
             '{{- message.content + "<|return|>" }}{% endgeneration %}')
    assert text.count(THINK_END) == 1 and text.count(FINAL_RETURN) == 1
    if train_on == "assistant":
        text = text.replace(THINK_END, analysis)
    return text.replace(FINAL_RETURN, final)


class PinnedClock(_dt.datetime):
    date = "2025-01-01"

    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.strptime(cls.date, "%Y-%m-%d")


ctu.datetime = PinnedClock  # strftime_now() reads datetime.now()

SYSTEM_FR = ("reasoning language: French\n\nYou are an AI chatbot with a lively and energetic "
             "personality.")

CASES = [
    {"name": "user_assistant_plain",
     "messages": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "2 + 2 = 4."}]},
    {"name": "multilingual_thinking_row",
     "messages": [{"role": "system", "content": SYSTEM_FR},
                  {"role": "user", "content": "¿Cuál es la capital de Australia?"},
                  {"role": "assistant",
                   "thinking": "D'accord, l'utilisateur demande la capitale de l'Australie. Ce n'est pas "
                               "Sydney mais Canberra.",
                   "content": "La capital de Australia es Canberra. 🇦🇺"}]},
    {"name": "developer_multi_turn_cjk_arabic",
     "messages": [{"role": "developer", "content": "Answer briefly.\nUse the user's language."},
                  {"role": "user", "content": "日本の首都はどこですか？"},
                  {"role": "assistant", "thinking": "dropped: not the last turn", "content": "東京です。"},
                  {"role": "user", "content": "ما هي عاصمة مصر؟"},
                  {"role": "assistant", "thinking": "المستخدم يسأل عن عاصمة مصر.\n\tالجواب: القاهرة.",
                   "content": "عاصمة مصر هي القاهرة."}]},
    {"name": "generation_prompt",
     "add_generation_prompt": True,
     "messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Say hi in German."}]},
    {"name": "generation_prompt_after_assistant",
     "add_generation_prompt": True,
     "messages": [{"role": "user", "content": "Count to two."},
                  {"role": "assistant", "thinking": "never rendered", "content": "1, 2"},
                  {"role": "user", "content": "Now to three."}]},
    {"name": "empty_system_high_effort_identity",
     "kwargs": {"reasoning_effort": "high", "model_identity": "You are Émile, a careful tutor."},
     "date": "2026-02-28",
     "messages": [{"role": "system", "content": ""},
                  {"role": "user", "content": "  leading and trailing spaces  \n"},
                  {"role": "assistant", "thinking": "", "content": "Noted.\n\n"}]},
    {"name": "low_effort_code_and_numbers",
     "kwargs": {"reasoning_effort": "low"},
     "messages": [{"role": "user", "content": "def f(x):\n    return x**2  # 1234567890\n"},
                  {"role": "assistant", "thinking": "It squares x; 12345678901234567890.",
                   "content": "`f` returns x squared:\n```python\nf(3) == 9\n```"}]},
    {"name": "ends_with_user_no_prompt",
     "messages": [{"role": "user", "content": "Hello"},
                  {"role": "assistant", "content": "Hi!"},
                  {"role": "user", "content": "Bye"}]},
    {"name": "special_string_in_user_text",
     "tokenize": False,  # HF would turn the text's "<|end|>" into the special id; gptoss keeps it text
     "messages": [{"role": "user", "content": "Is <|end|> a token?"},
                  {"role": "assistant", "content": "Yes."}]},
]


def byte_spans(text, spans):
    out = []
    for a, b in spans:
        out.append([len(text[:a].encode()), len(text[:b].encode())])
    merged = []
    for s in out:
        if s[0] == s[1]:
            continue
        if merged and merged[-1][1] == s[0]:
            merged[-1][1] = s[1]
        else:
            merged.append(s)
    return merged


def main():
    template = open(TEMPLATE, encoding="utf-8").read()
    tok = None
    if os.path.exists(TOKENIZER):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(TOKENIZER)
    out = []
    for case in CASES:
        date = case.get("date", "2025-08-05")
        PinnedClock.date = date
        kwargs = case.get("kwargs", {})
        gen = case.get("add_generation_prompt", False)
        texts, spans = {}, {}
        (text,), _ = ctu.render_jinja_template([case["messages"]], chat_template=template,
                                               add_generation_prompt=gen, **kwargs)
        for train_on in ("assistant", "final"):
            (t2,), (idx,) = ctu.render_jinja_template(
                [case["messages"]], chat_template=generation_template(template, train_on),
                add_generation_prompt=gen, return_assistant_tokens_mask=True, **kwargs)
            assert t2 == text, case["name"]
            spans[train_on] = byte_spans(text, idx)
        rec = {"name": case["name"], "messages": case["messages"], "date": date,
               "add_generation_prompt": gen, "kwargs": kwargs, "text": text,
               "trained_assistant": spans["assistant"], "trained_final": spans["final"]}
        if tok is not None and case.get("tokenize", True):
            rec["ids"] = tok.encode(text, add_special_tokens=False).ids
        out.append(rec)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(out)} renders" + (" with ids" if tok else " (no tokenizer fixture yet: no ids)"))


if __name__ == "__main__":
    main()
