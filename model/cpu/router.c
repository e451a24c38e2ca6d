// model/cpu/router.c: top-K expert selection and routing weights. T tokens, E experts, K per token.
// The router logits (T, E) = m Wr^T + br come from cpu_matmul; here:
//   sel (T, K): the K largest logits, largest first, ties broken by the lowest expert index (torch.topk's
//               CPU tie order is unspecified; model/NOTES.md);
//   w (T, K):   softmax over those K logits only (HF GptOssTopKRouter), sum in double.
// Backward: the selection is piecewise constant (no gradient); the softmax over the selected logits
//   gives dlogit_k = w_k (dw_k - sum_j w_j dw_j) at the selected experts, 0 elsewhere.
#include <math.h>

#include "model/cpu/ops.h"

void cpu_router_forward(int32_t *sel, float *w, const float *logits, int T, int E, int K) {
#pragma omp parallel for schedule(static) if ((size_t)T * E >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *lt = logits + (size_t)t * E;
        int32_t *st = sel + (size_t)t * K;
        // Insertion into a sorted list of K: strict > keeps the earlier (lower) index first on ties.
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
        for (int i = 0; i < K; i++) w[(size_t)t * K + i] = (float)(exp((double)lt[st[i]] - mx) / sum);
    }
}

void cpu_router_backward(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E, int K) {
#pragma omp parallel for schedule(static) if ((size_t)T * E >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *wt = w + (size_t)t * K, *dwt = dw + (size_t)t * K;
        float *dl = dlogits + (size_t)t * E;
        for (int e = 0; e < E; e++) dl[e] = 0.0f;
        double s = 0.0;
        for (int i = 0; i < K; i++) s += (double)wt[i] * dwt[i];
        for (int i = 0; i < K; i++) dl[sel[(size_t)t * K + i]] = (float)(wt[i] * (dwt[i] - s));
    }
}
