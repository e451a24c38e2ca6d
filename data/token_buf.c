// token_buf: a growable array of token ids (the output of the tokenizer and the dataset readers).
// Invariant: n <= cap; ids is NULL exactly when cap == 0. A zeroed token_buf is an empty buffer.
#include "data/data.h"

#include <stdlib.h>

void token_buf_push(token_buf *b, int32_t id) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        b->ids = xrealloc(b->ids, b->cap * sizeof *b->ids);
    }
    b->ids[b->n++] = id;
}

void token_buf_free(token_buf *b) {
    free(b->ids);
    b->ids = NULL;
    b->n = b->cap = 0;
}
