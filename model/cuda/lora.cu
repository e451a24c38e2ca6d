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
