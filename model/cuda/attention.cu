// model/cuda/attention.cu: GQA attention with sinks, causal sliding window and packed documents, forward
// and backward, flash-style (model/cpu/attention.c has the math). No (T, T) matrix exists anywhere.
//
// Forward: one warp per (query t, head h). Keys go 32 at a time, one per lane: the lane computes its
// score s_j = q.k_j * HD^-0.5 in full, the warp takes the group max and rescales its running sum l and
// output accumulator acc (the lane owns dims lane, lane+32, ...) by exp(m_old - m_new), then adds
// p_j v_j with p_j broadcast by shuffles. m starts at the sink logit, so the final
//   den = l + exp(sink - m), out = acc / den, stat_max = m, stat_den = den
// are the CPU's quantities (max over the scores and the sink; the sink joins the denominator only).
// Backward (p recomputed from stat_max/stat_den as the CPU does):
//   dq kernel: warp per (t, h); Dt = dout.out; lane j: ds_j = p_j (dout.v_j - Dt); dq = scale sum ds_j k_j.
//              It also stores Dt (T, H) for the next kernel.
//   dk/dv kernel: warp per (key j, kv head g); lanes take the (query, head) pairs that see j, in the CPU's
//              order (query-major, heads of the group inside); dv = sum p dout, dk = scale sum ds q.
// Each output element is reduced by one warp in a fixed order: deterministic, no atomics.
#include "model/cuda/common.cuh"

#define ATT_WARPS 4
#define ATT_MAXD 4 // HD <= 32 * ATT_MAXD

__global__ void doc_bounds_kernel(int32_t *lo, int32_t *hi, const int32_t *doc, int T) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    int j = t;
    while (j > 0 && doc[j - 1] == doc[t]) j--;
    lo[t] = j;
    int k = t + 1;
    while (k < T && doc[k] == doc[t]) k++;
    hi[t] = k;
}

extern "C" void cuda_doc_bounds(int32_t *doc_lo, int32_t *doc_hi, const int32_t *doc, int T) {
    if (!T) return;
    doc_bounds_kernel<<<cuda_blocks(T, 128), 128>>>(doc_lo, doc_hi, doc, T);
    CUDA_LAUNCH_CHECK();
}

static __device__ __forceinline__ float dot_sh(const float *a_sh, const float *b, int HD) {
    float s = 0.0f;
    for (int d = 0; d < HD; d++) s += a_sh[d] * b[d];
    return s;
}

__global__ void attn_fwd_kernel(float *out, float *smax, float *sden, const float *q, const float *k, const float *v,
                                const float *sinks, const int32_t *lo, int T, int H, int KVH, int HD, int window,
                                float scale) {
    __shared__ float qs[ATT_WARPS][32 * ATT_MAXD];
    int wi = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    size_t th = (size_t)blockIdx.x * ATT_WARPS + wi;
    if (th >= (size_t)T * H) return;
    int t = (int)(th / H), h = (int)(th % H), g = h / (H / KVH);
    float *qw = qs[wi];
    for (int d = lane; d < HD; d += WARP) qw[d] = q[th * HD + d];
    __syncwarp();
    int j0 = lo[t];
    if (window > 0 && t - window + 1 > j0) j0 = t - window + 1;
    float m = sinks[h], l = 0.0f, acc[ATT_MAXD];
    for (int i = 0; i < ATT_MAXD; i++) acc[i] = 0.0f;
    for (int jb = j0; jb <= t; jb += WARP) {
        int j = jb + lane;
        float s = -INFINITY;
        if (j <= t) s = dot_sh(qw, k + ((size_t)j * KVH + g) * HD, HD) * scale;
        float mn = fmaxf(m, warp_max(s));
        float c = expf(m - mn);
        float p = j <= t ? expf(s - mn) : 0.0f;
        l = l * c + warp_sum(p);
        for (int i = 0; i < ATT_MAXD; i++) acc[i] *= c;
        m = mn;
        int nk = min(WARP, t - jb + 1);
        for (int jj = 0; jj < nk; jj++) {
            float pj = __shfl_sync(FULL_MASK, p, jj);
            const float *vj = v + ((size_t)(jb + jj) * KVH + g) * HD;
            for (int i = 0; i < ATT_MAXD; i++) {
                int d = lane + WARP * i;
                if (d < HD) acc[i] += pj * vj[d];
            }
        }
    }
    float den = l + expf(sinks[h] - m);
    for (int i = 0; i < ATT_MAXD; i++) {
        int d = lane + WARP * i;
        if (d < HD) out[th * HD + d] = acc[i] / den;
    }
    if (lane == 0) {
        smax[th] = m;
        sden[th] = den;
    }
}

static float attn_scale(int HD) { return (float)pow((double)HD, -0.5); }

extern "C" void cuda_attention_forward(float *out, float *stat_max, float *stat_den, const float *q, const float *k,
                                       const float *v, const float *sinks, const int32_t *doc_lo, cpu_attn_dims d) {
    CHECK(d.HD <= 32 * ATT_MAXD && d.H % d.KVH == 0);
    size_t warps = (size_t)d.T * d.H;
    if (!warps) return;
    attn_fwd_kernel<<<cuda_blocks(warps, ATT_WARPS), ATT_WARPS * WARP>>>(out, stat_max, stat_den, q, k, v, sinks,
                                                                         doc_lo, d.T, d.H, d.KVH, d.HD, d.window,
                                                                         attn_scale(d.HD));
    CUDA_LAUNCH_CHECK();
}

__global__ void attn_bwd_dq_kernel(float *dq, float *Dt, const float *dout, const float *out, const float *q,
                                   const float *k, const float *v, const float *smax, const float *sden,
                                   const int32_t *lo, int T, int H, int KVH, int HD, int window, float scale) {
    __shared__ float qs[ATT_WARPS][32 * ATT_MAXD], ds_[ATT_WARPS][32 * ATT_MAXD];
    int wi = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    size_t th = (size_t)blockIdx.x * ATT_WARPS + wi;
    if (th >= (size_t)T * H) return;
    int t = (int)(th / H), h = (int)(th % H), g = h / (H / KVH);
    float *qw = qs[wi], *dw = ds_[wi];
    float D = 0.0f;
    for (int d = lane; d < HD; d += WARP) {
        qw[d] = q[th * HD + d];
        dw[d] = dout[th * HD + d];
        D += dout[th * HD + d] * out[th * HD + d];
    }
    D = warp_sum(D);
    __syncwarp();
    if (lane == 0) Dt[th] = D;
    const float m = smax[th], den = sden[th];
    int j0 = lo[t];
    if (window > 0 && t - window + 1 > j0) j0 = t - window + 1;
    float acc[ATT_MAXD];
    for (int i = 0; i < ATT_MAXD; i++) acc[i] = 0.0f;
    for (int jb = j0; jb <= t; jb += WARP) {
        int j = jb + lane;
        float ds = 0.0f;
        if (j <= t) {
            size_t jg = ((size_t)j * KVH + g) * HD;
            float p = expf(dot_sh(qw, k + jg, HD) * scale - m) / den;
            ds = p * (dot_sh(dw, v + jg, HD) - D);
        }
        int nk = min(WARP, t - jb + 1);
        for (int jj = 0; jj < nk; jj++) {
            float dsj = __shfl_sync(FULL_MASK, ds, jj);
            const float *kj = k + ((size_t)(jb + jj) * KVH + g) * HD;
            for (int i = 0; i < ATT_MAXD; i++) {
                int d = lane + WARP * i;
                if (d < HD) acc[i] += dsj * kj[d];
            }
        }
    }
    for (int i = 0; i < ATT_MAXD; i++) {
        int d = lane + WARP * i;
        if (d < HD) dq[th * HD + d] = acc[i] * scale;
    }
}

__global__ void attn_bwd_dkv_kernel(float *dk, float *dv, const float *Dt, const float *dout, const float *q,
                                    const float *k, const float *v, const float *smax, const float *sden,
                                    const int32_t *hi, int T, int H, int KVH, int HD, int window, float scale) {
    __shared__ float ks[ATT_WARPS][32 * ATT_MAXD], vs[ATT_WARPS][32 * ATT_MAXD];
    int wi = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    size_t jg = (size_t)blockIdx.x * ATT_WARPS + wi;
    if (jg >= (size_t)T * KVH) return;
    int j = (int)(jg / KVH), g = (int)(jg % KVH), group = H / KVH;
    float *kw = ks[wi], *vw = vs[wi];
    for (int d = lane; d < HD; d += WARP) {
        kw[d] = k[jg * HD + d];
        vw[d] = v[jg * HD + d];
    }
    __syncwarp();
    int t1 = hi[j];
    if (window > 0 && j + window < t1) t1 = j + window;
    int items = (t1 - j) * group;
    float ak[ATT_MAXD], av[ATT_MAXD];
    for (int i = 0; i < ATT_MAXD; i++) ak[i] = av[i] = 0.0f;
    for (int ib = 0; ib < items; ib += WARP) {
        int it = ib + lane;
        float p = 0.0f, ds = 0.0f;
        if (it < items) {
            size_t th = (size_t)(j + it / group) * H + g * group + it % group;
            p = expf(dot_sh(kw, q + th * HD, HD) * scale - smax[th]) / sden[th];
            ds = p * (dot_sh(vw, dout + th * HD, HD) - Dt[th]);
        }
        int n = min(WARP, items - ib);
        for (int ii = 0; ii < n; ii++) {
            float pi = __shfl_sync(FULL_MASK, p, ii), dsi = __shfl_sync(FULL_MASK, ds, ii);
            int iti = ib + ii;
            size_t th = (size_t)(j + iti / group) * H + g * group + iti % group;
            for (int i = 0; i < ATT_MAXD; i++) {
                int d = lane + WARP * i;
                if (d < HD) {
                    av[i] += pi * dout[th * HD + d];
                    ak[i] += dsi * q[th * HD + d];
                }
            }
        }
    }
    for (int i = 0; i < ATT_MAXD; i++) {
        int d = lane + WARP * i;
        if (d < HD) {
            dk[jg * HD + d] = ak[i] * scale;
            dv[jg * HD + d] = av[i];
        }
    }
}

extern "C" void cuda_attention_backward(float *dq, float *dk, float *dv, float *Dt, const float *dout, const float *out,
                                        const float *q, const float *k, const float *v, const int32_t *doc_lo,
                                        const int32_t *doc_hi, const float *stat_max, const float *stat_den,
                                        cpu_attn_dims d) {
    CHECK(d.HD <= 32 * ATT_MAXD && d.H % d.KVH == 0);
    if (!d.T) return;
    float scale = attn_scale(d.HD);
    attn_bwd_dq_kernel<<<cuda_blocks((size_t)d.T * d.H, ATT_WARPS), ATT_WARPS * WARP>>>(
        dq, Dt, dout, out, q, k, v, stat_max, stat_den, doc_lo, d.T, d.H, d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
    attn_bwd_dkv_kernel<<<cuda_blocks((size_t)d.T * d.KVH, ATT_WARPS), ATT_WARPS * WARP>>>(
        dk, dv, Dt, dout, q, k, v, stat_max, stat_den, doc_hi, d.T, d.H, d.KVH, d.HD, d.window, scale);
    CUDA_LAUNCH_CHECK();
}
