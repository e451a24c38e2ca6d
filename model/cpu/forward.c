// model/cpu/forward.c: the whole GPT-OSS model on the CPU: workspace, forward, loss, backward.
// T tokens, D hidden, H heads, KVH kv heads, HD head dim, E experts, K per token, I intermediate,
// R LoRA rank, V vocab, L layers.
//
// Per layer (HF GptOssDecoderLayer), x the layer input:
//   a = rmsnorm(x); q, k, v = a W^T + b + LoRA; RoPE(q, k); att = attention(q, k, v, sinks)
//   hmid = x + (att Wo^T + bo + LoRA_o)
//   mn = rmsnorm(hmid); logits_r = mn Wr^T + br; (sel, w) = router; out = hmid + moe(mn)
// Then hn = rmsnorm(x_L) and the chunked cross-entropy against lm_head (loss.c).
//
// Memory (one arena, sized in model_ws_init): resid (L+1, T, D) keeps every layer's input (and the
// last output); the per-layer activations are kept for all L layers without checkpointing, or for one
// layer with it, in which case the backward recomputes each layer from its input first. The same code
// runs in both cases, and every op is deterministic, so the gradients are bitwise identical.
#include <math.h>
#include <stdlib.h>

#include "model/cpu/ops.h"

typedef struct layer_acts {
    float *a, *rstd1;         // (T, D), (T) attention-norm output
    float *q, *k, *v;         // (T, H*HD), (T, KVH*HD) x2; q and k after RoPE
    float *zq, *zk, *zv, *zo; // (T, R) LoRA A x
    float *att;               // (T, H*HD) attention output = o_proj input
    float *amax, *aden;       // (T, H) softmax max and denominator
    float *hmid;              // (T, D) residual after attention
    float *mn, *rstd2;        // (T, D), (T) MLP-norm output
    int32_t *sel;             // (T, K) chosen experts
    float *rw;                // (T, K) routing weights
    cpu_moe_acts moe;
} layer_acts;

struct model_ws {
    int max_T, R, checkpointing, n_sets, L;
    layer_acts *acts;      // [n_sets]
    float *resid;          // (L+1, T, D)
    float *hn, *rstd_f;    // (T, D), (T) final norm
    double *lse;           // (T)
    float *tok_loss;       // (T)
    float *cos_t, *sin_t;  // (T, HD/2)
    float *rlogits;        // (T, E) router logits (its gradient in backward)
    float *dh, *dtmp;      // (T, D) residual gradient, a normed input's gradient
    float *datt;           // (T, H*HD)
    float *dq, *dk, *dv;   // (T, H*HD), (T, KVH*HD) x2
    float *dz;             // (T, R)
    float *drw;            // (T, K)
    cpu_moe_scratch ms;
    void *arena;
    size_t bytes;
};

static void ws_layout(model_ws *w, const model_config *c, cpu_arena *a) {
    size_t T = w->max_T, D = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t H = c->n_heads, E = c->n_experts, K = c->top_k, I = c->intermediate, R = w->R, S = T * K;
    for (int i = 0; i < w->n_sets; i++) {
        layer_acts *x = &w->acts[i];
        x->a = cpu_take_f(a, T * D), x->rstd1 = cpu_take_f(a, T);
        x->q = cpu_take_f(a, T * Q), x->k = cpu_take_f(a, T * KV), x->v = cpu_take_f(a, T * KV);
        x->zq = cpu_take_f(a, T * R), x->zk = cpu_take_f(a, T * R);
        x->zv = cpu_take_f(a, T * R), x->zo = cpu_take_f(a, T * R);
        x->att = cpu_take_f(a, T * Q), x->amax = cpu_take_f(a, T * H), x->aden = cpu_take_f(a, T * H);
        x->hmid = cpu_take_f(a, T * D), x->mn = cpu_take_f(a, T * D), x->rstd2 = cpu_take_f(a, T);
        x->sel = cpu_take_i(a, S), x->rw = cpu_take_f(a, S);
        cpu_moe_acts_take(&x->moe, a, S, E, I, R, D);
    }
    w->resid = cpu_take_f(a, (size_t)(w->L + 1) * T * D);
    w->hn = cpu_take_f(a, T * D), w->rstd_f = cpu_take_f(a, T);
    w->lse = (double *)cpu_arena_take(a, T, sizeof(double));
    w->tok_loss = cpu_take_f(a, T);
    w->cos_t = cpu_take_f(a, T * (c->head_dim / 2)), w->sin_t = cpu_take_f(a, T * (c->head_dim / 2));
    w->rlogits = cpu_take_f(a, T * E);
    w->dh = cpu_take_f(a, T * D), w->dtmp = cpu_take_f(a, T * D), w->datt = cpu_take_f(a, T * Q);
    w->dq = cpu_take_f(a, T * Q), w->dk = cpu_take_f(a, T * KV), w->dv = cpu_take_f(a, T * KV);
    w->dz = cpu_take_f(a, T * R), w->drw = cpu_take_f(a, S);
    cpu_moe_scratch *s = &w->ms;
    s->xs = cpu_take_f(a, T * D), s->gu = cpu_take_f(a, T * 2 * I), s->dy = cpu_take_f(a, T * D);
    s->dact = cpu_take_f(a, T * I), s->dgate = cpu_take_f(a, T * I), s->dup = cpu_take_f(a, T * I);
    s->dz = cpu_take_f(a, T * R), s->dxs = cpu_take_f(a, S * D);
    s->wbuf = cpu_take_f(a, (size_t)2 * I * D > D * I ? (size_t)2 * I * D : D * I);
}

gt_status model_ws_init(model_ws **out, const model *m, int lora_rank, int max_T, int checkpointing,
                        gt_error *err) {
    const model_config *c = &m->cfg;
    *out = NULL;
    if (max_T < 1) return gt_fail(err, GT_EINVAL, "workspace: max tokens %d must be at least 1", max_T);
    if (lora_rank < 0) return gt_fail(err, GT_EINVAL, "workspace: LoRA rank %d must not be negative", lora_rank);
    model_ws *w = xcalloc(1, sizeof(*w));
    w->max_T = max_T, w->R = lora_rank, w->checkpointing = checkpointing ? 1 : 0, w->L = c->n_layers;
    w->n_sets = checkpointing ? 1 : c->n_layers;
    w->acts = xcalloc((size_t)w->n_sets, sizeof(layer_acts));
    cpu_arena a = {NULL, 0};
    ws_layout(w, c, &a);
    w->bytes = a.used;
    a.base = malloc(a.used);
    if (!a.base) {
        size_t need = a.used;
        model_ws_free(w);
        return gt_fail(err, GT_ENOMEM,
                       "workspace: %.1f MiB for %d tokens%s did not fit in memory; use fewer tokens per batch%s",
                       need / 1048576.0, max_T, checkpointing ? "" : " without checkpointing",
                       checkpointing ? "" : " or turn gradient checkpointing on");
    }
    w->arena = a.base;
    a.used = 0;
    ws_layout(w, c, &a);
    *out = w;
    return GT_OK;
}

size_t model_ws_bytes(const model_ws *ws) { return ws->bytes; }

void model_ws_free(model_ws *ws) {
    if (!ws) return;
    free(ws->arena);
    free(ws->acts);
    free(ws);
}

// ---------------------------------------------------------------------------------------------------
// Batches

gt_status model_batch_targets(const int32_t *labels, const int32_t *doc, int T, int vocab, int32_t *targets,
                              gt_error *err) {
    for (int t = 0; t < T; t++) {
        if (labels[t] != -100 && (labels[t] < 0 || labels[t] >= vocab))
            return gt_fail(err, GT_EINVAL,
                           "labels[%d] = %d is neither -100 (ignored) nor a token id in [0, %d): the labels were "
                           "made for another vocabulary",
                           t, labels[t], vocab);
    }
    for (int t = 0; t < T; t++)
        targets[t] = t + 1 < T && doc[t + 1] == doc[t] && labels[t + 1] != -100 ? labels[t + 1] : -1;
    return GT_OK;
}

void model_batch_positions(const int32_t *doc, int T, int32_t *pos) {
    for (int t = 0; t < T; t++) pos[t] = t > 0 && doc[t] == doc[t - 1] ? pos[t - 1] + 1 : 0;
}

gt_status model_batch_check(const model_batch *b, int vocab, int max_T, const model_lora *lora, int ws_rank,
                            const char *workspace, int64_t *n_targets, gt_error *err) {
    const int V = vocab;
    if (b->T < 1 || b->T > max_T)
        return gt_fail(err, GT_EINVAL, "batch of %d tokens: the %s holds 1 to %d", b->T, workspace, max_T);
    if (lora && lora->rank != ws_rank && lora->targets)
        return gt_fail(err, GT_EINVAL, "LoRA rank %d, but the %s was sized for rank %d", lora->rank, workspace,
                       ws_rank);
    int64_t n = 0;
    for (int t = 0; t < b->T; t++) {
        if (b->ids[t] < 0 || b->ids[t] >= V)
            return gt_fail(err, GT_EINVAL, "batch: ids[%d] = %d is outside the vocabulary [0, %d): the data was "
                           "tokenized for another model", t, b->ids[t], V);
        if (b->pos[t] < 0) return gt_fail(err, GT_EINVAL, "batch: pos[%d] = %d is negative", t, b->pos[t]);
        if (t > 0 && b->doc[t] < b->doc[t - 1])
            return gt_fail(err, GT_EINVAL, "batch: doc[%d] = %d after doc[%d] = %d: documents must be packed in "
                           "order (doc ids non-decreasing)", t, b->doc[t], t - 1, b->doc[t - 1]);
        if (b->targets && (b->targets[t] < -1 || b->targets[t] >= V))
            return gt_fail(err, GT_EINVAL, "batch: targets[%d] = %d is neither -1 nor a token id in [0, %d)", t,
                           b->targets[t], V);
        n += b->targets && b->targets[t] >= 0;
    }
    if (n_targets) *n_targets = n;
    return GT_OK;
}

static gt_status batch_check(const model_ws *ws, const model *m, const model_lora *lora, const model_batch *b,
                             gt_error *err) {
    return model_batch_check(b, m->cfg.vocab, ws->max_T, lora, ws->R, "workspace (model_ws_init's max_T)", NULL,
                             err);
}

// ---------------------------------------------------------------------------------------------------
// One layer

static cpu_attn_dims layer_attn_dims(const model_config *c, int l, int T) {
    cpu_attn_dims d = {T, c->n_heads, c->n_kv_heads, c->head_dim, c->layer_sliding[l] ? c->sliding_window : 0};
    return d;
}

// The three q/k/v projections (and o) share this: y = x W^T + b (+ LoRA through the funnel).
static void proj_forward(float *y, float *z, const float *x, const float *W, const float *bias, const lora_pair *p,
                         const model_lora *lora, int T, int in, int out) {
    cpu_matmul(y, x, W, bias, T, out, in, 0);
    if (p) cpu_lora_forward(y, z, x, p, T, in, out, lora->rank, lora->scale);
}

// dx (T, in) (= or +=) dy W, plus the LoRA path; LoRA dA/dB +=.
static void proj_backward(float *dx, int accumulate, float *dz, const float *dy, const float *x, const float *z,
                          const float *W, const lora_pair *p, const model_lora *lora, int T, int in, int out) {
    cpu_matmul_dx(dx, dy, W, T, out, in, accumulate);
    if (p) cpu_lora_backward(dx, dz, dy, x, z, p, T, in, out, lora->rank, lora->scale);
}

static void layer_forward(model_ws *ws, const model *m, const model_lora *lora, int l, const model_batch *b,
                          layer_acts *A, const float *x, float *out) {
    const model_config *c = &m->cfg;
    const model_layer *W = &m->layers[l];
    const int T = b->T, D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    cpu_rmsnorm_forward(A->a, A->rstd1, x, W->attn_norm, T, D, c->rms_eps);
    proj_forward(A->q, A->zq, A->a, W->wq, W->bq, cpu_lora_pick(lora, l, LT_Q, 0), lora, T, D, Q);
    proj_forward(A->k, A->zk, A->a, W->wk, W->bk, cpu_lora_pick(lora, l, LT_K, 0), lora, T, D, KV);
    proj_forward(A->v, A->zv, A->a, W->wv, W->bv, cpu_lora_pick(lora, l, LT_V, 0), lora, T, D, KV);
    cpu_rope_forward(A->q, ws->cos_t, ws->sin_t, T, c->n_heads, c->head_dim);
    cpu_rope_forward(A->k, ws->cos_t, ws->sin_t, T, c->n_kv_heads, c->head_dim);
    cpu_attention_forward(A->att, A->amax, A->aden, A->q, A->k, A->v, W->sinks, b->doc, layer_attn_dims(c, l, T));
    // hmid = x + o_proj(att): the projection first, then the residual (HF's order of additions).
    proj_forward(A->hmid, A->zo, A->att, W->wo, W->bo, cpu_lora_pick(lora, l, LT_O, 0), lora, T, Q, D);
    for (size_t i = 0; i < (size_t)T * D; i++) A->hmid[i] = x[i] + A->hmid[i];
    cpu_rmsnorm_forward(A->mn, A->rstd2, A->hmid, W->mlp_norm, T, D, c->rms_eps);
    cpu_matmul(ws->rlogits, A->mn, W->router_w, W->router_b, T, c->n_experts, D, 0);
    cpu_router_forward(A->sel, A->rw, ws->rlogits, T, c->n_experts, c->top_k);
    cpu_moe_forward(out, A->hmid, A->mn, A->sel, A->rw, m, lora, l, T, &A->moe, &ws->ms);
}

// dh (T, D): in, the gradient of the layer output; out, the gradient of its input x.
static void layer_backward(model_ws *ws, const model *m, const model_lora *lora, int l, const model_batch *b,
                           const layer_acts *A, const float *x, float *dh) {
    const model_config *c = &m->cfg;
    const model_layer *W = &m->layers[l];
    const int T = b->T, D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    // MLP: out = hmid + moe(mn); mn = rmsnorm(hmid).
    cpu_moe_backward(ws->dtmp, ws->drw, dh, A->mn, A->rw, m, lora, l, T, &A->moe, &ws->ms);
    cpu_router_backward(ws->rlogits, ws->drw, A->rw, A->sel, T, c->n_experts, c->top_k);
    cpu_matmul_dx(ws->dtmp, ws->rlogits, W->router_w, T, c->n_experts, D, 1);
    cpu_rmsnorm_backward(dh, ws->dtmp, A->hmid, W->mlp_norm, A->rstd2, T, D); // dh is now d hmid
    // Attention: hmid = x + o_proj(att).
    proj_backward(ws->datt, 0, ws->dz, dh, A->att, A->zo, W->wo, cpu_lora_pick(lora, l, LT_O, 0), lora, T, Q, D);
    cpu_attention_backward(ws->dq, ws->dk, ws->dv, ws->datt, A->att, A->q, A->k, A->v, W->sinks, b->doc, A->amax,
                           A->aden, layer_attn_dims(c, l, T));
    cpu_rope_backward(ws->dq, ws->cos_t, ws->sin_t, T, c->n_heads, c->head_dim);
    cpu_rope_backward(ws->dk, ws->cos_t, ws->sin_t, T, c->n_kv_heads, c->head_dim);
    proj_backward(ws->dtmp, 0, ws->dz, ws->dq, A->a, A->zq, W->wq, cpu_lora_pick(lora, l, LT_Q, 0), lora, T, D, Q);
    proj_backward(ws->dtmp, 1, ws->dz, ws->dk, A->a, A->zk, W->wk, cpu_lora_pick(lora, l, LT_K, 0), lora, T, D, KV);
    proj_backward(ws->dtmp, 1, ws->dz, ws->dv, A->a, A->zv, W->wv, cpu_lora_pick(lora, l, LT_V, 0), lora, T, D, KV);
    cpu_rmsnorm_backward(dh, ws->dtmp, x, W->attn_norm, A->rstd1, T, D); // dh is now d x
}

// ---------------------------------------------------------------------------------------------------
// Whole model

static float *resid_at(model_ws *ws, int l, int T, int D) { return ws->resid + (size_t)l * T * D; }
static layer_acts *acts_at(model_ws *ws, int l) { return &ws->acts[ws->checkpointing ? 0 : l]; }

// Embedding, every layer, final norm: ws->hn holds the normed last hidden state.
static void model_run(model_ws *ws, const model *m, const model_lora *lora, const model_batch *b) {
    const model_config *c = &m->cfg;
    const int T = b->T, D = c->hidden;
    cpu_rope_tables(c, b->pos, T, ws->cos_t, ws->sin_t);
    float *h0 = resid_at(ws, 0, T, D);
    for (int t = 0; t < T; t++) memcpy(h0 + (size_t)t * D, m->embed + (size_t)b->ids[t] * D, D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        layer_forward(ws, m, lora, l, b, acts_at(ws, l), resid_at(ws, l, T, D), resid_at(ws, l + 1, T, D));
    cpu_rmsnorm_forward(ws->hn, ws->rstd_f, resid_at(ws, c->n_layers, T, D), m->norm, T, D, c->rms_eps);
}

static void loss_sums(const model_ws *ws, const model_batch *b, double *loss_sum, int64_t *n_targets,
                      float *token_loss) {
    double s = 0.0;
    int64_t n = 0;
    for (int t = 0; t < b->T; t++) {
        if (b->targets[t] < 0) continue;
        s += ws->tok_loss[t];
        n++;
    }
    *loss_sum = s;
    *n_targets = n;
    if (token_loss) memcpy(token_loss, ws->tok_loss, (size_t)b->T * sizeof(float));
}

gt_status model_forward_loss(model_ws *ws, const model *m, const model_lora *lora, const model_batch *b,
                             double *loss_sum, int64_t *n_targets, float *token_loss, gt_error *err) {
    if (!b->targets) return gt_fail(err, GT_EINVAL, "model_forward_loss: the batch has no targets");
    gt_status st = batch_check(ws, m, lora, b, err);
    if (st != GT_OK) return st;
    model_run(ws, m, lora, b);
    cpu_ce_forward(ws->lse, ws->tok_loss, ws->hn, m->lm_head, b->targets, b->T, m->cfg.hidden, m->cfg.vocab);
    loss_sums(ws, b, loss_sum, n_targets, token_loss);
    return GT_OK;
}

// Every active LoRA pair needs its gradient buffers; a missing one is the caller's programming error.
static void lora_check_grads(const model *m, const model_lora *lora) {
    for (int l = 0; lora && l < m->cfg.n_layers; l++)
        for (int t = 0; t < LT_COUNT; t++)
            for (int e = 0; e < (t >= LT_GATE ? m->cfg.n_experts : 1); e++) {
                const lora_pair *p = cpu_lora_pick(lora, l, (lora_target)t, e);
                CHECK(!p || (p->dA && p->dB));
            }
}

gt_status model_forward_backward(model_ws *ws, const model *m, model_lora *lora, const model_batch *b,
                                 float grad_scale, double *loss_sum, int64_t *n_targets, gt_error *err) {
    lora_check_grads(m, lora);
    if (!b->targets) return gt_fail(err, GT_EINVAL, "model_forward_backward: the batch has no targets");
    gt_status st = batch_check(ws, m, lora, b, err);
    if (st != GT_OK) return st;
    const model_config *c = &m->cfg;
    const int T = b->T, D = c->hidden;
    model_run(ws, m, lora, b);
    cpu_ce_forward_backward(ws->lse, ws->tok_loss, ws->dtmp, ws->hn, m->lm_head, b->targets, T, D, c->vocab,
                            grad_scale);
    loss_sums(ws, b, loss_sum, n_targets, NULL);
    memset(ws->dh, 0, (size_t)T * D * sizeof(float));
    cpu_rmsnorm_backward(ws->dh, ws->dtmp, resid_at(ws, c->n_layers, T, D), m->norm, ws->rstd_f, T, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        float *x = resid_at(ws, l, T, D);
        if (ws->checkpointing) layer_forward(ws, m, lora, l, b, acts_at(ws, l), x, resid_at(ws, l + 1, T, D));
        layer_backward(ws, m, lora, l, b, acts_at(ws, l), x, ws->dh);
    }
    return GT_OK;
}

gt_status model_logits(model_ws *ws, const model *m, const model_lora *lora, const model_batch *b, float *logits,
                       gt_error *err) {
    gt_status st = batch_check(ws, m, lora, b, err);
    if (st != GT_OK) return st;
    model_run(ws, m, lora, b);
    cpu_matmul(logits, ws->hn, m->lm_head, NULL, b->T, m->cfg.vocab, m->cfg.hidden, 0);
    return GT_OK;
}
