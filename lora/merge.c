// lora/merge.c: fold a LoRA adapter into the base weights (lora.h "Merge").
// D hidden, Q = H*HD, KV = KVH*HD, E experts, I intermediate, R rank.
//
// delta (out, in) = scale * (B (out, R) A (R, in)), each element summed over R in fp32 and then scaled,
// as PEFT's get_delta_weight computes (B @ A) * scaling. Dense weights are fp32 in memory and change in
// place. Expert weights are [out, in] qmatrix (gate_up rows interleaved: row 2i gate_i, 2i+1 up_i) in
// the model's storage format; each is dequantized into one scratch buffer, gets its delta, and is stored
// again through qmatrix_from_f32 in the requested format. Their new buffers join m->owned.
#include "lora/lora.h"

#include <stdlib.h>

// w (out, in) += scale * B A on rows row0, row0 + stride, ... (stride 2 for the halves of gate_up).
static void add_delta(float *w, int in, const lora_pair *p, int R, float scale, int n_out, int row0, int stride) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < n_out; o++) {
        float *wr = w + (size_t)(row0 + o * stride) * in;
        const float *b = p->B + (size_t)o * R;
        for (int i = 0; i < in; i++) {
            float d = 0.0f;
            for (int r = 0; r < R; r++) d += b[r] * p->A[(size_t)r * in + i];
            wr[i] += d * scale;
        }
    }
}

static void own(model *m, void *p) {
    m->owned = xrealloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = p;
}

// One expert weight q: dequantize into buf, add the deltas, store as fmt (skipped when nothing changes).
static void merge_expert(model *m, qmatrix *q, float *buf, const lora_pair *p0, const lora_pair *p1, int R,
                         float scale, wformat fmt, int interleaved) {
    if (!p0 && !p1 && q->fmt == fmt) return;
    qmatrix_dequant_rows(q, 0, q->rows, buf);
    if (interleaved) {
        if (p0) add_delta(buf, q->cols, p0, R, scale, q->rows / 2, 0, 2);
        if (p1) add_delta(buf, q->cols, p1, R, scale, q->rows / 2, 1, 2);
    } else if (p0) {
        add_delta(buf, q->cols, p0, R, scale, q->rows, 0, 1);
    }
    int rows = q->rows, cols = q->cols;
    own(m, qmatrix_from_f32(q, fmt, buf, rows, cols));
}

static const lora_pair *pick(const model_lora *ml, const lora_pair *p, lora_target t) {
    return (ml->targets & (1u << t)) && p && p->A ? p : NULL;
}

gt_status lora_merge(model *m, const lora_adapter *la, wformat expert_fmt, gt_error *err) {
    const model_config *c = &m->cfg;
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, E = c->n_experts,
              I = c->intermediate;
    if (la->n_layers != c->n_layers || la->n_experts != E || la->d_model != D || la->d_q != Q || la->d_kv != KV ||
        la->d_inter != I)
        return gt_fail(err, GT_EINVAL,
                       "merge: the adapter was made for a base with %d layers, %d experts, hidden %d, q %d, kv %d, "
                       "intermediate %d, but the model has %d, %d, %d, %d, %d, %d: pass the adapter's own base model",
                       la->n_layers, la->n_experts, la->d_model, la->d_q, la->d_kv, la->d_inter, c->n_layers, E, D, Q,
                       KV, I);
    if (expert_fmt == WF_MXFP4 && (D % MXFP4_BLOCK || I % MXFP4_BLOCK))
        return gt_fail(err, GT_EINVAL, "merge: MXFP4 experts need hidden (%d) and intermediate (%d) to be multiples "
                       "of %d; keep the merged experts bf16", D, I, MXFP4_BLOCK);
    const model_lora *ml = &la->ml;
    const int R = ml->rank;
    const float scale = ml->scale;
    float *buf = xmalloc((size_t)(2 * I > D ? 2 * I : D) * (size_t)(D > I ? D : I) * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        model_layer *W = &m->layers[l];
        const lora_layer *ll = &ml->layers[l];
        const lora_pair *p;
        if ((p = pick(ml, &ll->q, LT_Q))) add_delta(W->wq, D, p, R, scale, Q, 0, 1);
        if ((p = pick(ml, &ll->k, LT_K))) add_delta(W->wk, D, p, R, scale, KV, 0, 1);
        if ((p = pick(ml, &ll->v, LT_V))) add_delta(W->wv, D, p, R, scale, KV, 0, 1);
        if ((p = pick(ml, &ll->o, LT_O))) add_delta(W->wo, Q, p, R, scale, D, 0, 1);
        for (int e = 0; e < E; e++) {
            const lora_pair *g = pick(ml, ll->gate ? &ll->gate[e] : NULL, LT_GATE);
            const lora_pair *u = pick(ml, ll->up ? &ll->up[e] : NULL, LT_UP);
            const lora_pair *d = pick(ml, ll->down ? &ll->down[e] : NULL, LT_DOWN);
            merge_expert(m, &W->gate_up[e], buf, g, u, R, scale, expert_fmt, 1);
            merge_expert(m, &W->down[e], buf, d, NULL, R, scale, expert_fmt, 0);
        }
    }
    free(buf);
    m->expert_format = expert_fmt;
    return GT_OK;
}
