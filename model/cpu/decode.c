// model/cpu/decode.c: generation with a KV cache on the CPU. T chunk tokens, D hidden, H heads, KVH kv
// heads, HD head dim, E experts, K per token, I intermediate, R LoRA rank, V vocab, C cache slots.
//
// A chunk of n new tokens at positions len .. len+n-1 runs through every layer exactly as the full
// forward (forward.c layer_forward) runs those rows: rmsnorm, q/k/v (+ the LoRA funnel), RoPE, attention,
// o_proj (+ LoRA) then the residual, rmsnorm, router, experts (cpu_moe_forward). Each of those ops
// computes a row from that row alone, in a fixed order, so the rows come out bitwise as in model_logits.
// Only attention differs in where keys live: the chunk's RoPE'd keys and values are written to the cache
// first, then each query reads keys from the cache in increasing position, with the arithmetic of
// cpu_attention_forward (scores scaled by HD^-0.5 in fp32, max starting at the sink logit, a double
// denominator including the sink, p = expf(s - max) / den accumulated over keys in order).
//
// Cache layout: layer l keeps C_l slots of (KVH, HD) keys and values; position p lives in slot p % C_l.
// Full layers: C = max_ctx (slot = position). Sliding layers: C = min(max_ctx, window + max_chunk - 1):
// a query at p sees keys p-window+1 .. p, so a chunk of max_chunk tokens needs window + max_chunk - 1
// slots and nothing it reads is overwritten by the chunk itself.
// Memory: one arena (cache + workspace for max_chunk rows) allocated at init; the forward of a chunk
// allocates only the attention score rows (one per thread, as attention.c does).
#include <math.h>
#include <stdlib.h>

#include "model/cpu/ops.h"

struct model_kv_cache {
    int max_ctx, max_chunk, R, L, len;
    int *cap;              // [L] slots of each layer
    float **k, **v;        // [L] each (cap[l], KVH*HD)
    // Workspace for one chunk of up to max_chunk rows.
    float *x, *y;          // (T, D) layer input and output (swapped per layer)
    float *a, *rstd;       // (T, D), (T) normed input
    float *q, *kn, *vn;    // (T, H*HD), (T, KVH*HD) x2
    float *z;              // (T, R) LoRA A x scratch
    float *att;            // (T, H*HD)
    float *hmid, *mn;      // (T, D)
    float *rlog;           // (T, E)
    int32_t *sel;          // (T, K)
    float *rw;             // (T, K)
    int32_t *pos;          // (T)
    float *cos_t, *sin_t;  // (T, HD/2)
    cpu_moe_acts moe;
    cpu_moe_scratch ms;
    void *arena;
    size_t bytes;
};

static void kv_layout(model_kv_cache *kv, const model_config *c, cpu_arena *a) {
    size_t T = kv->max_chunk, D = c->hidden, Q = (size_t)c->n_heads * c->head_dim;
    size_t KV = (size_t)c->n_kv_heads * c->head_dim, E = c->n_experts, K = c->top_k;
    size_t I = c->intermediate, R = kv->R, S = T * K;
    for (int l = 0; l < kv->L; l++) {
        kv->k[l] = cpu_take_f(a, (size_t)kv->cap[l] * KV);
        kv->v[l] = cpu_take_f(a, (size_t)kv->cap[l] * KV);
    }
    kv->x = cpu_take_f(a, T * D), kv->y = cpu_take_f(a, T * D);
    kv->a = cpu_take_f(a, T * D), kv->rstd = cpu_take_f(a, T);
    kv->q = cpu_take_f(a, T * Q), kv->kn = cpu_take_f(a, T * KV), kv->vn = cpu_take_f(a, T * KV);
    kv->z = cpu_take_f(a, T * R);
    kv->att = cpu_take_f(a, T * Q);
    kv->hmid = cpu_take_f(a, T * D), kv->mn = cpu_take_f(a, T * D), kv->rlog = cpu_take_f(a, T * E);
    kv->sel = cpu_take_i(a, S), kv->rw = cpu_take_f(a, S), kv->pos = cpu_take_i(a, T);
    kv->cos_t = cpu_take_f(a, T * (c->head_dim / 2)), kv->sin_t = cpu_take_f(a, T * (c->head_dim / 2));
    cpu_moe_acts_take(&kv->moe, a, S, E, I, R, D);
    cpu_moe_scratch *s = &kv->ms; // the backward's buffers stay NULL: decoding never runs it
    s->xs = cpu_take_f(a, T * D), s->gu = cpu_take_f(a, T * 2 * I);
    s->wbuf = cpu_take_f(a, 2 * I * D > D * I ? 2 * I * D : D * I);
}

gt_status model_kv_cache_init(model_kv_cache **out, const model *m, int lora_rank, int max_ctx, int max_chunk,
                              gt_error *err) {
    const model_config *c = &m->cfg;
    *out = NULL;
    if (max_ctx < 1) return gt_fail(err, GT_EINVAL, "KV cache: context %d must be at least 1 token", max_ctx);
    if (max_chunk < 1) return gt_fail(err, GT_EINVAL, "KV cache: chunk %d must be at least 1 token", max_chunk);
    if (lora_rank < 0) return gt_fail(err, GT_EINVAL, "KV cache: LoRA rank %d must not be negative", lora_rank);
    if (max_chunk > max_ctx) max_chunk = max_ctx;
    model_kv_cache *kv = xcalloc(1, sizeof *kv);
    kv->max_ctx = max_ctx, kv->max_chunk = max_chunk, kv->R = lora_rank, kv->L = c->n_layers;
    kv->cap = xcalloc((size_t)kv->L, sizeof *kv->cap);
    kv->k = xcalloc((size_t)kv->L, sizeof *kv->k);
    kv->v = xcalloc((size_t)kv->L, sizeof *kv->v);
    for (int l = 0; l < kv->L; l++) {
        long ring = (long)c->sliding_window + max_chunk - 1;
        kv->cap[l] = c->layer_sliding[l] && c->sliding_window > 0 && ring < max_ctx ? (int)ring : max_ctx;
    }
    cpu_arena a = {NULL, 0};
    kv_layout(kv, c, &a);
    kv->bytes = a.used;
    a.base = malloc(a.used);
    if (!a.base) {
        size_t need = a.used;
        model_kv_cache_free(kv);
        return gt_fail(err, GT_ENOMEM, "KV cache: %.1f MiB for a context of %d tokens did not fit in memory; use a "
                       "shorter context", need / 1048576.0, max_ctx);
    }
    kv->arena = a.base;
    a.used = 0;
    kv_layout(kv, c, &a);
    *out = kv;
    return GT_OK;
}

void model_kv_cache_free(model_kv_cache *kv) {
    if (!kv) return;
    free(kv->arena);
    free(kv->cap);
    free(kv->k);
    free(kv->v);
    free(kv);
}

void model_kv_cache_reset(model_kv_cache *kv) { kv->len = 0; }
int model_kv_cache_len(const model_kv_cache *kv) { return kv->len; }
int model_kv_cache_capacity(const model_kv_cache *kv) { return kv->max_ctx; }
size_t model_kv_cache_bytes(const model_kv_cache *kv) { return kv->bytes; }

// ---------------------------------------------------------------------------------------------------

// q (T, H, HD) of the chunk at positions pos[t] against the layer's cached keys/values -> out (T, H, HD).
static void cached_attention(float *out, const float *q, const model_kv_cache *kv, int l, const float *sinks,
                             const model_config *c, int T) {
    const int H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim, group = H / KVH, C = kv->cap[l];
    const int window = c->layer_sliding[l] ? c->sliding_window : 0;
    const float scale = (float)pow((double)HD, -0.5); // as attention.c
    const float *K = kv->k[l], *V = kv->v[l];
#pragma omp parallel
    {
        float *s = xmalloc((size_t)(window > 0 && window < kv->max_ctx ? window : kv->max_ctx) * sizeof(float));
#pragma omp for schedule(dynamic, 4) collapse(2)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                const int p = kv->pos[t], j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
                const float *qt = q + ((size_t)t * H + h) * HD;
                const int g = h / group;
                float m = sinks[h];
                for (int j = j0; j <= p; j++) {
                    float sj = cpu_dot(qt, K + ((size_t)(j % C) * KVH + g) * HD, HD) * scale;
                    s[j - j0] = sj;
                    if (sj > m) m = sj;
                }
                double den = exp((double)sinks[h] - m);
                for (int j = j0; j <= p; j++) den += exp((double)s[j - j0] - m);
                float denf = (float)den;
                float *ot = out + ((size_t)t * H + h) * HD;
                for (int i = 0; i < HD; i++) ot[i] = 0.0f;
                for (int j = j0; j <= p; j++) {
                    float pj = expf(s[j - j0] - m) / denf;
                    const float *vj = V + ((size_t)(j % C) * KVH + g) * HD;
                    for (int i = 0; i < HD; i++) ot[i] += pj * vj[i];
                }
            }
        }
        free(s);
    }
}

// y = x W^T + b (+ LoRA through the funnel), as forward.c's projections.
static void proj(float *y, float *z, const float *x, const float *W, const float *bias, const lora_pair *p,
                 const model_lora *lora, int T, int in, int out) {
    cpu_matmul(y, x, W, bias, T, out, in, 0);
    if (p) cpu_lora_forward(y, z, x, p, T, in, out, lora->rank, lora->scale);
}

// One chunk of T tokens through layer l: kv->x (T, D) in, kv->y (T, D) out.
static void layer_step(model_kv_cache *kv, const model *m, const model_lora *lora, int l, int T) {
    const model_config *c = &m->cfg;
    const model_layer *W = &m->layers[l];
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, C = kv->cap[l];
    cpu_rmsnorm_forward(kv->a, kv->rstd, kv->x, W->attn_norm, T, D, c->rms_eps);
    proj(kv->q, kv->z, kv->a, W->wq, W->bq, cpu_lora_pick(lora, l, LT_Q, 0), lora, T, D, Q);
    proj(kv->kn, kv->z, kv->a, W->wk, W->bk, cpu_lora_pick(lora, l, LT_K, 0), lora, T, D, KV);
    proj(kv->vn, kv->z, kv->a, W->wv, W->bv, cpu_lora_pick(lora, l, LT_V, 0), lora, T, D, KV);
    cpu_rope_forward(kv->q, kv->cos_t, kv->sin_t, T, c->n_heads, c->head_dim);
    cpu_rope_forward(kv->kn, kv->cos_t, kv->sin_t, T, c->n_kv_heads, c->head_dim);
    for (int t = 0; t < T; t++) {
        size_t slot = (size_t)(kv->pos[t] % C);
        memcpy(kv->k[l] + slot * KV, kv->kn + (size_t)t * KV, (size_t)KV * sizeof(float));
        memcpy(kv->v[l] + slot * KV, kv->vn + (size_t)t * KV, (size_t)KV * sizeof(float));
    }
    cached_attention(kv->att, kv->q, kv, l, W->sinks, c, T);
    proj(kv->hmid, kv->z, kv->att, W->wo, W->bo, cpu_lora_pick(lora, l, LT_O, 0), lora, T, Q, D);
    for (size_t i = 0; i < (size_t)T * D; i++) kv->hmid[i] = kv->x[i] + kv->hmid[i];
    cpu_rmsnorm_forward(kv->mn, kv->rstd, kv->hmid, W->mlp_norm, T, D, c->rms_eps);
    cpu_matmul(kv->rlog, kv->mn, W->router_w, W->router_b, T, c->n_experts, D, 0);
    cpu_router_forward(kv->sel, kv->rw, kv->rlog, T, c->n_experts, c->top_k);
    cpu_moe_forward(kv->y, kv->hmid, kv->mn, kv->sel, kv->rw, m, lora, l, T, &kv->moe, &kv->ms);
}

static void chunk_forward(model_kv_cache *kv, const model *m, const model_lora *lora, const int32_t *ids, int T,
                          float *logits) {
    const model_config *c = &m->cfg;
    const int D = c->hidden;
    for (int t = 0; t < T; t++) {
        kv->pos[t] = kv->len + t;
        memcpy(kv->x + (size_t)t * D, m->embed + (size_t)ids[t] * D, (size_t)D * sizeof(float));
    }
    cpu_rope_tables(c, kv->pos, T, kv->cos_t, kv->sin_t);
    for (int l = 0; l < c->n_layers; l++) {
        layer_step(kv, m, lora, l, T);
        float *tmp = kv->x;
        kv->x = kv->y, kv->y = tmp;
    }
    kv->len += T;
    if (!logits) return;
    // Final norm and LM head of the last row only (rmsnorm and matmul are row by row).
    const float *last = kv->x + (size_t)(T - 1) * D;
    cpu_rmsnorm_forward(kv->a, kv->rstd, last, m->norm, 1, D, c->rms_eps);
    cpu_matmul(logits, kv->a, m->lm_head, NULL, 1, c->vocab, D, 0);
}

gt_status model_prefill(model_kv_cache *kv, const model *m, const model_lora *lora, const int32_t *ids, int n,
                        float *logits, gt_error *err) {
    const model_config *c = &m->cfg;
    if (n < 1) return gt_fail(err, GT_EINVAL, "decode: no tokens to feed");
    if (m->cfg.n_layers != kv->L) return gt_fail(err, GT_EINVAL, "decode: the KV cache was made for another model");
    if (lora && lora->targets && lora->rank != kv->R)
        return gt_fail(err, GT_EINVAL, "decode: LoRA rank %d, but the KV cache was sized for rank %d", lora->rank, kv->R);
    if (n > kv->max_ctx - kv->len)
        return gt_fail(err, GT_EINVAL,
                       "context full: %d tokens in the cache + %d new > the context of %d tokens; start a new "
                       "conversation (/reset) or raise --max-context",
                       kv->len, n, kv->max_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return gt_fail(err, GT_EINVAL, "decode: token %d = %d is outside the vocabulary [0, %d): the tokenizer "
                           "does not belong to this model", i, ids[i], c->vocab);
    for (int i = 0; i < n; i += kv->max_chunk) {
        int T = n - i < kv->max_chunk ? n - i : kv->max_chunk;
        chunk_forward(kv, m, lora, ids + i, T, i + T == n ? logits : NULL);
    }
    return GT_OK;
}

gt_status model_decode_step(model_kv_cache *kv, const model *m, const model_lora *lora, int32_t id, float *logits,
                            gt_error *err) {
    return model_prefill(kv, m, lora, &id, 1, logits, err);
}

gt_status model_generate(model_kv_cache *kv, const model *m, const model_lora *lora, sampler *s,
                         const int32_t *prompt, int n_prompt, const int32_t *stop, int n_stop, int max_new,
                         model_token_fn on_token, void *user, int32_t *out, int *n_out, gt_error *err) {
    *n_out = 0;
    if (max_new < 1) return gt_fail(err, GT_EINVAL, "generate: max new tokens %d must be at least 1", max_new);
    float *logits = xmalloc((size_t)m->cfg.vocab * sizeof(float));
    gt_status st = model_prefill(kv, m, lora, prompt, n_prompt, logits, err);
    while (st == GT_OK) {
        int32_t id = sampler_sample(s, logits);
        out[(*n_out)++] = id;
        int stop_now = *n_out == max_new;
        for (int i = 0; i < n_stop; i++) stop_now |= id == stop[i];
        if (on_token && on_token(user, id)) stop_now = 1;
        if (stop_now) break;
        st = model_decode_step(kv, m, lora, id, logits, err);
    }
    free(logits);
    return st;
}
