// tokenize_bench: single-threaded encode throughput of gptoss's tokenizer (bench/run_tokenizer_bench.sh
// builds and runs it; bench/tokenizer_bench.py compares it with HF tokenizers on the same files).
//
//   tokenize_bench TOKENIZER.json CORPUS [IDS_OUT] [REPEATS]
//
// CORPUS holds documents separated by NUL bytes; each is encoded on its own as ordinary text
// (allow_special = 0), the way the dataset pipeline encodes message text. Prints one JSON line with the
// best of REPEATS (default 3) runs. IDS_OUT, when given, receives every document's ids as little-endian
// int32, each document followed by -1, for the id-for-id comparison with the reference. Times are CPU
// seconds of the process.
#include "data/data.h"

#include <stdlib.h>
#include <time.h>

// CPU time of this process: the 2-core machine is shared, and CPU time is what single-threaded encoding
// costs (tokenizer_bench.py measures HF the same way).
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER.json CORPUS [IDS_OUT] [REPEATS]\n", argv[0]);
        return 2;
    }
    gt_error err;
    tokenizer *tok = NULL;
    double t0 = now();
    if (tokenizer_load_hf(&tok, argv[1], &err) != GT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double load_s = now() - t0;
    char *text;
    size_t len;
    if (fs_read_file(argv[2], &text, &len, &err) != GT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int repeats = argc > 4 ? atoi(argv[4]) : 3;
    double best = 1e30;
    size_t n_tokens = 0, n_docs = 0;
    token_buf ids = {0};
    for (int r = 0; r < repeats; r++) {
        ids.n = 0;
        n_docs = 0;
        t0 = now();
        for (size_t at = 0; at < len;) {
            const char *end = memchr(text + at, 0, len - at);
            size_t doc_len = end ? (size_t)(end - (text + at)) : len - at;
            if (tokenizer_encode(tok, text + at, doc_len, 0, &ids, &err) != GT_OK) {
                fprintf(stderr, "document %zu: %s\n", n_docs, err.msg);
                return 1;
            }
            token_buf_push(&ids, -1); // document boundary, for IDS_OUT
            n_docs++;
            at += doc_len + 1;
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    n_tokens = ids.n - n_docs;
    if (argc > 3) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(ids.ids, sizeof *ids.ids, ids.n, f) != ids.n) {
            fprintf(stderr, "%s: cannot write\n", argv[3]);
            return 1;
        }
        fclose(f);
    }
    printf("{\"bytes\": %zu, \"docs\": %zu, \"tokens\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.2f, "
           "\"load_seconds\": %.3f}\n",
           len - (n_docs - 1), n_docs, n_tokens, best, (len - (n_docs - 1)) / best / 1e6, load_s);
    token_buf_free(&ids);
    free(text);
    tokenizer_free(tok);
    return 0;
}
