// tests/test_gpu_optim.c: the GPU optimizer (optim/cuda/) against the CPU one (optim/): 8-bit AdamW
// (8-bit and small fp32-state segments) and fp32 AdamW over three steps with fresh gradients each step
// (one of them non-finite), then the global norm and clipping. The GPU kernels repeat the CPU arithmetic
// operation by operation with explicit rounding (optim/cuda/adamw.cu), so parameters and every state
// byte must be identical; the norm is a double sum in another order: 1e-12 relative.
#include "core/core.h"

#if !GPTOSS_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 77;
}
#else

#include "gpu_test.h"
#include "optim/optim.h"

static uint64_t g_seed = 77;

static void run_kind(optim_kind kind) {
    // Segments: an 8-bit one with a partial last block, a small one (fp32 state under 8-bit), a large one.
    const size_t sizes[3] = {5000, 300, 2 * 4096 + 17};
    size_t n = 0;
    for (int i = 0; i < 3; i++) n += sizes[i];
    float *params = rand_vec(&g_seed, n, 1.0f), *grads = calloc(n, sizeof(float));
    float *dp = gpu_dup_f(params, n), *dg = gpu_dup_f(grads, n);
    optim_segment segs[3];
    for (int i = 0, off = 0; i < 3; off += (int)sizes[i], i++) segs[i] = (optim_segment){params + off, grads + off, sizes[i]};
    optim_config cfg = {kind, 0.9, 0.999, 1e-8, 0.01, OPTIM_MIN_8BIT_SIZE};
    optim host;
    gt_error err = {0};
    CHECK(optim_init(&host, &cfg, segs, 3, &err) == GT_OK);
    optim_cuda *dev = NULL;
    CHECK(optim_cuda_init(&dev, &host, params, grads, n, dp, dg, &err) == GT_OK);
    const char *name = kind == OPTIM_ADAMW ? "adamw" : "adamw8";
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < n; i++) grads[i] = gpu_test_rand(&g_seed, 0.01f);
        if (step == 1 && kind == OPTIM_ADAMW_8BIT) grads[17] = NAN; // bnb: that element keeps its parameter
        cuda_h2d(dg, grads, n * sizeof(float));
        double lr = 1e-3 * (step + 1);
        optim_step(&host, lr);
        optim_cuda_step(dev, lr);
    }
    float *gp = gpu_get(dp, n);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&gp[i], &params[i], 4) && !bad++) first = i;
    char what[160];
    snprintf(what, sizeof what, "%s 3 steps: parameters bit-identical (%zu differ, first [%zu] %.9g vs %.9g)", name,
             bad, first, gp[first], params[first]);
    check_true(what, bad == 0);
    optim pulled;
    CHECK(optim_init(&pulled, &cfg, segs, 3, &err) == GT_OK);
    optim_cuda_pull(dev, &pulled);
    bad = 0;
    for (size_t i = 0; i < host.arena_bytes; i++)
        if (host.arena[i] != pulled.arena[i] && !bad++) first = i;
    snprintf(what, sizeof what, "%s state bytes identical, step %lld (%zu of %zu differ, first at %zu)", name,
             (long long)pulled.step, bad, host.arena_bytes, first);
    check_true(what, bad == 0 && pulled.step == host.step);
    // Norm and clipping (finite gradients).
    for (size_t i = 0; i < n; i++) grads[i] = gpu_test_rand(&g_seed, 1.0f);
    cuda_h2d(dg, grads, n * sizeof(float));
    double n_gpu = optim_cuda_grad_clip(dev, 1.0), n_cpu = optim_grad_clip(segs, 3, 1.0);
    snprintf(what, sizeof what, "%s grad norm %.17g vs %.17g", name, n_gpu, n_cpu);
    check_true(what, fabs(n_gpu - n_cpu) <= 1e-12 * n_cpu);
    float *gg = gpu_get(dg, n);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&gg[i], &grads[i], 4) != 0;
    snprintf(what, sizeof what, "%s clipped gradients bit-identical (%zu differ)", name, bad);
    check_true(what, bad == 0);
    optim_free(&pulled);
    optim_free(&host);
    optim_cuda_free(dev);
    cuda_free(dp), cuda_free(dg);
    free(params), free(grads), free(gp), free(gg);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    run_kind(OPTIM_ADAMW_8BIT);
    run_kind(OPTIM_ADAMW);
    cuda_gemm_free();
    printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "passed", g_failures);
    return g_failures ? 1 : 0;
}
#endif
