// lora/: adapter memory, PEFT's initialisation, PEFT import/export.
//   - init: A uniform in [-1/sqrt(in), 1/sqrt(in)) (torch kaiming_uniform_(a=sqrt(5)): checked by its
//     range and its first two moments), B and every gradient zero; deterministic in the seed and per
//     tensor (turning another target on does not change q's A); gate and up share A; the segments tile
//     both arenas exactly; scale alpha/r and alpha/sqrt(r).
//   - import of the PEFT-made fixtures (tests/fixtures/model/adapter_bf16, adapter_down, made by
//     tests/ref/make_model_fixtures.py with PEFT's save_pretrained): every value checked against the
//     file by the layout restated here from model/NOTES.md (A rows e*R + k, B columns k*E + e, gate_up
//     rows interleaved), independently of lora/peft.c's code.
//   - import -> export -> import is exact, and the exported tensors are byte-identical to PEFT's.
//   - an adapter for a different base (hidden size, layer count, expert count) or with unsupported
//     features is a clear error naming the file and the key.
#include "lora/lora.h"

#include <math.h>
#include <stdlib.h>

#include "test_util.h"

#define FIX "tests/fixtures/model/"
static char *tmpdir;

// The shapes of the fixture families (tests/ref/make_model_fixtures.py tiny_config).
static model_config cfg_of(int D, int I, int HD, int n_layers, int E) {
    model_config c;
    memset(&c, 0, sizeof c);
    c.hidden = D, c.intermediate = I, c.head_dim = HD, c.n_layers = n_layers, c.n_experts = E;
    c.n_heads = 4, c.n_kv_heads = 2, c.top_k = 2, c.vocab = 64;
    return c;
}

static const unsigned ALL = (1u << LT_COUNT) - 1;

// ---------------------------------------------------------------------------------------------------
static void check_a_stats(const float *a, size_t n, int in, const char *what) {
    // u = A * sqrt(in) must be U[-1, 1): mean 0 (sd 1/sqrt(3n)), E[u^2] = 1/3 (sd sqrt(4/45 / n)).
    // 5 sd bounds: a correct init fails with probability < 1e-6.
    double b = 1.0 / sqrt((double)in), s1 = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double u = a[i] / b;
        s1 += u, s2 += u * u;
        if (fabs(u) > mx) mx = fabs(u);
    }
    double mean = s1 / (double)n, m2 = s2 / (double)n;
    EXPECT(mx <= 1.0 && mx > 0.99, "%s: max |A|*sqrt(in) = %.6f, expected just under 1", what, mx);
    EXPECT(fabs(mean) < 5.0 / sqrt(3.0 * (double)n), "%s: mean %.5f of A*sqrt(in) over %zu", what, mean, n);
    EXPECT(fabs(m2 - 1.0 / 3.0) < 5.0 * sqrt(4.0 / 45.0 / (double)n), "%s: E[u^2] = %.5f, expected 1/3", what, m2);
}

static void test_init(void) {
    model_config c = cfg_of(256, 128, 16, 2, 4);
    gt_error err;
    lora_adapter la;
    lora_spec spec = {.rank = 8, .alpha = 16, .use_rslora = 0, .targets = ALL};
    EXPECT(lora_adapter_init(&la, &c, &spec, 42, &err) == GT_OK, "%s", err.msg);
    EXPECT(la.ml.scale == 2.0f && la.ml.rank == 8 && la.ml.targets == ALL, "scale %g", la.ml.scale);
    const int R = 8, D = 256, I = 128, E = 4, Q = 64, KV = 32;
    // segments tile the arenas in order, and their sizes are PEFT's tensor sizes
    size_t off = 0;
    for (int i = 0; i < la.n_segs; i++) {
        EXPECT(la.segs[i].offset == off, "segment %s at %zu, expected %zu", la.segs[i].name, la.segs[i].offset, off);
        off += la.segs[i].n;
    }
    EXPECT(off == la.n_params, "segments cover %zu of %zu", off, la.n_params);
    size_t per_layer = (size_t)R * D + Q * R + 2 * ((size_t)R * D + KV * R) + (size_t)R * Q + D * R +
                       (size_t)E * R * D + (size_t)2 * I * E * R + (size_t)E * R * I + (size_t)D * E * R;
    EXPECT(la.n_params == 2 * per_layer, "n_params %zu, expected %zu", la.n_params, 2 * per_layer);
    EXPECT(la.n_segs == 2 * 12, "n_segs %d", la.n_segs);
    EXPECT(!strcmp(la.segs[8].name, "layers.0.mlp.experts.gate_up_proj.lora_A") && la.segs[8].n == (size_t)E * R * D,
           "segment 8 is %s (%zu)", la.segs[8].name, la.segs[8].n);
    EXPECT(la.segs[9].n == (size_t)2 * I * E * R, "gate_up B segment %zu", la.segs[9].n);
    // every B and grad zero; A statistics per fan-in
    for (int i = 0; i < la.n_segs; i++) {
        const lora_segment *s = &la.segs[i];
        int isA = strstr(s->name, "lora_A") != NULL;
        int in = strstr(s->name, "o_proj") ? Q : strstr(s->name, "down_proj") ? I : D;
        if (isA) check_a_stats(la.params + s->offset, s->n, in, s->name);
        else
            for (size_t j = 0; j < s->n; j++)
                if (la.params[s->offset + j] != 0.0f) {
                    EXPECT(0, "%s[%zu] = %g, B must start at zero", s->name, j, la.params[s->offset + j]);
                    break;
                }
    }
    for (size_t j = 0; j < la.n_params; j++)
        if (la.grads[j] != 0.0f) {
            EXPECT(0, "grad %zu nonzero at init", j);
            break;
        }
    // gate and up share A (and dA) per expert; B separate
    for (int L = 0; L < 2; L++)
        for (int e = 0; e < E; e++) {
            const lora_layer *ll = &la.ml.layers[L];
            EXPECT(ll->gate[e].A == ll->up[e].A && ll->gate[e].dA == ll->up[e].dA, "layer %d expert %d", L, e);
            EXPECT(ll->gate[e].B != ll->up[e].B, "layer %d expert %d B shared", L, e);
            EXPECT(ll->gate[e].A == la.params + la.segs[8 + 12 * L].offset + (size_t)e * R * D, "A_e offset");
        }
    // determinism: same seed -> same bits; other seed -> other values; q's A independent of other targets
    lora_adapter lb, lc, ld;
    EXPECT(lora_adapter_init(&lb, &c, &spec, 42, &err) == GT_OK, "%s", err.msg);
    EXPECT(!memcmp(la.params, lb.params, la.n_params * sizeof(float)), "same seed, different A");
    EXPECT(lora_adapter_init(&lc, &c, &spec, 43, &err) == GT_OK, "%s", err.msg);
    EXPECT(memcmp(la.params, lc.params, (size_t)R * D * sizeof(float)), "seeds 42 and 43 give the same q A");
    lora_spec only_q = spec;
    only_q.targets = (1u << LT_Q) | (1u << LT_DOWN);
    EXPECT(lora_adapter_init(&ld, &c, &only_q, 42, &err) == GT_OK, "%s", err.msg);
    EXPECT(!memcmp(ld.ml.layers[1].q.A, la.ml.layers[1].q.A, (size_t)R * D * sizeof(float)), "q A depends on targets");
    EXPECT(!memcmp(ld.ml.layers[1].down[3].A, la.ml.layers[1].down[3].A, (size_t)R * I * sizeof(float)),
           "down A depends on targets");
    EXPECT(ld.ml.layers[0].k.A == NULL && ld.ml.layers[0].gate == NULL && ld.ml.layers[0].up == NULL, "off targets set");
    lora_adapter_free(&la);
    lora_adapter_free(&lb);
    lora_adapter_free(&lc);
    lora_adapter_free(&ld);

    // rslora scale, bad specs, target names
    lora_spec rs = {.rank = 4, .alpha = 3, .use_rslora = 1, .targets = 1};
    EXPECT(lora_spec_scale(&rs) == (float)(3.0 / 2.0), "rslora scale %g", lora_spec_scale(&rs));
    lora_spec bad = {.rank = 0, .alpha = 1, .targets = 1};
    EXPECT(lora_adapter_init(&la, &c, &bad, 1, &err) == GT_EINVAL && strstr(err.msg, "rank"), "%s", err.msg);
    unsigned t = 0;
    const char *names[] = {"q_proj", "down_proj"};
    EXPECT(lora_targets_parse(names, 2, &t, &err) == GT_OK && t == ((1u << LT_Q) | (1u << LT_DOWN)), "t %x", t);
    const char *all[] = {"all"};
    EXPECT(lora_targets_parse(all, 1, &t, &err) == GT_OK && t == ALL, "all -> %x", t);
    const char *typo[] = {"gate_prj"};
    EXPECT(lora_targets_parse(typo, 1, &t, &err) == GT_EINVAL && strstr(err.msg, "did you mean 'gate_proj'"), "%s",
           err.msg);
}

// ---------------------------------------------------------------------------------------------------
// The fixture file's values, read with core's reader, against the adapter's arrays.
static const float *tensor_f32(const safetensors *st, const char *key, int64_t rows, int64_t cols) {
    const st_tensor *t = safetensors_find(st, key);
    if (!t || t->dtype != DT_F32 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        EXPECT(0, "fixture tensor %s missing or not F32 [%lld, %lld]", key, (long long)rows, (long long)cols);
        return NULL;
    }
    return (const float *)t->data;
}

static void check_against_file(const lora_adapter *la, const char *file, int grads) {
    safetensors st;
    gt_error err;
    if (safetensors_open(&st, file, &err)) {
        EXPECT(0, "%s", err.msg);
        return;
    }
    const int R = la->spec.rank, E = la->n_experts, D = la->d_model, I = la->d_inter;
    const unsigned tg = la->spec.targets;
    int both = (tg & (1u << LT_GATE)) && (tg & (1u << LT_DOWN));
    char key[256];
    int checked = 0;
    for (int L = 0; L < la->n_layers; L++) {
        const lora_layer *ll = &la->ml.layers[L];
        const lora_pair *dp[4] = {&ll->q, &ll->k, &ll->v, &ll->o};
        for (int t = 0; t < 4; t++) {
            if (!(tg & (1u << t))) continue;
            int in = t == 3 ? la->d_q : D, out = t == 0 ? la->d_q : t == 3 ? D : la->d_kv;
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.self_attn.%s.lora_A.weight", L,
                     lora_target_name((lora_target)t));
            const float *A = tensor_f32(&st, key, R, in);
            key[strlen(key) - 8] = 'B'; // "...lora_A.weight" -> "...lora_B.weight"
            const float *B = tensor_f32(&st, key, out, R);
            if (!A || !B) continue;
            const float *a = grads ? dp[t]->dA : dp[t]->A, *b = grads ? dp[t]->dB : dp[t]->B;
            EXPECT(!memcmp(a, A, sizeof(float) * R * in) && !memcmp(b, B, sizeof(float) * out * R), "%s", key);
            checked++;
        }
        if (tg & (1u << LT_GATE)) {
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.mlp.experts.%slora_A.weight", L,
                     both ? "base_layer." : "");
            const float *A = tensor_f32(&st, key, (int64_t)E * R, D);
            key[strlen(key) - 8] = 'B';
            const float *B = tensor_f32(&st, key, 2 * I, (int64_t)E * R);
            if (!A || !B) continue;
            int bad = 0;
            for (int e = 0; e < E; e++)
                for (int k = 0; k < R; k++) {
                    for (int i = 0; i < D; i++) {
                        float want = A[((size_t)e * R + k) * D + i];
                        const float *g = grads ? ll->gate[e].dA : ll->gate[e].A;
                        const float *u = grads ? ll->up[e].dA : ll->up[e].A;
                        bad += g[k * D + i] != want || u[k * D + i] != want;
                    }
                    for (int i = 0; i < I; i++) {
                        const float *g = grads ? ll->gate[e].dB : ll->gate[e].B;
                        const float *u = grads ? ll->up[e].dB : ll->up[e].B;
                        bad += g[i * R + k] != B[(size_t)(2 * i) * E * R + (size_t)k * E + e];
                        bad += u[i * R + k] != B[(size_t)(2 * i + 1) * E * R + (size_t)k * E + e];
                    }
                }
            EXPECT(!bad, "layer %d gate_up: %d values differ from %s", L, bad, file);
            checked++;
        }
        if (tg & (1u << LT_DOWN)) {
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.mlp.experts.lora_A.weight", L);
            const float *A = tensor_f32(&st, key, (int64_t)E * R, I);
            key[strlen(key) - 8] = 'B';
            const float *B = tensor_f32(&st, key, D, (int64_t)E * R);
            if (!A || !B) continue;
            int bad = 0;
            for (int e = 0; e < E; e++)
                for (int k = 0; k < R; k++) {
                    const float *a = grads ? ll->down[e].dA : ll->down[e].A;
                    const float *b = grads ? ll->down[e].dB : ll->down[e].B;
                    for (int i = 0; i < I; i++) bad += a[k * I + i] != A[((size_t)e * R + k) * I + i];
                    for (int o = 0; o < D; o++) bad += b[o * R + k] != B[(size_t)o * E * R + (size_t)k * E + e];
                }
            EXPECT(!bad, "layer %d down: %d values differ from %s", L, bad, file);
            checked++;
        }
    }
    EXPECT(checked > 0, "nothing checked in %s", file);
    safetensors_close(&st);
}

// Two safetensors files hold the same tensor names with byte-identical data.
static void expect_same_tensors(const char *a, const char *b) {
    safetensors sa, sb;
    gt_error err;
    if (safetensors_open(&sa, a, &err) || safetensors_open(&sb, b, &err)) {
        EXPECT(0, "%s", err.msg);
        return;
    }
    EXPECT(sa.n_tensors == sb.n_tensors, "%s has %d tensors, %s %d", a, sa.n_tensors, b, sb.n_tensors);
    for (int i = 0; i < sa.n_tensors; i++) {
        const st_tensor *x = &sa.tensors[i], *y = safetensors_find(&sb, x->name);
        EXPECT(y && y->dtype == x->dtype && y->nbytes == x->nbytes && !memcmp(x->data, y->data, x->nbytes),
               "%s differs between %s and %s", x->name, a, b);
    }
    safetensors_close(&sa);
    safetensors_close(&sb);
}

static void test_peft_fixture(const char *name, model_config c, unsigned want_targets, int want_rank,
                              float want_scale) {
    char *dir = xasprintf(FIX "%s", name), *file = xasprintf(FIX "%s/adapter_model.safetensors", name);
    lora_adapter la, lb;
    gt_error err;
    if (lora_peft_load(&la, &c, dir, &err)) {
        EXPECT(0, "%s", err.msg);
        goto out;
    }
    EXPECT(la.spec.targets == want_targets && la.spec.rank == want_rank && la.ml.scale == want_scale,
           "%s: targets %x rank %d scale %.9g", name, la.spec.targets, la.spec.rank, la.ml.scale);
    check_against_file(&la, file, 0);
    // the gradient fixture goes through the same mapping into dA/dB
    if (!strcmp(name, "adapter_bf16")) {
        EXPECT(lora_peft_read_tensors(&la, FIX "grad_bf16.safetensors", 1, &err) == GT_OK, "%s", err.msg);
        check_against_file(&la, FIX "grad_bf16.safetensors", 1);
    }
    // export -> the same tensors byte for byte -> import -> the same arrays
    char *out = xasprintf("%s/%s", tmpdir, name), *ofile = xasprintf("%s/adapter_model.safetensors", out);
    EXPECT(lora_peft_save(&la, out, "tiny/base", &err) == GT_OK, "%s", err.msg);
    expect_same_tensors(file, ofile);
    if (lora_peft_load(&lb, &c, out, &err) == GT_OK) {
        EXPECT(lb.n_params == la.n_params && !memcmp(la.params, lb.params, la.n_params * sizeof(float)),
               "%s: round trip changed the parameters", name);
        EXPECT(lb.spec.targets == la.spec.targets && lb.spec.rank == la.spec.rank && lb.spec.alpha == la.spec.alpha &&
                   lb.spec.use_rslora == la.spec.use_rslora,
               "%s: round trip changed the spec", name);
        lora_adapter_free(&lb);
    } else
        EXPECT(0, "re-import of %s: %s", out, err.msg);
    free(out);
    free(ofile);
    lora_adapter_free(&la);
out:
    free(dir);
    free(file);
}

// Only gate targeted: the export is PEFT's joint adapter with up's B rows zero; re-import targets both.
static void test_gate_only_export(void) {
    model_config c = cfg_of(24, 16, 8, 2, 4);
    lora_spec spec = {.rank = 2, .alpha = 4, .targets = 1u << LT_GATE};
    lora_adapter la, lb;
    gt_error err;
    EXPECT(lora_adapter_init(&la, &c, &spec, 7, &err) == GT_OK, "%s", err.msg);
    for (size_t i = 0; i < la.n_params; i++) la.params[i] = (float)(i % 13) - 6.0f;
    char *out = xasprintf("%s/gate_only", tmpdir);
    EXPECT(lora_peft_save(&la, out, NULL, &err) == GT_OK, "%s", err.msg);
    if (lora_peft_load(&lb, &c, out, &err) == GT_OK) {
        EXPECT(lb.spec.targets == ((1u << LT_GATE) | (1u << LT_UP)), "targets %x", lb.spec.targets);
        int bad = 0;
        for (int L = 0; L < 2; L++)
            for (int e = 0; e < 4; e++) {
                const lora_pair *g0 = &la.ml.layers[L].gate[e], *g1 = &lb.ml.layers[L].gate[e];
                const lora_pair *u1 = &lb.ml.layers[L].up[e];
                bad += memcmp(g0->A, g1->A, sizeof(float) * 2 * 24) != 0;
                bad += memcmp(g0->B, g1->B, sizeof(float) * 16 * 2) != 0;
                for (int i = 0; i < 16 * 2; i++) bad += u1->B[i] != 0.0f;
            }
        EXPECT(!bad, "gate-only export: %d mismatches", bad);
        lora_adapter_free(&lb);
    } else
        EXPECT(0, "%s", err.msg);
    free(out);
    lora_adapter_free(&la);
}

// ---------------------------------------------------------------------------------------------------
static void expect_load_error(const model_config *c, const char *dir, gt_status want, const char *const *needles,
                              const char *what) {
    lora_adapter la;
    gt_error err;
    err.msg[0] = 0;
    gt_status s = lora_peft_load(&la, c, dir, &err);
    if (s == GT_OK) {
        EXPECT(0, "%s: loaded, expected an error", what);
        lora_adapter_free(&la);
        return;
    }
    EXPECT(s == want, "%s: status %s, expected %s (%s)", what, gt_status_name(s), gt_status_name(want), err.msg);
    for (int i = 0; needles[i]; i++)
        EXPECT(strstr(err.msg, needles[i]), "%s: message lacks '%s': %s", what, needles[i], err.msg);
}

// An adapter dir in tmp with the fixture's tensors and a config edited by replacing `from` with `to`.
static char *edited_adapter(const char *name, const char *from, const char *to) {
    gt_error err;
    char *text;
    size_t len;
    if (fs_read_file(FIX "adapter_bf16/adapter_config.json", &text, &len, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    char *at = strstr(text, from);
    if (!at) gt_die(__FILE__, __LINE__, "'%s' not in the fixture config", from);
    *at = 0;
    char *edited = xasprintf("%s%s%s", text, to, at + strlen(from));
    char *dir = xasprintf("%s/%s", tmpdir, name);
    char *cpath = fs_join(dir, "adapter_config.json"), *wpath = fs_join(dir, "adapter_model.safetensors");
    char *w;
    size_t wl;
    if (fs_mkdirs(dir, &err) || fs_write_atomic(cpath, edited, strlen(edited), &err) ||
        fs_read_file(FIX "adapter_bf16/adapter_model.safetensors", &w, &wl, &err) ||
        fs_write_atomic(wpath, w, wl, &err))
        gt_die(__FILE__, __LINE__, "%s", err.msg);
    free(w);
    free(text);
    free(edited);
    free(cpath);
    free(wpath);
    return dir;
}

static void test_errors(void) {
    const char *dir = FIX "adapter_bf16";
    // a different base: hidden 32 (the 4-bit family), 2 layers, 6 layers, 8 experts
    model_config q = cfg_of(32, 64, 16, 4, 4);
    expect_load_error(&q, dir, GT_EFORMAT,
                      (const char *[]){"adapter_model.safetensors", "layers.0.self_attn.q_proj.lora_A.weight",
                                       "shape [3, 24], expected [3, 32]", "different base", NULL},
                      "hidden 32");
    model_config fewer = cfg_of(24, 16, 8, 2, 4);
    expect_load_error(&fewer, dir, GT_EFORMAT,
                      (const char *[]){"layers.2.", "layer 2 but the base model has 2 layers", NULL}, "2 layers");
    model_config more = cfg_of(24, 16, 8, 6, 4);
    expect_load_error(&more, dir, GT_EFORMAT,
                      (const char *[]){"'base_model.model.model.layers.4.self_attn.q_proj.lora_A.weight' is missing",
                                       "nearest present", NULL},
                      "6 layers");
    model_config e8 = cfg_of(24, 16, 8, 4, 8);
    expect_load_error(&e8, dir, GT_EFORMAT,
                      (const char *[]){"mlp.experts.base_layer.lora_A.weight", "expected [24, 24]", "8 experts", NULL},
                      "8 experts");
    model_config c = cfg_of(24, 16, 8, 4, 4);
    expect_load_error(&c, FIX "no_such_adapter", GT_ENOTFOUND, (const char *[]){"no_such_adapter", NULL}, "missing dir");

    // unsupported or malformed configs (the fixture's tensors, an edited adapter_config.json)
    struct {
        const char *from, *to;
        gt_status st;
        const char *needle;
    } cases[] = {
        {"\"use_dora\": false", "\"use_dora\": true", GT_EUNSUPPORTED, "adapter_config.json: DoRA"},
        {"\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 8}", GT_EUNSUPPORTED, "rank_pattern gives 'q_proj'"},
        {"\"alpha_pattern\": {}", "\"alpha_pattern\": {\"k_proj\": 6}", GT_OK, ""}, // equal to lora_alpha: fine
        {"\"k_proj\"", "\"lm_head\"", GT_EUNSUPPORTED, "'lm_head' names nothing gptoss adapts"},
        {"\"k_proj\"", "\"layers.0.self_attn.k_proj\"", GT_EUNSUPPORTED, "some layers only"},
        {"\"r\": 3", "\"r\": 2", GT_EFORMAT, "expected [2, 24]"},
        {"\"r\": 3", "\"r\": \"3\"", GT_EFORMAT, "r must be an integer"},
        {"\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", GT_EUNSUPPORTED, "peft_type"},
        {"\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", GT_EUNSUPPORTED, "modules_to_save"},
        {"\"mlp.experts.down_proj\"", "\"mlp.experts.router\"", GT_EUNSUPPORTED, "'mlp.experts.router'"},
        // a config without the down adapter: the file's down tensors are then extra
        // without the down adapter, gate_up's tensors move to mlp.experts.lora_A, where down's are
        {",\n    \"mlp.experts.down_proj\"", "", GT_EFORMAT, "has shape [12, 16], expected [12, 24]"},
        {"{", "{,", GT_EFORMAT, "adapter_config.json:1:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu", i);
        char *d = edited_adapter(name, cases[i].from, cases[i].to);
        if (cases[i].st == GT_OK) {
            lora_adapter la;
            gt_error err;
            EXPECT(lora_peft_load(&la, &c, d, &err) == GT_OK, "case %zu: %s", i, err.msg);
            lora_adapter_free(&la);
        } else
            expect_load_error(&c, d, cases[i].st, (const char *[]){cases[i].needle, NULL},
                              cases[i].to);
        free(d);
    }
}

int main(void) {
    tmpdir = test_tmpdir("lora");
    test_init();
    test_peft_fixture("adapter_bf16", cfg_of(24, 16, 8, 4, 4), ALL, 3, 2.0f);
    test_peft_fixture("adapter_q", cfg_of(32, 64, 16, 4, 4), ALL, 3, 2.0f);
    test_peft_fixture("adapter_down", cfg_of(24, 16, 8, 4, 4), (1u << LT_Q) | (1u << LT_O) | (1u << LT_DOWN), 2,
                      (float)(3.0 / sqrt(2.0)));
    test_gate_only_export();
    test_errors();
    free(tmpdir);
    return test_finish("test_lora");
}
