// model/cuda/rmsnorm.cu: RMSNorm forward and backward (model/cpu/rmsnorm.c), one 256-thread block per row.
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

__global__ void rmsnorm_fwd_kernel(float *y, uint16_t *ybf, float *rstd, const float *x, const float *w, int D,
                                   float eps) {
    __shared__ double sh[NORM_THREADS / WARP];
    size_t t = blockIdx.x;
    const float *xt = x + t * D;
    double ss = 0.0;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) ss += (double)xt[i] * xt[i];
    ss = block_sum_d(ss, sh);
    float r = 1.0f / sqrtf((float)(ss / D) + eps);
    if (threadIdx.x == 0) rstd[t] = r;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) {
        float v = w[i] * (xt[i] * r);
        y[t * D + i] = v;
        if (ybf) ybf[t * D + i] = bf16_bits(v);
    }
}

extern "C" void cuda_rmsnorm_forward(float *y, uint16_t *ybf, float *rstd, const float *x, const float *w, int T,
                                     int D, float eps) {
    if (!T) return;
    rmsnorm_fwd_kernel<<<T, NORM_THREADS>>>(y, ybf, rstd, x, w, D, eps);
    CUDA_LAUNCH_CHECK();
}

__global__ void rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x, const float *w, const float *rstd,
                                   int D) {
    __shared__ double sh[NORM_THREADS / WARP];
    size_t t = blockIdx.x;
    const float *xt = x + t * D, *dyt = dy + t * D;
    double s = 0.0;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) s += (double)w[i] * dyt[i] * xt[i];
    s = block_sum_d(s, sh);
    double r = rstd[t], c = r * r * r * s / D;
    for (int i = threadIdx.x; i < D; i += NORM_THREADS) dx[t * D + i] += (float)(r * w[i] * dyt[i] - xt[i] * c);
}

extern "C" void cuda_rmsnorm_backward(float *dx, const float *dy, const float *x, const float *w, const float *rstd,
                                      int T, int D) {
    if (!T) return;
    rmsnorm_bwd_kernel<<<T, NORM_THREADS>>>(dx, dy, x, w, rstd, D);
    CUDA_LAUNCH_CHECK();
}
