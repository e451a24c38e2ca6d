// lora/peft.c: PEFT's adapter format <-> our adapter arrays, one mapping used by import, export and the
// gradient fixtures.
//
// PEFT tensors (adapter_model.safetensors, prefix P = base_model.model.model.layers.L.):
//   P self_attn.{q,k,v,o}_proj.lora_A.weight (R, in)    P self_attn.{q,k,v,o}_proj.lora_B.weight (out, R)
//   P mlp.experts.<nest>lora_A.weight (E*R, in)         P mlp.experts.<nest>lora_B.weight (out, E*R)
// Expert adapters come from target_parameters (lora.ParamWrapper): gate_up_proj (in D, out 2I, rows of
// B interleaved gate/up as the base parameter's columns) and down_proj (in I, out D). PEFT wraps the
// targeted parameters of one module in the order the module defines them (gate_up_proj, then
// down_proj), each wrapper around the previous one, so the FIRST targeted parameter sits deepest:
// <nest> is "base_layer." once per later-targeted parameter ("base_layer." for gate_up when both are
// targeted, "" otherwise). Rows of A are expert-major (e*R + k); columns of B rank-major (k*E + e).
// See lora/lora.h for how gate and up share A, and model/NOTES.md "LoRA" for what was checked.
#include "lora/lora.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#define PEFT_PREFIX "base_model.model.model.layers."

typedef enum pt_kind { PT_DENSE_A, PT_DENSE_B, PT_GU_A, PT_GU_B, PT_DOWN_A, PT_DOWN_B } pt_kind;

// One tensor of the PEFT file.
typedef struct peft_tensor {
    char key[192];
    int64_t rows, cols;
    pt_kind kind;
    int layer;
    lora_target t; // PT_DENSE_*: which projection
} peft_tensor;

static const lora_pair *dense_pair(const lora_adapter *la, int L, lora_target t) {
    const lora_layer *ll = &la->ml.layers[L];
    return t == LT_Q ? &ll->q : t == LT_K ? &ll->k : t == LT_V ? &ll->v : &ll->o;
}

// Every tensor of la in PEFT's naming, in layout order. Returns the count; *out is xmalloc'ed.
static int peft_tensors(const lora_adapter *la, peft_tensor **out) {
    const unsigned tg = la->spec.targets;
    const int R = la->spec.rank, E = la->n_experts;
    const int gu = !!(tg & ((1u << LT_GATE) | (1u << LT_UP))), dn = !!(tg & (1u << LT_DOWN));
    peft_tensor *v = xcalloc((size_t)la->n_layers * 12, sizeof *v);
    int n = 0;
    for (int L = 0; L < la->n_layers; L++) {
        for (int t = LT_Q; t <= LT_O; t++) {
            if (!(tg & (1u << t))) continue;
            int in = t == LT_O ? la->d_q : la->d_model;
            int outd = t == LT_Q ? la->d_q : t == LT_O ? la->d_model : la->d_kv;
            for (int ab = 0; ab < 2; ab++) {
                peft_tensor *p = &v[n++];
                snprintf(p->key, sizeof p->key, PEFT_PREFIX "%d.self_attn.%s.lora_%c.weight", L,
                         lora_target_name((lora_target)t), ab ? 'B' : 'A');
                p->rows = ab ? outd : R;
                p->cols = ab ? R : in;
                p->kind = ab ? PT_DENSE_B : PT_DENSE_A;
                p->layer = L;
                p->t = (lora_target)t;
            }
        }
        for (int which = 0; which < 2; which++) { // 0 gate_up_proj, 1 down_proj
            if (!(which ? dn : gu)) continue;
            int nest = which == 0 && dn; // gate_up is wrapped by the down wrapper
            int in = which ? la->d_inter : la->d_model, outd = which ? la->d_model : 2 * la->d_inter;
            for (int ab = 0; ab < 2; ab++) {
                peft_tensor *p = &v[n++];
                snprintf(p->key, sizeof p->key, PEFT_PREFIX "%d.mlp.experts.%slora_%c.weight", L,
                         nest ? "base_layer." : "", ab ? 'B' : 'A');
                p->rows = ab ? outd : (int64_t)E * R;
                p->cols = ab ? (int64_t)E * R : in;
                p->kind = which ? (ab ? PT_DOWN_B : PT_DOWN_A) : (ab ? PT_GU_B : PT_GU_A);
                p->layer = L;
                p->t = which ? LT_DOWN : LT_GATE;
            }
        }
    }
    *out = v;
    return n;
}

static float *pick(const lora_pair *p, int isB, int grads) {
    return isB ? (grads ? p->dB : p->B) : (grads ? p->dA : p->A);
}

// Moves one PEFT tensor buf (rows, cols) into the adapter (to_adapter 1) or out of it (0), using its
// parameters or (grads 1) its gradients. Returns 0, or -1 when importing nonzero values for a half of
// gate_up that the adapter does not target.
static int peft_tensor_move(const lora_adapter *la, const peft_tensor *pt, float *buf, int to_adapter, int grads) {
    const int R = la->spec.rank, E = la->n_experts, L = pt->layer;
    const lora_layer *ll = &la->ml.layers[L];
    const size_t n = (size_t)pt->rows * (size_t)pt->cols;
    float *block = NULL; // tensors stored identically in both layouts
    switch (pt->kind) {
    case PT_DENSE_A:
    case PT_DENSE_B: block = pick(dense_pair(la, L, pt->t), pt->kind == PT_DENSE_B, grads); break;
    case PT_GU_A: block = pick(ll->gate ? &ll->gate[0] : &ll->up[0], 0, grads); break; // E*R rows, contiguous
    case PT_DOWN_A: block = pick(&ll->down[0], 0, grads); break;
    case PT_GU_B:
    case PT_DOWN_B: break;
    }
    if (block) {
        if (to_adapter) memcpy(block, buf, n * sizeof(float));
        else memcpy(buf, block, n * sizeof(float));
        return 0;
    }
    // B: PEFT column k*E + e of row o is row `row` of expert e's (out, R) B at column k.
    const int ER = E * R;
    for (int64_t o = 0; o < pt->rows; o++) {
        const lora_pair *pairs;
        int64_t row;
        if (pt->kind == PT_GU_B) {
            pairs = (o & 1) ? ll->up : ll->gate; // interleaved: even rows gate, odd rows up
            row = o >> 1;
        } else {
            pairs = ll->down;
            row = o;
        }
        float *src = buf + o * ER;
        for (int e = 0; e < E; e++) {
            for (int k = 0; k < R; k++) {
                float *x = &src[(size_t)k * E + e];
                if (!pairs) {
                    if (to_adapter && *x != 0.0f) return -1;
                    if (!to_adapter) *x = 0.0f;
                    continue;
                }
                float *y = pick(&pairs[e], 1, grads) + row * R + k;
                if (to_adapter) *y = *x;
                else *x = *y;
            }
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Reading tensors
static const char *nearest_key(const safetensors *st, const char *key) {
    const char *best = NULL;
    size_t bd = (size_t)-1;
    for (int i = 0; i < st->n_tensors; i++) {
        size_t d = str_edit_distance(key, st->tensors[i].name);
        if (d < bd) bd = d, best = st->tensors[i].name;
    }
    return best;
}

gt_status lora_peft_read_tensors(lora_adapter *la, const char *path, int into_grads, gt_error *err) {
    safetensors st;
    gt_status s = safetensors_open(&st, path, err);
    if (s) return s;
    peft_tensor *pts;
    int n = peft_tensors(la, &pts);
    unsigned char *used = xcalloc((size_t)st.n_tensors + 1, 1);
    float *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && !s; i++) {
        const peft_tensor *pt = &pts[i];
        const st_tensor *t = safetensors_find(&st, pt->key);
        if (!t) {
            const char *near = nearest_key(&st, pt->key);
            s = gt_fail(err, GT_EFORMAT,
                        "%s: tensor '%s' is missing (the adapter does not fit this base: %d layers, targets "
                        "as in adapter_config.json)%s%s%s",
                        path, pt->key, la->n_layers, near ? "; nearest present: '" : "", near ? near : "",
                        near ? "'" : "");
            break;
        }
        used[t - st.tensors] = 1;
        if (t->ndim != 2 || t->shape[0] != pt->rows || t->shape[1] != pt->cols) {
            char got[96] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            s = gt_fail(err, GT_EFORMAT,
                        "%s: tensor '%s' has shape [%s], expected [%lld, %lld] for this base (hidden %d, q %d, "
                        "kv %d, intermediate %d, %d experts, rank %d): the adapter was made for a different "
                        "base model or rank",
                        path, pt->key, got, (long long)pt->rows, (long long)pt->cols, la->d_model, la->d_q,
                        la->d_kv, la->d_inter, la->n_experts, la->spec.rank);
            break;
        }
        size_t cnt = (size_t)t->numel;
        if (cnt > cap) {
            free(buf);
            buf = xmalloc(cnt * sizeof(float));
            cap = cnt;
        }
        s = dtype_to_f32(t->dtype, t->data, buf, cnt, err);
        if (s) {
            gt_wrap(err, "%s: tensor '%s'", path, pt->key);
            break;
        }
        if (peft_tensor_move(la, pt, buf, 1, into_grads))
            s = gt_fail(err, GT_EUNSUPPORTED,
                        "%s: tensor '%s' has nonzero rows for the half of gate_up_proj (gate or up) that this "
                        "adapter does not target",
                        path, pt->key);
    }
    for (int i = 0; i < st.n_tensors && !s; i++) {
        if (used[i]) continue;
        const char *name = st.tensors[i].name;
        const char *lp = strstr(name, "layers.");
        int layer = lp ? atoi(lp + 7) : -1;
        if (layer >= la->n_layers)
            s = gt_fail(err, GT_EFORMAT,
                        "%s: tensor '%s' is for layer %d but the base model has %d layers: the adapter was made "
                        "for a different base",
                        path, name, layer, la->n_layers);
        else
            s = gt_fail(err, GT_EFORMAT,
                        "%s: tensor '%s' is not part of this adapter (targets and layout come from "
                        "adapter_config.json: r %d, %d layers); a different base or PEFT layout?",
                        path, name, la->spec.rank, la->n_layers);
    }
    free(buf);
    free(used);
    free(pts);
    safetensors_close(&st);
    return s;
}

// ---------------------------------------------------------------------------------------------------
// adapter_config.json
static const char *const DENSE_NAMES[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
static const char *const EXPERT_PARAMS[2] = {"gate_up_proj", "down_proj"};

// PEFT's match: the full name equals the entry or ends with "." + entry.
static int peft_name_match(const char *full, const char *entry) {
    size_t nf = strlen(full), ne = strlen(entry);
    if (nf == ne) return !strcmp(full, entry);
    return nf > ne && full[nf - ne - 1] == '.' && !strcmp(full + nf - ne, entry);
}

// Which of our candidates (full names per layer) an entry matches: bit c when it matches candidate c in
// every layer; -1 when it matches in some layers only.
static int entry_targets(const char *entry, int n_layers, const char *fmt, const char *const *cands, int n_cands) {
    int bits = 0;
    for (int c = 0; c < n_cands; c++) {
        int hits = 0;
        for (int L = 0; L < n_layers; L++) {
            char full[160];
            snprintf(full, sizeof full, fmt, L, cands[c]);
            hits += peft_name_match(full, entry);
        }
        if (hits == n_layers) bits |= 1 << c;
        else if (hits) return -1;
    }
    return bits;
}

static gt_status parse_list(json_t *v, const char *key, const char *path, int n_layers, const char *fmt,
                            const char *const *cands, int n_cands, const char *what, int *bits, gt_error *err) {
    *bits = 0;
    if (!v || json_is_null(v)) return GT_OK;
    if (json_is_string(v)) {
        if (!strcmp(key, "target_modules") && !strcmp(json_string_value(v), "all-linear")) {
            *bits = (1 << n_cands) - 1; // GptOss's linear layers under PEFT's all-linear: q, k, v, o
            return GT_OK;
        }
        return gt_fail(err, GT_EUNSUPPORTED,
                       "%s: %s is the regular expression \"%s\"; gptoss reads a list of names (%s)", path, key,
                       json_string_value(v), what);
    }
    if (!json_is_array(v)) return gt_fail(err, GT_EFORMAT, "%s: %s must be a list of names", path, key);
    size_t i;
    json_t *it;
    json_array_foreach(v, i, it) {
        if (!json_is_string(it))
            return gt_fail(err, GT_EFORMAT, "%s: %s[%zu] must be a string", path, key, i);
        int b = entry_targets(json_string_value(it), n_layers, fmt, cands, n_cands);
        if (b < 0)
            return gt_fail(err, GT_EUNSUPPORTED,
                           "%s: %s entry '%s' selects some layers only; gptoss adapts a target in every layer",
                           path, key, json_string_value(it));
        if (!b)
            return gt_fail(err, GT_EUNSUPPORTED, "%s: %s entry '%s' names nothing gptoss adapts (%s)", path, key,
                           json_string_value(it), what);
        *bits |= b;
    }
    return GT_OK;
}

// rank_pattern / alpha_pattern: per-module overrides; gptoss has one rank and alpha, so every value must
// equal the global one.
static gt_status check_pattern(json_t *root, const char *key, double global, const char *path, gt_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return GT_OK;
    if (!json_is_object(v)) return gt_fail(err, GT_EFORMAT, "%s: %s must be an object", path, key);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!json_is_number(x) || json_number_value(x) != global)
            return gt_fail(err, GT_EUNSUPPORTED,
                           "%s: %s gives '%s' its own value; gptoss uses one rank and one alpha for every target",
                           path, key, k);
    }
    return GT_OK;
}

static gt_status parse_config(const char *path, int n_layers, lora_spec *spec, char **base_name, gt_error *err) {
    char *text;
    size_t len;
    gt_status s = fs_read_file(path, &text, &len, err);
    if (s) return s;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root) return gt_fail(err, GT_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    memset(spec, 0, sizeof *spec);
    *base_name = NULL;
    json_t *v;
#define FAIL(st, ...)                                                                                           \
    do {                                                                                                        \
        s = gt_fail(err, st, __VA_ARGS__);                                                                      \
        goto done;                                                                                              \
    } while (0)
    if (!json_is_object(root)) FAIL(GT_EFORMAT, "%s: not a JSON object", path);
    if ((v = json_object_get(root, "peft_type")) && !(json_is_string(v) && !strcmp(json_string_value(v), "LORA")))
        FAIL(GT_EUNSUPPORTED, "%s: peft_type must be \"LORA\"", path);
    v = json_object_get(root, "r");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65536)
        FAIL(GT_EFORMAT, "%s: r must be an integer from 1 to 65536", path);
    spec->rank = (int)json_integer_value(v);
    v = json_object_get(root, "lora_alpha");
    if (!json_is_number(v) || !(json_number_value(v) > 0))
        FAIL(GT_EFORMAT, "%s: lora_alpha must be a positive number", path);
    spec->alpha = json_number_value(v);
    v = json_object_get(root, "use_rslora");
    if (v && !json_is_boolean(v) && !json_is_null(v)) FAIL(GT_EFORMAT, "%s: use_rslora must be true or false", path);
    spec->use_rslora = json_is_true(v);
    if (json_is_true(json_object_get(root, "use_dora"))) FAIL(GT_EUNSUPPORTED, "%s: DoRA (use_dora) is not supported", path);
    if (json_is_true(json_object_get(root, "lora_bias")))
        FAIL(GT_EUNSUPPORTED, "%s: lora_bias is not supported", path);
    if (json_is_true(json_object_get(root, "fan_in_fan_out")))
        FAIL(GT_EUNSUPPORTED, "%s: fan_in_fan_out is not supported (GPT-OSS has no Conv1D layers)", path);
    if ((v = json_object_get(root, "bias")) && json_is_string(v) && strcmp(json_string_value(v), "none"))
        FAIL(GT_EUNSUPPORTED, "%s: bias \"%s\" is not supported (only \"none\")", path, json_string_value(v));
    if ((v = json_object_get(root, "modules_to_save")) && !json_is_null(v) && !(json_is_array(v) && !json_array_size(v)))
        FAIL(GT_EUNSUPPORTED, "%s: modules_to_save (fully trained modules) is not supported", path);
    if ((v = json_object_get(root, "layers_to_transform")) && !json_is_null(v))
        FAIL(GT_EUNSUPPORTED, "%s: layers_to_transform is not supported; gptoss adapts every layer", path);
    if ((s = check_pattern(root, "rank_pattern", (double)spec->rank, path, err))) goto done;
    if ((s = check_pattern(root, "alpha_pattern", spec->alpha, path, err))) goto done;
    int dense_bits, expert_bits;
    s = parse_list(json_object_get(root, "target_modules"), "target_modules", path, n_layers,
                   "model.layers.%d.self_attn.%s", DENSE_NAMES, 4, "q_proj k_proj v_proj o_proj", &dense_bits, err);
    if (s) goto done;
    s = parse_list(json_object_get(root, "target_parameters"), "target_parameters", path, n_layers,
                   "model.layers.%d.mlp.experts.%s", EXPERT_PARAMS, 2, "mlp.experts.gate_up_proj mlp.experts.down_proj",
                   &expert_bits, err);
    if (s) goto done;
    spec->targets = (unsigned)dense_bits;                                       // bits 0..3 = LT_Q..LT_O
    if (expert_bits & 1) spec->targets |= (1u << LT_GATE) | (1u << LT_UP);     // joint gate_up adapter
    if (expert_bits & 2) spec->targets |= 1u << LT_DOWN;
    if (!spec->targets) FAIL(GT_EFORMAT, "%s: neither target_modules nor target_parameters names a target", path);
    if ((v = json_object_get(root, "base_model_name_or_path")) && json_is_string(v))
        *base_name = xstrdup(json_string_value(v));
    if ((v = json_object_get(root, "lora_dropout")) && json_is_number(v) && json_number_value(v) > 0)
        log_warn("%s: lora_dropout %g is ignored (gptoss has no LoRA dropout)", path, json_number_value(v));
#undef FAIL
done:
    json_decref(root);
    return s;
}

gt_status lora_peft_load(lora_adapter *la, const model_config *cfg, const char *dir, gt_error *err) {
    memset(la, 0, sizeof *la);
    char *cpath = fs_join(dir, "adapter_config.json");
    char *wpath = fs_join(dir, "adapter_model.safetensors");
    char *base = NULL;
    lora_spec spec;
    gt_status s;
    if (!fs_exists(cpath)) {
        s = gt_fail(err, GT_ENOTFOUND, "%s: no adapter_config.json (a PEFT adapter directory holds "
                                       "adapter_config.json and adapter_model.safetensors)", dir);
        goto out;
    }
    if ((s = parse_config(cpath, cfg->n_layers, &spec, &base, err))) goto out;
    if ((s = lora_adapter_init(la, cfg, &spec, 0, err))) {
        gt_wrap(err, "%s", cpath);
        goto out;
    }
    if ((s = lora_peft_read_tensors(la, wpath, 0, err))) {
        if (base) gt_wrap(err, "adapter for base '%s'", base);
        lora_adapter_free(la);
        goto out;
    }
    lora_adapter_grads_zero(la);
out:
    free(base);
    free(cpath);
    free(wpath);
    return s;
}

// ---------------------------------------------------------------------------------------------------
// Export
static json_t *config_json(const lora_adapter *la, const char *base_model) {
    const unsigned tg = la->spec.targets;
    json_t *root = json_object();
    json_t *tm = json_array(), *tp = json_array();
    for (int t = LT_Q; t <= LT_O; t++)
        if (tg & (1u << t)) json_array_append_new(tm, json_string(DENSE_NAMES[t]));
    if (tg & ((1u << LT_GATE) | (1u << LT_UP))) json_array_append_new(tp, json_string("mlp.experts.gate_up_proj"));
    if (tg & (1u << LT_DOWN)) json_array_append_new(tp, json_string("mlp.experts.down_proj"));
    double a = la->spec.alpha;
    json_object_set_new(root, "alpha_pattern", json_object());
    json_object_set_new(root, "base_model_name_or_path", base_model ? json_string(base_model) : json_null());
    json_object_set_new(root, "bias", json_string("none"));
    json_object_set_new(root, "fan_in_fan_out", json_false());
    json_object_set_new(root, "inference_mode", json_true());
    json_object_set_new(root, "init_lora_weights", json_true());
    json_object_set_new(root, "layers_pattern", json_null());
    json_object_set_new(root, "layers_to_transform", json_null());
    json_object_set_new(root, "lora_alpha", a == floor(a) && fabs(a) < 1e15 ? json_integer((json_int_t)a) : json_real(a));
    json_object_set_new(root, "lora_bias", json_false());
    json_object_set_new(root, "lora_dropout", json_real(0.0));
    json_object_set_new(root, "modules_to_save", json_null());
    json_object_set_new(root, "peft_type", json_string("LORA"));
    json_object_set_new(root, "r", json_integer(la->spec.rank));
    json_object_set_new(root, "rank_pattern", json_object());
    json_object_set_new(root, "revision", json_null());
    json_object_set_new(root, "target_modules", tm);
    if (json_array_size(tp)) json_object_set_new(root, "target_parameters", tp);
    else {
        json_decref(tp);
        json_object_set_new(root, "target_parameters", json_null());
    }
    json_object_set_new(root, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(root, "use_dora", json_false());
    json_object_set_new(root, "use_rslora", json_boolean(la->spec.use_rslora));
    return root;
}

gt_status lora_peft_save(const lora_adapter *la, const char *dir, const char *base_model, gt_error *err) {
    gt_status s = fs_mkdirs(dir, err);
    if (s) return s;
    peft_tensor *pts;
    int n = peft_tensors(la, &pts);
    st_write_tensor *wt = xcalloc((size_t)n, sizeof *wt);
    float **bufs = xcalloc((size_t)n, sizeof *bufs);
    for (int i = 0; i < n; i++) {
        bufs[i] = xmalloc((size_t)pts[i].rows * (size_t)pts[i].cols * sizeof(float));
        peft_tensor_move(la, &pts[i], bufs[i], 0, 0);
        wt[i] = (st_write_tensor){.name = pts[i].key, .dtype = DT_F32, .ndim = 2,
                                  .shape = {pts[i].rows, pts[i].cols}, .data = bufs[i]};
    }
    char *wpath = fs_join(dir, "adapter_model.safetensors");
    s = safetensors_write(wpath, wt, n, NULL, 0, err);
    free(wpath);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    free(pts);
    if (s) return s;
    json_t *root = config_json(la, base_model);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    CHECK(text);
    char *cpath = fs_join(dir, "adapter_config.json");
    size_t tl = strlen(text);
    char *withnl = xasprintf("%s\n", text);
    s = fs_write_atomic(cpath, withnl, tl + 1, err);
    free(withnl);
    free(text);
    free(cpath);
    return s;
}
