// model/cuda/moe.cu: one layer's mixture of experts on the GPU, forward and backward (the math and the
// order of sums are model/cpu/moe.c's). Slots are the (token, choice) pairs sorted by expert, tokens
// ascending within an expert; each expert runs as dense GEMMs on its contiguous rows:
//   gather x rows -> [dequantize W_gu[e] into the scratch] -> gu = x W_gu^T + b -> gate, up (+ LoRA)
//   -> act = swiglu -> [dequantize W_down[e]] -> y = act W_down^T + b (+ LoRA)
// and each token sums w * y over its slots in increasing expert order. The 4-bit experts stay 4-bit in
// memory; one bf16 scratch of one expert's matrix is reused by every expert and layer.
//
// The host needs each expert's row count to size its GEMMs: the plan kernel sorts on the device and the
// E+1 offsets come back in one small synchronising copy per forward call (the backward reuses them).
// This is the one host synchronisation inside a layer; removing it needs grouped GEMMs that read their
// sizes on the device (part 2).
#include "model/cuda/common.cuh"
extern "C" {
#include "model/cpu/ops.h"
}

// One block of max(E, 32) threads (E <= 1024): thread e counts, then places, its expert's slots in token
// order. sel is staged through shared memory a tile at a time (every thread scans every entry).
#define PLAN_TILE 4096
__global__ void moe_plan_kernel(int32_t *off, int32_t *tok, int32_t *kof, int32_t *slot, const int32_t *sel, int T,
                                int E, int K) {
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

// xs (n, D) = x[tok[i]] rows, fp32 and (if xs_bf) bf16.
__global__ void moe_gather_kernel(float *xs, uint16_t *xs_bf, const float *x, const int32_t *tok, int n, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * D) return;
    float v = x[(size_t)tok[i / D] * D + i % D];
    xs[i] = v;
    if (xs_bf) xs_bf[i] = bf16_bits(v);
}

static void moe_gather(float *xs, uint16_t *xs_bf, const float *x, const int32_t *tok, int n, int D) {
    moe_gather_kernel<<<cuda_blocks((size_t)n * D, 256), 256>>>(xs, xs_bf, x, tok, n, D);
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

// out (T, D) = res + sum over the token's slots (increasing) of w * y[slot]; thread per (t, j).
__global__ void moe_combine_kernel(float *out, const float *res, const float *y, const float *w, const int32_t *slot,
                                   const int32_t *kof, int T, int D, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * D) return;
    size_t t = i / D, j = i % D;
    int32_t order[MOE_MAXK];
    token_slots(slot + t * K, K, order);
    float o = 0.0f;
    for (int q = 0; q < K; q++) o += y[(size_t)order[q] * D + j] * w[t * K + kof[order[q]]];
    out[i] = res[i] + o;
}

extern "C" void cuda_moe_forward(float *out, const float *res, const float *x, const int32_t *sel, const float *w,
                                 const cuda_moe_weights *W, const model_config *c, const model_lora *lora, int layer,
                                 int T, cuda_moe_acts *a, cuda_moe_scratch *s) {
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, R = lora ? lora->rank : 0;
    const float scale = lora ? lora->scale : 0.0f;
    CHECK(E <= 1024 && K <= MOE_MAXK);
    if (!T) return;
    moe_plan_kernel<<<1, E < 32 ? 32 : E>>>(a->off, a->tok, a->kof, a->slot, sel, T, E, K);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cudaMemcpyAsync(a->h_off, a->off, (size_t)(E + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost, 0));
    CUDA_CHECK(cudaStreamSynchronize(0));
    for (int e = 0; e < E; e++) {
        int p0 = a->h_off[e], n = a->h_off[e + 1] - p0;
        if (n == 0) continue;
        moe_gather(s->xs, s->xs_bf, x, a->tok + p0, n, D);
        const uint16_t *wgu = cuda_experts_weight(&W->gate_up, e, s->wbuf);
        cuda_gemm(CUDA_GEMM_BF16, 0, 1, n, 2 * I, D, 1.0f, s->xs_bf, D, wgu, D, 0.0f, s->gu, 2 * I);
        cuda_add_bias(s->gu, W->gate_up_b + (size_t)e * 2 * I, n, 2 * I);
        float *gate = a->gate + (size_t)p0 * I, *up = a->up + (size_t)p0 * I, *act = a->act + (size_t)p0 * I;
        cuda_deinterleave(gate, up, s->gu, (size_t)n * I);
        const lora_pair *pg = cpu_lora_pick(lora, layer, LT_GATE, e), *pu = cpu_lora_pick(lora, layer, LT_UP, e),
                        *pd = cpu_lora_pick(lora, layer, LT_DOWN, e);
        if (pg) cuda_lora_forward(gate, a->zg + (size_t)p0 * R, s->xs, pg, n, D, I, R, scale);
        if (pu) cuda_lora_forward(up, a->zu + (size_t)p0 * R, s->xs, pu, n, D, I, R, scale);
        cuda_swiglu_forward(act, s->act_bf, gate, up, (size_t)n * I, c->swiglu_limit, c->swiglu_alpha);
        float *y = a->y + (size_t)p0 * D;
        const uint16_t *wd = cuda_experts_weight(&W->down, e, s->wbuf);
        cuda_gemm(CUDA_GEMM_BF16, 0, 1, n, D, I, 1.0f, s->act_bf, I, wd, I, 0.0f, y, D);
        cuda_add_bias(y, W->down_b + (size_t)e * D, n, D);
        if (pd) cuda_lora_forward(y, a->zd + (size_t)p0 * R, act, pd, n, I, D, R, scale);
    }
    moe_combine_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(out, res, a->y, w, a->slot, a->kof, T, D, K);
    CUDA_LAUNCH_CHECK();
}

// dw[tk] = dout_t . y[slot[tk]]: one warp per (t, k).
__global__ void moe_dw_kernel(float *dw, const float *dout, const float *y, const int32_t *slot, int T, int D, int K) {
    size_t tk = (size_t)blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (tk >= (size_t)T * K) return;
    const float *a = dout + (tk / K) * D, *b = y + (size_t)slot[tk] * D;
    float s = 0.0f;
    for (int j = lane; j < D; j += WARP) s += a[j] * b[j];
    s = warp_sum(s);
    if (lane == 0) dw[tk] = s;
}

// dy (n, D) = w_tk * dout_t for the expert's slots p0 .. p0+n, fp32 and bf16.
__global__ void moe_dy_kernel(float *dy, uint16_t *dy_bf, const float *dout, const float *w, const int32_t *tok,
                              const int32_t *kof, int n, int D, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * D) return;
    size_t r = i / D, j = i % D;
    int t = tok[r];
    float v = w[(size_t)t * K + kof[r]] * dout[(size_t)t * D + j];
    dy[i] = v;
    dy_bf[i] = bf16_bits(v);
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

extern "C" void cuda_moe_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                                  const cuda_moe_weights *W, const model_config *c, const model_lora *lora, int layer,
                                  int T, const cuda_moe_acts *a, cuda_moe_scratch *s) {
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, R = lora ? lora->rank : 0;
    const float scale = lora ? lora->scale : 0.0f;
    if (!T) return;
    moe_dw_kernel<<<cuda_blocks((size_t)T * K, 8), 8 * WARP>>>(dw, dout, a->y, a->slot, T, D, K);
    CUDA_LAUNCH_CHECK();
    for (int e = 0; e < E; e++) {
        int p0 = a->h_off[e], n = a->h_off[e + 1] - p0;
        if (n == 0) continue;
        moe_dy_kernel<<<cuda_blocks((size_t)n * D, 256), 256>>>(s->dy, s->dy_bf, dout, w, a->tok + p0, a->kof + p0, n,
                                                               D, K);
        CUDA_LAUNCH_CHECK();
        const float *gate = a->gate + (size_t)p0 * I, *up = a->up + (size_t)p0 * I, *act = a->act + (size_t)p0 * I;
        const lora_pair *pg = cpu_lora_pick(lora, layer, LT_GATE, e), *pu = cpu_lora_pick(lora, layer, LT_UP, e),
                        *pd = cpu_lora_pick(lora, layer, LT_DOWN, e);
        const uint16_t *wd = cuda_experts_weight(&W->down, e, s->wbuf);
        cuda_gemm(CUDA_GEMM_BF16, 0, 0, n, I, D, 1.0f, s->dy_bf, D, wd, I, 0.0f, s->dact, I);
        if (pd) cuda_lora_backward(s->dact, s->dz, s->dy, act, a->zd + (size_t)p0 * R, pd, n, I, D, R, scale);
        cuda_swiglu_backward(s->dgate, s->dup, s->dact, gate, up, (size_t)n * I, c->swiglu_limit, c->swiglu_alpha);
        cuda_interleave_bf16(s->dgu_bf, s->dgate, s->dup, (size_t)n * I);
        float *dxs = s->dxs + (size_t)p0 * D;
        const uint16_t *wgu = cuda_experts_weight(&W->gate_up, e, s->wbuf);
        cuda_gemm(CUDA_GEMM_BF16, 0, 0, n, D, 2 * I, 1.0f, s->dgu_bf, 2 * I, wgu, D, 0.0f, dxs, D);
        if (pg || pu) moe_gather(s->xs, NULL, x, a->tok + p0, n, D);
        if (pg) cuda_lora_backward(dxs, s->dz, s->dgate, s->xs, a->zg + (size_t)p0 * R, pg, n, D, I, R, scale);
        if (pu) cuda_lora_backward(dxs, s->dz, s->dup, s->xs, a->zu + (size_t)p0 * R, pu, n, D, I, R, scale);
    }
    moe_dx_kernel<<<cuda_blocks((size_t)T * D, 256), 256>>>(dx, s->dxs, a->slot, T, D, K);
    CUDA_LAUNCH_CHECK();
}
