// tests/fuzz/fuzz_util.h: set-up shared by the libFuzzer targets. Each tests/fuzz/fuzz_*.c is its own
// executable, so everything here is static inline.
#ifndef GPTOSS_FUZZ_UTIL_H
#define GPTOSS_FUZZ_UTIL_H

#include <stdlib.h>

#include "data/data.h"

// The fixture tokenizer (tests/fixtures/tokenizer/tokenizer.json, from the repository root or
// $GPTOSS_SRC); dies when it does not load.
static inline tokenizer *fuzz_fixture_tokenizer(void) {
    const char *src = getenv("GPTOSS_SRC");
    char *path = fs_join(src ? src : ".", "tests/fixtures/tokenizer/tokenizer.json");
    tokenizer *tok;
    gt_error err;
    if (tokenizer_load_hf(&tok, path, &err) != GT_OK) gt_die(__FILE__, __LINE__, "%s (run from the repo root)", err.msg);
    free(path);
    return tok;
}

#endif
