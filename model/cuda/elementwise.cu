// model/cuda/elementwise.cu: casts to bf16, bias and residual adds, the embedding lookup.
#include "model/cuda/common.cuh"

__global__ void cast_bf16_kernel(uint16_t *out, const float *in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = bf16_bits(in[i]);
}
extern "C" void cuda_cast_bf16(uint16_t *out, const float *in, size_t n) {
    if (!n) return;
    cast_bf16_kernel<<<cuda_blocks(n, 256), 256>>>(out, in, n);
    CUDA_LAUNCH_CHECK();
}

__global__ void add_bias_kernel(float *y, const float *b, int M, int N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)M * N) y[i] += b[i % N];
}
extern "C" void cuda_add_bias(float *y, const float *b, int M, int N) {
    if (!M || !N) return;
    add_bias_kernel<<<cuda_blocks((size_t)M * N, 256), 256>>>(y, b, M, N);
    CUDA_LAUNCH_CHECK();
}

__global__ void add_kernel(float *y, const float *a, const float *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}
extern "C" void cuda_add(float *y, const float *a, const float *b, size_t n) {
    if (!n) return;
    add_kernel<<<cuda_blocks(n, 256), 256>>>(y, a, b, n);
    CUDA_LAUNCH_CHECK();
}

__global__ void embed_kernel(float *h, const uint16_t *embed, const int32_t *ids, int T, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * D) return;
    size_t t = i / D, j = i % D;
    h[i] = bf16_float(embed[(size_t)ids[t] * D + j]);
}
extern "C" void cuda_embed(float *h, const uint16_t *embed, const int32_t *ids, int T, int D) {
    embed_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(h, embed, ids, T, D);
    CUDA_LAUNCH_CHECK();
}
