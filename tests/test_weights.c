// Weight loading in the three layouts, through models init-model writes (model_write_random: the same
// bf16 values in every format, tests/ref/make_quant_fixture.py --gptoss checks those files against
// transformers and bitsandbytes):
//   - every non-expert tensor is the same in the bf16, mxfp4 and nf4 files (q/k/v/o within NF4 error in
//     Unsloth's layout, which quantizes them), and a sharded copy loads identically;
//   - the HF BF16 layout is transposed on load ([E, in, out] -> [out, in]), checked against the raw file;
//   - quantize-on-load of the bf16 model gives byte-identical MXFP4 blocks/scales and NF4 codes to the files
//     written in those formats (the NF4 values differ only by the files' nested absmax);
//   - 4-bit -> bf16 on load is exact, nf4 -> mxfp4 works; Unsloth's layout with 16-bit experts loads;
//   - config.json and safetensors that disagree are errors naming the tensor and file.
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

static model_config CFG;
static char *TMP;

// max |a - b| over n, with the place of the worst; tol 0 means bitwise equality.
static void expect_close(const char *what, const float *a, const float *b, size_t n, float tol) {
    float worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > worst || (d != d)) worst = d, at = i;
    }
    EXPECT(worst <= tol, "%s: max |diff| %g > %g at %zu (%.9g vs %.9g)", what, worst, tol, at, a[at], b[at]);
}

static float maxabs(const float *a, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i]));
    return m;
}

static float *dequant(const qmatrix *q) {
    float *w = xmalloc((size_t)q->rows * q->cols * sizeof(float));
    qmatrix_dequant_rows(q, 0, q->rows, w);
    return w;
}

// Compares every expert of two models: bitwise when tol_rel == 0, else within tol_rel * max|a|.
static void expect_experts(const char *what, const model *a, const model *b, float tol_rel) {
    for (int l = 0; l < CFG.n_layers; l++)
        for (int e = 0; e < CFG.n_experts; e++)
            for (int which = 0; which < 2; which++) {
                const qmatrix *qa = which ? &a->layers[l].down[e] : &a->layers[l].gate_up[e];
                const qmatrix *qb = which ? &b->layers[l].down[e] : &b->layers[l].gate_up[e];
                float *wa = dequant(qa), *wb = dequant(qb);
                size_t n = (size_t)qa->rows * qa->cols;
                char msg[160];
                snprintf(msg, sizeof msg, "%s: layer %d expert %d %s", what, l, e, which ? "down" : "gate_up");
                expect_close(msg, wa, wb, n, tol_rel * maxabs(wa, n));
                free(wa), free(wb);
            }
}

static void expect_dense(const char *what, const model *a, const model *b, int attn_exact) {
    int64_t D = CFG.hidden, V = CFG.vocab, Q = CFG.n_heads * CFG.head_dim, KV = CFG.n_kv_heads * CFG.head_dim;
    int64_t E = CFG.n_experts, I = CFG.intermediate;
    char msg[128];
    expect_close("embed", a->embed, b->embed, (size_t)(V * D), 0);
    expect_close("lm_head", a->lm_head, b->lm_head, (size_t)(V * D), 0);
    expect_close("norm", a->norm, b->norm, (size_t)D, 0);
    for (int l = 0; l < CFG.n_layers; l++) {
        const model_layer *x = &a->layers[l], *y = &b->layers[l];
        struct {
            const char *name;
            const float *p, *q;
            int64_t n;
            int proj;
        } T[] = {{"attn_norm", x->attn_norm, y->attn_norm, D, 0},    {"wq", x->wq, y->wq, Q * D, 1},
                 {"bq", x->bq, y->bq, Q, 0},                          {"wk", x->wk, y->wk, KV * D, 1},
                 {"bk", x->bk, y->bk, KV, 0},                         {"wv", x->wv, y->wv, KV * D, 1},
                 {"bv", x->bv, y->bv, KV, 0},                         {"wo", x->wo, y->wo, D * Q, 1},
                 {"bo", x->bo, y->bo, D, 0},                          {"sinks", x->sinks, y->sinks, CFG.n_heads, 0},
                 {"mlp_norm", x->mlp_norm, y->mlp_norm, D, 0},        {"router_w", x->router_w, y->router_w, E * D, 0},
                 {"router_b", x->router_b, y->router_b, E, 0},        {"gate_up_b", x->gate_up_b, y->gate_up_b, E * 2 * I, 0},
                 {"down_b", x->down_b, y->down_b, E * D, 0}};
        for (size_t t = 0; t < sizeof T / sizeof T[0]; t++) {
            snprintf(msg, sizeof msg, "%s: layer %d %s", what, l, T[t].name);
            // NF4 (Unsloth quantizes q/k/v/o): the largest NF4 gap (0.723..1) is 0.277 of the block absmax, so
            // the error is at most 0.139 of it, plus the nested absmax's 8-bit error: 0.16 of the tensor's max.
            float tol = (T[t].proj && !attn_exact) ? 0.16f * maxabs(T[t].p, (size_t)T[t].n) : 0;
            expect_close(msg, T[t].p, T[t].q, (size_t)T[t].n, tol);
        }
    }
}

static char *write_model(const char *name, model_quant q, double max_file_bytes) {
    char *dir = xasprintf("%s/%s", TMP, name);
    gt_error err;
    gt_status s = model_write_random(&CFG, q, 5, dir, max_file_bytes, &err);
    EXPECT(s == GT_OK, "write %s: %s", name, err.msg);
    return dir;
}

static void load(model *m, const char *dir, model_quant q) {
    gt_error err;
    gt_status s = model_load(m, dir, q, &err);
    if (s != GT_OK) {
        printf("FAIL: model_load %s (%s): %s\n", dir, model_quant_name(q), err.msg);
        exit(1);
    }
}

// The HF BF16 file against the loaded qmatrix: file [E, in, out], qmatrix [out, in].
static void test_bf16_transpose(const char *dir, const model *m) {
    safetensors st;
    gt_error err;
    CHECK(safetensors_open(&st, dir, &err) == GT_OK);
    const st_tensor *t = safetensors_find(&st, "model.layers.1.mlp.experts.gate_up_proj");
    CHECK(t && t->dtype == DT_BF16);
    int E = CFG.n_experts, D = CFG.hidden, O = 2 * CFG.intermediate;
    for (int e = 0; e < E; e++) {
        float *w = dequant(&m->layers[1].gate_up[e]);
        int bad = 0;
        for (int r = 0; r < O; r++)
            for (int c = 0; c < D; c++) {
                uint16_t h;
                memcpy(&h, t->data + (((size_t)e * D + c) * O + r) * 2, 2);
                bad += bf16_to_f32(h) != w[(size_t)r * D + c];
            }
        EXPECT(bad == 0, "expert %d: %d gate_up values are not the transpose of the file's", e, bad);
        free(w);
    }
    safetensors_close(&st);
}

// Rewrites the bf16 model in Unsloth's layout with 16-bit (unquantized) experts: per-expert
// gate_up_projs.{e}.weight [2I, D] / down_projs.{e}.weight [D, I] with .bias, router at router.linear.
static char *write_unsloth16(const char *bf16_dir) {
    safetensors st;
    gt_error err;
    CHECK(safetensors_open(&st, bf16_dir, &err) == GT_OK);
    int n = 0, cap = st.n_tensors + 4 * CFG.n_layers * CFG.n_experts;
    st_write_tensor *w = xcalloc((size_t)cap, sizeof *w);
    void **bufs = xcalloc((size_t)cap, sizeof *bufs);
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        const char *nm = t->name, *p;
        if ((p = strstr(nm, "mlp.experts."))) {
            int which = strstr(p, "down_proj") != NULL, is_bias = strstr(p, "_bias") != NULL;
            int64_t E = t->shape[0], a = t->shape[1], b = is_bias ? 1 : t->shape[2];
            for (int e = 0; e < E; e++) {
                uint16_t *dst = xmalloc((size_t)(a * b) * 2);
                const uint8_t *src = t->data + (size_t)(e * a * b) * 2;
                for (int64_t i0 = 0; i0 < a; i0++) // weights [in, out] -> [out, in]; biases copy
                    for (int64_t j = 0; j < b; j++) memcpy(&dst[is_bias ? i0 : j * a + i0], src + (size_t)(i0 * b + j) * 2, 2);
                char *name = xasprintf("%.*s%s.%d.%s", (int)(p - nm) + 12, nm, which ? "down_projs" : "gate_up_projs", e,
                                       is_bias ? "bias" : "weight");
                w[n] = (st_write_tensor){.name = name, .dtype = DT_BF16, .ndim = is_bias ? 1 : 2, .data = dst};
                w[n].shape[0] = is_bias ? a : b, w[n].shape[1] = a;
                bufs[n++] = dst;
            }
            continue;
        }
        char *name = (p = strstr(nm, "mlp.router.")) ? xasprintf("%.*srouter.linear.%s", (int)(p - nm) + 4, nm, p + 11)
                                                    : xstrdup(nm);
        w[n] = (st_write_tensor){.name = name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(w[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    char *dir = xasprintf("%s/unsloth16", TMP), *file = xasprintf("%s/model.safetensors", dir);
    char *cfg_src = fs_join(bf16_dir, "config.json"), *cfg_dst = fs_join(dir, "config.json"), *text;
    size_t len;
    CHECK(fs_mkdirs(dir, &err) == GT_OK);
    CHECK(fs_read_file(cfg_src, &text, &len, &err) == GT_OK);
    test_write_file(cfg_dst, text, len);
    EXPECT(safetensors_write(file, w, n, NULL, 0, &err) == GT_OK, "write unsloth16: %s", err.msg);
    for (int i = 0; i < n; i++) free((char *)w[i].name), free(bufs[i]);
    free(w), free(bufs), free(file), free(cfg_src), free(cfg_dst), free(text);
    safetensors_close(&st);
    return dir;
}

// A copy of dir whose config.json has key set to value (and layer_types dropped, so that a changed layer
// count stays consistent), pointing at the same safetensors.
static char *config_variant(const char *dir, const char *key, int value) {
    gt_error err;
    char *vdir = xasprintf("%s/variant_%s_%d", TMP, key, value), *src = fs_join(dir, "config.json");
    char *dst = fs_join(vdir, "config.json");
    char *st_src = fs_join(dir, "model.safetensors"), *st_dst = fs_join(vdir, "model.safetensors");
    CHECK(fs_mkdirs(vdir, &err) == GT_OK);
    json_t *j = json_load_file(src, 0, NULL);
    CHECK(j && json_object_get(j, key));
    json_object_set_new(j, key, json_integer(value));
    json_object_del(j, "layer_types");
    CHECK(json_dump_file(j, dst, JSON_INDENT(2)) == 0);
    json_decref(j);
    unlink(st_dst);
    CHECK(symlink(st_src, st_dst) == 0);
    free(src), free(dst), free(st_src), free(st_dst);
    return vdir;
}

static void test_errors(const char *bf16_dir, const char *mx_dir) {
    static const struct {
        const char *key;
        int value;
        const char *want;
        int mx;
    } CASES[] = {
        {"hidden_size", 32, "model.embed_tokens.weight has shape [512, 64], expected [512, 32]", 0},
        {"num_hidden_layers", 3, "more layers", 0},
        {"num_hidden_layers", 5, "tensor model.layers.4.input_layernorm.weight is missing", 0},
        {"num_local_experts", 5, "model.layers.0.mlp.router.weight has shape [4, 64], expected [5, 64]", 0},
        {"intermediate_size", 64, "gate_up_proj_blocks is U8 with 4 dims, expected U8 [4, 128", 1},
        {"vocab_size", 1000, "model.embed_tokens.weight has shape [512, 64], expected [1000, 64]", 1},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char *vdir = config_variant(CASES[i].mx ? mx_dir : bf16_dir, CASES[i].key, CASES[i].value);
        model m;
        gt_error err = {0};
        gt_status s = model_load(&m, vdir, MQ_AUTO, &err);
        EXPECT(s != GT_OK && strstr(err.msg, CASES[i].want) && strstr(err.msg, vdir),
               "%s = %d: want an error with \"%s\" naming the file; got %s: %s", CASES[i].key, CASES[i].value,
               CASES[i].want, gt_status_name(s), s ? err.msg : "ok");
        free(vdir);
    }
}

int main(void) {
    gt_error err;
    char *base = test_tmpdir("test_weights");
    TMP = xasprintf("%s/%d", base, (int)getpid());
    free(base);
    CHECK(model_config_preset(&CFG, "tiny", 4, 512, &err) == GT_OK);
    char *d_bf = write_model("bf16", MQ_BF16, 0), *d_mx = write_model("mxfp4", MQ_MXFP4, 0),
         *d_nf = write_model("nf4", MQ_NF4, 0), *d_sh = write_model("bf16_sharded", MQ_BF16, 1);
    char *single = fs_join(d_sh, "model.safetensors");
    EXPECT(fs_exists(d_sh) && !fs_exists(single), "sharded: no single file");
    free(single);

    model bf, mx, nf, sh;
    load(&bf, d_bf, MQ_AUTO), load(&mx, d_mx, MQ_AUTO), load(&nf, d_nf, MQ_AUTO), load(&sh, d_sh, MQ_AUTO);
    EXPECT(!memcmp(&bf.cfg, &CFG, sizeof CFG), "config.json read back differs from the preset");
    EXPECT(bf.expert_format == WF_BF16 && mx.expert_format == WF_MXFP4 && nf.expert_format == WF_NF4,
           "expert formats %d %d %d", bf.expert_format, mx.expert_format, nf.expert_format);
    EXPECT(sh.st.n_files == CFG.n_layers + 1, "sharded: %d files", sh.st.n_files);
    expect_dense("mxfp4 vs bf16", &mx, &bf, 1);
    expect_dense("nf4 vs bf16", &nf, &bf, 0);
    expect_dense("sharded vs single", &sh, &bf, 1);
    expect_experts("sharded vs single", &sh, &bf, 0);
    test_bf16_transpose(d_bf, &bf);
    // MXFP4 error bound: the widest FP4 gap (4..6) is 2 scale steps and the scale is at most amax/3, so
    // |error| <= amax/3 per block; 0.34 of the matrix max covers every block.
    expect_experts("mxfp4 file vs bf16 file", &mx, &bf, 0.34f);
    expect_experts("nf4 file vs bf16 file", &nf, &bf, 0.16f);

    // Quantize on load: the same bytes as the files written in those formats.
    model bf_mx, bf_nf, mx_bf, nf_bf, nf_mx;
    load(&bf_mx, d_bf, MQ_MXFP4), load(&bf_nf, d_bf, MQ_NF4), load(&mx_bf, d_mx, MQ_BF16), load(&nf_bf, d_nf, MQ_BF16);
    load(&nf_mx, d_nf, MQ_MXFP4);
    EXPECT(bf_mx.expert_format == WF_MXFP4 && bf_nf.expert_format == WF_NF4 && mx_bf.expert_format == WF_BF16 &&
               nf_bf.expert_format == WF_BF16 && nf_mx.expert_format == WF_MXFP4,
           "quant on load formats");
    int E = CFG.n_experts, D = CFG.hidden, I = CFG.intermediate;
    for (int l = 0; l < CFG.n_layers; l++)
        for (int e = 0; e < E; e++) {
            const qmatrix *a = &bf_mx.layers[l].gate_up[e], *b = &mx.layers[l].gate_up[e];
            const qmatrix *c = &bf_mx.layers[l].down[e], *d = &mx.layers[l].down[e];
            EXPECT(!memcmp(a->blocks, b->blocks, (size_t)2 * I * D / 2) && !memcmp(a->scales, b->scales, (size_t)2 * I * D / 32) &&
                       !memcmp(c->blocks, d->blocks, (size_t)D * I / 2) && !memcmp(c->scales, d->scales, (size_t)D * I / 32),
                   "layer %d expert %d: bf16 -> mxfp4 on load differs from the mxfp4 file", l, e);
            const qmatrix *p = &bf_nf.layers[l].gate_up[e], *q = &nf.layers[l].gate_up[e];
            EXPECT(!memcmp(p->blocks, q->blocks, (size_t)2 * I * D / 2) &&
                       !memcmp(bf_nf.layers[l].down[e].blocks, nf.layers[l].down[e].blocks, (size_t)D * I / 2),
                   "layer %d expert %d: bf16 -> nf4 on load: codes differ from the nf4 file", l, e);
        }
    // Values: on-load NF4 has exact absmax, the file's is double-quantized (8-bit, one step <= 1% of the
    // absmax range here); MXFP4 -> bf16 is exact (FP4 x 2^k fits bf16); NF4 -> bf16 rounds once.
    expect_experts("bf16->nf4 on load vs nf4 file", &bf_nf, &nf, 0.01f);
    expect_experts("mxfp4->bf16 on load", &mx_bf, &mx, 0);
    expect_experts("nf4->bf16 on load", &nf_bf, &nf, 1.0f / 128); // bf16: 8 significant bits
    expect_experts("nf4->mxfp4 on load", &nf_mx, &nf, 0.34f);

    // Unsloth's layout with experts left 16-bit: loads as bf16, the same values.
    char *d_u = write_unsloth16(d_bf);
    model u;
    load(&u, d_u, MQ_AUTO);
    EXPECT(u.expert_format == WF_BF16, "unsloth16 format %d", u.expert_format);
    expect_dense("unsloth16 vs bf16", &u, &bf, 1);
    expect_experts("unsloth16 vs bf16", &u, &bf, 0);

    test_errors(d_bf, d_mx);

    model *all[] = {&bf, &mx, &nf, &sh, &bf_mx, &bf_nf, &mx_bf, &nf_bf, &nf_mx, &u};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) model_free(all[i]);
    free(d_bf), free(d_mx), free(d_nf), free(d_sh), free(d_u);
    char *cmd = xasprintf("rm -rf '%s'", TMP);
    if (!failures && system(cmd) != 0) printf("note: could not remove %s\n", TMP);
    free(cmd), free(TMP);
    return test_finish("test_weights");
}
