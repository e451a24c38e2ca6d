// trainer/train.c: the training loop, on the CPU or one GPU. Load the data (token cache), the base model,
// a fresh LoRA adapter, the optimizer and the schedule; continue from the newest complete checkpoint with
// --resume; then per optimizer step: grad_accum micro-batches forward+backward (loss normalised by the
// step's total target-token count), the NaN/Inf check, clipping, the optimizer update; metrics, progress,
// evaluation, checkpoints; at the end the final evaluation, checkpoint and the PEFT adapter in
// run_dir/adapter/. trainer/trainer.h describes the step, the randomness and the run directory.
//
// Exactness of resume: everything a step computes is a function of the adapter parameters, the
// optimizer state, the step number (schedule) and the data cursor, all in the checkpoint; the CPU
// forward/backward is bitwise deterministic for any thread count. So N steps straight and k steps +
// resume + N-k steps give the same bits (tests/test_train.c checks it).
//
// Devices: one loop for both. device.type cuda (or auto with a GPU) puts the base weights, the adapter
// (params and grads), the workspace and the optimizer state on the GPU after the host state is complete
// (fresh or read from the checkpoint), so their *_init copies it up. The dev_* functions below are the
// only places that differ: zero grads, forward(+backward), the update (clip, skip, optimizer step), and
// dev_sync, which brings the adapter and optimizer state back to the host before a checkpoint or the PEFT
// export. On the GPU a step queues its micro-batches and the update without waiting; the device itself skips
// a non-finite update, and the host waits once, for the loss (dev_update).
// A GPU resume restores the state exactly (the first resumed step's loss is the straight run's, bit for
// bit), but the GPU backward is not bitwise reproducible from one process to the next, so later steps
// agree only to ~1e-4 there (bench/NOTES.md; scripts/gpu_check.sh checks it).
#include "trainer/trainer.h"

#if GPTOSS_HAVE_CUDA
#include "core/cuda_rt.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// The signal that asked the run to stop (SIGINT/SIGTERM), 0 while none.
static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

typedef struct trainer {
    const train_run *r;
    const run_config *cfg;
    tokenizer *tok;
    data_set data;
    int have_data;
    model m;
    int have_model;
    lora_adapter la;
    int have_la;
    optim opt;
    int have_opt;
    optim_segment *segs; // [la.n_segs] one per LoRA tensor
    sched sch;
    run_device dev; // RC_DEVICE_CPU or RC_DEVICE_CUDA (resolved)
    model_ws *ws;   // cpu
#if GPTOSS_HAVE_CUDA
    model_cuda *mc; // cuda: weights, the adapter's mirror, workspace, optimizer
    model_cuda_lora *cl;
    model_cuda_ws *cws;
    optim_cuda *oc;
#endif
    train_metrics met;
    int have_met;
    progress prog;
    FILE *log;    // run_dir/train.log
    int lock_fd;  // run_dir/.lock, flock'ed
    ckpt_state st;
    uint32_t *order; // (n_rows) the current epoch's row order
    int64_t order_epoch;
    int32_t *ids, *pos, *doc, *tgt; // (buf_tokens) a step's micro-batches back to back
    int *mb_T;                      // (GA) tokens of each micro-batch of the step
    int64_t total_steps;
    int B, GA, S, eval_B;
    int32_t pad_id;
    int64_t inject_nan_step; // GPTOSS_TEST_INJECT_NAN_STEP, 0 = off
    char last_ckpt[4096];
} trainer;

static double mib(size_t bytes) { return (double)bytes / 1048576.0; }

// Rows rows[0..n) of p back to back into the step buffers at token offset off: each row's document
// numbers continue after the previous row's, so attention never crosses rows. Returns the tokens.
static int fill_rows(trainer *t, const data_pack *p, const uint32_t *rows, int n, size_t off) {
    int T = 0;
    int32_t doc_base = 0;
    for (int i = 0; i < n; i++) {
        int len = (int)p->row_len[rows[i]];
        size_t o = off + (size_t)T;
        data_pack_row(p, &t->data.docs, rows[i], len, t->pad_id, t->ids + o, t->pos + o, t->doc + o, t->tgt + o);
        for (int j = 0; j < len; j++) t->doc[o + j] += doc_base;
        doc_base = t->doc[o + len - 1] + 1;
        T += len;
    }
    return T;
}

static model_batch batch_at(const trainer *t, size_t off, int T) {
    return (model_batch){.T = T, .ids = t->ids + off, .pos = t->pos + off, .doc = t->doc + off, .targets = t->tgt + off};
}

// The device-specific steps (see the file header).
static void dev_grads_zero(trainer *t) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) {
        model_cuda_lora_grads_zero(t->cl);
        return;
    }
#endif
    lora_adapter_grads_zero(&t->la);
}

static gt_status dev_forward_loss(trainer *t, const model_batch *b, double *loss_sum, int64_t *n, gt_error *err) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) return model_cuda_forward_loss(t->cws, t->mc, t->cl, b, loss_sum, n, NULL, err);
#endif
    return model_forward_loss(t->ws, &t->m, &t->la.ml, b, loss_sum, n, NULL, err);
}

// loss_sum += the batch's loss sum on the CPU; on the GPU it stays on the device until dev_update.
static gt_status dev_forward_backward(trainer *t, const model_batch *b, float scale, double *loss_sum, int64_t *n,
                                      gt_error *err) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) return model_cuda_forward_backward(t->cws, t->mc, t->cl, b, scale, n, err);
#endif
    double ls = 0;
    gt_status st = model_forward_backward(t->ws, &t->m, &t->la.ml, b, scale, &ls, n, err);
    *loss_sum += ls;
    return st;
}

// The NaN test hook (trainer.h): the first gradient element becomes NaN, where the gradients live.
static void dev_inject_nan(trainer *t) {
    float nan = NAN;
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) {
        cuda_h2d(model_cuda_lora_grads(t->cl), &nan, sizeof nan);
        return;
    }
#endif
    t->la.grads[0] = nan;
}

// Clipping to max_norm and the optimizer step at lr, applied only when the loss and the pre-clip gradient
// norm are finite (the trainer's skip; stop also applies nothing); *loss_sum (the step's, complete after this)
// and *gnorm out. On the GPU the device decides the skip from its own loss and norm, and the loss read after
// everything is queued is the step's one host wait.
static void dev_update(trainer *t, double max_norm, double lr, double *loss_sum, double *gnorm) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) {
        optim_cuda_clip_step(t->oc, max_norm, lr, model_cuda_loss_dev(t->cws));
        *loss_sum = model_cuda_loss_read(t->cws);
        *gnorm = optim_cuda_finish(t->oc, *loss_sum);
        return;
    }
#endif
    *gnorm = optim_grad_clip(t->segs, t->la.n_segs, max_norm);
    if (isfinite(*loss_sum) && isfinite(*gnorm)) optim_step(&t->opt, lr);
}

// The adapter parameters and the optimizer state (moments, step) back to the host arenas that
// checkpoints and the export read. Nothing to do on the CPU.
static void dev_sync(trainer *t) {
#if GPTOSS_HAVE_CUDA
    if (t->dev != RC_DEVICE_CUDA) return;
    model_cuda_lora_download(t->cl, t->la.params, NULL);
    optim_cuda_pull(t->oc, &t->opt);
#else
    (void)t;
#endif
}

// The workspace for batches of up to max_T tokens; on the GPU also the weights, the adapter's mirror and
// the optimizer, copied from the host state as it is now (fresh or read from a checkpoint).
static gt_status dev_init(trainer *t, int max_T, gt_error *err) {
    const run_config *c = t->cfg;
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) {
        gt_status st = model_cuda_init(&t->mc, &t->m, err);
        if (!st) st = model_cuda_lora_init(&t->cl, t->mc, &t->la.ml, t->la.params, t->la.grads, t->la.n_params, err);
        if (!st) st = model_cuda_ws_init(&t->cws, t->mc, c->lora.rank, max_T, t->GA, err);
        if (!st)
            st = optim_cuda_init(&t->oc, &t->opt, t->la.params, t->la.grads, t->la.n_params,
                                 model_cuda_lora_params(t->cl), model_cuda_lora_grads(t->cl), err);
        if (st) return st;
        char name[256];
        cuda_device_name(name, sizeof name);
        progress_printf(&t->prog, "device: cuda %d, %s; base weights on the GPU %.2f MiB, %.2f GiB of GPU memory in "
                        "use", c->device.index, name, mib(model_cuda_weight_bytes(t->mc)),
                        (double)cuda_mem_used() / 1073741824.0);
        return GT_OK;
    }
#endif
    progress_printf(&t->prog, "device: cpu");
    return model_ws_init(&t->ws, &t->m, c->lora.rank, max_T, c->train.gradient_checkpointing, err);
}

static size_t dev_ws_bytes(const trainer *t) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) return model_cuda_ws_bytes(t->cws);
#endif
    return model_ws_bytes(t->ws);
}

static void dev_free(trainer *t) {
#if GPTOSS_HAVE_CUDA
    if (t->dev == RC_DEVICE_CUDA) {
        optim_cuda_free(t->oc);
        model_cuda_ws_free(t->cws);
        model_cuda_lora_free(t->cl);
        model_cuda_free(t->mc);
        cuda_gemm_free(); // made by model_cuda_init
    }
#endif
    model_ws_free(t->ws);
}

// Mean token loss over the validation rows (eval.max_batches batches of eval_B rows, 0 = all). *aborted
// when a signal came in between batches (the result is then not logged).
static gt_status evaluate(trainer *t, double *loss, uint64_t *n_tok, int *aborted, gt_error *err) {
    const data_pack *p = &t->data.val;
    size_t n_rows = p->n_rows, nb = (n_rows + (size_t)t->eval_B - 1) / (size_t)t->eval_B;
    if (t->cfg->eval.max_batches > 0 && nb > (size_t)t->cfg->eval.max_batches) nb = (size_t)t->cfg->eval.max_batches;
    double sum = 0;
    int64_t n = 0;
    uint32_t *rows = xmalloc((size_t)t->eval_B * sizeof *rows);
    gt_status st = GT_OK;
    *aborted = 0;
    for (size_t b = 0; b < nb && !st; b++) {
        if (g_signal) {
            *aborted = 1;
            break;
        }
        int k = 0;
        for (size_t r = b * (size_t)t->eval_B; r < n_rows && k < t->eval_B; r++) rows[k++] = (uint32_t)r;
        int T = fill_rows(t, p, rows, k, 0);
        model_batch mb = batch_at(t, 0, T);
        double ls;
        int64_t nt;
        st = dev_forward_loss(t, &mb, &ls, &nt, err);
        sum += ls, n += nt;
    }
    free(rows);
    *loss = n ? sum / (double)n : NAN;
    *n_tok = (uint64_t)n;
    return st;
}

static gt_status do_eval(trainer *t, train_result *res, gt_error *err) {
    double vl;
    uint64_t nt;
    int aborted;
    gt_status st = evaluate(t, &vl, &nt, &aborted, err);
    if (st || aborted) return st;
    t->st.last_eval_step = t->st.step;
    res->val_loss = vl;
    progress_printf(&t->prog, "eval step %lld: val_loss %.4f over %llu tokens", (long long)t->st.step, vl,
                    (unsigned long long)nt);
    st = metrics_log_eval(&t->met, t->st.step, vl, nt, err);
    if (!st) st = metrics_plot(&t->met, t->cfg->train.name, t->total_steps, err);
    return st;
}

static gt_status checkpoint(trainer *t, gt_error *err) {
    dev_sync(t); // the export after the last checkpoint reads the same host copy
    gt_status st = ckpt_write(t->r->run_dir, &t->st, &t->la, &t->opt, t->cfg->model.name, t->cfg->checkpoint.keep_last,
                              t->last_ckpt, sizeof t->last_ckpt, err);
    if (st) {
        gt_error e2;
        char prev[4096];
        int64_t ps;
        if (ckpt_find_latest(t->r->run_dir, prev, sizeof prev, &ps, &e2) == GT_OK) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            gt_fail(err, st, "%s (the last complete checkpoint, %s, is intact; continue from it with --resume %s)", msg,
                    prev, t->r->run_dir);
        }
        return st;
    }
    progress_printf(&t->prog, "checkpoint: %s", t->last_ckpt);
    return metrics_plot(&t->met, t->cfg->train.name, t->total_steps, err);
}

// One optimizer step. A NaN/Inf under nan_policy stop is an error (nothing applied).
static gt_status train_step(trainer *t, train_result *res, gt_error *err) {
    const data_pack *p = &t->data.train;
    size_t n_rows = p->n_rows;
    if (t->st.index >= n_rows) t->st.epoch++, t->st.index = 0;
    if (t->order_epoch != (int64_t)t->st.epoch) {
        data_epoch_order(t->r->data, n_rows, t->st.epoch, t->order);
        t->order_epoch = (int64_t)t->st.epoch;
    }
    int rows = (int)((size_t)t->B * (size_t)t->GA < n_rows - t->st.index ? (size_t)t->B * (size_t)t->GA
                                                                            : n_rows - t->st.index);
    // The step's micro-batches, then its target-token count N: each backward is scaled by 1/N.
    int nmb = (rows + t->B - 1) / t->B;
    int *Ts = t->mb_T;
    size_t off = 0;
    int64_t N = 0;
    for (int k = 0; k < nmb; k++) {
        int n = rows - k * t->B < t->B ? rows - k * t->B : t->B;
        Ts[k] = fill_rows(t, p, t->order + t->st.index + (size_t)k * (size_t)t->B, n, off);
        for (int j = 0; j < Ts[k]; j++) N += t->tgt[off + (size_t)j] >= 0;
        off += (size_t)Ts[k];
    }
    double t0 = progress_now(), loss_sum = 0;
    dev_grads_zero(t);
    gt_status st = GT_OK;
    off = 0;
    for (int k = 0; k < nmb && N > 0 && !st; k++) {
        model_batch mb = batch_at(t, off, Ts[k]);
        int64_t nt;
        st = dev_forward_backward(t, &mb, (float)(1.0 / (double)N), &loss_sum, &nt, err);
        off += (size_t)Ts[k];
    }
    if (st) return st;
    int64_t step = t->st.step + 1;
    if (t->inject_nan_step == step) dev_inject_nan(t); // test hook (trainer.h)
    double lr = sched_lr(&t->sch, t->st.step), gnorm = NAN;
    if (N > 0) dev_update(t, t->cfg->optim.max_grad_norm, lr, &loss_sum, &gnorm);
    double loss = N ? loss_sum / (double)N : NAN;
    const char *bad = N == 0 ? "no target tokens" : !isfinite(loss) ? "non-finite loss" : !isfinite(gnorm) ? "non-finite gradient" : NULL;
    if (bad && N > 0 && t->cfg->train.nan_policy == RC_NAN_STOP)
        return gt_fail(err, GT_EINVAL, "step %lld: %s (loss %g, gradient norm %g): stopped (train.nan_policy: stop); "
                       "nothing of this step was applied%s%s", (long long)step, bad, loss, gnorm,
                       t->last_ckpt[0] ? "; the last checkpoint is " : "", t->last_ckpt);
    uint64_t tokens = 0; // not padding (there is none: rows go back to back)
    for (int j = 0; j < rows; j++) tokens += p->row_len[t->order[t->st.index + (size_t)j]];
    double dt;
    if (bad) {
        dt = progress_now() - t0;
        progress_printf(&t->prog, "step %lld: %s (loss %g, gradient norm %g): skipped, not applied "
                        "(train.nan_policy: skip)", (long long)step, bad, loss, gnorm);
        st = metrics_log_skip(&t->met, step, bad, err);
        t->st.skipped++;
    } else {
        dt = progress_now() - t0;
        t->st.train_seconds += dt;
        metrics_step ms = {.step = step, .epoch = t->st.epoch, .loss = loss, .lr = lr, .grad_norm = gnorm,
                           .tokens_per_s = (double)tokens / dt, .time_s = t->st.train_seconds, .tokens = tokens};
        st = metrics_log_step(&t->met, &ms, err);
        res->loss = loss;
    }
    t->st.index += (uint64_t)rows;
    t->st.step = step;
    t->st.tokens_seen += tokens;
    progress_step(&t->prog, &(progress_info){step, loss, lr, gnorm, (double)tokens / dt});
    return st;
}

static gt_status lock_run(trainer *t, gt_error *err) {
    char *p = fs_join(t->r->run_dir, ".lock");
    t->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    gt_status st = GT_OK;
    if (t->lock_fd < 0)
        st = gt_fail(err, GT_EIO, "%s: cannot create: %s (is the run directory writable?)", p, strerror(errno));
    else if (flock(t->lock_fd, LOCK_EX | LOCK_NB) != 0)
        st = gt_fail(err, GT_EINVAL, "%s is in use by another gptoss train (it holds %s); wait for it or use "
                     "another train.name", t->r->run_dir, p);
    free(p);
    return st;
}

static gt_status setup(trainer *t, train_result *res, gt_error *err) {
    const run_config *c = t->cfg;
    const train_run *r = t->r;
    gt_status st = lock_run(t, err);
    if (st) return st;
    char *lp = fs_join(r->run_dir, "train.log");
    t->log = fopen(lp, "a");
    if (!t->log) st = gt_fail(err, GT_EIO, "%s: cannot open for writing: %s", lp, strerror(errno));
    free(lp);
    if (st) return st;
    progress_init(&t->prog, 0, 1, 0, 0, t->log);
    progress_printf(&t->prog, "%s run %s: model %s, data %s", r->resume ? "resuming" : "starting", r->run_dir,
                    r->model_dir, r->data->train_files[0]);

    // Data
    if ((st = tokenizer_load_hf(&t->tok, r->data->tokenizer_path, err))) return st;
    if ((st = data_set_load(r->data, t->tok, &t->data, err))) return st;
    t->have_data = 1;
    if (t->data.train.n_rows == 0)
        return gt_fail(err, GT_EINVAL, "%s: no training rows after the validation split and packing",
                       r->data->train_files[0]);
    // Model
    if ((st = model_load(&t->m, r->model_dir, c->model.quant, err))) return st;
    t->have_model = 1;
    uint32_t max_id = 0;
    for (size_t i = 0; i < t->data.docs.n_tokens; i++)
        if (t->data.docs.tokens[i] > max_id) max_id = t->data.docs.tokens[i];
    if (max_id >= (uint32_t)t->m.cfg.vocab)
        return gt_fail(err, GT_EINVAL, "the tokenizer %s gives token id %u, but the model %s has a vocabulary of %d: "
                       "use the model's own tokenizer (model.tokenizer)", r->data->tokenizer_path, max_id,
                       r->model_dir, t->m.cfg.vocab);
    t->pad_id = t->m.cfg.pad_token_id >= 0 ? t->m.cfg.pad_token_id : 0;
    // LoRA, optimizer, schedule
    lora_spec spec = {.rank = c->lora.rank, .alpha = c->lora.alpha, .use_rslora = c->lora.use_rslora};
    if ((st = lora_targets_parse((const char *const *)c->lora.targets.items, c->lora.targets.n, &spec.targets, err)))
        return st;
    uint64_t init_seed = (uint64_t)(c->lora.init_seed >= 0 ? c->lora.init_seed : c->train.seed);
    if ((st = lora_adapter_init(&t->la, &t->m.cfg, &spec, init_seed, err))) return st;
    t->have_la = 1;
    t->segs = xmalloc((size_t)t->la.n_segs * sizeof *t->segs);
    for (int i = 0; i < t->la.n_segs; i++)
        t->segs[i] = (optim_segment){t->la.params + t->la.segs[i].offset, t->la.grads + t->la.segs[i].offset,
                                     t->la.segs[i].n};
    optim_config oc = {.kind = c->optim.name == RC_OPTIM_ADAMW_8BIT ? OPTIM_ADAMW_8BIT : OPTIM_ADAMW,
                       .beta1 = c->optim.beta1, .beta2 = c->optim.beta2, .eps = c->optim.eps,
                       .weight_decay = c->optim.weight_decay, .min_8bit_size = OPTIM_MIN_8BIT_SIZE};
    if ((st = optim_init(&t->opt, &oc, t->segs, t->la.n_segs, err))) return st;
    t->have_opt = 1;
    t->B = c->train.batch_size, t->GA = c->train.grad_accum, t->S = c->data.max_seq_len;
    t->eval_B = c->eval.batch_size > 0 ? c->eval.batch_size : t->B;
    size_t n_rows = t->data.train.n_rows, per_step = (size_t)t->B * (size_t)t->GA;
    int64_t steps_per_epoch = (int64_t)((n_rows + per_step - 1) / per_step);
    // train.max_steps ends the run when it comes before the end of the last epoch (the schema's words).
    t->total_steps = steps_per_epoch * c->train.epochs;
    if (c->train.max_steps > 0 && c->train.max_steps < t->total_steps) t->total_steps = c->train.max_steps;
    static const sched_kind kinds[] = {[RC_SCHED_CONSTANT] = SCHED_CONSTANT, [RC_SCHED_LINEAR] = SCHED_LINEAR,
                                       [RC_SCHED_COSINE] = SCHED_COSINE, [RC_SCHED_COSINE_MIN_LR] = SCHED_COSINE_MIN_LR};
    int64_t warmup = sched_warmup_steps(t->total_steps, c->optim.warmup_steps, c->optim.warmup_ratio);
    if ((st = sched_init(&t->sch, kinds[c->optim.schedule], c->optim.lr, t->total_steps, warmup, c->optim.min_lr_ratio,
                         err)))
        return st;
    // Buffers: a step's rows (or an eval batch) back to back; the workspace for the longest batch.
    int max_rows = t->B > t->eval_B ? t->B : t->eval_B;
    size_t buf_rows = per_step > (size_t)t->eval_B ? per_step : (size_t)t->eval_B;
    size_t buf_tokens = buf_rows * (size_t)t->S;
    t->ids = xmalloc(buf_tokens * sizeof *t->ids), t->pos = xmalloc(buf_tokens * sizeof *t->pos);
    t->doc = xmalloc(buf_tokens * sizeof *t->doc), t->tgt = xmalloc(buf_tokens * sizeof *t->tgt);
    t->order = xmalloc(n_rows * sizeof *t->order);
    t->mb_T = xmalloc((size_t)t->GA * sizeof *t->mb_T);
    t->order_epoch = -1;

    // Fresh state, or the newest complete checkpoint.
    t->st = (ckpt_state){.data_seed = r->data->seed, .init_seed = init_seed, .n_train_rows = n_rows,
                         .last_eval_step = -1};
    int64_t keep_until = -1;
    if (r->resume) {
        char path[4096];
        int64_t step;
        gt_error e2;
        if (ckpt_find_latest(r->run_dir, path, sizeof path, &step, &e2) != GT_OK) {
            progress_printf(&t->prog, "resume: %s; starting from step 0", e2.msg);
        } else {
            ckpt_state s;
            if ((st = ckpt_read(path, &s, &t->la, &t->opt, err))) return st;
            if (s.data_seed != t->st.data_seed || s.init_seed != init_seed || s.n_train_rows != n_rows)
                return gt_fail(err, GT_EINVAL, "%s: written for other data or seeds (data seed %llu, init seed %llu, "
                               "%llu training rows; now %llu, %llu, %zu): the run cannot continue exactly", path,
                               (unsigned long long)s.data_seed, (unsigned long long)s.init_seed,
                               (unsigned long long)s.n_train_rows, (unsigned long long)t->st.data_seed,
                               (unsigned long long)init_seed, n_rows);
            t->st = s;
            keep_until = s.step;
            snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", path);
            progress_printf(&t->prog, "resuming from %s (step %lld, epoch %llu, row %llu of its order)", path,
                            (long long)s.step, (unsigned long long)s.epoch, (unsigned long long)s.index);
        }
    }
    if ((st = dev_init(t, max_rows * t->S, err))) return st;
    if ((st = metrics_open(&t->met, r->run_dir, keep_until, err))) return st;
    t->have_met = 1;

    progress_printf(&t->prog, "data: %zu training rows (%llu tokens), %zu validation rows; %lld steps of %d x %d rows "
                    "of up to %d tokens (%lld per epoch)", n_rows, (unsigned long long)t->data.train.tokens,
                    t->data.val.n_rows, (long long)t->total_steps, t->GA, t->B, t->S, (long long)steps_per_epoch);
    progress_printf(&t->prog, "memory: LoRA %zu parameters %.2f MiB + gradients %.2f MiB; optimizer %s state %.2f MiB; "
                    "workspace %.2f MiB (%d tokens, gradient checkpointing %s); RSS %.0f MiB",
                    t->la.n_params, mib(t->la.n_params * 4), mib(t->la.n_params * 4),
                    oc.kind == OPTIM_ADAMW ? "adamw (fp32)" : "adamw_8bit", mib(optim_state_bytes(&t->opt)),
                    mib(dev_ws_bytes(t)), max_rows * t->S,
                    c->train.gradient_checkpointing || t->dev == RC_DEVICE_CUDA ? "on" : "off", // always on the GPU
                    mib(progress_rss_bytes()));
    const char *inj = getenv("GPTOSS_TEST_INJECT_NAN_STEP");
    t->inject_nan_step = inj ? strtoll(inj, NULL, 10) : 0;
    return GT_OK;
}

static void teardown(trainer *t) {
    if (t->have_met) metrics_close(&t->met);
    dev_free(t);
    if (t->have_opt) optim_free(&t->opt);
    if (t->have_la) lora_adapter_free(&t->la);
    if (t->have_model) model_free(&t->m);
    if (t->have_data) data_set_free(&t->data);
    if (t->tok) tokenizer_free(t->tok);
    free(t->segs);
    free(t->order);
    free(t->mb_T);
    free(t->ids);
    free(t->pos);
    free(t->doc);
    free(t->tgt);
    if (t->log) fclose(t->log);
    if (t->lock_fd >= 0) close(t->lock_fd); // releases the flock
}

static gt_status run_loop(trainer *t, train_result *res, gt_error *err) {
    const run_config *c = t->cfg;
    int have_val = t->data.val.n_rows > 0;
    int isatty_err = isatty(STDERR_FILENO);
    int bar = c->log.progress == RC_PROGRESS_ON || (c->log.progress == RC_PROGRESS_AUTO && isatty_err);
    progress_init(&t->prog, bar, c->log.every_steps, t->total_steps, t->st.step, t->log);
    gt_status st = GT_OK;
    // Periodic evaluation includes step 0: the curve starts at the base model's loss.
    if (have_val && c->eval.every_steps > 0 && t->st.step == 0 && t->st.last_eval_step < 0) st = do_eval(t, res, err);
    while (!st && t->st.step < t->total_steps && !g_signal) {
        st = train_step(t, res, err);
        int64_t s = t->st.step;
        if (!st && have_val && c->eval.every_steps > 0 && s % c->eval.every_steps == 0) st = do_eval(t, res, err);
        if (!st && c->checkpoint.every_steps > 0 && s % c->checkpoint.every_steps == 0 && s < t->total_steps)
            st = checkpoint(t, err);
    }
    progress_end(&t->prog);
    if (st) return st;
    if (g_signal) {
        res->signal = g_signal;
        progress_printf(&t->prog, "%s: stopping after step %lld", g_signal == SIGINT ? "SIGINT" : "SIGTERM",
                        (long long)t->st.step);
        st = checkpoint(t, err);
        if (!st)
            progress_printf(&t->prog, "stopped at step %lld of %lld; continue with: gptoss train CONFIG.yaml --resume %s",
                            (long long)t->st.step, (long long)t->total_steps, t->r->run_dir);
    } else {
        if (have_val && t->st.last_eval_step != t->st.step) st = do_eval(t, res, err);
        if (!st) st = checkpoint(t, err);
        char *ad = fs_join(t->r->run_dir, "adapter");
        if (!st) st = lora_peft_save(&t->la, ad, c->model.name, err);
        char vl[64] = "";
        if (isfinite(res->val_loss)) snprintf(vl, sizeof vl, ", validation loss %.4f", res->val_loss);
        if (!st)
            progress_printf(&t->prog, "done: %lld steps (%lld skipped), last loss %.4f%s; adapter (PEFT): %s; loss plot: "
                            "%s", (long long)t->st.step, (long long)t->st.skipped, res->loss, vl, ad, t->met.svg_path);
        free(ad);
    }
    res->steps = t->st.step;
    res->skipped = t->st.skipped;
    snprintf(res->checkpoint, sizeof res->checkpoint, "%s", t->last_ckpt);
    return st;
}

// The device cfg asks for, resolved; an error names the setting ("device.type cuda: no GPU found ...").
static gt_status train_device(const run_config *cfg, run_device *dev, gt_error *err) {
    gt_status st = train_device_resolve(cfg->device.type, cfg->device.index, dev, err);
    if (st) gt_wrap(err, "device.type %s", cfg->device.type == RC_DEVICE_AUTO ? "auto" : "cuda"); // cpu never fails
    return st;
}

gt_status train_check_device(const run_config *cfg, gt_error *err) {
    run_device dev;
    return train_device(cfg, &dev, err);
}

gt_status train_run_main(const train_run *r, train_result *res, gt_error *err) {
    memset(res, 0, sizeof *res);
    res->loss = res->val_loss = NAN;
    const run_config *c = r->cfg;
    run_device dev;
    gt_status dst = train_device(c, &dev, err);
    if (dst) return dst;
#ifdef _OPENMP
    if (c->device.threads > 0) omp_set_num_threads(c->device.threads);
#endif
    trainer t = {.r = r, .cfg = c, .lock_fd = -1, .dev = dev};
    g_signal = 0;
    struct sigaction sa = {0}, old_int, old_term, old_xfsz, ign = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND; // a second Ctrl-C kills at once
    sigemptyset(&sa.sa_mask);
    ign.sa_handler = SIG_IGN; // a file-size limit becomes a write error (reported), not a kill
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGXFSZ, &ign, &old_xfsz);
    gt_status st = setup(&t, res, err);
    if (!st) st = run_loop(&t, res, err);
    if (st && t.log) fprintf(t.log, "error: %s\n", err->msg); // the caller prints it
    teardown(&t);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGXFSZ, &old_xfsz, NULL);
    return st;
}
