// model/cuda/common.cuh: includes and small device helpers shared by the op files of model/cuda/.
#ifndef GPTOSS_MODEL_CUDA_COMMON_CUH
#define GPTOSS_MODEL_CUDA_COMMON_CUH

#include <cuda_bf16.h>

#include "core/cuda_check.h"
#include "model/cuda/cuda_ops.h"

#define WARP 32
#define FULL_MASK 0xffffffffu

static __device__ __forceinline__ uint16_t bf16_bits(float x) {
    __nv_bfloat16 b = __float2bfloat16_rn(x);
    return *reinterpret_cast<uint16_t *>(&b);
}
static __device__ __forceinline__ float bf16_float(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

#endif
