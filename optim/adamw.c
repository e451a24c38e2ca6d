// The optimizer object (segments, one state arena, step counter, checkpoint bytes) and fp32 AdamW with
// torch.optim.AdamW's arithmetic.
//
// adamw_update reproduces torch's _single_tensor_adam (decoupled weight decay, foreach=False, the CPU
// kernels torch dispatches to), operation by operation:
//   p  = p * (1 - lr * wd)                      scalar computed in double, applied as float
//   m  = lerp(m, g, 1 - beta1)                  torch's vectorised lerp: fma(w, g - m, m) for w < 0.5
//   v  = v * beta2 + ((1 - beta2) * g) * g      mul_ then addcmul_
//   bc1 = 1 - beta1^t, bc2 = 1 - beta2^t        double (Python floats)
//   p  = p + (-(lr / bc1) * m) / (sqrt(v) / bc2^0.5 + eps)     addcdiv_ with value -lr/bc1
// The 8-bit kernels are in adamw8.c.
//
// Serialized state layout (little-endian host order):
//   u32 kind, u32 n_seg, i64 step, u64 n[n_seg], then per segment:
//   F32: m[n] f32, v[n] f32;  8BIT: absmax1[nb] f32, absmax2[nb] f32, m8[n] u8, v8[n] u8  (nb = ceil(n/256))
#include "optim/optim.h"

#include <math.h>
#include <stdlib.h>

static float lerp_f32(float start, float end, float w) {
    return fabsf(w) < 0.5f ? fmaf(w, end - start, start) : fmaf(w - 1.0f, end - start, end);
}

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, const optim_config *cfg,
                  int64_t step, double lr) {
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    const double step_size = lr / bc1;
    const float decay = (float)(1.0 - lr * cfg->weight_decay);
    const float w1 = (float)(1.0 - cfg->beta1), beta2 = (float)cfg->beta2, w2 = (float)(1.0 - cfg->beta2);
    const float bc2_sqrt = (float)pow(bc2, 0.5), eps = (float)cfg->eps, neg_step = (float)-step_size;
    const int decays = cfg->weight_decay != 0.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i];
        float p = param[i];
        if (decays) p = p * decay;
        m[i] = lerp_f32(m[i], g, w1);
        v[i] = v[i] * beta2;
        v[i] = v[i] + w2 * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        param[i] = p + neg_step * m[i] / denom;
    }
}

// ---------------------------------------------------------------------------------------------------
// The optimizer object.

static size_t n_blocks(size_t n) { return (n + OPTIM_8BIT_BLOCK - 1) / OPTIM_8BIT_BLOCK; }
static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static optim_state_mode seg_mode(const optim_config *cfg, size_t n) {
    return cfg->kind == OPTIM_ADAMW_8BIT && n >= cfg->min_8bit_size ? OPTIM_STATE_8BIT : OPTIM_STATE_F32;
}

// Bytes of one segment's state without padding (what it occupies in the serialized blob).
static size_t seg_state_bytes(optim_state_mode mode, size_t n) {
    return mode == OPTIM_STATE_8BIT ? 2 * n_blocks(n) * sizeof(float) + 2 * n : 2 * n * sizeof(float);
}

// lo <= x < hi (hi_open) or lo <= x <= hi; hi = INFINITY for "any finite x >= lo".
static gt_status check_hyper(const char *key, double x, double lo, double hi, int hi_open, gt_error *err) {
    if (isfinite(x) && x >= lo && (hi_open ? x < hi : x <= hi)) return GT_OK;
    if (isinf(hi)) return gt_fail(err, GT_EINVAL, "optim.%s = %g: must be a finite number >= %g", key, x, lo);
    return gt_fail(err, GT_EINVAL, "optim.%s = %g is out of range: allowed %g <= %s %s %g", key, x, lo, key,
                   hi_open ? "<" : "<=", hi);
}

gt_status optim_init(optim *opt, const optim_config *cfg, const optim_segment *segs, int n_seg, gt_error *err) {
    memset(opt, 0, sizeof *opt);
    CHECK(cfg->kind == OPTIM_ADAMW || cfg->kind == OPTIM_ADAMW_8BIT);
    CHECK(n_seg >= 0 && (n_seg == 0 || segs));
    gt_status st;
    if ((st = check_hyper("beta1", cfg->beta1, 0.0, 1.0, 1, err)) ||
        (st = check_hyper("beta2", cfg->beta2, 0.0, 1.0, 1, err)) ||
        (st = check_hyper("eps", cfg->eps, 0.0, 1.0, 0, err)) ||
        (st = check_hyper("weight_decay", cfg->weight_decay, 0.0, INFINITY, 0, err)))
        return st;
    opt->cfg = *cfg;
    opt->n_seg = n_seg;
    opt->seg = xcalloc((size_t)n_seg, sizeof *opt->seg);
    opt->state = xcalloc((size_t)n_seg, sizeof *opt->state);
    size_t total = 0;
    for (int i = 0; i < n_seg; i++) {
        CHECK(segs[i].param && segs[i].grad);
        opt->seg[i] = segs[i];
        total += align64(seg_state_bytes(seg_mode(cfg, segs[i].n), segs[i].n));
    }
    opt->arena_bytes = total;
    opt->arena = xcalloc(total ? total : 1, 1);
    uint8_t *p = opt->arena;
    for (int i = 0; i < n_seg; i++) {
        size_t n = segs[i].n, nb = n_blocks(n);
        optim_seg_state *s = &opt->state[i];
        s->mode = seg_mode(cfg, n);
        if (s->mode == OPTIM_STATE_8BIT) {
            s->absmax1 = (float *)p;
            s->absmax2 = s->absmax1 + nb;
            s->m8 = (uint8_t *)(s->absmax2 + nb);
            s->v8 = s->m8 + n;
        } else {
            s->m = (float *)p;
            s->v = s->m + n;
        }
        p += align64(seg_state_bytes(s->mode, n));
    }
    if (cfg->kind == OPTIM_ADAMW_8BIT) {
        optim_dynamic_map(opt->qmap1, 1);
        optim_dynamic_map(opt->qmap2, 0);
    }
    return GT_OK;
}

void optim_free(optim *opt) {
    free(opt->seg);
    free(opt->state);
    free(opt->arena);
    memset(opt, 0, sizeof *opt);
}

size_t optim_state_bytes(const optim *opt) { return opt->arena_bytes; }

void optim_step(optim *opt, double lr) {
    opt->step++;
    for (int i = 0; i < opt->n_seg; i++) {
        const optim_segment *g = &opt->seg[i];
        const optim_seg_state *s = &opt->state[i];
        if (opt->cfg.kind == OPTIM_ADAMW)
            adamw_update(g->param, g->grad, s->m, s->v, g->n, &opt->cfg, opt->step, lr);
        else if (s->mode == OPTIM_STATE_8BIT)
            adamw8_update_blockwise(g->param, g->grad, s->m8, s->v8, s->absmax1, s->absmax2, g->n, opt->qmap1,
                                    opt->qmap2, &opt->cfg, opt->step, lr);
        else
            adamw8_update_f32(g->param, g->grad, s->m, s->v, g->n, &opt->cfg, opt->step, lr);
    }
}

// ---------------------------------------------------------------------------------------------------
// Checkpoint bytes.

static size_t header_bytes(int n_seg) { return 4 + 4 + 8 + 8 * (size_t)n_seg; }

size_t optim_serialized_size(const optim *opt) {
    size_t total = header_bytes(opt->n_seg);
    for (int i = 0; i < opt->n_seg; i++) total += seg_state_bytes(opt->state[i].mode, opt->seg[i].n);
    return total;
}

static uint8_t *put(uint8_t *dst, const void *src, size_t n) {
    memcpy(dst, src, n);
    return dst + n;
}

void optim_serialize(const optim *opt, void *buf) {
    uint8_t *p = buf;
    uint32_t kind = (uint32_t)opt->cfg.kind, n_seg = (uint32_t)opt->n_seg;
    p = put(p, &kind, 4);
    p = put(p, &n_seg, 4);
    p = put(p, &opt->step, 8);
    for (int i = 0; i < opt->n_seg; i++) {
        uint64_t n = opt->seg[i].n;
        p = put(p, &n, 8);
    }
    for (int i = 0; i < opt->n_seg; i++) {
        const optim_seg_state *s = &opt->state[i];
        size_t n = opt->seg[i].n, nb = n_blocks(n);
        if (s->mode == OPTIM_STATE_8BIT) {
            p = put(p, s->absmax1, nb * sizeof(float));
            p = put(p, s->absmax2, nb * sizeof(float));
            p = put(p, s->m8, n);
            p = put(p, s->v8, n);
        } else {
            p = put(p, s->m, n * sizeof(float));
            p = put(p, s->v, n * sizeof(float));
        }
    }
    CHECK((size_t)(p - (uint8_t *)buf) == optim_serialized_size(opt));
}

// Index of the first element of x[n] that is not finite or (nonneg) negative; n when there is none.
static size_t first_bad(const float *x, size_t n, int nonneg) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || (nonneg && x[i] < 0.0f)) return i;
    return n;
}

gt_status optim_deserialize(optim *opt, const void *buf, size_t len, gt_error *err) {
    const uint8_t *p = buf;
    uint32_t kind, n_seg;
    int64_t step;
    if (len < header_bytes(0))
        return gt_fail(err, GT_EFORMAT, "optimizer state: %zu bytes, shorter than its %zu-byte header", len,
                       header_bytes(0));
    memcpy(&kind, p, 4);
    memcpy(&n_seg, p + 4, 4);
    memcpy(&step, p + 8, 8);
    if (kind != (uint32_t)opt->cfg.kind)
        return gt_fail(err, GT_EFORMAT,
                       "optimizer state was written by optimizer kind %u, this run uses %u (%s); resume with the "
                       "optimizer the checkpoint was trained with",
                       kind, (unsigned)opt->cfg.kind, opt->cfg.kind == OPTIM_ADAMW ? "adamw" : "adamw_8bit");
    if (n_seg != (uint32_t)opt->n_seg)
        return gt_fail(err, GT_EFORMAT,
                       "optimizer state holds %u tensors, this run trains %d; was the LoRA configuration (rank, "
                       "targets, layers) changed since the checkpoint?",
                       n_seg, opt->n_seg);
    if (step < 0) return gt_fail(err, GT_EFORMAT, "optimizer state: negative step counter %lld", (long long)step);
    if (len < header_bytes(opt->n_seg))
        return gt_fail(err, GT_EFORMAT, "optimizer state: %zu bytes, shorter than its %zu-byte header (truncated?)",
                       len, header_bytes(opt->n_seg));
    p += header_bytes(0);
    for (int i = 0; i < opt->n_seg; i++, p += 8) {
        uint64_t n;
        memcpy(&n, p, 8);
        if (n != opt->seg[i].n)
            return gt_fail(err, GT_EFORMAT,
                           "optimizer state: tensor %d has %llu elements in the checkpoint, %zu in this run; was the "
                           "LoRA configuration changed since the checkpoint?",
                           i, (unsigned long long)n, opt->seg[i].n);
    }
    if (len != optim_serialized_size(opt))
        return gt_fail(err, GT_EFORMAT, "optimizer state: %zu bytes, expected %zu for these %d tensors (truncated?)",
                       len, optim_serialized_size(opt), opt->n_seg);
    // Everything matches: copy, then check the values (a failed check leaves opt's state zeroed).
    for (int i = 0; i < opt->n_seg; i++) {
        const optim_seg_state *s = &opt->state[i];
        size_t n = opt->seg[i].n, nb = n_blocks(n), bad;
        if (s->mode == OPTIM_STATE_8BIT) {
            memcpy(s->absmax1, p, nb * sizeof(float));
            memcpy(s->absmax2, p + nb * sizeof(float), nb * sizeof(float));
            memcpy(s->m8, p + 2 * nb * sizeof(float), n);
            memcpy(s->v8, p + 2 * nb * sizeof(float) + n, n);
            if ((bad = first_bad(s->absmax1, 2 * nb, 1)) < 2 * nb) {
                memset(opt->arena, 0, opt->arena_bytes);
                return gt_fail(err, GT_EFORMAT, "optimizer state: tensor %d, block scale %zu is %g (corrupt file)",
                               i, bad, (double)s->absmax1[bad]);
            }
        } else {
            memcpy(s->m, p, n * sizeof(float));
            memcpy(s->v, p + n * sizeof(float), n * sizeof(float));
            if ((bad = first_bad(s->m, n, 0)) < n || (bad = first_bad(s->v, n, 1)) < n) {
                memset(opt->arena, 0, opt->arena_bytes);
                return gt_fail(err, GT_EFORMAT, "optimizer state: tensor %d, element %zu has a non-finite or "
                               "negative moment (corrupt file)", i, bad);
            }
        }
        p += seg_state_bytes(s->mode, n);
    }
    opt->step = step;
    return GT_OK;
}
