// gptoss eval: the token-weighted mean next-token loss of a model (+ a PEFT adapter) on a dataset.
//   --model M       a model directory or a hub name in the local HF cache (model_load; experts as stored)
//   --adapter DIR   a PEFT LoRA adapter directory (lora_peft_load), e.g. one HF/PEFT saved
//   --data FILE     JSONL or JSONL.gz, each row's shape detected as the data pipeline does (data/data.h,
//                   DATA_FORMAT_AUTO): pre-tokenized {"input_ids": [...], "labels"?: [...]} (HF convention,
//                   labels unshifted, -100 ignored; no labels trains every token), conversations
//                   {"messages": [...]} (HuggingFaceH4/Multilingual-Thinking rows too) or flat rows with the
//                   default columns developer/user/analysis/final; conversations are rendered in Harmony and
//                   tokenized by data_read_files, their targets chosen by --train-on, as for training
//   --tokenizer F   tokenizer.json for conversation rows; default the model directory's. Without either,
//                   only pre-tokenized rows are read (the fixture models have no tokenizer)
//   --reasoning L   low|medium|high; --date YYYY-MM-DD (default: the config schema's pinned template.date);
//   --train-on T    assistant (default)|final|all: the template options of `gptoss train` (template.*)
//   --device D      auto (default: the GPU when this build has CUDA and one is present, else the CPU), cpu
//                   (the fp32 reference) or cuda (bf16 weights and GEMM operands, fp32 accumulation and loss:
//                   the same loss within ~1e-2 relative, scripts/gpu_check.sh checks it on the GPU machine)
//   --json          print {"mean_token_loss": x, "tokens": n, "rows": r} instead of a sentence
// The mean is sum over every target token of -log p(token) / number of target tokens, over the whole
// file (not a mean of per-row means), i.e. what HF's loss gives when all rows are one batch without
// padding. Each row is one document: positions start at 0 and attention stays inside the row; rows are
// never truncated or packed (data.max_seq_len does not apply).
#include "cli/cli.h"
#include "core/core.h"
#include "data/data.h"
#include "lora/lora.h"
#include "model/model.h"
#include "trainer/trainer.h"

#if GPTOSS_HAVE_CUDA
#include "core/cuda_rt.h"
#endif

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

static const char *const FLAGS[] = {"--model",     "--adapter", "--data", "--device", "--json",
                                     "--tokenizer", "--reasoning", "--date", "--train-on"};
#define N_FLAGS (int)(sizeof FLAGS / sizeof FLAGS[0])

// The loss of one batch on the CPU or the GPU: the model (and adapter) and a workspace for up to Tmax
// tokens, on the device chosen.
typedef struct eval_backend {
    const model *m;
    const model_lora *lora; // NULL: the base model
    model_ws *ws;           // cpu
#if GPTOSS_HAVE_CUDA
    model_cuda *mc;         // cuda: the weights, the adapter and the workspace on the GPU
    model_cuda_lora *cl;
    model_cuda_ws *cws;
#endif
} eval_backend;

static gt_status eval_backend_init(eval_backend *be, const model *m, const lora_adapter *la, run_device dev,
                                   int Tmax, gt_error *err) {
    memset(be, 0, sizeof *be);
    be->m = m, be->lora = la ? &la->ml : NULL;
    const int R = la ? la->spec.rank : 0;
#if GPTOSS_HAVE_CUDA
    if (dev == RC_DEVICE_CUDA) {
        gt_status s = model_cuda_init(&be->mc, m, err);
        if (!s && la) s = model_cuda_lora_init(&be->cl, be->mc, &la->ml, la->params, la->grads, la->n_params, err);
        if (!s) s = model_cuda_ws_init(&be->cws, be->mc, R, Tmax, 1, err);
        if (s) return s;
        char name[256];
        cuda_device_name(name, sizeof name);
        log_info("eval: on %s, weights %.1f MiB, workspace %.1f MiB", name, model_cuda_weight_bytes(be->mc) / 1048576.0,
                 model_cuda_ws_bytes(be->cws) / 1048576.0);
        return GT_OK;
    }
#else
    (void)dev;
#endif
    gt_status s = model_ws_init(&be->ws, m, R, Tmax, 1, err);
    if (!s) log_info("eval: on the CPU, workspace %.1f MiB", model_ws_bytes(be->ws) / 1048576.0);
    return s;
}

static gt_status eval_backend_loss(eval_backend *be, const model_batch *b, double *sum, int64_t *n, gt_error *err) {
#if GPTOSS_HAVE_CUDA
    if (be->mc) return model_cuda_forward_loss(be->cws, be->mc, be->cl, b, sum, n, NULL, err);
#endif
    return model_forward_loss(be->ws, be->m, be->lora, b, sum, n, NULL, err);
}

static void eval_backend_free(eval_backend *be) {
#if GPTOSS_HAVE_CUDA
    model_cuda_ws_free(be->cws);
    model_cuda_lora_free(be->cl);
    model_cuda_free(be->mc);
    cuda_gemm_free(); // model_cuda_init made the cuBLASLt handle (nothing to do when it did not)
#endif
    model_ws_free(be->ws);
}

// Sums the loss over every document of docs on device dev. Returns GT_OK with *loss_sum and *n_tokens.
static gt_status eval_docs(const model *m, const lora_adapter *la, run_device dev, const data_docs *docs,
                           double *loss_sum, int64_t *n_tokens, gt_error *err) {
    size_t max_len = 0;
    for (size_t d = 0; d < docs->n_docs; d++)
        if (docs->offsets[d + 1] - docs->offsets[d] > max_len) max_len = docs->offsets[d + 1] - docs->offsets[d];
    if (max_len > INT_MAX / 2) return gt_fail(err, GT_EUNSUPPORTED, "a row of %zu tokens is too long", max_len);
    const int Tmax = (int)max_len;
    eval_backend be;
    gt_status s = eval_backend_init(&be, m, la, dev, Tmax, err);
    if (s) {
        eval_backend_free(&be);
        return s;
    }
    log_info("eval: %zu rows, longest %d tokens", docs->n_docs, Tmax);
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)Tmax), *labels = xmalloc(sizeof(int32_t) * (size_t)Tmax);
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)Tmax), *doc = xcalloc((size_t)Tmax, sizeof(int32_t));
    int32_t *targets = xmalloc(sizeof(int32_t) * (size_t)Tmax);
    double total = 0;
    int64_t count = 0;
    for (size_t d = 0; d < docs->n_docs && !s; d++) {
        const uint64_t o = docs->offsets[d];
        const int T = (int)(docs->offsets[d + 1] - o);
        for (int t = 0; t < T && !s; t++) {
            if (docs->tokens[o + t] >= (uint32_t)m->cfg.vocab)
                s = gt_fail(err, GT_EFORMAT, "input_ids[%d] = %u is outside the model's vocabulary [0, %d)", t,
                            docs->tokens[o + t], m->cfg.vocab);
            ids[t] = (int32_t)docs->tokens[o + t];
            labels[t] = docs->mask[o + t] ? ids[t] : -100;
        }
        model_batch_positions(doc, T, pos);
        model_batch b = {.T = T, .ids = ids, .pos = pos, .doc = doc, .targets = targets};
        double sum;
        int64_t n;
        if (!s) s = model_batch_targets(labels, doc, T, m->cfg.vocab, targets, err);
        if (!s) s = eval_backend_loss(&be, &b, &sum, &n, err);
        if (s) {
            gt_wrap(err, "%s:%u", docs->files[docs->src_file[d]], docs->src_line[d]);
            break;
        }
        total += sum;
        count += n;
    }
    free(ids);
    free(labels);
    free(pos);
    free(doc);
    free(targets);
    eval_backend_free(&be);
    *loss_sum = total;
    *n_tokens = count;
    return s;
}

// The tokenizer for conversation rows: --tokenizer, else the model directory's tokenizer.json when there
// is one, else none (*tok NULL: pre-tokenized rows only). A tokenizer with ids beyond the model's
// vocabulary belongs to another model: refused when passed with --tokenizer; the model directory's own is
// set aside with a warning (pre-tokenized rows don't need it; a conversation row then asks for --tokenizer).
static gt_status eval_tokenizer_load(const char *path_arg, const char *model_dir, const model *m, tokenizer **tok,
                                     gt_error *err) {
    *tok = NULL;
    char *path = path_arg ? xstrdup(path_arg) : fs_join(model_dir, "tokenizer.json");
    gt_status s = GT_OK;
    if (path_arg && !fs_exists(path_arg))
        s = gt_fail(err, GT_ENOTFOUND, "--tokenizer %s: no such file (pass the model's tokenizer.json)", path_arg);
    else if (fs_exists(path) && !(s = tokenizer_load_hf(tok, path, err)) && tokenizer_vocab_size(*tok) > m->cfg.vocab) {
        s = gt_fail(err, GT_EINVAL,
                    "tokenizer %s has %d ids but the model's vocabulary is %d: it belongs to another model (pass "
                    "--tokenizer with the model's tokenizer.json)", path, tokenizer_vocab_size(*tok), m->cfg.vocab);
        if (!path_arg) {
            log_warn("%s; not using it", err->msg);
            tokenizer_free(*tok);
            *tok = NULL;
            s = GT_OK;
        }
    }
    if (!s && *tok) log_info("eval: tokenizer %s (%d ids)", path, tokenizer_vocab_size(*tok));
    free(path);
    return s;
}

int cmd_eval(int argc, char **argv) {
    const char *model_arg = NULL, *adapter = NULL, *data = NULL, *device = "auto", *tok_path = NULL;
    const char *reasoning = "medium", *date = NULL, *train_on = "assistant";
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!cli_flag_known("eval", f, FLAGS, N_FLAGS)) return 2;
        if (!strcmp(f, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) return cli_usage_error("eval", "%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) model_arg = v;
        else if (!strcmp(f, "--adapter")) adapter = v;
        else if (!strcmp(f, "--data")) data = v;
        else if (!strcmp(f, "--tokenizer")) tok_path = v;
        else if (!strcmp(f, "--reasoning")) reasoning = v;
        else if (!strcmp(f, "--date")) date = v;
        else if (!strcmp(f, "--train-on")) train_on = v;
        else device = v;
    }
    if (!model_arg || !data) return cli_usage_error("eval", "--model and --data are required");
    run_device want = !strcmp(device, "auto") ? RC_DEVICE_AUTO : !strcmp(device, "cpu") ? RC_DEVICE_CPU
                    : !strcmp(device, "cuda") ? RC_DEVICE_CUDA : (run_device)-1;
    if ((int)want < 0) return cli_usage_error("eval", "--device '%s': expected auto, cpu or cuda", device);
    if (strcmp(reasoning, "low") && strcmp(reasoning, "medium") && strcmp(reasoning, "high"))
        return cli_usage_error("eval", "--reasoning '%s': expected low, medium or high", reasoning);
    harmony_train_on on = !strcmp(train_on, "assistant") ? HARMONY_TRAIN_ASSISTANT
                        : !strcmp(train_on, "final") ? HARMONY_TRAIN_FINAL
                        : !strcmp(train_on, "all") ? HARMONY_TRAIN_ALL : (harmony_train_on)-1;
    if ((int)on < 0) return cli_usage_error("eval", "--train-on '%s': expected assistant, final or all", train_on);

    gt_error err = {0};
    // The template as `gptoss train` renders it by default: the config schema's pinned date unless --date.
    run_config defaults;
    run_config_defaults(&defaults);
    data_options o;
    data_options_defaults(&o);
    o.train_files = &data;
    o.n_train_files = 1;
    o.harmony.reasoning_effort = reasoning;
    o.harmony.date = date ? date : defaults.tmpl.date;
    o.harmony.train_on = on;
    if (data_options_check(&o, &err)) {
        run_config_free(&defaults);
        return cli_usage_error("eval", "--date %s: %s", o.harmony.date, err.msg);
    }

    run_device dev;
    if (train_device_resolve(want, 0, &dev, &err)) {
        fprintf(stderr, "gptoss eval: --device %s: %s\n", device, err.msg);
        run_config_free(&defaults);
        return 1;
    }
    char dir[4096];
    model m;
    lora_adapter la;
    tokenizer *tok = NULL;
    data_docs docs;
    memset(&docs, 0, sizeof docs);
    int have_model = 0, have_lora = 0, rc = 1;
    if (hfcache_resolve(model_arg, HF_MODEL, NULL, dir, sizeof dir, &err)) goto fail;
    if (model_load(&m, dir, MQ_AUTO, &err)) goto fail;
    have_model = 1;
    if (adapter) {
        if (lora_peft_load(&la, &m.cfg, adapter, &err)) goto fail;
        have_lora = 1;
        log_info("adapter %s: rank %d, scale %g, %zu parameters", adapter, la.spec.rank, la.ml.scale, la.n_params);
    }
    if (eval_tokenizer_load(tok_path, dir, &m, &tok, &err)) goto fail;
    if (data_read_files(&data, 1, &o, tok, 0, &docs, &err)) {
        if (err.status == GT_EUNSUPPORTED && !tok)
            gt_wrap(&err, "%s has no tokenizer.json: pass --tokenizer FILE (the model's tokenizer.json) for "
                    "conversation rows", dir);
        goto fail;
    }
    if (!docs.n_docs) {
        gt_fail(&err, GT_EFORMAT, "%s: no rows", data);
        goto fail;
    }
    double sum = 0;
    int64_t n = 0;
    if (eval_docs(&m, have_lora ? &la : NULL, dev, &docs, &sum, &n, &err)) goto fail;
    if (n == 0) {
        gt_fail(&err, GT_EFORMAT, "%s: no target tokens (every label is -100)", data);
        goto fail;
    }
    double mean = sum / (double)n;
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "mean_token_loss", json_real(mean));
        json_object_set_new(j, "tokens", json_integer(n));
        json_object_set_new(j, "rows", json_integer((json_int_t)docs.n_docs));
        char *s = json_dumps(j, JSON_REAL_PRECISION(17));
        printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        printf("mean next-token loss %.6f (perplexity %.4g) over %lld target tokens in %zu rows\n", mean, exp(mean),
               (long long)n, docs.n_docs);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "gptoss eval: %s\n", err.msg);
done:
    data_docs_free(&docs);
    if (tok) tokenizer_free(tok);
    if (have_lora) lora_adapter_free(&la);
    if (have_model) model_free(&m);
    run_config_free(&defaults);
    return rc;
}
