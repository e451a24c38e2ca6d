// model/save.c: write a model held in memory in HF layout (model.h "Saving"): what `gptoss export --merged`
// writes after lora_merge. D hidden, Q = H*HD, KV = KVH*HD, E experts, I intermediate, V vocab.
//
// Tensor names and shapes are HF's GptOssForCausalLM (GPTOSS_FACTS.md "Tensors"). Everything but the
// experts goes out as bf16. Experts: MQ_BF16 in HF's transposed layout ([E, in, out]), MQ_MXFP4 in
// openai's packed [E, out, in/32, 16] blocks + [E, out, in/32] scales (a qmatrix already MXFP4 is copied
// byte for byte, so an unmerged 4-bit export loses nothing more). Expert biases are bf16 [E, out].
// At most one layer's tensors are in memory at a time when sharding.
// The file layout (single file or one shard per layer plus index) is model_tensors_write, which
// init-model (model/init.c) uses too.
#include "model/model.h"

#include <jansson.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------------
// Writing a model's tensors (model.h "Writing model files"); shared with init-model (model/init.c).
void model_tensors_add(model_tensors *L, const char *name, dtype dt, int ndim, const int64_t *shape, void *data) {
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 64;
        L->t = xrealloc(L->t, (size_t)L->cap * sizeof *L->t);
    }
    st_write_tensor *t = &L->t[L->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dt;
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i], n *= (size_t)shape[i];
    t->data = data;
    L->bytes += n * dtype_size(dt);
}

void model_tensors_clear(model_tensors *L) {
    for (int i = 0; i < L->n; i++) {
        free((void *)L->t[i].name);
        free((void *)L->t[i].data);
    }
    L->n = 0;
    L->bytes = 0;
}

// Writes L to dir/file, records its names in weight_map (if any) and empties L.
static gt_status flush(model_tensors *L, const char *dir, const char *file, json_t *weight_map, gt_error *err) {
    char *path = fs_join(dir, file);
    gt_status s = safetensors_write(path, L->t, L->n, NULL, 0, err);
    free(path);
    for (int i = 0; weight_map && i < L->n; i++) json_object_set_new(weight_map, L->t[i].name, json_string(file));
    model_tensors_clear(L);
    return s;
}

// Bytes of the weight files, for the single-file / sharded decision: bf16 everything but the experts
// (NF4: q/k/v/o at about 0.52 bytes per element too), experts at their format's bytes per element.
static double model_file_bytes(const model_config *c, model_quant quant) {
    double D = c->hidden, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    double expert_elems = (double)c->n_experts * 3.0 * D * c->intermediate;
    double per_elem = quant == MQ_BF16 ? 2.0 : quant == MQ_MXFP4 ? 17.0 / 32.0 : 0.5 + 1.0 / 64.0;
    double attn = (2 * Q * D + 2 * KV * D) * (quant == MQ_NF4 ? 0.52 : 2.0);
    return c->n_layers * (expert_elems * per_elem + attn) + 2.0 * 2.0 * c->vocab * D;
}

gt_status model_tensors_write(const model_config *c, model_quant quant, double max_file_bytes, const char *dir,
                              model_part_fn add_part, void *ctx, const char *who, gt_error *err) {
    model_tensors L = {0};
    gt_status s = GT_OK;
    if (model_file_bytes(c, quant) <= (max_file_bytes > 0 ? max_file_bytes : 2e9)) {
        add_part(&L, c->n_layers, ctx);
        for (int l = 0; l < c->n_layers; l++) add_part(&L, l, ctx);
        s = flush(&L, dir, "model.safetensors", NULL, err);
    } else {
        json_t *wm = json_object();
        const int nfiles = c->n_layers + 1;
        size_t total_size = 0;
        char file[64];
        for (int f = 0; f < nfiles && s == GT_OK; f++) {
            add_part(&L, f, ctx);
            total_size += L.bytes;
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", f + 1, nfiles);
            log_info("%s: writing %s/%s (%.1f MB)", who, dir, file, (double)L.bytes / 1e6);
            s = flush(&L, dir, file, wm, err);
        }
        if (s == GT_OK) {
            json_t *idx = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total_size, "weight_map", wm);
            char *text = json_dumps(idx, JSON_INDENT(2) | JSON_SORT_KEYS);
            json_decref(idx);
            char *path = fs_join(dir, "model.safetensors.index.json");
            s = fs_write_atomic(path, text, strlen(text), err);
            free(path);
            free(text);
        } else {
            json_decref(wm);
        }
    }
    model_tensors_clear(&L);
    free(L.t);
    return s;
}

// ---------------------------------------------------------------------------------------------------
// model_save's tensors.
// fp32 (d0 x d1) as a bf16 tensor (d1 = 0: one dimension).
static void add_bf16(model_tensors *L, const char *name, const float *x, int64_t d0, int64_t d1) {
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    uint16_t *o = xmalloc(n * sizeof *o);
    for (size_t i = 0; i < n; i++) o[i] = f32_to_bf16(x[i]);
    int64_t shape[2] = {d0, d1};
    model_tensors_add(L, name, DT_BF16, d1 ? 2 : 1, shape, o);
}

static void add_experts(model_tensors *L, const model *m, model_quant quant, int l) {
    const model_config *c = &m->cfg;
    const model_layer *W = &m->layers[l];
    const int64_t E = c->n_experts, D = c->hidden, I = c->intermediate;
    char name[256];
    float *buf = xmalloc((size_t)(2 * I * D > D * I ? 2 * I * D : D * I) * sizeof(float));
    for (int which = 0; which < 2; which++) { // 0: gate_up (2I, D), 1: down (D, I)
        const qmatrix *qs = which ? W->down : W->gate_up;
        const int64_t rows = which ? D : 2 * I, cols = which ? I : D, n = rows * cols;
        const char *base = which ? "down_proj" : "gate_up_proj";
        if (quant == MQ_BF16) {
            uint16_t *o = xmalloc((size_t)(E * n) * sizeof *o);
            for (int e = 0; e < E; e++) {
                qmatrix_dequant_rows(&qs[e], 0, (int)rows, buf);
                uint16_t *dst = o + (size_t)e * n;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t k = 0; k < cols; k++) dst[k * rows + r] = f32_to_bf16(buf[r * cols + k]);
            }
            int64_t shape[3] = {E, cols, rows};
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, base);
            model_tensors_add(L, name, DT_BF16, 3, shape, o);
        } else {
            uint8_t *blocks = xmalloc((size_t)(E * n / 2)), *scales = xmalloc((size_t)(E * n / MXFP4_BLOCK));
            const size_t bpr = (size_t)cols / 2, spr = (size_t)cols / MXFP4_BLOCK;
            for (int e = 0; e < E; e++) {
                uint8_t *bd = blocks + (size_t)e * rows * bpr, *sd = scales + (size_t)e * rows * spr;
                if (qs[e].fmt == WF_MXFP4) {
                    memcpy(bd, qs[e].blocks, (size_t)rows * bpr);
                    memcpy(sd, qs[e].scales, (size_t)rows * spr);
                    continue;
                }
                qmatrix_dequant_rows(&qs[e], 0, (int)rows, buf);
                for (int64_t r = 0; r < rows; r++)
                    mxfp4_quantize_row(buf + r * cols, (int)cols, bd + (size_t)r * bpr, sd + (size_t)r * spr);
            }
            int64_t bs[4] = {E, rows, cols / MXFP4_BLOCK, 16};
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s_blocks", l, base);
            model_tensors_add(L, name, DT_U8, 4, bs, blocks);
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s_scales", l, base);
            model_tensors_add(L, name, DT_U8, 3, bs, scales);
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s_bias", l, base);
        add_bf16(L, name, which ? W->down_b : W->gate_up_b, E, rows);
    }
    free(buf);
}

static void add_layer(model_tensors *L, const model *m, model_quant quant, int l) {
    const model_config *c = &m->cfg;
    const model_layer *W = &m->layers[l];
    const int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    char n[256];
#define N(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
    add_bf16(L, N("input_layernorm.weight"), W->attn_norm, D, 0);
    add_bf16(L, N("self_attn.q_proj.weight"), W->wq, Q, D);
    add_bf16(L, N("self_attn.q_proj.bias"), W->bq, Q, 0);
    add_bf16(L, N("self_attn.k_proj.weight"), W->wk, KV, D);
    add_bf16(L, N("self_attn.k_proj.bias"), W->bk, KV, 0);
    add_bf16(L, N("self_attn.v_proj.weight"), W->wv, KV, D);
    add_bf16(L, N("self_attn.v_proj.bias"), W->bv, KV, 0);
    add_bf16(L, N("self_attn.o_proj.weight"), W->wo, D, Q);
    add_bf16(L, N("self_attn.o_proj.bias"), W->bo, D, 0);
    add_bf16(L, N("self_attn.sinks"), W->sinks, c->n_heads, 0);
    add_bf16(L, N("post_attention_layernorm.weight"), W->mlp_norm, D, 0);
    add_bf16(L, N("mlp.router.weight"), W->router_w, c->n_experts, D);
    add_bf16(L, N("mlp.router.bias"), W->router_b, c->n_experts, 0);
#undef N
    add_experts(L, m, quant, l);
}

static void add_globals(model_tensors *L, const model *m) {
    const model_config *c = &m->cfg;
    add_bf16(L, "model.embed_tokens.weight", m->embed, c->vocab, c->hidden);
    add_bf16(L, "model.norm.weight", m->norm, c->hidden, 0);
    if (!c->tie_word_embeddings) add_bf16(L, "lm_head.weight", m->lm_head, c->vocab, c->hidden);
}

// model_part_fn for model_tensors_write: part l < n_layers is layer l, part n_layers the globals.
typedef struct save_ctx {
    const model *m;
    model_quant quant;
} save_ctx;

static void add_part(model_tensors *L, int part, void *ctx) {
    const save_ctx *sc = ctx;
    if (part < sc->m->cfg.n_layers) add_layer(L, sc->m, sc->quant, part);
    else add_globals(L, sc->m);
}

gt_status model_save(const model *m, model_quant quant, const char *dir, gt_error *err) {
    const model_config *c = &m->cfg;
    if (quant != MQ_BF16 && quant != MQ_MXFP4)
        return gt_fail(err, GT_EINVAL, "save: experts can be written as bf16 or mxfp4, not %s", model_quant_name(quant));
    if (quant == MQ_MXFP4 && (c->hidden % MXFP4_BLOCK || c->intermediate % MXFP4_BLOCK))
        return gt_fail(err, GT_EINVAL, "save: mxfp4 needs hidden (%d) and intermediate (%d) to be multiples of 32; "
                       "use bf16", c->hidden, c->intermediate);
    gt_status s = fs_mkdirs(dir, err);
    if (s) return s;
    char *cfg_path = fs_join(dir, "config.json");
    s = model_config_write(c, quant, cfg_path, err);
    free(cfg_path);
    if (s) return s;
    save_ctx sc = {m, quant};
    return model_tensors_write(c, quant, 0, dir, add_part, &sc, "save", err);
}
