// init-model: writes a random-weight GPT-OSS model in HF layout (config.json, generation_config.json,
// safetensors), for tests and benchmarks.
//
// Every logical tensor ([out, in] for matrices, each expert its own) is drawn in fp32 from N(mean, std)
// by a counter-based stream keyed by (seed, tensor name, chunk of 2^20 elements): deterministic for a seed
// whatever the thread count, and the same values whatever the output format. The values are rounded to
// bf16 first; the 4-bit formats then quantize those bf16 values, as transformers and bitsandbytes would
// quantize a bf16 checkpoint.
// Scales keep activations sane at any width: matrices N(0, 1/sqrt(in)) (0.019 for the 20B's 2880, the
// usual 0.02), biases N(0, 0.1), sinks N(0, 1), norm weights N(1, 0.1), embeddings N(0, 1).
//
// Files: a model up to 2 GB (max_file_bytes) goes to model.safetensors; a larger one to one shard per layer plus one for
// the embeddings, norm and head, listed in model.safetensors.index.json, so that at most one layer is in
// memory at a time.
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------------
// Random numbers: splitmix64 (core.h rng_splitmix64) over a per-chunk key.
static uint64_t name_hash(const char *s) { // FNV-1a
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

#define CHUNK ((size_t)1 << 20)

// dst[0..n) = bf16(mean + std * N(0,1)), stream keyed by (seed, name).
static void fill_normal(float *dst, size_t n, double mean, double std, uint64_t seed, const char *name) {
    uint64_t key = name_hash(name) ^ (seed * 0x9E3779B97F4A7C15ull);
    long nchunks = (long)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (long c = 0; c < nchunks; c++) {
        uint64_t s = key + (uint64_t)c * 0xD1B54A32D192ED03ull;
        rng_splitmix64(&s);
        size_t end = ((size_t)c + 1) * CHUNK < n ? ((size_t)c + 1) * CHUNK : n;
        for (size_t i = (size_t)c * CHUNK; i < end; i += 2) { // Box-Muller, two values per draw
            double u1 = ((double)(rng_splitmix64(&s) >> 11) + 1.0) * 0x1p-53;
            double u2 = (double)(rng_splitmix64(&s) >> 11) * 0x1p-53;
            double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
            dst[i] = bf16_to_f32(f32_to_bf16((float)(mean + std * r * cos(a))));
            if (i + 1 < end) dst[i + 1] = bf16_to_f32(f32_to_bf16((float)(mean + std * r * sin(a))));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
static uint16_t *to_bf16(const float *x, size_t n) {
    uint16_t *o = xmalloc(n * sizeof *o);
    for (size_t i = 0; i < n; i++) o[i] = f32_to_bf16(x[i]);
    return o;
}

// A bf16 tensor drawn from N(mean, std).
static void add_random(model_tensors *L, uint64_t seed, const char *name, int ndim, const int64_t *shape, double mean, double std) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = xmalloc(n * sizeof(float));
    fill_normal(x, n, mean, std, seed, name);
    model_tensors_add(L, name, DT_BF16, ndim, shape, to_bf16(x, n));
    free(x);
}

// A bitsandbytes Linear4bit weight NAME (rows, cols) with nested absmax, as Linear4bit's state dict holds it.
static void add_nf4(model_tensors *L, const char *name, const float *w, int rows, int cols) {
    int64_t n = (int64_t)rows * cols, nb = (n + NF4_BLOCKSIZE - 1) / NF4_BLOCKSIZE;
    int64_t n2 = (nb + NF4_NESTED_BLOCKSIZE - 1) / NF4_NESTED_BLOCKSIZE;
    uint8_t *packed = xmalloc((size_t)(n + 1) / 2), *qabs = xmalloc((size_t)nb);
    float *absmax = xmalloc((size_t)nb * sizeof(float)), *nested = xmalloc((size_t)n2 * sizeof(float));
    float *qmap = xmalloc(16 * sizeof(float)), *nmap = xmalloc(256 * sizeof(float)), offset;
    nf4_quantize(w, n, NF4_BLOCKSIZE, packed, absmax);
    nf4_dynamic_map(nmap);
    nf4_absmax_quantize(absmax, nb, nmap, qabs, nested, &offset);
    memcpy(qmap, NF4_CODE, 16 * sizeof(float));
    free(absmax);
    json_t *js = json_pack("{s:s,s:i,s:s,s:[I,I],s:i,s:s,s:f}", "quant_type", "nf4", "blocksize", NF4_BLOCKSIZE, "dtype",
                           "bfloat16", "shape", (json_int_t)rows, (json_int_t)cols, "nested_blocksize",
                           NF4_NESTED_BLOCKSIZE, "nested_dtype", "float32", "nested_offset", (double)offset);
    char *text = json_dumps(js, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(js);
    CHECK(text);
    char buf[512];
    int64_t s_packed[2] = {(n + 1) / 2, 1}, s_nb = nb, s_16 = 16, s_n2 = n2, s_256 = 256, s_js = (int64_t)strlen(text);
    model_tensors_add(L, name, DT_U8, 2, s_packed, packed);
    snprintf(buf, sizeof buf, "%s.absmax", name), model_tensors_add(L, buf, DT_U8, 1, &s_nb, qabs);
    snprintf(buf, sizeof buf, "%s.quant_map", name), model_tensors_add(L, buf, DT_F32, 1, &s_16, qmap);
    snprintf(buf, sizeof buf, "%s.nested_absmax", name), model_tensors_add(L, buf, DT_F32, 1, &s_n2, nested);
    snprintf(buf, sizeof buf, "%s.nested_quant_map", name), model_tensors_add(L, buf, DT_F32, 1, &s_256, nmap);
    snprintf(buf, sizeof buf, "%s.quant_state.bitsandbytes__nf4", name), model_tensors_add(L, buf, DT_U8, 1, &s_js, text);
}

// A projection weight (rows, cols): bf16, or NF4 in the Unsloth layout.
static void add_linear(model_tensors *L, uint64_t seed, model_quant quant, const char *name, int rows, int cols) {
    int64_t shape[2] = {rows, cols};
    if (quant != MQ_NF4) {
        add_random(L, seed, name, 2, shape, 0.0, 1.0 / sqrt((double)cols));
        return;
    }
    float *w = xmalloc((size_t)rows * cols * sizeof(float));
    fill_normal(w, (size_t)rows * cols, 0.0, 1.0 / sqrt((double)cols), seed, name);
    add_nf4(L, name, w, rows, cols);
    free(w);
}

// ---------------------------------------------------------------------------------------------------
// One layer's experts. Drawn per expert as [out, in] under the HF names of the BF16 layout (so every
// format holds the same values), then laid out as quant asks.
static void add_experts(model_tensors *L, const model_config *c, uint64_t seed, model_quant quant, int l) {
    int64_t E = c->n_experts, D = c->hidden, I = c->intermediate;
    char name[256], key[320];
    for (int which = 0; which < 2; which++) { // 0: gate_up (2I, D), 1: down (D, I)
        int64_t rows = which ? D : 2 * I, cols = which ? I : D, n = rows * cols;
        const char *base = which ? "down_proj" : "gate_up_proj";
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, base);
        uint16_t *bf = quant == MQ_BF16 ? xmalloc((size_t)(E * n) * sizeof(uint16_t)) : NULL;
        uint8_t *blocks = quant == MQ_MXFP4 ? xmalloc((size_t)(E * n / 2)) : NULL;
        uint8_t *scales = quant == MQ_MXFP4 ? xmalloc((size_t)(E * n / 32)) : NULL;
        float *w = xmalloc((size_t)n * sizeof(float));
        for (int e = 0; e < E; e++) {
            snprintf(key, sizeof key, "%s[%d]", name, e);
            fill_normal(w, (size_t)n, 0.0, 1.0 / sqrt((double)cols), seed, key);
            if (quant == MQ_BF16) { // HF BF16 layout: [E, in, out]
                uint16_t *dst = bf + (size_t)e * n;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t k = 0; k < cols; k++) dst[k * rows + r] = f32_to_bf16(w[r * cols + k]);
            } else if (quant == MQ_MXFP4) {
#pragma omp parallel for schedule(static) if (n >= (1 << 20))
                for (int64_t r = 0; r < rows; r++)
                    mxfp4_quantize_row(w + r * cols, (int)cols, blocks + ((size_t)e * n + r * cols) / 2,
                                       scales + ((size_t)e * n + r * cols) / 32);
            } else {
                snprintf(key, sizeof key, "model.layers.%d.mlp.experts.%s.%d.weight", l, which ? "down_projs" : "gate_up_projs", e);
                add_nf4(L, key, w, (int)rows, (int)cols);
            }
        }
        free(w);
        if (quant == MQ_BF16) {
            int64_t shape[3] = {E, cols, rows};
            model_tensors_add(L, name, DT_BF16, 3, shape, bf);
        } else if (quant == MQ_MXFP4) {
            int64_t bs[4] = {E, rows, cols / 32, 16};
            snprintf(key, sizeof key, "%s_blocks", name), model_tensors_add(L, key, DT_U8, 4, bs, blocks);
            snprintf(key, sizeof key, "%s_scales", name), model_tensors_add(L, key, DT_U8, 3, bs, scales);
        }
        // Biases (E, out): stacked in the HF layouts, per expert in Unsloth's.
        snprintf(key, sizeof key, "%s_bias", name);
        int64_t bshape[2] = {E, rows};
        if (quant != MQ_NF4) {
            add_random(L, seed, key, 2, bshape, 0.0, 0.1);
            continue;
        }
        float *b = xmalloc((size_t)(E * rows) * sizeof(float));
        fill_normal(b, (size_t)(E * rows), 0.0, 0.1, seed, key);
        for (int e = 0; e < E; e++) {
            char bn[256];
            snprintf(bn, sizeof bn, "model.layers.%d.mlp.experts.%s.%d.bias", l, which ? "down_projs" : "gate_up_projs", e);
            model_tensors_add(L, bn, DT_BF16, 1, &rows, to_bf16(b + (size_t)e * rows, (size_t)rows));
        }
        free(b);
    }
}

static void add_layer(model_tensors *L, const model_config *c, uint64_t seed, model_quant quant, int l) {
    int64_t D = c->hidden, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t E = c->n_experts, H = c->n_heads;
    char n[256];
#define N(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
    add_random(L, seed, N("input_layernorm.weight"), 1, &D, 1.0, 0.1);
    add_linear(L, seed, quant, N("self_attn.q_proj.weight"), (int)Q, (int)D);
    add_random(L, seed, N("self_attn.q_proj.bias"), 1, &Q, 0.0, 0.1);
    add_linear(L, seed, quant, N("self_attn.k_proj.weight"), (int)KV, (int)D);
    add_random(L, seed, N("self_attn.k_proj.bias"), 1, &KV, 0.0, 0.1);
    add_linear(L, seed, quant, N("self_attn.v_proj.weight"), (int)KV, (int)D);
    add_random(L, seed, N("self_attn.v_proj.bias"), 1, &KV, 0.0, 0.1);
    add_linear(L, seed, quant, N("self_attn.o_proj.weight"), (int)D, (int)Q);
    add_random(L, seed, N("self_attn.o_proj.bias"), 1, &D, 0.0, 0.1);
    add_random(L, seed, N("self_attn.sinks"), 1, &H, 0.0, 1.0);
    add_random(L, seed, N("post_attention_layernorm.weight"), 1, &D, 1.0, 0.1);
    // The router keeps one stream under its HF name in every layout; Unsloth's files call it router.linear.
    int64_t rshape[2] = {E, D};
    float *rw = xmalloc((size_t)(E * D) * sizeof(float)), *rb = xmalloc((size_t)E * sizeof(float));
    fill_normal(rw, (size_t)(E * D), 0.0, 1.0 / sqrt((double)D), seed, N("mlp.router.weight"));
    fill_normal(rb, (size_t)E, 0.0, 0.1, seed, N("mlp.router.bias"));
    const char *pre = quant == MQ_NF4 ? "mlp.router.linear" : "mlp.router";
    snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, pre), model_tensors_add(L, n, DT_BF16, 2, rshape, to_bf16(rw, (size_t)(E * D)));
    snprintf(n, sizeof n, "model.layers.%d.%s.bias", l, pre), model_tensors_add(L, n, DT_BF16, 1, &E, to_bf16(rb, (size_t)E));
    free(rw);
    free(rb);
#undef N
    add_experts(L, c, seed, quant, l);
}

static void add_globals(model_tensors *L, const model_config *c, uint64_t seed) {
    int64_t VD[2] = {c->vocab, c->hidden}, D = c->hidden;
    add_random(L, seed, "model.embed_tokens.weight", 2, VD, 0.0, 1.0);
    add_random(L, seed, "model.norm.weight", 1, &D, 1.0, 0.1);
    add_random(L, seed, "lm_head.weight", 2, VD, 0.0, 1.0 / sqrt((double)c->hidden));
}

static gt_status write_generation_config(const model_config *c, const char *dir, gt_error *err) {
    // openai/gpt-oss-20b's: stop on <|return|>, <|endoftext|>, <|call|>; ids past a small vocabulary drop out.
    static const int EOS[3] = {200002, 199999, 200012};
    json_t *eos = json_array();
    for (int i = 0; i < 3; i++)
        if (EOS[i] < c->vocab) json_array_append_new(eos, json_integer(EOS[i]));
    if (json_array_size(eos) == 0) json_array_append_new(eos, json_integer(c->eos_token_id));
    json_t *o = json_pack("{s:b,s:o,s:i}", "do_sample", 1, "eos_token_id", eos, "pad_token_id", c->pad_token_id);
    if (199998 < c->vocab) json_object_set_new(o, "bos_token_id", json_integer(199998)); // <|startoftext|>
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    char *path = fs_join(dir, "generation_config.json");
    gt_status s = fs_write_atomic(path, text, strlen(text), err);
    free(path);
    free(text);
    return s;
}

// model_part_fn for model_tensors_write: part l < n_layers is layer l, part n_layers the globals.
typedef struct init_ctx {
    const model_config *c;
    uint64_t seed;
    model_quant quant;
} init_ctx;

static void add_part(model_tensors *L, int part, void *ctx) {
    const init_ctx *ic = ctx;
    if (part < ic->c->n_layers) add_layer(L, ic->c, ic->seed, ic->quant, part);
    else add_globals(L, ic->c, ic->seed);
}

gt_status model_write_random(const model_config *c, model_quant quant, uint64_t seed, const char *dir,
                             double max_file_bytes, gt_error *err) {
    if (quant == MQ_AUTO) quant = MQ_BF16;
    if (quant == MQ_MXFP4 && (c->hidden % MXFP4_BLOCK || c->intermediate % MXFP4_BLOCK))
        return gt_fail(err, GT_EINVAL, "mxfp4 needs hidden (%d) and intermediate (%d) to be multiples of 32", c->hidden,
                       c->intermediate);
    gt_status s = fs_mkdirs(dir, err);
    if (s != GT_OK) return s;
    char *cfg_path = fs_join(dir, "config.json");
    s = model_config_write(c, quant, cfg_path, err);
    free(cfg_path);
    if (s != GT_OK || (s = write_generation_config(c, dir, err)) != GT_OK) return s;

    init_ctx ic = {c, seed, quant};
    return model_tensors_write(c, quant, max_file_bytes, dir, add_part, &ic, "init-model", err);
}
