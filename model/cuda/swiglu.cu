// model/cuda/swiglu.cu: GPT-OSS's clamped SwiGLU (model/cpu/swiglu.c has the math and the clamp gradients)
// on n elements, one thread each. The forward takes the fp32 gate and up (GEMM + LoRA results in scratch),
// rounds each to bf16 once and keeps those roundings (gate_bf, up_bf); act is computed in fp32 from the
// ROUNDED values and rounded once, so the backward (which reads gate_bf, up_bf) differentiates exactly the
// function the forward evaluated.
#include "model/cuda/common.cuh"

static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
// The clamps: g = min(gate, limit), u = clamp(up, -limit, limit) (NaN passes through, as on the CPU).
static __device__ __forceinline__ float clamp_gate(float gate, float limit) { return gate > limit ? limit : gate; }
static __device__ __forceinline__ float clamp_up(float up, float limit) {
    return up < -limit ? -limit : up > limit ? limit : up;
}

__global__ void swiglu_fwd_kernel(uint16_t *act, uint16_t *gate_bf, uint16_t *up_bf, const float *gate,
                                  const float *up, size_t n, float limit, float alpha) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const uint16_t gb = bf16_bits(gate[i]), ub = bf16_bits(up[i]);
    gate_bf[i] = gb, up_bf[i] = ub;
    const float g = clamp_gate(bf16_float(gb), limit), u = clamp_up(bf16_float(ub), limit);
    act[i] = bf16_bits((u + 1.0f) * (g * sigmoid_f(g * alpha)));
}

extern "C" void cuda_swiglu_forward(uint16_t *act, uint16_t *gate_bf, uint16_t *up_bf, const float *gate,
                                    const float *up, size_t n, float limit, float alpha) {
    if (!n) return;
    swiglu_fwd_kernel<<<cuda_blocks(n, 256), 256>>>(act, gate_bf, up_bf, gate, up, n, limit, alpha);
    CUDA_LAUNCH_CHECK();
}

__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dact, const uint16_t *gate,
                                  const uint16_t *up, size_t n, float limit, float alpha) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float gate_i = bf16_float(gate[i]), up_i = bf16_float(up[i]);
    const float g = clamp_gate(gate_i, limit), u = clamp_up(up_i, limit);
    const float sig = sigmoid_f(g * alpha), d = dact[i]; // read before the writes: dgate may alias dact
    dgate[i] = gate_i < limit ? d * (u + 1.0f) * sig * (1.0f + alpha * g * (1.0f - sig)) : 0.0f;
    dup[i] = up_i > -limit && up_i < limit ? d * g * sig : 0.0f;
}

extern "C" void cuda_swiglu_backward(float *dgate, float *dup, const float *dact, const uint16_t *gate,
                                     const uint16_t *up, size_t n, float limit, float alpha) {
    if (!n) return;
    swiglu_bwd_kernel<<<cuda_blocks(n, 256), 256>>>(dgate, dup, dact, gate, up, n, limit, alpha);
    CUDA_LAUNCH_CHECK();
}
