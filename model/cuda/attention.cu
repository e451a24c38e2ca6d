// model/cuda/attention.cu: GQA attention with sinks, causal sliding window and packed documents, forward
// and backward, flash-style (model/cpu/attention.c has the math). No (T, T) matrix exists anywhere.
//
// Layout of the work: the (query t, head h) pairs of one KV head g are numbered p = t * group + hh (h = g * group + hh,
// group = H / KVH), query-major as the CPU walks them. A block owns consecutive rows (pairs p for the forward and dq,
// keys j for dk/dv) of one g: FWD_BR in the forward, which runs on the tensor cores (its layout above its kernel),
// ATT_ROWS in the backward. In the backward kernels rows go in pairs to ATT_L = 8 threads (an "octet", lanes 8o .. 8o+7
// of the block): octet o owns rows o and o + ATT_ROWS / 2; each of its threads owns the float4 chunks c = sub + ATT_L *
// i of the head dim (dims 4c..4c+3, zero past HD) of both rows. The other side (keys for the forward and dq, (query,
// head) items for dk/dv) goes through shared memory in tiles, loaded with coalesced reads; a backward thread reads each
// tile row's chunks once into registers and uses them for both of its rows, in the dot product and in the update, and
// the 8 threads of an octet read 8 different float4s (128 bytes: one shared-memory wavefront). Against one row per 4
// threads that re-read the tile for the update, this cuts the shared-memory traffic per multiply-add by 2x (dq) to 4x
// (dk/dv); it bounded both kernels (ncu, H200: L1 throughput 87-88%, dk/dv 69 wavefronts per warp and item). K/V are
// reused across the queries of the block and across the heads of the group. A dot product is a partial sum per thread
// and per row, then octet_sum_rows: lanes 0-3 of the octet end with its first row's totals, lanes 4-7 with its second
// row's (one exchange of the other row's partials, then two xor shuffles; every lane of a row holds bit-identical
// sums), so the softmax terms (exp, divide) are computed once per row and group of 4 lanes, and one more shuffle hands
// them to the other half. Tiles outside the block's visible range (window, documents) are skipped; rows mask the rest.
//
// Forward: per key tile, a row computes its scores s_j = q.k_j * HD^-0.5, takes the tile max,
// rescales its running sum l and output accumulator by exp(m_old - m_new) and adds p_j v_j. m starts at
// the sink logit, so the final
//   den = l + exp(sink - m), out = acc / den, stat_max = m, stat_den = den
// are the CPU's quantities (max over the scores and the sink; the sink joins the denominator only).
// Backward (p recomputed from stat_max/stat_den as the CPU does):
//   dq kernel: row (t, h); Dt = dout.out; per key: ds_j = p_j (dout.v_j - Dt); dq = scale sum ds_j k_j.
//              It also stores Dt (T, H) for the next kernel.
//   dk/dv kernel: row (key j, kv head g); items (t, hh), those with j <= t < min(hi[j], j + window)
//              count: dv = sum p dout, dk = scale sum ds q (the walk and its split: above the kernel).
// Each output element is reduced by one thread in a fixed order: deterministic, no atomics.
//
// Storage: q, k, v and out are bf16 (uint16_t bits); dout, dq, dk, dv, Dt and the statistics fp32. The
// backward converts every load to fp32 (as_float, common.cuh), so its shared tiles and registers hold fp32
// and all its arithmetic is the fp32 arithmetic above. The forward feeds q, k, v to the tensor cores as
// they are (exact products, fp32 sums) and rounds each weight p_j to bf16 for P V (the one precision
// change against the CPU: above its kernel); it rounds out to bf16 once, when it stores acc * (1 / den)
// (store_as). The backward's Dt = dout.out uses that stored bf16 out, as the CPU backward does when given
// it.
#include "model/cuda/common.cuh"

#define ATT_L 8     // threads per pair of rows (an octet)
#define ATT_ROWS 32 // rows per block
#define ATT_HALF (ATT_ROWS / 2)
#define ATT_THREADS (ATT_L * ATT_HALF)
#define ATT_BK 32   // shared-memory tile rows
#define ATT_MAXDP 128 // HD <= ATT_MAXDP

__global__ void doc_bounds_kernel(int32_t *lo, int32_t *hi, const int32_t *doc, int T) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    int j = t;
    while (j > 0 && doc[j - 1] == doc[t]) j--;
    lo[t] = j;
    int k = t + 1;
    while (k < T && doc[k] == doc[t]) k++;
    hi[t] = k;
}

extern "C" void cuda_doc_bounds(int32_t *doc_lo, int32_t *doc_hi, const int32_t *doc, int T) {
    if (!T) return;
    doc_bounds_kernel<<<cuda_blocks(T, 128), 128>>>(doc_lo, doc_hi, doc, T);
    CUDA_LAUNCH_CHECK();
}

// Octet sums of per-thread partials of the octet's two rows: a_k, b_k belong to row k (0: the octet's first
// row, 1: its second). Returns row own's totals in a and b, own = bit 2 of the lane (lanes 0-3: row 0,
// lanes 4-7: row 1). The first step swaps the other row's partials with lane ^ 4 (which owns that row);
// each later add has the same two operands on both lanes, so the four lanes of a row agree bitwise.
static __device__ __forceinline__ void octet_sum_rows(float a0, float b0, float a1, float b1, int own, float &a,
                                                      float &b) {
    a = (own ? a1 : a0) + __shfl_xor_sync(FULL_MASK, own ? a0 : a1, 4);
    b = (own ? b1 : b0) + __shfl_xor_sync(FULL_MASK, own ? b0 : b1, 4);
    a += __shfl_xor_sync(FULL_MASK, a, 2), b += __shfl_xor_sync(FULL_MASK, b, 2);
    a += __shfl_xor_sync(FULL_MASK, a, 1), b += __shfl_xor_sync(FULL_MASK, b, 1);
}
// One value per row: the octet total of row own.
static __device__ __forceinline__ float octet_sum_row(float a0, float a1, int own) {
    float a = (own ? a1 : a0) + __shfl_xor_sync(FULL_MASK, own ? a0 : a1, 4);
    a += __shfl_xor_sync(FULL_MASK, a, 2);
    return a + __shfl_xor_sync(FULL_MASK, a, 1);
}
// A per-row value v (held by the lanes of row own) for row 0 and row 1 on every lane of the octet.
static __device__ __forceinline__ void octet_share(float v, int own, float &v0, float &v1) {
    float o = __shfl_xor_sync(FULL_MASK, v, 4);
    v0 = own ? o : v, v1 = own ? v : o;
}

// First key a query t sees.
static __device__ __forceinline__ int attn_first_key(const int32_t *lo, int t, int window) {
    int j0 = lo[t];
    return window > 0 && t - window + 1 > j0 ? t - window + 1 : j0;
}
// One past the last query that sees key j.
static __device__ __forceinline__ int attn_end_query(const int32_t *hi, int j, int window) {
    int t1 = hi[j];
    return window > 0 && j + window < t1 ? j + window : t1;
}

// One stored element as fp32 (bf16 activations or fp32 gradients), and an fp32 value stored (rounded once
// to bf16 for an activation).

// Copies n rows (row r at src + r * stride, HD elements) into a (BK, DP) fp32 tile, zero past n and HD; the
// ATT_THREADS threads lt = 0 .. ATT_THREADS - 1 of one (sub)block share the copy.
template <int DP, int BK, typename S>
static __device__ __forceinline__ void tile_load(float *dst, const S *src, size_t stride, int n, int HD, int lt) {
    for (int e = lt; e < BK * DP; e += ATT_THREADS) {
        int r = e / DP, d = e % DP;
        dst[e] = r < n && d < HD ? as_float(src[(size_t)r * stride + d]) : 0.0f;
    }
}
// This thread's chunks c = sub + L * i of a row of HD elements into fp32 registers (zero past HD).
template <int L, int CPT, typename S>
static __device__ __forceinline__ void row_load(float4 *x, const S *src, int sub, int HD) {
    for (int i = 0; i < CPT; i++) {
        int d = 4 * (sub + L * i);
        x[i].x = d < HD ? as_float(src[d]) : 0.0f;
        x[i].y = d + 1 < HD ? as_float(src[d + 1]) : 0.0f;
        x[i].z = d + 2 < HD ? as_float(src[d + 2]) : 0.0f;
        x[i].w = d + 3 < HD ? as_float(src[d + 3]) : 0.0f;
    }
}
// This thread's chunks (as in row_load) times f into a row of HD elements.
template <int L, int CPT, typename S>
static __device__ __forceinline__ void row_store(S *dst, const float4 *x, float f, int sub, int HD) {
    for (int i = 0; i < CPT; i++) {
        int d = 4 * (sub + L * i);
        if (d < HD) store_as(dst + d, x[i].x * f);
        if (d + 1 < HD) store_as(dst + d + 1, x[i].y * f);
        if (d + 2 < HD) store_as(dst + d + 2, x[i].z * f);
        if (d + 3 < HD) store_as(dst + d + 3, x[i].w * f);
    }
}
// This thread's chunks of a shared tile row into registers.
template <int CPT>
static __device__ __forceinline__ void row_get(float4 *y, const float *row_sh, int sub) {
    for (int i = 0; i < CPT; i++) y[i] = reinterpret_cast<const float4 *>(row_sh)[sub + ATT_L * i];
}
// Partial dot of two sets of chunks.
template <int CPT>
static __device__ __forceinline__ float row_dot(const float4 *x, const float4 *y) {
    float s = 0.0f;
    for (int i = 0; i < CPT; i++) s += x[i].x * y[i].x + x[i].y * y[i].y + x[i].z * y[i].z + x[i].w * y[i].w;
    return s;
}
// acc += a y; acc *= c.
template <int CPT>
static __device__ __forceinline__ void row_axpy(float4 *acc, float a, const float4 *y) {
    for (int i = 0; i < CPT; i++)
        acc[i].x += a * y[i].x, acc[i].y += a * y[i].y, acc[i].z += a * y[i].z, acc[i].w += a * y[i].w;
}
template <int CPT>
static __device__ __forceinline__ void row_zero(float4 *acc) {
    for (int i = 0; i < CPT; i++) acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

// The rows a block of the dq kernel owns (grid (row blocks, KVH); rows p = t * group + hh of
// KV head g): this thread's octet lane sub, its row own (octet_sum_rows), and for its octet's rows k = 0, 1
// (block rows o and o + ATT_HALF) the query t[k], head h[k] (th = t * H + h; a row past the end takes the
// last query and only helps load tiles: valid 0) and first key j0[k]; the block's last query tB and the
// first key any of its rows sees (kmin).
struct att_qrows {
    int g, sub, own, tB, kmin, t[2], h[2], j0[2];
    bool valid[2];
    size_t th[2];
};
static __device__ __forceinline__ att_qrows att_qrows_get(const int32_t *lo, int T, int H, int KVH, int window) {
    att_qrows r;
    const int group = H / KVH;
    r.g = blockIdx.y, r.sub = threadIdx.x % ATT_L, r.own = r.sub >> 2;
    long np = (long)T * group, p0 = (long)blockIdx.x * ATT_ROWS;
    for (int k = 0; k < 2; k++) {
        long p = p0 + threadIdx.x / ATT_L + k * ATT_HALF;
        r.valid[k] = p < np;
        r.t[k] = r.valid[k] ? (int)(p / group) : T - 1;
        r.h[k] = r.g * group + (r.valid[k] ? (int)(p % group) : 0);
        r.th[k] = (size_t)r.t[k] * H + r.h[k];
        r.j0[k] = attn_first_key(lo, r.t[k], window);
    }
    r.tB = (int)((min(p0 + ATT_ROWS, np) - 1) / group);
    r.kmin = attn_first_key(lo, (int)(p0 / group), window);
    return r;
}
// Keys kb .. min(kb + ATT_BK, tB + 1) - 1 of KV head g into the K and V tiles (zero past them); barriers on
// both sides: the previous tiles' readers finish before the overwrite, the new tiles are complete after.
template <int DP>
static __device__ __forceinline__ void kv_tiles_load(float *ks, float *vs, const uint16_t *k, const uint16_t *v,
                                                     int kb, int tB, int g, int KVH, int HD) {
    int nk = min(ATT_BK, tB - kb + 1);
    __syncthreads();
    tile_load<DP, ATT_BK>(ks, k + ((size_t)kb * KVH + g) * HD, (size_t)KVH * HD, nk, HD, threadIdx.x);
    tile_load<DP, ATT_BK>(vs, v + ((size_t)kb * KVH + g) * HD, (size_t)KVH * HD, nk, HD, threadIdx.x);
    __syncthreads();
}

// ---------------------------------------------------------------------------------------------------
// Forward on bf16 tensor cores (FlashAttention-2's scheme): a block of FWD_BR = 64 rows p (as above) is 4
// warps of 16 rows; per tile of BC keys a warp computes its 16 x BC scores S = Q K^T with mma.sync
// m16n8k16 (bf16 inputs, fp32 accumulation: the products are exact, only the summation order differs from
// the CPU's dot), scales, masks and takes the online softmax step in registers (a row's values live on the
// 4 lanes of a quad), then adds P V on the tensor cores with P = exp(s - m) rounded to bf16 (relative error
// <= 2^-8 per weight; the running sum l adds the fp32 values, so den and the statistics are the fp32 ones).
// So out carries, besides the fp32 evaluation order, at most 2^-8 sum_j p_j |v_j| before its own rounding
// to bf16 (tests/test_gpu_attention.c checks it against that budget).
// Fragments (PTX ISA, mma.m16n8k16): lane = 4 gr + c4 holds A rows gr, gr + 8 at k pairs 2 c4 (+8), B's
// k pairs 2 c4 (+8) at column gr, C rows gr, gr + 8 at columns 2 c4, 2 c4 + 1. Q is read once into A
// fragments; K (B of S, (key, d) rows) is read with ldmatrix, V (B of P V, k = key) with ldmatrix.trans;
// the S accumulators of two adjacent 8-key groups are exactly P's A fragment for 16 keys. K and V tiles are
// bf16 in shared memory (rows padded by 16 bytes: ldmatrix without bank conflicts), double-buffered with
// cp.async (16-byte chunks when HD % 8 == 0 and the rows are 16-byte aligned, element copies otherwise).
// The dims are padded to DP (16, 32, 64 or 128) with zeros. A warp skips the tiles none of its rows sees.
#define FWD_BR 64
#define FWD_THREADS 128
static __host__ __device__ constexpr int fwd_bc(int dp) { return dp > 64 ? 32 : 64; } // keys per tile

// Two fp32 values as a bf16 pair (lo in the low half), each rounded to nearest even.
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    return (uint32_t)bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16;
}

// Keys kb .. kb + BC - 1 of kv head g into the bf16 tiles ks, vs ((BC, DP + 8) each), zero at keys past tB
// and dims past HD; one cp.async group (the element-copy path stores directly).
template <int DP, int BC>
static __device__ __forceinline__ void fwd_kv_load(uint16_t *ks, uint16_t *vs, const uint16_t *k, const uint16_t *v,
                                                   int kb, int tB, int g, int KVH, int HD, bool vec) {
    constexpr int KP = DP + 8, CH = DP / 8; // padded pitch, 16-byte chunks per row
    if (vec) {
        for (int e = threadIdx.x; e < BC * CH; e += FWD_THREADS) {
            int r = e / CH, d = e % CH * 8;
            bool in = kb + r <= tB && d < HD;
            size_t off = in ? ((size_t)(kb + r) * KVH + g) * HD + d : 0;
            cp_async16(smem_addr(ks + r * KP + d), k + off, in ? 16 : 0);
            cp_async16(smem_addr(vs + r * KP + d), v + off, in ? 16 : 0);
        }
    } else {
        for (int e = threadIdx.x; e < BC * DP; e += FWD_THREADS) {
            int r = e / DP, d = e % DP;
            bool in = kb + r <= tB && d < HD;
            size_t off = ((size_t)(kb + r) * KVH + g) * HD + d;
            ks[r * KP + d] = in ? k[off] : 0;
            vs[r * KP + d] = in ? v[off] : 0;
        }
    }
    cp_async_commit();
}

// Grid (row blocks, KVH), the block order reversed (the causal layer's longest blocks, the last queries,
// first). Block range tB, kmin as for att_qrows.
template <int DP>
__global__ void __launch_bounds__(FWD_THREADS)
    attn_fwd_kernel(uint16_t *out, float *smax, float *sden, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                    const float *sinks, const int32_t *lo, int T, int H, int KVH, int HD, int window, float scale,
                    bool vec) {
    constexpr int BC = fwd_bc(DP), KP = DP + 8, NT = BC / 8, ND = DP / 8, KS = DP / 16;
    __shared__ __align__(16) uint16_t ks[2][BC * KP], vs[2][BC * KP];
    const int group = H / KVH, g = blockIdx.y, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int gr = lane / 4, c4 = lane % 4;
    const long np = (long)T * group, p0 = (long)(gridDim.x - 1 - blockIdx.x) * FWD_BR, pw = p0 + warp * 16;
    const int tB = (int)((min(p0 + FWD_BR, np) - 1) / group), kmin = attn_first_key(lo, (int)(p0 / group), window);
    // The warp's keys: from its first row's first key to its last valid row's query (none without rows).
    const int wlo = attn_first_key(lo, (int)(min(pw, np - 1) / group), window);
    const int whi = pw < np ? (int)((min(pw + 16, np) - 1) / group) : -1;
    // This thread's rows r = 0, 1: pw + gr + 8 r (past the end: the last query, not stored).
    int t[2], h[2], j0[2];
    bool valid[2];
    size_t th[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        long p = pw + gr + 8 * r;
        valid[r] = p < np;
        t[r] = valid[r] ? (int)(p / group) : T - 1;
        h[r] = g * group + (valid[r] ? (int)(p % group) : 0);
        th[r] = (size_t)t[r] * H + h[r];
        j0[r] = attn_first_key(lo, t[r], window);
    }
    uint32_t qa[KS][4]; // A fragments of the warp's 16 q rows, dims 16 ks ..
#pragma unroll
    for (int s = 0; s < KS; s++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t *qr = q + th[i & 1] * HD;
            int dd = 16 * s + 8 * (i >> 1) + 2 * c4;
            qa[s][i] = (uint32_t)(dd < HD ? qr[dd] : 0) | (uint32_t)(dd + 1 < HD ? qr[dd + 1] : 0) << 16;
        }
    float o[ND][4], m[2] = {sinks[h[0]], sinks[h[1]]}, l[2] = {0.0f, 0.0f};
    for (int nd = 0; nd < ND; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    const int ntile = (tB - kmin) / BC + 1;
    fwd_kv_load<DP, BC>(ks[0], vs[0], k, v, kmin, tB, g, KVH, HD, vec);
    for (int it = 0; it < ntile; it++) {
        const int kb = kmin + it * BC, st = it & 1;
        if (it + 1 < ntile) {
            fwd_kv_load<DP, BC>(ks[st ^ 1], vs[st ^ 1], k, v, kb + BC, tB, g, KVH, HD, vec);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kb <= whi && kb + BC > wlo) {
            float s[NT][4];
            for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            // ldmatrix rows: lane's key (nt + lane / 16) * 8 + lane % 8, dims 16 ks + 8 (lane / 8 % 2).
            const uint32_t kaddr = smem_addr(ks[st] + (lane / 16 * 8 + lane % 8) * KP + lane / 8 % 2 * 8);
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) {
                    uint32_t b[4];
                    ldsm_x4(kaddr + (uint32_t)(nt * 8 * KP + 16 * kk) * 2, b[0], b[1], b[2], b[3]);
                    mma_bf16(s[nt], qa[kk], b);
                    mma_bf16(s[nt + 1], qa[kk], b + 2);
                }
            float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1, j = kb + nt * 8 + 2 * c4 + (e & 1);
                    float x = j >= j0[r] && j <= t[r] ? s[nt][e] * scale : -INFINITY;
                    s[nt][e] = x;
                    mt[r] = fmaxf(mt[r], x);
                }
            float c[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mt[r] = fmaxf(mt[r], __shfl_xor_sync(FULL_MASK, mt[r], 1));
                mt[r] = fmaxf(mt[r], __shfl_xor_sync(FULL_MASK, mt[r], 2));
                float mn = fmaxf(m[r], mt[r]);
                c[r] = expf(m[r] - mn);
                m[r] = mn;
                l[r] *= c[r];
            }
            for (int nd = 0; nd < ND; nd++) o[nd][0] *= c[0], o[nd][1] *= c[0], o[nd][2] *= c[1], o[nd][3] *= c[1];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float pj = expf(s[nt][e] - m[e >> 1]);
                    l[e >> 1] += pj;
                    s[nt][e] = pj;
                }
            // ldmatrix.trans rows: lane's key 16 kk + 8 (lane / 8 % 2) + lane % 8, dims (nd + lane / 16) * 8.
            const uint32_t vaddr = smem_addr(vs[st] + (lane / 8 % 2 * 8 + lane % 8) * KP + lane / 16 * 8);
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++) {
                uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                  pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int nd = 0; nd < ND; nd += 2) {
                    uint32_t b[4];
                    ldsm_x4_t(vaddr + (uint32_t)(16 * kk * KP + 8 * nd) * 2, b[0], b[1], b[2], b[3]);
                    mma_bf16(o[nd], pa, b);
                    mma_bf16(o[nd + 1], pa, b + 2);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
        if (!valid[r]) continue;
        float den = l[r] + expf(sinks[h[r]] - m[r]), inv = 1.0f / den;
        uint16_t *orow = out + th[r] * HD;
        for (int nd = 0; nd < ND; nd++)
            for (int e = 0; e < 2; e++) {
                int dd = nd * 8 + 2 * c4 + e;
                if (dd < HD) store_as(orow + dd, o[nd][2 * r + e] * inv);
            }
        if (c4 == 0) {
            smax[th[r]] = m[r];
            sden[th[r]] = den;
        }
    }
}

static float attn_scale(int HD) { return (float)pow((double)HD, -0.5); }

// Chunks per thread for HD with L threads per row, rounded up to a power of two (HD <= ATT_MAXDP: at most
// 4 for the octets).
static int attn_cpt(int HD, int L) {
    int nc = (HD + 3) / 4, cpt = 1;
    while (cpt * L < nc) cpt *= 2;
    return cpt;
}

// KERNEL<cpt> (octet layout) on GRID with ATT_THREADS * NSUB(cpt) threads.
#define ATT_DISPATCH(HD, KERNEL, NSUB, GRID, ...)                                                              \
    switch (attn_cpt(HD, ATT_L)) {                                                                                    \
    case 1: KERNEL<1><<<GRID, ATT_THREADS * NSUB(1)>>>(__VA_ARGS__); break;                                     \
    case 2: KERNEL<2><<<GRID, ATT_THREADS * NSUB(2)>>>(__VA_ARGS__); break;                                     \
    default: KERNEL<4><<<GRID, ATT_THREADS * NSUB(4)>>>(__VA_ARGS__); break;                                    \
    }
static __host__ __device__ constexpr int att_one_block(int) { return 1; }

extern "C" void cuda_attention_forward(uint16_t *out, float *stat_max, float *stat_den, const uint16_t *q,
                                       const uint16_t *k, const uint16_t *v, const float *sinks, const int32_t *doc_lo,
                                       cpu_attn_dims d) {
    CHECK(d.HD <= ATT_MAXDP && d.H % d.KVH == 0);
    size_t rows = (size_t)d.T * (d.H / d.KVH);
    if (!rows) return;
    dim3 grid((unsigned)((rows + FWD_BR - 1) / FWD_BR), (unsigned)d.KVH);
    float scale = attn_scale(d.HD);
    bool vec = d.HD % 8 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0;
#define FWD_ARGS out, stat_max, stat_den, q, k, v, sinks, doc_lo, d.T, d.H, d.KVH, d.HD, d.window, scale, vec
    if (d.HD <= 16) attn_fwd_kernel<16><<<grid, FWD_THREADS>>>(FWD_ARGS);
    else if (d.HD <= 32) attn_fwd_kernel<32><<<grid, FWD_THREADS>>>(FWD_ARGS);
    else if (d.HD <= 64) attn_fwd_kernel<64><<<grid, FWD_THREADS>>>(FWD_ARGS);
    else attn_fwd_kernel<128><<<grid, FWD_THREADS>>>(FWD_ARGS);
#undef FWD_ARGS
    CUDA_LAUNCH_CHECK();
}

// Grid (row blocks, KVH), rows as in att_qrows.
template <int CPT>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_bwd_dq_kernel(float *dq, float *Dt, const float *dout, const uint16_t *out, const uint16_t *q,
                       const uint16_t *k, const uint16_t *v, const float *smax, const float *sden, const int32_t *lo,
                       int T, int H, int KVH, int HD, int window, float scale) {
    constexpr int DP = 4 * ATT_L * CPT;
    __shared__ __align__(16) float ks[ATT_BK * DP], vs[ATT_BK * DP];
    const att_qrows r = att_qrows_get(lo, T, H, KVH, window);
    const int sub = r.sub, own = r.own, t = own ? r.t[1] : r.t[0], j0 = own ? r.j0[1] : r.j0[0];
    const size_t th = own ? r.th[1] : r.th[0];
    float4 q0[CPT], q1[CPT], d0[CPT], d1[CPT], a0[CPT], a1[CPT], y[CPT], z[CPT];
    row_load<ATT_L, CPT>(q0, q + r.th[0] * HD, sub, HD);
    row_load<ATT_L, CPT>(q1, q + r.th[1] * HD, sub, HD);
    row_load<ATT_L, CPT>(d0, dout + r.th[0] * HD, sub, HD);
    row_load<ATT_L, CPT>(d1, dout + r.th[1] * HD, sub, HD);
    row_load<ATT_L, CPT>(a0, out + r.th[0] * HD, sub, HD);
    row_load<ATT_L, CPT>(a1, out + r.th[1] * HD, sub, HD);
    const float D = octet_sum_row(row_dot<CPT>(d0, a0), row_dot<CPT>(d1, a1), own);
    if ((own ? r.valid[1] : r.valid[0]) && (sub & 3) == 0) Dt[th] = D;
    row_zero<CPT>(a0), row_zero<CPT>(a1);
    const float m = smax[th], den = sden[th];
    for (int kb = r.kmin; kb <= r.tB; kb += ATT_BK) {
        kv_tiles_load<DP>(ks, vs, k, v, kb, r.tB, r.g, KVH, HD);
#pragma unroll 4
        for (int jj = 0; jj < ATT_BK; jj++) {
            int j = kb + jj;
            row_get<CPT>(y, ks + jj * DP, sub);
            row_get<CPT>(z, vs + jj * DP, sub);
            float s, dp, ds0, ds1;
            octet_sum_rows(row_dot<CPT>(q0, y), row_dot<CPT>(d0, z), row_dot<CPT>(q1, y), row_dot<CPT>(d1, z), own,
                           s, dp);
            s *= scale;
            float ds = j >= j0 && j <= t ? expf(s - m) / den * (dp - D) : 0.0f;
            octet_share(ds, own, ds0, ds1);
            row_axpy<CPT>(a0, ds0, y), row_axpy<CPT>(a1, ds1, y);
        }
    }
    if (r.valid[0]) row_store<ATT_L, CPT>(dq + r.th[0] * HD, a0, scale, sub, HD);
    if (r.valid[1]) row_store<ATT_L, CPT>(dq + r.th[1] * HD, a1, scale, sub, HD);
}

// dk/dv: a block owns ATT_ROWS keys of one kv head and splits their items among dkv_split(CPT) subblocks
// of ATT_THREADS threads (same keys, rows to octets as elsewhere). The items are walked in tiles of DKV_BK
// consecutive queries of one head: tile n = query tile n / group, head n % group, queries from the block's
// first key jA on; subblock s takes tiles s, s + NS, s + 2 NS, ... into its own shared tiles, synchronised
// by its own named barrier, and at the end the NS partial sums of each output are added in subblock order
// by subblock 0. So the longest block (key 0 of a full causal layer: every item of the sequence) walks
// 1 / NS of its items per thread, instead of all of them on 4 warps while the rest of the GPU idles (ncu,
// H200, gpt-oss-20b causal layer: the SMs were busy 58% of the kernel's cycles); tile rows are one stride
// apart (no division per element).
#define DKV_BK 16 // queries per item tile
static __host__ __device__ constexpr int dkv_split(int cpt) { return cpt >= 4 ? 2 : 4; }

// Barrier of subblock s alone (ATT_THREADS threads; id 0 is __syncthreads').
static __device__ __forceinline__ void subblock_sync(int s) {
    asm volatile("bar.sync %0, %1;" ::"r"(s + 1), "r"(ATT_THREADS) : "memory");
}

// Rows o and o + ATT_HALF (acc0, acc1) of subblock 0 += the same of subblocks 1 .. NS-1, in that order,
// through red ((NS - 1) * ATT_ROWS * DP / 4 float4s of shared memory); the other subblocks' acc is left as
// it was. Whole-block barriers on both sides.
template <int CPT, int NS>
static __device__ __forceinline__ void subblock_reduce(float4 *acc0, float4 *acc1, float4 *red, int s, int lt) {
    constexpr int DP4 = ATT_L * CPT; // float4s per row
    const int o = lt / ATT_L, sub = lt % ATT_L;
    __syncthreads();
    if (s > 0)
        for (int i = 0; i < CPT; i++) {
            red[((s - 1) * ATT_ROWS + o) * DP4 + sub + ATT_L * i] = acc0[i];
            red[((s - 1) * ATT_ROWS + o + ATT_HALF) * DP4 + sub + ATT_L * i] = acc1[i];
        }
    __syncthreads();
    if (s == 0)
        for (int b = 1; b < NS; b++)
            for (int i = 0; i < CPT; i++) {
                float4 y0 = red[((b - 1) * ATT_ROWS + o) * DP4 + sub + ATT_L * i];
                float4 y1 = red[((b - 1) * ATT_ROWS + o + ATT_HALF) * DP4 + sub + ATT_L * i];
                acc0[i].x += y0.x, acc0[i].y += y0.y, acc0[i].z += y0.z, acc0[i].w += y0.w;
                acc1[i].x += y1.x, acc1[i].y += y1.y, acc1[i].z += y1.z, acc1[i].w += y1.w;
            }
}

// Grid (KVH, key blocks): the block order walks the causal layer's longest blocks (first keys) first.
template <int CPT>
__global__ void __launch_bounds__(ATT_THREADS * dkv_split(CPT), 1)
    attn_bwd_dkv_kernel(float *dk, float *dv, const float *Dt, const float *dout, const uint16_t *q,
                        const uint16_t *k, const uint16_t *v, const float *smax, const float *sden, const int32_t *hi,
                        int T, int H, int KVH, int HD, int window, float scale) {
    constexpr int DP = 4 * ATT_L * CPT, NS = dkv_split(CPT);
    // Per subblock: the q tile, then the dout tile. At the end the same memory holds the partial sums of
    // subblocks 1 .. NS-1 ((NS - 1) * ATT_ROWS * DP floats <= NS * 2 * DKV_BK * DP).
    static_assert((NS - 1) * ATT_ROWS <= NS * 2 * DKV_BK, "reduction buffer");
    __shared__ __align__(16) float tiles[NS][2][DKV_BK * DP];
    __shared__ float ms[NS][DKV_BK], dens[NS][DKV_BK], Ds[NS][DKV_BK];
    const int s = threadIdx.x / ATT_THREADS, lt = threadIdx.x % ATT_THREADS;
    const int g = blockIdx.x, group = H / KVH, sub = lt % ATT_L, own = sub >> 2;
    const int jA = blockIdx.y * ATT_ROWS, jB = min(jA + ATT_ROWS, T) - 1;
    bool valid[2];
    size_t jg[2]; // rows k = 0, 1 of the octet: keys jA + o + k * ATT_HALF (past T: the last key, not stored)
    for (int kk = 0; kk < 2; kk++) {
        int jr = jA + lt / ATT_L + kk * ATT_HALF;
        valid[kk] = jr < T;
        jg[kk] = (size_t)(valid[kk] ? jr : T - 1) * KVH + g;
    }
    const int j = (int)((own ? jg[1] : jg[0]) / KVH); // row own's key
    const int t1 = attn_end_query(hi, j, window), tEnd = attn_end_query(hi, jB, window); // tEnd >= t1
    const int ntiles = (tEnd - jA + DKV_BK - 1) / DKV_BK * group;
    float *qs = tiles[s][0], *dos = tiles[s][1];
    float4 k0[CPT], k1[CPT], v0[CPT], v1[CPT], ak0[CPT], ak1[CPT], av0[CPT], av1[CPT], y[CPT], z[CPT];
    row_load<ATT_L, CPT>(k0, k + jg[0] * HD, sub, HD);
    row_load<ATT_L, CPT>(k1, k + jg[1] * HD, sub, HD);
    row_load<ATT_L, CPT>(v0, v + jg[0] * HD, sub, HD);
    row_load<ATT_L, CPT>(v1, v + jg[1] * HD, sub, HD);
    row_zero<CPT>(ak0), row_zero<CPT>(ak1), row_zero<CPT>(av0), row_zero<CPT>(av1);
    for (int n = s; n < ntiles; n += NS) {
        const int qb = jA + n / group * DKV_BK, nr = min(DKV_BK, tEnd - qb);
        const size_t th0 = (size_t)qb * H + g * group + n % group; // item row r: th0 + r * H
        subblock_sync(s);
        tile_load<DP, DKV_BK>(qs, q + th0 * HD, (size_t)H * HD, nr, HD, lt);
        tile_load<DP, DKV_BK>(dos, dout + th0 * HD, (size_t)H * HD, nr, HD, lt);
        if (lt < DKV_BK) {
            bool in = lt < nr;
            size_t th = in ? th0 + (size_t)lt * H : 0;
            ms[s][lt] = in ? smax[th] : 0.0f;
            dens[s][lt] = in ? sden[th] : 1.0f;
            Ds[s][lt] = in ? Dt[th] : 0.0f;
        }
        subblock_sync(s);
#pragma unroll 2
        for (int r = 0; r < DKV_BK; r++) {
            row_get<CPT>(y, qs + r * DP, sub);
            row_get<CPT>(z, dos + r * DP, sub);
            float sc, dp, p0, p1, ds0, ds1;
            octet_sum_rows(row_dot<CPT>(k0, y), row_dot<CPT>(v0, z), row_dot<CPT>(k1, y), row_dot<CPT>(v1, z), own,
                           sc, dp);
            sc *= scale;
            int t = qb + r; // rows past nr have t >= tEnd >= t1: unseen
            float pr = t >= j && t < t1 ? expf(sc - ms[s][r]) / dens[s][r] : 0.0f;
            float ds = pr * (dp - Ds[s][r]);
            octet_share(pr, own, p0, p1);
            octet_share(ds, own, ds0, ds1);
            row_axpy<CPT>(av0, p0, z), row_axpy<CPT>(av1, p1, z);
            row_axpy<CPT>(ak0, ds0, y), row_axpy<CPT>(ak1, ds1, y);
        }
    }
    // Partial sums of subblocks 1 .. NS-1 through shared memory (dv, then dk); subblock 0 adds them to its
    // own in subblock order and stores.
    float4 *red = reinterpret_cast<float4 *>(&tiles[0][0][0]);
    subblock_reduce<CPT, NS>(av0, av1, red, s, lt);
    subblock_reduce<CPT, NS>(ak0, ak1, red, s, lt);
    if (s) return;
    if (valid[0]) {
        row_store<ATT_L, CPT>(dk + jg[0] * HD, ak0, scale, sub, HD);
        row_store<ATT_L, CPT>(dv + jg[0] * HD, av0, 1.0f, sub, HD);
    }
    if (valid[1]) {
        row_store<ATT_L, CPT>(dk + jg[1] * HD, ak1, scale, sub, HD);
        row_store<ATT_L, CPT>(dv + jg[1] * HD, av1, 1.0f, sub, HD);
    }
}

extern "C" void cuda_attention_backward(float *dq, float *dk, float *dv, float *Dt, const float *dout,
                                        const uint16_t *out, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                        const int32_t *doc_lo, const int32_t *doc_hi, const float *stat_max,
                                        const float *stat_den, cpu_attn_dims d) {
    CHECK(d.HD <= ATT_MAXDP && d.H % d.KVH == 0);
    if (!d.T) return;
    float scale = attn_scale(d.HD);
    size_t rows = (size_t)d.T * (d.H / d.KVH);
    dim3 gq((unsigned)((rows + ATT_ROWS - 1) / ATT_ROWS), (unsigned)d.KVH);
    ATT_DISPATCH(d.HD, attn_bwd_dq_kernel, att_one_block, gq, dq, Dt, dout, out, q, k, v, stat_max, stat_den, doc_lo,
                 d.T, d.H, d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
    dim3 gk((unsigned)d.KVH, (unsigned)((d.T + ATT_ROWS - 1) / ATT_ROWS));
    ATT_DISPATCH(d.HD, attn_bwd_dkv_kernel, dkv_split, gk, dk, dv, Dt, dout, q, k, v, stat_max, stat_den, doc_hi, d.T,
                 d.H, d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
}
