// Learning-rate schedules, HF transformers' formulas (optimization.py, transformers 4.x-5.x) evaluated in
// double in the same order, so lr = lr0 * f(step) equals what torch's LambdaLR hands the optimizer:
//   warmup (all kinds):  f = step / max(1, warmup)                          for step < warmup
//   constant:            f = 1
//   linear:              f = max(0, (total - step) / max(1, total - warmup))
//   cosine:              p = (step - warmup) / max(1, total - warmup)
//                        f = max(0, 0.5 * (1 + cos(pi * 0.5 * 2 * p)))
//   cosine_min_lr:       the cosine f, then f * (1 - min_lr_rate) + min_lr_rate, floored at 0
// `step` is the number of optimizer steps already taken: the first step of a warmup runs at lr 0, as in
// HF's Trainer.
#include "optim/optim.h"

#include <math.h>

int64_t sched_warmup_steps(int64_t total_steps, int64_t warmup_steps, double warmup_ratio) {
    if (warmup_steps > 0) return warmup_steps;
    return (int64_t)ceil((double)total_steps * warmup_ratio);
}

gt_status sched_init(sched *s, sched_kind kind, double lr, int64_t total_steps, int64_t warmup_steps,
                     double min_lr_rate, gt_error *err) {
    CHECK(kind == SCHED_CONSTANT || kind == SCHED_LINEAR || kind == SCHED_COSINE || kind == SCHED_COSINE_MIN_LR);
    if (!isfinite(lr) || lr <= 0.0)
        return gt_fail(err, GT_EINVAL, "optim.lr = %g: the learning rate must be a positive number", lr);
    if (total_steps < 1)
        return gt_fail(err, GT_EINVAL, "the schedule needs at least 1 training step, got %lld", (long long)total_steps);
    if (warmup_steps < 0)
        return gt_fail(err, GT_EINVAL, "warmup of %lld steps: must be >= 0", (long long)warmup_steps);
    if (!isfinite(min_lr_rate) || min_lr_rate < 0.0 || min_lr_rate > 1.0)
        return gt_fail(err, GT_EINVAL, "optim.min_lr_ratio = %g: must be in [0, 1]", min_lr_rate);
    s->kind = kind;
    s->lr = lr;
    s->total_steps = total_steps;
    s->warmup_steps = warmup_steps;
    s->min_lr_rate = kind == SCHED_COSINE_MIN_LR ? min_lr_rate : 0.0;
    return GT_OK;
}

static double max1(int64_t x) { return (double)(x > 1 ? x : 1); }

static double sched_factor(const sched *s, int64_t step) {
    const int64_t warm = s->warmup_steps, total = s->total_steps;
    if (step < warm) return (double)step / max1(warm);
    switch (s->kind) {
    case SCHED_CONSTANT: return 1.0;
    case SCHED_LINEAR: return fmax(0.0, (double)(total - step) / max1(total - warm));
    case SCHED_COSINE:
    case SCHED_COSINE_MIN_LR: {
        const double progress = (double)(step - warm) / max1(total - warm);
        double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        f = f * (1.0 - s->min_lr_rate) + s->min_lr_rate;
        return fmax(0.0, f);
    }
    }
    return 1.0;
}

double sched_lr(const sched *s, int64_t step) { return s->lr * sched_factor(s, step); }
