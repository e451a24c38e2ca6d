// tests/test_gpu_ops.c: every CUDA op of model/cuda/ against its CPU twin in model/cpu/ (and the cuBLASLt
// GEMM against a double-precision host product), on fresh random inputs, at tile edges (1 token, token
// counts that are not multiples of 32 or of a GEMM tile, an expert with zero tokens, a vocabulary that
// ends in a partial chunk), with every output poisoned with NaN first. Skips without a GPU.
//
// Tolerances (norm-wise relative error, see gpu_test.h):
//   1e-5  fp32 ops whose only difference from the CPU is the order of fp32 sums and 1-ulp differences of
//         expf/cosf (RMSNorm, RoPE, router, SwiGLU, LoRA, the GEMM on bf16-representable inputs);
//   1e-4  attention: online-softmax rescaling reorders the sums over up to 77 keys;
//   5e-3  ops that round an fp32 intermediate to bf16 before a GEMM (CE backward's logit gradient, the
//         MoE's SwiGLU output and gradients): 2^-9 relative per rounded element;
//   exact dequantization (bf16 of the CPU's fp32 value) and the router's expert choice.
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
static void test_rmsnorm(void) {
    const int T = 37, D = 200;
    float *x = rand_vec(&g_seed, (size_t)T * D, 2.0f), *w = rand_vec(&g_seed, D, 1.0f);
    float *dy = rand_vec(&g_seed, (size_t)T * D, 1.0f), *dx0 = rand_vec(&g_seed, (size_t)T * D, 1.0f);
    float *y = xmalloc((size_t)T * D * 4), *rstd = xmalloc(T * 4), *dx = xmalloc((size_t)T * D * 4);
    memcpy(dx, dx0, (size_t)T * D * 4);
    cpu_rmsnorm_forward(y, rstd, x, w, T, D, 1e-5f);
    cpu_rmsnorm_backward(dx, dy, x, w, rstd, T, D);
    float *dX = gpu_dup_f(x, (size_t)T * D), *dW = gpu_dup_f(w, D), *dDy = gpu_dup_f(dy, (size_t)T * D);
    float *dY = gpu_poison((size_t)T * D), *dR = gpu_poison(T), *dDx = gpu_dup_f(dx0, (size_t)T * D);
    uint16_t *dYb = cuda_malloc((size_t)T * D * 2);
    cuda_rmsnorm_forward(dY, dYb, dR, dX, dW, T, D, 1e-5f);
    cuda_rmsnorm_backward(dDx, dDy, dX, dW, dR, T, D);
    float *gy = gpu_get(dY, (size_t)T * D), *gr = gpu_get(dR, T), *gdx = gpu_get(dDx, (size_t)T * D);
    check_close("rmsnorm forward y", gy, y, (size_t)T * D, 1e-5);
    check_close("rmsnorm forward rstd", gr, rstd, T, 1e-5);
    check_close("rmsnorm backward dx (+=)", gdx, dx, (size_t)T * D, 1e-5);
    uint16_t *yb = xmalloc((size_t)T * D * 2);
    cuda_d2h(yb, dYb, (size_t)T * D * 2);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) bad += yb[i] != f32_to_bf16(gy[i]);
    check_true("rmsnorm bf16 copy = bf16(y)", bad == 0);
    cuda_free(dX), cuda_free(dW), cuda_free(dDy), cuda_free(dY), cuda_free(dR), cuda_free(dDx), cuda_free(dYb);
    free(x), free(w), free(dy), free(dx0), free(y), free(rstd), free(dx), free(gy), free(gr), free(gdx), free(yb);
}

// ---------------------------------------------------------------------------------------------------
static void rope_config(model_config *c, int HD) {
    memset(c, 0, sizeof *c);
    c->head_dim = HD, c->rope_theta = 150000.0, c->rope_yarn = 1, c->yarn_factor = 32.0;
    c->yarn_beta_fast = 32.0, c->yarn_beta_slow = 1.0, c->yarn_orig_max_pos = 4096;
}

static void test_rope(void) {
    const int T = 37, NH = 3, HD = 64, half = HD / 2;
    model_config c;
    rope_config(&c, HD);
    int32_t pos[37];
    for (int t = 0; t < T; t++) pos[t] = (int32_t)((gpu_test_rand(&g_seed, 1.0f) + 1.0f) * 2500.0f);
    float *ct = xmalloc(T * half * 4), *st = xmalloc(T * half * 4), inv[32], factor;
    cpu_rope_tables(&c, pos, T, ct, st);
    cpu_rope_inv_freq(&c, inv, &factor);
    float *x = rand_vec(&g_seed, (size_t)T * NH * HD, 1.0f), *dx = rand_vec(&g_seed, (size_t)T * NH * HD, 1.0f);
    float *dxg = gpu_dup_f(x, (size_t)T * NH * HD), *ddx = gpu_dup_f(dx, (size_t)T * NH * HD);
    cpu_rope_forward(x, ct, st, T, NH, HD);
    cpu_rope_backward(dx, ct, st, T, NH, HD);
    int32_t *dpos = gpu_dup(pos, sizeof pos);
    float *dinv = gpu_dup_f(inv, half), *dct = gpu_poison(T * half), *dst = gpu_poison(T * half);
    cuda_rope_tables(dct, dst, dpos, dinv, factor, T, half);
    cuda_rope_forward(dxg, dct, dst, T, NH, HD);
    cuda_rope_backward(ddx, dct, dst, T, NH, HD);
    float *gct = gpu_get(dct, T * half), *gst = gpu_get(dst, T * half);
    float *gx = gpu_get(dxg, (size_t)T * NH * HD), *gdx = gpu_get(ddx, (size_t)T * NH * HD);
    check_close("rope cos table (positions to 5000)", gct, ct, T * half, 1e-5);
    check_close("rope sin table", gst, st, T * half, 1e-5);
    check_close("rope forward", gx, x, (size_t)T * NH * HD, 1e-5);
    check_close("rope backward", gdx, dx, (size_t)T * NH * HD, 1e-5);
    cuda_free(dxg), cuda_free(ddx), cuda_free(dpos), cuda_free(dinv), cuda_free(dct), cuda_free(dst);
    free(ct), free(st), free(x), free(dx), free(gct), free(gst), free(gx), free(gdx);
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
static void test_lora(void) {
    const int M = 37, in = 50, out = 70, R = 8;
    const float scale = 2.0f;
    pair_buf p;
    pair_make(&p, &g_seed, R, in, out);
    float *x = rand_vec(&g_seed, (size_t)M * in, 1.0f), *y = rand_vec(&g_seed, (size_t)M * out, 1.0f);
    float *dy = rand_vec(&g_seed, (size_t)M * out, 1.0f), *dx = rand_vec(&g_seed, (size_t)M * in, 1.0f);
    float *gx = gpu_dup_f(x, (size_t)M * in), *gy = gpu_dup_f(y, (size_t)M * out), *gz = gpu_poison((size_t)M * R);
    float *gdy = gpu_dup_f(dy, (size_t)M * out), *gdx = gpu_dup_f(dx, (size_t)M * in), *gdz = gpu_poison((size_t)M * R);
    float *z = xmalloc((size_t)M * R * 4), *dz = xmalloc((size_t)M * R * 4);
    cpu_lora_forward(y, z, x, &p.h, M, in, out, R, scale);
    cpu_lora_backward(dx, dz, dy, x, z, &p.h, M, in, out, R, scale);
    cuda_lora_forward(gy, gz, gx, &p.d, M, in, out, R, scale);
    cuda_lora_backward(gdx, gdz, gdy, gx, gz, &p.d, M, in, out, R, scale);
    float *ry = gpu_get(gy, (size_t)M * out), *rz = gpu_get(gz, (size_t)M * R), *rdx = gpu_get(gdx, (size_t)M * in);
    check_close("lora forward y (+=)", ry, y, (size_t)M * out, 1e-5);
    check_close("lora forward z", rz, z, (size_t)M * R, 1e-5);
    check_close("lora backward dx (+=)", rdx, dx, (size_t)M * in, 1e-5);
    pair_check("lora backward", &p, R, in, out, 1e-5);
    pair_free(&p);
    cuda_free(gx), cuda_free(gy), cuda_free(gz), cuda_free(gdy), cuda_free(gdx), cuda_free(gdz);
    free(x), free(y), free(dy), free(dx), free(z), free(dz), free(ry), free(rz), free(rdx);
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
    double *glse = cuda_malloc(T * sizeof(double)), *gsum = cuda_malloc(sizeof(double));
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
    // Logits from exact bf16 products summed in fp32 (64 terms): the loss to ~1e-6.
    check_close("CE forward per-token loss (V 20000, 3 chunks)", rl, loss, T, 1e-5);
    float fs = (float)rsum, fc = (float)csum;
    check_close("CE loss sum", &fs, &fc, 1, 1e-5);
    // The logit gradient is rounded to bf16 before the dh GEMM: 2^-9 relative per term.
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
    test_dequant();
    test_rmsnorm();
    test_rope();
    test_router();
    test_lora();
    test_ce();
    return gpu_test_finish();
}
#endif
