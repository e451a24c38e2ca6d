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
    moe_plan_kernel<<<1, E < 32 ? 32 : E>>>(a->off, a->tok, a->kof, a->slot, a->tiles, cuda_moe_max_tiles(S, E), sel,
                                            T, E, K);
    CUDA_LAUNCH_CHECK();
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
    moe_dx_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(dx, s->dxs, a->slot, T, D, K);
    CUDA_LAUNCH_CHECK();
}
