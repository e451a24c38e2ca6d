// model/cuda/attention.cu: GQA attention with sinks, causal sliding window and packed documents, forward
// and backward, flash-style (model/cpu/attention.c has the math). No (T, T) matrix exists anywhere.
//
// Layout of the work: the (query t, head h) pairs of one KV head g are numbered p = t * group + hh (h = g * group + hh,
// group = H / KVH), query-major as the CPU walks them. All three kernels run on the bf16 tensor cores (mma.sync
// m16n8k16, fp32 accumulation), a block being 4 warps of 16 rows of one g: the forward and dq own FWD_BR consecutive
// rows p and walk key tiles; dk/dv owns DKV_KEYS consecutive keys j and walks tiles of consecutive items p (the
// layouts above the kernels). K/V are reused across the queries of the block and across the heads of the group.
// Tiles outside a block's visible range (window, documents) are skipped, as are a warp's tiles none of its rows
// sees; rows mask the rest.
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
//              count: dv = sum p dout, dk = scale sum ds q (on the tensor cores: above the kernel).
// Each output element is reduced by one thread in a fixed order: deterministic, no atomics.
//
// Storage: q, k, v and out are bf16 (uint16_t bits); dout, dq, dk, dv, Dt and the statistics fp32. The
// kernels feed q, k, v to the tensor cores as they are (exact products, fp32 sums); the forward rounds each
// weight p_j to bf16 for P V, the backward rounds p, ds and dout (split into hi + lo where it cancels) to
// bf16 (the precision changes against the CPU: above the kernels). The forward rounds out to bf16 once,
// when it stores acc * (1 / den) (store_as). The backward's Dt = dout.out uses that stored bf16 out, as the
// CPU backward does when given it.
#include <climits>

#include "model/cuda/common.cuh"

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
// first). tB: the block's last query, kmin: the first key any of its rows sees.
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

// dq on bf16 tensor cores, in the forward's layout (FWD_BR rows p of one kv head per block, 4 warps of 16
// rows, key tiles of BC double-buffered with cp.async, warps skip tiles none of their rows sees, blocks
// longest first). A warp first computes its rows' Dt = dout . out (fp32: each lane's dims, then the quad's
// sum; stored for dk/dv) and holds q and dout as A fragments, dout split into bf16 hi + lo (lo = bf16(dout
// - hi): relative error <= 2^-16) because ds = p (dp - Dt) cancels. Per key tile: S = Q K^T and dP = dO V^T
// (K and V read with ldmatrix, as the forward's K), p = exp(scale s - stat_max) / stat_den masked as in the
// forward, ds = p (dp - Dt), then dQ += dS K with ds rounded to bf16 (<= 2^-8; K read with ldmatrix.trans,
// as the forward's V). At the end dq = scale dQ. Each dq element has one owner that adds the key tiles in
// order: deterministic. tests/test_gpu_attention.c checks dq against that budget per element. 3 blocks
// per SM for DP <= 64 (168 registers, a few spills; H200 causal layer 0.447 -> 0.411 ms against 241
// registers and 2 blocks); at DP 128 that would spill 728 bytes, so it keeps 1 as the bound.
template <int DP>
__global__ void __launch_bounds__(FWD_THREADS, DP > 64 ? 1 : 3)
    attn_bwd_dq_kernel(float *dq, float *Dt, const float *dout, const uint16_t *out, const uint16_t *q,
                       const uint16_t *k, const uint16_t *v, const float *smax, const float *sden, const int32_t *lo,
                       int T, int H, int KVH, int HD, int window, float scale, bool vec) {
    constexpr int BC = fwd_bc(DP), KP = DP + 8, NT = BC / 8, ND = DP / 8, KS = DP / 16;
    __shared__ __align__(16) uint16_t ks[2][BC * KP], vs[2][BC * KP];
    const int group = H / KVH, g = blockIdx.y, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int gr = lane / 4, c4 = lane % 4;
    const long np = (long)T * group, p0 = (long)(gridDim.x - 1 - blockIdx.x) * FWD_BR, pw = p0 + warp * 16;
    const int tB = (int)((min(p0 + FWD_BR, np) - 1) / group), kmin = attn_first_key(lo, (int)(p0 / group), window);
    const int wlo = attn_first_key(lo, (int)(min(pw, np - 1) / group), window);
    const int whi = pw < np ? (int)((min(pw + 16, np) - 1) / group) : -1;
    int t[2], j0[2];
    bool valid[2];
    size_t th[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        long p = pw + gr + 8 * r;
        valid[r] = p < np;
        t[r] = valid[r] ? (int)(p / group) : T - 1;
        th[r] = (size_t)t[r] * H + g * group + (valid[r] ? (int)(p % group) : 0);
        j0[r] = attn_first_key(lo, t[r], window);
    }
    uint32_t qa[KS][4], dh[KS][4], dl[KS][4]; // A fragments of the warp's q rows, dout hi and lo
    float D[2] = {0.0f, 0.0f};
#pragma unroll
    for (int s = 0; s < KS; s++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = i & 1, dd = 16 * s + 8 * (i >> 1) + 2 * c4;
            const size_t off = th[r] * HD + dd;
            const bool in0 = dd < HD, in1 = dd + 1 < HD;
            const float x0 = in0 ? dout[off] : 0.0f, x1 = in1 ? dout[off + 1] : 0.0f;
            D[r] += x0 * (in0 ? bf16_float(out[off]) : 0.0f) + x1 * (in1 ? bf16_float(out[off + 1]) : 0.0f);
            const uint16_t h0 = bf16_bits(x0), h1 = bf16_bits(x1);
            qa[s][i] = (uint32_t)(in0 ? q[off] : 0) | (uint32_t)(in1 ? q[off + 1] : 0) << 16;
            dh[s][i] = (uint32_t)h0 | (uint32_t)h1 << 16;
            dl[s][i] = pack_bf16(x0 - bf16_float(h0), x1 - bf16_float(h1));
        }
    float m[2], id[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        D[r] += __shfl_xor_sync(FULL_MASK, D[r], 1);
        D[r] += __shfl_xor_sync(FULL_MASK, D[r], 2);
        if (valid[r] && c4 == 0) Dt[th[r]] = D[r];
        m[r] = smax[th[r]], id[r] = 1.0f / sden[th[r]];
    }
    float a[ND][4];
    for (int nd = 0; nd < ND; nd++) a[nd][0] = a[nd][1] = a[nd][2] = a[nd][3] = 0.0f;
    const uint32_t boff = (lane / 16 * 8 + lane % 8) * KP + lane / 8 % 2 * 8;
    const uint32_t toff = (lane / 8 % 2 * 8 + lane % 8) * KP + lane / 16 * 8;
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
            const uint32_t ka = smem_addr(ks[st]), va = smem_addr(vs[st]);
            float s[NT][4], dp[NT][4];
            for (int nt = 0; nt < NT; nt++)
                for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) {
                    const uint32_t o = (boff + nt * 8 * KP + 16 * kk) * 2;
                    uint32_t b[4];
                    ldsm_x4(ka + o, b[0], b[1], b[2], b[3]);
                    mma_bf16(s[nt], qa[kk], b);
                    mma_bf16(s[nt + 1], qa[kk], b + 2);
                    ldsm_x4(va + o, b[0], b[1], b[2], b[3]);
                    mma_bf16(dp[nt], dh[kk], b);
                    mma_bf16(dp[nt + 1], dh[kk], b + 2);
                    mma_bf16(dp[nt], dl[kk], b);
                    mma_bf16(dp[nt + 1], dl[kk], b + 2);
                }
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, j = kb + nt * 8 + 2 * c4 + (e & 1);
                    const float p = j >= j0[r] && j <= t[r] ? expf(s[nt][e] * scale - m[r]) * id[r] : 0.0f;
                    s[nt][e] = p * (dp[nt][e] - D[r]);
                }
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++) {
                const uint32_t da[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                        pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                        pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int nd = 0; nd < ND; nd += 2) {
                    uint32_t b[4];
                    ldsm_x4_t(ka + (toff + 16 * kk * KP + 8 * nd) * 2, b[0], b[1], b[2], b[3]);
                    mma_bf16(a[nd], da, b);
                    mma_bf16(a[nd + 1], da, b + 2);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (!valid[r]) continue;
        for (int nd = 0; nd < ND; nd++)
            for (int e = 0; e < 2; e++) {
                const int dd = nd * 8 + 2 * c4 + e;
                if (dd < HD) dq[th[r] * HD + dd] = a[nd][2 * r + e] * scale;
            }
    }
}

// dk/dv on bf16 tensor cores (FlashAttention-2's backward for one key block): a block owns DKV_KEYS = 64
// keys of one kv head g, 4 warps of 16 keys each; it walks the items (t, hh) that see any of its keys as
// tiles of BR consecutive items p = t * group + hh (p from jA * group up to the block's last key's end
// query), all 4 warps reading the same tiles. Per tile a warp computes, for its 16 keys and the BR items,
//   S^T = K Q^T and dP^T = V dO^T (mma.sync m16n8k16: K and V held as A fragments, the q and dout tiles
//   read with ldmatrix as for the forward's K), p = exp(scale s - stat_max) / stat_den (the fp32 stats,
//   masked to j <= t < end query of j), ds = p (dp - Dt),
//   dV += P^T dO and dK += dS^T Q (the accumulators of two 8-item groups are the A fragment of 16 items;
//   the dout and q tiles read with ldmatrix.trans as for the forward's V),
// and at the end stores dk = scale dK and dv = dV for its keys. Each output element has one owner (a lane of
// one warp) that adds the tiles in item order: deterministic, no atomics. Warps skip tiles none of their
// keys sees (the block still loads them for the others); blocks run longest first (first keys of a causal
// layer). No split of a key block's items: the longest block (key 0 of the causal layer) walks every item
// (256 tiles at T 2048, group 8, against 132 on average: with 251 registers, 2 blocks per SM, the causal
// call is bound by that walk; H200 1.57 ms causal, 0.176 ms window 128). Splitting the items among warp
// groups with a fixed-order reduction (as the fp32 kernel before did) is the next step.
// Precision: q, k, v are bf16 already (exact products). dout is fp32: it is split into bf16 hi + lo
// (lo = bf16(dout - hi): relative error <= 2^-16) for dP, where ds = p (dp - Dt) cancels; dV uses hi alone
// (<= 2^-8 relative per term) and rounds each p to bf16 (<= 2^-8); dK rounds each ds to bf16 (<= 2^-8).
// All sums are fp32. tests/test_gpu_attention.c checks dk and dv against that budget per element.
#define DKV_KEYS 64
#define DKV_THREADS 128
static __host__ __device__ constexpr int dkv_br(int dp) { return dp > 64 ? 32 : 64; } // items per tile

// Row t * H + h of item p = t * group + hh of kv head g.
static __device__ __forceinline__ int dkv_item_row(int p, int group, int H, int g) {
    return p / group * H + g * group + p % group;
}

// Grid (KVH, key blocks). vec: HD % 8 == 0 and q, dout 16-byte aligned (cp.async and float4 loads).
template <int DP>
__global__ void __launch_bounds__(DKV_THREADS)
    attn_bwd_dkv_kernel(float *dk, float *dv, const float *Dt, const float *dout, const uint16_t *q,
                        const uint16_t *k, const uint16_t *v, const float *smax, const float *sden, const int32_t *hi,
                        int T, int H, int KVH, int HD, int window, float scale, bool vec) {
    constexpr int BR = dkv_br(DP), KP = DP + 8, NT = BR / 8, ND = DP / 8, KS = DP / 16, CH = DP / 8;
    // Item tiles (BR, DP + 8) bf16: q, dout hi, dout lo; per item its query (INT_MAX past the end: seen by
    // no key), stat_max, 1 / stat_den and Dt.
    __shared__ __align__(16) uint16_t qs[BR * KP], dhs[BR * KP], dls[BR * KP];
    __shared__ float ms[BR], ids[BR], Ds[BR];
    __shared__ int ts[BR];
    const int group = H / KVH, g = blockIdx.x, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int gr = lane / 4, c4 = lane % 4;
    const int jA = blockIdx.y * DKV_KEYS, jB = min(jA + DKV_KEYS, T) - 1, jw = jA + warp * 16;
    const int pA = jA * group, pE = attn_end_query(hi, jB, window) * group; // T * group fits an int
    // The warp's visible queries: jw .. whi (none without keys).
    const int whi = jw < T ? attn_end_query(hi, min(jw + 15, T - 1), window) - 1 : -1;
    // This thread's keys r = 0, 1: jw + gr + 8 r and one past their last query (-1 past T: never seen).
    int j[2], t1[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        j[r] = jw + gr + 8 * r;
        t1[r] = j[r] < T ? attn_end_query(hi, j[r], window) : -1;
    }
    uint32_t ka[KS][4], va[KS][4]; // A fragments of the warp's 16 k and v rows, dims 16 s ..
#pragma unroll
    for (int s = 0; s < KS; s++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int jj = j[i & 1], dd = 16 * s + 8 * (i >> 1) + 2 * c4;
            const size_t off = ((size_t)(jj < T ? jj : 0) * KVH + g) * HD;
            const bool in0 = jj < T && dd < HD, in1 = jj < T && dd + 1 < HD;
            ka[s][i] = (uint32_t)(in0 ? k[off + dd] : 0) | (uint32_t)(in1 ? k[off + dd + 1] : 0) << 16;
            va[s][i] = (uint32_t)(in0 ? v[off + dd] : 0) | (uint32_t)(in1 ? v[off + dd + 1] : 0) << 16;
        }
    float ak[ND][4], av[ND][4];
    for (int nd = 0; nd < ND; nd++)
        for (int e = 0; e < 4; e++) ak[nd][e] = av[nd][e] = 0.0f;
    // ldmatrix row offsets (elements): B of S^T / dP^T (item rows, dims 16 kk ..), as the forward's K;
    // B of dV / dK (item = k), as the forward's V (trans).
    const uint32_t boff = (lane / 16 * 8 + lane % 8) * KP + lane / 8 % 2 * 8;
    const uint32_t toff = (lane / 8 % 2 * 8 + lane % 8) * KP + lane / 16 * 8;
    const uint32_t qsa = smem_addr(qs), dha = smem_addr(dhs), dla = smem_addr(dls);
    const int ntile = (int)((pE - pA + BR - 1) / BR);
    for (int it = 0; it < ntile; it++) {
        const int pb = pA + it * BR;
        __syncthreads(); // the previous tile's readers are done
        // One round of loads per tile (the per-item values, q by cp.async, dout into registers, all in flight
        // together), then dout split into hi and lo.
        if (threadIdx.x < BR) {
            const int p = pb + threadIdx.x;
            const bool in = p < pE;
            const int th = in ? dkv_item_row(p, group, H, g) : 0;
            ts[threadIdx.x] = in ? p / group : INT_MAX;
            ms[threadIdx.x] = in ? smax[th] : 0.0f;
            ids[threadIdx.x] = in ? 1.0f / sden[th] : 0.0f;
            Ds[threadIdx.x] = in ? Dt[th] : 0.0f;
        }
        if (vec) {
#pragma unroll
            for (int i = 0; i < BR * CH / DKV_THREADS; i++) {
                const int e = threadIdx.x + i * DKV_THREADS, r = e / CH, d = e % CH * 8, p = pb + r;
                const bool in = p < pE && d < HD;
                const size_t off = in ? (size_t)dkv_item_row(p, group, H, g) * HD + d : 0;
                cp_async16(smem_addr(qs + r * KP + d), q + off, in ? 16 : 0);
            }
            cp_async_commit();
            constexpr int NV = BR * DP / 4 / DKV_THREADS;
            float4 x[NV];
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int e = threadIdx.x + i * DKV_THREADS, r = e / (DP / 4), d = e % (DP / 4) * 4, p = pb + r;
                const bool in = p < pE && d < HD;
                x[i] = in ? *reinterpret_cast<const float4 *>(dout + (size_t)dkv_item_row(p, group, H, g) * HD + d)
                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int e = threadIdx.x + i * DKV_THREADS, r = e / (DP / 4), d = e % (DP / 4) * 4;
                const uint16_t h0 = bf16_bits(x[i].x), h1 = bf16_bits(x[i].y), h2 = bf16_bits(x[i].z),
                               h3 = bf16_bits(x[i].w);
                *reinterpret_cast<uint2 *>(dhs + r * KP + d) =
                    make_uint2((uint32_t)h0 | (uint32_t)h1 << 16, (uint32_t)h2 | (uint32_t)h3 << 16);
                *reinterpret_cast<uint2 *>(dls + r * KP + d) =
                    make_uint2(pack_bf16(x[i].x - bf16_float(h0), x[i].y - bf16_float(h1)),
                               pack_bf16(x[i].z - bf16_float(h2), x[i].w - bf16_float(h3)));
            }
            cp_async_wait<0>();
        } else {
            for (int e = threadIdx.x; e < BR * DP; e += DKV_THREADS) {
                const int r = e / DP, d = e % DP, p = pb + r;
                const bool in = p < pE && d < HD;
                const size_t off = in ? (size_t)dkv_item_row(p, group, H, g) * HD + d : 0;
                const float x = in ? dout[off] : 0.0f;
                const uint16_t h = bf16_bits(x);
                qs[r * KP + d] = in ? q[off] : 0;
                dhs[r * KP + d] = h;
                dls[r * KP + d] = bf16_bits(x - bf16_float(h));
            }
        }
        __syncthreads();
        const int tlo = pb / group, thi = (pb + BR - 1) / group;
        if (thi < jw || tlo > whi) continue;
        float s[NT][4], dp[NT][4];
        for (int nt = 0; nt < NT; nt++)
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                const uint32_t o = (boff + nt * 8 * KP + 16 * kk) * 2;
                uint32_t b[4];
                ldsm_x4(qsa + o, b[0], b[1], b[2], b[3]);
                mma_bf16(s[nt], ka[kk], b);
                mma_bf16(s[nt + 1], ka[kk], b + 2);
                ldsm_x4(dha + o, b[0], b[1], b[2], b[3]);
                mma_bf16(dp[nt], va[kk], b);
                mma_bf16(dp[nt + 1], va[kk], b + 2);
                ldsm_x4(dla + o, b[0], b[1], b[2], b[3]);
                mma_bf16(dp[nt], va[kk], b);
                mma_bf16(dp[nt + 1], va[kk], b + 2);
            }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = nt * 8 + 2 * c4 + (e & 1), r = e >> 1, t = ts[c];
                const float p = t >= j[r] && t < t1[r] ? expf(s[nt][e] * scale - ms[c]) * ids[c] : 0.0f;
                s[nt][e] = p;
                dp[nt][e] = p * (dp[nt][e] - Ds[c]);
            }
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                    pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const uint32_t da[4] = {pack_bf16(dp[2 * kk][0], dp[2 * kk][1]), pack_bf16(dp[2 * kk][2], dp[2 * kk][3]),
                                    pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                    pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
            for (int nd = 0; nd < ND; nd += 2) {
                const uint32_t o = (toff + 16 * kk * KP + 8 * nd) * 2;
                uint32_t b[4];
                ldsm_x4_t(dha + o, b[0], b[1], b[2], b[3]);
                mma_bf16(av[nd], pa, b);
                mma_bf16(av[nd + 1], pa, b + 2);
                ldsm_x4_t(qsa + o, b[0], b[1], b[2], b[3]);
                mma_bf16(ak[nd], da, b);
                mma_bf16(ak[nd + 1], da, b + 2);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (j[r] >= T) continue;
        const size_t off = ((size_t)j[r] * KVH + g) * HD;
        for (int nd = 0; nd < ND; nd++)
            for (int e = 0; e < 2; e++) {
                const int dd = nd * 8 + 2 * c4 + e;
                if (dd < HD) dk[off + dd] = ak[nd][2 * r + e] * scale, dv[off + dd] = av[nd][2 * r + e];
            }
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
    dim3 gq((unsigned)((rows + FWD_BR - 1) / FWD_BR), (unsigned)d.KVH);
    bool kvvec = d.HD % 8 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0;
#define DQ_ARGS dq, Dt, dout, out, q, k, v, stat_max, stat_den, doc_lo, d.T, d.H, d.KVH, d.HD, d.window, scale, kvvec
    if (d.HD <= 16) attn_bwd_dq_kernel<16><<<gq, FWD_THREADS>>>(DQ_ARGS);
    else if (d.HD <= 32) attn_bwd_dq_kernel<32><<<gq, FWD_THREADS>>>(DQ_ARGS);
    else if (d.HD <= 64) attn_bwd_dq_kernel<64><<<gq, FWD_THREADS>>>(DQ_ARGS);
    else attn_bwd_dq_kernel<128><<<gq, FWD_THREADS>>>(DQ_ARGS);
#undef DQ_ARGS
    CUDA_LAUNCH_CHECK();
    dim3 gk((unsigned)d.KVH, (unsigned)((d.T + DKV_KEYS - 1) / DKV_KEYS));
    bool vec = d.HD % 8 == 0 && (uintptr_t)q % 16 == 0 && (uintptr_t)dout % 16 == 0;
#define DKV_ARGS dk, dv, Dt, dout, q, k, v, stat_max, stat_den, doc_hi, d.T, d.H, d.KVH, d.HD, d.window, scale, vec
    if (d.HD <= 16) attn_bwd_dkv_kernel<16><<<gk, DKV_THREADS>>>(DKV_ARGS);
    else if (d.HD <= 32) attn_bwd_dkv_kernel<32><<<gk, DKV_THREADS>>>(DKV_ARGS);
    else if (d.HD <= 64) attn_bwd_dkv_kernel<64><<<gk, DKV_THREADS>>>(DKV_ARGS);
    else attn_bwd_dkv_kernel<128><<<gk, DKV_THREADS>>>(DKV_ARGS);
#undef DKV_ARGS
    CUDA_LAUNCH_CHECK();
}
