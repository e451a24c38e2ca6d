// model/cuda/model.cu: the whole GPT-OSS training step on one GPU (model.h, section "CUDA"): weights on
// the device, the LoRA mirror, the workspace, forward with loss, and forward + backward with gradient
// checkpointing. The order of operations is model/cpu/forward.c's, op by op (see that file's header).
// T tokens, D hidden, H heads, KVH kv heads, HD head dim, E experts, K per token, I intermediate,
// R LoRA rank, V vocab, L layers, Q = H*HD, KV = KVH*HD.
//
// Precision: weights bf16 (experts 4-bit as loaded, decoded inside moe.cu's GEMM tiles), except the norms,
// biases, sinks and router (fp32); every activation the step keeps bf16 (the residual stream, the normed
// inputs, q/k/v after RoPE, the attention output, the experts' gate/up/act/y), each rounded once from fp32
// arithmetic; activation gradients, softmax statistics, router logits and the loss fp32 (sums of the loss in
// double); dense GEMMs bf16 x bf16 with fp32 accumulation into fp32 scratch (pf) where bias, LoRA and RoPE are
// added before the rounding; LoRA (lora.cu's funnel) and the router in fp32 arithmetic on bf16 inputs.
//
// Memory: three device arenas, each allocated once: the weights (model_cuda_init), the LoRA params and
// grads (model_cuda_lora_init) and the workspace (model_cuda_ws_init, sized from the config, R and max_T).
// The workspace keeps every layer's input (resid, (L+1, T, D)) and one layer's activations: the backward
// recomputes each layer from its input (the last one is still in place after the forward). The input
// embedding table stays in host memory (bf16, 1.1 GiB for gpt-oss-20b): it is only ever read by rows, so
// batch_upload gathers the batch's rows on the host and uploads them into the residual stream's layer 0;
// the LM head is on the device (a copy of the table when tied).
// Host synchronisation: none inside model_cuda_forward_backward; its loss sum stays on the device
// (ws->loss_sum, += per batch) until model_cuda_loss_read, the step's one wait. Batches go up asynchronously
// from pinned staging slots, one per batch queued since the last read (n_stage of them; a further batch
// waits for the device first so that no slot is overwritten while its copy may be pending), and moe.cu
// keeps the expert row counts on the device.
#include "model/cuda/common.cuh"
extern "C" {
#include "model/cpu/ops.h"
}

#include <stdlib.h>

typedef struct cuda_layer_w {
    float *attn_norm, *mlp_norm;           // (D)
    uint16_t *wq, *wk, *wv, *wo;           // (Q, D), (KV, D) x2, (D, Q)
    float *bq, *bk, *bv, *bo, *sinks;      // (Q), (KV) x2, (D), (H)
    float *router_w, *router_b;            // (E, D), (E)
    cuda_moe_weights moe;
} cuda_layer_w;

struct model_cuda {
    model_config cfg;
    cuda_arena arena;
    uint16_t *embed_host;      // (V, D) bf16 in host memory: batch_upload gathers a batch's rows from it
    uint16_t *lm_head;         // (V, D) on the device (the embedding's copy when tied)
    float *norm;               // (D)
    float *inv_freq;           // (HD/2)
    float attn_factor;
    cuda_layer_w *layers;      // [L] host array of device pointers
};

// ---------------------------------------------------------------------------------------------------
// Weights: a counting pass sizes the arena (base NULL), a second pass takes and fills.

typedef struct upload {
    cuda_arena *a;
    int fill;
} upload;

static void *up_bytes(upload *u, const void *src, size_t bytes) {
    void *d = cuda_arena_take(u->a, bytes);
    if (u->fill && src) cuda_h2d(d, src, bytes);
    return d;
}
static float *up_f32(upload *u, const float *src, size_t n) { return (float *)up_bytes(u, src, n * sizeof(float)); }

// fp32 host -> bf16 device, through a bounded host buffer.
static uint16_t *up_bf16(upload *u, const float *src, size_t n) {
    uint16_t *d = (uint16_t *)cuda_arena_take(u->a, n * sizeof(uint16_t));
    if (!u->fill) return d;
    const size_t chunk = (size_t)1 << 24;
    uint16_t *buf = (uint16_t *)xmalloc((n < chunk ? n : chunk) * sizeof(uint16_t) + 1);
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        for (size_t i = 0; i < m; i++) buf[i] = f32_to_bf16(src[i0 + i]);
        cuda_h2d(d + i0, buf, m * sizeof(uint16_t));
    }
    free(buf);
    return d;
}

// One layer's E experts of one projection, in the storage format they were loaded in (fp32 -> bf16).
static void up_experts(upload *u, cuda_experts *x, const qmatrix *q, int E) {
    const int rows = q[0].rows, cols = q[0].cols;
    const size_t n = (size_t)rows * cols;
    memset(x, 0, sizeof *x);
    x->E = E, x->rows = rows, x->cols = cols;
    switch (q[0].fmt) {
    case WF_MXFP4: {
        x->fmt = WF_MXFP4;
        uint8_t *b = (uint8_t *)cuda_arena_take(u->a, (size_t)E * n / 2);
        uint8_t *s = (uint8_t *)cuda_arena_take(u->a, (size_t)E * n / 32);
        for (int e = 0; u->fill && e < E; e++) {
            cuda_h2d(b + (size_t)e * n / 2, q[e].blocks, n / 2);
            cuda_h2d(s + (size_t)e * n / 32, q[e].scales, n / 32);
        }
        x->blocks = b, x->scales = s;
        return;
    }
    case WF_NF4: {
        x->fmt = WF_NF4;
        x->blocksize = q[0].blocksize;
        x->nf4_bytes = (n + 1) / 2, x->nf4_blocks = (n + x->blocksize - 1) / x->blocksize;
        uint8_t *b = (uint8_t *)cuda_arena_take(u->a, (size_t)E * x->nf4_bytes);
        float *am = (float *)cuda_arena_take(u->a, (size_t)E * x->nf4_blocks * sizeof(float));
        float *qm = (float *)cuda_arena_take(u->a, (size_t)E * 16 * sizeof(float));
        for (int e = 0; u->fill && e < E; e++) {
            CHECK(q[e].blocksize == x->blocksize);
            cuda_h2d(b + (size_t)e * x->nf4_bytes, q[e].blocks, x->nf4_bytes);
            cuda_h2d(am + (size_t)e * x->nf4_blocks, q[e].absmax, x->nf4_blocks * sizeof(float));
            cuda_h2d(qm + (size_t)e * 16, q[e].quant_map, 16 * sizeof(float));
        }
        x->blocks = b, x->absmax = am, x->qmap = qm;
        return;
    }
    case WF_BF16:
    case WF_F32: {
        x->fmt = WF_BF16;
        uint16_t *d = (uint16_t *)cuda_arena_take(u->a, (size_t)E * n * sizeof(uint16_t));
        if (u->fill) {
            uint16_t *buf = (uint16_t *)xmalloc(n * sizeof(uint16_t));
            for (int e = 0; e < E; e++) {
                if (q[e].fmt == WF_BF16) memcpy(buf, q[e].bf16, n * sizeof(uint16_t));
                else
                    for (size_t i = 0; i < n; i++) buf[i] = f32_to_bf16(q[e].f32[i]);
                cuda_h2d(d + (size_t)e * n, buf, n * sizeof(uint16_t));
            }
            free(buf);
        }
        x->bf16 = d;
        return;
    }
    }
    CHECK(!"unknown expert format");
}

static void model_upload(model_cuda *mc, const model *m, upload *u) {
    const model_config *c = &m->cfg;
    const size_t D = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    const size_t E = c->n_experts, I = c->intermediate, V = c->vocab;
    mc->lm_head = up_bf16(u, m->lm_head, V * D); // m->lm_head is m->embed when tied
    mc->norm = up_f32(u, m->norm, D);
    float inv[512];
    CHECK(c->head_dim / 2 <= 512);
    cpu_rope_inv_freq(c, inv, &mc->attn_factor);
    mc->inv_freq = up_f32(u, inv, c->head_dim / 2);
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &m->layers[l];
        cuda_layer_w *W = &mc->layers[l];
        W->attn_norm = up_f32(u, L->attn_norm, D), W->mlp_norm = up_f32(u, L->mlp_norm, D);
        W->wq = up_bf16(u, L->wq, Q * D), W->wk = up_bf16(u, L->wk, KV * D);
        W->wv = up_bf16(u, L->wv, KV * D), W->wo = up_bf16(u, L->wo, D * Q);
        W->bq = up_f32(u, L->bq, Q), W->bk = up_f32(u, L->bk, KV), W->bv = up_f32(u, L->bv, KV);
        W->bo = up_f32(u, L->bo, D), W->sinks = up_f32(u, L->sinks, c->n_heads);
        W->router_w = up_f32(u, L->router_w, E * D), W->router_b = up_f32(u, L->router_b, E);
        up_experts(u, &W->moe.gate_up, L->gate_up, (int)E);
        up_experts(u, &W->moe.down, L->down, (int)E);
        W->moe.gate_up_b = up_f32(u, L->gate_up_b, E * 2 * I);
        W->moe.down_b = up_f32(u, L->down_b, E * D);
    }
}

extern "C" gt_status model_cuda_init(model_cuda **out, const model *m, gt_error *err) {
    *out = NULL;
    if (cuda_device_count() == 0) return gt_fail(err, GT_EUNSUPPORTED, "device cuda: no GPU found (use device cpu)");
    if (m->cfg.head_dim > 128)
        return gt_fail(err, GT_EUNSUPPORTED, "device cuda: head_dim %d > 128 is not supported", m->cfg.head_dim);
    if (m->cfg.top_k > 16 || m->cfg.n_experts > 1024)
        return gt_fail(err, GT_EUNSUPPORTED, "device cuda: at most 1024 experts and top-16 are supported");
    cuda_gemm_init();
    model_cuda *mc = (model_cuda *)xcalloc(1, sizeof *mc);
    mc->cfg = m->cfg;
    mc->layers = (cuda_layer_w *)xcalloc((size_t)m->cfg.n_layers, sizeof(cuda_layer_w));
    upload u = {&mc->arena, 0};
    model_upload(mc, m, &u);
    gt_status st = cuda_arena_alloc(&mc->arena, "model weights", err);
    if (st != GT_OK) {
        model_cuda_free(mc);
        return st;
    }
    u.fill = 1;
    model_upload(mc, m, &u);
    const size_t ne = (size_t)m->cfg.vocab * m->cfg.hidden;
    mc->embed_host = (uint16_t *)xmalloc(ne * sizeof(uint16_t));
    for (size_t i = 0; i < ne; i++) mc->embed_host[i] = f32_to_bf16(m->embed[i]);
    cuda_sync();
    *out = mc;
    return GT_OK;
}

extern "C" void model_cuda_free(model_cuda *mc) {
    if (!mc) return;
    cuda_arena_free(&mc->arena);
    free(mc->embed_host);
    free(mc->layers);
    free(mc);
}

extern "C" size_t model_cuda_weight_bytes(const model_cuda *mc) { return mc->arena.size; }

// ---------------------------------------------------------------------------------------------------
// LoRA mirror

struct model_cuda_lora {
    model_lora ml;           // host struct, pairs hold device pointers
    float *params, *grads;   // (n) device arenas, the host arenas' layout
    size_t n;
    lora_pair *experts;      // [L * 3 * E] storage of ml.layers[l].gate/up/down
    lora_pair *d_experts;    // [L * 3 * E] the same on the device, for moe.cu's kernels
};

static float *dev_of(const float *p, const float *hp, const float *hg, size_t n, float *dp, float *dg) {
    if (!p) return NULL;
    if (p >= hp && p < hp + n) return dp + (p - hp);
    CHECK(p >= hg && p < hg + n); // every LoRA tensor must live in the arenas passed in
    return dg + (p - hg);
}

static lora_pair pair_dev(const lora_pair *p, const float *hp, const float *hg, size_t n, float *dp, float *dg) {
    lora_pair d;
    d.A = dev_of(p->A, hp, hg, n, dp, dg), d.B = dev_of(p->B, hp, hg, n, dp, dg);
    d.dA = dev_of(p->dA, hp, hg, n, dp, dg), d.dB = dev_of(p->dB, hp, hg, n, dp, dg);
    return d;
}

extern "C" gt_status model_cuda_lora_init(model_cuda_lora **out, const model_cuda *mc, const model_lora *ml,
                                          const float *params, const float *grads, size_t n, gt_error *err) {
    const int L = mc->cfg.n_layers, E = mc->cfg.n_experts;
    model_cuda_lora *l = (model_cuda_lora *)xcalloc(1, sizeof *l);
    l->n = n;
    void *pp = NULL, *pg = NULL;
    if (cudaMalloc(&pp, n * sizeof(float) + 1) != cudaSuccess || cudaMalloc(&pg, n * sizeof(float) + 1) != cudaSuccess) {
        cudaGetLastError();
        if (pp) cudaFree(pp);
        free(l);
        return gt_fail(err, GT_ENOMEM, "LoRA on the GPU: %.2f GiB for parameters and gradients did not fit",
                       2.0 * n * sizeof(float) / 1073741824.0);
    }
    l->params = (float *)pp, l->grads = (float *)pg;
    cuda_h2d(l->params, params, n * sizeof(float));
    cuda_h2d(l->grads, grads, n * sizeof(float));
    l->ml = *ml;
    l->ml.layers = (lora_layer *)xcalloc((size_t)L, sizeof(lora_layer));
    l->experts = (lora_pair *)xcalloc((size_t)L * 3 * E, sizeof(lora_pair));
    for (int i = 0; i < L; i++) {
        const lora_layer *h = &ml->layers[i];
        lora_layer *d = &l->ml.layers[i];
        d->q = pair_dev(&h->q, params, grads, n, l->params, l->grads);
        d->k = pair_dev(&h->k, params, grads, n, l->params, l->grads);
        d->v = pair_dev(&h->v, params, grads, n, l->params, l->grads);
        d->o = pair_dev(&h->o, params, grads, n, l->params, l->grads);
        lora_pair **dst[3] = {&d->gate, &d->up, &d->down};
        const lora_pair *src[3] = {h->gate, h->up, h->down};
        for (int t = 0; t < 3; t++) {
            if (!src[t]) continue;
            lora_pair *arr = l->experts + ((size_t)i * 3 + t) * E;
            for (int e = 0; e < E; e++) arr[e] = pair_dev(&src[t][e], params, grads, n, l->params, l->grads);
            *dst[t] = arr;
        }
    }
    l->d_experts = (lora_pair *)cuda_malloc((size_t)L * 3 * E * sizeof(lora_pair));
    cuda_h2d(l->d_experts, l->experts, (size_t)L * 3 * E * sizeof(lora_pair));
    *out = l;
    return GT_OK;
}

extern "C" void model_cuda_lora_free(model_cuda_lora *l) {
    if (!l) return;
    cuda_free(l->d_experts);
    cuda_free(l->params);
    cuda_free(l->grads);
    free(l->ml.layers);
    free(l->experts);
    free(l);
}
extern "C" float *model_cuda_lora_params(model_cuda_lora *l) { return l->params; }
extern "C" float *model_cuda_lora_grads(model_cuda_lora *l) { return l->grads; }
extern "C" void model_cuda_lora_upload(model_cuda_lora *l, const float *params) {
    cuda_h2d(l->params, params, l->n * sizeof(float));
}
extern "C" void model_cuda_lora_download(const model_cuda_lora *l, float *params, float *grads) {
    if (params) cuda_d2h(params, l->params, l->n * sizeof(float));
    if (grads) cuda_d2h(grads, l->grads, l->n * sizeof(float));
}
extern "C" void model_cuda_lora_grads_zero(model_cuda_lora *l) { cuda_memset(l->grads, 0, l->n * sizeof(float)); }

// ---------------------------------------------------------------------------------------------------
// Workspace

struct model_cuda_ws {
    int max_T, R, L, n_stage, staged;
    cuda_arena arena;
    int32_t *pos, *doc, *targets, *doc_lo, *doc_hi; // (T)
    int32_t *stage;           // pinned host (n_stage, 3, max_T): pos, doc, targets on their way up
    uint16_t *emb_stage;      // pinned host (n_stage, max_T, D): the batch's embedding rows on their way up
    float *cos_t, *sin_t;     // (T, HD/2)
    uint16_t *resid;          // (L+1, T, D) bf16: every layer's input, and the last output
    // one layer's activations (bf16) and statistics
    uint16_t *a;              // (T, D) attention-normed input
    float *rstd1;             // (T)
    uint16_t *q, *k, *v;      // (T, Q), (T, KV) x2, after RoPE
    float *zq, *zk, *zv, *zo; // (T, R) LoRA intermediates
    uint16_t *att;            // (T, Q)
    float *amax, *aden;       // (T, H)
    uint16_t *hmid, *mn;      // (T, D) x2: after attention, and MLP-normed
    float *rstd2;             // (T)
    int32_t *sel;             // (T, K)
    float *rw;                // (T, K)
    float *rlogits;           // (T, E), its gradient in backward
    cuda_moe_acts moe;
    cuda_moe_scratch ms;
    // fp32 scratch
    float *pf;                // (T, max(Q, D)) a projection's GEMM + bias + LoRA before rounding
    // head and loss
    uint16_t *hn;             // (T, D) final-normed
    float *rstd_f;            // (T)
    double *lse;              // (T)
    float *tok_loss;          // (T)
    double *loss_sum;         // (2): [0] the batches' sum since the last model_cuda_loss_read, [1] forward_loss's
    cuda_ce_scratch ce;
    // gradients
    float *dh, *dtmp;         // (T, D)
    float *datt, *dq, *dk, *dv; // (T, Q) x2, (T, KV) x2
    float *dz;                // (T, R)
    float *drw;               // (T, K)
    float *Dt;                // (T, H)
    uint16_t *g_bf;           // (T, max(D, Q)) an output gradient as bf16 for a GEMM
};

#define TAKE(a, type, n) ((type *)cuda_arena_take((a), (size_t)(n) * sizeof(type)))

static void ws_layout(model_cuda_ws *w, const model_config *c) {
    cuda_arena *a = &w->arena;
    const size_t T = w->max_T, D = c->hidden, Q = (size_t)c->n_heads * c->head_dim;
    const size_t KV = (size_t)c->n_kv_heads * c->head_dim, H = c->n_heads, E = c->n_experts, K = c->top_k;
    const size_t I = c->intermediate, R = w->R ? w->R : 1, S = T * K, HF = c->head_dim / 2;
    w->pos = TAKE(a, int32_t, T), w->doc = TAKE(a, int32_t, T);
    w->targets = TAKE(a, int32_t, T), w->doc_lo = TAKE(a, int32_t, T), w->doc_hi = TAKE(a, int32_t, T);
    w->cos_t = TAKE(a, float, T * HF), w->sin_t = TAKE(a, float, T * HF);
    const size_t QD = Q > D ? Q : D;
    w->resid = TAKE(a, uint16_t, (size_t)(w->L + 1) * T * D);
    w->a = TAKE(a, uint16_t, T * D), w->rstd1 = TAKE(a, float, T);
    w->q = TAKE(a, uint16_t, T * Q), w->k = TAKE(a, uint16_t, T * KV), w->v = TAKE(a, uint16_t, T * KV);
    w->zq = TAKE(a, float, T * R), w->zk = TAKE(a, float, T * R), w->zv = TAKE(a, float, T * R);
    w->zo = TAKE(a, float, T * R);
    w->att = TAKE(a, uint16_t, T * Q);
    w->amax = TAKE(a, float, T * H), w->aden = TAKE(a, float, T * H);
    w->hmid = TAKE(a, uint16_t, T * D), w->mn = TAKE(a, uint16_t, T * D), w->rstd2 = TAKE(a, float, T);
    w->pf = TAKE(a, float, T * QD);
    w->sel = TAKE(a, int32_t, S), w->rw = TAKE(a, float, S), w->rlogits = TAKE(a, float, T * E);
    cuda_moe_acts *m = &w->moe;
    m->off = TAKE(a, int32_t, E + 1), m->tok = TAKE(a, int32_t, S), m->kof = TAKE(a, int32_t, S);
    m->tiles = TAKE(a, int32_t, 2 * (size_t)cuda_moe_max_tiles((int)S, (int)E));
    m->slot = TAKE(a, int32_t, S);
    m->gate = TAKE(a, uint16_t, S * I), m->up = TAKE(a, uint16_t, S * I), m->act = TAKE(a, uint16_t, S * I);
    m->zg = TAKE(a, float, S * R), m->zu = TAKE(a, float, S * R), m->zd = TAKE(a, float, S * R);
    m->y = TAKE(a, uint16_t, S * D);
    cuda_moe_scratch *s = &w->ms;
    s->dact = TAKE(a, float, S * I), s->dup = TAKE(a, float, S * I), s->dz = TAKE(a, float, S * R);
    s->dxs = TAKE(a, float, S * D);
    w->hn = TAKE(a, uint16_t, T * D), w->rstd_f = TAKE(a, float, T);
    w->lse = TAKE(a, double, T), w->tok_loss = TAKE(a, float, T), w->loss_sum = TAKE(a, double, 2);
    w->ce.logits = TAKE(a, float, T * CUDA_CE_CHUNK), w->ce.dl = TAKE(a, uint16_t, T * CUDA_CE_CHUNK);
    w->ce.mx = TAKE(a, float, T), w->ce.tl = TAKE(a, float, T), w->ce.sum = TAKE(a, double, T);
    w->dh = TAKE(a, float, T * D), w->dtmp = TAKE(a, float, T * D);
    w->datt = TAKE(a, float, T * Q), w->dq = TAKE(a, float, T * Q);
    w->dk = TAKE(a, float, T * KV), w->dv = TAKE(a, float, T * KV);
    w->dz = TAKE(a, float, T * R), w->drw = TAKE(a, float, S), w->Dt = TAKE(a, float, T * H);
    w->g_bf = TAKE(a, uint16_t, T * (D > Q ? D : Q));
}

extern "C" gt_status model_cuda_ws_init(model_cuda_ws **out, const model_cuda *mc, int lora_rank, int max_T,
                                        int n_stage, gt_error *err) {
    *out = NULL;
    if (max_T < 1) return gt_fail(err, GT_EINVAL, "GPU workspace: max tokens %d must be at least 1", max_T);
    if (n_stage < 1) return gt_fail(err, GT_EINVAL, "GPU workspace: %d batches per loss read must be at least 1", n_stage);
    if (lora_rank < 0) return gt_fail(err, GT_EINVAL, "GPU workspace: LoRA rank %d must not be negative", lora_rank);
    model_cuda_ws *w = (model_cuda_ws *)xcalloc(1, sizeof *w);
    w->max_T = max_T, w->R = lora_rank, w->L = mc->cfg.n_layers, w->n_stage = n_stage;
    ws_layout(w, &mc->cfg);
    gt_status st = cuda_arena_alloc(&w->arena, "GPU workspace", err);
    if (st != GT_OK) {
        free(w);
        return st;
    }
    ws_layout(w, &mc->cfg);
    cuda_memset(w->loss_sum, 0, 2 * sizeof(double));
    w->stage = (int32_t *)cuda_host_alloc((size_t)n_stage * 3 * max_T * sizeof(int32_t));
    w->emb_stage = (uint16_t *)cuda_host_alloc((size_t)n_stage * max_T * mc->cfg.hidden * sizeof(uint16_t));
    *out = w;
    return GT_OK;
}

extern "C" size_t model_cuda_ws_bytes(const model_cuda_ws *ws) { return ws->arena.size; }

extern "C" void model_cuda_ws_free(model_cuda_ws *ws) {
    if (!ws) return;
    cuda_arena_free(&ws->arena);
    cuda_host_free(ws->stage);
    cuda_host_free(ws->emb_stage);
    free(ws);
}

// ---------------------------------------------------------------------------------------------------
// The step

static gt_status batch_upload(model_cuda_ws *ws, const model_cuda *mc, const model_lora *lora,
                              const model_batch *b, int need_targets, int64_t *n_targets, gt_error *err) {
    if (need_targets && !b->targets) return gt_fail(err, GT_EINVAL, "the batch has no targets");
    gt_status st = model_batch_check(b, mc->cfg.vocab, ws->max_T, lora, ws->R, "GPU workspace (model_cuda_ws_init)",
                                     n_targets, err);
    if (st != GT_OK) return st;
    const size_t bytes = (size_t)b->T * sizeof(int32_t), D = (size_t)mc->cfg.hidden;
    int32_t *const dst[3] = {ws->pos, ws->doc, ws->targets};
    const int32_t *const src[3] = {b->pos, b->doc, b->targets};
    if (ws->staged == ws->n_stage) { // every slot may still be in flight: wait (see the file header)
        cuda_sync();
        ws->staged = 0;
    }
    const size_t k = (size_t)ws->staged++;
    for (int i = 0; i < 3; i++) {
        int32_t *stage = ws->stage + (k * 3 + (size_t)i) * ws->max_T;
        if (!src[i]) { // no targets: -1
            cuda_memset(dst[i], 0xff, bytes);
            continue;
        }
        memcpy(stage, src[i], bytes);
        cuda_h2d_async(dst[i], stage, bytes);
    }
    // The embedding rows (the ids were checked above) go straight into layer 0 of the residual stream.
    uint16_t *rows = ws->emb_stage + k * ws->max_T * D;
    for (int t = 0; t < b->T; t++) memcpy(rows + (size_t)t * D, mc->embed_host + (size_t)b->ids[t] * D, D * 2);
    cuda_h2d_async(ws->resid, rows, (size_t)b->T * D * sizeof(uint16_t));
    return GT_OK;
}

static cpu_attn_dims attn_dims(const model_config *c, int l, int T) {
    cpu_attn_dims d = {T, c->n_heads, c->n_kv_heads, c->head_dim, c->layer_sliding[l] ? c->sliding_window : 0};
    return d;
}

// y (T, out) fp32 = x W^T + b (+ LoRA through the funnel), x the bf16 input.
static void proj_forward(float *y, float *z, const uint16_t *x, const uint16_t *W, const float *b, const lora_pair *p,
                         const model_lora *lora, int T, int in, int out) {
    cuda_gemm(CUDA_GEMM_BF16, 0, 1, T, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    cuda_add_bias(y, b, T, out);
    if (p) cuda_lora_forward(y, z, x, p, T, in, out, lora->rank, lora->scale);
}

// dx (T, in) (= or +=) dy W (+ the LoRA path on the forward's input x; dA/dB +=).
static void proj_backward(model_cuda_ws *ws, float *dx, int accumulate, const float *dy, const uint16_t *x,
                          const float *z, const uint16_t *W, const lora_pair *p, const model_lora *lora, int T, int in,
                          int out) {
    cuda_cast_bf16(ws->g_bf, dy, (size_t)T * out);
    cuda_gemm(CUDA_GEMM_BF16, 0, 0, T, in, out, 1.0f, ws->g_bf, out, W, in, accumulate ? 1.0f : 0.0f, dx, in);
    if (p) cuda_lora_backward(dx, ws->dz, dy, x, z, p, T, in, out, lora->rank, lora->scale);
}


static uint16_t *resid_at(model_cuda_ws *ws, int l, int T, int D) { return ws->resid + (size_t)l * T * D; }

static const model_lora *lora_of(const model_cuda_lora *l) { return l ? &l->ml : NULL; }

// Layer l's expert LoRA for moe.cu (device arrays; off targets NULL).
static cuda_moe_lora moe_lora_of(const model_cuda_lora *cl, int l, int E) {
    cuda_moe_lora m;
    memset(&m, 0, sizeof m);
    if (!cl) return m;
    const lora_layer *h = &cl->ml.layers[l];
    const lora_pair *d = cl->d_experts + (size_t)l * 3 * E;
    m.gate = h->gate ? d : NULL, m.up = h->up ? d + E : NULL, m.down = h->down ? d + 2 * E : NULL;
    m.R = cl->ml.rank, m.scale = cl->ml.scale;
    return m;
}

static void layer_forward(model_cuda_ws *ws, const model_cuda *mc, const model_cuda_lora *cl, int l, int T,
                          const uint16_t *x, uint16_t *out) {
    const model_config *c = &mc->cfg;
    const model_lora *lora = lora_of(cl);
    const cuda_layer_w *W = &mc->layers[l];
    const int D = c->hidden, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, E = c->n_experts;
    const int Q = H * HD, KV = KVH * HD;
    cuda_rmsnorm_forward(ws->a, ws->rstd1, x, W->attn_norm, T, D, c->rms_eps);
    proj_forward(ws->pf, ws->zq, ws->a, W->wq, W->bq, cpu_lora_pick(lora, l, LT_Q, 0), lora, T, D, Q);
    cuda_rope_forward(ws->q, ws->pf, ws->cos_t, ws->sin_t, T, H, HD);
    proj_forward(ws->pf, ws->zk, ws->a, W->wk, W->bk, cpu_lora_pick(lora, l, LT_K, 0), lora, T, D, KV);
    cuda_rope_forward(ws->k, ws->pf, ws->cos_t, ws->sin_t, T, KVH, HD);
    proj_forward(ws->pf, ws->zv, ws->a, W->wv, W->bv, cpu_lora_pick(lora, l, LT_V, 0), lora, T, D, KV);
    cuda_cast_bf16(ws->v, ws->pf, (size_t)T * KV);
    cuda_attention_forward(ws->att, ws->amax, ws->aden, ws->q, ws->k, ws->v, W->sinks, ws->doc_lo, attn_dims(c, l, T));
    proj_forward(ws->pf, ws->zo, ws->att, W->wo, W->bo, cpu_lora_pick(lora, l, LT_O, 0), lora, T, Q, D);
    cuda_residual(ws->hmid, x, ws->pf, (size_t)T * D);
    cuda_rmsnorm_forward(ws->mn, ws->rstd2, ws->hmid, W->mlp_norm, T, D, c->rms_eps);
    cuda_narrow_xwt(ws->rlogits, ws->mn, W->router_w, T, D, E); // the router stays fp32 (as the CPU's)
    cuda_add_bias(ws->rlogits, W->router_b, T, E);
    cuda_router_forward(ws->sel, ws->rw, ws->rlogits, T, E, c->top_k);
    const cuda_moe_lora ml = moe_lora_of(cl, l, E);
    cuda_moe_forward(out, ws->hmid, ws->mn, ws->sel, ws->rw, &W->moe, c, &ml, T, &ws->moe, &ws->ms);
}

// dh (T, D): in, the gradient of the layer output; out, the gradient of its input x.
static void layer_backward(model_cuda_ws *ws, const model_cuda *mc, const model_cuda_lora *cl, int l, int T,
                           const uint16_t *x) {
    const model_config *c = &mc->cfg;
    const model_lora *lora = lora_of(cl);
    const cuda_layer_w *W = &mc->layers[l];
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, E = c->n_experts;
    const cuda_moe_lora ml = moe_lora_of(cl, l, E);
    cuda_moe_backward(ws->dtmp, ws->drw, ws->dh, ws->mn, ws->rw, &W->moe, c, &ml, T, &ws->moe, &ws->ms);
    cuda_router_backward(ws->rlogits, ws->drw, ws->rw, ws->sel, T, E, c->top_k);
    cuda_gemm(CUDA_GEMM_F32, 0, 0, T, D, E, 1.0f, ws->rlogits, E, W->router_w, D, 1.0f, ws->dtmp, D);
    cuda_rmsnorm_backward(ws->dh, ws->dtmp, ws->hmid, W->mlp_norm, ws->rstd2, T, D); // dh is now d hmid
    proj_backward(ws, ws->datt, 0, ws->dh, ws->att, ws->zo, W->wo, cpu_lora_pick(lora, l, LT_O, 0), lora, T, Q, D);
    cuda_attention_backward(ws->dq, ws->dk, ws->dv, ws->Dt, ws->datt, ws->att, ws->q, ws->k, ws->v, ws->doc_lo,
                            ws->doc_hi, ws->amax, ws->aden, attn_dims(c, l, T));
    cuda_rope_backward(ws->dq, ws->cos_t, ws->sin_t, T, c->n_heads, c->head_dim);
    cuda_rope_backward(ws->dk, ws->cos_t, ws->sin_t, T, c->n_kv_heads, c->head_dim);
    proj_backward(ws, ws->dtmp, 0, ws->dq, ws->a, ws->zq, W->wq, cpu_lora_pick(lora, l, LT_Q, 0), lora, T, D, Q);
    proj_backward(ws, ws->dtmp, 1, ws->dk, ws->a, ws->zk, W->wk, cpu_lora_pick(lora, l, LT_K, 0), lora, T, D, KV);
    proj_backward(ws, ws->dtmp, 1, ws->dv, ws->a, ws->zv, W->wv, cpu_lora_pick(lora, l, LT_V, 0), lora, T, D, KV);
    cuda_rmsnorm_backward(ws->dh, ws->dtmp, x, W->attn_norm, ws->rstd1, T, D); // dh is now d x
}

// Embedding, every layer, final norm and the loss: ws->tok_loss, ws->lse, and *sum (a device double) += the
// batch's loss sum. Queues only.
static void model_run_loss(model_cuda_ws *ws, const model_cuda *mc, const model_cuda_lora *lora, int T, double *sum) {
    const model_config *c = &mc->cfg;
    const int D = c->hidden;
    cuda_doc_bounds(ws->doc_lo, ws->doc_hi, ws->doc, T);
    cuda_rope_tables(ws->cos_t, ws->sin_t, ws->pos, mc->inv_freq, mc->attn_factor, T, c->head_dim / 2);
    for (int l = 0; l < c->n_layers; l++) layer_forward(ws, mc, lora, l, T, resid_at(ws, l, T, D), resid_at(ws, l + 1, T, D));
    cuda_rmsnorm_forward(ws->hn, ws->rstd_f, resid_at(ws, c->n_layers, T, D), mc->norm, T, D, c->rms_eps);
    cuda_ce_forward(ws->lse, ws->tok_loss, ws->hn, mc->lm_head, ws->targets, T, D, c->vocab, &ws->ce);
    cuda_loss_sum(sum, ws->tok_loss, ws->targets, T);
}

// The host wait: reads the device double at p and zeroes it (the staging slots are free again after it).
static double loss_take(model_cuda_ws *ws, double *p) {
    double s = 0.0;
    cuda_d2h(&s, p, sizeof s);
    cuda_memset(p, 0, sizeof s);
    ws->staged = 0;
    return s;
}

extern "C" gt_status model_cuda_forward_loss(model_cuda_ws *ws, const model_cuda *mc, const model_cuda_lora *lora,
                                             const model_batch *b, double *loss_sum, int64_t *n_targets,
                                             float *token_loss, gt_error *err) {
    gt_status st = batch_upload(ws, mc, lora_of(lora), b, 1, n_targets, err);
    if (st != GT_OK) return st;
    model_run_loss(ws, mc, lora, b->T, ws->loss_sum + 1);
    *loss_sum = loss_take(ws, ws->loss_sum + 1);
    if (token_loss) cuda_d2h(token_loss, ws->tok_loss, (size_t)b->T * sizeof(float));
    return GT_OK;
}

extern "C" gt_status model_cuda_forward_backward(model_cuda_ws *ws, const model_cuda *mc, model_cuda_lora *lora,
                                                 const model_batch *b, float grad_scale, int64_t *n_targets,
                                                 gt_error *err) {
    const model_lora *ml = lora_of(lora);
    gt_status st = batch_upload(ws, mc, ml, b, 1, n_targets, err);
    if (st != GT_OK) return st;
    const model_config *c = &mc->cfg;
    const int T = b->T, D = c->hidden;
    model_run_loss(ws, mc, lora, T, ws->loss_sum);
    cuda_ce_backward(ws->dtmp, ws->hn, mc->lm_head, ws->targets, ws->lse, T, D, c->vocab, grad_scale, &ws->ce);
    cuda_memset(ws->dh, 0, (size_t)T * D * sizeof(float));
    cuda_rmsnorm_backward(ws->dh, ws->dtmp, resid_at(ws, c->n_layers, T, D), mc->norm, ws->rstd_f, T, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const uint16_t *x = resid_at(ws, l, T, D);
        // The last layer's activations are still those of the forward; every other layer is recomputed.
        if (l < c->n_layers - 1) layer_forward(ws, mc, lora, l, T, x, resid_at(ws, l + 1, T, D));
        layer_backward(ws, mc, lora, l, T, x);
    }
    return GT_OK;
}

extern "C" const double *model_cuda_loss_dev(const model_cuda_ws *ws) { return ws->loss_sum; }

extern "C" double model_cuda_loss_read(model_cuda_ws *ws) { return loss_take(ws, ws->loss_sum); }
