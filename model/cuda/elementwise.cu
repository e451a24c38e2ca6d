// model/cuda/elementwise.cu: the cast from fp32 to bf16, the bias add and the residual add; one thread per
// element. bf16 is round to nearest even (bf16_bits); every output is overwritten
// except the bias add (+=). The residual add rounds the fp32 sum once, so y == bf16(float(x) + f) exactly.
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

// y may alias x: each thread reads its element before it writes it.
__global__ void residual_kernel(uint16_t *y, const uint16_t *x, const float *f, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = bf16_bits(bf16_float(x[i]) + f[i]);
}
extern "C" void cuda_residual(uint16_t *y, const uint16_t *x, const float *f, size_t n) {
    if (!n) return;
    residual_kernel<<<cuda_blocks(n, 256), 256>>>(y, x, f, n);
    CUDA_LAUNCH_CHECK();
}
