// tests/test_gpu_attention.c: model/cuda/attention.cu against model/cpu/attention.c (forward and backward)
// on fresh random inputs at tile edges: one token, token counts that are not multiples of the 64-row
// (forward) and 32-row (backward) blocks, windows shorter than documents and crossing key tiles, HD 6 (the
// forward's element-copy path), 8, 24 (padded to 32 for the tensor cores), 64, 128, GQA groups 1 to 8, and
// gpt-oss-20b's shapes (T 2048, 64 query / 8 kv heads, HD 64, full causal and window 128; about a second of
// CPU reference on 16 cores); every output poisoned with NaN first; the forward run twice, bit-identical.
// Skips without a GPU.
//
// The GPU reads q, k, v as bf16, so the CPU gets the same values (round_bf16) and both evaluate the same
// math on identical inputs. stat_max, stat_den and the gradients are fp32 and checked norm-wise. The
// backward gets the CPU's out rounded to bf16 and the CPU's stats, the CPU backward the same values, so it
// is checked on its own (a forward bug cannot hide in it) with only fp32 evaluation order between the two.
//
// The forward's out: the GPU adds P V on bf16 tensor cores with each weight p_j rounded to bf16 (relative
// error <= 2^-8), then rounds out to bf16. So each element is checked against an error budget (check_bf16
// budget): |got - ref| <= half a bf16 ulp of |ref| + e (the store's rounding, of a value within e of ref)
// + e + slack, with e = (2^-8 + 2^-12) A, A = sum_j p_j |v_j| (the CPU forward on |v|): 2^-8 A bounds the
// weights' rounding, 2^-12 A the fp32 summation of up to 2048 terms on both sides (n 2^-24 each); slack
// 1e-5 covers the scores' and exp's fp32 differences (below). A short row (window 5, documents, early
// queries) still fails on a dropped, extra or misplaced key (a weight of 1/window or more, far above
// 2^-8 A); on long rows a key lost from S shows in stat_den (1e-5), a lost tile of V in out.
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

// Each got[i] must be within the budget above of ref[i]: half a bf16 ulp of |ref[i]| + e[i] (2^-8 relative
// to that binade), plus e[i] and slack. A NaN (unwritten) fails. Prints the worst excess over the budget
// without slack and, for scale, the norm-wise relative error.
static void check_bf16_budget(const char *what, const float *got, const float *ref, const float *e, size_t n,
                              double slack) {
    double num = 0.0, den = 0.0, worst = -INFINITY;
    size_t wi = 0, nan_at = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) {
            if (nan_at == (size_t)-1) nan_at = i;
            continue;
        }
        double mag = fabs((double)ref[i]) + e[i];
        int ex;
        frexp(mag, &ex); // mag in [2^(ex-1), 2^ex): bf16 ulp 2^(ex-8)
        double d = fabs((double)got[i] - ref[i]), excess = d - (mag != 0.0 ? ldexp(1.0, ex - 9) : 0.0) - e[i];
        num += d * d, den += (double)ref[i] * ref[i];
        if (excess > worst) worst = excess, wi = i;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int bad = nan_at != (size_t)-1 || !(worst <= slack);
    printf("%s %-40s rel err %.3g; worst excess over the budget %.3g (slack %.1g)", bad ? "FAIL" : "ok  ", what, rel,
           worst, slack);
    if (nan_at != (size_t)-1) printf("; NaN (unwritten?) at [%zu]", nan_at);
    if (bad && n) printf("; worst [%zu] got %.9g ref %.9g budget %.3g", wi, got[wi], ref[wi], e[wi]);
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
    // The budget's A = sum_j p_j |v_j|: the same forward on |v| (its stats are the same as smax, sden).
    float *vabs = xmalloc(nkv * 4), *budget = xmalloc(nq * 4), *junk = xmalloc(2 * nth * 4);
    for (size_t i = 0; i < nkv; i++) vabs[i] = fabsf(v[i]);
    cpu_attention_forward(budget, junk, junk + nth, q, k, vabs, sinks, doc, d);
    for (size_t i = 0; i < nq; i++) budget[i] *= 0x1p-8f + 0x1p-12f;
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
    // Run to run: a second forward into fresh poisoned buffers must give the same bits.
    uint16_t *go2 = gpu_poison_bf16(nq);
    float *gm2 = gpu_poison(nth), *gd2 = gpu_poison(nth);
    cuda_attention_forward(go2, gm2, gd2, gq, gk, gv, gs, lo, d);
    // The backward reads the CPU's out (rounded to bf16) and stats so that it is checked on its own.
    uint16_t *go_ref = gpu_dup_bf16(out_bf, nq);
    float *gm_ref = gpu_dup_f(smax, nth), *gd_ref = gpu_dup_f(sden, nth);
    cuda_attention_backward(gdq, gdk, gdv, gDt, gdo, go_ref, gq, gk, gv, lo, hi, gm_ref, gd_ref, d);
    float *r_o = gpu_get_bf16(go, nq), *r_m = gpu_get(gm, nth), *r_d = gpu_get(gd, nth);
    float *r_dq = gpu_get(gdq, nq), *r_dk = gpu_get(gdk, nkv), *r_dv = gpu_get(gdv, nkv);
    float *r_o2 = gpu_get_bf16(go2, nq), *r_m2 = gpu_get(gm2, nth), *r_d2 = gpu_get(gd2, nth);
    char what[128];
    snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d forward run to run", T, H, KVH, HD, window,
             n_docs);
    check_true(what, !memcmp(r_o, r_o2, nq * 4) && !memcmp(r_m, r_m2, nth * 4) && !memcmp(r_d, r_d2, nth * 4));
    snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d out", T, H, KVH, HD, window, n_docs);
    // slack 1e-5: |v| <= 1 makes out a weighted mean of v scaled by <= 1, so |out| <= 1 and 1e-5 is ~100
    // fp32 ulps of the largest element, above the scores' and exp's fp32 differences (the budget's other
    // terms cover the weights' bf16 rounding and the sums), yet below half a bf16 ulp of any element over
    // 2^-7. Measured on an H200 (its first run): worst excess over the budget -1.8e-8 (T 2048 causal: the
    // one-key rows at document starts sit at the bound), norm-wise error 2.0e-3 .. 2.3e-3.
    check_bf16_budget(what, r_o, out, budget, nq, 1e-5);
    // 1e-5 norm-wise: both sides run the same fp32 formulas on bit-identical inputs and differ only in summation order
    // (per-thread partial sums, the forward's scores on the tensor cores: exact bf16 products summed in fp32, and
    // tile-wise online softmax vs the CPU's loops) and expf: a few fp32 ulps per term (measured on an H200: <= 3.6e-7
    // up to T 300; dk/dv 1.9e-6 at T 2048, sums of up to 5.5k terms); 1e-5 leaves room for the cancellation in ds = p
    // (dp - D) while a dropped or misplaced key (a 1/window or larger change in a row) still fails.
    const char *parts[5] = {"stat_max", "stat_den", "dq", "dk", "dv"};
    const float *gots[5] = {r_m, r_d, r_dq, r_dk, r_dv}, *refs[5] = {smax, sden, dq, dk, dv};
    size_t ns[5] = {nth, nth, nq, nkv, nkv};
    for (int i = 0; i < 5; i++) {
        snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d %s", T, H, KVH, HD, window, n_docs,
                 parts[i]);
        check_close(what, gots[i], refs[i], ns[i], 1e-5);
    }
    void *ptrs[] = {ddoc, lo, hi, gq, gk, gv, gs, gdo, go, gm, gd, gdq, gdk, gdv, gDt, go_ref, gm_ref, gd_ref,
                    go2, gm2, gd2};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) cuda_free(ptrs[i]);
    free(doc), free(q), free(k), free(v), free(sinks), free(dout), free(out), free(out_bf), free(smax), free(sden);
    free(dq), free(dk), free(dv), free(r_o), free(r_o2), free(r_m2), free(r_d2), free(vabs), free(budget), free(junk);
    for (int i = 0; i < 5; i++) free((void *)gots[i]);
}

static void test_attention(void) {
    test_attention_case(1, 4, 2, 64, 0, 1);    // one token: only the sink competes
    test_attention_case(77, 4, 2, 64, 5, 3);   // window shorter than a document, 3 documents
    test_attention_case(45, 8, 1, 8, 0, 2);    // HD 8 (< a warp), 8 query heads on 1 kv head
    test_attention_case(70, 6, 3, 128, 0, 1);  // HD 128 (4 dims per lane), 70 keys: partial key groups
    test_attention_case(50, 4, 4, 24, 0, 2);   // HD 24: dims padded to 32 for the mma; MHA (group 1)
    test_attention_case(33, 6, 2, 6, 9, 1);    // HD 6: the forward's element copies (rows not 16-byte aligned)
    test_attention_case(300, 8, 2, 64, 37, 3); // GQA 4: 32-row blocks span 8 queries, windows cross tiles
    // gpt-oss-20b's heads, full causal, 3 documents (boundaries off every tile edge): the first key blocks
    // walk hundreds of item tiles split among subblocks, the others few.
    test_attention_case(2048, 64, 8, 64, 0, 3);
    test_attention_case(2048, 64, 8, 64, 128, 1); // and its sliding-window layer
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
