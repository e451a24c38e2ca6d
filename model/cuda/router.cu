// model/cuda/router.cu: top-K expert selection and routing weights (model/cpu/router.c), one thread per
// token: the CPU's insertion into a sorted list (ties keep the lower expert index first) and the softmax
// over the K selected logits in double.
#include "model/cuda/common.cuh"

#define ROUTER_MAXK 16

__global__ void router_fwd_kernel(int32_t *sel, float *w, const float *logits, int T, int E, int K) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const float *lt = logits + (size_t)t * E;
    int st[ROUTER_MAXK];
    int n = 0;
    for (int e = 0; e < E; e++) {
        if (n == K && !(lt[e] > lt[st[K - 1]])) continue;
        int i = n < K ? n++ : K - 1;
        while (i > 0 && lt[e] > lt[st[i - 1]]) {
            st[i] = st[i - 1];
            i--;
        }
        st[i] = e;
    }
    float mx = lt[st[0]];
    double sum = 0.0;
    for (int i = 0; i < K; i++) sum += exp((double)lt[st[i]] - mx);
    for (int i = 0; i < K; i++) {
        sel[(size_t)t * K + i] = st[i];
        w[(size_t)t * K + i] = (float)(exp((double)lt[st[i]] - mx) / sum);
    }
}

extern "C" void cuda_router_forward(int32_t *sel, float *w, const float *logits, int T, int E, int K) {
    CHECK(K >= 1 && K <= ROUTER_MAXK && K <= E);
    if (!T) return;
    router_fwd_kernel<<<cuda_blocks(T, 128), 128>>>(sel, w, logits, T, E, K);
    CUDA_LAUNCH_CHECK();
}

__global__ void router_bwd_kernel(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E,
                                  int K) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const float *wt = w + (size_t)t * K, *dwt = dw + (size_t)t * K;
    float *dl = dlogits + (size_t)t * E;
    for (int e = 0; e < E; e++) dl[e] = 0.0f;
    double s = 0.0;
    for (int i = 0; i < K; i++) s += (double)wt[i] * dwt[i];
    for (int i = 0; i < K; i++) dl[sel[(size_t)t * K + i]] = (float)(wt[i] * (dwt[i] - s));
}

extern "C" void cuda_router_backward(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E,
                                     int K) {
    if (!T) return;
    router_bwd_kernel<<<cuda_blocks(T, 128), 128>>>(dlogits, dw, w, sel, T, E, K);
    CUDA_LAUNCH_CHECK();
}
