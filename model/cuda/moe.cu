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
// The grouped GEMMs are moe_gemm.cu's (bf16 tensor cores, the 4-bit experts decoded inside the tiles), the
// LoRA on the experts lora.cu's expert funnel; results go to fp32 scratch before the one rounding.
#include "model/cuda/common.cuh"

// The plan: a counting sort of the S = T*K entries of sel (entry i = (token i / K, choice i % K)) by expert,
// stable (entries ascending within an expert), in one block of PLAN_THREADS threads and without atomics:
//   pass 1: warp g < G owns the g-th contiguous segment of the entries and counts its experts 32 entries a
//           step (plan_peers groups the lanes of one expert; the group's lowest lane adds its size) into its
//           own row cnt[g][0..E) of shared memory;
//   prefix: thread e turns column e into each segment's first slot, off[e] + the counts of the segments
//           before it; off is an exclusive scan of the experts' totals over e, the tile starts one of their
//           tile counts, and the tile map is written in parallel (tile q's expert by binary search);
//   pass 2: warp g walks its segment again in the same order and gives each entry its expert's next slot
//           (the lanes of one group take consecutive slots in lane order).
// Segments, steps and lanes all follow the entry order, so within an expert the slots follow the entries:
// the result is model/cpu/moe.c's moe_plan exactly, run to run identical. G = min(32, PLAN_COUNTS / E)
// bounds the counts to PLAN_COUNTS ints (32 KiB; E <= 1024 gives G >= 8). Work: 2 S / (32 G) steps per
// warp plus G per expert (S 8192, E 32: 16 steps), where one thread per expert scanned all S entries twice:
// 1086 -> 20.6 us at T 2048, E 32, K 4 on an H200 (bench/NOTES.md).
#define PLAN_THREADS 1024
#define PLAN_COUNTS 8192
#define PLAN_UNROLL 4 // steps per loop trip, their sel loads issued together
static int plan_groups(int E) { return PLAN_COUNTS / E < WARP ? PLAN_COUNTS / E : WARP; }

// Exclusive prefix sum of v in thread order over the block; *total gets the sum. part: WARP shared ints.
// Every thread of the block must call it (it synchronises the block).
static __device__ int plan_scan(int v, int *part, int *total) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    int x = v;
    for (int o = 1; o < WARP; o <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads(); // a previous call may still read part
    if (lane == WARP - 1) part[w] = x;
    __syncthreads();
    if (w == 0) {
        int p = lane < (int)blockDim.x / WARP ? part[lane] : 0;
        for (int o = 1; o < WARP; o <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, p, o);
            if (lane >= o) p += y;
        }
        part[lane] = p; // inclusive over the warps
    }
    __syncthreads();
    *total = part[WARP - 1];
    return x - v + (w ? part[w - 1] : 0);
}

// The lanes whose key equals this lane's (keys below 2^nbits): one ballot per key bit, each keeping the
// lanes that agree on it (what __match_any_sync answers; on the H200 the votes made the plan 22.6 -> 20.6 us).
static __device__ unsigned plan_peers(int key, int nbits) {
    unsigned m = FULL_MASK;
    for (int b = 0; b < nbits; b++) {
        const int bit = (key >> b) & 1;
        const unsigned v = __ballot_sync(FULL_MASK, bit);
        m &= bit ? v : ~v;
    }
    return m;
}

// Warp pass over the entries [lo, hi) with c = its segment's row: counts (place 0: c[e] += entries of e) or
// placement (place 1: c[e] is e's next slot). Lanes past hi take the key E, a group that does nothing;
// nbits: the bits of E. Warp-uniform: every lane runs every step.
static __device__ void plan_walk(int32_t *c, const int32_t *sel, int lo, int hi, int E, int nbits, int K, int place,
                                 int32_t *tok, int32_t *kof, int32_t *slot) {
    const int lane = threadIdx.x % WARP;
    for (int i0 = lo; i0 < hi; i0 += PLAN_UNROLL * WARP) {
        int ev[PLAN_UNROLL];
#pragma unroll
        for (int u = 0; u < PLAN_UNROLL; u++) {
            const int i = i0 + u * WARP + lane;
            ev[u] = i < hi ? sel[i] : E;
        }
#pragma unroll
        for (int u = 0; u < PLAN_UNROLL; u++) {
            const int i = i0 + u * WARP + lane, e = ev[u];
            const unsigned peers = plan_peers(e, nbits);
            if (place && e < E) {
                const int p = c[e] + __popc(peers & ((1u << lane) - 1));
                slot[i] = p, tok[p] = i / K, kof[p] = i % K;
            }
            __syncwarp(); // every lane has read c[e] before its group's first lane moves it on
            if (e < E && lane == __ffs(peers) - 1) c[e] += __popc(peers);
            __syncwarp();
        }
    }
}

// off (E+1), tok, kof (S), slot (T, K) as the CPU's plan; tiles[2q] = expert of row tile q (-1 past the
// last tile), tiles[2q+1] = its first row. Shared: G*E ints (dynamic). PLAN_THREADS threads, E <= 1024.
__global__ void moe_plan_kernel(int32_t *off, int32_t *tok, int32_t *kof, int32_t *slot, int32_t *tiles,
                                int max_tiles, const int32_t *sel, int S, int E, int K, int G, int nbits) {
    extern __shared__ int32_t cnt[]; // (G, E)
    __shared__ int32_t part[WARP], first[1025], tfirst[1025]; // (E+1) each: first slot, first tile
    const int w = threadIdx.x / WARP, e = threadIdx.x;
    const int step = PLAN_UNROLL * WARP, L = ((S + G - 1) / G + step - 1) / step * step; // segment length
    const int lo = w * L, hi = lo + L < S ? lo + L : S;
    for (int i = threadIdx.x; i < G * E; i += blockDim.x) cnt[i] = 0;
    __syncthreads();
    if (w < G) plan_walk(cnt + w * E, sel, lo, hi, E, nbits, K, 0, tok, kof, slot);
    __syncthreads();
    int n = 0; // expert e's total; column e becomes the segments' first slots relative to off[e]
    if (e < E)
        for (int g = 0; g < G; g++) {
            const int v = cnt[g * E + e];
            cnt[g * E + e] = n;
            n += v;
        }
    int total, ntiles;
    const int o = plan_scan(n, part, &total);
    const int t0 = plan_scan((n + CUDA_MOE_TILE_M - 1) / CUDA_MOE_TILE_M, part, &ntiles);
    if (e < E) {
        for (int g = 0; g < G; g++) cnt[g * E + e] += o;
        off[e] = first[e] = o, tfirst[e] = t0;
    }
    if (e == 0) off[E] = first[E] = total, tfirst[E] = ntiles;
    __syncthreads();
    for (int q = threadIdx.x; q < max_tiles; q += blockDim.x) {
        const int x = q < ntiles ? slot_expert(tfirst, E, q) : -1; // empty experts have no tiles
        tiles[2 * q] = x, tiles[2 * q + 1] = x < 0 ? 0 : first[x] + (q - tfirst[x]) * CUDA_MOE_TILE_M;
    }
    if (w < G) plan_walk(cnt + w * E, sel, lo, hi, E, nbits, K, 1, tok, kof, slot);
}

extern "C" void cuda_moe_plan(cuda_moe_acts *a, const int32_t *sel, int T, int E, int K) {
    CHECK(E >= 1 && E <= 1024);
    const int S = T * K, G = plan_groups(E);
    int nbits = 0; // bits of E: the keys 0..E (E: no entry) differ within them
    while (E >> nbits) nbits++;
    moe_plan_kernel<<<1, PLAN_THREADS, (size_t)G * E * sizeof(int32_t)>>>(a->off, a->tok, a->kof, a->slot, a->tiles,
                                                                        cuda_moe_max_tiles(S, E), sel, S, E, K, G,
                                                                        nbits);
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
#define ROW_THREADS 256 // the per-token kernels: one block per token row, its threads over the D columns

// out (T, D) = bf16(res + sum over the token's slots (increasing) of w * yb[slot]) with yb = bf16(y), the
// fp32 y (S, D) of the down GEMM + LoRA rounded once and kept. Block t: thread 0 sorts the token's slots
// and picks their weights once, the threads stride over j. Every slot belongs to one (token, choice), so
// block t is the only writer of its slots' rows of yb.
__global__ void moe_combine_kernel(uint16_t *out, uint16_t *yb, const uint16_t *res, const float *y, const float *w,
                                   const int32_t *slot, const int32_t *kof, int D, int K) {
    __shared__ int32_t order[MOE_MAXK];
    __shared__ float wq[MOE_MAXK];
    const size_t t = blockIdx.x;
    if (threadIdx.x == 0) {
        token_slots(slot + t * K, K, order);
        for (int q = 0; q < K; q++) wq[q] = w[t * K + kof[order[q]]];
    }
    __syncthreads();
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float o = 0.0f;
        for (int q = 0; q < K; q++) {
            const size_t at = (size_t)order[q] * D + j;
            const uint16_t b = bf16_bits(y[at]);
            yb[at] = b;
            o += bf16_float(b) * wq[q];
        }
        const size_t i = t * D + j;
        out[i] = bf16_bits(bf16_float(res[i]) + o); // res[i] is read before out[i] is written: out may alias res
    }
}

static cuda_moe_gemm_args gemm_args(const cuda_moe_acts *a, const cuda_experts *w, int wt, int N, int Kd) {
    cuda_moe_gemm_args g;
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
    cuda_moe_plan(a, sel, T, E, K);
    float *gate = s->dact, *up = s->dup, *y = s->dxs; // fp32 results; the acts keep their bf16 roundings
    cuda_moe_gemm_args g = gemm_args(a, &W->gate_up, 1, 2 * I, D); // gate, up = x[tok] W_gu^T + b
    g.a0 = x, g.a_bf16 = 1, g.arow = a->tok, g.lda = D, g.c0 = gate, g.c1 = up, g.ldc = I, g.bias = W->gate_up_b;
    cuda_moe_gemm(&g, S, E);
    if (lora && lora->gate)
        cuda_lora_experts_forward(gate, a->zg, x, a->tok, lora->gate, a->off, S, E, D, I, lora->R, lora->scale);
    if (lora && lora->up)
        cuda_lora_experts_forward(up, a->zu, x, a->tok, lora->up, a->off, S, E, D, I, lora->R, lora->scale);
    cuda_swiglu_forward(a->act, a->gate, a->up, gate, up, (size_t)S * I, c->swiglu_limit, c->swiglu_alpha);
    g = gemm_args(a, &W->down, 1, D, I); // y (S, D) = act W_down^T + b
    g.a0 = a->act, g.a_bf16 = 1, g.lda = I, g.c0 = y, g.ldc = D, g.bias = W->down_b;
    cuda_moe_gemm(&g, S, E);
    if (lora && lora->down)
        cuda_lora_experts_forward(y, a->zd, a->act, NULL, lora->down, a->off, S, E, I, D, lora->R, lora->scale);
    moe_combine_kernel<<<T, ROW_THREADS>>>(out, a->y, res, y, w, a->slot, a->kof, D, K);
    CUDA_LAUNCH_CHECK();
}

// One warp per slot row r (token t = tok[r], choice k = kof[r]): dy (S, D) row r = w_tk * dout_t, and
// dw[tk] = dout_t . y[r] (y the kept bf16; lane-strided fp32 sums, then the warp's fixed tree).
__global__ void moe_dy_dw_kernel(float *dy, float *dw, const float *dout, const uint16_t *y, const float *w,
                                 const int32_t *tok, const int32_t *kof, int S, int D, int K) {
    const size_t r = (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    if (r >= (size_t)S) return;
    const size_t tk = (size_t)tok[r] * K + kof[r];
    const float *d = dout + (size_t)tok[r] * D;
    const float wv = w[tk];
    const uint16_t *yr = y + r * D;
    float *dyr = dy + r * D;
    float s = 0.0f;
    for (int j = lane; j < D; j += WARP) {
        const float v = d[j];
        dyr[j] = wv * v;
        s += v * bf16_float(yr[j]);
    }
    s = warp_sum(s);
    if (lane == 0) dw[tk] = s;
}

// dx (T, D) = sum over the token's slots (increasing) of dxs[slot]; block t as in the combine.
__global__ void moe_dx_kernel(float *dx, const float *dxs, const int32_t *slot, int D, int K) {
    __shared__ int32_t order[MOE_MAXK];
    const size_t t = blockIdx.x;
    if (threadIdx.x == 0) token_slots(slot + t * K, K, order);
    __syncthreads();
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float o = 0.0f;
        for (int q = 0; q < K; q++) o += dxs[(size_t)order[q] * D + j];
        dx[t * D + j] = o;
    }
}

extern "C" void cuda_moe_backward(float *dx, float *dw, const float *dout, const uint16_t *x, const float *w,
                                  const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                                  const cuda_moe_acts *a, cuda_moe_scratch *s) {
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, S = T * K;
    if (!T) return;
    float *dy = s->dxs; // dy is dead before dxs is written
    moe_dy_dw_kernel<<<cuda_blocks((size_t)S, 8), 8 * WARP>>>(dy, dw, dout, a->y, w, a->tok, a->kof, S, D, K);
    CUDA_LAUNCH_CHECK();
    cuda_moe_gemm_args g = gemm_args(a, &W->down, 0, I, D); // dact (S, I) = dy W_down
    g.a0 = dy, g.lda = D, g.c0 = s->dact, g.ldc = I;
    cuda_moe_gemm(&g, S, E);
    if (lora && lora->down)
        cuda_lora_experts_backward(s->dact, s->dz, dy, a->act, NULL, a->zd, lora->down, a->off, S, E, I, D, lora->R,
                          lora->scale);
    float *dgate = s->dact; // in place: the SwiGLU backward reads dact[i] before it writes dgate[i]
    cuda_swiglu_backward(dgate, s->dup, s->dact, a->gate, a->up, (size_t)S * I, c->swiglu_limit, c->swiglu_alpha);
    g = gemm_args(a, &W->gate_up, 0, D, 2 * I); // dxs (S, D) = interleave(dgate, dup) W_gu
    g.a0 = dgate, g.a1 = s->dup, g.lda = I, g.c0 = s->dxs, g.ldc = D;
    cuda_moe_gemm(&g, S, E);
    if (lora && lora->gate)
        cuda_lora_experts_backward(s->dxs, s->dz, dgate, x, a->tok, a->zg, lora->gate, a->off, S, E, D, I, lora->R, lora->scale);
    if (lora && lora->up)
        cuda_lora_experts_backward(s->dxs, s->dz, s->dup, x, a->tok, a->zu, lora->up, a->off, S, E, D, I, lora->R, lora->scale);
    moe_dx_kernel<<<T, ROW_THREADS>>>(dx, s->dxs, a->slot, D, K);
    CUDA_LAUNCH_CHECK();
}
