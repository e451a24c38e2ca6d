// model/cuda/lora.cu: THE LoRA funnel on the GPU (model/cpu/lora.c has the math and PEFT's convention).
// Every adapted projection goes through it: the dense q, k, v, o on (T, .) rows (cuda_lora_forward and
// _backward: one expert owning all rows) and each expert's gate, up and down on its slot rows
// (cuda_lora_experts_*: rows sorted by expert, off (E+1)). R rank, M or S rows.
//   forward:  z (M, R) = x A^T;  y (M, out) += scale z B^T
//   backward: dB += scale dy^T z;  dz = scale dy B;  dA += dz^T x;  dx += dz A
// Three kernels serve both funnels, one per shape (the rank R is the short side of every one):
//   lora_dot   z[r, j] = alpha * sum_k x[row(r), k] P_e(j, k)        (long K, R outputs per row)
//   lora_out   y[r, n] += alpha * sum_j z[r, j] P_e(n, j)            (K = R)
//   lora_grad  G_e[c, j] += alpha * sum over e's rows r of w[row(r), c] u[r, j]   (reduce over rows)
// Invariants: fp32 arithmetic on bf16 or fp32 inputs (no TF32: A, B, their gradients and z are fp32
// master copies, as PEFT computes an fp32 adapter); deterministic: every sum runs in an order fixed by the
// shapes alone (no atomics, no split that depends on scheduling), so a step is bit-identical run to run;
// no scratch beyond z and dz, no host synchronisation. y, dx and the gradients accumulate (+=); z and dz
// are overwritten. Each block of lora_dot and lora_out covers a fixed tile of rows; a tile that straddles
// expert boundaries is walked once per expert it touches (rows of other experts masked), so no tile map is
// needed. Each rank column block covers LORA_JG rank columns (grid over ceil(R / LORA_JG)), so R is a
// runtime value (1..any) and the accumulators stay in registers.
#include "model/cuda/common.cuh"

#define LORA_JG 8 // rank columns one thread accumulates

// The rows of one funnel call: [0, S) split among E experts by off, or (off NULL) one expert owning all.
// Expert e's matrices: pairs[e] (a device array) or, when pairs is NULL, `one` (device pointers).
struct lora_rows {
    const int32_t *off; // (E+1) first row of each expert, on the device; NULL: one expert
    int E, S;
    const lora_pair *pairs;
    lora_pair one;
};

enum lora_which { LW_A, LW_B, LW_DA, LW_DB };

static __device__ __forceinline__ float *pair_mat(const lora_pair &p, int which) {
    return which == LW_A ? p.A : which == LW_B ? p.B : which == LW_DA ? p.dA : p.dB;
}
static __device__ __forceinline__ float *rows_mat(const lora_rows &g, int e, int which) {
    return g.pairs ? pair_mat(g.pairs[e], which) : pair_mat(g.one, which);
}
static __device__ __forceinline__ void rows_range(const lora_rows &g, int e, int *r0, int *r1) {
    *r0 = g.off ? g.off[e] : 0, *r1 = g.off ? g.off[e + 1] : g.S;
}
static __device__ __forceinline__ int rows_expert(const lora_rows &g, int r) {
    return g.off ? slot_expert(g.off, g.E, r) : 0;
}

// V consecutive elements of a row as one load (V > 1: the address is aligned to the whole vector; the
// launchers pick V = 1 otherwise): raw holds them as loaded, get widens them to fp32, put (fp32) stores V.
template <typename T, int V> struct lvec;
template <> struct lvec<float, 1> {
    typedef float raw;
    static __device__ __forceinline__ raw load(const float *p) { return *p; }
    static __device__ __forceinline__ raw zero() { return 0.0f; }
    static __device__ __forceinline__ void get(raw v, float *o) { o[0] = v; }
    static __device__ __forceinline__ void put(float *p, const float *o) { *p = o[0]; }
};
template <> struct lvec<float, 4> {
    typedef float4 raw;
    static __device__ __forceinline__ raw load(const float *p) { return *reinterpret_cast<const float4 *>(p); }
    static __device__ __forceinline__ raw zero() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }
    static __device__ __forceinline__ void get(raw v, float *o) { o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w; }
    static __device__ __forceinline__ void put(float *p, const float *o) {
        *reinterpret_cast<float4 *>(p) = make_float4(o[0], o[1], o[2], o[3]);
    }
};
template <> struct lvec<uint16_t, 1> {
    typedef uint16_t raw;
    static __device__ __forceinline__ raw load(const uint16_t *p) { return *p; }
    static __device__ __forceinline__ raw zero() { return 0; }
    static __device__ __forceinline__ void get(raw v, float *o) { o[0] = bf16_float(v); }
};
template <> struct lvec<uint16_t, 2> { // a bf16 pair, the first element in the low half
    typedef uint32_t raw;
    static __device__ __forceinline__ raw load(const uint16_t *p) { return *reinterpret_cast<const uint32_t *>(p); }
    static __device__ __forceinline__ raw zero() { return 0; }
    static __device__ __forceinline__ void get(raw v, float *o) {
        o[0] = __uint_as_float(v << 16), o[1] = __uint_as_float(v & 0xffff0000u);
    }
};
template <> struct lvec<uint16_t, 8> {
    typedef uint4 raw;
    static __device__ __forceinline__ raw load(const uint16_t *p) { return *reinterpret_cast<const uint4 *>(p); }
    static __device__ __forceinline__ raw zero() { return make_uint4(0, 0, 0, 0); }
    static __device__ __forceinline__ void get(raw v, float *o) {
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        for (int i = 0; i < 4; i++)
            o[2 * i] = __uint_as_float(w[i] << 16), o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
};

static bool is_aligned(const void *p, size_t bytes) { return (uintptr_t)p % bytes == 0; }

// ---------------------------------------------------------------------------------------------------
// lora_dot: z[r, j] = alpha * sum_k x[row(r), k] P_e(j, k), k < K, for the LORA_JG rank columns j0 + j of
// blockIdx.y; P_e(j, k) at p[j * pj + k * pk] (A: pj = K, pk = 1; B read as its transpose: pj = 1, pk = R);
// row(r) = xrow ? xrow[r] : r. A block: DOT_ROWS rows of a tile, DOT_LANES lanes per row, each lane V
// consecutive k per step, DOT_KC k per chunk. Per chunk every load is issued before any is used (the
// lane's x into registers, then its share of the P chunk, which goes to shared memory), so a chunk costs
// about one memory latency and P is read once per tile and chunk. A lane sums its k in order, then the
// lanes of a row add up by a fixed butterfly.
#define DOT_LANES 8
#define DOT_ROWS 16 // 128 threads
#define DOT_NT (DOT_ROWS * DOT_LANES)
#define DOT_KC 512
#define DOT_NS (LORA_JG * DOT_KC / DOT_NT) // P elements each thread stages per chunk

template <typename TX, int V>
__global__ void __launch_bounds__(DOT_NT)
    lora_dot_kernel(float *z, const TX *x, int ldx, const int32_t *xrow, lora_rows g, int which, int pj, int pk,
                    int K, int R, float alpha) {
    typedef lvec<TX, V> L;
    const int U = DOT_KC / (DOT_LANES * V); // x loads per lane and chunk
    __shared__ __align__(16) float ps[LORA_JG][DOT_KC + 4]; // +4: conflict-free transposed stores
    const int lane = threadIdx.x % DOT_LANES, t0 = blockIdx.x * DOT_ROWS, j0 = blockIdx.y * LORA_JG;
    const int r = t0 + threadIdx.x / DOT_LANES, t1 = min(t0 + DOT_ROWS, g.S);
    // The P chunk (LORA_JG, DOT_KC) is staged by DOT_NT threads, DOT_NS elements each, read along P's
    // memory order: A (pk == 1) thread t takes k = t + DOT_NT c of every rank column; B, rank column t % 8 of
    // every 16th k from t / 8 (8 threads read one row of B's 8 columns).
    const bool pa = pk == 1;
    const int jt = pa ? 0 : threadIdx.x % LORA_JG, kt = pa ? threadIdx.x : threadIdx.x / LORA_JG;
    const int e_hi = rows_expert(g, t1 - 1);
    for (int e = rows_expert(g, t0); e <= e_hi; e++) { // block-uniform
        int r0, r1;
        rows_range(g, e, &r0, &r1);
        if (r0 == r1) continue;
        const float *p = rows_mat(g, e, which);
        const bool mine = r >= r0 && r < r1;
        const TX *xr = x + (size_t)(mine ? (xrow ? xrow[r] : r) : 0) * ldx;
        float acc[LORA_JG];
#pragma unroll
        for (int j = 0; j < LORA_JG; j++) acc[j] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += DOT_KC) {
            const int kc = min(DOT_KC, K - k0);
            typename L::raw xv[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int kk = (u * DOT_LANES + lane) * V;
                xv[u] = mine && kk < kc ? L::load(xr + k0 + kk) : L::zero();
            }
            float pv[DOT_NS];
#pragma unroll
            for (int s = 0; s < DOT_NS; s++) {
                const int j = pa ? jt + s / (DOT_KC / DOT_NT) : jt;
                const int k = pa ? kt + s % (DOT_KC / DOT_NT) * DOT_NT : kt + s * (DOT_NT / LORA_JG);
                pv[s] = j0 + j < R && k < kc ? p[(size_t)(j0 + j) * pj + (size_t)(k0 + k) * pk] : 0.0f;
            }
            __syncthreads(); // the previous chunk's readers of ps are done
#pragma unroll
            for (int s = 0; s < DOT_NS; s++) {
                const int j = pa ? jt + s / (DOT_KC / DOT_NT) : jt;
                const int k = pa ? kt + s % (DOT_KC / DOT_NT) * DOT_NT : kt + s * (DOT_NT / LORA_JG);
                ps[j][k] = pv[s];
            }
            __syncthreads();
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int kk = (u * DOT_LANES + lane) * V;
                if (kk >= kc) break; // past K: nothing left to add
                float xf[V];
                L::get(xv[u], xf);
#pragma unroll
                for (int j = 0; j < LORA_JG; j++)
#pragma unroll
                    for (int v = 0; v < V; v++) acc[j] += xf[v] * ps[j][kk + v];
            }
        }
        float out = 0.0f;
#pragma unroll
        for (int j = 0; j < LORA_JG; j++) {
            for (int o = DOT_LANES / 2; o > 0; o >>= 1) acc[j] += __shfl_xor_sync(FULL_MASK, acc[j], o);
            if (j == lane) out = acc[j];
        }
        if (mine && j0 + lane < R) z[(size_t)r * R + j0 + lane] = alpha * out;
    }
}

// ---------------------------------------------------------------------------------------------------
// lora_out: y[r, n] += alpha * sum_j z[r, j] P_e(n, j) over j < R in order, n < N; z (S, R), y row r at
// y + r * ldy; P_e(n, j) at p[n * pn + j * pj] (B: pn = R, pj = 1; A read as its transpose: pn = 1, pj = N).
// A block: OUT_COLT column threads of V columns each over OUT_ROWS rows (OUT_RT per thread); P and z
// staged in shared memory OUT_JC rank columns at a time.
#define OUT_COLT 64
#define OUT_RG 4 // 256 threads
#define OUT_RT 8
#define OUT_ROWS (OUT_RG * OUT_RT)
#define OUT_JC 16

template <int V>
__global__ void __launch_bounds__(OUT_COLT *OUT_RG)
    lora_out_kernel(float *y, int ldy, const float *z, lora_rows g, int which, int pn, int pj, int N, int R,
                    float alpha) {
    typedef lvec<float, V> L;
    __shared__ __align__(16) float ps[OUT_JC][OUT_COLT * V];
    __shared__ float zs[OUT_ROWS][OUT_JC];
    const int ct = threadIdx.x % OUT_COLT, rg = threadIdx.x / OUT_COLT;
    const int n0 = blockIdx.x * OUT_COLT * V, n = n0 + ct * V, t0 = blockIdx.y * OUT_ROWS;
    const int t1 = min(t0 + OUT_ROWS, g.S), e_hi = rows_expert(g, t1 - 1);
    for (int e = rows_expert(g, t0); e <= e_hi; e++) { // block-uniform
        int r0, r1;
        rows_range(g, e, &r0, &r1);
        if (r0 == r1) continue;
        const float *p = rows_mat(g, e, which);
        float acc[OUT_RT][V];
#pragma unroll
        for (int t = 0; t < OUT_RT; t++)
#pragma unroll
            for (int v = 0; v < V; v++) acc[t][v] = 0.0f;
        for (int jc = 0; jc < R; jc += OUT_JC) {
            const int jn = min(OUT_JC, R - jc), cols = OUT_COLT * V;
            __syncthreads(); // the previous chunk's readers are done
            for (int i = threadIdx.x; i < jn * cols; i += blockDim.x) {
                const int j = pn == 1 ? i / cols : i % jn, c = pn == 1 ? i % cols : i / jn;
                ps[j][c] = n0 + c < N ? p[(size_t)(n0 + c) * pn + (size_t)(jc + j) * pj] : 0.0f;
            }
            for (int i = threadIdx.x; i < OUT_ROWS * jn; i += blockDim.x) {
                const int t = i / jn, j = i % jn;
                zs[t][j] = t0 + t < t1 ? z[(size_t)(t0 + t) * R + jc + j] : 0.0f;
            }
            __syncthreads();
            for (int j = 0; j < jn; j++) {
                float pv[V];
#pragma unroll
                for (int v = 0; v < V; v++) pv[v] = ps[j][ct * V + v];
#pragma unroll
                for (int t = 0; t < OUT_RT; t++) {
                    const float zz = zs[rg * OUT_RT + t][j];
#pragma unroll
                    for (int v = 0; v < V; v++) acc[t][v] += zz * pv[v];
                }
            }
        }
        if (n < N)
#pragma unroll
            for (int t = 0; t < OUT_RT; t++) {
                const int r = t0 + rg * OUT_RT + t;
                if (r < r0 || r >= r1) continue;
                float *yr = y + (size_t)r * ldy + n;
                float cur[V];
                L::get(L::load(yr), cur);
#pragma unroll
                for (int v = 0; v < V; v++) cur[v] += alpha * acc[t][v];
                L::put(yr, cur);
            }
    }
}

// ---------------------------------------------------------------------------------------------------
// lora_grad: G_e[c, j] += alpha * sum over expert e's rows r of w[row(r), c] u[r, j], c < C, for the
// LORA_JG rank columns j0 + j of blockIdx.z; G_e = the pair's dA or dB, element (c, j) at gm[c * gc + j * gj]
// (dB: gc = R, gj = 1; dA: gc = 1, gj = C); u (S, R) fp32; row(r) = wrow ? wrow[r] : r. A block (expert
// blockIdx.y): 32 lanes of V columns each, GRAD_RG warps over the rows (warp q takes rows q, q + GRAD_RG,
// ...: each thread reads its w elements once and keeps 8 V sums in registers), u staged in shared memory a
// chunk of GRAD_RG * GRAD_U rows at a time; then the warps' sums are added in warp order. Parallel over
// columns and experts, no partials buffer.
#define GRAD_RG 16 // 512 threads
#define GRAD_U 16
#define GRAD_CHUNK (GRAD_RG * GRAD_U)

template <typename TW, int V>
__global__ void __launch_bounds__(GRAD_RG *WARP)
    lora_grad_kernel(lora_rows g, int which, int gc, int gj, const TW *w, int ldw, const int32_t *wrow,
                     const float *u, int C, int R, float alpha) {
    typedef lvec<TW, V> L;
    __shared__ __align__(16) float us[GRAD_CHUNK][LORA_JG];
    __shared__ float part[GRAD_RG][WARP * V][LORA_JG + 1];
    const int e = blockIdx.y, lane = threadIdx.x % WARP, q = threadIdx.x / WARP;
    const int c0 = blockIdx.x * WARP * V, c = c0 + lane * V, j0 = blockIdx.z * LORA_JG;
    int r0, r1;
    rows_range(g, e, &r0, &r1);
    if (r0 == r1) return; // block-uniform
    float acc[V][LORA_JG];
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j < LORA_JG; j++) acc[v][j] = 0.0f;
    for (int b = r0; b < r1; b += GRAD_CHUNK) {
        typename L::raw wv[GRAD_U];
#pragma unroll
        for (int i = 0; i < GRAD_U; i++) {
            const int r = b + q + GRAD_RG * i;
            wv[i] = r < r1 && c < C ? L::load(w + (size_t)(wrow ? wrow[r] : r) * ldw + c) : L::zero();
        }
        __syncthreads(); // the previous chunk's readers of us are done
        for (int i = threadIdx.x; i < GRAD_CHUNK * LORA_JG; i += blockDim.x) {
            const int t = i / LORA_JG, j = i % LORA_JG;
            us[t][j] = b + t < r1 && j0 + j < R ? u[(size_t)(b + t) * R + j0 + j] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < GRAD_U; i++) {
            float wf[V];
            L::get(wv[i], wf);
            const float4 ua = *reinterpret_cast<const float4 *>(&us[q + GRAD_RG * i][0]);
            const float4 ub = *reinterpret_cast<const float4 *>(&us[q + GRAD_RG * i][4]);
            const float uu[LORA_JG] = {ua.x, ua.y, ua.z, ua.w, ub.x, ub.y, ub.z, ub.w};
#pragma unroll
            for (int v = 0; v < V; v++)
#pragma unroll
                for (int j = 0; j < LORA_JG; j++) acc[v][j] += wf[v] * uu[j];
        }
    }
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j < LORA_JG; j++) part[q][lane * V + v][j] = acc[v][j];
    __syncthreads();
    float *gm = rows_mat(g, e, which);
    const int cols = WARP * V;
    for (int i = threadIdx.x; i < cols * LORA_JG; i += blockDim.x) {
        const int cc = gc == 1 ? i % cols : i / LORA_JG, j = gc == 1 ? i / cols : i % LORA_JG;
        if (c0 + cc >= C || j0 + j >= R) continue;
        float s = 0.0f;
        for (int k = 0; k < GRAD_RG; k++) s += part[k][cc][j];
        gm[(size_t)(c0 + cc) * gc + (size_t)(j0 + j) * gj] += alpha * s;
    }
}

// ---------------------------------------------------------------------------------------------------
// Launchers: pick the vector width from the shapes and alignments (V > 1 needs every row's start aligned
// to the vector), then launch. No launch when there are no rows.

template <typename TX>
static void lora_dot(float *z, const TX *x, int ldx, const int32_t *xrow, const lora_rows &g, int which, int pj,
                     int pk, int K, int R, float alpha) {
    if (!g.S || !R) return;
    const int VX = 16 / (int)sizeof(TX);
    const dim3 grid(cuda_blocks(g.S, DOT_ROWS), cuda_blocks(R, LORA_JG));
    if (K % VX == 0 && ldx % VX == 0 && is_aligned(x, 16))
        lora_dot_kernel<TX, VX><<<grid, DOT_NT>>>(z, x, ldx, xrow, g, which, pj, pk, K, R, alpha);
    else
        lora_dot_kernel<TX, 1><<<grid, DOT_NT>>>(z, x, ldx, xrow, g, which, pj, pk, K, R, alpha);
    CUDA_LAUNCH_CHECK();
}

static void lora_out(float *y, int ldy, const float *z, const lora_rows &g, int which, int pn, int pj, int N, int R,
                     float alpha) {
    if (!g.S || !N) return;
    if (N % 4 == 0 && ldy % 4 == 0 && is_aligned(y, 16)) {
        const dim3 grid(cuda_blocks(N, OUT_COLT * 4), cuda_blocks(g.S, OUT_ROWS));
        lora_out_kernel<4><<<grid, OUT_COLT * OUT_RG>>>(y, ldy, z, g, which, pn, pj, N, R, alpha);
    } else {
        const dim3 grid(cuda_blocks(N, OUT_COLT), cuda_blocks(g.S, OUT_ROWS));
        lora_out_kernel<1><<<grid, OUT_COLT * OUT_RG>>>(y, ldy, z, g, which, pn, pj, N, R, alpha);
    }
    CUDA_LAUNCH_CHECK();
}

// G_e (dA or dB) += alpha * w^T u over each expert's rows; w fp32 one column per lane, bf16 a pair per lane
// (a warp reads 128 bytes of a row either way).
template <typename TW>
static void lora_grad(const lora_rows &g, int which, int gc, int gj, const TW *w, int ldw, const int32_t *wrow,
                      const float *u, int C, int R, float alpha) {
    if (!g.S || !R || !C) return;
    const int VW = 4 / (int)sizeof(TW);
    if (C % VW == 0 && ldw % VW == 0 && is_aligned(w, 4)) {
        const dim3 grid(cuda_blocks(C, WARP * VW), g.E, cuda_blocks(R, LORA_JG));
        lora_grad_kernel<TW, VW><<<grid, GRAD_RG * WARP>>>(g, which, gc, gj, w, ldw, wrow, u, C, R, alpha);
    } else {
        const dim3 grid(cuda_blocks(C, WARP), g.E, cuda_blocks(R, LORA_JG));
        lora_grad_kernel<TW, 1><<<grid, GRAD_RG * WARP>>>(g, which, gc, gj, w, ldw, wrow, u, C, R, alpha);
    }
    CUDA_LAUNCH_CHECK();
}

// The funnel on rows g, x (bf16 rows, through xrow for the experts).
template <typename TX>
static void funnel_forward(float *y, float *z, const TX *x, const int32_t *xrow, const lora_rows &g, int in, int out,
                           int R, float scale) {
    lora_dot(z, x, in, xrow, g, LW_A, in, 1, in, R, 1.0f);
    lora_out(y, out, z, g, LW_B, R, 1, out, R, scale);
}

template <typename TX>
static void funnel_backward(float *dx, float *dz, const float *dy, const TX *x, const int32_t *xrow, const float *z,
                            const lora_rows &g, int in, int out, int R, float scale) {
    lora_grad(g, LW_DB, R, 1, dy, out, NULL, z, out, R, scale);
    lora_dot(dz, dy, out, NULL, g, LW_B, 1, R, out, R, scale);
    lora_grad(g, LW_DA, 1, in, x, in, xrow, dz, in, R, 1.0f);
    lora_out(dx, in, dz, g, LW_A, 1, in, in, R, 1.0f);
}

static lora_rows rows_dense(const lora_pair *p, int M) {
    lora_rows g;
    memset(&g, 0, sizeof g);
    g.E = 1, g.S = M, g.one = *p;
    return g;
}
static lora_rows rows_experts(const lora_pair *pairs, const int32_t *off, int S, int E) {
    lora_rows g;
    memset(&g, 0, sizeof g);
    g.off = off, g.E = E, g.S = S, g.pairs = pairs;
    return g;
}

extern "C" void cuda_lora_forward(float *y, float *z, const uint16_t *x, const lora_pair *p, int M, int in, int out,
                                  int R, float scale) {
    funnel_forward(y, z, x, NULL, rows_dense(p, M), in, out, R, scale);
}

extern "C" void cuda_lora_backward(float *dx, float *dz, const float *dy, const uint16_t *x, const float *z,
                                   const lora_pair *p, int M, int in, int out, int R, float scale) {
    funnel_backward(dx, dz, dy, x, NULL, z, rows_dense(p, M), in, out, R, scale);
}

extern "C" void cuda_lora_experts_forward(float *y, float *z, const uint16_t *x, const int32_t *xrow,
                                          const lora_pair *pairs, const int32_t *off, int S, int E, int in, int out,
                                          int R, float scale) {
    funnel_forward(y, z, x, xrow, rows_experts(pairs, off, S, E), in, out, R, scale);
}

extern "C" void cuda_lora_experts_backward(float *dx, float *dz, const float *dy, const uint16_t *x,
                                           const int32_t *xrow, const float *z, const lora_pair *pairs,
                                           const int32_t *off, int S, int E, int in, int out, int R, float scale) {
    funnel_backward(dx, dz, dy, x, xrow, z, rows_experts(pairs, off, S, E), in, out, R, scale);
}

// The same lora_dot on one plain fp32 matrix W (N, K), N small (the router: N = E).
extern "C" void cuda_narrow_xwt(float *z, const uint16_t *x, const float *W, int M, int K, int N) {
    lora_pair p;
    memset(&p, 0, sizeof p);
    p.A = (float *)W;
    lora_dot(z, x, K, NULL, rows_dense(&p, M), LW_A, K, 1, K, N, 1.0f);
}
