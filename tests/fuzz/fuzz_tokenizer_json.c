// libFuzzer target: tokenizer.json loader. Arbitrary bytes as the file; a file that loads must encode a
// fixed multilingual text (with and without specials) and decode it back unchanged.
#include "data/data.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tokenizer *tok = NULL;
    gt_error err;
    if (tokenizer_load_hf_json(&tok, (const char *)data, size, "fuzz.json", &err) != GT_OK) return 0;
    static const char text[] = "Hello, world! Grüße 東京 🍕 x<|end|>y 12345 \n\t \xff\xc3";
    for (int allow = 0; allow < 2; allow++) {
        token_buf ids = {0};
        if (tokenizer_encode(tok, text, sizeof text - 1, allow, &ids, &err) == GT_OK) {
            char *dec = NULL;
            size_t len = 0;
            if (tokenizer_decode(tok, ids.ids, ids.n, &dec, &len, &err) != GT_OK ||
                len != sizeof text - 1 || memcmp(dec, text, len) != 0)
                gt_die(__FILE__, __LINE__, "decode(encode(text)) != text");
            free(dec);
        }
        token_buf_free(&ids);
    }
    tokenizer_free(tok);
    return 0;
}
