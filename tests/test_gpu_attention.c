// tests/test_gpu_attention.c: model/cuda/attention.cu against model/cpu/attention.c (forward and backward)
// on fresh random inputs at tile edges: one token, token counts that are not multiples of the 32-row
// blocks, windows shorter than documents and crossing key tiles, HD 8 / 64 / 128, GQA groups 2 to 8;
// every output poisoned with NaN first. Skips without a GPU.
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

static void test_attention_case(int T, int H, int KVH, int HD, int window, int n_docs) {
    cpu_attn_dims d = {T, H, KVH, HD, window};
    size_t nq = (size_t)T * H * HD, nkv = (size_t)T * KVH * HD, nth = (size_t)T * H;
    int32_t *doc = xmalloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) doc[t] = (int32_t)((long)t * n_docs / T); // n_docs contiguous documents
    float *q = rand_vec(&g_seed, nq, 1.0f), *k = rand_vec(&g_seed, nkv, 1.0f), *v = rand_vec(&g_seed, nkv, 1.0f);
    float *sinks = rand_vec(&g_seed, H, 2.0f), *dout = rand_vec(&g_seed, nq, 1.0f);
    float *out = xmalloc(nq * 4), *smax = xmalloc(nth * 4), *sden = xmalloc(nth * 4);
    float *dq = xmalloc(nq * 4), *dk = xmalloc(nkv * 4), *dv = xmalloc(nkv * 4);
    cpu_attention_forward(out, smax, sden, q, k, v, sinks, doc, d);
    cpu_attention_backward(dq, dk, dv, dout, out, q, k, v, sinks, doc, smax, sden, d);
    int32_t *ddoc = gpu_dup(doc, T * sizeof(int32_t)), *lo = cuda_malloc(T * 4), *hi = cuda_malloc(T * 4);
    float *gq = gpu_dup_f(q, nq), *gk = gpu_dup_f(k, nkv), *gv = gpu_dup_f(v, nkv), *gs = gpu_dup_f(sinks, H);
    float *gdo = gpu_dup_f(dout, nq), *go = gpu_poison(nq), *gm = gpu_poison(nth), *gd = gpu_poison(nth);
    float *gdq = gpu_poison(nq), *gdk = gpu_poison(nkv), *gdv = gpu_poison(nkv), *gDt = gpu_poison(nth);
    cuda_doc_bounds(lo, hi, ddoc, T);
    cuda_attention_forward(go, gm, gd, gq, gk, gv, gs, lo, d);
    // The backward reads the CPU's out and stats so that it is checked on its own.
    float *go_ref = gpu_dup_f(out, nq), *gm_ref = gpu_dup_f(smax, nth), *gd_ref = gpu_dup_f(sden, nth);
    cuda_attention_backward(gdq, gdk, gdv, gDt, gdo, go_ref, gq, gk, gv, lo, hi, gm_ref, gd_ref, d);
    float *r_o = gpu_get(go, nq), *r_m = gpu_get(gm, nth), *r_d = gpu_get(gd, nth);
    float *r_dq = gpu_get(gdq, nq), *r_dk = gpu_get(gdk, nkv), *r_dv = gpu_get(gdv, nkv);
    char what[128];
    const char *parts[6] = {"out", "stat_max", "stat_den", "dq", "dk", "dv"};
    const float *gots[6] = {r_o, r_m, r_d, r_dq, r_dk, r_dv}, *refs[6] = {out, smax, sden, dq, dk, dv};
    size_t ns[6] = {nq, nth, nth, nq, nkv, nkv};
    for (int i = 0; i < 6; i++) {
        snprintf(what, sizeof what, "attention T%d H%d/%d HD%d win%d docs%d %s", T, H, KVH, HD, window, n_docs, parts[i]);
        check_close(what, gots[i], refs[i], ns[i], 1e-4);
    }
    void *ptrs[] = {ddoc, lo, hi, gq, gk, gv, gs, gdo, go, gm, gd, gdq, gdk, gdv, gDt, go_ref, gm_ref, gd_ref};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) cuda_free(ptrs[i]);
    free(doc), free(q), free(k), free(v), free(sinks), free(dout), free(out), free(smax), free(sden);
    free(dq), free(dk), free(dv);
    for (int i = 0; i < 6; i++) free((void *)gots[i]);
}

static void test_attention(void) {
    test_attention_case(1, 4, 2, 64, 0, 1);    // one token: only the sink competes
    test_attention_case(77, 4, 2, 64, 5, 3);   // window shorter than a document, 3 documents
    test_attention_case(45, 8, 1, 8, 0, 2);    // HD 8 (< a warp), 8 query heads on 1 kv head
    test_attention_case(70, 6, 3, 128, 0, 1);  // HD 128 (4 dims per lane), 70 keys: partial key groups
    test_attention_case(300, 8, 2, 64, 37, 3); // GQA 4: 32-row blocks span 8 queries, windows cross tiles
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
