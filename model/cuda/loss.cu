// model/cuda/loss.cu: the LM head fused with cross-entropy, chunked over the vocabulary (model/cpu/loss.c):
// never a (T, V) matrix. For each chunk of CUDA_CE_CHUNK vocabulary rows, a bf16 GEMM writes the (T, chunk)
// logits (fp32) into scratch, and one warp per row folds them into an online log-sum-exp (running max mx,
// running sum in double) and picks up the target's logit. Backward recomputes each chunk's logits,
// turns them into g * (softmax - onehot) (0 on rows without a target) as bf16, and accumulates
// dh += dlogits W_chunk with a second GEMM.
#include "model/cuda/common.cuh"

#define CE_WARPS 8

__global__ void ce_init_kernel(float *mx, double *sum, float *tl, int T) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    mx[t] = -INFINITY;
    sum[t] = 0.0;
    tl[t] = 0.0f;
}

__global__ void ce_chunk_kernel(float *mx, double *sum, float *tl, const float *logits, const int32_t *targets, int T,
                                int v0, int nv) {
    int lane = threadIdx.x % WARP;
    int t = blockIdx.x * CE_WARPS + threadIdx.x / WARP;
    if (t >= T) return;
    const float *lt = logits + (size_t)t * nv;
    float cm = -INFINITY;
    for (int v = lane; v < nv; v += WARP) cm = fmaxf(cm, lt[v]);
    cm = fmaxf(warp_max(cm), mx[t]);
    float s = 0.0f;
    for (int v = lane; v < nv; v += WARP) s += expf(lt[v] - cm);
    double cs = warp_sum_d((double)s);
    if (lane == 0) {
        sum[t] = sum[t] * exp((double)mx[t] - cm) + cs; // exp(-inf) = 0 on the first chunk
        mx[t] = cm;
        int tg = targets[t];
        if (tg >= v0 && tg < v0 + nv) tl[t] = lt[tg - v0];
    }
}

__global__ void ce_final_kernel(double *lse, float *loss, const float *mx, const double *sum, const float *tl,
                                const int32_t *targets, int T) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    double l = (double)mx[t] + log(sum[t]);
    lse[t] = l;
    loss[t] = targets[t] >= 0 ? (float)(l - tl[t]) : 0.0f;
}

extern "C" void cuda_ce_forward(double *lse, float *loss, const uint16_t *h, const uint16_t *w, const int32_t *targets,
                                int T, int D, int V, cuda_ce_scratch *s) {
    if (!T) return;
    ce_init_kernel<<<cuda_blocks(T, 128), 128>>>(s->mx, s->sum, s->tl, T);
    CUDA_LAUNCH_CHECK();
    for (int v0 = 0; v0 < V; v0 += CUDA_CE_CHUNK) {
        int nv = V - v0 < CUDA_CE_CHUNK ? V - v0 : CUDA_CE_CHUNK;
        cuda_gemm(CUDA_GEMM_BF16, 0, 1, T, nv, D, 1.0f, h, D, w + (size_t)v0 * D, D, 0.0f, s->logits, nv);
        ce_chunk_kernel<<<cuda_blocks(T, CE_WARPS), CE_WARPS * WARP>>>(s->mx, s->sum, s->tl, s->logits, targets, T,
                                                                        v0, nv);
        CUDA_LAUNCH_CHECK();
    }
    ce_final_kernel<<<cuda_blocks(T, 128), 128>>>(lse, loss, s->mx, s->sum, s->tl, targets, T);
    CUDA_LAUNCH_CHECK();
}

__global__ void ce_grad_kernel(uint16_t *dl, const float *logits, const int32_t *targets, const double *lse, int T,
                               int v0, int nv, float g) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * nv) return;
    int t = (int)(i / nv), v = (int)(i % nv);
    float d = 0.0f;
    if (targets[t] >= 0) {
        d = (float)exp((double)logits[i] - lse[t]);
        if (v0 + v == targets[t]) d -= 1.0f;
        d *= g;
    }
    dl[i] = bf16_bits(d);
}

extern "C" void cuda_ce_backward(float *dh, const uint16_t *h, const uint16_t *w, const int32_t *targets,
                                 const double *lse, int T, int D, int V, float g, cuda_ce_scratch *s) {
    if (!T) return;
    for (int v0 = 0; v0 < V; v0 += CUDA_CE_CHUNK) {
        int nv = V - v0 < CUDA_CE_CHUNK ? V - v0 : CUDA_CE_CHUNK;
        const uint16_t *wc = w + (size_t)v0 * D;
        cuda_gemm(CUDA_GEMM_BF16, 0, 1, T, nv, D, 1.0f, h, D, wc, D, 0.0f, s->logits, nv);
        ce_grad_kernel<<<cuda_blocks((size_t)T * nv, 256), 256>>>(s->dl, s->logits, targets, lse, T, v0, nv, g);
        CUDA_LAUNCH_CHECK();
        cuda_gemm(CUDA_GEMM_BF16, 0, 0, T, D, nv, 1.0f, s->dl, nv, wc, D, v0 ? 1.0f : 0.0f, dh, D);
    }
}

// One block: the sum over targeted rows, in double, in a fixed order (strided partials, then a tree).
__global__ void loss_sum_kernel(double *out, const float *loss, const int32_t *targets, int T) {
    __shared__ double sh[256];
    double s = 0.0;
    for (int t = threadIdx.x; t < T; t += 256)
        if (targets[t] >= 0) s += loss[t];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = 128; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out += sh[0];
}

extern "C" void cuda_loss_sum(double *out, const float *loss, const int32_t *targets, int T) {
    loss_sum_kernel<<<1, 256>>>(out, loss, targets, T);
    CUDA_LAUNCH_CHECK();
}
