// GPT-OSS config.json: reading every field into model_config (strict about the values gptoss relies on),
// the init-model presets, and writing a config.json the way HF transformers does.
//
// Invariants of a model_config that left this file: all sizes > 0, n_heads % n_kv_heads == 0, head_dim
// even (RoPE rotates halves), top_k <= n_experts, n_layers <= MODEL_MAX_LAYERS, layer_sliding[] set for
// every layer and only where sliding_window > 0, rope_yarn's parameters positive.
// Defaults for absent optional keys are transformers' GptOssConfig defaults (5.x), so a file that HF
// reads the same way we read the same way.
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------------
// Typed getters. Each returns GT_OK and sets *out, or an error naming the file and the key.
typedef struct cfg_ctx {
    const char *path;
    gt_error *err;
} cfg_ctx;

static gt_status cfg_int(const cfg_ctx *c, json_t *obj, const char *where, const char *key, int required,
                         int def, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return gt_fail(c->err, GT_EFORMAT, "%s: '%s%s' is missing (GPT-OSS needs it)", c->path, where, key);
        *out = def;
        return GT_OK;
    }
    if (!json_is_integer(v))
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s%s' must be an integer", c->path, where, key);
    json_int_t x = json_integer_value(v);
    if (x < -2147483647LL || x > 2147483647LL)
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s%s' = %lld is out of range", c->path, where, key, (long long)x);
    *out = (int)x;
    return GT_OK;
}

static gt_status cfg_num(const cfg_ctx *c, json_t *obj, const char *where, const char *key, int required,
                         double def, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return gt_fail(c->err, GT_EFORMAT, "%s: '%s%s' is missing (GPT-OSS needs it)", c->path, where, key);
        *out = def;
        return GT_OK;
    }
    if (!json_is_number(v)) return gt_fail(c->err, GT_EFORMAT, "%s: '%s%s' must be a number", c->path, where, key);
    *out = json_number_value(v);
    return GT_OK;
}

static gt_status cfg_bool(const cfg_ctx *c, json_t *obj, const char *key, int def, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return GT_OK;
    }
    if (!json_is_boolean(v)) return gt_fail(c->err, GT_EFORMAT, "%s: '%s' must be true or false", c->path, key);
    *out = json_is_true(v);
    return GT_OK;
}

// One of two synonymous keys (old and new transformers names); both present and different is an error.
static gt_status cfg_int_alias(const cfg_ctx *c, json_t *root, const char *k1, const char *k2, int *out) {
    int a = -1, b = -1;
    gt_status st;
    if ((st = cfg_int(c, root, "", k1, 0, -1, &a)) != GT_OK) return st;
    if ((st = cfg_int(c, root, "", k2, 0, -1, &b)) != GT_OK) return st;
    if (a == -1 && b == -1)
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s' (or '%s') is missing (GPT-OSS needs it)", c->path, k1, k2);
    if (a != -1 && b != -1 && a != b)
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s' = %d and '%s' = %d disagree", c->path, k1, a, k2, b);
    *out = a != -1 ? a : b;
    return GT_OK;
}

// eos_token_id / pad_token_id: an integer, a list of integers (the first is taken), or null/absent (-1).
static gt_status cfg_token_id(const cfg_ctx *c, json_t *root, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    *out = -1;
    if (!v || json_is_null(v)) return GT_OK;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) return GT_OK;
        json_t *first = json_array_get(v, 0);
        if (!json_is_integer(first))
            return gt_fail(c->err, GT_EFORMAT, "%s: '%s' must hold integers", c->path, key);
        if (json_array_size(v) > 1)
            log_info("%s: '%s' lists %zu ids; model_config keeps the first, %lld", c->path, key,
                     json_array_size(v), (long long)json_integer_value(first));
        v = first;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 2147483647LL)
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s' must be a non-negative integer or a list of them", c->path, key);
    *out = (int)json_integer_value(v);
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// RoPE: rope_parameters (transformers 5) or rope_scaling (4.x), with rope_theta at the top or inside.
static const char *const ROPE_KEYS[] = {"rope_type", "type", "factor", "beta_fast", "beta_slow",
                                        "original_max_position_embeddings", "truncate", "rope_theta"};

static gt_status cfg_rope(const cfg_ctx *c, json_t *root, model_config *cfg) {
    json_t *rp = json_object_get(root, "rope_parameters");
    const char *rkey = "rope_parameters";
    if (!rp || json_is_null(rp)) {
        rp = json_object_get(root, "rope_scaling");
        rkey = "rope_scaling";
    }
    if (rp && json_is_null(rp)) rp = NULL;
    if (rp && !json_is_object(rp)) return gt_fail(c->err, GT_EFORMAT, "%s: '%s' must be an object", c->path, rkey);
    gt_status st;
    double top = NAN, inner = NAN;
    json_t *tv = json_object_get(root, "rope_theta");
    if (tv && !json_is_null(tv) && (st = cfg_num(c, root, "", "rope_theta", 1, 0, &top)) != GT_OK) return st;
    char where[64];
    snprintf(where, sizeof where, "%s.", rkey);
    if (rp && json_object_get(rp, "rope_theta") && (st = cfg_num(c, rp, where, "rope_theta", 1, 0, &inner)) != GT_OK)
        return st;
    if (!isnan(top) && !isnan(inner) && top != inner)
        return gt_fail(c->err, GT_EFORMAT, "%s: 'rope_theta' = %g and '%s.rope_theta' = %g disagree", c->path, top,
                       rkey, inner);
    cfg->rope_theta = !isnan(inner) ? inner : !isnan(top) ? top : 150000.0; // GptOssConfig.default_theta

    // Absent: transformers' GptOssConfig default, YaRN factor 32 over 4096 positions.
    cfg->rope_yarn = 1;
    cfg->yarn_factor = 32.0;
    cfg->yarn_beta_fast = 32.0;
    cfg->yarn_beta_slow = 1.0;
    cfg->yarn_orig_max_pos = 4096;
    cfg->yarn_truncate = 0;
    if (!rp) return GT_OK;

    const char *key;
    json_t *val;
    json_object_foreach(rp, key, val) {
        int known = 0;
        for (size_t i = 0; i < sizeof ROPE_KEYS / sizeof ROPE_KEYS[0]; i++) known |= !strcmp(key, ROPE_KEYS[i]);
        if (!known)
            return gt_fail(c->err, GT_EUNSUPPORTED,
                           "%s: '%s.%s' is not supported (gptoss implements GPT-OSS's YaRN: rope_type, factor, "
                           "beta_fast, beta_slow, original_max_position_embeddings, truncate, rope_theta)",
                           c->path, rkey, key);
    }
    json_t *tyv = json_object_get(rp, "rope_type");
    const char *tkey = "rope_type";
    if (!tyv) tyv = json_object_get(rp, "type"), tkey = "type";
    if (!tyv || !json_is_string(tyv))
        return gt_fail(c->err, GT_EFORMAT, "%s: '%s.rope_type' is missing or not a string", c->path, rkey);
    const char *type = json_string_value(tyv);
    if (!strcmp(type, "default")) {
        cfg->rope_yarn = 0;
        return GT_OK;
    }
    if (strcmp(type, "yarn") != 0)
        return gt_fail(c->err, GT_EUNSUPPORTED, "%s: '%s.%s' = \"%s\" is not supported (yarn or default)", c->path,
                       rkey, tkey, type);
    int orig = 0;
    if ((st = cfg_num(c, rp, where, "factor", 1, 0, &cfg->yarn_factor)) != GT_OK) return st;
    if ((st = cfg_num(c, rp, where, "beta_fast", 0, 32.0, &cfg->yarn_beta_fast)) != GT_OK) return st;
    if ((st = cfg_num(c, rp, where, "beta_slow", 0, 1.0, &cfg->yarn_beta_slow)) != GT_OK) return st;
    if ((st = cfg_int(c, rp, where, "original_max_position_embeddings", 1, 0, &orig)) != GT_OK) return st;
    cfg->yarn_orig_max_pos = orig;
    json_t *tr = json_object_get(rp, "truncate");
    cfg->yarn_truncate = 1; // transformers' _compute_yarn_parameters default
    if (tr && !json_is_null(tr)) {
        if (!json_is_boolean(tr)) return gt_fail(c->err, GT_EFORMAT, "%s: '%s.truncate' must be true or false", c->path, rkey);
        cfg->yarn_truncate = json_is_true(tr);
    }
    if (!(cfg->yarn_factor >= 1.0) || !(cfg->yarn_beta_fast > 0) || !(cfg->yarn_beta_slow > 0) || orig <= 0)
        return gt_fail(c->err, GT_EFORMAT,
                       "%s: '%s' needs factor >= 1, beta_fast > 0, beta_slow > 0, original_max_position_embeddings > 0",
                       c->path, rkey);
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
static gt_status cfg_layers(const cfg_ctx *c, json_t *root, model_config *cfg) {
    json_t *lt = json_object_get(root, "layer_types");
    if (!lt || json_is_null(lt)) { // transformers: even layers sliding
        for (int l = 0; l < cfg->n_layers; l++) cfg->layer_sliding[l] = cfg->sliding_window > 0 && l % 2 == 0;
        return GT_OK;
    }
    if (!json_is_array(lt) || (int)json_array_size(lt) != cfg->n_layers)
        return gt_fail(c->err, GT_EFORMAT, "%s: 'layer_types' must be a list of num_hidden_layers = %d strings", c->path,
                       cfg->n_layers);
    for (int l = 0; l < cfg->n_layers; l++) {
        const char *s = json_string_value(json_array_get(lt, (size_t)l));
        if (s && !strcmp(s, "sliding_attention")) {
            if (cfg->sliding_window <= 0)
                return gt_fail(c->err, GT_EFORMAT, "%s: 'layer_types'[%d] is sliding_attention but 'sliding_window' is %d",
                               c->path, l, cfg->sliding_window);
            cfg->layer_sliding[l] = 1;
        } else if (s && !strcmp(s, "full_attention")) {
            cfg->layer_sliding[l] = 0;
        } else {
            return gt_fail(c->err, GT_EUNSUPPORTED,
                           "%s: 'layer_types'[%d] = %s is not supported (sliding_attention or full_attention)", c->path, l,
                           s ? s : "(not a string)");
        }
    }
    return GT_OK;
}

static gt_status cfg_validate(const cfg_ctx *c, const model_config *cfg) {
    struct {
        const char *key;
        int v;
    } pos[] = {{"hidden_size", cfg->hidden},           {"num_hidden_layers", cfg->n_layers},
               {"num_attention_heads", cfg->n_heads},  {"num_key_value_heads", cfg->n_kv_heads},
               {"head_dim", cfg->head_dim},            {"num_local_experts", cfg->n_experts},
               {"num_experts_per_tok", cfg->top_k},    {"intermediate_size", cfg->intermediate},
               {"vocab_size", cfg->vocab},             {"max_position_embeddings", cfg->max_position}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0) return gt_fail(c->err, GT_EFORMAT, "%s: '%s' = %d must be positive", c->path, pos[i].key, pos[i].v);
    if (cfg->n_layers > MODEL_MAX_LAYERS)
        return gt_fail(c->err, GT_EUNSUPPORTED, "%s: 'num_hidden_layers' = %d exceeds gptoss's limit %d", c->path,
                       cfg->n_layers, MODEL_MAX_LAYERS);
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return gt_fail(c->err, GT_EFORMAT, "%s: 'num_key_value_heads' = %d does not divide 'num_attention_heads' = %d",
                       c->path, cfg->n_kv_heads, cfg->n_heads);
    if (cfg->head_dim % 2 != 0)
        return gt_fail(c->err, GT_EFORMAT, "%s: 'head_dim' = %d must be even (RoPE rotates its two halves)", c->path,
                       cfg->head_dim);
    if (cfg->top_k > cfg->n_experts)
        return gt_fail(c->err, GT_EFORMAT, "%s: 'num_experts_per_tok' = %d exceeds 'num_local_experts' = %d", c->path,
                       cfg->top_k, cfg->n_experts);
    if (!(cfg->rms_eps > 0)) return gt_fail(c->err, GT_EFORMAT, "%s: 'rms_norm_eps' must be positive", c->path);
    if (!(cfg->swiglu_limit > 0)) return gt_fail(c->err, GT_EFORMAT, "%s: 'swiglu_limit' must be positive", c->path);
    if (!(cfg->swiglu_alpha > 0)) return gt_fail(c->err, GT_EFORMAT, "%s: 'swiglu_alpha' must be positive", c->path);
    if (!(cfg->rope_theta > 0)) return gt_fail(c->err, GT_EFORMAT, "%s: 'rope_theta' must be positive", c->path);
    if (cfg->sliding_window < 0) return gt_fail(c->err, GT_EFORMAT, "%s: 'sliding_window' must not be negative", c->path);
    return GT_OK;
}

gt_status model_config_load(model_config *cfg, const char *path, gt_error *err) {
    memset(cfg, 0, sizeof *cfg);
    char *text = NULL;
    size_t len = 0;
    gt_status st = fs_read_file(path, &text, &len, err);
    if (st != GT_OK) return st;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root) return gt_fail(err, GT_EFORMAT, "%s:%d:%d: not valid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    cfg_ctx c = {path, err};
    double d;
    if (!json_is_object(root)) {
        st = gt_fail(err, GT_EFORMAT, "%s: the top level must be a JSON object", path);
        goto done;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "gpt_oss") != 0)) {
        st = gt_fail(err, GT_EUNSUPPORTED, "%s: 'model_type' is %s, not \"gpt_oss\" (gptoss runs GPT-OSS models only)",
                     path, json_is_string(mt) ? json_string_value(mt) : "not a string");
        goto done;
    }
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        if ((st = (x)) != GT_OK) goto done;                                                                    \
    } while (0)
    TRY(cfg_int(&c, root, "", "hidden_size", 1, 0, &cfg->hidden));
    TRY(cfg_int(&c, root, "", "num_hidden_layers", 1, 0, &cfg->n_layers));
    TRY(cfg_int(&c, root, "", "num_attention_heads", 1, 0, &cfg->n_heads));
    TRY(cfg_int(&c, root, "", "num_key_value_heads", 1, 0, &cfg->n_kv_heads));
    TRY(cfg_int(&c, root, "", "intermediate_size", 1, 0, &cfg->intermediate));
    TRY(cfg_int(&c, root, "", "vocab_size", 1, 0, &cfg->vocab));
    TRY(cfg_int_alias(&c, root, "num_local_experts", "num_experts", &cfg->n_experts));
    TRY(cfg_int_alias(&c, root, "num_experts_per_tok", "experts_per_token", &cfg->top_k));
    if (cfg->n_heads <= 0) {
        st = gt_fail(err, GT_EFORMAT, "%s: 'num_attention_heads' = %d must be positive", path, cfg->n_heads);
        goto done;
    }
    if (!json_object_get(root, "head_dim") && cfg->hidden % cfg->n_heads != 0) {
        st = gt_fail(err, GT_EFORMAT, "%s: 'head_dim' is missing and hidden_size %d is not a multiple of %d heads", path,
                     cfg->hidden, cfg->n_heads);
        goto done;
    }
    TRY(cfg_int(&c, root, "", "head_dim", 0, cfg->hidden / cfg->n_heads, &cfg->head_dim));
    TRY(cfg_num(&c, root, "", "rms_norm_eps", 0, 1e-5, &d));
    cfg->rms_eps = (float)d;
    TRY(cfg_num(&c, root, "", "swiglu_limit", 0, 7.0, &d));
    cfg->swiglu_limit = (float)d;
    TRY(cfg_num(&c, root, "", "swiglu_alpha", 0, 1.702, &d));
    cfg->swiglu_alpha = (float)d;
    json_t *sw = json_object_get(root, "sliding_window");
    if (sw && json_is_null(sw)) cfg->sliding_window = 0;
    else TRY(cfg_int(&c, root, "", "sliding_window", 0, 128, &cfg->sliding_window));
    TRY(cfg_int(&c, root, "", "max_position_embeddings", 0, 131072, &cfg->max_position));
    TRY(cfg_bool(&c, root, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    TRY(cfg_bool(&c, root, "attention_bias", 1, &cfg->attention_bias));
    TRY(cfg_token_id(&c, root, "eos_token_id", &cfg->eos_token_id));
    TRY(cfg_token_id(&c, root, "pad_token_id", &cfg->pad_token_id));
    TRY(cfg_rope(&c, root, cfg));
    TRY(cfg_validate(&c, cfg));
    TRY(cfg_layers(&c, root, cfg));
#undef TRY
done:
    json_decref(root);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Presets. "tiny" obeys DESIGN.md's no-bug-hiding rules (model/NOTES.md has the reasoning): D 64 != 2I 192,
// D != I, D != H*HD = 96, 6 query heads over 2 KV heads (groups of 3), window 8, 4 experts top-2, 4 layers;
// D and I multiples of 32 so MXFP4 applies. Its vocabulary defaults to o200k_harmony's 201088 so the real
// tokenizer's ids (special tokens up to 201087) fit; tests pass a smaller --vocab.
static void preset_common(model_config *cfg) {
    cfg->rms_eps = 1e-5f;
    cfg->swiglu_limit = 7.0f;
    cfg->swiglu_alpha = 1.702f;
    cfg->rope_theta = 150000.0;
    cfg->rope_yarn = 1;
    cfg->yarn_factor = 32.0;
    cfg->yarn_beta_fast = 32.0;
    cfg->yarn_beta_slow = 1.0;
    cfg->yarn_orig_max_pos = 4096;
    cfg->yarn_truncate = 0;
    cfg->max_position = 131072;
    cfg->tie_word_embeddings = 0;
    cfg->attention_bias = 1;
    cfg->vocab = 201088;
    cfg->eos_token_id = 200002; // <|return|>
    cfg->pad_token_id = 199999; // <|endoftext|>
}

gt_status model_config_preset(model_config *cfg, const char *preset, int n_layers, int vocab, gt_error *err) {
    memset(cfg, 0, sizeof *cfg);
    preset_common(cfg);
    if (!strcmp(preset, "tiny")) {
        cfg->hidden = 64;
        cfg->n_layers = 4;
        cfg->n_heads = 6;
        cfg->n_kv_heads = 2;
        cfg->head_dim = 16;
        cfg->n_experts = 4;
        cfg->top_k = 2;
        cfg->intermediate = 96;
        cfg->sliding_window = 8;
    } else if (!strcmp(preset, "gpt-oss-20b")) {
        cfg->hidden = 2880;
        cfg->n_layers = 24;
        cfg->n_heads = 64;
        cfg->n_kv_heads = 8;
        cfg->head_dim = 64;
        cfg->n_experts = 32;
        cfg->top_k = 4;
        cfg->intermediate = 2880;
        cfg->sliding_window = 128;
    } else {
        return gt_fail(err, GT_EINVAL, "unknown preset '%s' (tiny or gpt-oss-20b)", preset);
    }
    if (n_layers < 0 || n_layers > MODEL_MAX_LAYERS)
        return gt_fail(err, GT_EINVAL, "--layers %d: must be 1..%d", n_layers, MODEL_MAX_LAYERS);
    if (n_layers > 0) cfg->n_layers = n_layers;
    if (vocab < 0) return gt_fail(err, GT_EINVAL, "--vocab %d: must be positive", vocab);
    if (vocab > 0) cfg->vocab = vocab;
    // Token ids must lie in the vocabulary: a small test vocabulary gets its last id as eos and pad.
    if (cfg->eos_token_id >= cfg->vocab) cfg->eos_token_id = cfg->vocab - 1;
    if (cfg->pad_token_id >= cfg->vocab) cfg->pad_token_id = cfg->vocab - 1;
    for (int l = 0; l < cfg->n_layers; l++) cfg->layer_sliding[l] = l % 2 == 0;
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// Writing. Floats are written as the shortest decimal that reads back to the same float (1e-05, not
// 9.99999974737875e-06), the way Python prints them.
static json_t *json_float(float f) {
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *json_token(int id) { return id >= 0 ? json_integer(id) : json_null(); }

gt_status model_config_write(const model_config *cfg, model_quant quant, const char *path, gt_error *err) {
    json_t *o = json_object();
    json_object_set_new(o, "architectures", json_pack("[s]", "GptOssForCausalLM"));
    json_object_set_new(o, "attention_bias", json_boolean(cfg->attention_bias));
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "eos_token_id", json_token(cfg->eos_token_id));
    json_object_set_new(o, "experts_per_token", json_integer(cfg->top_k));
    json_object_set_new(o, "head_dim", json_integer(cfg->head_dim));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "hidden_size", json_integer(cfg->hidden));
    json_object_set_new(o, "initial_context_length", json_integer(cfg->rope_yarn ? cfg->yarn_orig_max_pos : cfg->max_position));
    json_object_set_new(o, "initializer_range", json_real(0.02));
    json_object_set_new(o, "intermediate_size", json_integer(cfg->intermediate));
    json_t *lt = json_array();
    for (int l = 0; l < cfg->n_layers; l++)
        json_array_append_new(lt, json_string(cfg->layer_sliding[l] ? "sliding_attention" : "full_attention"));
    json_object_set_new(o, "layer_types", lt);
    json_object_set_new(o, "max_position_embeddings", json_integer(cfg->max_position));
    json_object_set_new(o, "model_type", json_string("gpt_oss"));
    json_object_set_new(o, "num_attention_heads", json_integer(cfg->n_heads));
    json_object_set_new(o, "num_experts_per_tok", json_integer(cfg->top_k));
    json_object_set_new(o, "num_hidden_layers", json_integer(cfg->n_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(cfg->n_kv_heads));
    json_object_set_new(o, "num_local_experts", json_integer(cfg->n_experts));
    json_object_set_new(o, "output_router_logits", json_false());
    json_object_set_new(o, "pad_token_id", json_token(cfg->pad_token_id));
    if (quant == MQ_MXFP4) { // openai/gpt-oss-20b's, verbatim
        json_object_set_new(o, "quantization_config",
                            json_pack("{s:[s,s,s,s],s:s}", "modules_to_not_convert", "model.layers.*.self_attn",
                                      "model.layers.*.mlp.router", "model.embed_tokens", "lm_head", "quant_method",
                                      "mxfp4"));
    } else if (quant == MQ_NF4) { // what transformers' BitsAndBytesConfig(load_in_4bit, nf4, double quant) saves
        json_object_set_new(
            o, "quantization_config",
            json_pack("{s:b,s:b,s:s,s:s,s:s,s:b,s:b,s:b,s:[s,s,s],s:f,s:b,s:b,s:s}", "_load_in_4bit", 1, "_load_in_8bit", 0,
                      "bnb_4bit_compute_dtype", "bfloat16", "bnb_4bit_quant_storage", "uint8", "bnb_4bit_quant_type",
                      "nf4", "bnb_4bit_use_double_quant", 1, "llm_int8_enable_fp32_cpu_offload", 0,
                      "llm_int8_has_fp16_weight", 0, "llm_int8_skip_modules", "router", "lm_head", "embed_tokens",
                      "llm_int8_threshold", 6.0, "load_in_4bit", 1, "load_in_8bit", 0, "quant_method", "bitsandbytes"));
    }
    json_object_set_new(o, "rms_norm_eps", json_float(cfg->rms_eps));
    if (cfg->rope_yarn)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:f,s:f,s:f,s:i,s:s,s:b}", "beta_fast", cfg->yarn_beta_fast, "beta_slow",
                                      cfg->yarn_beta_slow, "factor", cfg->yarn_factor, "original_max_position_embeddings",
                                      cfg->yarn_orig_max_pos, "rope_type", "yarn", "truncate", cfg->yarn_truncate));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "rope_theta", json_real(cfg->rope_theta));
    json_object_set_new(o, "router_aux_loss_coef", json_real(0.9));
    json_object_set_new(o, "sliding_window", cfg->sliding_window > 0 ? json_integer(cfg->sliding_window) : json_null());
    json_object_set_new(o, "swiglu_limit", json_float(cfg->swiglu_limit));
    json_object_set_new(o, "swiglu_alpha", json_float(cfg->swiglu_alpha));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(cfg->tie_word_embeddings));
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "vocab_size", json_integer(cfg->vocab));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(o);
    CHECK(text);
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    gt_status st = fs_write_atomic(path, text, n + 1, err);
    free(text);
    return st;
}

// ---------------------------------------------------------------------------------------------------
static const char *const QUANT_NAMES[] = {[MQ_AUTO] = "auto", [MQ_BF16] = "bf16", [MQ_MXFP4] = "mxfp4", [MQ_NF4] = "nf4"};

gt_status model_quant_parse(const char *s, model_quant *q, gt_error *err) {
    for (int i = 0; i <= MQ_NF4; i++)
        if (!strcmp(s, QUANT_NAMES[i])) {
            *q = (model_quant)i;
            return GT_OK;
        }
    return gt_fail(err, GT_EINVAL, "quant '%s' is not one of auto, bf16, mxfp4, nf4", s);
}

const char *model_quant_name(model_quant q) { return (unsigned)q <= MQ_NF4 ? QUANT_NAMES[q] : "?"; }
