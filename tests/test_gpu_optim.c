// tests/test_gpu_optim.c: the GPU optimizer step (optim_cuda_clip_step + optim_cuda_finish) against the CPU
// one (optim_grad_clip then optim_step, skipped as the trainer skips it), for 8-bit AdamW (8-bit segments
// and a small one with fp32 state) and fp32 AdamW, over a sequence of steps with fresh gradients:
// clipped, skipped for a NaN gradient element, skipped for a NaN loss on the device, not clipped
// (max_norm above the norm), clipping off (max_norm 0). After every step the parameters, the gradients
// (clipped or untouched), every state byte and the step count must be identical: the GPU kernels repeat
// the CPU arithmetic operation by operation with explicit rounding (optim/cuda/adamw.cu); a skipped step
// must leave them all as they were, and a wrongly counted step would change the bias corrections of the
// next one. The norm is a double sum in another order: 1e-12 relative (double rounding over ~10^4 terms).
// Every step after the first runs behind a stream hold (cuda_hold_begin): clip_step must only enqueue.
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

typedef struct step_case {
    const char *what;
    double max_norm;
    int nan_grad; // one gradient element NaN: the norm is NaN
    int dev_loss; // pass a device loss (else NULL)
    double loss;  // its value
} step_case;

// Gradients uniform in [-1, 1): norm ~ 67 over the 13,509 elements, so max_norm 1 clips and 1e3 does not.
static const step_case k_cases[] = {
    {"clipped, no loss", 1.0, 0, 0, 0.0}, // also the warm-up: every kernel launched once before a hold
    {"NaN gradient: skipped", 1.0, 1, 1, 2.5},
    {"clipped, loss 2.5", 1.0, 0, 1, 2.5},
    {"NaN loss: skipped", 1.0, 0, 1, NAN},
    {"+Inf loss: skipped", 1.0, 0, 1, INFINITY},
    {"max_norm 1e3: not clipped", 1e3, 0, 1, 0.75},
    {"max_norm 0: clipping off", 0.0, 0, 0, 0.0},
    {"clipped again", 0.5, 0, 1, 1.25},
};

// Number of elem-byte elements of a and b that differ bitwise; *first: the first of them.
static size_t count_diff(const void *a, const void *b, size_t n, size_t elem, size_t *first) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp((const char *)a + i * elem, (const char *)b + i * elem, elem) && !bad++) *first = i;
    return bad;
}

// Device parameters, gradients, state bytes and step against the host optimizer's.
static void compare(const char *tag, optim_cuda *dev, const optim *host, const float *params, const float *grads,
                    const float *dp, const float *dg, size_t n) {
    char what[200];
    float *gp = gpu_get(dp, n), *gg = gpu_get(dg, n);
    size_t first = 0, bad = count_diff(gp, params, n, 4, &first);
    snprintf(what, sizeof what, "%s: parameters bit-identical (%zu differ, first [%zu] %.9g vs %.9g)", tag, bad,
             first, gp[first], params[first]);
    check_true(what, bad == 0);
    first = 0, bad = count_diff(gg, grads, n, 4, &first);
    snprintf(what, sizeof what, "%s: gradients bit-identical (%zu differ, first [%zu] %.9g vs %.9g)", tag, bad,
             first, gg[first], grads[first]);
    check_true(what, bad == 0);
    optim pulled;
    gt_error err = {0};
    CHECK(optim_init(&pulled, &host->cfg, host->seg, host->n_seg, &err) == GT_OK);
    optim_cuda_pull(dev, &pulled);
    first = 0, bad = count_diff(pulled.arena, host->arena, host->arena_bytes, 1, &first);
    snprintf(what, sizeof what, "%s: state bytes identical, step %lld vs %lld (%zu of %zu differ, first at %zu)",
             tag, (long long)pulled.step, (long long)host->step, bad, host->arena_bytes, first);
    check_true(what, bad == 0 && pulled.step == host->step);
    optim_free(&pulled);
    free(gp), free(gg);
}

static void run_kind(optim_kind kind) {
    // Segments: an 8-bit one with a partial last block, a small one (fp32 state under 8-bit), a large one.
    const size_t sizes[3] = {5000, 300, 2 * 4096 + 17};
    size_t n = 0;
    for (int i = 0; i < 3; i++) n += sizes[i];
    float *params = rand_vec(&g_seed, n, 1.0f), *grads = calloc(n, sizeof(float));
    float *dp = gpu_dup_f(params, n), *dg = gpu_dup_f(grads, n);
    double *dloss = cuda_malloc(sizeof(double));
    optim_segment segs[3];
    for (int i = 0, off = 0; i < 3; off += (int)sizes[i], i++) segs[i] = (optim_segment){params + off, grads + off, sizes[i]};
    optim_config cfg = {kind, 0.9, 0.999, 1e-8, 0.01, OPTIM_MIN_8BIT_SIZE};
    optim host;
    gt_error err = {0};
    CHECK(optim_init(&host, &cfg, segs, 3, &err) == GT_OK);
    optim_cuda *dev = NULL;
    CHECK(optim_cuda_init(&dev, &host, params, grads, n, dp, dg, &err) == GT_OK);
    const char *name = kind == OPTIM_ADAMW ? "adamw" : "adamw8";
    for (size_t s = 0; s < sizeof k_cases / sizeof k_cases[0]; s++) {
        const step_case *c = &k_cases[s];
        char tag[120], what[200];
        snprintf(tag, sizeof tag, "%s step %zu (%s)", name, s, c->what);
        for (size_t i = 0; i < n; i++) grads[i] = gpu_test_rand(&g_seed, 1.0f);
        if (c->nan_grad) grads[sizes[0] + 17] = NAN; // in the small fp32-state segment
        cuda_h2d(dg, grads, n * sizeof(float));
        if (c->dev_loss) cuda_h2d(dloss, &c->loss, sizeof(double));
        const double lr = 1e-3 * (double)(s + 1);
        // The CPU reference: the trainer applies the step iff the norm and the loss are finite.
        double n_cpu = optim_grad_norm(segs, 3);
        const int apply = isfinite(n_cpu) && isfinite(c->loss);
        if (apply) {
            n_cpu = optim_grad_clip(segs, 3, c->max_norm);
            optim_step(&host, lr);
        }
        // The GPU: queued without a host wait (behind a hold, after the first step's warm-up), then the
        // caller's one wait, its loss read.
        if (s > 0) cuda_hold_begin(10.0);
        optim_cuda_clip_step(dev, c->max_norm, lr, c->dev_loss ? dloss : NULL);
        if (s > 0) {
            snprintf(what, sizeof what, "%s: clip_step queued without a host wait", tag);
            check_true(what, cuda_hold_end());
        }
        double loss = 0.0;
        if (c->dev_loss)
            cuda_d2h(&loss, dloss, sizeof loss);
        else
            cuda_sync();
        const double n_gpu = optim_cuda_finish(dev, loss);
        if (isfinite(n_cpu)) {
            snprintf(what, sizeof what, "%s: norm %.17g vs %.17g", tag, n_gpu, n_cpu);
            check_true(what, fabs(n_gpu - n_cpu) <= 1e-12 * n_cpu);
        } else {
            snprintf(what, sizeof what, "%s: norm reported non-finite (%g)", tag, n_gpu);
            check_true(what, !isfinite(n_gpu));
        }
        compare(tag, dev, &host, params, grads, dp, dg, n);
    }
    optim_free(&host);
    optim_cuda_free(dev);
    cuda_free(dp), cuda_free(dg), cuda_free(dloss);
    free(params), free(grads);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    run_kind(OPTIM_ADAMW_8BIT);
    run_kind(OPTIM_ADAMW);
    return gpu_test_finish();
}
#endif
