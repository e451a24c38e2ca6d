// tests/gpu_test.h: helpers for the GPU tests (tests/test_gpu_*.c): device copies, NaN poisoning and the
// comparison that prints the worst element. Header-only test support (static functions). Include only
// inside #if GPTOSS_HAVE_CUDA.
//
// check_close compares by the norm-wise relative error ||got - ref|| / ||ref|| (device METHOD.md's
// measure); each caller states where its tolerance comes from. A NaN anywhere fails: outputs are
// poisoned with NaN before a kernel runs, so an element the kernel never wrote shows up as NaN.
#ifndef GPTOSS_TESTS_GPU_TEST_H
#define GPTOSS_TESTS_GPU_TEST_H

#include <math.h>
#include <stdlib.h>

#include "core/cuda_rt.h"
#include "model/model.h"

static int g_failures;

static inline void *gpu_dup(const void *h, size_t bytes) {
    void *d = cuda_malloc(bytes);
    cuda_h2d(d, h, bytes);
    return d;
}
static inline float *gpu_dup_f(const float *h, size_t n) { return (float *)gpu_dup(h, n * sizeof(float)); }
static inline float *gpu_poison(size_t n) {
    float *d = (float *)cuda_malloc(n * sizeof(float));
    cuda_fill_f32(d, NAN, n);
    return d;
}
static inline float *gpu_get(const float *d, size_t n) {
    float *h = (float *)xmalloc((n ? n : 1) * sizeof(float));
    cuda_sync();
    cuda_d2h(h, d, n * sizeof(float));
    return h;
}
// bf16 bits of x (round to nearest even) and x rounded to bf16 in place.
static inline uint16_t *host_bf16(const float *x, size_t n) {
    uint16_t *h = (uint16_t *)xmalloc((n ? n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
    return h;
}
static inline void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
static inline uint16_t *gpu_dup_bf16(const float *x, size_t n) {
    uint16_t *h = host_bf16(x, n);
    uint16_t *d = (uint16_t *)gpu_dup(h, n * sizeof(uint16_t));
    free(h);
    return d;
}

// Fails (and prints the worst element) when got has a NaN where ref has none, or when the norm-wise
// relative error exceeds rtol. Returns the error.
static inline double check_close(const char *what, const float *got, const float *ref, size_t n, double rtol) {
    double num = 0.0, den = 0.0, worst = -1.0;
    size_t wi = 0, nan_at = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) && !isnan(ref[i])) {
            if (nan_at == (size_t)-1) nan_at = i;
            continue;
        }
        double d = (double)got[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
        if (fabs(d) > worst) worst = fabs(d), wi = i;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int bad = nan_at != (size_t)-1 || !(rel <= rtol);
    printf("%s %-40s rel err %.3g (tol %.1g)", bad ? "FAIL" : "ok  ", what, rel, rtol);
    if (nan_at != (size_t)-1) printf("; NaN (unwritten?) at [%zu]", nan_at);
    if (bad && n) printf("; worst [%zu] got %.9g ref %.9g", wi, got[wi], ref[wi]);
    printf("\n");
    g_failures += bad;
    return rel;
}

static inline void check_true(const char *what, int ok) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    g_failures += !ok;
}

// Uniform in [-scale, scale) from a splitmix64 stream.
static inline float gpu_test_rand(uint64_t *s, float scale) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((2.0 * ((double)(z >> 11) / 9007199254740992.0) - 1.0) * scale);
}
static inline float *rand_vec(uint64_t *s, size_t n, float scale) {
    float *p = (float *)xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = gpu_test_rand(s, scale);
    return p;
}

// bf16 device buffers: poisoned with 0xffff (a bf16 NaN), read back as bits or as floats.
static inline uint16_t *gpu_poison_bf16(size_t n) {
    uint16_t *d = (uint16_t *)cuda_malloc((n ? n : 1) * sizeof(uint16_t));
    cuda_memset(d, 0xff, n * sizeof(uint16_t));
    return d;
}
static inline uint16_t *gpu_get_bits(const uint16_t *d, size_t n) {
    uint16_t *h = (uint16_t *)xmalloc((n ? n : 1) * sizeof(uint16_t));
    cuda_sync();
    cuda_d2h(h, d, n * sizeof(uint16_t));
    return h;
}
static inline float *gpu_get_bf16(const uint16_t *d, size_t n) {
    uint16_t *h = gpu_get_bits(d, n);
    float *f = (float *)xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(h[i]);
    free(h);
    return f;
}

// One LoRA pair (A (R, in), B (out, R), dA, dB random) on the host (h) and a device copy (d).
typedef struct pair_buf {
    lora_pair h, d;
} pair_buf;

static inline void pair_make(pair_buf *p, uint64_t *seed, int R, int in, int out) {
    p->h.A = rand_vec(seed, (size_t)R * in, 0.3f), p->h.B = rand_vec(seed, (size_t)out * R, 0.3f);
    p->h.dA = rand_vec(seed, (size_t)R * in, 0.1f), p->h.dB = rand_vec(seed, (size_t)out * R, 0.1f);
    p->d.A = gpu_dup_f(p->h.A, (size_t)R * in), p->d.B = gpu_dup_f(p->h.B, (size_t)out * R);
    p->d.dA = gpu_dup_f(p->h.dA, (size_t)R * in), p->d.dB = gpu_dup_f(p->h.dB, (size_t)out * R);
}
static inline void pair_free(pair_buf *p) {
    free(p->h.A), free(p->h.B), free(p->h.dA), free(p->h.dB);
    cuda_free(p->d.A), cuda_free(p->d.B), cuda_free(p->d.dA), cuda_free(p->d.dB);
}
// The device dA, dB against the host ones.
static inline void pair_check(const char *what, pair_buf *p, int R, int in, int out, double tol) {
    char w[128];
    float *a = gpu_get(p->d.dA, (size_t)R * in), *b = gpu_get(p->d.dB, (size_t)out * R);
    snprintf(w, sizeof w, "%s dA (+=)", what);
    check_close(w, a, p->h.dA, (size_t)R * in, tol);
    snprintf(w, sizeof w, "%s dB (+=)", what);
    check_close(w, b, p->h.dB, (size_t)out * R, tol);
    free(a), free(b);
}

// The end of every GPU test's main: frees cuBLASLt, prints the verdict, returns the exit status.
static inline int gpu_test_finish(void) {
    cuda_gemm_free();
    printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "passed", g_failures);
    return g_failures ? 1 : 0;
}

#endif
