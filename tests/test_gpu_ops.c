// tests/test_gpu_ops.c: the small CUDA ops of model/cuda/ (elementwise, dequant, RMSNorm, RoPE, router,
// cross-entropy) against their CPU twins in model/cpu/ (and the cuBLASLt GEMM against a
// double-precision host product), on fresh random inputs, at tile edges (1 token, token counts that are
// not multiples of 32 or of a GEMM tile, a vocabulary that ends in a partial chunk), with every output
// poisoned with NaN first. Where the GPU reads bf16 the CPU gets the same inputs rounded to bf16, so only
// the GPU's own roundings differ. Attention is in test_gpu_attention.c, SwiGLU and the MoE in
// test_gpu_moe.c, the LoRA funnel in test_gpu_lora.c. Skips without a GPU.
//
// Tolerances (norm-wise relative error, see gpu_test.h):
//   exact  the casts, the bias and residual adds (one fp32 add, rounded once, is the same on both sides),
//          dequantization (bf16 of the CPU's fp32 value) and the router's choice;
//   1e-5   fp32 outputs whose only difference from the CPU is the order of sums and 1-ulp differences of
//          expf/cosf (RMSNorm rstd and dx, RoPE tables and backward, router, the GEMM on bf16
//          inputs, the CE loss);
//   4e-3   outputs stored as bf16 (RMSNorm y, RoPE forward): rounding to bf16's 8 significant bits moves
//          each element by at most 2^-8 = 3.9e-3 relative, so the norm-wise error is at most that; on top,
//          every element must lie within half a bf16 ulp (+1e-6 for the fp32 difference) of the CPU's fp32
//          value, which round-to-nearest guarantees and truncation would break;
//   5e-3   CE backward: the logit gradient is rounded to bf16 before the dh GEMM (2^-8 per term).
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

static uint64_t g_seed = 20261121;

// ---------------------------------------------------------------------------------------------------
static void test_gemm(void) {
    const int sizes[][3] = {{1, 7, 5}, {37, 53, 29}, {64, 130, 96}, {5, 1, 300}};
    for (int type = 0; type < 2; type++)
        for (int si = 0; si < 4; si++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    int M = sizes[si][0], N = sizes[si][1], K = sizes[si][2];
                    float *A = rand_vec(&g_seed, (size_t)M * K, 1.0f), *B = rand_vec(&g_seed, (size_t)K * N, 1.0f);
                    float *C = rand_vec(&g_seed, (size_t)M * N, 1.0f);
                    if (type == CUDA_GEMM_BF16) round_bf16(A, (size_t)M * K), round_bf16(B, (size_t)K * N);
                    // A stored (M, K) or (K, M); B stored (K, N) or (N, K).
                    int lda = ta ? M : K, ldb = tb ? K : N;
                    float *ref = xmalloc((size_t)M * N * sizeof(float));
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            double s = 0.0;
                            for (int k = 0; k < K; k++) {
                                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                                s += a * b;
                            }
                            ref[(size_t)i * N + j] = (float)(0.5 * s + 1.0 * C[(size_t)i * N + j]);
                        }
                    void *dA = type == CUDA_GEMM_BF16 ? (void *)gpu_dup_bf16(A, (size_t)M * K) : (void *)gpu_dup_f(A, (size_t)M * K);
                    void *dB = type == CUDA_GEMM_BF16 ? (void *)gpu_dup_bf16(B, (size_t)K * N) : (void *)gpu_dup_f(B, (size_t)K * N);
                    float *dC = gpu_dup_f(C, (size_t)M * N);
                    cuda_gemm((cuda_gemm_type)type, ta, tb, M, N, K, 0.5f, dA, lda, dB, ldb, 1.0f, dC, N);
                    float *got = gpu_get(dC, (size_t)M * N);
                    char what[96];
                    snprintf(what, sizeof what, "gemm %s ta%d tb%d %dx%dx%d", type ? "f32" : "bf16", ta, tb, M, N, K);
                    // Exact products (bf16 inputs), fp32 accumulation of <= 300 terms: ~1e-6.
                    check_close(what, got, ref, (size_t)M * N, 1e-5);
                    cuda_free(dA), cuda_free(dB), cuda_free(dC);
                    free(A), free(B), free(C), free(ref), free(got);
                }
}

// ---------------------------------------------------------------------------------------------------
static void test_dequant(void) {
    // MXFP4 (64, 96) and NF4 (37, 51): an odd element count, a partial last absmax block.
    const wformat fmts[2] = {WF_MXFP4, WF_NF4};
    const int shape[2][2] = {{64, 96}, {37, 51}};
    for (int f = 0; f < 2; f++) {
        int rows = shape[f][0], cols = shape[f][1];
        size_t n = (size_t)rows * cols;
        float *w = rand_vec(&g_seed, n, 0.1f);
        qmatrix q;
        void *own = qmatrix_from_f32(&q, fmts[f], w, rows, cols);
        float *ref = xmalloc(n * sizeof(float));
        qmatrix_dequant_rows(&q, 0, rows, ref);
        round_bf16(ref, n); // MXFP4: exact already; NF4: the GPU rounds the same fp32 product
        uint16_t *dout = cuda_malloc(n * sizeof(uint16_t));
        cuda_memset(dout, 0xff, n * sizeof(uint16_t)); // bf16 NaN
        if (fmts[f] == WF_MXFP4) {
            void *db = gpu_dup(q.blocks, n / 2), *ds = gpu_dup(q.scales, n / 32);
            cuda_mxfp4_dequant(dout, db, ds, rows, cols);
            cuda_sync();
            cuda_free(db), cuda_free(ds);
        } else {
            size_t nb = (n + q.blocksize - 1) / q.blocksize;
            void *db = gpu_dup(q.blocks, (n + 1) / 2), *da = gpu_dup(q.absmax, nb * sizeof(float));
            void *dm = gpu_dup(q.quant_map, 16 * sizeof(float));
            cuda_nf4_dequant(dout, db, da, dm, q.blocksize, (int64_t)n);
            cuda_sync();
            cuda_free(db), cuda_free(da), cuda_free(dm);
        }
        uint16_t *got = xmalloc(n * sizeof(uint16_t));
        cuda_d2h(got, dout, n * sizeof(uint16_t));
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (got[i] != f32_to_bf16(ref[i]) && !bad++) first = i;
        char what[96];
        snprintf(what, sizeof what, "%s dequant (%d, %d) bit-exact (%zu differ; first [%zu] %g vs %g)",
                 fmts[f] == WF_MXFP4 ? "mxfp4" : "nf4", rows, cols, bad, first, bf16_to_f32(got[first]), ref[first]);
        check_true(what, bad == 0);
        cuda_free(dout), free(got), free(ref), free(w), free(own);
    }
}

// ---------------------------------------------------------------------------------------------------
// bf16 outputs, element by element: got within half a bf16 ulp of the fp32 reference ref (round to nearest;
// truncation or a wrong rounding direction moves an element by up to a whole ulp), plus slack (absolute)
// for the fp32 difference between the GPU's and the CPU's unrounded values.
static void check_bf16_rounded(const char *what, const float *got, const float *ref, size_t n, double slack) {
    double worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        int ex;
        frexp(got[i], &ex);
        double half_ulp = got[i] != 0.0f ? ldexp(1.0, ex - 9) : 0.0; // 8 significant bits: ulp 2^(ex-8)
        double r = fabs((double)got[i] - ref[i]) / (half_ulp + slack);
        if (!(r <= worst)) worst = isnan(r) ? INFINITY : r, wi = i; // a NaN (unwritten) is the worst
    }
    char w[160];
    snprintf(w, sizeof w, "%s: each within half a bf16 ulp (worst %.3g of it at [%zu]: %.9g vs %.9g)", what, worst, wi,
             n ? got[wi] : 0.0f, n ? ref[wi] : 0.0f);
    check_true(w, worst <= 1.0);
}

// The first of n bit patterns (width bytes each) where got and ref differ, or n.
static size_t bits_first_diff(const void *got, const void *ref, size_t n, size_t width) {
    for (size_t i = 0; i < n; i++)
        if (memcmp((const char *)got + i * width, (const char *)ref + i * width, width)) return i;
    return n;
}

static void check_bits(const char *what, const void *got, const void *ref, size_t n, size_t width) {
    char w[160];
    size_t i = bits_first_diff(got, ref, n, width);
    if (i < n)
        snprintf(w, sizeof w, "%s bit-exact (first difference at [%zu])", what, i);
    else
        snprintf(w, sizeof w, "%s bit-exact (%zu elements)", what, n);
    check_true(w, i == n);
}

// ---------------------------------------------------------------------------------------------------
static void test_elementwise(void) {
    // cuda_cast_bf16 on random finite fp32 patterns (subnormals included) and on exact ties (low half
    // 0x8000, both parities): round to nearest even as core's f32_to_bf16.
    size_t n = 4099;
    float *x = xmalloc(n * 4);
    uint16_t *rb = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        do { // a multiplicative hash of a random float's bits: any sign, exponent and mantissa
            float r = gpu_test_rand(&g_seed, 1.0f);
            memcpy(&u, &r, 4);
            u *= 2654435761u;
        } while ((u & 0x7f800000u) == 0x7f800000u); // not inf or NaN
        if (i % 4 == 0) u = (u & 0xffff0000u) | 0x8000u;
        memcpy(&x[i], &u, 4);
        rb[i] = f32_to_bf16(x[i]);
    }
    float *dx = gpu_dup_f(x, n);
    uint16_t *db = gpu_poison_bf16(n);
    cuda_cast_bf16(db, dx, n);
    uint16_t *gb = gpu_get_bits(db, n);
    check_bits("cast_bf16 (round to nearest even, ties)", gb, rb, n, 2);
    cuda_free(dx), cuda_free(db), free(x), free(rb), free(gb);

    // cuda_add_bias: one fp32 add per element.
    const int M = 37, N = 53;
    float *y = rand_vec(&g_seed, (size_t)M * N, 1.0f), *b = rand_vec(&g_seed, N, 1.0f);
    float *dy = gpu_dup_f(y, (size_t)M * N), *dbias = gpu_dup_f(b, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) y[(size_t)i * N + j] += b[j];
    cuda_add_bias(dy, dbias, M, N);
    float *gy = gpu_get(dy, (size_t)M * N);
    check_bits("add_bias (37, 53) (+=)", gy, y, (size_t)M * N, 4);
    cuda_free(dy), cuda_free(dbias), free(y), free(b), free(gy);

    // cuda_residual: y = bf16(x + f), the fp32 sum rounded once; into a fresh buffer, then in place.
    n = 7403; // not a multiple of the 256-thread block
    float *hx = rand_vec(&g_seed, n, 2.0f), *f = rand_vec(&g_seed, n, 0.5f);
    round_bf16(hx, n);
    uint16_t *rr = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) rr[i] = f32_to_bf16(hx[i] + f[i]);
    uint16_t *gx = gpu_dup_bf16(hx, n), *gout = gpu_poison_bf16(n);
    float *gf = gpu_dup_f(f, n);
    cuda_residual(gout, gx, gf, n);
    uint16_t *r1 = gpu_get_bits(gout, n);
    check_bits("residual y = bf16(x + f)", r1, rr, n, 2);
    cuda_residual(gx, gx, gf, n);
    uint16_t *r2 = gpu_get_bits(gx, n);
    check_bits("residual in place (y == x)", r2, rr, n, 2);
    cuda_free(gx), cuda_free(gout), cuda_free(gf), free(hx), free(f), free(rr), free(r1), free(r2);
}

// ---------------------------------------------------------------------------------------------------
static void test_rmsnorm(void) {
    const int shapes[][2] = {{37, 200}, {1, 2880}}; // D below and above the 256-thread block
    for (int si = 0; si < 2; si++) {
        int T = shapes[si][0], D = shapes[si][1];
        size_t n = (size_t)T * D;
        float *x = rand_vec(&g_seed, n, 2.0f), *w = rand_vec(&g_seed, D, 1.0f);
        float *dy = rand_vec(&g_seed, n, 1.0f), *dx0 = rand_vec(&g_seed, n, 1.0f);
        round_bf16(x, n); // the GPU reads the residual stream as bf16
        float *y = xmalloc(n * 4), *rstd = xmalloc(T * 4), *dx = xmalloc(n * 4);
        memcpy(dx, dx0, n * 4);
        cpu_rmsnorm_forward(y, rstd, x, w, T, D, 1e-5f);
        cpu_rmsnorm_backward(dx, dy, x, w, rstd, T, D);
        uint16_t *dX = gpu_dup_bf16(x, n), *dY = gpu_poison_bf16(n);
        float *dW = gpu_dup_f(w, D), *dDy = gpu_dup_f(dy, n), *dR = gpu_poison(T), *dDx = gpu_dup_f(dx0, n);
        cuda_rmsnorm_forward(dY, dR, dX, dW, T, D, 1e-5f);
        cuda_rmsnorm_backward(dDx, dDy, dX, dW, dR, T, D);
        float *gy = gpu_get_bf16(dY, n), *gr = gpu_get(dR, T), *gdx = gpu_get(dDx, n);
        char what[96];
        snprintf(what, sizeof what, "rmsnorm (%d, %d) forward y (bf16)", T, D);
        check_close(what, gy, y, n, 4e-3);
        // The unrounded fp32 y differ by rstd's last bit at most (|y| < 3: < 1e-6).
        check_bf16_rounded(what, gy, y, n, 1e-6);
        snprintf(what, sizeof what, "rmsnorm (%d, %d) forward rstd", T, D);
        check_close(what, gr, rstd, T, 1e-5);
        snprintf(what, sizeof what, "rmsnorm (%d, %d) backward dx (+=)", T, D);
        check_close(what, gdx, dx, n, 1e-5);
        cuda_free(dX), cuda_free(dW), cuda_free(dDy), cuda_free(dY), cuda_free(dR), cuda_free(dDx);
        free(x), free(w), free(dy), free(dx0), free(y), free(rstd), free(dx), free(gy), free(gr), free(gdx);
    }
}

// ---------------------------------------------------------------------------------------------------
static void rope_config(model_config *c, int HD) {
    memset(c, 0, sizeof *c);
    c->head_dim = HD, c->rope_theta = 150000.0, c->rope_yarn = 1, c->yarn_factor = 32.0;
    c->yarn_beta_fast = 32.0, c->yarn_beta_slow = 1.0, c->yarn_orig_max_pos = 4096;
}

static void test_rope(void) {
    const int T = 37, NH = 3, HD = 64, half = HD / 2;
    const size_t n = (size_t)T * NH * HD;
    model_config c;
    rope_config(&c, HD);
    int32_t pos[37];
    for (int t = 0; t < T; t++) pos[t] = (int32_t)((gpu_test_rand(&g_seed, 1.0f) + 1.0f) * 2500.0f);
    float *ct = xmalloc(T * half * 4), *st = xmalloc(T * half * 4), inv[32], factor;
    cpu_rope_tables(&c, pos, T, ct, st);
    cpu_rope_inv_freq(&c, inv, &factor);
    int32_t *dpos = gpu_dup(pos, sizeof pos);
    float *dinv = gpu_dup_f(inv, half), *dct = gpu_poison(T * half), *dst = gpu_poison(T * half);
    cuda_rope_tables(dct, dst, dpos, dinv, factor, T, half);
    float *gct = gpu_get(dct, T * half), *gst = gpu_get(dst, T * half);
    check_close("rope cos table (positions to 5000)", gct, ct, T * half, 1e-5);
    check_close("rope sin table", gst, st, T * half, 1e-5);

    // The rotations get the CPU's tables, so only the rotation and its rounding differ.
    float *x = rand_vec(&g_seed, n, 1.0f), *dx = rand_vec(&g_seed, n, 1.0f);
    float *hct = gpu_dup_f(ct, T * half), *hst = gpu_dup_f(st, T * half);
    float *gx = gpu_dup_f(x, n), *gdx = gpu_dup_f(dx, n);
    uint16_t *gout = gpu_poison_bf16(n);
    cuda_rope_forward(gout, gx, hct, hst, T, NH, HD);
    cuda_rope_backward(gdx, hct, hst, T, NH, HD);
    float *rout = gpu_get_bf16(gout, n), *rx = gpu_get(gx, n), *rdx = gpu_get(gdx, n);
    check_bits("rope forward leaves x", rx, x, n, 4);
    cpu_rope_forward(x, ct, st, T, NH, HD);
    cpu_rope_backward(dx, ct, st, T, NH, HD);
    check_close("rope forward out (bf16)", rout, x, n, 4e-3);
    // |a c| + |b s| < 2 * 1.35: a contracted (fma) a c - b s differs from the CPU's by < 1e-6.
    check_bf16_rounded("rope forward out", rout, x, n, 1e-6);
    check_close("rope backward (in place)", rdx, dx, n, 1e-5);
    cuda_free(dpos), cuda_free(dinv), cuda_free(dct), cuda_free(dst), cuda_free(hct), cuda_free(hst);
    cuda_free(gx), cuda_free(gdx), cuda_free(gout);
    free(ct), free(st), free(gct), free(gst), free(x), free(dx), free(rout), free(rx), free(rdx);
}

// ---------------------------------------------------------------------------------------------------
static void test_router(void) {
    const int T = 37, E = 32, K = 4;
    float *lg = rand_vec(&g_seed, (size_t)T * E, 3.0f), *dw = rand_vec(&g_seed, (size_t)T * K, 1.0f);
    int32_t *sel = xmalloc(T * K * 4);
    float *w = xmalloc(T * K * 4), *dl = xmalloc((size_t)T * E * 4);
    cpu_router_forward(sel, w, lg, T, E, K);
    cpu_router_backward(dl, dw, w, sel, T, E, K);
    float *glg = gpu_dup_f(lg, (size_t)T * E), *gw = gpu_poison(T * K), *gdw = gpu_dup_f(dw, T * K);
    float *gdl = gpu_poison((size_t)T * E);
    int32_t *gsel = cuda_malloc(T * K * 4);
    cuda_memset(gsel, 0xff, T * K * 4);
    cuda_router_forward(gsel, gw, glg, T, E, K);
    cuda_router_backward(gdl, gdw, gw, gsel, T, E, K);
    int32_t *rsel = xmalloc(T * K * 4);
    float *rw = gpu_get(gw, T * K), *rdl = gpu_get(gdl, (size_t)T * E);
    cuda_d2h(rsel, gsel, T * K * 4);
    check_true("router top-4 of 32 choices identical", !memcmp(rsel, sel, T * K * 4));
    check_close("router weights", rw, w, T * K, 1e-6);
    check_close("router backward dlogits", rdl, dl, (size_t)T * E, 1e-5);
    cuda_free(glg), cuda_free(gw), cuda_free(gdw), cuda_free(gdl), cuda_free(gsel);
    free(lg), free(dw), free(sel), free(w), free(dl), free(rsel), free(rw), free(rdl);
}

// ---------------------------------------------------------------------------------------------------
static void test_ce(void) {
    const int T = 37, D = 64, V = 20000; // 3 chunks of 8192, the last one partial
    float *h = rand_vec(&g_seed, (size_t)T * D, 1.0f), *w = rand_vec(&g_seed, (size_t)V * D, 0.3f);
    round_bf16(h, (size_t)T * D), round_bf16(w, (size_t)V * D); // the GPU's operands exactly
    int32_t tg[37];
    for (int t = 0; t < T; t++) tg[t] = t % 5 == 3 ? -1 : (int32_t)((gpu_test_rand(&g_seed, 1.0f) + 1.0f) * 0.5f * V);
    tg[0] = V - 1; // a target in the partial last chunk
    double *lse = xmalloc(T * sizeof(double));
    float *loss = xmalloc(T * 4), *dh = xmalloc((size_t)T * D * 4);
    const float g = 0.25f;
    cpu_ce_forward_backward(lse, loss, dh, h, w, tg, T, D, V, g);
    uint16_t *gh = gpu_dup_bf16(h, (size_t)T * D), *gw = gpu_dup_bf16(w, (size_t)V * D);
    int32_t *gt = gpu_dup(tg, sizeof tg);
    const double sum0 = 100.0; // cuda_loss_sum adds to what is there (the step's running sum)
    double *glse = cuda_malloc(T * sizeof(double)), *gsum = gpu_dup(&sum0, sizeof sum0);
    float *gl = gpu_poison(T), *gdh = gpu_poison((size_t)T * D);
    cuda_ce_scratch s;
    s.logits = cuda_malloc((size_t)T * CUDA_CE_CHUNK * 4), s.dl = cuda_malloc((size_t)T * CUDA_CE_CHUNK * 2);
    s.mx = cuda_malloc(T * 4), s.tl = cuda_malloc(T * 4), s.sum = cuda_malloc(T * sizeof(double));
    cuda_ce_forward(glse, gl, gh, gw, gt, T, D, V, &s);
    cuda_ce_backward(gdh, gh, gw, gt, glse, T, D, V, g, &s);
    cuda_loss_sum(gsum, gl, gt, T);
    float *rl = gpu_get(gl, T), *rdh = gpu_get(gdh, (size_t)T * D);
    double rsum = 0.0, csum = 0.0;
    cuda_d2h(&rsum, gsum, sizeof rsum);
    for (int t = 0; t < T; t++) csum += tg[t] >= 0 ? loss[t] : 0.0;
    rsum -= sum0;
    // Logits from exact bf16 products summed in fp32 (64 terms): the loss to ~1e-6.
    check_close("CE forward per-token loss (V 20000, 3 chunks)", rl, loss, T, 1e-5);
    float fs = (float)rsum, fc = (float)csum;
    check_close("CE loss sum (+= onto 100)", &fs, &fc, 1, 1e-5);
    // The logit gradient is rounded to bf16 before the dh GEMM: at most 2^-8 relative per term.
    check_close("CE backward dh", rdh, dh, (size_t)T * D, 5e-3);
    cuda_free(gh), cuda_free(gw), cuda_free(gt), cuda_free(glse), cuda_free(gsum), cuda_free(gl), cuda_free(gdh);
    cuda_free(s.logits), cuda_free(s.dl), cuda_free(s.mx), cuda_free(s.tl), cuda_free(s.sum);
    free(h), free(w), free(lse), free(loss), free(dh), free(rl), free(rdh);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    char name[256];
    cuda_device_name(name, sizeof name);
    printf("device: %s\n", name);
    test_gemm();
    test_elementwise();
    test_dequant();
    test_rmsnorm();
    test_rope();
    test_router();
    test_ce();
    return gpu_test_finish();
}
#endif
