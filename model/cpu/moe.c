// model/cpu/moe.c: one layer's mixture of experts, forward and backward, over expert-sorted slots.
// T tokens, D hidden, E experts, K per token, I intermediate, R LoRA rank, S = T*K slots.
//
// Per expert e on its rows x_e (HF GptOssExperts, packed [out, in] weights):
//   gu = W_gu[e] x + b_gu[e]             (2I, rows interleaved: 2i gate_i, 2i+1 up_i)
//   gate = gu[0::2] + LoRA_gate(x), up = gu[1::2] + LoRA_up(x)
//   act = swiglu(gate, up)               (clamped, alpha, +1: swiglu.c)
//   y = W_down[e] act + b_down[e] + LoRA_down(act)
// out_t = res_t + sum_k w_tk y_tk, the sum over the token's experts in increasing index.
// Backward: dy = w dout, dw_tk = dout_t . y_tk, back through down, swiglu, gate_up (+ LoRA); the input
// gradient of each slot is summed per token in increasing expert index.
//
// Expert weights stay in their storage format (WF_F32 is used in place, others are dequantized into
// s->wbuf with qmatrix_dequant_rows, rows split across threads). Parallelism is inside the matmuls.
#include "model/cpu/ops.h"

#define DEQ_ROWS 32

void cpu_moe_acts_take(cpu_moe_acts *a, cpu_arena *ar, size_t S, size_t E, size_t I, size_t R, size_t D) {
    a->off = cpu_take_i(ar, E + 1), a->tok = cpu_take_i(ar, S), a->slot = cpu_take_i(ar, S);
    a->gate = cpu_take_f(ar, S * I), a->up = cpu_take_f(ar, S * I), a->act = cpu_take_f(ar, S * I);
    a->zg = cpu_take_f(ar, S * R), a->zu = cpu_take_f(ar, S * R), a->zd = cpu_take_f(ar, S * R);
    a->y = cpu_take_f(ar, S * D);
}

static const float *moe_weight(const qmatrix *q, float *buf) {
    if (q->fmt == WF_F32) return q->f32;
    int blocks = (q->rows + DEQ_ROWS - 1) / DEQ_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)q->rows * q->cols >= CPU_PAR_MIN)
    for (int b = 0; b < blocks; b++) {
        int r0 = b * DEQ_ROWS, nr = q->rows - r0 < DEQ_ROWS ? q->rows - r0 : DEQ_ROWS;
        qmatrix_dequant_rows(q, r0, nr, buf + (size_t)r0 * q->cols);
    }
    return buf;
}

// Counting sort of the (token, choice) pairs by expert, tokens ascending within an expert.
static void moe_plan(cpu_moe_acts *a, const int32_t *sel, int T, int E, int K) {
    int32_t cur[E];
    for (int e = 0; e <= E; e++) a->off[e] = 0;
    for (int i = 0; i < T * K; i++) a->off[sel[i] + 1]++;
    for (int e = 0; e < E; e++) a->off[e + 1] += a->off[e];
    for (int e = 0; e < E; e++) cur[e] = a->off[e];
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < K; k++) {
            int p = cur[sel[t * K + k]]++;
            a->slot[t * K + k] = p;
            a->tok[p] = t;
        }
    }
}

// The token's K slots in increasing order, which is increasing expert index.
static void moe_token_slots(const int32_t *slot_t, int K, int32_t *out) {
    for (int k = 0; k < K; k++) {
        int i = k;
        while (i > 0 && out[i - 1] > slot_t[k]) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = slot_t[k];
    }
}

static void moe_gather(float *xs, const float *x, const int32_t *tok, int n, int D) {
#pragma omp parallel for schedule(static) if ((size_t)n * D >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) memcpy(xs + (size_t)i * D, x + (size_t)tok[i] * D, (size_t)D * sizeof(float));
}

void cpu_moe_forward(float *out, const float *res, const float *x, const int32_t *sel, const float *w,
                     const model *m, const model_lora *lora, int layer, int T, cpu_moe_acts *a,
                     cpu_moe_scratch *s) {
    const model_config *c = &m->cfg;
    const model_layer *L = &m->layers[layer];
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, R = lora ? lora->rank : 0;
    const float scale = lora ? lora->scale : 0.0f;
    moe_plan(a, sel, T, E, K);
    for (int e = 0; e < E; e++) {
        int p0 = a->off[e], n = a->off[e + 1] - p0;
        if (n == 0) continue;
        moe_gather(s->xs, x, a->tok + p0, n, D);
        cpu_matmul(s->gu, s->xs, moe_weight(&L->gate_up[e], s->wbuf), L->gate_up_b + (size_t)e * 2 * I, n, 2 * I,
                   D, 0);
        float *gate = a->gate + (size_t)p0 * I, *up = a->up + (size_t)p0 * I, *act = a->act + (size_t)p0 * I;
        for (size_t i = 0; i < (size_t)n * I; i++) {
            gate[i] = s->gu[2 * i];
            up[i] = s->gu[2 * i + 1];
        }
        const lora_pair *pg = cpu_lora_pick(lora, layer, LT_GATE, e), *pu = cpu_lora_pick(lora, layer, LT_UP, e),
                        *pd = cpu_lora_pick(lora, layer, LT_DOWN, e);
        if (pg) cpu_lora_forward(gate, a->zg + (size_t)p0 * R, s->xs, pg, n, D, I, R, scale);
        if (pu) cpu_lora_forward(up, a->zu + (size_t)p0 * R, s->xs, pu, n, D, I, R, scale);
        cpu_swiglu_forward(act, gate, up, (size_t)n * I, c->swiglu_limit, c->swiglu_alpha);
        float *y = a->y + (size_t)p0 * D;
        cpu_matmul(y, act, moe_weight(&L->down[e], s->wbuf), L->down_b + (size_t)e * D, n, D, I, 0);
        if (pd) cpu_lora_forward(y, a->zd + (size_t)p0 * R, act, pd, n, I, D, R, scale);
    }
#pragma omp parallel for schedule(static) if ((size_t)T * K * D >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        int32_t order[K], kof[K];
        moe_token_slots(a->slot + (size_t)t * K, K, order);
        for (int i = 0; i < K; i++) // the choice k of each ordered slot, for its weight
            for (int k = 0; k < K; k++)
                if (a->slot[(size_t)t * K + k] == order[i]) kof[i] = k;
        float *ot = out + (size_t)t * D;
        for (int j = 0; j < D; j++) ot[j] = 0.0f;
        for (int i = 0; i < K; i++) {
            const float *yp = a->y + (size_t)order[i] * D;
            float wk = w[(size_t)t * K + kof[i]];
            for (int j = 0; j < D; j++) ot[j] += yp[j] * wk;
        }
        const float *rt = res + (size_t)t * D;
        for (int j = 0; j < D; j++) ot[j] = rt[j] + ot[j];
    }
}

void cpu_moe_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const model *m,
                      const model_lora *lora, int layer, int T, const cpu_moe_acts *a, cpu_moe_scratch *s) {
    const model_config *c = &m->cfg;
    const model_layer *L = &m->layers[layer];
    const int D = c->hidden, E = c->n_experts, K = c->top_k, I = c->intermediate, R = lora ? lora->rank : 0;
    const float scale = lora ? lora->scale : 0.0f;
#pragma omp parallel for schedule(static) if ((size_t)T * K * D >= CPU_PAR_MIN)
    for (int tk = 0; tk < T * K; tk++) {
        int t = tk / K;
        dw[tk] = cpu_dot(dout + (size_t)t * D, a->y + (size_t)a->slot[tk] * D, D);
    }
    for (int e = 0; e < E; e++) {
        int p0 = a->off[e], n = a->off[e + 1] - p0;
        if (n == 0) continue;
        // dy rows of this expert: w_tk * dout_t (the choice k of slot p found through the slot table).
        for (int i = 0; i < n; i++) {
            int t = a->tok[p0 + i];
            float wk = 0.0f;
            for (int k = 0; k < K; k++)
                if (a->slot[(size_t)t * K + k] == p0 + i) wk = w[(size_t)t * K + k];
            for (int j = 0; j < D; j++) s->dy[(size_t)i * D + j] = wk * dout[(size_t)t * D + j];
        }
        const float *gate = a->gate + (size_t)p0 * I, *up = a->up + (size_t)p0 * I, *act = a->act + (size_t)p0 * I;
        const lora_pair *pg = cpu_lora_pick(lora, layer, LT_GATE, e), *pu = cpu_lora_pick(lora, layer, LT_UP, e),
                        *pd = cpu_lora_pick(lora, layer, LT_DOWN, e);
        cpu_matmul_dx(s->dact, s->dy, moe_weight(&L->down[e], s->wbuf), n, D, I, 0);
        if (pd) cpu_lora_backward(s->dact, s->dz, s->dy, act, a->zd + (size_t)p0 * R, pd, n, I, D, R, scale);
        cpu_swiglu_backward(s->dgate, s->dup, s->dact, gate, up, (size_t)n * I, c->swiglu_limit, c->swiglu_alpha);
        for (size_t i = 0; i < (size_t)n * I; i++) {
            s->gu[2 * i] = s->dgate[i];
            s->gu[2 * i + 1] = s->dup[i];
        }
        float *dxs = s->dxs + (size_t)p0 * D;
        cpu_matmul_dx(dxs, s->gu, moe_weight(&L->gate_up[e], s->wbuf), n, 2 * I, D, 0);
        if (pg || pu) moe_gather(s->xs, x, a->tok + p0, n, D);
        if (pg) cpu_lora_backward(dxs, s->dz, s->dgate, s->xs, a->zg + (size_t)p0 * R, pg, n, D, I, R, scale);
        if (pu) cpu_lora_backward(dxs, s->dz, s->dup, s->xs, a->zu + (size_t)p0 * R, pu, n, D, I, R, scale);
    }
#pragma omp parallel for schedule(static) if ((size_t)T * K * D >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        int32_t order[K];
        moe_token_slots(a->slot + (size_t)t * K, K, order);
        float *dxt = dx + (size_t)t * D;
        for (int j = 0; j < D; j++) dxt[j] = 0.0f;
        for (int i = 0; i < K; i++) {
            const float *d = s->dxs + (size_t)order[i] * D;
            for (int j = 0; j < D; j++) dxt[j] += d[j];
        }
    }
}
