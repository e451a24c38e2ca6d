// libFuzzer target: arbitrary bytes as a safetensors file into safetensors_parse. It must never crash,
// read outside the buffer or leak; on success the parser's promises are checked here (every tensor's
// bytes inside the buffer and equal to numel x dtype size, names sorted and unique), and a second parse
// of the same bytes as another shard must be refused as soon as the first produced a tensor.
#include "core/core.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    safetensors st = {0};
    gt_error err;
    if (safetensors_parse(&st, data, size, 0, "fuzz input", &err) == GT_OK) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < st.n_tensors; i++) {
            const st_tensor *t = &st.tensors[i];
            if (t->data < data || t->nbytes > size || t->data + t->nbytes > data + size) abort();
            if ((uint64_t)t->numel * dtype_size(t->dtype) != t->nbytes) abort();
            if (i > 0 && strcmp(st.tensors[i - 1].name, t->name) >= 0) abort();
            if (safetensors_find(&st, t->name) != t) abort();
            for (size_t b = 0; b < t->nbytes; b++) sink ^= t->data[b]; // ASan checks every byte is readable
        }
        gt_status again = safetensors_parse(&st, data, size, 1, "fuzz input (again)", &err);
        if ((st.n_tensors > 0) == (again == GT_OK)) abort();
        (void)sink;
    }
    safetensors_close(&st);
    return 0;
}
