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

// The element types kernels read and write: bf16 activations (uint16_t bits) or fp32. as_float reads one
// as fp32; as_bf16 stages one for the tensor cores (bf16 as it is, fp32 rounded to nearest even); store_as
// writes an fp32 value as the destination's type (rounding once to bf16).
static __device__ __forceinline__ float as_float(float v) { return v; }
static __device__ __forceinline__ float as_float(uint16_t h) { return bf16_float(h); }
static __device__ __forceinline__ __nv_bfloat16 as_bf16(float v) { return __float2bfloat16_rn(v); }
static __device__ __forceinline__ __nv_bfloat16 as_bf16(uint16_t h) { return __ushort_as_bfloat16(h); }
static __device__ __forceinline__ void store_as(float *p, float v) { *p = v; }
static __device__ __forceinline__ void store_as(uint16_t *p, float v) { *p = bf16_bits(v); }

// Expert of slot r for slots sorted by expert: the e with off[e] <= r < off[e+1] (binary search; empty
// experts are skipped).
static __device__ __forceinline__ int slot_expert(const int32_t *off, int E, int r) {
    int lo = 0, hi = E;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (off[mid] <= r) lo = mid;
        else hi = mid;
    }
    return lo;
}

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

// Tensor-core and copy primitives (sm_80+: mma.sync, ldmatrix, cp.async), for the kernels that use them
// (moe_gemm.cu, attention.cu). Shared-memory operands are 32-bit shared addresses (smem_addr).
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
// Four 8x8 bf16 matrices, row addresses from lanes 0-7, 8-15, 16-23, 24-31 (the "memory" clobber keeps the
// shared-memory stores of the C++ code on their side of it).
static __device__ __forceinline__ void ldsm_x4(uint32_t a, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a)
                 : "memory");
}
static __device__ __forceinline__ void ldsm_x4_t(uint32_t a, uint32_t &r0, uint32_t &r1, uint32_t &r2,
                                                 uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a)
                 : "memory");
}
// c (16x8 fp32) += a (16x16 bf16, row) b (16x8 bf16, col).
static __device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, const uint32_t *b) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// 16 bytes global -> shared without registers (L2 only); bytes < 16 reads that many and zero-fills the rest.
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" : : "r"(dst), "l"(src), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" : : : "memory"); }
// Waits until at most n of this thread's newest commit groups are still in flight.
template <int n> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" : : "n"(n) : "memory");
}

#endif
