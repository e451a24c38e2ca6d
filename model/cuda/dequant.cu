// model/cuda/dequant.cu: MXFP4 and NF4 expert weights to bf16 (the per-element decoders are common.cuh's; moe.cu
// decodes inside its GEMM tiles instead).
// MXFP4 (model/mxfp4.c): one thread per 32-value block: 16 bytes, element 2j in the low nibble of byte j,
//   value = LUT[code] * 2^(scale - 127); the products are exact in bf16 (2-bit mantissas).
// NF4 (model/nf4.c, bitsandbytes): element 2k in the HIGH nibble of byte k, value = qmap[code] * absmax
//   of its block, computed in fp32 as the CPU does, then rounded to bf16.
#include "model/cuda/common.cuh"

__global__ void mxfp4_dequant_kernel(uint16_t *out, const uint8_t *blocks, const uint8_t *scales, size_t n_blocks) {
    size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_blocks) return;
    float scale = mxfp4_scale(scales[b]);
    uint4 raw = *reinterpret_cast<const uint4 *>(blocks + b * 16);
    const uint8_t *in = reinterpret_cast<const uint8_t *>(&raw);
    uint32_t packed[16];
    for (int j = 0; j < 16; j++) {
        uint32_t lo = bf16_bits(mxfp4_value(in[j] & 15) * scale), hi = bf16_bits(mxfp4_value(in[j] >> 4) * scale);
        packed[j] = lo | (hi << 16);
    }
    uint4 *o = reinterpret_cast<uint4 *>(out + b * 32);
    for (int q = 0; q < 4; q++) o[q] = make_uint4(packed[4 * q], packed[4 * q + 1], packed[4 * q + 2], packed[4 * q + 3]);
}

extern "C" void cuda_mxfp4_dequant(uint16_t *out, const uint8_t *blocks, const uint8_t *scales, int rows, int cols) {
    CHECK(cols % 32 == 0 && ((uintptr_t)blocks & 15) == 0 && ((uintptr_t)out & 15) == 0);
    size_t n = (size_t)rows * cols / 32;
    if (!n) return;
    mxfp4_dequant_kernel<<<cuda_blocks(n, 256), 256>>>(out, blocks, scales, n);
    CUDA_LAUNCH_CHECK();
}

__global__ void nf4_dequant_kernel(uint16_t *out, const uint8_t *packed, const float *absmax, const float *qmap,
                                   int blocksize, int64_t n) {
    int64_t k = 2 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (k >= n) return;
    out[k] = bf16_bits(nf4_value(packed, absmax, qmap, blocksize, k));
    if (k + 1 < n) out[k + 1] = bf16_bits(nf4_value(packed, absmax, qmap, blocksize, k + 1));
}

extern "C" void cuda_nf4_dequant(uint16_t *out, const uint8_t *packed, const float *absmax, const float *qmap,
                                 int blocksize, int64_t n) {
    if (n <= 0) return;
    nf4_dequant_kernel<<<cuda_blocks((size_t)(n + 1) / 2, 256), 256>>>(out, packed, absmax, qmap, blocksize, n);
    CUDA_LAUNCH_CHECK();
}
