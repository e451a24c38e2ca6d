// model/cuda/rmsnorm.cu: RMSNorm forward and backward (model/cpu/rmsnorm.c), one 256-thread block per row.
// Input x is the bf16 residual stream; the forward rounds y to bf16 once, rstd and the backward stay fp32
// (dx +=, as on the CPU).
// Sums (mean of squares, the backward's w.dy.x) in double as the CPU does; the order differs from the
// CPU's serial loop, which moves results by double rounding only.
#include "model/cuda/common.cuh"

#define NORM_THREADS 256

static __device__ double block_sum_d(double v, double *sh) {
    v = warp_sum_d(v);
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < NORM_THREADS / WARP ? sh[lane] : 0.0;
        v = warp_sum_d(v);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    double r = sh[0];
    __syncthreads();
    return r;
}

// y (T, D) = bf16(w * (x * rstd)) from bf16 x; rstd (T) fp32 for the backward.
__global__ void rmsnorm_fwd_kernel(uint16_t *y, float *rstd, const uint16_t *x, const float *w, int D, float eps) {
    __shared__ double sh[NORM_THREADS / WARP];
    size_t t = blockIdx.x;
    const uint16_t *xt = x + t * D;
    double ss = 0.0;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) {
        double v = bf16_float(xt[i]);
        ss += v * v;
    }
    ss = block_sum_d(ss, sh);
    float r = 1.0f / sqrtf((float)(ss / D) + eps);
    if (threadIdx.x == 0) rstd[t] = r;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) y[t * D + i] = bf16_bits(w[i] * (bf16_float(xt[i]) * r));
}

extern "C" void cuda_rmsnorm_forward(uint16_t *y, float *rstd, const uint16_t *x, const float *w, int T, int D,
                                     float eps) {
    if (!T) return;
    rmsnorm_fwd_kernel<<<T, NORM_THREADS>>>(y, rstd, x, w, D, eps);
    CUDA_LAUNCH_CHECK();
}

// dx (T, D) += the gradient through y, from fp32 dy and the forward's bf16 x and rstd.
__global__ void rmsnorm_bwd_kernel(float *dx, const float *dy, const uint16_t *x, const float *w, const float *rstd,
                                   int D) {
    __shared__ double sh[NORM_THREADS / WARP];
    size_t t = blockIdx.x;
    const uint16_t *xt = x + t * D;
    const float *dyt = dy + t * D;
    double s = 0.0;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) s += (double)w[i] * dyt[i] * bf16_float(xt[i]);
    s = block_sum_d(s, sh);
    double r = rstd[t], c = r * r * r * s / D;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS)
        dx[t * D + i] += (float)(r * w[i] * dyt[i] - bf16_float(xt[i]) * c);
}

extern "C" void cuda_rmsnorm_backward(float *dx, const float *dy, const uint16_t *x, const float *w,
                                      const float *rstd, int T, int D) {
    if (!T) return;
    rmsnorm_bwd_kernel<<<T, NORM_THREADS>>>(dx, dy, x, w, rstd, D);
    CUDA_LAUNCH_CHECK();
}
