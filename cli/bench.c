// gptoss bench: times the LoRA training step on the GPU on synthetic data and reports tokens/s, step
// time, peak GPU memory and model-flops utilization.
//   --model M          a model directory or hub name (any quant gptoss loads; init-model makes one)
//   --batch B          documents per step (default 1); each is one packed row of --seq tokens
//   --seq T            tokens per document (default 2048)
//   --lora-r R         LoRA rank (default 8), alpha = 2R
//   --targets all|attn every projection (q, k, v, o and the experts' gate, up, down) or q, k, v, o
//   --steps N          timed steps after one warm-up step (default 5); the median is reported
//   --json             one JSON object instead of the table
// A step is what training does: zero the gradients, forward + backward (gradient checkpointing), global
// grad-norm clip at 1.0, 8-bit AdamW, all queued; the host waits once per step, reading the loss (as the trainer).
// FLOPs per token (the convention): 6 x the matmul parameters a token touches (attention
// projections, router, its top-K experts, LM head): forward, checkpoint recompute and the backward's input
// gradient (the base is frozen, so no weight gradients). Attention's own T x T work is printed apart.
// Peak bf16 dense rates for MFU: H100/H200 (SXM) 989.4 TFLOP/s, A100 312; other GPUs print no MFU.
#include "cli/cli.h"
#include "core/core.h"
#include "lora/lora.h"
#include "model/model.h"
#include "optim/optim.h"

#include <errno.h>
#include <math.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#if GPTOSS_HAVE_CUDA
#include "core/cuda_rt.h"

// Matmul parameters one token touches, and attention FLOPs per token (forward) at sequence length T.
static double bench_active_params(const model_config *c) {
    double D = c->hidden, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    double per_layer = 2 * D * Q + 2 * D * KV + D * c->n_experts + c->top_k * 3.0 * D * c->intermediate;
    return c->n_layers * per_layer + (double)c->vocab * D;
}
static double bench_attn_flops(const model_config *c, int T) {
    double total = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int W = c->layer_sliding[l] ? c->sliding_window : 0;
        double keys = 0;
        for (int t = 0; t < T; t++) keys += W > 0 && t + 1 > W ? W : t + 1;
        total += 4.0 * c->n_heads * c->head_dim * keys / T; // q.k and p.v, 2 FLOPs each
    }
    return total;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
#endif

static int bench_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gptoss bench: %s '%s': expected an integer in %ld..%ld\n", flag, s, lo, hi);
        return 0;
    }
    *out = (int)v;
    return 1;
}

int cmd_bench(int argc, char **argv) {
    static const char *const FLAGS[] = {"--model", "--batch", "--seq", "--lora-r", "--targets", "--steps", "--json"};
    const int n_flags = (int)(sizeof FLAGS / sizeof FLAGS[0]);
    const char *model_arg = NULL, *targets_s = "all";
    int B = 1, T = 2048, R = 8, steps = 5, json = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        int known = 0;
        for (int k = 0; k < n_flags; k++) known |= !strcmp(f, FLAGS[k]);
        if (!known) {
            const char *best = FLAGS[0];
            for (int k = 1; k < n_flags; k++)
                if (str_edit_distance(f, FLAGS[k]) < str_edit_distance(f, best)) best = FLAGS[k];
            fprintf(stderr, "gptoss bench: unknown argument '%s' (did you mean %s?); see --help\n", f, best);
            return 2;
        }
        if (!strcmp(f, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gptoss bench: %s needs a value\n", f);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) model_arg = v;
        else if (!strcmp(f, "--targets")) targets_s = v;
        else if (!strcmp(f, "--batch") && !bench_int(f, v, 1, 1024, &B)) return 2;
        else if (!strcmp(f, "--seq") && !bench_int(f, v, 2, 1 << 20, &T)) return 2;
        else if (!strcmp(f, "--lora-r") && !bench_int(f, v, 1, 4096, &R)) return 2;
        else if (!strcmp(f, "--steps") && !bench_int(f, v, 1, 100000, &steps)) return 2;
    }
    if (!model_arg) {
        fprintf(stderr, "gptoss bench: --model is required; see --help\n");
        return 2;
    }
    unsigned targets;
    if (!strcmp(targets_s, "all")) targets = (1u << LT_COUNT) - 1;
    else if (!strcmp(targets_s, "attn")) targets = (1u << LT_Q) | (1u << LT_K) | (1u << LT_V) | (1u << LT_O);
    else {
        fprintf(stderr, "gptoss bench: --targets '%s': expected all or attn\n", targets_s);
        return 2;
    }
    if ((long)B * T > (1 << 24)) {
        fprintf(stderr, "gptoss bench: --batch x --seq = %ld tokens per step is too many (at most %d)\n", (long)B * T,
                1 << 24);
        return 2;
    }
#if !GPTOSS_HAVE_CUDA
    (void)json, (void)steps, (void)targets;
    fprintf(stderr, "gptoss bench: this build has no CUDA backend (the benchmark times the GPU step); build with "
                    "nvcc on the PATH or scripts/build_gpu.sh\n");
    return 1;
#else
    if (cuda_device_count() == 0) {
        fprintf(stderr, "gptoss bench: no GPU found (the benchmark times the GPU step)\n");
        return 1;
    }
    char dir[4096];
    if (cli_infer_model_dir("bench", model_arg, dir, sizeof dir)) return 1;
    gt_error err = {0};
    model m;
    double t0 = now_s();
    if (model_load(&m, dir, MQ_AUTO, &err) != GT_OK) {
        fprintf(stderr, "gptoss bench: %s\n", err.msg);
        return 1;
    }
    const model_config *c = &m.cfg;
    const int NT = B * T;
    int rc = 1;
    model_cuda *mc = NULL;
    model_cuda_lora *cl = NULL;
    model_cuda_ws *ws = NULL;
    optim_cuda *oc = NULL;
    optim opt;
    memset(&opt, 0, sizeof opt);
    lora_adapter la;
    memset(&la, 0, sizeof la);
    int32_t *ids = xmalloc(NT * sizeof(int32_t)), *pos = xmalloc(NT * sizeof(int32_t));
    int32_t *doc = xmalloc(NT * sizeof(int32_t)), *tg = xmalloc(NT * sizeof(int32_t));
    double *times = xcalloc((size_t)steps, sizeof(double));
    lora_spec spec = {R, 2.0 * R, 0, targets};
    optim_config ocfg = {OPTIM_ADAMW_8BIT, 0.9, 0.999, 1e-8, 0.0, OPTIM_MIN_8BIT_SIZE};
    if (model_cuda_init(&mc, &m, &err) || lora_adapter_init(&la, c, &spec, 0, &err) ||
        model_cuda_lora_init(&cl, mc, &la.ml, la.params, la.grads, la.n_params, &err) ||
        model_cuda_ws_init(&ws, mc, R, NT, 1, &err)) {
        fprintf(stderr, "gptoss bench: %s\n", err.msg);
        goto done;
    }
    optim_segment *segs = xmalloc((size_t)la.n_segs * sizeof *segs);
    for (int i = 0; i < la.n_segs; i++)
        segs[i] = (optim_segment){la.params + la.segs[i].offset, la.grads + la.segs[i].offset, la.segs[i].n};
    gt_status st = optim_init(&opt, &ocfg, segs, la.n_segs, &err);
    free(segs);
    if (st || optim_cuda_init(&oc, &opt, la.params, la.grads, la.n_params, model_cuda_lora_params(cl),
                              model_cuda_lora_grads(cl), &err)) {
        fprintf(stderr, "gptoss bench: %s\n", err.msg);
        goto done;
    }
    char dev[256];
    cuda_device_name(dev, sizeof dev);
    if (!json)
        printf("device %s; loaded and uploaded in %.1f s\nGPU memory: weights %.2f GiB, LoRA %.3f GiB (%zu params), "
               "optimizer %.3f GiB, workspace %.2f GiB\n",
               dev, now_s() - t0, model_cuda_weight_bytes(mc) / 1073741824.0,
               2.0 * la.n_params * sizeof(float) / 1073741824.0, la.n_params, optim_state_bytes(&opt) / 1073741824.0,
               model_cuda_ws_bytes(ws) / 1073741824.0);
    // Synthetic batch: B documents of T random tokens; every position but a document's last has a target.
    uint64_t s = 12345;
    for (int i = 0; i < NT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)c->vocab);
        doc[i] = i / T;
    }
    model_batch_positions(doc, NT, pos);
    for (int i = 0; i < NT; i++) tg[i] = i + 1 < NT && doc[i + 1] == doc[i] ? ids[i + 1] : -1;
    model_batch b = {NT, ids, pos, doc, tg};
    double loss = 0;
    int64_t n = 0;
    for (int step = -1; step < steps; step++) { // step -1: warm-up (plans, caches), not timed
        double ts = now_s();
        model_cuda_lora_grads_zero(cl);
        if (model_cuda_forward_backward(ws, mc, cl, &b, 1.0f / (float)(NT - B), &n, &err)) {
            fprintf(stderr, "gptoss bench: %s\n", err.msg);
            goto done;
        }
        optim_cuda_clip_step(oc, 1.0, 1e-4, model_cuda_loss_dev(ws));
        loss = model_cuda_loss_read(ws); // the step's one wait, as in the trainer
        optim_cuda_finish(oc, loss);
        cuda_mem_sample();
        if (step >= 0) times[step] = now_s() - ts;
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    double med = times[steps / 2], tok_s = NT / med;
    double gflop = 6.0 * bench_active_params(c) / 1e9, attn_gflop = 4.0 * bench_attn_flops(c, T) / 1e9;
    double peak_flops = strstr(dev, "H100") || strstr(dev, "H200") ? 989.4e12 : strstr(dev, "A100") ? 312e12 : 0.0;
    double peak_gib = cuda_mem_sample() / 1073741824.0;
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "device", dev,
                              "model", model_arg, "batch", B, "seq", T, "lora_r", R, "targets", targets_s, "steps",
                              steps, "step_time_s", med, "tokens_per_s", tok_s, "peak_gpu_gib", peak_gib,
                              "gflop_per_token", gflop, "attn_gflop_per_token", attn_gflop, "loss", loss / n);
        json_object_set_new(o, "mfu", peak_flops > 0 ? json_real(tok_s * gflop * 1e9 / peak_flops) : json_null());
        char *txt = json_dumps(o, JSON_COMPACT);
        printf("%s\n", txt);
        free(txt);
        json_decref(o);
    } else {
        printf("batch %d x seq %d, LoRA r %d (%s), %d timed steps\n", B, T, R, targets_s, steps);
        printf("step time   %.3f s (median; min %.3f, max %.3f)\n", med, times[0], times[steps - 1]);
        printf("tokens/s    %.0f\n", tok_s);
        printf("peak memory %.2f GiB (device-wide, CUDA context included)\n", peak_gib);
        printf("GFLOP/token %.2f matmul (6 x active params) + %.2f attention\n", gflop, attn_gflop);
        if (peak_flops > 0) printf("MFU         %.1f%% of %.0f TFLOP/s bf16\n", 100.0 * tok_s * gflop * 1e9 / peak_flops,
                                   peak_flops / 1e12);
        printf("loss        %.4f (random tokens: about ln V = %.2f)\n", loss / n, log((double)c->vocab));
    }
    rc = 0;
done:
    if (oc) optim_cuda_free(oc);
    optim_free(&opt);
    model_cuda_ws_free(ws);
    model_cuda_lora_free(cl);
    model_cuda_free(mc);
    if (la.params) lora_adapter_free(&la);
    model_free(&m);
    cuda_gemm_free();
    free(ids), free(pos), free(doc), free(tg), free(times);
    return rc;
#endif
}
