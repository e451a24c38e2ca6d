#!/usr/bin/env python3
"""Turns a 1-layer bf16 model written by `gptoss init-model --preset tiny --layers 1 --quant bf16 --vocab V`
into a model whose greedy output is a fixed Harmony script, for tests/cli_chat.sh (Python stdlib only, run at
test time; nothing is committed).

    make_scripted_model.py MODEL_DIR TOKENIZER_JSON  -> prints the script as JSON

How: o_proj and the experts' down_proj (weights and biases) are zeroed, so the layer adds nothing and the last
hidden state is the embedding of the current token; the final norm weight is 1. lm_head row f(t) is set to
rmsnorm(embed[t]) for each scripted transition t -> f(t) (all other rows zero), so the logit of f(t) is
|rmsnorm(embed[t])|^2 = D while any other nonzero logit is D times a cosine of two different random
embeddings (< 1): greedy decoding follows t -> f(t) exactly. The tokens of the script are all distinct (a
bigram model cannot repeat one), which is why the answer comes after <|end|> without a second header:
    <|channel|>analysis<|message|>THINKING<|end|>ANSWER<|return|>
It starts from the last token of "assistant" as the tokenizer encodes it (the end of the generation prompt).
The parser must keep going after <|end|> and show ANSWER (a message with no channel) as the answer.
"""
import json
import random
import struct
import sys

THINKING = "Thinking hard."
ANSWER = "Paris is big!"


def bpe(word, ranks):
    """HF byte-level BPE of one ASCII word without spaces (enough for "assistant")."""
    parts = list(word)
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def segment(text, vocab, used):
    """text -> distinct vocab tokens not in used (longest first, backtracking). ASCII; space is 'Ġ'."""
    s = text.replace(" ", "Ġ")

    def go(i):
        if i == len(s):
            return []
        for j in range(len(s), i, -1):
            piece = s[i:j]
            if piece in vocab and vocab[piece] not in used:
                used.add(vocab[piece])
                rest = go(j)
                if rest is not None:
                    return [vocab[piece]] + rest
                used.discard(vocab[piece])
        return None

    out = go(0)
    if out is None:
        raise SystemExit(f"cannot write {text!r} with distinct tokens")
    return out


def main():
    model_dir, tok_path = sys.argv[1], sys.argv[2]
    tok = json.load(open(tok_path))
    vocab = tok["model"]["vocab"]
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    merges = tok["model"]["merges"]
    ranks = {tuple(m.split(" ") if isinstance(m, str) else m): i for i, m in enumerate(merges)}
    start = vocab[bpe("assistant", ranks)[-1]]
    used = {start}
    script = [special["<|channel|>"]]
    used.update(script)
    script += segment("analysis", vocab, used)
    script.append(special["<|message|>"])
    used.update(script)
    script += segment(THINKING, vocab, used)
    script.append(special["<|end|>"])
    used.update(script)
    script += segment(ANSWER, vocab, used)
    script.append(special["<|return|>"])
    assert len(set(script)) == len(script) and start not in script
    nxt = dict(zip([start] + script[:-1], script))

    path = f"{model_dir}/model.safetensors"
    raw = bytearray(open(path, "rb").read())
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen

    def put(name, values):
        info = header[name]
        assert info["dtype"] == "BF16", name
        b0, b1 = info["data_offsets"]
        assert (b1 - b0) // 2 == len(values), name
        out = bytearray()
        for v in values:
            out += struct.pack("<f", v)[2:4]  # bf16 = the high half of the fp32 bits (truncation)
        raw[base + b0:base + b1] = out

    def numel(name):
        n = 1
        for d in header[name]["shape"]:
            n *= d
        return n

    V, D = header["model.embed_tokens.weight"]["shape"]
    rng = random.Random(7)
    emb = [[rng.gauss(0.0, 1.0) for _ in range(D)] for _ in range(V)]
    put("model.embed_tokens.weight", [x for row in emb for x in row])
    put("model.norm.weight", [1.0] * D)
    head = [[0.0] * D for _ in range(V)]
    for t, u in nxt.items():
        rms = (sum(x * x for x in emb[t]) / D + 1e-5) ** 0.5
        head[u] = [x / rms for x in emb[t]]
    put("lm_head.weight", [x for row in head for x in row])
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.0.self_attn.o_proj.bias",
                 "model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.down_proj_bias"):
        put(name, [0.0] * numel(name))
    open(path, "wb").write(raw)
    print(json.dumps({"tokens": script, "thinking": THINKING, "answer": ANSWER, "end": special["<|end|>"],
                      "return": special["<|return|>"]}))


if __name__ == "__main__":
    main()
