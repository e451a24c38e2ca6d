// LoRA merge (lora/merge.c) and saving a model in HF layout (model/save.c), on the tiny fixture models of
// tests/fixtures/model/ (made by tests/ref/make_model_fixtures.py) with their PEFT-made adapters:
//   1. merged vs unmerged logits (V = 64 per position, 20 positions). Tolerances, relative to the largest
//      |logit| of the reference:
//        - experts kept fp32: 1e-5. The only change is the order of fp32 operations (x (W + s B A) instead
//          of x W + s (x A) B): a few ulps through 4 layers (observed ~1e-7).
//        - experts kept bf16 or requantized to MXFP4: no logit tolerance. Rounding each merged weight (bf16:
//          2^-9 relative) moves these random tiny models' logits by 0.7% (adapter_down) but by 18%
//          (adapter_bf16: its large random B make sums that are not bf16-representable; a discrete top-2
//          router can turn a small change into a large one), so a fixed tolerance would be arbitrary;
//          we check the plumbing exactly instead: the stored experts equal f32_to_bf16 / qmatrix_from_f32 of
//          the fp32 merge, element for element; the logit differences are printed for information.
//   2. An adapter made for another base's shapes is refused with a message naming both shapes.
//   3. model_save round trips: an MXFP4 model saved as MXFP4 and loaded back gives bitwise the same logits
//      (bf16 tensors written back unchanged, MXFP4 experts copied); the fp32-merged model saved as bf16 and
//      loaded back holds exactly the bf16 rounding of every merged weight (experts through HF's transposed
//      layout, so a transposition error shows).
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "lora/lora.h"
#include "model/model.h"
#include "test_util.h"

#define T 20

static const int32_t IDS[T] = {3, 17, 42, 8, 60, 1, 33, 12, 5, 27, 44, 9, 51, 2, 38, 19, 61, 7, 24, 30};

static float *logits_of(const model *m, const model_lora *lora) {
    int32_t pos[T], doc[T] = {0};
    model_batch_positions(doc, T, pos);
    model_batch b = {T, IDS, pos, doc, NULL};
    model_ws *ws;
    gt_error err = {0};
    CHECK(model_ws_init(&ws, m, lora ? lora->rank : 0, T, 1, &err) == GT_OK);
    float *out = xmalloc((size_t)T * m->cfg.vocab * sizeof(float));
    CHECK(model_logits(ws, m, lora, &b, out, &err) == GT_OK);
    model_ws_free(ws);
    return out;
}

// Largest |got - want| over the largest |want|; prints the worst element.
static double compare(const float *got, const float *want, size_t n, const char *name) {
    double amax = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) amax = fmax(amax, fabs((double)want[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > worst || isnan(d)) worst = d, at = i;
    }
    double rel = worst / amax;
    printf("  %s: max |diff| / max |logit| = %.3g (worst at %zu: %g vs %g)\n", name, rel, at, got[at], want[at]);
    return rel;
}

static void load(model *m, const char *dir) {
    gt_error err = {0};
    if (model_load(m, dir, MQ_AUTO, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
}

static void load_adapter(lora_adapter *la, const model *m, const char *dir) {
    gt_error err = {0};
    if (lora_peft_load(la, &m->cfg, dir, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
}

static int same_bf16(const float *got, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != bf16_to_f32(f32_to_bf16(x[i]))) return 0;
    return 1;
}

// Each expert weight of b (fp32) rounded to bf16 equals a's, dequantized.
static int experts_bf16_of(const model *a, const model *b) {
    int ok = 1;
    for (int l = 0; l < a->cfg.n_layers; l++)
        for (int e = 0; e < a->cfg.n_experts; e++)
            for (int which = 0; which < 2; which++) {
                const qmatrix *qa = which ? &a->layers[l].down[e] : &a->layers[l].gate_up[e];
                const qmatrix *qb = which ? &b->layers[l].down[e] : &b->layers[l].gate_up[e];
                float *x = xmalloc((size_t)qa->rows * qa->cols * sizeof(float));
                qmatrix_dequant_rows(qa, 0, qa->rows, x);
                ok &= qb->fmt == WF_F32 && same_bf16(x, qb->f32, (size_t)qa->rows * qa->cols);
                free(x);
            }
    return ok;
}

// a (loaded from a bf16 save of b) holds the bf16 rounding of every weight of b.
static int weights_bf16_of(const model *a, const model *b) {
    const model_config *c = &b->cfg;
    const size_t D = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    int ok = same_bf16(a->embed, b->embed, (size_t)c->vocab * D) && same_bf16(a->lm_head, b->lm_head, (size_t)c->vocab * D);
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *x = &a->layers[l], *y = &b->layers[l];
        ok &= same_bf16(x->wq, y->wq, Q * D) && same_bf16(x->wk, y->wk, KV * D) && same_bf16(x->wv, y->wv, KV * D);
        ok &= same_bf16(x->wo, y->wo, D * Q) && same_bf16(x->bq, y->bq, Q) && same_bf16(x->sinks, y->sinks, c->n_heads);
        ok &= same_bf16(x->gate_up_b, y->gate_up_b, (size_t)c->n_experts * 2 * c->intermediate);
    }
    return ok && experts_bf16_of(a, b);
}

static void test_bf16_base(const char *tmp) {
    const char *base = "tests/fixtures/model/bf16";
    const char *adapters[2] = {"tests/fixtures/model/adapter_bf16", "tests/fixtures/model/adapter_down"};
    for (int a = 0; a < 2; a++) {
        model m;
        lora_adapter la;
        load(&m, base);
        load_adapter(&la, &m, adapters[a]);
        float *ref = logits_of(&m, &la.ml);
        float *base_only = logits_of(&m, NULL);
        size_t n = (size_t)T * m.cfg.vocab;
        // The adapter must matter, or the comparison below proves nothing.
        EXPECT(compare(base_only, ref, n, "base alone vs base + adapter") > 1e-2, "%s changes nothing", adapters[a]);
        gt_error err = {0};
        EXPECT(lora_merge(&m, &la, WF_F32, &err) == GT_OK, "%s", err.msg);
        float *merged = logits_of(&m, NULL);
        EXPECT(compare(merged, ref, n, "merged fp32 vs unmerged") <= 1e-5, "%s: fp32 merge", adapters[a]);
        if (a == 0) { // save as bf16, load back: every weight the bf16 rounding of the merged one
            char *dir = fs_join(tmp, "merged_bf16");
            EXPECT(model_save(&m, MQ_BF16, dir, &err) == GT_OK, "%s", err.msg);
            model back;
            load(&back, dir);
            EXPECT(weights_bf16_of(&back, &m), "saved bf16 model: weights are not the bf16 rounding of the merge");
            model_free(&back);
            free(dir);
        }
        model mb;
        load(&mb, base);
        EXPECT(lora_merge(&mb, &la, WF_BF16, &err) == GT_OK, "%s", err.msg);
        EXPECT(experts_bf16_of(&mb, &m), "%s: bf16-kept experts are not the bf16 rounding of the fp32 merge",
               adapters[a]);
        float *mbl = logits_of(&mb, NULL);
        compare(mbl, ref, n, "merged bf16 vs unmerged (rounding, informational)");
        free(mbl);
        model_free(&mb);
        free(merged);
        free(ref);
        free(base_only);
        lora_adapter_free(&la);
        model_free(&m);
    }
}

static void test_mxfp4_base(const char *tmp) {
    const char *base = "tests/fixtures/model/mxfp4";
    model m, m4;
    lora_adapter la;
    load(&m, base);
    load(&m4, base);
    load_adapter(&la, &m, "tests/fixtures/model/adapter_q");
    float *ref = logits_of(&m, &la.ml);
    size_t n = (size_t)T * m.cfg.vocab;
    gt_error err = {0};

    // Save unmerged as MXFP4, load back: bitwise the same logits.
    char *dir = fs_join(tmp, "mxfp4_copy");
    EXPECT(model_save(&m, MQ_MXFP4, dir, &err) == GT_OK, "%s", err.msg);
    model back;
    load(&back, dir);
    float *l0 = logits_of(&m, NULL), *l1 = logits_of(&back, NULL);
    EXPECT(!memcmp(l0, l1, n * sizeof(float)), "MXFP4 save/load changed the logits");
    compare(l1, l0, n, "saved mxfp4 vs loaded");
    free(l0), free(l1);
    model_free(&back);
    free(dir);

    EXPECT(lora_merge(&m, &la, WF_F32, &err) == GT_OK, "%s", err.msg);
    float *merged = logits_of(&m, NULL);
    EXPECT(compare(merged, ref, n, "mxfp4 base, merged fp32 vs unmerged") <= 1e-5, "fp32 merge on MXFP4");
    // Requantized: each merged expert equals the MXFP4 quantization of the fp32 merge.
    EXPECT(lora_merge(&m4, &la, WF_MXFP4, &err) == GT_OK, "%s", err.msg);
    int same = 1;
    for (int l = 0; l < m.cfg.n_layers; l++)
        for (int e = 0; e < m.cfg.n_experts; e++)
            for (int which = 0; which < 2; which++) {
                const qmatrix *f = which ? &m.layers[l].down[e] : &m.layers[l].gate_up[e];
                const qmatrix *q = which ? &m4.layers[l].down[e] : &m4.layers[l].gate_up[e];
                qmatrix want;
                void *buf = qmatrix_from_f32(&want, WF_MXFP4, f->f32, f->rows, f->cols);
                size_t nb = (size_t)f->rows * f->cols / 2, ns = (size_t)f->rows * f->cols / MXFP4_BLOCK;
                same &= q->fmt == WF_MXFP4 && !memcmp(q->blocks, want.blocks, nb) && !memcmp(q->scales, want.scales, ns);
                free(buf);
            }
    EXPECT(same, "requantized experts differ from the MXFP4 quantization of the fp32 merge");
    float *lq = logits_of(&m4, NULL);
    compare(lq, ref, n, "mxfp4 base, requantized mxfp4 vs unmerged (4-bit rounding, informational)");
    free(lq);
    free(merged);
    free(ref);
    model_free(&m4);

    // An adapter for the other family's shapes.
    model mb;
    lora_adapter lb;
    load(&mb, "tests/fixtures/model/bf16");
    load_adapter(&lb, &mb, "tests/fixtures/model/adapter_bf16");
    EXPECT(lora_merge(&m, &lb, WF_F32, &err) == GT_EINVAL && strstr(err.msg, "hidden 24") && strstr(err.msg, "base"),
           "mismatched adapter: %s", err.msg);
    lora_adapter_free(&lb);
    model_free(&mb);
    lora_adapter_free(&la);
    model_free(&m);
}

int main(void) {
    char *tmp = test_tmpdir("test_merge");
    test_bf16_base(tmp);
    test_mxfp4_base(tmp);
    free(tmp);
    return test_finish("test_merge");
}
