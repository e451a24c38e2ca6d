// tests/test_gpu_attention.c: model/cuda/attention.cu against model/cpu/attention.c (forward and backward)
// on fresh random inputs at tile edges: one token, token counts that are not multiples of the 32-row
// blocks, windows shorter than documents and crossing key tiles, HD 8 / 64 / 128, GQA groups 2 to 8, and
// gpt-oss-20b's shape (T 2048, 64 query / 8 kv heads, HD 64; about a second of CPU reference on 16 cores);
// every output poisoned with NaN first. Skips without a GPU.
//
// The GPU reads q, k, v as bf16, so the CPU gets the same values (round_bf16) and both evaluate the same
// fp32 math on identical inputs. The forward's out is checked as the bf16 rounding of the CPU's fp32 out
// (check_bf16_rounded); stat_max, stat_den and the gradients are fp32 and checked norm-wise. The backward
// gets the CPU's out rounded to bf16 and the CPU's stats, the CPU backward the same values, so it is checked
// on its own (a forward bug cannot hide in it) with only fp32 evaluation order between the two sides.
#include "core/core.h"

#if !GPTOSS_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 77;
}
#else

#include "gpu_test.h"
#include "model/cpu/ops.h"
#include "model/cuda/cuda_ops.h"

static uint64_t g_seed = 20261122;

// Each got[i] must be ref[i] rounded to bf16: within half a bf16 ulp of ref[i] (2^-8 relative to ref's
// binade, so at most 2^-8 |ref[i]|) plus slack, the absolute difference allowed between the two fp32
// evaluations of ref. A NaN (unwritten) fails. Prints the worst excess over half an ulp and, for scale,
// the norm-wise relative error (about 2^-9 from the rounding alone).
static void check_bf16_rounded(const char *what, const float *got, const float *ref, size_t n, double slack) {
    double num = 0.0, den = 0.0, worst = -INFINITY;
    size_t wi = 0, nan_at = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) {
            if (nan_at == (size_t)-1) nan_at = i;
            continue;
        }
        int e;
        frexp(ref[i], &e); // |ref| in [2^(e-1), 2^e): bf16 ulp 2^(e-8)
        double d = fabs((double)got[i] - ref[i]), excess = d - (ref[i] != 0.0f ? ldexp(1.0, e - 9) : 0.0);
        num += d * d, den += (double)ref[i] * ref[i];
        if (excess > worst) worst = excess, wi = i;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int bad = nan_at != (size_t)-1 || !(worst <= slack);
    printf("%s %-40s rel err %.3g; worst excess over half a bf16 ulp %.3g (slack %.1g)", bad ? "FAIL" : "ok  ",
           what, rel, worst, slack);
    if (nan_at != (size_t)-1) printf("; NaN (unwritten?) at [%zu]", nan_at);
    if (bad && n) printf("; worst [%zu] got %.9g ref %.9g", wi, got[wi], ref[wi]);
    printf("\n");
    g_failures += bad;
}

static void test_attention_case(int T, int H, int KVH, int HD, int window, int n_docs) {
    cpu_attn_dims d = {T, H, KVH, HD, window};
    size_t nq = (size_t)T * H * HD, nkv = (size_t)T * KVH * HD, nth = (size_t)T * H;
    int32_t *doc = xmalloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) doc[t] = (int32_t)((long)t * n_docs / T); // n_docs contiguous documents
    float *q = rand_vec(&g_seed, nq, 1.0f), *k = rand_vec(&g_seed, nkv, 1.0f), *v = rand_vec(&g_seed, nkv, 1.0f);
    float *sinks = rand_vec(&g_seed, H, 2.0f), *dout = rand_vec(&g_seed, nq, 1.0f);
    round_bf16(q, nq), round_bf16(k, nkv), round_bf16(v, nkv);
    float *out = xmalloc(nq * 4), *out_bf = xmalloc(nq * 4), *smax = xmalloc(nth * 4), *sden = xmalloc(nth * 4);
    float *dq = xmalloc(nq * 4), *dk = xmalloc(nkv * 4), *dv = xmalloc(nkv * 4);
    cpu_attention_forward(out, smax, sden, q, k, v, sinks, doc, d);
    memcpy(out_bf, out, nq * 4);
    round_bf16(out_bf, nq);
    cpu_attention_backward(dq, dk, dv, dout, out_bf, q, k, v, sinks, doc, smax, sden, d);
    int32_t *ddoc = gpu_dup(doc, T * sizeof(int32_t)), *lo = cuda_malloc(T * 4), *hi = cuda_malloc(T * 4);
    uint16_t *gq = gpu_dup_bf16(q, nq), *gk = gpu_dup_bf16(k, nkv), *gv = gpu_dup_bf16(v, nkv);
    uint16_t *go = gpu_poison_bf16(nq);
    float *gs = gpu_dup_f(sinks, H), *gdo = gpu_dup_f(dout, nq), *gm = gpu_poison(nth), *gd = gpu_poison(nth);
    float *gdq = gpu_poison(nq), *gdk = gpu_poison(nkv), *gdv = gpu_poison(nkv), *gDt = gpu_poison(nth);
    cuda_doc_bounds(lo, hi, ddoc, T);
    cuda_attention_forward(go, gm, gd, gq, gk, gv, gs, lo, d);
    // The backward reads the CPU's out (rounded to bf16) and stats so that it is checked on its own.
    uint16_t *go_ref = gpu_dup_bf16(out_bf, nq);
    float *gm_ref = gpu_dup_f(smax, nth), *gd_ref = gpu_dup_f(sden, nth);
    cuda_attention_backward(gdq, gdk, gdv, gDt, gdo, go_ref, gq, gk, gv, lo, hi, gm_ref, gd_ref, d);
    float *r_o = gpu_get_bf16(go, nq), *r_m = gpu_get(gm, nth), *r_d = gpu_get(gd, nth);
    float *r_dq = gpu_get(gdq, nq), *r_dk = gpu_get(gdk, nkv), *r_dv = gpu_get(gdv, nkv);
    char what[128];
    snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d out", T, H, KVH, HD, window, n_docs);
    // slack 1e-5: |v| <= 1 makes out a weighted mean of v scaled by <= 1, so |out| <= 1 and 1e-5 is ~100
    // fp32 ulps of the largest element, far above fp32 reordering (worst excess measured on an H200: 2.2e-8)
    // yet below half a bf16 ulp of any element over 2^-7, so a store that truncates instead of rounding to
    // nearest fails.
    check_bf16_rounded(what, r_o, out, nq, 1e-5);
    // 1e-5 norm-wise: both sides run the same fp32 formulas on bit-identical inputs and differ only in
    // summation order (per-thread partial sums and tile-wise online softmax vs the CPU's loops) and expf: a few
    // fp32 ulps per term (measured on an H200: <= 3.6e-7 up to T 300; dk/dv 1.9e-6 at T 2048, sums of up
    // to 5.5k terms); 1e-5 leaves room for the cancellation in ds = p (dp - D) while a dropped or misplaced
    // key (a 1/window or larger change in a row) still fails.
    const char *parts[5] = {"stat_max", "stat_den", "dq", "dk", "dv"};
    const float *gots[5] = {r_m, r_d, r_dq, r_dk, r_dv}, *refs[5] = {smax, sden, dq, dk, dv};
    size_t ns[5] = {nth, nth, nq, nkv, nkv};
    for (int i = 0; i < 5; i++) {
        snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d %s", T, H, KVH, HD, window, n_docs,
                 parts[i]);
        check_close(what, gots[i], refs[i], ns[i], 1e-5);
    }
    void *ptrs[] = {ddoc, lo, hi, gq, gk, gv, gs, gdo, go, gm, gd, gdq, gdk, gdv, gDt, go_ref, gm_ref, gd_ref};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) cuda_free(ptrs[i]);
    free(doc), free(q), free(k), free(v), free(sinks), free(dout), free(out), free(out_bf), free(smax), free(sden);
    free(dq), free(dk), free(dv), free(r_o);
    for (int i = 0; i < 5; i++) free((void *)gots[i]);
}

static void test_attention(void) {
    test_attention_case(1, 4, 2, 64, 0, 1);    // one token: only the sink competes
    test_attention_case(77, 4, 2, 64, 5, 3);   // window shorter than a document, 3 documents
    test_attention_case(45, 8, 1, 8, 0, 2);    // HD 8 (< a warp), 8 query heads on 1 kv head
    test_attention_case(70, 6, 3, 128, 0, 1);  // HD 128 (4 dims per lane), 70 keys: partial key groups
    test_attention_case(300, 8, 2, 64, 37, 3); // GQA 4: 32-row blocks span 8 queries, windows cross tiles
    // gpt-oss-20b's heads, full causal, 3 documents (boundaries off every tile edge): the first key blocks
    // walk hundreds of item tiles split among subblocks, the others few.
    test_attention_case(2048, 64, 8, 64, 0, 3);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    test_attention();
    return gpu_test_finish();
}
#endif
