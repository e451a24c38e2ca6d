// optim/cuda/adamw.cu: the optimizer step, gradient norm and clipping on the GPU (optim.h, section
// "CUDA"). The state arena mirrors the host optimizer's arena byte for byte (same layout, same offsets),
// so checkpoints go through the host optim (optim_cuda_pull, then optim_serialize).
//
// Arithmetic: each kernel repeats its CPU twin in optim/adamw.c and optim/adamw8.c operation by
// operation, with explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...) so that nvcc cannot fuse a
// multiply and an add that the CPU rounds separately; scalars (bias corrections, step size) are computed
// on the host exactly as the CPU does. The result is bit-identical to the CPU step (tests/test_gpu_optim.c).
//   - 8-bit blockwise (adamw8_update_blockwise): one 256-thread block per 256-value quantization block;
//     the new absmax is a block max (order-free, exact); codes by the same binary search (optim_quantize).
//   - bnb's fp32 step for small tensors (adamw8_update_f32) and torch AdamW (adamw_update): thread per value.
// Grad norm: per-block sums of squares in double over fixed ranges, then one block adds the partials in a
// fixed order: deterministic; it differs from the CPU's serial double sum by double rounding only.
//
// optim_cuda_clip_step queues everything without a host wait: the norm kernel's last block also decides
// the step on the device (clip_ctl: norm, the clip coefficient computed as optim/clip.c does, in double
// with explicit rounding, and whether the update applies), the scale and update kernels read that
// decision and return early on a skip, and the decision is copied to pinned host memory for
// optim_cuda_finish to read after the caller's next host wait. A sequence number written with it lets
// finish check that the copy it reads is the one of the last clip_step.
#include <math.h>

#include "core/cuda_check.h"
extern "C" {
#include "optim/optim.h"
}

#define NORM_CHUNK 4096
#define NORM_THREADS 256

typedef struct dseg {
    float *p, *g;
    size_t n;
    optim_state_mode mode;
    float *m, *v;             // F32
    uint8_t *m8, *v8;         // 8BIT
    float *absmax1, *absmax2; // 8BIT
    size_t part0, nparts;     // grad-norm partials
} dseg;

// The step decision, written by norm_final_kernel on the device.
typedef struct clip_ctl {
    double norm;  // pre-clip global norm
    int64_t seq;  // the clip_step that wrote it (optim_cuda.seq)
    float coef;   // the clip coefficient as the float the gradients are multiplied by
    int scale;    // 1: clip (norm finite, max_norm > 0, coefficient < 1)
    int apply;    // 1: norm and loss finite, clip and update; 0: leave everything untouched
} clip_ctl;

struct optim_cuda {
    optim_config cfg;
    int n_seg;
    dseg *seg;
    uint8_t *arena;      // device mirror of optim.arena
    size_t arena_bytes;
    float *qmap;         // device (512): qmap1 then qmap2
    double *partials;    // device (n_partials,): per-chunk sums of squares
    size_t n_partials;
    clip_ctl *ctl;       // device: the decision of the last norm
    clip_ctl *host_ctl;  // pinned: its copy, valid after the caller's next host wait
    int64_t seq;         // clip_step calls so far
    int pending;         // a clip_step awaits its optim_cuda_finish
    int64_t step;
};

static void *mirror(const void *hp, const uint8_t *hbase, uint8_t *dbase) {
    return hp ? dbase + ((const uint8_t *)hp - hbase) : NULL;
}

extern "C" gt_status optim_cuda_init(optim_cuda **out, const optim *host, const float *host_params,
                                     const float *host_grads, size_t n, float *dev_params, float *dev_grads,
                                     gt_error *err) {
    *out = NULL;
    optim_cuda *o = (optim_cuda *)xcalloc(1, sizeof *o);
    o->cfg = host->cfg, o->n_seg = host->n_seg, o->step = host->step, o->arena_bytes = host->arena_bytes;
    o->seg = (dseg *)xcalloc((size_t)(o->n_seg ? o->n_seg : 1), sizeof(dseg));
    if (cudaMalloc((void **)&o->arena, o->arena_bytes + 1) != cudaSuccess) {
        cudaGetLastError();
        free(o->seg);
        free(o);
        return gt_fail(err, GT_ENOMEM, "optimizer on the GPU: %.2f GiB of state did not fit",
                       host->arena_bytes / 1073741824.0);
    }
    for (int i = 0; i < o->n_seg; i++) {
        const optim_segment *hs = &host->seg[i];
        const optim_seg_state *st = &host->state[i];
        dseg *d = &o->seg[i];
        CHECK(hs->param >= host_params && hs->param + hs->n <= host_params + n);
        CHECK(hs->grad >= host_grads && hs->grad + hs->n <= host_grads + n);
        d->p = dev_params + (hs->param - host_params), d->g = dev_grads + (hs->grad - host_grads), d->n = hs->n;
        d->mode = st->mode;
        d->m = (float *)mirror(st->m, host->arena, o->arena), d->v = (float *)mirror(st->v, host->arena, o->arena);
        d->m8 = (uint8_t *)mirror(st->m8, host->arena, o->arena), d->v8 = (uint8_t *)mirror(st->v8, host->arena, o->arena);
        d->absmax1 = (float *)mirror(st->absmax1, host->arena, o->arena);
        d->absmax2 = (float *)mirror(st->absmax2, host->arena, o->arena);
        d->part0 = o->n_partials, d->nparts = (hs->n + NORM_CHUNK - 1) / NORM_CHUNK;
        o->n_partials += d->nparts;
    }
    o->qmap = (float *)cuda_malloc(512 * sizeof(float));
    cuda_h2d(o->qmap, host->qmap1, 256 * sizeof(float));
    cuda_h2d(o->qmap + 256, host->qmap2, 256 * sizeof(float));
    o->partials = (double *)cuda_malloc((o->n_partials ? o->n_partials : 1) * sizeof(double));
    o->ctl = (clip_ctl *)cuda_malloc(sizeof(clip_ctl));
    o->host_ctl = (clip_ctl *)cuda_host_alloc(sizeof(clip_ctl));
    memset(o->host_ctl, 0, sizeof(clip_ctl));
    cuda_h2d(o->arena, host->arena, o->arena_bytes);
    *out = o;
    return GT_OK;
}

extern "C" void optim_cuda_free(optim_cuda *o) {
    if (!o) return;
    cuda_free(o->arena);
    cuda_free(o->qmap);
    cuda_free(o->partials);
    cuda_free(o->ctl);
    cuda_host_free(o->host_ctl);
    free(o->seg);
    free(o);
}

extern "C" void optim_cuda_pull(const optim_cuda *o, optim *host) {
    CHECK(!o->pending); // the step count is settled by optim_cuda_finish
    CHECK(host->arena_bytes == o->arena_bytes && host->n_seg == o->n_seg);
    cuda_d2h(host->arena, o->arena, o->arena_bytes);
    host->step = o->step;
}

extern "C" void optim_cuda_push(optim_cuda *o, const optim *host) {
    CHECK(!o->pending);
    CHECK(host->arena_bytes == o->arena_bytes && host->n_seg == o->n_seg);
    cuda_h2d(o->arena, host->arena, o->arena_bytes);
    o->step = host->step;
}

// ---------------------------------------------------------------------------------------------------
// Gradient norm and clipping

static __device__ double block_sum_d(double v) {
    __shared__ double sh[NORM_THREADS];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int o = NORM_THREADS / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    return sh[0];
}

__global__ void sumsq_kernel(double *partials, const float *g, size_t n) {
    size_t base = (size_t)blockIdx.x * NORM_CHUNK;
    double s = 0.0;
    for (size_t i = base + threadIdx.x; i < n && i < base + NORM_CHUNK; i += NORM_THREADS) s += (double)g[i] * g[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Adds the partials (n,) to the norm, then decides the step as optim/clip.c and the trainer do: apply iff
// the norm and *loss (NULL: not checked) are finite; scale iff max_norm > 0 and the coefficient
// max_norm / (norm + 1e-6) is below 1, by that coefficient rounded to float.
__global__ void norm_final_kernel(clip_ctl *ctl, const double *partials, size_t n, double max_norm,
                                  const double *loss, int64_t seq) {
    double s = 0.0;
    for (size_t i = threadIdx.x; i < n; i += NORM_THREADS) s += partials[i];
    s = block_sum_d(s);
    if (threadIdx.x) return;
    const double norm = __dsqrt_rn(s), coef = __ddiv_rn(max_norm, __dadd_rn(norm, 1e-6));
    clip_ctl c;
    c.norm = norm, c.seq = seq;
    c.apply = isfinite(norm) && (!loss || isfinite(*loss));
    c.scale = c.apply && !(max_norm <= 0.0) && !(coef >= 1.0); // optim/clip.c's tests, NaN included
    c.coef = c.scale ? __double2float_rn(coef) : 1.0f;
    *ctl = c;
}

__global__ void scale_kernel(float *g, const clip_ctl *ctl, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && ctl->scale) g[i] = __fmul_rn(g[i], ctl->coef);
}

// Queues the norm of every gradient, the decision (o->ctl) and the clipping it decides.
static void clip_queue(optim_cuda *o, double max_norm, const double *dev_loss) {
    for (int i = 0; i < o->n_seg; i++) {
        const dseg *d = &o->seg[i];
        if (!d->n) continue;
        sumsq_kernel<<<(unsigned)d->nparts, NORM_THREADS>>>(o->partials + d->part0, d->g, d->n);
        CUDA_LAUNCH_CHECK();
    }
    norm_final_kernel<<<1, NORM_THREADS>>>(o->ctl, o->partials, o->n_partials, max_norm, dev_loss, ++o->seq);
    CUDA_LAUNCH_CHECK();
    for (int i = 0; i < o->n_seg; i++) {
        const dseg *d = &o->seg[i];
        if (!d->n) continue;
        scale_kernel<<<cuda_blocks(d->n, 256), 256>>>(d->g, o->ctl, d->n);
        CUDA_LAUNCH_CHECK();
    }
}

// ---------------------------------------------------------------------------------------------------
// Steps

typedef struct step_scalars {
    float beta1, beta2, eps, wd, lr, c1, c2, step_size; // bnb (float)
    float decay, w1, w2, bc2_sqrt, neg_step;            // torch
    int decays;
} step_scalars;

// The device twin of optim_quantize (optim/adamw8.c): bnb's binary search and tie rule.
static __device__ uint8_t quantize_dev(const float *map, int is_signed, float x) {
    int code = 127, below = 0, above = 255;
    float below_val = is_signed ? -1.0f : 0.0f, above_val = 1.0f;
    float val = map[code];
    for (int stride = 64; stride > 0; stride >>= 1) {
        if (x > val) {
            below = code;
            below_val = val;
            code += stride;
        } else {
            above = code;
            above_val = val;
            code -= stride;
        }
        val = map[code];
    }
    if (x > val) return (uint8_t)(x > __fmul_rn(__fadd_rn(above_val, val), 0.5f) ? above : code);
    return (uint8_t)(x < __fmul_rn(__fadd_rn(below_val, val), 0.5f) ? below : code);
}

__global__ void adamw8_blockwise_kernel(float *param, const float *grad, uint8_t *m8, uint8_t *v8, float *absmax1,
                                        float *absmax2, size_t n, const float *qmap, step_scalars k,
                                        const clip_ctl *ctl) {
    if (!ctl->apply) return; // the whole block returns: no __syncthreads is left half-reached
    __shared__ float q1[256], q2[256], red1[256], red2[256];
    const int j = threadIdx.x;
    const size_t b = blockIdx.x, i = b * OPTIM_8BIT_BLOCK + j;
    q1[j] = qmap[j];
    q2[j] = qmap[256 + j];
    const int valid = i < n;
    const float g = valid ? grad[i] : 0.0f;
    const uint8_t c1j = valid ? m8[i] : 128, c2j = valid ? v8[i] : 0;
    const float am1 = absmax1[b], am2 = absmax2[b];
    __syncthreads();
    float s1 = 0.0f, s2 = 0.0f;
    if (isfinite(g)) {
        s2 = __fmul_rn(q2[c2j], am2);
        s2 = __fadd_rn(__fmul_rn(s2, k.beta2), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, k.beta2), g), g));
        s1 = __fmul_rn(q1[c1j], am1);
        s1 = __fadd_rn(__fmul_rn(s1, k.beta1), __fmul_rn(__fsub_rn(1.0f, k.beta1), g));
    }
    red1[j] = fabsf(s1);
    red2[j] = fabsf(s2);
    __syncthreads();
    for (int o = 128; o > 0; o >>= 1) {
        if (j < o) {
            red1[j] = fmaxf(red1[j], red1[j + o]);
            red2[j] = fmaxf(red2[j], red2[j + o]);
        }
        __syncthreads();
    }
    const float max1 = red1[0], max2 = red2[0];
    if (j == 0) {
        absmax1[b] = max1;
        absmax2[b] = max2;
    }
    if (!valid) return;
    if (isfinite(g)) {
        float p = __fadd_rn(param[i], __fmul_rn(k.step_size, __fdiv_rn(s1, __fadd_rn(__fsqrt_rn(s2), __fmul_rn(k.c2, k.eps)))));
        if (k.wd > 0.0f) p = __fmul_rn(p, __fsub_rn(1.0f, __fmul_rn(k.lr, k.wd)));
        param[i] = p;
    }
    uint8_t c1 = quantize_dev(q1, 1, __fdiv_rn(s1, max1));
    if (signbit(q1[c1]) != signbit(s1)) c1 = (uint8_t)(s1 > 0.0f ? c1 + 1 : c1 - 1);
    m8[i] = c1;
    v8[i] = quantize_dev(q2, 0, __fdiv_rn(s2, max2));
}

__global__ void adamw8_f32_kernel(float *param, const float *grad, float *m, float *v, size_t n, step_scalars k,
                                  const clip_ctl *ctl) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || !ctl->apply) return;
    const float g = grad[i];
    float mi = __fadd_rn(__fmul_rn(m[i], k.beta1), __fmul_rn(__fsub_rn(1.0f, k.beta1), g));
    float vi = __fadd_rn(__fmul_rn(v[i], k.beta2), __fmul_rn(__fsub_rn(1.0f, k.beta2), __fmul_rn(g, g)));
    m[i] = mi, v[i] = vi;
    float p = __fadd_rn(param[i], __fmul_rn(k.step_size, __fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), __fmul_rn(k.eps, k.c2)))));
    if (k.wd > 0.0f) p = __fmul_rn(p, __fsub_rn(1.0f, __fmul_rn(k.lr, k.wd)));
    param[i] = p;
}

static __device__ float lerp_dev(float start, float end, float w) {
    return fabsf(w) < 0.5f ? fmaf(w, __fsub_rn(end, start), start) : fmaf(__fsub_rn(w, 1.0f), __fsub_rn(end, start), end);
}

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n, step_scalars k,
                             const clip_ctl *ctl) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || !ctl->apply) return;
    const float g = grad[i];
    float p = param[i];
    if (k.decays) p = __fmul_rn(p, k.decay);
    float mi = lerp_dev(m[i], g, k.w1);
    float vi = __fmul_rn(v[i], k.beta2);
    vi = __fadd_rn(vi, __fmul_rn(__fmul_rn(k.w2, g), g));
    m[i] = mi, v[i] = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), k.eps);
    param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(k.neg_step, mi), denom));
}

// The scalars exactly as optim/adamw.c and optim/adamw8.c compute them on the host.
static step_scalars scalars(const optim_config *cfg, int64_t step, double lr) {
    step_scalars k;
    memset(&k, 0, sizeof k);
    k.beta1 = (float)cfg->beta1, k.beta2 = (float)cfg->beta2, k.eps = (float)cfg->eps;
    k.wd = (float)cfg->weight_decay, k.lr = (float)lr;
    k.c1 = 1.0f - powf(k.beta1, (float)step);
    k.c2 = sqrtf(1.0f - powf(k.beta2, (float)step));
    k.step_size = (-k.lr * k.c2) / k.c1;
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step), bc2 = 1.0 - pow(cfg->beta2, (double)step);
    k.decay = (float)(1.0 - lr * cfg->weight_decay);
    k.w1 = (float)(1.0 - cfg->beta1), k.w2 = (float)(1.0 - cfg->beta2);
    k.bc2_sqrt = (float)pow(bc2, 0.5), k.neg_step = (float)-(lr / bc1);
    k.decays = cfg->weight_decay != 0.0;
    return k;
}

// Queues the update of every segment for optimizer step `step` at lr; the kernels skip it when ctl->apply
// is 0.
static void update_queue(const optim_cuda *o, int64_t step, double lr, const clip_ctl *ctl) {
    const step_scalars k = scalars(&o->cfg, step, lr);
    for (int i = 0; i < o->n_seg; i++) {
        const dseg *d = &o->seg[i];
        if (!d->n) continue;
        if (o->cfg.kind == OPTIM_ADAMW)
            adamw_kernel<<<cuda_blocks(d->n, 256), 256>>>(d->p, d->g, d->m, d->v, d->n, k, ctl);
        else if (d->mode == OPTIM_STATE_8BIT)
            adamw8_blockwise_kernel<<<cuda_blocks(d->n, OPTIM_8BIT_BLOCK), OPTIM_8BIT_BLOCK>>>(
                d->p, d->g, d->m8, d->v8, d->absmax1, d->absmax2, d->n, o->qmap, k, ctl);
        else
            adamw8_f32_kernel<<<cuda_blocks(d->n, 256), 256>>>(d->p, d->g, d->m, d->v, d->n, k, ctl);
        CUDA_LAUNCH_CHECK();
    }
}

extern "C" void optim_cuda_clip_step(optim_cuda *o, double max_norm, double lr, const double *dev_loss) {
    CHECK(!o->pending); // the last clip_step's finish first: it decides which step number this one is
    clip_queue(o, max_norm, dev_loss);
    update_queue(o, o->step + 1, lr, o->ctl);
    cuda_d2h_async(o->host_ctl, o->ctl, sizeof(clip_ctl));
    o->pending = 1;
}

extern "C" double optim_cuda_finish(optim_cuda *o, double loss) {
    const clip_ctl c = *o->host_ctl;
    // A copy of another clip_step: finish was called before a host wait. A decision other than the
    // caller's: loss is not the value read from dev_loss.
    CHECK(o->pending && c.seq == o->seq);
    CHECK(c.apply == (isfinite(c.norm) && isfinite(loss)));
    o->pending = 0;
    o->step += c.apply;
    return c.norm;
}
