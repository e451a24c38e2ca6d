// tests/test_gpu_moe_gemm.c: model/cuda/moe_gemm.cu (cuda_moe_gemm, the experts' grouped GEMM) alone,
// against a host reference in double, for every path of its contract (cuda_ops.h): wt 1 (C = A W_e^T, the
// forward) and wt 0 (C = A W_e, the backward), A bf16 or fp32 (rounded to bf16 by the kernel), gathered
// through arow, from two interleaved arrays, bias, the interleaved c0/c1 output; MXFP4, NF4 and bf16
// experts; row tiles that end inside an expert, an empty expert and unused tiles; column and k edges; leading
// dimensions that rule out the vector loads and stores; A copied by cp.async (plain bf16 rows) and through
// registers; one k step and many. Skips without a GPU.
//
// The reference multiplies the same bf16 operands (A rounded to bf16, the experts decoded exactly and
// rounded to bf16 where the format is not bf16-exact: NF4) in double, so the only difference is the fp32
// accumulation: |got - ref| <= (Kd + 2) 2^-23 (sum |a w| + |bias|), the worst-case bound of Kd fp32 additions
// (and the bias add) even for truncating adders. A wrong, missing or doubled term is a whole |a w|, far
// above it. The one-hot cases (A(r, k) = 1 where k = r % Kd, else 0) make C a decoded weight row and check
// it bit for bit over every MXFP4 scale byte 0 .. 252 (the decode's fast range 2 .. 252 and the reference
// path below it): a subnormal weight (scales 0, 1) may also come back as 0 (the tensor cores may flush it).
// Every output is poisoned with NaN first: an element the kernel must write and did not is NaN, and the
// padding columns past N must still be NaN. A second run must give the same bits (deterministic).
#include "core/core.h"

#if !GPTOSS_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 77;
}
#else

#include <float.h>

#include "gpu_test.h"
#include "model/cuda/cuda_ops.h"

static uint64_t g_seed = 20261124;

typedef struct gemm_case {
    const char *name;
    wformat fmt;
    int wt;               // 1: W_e (N, Kd), C = A W_e^T; 0: W_e (Kd, N), C = A W_e
    int a_bf16;           // A as bf16 bits, else fp32
    int inter;            // A element (r, k) from a0 (even k) or a1 (odd k) at column k / 2
    int gather;           // A rows through arow
    int bias, c1;         // bias (E, N); even n into c0, odd n into c1 at column n / 2
    int N, Kd;
    int lda_pad, ldc_pad; // extra columns of A's and C's rows (poisoned)
    int onehot;           // A(r, k) = (k == src % Kd), C compared bit for bit
    int s_lo, s_hi;       // MXFP4 scale bytes drawn from [s_lo, s_hi]
    int E;
    const int *rows;      // (E) slot rows per expert
} gemm_case;

// 24 random bits (gpu_test_rand's floats in [-1, 1) are at least 2^-24 apart).
static uint32_t rand_u32(void) { return (uint32_t)(((double)gpu_test_rand(&g_seed, 1.0f) + 1.0) * 8388608.0); }

// Expert e's weights: the device copy (into the E-expert arrays of ce) and the decoded bf16 values wd
// (rows, cols) as floats.
typedef struct expert_store {
    cuda_experts ce;
    void *dev[3];
    float **wd;
} expert_store;

static void experts_make(expert_store *x, const gemm_case *c, int rows, int cols) {
    const int E = c->E;
    const size_t n = (size_t)rows * cols;
    memset(x, 0, sizeof *x);
    x->ce.fmt = c->fmt, x->ce.E = E, x->ce.rows = rows, x->ce.cols = cols;
    x->wd = xmalloc((size_t)E * sizeof(float *));
    uint8_t *hb = NULL, *hs = NULL;
    float *ham = NULL, *hqm = NULL;
    uint16_t *hbf = NULL;
    if (c->fmt == WF_MXFP4) {
        hb = xmalloc((size_t)E * n / 2), hs = xmalloc((size_t)E * n / 32);
    } else if (c->fmt == WF_NF4) {
        x->ce.blocksize = 64, x->ce.nf4_bytes = (n + 1) / 2, x->ce.nf4_blocks = (n + 63) / 64;
        hb = xmalloc(E * x->ce.nf4_bytes), ham = xmalloc(E * x->ce.nf4_blocks * 4), hqm = xmalloc((size_t)E * 16 * 4);
    } else {
        hbf = xmalloc((size_t)E * n * 2);
    }
    for (int e = 0; e < E; e++) {
        qmatrix q;
        void *own = NULL;
        if (c->fmt == WF_MXFP4) { // random codes and scale bytes
            uint8_t *b = hb + e * n / 2, *s = hs + e * n / 32;
            for (size_t i = 0; i < n / 2; i++) b[i] = (uint8_t)rand_u32();
            for (size_t i = 0; i < n / 32; i++) s[i] = (uint8_t)(c->s_lo + rand_u32() % (uint32_t)(c->s_hi - c->s_lo + 1));
            memset(&q, 0, sizeof q);
            q.fmt = WF_MXFP4, q.rows = rows, q.cols = cols, q.blocks = b, q.scales = s;
        } else {
            float *w = rand_vec(&g_seed, n, 1.0f);
            own = qmatrix_from_f32(&q, c->fmt, w, rows, cols);
            free(w);
            if (c->fmt == WF_NF4) {
                memcpy(hb + e * x->ce.nf4_bytes, q.blocks, x->ce.nf4_bytes);
                memcpy(ham + e * x->ce.nf4_blocks, q.absmax, x->ce.nf4_blocks * 4);
                memcpy(hqm + (size_t)e * 16, q.quant_map, 16 * 4);
            } else {
                memcpy(hbf + e * n, q.bf16, n * 2);
            }
        }
        x->wd[e] = xmalloc(n * sizeof(float));
        qmatrix_dequant_rows(&q, 0, rows, x->wd[e]);
        round_bf16(x->wd[e], n); // NF4: the GPU rounds qmap * absmax to bf16; exact for MXFP4 and bf16
        free(own);
    }
    if (c->fmt == WF_MXFP4) {
        x->ce.blocks = x->dev[0] = gpu_dup(hb, (size_t)E * n / 2);
        x->ce.scales = x->dev[1] = gpu_dup(hs, (size_t)E * n / 32);
    } else if (c->fmt == WF_NF4) {
        x->ce.blocks = x->dev[0] = gpu_dup(hb, E * x->ce.nf4_bytes);
        x->ce.absmax = x->dev[1] = gpu_dup(ham, E * x->ce.nf4_blocks * 4);
        x->ce.qmap = x->dev[2] = gpu_dup(hqm, (size_t)E * 16 * 4);
    } else {
        x->ce.bf16 = x->dev[0] = gpu_dup(hbf, (size_t)E * n * 2);
    }
    free(hb), free(hs), free(ham), free(hqm), free(hbf);
}

static void experts_free(expert_store *x, int E) {
    for (int i = 0; i < 3; i++)
        if (x->dev[i]) cuda_free(x->dev[i]);
    for (int e = 0; e < E; e++) free(x->wd[e]);
    free(x->wd);
}

static void run_case(const gemm_case *c) {
    const int E = c->E, N = c->N, Kd = c->Kd;
    int S = 0;
    for (int e = 0; e < E; e++) S += c->rows[e];
    // off and the tile map as moe.cu's plan writes them: tile q = (expert, first row), (-1, 0) past the last.
    const int nt = cuda_moe_max_tiles(S, E);
    int32_t *off = xmalloc((size_t)(E + 1) * 4), *tiles = xmalloc((size_t)2 * nt * 4);
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + c->rows[e];
    int q = 0;
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r += CUDA_MOE_TILE_M, q++) tiles[2 * q] = e, tiles[2 * q + 1] = r;
    for (; q < nt; q++) tiles[2 * q] = -1, tiles[2 * q + 1] = 0;
    // A: T source rows of lda columns (padding NaN: a read past Kd shows), arow a permutation-like gather.
    const int T = c->gather ? S / 2 + 3 : S, acols = c->inter ? Kd / 2 : Kd, lda = acols + c->lda_pad;
    const size_t na = (size_t)T * lda;
    float *a0 = xmalloc(na * 4), *a1 = xmalloc(na * 4), *aref = xmalloc((size_t)T * Kd * 4);
    for (size_t i = 0; i < na; i++) a0[i] = a1[i] = NAN;
    for (int t = 0; t < T; t++)
        for (int k = 0; k < Kd; k++) {
            float v = c->onehot ? (float)(k == t % Kd) : gpu_test_rand(&g_seed, 1.0f);
            if (c->inter) (k & 1 ? a1 : a0)[(size_t)t * lda + k / 2] = v;
            else a0[(size_t)t * lda + k] = v;
            aref[(size_t)t * Kd + k] = bf16_to_f32(f32_to_bf16(v));
        }
    int32_t *arow = xmalloc((size_t)(S ? S : 1) * 4);
    for (int r = 0; r < S; r++) arow[r] = c->gather ? (int32_t)(rand_u32() % (uint32_t)T) : r;
    float *bias = rand_vec(&g_seed, (size_t)E * N, 0.5f);
    expert_store w;
    experts_make(&w, c, c->wt ? N : Kd, c->wt ? Kd : N);
    // Device
    void *da0, *da1 = NULL;
    if (c->a_bf16) {
        da0 = gpu_dup_bf16(a0, na);
        if (c->inter) da1 = gpu_dup_bf16(a1, na);
    } else {
        da0 = gpu_dup_f(a0, na);
        if (c->inter) da1 = gpu_dup_f(a1, na);
    }
    int32_t *darow = gpu_dup(arow, (size_t)(S ? S : 1) * 4), *doff = gpu_dup(off, (size_t)(E + 1) * 4);
    int32_t *dtiles = gpu_dup(tiles, (size_t)2 * nt * 4);
    float *dbias = gpu_dup_f(bias, (size_t)E * N);
    const int ncol = c->c1 ? N / 2 : N, ldc = ncol + c->ldc_pad;
    const size_t nc = (size_t)S * ldc;
    float *dc0 = gpu_poison(nc), *dc1 = c->c1 ? gpu_poison(nc) : NULL;
    cuda_moe_gemm_args g;
    memset(&g, 0, sizeof g);
    g.a0 = da0, g.a1 = da1, g.a_bf16 = c->a_bf16, g.arow = c->gather ? darow : NULL, g.lda = lda;
    g.w = w.ce, g.wt = c->wt, g.c0 = dc0, g.c1 = dc1, g.ldc = ldc, g.bias = c->bias ? dbias : NULL;
    g.N = N, g.Kd = Kd, g.tiles = dtiles, g.off = doff;
    cuda_moe_gemm(&g, S, E);
    float *h0 = gpu_get(dc0, nc), *h1 = c->c1 ? gpu_get(dc1, nc) : NULL;
    cuda_moe_gemm(&g, S, E); // again over its own output: the same bits
    float *k0 = gpu_get(dc0, nc), *k1 = c->c1 ? gpu_get(dc1, nc) : NULL;
    // Compare
    double worst = 0.0;
    long bad = 0, first = -1, pad_bad = 0;
    double wgot = 0.0, wref = 0.0;
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r++) {
            const float *ar = aref + (size_t)arow[r] * Kd;
            for (int n = 0; n < N; n++) {
                double ref = c->bias ? bias[(size_t)e * N + n] : 0.0, mag = fabs(ref);
                for (int k = 0; k < Kd; k++) {
                    const double t = (double)ar[k] * (c->wt ? w.wd[e][(size_t)n * Kd + k] : w.wd[e][(size_t)k * N + n]);
                    ref += t, mag += fabs(t);
                }
                const size_t at = (size_t)r * ldc + (c->c1 ? n / 2 : n);
                const float got = c->c1 && (n & 1) ? h1[at] : h0[at];
                double err;
                int ok;
                if (c->onehot) {
                    ok = got == (float)ref || (fabs(ref) < FLT_MIN && got == 0.0f);
                    err = ok ? 0.0 : 1.0;
                } else {
                    const double tol = (Kd + 2) * 0x1p-23 * mag + 1e-30;
                    err = fabs((double)got - ref) / tol;
                    ok = err <= 1.0; // false for NaN
                }
                if (!ok && first < 0) first = (long)r * N + n, wgot = got, wref = ref;
                bad += !ok;
                if (ok && err > worst) worst = err;
            }
            for (int j = ncol; j < ldc; j++) pad_bad += !isnan(h0[(size_t)r * ldc + j]) || (h1 && !isnan(h1[(size_t)r * ldc + j]));
        }
    const int same = !memcmp(h0, k0, nc * 4) && (!h1 || !memcmp(h1, k1, nc * 4));
    const int fail = bad || pad_bad || !same;
    printf("%s %-44s S %d N %d Kd %d: %s %.3g of tol", fail ? "FAIL" : "ok  ", c->name, S, N, Kd,
           c->onehot ? "bitwise; worst" : "worst err", worst);
    if (bad) printf("; %ld wrong, first (r %ld, n %ld) got %.9g ref %.9g", bad, first / N, first % N, wgot, wref);
    if (pad_bad) printf("; %ld padding elements written", pad_bad);
    if (!same) printf("; second run differs");
    printf("\n");
    g_failures += fail;
    experts_free(&w, E);
    void *d[] = {da0, da1, darow, doff, dtiles, dbias, dc0, dc1};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i]) cuda_free(d[i]);
    free(off), free(tiles), free(a0), free(a1), free(aref), free(arow), free(bias), free(h0), free(h1), free(k0);
    free(k1);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    // Rows per expert: R1 has tiles ending inside experts (130 = 128 + 2, 257 = 2 * 128 + 1), an empty
    // expert, a one-row expert and an unused tile at the end of the map; R2 three smaller experts.
    static const int R1[4] = {130, 0, 1, 257}, R2[3] = {64, 200, 3};
    const gemm_case cases[] = {
        // name                                      fmt       wt bf inter gath bias c1  N    Kd  lp lc oh slo shi E  rows
        {"mxfp4 fwd gate_up (bf16 A, arow, c0/c1)", WF_MXFP4, 1, 1, 0, 1, 1, 1, 576, 96, 0, 0, 0, 118, 130, 4, R1},
        {"mxfp4 fwd down (bf16 A, odd ldc)", WF_MXFP4, 1, 1, 0, 0, 1, 0, 320, 160, 0, 1, 0, 118, 130, 3, R2},
        {"mxfp4 bwd down (fp32 A)", WF_MXFP4, 0, 0, 0, 0, 0, 0, 192, 320, 0, 0, 0, 118, 130, 4, R1},
        {"mxfp4 bwd gate_up (fp32 a0/a1)", WF_MXFP4, 0, 0, 1, 0, 0, 0, 96, 192, 0, 0, 0, 118, 130, 4, R1},
        {"mxfp4 wt 0, bf16 a0/a1, arow, bias", WF_MXFP4, 0, 1, 1, 1, 1, 0, 256, 64, 0, 0, 0, 118, 130, 3, R2},
        {"mxfp4 wt 1 one-hot, scales 0..252", WF_MXFP4, 1, 1, 0, 0, 0, 0, 288, 256, 0, 0, 1, 0, 252, 3, R2},
        {"mxfp4 wt 0 one-hot, fp32 a0/a1, scales 0..252", WF_MXFP4, 0, 0, 1, 1, 0, 0, 320, 256, 0, 0, 1, 0, 252, 4,
         R1},
        {"nf4 wt 1 (bf16 A, lda 37, arow, c0/c1)", WF_NF4, 1, 1, 0, 1, 1, 1, 40, 36, 1, 1, 0, 0, 0, 3, R2},
        {"nf4 wt 0 (fp32 a0/a1, lda 21)", WF_NF4, 0, 0, 1, 0, 1, 0, 36, 40, 1, 1, 0, 0, 0, 4, R1},
        {"bf16 wt 1 (fp32 A)", WF_BF16, 1, 0, 0, 0, 1, 0, 300, 50, 0, 0, 0, 0, 0, 3, R2},
        {"bf16 wt 0 (bf16 A, arow)", WF_BF16, 0, 1, 0, 1, 0, 0, 72, 70, 2, 0, 0, 0, 0, 4, R1},
        // Plain bf16 rows with lda % 8 == 0 and Kd % 8 == 0 take the cp.async path for A: one k step (the
        // pipeline's prologue alone), a k edge inside a step, padded rows, both weight layouts.
        {"mxfp4 wt 1 one k step (Kd 32, lda 40, arow)", WF_MXFP4, 1, 1, 0, 1, 1, 0, 136, 32, 8, 0, 0, 118, 130, 4, R1},
        {"bf16 wt 1 one k step (Kd 24)", WF_BF16, 1, 1, 0, 0, 0, 0, 130, 24, 0, 0, 0, 0, 0, 3, R2},
        {"bf16 wt 0 (bf16 A, Kd 72, lda 80, arow, bias)", WF_BF16, 0, 1, 0, 1, 1, 0, 200, 72, 8, 0, 0, 0, 0, 4, R1},
        {"mxfp4 wt 0 one k step (fp32 A, Kd 32)", WF_MXFP4, 0, 0, 0, 0, 0, 0, 160, 32, 0, 0, 0, 118, 130, 3, R2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    return gpu_test_finish();
}
#endif
