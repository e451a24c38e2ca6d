// model/cpu/swiglu.c: GPT-OSS's clamped SwiGLU on de-interleaved gate and up (n elements each).
//   g = min(gate, limit), u = clamp(up, -limit, limit)
//   act = (u + 1) * (g * sigmoid(alpha g))            (HF GptOssExperts._apply_gate, same op order)
// Backward: torch's clamp passes the gradient only strictly inside the limits (at gate == limit the
// gradient is already 0; checked with torch 2.15), so:
//   dgate = dact (u + 1) sig (1 + alpha g (1 - sig))   if gate < limit, else 0
//   dup   = dact g sig                                 if -limit < up < limit, else 0
#include <math.h>

#include "model/cpu/ops.h"

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_swiglu_forward(float *act, const float *gate, const float *up, size_t n, float limit, float alpha) {
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i] > limit ? limit : gate[i]; // NaN passes through, as in torch
        float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
        float glu = g * sigmoidf(g * alpha);
        act[i] = (u + 1.0f) * glu;
    }
}

void cpu_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n,
                         float limit, float alpha) {
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i] > limit ? limit : gate[i]; // NaN passes through, as in torch
        float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
        float sig = sigmoidf(g * alpha);
        dgate[i] = gate[i] < limit ? dact[i] * (u + 1.0f) * sig * (1.0f + alpha * g * (1.0f - sig)) : 0.0f;
        dup[i] = up[i] > -limit && up[i] < limit ? dact[i] * g * sig : 0.0f;
    }
}
