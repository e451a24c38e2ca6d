// model/cuda/lora.cu: THE LoRA funnel on the GPU (model/cpu/lora.c has the math and PEFT's convention).
// Every adapted projection, dense or per expert, goes through these two functions. fp32 GEMMs through
// cuBLASLt (exact fp32, no TF32): A, B, their gradients and z are fp32 master copies.
//   forward:  z (M, R) = x A^T;  y (M, out) += scale z B^T
//   backward: dB += scale dy^T z;  dz = scale dy B;  dA += dz^T x;  dx += dz A
#include "model/cuda/common.cuh"

extern "C" void cuda_lora_forward(float *y, float *z, const float *x, const lora_pair *p, int M, int in, int out, int R,
                                  float scale) {
    cuda_gemm(CUDA_GEMM_F32, 0, 1, M, R, in, 1.0f, x, in, p->A, in, 0.0f, z, R);
    cuda_gemm(CUDA_GEMM_F32, 0, 1, M, out, R, scale, z, R, p->B, R, 1.0f, y, out);
}

extern "C" void cuda_lora_backward(float *dx, float *dz, const float *dy, const float *x, const float *z,
                                   const lora_pair *p, int M, int in, int out, int R, float scale) {
    cuda_gemm(CUDA_GEMM_F32, 1, 0, out, R, M, scale, dy, out, z, R, 1.0f, p->dB, R);
    cuda_gemm(CUDA_GEMM_F32, 0, 0, M, R, out, scale, dy, out, p->B, R, 0.0f, dz, R);
    cuda_gemm(CUDA_GEMM_F32, 1, 0, R, in, M, 1.0f, dz, R, x, in, 1.0f, p->dA, in);
    cuda_gemm(CUDA_GEMM_F32, 0, 0, M, in, R, 1.0f, dz, R, p->A, in, 1.0f, dx, in);
}

// ---------------------------------------------------------------------------------------------------
// The funnel on the experts' rows (cuda_lora_experts_*): row kernels, fp32 arithmetic on bf16 or fp32
// inputs; weight gradients reduced per expert by one thread per element looping over the expert's rows in
// order (deterministic, no atomics).

// LoRA rows. P_e is pairs[e].B when useB, else pairs[e].A; its element (j, k) at p[j * pj + k * pk].
// z (S, R): z[r, j] = alpha * sum_k x[row(r), k] P_e(j, k) over k < in, x bf16 (the forward's x, act) or
// fp32 (the backward's dy); block per row, warp per j.
template <typename TX>
__global__ void moe_lora_dot_kernel(float *z, const TX *x, int ldx, const int32_t *xrow, const lora_pair *pairs,
                                    int useB, int pj, int pk, const int32_t *off, int E, int R, int in, float alpha) {
    const int r = blockIdx.x, lane = threadIdx.x % WARP, e = slot_expert(off, E, r);
    const float *p = useB ? pairs[e].B : pairs[e].A;
    const TX *xr = x + (size_t)(xrow ? xrow[r] : r) * ldx;
    for (int j = threadIdx.x / WARP; j < R; j += blockDim.x / WARP) {
        float s = 0.0f;
        for (int k = lane; k < in; k += WARP) s += as_float(xr[k]) * p[(size_t)j * pj + (size_t)k * pk];
        s = warp_sum(s);
        if (lane == 0) z[(size_t)r * R + j] = alpha * s;
    }
}

// y[r, n] += alpha * sum_j z[r, j] P_e(n, j) over n < out; grid (S, ceil(out / 256)).
__global__ void moe_lora_out_kernel(float *y, int ldy, const float *z, const lora_pair *pairs, int useB, int pn,
                                    int pj, const int32_t *off, int E, int R, int out, float alpha) {
    const int r = blockIdx.x, n = blockIdx.y * blockDim.x + threadIdx.x;
    if (n >= out) return;
    const int e = slot_expert(off, E, r);
    const float *p = useB ? pairs[e].B : pairs[e].A;
    float s = 0.0f;
    for (int j = 0; j < R; j++) s += z[(size_t)r * R + j] * p[(size_t)n * pn + (size_t)j * pj];
    y[(size_t)r * ldy + n] += alpha * s;
}

// G_e[i, j] += alpha * sum over expert e's rows r, in order, of u[urow(r), i] v[vrow(r), j]; G_e is
// pairs[e].dB when useB, else pairs[e].dA, (nu, nv) row-major; u fp32, v fp32 (z) or bf16 (x, act).
// grid (ceil(nu*nv / 256), E).
template <typename TV>
__global__ void moe_lora_grad_kernel(const lora_pair *pairs, int useB, const float *u, int ldu, const int32_t *urow,
                                     const TV *v, int ldv, const int32_t *vrow, const int32_t *off, int nu, int nv,
                                     float alpha) {
    const int e = blockIdx.y;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int r0 = off[e], r1 = off[e + 1];
    if (idx >= (size_t)nu * nv || r0 == r1) return;
    const size_t i = idx / nv, j = idx % nv;
    float s = 0.0f;
    for (int r = r0; r < r1; r++)
        s += u[(size_t)(urow ? urow[r] : r) * ldu + i] * as_float(v[(size_t)(vrow ? vrow[r] : r) * ldv + j]);
    float *G = useB ? pairs[e].dB : pairs[e].dA;
    G[idx] += alpha * s;
}

// The funnel's forward on the expert rows (the dense funnel's math above): z = x A^T; y += scale z B^T; x is
// the projection's bf16 input (rows through xrow).
extern "C" void cuda_lora_experts_forward(float *y, float *z, const uint16_t *x, const int32_t *xrow, const lora_pair *pairs,
                             const int32_t *off, int S, int E, int in, int out, int R, float scale) {
    moe_lora_dot_kernel<<<S, 256>>>(z, x, in, xrow, pairs, 0, in, 1, off, E, R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
    moe_lora_out_kernel<<<dim3(S, cuda_blocks(out, 256)), 256>>>(y, out, z, pairs, 1, R, 1, off, E, R, out, scale);
    CUDA_LAUNCH_CHECK();
}

// The funnel's backward: dB += scale dy^T z; dz = scale dy B; dA += dz^T x; dx += dz A (x as in the forward).
extern "C" void cuda_lora_experts_backward(float *dx, float *dz, const float *dy, const uint16_t *x, const int32_t *xrow,
                              const float *z, const lora_pair *pairs, const int32_t *off, int S, int E, int in,
                              int out, int R, float scale) {
    moe_lora_grad_kernel<<<dim3(cuda_blocks((size_t)out * R, 256), E), 256>>>(pairs, 1, dy, out, NULL, z, R, NULL,
                                                                              off, out, R, scale);
    CUDA_LAUNCH_CHECK();
    moe_lora_dot_kernel<<<S, 256>>>(dz, dy, out, NULL, pairs, 1, 1, R, off, E, R, out, scale);
    CUDA_LAUNCH_CHECK();
    moe_lora_grad_kernel<<<dim3(cuda_blocks((size_t)R * in, 256), E), 256>>>(pairs, 0, dz, R, NULL, x, in, xrow, off,
                                                                             R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
    moe_lora_out_kernel<<<dim3(S, cuda_blocks(in, 256)), 256>>>(dx, in, dz, pairs, 0, 1, in, off, E, R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
}
