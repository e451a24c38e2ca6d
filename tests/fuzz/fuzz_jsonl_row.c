// libFuzzer target: arbitrary bytes as one JSONL row into data_row_tokenize, with the fixture tokenizer
// (tests/fixtures/tokenizer/, from the repository root or $GPTOSS_SRC). The input's length picks the row
// format (auto, messages, columns, tokens), train_on and the template variant, so every path is reached
// from the same corpus. It must never crash, read out of bounds or leak; a refused row must say where
// ("fuzz:1: ...") and leave the buffers as they were; an accepted row must give as many labels as ids,
// every id in the vocabulary, every label -1 or its id, and at least one trained target after position 0.
#include "fuzz_util.h"

#include <stdlib.h>

static tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tok = fuzz_fixture_tokenizer();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    data_options o;
    data_options_defaults(&o);
    o.harmony.date = "2025-08-05";
    o.format = (data_format)(size % 4);
    o.harmony.train_on = (harmony_train_on)((size / 4) % 3);
    o.harmony.variant = (harmony_variant)((size / 12) % 2);
    token_buf ids = {0}, labels = {0};
    token_buf_push(&ids, 1); // something already there: a refused row must leave it
    token_buf_push(&labels, -1);
    gt_error err;
    gt_status st = data_row_tokenize((const char *)data, size, &o, tok, "fuzz:1", &ids, &labels, &err);
    if (st != GT_OK) {
        if (st != GT_EFORMAT || strncmp(err.msg, "fuzz:1:", 7) || ids.n != 1 || labels.n != 1) abort();
    } else {
        int vocab = tokenizer_vocab_size(tok), trained = 0;
        if (ids.n != labels.n || ids.n < 3) abort();
        for (size_t i = 1; i < ids.n; i++) {
            if (ids.ids[i] < 0 || ids.ids[i] >= vocab) abort();
            if (labels.ids[i] != -1 && labels.ids[i] != ids.ids[i]) abort();
            trained += i > 1 && labels.ids[i] >= 0;
        }
        if (!trained) abort();
    }
    token_buf_free(&ids);
    token_buf_free(&labels);
    return 0;
}
