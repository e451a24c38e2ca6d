// model/cuda/swiglu.cu: GPT-OSS's clamped SwiGLU (model/cpu/swiglu.c) and the (de)interleaving of the
// fused gate_up rows (2i gate, 2i+1 up).
#include "model/cuda/common.cuh"

static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_fwd_kernel(float *act, uint16_t *act_bf, const float *gate, const float *up, size_t n,
                                  float limit, float alpha) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i] > limit ? limit : gate[i];
    float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
    float a = (u + 1.0f) * (g * sigmoid_f(g * alpha));
    act[i] = a;
    if (act_bf) act_bf[i] = bf16_bits(a);
}

extern "C" void cuda_swiglu_forward(float *act, uint16_t *act_bf, const float *gate, const float *up, size_t n,
                                    float limit, float alpha) {
    if (!n) return;
    swiglu_fwd_kernel<<<cuda_blocks(n, 256), 256>>>(act, act_bf, gate, up, n, limit, alpha);
    CUDA_LAUNCH_CHECK();
}

__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                  size_t n, float limit, float alpha) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i] > limit ? limit : gate[i];
    float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
    float sig = sigmoid_f(g * alpha), d = dact[i]; // read before the writes: dgate may alias dact
    dgate[i] = gate[i] < limit ? d * (u + 1.0f) * sig * (1.0f + alpha * g * (1.0f - sig)) : 0.0f;
    dup[i] = up[i] > -limit && up[i] < limit ? d * g * sig : 0.0f;
}

extern "C" void cuda_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                     size_t n, float limit, float alpha) {
    if (!n) return;
    swiglu_bwd_kernel<<<cuda_blocks(n, 256), 256>>>(dgate, dup, dact, gate, up, n, limit, alpha);
    CUDA_LAUNCH_CHECK();
}

__global__ void deinterleave_kernel(float *gate, float *up, const float *gu, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float2 p = reinterpret_cast<const float2 *>(gu)[i];
    gate[i] = p.x;
    up[i] = p.y;
}

extern "C" void cuda_deinterleave(float *gate, float *up, const float *gu, size_t nI) {
    if (!nI) return;
    CHECK(((uintptr_t)gu & 7) == 0);
    deinterleave_kernel<<<cuda_blocks(nI, 256), 256>>>(gate, up, gu, nI);
    CUDA_LAUNCH_CHECK();
}

__global__ void interleave_bf16_kernel(uint16_t *gu, const float *gate, const float *up, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    gu[2 * i] = bf16_bits(gate[i]);
    gu[2 * i + 1] = bf16_bits(up[i]);
}

extern "C" void cuda_interleave_bf16(uint16_t *gu, const float *gate, const float *up, size_t nI) {
    if (!nI) return;
    interleave_bf16_kernel<<<cuda_blocks(nI, 256), 256>>>(gu, gate, up, nI);
    CUDA_LAUNCH_CHECK();
}
