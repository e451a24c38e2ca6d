// lora/adapter.c: the adapter's memory (two arenas cut into PEFT-sized segments), PEFT's
// initialisation with our own seeded generator, target names.
//
// Layout, per layer, in this order (each present only when its target is on):
//   q, k, v, o:  A (R, in) then B (out, R)                           segments ...lora_A, ...lora_B
//   gate/up:     A: E blocks (R, D), expert-major as PEFT's lora_A [E*R, D]; gate and up share it
//                B: E blocks (I, R) of gate, then E blocks (I, R) of up   (one segment: PEFT's lora_B)
//   down:        A: E blocks (R, I);  B: E blocks (D, R)
// grads mirrors params element for element.
#include "lora/lora.h"

#include <math.h>
#include <stdlib.h>

static const char *const TARGET_NAMES[LT_COUNT] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};

const char *lora_target_name(lora_target t) { return (unsigned)t < LT_COUNT ? TARGET_NAMES[t] : "?"; }

gt_status lora_targets_parse(const char *const *names, int n, unsigned *targets, gt_error *err) {
    unsigned m = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "all")) {
            m |= (1u << LT_COUNT) - 1;
            continue;
        }
        int found = -1;
        for (int t = 0; t < LT_COUNT; t++)
            if (!strcmp(names[i], TARGET_NAMES[t])) found = t;
        if (found < 0) {
            const char *best = TARGET_NAMES[0];
            for (int t = 1; t < LT_COUNT; t++)
                if (str_edit_distance(names[i], TARGET_NAMES[t]) < str_edit_distance(names[i], best))
                    best = TARGET_NAMES[t];
            return gt_fail(err, GT_EINVAL,
                           "unknown LoRA target '%s' (did you mean '%s'?); valid: q_proj k_proj v_proj o_proj "
                           "gate_proj up_proj down_proj, or all",
                           names[i], best);
        }
        m |= 1u << found;
    }
    if (!m) return gt_fail(err, GT_EINVAL, "no LoRA target given; valid: q_proj ... down_proj, or all");
    *targets = m;
    return GT_OK;
}

float lora_spec_scale(const lora_spec *s) {
    return (float)(s->use_rslora ? s->alpha / sqrt((double)s->rank) : s->alpha / (double)s->rank);
}

// ---------------------------------------------------------------------------------------------------
// Our generator: splitmix64, one independent stream per (seed, layer, tensor kind).
// U[-bound, bound) as torch's uniform_: 24 random bits give a float in [0, 1).
static void fill_uniform(float *x, size_t n, float bound, uint64_t seed, int layer, int kind) {
    uint64_t s = seed ^ (0x5851f42d4c957f2dull * (uint64_t)(layer * 8 + kind + 1));
    rng_splitmix64(&s);
    for (size_t i = 0; i < n; i++) {
        float u = (float)(rng_splitmix64(&s) >> 40) * (1.0f / 16777216.0f);
        x[i] = bound * (2.0f * u - 1.0f);
    }
}

// ---------------------------------------------------------------------------------------------------
// Layout: walked twice, once to count (assign 0), once to cut the arenas and set pointers (assign 1).
typedef struct layout {
    lora_adapter *la;
    int assign;
    size_t off;
    int n_segs;
    uint64_t seed;
} layout;

// Takes n floats for one tensor; returns its offset.
static size_t take(layout *c, size_t n, const char *name) {
    size_t off = c->off;
    if (c->assign) {
        lora_segment *s = &c->la->segs[c->n_segs];
        s->name = xstrdup(name);
        s->offset = off;
        s->n = n;
    }
    c->n_segs++;
    c->off += n;
    return off;
}

static void dense(layout *c, int L, lora_target t, lora_pair *p, int in, int out) {
    const lora_adapter *la = c->la;
    if (!(la->spec.targets & (1u << t))) return;
    const int R = la->spec.rank;
    char name[128];
    snprintf(name, sizeof name, "layers.%d.self_attn.%s.lora_A", L, TARGET_NAMES[t]);
    size_t a = take(c, (size_t)R * in, name);
    snprintf(name, sizeof name, "layers.%d.self_attn.%s.lora_B", L, TARGET_NAMES[t]);
    size_t b = take(c, (size_t)out * R, name);
    if (!c->assign) return;
    p->A = la->params + a, p->dA = la->grads + a;
    p->B = la->params + b, p->dB = la->grads + b;
    fill_uniform(p->A, (size_t)R * in, 1.0f / sqrtf((float)in), c->seed, L, (int)t);
}

static void experts(layout *c, int L) {
    lora_adapter *la = c->la;
    const unsigned tg = la->spec.targets;
    const int R = la->spec.rank, E = la->n_experts, D = la->d_model, I = la->d_inter;
    lora_layer *ll = c->assign ? &la->ml.layers[L] : NULL;
    lora_pair *pairs = c->assign ? la->expert_pairs + (size_t)L * 3 * E : NULL;
    char name[128];
    int g = !!(tg & (1u << LT_GATE)), u = !!(tg & (1u << LT_UP));
    if (g || u) {
        snprintf(name, sizeof name, "layers.%d.mlp.experts.gate_up_proj.lora_A", L);
        size_t a = take(c, (size_t)E * R * D, name);
        snprintf(name, sizeof name, "layers.%d.mlp.experts.gate_up_proj.lora_B", L);
        size_t b = take(c, (size_t)(g + u) * E * I * R, name);
        if (c->assign) {
            fill_uniform(la->params + a, (size_t)E * R * D, 1.0f / sqrtf((float)D), c->seed, L, LT_GATE);
            for (int half = 0; half < 2; half++) {
                if (!(half ? u : g)) continue;
                lora_pair *p = pairs + (size_t)half * E;
                size_t b0 = b + (size_t)(half && g) * E * I * R;
                for (int e = 0; e < E; e++) {
                    p[e].A = la->params + a + (size_t)e * R * D, p[e].dA = la->grads + a + (size_t)e * R * D;
                    p[e].B = la->params + b0 + (size_t)e * I * R, p[e].dB = la->grads + b0 + (size_t)e * I * R;
                }
                if (half) ll->up = p;
                else ll->gate = p;
            }
        }
    }
    if (tg & (1u << LT_DOWN)) {
        snprintf(name, sizeof name, "layers.%d.mlp.experts.down_proj.lora_A", L);
        size_t a = take(c, (size_t)E * R * I, name);
        snprintf(name, sizeof name, "layers.%d.mlp.experts.down_proj.lora_B", L);
        size_t b = take(c, (size_t)E * D * R, name);
        if (c->assign) {
            fill_uniform(la->params + a, (size_t)E * R * I, 1.0f / sqrtf((float)I), c->seed, L, LT_DOWN);
            lora_pair *p = pairs + (size_t)2 * E;
            for (int e = 0; e < E; e++) {
                p[e].A = la->params + a + (size_t)e * R * I, p[e].dA = la->grads + a + (size_t)e * R * I;
                p[e].B = la->params + b + (size_t)e * D * R, p[e].dB = la->grads + b + (size_t)e * D * R;
            }
            ll->down = p;
        }
    }
}

static void walk(layout *c) {
    lora_adapter *la = c->la;
    for (int L = 0; L < la->n_layers; L++) {
        lora_layer *ll = c->assign ? &la->ml.layers[L] : NULL;
        dense(c, L, LT_Q, ll ? &ll->q : NULL, la->d_model, la->d_q);
        dense(c, L, LT_K, ll ? &ll->k : NULL, la->d_model, la->d_kv);
        dense(c, L, LT_V, ll ? &ll->v : NULL, la->d_model, la->d_kv);
        dense(c, L, LT_O, ll ? &ll->o : NULL, la->d_q, la->d_model);
        experts(c, L);
    }
}

gt_status lora_adapter_init(lora_adapter *la, const model_config *cfg, const lora_spec *spec, uint64_t seed,
                            gt_error *err) {
    memset(la, 0, sizeof *la);
    if (spec->rank < 1 || spec->rank > 65536)
        return gt_fail(err, GT_EINVAL, "LoRA rank %d is out of range (1 to 65536)", spec->rank);
    if (!(spec->alpha > 0) || !isfinite(spec->alpha))
        return gt_fail(err, GT_EINVAL, "LoRA alpha %g must be a positive number", spec->alpha);
    if (!spec->targets || (spec->targets >> LT_COUNT))
        return gt_fail(err, GT_EINVAL, "LoRA targets 0x%x: choose at least one of the seven", spec->targets);
    la->spec = *spec;
    la->n_layers = cfg->n_layers;
    la->n_experts = cfg->n_experts;
    la->d_model = cfg->hidden;
    la->d_q = cfg->n_heads * cfg->head_dim;
    la->d_kv = cfg->n_kv_heads * cfg->head_dim;
    la->d_inter = cfg->intermediate;

    layout c = {.la = la, .assign = 0, .seed = seed};
    walk(&c);
    la->n_params = c.off;
    la->n_segs = c.n_segs;
    la->params = xcalloc(la->n_params, sizeof(float));
    la->grads = xcalloc(la->n_params, sizeof(float));
    la->segs = xcalloc((size_t)la->n_segs, sizeof(lora_segment));
    la->expert_pairs = xcalloc((size_t)la->n_layers * 3 * (size_t)la->n_experts, sizeof(lora_pair));
    la->ml.layers = xcalloc((size_t)la->n_layers, sizeof(lora_layer));
    la->ml.rank = spec->rank;
    la->ml.scale = lora_spec_scale(spec);
    la->ml.targets = spec->targets;
    c = (layout){.la = la, .assign = 1, .seed = seed};
    walk(&c);
    CHECK(c.off == la->n_params && c.n_segs == la->n_segs);
    return GT_OK;
}

void lora_adapter_free(lora_adapter *la) {
    if (!la) return;
    for (int i = 0; i < la->n_segs; i++) free(la->segs[i].name);
    free(la->segs);
    free(la->params);
    free(la->grads);
    free(la->expert_pairs);
    free(la->ml.layers);
    memset(la, 0, sizeof *la);
}

void lora_adapter_grads_zero(lora_adapter *la) { memset(la->grads, 0, la->n_params * sizeof(float)); }
