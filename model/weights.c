// model_load: config.json + safetensors (single or sharded) -> model, in any of three layouts.
//
//   HF MXFP4 (openai/gpt-oss-20b): mlp.experts.{gate_up,down}_proj_{blocks,scales} U8, already [out, in]
//     in 32-element blocks: the qmatrix points into the mmap.
//   HF BF16 (save_pretrained, unsloth/gpt-oss-20b-BF16): mlp.experts.gate_up_proj [E, D, 2I] and
//     down_proj [E, I, D], i.e. [in, out] per expert (y = x W): transposed into [out, in] on load.
//   Unsloth bitsandbytes NF4 (unsloth/gpt-oss-20b-unsloth-bnb-4bit): per expert
//     mlp.experts.gate_up_projs.{e}.weight [2I, D] and down_projs.{e}.weight [D, I] (nn.Linear, [out, in]),
//     each NF4 (Linear4bit, NAME.absmax present) or left 16-bit; the router at mlp.router.linear.*; the
//     attention projections may be NF4 too. Checked per tensor.
//
// Every non-expert tensor becomes fp32 (dtype_to_f32, or NF4 dequantized). Experts keep their file format
// (model_quant MQ_AUTO) or are converted once here (MQ_BF16 / MQ_MXFP4 / MQ_NF4); the gate_up rows stay
// interleaved (row 2i gate_i, row 2i+1 up_i) in every layout. A missing tensor, a wrong shape or a wrong
// dtype is an error naming the tensor and its file (or the model directory when it is absent).
#include "model/model.h"

#include <stdarg.h>
#include <stdlib.h>

typedef struct loader {
    model *m;
    const char *dir;
    gt_error *err;
} loader;

typedef enum layout { LAYOUT_MXFP4, LAYOUT_BF16, LAYOUT_UNSLOTH } layout;
static const char *const LAYOUT_NAMES[] = {"HF MXFP4", "HF BF16", "Unsloth bitsandbytes (per-expert)"};

static void *own(model *m, void *p) {
    m->owned = xrealloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = p;
    return p;
}

static const char *file_of(const loader *L, const st_tensor *t) { return L->m->st.files[t->file].path; }

static int is_float_dtype(dtype dt) { return dt == DT_F32 || dt == DT_BF16 || dt == DT_F16 || dt == DT_F64; }

// The tensor `name` with exactly the given shape (ndim dims) and a float dtype.
static gt_status find_float(const loader *L, const char *name, int ndim, const int64_t *shape, const st_tensor **out) {
    const st_tensor *t = safetensors_find(&L->m->st, name);
    *out = t;
    if (!t)
        return gt_fail(L->err, GT_ENOTFOUND, "%s: tensor %s is missing (the model's config.json and safetensors disagree, "
                                             "or this is not a GPT-OSS checkpoint)", L->dir, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[128] = "", got[128] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return gt_fail(L->err, GT_EFORMAT, "%s: tensor %s has shape [%s], expected [%s] from config.json", file_of(L, t),
                       name, got, want);
    }
    if (!is_float_dtype(t->dtype))
        return gt_fail(L->err, GT_EFORMAT, "%s: tensor %s has dtype %s, expected a float type (BF16, F16, F32)",
                       file_of(L, t), name, dtype_name(t->dtype));
    return GT_OK;
}

static gt_status find_u8(const loader *L, const char *name, int ndim, const int64_t *shape, const st_tensor **out) {
    const st_tensor *t = safetensors_find(&L->m->st, name);
    *out = t;
    if (!t) return gt_fail(L->err, GT_ENOTFOUND, "%s: tensor %s is missing", L->dir, name);
    int ok = t->ndim == ndim && t->dtype == DT_U8;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok)
        return gt_fail(L->err, GT_EFORMAT, "%s: tensor %s is %s with %d dims, expected U8 [%lld, %lld, ...] from config.json",
                       file_of(L, t), name, dtype_name(t->dtype), t->ndim, (long long)shape[0], (long long)shape[1]);
    return GT_OK;
}

// A dense tensor as fp32 (owned by the model): 1-D (d1 < 0) or 2-D [d0, d1], 2-D ones possibly NF4.
static gt_status load_f32(const loader *L, const char *name, int64_t d0, int64_t d1, float **out) {
    const st_tensor *t;
    gt_status s;
    size_t n = (size_t)d0 * (size_t)(d1 < 0 ? 1 : d1);
    if (d1 >= 0 && safetensors_find(&L->m->st, name) && nf4_tensor_present(&L->m->st, name)) {
        qmatrix q;
        float *absmax;
        if ((s = nf4_tensor_load(&L->m->st, name, (int)d0, (int)d1, &q, &absmax, L->err)) != GT_OK) return s;
        *out = own(L->m, xmalloc(n * sizeof(float)));
        qmatrix_dequant_rows(&q, 0, (int)d0, *out);
        free(absmax);
        return GT_OK;
    }
    int64_t shape[2] = {d0, d1};
    if ((s = find_float(L, name, d1 < 0 ? 1 : 2, shape, &t)) != GT_OK) return s;
    *out = own(L->m, xmalloc(n * sizeof(float)));
    return dtype_to_f32(t->dtype, t->data, *out, n, L->err);
}

static gt_status load_f32_fmt(const loader *L, int64_t d0, int64_t d1, float **out, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static gt_status load_f32_fmt(const loader *L, int64_t d0, int64_t d1, float **out, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return load_f32(L, name, d0, d1, out);
}

// A projection bias: zeros when config.json says attention_bias false.
static gt_status load_bias(const loader *L, const char *name, int64_t d0, float **out) {
    if (!L->m->cfg.attention_bias) {
        *out = own(L->m, xcalloc((size_t)d0, sizeof(float)));
        return GT_OK;
    }
    return load_f32(L, name, d0, -1, out);
}

// ---------------------------------------------------------------------------------------------------
// Experts. Pass 1 (serial, may fail) finds and checks every source; pass 2 (parallel, cannot fail)
// converts them into their in-memory format.
typedef struct expert_src {
    qmatrix q;               // the file's own 4-bit matrix (fmt WF_MXFP4 / WF_NF4), or fmt WF_F32 if dense
    const st_tensor *dense;  // dense source: a float tensor
    size_t offset;           // element offset of this expert in dense
    int transposed;          // dense holds [cols, rows] (HF BF16 layout)
    wformat target;
} expert_src;

static wformat target_format(model_quant quant, const expert_src *s) {
    switch (quant) {
    case MQ_BF16: return WF_BF16;
    case MQ_MXFP4: return WF_MXFP4;
    case MQ_NF4: return WF_NF4;
    case MQ_AUTO: break;
    }
    if (!s->dense) return s->q.fmt;
    return s->dense->dtype == DT_BF16 ? WF_BF16 : WF_F32; // F16/F32/F64 experts keep fp32 precision
}

// Fills dst from src; returns a buffer the model must own (NULL when dst points into the mmap).
static void *expert_convert(const expert_src *src, int rows, int cols, qmatrix *dst) {
    if (!src->dense && src->target == src->q.fmt) {
        *dst = src->q;
        return NULL;
    }
    size_t n = (size_t)rows * cols;
    float *w = xmalloc(n * sizeof(float));
    if (src->dense) {
        size_t es = dtype_size(src->dense->dtype);
        const uint8_t *p = src->dense->data + src->offset * es;
        if (!src->transposed) {
            CHECK(dtype_to_f32(src->dense->dtype, p, w, n, NULL) == GT_OK);
        } else {
            float *t = xmalloc(n * sizeof(float)); // (cols, rows)
            CHECK(dtype_to_f32(src->dense->dtype, p, t, n, NULL) == GT_OK);
            for (int c = 0; c < cols; c++)
                for (int r = 0; r < rows; r++) w[(size_t)r * cols + c] = t[(size_t)c * rows + r];
            free(t);
        }
    } else {
        qmatrix_dequant_rows(&src->q, 0, rows, w);
    }
    void *buf = qmatrix_from_f32(dst, src->target, w, rows, cols);
    free(w);
    return buf;
}

typedef struct expert_pair {
    expert_src gate_up, down;
} expert_pair;

static gt_status experts_find(const loader *L, layout lay, int l, expert_pair *src, float **absmax_bufs) {
    const model_config *c = &L->m->cfg;
    int64_t E = c->n_experts, D = c->hidden, I = c->intermediate;
    char name[512];
    gt_status s;
    const char *pre = "model.layers";
    for (int e = 0; e < E; e++) memset(&src[e], 0, sizeof src[e]);
    if (lay == LAYOUT_MXFP4) {
        if (D % MXFP4_BLOCK || I % MXFP4_BLOCK)
            return gt_fail(L->err, GT_EFORMAT, "%s: MXFP4 experts need hidden_size (%lld) and intermediate_size (%lld) to be "
                           "multiples of 32", L->dir, (long long)D, (long long)I);
        const st_tensor *gb, *gs, *db, *ds;
        int64_t gbs[4] = {E, 2 * I, D / 32, 16}, dbs[4] = {E, D, I / 32, 16};
        snprintf(name, sizeof name, "%s.%d.mlp.experts.gate_up_proj_blocks", pre, l);
        if ((s = find_u8(L, name, 4, gbs, &gb)) != GT_OK) return s;
        snprintf(name, sizeof name, "%s.%d.mlp.experts.gate_up_proj_scales", pre, l);
        if ((s = find_u8(L, name, 3, gbs, &gs)) != GT_OK) return s;
        snprintf(name, sizeof name, "%s.%d.mlp.experts.down_proj_blocks", pre, l);
        if ((s = find_u8(L, name, 4, dbs, &db)) != GT_OK) return s;
        snprintf(name, sizeof name, "%s.%d.mlp.experts.down_proj_scales", pre, l);
        if ((s = find_u8(L, name, 3, dbs, &ds)) != GT_OK) return s;
        for (int e = 0; e < E; e++) {
            qmatrix *g = &src[e].gate_up.q, *d = &src[e].down.q;
            g->fmt = d->fmt = WF_MXFP4;
            g->rows = (int)(2 * I), g->cols = (int)D;
            d->rows = (int)D, d->cols = (int)I;
            g->blocks = gb->data + (size_t)e * (size_t)(2 * I * D / 2);
            g->scales = gs->data + (size_t)e * (size_t)(2 * I * D / 32);
            d->blocks = db->data + (size_t)e * (size_t)(D * I / 2);
            d->scales = ds->data + (size_t)e * (size_t)(D * I / 32);
        }
    } else if (lay == LAYOUT_BF16) {
        const st_tensor *gu, *dn;
        int64_t gshape[3] = {E, D, 2 * I}, dshape[3] = {E, I, D};
        snprintf(name, sizeof name, "%s.%d.mlp.experts.gate_up_proj", pre, l);
        if ((s = find_float(L, name, 3, gshape, &gu)) != GT_OK) return s;
        snprintf(name, sizeof name, "%s.%d.mlp.experts.down_proj", pre, l);
        if ((s = find_float(L, name, 3, dshape, &dn)) != GT_OK) return s;
        for (int e = 0; e < E; e++) {
            src[e].gate_up = (expert_src){.dense = gu, .offset = (size_t)e * (size_t)(D * 2 * I), .transposed = 1};
            src[e].down = (expert_src){.dense = dn, .offset = (size_t)e * (size_t)(I * D), .transposed = 1};
        }
    } else {
        for (int e = 0; e < E; e++) {
            for (int which = 0; which < 2; which++) {
                expert_src *x = which ? &src[e].down : &src[e].gate_up;
                int64_t rows = which ? D : 2 * I, cols = which ? I : D;
                snprintf(name, sizeof name, "%s.%d.mlp.experts.%s.%d.weight", pre, l, which ? "down_projs" : "gate_up_projs", e);
                if (safetensors_find(&L->m->st, name) && nf4_tensor_present(&L->m->st, name)) {
                    if ((s = nf4_tensor_load(&L->m->st, name, (int)rows, (int)cols, &x->q, &absmax_bufs[2 * e + which],
                                             L->err)) != GT_OK)
                        return s;
                } else {
                    int64_t shape[2] = {rows, cols};
                    if ((s = find_float(L, name, 2, shape, &x->dense)) != GT_OK) return s;
                }
            }
        }
    }
    return GT_OK;
}

static gt_status experts_load(const loader *L, layout lay, model_quant quant, int l, model_layer *ly) {
    model *m = L->m;
    const model_config *c = &m->cfg;
    int E = c->n_experts, D = c->hidden, I = c->intermediate;
    if (quant == MQ_MXFP4 && (D % MXFP4_BLOCK || I % MXFP4_BLOCK))
        return gt_fail(L->err, GT_EUNSUPPORTED, "%s: quant mxfp4 needs hidden_size (%d) and intermediate_size (%d) to be "
                       "multiples of 32; use nf4 or bf16", L->dir, D, I);
    expert_pair *src = xcalloc((size_t)E, sizeof *src);
    float **absmax_bufs = xcalloc((size_t)(2 * E), sizeof *absmax_bufs);
    gt_status s = experts_find(L, lay, l, src, absmax_bufs);
    for (int i = 0; i < 2 * E; i++)
        if (absmax_bufs[i]) own(m, absmax_bufs[i]); // the qmatrix may keep pointing at it
    free(absmax_bufs);
    if (s != GT_OK) {
        free(src);
        return s;
    }
    for (int e = 0; e < E; e++) {
        src[e].gate_up.target = target_format(quant, &src[e].gate_up);
        src[e].down.target = target_format(quant, &src[e].down);
    }
    ly->gate_up = own(m, xcalloc((size_t)E, sizeof(qmatrix)));
    ly->down = own(m, xcalloc((size_t)E, sizeof(qmatrix)));
    void **bufs = xcalloc((size_t)(2 * E), sizeof *bufs);
#pragma omp parallel for schedule(dynamic) if ((double)E * D * I >= (1 << 20))
    for (int j = 0; j < 2 * E; j++) {
        int e = j / 2;
        if (j % 2 == 0) bufs[j] = expert_convert(&src[e].gate_up, 2 * I, D, &ly->gate_up[e]);
        else bufs[j] = expert_convert(&src[e].down, D, I, &ly->down[e]);
    }
    for (int j = 0; j < 2 * E; j++)
        if (bufs[j]) own(m, bufs[j]);
    free(bufs);
    for (int e = 0; e < E; e++) {
        wformat f = ly->gate_up[e].fmt;
        if (l == 0 && e == 0) m->expert_format = f;
        if (f != m->expert_format || ly->down[e].fmt != m->expert_format) {
            log_warn("%s: layer %d expert %d is stored as a different format than expert 0 of layer 0 (the file mixes "
                     "quantized and 16-bit experts)", L->dir, l, e);
            if (f == WF_NF4 || f == WF_MXFP4) m->expert_format = f;
        }
    }
    free(src);

    // Biases: stacked [E, 2I] / [E, D] in the HF layouts, per expert in Unsloth's.
    char name[512];
    gt_status st;
    if (lay != LAYOUT_UNSLOTH) {
        if ((st = load_f32_fmt(L, E, 2 * I, &ly->gate_up_b, "model.layers.%d.mlp.experts.gate_up_proj_bias", l)) != GT_OK)
            return st;
        return load_f32_fmt(L, E, D, &ly->down_b, "model.layers.%d.mlp.experts.down_proj_bias", l);
    }
    ly->gate_up_b = own(m, xmalloc((size_t)E * 2 * I * sizeof(float)));
    ly->down_b = own(m, xmalloc((size_t)E * D * sizeof(float)));
    for (int e = 0; e < E; e++) {
        const st_tensor *t;
        int64_t gs = 2 * I, ds = D;
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_projs.%d.bias", l, e);
        if ((st = find_float(L, name, 1, &gs, &t)) != GT_OK) return st;
        dtype_to_f32(t->dtype, t->data, ly->gate_up_b + (size_t)e * 2 * I, (size_t)gs, NULL);
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_projs.%d.bias", l, e);
        if ((st = find_float(L, name, 1, &ds, &t)) != GT_OK) return st;
        dtype_to_f32(t->dtype, t->data, ly->down_b + (size_t)e * D, (size_t)ds, NULL);
    }
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
static gt_status layer_load(const loader *L, layout lay, model_quant quant, int l) {
    model_layer *ly = &L->m->layers[l];
    const model_config *c = &L->m->cfg;
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    char name[512];
    gt_status s;
#define P(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
    if ((s = load_f32(L, P("input_layernorm.weight"), D, -1, &ly->attn_norm)) != GT_OK) return s;
    if ((s = load_f32(L, P("self_attn.q_proj.weight"), Q, D, &ly->wq)) != GT_OK) return s;
    if ((s = load_bias(L, P("self_attn.q_proj.bias"), Q, &ly->bq)) != GT_OK) return s;
    if ((s = load_f32(L, P("self_attn.k_proj.weight"), KV, D, &ly->wk)) != GT_OK) return s;
    if ((s = load_bias(L, P("self_attn.k_proj.bias"), KV, &ly->bk)) != GT_OK) return s;
    if ((s = load_f32(L, P("self_attn.v_proj.weight"), KV, D, &ly->wv)) != GT_OK) return s;
    if ((s = load_bias(L, P("self_attn.v_proj.bias"), KV, &ly->bv)) != GT_OK) return s;
    if ((s = load_f32(L, P("self_attn.o_proj.weight"), D, Q, &ly->wo)) != GT_OK) return s;
    if ((s = load_bias(L, P("self_attn.o_proj.bias"), D, &ly->bo)) != GT_OK) return s;
    if ((s = load_f32(L, P("self_attn.sinks"), c->n_heads, -1, &ly->sinks)) != GT_OK) return s;
    if ((s = load_f32(L, P("post_attention_layernorm.weight"), D, -1, &ly->mlp_norm)) != GT_OK) return s;
    // The router: mlp.router.{weight,bias} (HF), mlp.router.linear.{weight,bias} (Unsloth's bnb files).
    const char *rw = safetensors_find(&L->m->st, P("mlp.router.weight")) ? "mlp.router.weight"
                     : safetensors_find(&L->m->st, P("mlp.router.linear.weight")) ? "mlp.router.linear.weight"
                     : lay == LAYOUT_UNSLOTH ? "mlp.router.linear.weight" : "mlp.router.weight";
    int linear = !strcmp(rw, "mlp.router.linear.weight");
    if ((s = load_f32(L, P(rw), c->n_experts, D, &ly->router_w)) != GT_OK) return s;
    if ((s = load_f32(L, P(linear ? "mlp.router.linear.bias" : "mlp.router.bias"), c->n_experts, -1, &ly->router_b)) != GT_OK)
        return s;
#undef P
    if ((s = experts_load(L, lay, quant, l, ly)) != GT_OK) return s;
    return GT_OK;
}

static gt_status detect_layout(const loader *L, layout *lay) {
    const safetensors *st = &L->m->st;
    if (safetensors_find(st, "model.layers.0.mlp.experts.gate_up_proj_blocks")) *lay = LAYOUT_MXFP4;
    else if (safetensors_find(st, "model.layers.0.mlp.experts.gate_up_proj")) *lay = LAYOUT_BF16;
    else if (safetensors_find(st, "model.layers.0.mlp.experts.gate_up_projs.0.weight")) *lay = LAYOUT_UNSLOTH;
    else
        return gt_fail(L->err, GT_EFORMAT,
                       "%s: no GPT-OSS experts found for layer 0 (looked for model.layers.0.mlp.experts.gate_up_proj_blocks "
                       "(MXFP4), .gate_up_proj (BF16) and .gate_up_projs.0.weight (Unsloth bitsandbytes))", L->dir);
    return GT_OK;
}

gt_status model_load(model *m, const char *dir, model_quant quant, gt_error *err) {
    memset(m, 0, sizeof *m);
    char *cfg_path = fs_join(dir, "config.json");
    gt_status s = model_config_load(&m->cfg, cfg_path, err);
    free(cfg_path);
    if (s != GT_OK) return s;
    if ((s = safetensors_open(&m->st, dir, err)) != GT_OK) return s;
    loader L = {m, dir, err};
    layout lay = LAYOUT_BF16;
    const model_config *c = &m->cfg;
    if ((s = detect_layout(&L, &lay)) != GT_OK) goto fail;
    char extra[128];
    snprintf(extra, sizeof extra, "model.layers.%d.input_layernorm.weight", c->n_layers);
    if (safetensors_find(&m->st, extra)) {
        s = gt_fail(err, GT_EFORMAT, "%s: the safetensors hold more layers (%s exists) than config.json's "
                    "num_hidden_layers = %d", dir, extra, c->n_layers);
        goto fail;
    }
    if ((s = load_f32(&L, "model.embed_tokens.weight", c->vocab, c->hidden, &m->embed)) != GT_OK) goto fail;
    if ((s = load_f32(&L, "model.norm.weight", c->hidden, -1, &m->norm)) != GT_OK) goto fail;
    if (c->tie_word_embeddings && !safetensors_find(&m->st, "lm_head.weight")) m->lm_head = m->embed;
    else if ((s = load_f32(&L, "lm_head.weight", c->vocab, c->hidden, &m->lm_head)) != GT_OK) goto fail;
    m->layers = own(m, xcalloc((size_t)c->n_layers, sizeof(model_layer)));
    for (int l = 0; l < c->n_layers; l++)
        if ((s = layer_load(&L, lay, quant, l)) != GT_OK) goto fail;
    static const char *const FMT[] = {[WF_F32] = "fp32", [WF_BF16] = "bf16", [WF_MXFP4] = "mxfp4", [WF_NF4] = "nf4"};
    log_info("model %s: %s layout, %d layers, D %d, E %d top-%d, experts kept as %s", dir, LAYOUT_NAMES[lay],
             c->n_layers, c->hidden, c->n_experts, c->top_k, FMT[m->expert_format]);
    return GT_OK;
fail:
    model_free(m);
    return s;
}

void model_free(model *m) {
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    safetensors_close(&m->st);
    memset(m, 0, sizeof *m);
}
