// model/cuda/moe_gemm.cu: the experts' grouped GEMM (cuda_moe_gemm, cuda_ops.h): every expert at once over
// the slot rows sorted by expert, one block per (row tile of one expert, column tile), the row tiles read
// from the plan's tile map on the device (moe.cu), so nothing waits for the host.
//
// bf16 tensor cores (wmma 16x16x16, fp32 accumulate), 64x128 output tiles, 32-deep k steps,
// double-buffered (the next step's loads are in flight during the mma). The A tile is read (optionally
// gathered through arow, optionally two interleaved arrays) either from bf16 activations (the forward: x,
// act; staged as they are) or from fp32 gradients (the backward: dy, dgate/dup; rounded to bf16 as they are
// staged), the kernel templated on that element type; the B tile is the expert weight decoded inside the
// tile from its storage (MXFP4, NF4 or bf16), so the 4-bit experts are never expanded in memory. The results
// (fp32, + bias) go to fp32 scratch.
#include <mma.h>

#include "model/cuda/common.cuh"

using namespace nvcuda;

// Expert e's weight row r, columns c0 .. c0+15 (c0 a multiple of 16) in two steps, so that the loads of
// the next k step are in flight while the tensor cores work on this one: expert_row16_load fetches the raw
// MXFP4 bytes (8 bytes of code pairs, the block's scale) when the run lies inside the matrix (cols % 32 == 0:
// half of one 32-value block); expert_row16_decode turns them into floats, or reads and decodes any other
// case (NF4, bf16, edges; zeros outside the matrix) itself.
typedef struct w16_raw {
    uint2 codes;
    uint8_t scale, fast;
} w16_raw;

static __device__ __forceinline__ w16_raw expert_row16_load(const cuda_experts &w, int e, int r, int c0) {
    w16_raw q;
    q.fast = w.fmt == WF_MXFP4 && r < w.rows && c0 + 16 <= w.cols;
    if (q.fast) {
        const int64_t i = (int64_t)e * w.rows * w.cols + (int64_t)r * w.cols + c0;
        q.codes = *reinterpret_cast<const uint2 *>(w.blocks + i / 2);
        q.scale = w.scales[i / 32];
    }
    return q;
}

static __device__ __forceinline__ void expert_row16_decode(const cuda_experts &w, const w16_raw &q, int e, int r,
                                                           int c0, float *v) {
    if (q.fast) {
        const uint8_t *in = reinterpret_cast<const uint8_t *>(&q.codes);
        const float scale = mxfp4_scale(q.scale);
        for (int j = 0; j < 8; j++)
            v[2 * j] = mxfp4_value(in[j] & 15) * scale, v[2 * j + 1] = mxfp4_value(in[j] >> 4) * scale;
        return;
    }
    const int64_t n = (int64_t)w.rows * w.cols, i0 = (int64_t)r * w.cols + c0;
    for (int j = 0; j < 16; j++) {
        float x = 0.0f;
        if (r < w.rows && c0 + j < w.cols) {
            int64_t i = i0 + j;
            if (w.fmt == WF_NF4)
                x = bf16_float(bf16_bits(nf4_value(w.blocks + e * w.nf4_bytes, w.absmax + e * w.nf4_blocks,
                                                   w.qmap + e * 16, w.blocksize, i)));
            else if (w.fmt == WF_BF16) x = bf16_float(w.bf16[e * n + i]);
        }
        v[j] = x;
    }
}

#define GM CUDA_MOE_TILE_M
#define GN 128 // wide, so that each A row is read N/GN times
#define GK 32
#define GKP (GK + 8) // smem row pitch (bf16): a multiple of 8 as wmma asks, off the bank stride
#define GCP (GN + 4) // fp32 output tile pitch
#define GTHREADS 256
#define GAR (GM * GK / GTHREADS) // A elements staged per thread per k step

// The operands of one k step held in registers between their global loads and their shared-memory stores.
template <typename TA> struct gemm_stage {
    TA a[GAR];
    w16_raw b;
};

// grid (max_tiles, ceil(N / GN)), 256 threads: 8 warps, each a 32x32 part of the 64x128 tile. Software
// pipelined: As/Bs are double-buffered; the global loads of k step i+1 are issued before the mma of step i
// and stored (A as bf16, B decoded) after it, so one barrier per k step separates the buffers.
template <typename TA> __global__ void __launch_bounds__(GTHREADS) moe_gemm_kernel(cuda_moe_gemm_args g) {
    const TA *a0 = (const TA *)g.a0, *a1 = (const TA *)g.a1; // A's element type (cuda_ops.h)
    const int e = g.tiles[2 * blockIdx.x];
    if (e < 0) return;
    const int r0 = g.tiles[2 * blockIdx.x + 1], r1 = min(r0 + GM, g.off[e + 1]), n0 = blockIdx.y * GN;
    // As (2, m, k) and Bs (2, n, k) bf16 in the k loop; the fp32 output tile Cs (m, n) reuses the bytes.
    __shared__ __align__(32) unsigned char smem[GM * GCP * sizeof(float)];
    static_assert(2 * (GM + GN) * GKP * 2 <= GM * GCP * sizeof(float), "Cs covers both As and Bs buffers");
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem), *Bs = As + 2 * GM * GKP;
    float *Cs = reinterpret_cast<float *>(smem);
    const int tid = threadIdx.x, warp = tid / WARP, wm = (warp / 4) * 32, wn = (warp % 4) * 32;
    // This thread's A elements: rows m = tid / GK + i * (GTHREADS / GK), column kk of each k step; the
    // source rows are fixed for the block (-1: past the expert's rows, staged as zero).
    const int kk = tid % GK;
    int src[GAR];
    for (int i = 0; i < GAR; i++) {
        const int r = r0 + tid / GK + i * (GTHREADS / GK);
        src[i] = r < r1 ? (g.arow ? g.arow[r] : r) : -1;
    }
    // This thread's B run: 16 weights, two threads per 32-value run.
    const int seg = tid / 2, half = 16 * (tid % 2), kr = seg / 4, nc = 32 * (seg % 4) + half;
    auto load = [&](int k0, gemm_stage<TA> &st) {
        const int k = k0 + kk;
        for (int i = 0; i < GAR; i++) {
            TA v = 0; // +0 in fp32 and in bf16 bits
            if (src[i] >= 0 && k < g.Kd) {
                const size_t at = (size_t)src[i] * g.lda;
                v = a1 ? (k & 1 ? a1 : a0)[at + k / 2] : a0[at + k];
            }
            st.a[i] = v;
        }
        st.b = g.wt ? expert_row16_load(g.w, e, n0 + seg, k0 + half) : expert_row16_load(g.w, e, k0 + kr, n0 + nc);
    };
    auto store = [&](int k0, const gemm_stage<TA> &st, __nv_bfloat16 *as, __nv_bfloat16 *bs) {
        for (int i = 0; i < GAR; i++) as[(tid / GK + i * (GTHREADS / GK)) * GKP + kk] = as_bf16(st.a[i]);
        float v[16];
        if (g.wt) { // Bs row seg = W_e row n0 + seg, columns k0 + half ..
            expert_row16_decode(g.w, st.b, e, n0 + seg, k0 + half, v);
            uint32_t packed[8];
            for (int q = 0; q < 8; q++) packed[q] = bf16_bits(v[2 * q]) | (uint32_t)bf16_bits(v[2 * q + 1]) << 16;
            uint4 *dst = reinterpret_cast<uint4 *>(bs + seg * GKP + half);
            dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
            dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
        } else { // W_e row k0 + kr, columns n0 + nc .. into Bs column kr
            expert_row16_decode(g.w, st.b, e, k0 + kr, n0 + nc, v);
            for (int j = 0; j < 16; j++) bs[(nc + j) * GKP + kr] = __float2bfloat16_rn(v[j]);
        }
    };
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);
    gemm_stage<TA> st;
    load(0, st);
    store(0, st, As, Bs);
    __syncthreads();
    for (int k0 = 0, buf = 0; k0 < g.Kd; k0 += GK, buf ^= 1) {
        const bool next = k0 + GK < g.Kd;
        if (next) load(k0 + GK, st);
        const __nv_bfloat16 *as = As + buf * GM * GKP, *bs = Bs + buf * GN * GKP;
        for (int ks = 0; ks < GK; ks += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb[2];
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], as + (wm + 16 * i) * GKP + ks, GKP);
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], bs + (wn + 16 * j) * GKP + ks, GKP);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        if (next) store(k0 + GK, st, As + (buf ^ 1) * GM * GKP, Bs + (buf ^ 1) * GN * GKP);
        __syncthreads();
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(Cs + (wm + 16 * i) * GCP + wn + 16 * j, acc[i][j], GCP, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < GM * GN; idx += GTHREADS) {
        const int m = idx / GN, nn = idx % GN, r = r0 + m, n = n0 + nn;
        if (r >= r1 || n >= g.N) continue;
        const float v = Cs[m * GCP + nn] + (g.bias ? g.bias[(size_t)e * g.N + n] : 0.0f);
        if (g.c1) (n & 1 ? g.c1 : g.c0)[(size_t)r * g.ldc + n / 2] = v;
        else g.c0[(size_t)r * g.ldc + n] = v;
    }
}

extern "C" void cuda_moe_gemm(const cuda_moe_gemm_args *a, int S, int E) {
    dim3 grid(cuda_moe_max_tiles(S, E), cuda_blocks(a->N, GN));
    if (a->a_bf16) moe_gemm_kernel<uint16_t><<<grid, GTHREADS>>>(*a);
    else moe_gemm_kernel<float><<<grid, GTHREADS>>>(*a);
    CUDA_LAUNCH_CHECK();
}

extern "C" int cuda_moe_max_tiles(int S, int E) { return (S + E * (CUDA_MOE_TILE_M - 1)) / CUDA_MOE_TILE_M; }
