// model/cpu/matmul.c: the three fp32 GEMM shapes of a frozen-weight forward/backward.
//   cpu_matmul     y  (M, N) = x (M, K) w (N, K)^T + b     (Linear forward)
//   cpu_matmul_dx  dx (M, K) = dy (M, N) w (N, K)          (gradient of the input)
//   cpu_matmul_dw  dw (N, K) += alpha dy (M, N)^T x (M, K) (gradient of a weight: LoRA A and B)
//
// Invariants: every output element is reduced by one thread in a fixed order (dot products in 8 lanes
// summed pairwise, the rest sequentially over the reduced index), so results do not depend on the
// thread count. Blocking keeps a block of w rows hot in cache while the rows of x stream past.
#include "model/cpu/ops.h"

#define NBLOCK 16    // rows of w per task in cpu_matmul
#define KBLOCK 256   // columns per task in cpu_matmul_dx / cpu_matmul_dw

void cpu_matmul(float *y, const float *x, const float *w, const float *b, int M, int N, int K, int accumulate) {
    int nblocks = (N + NBLOCK - 1) / NBLOCK;
#pragma omp parallel for schedule(static) if ((size_t)M * N * K >= CPU_PAR_MIN)
    for (int jb = 0; jb < nblocks; jb++) {
        int j0 = jb * NBLOCK, j1 = j0 + NBLOCK < N ? j0 + NBLOCK : N;
        for (int i = 0; i < M; i++) {
            const float *xi = x + (size_t)i * K;
            float *yi = y + (size_t)i * N;
            for (int j = j0; j < j1; j++) {
                float v = cpu_dot(xi, w + (size_t)j * K, K);
                if (b) v += b[j];
                yi[j] = accumulate ? yi[j] + v : v;
            }
        }
    }
}

void cpu_matmul_dx(float *dx, const float *dy, const float *w, int M, int N, int K, int accumulate) {
    int kblocks = (K + KBLOCK - 1) / KBLOCK;
    // Tasks are (column block, group of 4 rows): each row of w is loaded once per 4 rows of dy.
    int mgroups = (M + 3) / 4;
#pragma omp parallel for schedule(static) collapse(2) if ((size_t)M * N * K >= CPU_PAR_MIN)
    for (int kb = 0; kb < kblocks; kb++) {
        for (int ig = 0; ig < mgroups; ig++) {
            int k0 = kb * KBLOCK, nk = K - k0 < KBLOCK ? K - k0 : KBLOCK;
            int i0 = ig * 4, ni = M - i0 < 4 ? M - i0 : 4;
            float acc[4][KBLOCK];
            for (int r = 0; r < ni; r++)
                for (int k = 0; k < nk; k++) acc[r][k] = 0.0f;
            for (int j = 0; j < N; j++) {
                const float *wj = w + (size_t)j * K + k0;
                for (int r = 0; r < ni; r++) {
                    float a = dy[(size_t)(i0 + r) * N + j];
                    if (a == 0.0f) continue; // adds exactly nothing (weights are finite)
                    for (int k = 0; k < nk; k++) acc[r][k] += a * wj[k];
                }
            }
            for (int r = 0; r < ni; r++) {
                float *dxr = dx + (size_t)(i0 + r) * K + k0;
                for (int k = 0; k < nk; k++) dxr[k] = accumulate ? dxr[k] + acc[r][k] : acc[r][k];
            }
        }
    }
}

void cpu_matmul_dw(float *dw, const float *dy, const float *x, int M, int N, int K, float alpha) {
    int kblocks = (K + KBLOCK - 1) / KBLOCK;
#pragma omp parallel for schedule(static) collapse(2) if ((size_t)M * N * K >= CPU_PAR_MIN)
    for (int j = 0; j < N; j++) {
        for (int kb = 0; kb < kblocks; kb++) {
            int k0 = kb * KBLOCK, nk = K - k0 < KBLOCK ? K - k0 : KBLOCK;
            float acc[KBLOCK];
            for (int k = 0; k < nk; k++) acc[k] = 0.0f;
            for (int i = 0; i < M; i++) {
                float a = dy[(size_t)i * N + j];
                if (a == 0.0f) continue;
                const float *xi = x + (size_t)i * K + k0;
                for (int k = 0; k < nk; k++) acc[k] += a * xi[k];
            }
            float *dwj = dw + (size_t)j * K + k0;
            for (int k = 0; k < nk; k++) dwj[k] += alpha * acc[k];
        }
    }
}
