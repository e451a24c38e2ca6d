// model/cpu/lora.c: THE LoRA funnel. Every adapted projection goes through these two functions: q, k,
// v, o on (T, .) rows and each expert's gate, up and down on that expert's rows. M rows, R rank.
//   forward:  z (M, R) = x (M, in) A (R, in)^T;   y (M, out) += scale * (z B (out, R)^T)
//             (PEFT: result + lora_B(lora_A(x)) * scaling; no dropout)
//   backward: dB += scale dy^T z;  dz = scale dy B;  dA += dz^T x;  dx += dz A
// y and dx accumulate (the base projection wrote them first); dA/dB accumulate across calls.
#include "model/cpu/ops.h"

void cpu_lora_forward(float *y, float *z, const float *x, const lora_pair *p, int M, int in, int out, int R,
                      float scale) {
    cpu_matmul(z, x, p->A, NULL, M, R, in, 0);
#pragma omp parallel for schedule(static) if ((size_t)M * out * R >= CPU_PAR_MIN)
    for (int i = 0; i < M; i++) {
        const float *zi = z + (size_t)i * R;
        float *yi = y + (size_t)i * out;
        for (int o = 0; o < out; o++) {
            const float *bo = p->B + (size_t)o * R;
            float t = 0.0f;
            for (int r = 0; r < R; r++) t += zi[r] * bo[r];
            yi[o] += t * scale;
        }
    }
}

void cpu_lora_backward(float *dx, float *dz, const float *dy, const float *x, const float *z, const lora_pair *p,
                       int M, int in, int out, int R, float scale) {
    cpu_matmul_dw(p->dB, dy, z, M, out, R, scale);
    cpu_matmul_dx(dz, dy, p->B, M, out, R, 0);
    for (size_t i = 0; i < (size_t)M * R; i++) dz[i] *= scale;
    cpu_matmul_dw(p->dA, dz, x, M, R, in, 1.0f);
    cpu_matmul_dx(dx, dz, p->A, M, R, in, 1);
}
