// tests/cpu_tiny.h: small random GPT-OSS models and LoRA adapters built in memory, for the CPU
// forward/backward tests (test_ops_fd.c, test_forward.c). Header-only test support (static functions).
//
// The shape cannot hide bugs (DESIGN.md): D 24 != 2I 40, D != I, D != H*HD 32, 4 query heads over 2 KV
// heads, a sliding window shorter than the sequences, 4 experts with top-2, nonzero biases and sinks,
// YaRN with head_dim 8 so that the ramp lies inside the frequencies (low ~1.01, high ~2.18 of 0..3).
// Experts are WF_F32 qmatrix; the model owns nothing through model.owned (cpu_tiny_free frees it).
#ifndef GPTOSS_TESTS_CPU_TINY_H
#define GPTOSS_TESTS_CPU_TINY_H

#include <math.h>
#include <stdlib.h>

#include "model/model.h"

typedef struct tiny_rng {
    uint64_t s;
} tiny_rng;

static inline double tiny_uniform(tiny_rng *r) { // [0, 1), splitmix64
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static inline float *tiny_rand(tiny_rng *r, size_t n, float scale) { // uniform in [-scale, scale)
    float *p = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)((2.0 * tiny_uniform(r) - 1.0) * scale);
    return p;
}

static inline void tiny_config(model_config *c, int n_layers, int vocab) {
    memset(c, 0, sizeof *c);
    c->hidden = 24, c->n_layers = n_layers, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 8;
    c->n_experts = 4, c->top_k = 2, c->intermediate = 20, c->vocab = vocab;
    c->rms_eps = 1e-5f, c->swiglu_limit = 7.0f, c->swiglu_alpha = 1.702f, c->sliding_window = 3;
    for (int l = 0; l < n_layers; l++) c->layer_sliding[l] = l % 2 == 0;
    c->rope_theta = 150000.0, c->rope_yarn = 1, c->yarn_factor = 32.0, c->yarn_beta_fast = 32.0;
    c->yarn_beta_slow = 1.0, c->yarn_orig_max_pos = 4096, c->yarn_truncate = 0, c->max_position = 131072;
    c->attention_bias = 1, c->eos_token_id = vocab - 1, c->pad_token_id = vocab - 1;
}

// Weights uniform in [-ws, ws) for matrices (scaled by 1/sqrt(in)), norms around 1, biases and sinks
// nonzero. Expert weights are larger (xscale) so that some gate/up values reach the SwiGLU clamps.
static inline void cpu_tiny_init(model *m, const model_config *c, uint64_t seed, float xscale) {
    tiny_rng r = {seed};
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, E = c->n_experts,
              I = c->intermediate, V = c->vocab;
    float sd = 1.0f / sqrtf((float)D), sq = 1.0f / sqrtf((float)Q), si = 1.0f / sqrtf((float)I);
    m->embed = tiny_rand(&r, (size_t)V * D, 1.0f);
    m->lm_head = tiny_rand(&r, (size_t)V * D, 2.0f * sd);
    m->norm = tiny_rand(&r, D, 0.2f);
    for (int i = 0; i < D; i++) m->norm[i] += 1.0f;
    m->layers = xcalloc((size_t)c->n_layers, sizeof(model_layer));
    m->expert_format = WF_F32;
    for (int l = 0; l < c->n_layers; l++) {
        model_layer *L = &m->layers[l];
        L->attn_norm = tiny_rand(&r, D, 0.2f), L->mlp_norm = tiny_rand(&r, D, 0.2f);
        for (int i = 0; i < D; i++) L->attn_norm[i] += 1.0f, L->mlp_norm[i] += 1.0f;
        L->wq = tiny_rand(&r, (size_t)Q * D, 2.0f * sd), L->bq = tiny_rand(&r, Q, 0.2f);
        L->wk = tiny_rand(&r, (size_t)KV * D, 2.0f * sd), L->bk = tiny_rand(&r, KV, 0.2f);
        L->wv = tiny_rand(&r, (size_t)KV * D, sd), L->bv = tiny_rand(&r, KV, 0.2f);
        L->wo = tiny_rand(&r, (size_t)D * Q, sq), L->bo = tiny_rand(&r, D, 0.2f);
        L->sinks = tiny_rand(&r, c->n_heads, 1.0f);
        L->router_w = tiny_rand(&r, (size_t)E * D, 2.0f * sd), L->router_b = tiny_rand(&r, E, 0.5f);
        L->gate_up = xcalloc((size_t)E, sizeof(qmatrix));
        L->down = xcalloc((size_t)E, sizeof(qmatrix));
        for (int e = 0; e < E; e++) {
            qmatrix *gu = &L->gate_up[e], *dn = &L->down[e];
            gu->fmt = WF_F32, gu->rows = 2 * I, gu->cols = D, gu->f32 = tiny_rand(&r, (size_t)2 * I * D, xscale * sd);
            dn->fmt = WF_F32, dn->rows = D, dn->cols = I, dn->f32 = tiny_rand(&r, (size_t)D * I, si);
        }
        L->gate_up_b = tiny_rand(&r, (size_t)E * 2 * I, 0.5f);
        L->down_b = tiny_rand(&r, (size_t)E * D, 0.2f);
    }
}

static inline void cpu_tiny_free(model *m) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        model_layer *L = &m->layers[l];
        free(L->attn_norm), free(L->mlp_norm), free(L->wq), free(L->bq), free(L->wk), free(L->bk);
        free(L->wv), free(L->bv), free(L->wo), free(L->bo), free(L->sinks), free(L->router_w), free(L->router_b);
        for (int e = 0; e < m->cfg.n_experts; e++) {
            free((float *)L->gate_up[e].f32);
            free((float *)L->down[e].f32);
        }
        free(L->gate_up), free(L->down), free(L->gate_up_b), free(L->down_b);
    }
    free(m->layers), free(m->embed), free(m->lm_head), free(m->norm);
}

static inline void tiny_pair(lora_pair *p, tiny_rng *r, int R, int in, int out) {
    p->A = tiny_rand(r, (size_t)R * in, 1.0f / sqrtf((float)in));
    p->B = tiny_rand(r, (size_t)out * R, 0.3f); // nonzero, unlike PEFT's init, so dA is exercised
    p->dA = xcalloc((size_t)R * in, sizeof(float));
    p->dB = xcalloc((size_t)out * R, sizeof(float));
}

// Every target on, rank R, scale alpha/R.
static inline void cpu_tiny_lora_init(model_lora *lo, const model *m, int R, float scale, uint64_t seed) {
    const model_config *c = &m->cfg;
    const int D = c->hidden, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, E = c->n_experts,
              I = c->intermediate;
    tiny_rng r = {seed};
    lo->rank = R, lo->scale = scale, lo->targets = (1u << LT_COUNT) - 1;
    lo->layers = xcalloc((size_t)c->n_layers, sizeof(lora_layer));
    for (int l = 0; l < c->n_layers; l++) {
        lora_layer *ll = &lo->layers[l];
        tiny_pair(&ll->q, &r, R, D, Q), tiny_pair(&ll->k, &r, R, D, KV);
        tiny_pair(&ll->v, &r, R, D, KV), tiny_pair(&ll->o, &r, R, Q, D);
        ll->gate = xcalloc((size_t)E, sizeof(lora_pair));
        ll->up = xcalloc((size_t)E, sizeof(lora_pair));
        ll->down = xcalloc((size_t)E, sizeof(lora_pair));
        for (int e = 0; e < E; e++) {
            tiny_pair(&ll->gate[e], &r, R, D, I), tiny_pair(&ll->up[e], &r, R, D, I);
            tiny_pair(&ll->down[e], &r, R, I, D);
        }
    }
}

// The pairs of one layer in a fixed order: q, k, v, o, then gate[e], up[e], down[e] per expert.
static inline int cpu_tiny_pairs(model_lora *lo, const model *m, int l, lora_pair **out) {
    lora_layer *ll = &lo->layers[l];
    int n = 0;
    out[n++] = &ll->q, out[n++] = &ll->k, out[n++] = &ll->v, out[n++] = &ll->o;
    for (int e = 0; e < m->cfg.n_experts; e++) out[n++] = &ll->gate[e], out[n++] = &ll->up[e], out[n++] = &ll->down[e];
    return n;
}

static inline void cpu_tiny_lora_free(model_lora *lo, const model *m) {
    lora_pair *ps[4 + 3 * 64];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int n = cpu_tiny_pairs(lo, m, l, ps);
        for (int i = 0; i < n; i++) free(ps[i]->A), free(ps[i]->B), free(ps[i]->dA), free(ps[i]->dB);
        free(lo->layers[l].gate), free(lo->layers[l].up), free(lo->layers[l].down);
    }
    free(lo->layers);
}

// A packed batch of documents with the given lengths: random ids, positions restarting, every position
// with a next token in its document gets it as the target.
typedef struct tiny_batch {
    int32_t *ids, *pos, *doc, *targets;
    model_batch b;
} tiny_batch;

static inline void tiny_batch_init(tiny_batch *tb, const int *lens, int n_docs, int vocab, uint64_t seed) {
    tiny_rng r = {seed};
    int T = 0;
    for (int d = 0; d < n_docs; d++) T += lens[d];
    tb->ids = xmalloc(T * sizeof(int32_t)), tb->pos = xmalloc(T * sizeof(int32_t));
    tb->doc = xmalloc(T * sizeof(int32_t)), tb->targets = xmalloc(T * sizeof(int32_t));
    for (int d = 0, t = 0; d < n_docs; d++)
        for (int i = 0; i < lens[d]; i++, t++) {
            tb->ids[t] = (int32_t)(tiny_uniform(&r) * vocab);
            tb->doc[t] = d;
        }
    model_batch_positions(tb->doc, T, tb->pos);
    for (int t = 0; t < T; t++) tb->targets[t] = t + 1 < T && tb->doc[t + 1] == tb->doc[t] ? tb->ids[t + 1] : -1;
    tb->b = (model_batch){T, tb->ids, tb->pos, tb->doc, tb->targets};
}

static inline void tiny_batch_free(tiny_batch *tb) {
    free(tb->ids), free(tb->pos), free(tb->doc), free(tb->targets);
}

#endif
