// Gradient clipping by the global L2 norm of every trainable gradient (torch.nn.utils.clip_grad_norm_
// with norm_type 2 over all LoRA tensors). The norm is accumulated in double, serially in segment order,
// so it is the same number for any thread count (bit-exact resume needs that); torch accumulates each
// tensor's norm in fp32, so the two agree to fp32 rounding, not bit for bit.
#include "optim/optim.h"

#include <math.h>

double optim_grad_norm(const optim_segment *segs, int n_seg) {
    double sum = 0.0;
    for (int i = 0; i < n_seg; i++)
        for (size_t j = 0; j < segs[i].n; j++) sum += (double)segs[i].grad[j] * (double)segs[i].grad[j];
    return sqrt(sum);
}

double optim_grad_clip(const optim_segment *segs, int n_seg, double max_norm) {
    const double norm = optim_grad_norm(segs, n_seg);
    if (!isfinite(norm) || max_norm <= 0.0) return norm;
    const double coef = max_norm / (norm + 1e-6); // torch: clip_coef, then clamped to 1
    if (coef >= 1.0) return norm;
    const float c = (float)coef;
    for (int i = 0; i < n_seg; i++)
        for (size_t j = 0; j < segs[i].n; j++) segs[i].grad[j] *= c;
    return norm;
}
