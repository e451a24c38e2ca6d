// config.json: openai/gpt-oss-20b's own file (transformers 4.55 names), a transformers-5 style file
// (rope_parameters with rope_theta inside, num_experts, eos list, no layer_types), the presets and their
// no-bug-hiding rules, write -> read round trip, and malformed files: each an error naming file and key.
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

// openai/gpt-oss-20b config.json as published (transformers 4.55.0.dev0).
static const char *REAL =
    "{\"architectures\": [\"GptOssForCausalLM\"], \"attention_bias\": true, \"attention_dropout\": 0.0,"
    " \"eos_token_id\": 200002, \"experts_per_token\": 4, \"head_dim\": 64, \"hidden_act\": \"silu\","
    " \"hidden_size\": 2880, \"initial_context_length\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 2880,"
    " \"layer_types\": [\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\","
    " \"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\","
    " \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\","
    " \"full_attention\", \"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\"],"
    " \"max_position_embeddings\": 131072, \"model_type\": \"gpt_oss\", \"num_attention_heads\": 64,"
    " \"num_experts_per_tok\": 4, \"num_hidden_layers\": 24, \"num_key_value_heads\": 8, \"num_local_experts\": 32,"
    " \"output_router_logits\": false, \"pad_token_id\": 199999, \"quantization_config\": {\"modules_to_not_convert\":"
    " [\"model.layers.*.self_attn\", \"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"],"
    " \"quant_method\": \"mxfp4\"}, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0,"
    " \"factor\": 32.0, \"original_max_position_embeddings\": 4096, \"rope_type\": \"yarn\", \"truncate\": false},"
    " \"rope_theta\": 150000, \"router_aux_loss_coef\": 0.9, \"sliding_window\": 128, \"swiglu_limit\": 7.0,"
    " \"tie_word_embeddings\": false, \"transformers_version\": \"4.55.0.dev0\", \"use_cache\": true,"
    " \"vocab_size\": 201088}";

// A small transformers-5 style file; %s slots let the error cases replace pieces.
static const char *V5 =
    "{\"model_type\": \"gpt_oss\", \"hidden_size\": 48, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"head_dim\": 16, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
    " \"intermediate_size\": 40, \"vocab_size\": 300, \"sliding_window\": 8, \"eos_token_id\": [299, 298],"
    " \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 8.0, \"original_max_position_embeddings\": 512,"
    " \"rope_theta\": 10000.0, \"truncate\": true}}";

static char *tmp_path(const char *name) {
    char *dir = test_tmpdir("test_model_config");
    char *path = xasprintf("%s/%d_%s", dir, (int)getpid(), name);
    free(dir);
    return path;
}

static gt_status load_text(const char *text, model_config *cfg, gt_error *err, char **path_out) {
    char *path = tmp_path("config.json");
    test_write_file(path, text, strlen(text));
    gt_status s = model_config_load(cfg, path, err);
    unlink(path);
    if (path_out) *path_out = path;
    else free(path);
    return s;
}

static void test_real(void) {
    model_config c;
    gt_error err;
    EXPECT(load_text(REAL, &c, &err, NULL) == GT_OK, "real config: %s", err.msg);
    EXPECT(c.hidden == 2880 && c.n_layers == 24 && c.n_heads == 64 && c.n_kv_heads == 8 && c.head_dim == 64,
           "real shapes");
    EXPECT(c.n_experts == 32 && c.top_k == 4 && c.intermediate == 2880 && c.vocab == 201088, "real moe/vocab");
    EXPECT(c.rms_eps == 1e-5f && c.swiglu_limit == 7.0f && c.swiglu_alpha == 1.702f, "real eps/limit/alpha");
    EXPECT(c.sliding_window == 128 && c.max_position == 131072, "real window/max_pos");
    for (int l = 0; l < 24; l++) EXPECT(c.layer_sliding[l] == (l % 2 == 0), "layer %d sliding", l);
    EXPECT(c.rope_theta == 150000.0 && c.rope_yarn == 1 && c.yarn_factor == 32.0 && c.yarn_beta_fast == 32.0 &&
               c.yarn_beta_slow == 1.0 && c.yarn_orig_max_pos == 4096 && c.yarn_truncate == 0,
           "real rope");
    EXPECT(!c.tie_word_embeddings && c.attention_bias && c.eos_token_id == 200002 && c.pad_token_id == 199999,
           "real flags/ids");
}

static void test_v5(void) {
    model_config c;
    gt_error err;
    EXPECT(load_text(V5, &c, &err, NULL) == GT_OK, "v5 config: %s", err.msg);
    EXPECT(c.n_experts == 4 && c.top_k == 2 && c.hidden == 48 && c.head_dim == 16, "v5 aliases");
    EXPECT(c.rope_theta == 10000.0 && c.yarn_factor == 8.0 && c.yarn_orig_max_pos == 512 && c.yarn_truncate == 1 &&
               c.yarn_beta_fast == 32.0 && c.yarn_beta_slow == 1.0,
           "v5 rope_parameters (theta inside, beta defaults)");
    EXPECT(c.layer_sliding[0] == 1 && c.layer_sliding[1] == 0 && c.layer_sliding[2] == 1, "v5 derived layer types");
    EXPECT(c.eos_token_id == 299 && c.pad_token_id == -1, "v5 eos list -> first; no pad -> -1");
    EXPECT(c.swiglu_limit == 7.0f && c.attention_bias == 1 && c.max_position == 131072, "v5 defaults");
}

// Each case: the v5 text with one substring replaced; the error must name the file and contain `want`.
static void test_errors(void) {
    static const struct {
        const char *from, *to, *want;
    } CASES[] = {
        {"\"hidden_size\": 48,", "", "'hidden_size' is missing"},
        {"\"hidden_size\": 48", "\"hidden_size\": \"48\"", "'hidden_size' must be an integer"},
        {"\"hidden_size\": 48", "\"hidden_size\": -48", "'hidden_size' = -48 must be positive"},
        {"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "does not divide"},
        {"\"head_dim\": 16", "\"head_dim\": 15", "'head_dim' = 15 must be even"},
        {"\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5", "exceeds 'num_local_experts'"},
        {"\"num_experts\": 4, \"num_experts_per_tok\": 2,", "", "'num_local_experts' (or 'num_experts') is missing"},
        {"\"num_experts\": 4", "\"num_experts\": 4, \"num_local_experts\": 8", "disagree"},
        {"\"rope_type\": \"yarn\"", "\"rope_type\": \"linear\"", "rope_parameters.rope_type' = \"linear\" is not supported"},
        {"\"truncate\": true", "\"truncate\": true, \"attention_factor\": 2.0", "'rope_parameters.attention_factor' is not supported"},
        {"\"factor\": 8.0, ", "", "'rope_parameters.factor' is missing"},
        {"\"factor\": 8.0", "\"factor\": 0.5", "factor >= 1"},
        {"\"model_type\": \"gpt_oss\"", "\"model_type\": \"llama\"", "not \"gpt_oss\""},
        {"\"sliding_window\": 8,", "\"sliding_window\": 8, \"layer_types\": [\"full_attention\"],", "list of num_hidden_layers = 3"},
        {"\"sliding_window\": 8,", "\"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"chunked_attention\", \"full_attention\"],",
         "'layer_types'[1] = chunked_attention is not supported"},
        {"\"sliding_window\": 8,", "\"sliding_window\": null, \"layer_types\": [\"sliding_attention\", \"full_attention\", \"full_attention\"],",
         "sliding_attention but 'sliding_window' is 0"},
        {"\"eos_token_id\": [299, 298]", "\"eos_token_id\": \"x\"", "'eos_token_id' must be"},
        {"\"model_type\"", "\"rope_theta\": 500.0, \"model_type\"", "disagree"},
        {"\"num_hidden_layers\": 3", "\"num_hidden_layers\": 300", "exceeds gptoss's limit"},
        {"\"truncate\": true}}", "\"truncate\": true}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const char *at = strstr(V5, CASES[i].from);
        CHECK(at);
        char *text = xasprintf("%.*s%s%s", (int)(at - V5), V5, CASES[i].to, at + strlen(CASES[i].from));
        model_config c;
        gt_error err = {0};
        char *path;
        gt_status s = load_text(text, &c, &err, &path);
        EXPECT(s != GT_OK && strstr(err.msg, CASES[i].want) && strstr(err.msg, path),
               "case %zu: want an error with \"%s\" naming %s; got %s: %s", i, CASES[i].want, path, gt_status_name(s),
               s ? err.msg : "ok");
        free(path);
        free(text);
    }
    model_config c;
    gt_error err;
    EXPECT(model_config_load(&c, "/nonexistent/config.json", &err) == GT_ENOTFOUND && strstr(err.msg, "/nonexistent"),
           "missing file: %s", err.msg);
}

static void test_presets(void) {
    model_config t, b, r;
    gt_error err;
    EXPECT(model_config_preset(&t, "tiny", 0, 0, &err) == GT_OK, "tiny: %s", err.msg);
    // DESIGN.md's no-bug-hiding rules.
    EXPECT(t.hidden != 2 * t.intermediate && t.hidden != t.intermediate, "tiny: D vs I");
    EXPECT(t.hidden != t.n_heads * t.head_dim, "tiny: D vs H*HD");
    EXPECT(t.n_kv_heads >= 2 && t.n_heads / t.n_kv_heads >= 2, "tiny: GQA");
    EXPECT(t.sliding_window > 0 && t.sliding_window < 16, "tiny: window shorter than test sequences");
    EXPECT(t.n_experts >= 4 && t.top_k >= 2 && t.n_layers >= 4, "tiny: experts/layers");
    EXPECT(t.hidden % 32 == 0 && t.intermediate % 32 == 0, "tiny: MXFP4-able");
    EXPECT(t.vocab == 201088 && t.eos_token_id == 200002, "tiny: the real tokenizer fits");
    EXPECT(model_config_preset(&t, "tiny", 6, 512, &err) == GT_OK && t.n_layers == 6 && t.vocab == 512 &&
               t.eos_token_id == 511 && t.pad_token_id == 511,
           "tiny overrides");
    EXPECT(model_config_preset(&b, "gpt-oss-20b", 0, 0, &err) == GT_OK, "20b: %s", err.msg);
    EXPECT(b.hidden == 2880 && b.n_layers == 24 && b.n_heads == 64 && b.n_kv_heads == 8 && b.head_dim == 64 &&
               b.n_experts == 32 && b.top_k == 4 && b.intermediate == 2880 && b.vocab == 201088 && b.sliding_window == 128,
           "20b shapes");
    EXPECT(model_config_preset(&b, "gpt-oss-120b", 0, 0, &err) == GT_EINVAL && strstr(err.msg, "gpt-oss-120b"),
           "unknown preset");
    EXPECT(model_config_preset(&b, "tiny", 999, 0, &err) == GT_EINVAL, "too many layers");

    // Presets written and read back: the same config; the 20B's file equals openai's in every field we read.
    model_config real;
    CHECK(load_text(REAL, &real, &err, NULL) == GT_OK);
    CHECK(model_config_preset(&b, "gpt-oss-20b", 0, 0, &err) == GT_OK);
    EXPECT(!memcmp(&b, &real, sizeof b), "20b preset differs from openai's config.json");
    model_quant quants[3] = {MQ_BF16, MQ_MXFP4, MQ_NF4};
    for (int q = 0; q < 3; q++) {
        CHECK(model_config_preset(&t, "tiny", 0, 1000, &err) == GT_OK);
        char *path = tmp_path("written.json");
        EXPECT(model_config_write(&t, quants[q], path, &err) == GT_OK, "write: %s", err.msg);
        EXPECT(model_config_load(&r, path, &err) == GT_OK, "read back: %s", err.msg);
        EXPECT(!memcmp(&t, &r, sizeof t), "tiny config changed through write/read (%s)", model_quant_name(quants[q]));
        char *text;
        CHECK(fs_read_file(path, &text, NULL, &err) == GT_OK);
        EXPECT(!strstr(text, "quantization_config") == (quants[q] == MQ_BF16), "quantization_config presence");
        EXPECT(quants[q] != MQ_MXFP4 || strstr(text, "\"quant_method\": \"mxfp4\""), "mxfp4 quant_method");
        EXPECT(quants[q] != MQ_NF4 || strstr(text, "\"quant_method\": \"bitsandbytes\""), "bnb quant_method");
        EXPECT(strstr(text, "\"rms_norm_eps\": 1e-05") || strstr(text, "\"rms_norm_eps\": 1e-5"), "short floats: %.200s", text);
        free(text);
        unlink(path);
        free(path);
    }
    model_quant mq;
    EXPECT(model_quant_parse("nf4", &mq, &err) == GT_OK && mq == MQ_NF4, "parse nf4");
    EXPECT(model_quant_parse("int8", &mq, &err) == GT_EINVAL && strstr(err.msg, "mxfp4"), "parse int8");
}

int main(void) {
    test_real();
    test_v5();
    test_errors();
    test_presets();
    return test_finish("test_model_config");
}
