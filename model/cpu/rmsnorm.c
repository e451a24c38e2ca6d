// model/cpu/rmsnorm.c: RMSNorm, forward and backward. T tokens, D hidden.
//   y = w * (x * rstd),  rstd = 1 / sqrt(mean(x^2) + eps)      (HF GptOssRMSNorm, all fp32)
// The mean of squares is summed in double; rstd (T) is kept for the backward.
// Backward (dx +=, since every RMSNorm input is a residual stream that already has a gradient):
//   dx_i += rstd * w_i dy_i - x_i * rstd^3 / D * sum_j w_j dy_j x_j
#include <math.h>

#include "model/cpu/ops.h"

void cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)T * D >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        float *yt = y + (size_t)t * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)xt[i] * xt[i];
        float r = 1.0f / sqrtf((float)(ss / D) + eps);
        rstd[t] = r;
        for (int i = 0; i < D; i++) yt[i] = w[i] * (xt[i] * r);
    }
}

void cpu_rmsnorm_backward(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int T,
                          int D) {
#pragma omp parallel for schedule(static) if ((size_t)T * D >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D, *dyt = dy + (size_t)t * D;
        float *dxt = dx + (size_t)t * D;
        double r = rstd[t], s = 0.0;
        for (int i = 0; i < D; i++) s += (double)w[i] * dyt[i] * xt[i];
        double c = r * r * r * s / D;
        for (int i = 0; i < D; i++) dxt[i] += (float)(r * w[i] * dyt[i] - xt[i] * c);
    }
}
