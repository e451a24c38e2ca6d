// The CPU model + LoRA against HF transformers + PEFT (tests/fixtures/model, made by
// tests/ref/make_model_fixtures.py): three tiny bases (bf16 experts; MXFP4 experts in openai's layout;
// NF4 experts and attention in Unsloth's bitsandbytes layout, quantized by bitsandbytes itself), each
// with a PEFT-made adapter on all seven projection types (nonzero B), loaded through model_load and
// lora_peft_load exactly as `gptoss eval` loads them.
//   - logits and per-token losses and the mean loss: within 1e-5 relative; the base alone too;
//   - d(mean loss)/d every LoRA A and B (bf16 and MXFP4 bases): within 1e-4 relative per tensor;
//   - gradient checkpointing on and off: bitwise identical gradients and losses;
//   - packing: two documents in one row give each document's own losses and the sum of the gradients
//     (HF's eager attention cannot separate packed documents, so this is checked on our side only).
// Tolerances: both sides compute in fp32 on the same weights; they differ only in summation order
// (ours: 8-lane dot products, double sums for norms/softmax/loss; torch: its blocked BLAS), a few ulp per
// dot product, growing through 4 layers. Measured (2026-11-21): logits <= 2.1e-6, losses <= 1e-7,
// gradients <= 1.2e-5 relative (gradients subtract nearly equal terms). 1e-5 and 1e-4 leave a margin of
// ~5-8x and still catch any real mistake: a wrong layout, scale, mask or backward moved values by 1e-2
// or more (a broken MoE input gradient gave 0.3-1.2 on every tensor below the last MLP).
#include "lora/lora.h"

#include <math.h>
#include <stdlib.h>

#include "test_util.h"

#define FIX "tests/fixtures/model/"

// max |a - b| / max |b| over n values; prints the worst element. Returns the relative error.
static double compare(const char *what, const float *a, const float *b, size_t n, double tol) {
    double maxb = 0, worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) maxb = fmax(maxb, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst)) worst = d, wi = i; // NaN counts as worst
    }
    double rel = maxb > 0 ? worst / maxb : worst;
    EXPECT(rel <= tol, "%s: relative error %.3g > %.1g; worst element %zu: ours %.9g, reference %.9g (max |ref| %.6g)",
           what, rel, tol, wi, a[wi], b[wi], maxb);
    return rel;
}

static const void *ref_tensor(const safetensors *st, const char *name, dtype dt, int64_t numel) {
    const st_tensor *t = safetensors_find(st, name);
    if (!t || t->dtype != dt || t->numel != numel) gt_die(__FILE__, __LINE__, "fixture tensor %s missing or wrong", name);
    return t->data;
}

// Per-segment gradient comparison: ours (la->grads) against the reference read into ref->grads.
static double compare_grads(const char *what, const lora_adapter *la, const lora_adapter *ref, double tol) {
    double worst = 0;
    for (int i = 0; i < la->n_segs; i++) {
        const lora_segment *s = &la->segs[i];
        char name[256];
        snprintf(name, sizeof name, "%s d %s", what, s->name);
        worst = fmax(worst, compare(name, la->grads + s->offset, ref->grads + s->offset, s->n, tol));
    }
    return worst;
}

static void run_variant(const char *variant, const char *adapter, int with_grads) {
    char *mdir = xasprintf(FIX "%s", variant), *adir = xasprintf(FIX "%s", adapter);
    char *rpath = xasprintf(FIX "ref_%s.safetensors", variant), *gpath = xasprintf(FIX "grad_%s.safetensors", variant);
    gt_error err;
    model m;
    lora_adapter la, ref;
    safetensors st;
    if (model_load(&m, mdir, MQ_AUTO, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    if (lora_peft_load(&la, &m.cfg, adir, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    if (safetensors_open(&st, rpath, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    const int V = m.cfg.vocab;
    const st_tensor *tid = safetensors_find(&st, "ids");
    if (!tid) gt_die(__FILE__, __LINE__, "%s: no ids", rpath);
    const int T = (int)tid->numel;
    const int32_t *ids = ref_tensor(&st, "ids", DT_I32, T), *targets = ref_tensor(&st, "targets", DT_I32, T);
    const float *ref_logits = ref_tensor(&st, "logits", DT_F32, (int64_t)T * V);
    const float *ref_tl = ref_tensor(&st, "token_loss", DT_F32, T);
    const float ref_loss = *(const float *)ref_tensor(&st, "loss", DT_F32, 1);
    const float ref_loss_base = *(const float *)ref_tensor(&st, "loss_base", DT_F32, 1);
    const int32_t ref_n = *(const int32_t *)ref_tensor(&st, "n_targets", DT_I32, 1);

    int32_t *pos = xcalloc((size_t)T, sizeof(int32_t)), *doc = xcalloc((size_t)T, sizeof(int32_t));
    for (int t = 0; t < T; t++) pos[t] = t;
    model_batch b = {.T = T, .ids = ids, .pos = pos, .doc = doc, .targets = targets};
    model_ws *ws, *ws_ck;
    if (model_ws_init(&ws, &m, la.spec.rank, T, 0, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    if (model_ws_init(&ws_ck, &m, la.spec.rank, T, 1, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);

    char what[128];
    float *logits = xmalloc(sizeof(float) * (size_t)T * V), *tl = xmalloc(sizeof(float) * (size_t)T);
    EXPECT(model_logits(ws, &m, &la.ml, &b, logits, &err) == GT_OK, "%s", err.msg);
    snprintf(what, sizeof what, "%s logits", variant);
    double e_logits = compare(what, logits, ref_logits, (size_t)T * V, 1e-5);
    double sum;
    int64_t n;
    EXPECT(model_forward_loss(ws, &m, &la.ml, &b, &sum, &n, tl, &err) == GT_OK, "%s", err.msg);
    EXPECT(n == ref_n, "%s: %lld targets, reference %d", variant, (long long)n, ref_n);
    float loss = (float)(sum / (double)n);
    snprintf(what, sizeof what, "%s mean loss", variant);
    compare(what, &loss, &ref_loss, 1, 1e-5);
    snprintf(what, sizeof what, "%s token losses", variant);
    compare(what, tl, ref_tl, (size_t)T, 1e-5);
    EXPECT(model_forward_loss(ws, &m, NULL, &b, &sum, &n, NULL, &err) == GT_OK, "%s", err.msg);
    float loss_base = (float)(sum / (double)n);
    snprintf(what, sizeof what, "%s mean loss, base alone", variant);
    compare(what, &loss_base, &ref_loss_base, 1, 1e-5);
    printf("%s: loss %.7f (HF %.7f), base %.7f (HF %.7f), logits rel err %.2g\n", variant, loss, ref_loss, loss_base,
           ref_loss_base, e_logits);

    if (with_grads) {
        // reference gradients through the same PEFT mapping, into a second adapter's dA/dB
        if (lora_peft_load(&ref, &m.cfg, adir, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
        if (lora_peft_read_tensors(&ref, gpath, 1, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
        lora_adapter_grads_zero(&la);
        EXPECT(model_forward_backward(ws, &m, &la.ml, &b, 1.0f / (float)ref_n, &sum, &n, &err) == GT_OK, "%s", err.msg);
        double eg = compare_grads(variant, &la, &ref, 1e-4);
        printf("%s: LoRA gradients, worst per-tensor rel err %.2g over %d tensors\n", variant, eg, la.n_segs);
        // checkpointing: the same gradients bit for bit
        float *g0 = xmalloc(la.n_params * sizeof(float));
        memcpy(g0, la.grads, la.n_params * sizeof(float));
        double sum_ck;
        lora_adapter_grads_zero(&la);
        EXPECT(model_forward_backward(ws_ck, &m, &la.ml, &b, 1.0f / (float)ref_n, &sum_ck, &n, &err) == GT_OK, "%s",
               err.msg);
        EXPECT(sum_ck == sum && !memcmp(g0, la.grads, la.n_params * sizeof(float)),
               "%s: checkpointing changes the loss (%.9g vs %.9g) or the gradients", variant, sum_ck, sum);
        free(g0);
        lora_adapter_free(&ref);
    }
    free(logits);
    free(tl);
    free(pos);
    free(doc);
    model_ws_free(ws);
    model_ws_free(ws_ck);
    safetensors_close(&st);
    lora_adapter_free(&la);
    model_free(&m);
    free(mdir);
    free(adir);
    free(rpath);
    free(gpath);
}

// Packing: documents d0 = ids[0, split) and d1 = ids[split, T) in one row vs each alone.
static void test_packing(void) {
    gt_error err;
    model m;
    lora_adapter la;
    safetensors st;
    if (model_load(&m, FIX "bf16", MQ_AUTO, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    if (lora_peft_load(&la, &m.cfg, FIX "adapter_bf16", &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    if (safetensors_open(&st, FIX "ref_bf16.safetensors", &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    const st_tensor *tid = safetensors_find(&st, "ids");
    const int T = (int)tid->numel, split = 19; // d0 longer than the window of 8, d1 = 13 tokens
    const int32_t *ids = (const int32_t *)tid->data;
    int32_t *pos = xmalloc(sizeof(int32_t) * T), *doc = xmalloc(sizeof(int32_t) * T), *tg = xmalloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) {
        doc[t] = t >= split;
        pos[t] = t < split ? t : t - split;
        tg[t] = (t + 1 < T && t + 1 != split) ? ids[t + 1] : -1; // no target across the document boundary
    }
    model_ws *ws;
    if (model_ws_init(&ws, &m, la.spec.rank, T, 1, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    float *tl_packed = xmalloc(sizeof(float) * T), *tl_alone = xmalloc(sizeof(float) * T);
    float *g_sum = xcalloc(la.n_params, sizeof(float));
    double sum;
    int64_t n;
    model_batch pb = {.T = T, .ids = ids, .pos = pos, .doc = doc, .targets = tg};
    lora_adapter_grads_zero(&la);
    EXPECT(model_forward_backward(ws, &m, &la.ml, &pb, 1.0f, &sum, &n, &err) == GT_OK, "%s", err.msg);
    EXPECT(model_forward_loss(ws, &m, &la.ml, &pb, &sum, &n, tl_packed, &err) == GT_OK, "%s", err.msg);
    float *g_packed = xmalloc(la.n_params * sizeof(float));
    memcpy(g_packed, la.grads, la.n_params * sizeof(float));
    for (int d = 0; d < 2; d++) {
        int t0 = d ? split : 0, len = d ? T - split : split;
        int32_t *zero = xcalloc((size_t)len, sizeof(int32_t));
        model_batch ab = {.T = len, .ids = ids + t0, .pos = pos + t0, .doc = zero, .targets = tg + t0};
        lora_adapter_grads_zero(&la);
        EXPECT(model_forward_backward(ws, &m, &la.ml, &ab, 1.0f, &sum, &n, &err) == GT_OK, "%s", err.msg);
        for (size_t i = 0; i < la.n_params; i++) g_sum[i] += la.grads[i];
        EXPECT(model_forward_loss(ws, &m, &la.ml, &ab, &sum, &n, tl_alone + t0, &err) == GT_OK, "%s", err.msg);
        free(zero);
    }
    // the same per-row arithmetic on the same rows: only the gradient sums over a different row set
    compare("packed token losses", tl_packed, tl_alone, (size_t)T, 1e-6);
    compare("packed gradients", g_packed, g_sum, la.n_params, 1e-5);
    free(g_packed);
    free(g_sum);
    free(tl_packed);
    free(tl_alone);
    free(pos);
    free(doc);
    free(tg);
    model_ws_free(ws);
    safetensors_close(&st);
    lora_adapter_free(&la);
    model_free(&m);
}

int main(void) {
    run_variant("bf16", "adapter_bf16", 1);
    run_variant("mxfp4", "adapter_q", 1);
    run_variant("nf4", "adapter_q", 0);
    test_packing();
    return test_finish("test_model_ref");
}
