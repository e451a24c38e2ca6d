// model/cpu/attention.c: grouped-query attention with sinks, causal, optional sliding window, packed
// documents. T tokens, H query heads, KVH kv heads (query head h reads kv head h / (H / KVH)), HD dim.
//
// Forward, per query t and head h (HF eager_attention_forward):
//   s_j = (q_t . k_j) * HD^-0.5 for the visible keys j (same document, j <= t, j > t - window);
//   m = max(max_j s_j, sink_h);  den = sum_j exp(s_j - m) + exp(sink_h - m)  (summed in double)
//   p_j = exp(s_j - m) / den;    out_t = sum_j p_j v_j.      The sink has no value vector.
// stat_max = m and stat_den = den (as fp32) are kept so the backward recomputes p bitwise.
// Backward (the sink logit is frozen; its probability still takes part through den):
//   dp_j = dout_t . v_j,  Dt = dout_t . out_t = sum_j p_j dp_j,  ds_j = p_j (dp_j - Dt)
//   dq_t = scale sum_j ds_j k_j;  dk_j = scale sum_{t,h} ds_tj q_t;  dv_j = sum_{t,h} p_tj dout_t.
// Determinism: dq is reduced per query, dk/dv per key (looping its queries in order), each by one
// thread; the backward computes p twice instead of sharing partial sums across threads.
// Memory: the forward allocates T floats of scores per thread, the backward T*H floats for Dt.
#include <math.h>
#include <stdlib.h>

#include "model/cpu/ops.h"

// First key visible from query t: the start of t's document, cut by the window.
static int attn_first_key(const int32_t *doc, int t, int window) {
    int lo = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
    int j = t;
    while (j > lo && doc[j - 1] == doc[t]) j--;
    return j;
}

// One past the last query that sees key j.
static int attn_last_query(const int32_t *doc, int j, int T, int window) {
    int hi = window > 0 && j + window < T ? j + window : T;
    int t = j + 1;
    while (t < hi && doc[t] == doc[j]) t++;
    return t;
}

static float attn_scale(int HD) { return (float)pow((double)HD, -0.5); }

void cpu_attention_forward(float *out, float *stat_max, float *stat_den, const float *q, const float *k,
                           const float *v, const float *sinks, const int32_t *doc, cpu_attn_dims d) {
    const int T = d.T, H = d.H, KVH = d.KVH, HD = d.HD, group = H / KVH;
    const float scale = attn_scale(HD);
    const size_t work = (size_t)T * H * HD * (d.window ? d.window : T);
#pragma omp parallel if (work >= CPU_PAR_MIN)
    {
        float *s = xmalloc((size_t)T * sizeof(float)); // scores of one query row
#pragma omp for schedule(dynamic, 4) collapse(2)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                const float *qt = q + ((size_t)t * H + h) * HD;
                int g = h / group, j0 = attn_first_key(doc, t, d.window);
                float m = sinks[h];
                for (int j = j0; j <= t; j++) {
                    s[j] = cpu_dot(qt, k + ((size_t)j * KVH + g) * HD, HD) * scale;
                    if (s[j] > m) m = s[j];
                }
                double den = exp((double)sinks[h] - m);
                for (int j = j0; j <= t; j++) den += exp((double)s[j] - m);
                float denf = (float)den;
                float *ot = out + ((size_t)t * H + h) * HD;
                for (int i = 0; i < HD; i++) ot[i] = 0.0f;
                for (int j = j0; j <= t; j++) {
                    float p = expf(s[j] - m) / denf;
                    const float *vj = v + ((size_t)j * KVH + g) * HD;
                    for (int i = 0; i < HD; i++) ot[i] += p * vj[i];
                }
                stat_max[(size_t)t * H + h] = m;
                stat_den[(size_t)t * H + h] = denf;
            }
        }
        free(s);
    }
}

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *q,
                            const float *k, const float *v, const float *sinks, const int32_t *doc,
                            const float *stat_max, const float *stat_den, cpu_attn_dims d) {
    (void)sinks; // enters only through stat_max/stat_den
    const int T = d.T, H = d.H, KVH = d.KVH, HD = d.HD, group = H / KVH;
    const float scale = attn_scale(HD);
    const size_t work = (size_t)T * H * HD * (d.window ? d.window : T);
    float *Dt = xmalloc((size_t)T * H * sizeof(float)); // (T, H) dout . out
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int th = 0; th < T * H; th++) Dt[th] = cpu_dot(dout + (size_t)th * HD, out + (size_t)th * HD, HD);

    // dq: per query row.
#pragma omp parallel for schedule(dynamic, 4) collapse(2) if (work >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            size_t th = (size_t)t * H + h;
            const float *qt = q + th * HD, *dot_ = dout + th * HD;
            float *dqt = dq + th * HD;
            int g = h / group, j0 = attn_first_key(doc, t, d.window);
            for (int i = 0; i < HD; i++) dqt[i] = 0.0f;
            for (int j = j0; j <= t; j++) {
                const float *kj = k + ((size_t)j * KVH + g) * HD, *vj = v + ((size_t)j * KVH + g) * HD;
                float p = expf(cpu_dot(qt, kj, HD) * scale - stat_max[th]) / stat_den[th];
                float ds = p * (cpu_dot(dot_, vj, HD) - Dt[th]);
                for (int i = 0; i < HD; i++) dqt[i] += ds * kj[i];
            }
            for (int i = 0; i < HD; i++) dqt[i] *= scale;
        }
    }

    // dk, dv: per key row of each kv head, over the queries that see it and the heads of its group.
#pragma omp parallel for schedule(dynamic, 4) collapse(2) if (work >= CPU_PAR_MIN)
    for (int j = 0; j < T; j++) {
        for (int g = 0; g < KVH; g++) {
            size_t jg = (size_t)j * KVH + g;
            const float *kj = k + jg * HD, *vj = v + jg * HD;
            float *dkj = dk + jg * HD, *dvj = dv + jg * HD;
            for (int i = 0; i < HD; i++) dkj[i] = dvj[i] = 0.0f;
            int t1 = attn_last_query(doc, j, T, d.window);
            for (int t = j; t < t1; t++) {
                for (int h = g * group; h < (g + 1) * group; h++) {
                    size_t th = (size_t)t * H + h;
                    const float *qt = q + th * HD, *dot_ = dout + th * HD;
                    float p = expf(cpu_dot(qt, kj, HD) * scale - stat_max[th]) / stat_den[th];
                    float ds = p * (cpu_dot(dot_, vj, HD) - Dt[th]);
                    for (int i = 0; i < HD; i++) {
                        dvj[i] += p * dot_[i];
                        dkj[i] += ds * qt[i];
                    }
                }
            }
            for (int i = 0; i < HD; i++) dkj[i] *= scale;
        }
    }
    free(Dt);
}
