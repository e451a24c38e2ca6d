// model/cuda/moe.cu: one layer's mixture of experts on the GPU, forward and backward (the math and the
// order of sums are model/cpu/moe.c's). Slots are the (token, choice) pairs sorted by expert, tokens
// ascending within an expert; all experts run together as grouped GEMMs over the slot rows:
//   gate, up = x[tok] W_gu[e]^T + b (+ LoRA), fp32 in scratch -> cuda_swiglu_forward rounds gate, up to bf16
//   (kept) and act = bf16(swiglu) -> y = act W_down[e]^T + b (+ LoRA), fp32 in scratch
// and each token sums w * y over its slots in increasing expert order; the combine rounds y to bf16 once
// (kept: the backward's dw = dout . y reads the very y the forward summed) and out = bf16(res + sum w y).
// The backward reads the kept bf16 x, gate, up, act, y and computes fp32 gradients.
//
// No host synchronisation: the plan kernel sorts the slots on the device and writes the expert offsets
// and a tile map (row tile -> expert, first row), and every later kernel reads its expert and row range
// from those. Grids are sized from host-known bounds: S = T*K rows, at most cuda_moe_max_tiles(S, E) row
// tiles of CUDA_MOE_TILE_M rows (unused tiles are marked -1 and exit).
//
// Base GEMMs (moe_gemm_kernel): bf16 tensor cores (wmma 16x16x16, fp32 accumulate), 64x128 output tiles,
// 32-deep k steps, double-buffered (the next step's loads are in flight during the mma). The A tile is read
// (optionally gathered through tok, optionally two interleaved arrays) either from bf16 activations (the
// forward: x, act; staged as they are) or from fp32 gradients (the backward: dy, dgate/dup; rounded to bf16
// as they are staged), the kernel templated on that element type; the B tile is the expert weight decoded
// inside the tile from its storage (MXFP4, NF4 or bf16), so the 4-bit experts are never expanded in memory.
// The results (fp32, + bias) go to fp32 scratch. LoRA on the experts (fp32 arithmetic, bf16 or fp32 inputs):
// row kernels for z = x A^T, y += s z B^T, dz = s dy B, dx += dz A, and weight gradients reduced per expert
// by one thread per element looping over the expert's rows in order (deterministic, no atomics).
#include <mma.h>

#include "model/cuda/common.cuh"

using namespace nvcuda;

// One block of max(E, 32) threads (E <= 1024): thread e counts, then places, its expert's slots in token
// order. sel is staged through shared memory a tile at a time (every thread scans every entry).
#define PLAN_TILE 4096
// Thread 0 also writes the tile map: tiles[2i] = expert (-1 past the last tile), tiles[2i+1] = first row.
__global__ void moe_plan_kernel(int32_t *off, int32_t *tok, int32_t *kof, int32_t *slot, int32_t *tiles,
                                int max_tiles, const int32_t *sel, int T, int E, int K) {
    __shared__ int32_t cnt[1025], tile[PLAN_TILE];
    const int e = threadIdx.x, S = T * K;
    int c = 0;
    for (int i0 = 0; i0 < S; i0 += PLAN_TILE) {
        int n = S - i0 < PLAN_TILE ? S - i0 : PLAN_TILE;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) tile[i] = sel[i0 + i];
        __syncthreads();
        for (int i = 0; i < n; i++) c += tile[i] == e;
    }
    if (e < E) cnt[e + 1] = c;
    __syncthreads();
    if (e == 0) {
        cnt[0] = 0;
        for (int i = 0; i < E; i++) cnt[i + 1] += cnt[i];
        for (int i = 0; i <= E; i++) off[i] = cnt[i];
        int n = 0;
        for (int x = 0; x < E; x++)
            for (int r = cnt[x]; r < cnt[x + 1]; r += CUDA_MOE_TILE_M, n++) tiles[2 * n] = x, tiles[2 * n + 1] = r;
        for (; n < max_tiles; n++) tiles[2 * n] = -1, tiles[2 * n + 1] = 0;
    }
    __syncthreads();
    int p = e < E ? cnt[e] : 0;
    for (int i0 = 0; i0 < S; i0 += PLAN_TILE) {
        int n = S - i0 < PLAN_TILE ? S - i0 : PLAN_TILE;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) tile[i] = sel[i0 + i];
        __syncthreads();
        for (int i = 0; i < n; i++) {
            if (tile[i] != e) continue;
            slot[i0 + i] = p;
            tok[p] = (i0 + i) / K;
            kof[p] = (i0 + i) % K;
            p++;
        }
    }
}

// Expert of slot r: the e with off[e] <= r < off[e+1] (binary search; empty experts are skipped).
static __device__ __forceinline__ int slot_expert(const int32_t *off, int E, int r) {
    int lo = 0, hi = E;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (off[mid] <= r) lo = mid;
        else hi = mid;
    }
    return lo;
}

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

// The element types the kernels read: bf16 activations (uint16_t bits) or fp32 gradients. as_float reads
// one as fp32; as_bf16 stages one for the tensor cores (bf16 as it is, fp32 rounded to nearest even).
static __device__ __forceinline__ float as_float(float v) { return v; }
static __device__ __forceinline__ float as_float(uint16_t h) { return bf16_float(h); }
static __device__ __forceinline__ __nv_bfloat16 as_bf16(float v) { return __float2bfloat16_rn(v); }
static __device__ __forceinline__ __nv_bfloat16 as_bf16(uint16_t h) { return __ushort_as_bfloat16(h); }

// C rows of one expert = A rows (Kd) times op(W_e): wt 1: C = A W_e^T (W_e (N, Kd)); wt 0: C = A W_e
// (W_e (Kd, N)). A (element type TA: float or bf16 bits) element (r, k): a0[row * lda + k], row = arow ?
// arow[r] : r; or, when a1, the interleaving of a0 (even k) and a1 (odd k) at column k/2. C (fp32):
// c0[r * ldc + n] = acc + bias[e * N + n]; or, when c1, even n into c0 and odd n into c1 at column n/2.
template <typename TA> struct moe_gemm_args {
    const TA *a0, *a1;
    const int32_t *arow;
    int lda;
    cuda_experts w;
    int wt;
    float *c0, *c1;
    int ldc;
    const float *bias;
    int N, Kd;
    const int32_t *tiles, *off;
};

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
template <typename TA> __global__ void __launch_bounds__(GTHREADS) moe_gemm_kernel(moe_gemm_args<TA> g) {
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
                v = g.a1 ? (k & 1 ? g.a1 : g.a0)[at + k / 2] : g.a0[at + k];
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

template <typename TA> static void moe_gemm(const moe_gemm_args<TA> &g, int S, int E) {
    dim3 grid(cuda_moe_max_tiles(S, E), cuda_blocks(g.N, GN));
    moe_gemm_kernel<TA><<<grid, GTHREADS>>>(g);
    CUDA_LAUNCH_CHECK();
}

// LoRA rows. P_e is pairs[e].B when useB, else pairs[e].A; its element (j, k) at p[j * pj + k * pk].
// z (S, R): z[r, j] = alpha * sum_k x[row(r), k] P_e(j, k) over k < in, x bf16 (the forward's x, act) or
// fp32 (the backward's dy); block per row, warp per j.
template <typename TX>
__global__ void moe_lora_dot_kernel(float *z, const TX *x, int ldx, const int32_t *xrow, const lora_pair *pairs,
                                    int useB, int pj, int pk, const int32_t *off, int E, int R, int in, float alpha) {
    const int r = blockIdx.x, lane = threadIdx.x % WARP, e = slot_expert(off, E, r);
    const float *p = useB ? pairs[e].B : pairs[e].A;
    const TX *xr = x + (size_t)(xrow ? xrow[r] : r) * ldx;
    for (int j = threadIdx.x / WARP; j < R; j += blockDim.x / WARP) {
        float s = 0.0f;
        for (int k = lane; k < in; k += WARP) s += as_float(xr[k]) * p[(size_t)j * pj + (size_t)k * pk];
        s = warp_sum(s);
        if (lane == 0) z[(size_t)r * R + j] = alpha * s;
    }
}

// y[r, n] += alpha * sum_j z[r, j] P_e(n, j) over n < out; grid (S, ceil(out / 256)).
__global__ void moe_lora_out_kernel(float *y, int ldy, const float *z, const lora_pair *pairs, int useB, int pn,
                                    int pj, const int32_t *off, int E, int R, int out, float alpha) {
    const int r = blockIdx.x, n = blockIdx.y * blockDim.x + threadIdx.x;
    if (n >= out) return;
    const int e = slot_expert(off, E, r);
    const float *p = useB ? pairs[e].B : pairs[e].A;
    float s = 0.0f;
    for (int j = 0; j < R; j++) s += z[(size_t)r * R + j] * p[(size_t)n * pn + (size_t)j * pj];
    y[(size_t)r * ldy + n] += alpha * s;
}

// G_e[i, j] += alpha * sum over expert e's rows r, in order, of u[urow(r), i] v[vrow(r), j]; G_e is
// pairs[e].dB when useB, else pairs[e].dA, (nu, nv) row-major; u fp32, v fp32 (z) or bf16 (x, act).
// grid (ceil(nu*nv / 256), E).
template <typename TV>
__global__ void moe_lora_grad_kernel(const lora_pair *pairs, int useB, const float *u, int ldu, const int32_t *urow,
                                     const TV *v, int ldv, const int32_t *vrow, const int32_t *off, int nu, int nv,
                                     float alpha) {
    const int e = blockIdx.y;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int r0 = off[e], r1 = off[e + 1];
    if (idx >= (size_t)nu * nv || r0 == r1) return;
    const size_t i = idx / nv, j = idx % nv;
    float s = 0.0f;
    for (int r = r0; r < r1; r++)
        s += u[(size_t)(urow ? urow[r] : r) * ldu + i] * as_float(v[(size_t)(vrow ? vrow[r] : r) * ldv + j]);
    float *G = useB ? pairs[e].dB : pairs[e].dA;
    G[idx] += alpha * s;
}

// The funnel's forward on the expert rows (model/cuda/lora.cu's math): z = x A^T; y += scale z B^T; x is
// the projection's bf16 input (rows through xrow).
static void moe_lora_forward(float *y, float *z, const uint16_t *x, const int32_t *xrow, const lora_pair *pairs,
                             const int32_t *off, int S, int E, int in, int out, int R, float scale) {
    moe_lora_dot_kernel<<<S, 256>>>(z, x, in, xrow, pairs, 0, in, 1, off, E, R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
    moe_lora_out_kernel<<<dim3(S, cuda_blocks(out, 256)), 256>>>(y, out, z, pairs, 1, R, 1, off, E, R, out, scale);
    CUDA_LAUNCH_CHECK();
}

// The funnel's backward: dB += scale dy^T z; dz = scale dy B; dA += dz^T x; dx += dz A (x as in the forward).
static void moe_lora_backward(float *dx, float *dz, const float *dy, const uint16_t *x, const int32_t *xrow,
                              const float *z, const lora_pair *pairs, const int32_t *off, int S, int E, int in,
                              int out, int R, float scale) {
    moe_lora_grad_kernel<<<dim3(cuda_blocks((size_t)out * R, 256), E), 256>>>(pairs, 1, dy, out, NULL, z, R, NULL,
                                                                              off, out, R, scale);
    CUDA_LAUNCH_CHECK();
    moe_lora_dot_kernel<<<S, 256>>>(dz, dy, out, NULL, pairs, 1, 1, R, off, E, R, out, scale);
    CUDA_LAUNCH_CHECK();
    moe_lora_grad_kernel<<<dim3(cuda_blocks((size_t)R * in, 256), E), 256>>>(pairs, 0, dz, R, NULL, x, in, xrow, off,
                                                                             R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
    moe_lora_out_kernel<<<dim3(S, cuda_blocks(in, 256)), 256>>>(dx, in, dz, pairs, 0, 1, in, off, E, R, in, 1.0f);
    CUDA_LAUNCH_CHECK();
}

// The token's K slots in increasing order (= increasing expert), as the CPU's moe_token_slots.
static __device__ void token_slots(const int32_t *slot_t, int K, int32_t *order) {
    for (int k = 0; k < K; k++) {
        int i = k;
        while (i > 0 && order[i - 1] > slot_t[k]) {
            order[i] = order[i - 1];
            i--;
        }
        order[i] = slot_t[k];
    }
}

#define MOE_MAXK 16

// out (T, D) = bf16(res + sum over the token's slots (increasing) of w * yb[slot]) with yb = bf16(y), the
// fp32 y (S, D) of the down GEMM + LoRA rounded once and kept; thread per (t, j). Every slot belongs to one
// (token, choice), so thread (t, j) is the only writer of yb[slot, j] for the token's slots.
__global__ void moe_combine_kernel(uint16_t *out, uint16_t *yb, const uint16_t *res, const float *y, const float *w,
                                   const int32_t *slot, const int32_t *kof, int T, int D, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * D) return;
    size_t t = i / D, j = i % D;
    int32_t order[MOE_MAXK];
    token_slots(slot + t * K, K, order);
    float o = 0.0f;
    for (int q = 0; q < K; q++) {
        const size_t at = (size_t)order[q] * D + j;
        const uint16_t b = bf16_bits(y[at]);
        yb[at] = b;
        o += bf16_float(b) * w[t * K + kof[order[q]]];
    }
    out[i] = bf16_bits(bf16_float(res[i]) + o); // res[i] is read before out[i] is written: out may alias res
}

extern "C" int cuda_moe_max_tiles(int S, int E) { return (S + E * (CUDA_MOE_TILE_M - 1)) / CUDA_MOE_TILE_M; }

template <typename TA>
static moe_gemm_args<TA> gemm_args(const cuda_moe_acts *a, const cuda_experts *w, int wt, int N, int Kd) {
    moe_gemm_args<TA> g;
    memset(&g, 0, sizeof g);
    g.w = *w, g.wt = wt, g.N = N, g.Kd = Kd, g.tiles = a->tiles, g.off = a->off;
    return g;
}

extern "C" void cuda_moe_forward(uint16_t *out, const uint16_t *res, const uint16_t *x, const int32_t *sel,
                                 const float *w, const cuda_moe_weights *W, const model_config *c,
                                 const cuda_moe_lora *lora, int T, cuda_moe_acts *a, cuda_moe_scratch *s) {
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, S = T * K;
    CHECK(E <= 1024 && K <= MOE_MAXK);
    if (!T) return;
    moe_plan_kernel<<<1, E < 32 ? 32 : E>>>(a->off, a->tok, a->kof, a->slot, a->tiles, cuda_moe_max_tiles(S, E), sel,
                                            T, E, K);
    CUDA_LAUNCH_CHECK();
    float *gate = s->dact, *up = s->dup, *y = s->dxs; // fp32 results; the acts keep their bf16 roundings
    moe_gemm_args<uint16_t> g = gemm_args<uint16_t>(a, &W->gate_up, 1, 2 * I, D); // gate, up = x[tok] W_gu^T + b
    g.a0 = x, g.arow = a->tok, g.lda = D, g.c0 = gate, g.c1 = up, g.ldc = I, g.bias = W->gate_up_b;
    moe_gemm(g, S, E);
    if (lora && lora->gate)
        moe_lora_forward(gate, a->zg, x, a->tok, lora->gate, a->off, S, E, D, I, lora->R, lora->scale);
    if (lora && lora->up)
        moe_lora_forward(up, a->zu, x, a->tok, lora->up, a->off, S, E, D, I, lora->R, lora->scale);
    cuda_swiglu_forward(a->act, a->gate, a->up, gate, up, (size_t)S * I, c->swiglu_limit, c->swiglu_alpha);
    g = gemm_args<uint16_t>(a, &W->down, 1, D, I); // y (S, D) = act W_down^T + b
    g.a0 = a->act, g.lda = I, g.c0 = y, g.ldc = D, g.bias = W->down_b;
    moe_gemm(g, S, E);
    if (lora && lora->down)
        moe_lora_forward(y, a->zd, a->act, NULL, lora->down, a->off, S, E, I, D, lora->R, lora->scale);
    moe_combine_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(out, a->y, res, y, w, a->slot, a->kof, T, D, K);
    CUDA_LAUNCH_CHECK();
}

// dw[tk] = dout_t . y[slot[tk]] (y the kept bf16): one warp per (t, k).
__global__ void moe_dw_kernel(float *dw, const float *dout, const uint16_t *y, const int32_t *slot, int T, int D,
                              int K) {
    size_t tk = (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (tk >= (size_t)T * K) return;
    const float *a = dout + (tk / K) * D;
    const uint16_t *b = y + (size_t)slot[tk] * D;
    float s = 0.0f;
    for (int j = lane; j < D; j += WARP) s += a[j] * bf16_float(b[j]);
    s = warp_sum(s);
    if (lane == 0) dw[tk] = s;
}

// dy (S, D) = w_tk * dout_t for every slot.
__global__ void moe_dy_kernel(float *dy, const float *dout, const float *w, const int32_t *tok,
                              const int32_t *kof, int n, int D, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * D) return;
    size_t r = i / D, j = i % D;
    int t = tok[r];
    float v = w[(size_t)t * K + kof[r]] * dout[(size_t)t * D + j];
    dy[i] = v;
}

// dx (T, D) = sum over the token's slots (increasing) of dxs[slot].
__global__ void moe_dx_kernel(float *dx, const float *dxs, const int32_t *slot, int T, int D, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * D) return;
    size_t t = i / D, j = i % D;
    int32_t order[MOE_MAXK];
    token_slots(slot + t * K, K, order);
    float o = 0.0f;
    for (int q = 0; q < K; q++) o += dxs[(size_t)order[q] * D + j];
    dx[i] = o;
}

extern "C" void cuda_moe_backward(float *dx, float *dw, const float *dout, const uint16_t *x, const float *w,
                                  const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                                  const cuda_moe_acts *a, cuda_moe_scratch *s) {
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, S = T * K;
    if (!T) return;
    moe_dw_kernel<<<cuda_blocks((size_t)T * K, 8), 8 * WARP>>>(dw, dout, a->y, a->slot, T, D, K);
    CUDA_LAUNCH_CHECK();
    float *dy = s->dxs; // dy is dead before dxs is written
    moe_dy_kernel<<<cuda_blocks((size_t)S * D, 256), 256>>>(dy, dout, w, a->tok, a->kof, S, D, K);
    CUDA_LAUNCH_CHECK();
    moe_gemm_args<float> g = gemm_args<float>(a, &W->down, 0, I, D); // dact (S, I) = dy W_down
    g.a0 = dy, g.lda = D, g.c0 = s->dact, g.ldc = I;
    moe_gemm(g, S, E);
    if (lora && lora->down)
        moe_lora_backward(s->dact, s->dz, dy, a->act, NULL, a->zd, lora->down, a->off, S, E, I, D, lora->R,
                          lora->scale);
    float *dgate = s->dact; // in place: the SwiGLU backward reads dact[i] before it writes dgate[i]
    cuda_swiglu_backward(dgate, s->dup, s->dact, a->gate, a->up, (size_t)S * I, c->swiglu_limit, c->swiglu_alpha);
    g = gemm_args<float>(a, &W->gate_up, 0, D, 2 * I); // dxs (S, D) = interleave(dgate, dup) W_gu
    g.a0 = dgate, g.a1 = s->dup, g.lda = I, g.c0 = s->dxs, g.ldc = D;
    moe_gemm(g, S, E);
    if (lora && lora->gate)
        moe_lora_backward(s->dxs, s->dz, dgate, x, a->tok, a->zg, lora->gate, a->off, S, E, D, I, lora->R, lora->scale);
    if (lora && lora->up)
        moe_lora_backward(s->dxs, s->dz, s->dup, x, a->tok, a->zu, lora->up, a->off, S, E, D, I, lora->R, lora->scale);
    moe_dx_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(dx, s->dxs, a->slot, T, D, K);
    CUDA_LAUNCH_CHECK();
}
