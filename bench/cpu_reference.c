// bench/cpu_reference.c: time of the CPU reference forward+backward (model_forward_backward) per token,
// on a random model of the "tiny" preset (in memory, WF_F32 experts) with LoRA rank 8 on all seven
// targets. A measurement, not a test; results go to bench/NOTES.md ("CPU reference").
//
//   cc -O3 -fopenmp -D_GNU_SOURCE -I. bench/cpu_reference.c BUILD/libgptoss_model.a BUILD/libgptoss_core.a \
//      -ljansson -lz -lm -o /tmp/cpu_reference
//   /tmp/cpu_reference [vocab (201088)] [tokens per batch (1024)] [documents (4)] [repeats (3)]
//
// Prints, for checkpointing off and on: the best of the repeats, in ms per batch and us per token, plus
// the forward alone (model_forward_loss) for comparison.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tests/cpu_tiny.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int vocab = argc > 1 ? atoi(argv[1]) : 201088, T = argc > 2 ? atoi(argv[2]) : 1024;
    int docs = argc > 3 ? atoi(argv[3]) : 4, reps = argc > 4 ? atoi(argv[4]) : 3;
    if (vocab < 2 || T < docs || docs < 1 || reps < 1) {
        fprintf(stderr, "usage: %s [vocab] [tokens] [documents] [repeats]\n", argv[0]);
        return 2;
    }
    model_config cfg;
    gt_error err;
    if (model_config_preset(&cfg, "tiny", 0, vocab, &err) != GT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    model m;
    cpu_tiny_init(&m, &cfg, 1, 4.0f);
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 8, 2.0f, 2);
    int *lens = xmalloc(docs * sizeof(int));
    for (int d = 0; d < docs; d++) lens[d] = T / docs + (d < T % docs);
    tiny_batch tb;
    tiny_batch_init(&tb, lens, docs, vocab, 3);
    printf("tiny preset: D %d, %d layers, H %d/%d x %d, E %d top-%d, I %d, window %d, V %d; LoRA r 8 all targets;"
           " %d tokens in %d documents\n",
           cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_experts, cfg.top_k,
           cfg.intermediate, cfg.sliding_window, cfg.vocab, T, docs);
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        model_ws *ws;
        CHECK(model_ws_init(&ws, &m, 8, T, ckpt, &err) == GT_OK);
        double best_fb = 1e300, best_f = 1e300, loss;
        int64_t n;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            CHECK(model_forward_loss(ws, &m, &lo, &tb.b, &loss, &n, NULL, &err) == GT_OK);
            double t1 = now_s();
            CHECK(model_forward_backward(ws, &m, &lo, &tb.b, 1.0f / (float)T, &loss, &n, &err) == GT_OK);
            double t2 = now_s();
            best_f = t1 - t0 < best_f ? t1 - t0 : best_f;
            best_fb = t2 - t1 < best_fb ? t2 - t1 : best_fb;
        }
        printf("checkpointing %s: workspace %.1f MiB; forward+backward %.1f ms/batch = %.1f us/token; forward "
               "alone %.1f ms = %.1f us/token\n",
               ckpt ? "on " : "off", model_ws_bytes(ws) / 1048576.0, best_fb * 1e3, best_fb * 1e6 / T, best_f * 1e3,
               best_f * 1e6 / T);
        model_ws_free(ws);
    }
    tiny_batch_free(&tb);
    free(lens);
    cpu_tiny_lora_free(&lo, &m);
    cpu_tiny_free(&m);
    return 0;
}
