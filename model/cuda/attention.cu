// model/cuda/attention.cu: GQA attention with sinks, causal sliding window and packed documents, forward
// and backward, flash-style (model/cpu/attention.c has the math). No (T, T) matrix exists anywhere.
//
// Layout of the work: the (query t, head h) pairs of one KV head g are numbered p = t * group + hh
// (h = g * group + hh, group = H / KVH), query-major as the CPU walks them. A block owns ATT_ROWS
// consecutive rows (pairs p for the forward and dq, keys j for dk/dv) of one g; a row is served by ATT_L
// threads (a "quad"), each owning the float4 chunks c = sub + ATT_L * i of the head dim (dims 4c..4c+3,
// zero past HD), so a dot product is a partial sum per thread plus two xor shuffles. The other side
// (keys for the forward and dq, (query, head) items for dk/dv) goes through shared memory in tiles of
// ATT_BK rows, loaded once per block with coalesced reads and read back as broadcast float4s by all
// ATT_ROWS rows: K/V are reused across the queries of the block and across the heads of the group.
// Tiles outside the block's visible range (window, documents) are skipped; rows mask the rest.
//
// Forward: per key tile, a row computes its ATT_BK scores s_j = q.k_j * HD^-0.5, takes the tile max,
// rescales its running sum l and output accumulator by exp(m_old - m_new) and adds p_j v_j. m starts at
// the sink logit, so the final
//   den = l + exp(sink - m), out = acc / den, stat_max = m, stat_den = den
// are the CPU's quantities (max over the scores and the sink; the sink joins the denominator only).
// Backward (p recomputed from stat_max/stat_den as the CPU does):
//   dq kernel: row (t, h); Dt = dout.out; per key: ds_j = p_j (dout.v_j - Dt); dq = scale sum ds_j k_j.
//              It also stores Dt (T, H) for the next kernel.
//   dk/dv kernel: row (key j, kv head g); items (t, hh) in the CPU's order (query-major, heads of the group
//              inside), those with j <= t < min(hi[j], j + window) count: dv = sum p dout, dk = scale sum ds q.
// Each output element is reduced by one thread quad in a fixed order: deterministic, no atomics.
//
// Storage: q, k, v and out are bf16 (uint16_t bits); dout, dq, dk, dv, Dt and the statistics fp32. Every
// load converts to fp32 (as_float, common.cuh), so the shared tiles and the registers hold fp32 and all
// arithmetic is the fp32 arithmetic above; the forward rounds out to bf16 once, when it stores
// acc * (1 / den) (store_as). The backward's Dt = dout.out uses that stored bf16 out, as the CPU backward
// does when given it.
#include "model/cuda/common.cuh"

#define ATT_L 4     // threads per row
#define ATT_ROWS 32 // rows per block
#define ATT_THREADS (ATT_L * ATT_ROWS)
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

// Sum over the ATT_L threads of a row (all of them get it).
static __device__ __forceinline__ float quad_sum(float v) {
    for (int o = 1; o < ATT_L; o <<= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
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
// This thread's chunks of a row of HD elements into fp32 registers (zero past HD).
template <int CPT, typename S>
static __device__ __forceinline__ void row_load(float4 *x, const S *src, int sub, int HD) {
    for (int i = 0; i < CPT; i++) {
        int d = 4 * (sub + ATT_L * i);
        x[i].x = d < HD ? as_float(src[d]) : 0.0f;
        x[i].y = d + 1 < HD ? as_float(src[d + 1]) : 0.0f;
        x[i].z = d + 2 < HD ? as_float(src[d + 2]) : 0.0f;
        x[i].w = d + 3 < HD ? as_float(src[d + 3]) : 0.0f;
    }
}
// This thread's chunks times f into a row of HD elements.
template <int CPT, typename S>
static __device__ __forceinline__ void row_store(S *dst, const float4 *x, float f, int sub, int HD) {
    for (int i = 0; i < CPT; i++) {
        int d = 4 * (sub + ATT_L * i);
        if (d < HD) store_as(dst + d, x[i].x * f);
        if (d + 1 < HD) store_as(dst + d + 1, x[i].y * f);
        if (d + 2 < HD) store_as(dst + d + 2, x[i].z * f);
        if (d + 3 < HD) store_as(dst + d + 3, x[i].w * f);
    }
}
// Partial dot of this thread's chunks with a shared tile row.
template <int CPT>
static __device__ __forceinline__ float row_dot(const float4 *x, const float *row_sh, int sub) {
    float s = 0.0f;
    for (int i = 0; i < CPT; i++) {
        float4 y = reinterpret_cast<const float4 *>(row_sh)[sub + ATT_L * i];
        s += x[i].x * y.x + x[i].y * y.y + x[i].z * y.z + x[i].w * y.w;
    }
    return s;
}
template <int CPT>
static __device__ __forceinline__ void row_axpy(float4 *acc, float a, const float *row_sh, int sub) {
    for (int i = 0; i < CPT; i++) {
        float4 y = reinterpret_cast<const float4 *>(row_sh)[sub + ATT_L * i];
        acc[i].x += a * y.x, acc[i].y += a * y.y, acc[i].z += a * y.z, acc[i].w += a * y.w;
    }
}

// The rows a block of the forward and dq kernels owns (grid (row blocks, KVH); rows p = t * group + hh of
// KV head g): this thread's query t and head h (th = t * H + h; a row past the end takes the last query and
// only helps load tiles: valid 0), the block's last query tB, the first key any of its rows sees (kmin) and
// the first key this row sees (j0).
struct att_qrows {
    int g, sub, t, h, tB, kmin, j0;
    bool valid;
    size_t th;
};
static __device__ __forceinline__ att_qrows att_qrows_get(const int32_t *lo, int T, int H, int KVH, int window) {
    att_qrows r;
    const int group = H / KVH;
    r.g = blockIdx.y, r.sub = threadIdx.x % ATT_L;
    long np = (long)T * group, p0 = (long)blockIdx.x * ATT_ROWS, p = p0 + threadIdx.x / ATT_L;
    r.valid = p < np;
    r.t = r.valid ? (int)(p / group) : T - 1, r.h = r.g * group + (r.valid ? (int)(p % group) : 0);
    r.th = (size_t)r.t * H + r.h;
    int tA = (int)(p0 / group);
    r.tB = (int)(min(p0 + ATT_ROWS, np) - 1) / group;
    r.kmin = attn_first_key(lo, tA, window), r.j0 = attn_first_key(lo, r.t, window);
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

// Grid (row blocks, KVH). Rows p = t * group + hh of kv head g.
template <int CPT>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_fwd_kernel(uint16_t *out, float *smax, float *sden, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                    const float *sinks, const int32_t *lo, int T, int H, int KVH, int HD, int window, float scale) {
    constexpr int DP = 4 * ATT_L * CPT;
    __shared__ __align__(16) float ks[ATT_BK * DP], vs[ATT_BK * DP];
    const att_qrows r = att_qrows_get(lo, T, H, KVH, window);
    const int g = r.g, sub = r.sub, t = r.t, h = r.h, tB = r.tB, kmin = r.kmin, j0 = r.j0;
    const bool valid = r.valid;
    const size_t th = r.th;
    float4 qr[CPT], acc[CPT];
    row_load<CPT>(qr, q + th * HD, sub, HD);
    for (int i = 0; i < CPT; i++) acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float m = sinks[h], l = 0.0f;
    for (int kb = kmin; kb <= tB; kb += ATT_BK) {
        kv_tiles_load<DP>(ks, vs, k, v, kb, tB, g, KVH, HD);
        float s[ATT_BK], mt = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < ATT_BK; jj++) {
            int j = kb + jj;
            float sj = quad_sum(row_dot<CPT>(qr, ks + jj * DP, sub)) * scale;
            s[jj] = j >= j0 && j <= t ? sj : -INFINITY;
            mt = fmaxf(mt, s[jj]);
        }
        float mn = fmaxf(m, mt), c = expf(m - mn), ls = 0.0f;
        for (int i = 0; i < CPT; i++) acc[i].x *= c, acc[i].y *= c, acc[i].z *= c, acc[i].w *= c;
#pragma unroll
        for (int jj = 0; jj < ATT_BK; jj++) {
            float pj = expf(s[jj] - mn);
            ls += pj;
            row_axpy<CPT>(acc, pj, vs + jj * DP, sub);
        }
        l = l * c + ls;
        m = mn;
    }
    if (!valid) return;
    float den = l + expf(sinks[h] - m);
    row_store<CPT>(out + th * HD, acc, 1.0f / den, sub, HD);
    if (sub == 0) {
        smax[th] = m;
        sden[th] = den;
    }
}

static float attn_scale(int HD) { return (float)pow((double)HD, -0.5); }

// Chunks per thread for HD, rounded up to a power of two (1, 2, 4 or 8).
static int attn_cpt(int HD) {
    int nc = (HD + 3) / 4, cpt = 1;
    while (cpt * ATT_L < nc) cpt *= 2;
    return cpt;
}

// KERNEL<cpt> on GRID with ATT_THREADS * NSUB(cpt) threads.
#define ATT_DISPATCH(HD, KERNEL, NSUB, GRID, ...)                                                              \
    switch (attn_cpt(HD)) {                                                                                    \
    case 1: KERNEL<1><<<GRID, ATT_THREADS * NSUB(1)>>>(__VA_ARGS__); break;                                     \
    case 2: KERNEL<2><<<GRID, ATT_THREADS * NSUB(2)>>>(__VA_ARGS__); break;                                     \
    case 4: KERNEL<4><<<GRID, ATT_THREADS * NSUB(4)>>>(__VA_ARGS__); break;                                     \
    default: KERNEL<8><<<GRID, ATT_THREADS * NSUB(8)>>>(__VA_ARGS__); break;                                    \
    }
static __host__ __device__ constexpr int att_one_block(int) { return 1; }

extern "C" void cuda_attention_forward(uint16_t *out, float *stat_max, float *stat_den, const uint16_t *q,
                                       const uint16_t *k, const uint16_t *v, const float *sinks, const int32_t *doc_lo,
                                       cpu_attn_dims d) {
    CHECK(d.HD <= ATT_MAXDP && d.H % d.KVH == 0);
    size_t rows = (size_t)d.T * (d.H / d.KVH);
    if (!rows) return;
    dim3 grid((unsigned)((rows + ATT_ROWS - 1) / ATT_ROWS), (unsigned)d.KVH);
    ATT_DISPATCH(d.HD, attn_fwd_kernel, att_one_block, grid, out, stat_max, stat_den, q, k, v, sinks, doc_lo, d.T, d.H, d.KVH,
                 d.HD, d.window, attn_scale(d.HD));
    CUDA_LAUNCH_CHECK();
}

// Grid (row blocks, KVH), rows as in the forward.
template <int CPT>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_bwd_dq_kernel(float *dq, float *Dt, const float *dout, const uint16_t *out, const uint16_t *q,
                       const uint16_t *k, const uint16_t *v, const float *smax, const float *sden, const int32_t *lo,
                       int T, int H, int KVH, int HD, int window, float scale) {
    constexpr int DP = 4 * ATT_L * CPT;
    __shared__ __align__(16) float ks[ATT_BK * DP], vs[ATT_BK * DP];
    const att_qrows r = att_qrows_get(lo, T, H, KVH, window);
    const int g = r.g, sub = r.sub, t = r.t, tB = r.tB, kmin = r.kmin, j0 = r.j0;
    const bool valid = r.valid;
    const size_t th = r.th;
    float4 qr[CPT], dr[CPT], acc[CPT];
    row_load<CPT>(qr, q + th * HD, sub, HD);
    row_load<CPT>(dr, dout + th * HD, sub, HD);
    row_load<CPT>(acc, out + th * HD, sub, HD);
    float D = 0.0f;
    for (int i = 0; i < CPT; i++) {
        D += dr[i].x * acc[i].x + dr[i].y * acc[i].y + dr[i].z * acc[i].z + dr[i].w * acc[i].w;
        acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    D = quad_sum(D);
    if (valid && sub == 0) Dt[th] = D;
    const float m = smax[th], den = sden[th];
    for (int kb = kmin; kb <= tB; kb += ATT_BK) {
        kv_tiles_load<DP>(ks, vs, k, v, kb, tB, g, KVH, HD);
#pragma unroll 4
        for (int jj = 0; jj < ATT_BK; jj++) {
            int j = kb + jj;
            float s = quad_sum(row_dot<CPT>(qr, ks + jj * DP, sub)) * scale;
            float dp = quad_sum(row_dot<CPT>(dr, vs + jj * DP, sub));
            float ds = j >= j0 && j <= t ? expf(s - m) / den * (dp - D) : 0.0f;
            row_axpy<CPT>(acc, ds, ks + jj * DP, sub);
        }
    }
    if (valid) row_store<CPT>(dq + th * HD, acc, scale, sub, HD);
}

// dk/dv: a block owns ATT_ROWS keys of one kv head and splits their items among dkv_split(CPT) subblocks
// of ATT_THREADS threads (same keys, each thread quad one key as elsewhere). The items are walked in tiles
// of DKV_BK consecutive queries of one head: tile n = query tile n / group, head n % group, queries from
// the block's first key jA on; subblock s takes tiles s, s + NS, s + 2 NS, ... into its own shared tiles,
// synchronised by its own named barrier, and at the end the NS partial sums of each output are added in
// subblock order by subblock 0. So the longest block (key 0 of a full causal layer: every item of the
// sequence) walks 1 / NS of its items per thread, instead of all of them on 4 warps while the rest of the
// GPU idles; tile rows are one stride apart (no division per element).
#define DKV_BK 16 // queries per item tile
static __host__ __device__ constexpr int dkv_split(int cpt) { return cpt >= 8 ? 2 : 4; }

// Barrier of subblock s alone (ATT_THREADS threads; id 0 is __syncthreads').
static __device__ __forceinline__ void subblock_sync(int s) {
    asm volatile("bar.sync %0, %1;" ::"r"(s + 1), "r"(ATT_THREADS) : "memory");
}

// acc of subblock 0 += acc of subblocks 1 .. NS-1, in that order, through red ((NS - 1) * ATT_ROWS * DP / 4
// float4s of shared memory); the other subblocks' acc is left as it was. Whole-block barriers on both sides.
template <int CPT, int NS>
static __device__ __forceinline__ void subblock_reduce(float4 *acc, float4 *red, int s, int lt) {
    constexpr int DP4 = ATT_L * CPT; // float4s per row
    const int row = lt / ATT_L, sub = lt % ATT_L;
    __syncthreads();
    if (s > 0)
        for (int i = 0; i < CPT; i++) red[((s - 1) * ATT_ROWS + row) * DP4 + sub + ATT_L * i] = acc[i];
    __syncthreads();
    if (s == 0)
        for (int o = 1; o < NS; o++)
            for (int i = 0; i < CPT; i++) {
                float4 y = red[((o - 1) * ATT_ROWS + row) * DP4 + sub + ATT_L * i];
                acc[i].x += y.x, acc[i].y += y.y, acc[i].z += y.z, acc[i].w += y.w;
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
    const int g = blockIdx.x, group = H / KVH, sub = lt % ATT_L;
    const int jA = blockIdx.y * ATT_ROWS, jr = jA + lt / ATT_L, jB = min(jA + ATT_ROWS, T) - 1;
    const bool valid = jr < T;
    const int j = valid ? jr : T - 1;
    const size_t jg = (size_t)j * KVH + g;
    const int t1 = attn_end_query(hi, j, window), tEnd = attn_end_query(hi, jB, window); // tEnd >= t1
    const int ntiles = (tEnd - jA + DKV_BK - 1) / DKV_BK * group;
    float *qs = tiles[s][0], *dos = tiles[s][1];
    float4 kr[CPT], vr[CPT], ak[CPT], av[CPT];
    row_load<CPT>(kr, k + jg * HD, sub, HD);
    row_load<CPT>(vr, v + jg * HD, sub, HD);
    for (int i = 0; i < CPT; i++) ak[i] = av[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
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
#pragma unroll 4
        for (int r = 0; r < DKV_BK; r++) {
            float sc = quad_sum(row_dot<CPT>(kr, qs + r * DP, sub)) * scale;
            float dp = quad_sum(row_dot<CPT>(vr, dos + r * DP, sub));
            int t = qb + r; // rows past nr have t >= tEnd >= t1: unseen
            bool see = t >= j && t < t1;
            float pr = see ? expf(sc - ms[s][r]) / dens[s][r] : 0.0f;
            float ds = pr * (dp - Ds[s][r]);
            row_axpy<CPT>(av, pr, dos + r * DP, sub);
            row_axpy<CPT>(ak, ds, qs + r * DP, sub);
        }
    }
    // Partial sums of subblocks 1 .. NS-1 through shared memory (dv, then dk); subblock 0 adds them to its
    // own in subblock order and stores.
    float4 *red = reinterpret_cast<float4 *>(&tiles[0][0][0]);
    subblock_reduce<CPT, NS>(av, red, s, lt);
    subblock_reduce<CPT, NS>(ak, red, s, lt);
    if (!valid || s) return;
    row_store<CPT>(dk + jg * HD, ak, scale, sub, HD);
    row_store<CPT>(dv + jg * HD, av, 1.0f, sub, HD);
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
    ATT_DISPATCH(d.HD, attn_bwd_dq_kernel, att_one_block, gq, dq, Dt, dout, out, q, k, v, stat_max, stat_den, doc_lo, d.T, d.H,
                 d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
    dim3 gk((unsigned)d.KVH, (unsigned)((d.T + ATT_ROWS - 1) / ATT_ROWS));
    ATT_DISPATCH(d.HD, attn_bwd_dkv_kernel, dkv_split, gk, dk, dv, Dt, dout, q, k, v, stat_max, stat_den, doc_hi, d.T, d.H,
                 d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
}
