// tests/test_gpu_lora.c: model/cuda/lora.cu, the LoRA funnel on the GPU, against model/cpu/lora.c: the dense
// funnel (cuda_lora_forward/backward), the expert funnel (cuda_lora_experts_*: slot rows sorted by expert,
// x gathered through xrow, bf16) against the CPU funnel run expert by expert, and the narrow product
// (cuda_narrow_xwt, the router's logits) against a double-precision host product. Shapes at the kernels'
// edges: one row; row counts off the 16- and 32-row tiles and past the 256-row chunk of the gradient
// reduction; experts that straddle tiles, an empty one; K past one 512-wide staged chunk; R
// past one 8-column rank group (3, 8, 12, 20, 32); widths that take the vector loads and widths that take
// the scalar ones (odd sizes). z and dz poisoned with NaN first; y, dx, dA, dB accumulate onto random
// values. Determinism: a second run on the same inputs must give the same bits. Skips without a GPU.
//
// Tolerance 1e-5 norm-wise (gpu_test.h): both sides compute in fp32 from the same fp32 (or bf16-exact)
// inputs and differ only in the order of their sums (<= 1040 terms: ~sqrt(n) 2^-24 = 2e-6 relative).
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

static uint64_t g_seed = 20261124;

#define LORA_TOL 1e-5 // fp32 on both sides, sum order only (see the top)

static int same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

// ---------------------------------------------------------------------------------------------------
static void test_dense(int M, int in, int out, int R) {
    const float scale = 2.0f;
    pair_buf p;
    pair_make(&p, &g_seed, R, in, out);
    float *x = rand_vec(&g_seed, (size_t)M * in, 1.0f), *y = rand_vec(&g_seed, (size_t)M * out, 1.0f);
    float *dy = rand_vec(&g_seed, (size_t)M * out, 1.0f), *dx = rand_vec(&g_seed, (size_t)M * in, 1.0f);
    round_bf16(x, (size_t)M * in); // the projection's input is a bf16 activation
    uint16_t *gx = gpu_dup_bf16(x, (size_t)M * in);
    float *gdy = gpu_dup_f(dy, (size_t)M * out);
    float *gy = gpu_dup_f(y, (size_t)M * out), *gdx = gpu_dup_f(dx, (size_t)M * in);
    float *gz = gpu_poison((size_t)M * R), *gdz = gpu_poison((size_t)M * R);
    float *dA0 = gpu_get(p.d.dA, (size_t)R * in), *dB0 = gpu_get(p.d.dB, (size_t)out * R);
    float *z = xmalloc((size_t)M * R * 4), *dz = xmalloc((size_t)M * R * 4);
    cuda_lora_forward(gy, gz, gx, &p.d, M, in, out, R, scale);
    cuda_lora_backward(gdx, gdz, gdy, gx, gz, &p.d, M, in, out, R, scale);
    float *ry = gpu_get(gy, (size_t)M * out), *rz = gpu_get(gz, (size_t)M * R), *rdx = gpu_get(gdx, (size_t)M * in);
    float *rdz = gpu_get(gdz, (size_t)M * R);
    float *rdA = gpu_get(p.d.dA, (size_t)R * in), *rdB = gpu_get(p.d.dB, (size_t)out * R);
    // Run 2 from the same starting values: the same bits.
    cuda_h2d(gy, y, (size_t)M * out * 4), cuda_h2d(gdx, dx, (size_t)M * in * 4);
    cuda_h2d(p.d.dA, dA0, (size_t)R * in * 4), cuda_h2d(p.d.dB, dB0, (size_t)out * R * 4);
    cuda_lora_forward(gy, gz, gx, &p.d, M, in, out, R, scale);
    cuda_lora_backward(gdx, gdz, gdy, gx, gz, &p.d, M, in, out, R, scale);
    float *sy = gpu_get(gy, (size_t)M * out), *sdx = gpu_get(gdx, (size_t)M * in);
    float *sdA = gpu_get(p.d.dA, (size_t)R * in), *sdB = gpu_get(p.d.dB, (size_t)out * R);
    cpu_lora_forward(y, z, x, &p.h, M, in, out, R, scale);
    cpu_lora_backward(dx, dz, dy, x, z, &p.h, M, in, out, R, scale);
    char what[96];
    snprintf(what, sizeof what, "dense M%d in%d out%d R%d", M, in, out, R);
    char w[128];
    snprintf(w, sizeof w, "%s forward y (+=)", what);
    check_close(w, ry, y, (size_t)M * out, LORA_TOL);
    snprintf(w, sizeof w, "%s forward z", what);
    check_close(w, rz, z, (size_t)M * R, LORA_TOL);
    snprintf(w, sizeof w, "%s backward dz", what);
    check_close(w, rdz, dz, (size_t)M * R, LORA_TOL);
    snprintf(w, sizeof w, "%s backward dx (+=)", what);
    check_close(w, rdx, dx, (size_t)M * in, LORA_TOL);
    pair_check(what, &p, R, in, out, LORA_TOL);
    snprintf(w, sizeof w, "%s run twice: same bits", what);
    check_true(w, same_bits(sy, ry, (size_t)M * out) && same_bits(sdx, rdx, (size_t)M * in) &&
                      same_bits(sdA, rdA, (size_t)R * in) && same_bits(sdB, rdB, (size_t)out * R));
    pair_free(&p);
    cuda_free(gx), cuda_free(gy), cuda_free(gz), cuda_free(gdy), cuda_free(gdx), cuda_free(gdz);
    void *h[] = {x, y, dy, dx, z, dz, dA0, dB0, ry, rz, rdx, rdz, rdA, rdB, sy, sdx, sdA, sdB};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) free(h[i]);
}

// ---------------------------------------------------------------------------------------------------
// E experts owning n[e] consecutive slot rows each (S in all); slot r reads token xrow[r] of x (T, in),
// T = S / 2 + 1 (tokens repeat, as with top-K routing). The CPU runs its funnel once per expert on the
// gathered rows.
#define MAX_E 8
static void test_experts(const int *n, int E, int in, int out, int R) {
    const float scale = 0.5f;
    int32_t off[MAX_E + 1];
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + n[e];
    const int S = off[E], T = S / 2 + 1;
    int32_t *xrow = xmalloc((size_t)S * 4);
    for (int r = 0; r < S; r++) xrow[r] = (int32_t)((r * 7 + 3) % T);
    pair_buf p[MAX_E];
    lora_pair dp[MAX_E];
    for (int e = 0; e < E; e++) pair_make(&p[e], &g_seed, R, in, out), dp[e] = p[e].d;
    float *x = rand_vec(&g_seed, (size_t)T * in, 1.0f);
    round_bf16(x, (size_t)T * in); // the GPU reads x as bf16: the CPU gets the same values
    float *y = rand_vec(&g_seed, (size_t)S * out, 1.0f), *dy = rand_vec(&g_seed, (size_t)S * out, 1.0f);
    float *dx = rand_vec(&g_seed, (size_t)S * in, 1.0f);
    uint16_t *gx = gpu_dup_bf16(x, (size_t)T * in);
    int32_t *gxrow = gpu_dup(xrow, (size_t)S * 4), *goff = gpu_dup(off, (size_t)(E + 1) * 4);
    lora_pair *gp = gpu_dup(dp, (size_t)E * sizeof(lora_pair));
    float *gy = gpu_dup_f(y, (size_t)S * out), *gdy = gpu_dup_f(dy, (size_t)S * out);
    float *gdx = gpu_dup_f(dx, (size_t)S * in);
    float *gz = gpu_poison((size_t)S * R), *gdz = gpu_poison((size_t)S * R);
    float *dA0[MAX_E], *dB0[MAX_E];
    for (int e = 0; e < E; e++)
        dA0[e] = gpu_get(p[e].d.dA, (size_t)R * in), dB0[e] = gpu_get(p[e].d.dB, (size_t)out * R);
    cuda_lora_experts_forward(gy, gz, gx, gxrow, gp, goff, S, E, in, out, R, scale);
    cuda_lora_experts_backward(gdx, gdz, gdy, gx, gxrow, gz, gp, goff, S, E, in, out, R, scale);
    float *ry = gpu_get(gy, (size_t)S * out), *rz = gpu_get(gz, (size_t)S * R), *rdx = gpu_get(gdx, (size_t)S * in);
    float *rdz = gpu_get(gdz, (size_t)S * R);
    float *rdA[MAX_E], *rdB[MAX_E];
    for (int e = 0; e < E; e++)
        rdA[e] = gpu_get(p[e].d.dA, (size_t)R * in), rdB[e] = gpu_get(p[e].d.dB, (size_t)out * R);
    // Run 2 from the same starting values.
    cuda_h2d(gy, y, (size_t)S * out * 4), cuda_h2d(gdx, dx, (size_t)S * in * 4);
    for (int e = 0; e < E; e++)
        cuda_h2d(p[e].d.dA, dA0[e], (size_t)R * in * 4), cuda_h2d(p[e].d.dB, dB0[e], (size_t)out * R * 4);
    cuda_lora_experts_forward(gy, gz, gx, gxrow, gp, goff, S, E, in, out, R, scale);
    cuda_lora_experts_backward(gdx, gdz, gdy, gx, gxrow, gz, gp, goff, S, E, in, out, R, scale);
    float *sy = gpu_get(gy, (size_t)S * out), *sdx = gpu_get(gdx, (size_t)S * in);
    int same = same_bits(sy, ry, (size_t)S * out) && same_bits(sdx, rdx, (size_t)S * in);
    for (int e = 0; e < E; e++) {
        float *a = gpu_get(p[e].d.dA, (size_t)R * in), *b = gpu_get(p[e].d.dB, (size_t)out * R);
        same = same && same_bits(a, rdA[e], (size_t)R * in) && same_bits(b, rdB[e], (size_t)out * R);
        free(a), free(b);
    }
    // CPU, expert by expert: y, z, dy, dx, dz rows are the expert's slot rows; x rows gathered.
    float *z = xmalloc((size_t)S * R * 4), *dz = xmalloc((size_t)S * R * 4), *xs = xmalloc((size_t)S * in * 4);
    for (int r = 0; r < S; r++) memcpy(xs + (size_t)r * in, x + (size_t)xrow[r] * in, (size_t)in * 4);
    for (int e = 0; e < E; e++) {
        const size_t r0 = off[e];
        cpu_lora_forward(y + r0 * out, z + r0 * R, xs + r0 * in, &p[e].h, n[e], in, out, R, scale);
        cpu_lora_backward(dx + r0 * in, dz + r0 * R, dy + r0 * out, xs + r0 * in, z + r0 * R, &p[e].h, n[e], in, out,
                          R, scale);
    }
    char what[96], w[160];
    int len = snprintf(what, sizeof what, "experts in%d out%d R%d rows", in, out, R);
    for (int e = 0; e < E && len < (int)sizeof what; e++) len += snprintf(what + len, sizeof what - len, " %d", n[e]);
    snprintf(w, sizeof w, "%s: y (+=)", what);
    check_close(w, ry, y, (size_t)S * out, LORA_TOL);
    snprintf(w, sizeof w, "%s: z", what);
    check_close(w, rz, z, (size_t)S * R, LORA_TOL);
    snprintf(w, sizeof w, "%s: dz", what);
    check_close(w, rdz, dz, (size_t)S * R, LORA_TOL);
    snprintf(w, sizeof w, "%s: dx (+=)", what);
    check_close(w, rdx, dx, (size_t)S * in, LORA_TOL);
    for (int e = 0; e < E; e++) {
        snprintf(w, sizeof w, "%s: expert %d dA (+=)", what, e);
        check_close(w, rdA[e], p[e].h.dA, (size_t)R * in, LORA_TOL);
        snprintf(w, sizeof w, "%s: expert %d dB (+=)", what, e);
        check_close(w, rdB[e], p[e].h.dB, (size_t)out * R, LORA_TOL);
    }
    snprintf(w, sizeof w, "%s: run twice, same bits", what);
    check_true(w, same);
    for (int e = 0; e < E; e++) pair_free(&p[e]), free(dA0[e]), free(dB0[e]), free(rdA[e]), free(rdB[e]);
    void *d[] = {gx, gxrow, goff, gp, gy, gdy, gdx, gz, gdz};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) cuda_free(d[i]);
    void *h[] = {xrow, x, y, dy, dx, ry, rz, rdx, rdz, sy, sdx, z, dz, xs};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) free(h[i]);
}

// ---------------------------------------------------------------------------------------------------
// The router's shape: z (M, N) = x W^T (x bf16), against a double host product.
static void test_narrow(int M, int K, int N) {
    float *x = rand_vec(&g_seed, (size_t)M * K, 1.0f), *W = rand_vec(&g_seed, (size_t)N * K, 0.3f);
    round_bf16(x, (size_t)M * K);
    float *z = xmalloc((size_t)M * N * 4);
    for (int m = 0; m < M; m++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * K + k] * W[(size_t)j * K + k];
            z[(size_t)m * N + j] = (float)s;
        }
    uint16_t *gx = gpu_dup_bf16(x, (size_t)M * K);
    float *gW = gpu_dup_f(W, (size_t)N * K), *gz = gpu_poison((size_t)M * N);
    cuda_narrow_xwt(gz, gx, gW, M, K, N);
    float *rz = gpu_get(gz, (size_t)M * N);
    char w[96];
    snprintf(w, sizeof w, "narrow z = x W^T M%d K%d N%d", M, K, N);
    check_close(w, rz, z, (size_t)M * N, LORA_TOL);
    cuda_free(gx), cuda_free(gW), cuda_free(gz);
    free(x), free(W), free(z), free(rz);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    // Dense: scalar loads (odd widths), one row, vector loads with K past a chunk and 3 rank groups.
    test_dense(37, 50, 70, 8);
    test_dense(1, 64, 96, 8);
    test_dense(33, 36, 12, 3);
    test_dense(300, 520, 1032, 20);
    // Experts: boundaries inside the 16/32-row tiles, an empty expert, one past a 256-row chunk; bf16 x
    // with vector loads (in % 8 == 0) and without, K past two 512-wide chunks, two rank groups.
    const int n1[5] = {7, 300, 0, 1, 33}, n2[3] = {0, 19, 5}, n3[4] = {40, 1, 17, 0};
    test_experts(n1, 5, 72, 40, 8);
    test_experts(n2, 3, 50, 70, 8);
    test_experts(n3, 4, 1040, 24, 12);
    // Router: E = 32 (4 rank groups), and odd sizes.
    test_narrow(37, 72, 32);
    test_narrow(5, 50, 3);
    return gpu_test_finish();
}
#endif
