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

// 4-bit expert weights, one element (model/mxfp4.c and model/nf4.c have the formats; dequant.cu's header):
// MXFP4 code (low nibble = even element) times 2^(scale byte - 127), exact in bf16; NF4 qmap[code] times
// the block's absmax (high nibble = even element) in fp32, then rounded to bf16 by the caller.
// e2m1 code: bit 3 sign, bits 2-1 exponent e, bit 0 mantissa m: 0.5 m when e == 0, else (2 + m) 2^(e-2).
static __device__ __forceinline__ float mxfp4_value(int code) {
    int e = (code >> 1) & 3, m = code & 1;
    float mag = e ? (float)((2 + m) << e) * 0.25f : 0.5f * (float)m;
    return code & 8 ? -mag : mag;
}
static __device__ __forceinline__ float mxfp4_scale(uint8_t s) {
    return s ? __uint_as_float((uint32_t)s << 23) : 0x1p-127f;
}
static __device__ __forceinline__ float nf4_value(const uint8_t *packed, const float *absmax, const float *qmap,
                                                  int blocksize, int64_t k) {
    uint8_t byte = packed[k / 2];
    return qmap[k & 1 ? byte & 15 : byte >> 4] * absmax[k / blocksize];
}

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
