// tests/test_forward.c: properties of the whole CPU model (model/cpu/forward.c) on tiny random models:
//   - gradient checkpointing on and off give bitwise identical losses and LoRA gradients, and so do 1
//     and 2 OpenMP threads;
//   - grad_scale scales every gradient exactly, and a second call accumulates;
//   - packed documents give the same logits as each document alone (positions restart, no attention
//     across documents);
//   - the chunked cross-entropy equals a double-precision full softmax over model_logits;
//   - the sliding window limits what a token sees: a token just outside every sliding layer's reach
//     changes nothing, one inside changes the logits (and a full-attention model sees it);
//   - HF labels -> targets, positions from doc ids, and bad batches rejected with a message.
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_tiny.h"
#include "model/model.h"
#include "test_util.h"


// All LoRA gradients of the model, concatenated (for comparisons); returns the count.
static size_t grads_collect(model_lora *lo, const model *m, float *out) {
    const model_config *c = &m->cfg;
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate;
    lora_pair *ps[4 + 3 * 64];
    size_t n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int np = cpu_tiny_pairs(lo, m, l, ps);
        for (int i = 0; i < np; i++) {
            int in = i < 4 ? (i == 3 ? Q : D) : ((i - 4) % 3 == 2 ? I : D);
            int outd = i == 0 ? Q : i < 3 ? KV : i == 3 ? D : ((i - 4) % 3 == 2 ? D : I);
            size_t na = (size_t)lo->rank * in, nb = (size_t)outd * lo->rank;
            if (out) memcpy(out + n, ps[i]->dA, na * 4), memcpy(out + n + na, ps[i]->dB, nb * 4);
            n += na + nb;
        }
    }
    return n;
}

static void grads_zero(model_lora *lo, const model *m) {
    lora_pair *ps[4 + 3 * 64];
    const model_config *c = &m->cfg;
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate;
    for (int l = 0; l < c->n_layers; l++) {
        int np = cpu_tiny_pairs(lo, m, l, ps);
        for (int i = 0; i < np; i++) {
            int in = i < 4 ? (i == 3 ? Q : D) : ((i - 4) % 3 == 2 ? I : D);
            int outd = i == 0 ? Q : i < 3 ? KV : i == 3 ? D : ((i - 4) % 3 == 2 ? D : I);
            memset(ps[i]->dA, 0, (size_t)lo->rank * in * 4), memset(ps[i]->dB, 0, (size_t)outd * lo->rank * 4);
        }
    }
}

// Forward+backward into a fresh workspace; returns the gradients (xmalloc'ed) and the loss.
static float *run_grads(const model *m, model_lora *lo, const model_batch *b, int ckpt, float gscale, double *loss) {
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, m, lo->rank, b->T, ckpt, &err) == GT_OK);
    grads_zero(lo, m);
    int64_t n;
    CHECK(model_forward_backward(ws, m, lo, b, gscale, loss, &n, &err) == GT_OK);
    float *g = xmalloc(grads_collect(lo, m, NULL) * 4);
    grads_collect(lo, m, g);
    model_ws_free(ws);
    return g;
}

static void test_checkpointing_and_threads(void) {
    model_config cfg;
    tiny_config(&cfg, 3, 64);
    model m;
    cpu_tiny_init(&m, &cfg, 101, 6.0f);
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 3, 1.5f, 102);
    int lens[3] = {9, 4, 7};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 3, cfg.vocab, 103);
    size_t ng = grads_collect(&lo, &m, NULL);
    double l0, l1, l2, l3;
    float *g0 = run_grads(&m, &lo, &tb.b, 0, 1.0f, &l0), *g1 = run_grads(&m, &lo, &tb.b, 1, 1.0f, &l1);
    double gmax = 0;
    for (size_t i = 0; i < ng; i++) gmax = fmax(gmax, fabsf(g0[i]));
    test_report(gmax > 0 && l0 == l1 && !memcmp(g0, g1, ng * 4),
                "checkpointing on == off, bitwise (loss and every LoRA gradient)");
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(nt > 1 ? 1 : 2);
    float *g2 = run_grads(&m, &lo, &tb.b, 1, 1.0f, &l2);
    omp_set_num_threads(nt);
    test_report(l2 == l1 && !memcmp(g2, g1, ng * 4), "1 and 2 OpenMP threads give bitwise identical gradients");
    free(g2);
#else
    printf("skip thread-count check: built without OpenMP\n");
#endif
    // grad_scale 0.5 halves every gradient exactly (a power of two scales every product and sum exactly)
    float *g3 = run_grads(&m, &lo, &tb.b, 0, 0.5f, &l3);
    int exact = 1;
    for (size_t i = 0; i < ng; i++) exact &= g3[i] == 0.5f * g0[i];
    test_report(exact && l3 == l0, "grad_scale 0.5 gives exactly half the gradients");
    // a second call accumulates: g + g = 2g exactly
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, &m, lo.rank, tb.b.T, 1, &err) == GT_OK);
    grads_zero(&lo, &m);
    int64_t n;
    CHECK(model_forward_backward(ws, &m, &lo, &tb.b, 1.0f, &l2, &n, &err) == GT_OK);
    CHECK(model_forward_backward(ws, &m, &lo, &tb.b, 1.0f, &l2, &n, &err) == GT_OK);
    grads_collect(&lo, &m, g3);
    exact = 1;
    for (size_t i = 0; i < ng; i++) exact &= g3[i] == 2.0f * g0[i];
    test_report(exact, "two calls accumulate dA/dB (+=)");
    model_ws_free(ws);
    free(g0), free(g1), free(g3);
    tiny_batch_free(&tb);
    cpu_tiny_lora_free(&lo, &m);
    cpu_tiny_free(&m);
}

// Packed [doc0 | doc1 | doc2] vs each document alone: the arithmetic of every row is the same, so the
// logits must agree bitwise (attention sums run over the same keys in the same order).
static void test_packed_equals_separate(void) {
    model_config cfg;
    tiny_config(&cfg, 2, 64);
    model m;
    cpu_tiny_init(&m, &cfg, 111, 6.0f);
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 2, 2.0f, 112);
    int lens[3] = {6, 9, 5};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 3, cfg.vocab, 113);
    const int T = tb.b.T, V = cfg.vocab;
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, &m, lo.rank, T, 1, &err) == GT_OK);
    float *packed = xmalloc((size_t)T * V * 4), *alone = xmalloc((size_t)T * V * 4);
    CHECK(model_logits(ws, &m, &lo, &tb.b, packed, &err) == GT_OK);
    for (int d = 0, t0 = 0; d < 3; t0 += lens[d++]) {
        int32_t zeros[16] = {0};
        model_batch b = {lens[d], tb.ids + t0, tb.pos + t0, zeros, tb.targets + t0};
        CHECK(model_logits(ws, &m, &lo, &b, alone + (size_t)t0 * V, &err) == GT_OK);
    }
    size_t worst = 0;
    double diff = 0;
    for (size_t i = 0; i < (size_t)T * V; i++)
        if (fabsf(packed[i] - alone[i]) > diff) diff = fabsf(packed[i] - alone[i]), worst = i;
    char msg[128];
    snprintf(msg, sizeof msg, " (largest difference %.3g at token %zu)", diff, worst / V);
    test_report(diff == 0, "packed documents == each document alone, bitwise%s", msg);
    // the doc ids matter: the same tokens as one document give different logits after the first boundary
    int32_t one_doc[32] = {0}, pos[32];
    model_batch_positions(one_doc, T, pos);
    model_batch b1 = {T, tb.ids, pos, one_doc, tb.targets};
    CHECK(model_logits(ws, &m, &lo, &b1, alone, &err) == GT_OK);
    test_report(memcmp(alone + (size_t)lens[0] * V, packed + (size_t)lens[0] * V, (size_t)V * 4) != 0,
                "the same tokens as one document differ after the boundary (the test can fail)");
    free(packed), free(alone);
    model_ws_free(ws);
    tiny_batch_free(&tb);
    cpu_tiny_lora_free(&lo, &m);
    cpu_tiny_free(&m);
}

// model_forward_loss's chunked CE vs log-softmax of model_logits in double. V = 700 spans three
// 256-entry chunks. Both use the same fp32 logits and double log-sum-exps; the per-token losses come
// back as fp32 (relative rounding 6e-8): 1e-6 per token, 1e-5 on the sum of ~80.
static void test_chunked_ce(void) {
    model_config cfg;
    tiny_config(&cfg, 2, 700);
    model m;
    cpu_tiny_init(&m, &cfg, 121, 6.0f);
    int lens[2] = {8, 6};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 2, cfg.vocab, 122);
    tb.targets[3] = -1; // a masked position inside a document
    const int T = tb.b.T, V = cfg.vocab;
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, &m, 0, T, 1, &err) == GT_OK);
    float *logits = xmalloc((size_t)T * V * 4), *tl = xmalloc(T * 4);
    double loss;
    int64_t n;
    CHECK(model_logits(ws, &m, NULL, &tb.b, logits, &err) == GT_OK);
    CHECK(model_forward_loss(ws, &m, NULL, &tb.b, &loss, &n, tl, &err) == GT_OK);
    double want_sum = 0, worst = 0;
    int64_t want_n = 0;
    for (int t = 0; t < T; t++) {
        double want = 0;
        if (tb.targets[t] >= 0) {
            const float *l = logits + (size_t)t * V;
            double mx = -1e300, z = 0;
            for (int v = 0; v < V; v++) mx = fmax(mx, l[v]);
            for (int v = 0; v < V; v++) z += exp(l[v] - mx);
            want = mx + log(z) - l[tb.targets[t]];
            want_n++;
        }
        want_sum += want;
        worst = fmax(worst, fabs(tl[t] - want) / fmax(1.0, fabs(want)));
    }
    char msg[160];
    snprintf(msg, sizeof msg, " (%lld targets, loss %.9g vs %.9g, worst token %.3g)", (long long)n, loss, want_sum,
             worst);
    test_report(n == want_n && worst < 1e-6 && fabs(loss - want_sum) < 1e-5,
                "chunked cross-entropy == full softmax of the logits%s", msg);
    free(logits), free(tl);
    model_ws_free(ws);
    tiny_batch_free(&tb);
    cpu_tiny_free(&m);
}

// Two sliding layers of window 3: token t sees inputs t-4..t (each layer reaches back window-1 = 2).
static void test_sliding_window(void) {
    model_config cfg;
    tiny_config(&cfg, 2, 64);
    cfg.layer_sliding[0] = cfg.layer_sliding[1] = 1;
    model m;
    cpu_tiny_init(&m, &cfg, 131, 6.0f);
    int lens[1] = {12};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 1, cfg.vocab, 132);
    const int T = 12, V = cfg.vocab, reach = 2 * (cfg.sliding_window - 1);
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, &m, 0, T, 1, &err) == GT_OK);
    float *a = xmalloc((size_t)T * V * 4), *b = xmalloc((size_t)T * V * 4);
    CHECK(model_logits(ws, &m, NULL, &tb.b, a, &err) == GT_OK);
    tb.ids[2] = (tb.ids[2] + 1) % V; // change token 2
    CHECK(model_logits(ws, &m, NULL, &tb.b, b, &err) == GT_OK);
    int outside_same = 1, inside_differs = 1;
    for (int t = 0; t < T; t++) {
        int same = !memcmp(a + (size_t)t * V, b + (size_t)t * V, (size_t)V * 4);
        if (t < 2 || t > 2 + reach) outside_same &= same;
        else inside_differs &= !same;
    }
    test_report(outside_same, "sliding window: tokens beyond the window's reach are unchanged, bitwise");
    test_report(inside_differs, "sliding window: tokens within reach change");
    // with full attention, the last token sees token 2
    m.cfg.layer_sliding[0] = m.cfg.layer_sliding[1] = 0;
    CHECK(model_logits(ws, &m, NULL, &tb.b, b, &err) == GT_OK);
    tb.ids[2] = (tb.ids[2] + V - 1) % V;
    CHECK(model_logits(ws, &m, NULL, &tb.b, a, &err) == GT_OK);
    test_report(memcmp(a + (size_t)(T - 1) * V, b + (size_t)(T - 1) * V, (size_t)V * 4) != 0,
                "full attention: the last token sees token 2 (the window test can fail)");
    free(a), free(b);
    model_ws_free(ws);
    tiny_batch_free(&tb);
    cpu_tiny_free(&m);
}

static void test_batch_helpers(void) {
    int32_t labels[8] = {5, -100, 7, 8, 9, -100, 3, 4}, doc[8] = {0, 0, 0, 0, 1, 1, 1, 1}, tg[8], pos[8];
    gt_error err;
    CHECK(model_batch_targets(labels, doc, 8, 10, tg, &err) == GT_OK);
    int32_t want[8] = {-1, 7, 8, -1, -1, 3, 4, -1};
    test_report(!memcmp(tg, want, sizeof want), "HF labels -> shifted targets, -100 and document ends give -1");
    model_batch_positions(doc, 8, pos);
    int32_t wpos[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    test_report(!memcmp(pos, wpos, sizeof wpos), "positions restart in each document");
    labels[6] = 10;
    test_report(model_batch_targets(labels, doc, 8, 10, tg, &err) == GT_EINVAL &&
                    strstr(err.msg, "labels[6]"),
                "a label outside the vocabulary is an error naming its index");

    model_config cfg;
    tiny_config(&cfg, 1, 16);
    model m;
    cpu_tiny_init(&m, &cfg, 141, 1.0f);
    model_ws *ws;
    CHECK(model_ws_init(&ws, &m, 0, 4, 1, &err) == GT_OK);
    int32_t ids[5] = {1, 2, 16, 3, 4}, p5[5] = {0, 1, 2, 3, 4}, d5[5] = {0, 0, 0, 0, 0}, t5[5] = {2, 3, 3, 4, -1};
    model_batch b = {4, ids, p5, d5, t5};
    double loss;
    int64_t n;
    test_report(model_forward_loss(ws, &m, NULL, &b, &loss, &n, NULL, &err) == GT_EINVAL &&
                    strstr(err.msg, "ids[2]"),
                "a token id outside the vocabulary is an error naming its index");
    ids[2] = 3, t5[1] = 16;
    test_report(model_forward_loss(ws, &m, NULL, &b, &loss, &n, NULL, &err) == GT_EINVAL &&
                    strstr(err.msg, "targets[1]"),
                "a target outside the vocabulary is an error");
    t5[1] = 5, d5[2] = 1, d5[3] = 0;
    test_report(model_forward_loss(ws, &m, NULL, &b, &loss, &n, NULL, &err) == GT_EINVAL &&
                    strstr(err.msg, "doc[3]"),
                "documents out of order are an error");
    d5[2] = d5[3] = 0;
    b.T = 5;
    test_report(model_forward_loss(ws, &m, NULL, &b, &loss, &n, NULL, &err) == GT_EINVAL &&
                    strstr(err.msg, "max_T"),
                "a batch longer than the workspace is an error");
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 2, 1.0f, 142);
    b.T = 4;
    test_report(model_forward_loss(ws, &m, &lo, &b, &loss, &n, NULL, &err) == GT_EINVAL &&
                    strstr(err.msg, "rank"),
                "an adapter of another rank than the workspace is an error");
    test_report(model_forward_loss(ws, &m, NULL, &b, &loss, &n, NULL, &err) == GT_OK && n == 4 && loss > 0,
                "the corrected batch runs");
    cpu_tiny_lora_free(&lo, &m);
    model_ws_free(ws);
    cpu_tiny_free(&m);
}

int main(void) {
    test_checkpointing_and_threads();
    test_packed_equals_separate();
    test_chunked_ce();
    test_sliding_window();
    test_batch_helpers();
    return test_finish("test_forward");
}
