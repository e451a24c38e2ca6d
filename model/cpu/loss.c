// model/cpu/loss.c: LM head + cross-entropy, chunked over the vocabulary. T tokens, D hidden, V vocab.
// Never forms the (T, V) logits: rows that have a target are taken CE_ROWS at a time (each lm_head row
// is loaded once per group) and the vocabulary CE_CHUNK logits at a time, with an online log-sum-exp in
// double:  mx' = max(mx, chunk max), sum' = sum exp(mx - mx') + sum_chunk exp(l - mx') (each exp in
// fp32: mx is one of the fp32 logits and exp(l - mx) <= 1; the V-term sum in double).
//   forward:  lse_t = mx + ln(sum), loss_t = lse_t - logit_t[target]      (logits are fp32 dots)
//   forward+backward in the same single pass: acc' = acc exp(mx - mx') + sum_chunk exp(l - mx') w_v
//             (fp32, rescaled like sum), then dh_t = g (acc / sum - w_target) = g sum_v (p_v - [v ==
//             target]) w_v. Two vocabulary-sized products (logits, acc) instead of three.
// A group of rows is reduced by one thread in vocabulary order: deterministic.
// Memory: a list of the T target rows per call.
#include <math.h>
#include <stdlib.h>

#include "model/cpu/ops.h"

#define CE_ROWS 4
#define CE_CHUNK 256

// Rows with a target, in order; returns how many.
static int ce_rows(const int32_t *targets, int T, int *rows) {
    int n = 0;
    for (int t = 0; t < T; t++)
        if (targets[t] >= 0) rows[n++] = t;
    return n;
}

// logits (nr, nv) for rows rows[0..nr) and vocabulary entries v0..v0+nv.
static void ce_logits(float lg[CE_ROWS][CE_CHUNK], const float *h, const float *w, const int *rows, int nr, int v0,
                      int nv, int D) {
    for (int v = 0; v < nv; v++) {
        const float *wv = w + (size_t)(v0 + v) * D;
        for (int r = 0; r < nr; r++) lg[r][v] = cpu_dot(h + (size_t)rows[r] * D, wv, D);
    }
}

// The single pass of both entries: lse and loss for every row with a target and, when dh is not NULL,
// dh = g dloss/dh (dh's rows are the running acc until the end of the pass).
static void ce_pass(double *lse, float *loss, float *dh, const float *h, const float *w, const int32_t *targets,
                    int T, int D, int V, float g) {
    for (int t = 0; t < T; t++) loss[t] = 0.0f;
    if (dh)
        for (size_t i = 0; i < (size_t)T * D; i++) dh[i] = 0.0f;
    int *rows = xmalloc((size_t)(T > 0 ? T : 1) * sizeof(int));
    int n = ce_rows(targets, T, rows), groups = (n + CE_ROWS - 1) / CE_ROWS;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)n * V * D >= CPU_PAR_MIN)
    for (int gi = 0; gi < groups; gi++) {
        const int *gr = rows + gi * CE_ROWS;
        int nr = n - gi * CE_ROWS < CE_ROWS ? n - gi * CE_ROWS : CE_ROWS;
        double mx[CE_ROWS], sum[CE_ROWS];
        float tl[CE_ROWS] = {0};
        float lg[CE_ROWS][CE_CHUNK];
        for (int r = 0; r < nr; r++) {
            mx[r] = -INFINITY;
            sum[r] = 0.0;
        }
        for (int v0 = 0; v0 < V; v0 += CE_CHUNK) {
            int nv = V - v0 < CE_CHUNK ? V - v0 : CE_CHUNK;
            ce_logits(lg, h, w, gr, nr, v0, nv, D);
            for (int r = 0; r < nr; r++) {
                int tg = targets[gr[r]];
                float *acc = dh ? dh + (size_t)gr[r] * D : NULL; // sum_v exp(l_v - mx) w_v so far
                if (tg >= v0 && tg < v0 + nv) tl[r] = lg[r][tg - v0];
                double cm = mx[r];
                for (int v = 0; v < nv; v++)
                    if (lg[r][v] > cm) cm = lg[r][v];
                if (cm > mx[r] && sum[r] > 0.0) { // a larger max: rescale what was summed
                    double f = exp(mx[r] - cm);
                    sum[r] *= f;
                    if (acc)
                        for (int i = 0; i < D; i++) acc[i] = (float)(acc[i] * f);
                }
                mx[r] = cm;
                for (int v = 0; v < nv; v++) {
                    float ef = expf(lg[r][v] - (float)cm);
                    sum[r] += ef;
                    if (!acc) continue;
                    const float *wv = w + (size_t)(v0 + v) * D;
                    for (int i = 0; i < D; i++) acc[i] += ef * wv[i];
                }
            }
        }
        for (int r = 0; r < nr; r++) {
            int t = gr[r];
            lse[t] = mx[r] + log(sum[r]);
            loss[t] = (float)(lse[t] - tl[r]);
            if (!dh) continue;
            float *dht = dh + (size_t)t * D;
            const float *wt = w + (size_t)targets[t] * D;
            float a = (float)(g / sum[r]);
            for (int i = 0; i < D; i++) dht[i] = a * dht[i] - g * wt[i];
        }
    }
    free(rows);
}

void cpu_ce_forward(double *lse, float *loss, const float *h, const float *w, const int32_t *targets, int T, int D,
                    int V) {
    ce_pass(lse, loss, NULL, h, w, targets, T, D, V, 0.0f);
}

void cpu_ce_forward_backward(double *lse, float *loss, float *dh, const float *h, const float *w,
                             const int32_t *targets, int T, int D, int V, float g) {
    ce_pass(lse, loss, dh, h, w, targets, T, D, V, g);
}
