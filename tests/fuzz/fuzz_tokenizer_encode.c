// libFuzzer target: the encoder on arbitrary bytes, with the fixture tokenizer (tests/fixtures/tokenizer/,
// found from the repository root or $GPTOSS_SRC). The first byte picks allow_special. Checks:
// decode(encode(x)) == x for any bytes; the stream decoder's output is valid UTF-8 and, when x is valid
// UTF-8, equal to x.
#include "fuzz_util.h"

#include <stdlib.h>

static tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tok = fuzz_fixture_tokenizer();
    return 0;
}

// Strict UTF-8 (no overlongs, surrogates or values above U+10FFFF); the oracle for the stream output.
static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3 : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
        if (!k || i + k > n) return 0;
        uint32_t cp = k == 1 ? c : c & (0xff >> (k + 1));
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int allow = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    token_buf ids = {0};
    gt_error err;
    if (tokenizer_encode(tok, text, len, allow, &ids, &err) != GT_OK) gt_die(__FILE__, __LINE__, "encode: %s", err.msg);
    char *dec = NULL;
    size_t dlen = 0;
    if (tokenizer_decode(tok, ids.ids, ids.n, &dec, &dlen, &err) != GT_OK) gt_die(__FILE__, __LINE__, "decode: %s", err.msg);
    if (dlen != len || memcmp(dec, text, len) != 0) gt_die(__FILE__, __LINE__, "decode(encode(x)) != x");
    size_t cap = tokenizer_stream_out_size(tok), slen = 0;
    char *out = malloc(cap), *all = malloc(ids.n * cap + cap);
    tokenizer_stream s = {.tok = tok};
    for (size_t i = 0; i < ids.n; i++) {
        size_t w = tokenizer_stream_push(&s, ids.ids[i], out, cap);
        memcpy(all + slen, out, w);
        slen += w;
    }
    slen += tokenizer_stream_flush(&s, all + slen, cap);
    if (!utf8_valid((const unsigned char *)all, slen)) gt_die(__FILE__, __LINE__, "stream output is not valid UTF-8");
    if (utf8_valid(data + 1, len) && (slen != len || memcmp(all, text, len) != 0))
        gt_die(__FILE__, __LINE__, "stream output differs from valid UTF-8 input");
    free(out);
    free(all);
    free(dec);
    token_buf_free(&ids);
    return 0;
}
