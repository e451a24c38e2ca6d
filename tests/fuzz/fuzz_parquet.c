// libFuzzer target: arbitrary bytes as a parquet file into parquet_open_mem and parquet_next_row (seeds:
// tests/fuzz/seeds/fuzz_parquet/, copies of tests/fixtures/parquet/ files). It must never crash, read
// outside the buffer or leak. A refusal must name the input ("fuzz: ...") and be GT_EFORMAT or
// GT_EUNSUPPORTED (GT_ENOMEM for a chunk too large to address); after a failed row the reader repeats the
// failure. An accepted row must be a JSON object that serializes (every string valid UTF-8, every
// number finite) with as many keys as the first row. Reading stops after MAX_ROWS rows: a file can claim
// any number of rows, and each costs time, not memory.
#include "data/data.h"

#include <jansson.h>
#include <stdlib.h>

enum { MAX_ROWS = 64 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_failure(gt_status st, const gt_error *err) {
    if ((st != GT_EFORMAT && st != GT_EUNSUPPORTED && st != GT_ENOMEM) || strncmp(err->msg, "fuzz: ", 6)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parquet_reader *r;
    gt_error err;
    gt_status st = parquet_open_mem(&r, data, size, "fuzz", &err);
    if (st) {
        if (r) abort();
        check_failure(st, &err);
        return 0;
    }
    size_t keys = SIZE_MAX;
    for (int i = 0; i < MAX_ROWS; i++) {
        json_t *row;
        st = parquet_next_row(r, &row, &err);
        if (st) {
            check_failure(st, &err);
            gt_error again;
            json_t *none;
            if (parquet_next_row(r, &none, &again) != st || none || strcmp(again.msg, err.msg)) abort();
            break;
        }
        if (!row) break;
        if (!json_is_object(row)) abort();
        if (keys == SIZE_MAX) keys = json_object_size(row);
        if (json_object_size(row) != keys) abort();
        char *text = json_dumps(row, JSON_COMPACT);
        if (!text) abort();
        free(text);
        json_decref(row);
    }
    parquet_close(r);
    return 0;
}
