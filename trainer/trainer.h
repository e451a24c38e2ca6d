// trainer: the run configuration (schema, YAML loading, --set overrides, validation, printing and
// saving), the training loop, evaluation, checkpoints and resume, metrics and the loss plot.
//
// The one door of trainer/. cli/ and tests include only this header (which includes the others').
#ifndef GPTOSS_TRAINER_H
#define GPTOSS_TRAINER_H

#include "core/core.h"
#include "data/data.h"
#include "lora/lora.h"
#include "model/model.h"
#include "optim/optim.h"

#include <stdbool.h>

// ---------------------------------------------------------------------------------------------------
// Run configuration
//
// One schema for a whole run, a static table in trainer/config.c: ten sections (model, data, template,
// lora, optim, train, checkpoint, eval, log, device), each key with its type, default, allowed range or
// values, a one-line doc, and its place in `run_config` below. configs/README.md is generated from that
// table (`gptoss train --schema-markdown`) and a test keeps the two equal.
//
// Invariants:
//   - every key of the schema is a field here and every field is a key there (nothing hidden);
//   - after run_config_defaults, and after every successful load/set, every field holds an allowed value
//     (cross-field rules are checked by run_config_validate);
//   - strings are heap-owned by the config (never NULL; "" where the doc says empty) and freed by
//     run_config_free; lists likewise.
//   - a run_config is written back as YAML with every key; loading that file gives the same config.
//
// Error messages name the place: FILE:LINE:COLUMN (1-based) for a YAML file, `--set section.key=value`
// for an override; unknown sections and keys suggest the nearest valid one ("did you mean 'rank'?");
// type and range errors state what is allowed.

// Enum-valued keys. Values are in the order of the schema's spelled-out names (trainer/config.c).
typedef enum run_data_format { RC_FORMAT_AUTO, RC_FORMAT_MESSAGES, RC_FORMAT_FLAT, RC_FORMAT_TOKENIZED } run_data_format;
typedef enum run_overlong { RC_OVERLONG_TRUNCATE, RC_OVERLONG_DROP } run_overlong;
typedef enum run_bad_row { RC_BAD_ROW_ERROR, RC_BAD_ROW_SKIP } run_bad_row;
typedef enum run_effort { RC_EFFORT_LOW, RC_EFFORT_MEDIUM, RC_EFFORT_HIGH } run_effort;
typedef enum run_variant { RC_VARIANT_HF, RC_VARIANT_HARMONY } run_variant;
typedef enum run_train_on { RC_TRAIN_ON_ASSISTANT, RC_TRAIN_ON_FINAL, RC_TRAIN_ON_ALL } run_train_on;
typedef enum run_optim { RC_OPTIM_ADAMW, RC_OPTIM_ADAMW_8BIT } run_optim;
typedef enum run_schedule { RC_SCHED_CONSTANT, RC_SCHED_LINEAR, RC_SCHED_COSINE, RC_SCHED_COSINE_MIN_LR } run_schedule;
typedef enum run_nan_policy { RC_NAN_SKIP, RC_NAN_STOP } run_nan_policy;
typedef enum run_progress { RC_PROGRESS_AUTO, RC_PROGRESS_ON, RC_PROGRESS_OFF } run_progress;
typedef enum run_device { RC_DEVICE_AUTO, RC_DEVICE_CPU, RC_DEVICE_CUDA } run_device;

typedef struct run_str_list {
    char **items;
    int n;
} run_str_list;

typedef struct run_model_config {
    char *name;        // hub name org/name or a directory
    char *revision;    // refs/ name or commit hash
    model_quant quant; // model.h's enum; schema spelling auto|bf16|mxfp4|nf4
    char *tokenizer;   // "" = the model directory's tokenizer.json
} run_model_config;

typedef struct run_data_config {
    char *path; // file or hub dataset org/name
    char *revision;
    char *split;
    run_data_format format;
    char *messages_column;
    char *system_column, *user_column, *thinking_column, *answer_column; // flat rows; "" = absent
    int max_seq_len;
    bool packing;
    run_overlong overlong;
    run_bad_row on_bad_row;
    int max_rows;        // 0 = all
    double val_fraction; // 0 = none
    char *val_path;      // "" = none
    bool shuffle;
    int shuffle_seed;    // -1 = train.seed
    char *cache_dir;
} run_data_config;

typedef struct run_template_config {
    run_effort reasoning_effort;
    char *model_identity;
    char *date; // YYYY-MM-DD, a real calendar date
    run_variant variant;
    run_train_on train_on;
} run_template_config;

typedef struct run_lora_config {
    int rank;
    double alpha;
    double dropout; // always 0 (the only supported value)
    bool use_rslora;
    run_str_list targets; // 1..7 distinct names of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
                          // ("all" is expanded on input)
    int init_seed;        // -1 = train.seed
} run_lora_config;

typedef struct run_optim_config {
    run_optim name;
    double lr, beta1, beta2, eps, weight_decay;
    run_schedule schedule;
    int warmup_steps;
    double warmup_ratio;
    double min_lr_ratio;
    double max_grad_norm; // 0 = no clipping
} run_optim_config;

typedef struct run_train_config {
    char *name; // "" until the CLI derives it from the config file name
    char *out_dir;
    int epochs;
    int max_steps; // 0 = all epochs
    int batch_size, grad_accum;
    bool gradient_checkpointing;
    int seed;
    run_nan_policy nan_policy;
} run_train_config;

typedef struct run_checkpoint_config {
    int every_steps; // 0 = only at the end
    int keep_last;   // 0 = keep all
} run_checkpoint_config;

typedef struct run_eval_config {
    int every_steps; // 0 = only at the end
    int max_batches; // 0 = all
    int batch_size;  // 0 = train.batch_size
} run_eval_config;

typedef struct run_log_config {
    int every_steps;
    run_progress progress;
} run_log_config;

typedef struct run_device_config {
    run_device type;
    int index;
    int threads; // 0 = all cores
} run_device_config;

typedef struct run_config {
    run_model_config model;
    run_data_config data;
    run_template_config tmpl; // section "template"
    run_lora_config lora;
    run_optim_config optim;
    run_train_config train;
    run_checkpoint_config checkpoint;
    run_eval_config eval;
    run_log_config log;
    run_device_config device;
} run_config;

// Fills cfg with every key's default (discarding nothing: call on an uninitialised struct).
void run_config_defaults(run_config *cfg);
void run_config_free(run_config *cfg);

// Applies the keys of a YAML file on top of cfg. Reports every problem found (one per line, each
// FILE:LINE:COLUMN: ...), up to what fits in err. On error cfg holds a partly applied, still valid-per-key
// config that the caller frees.
gt_status run_config_load_file(run_config *cfg, const char *path, gt_error *err);
// Applies one "section.key=value" override (lists: comma-separated, optionally in [ ]). On error cfg is
// unchanged.
gt_status run_config_set(run_config *cfg, const char *assignment, gt_error *err);
// Every key's own range again (for fields set from C) plus the cross-field rules (warmup given twice,
// validation data given twice, eval without validation data, ...). Messages start with "config: ".
gt_status run_config_validate(const run_config *cfg, gt_error *err);

// What every command that takes CONFIG.yaml [--set K=V]... does: defaults, the file, the overrides in
// order, train.name from the file name when empty ("configs/tiny.yaml" -> "tiny"), validation.
// On error cfg is still to be freed.
gt_status run_config_resolve(run_config *cfg, const char *path, const char *const *sets, int n_sets, gt_error *err);

// The resolved config as a table, one key per line, `*` marking values that differ from the default.
void run_config_print_table(FILE *f, const run_config *cfg);
// Writes every key as YAML (libyaml emitter) to path atomically (fs_write_atomic).
gt_status run_config_write_yaml(const run_config *cfg, const char *path, gt_error *err);
// Number of keys whose values differ; their "section.key: A -> B" lines go into out (truncated to size).
int run_config_diff(const run_config *a, const run_config *b, char *out, size_t size);
// The schema as Markdown (configs/README.md is exactly this output).
void run_config_schema_markdown(FILE *f);

// ---------------------------------------------------------------------------------------------------
// Training (trainer/train.c: the loop; checkpoint.c: checkpoints and resume; metrics.c: metrics.jsonl
// and loss.svg; progress.c: the progress bar and log lines).
//
// One optimizer step = grad_accum micro-batches of batch_size packed rows (fewer at the end of an
// epoch: a step never crosses an epoch). The rows of a micro-batch go through the model as one batch,
// back to back without padding (attention never crosses rows: each row's documents get their own
// document numbers). The loss of a step is the sum of -log p over every target token of ALL its
// micro-batches divided by the total target-token count of the step (counted before the forward, so
// each backward is scaled by 1/N): every trained token weighs the same, however the tokens fall into
// micro-batches, as transformers' Trainer does with num_items_in_batch.
//
// Randomness: the LoRA init is a function of lora.init_seed; the data order of epoch e is a function of
// (data seed, e) only (data_epoch_order); dropout is 0. So the random state of a run is its seeds plus
// the data cursor (epoch, index into that epoch's order), and a checkpoint holding those continues the
// run bit for bit.
//
// Run directory (DESIGN.md): config.resolved.yaml (cli/train.c), train.log, metrics.jsonl, loss.svg,
// checkpoints/step-N/, adapter/ (the final adapter in PEFT's format), .lock (flock'ed while a run uses it).
//
// Test hook: the environment variable GPTOSS_TEST_INJECT_NAN_STEP=N sets one gradient element to NaN in
// optimizer step N (1-based) after its backward (in GPU memory on the GPU), to test train.nan_policy.
// Nothing else reads it.

// What cli/train.c hands the loop.
typedef struct train_run {
    const run_config *cfg;
    const char *run_dir;       // exists; config.resolved.yaml is written
    const char *model_dir;     // the resolved base model directory
    const data_options *data;  // the resolved data pipeline (cli_data_resolve)
    int resume;                // continue from the newest complete checkpoint of run_dir
} train_run;

// Filled when train_run_main returns GT_OK.
typedef struct train_result {
    int64_t steps;          // optimizer steps completed in the whole run (applied or skipped)
    int64_t skipped;        // of those, skipped for a NaN/Inf loss or gradient
    double loss;            // the last applied step's loss in this process (NaN when none)
    double val_loss;        // this process's last evaluation: mean token loss (NaN when none)
    int signal;             // SIGINT/SIGTERM that stopped the run (a checkpoint was written), else 0
    char checkpoint[4096];  // the checkpoint written last (the final one after a complete run)
} train_result;

// Trains per r on the device cfg->device asks for (train_device_resolve: auto is the GPU when there is
// one; on the GPU everything but the data and the checkpoint files stays in GPU memory). Installs
// SIGINT/SIGTERM handlers for its duration: a signal finishes the current step, writes a checkpoint and
// returns GT_OK with res->signal set (a second signal kills at once). Errors: bad data or model,
// device, a checkpoint that cannot be written (the last complete one stays), NaN under nan_policy stop.
gt_status train_run_main(const train_run *r, train_result *res, gt_error *err);

// The device the config asks for can train here (train_device_resolve; the error names device.type):
// cuda needs a CUDA build and a GPU. cli/train.c asks before creating the run directory; train_run_main
// asks again.
gt_status train_check_device(const run_config *cfg, gt_error *err);

// trainer/device.c: the device a command computes on (train's device.type/index, eval's --device).
// cpu -> cpu; auto -> cuda when this build has CUDA and a GPU is present, else cpu; cuda -> cuda, or an
// error when the build has no CUDA or no GPU is found (callers prefix the setting, e.g. "--device cuda: ").
// When the answer is cuda, GPU index (cuda only; < the GPU count, else an error) is made current.
gt_status train_device_resolve(run_device want, int index, run_device *got, gt_error *err);

// --overwrite: removes what a run writes in run_dir (config.resolved.yaml, train.log, metrics.jsonl,
// loss.svg, checkpoints/, adapter/) and nothing else.
gt_status train_run_dir_clear(const char *run_dir, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Checkpoints (trainer/checkpoint.c)
//
// checkpoints/step-N/ (N: optimizer steps completed, zero-padded to 8 digits so names sort) holds
//   adapter_config.json + adapter_model.safetensors  the adapter in PEFT's format (gptoss export reads it)
//   state.bin     magic "GPTOSSCK", version, header size, file size, CRC-32, the ckpt_state fields,
//                 then every LoRA parameter (fp32, the adapter arena as is) and the optimizer state
//                 (optim_serialize); little-endian
//   COMPLETE      JSON manifest: format, version, step, and each file's size and CRC-32
// Written as step-N.tmp/ (each file fsynced), the directory fsynced, renamed to step-N, the parent
// fsynced, then COMPLETE written (atomically). A step-N without COMPLETE is unfinished: never read,
// removed by the next write. A failure leaves every complete checkpoint as it was.
typedef struct ckpt_state {
    int64_t step;           // optimizer steps completed
    uint64_t epoch, index;  // data cursor: the next row is order(epoch)[index]
    uint64_t data_seed;     // seed of the data order (data_options.seed)
    uint64_t init_seed;     // seed of the LoRA init
    uint64_t n_train_rows;  // packed training rows: a resume on other data is refused
    uint64_t tokens_seen;   // training tokens (not padding) so far
    int64_t skipped;        // steps skipped for NaN/Inf
    int64_t last_eval_step; // -1: none yet
    double train_seconds;   // wall time spent training so far
} ckpt_state;

// Writes checkpoints/step-<s->step>/ under run_dir (keeping an existing complete one of that step,
// which holds the same values) and then removes unfinished checkpoints and all but the newest
// keep_last complete ones (0: keep all). out (size out_size) gets the checkpoint's path.
gt_status ckpt_write(const char *run_dir, const ckpt_state *s, const lora_adapter *la, const optim *opt,
                     const char *base_model, int keep_last, char *out, size_t out_size, gt_error *err);
// The newest complete checkpoint of run_dir into path; GT_ENOTFOUND when there is none.
gt_status ckpt_find_latest(const char *run_dir, char *path, size_t path_size, int64_t *step, gt_error *err);
// Checks the manifest against the files (sizes, CRC-32) and reads state.bin into s, la's parameters
// and opt (which must have been made for the same LoRA config and optimizer). Errors name the file.
gt_status ckpt_read(const char *ckpt_dir, ckpt_state *s, lora_adapter *la, optim *opt, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Metrics (trainer/metrics.c): runs/NAME/metrics.jsonl, one JSON object a line:
//   {"type": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "time_s"}
//   {"type": "skip", "step", "reason"}                     a NaN/Inf step that was not applied
//   {"type": "eval", "step", "val_loss", "val_tokens"}
// and loss.svg, the curves of train and validation loss, drawn by our own small SVG writer.
typedef struct metrics_step {
    int64_t step; // 1-based optimizer step
    uint64_t epoch;
    double loss, lr, grad_norm, tokens_per_s, time_s;
    uint64_t tokens;
} metrics_step;

typedef struct train_metrics {
    FILE *f; // metrics.jsonl, appended to
    char *path, *svg_path;
    int64_t *steps, *eval_steps; // the curves, also reloaded on resume
    double *loss, *eval_loss;
    size_t n, n_eval, cap, cap_eval;
} train_metrics;

// Opens run_dir/metrics.jsonl. keep_until >= 0 (resume): lines of steps after keep_until are dropped
// (those steps run again) and the curves reloaded from the rest; keep_until < 0: a new, empty file.
gt_status metrics_open(train_metrics *m, const char *run_dir, int64_t keep_until, gt_error *err);
gt_status metrics_log_step(train_metrics *m, const metrics_step *s, gt_error *err);
gt_status metrics_log_skip(train_metrics *m, int64_t step, const char *reason, gt_error *err);
gt_status metrics_log_eval(train_metrics *m, int64_t step, double val_loss, uint64_t val_tokens, gt_error *err);
// Rewrites loss.svg from the curves (x from 0 to max(total_steps, last step)).
gt_status metrics_plot(const train_metrics *m, const char *title, int64_t total_steps, gt_error *err);
void metrics_close(train_metrics *m);

// The SVG itself: a train curve (n points) and an eval curve (n_eval points) on shared axes.
char *loss_plot_svg(const char *title, const int64_t *steps, const double *loss, size_t n, const int64_t *eval_steps,
                    const double *eval_loss, size_t n_eval, int64_t x_max);

// ---------------------------------------------------------------------------------------------------
// Progress (trainer/progress.c): a one-line bar redrawn on stderr when it is a terminal (step/total,
// loss, lr, grad norm, tokens/s, ETA, resident memory), else one plain line every `every` steps; every
// line also goes to train.log (when open).
typedef struct progress {
    int bar;               // draw the bar (stderr is a terminal or log.progress: on)
    int every;             // plain line every this many steps
    int64_t total, start;  // total steps, the step the run (re)started at
    double t_start;        // monotonic seconds at progress_init
    int drawn;             // a bar line is on screen
    FILE *log;             // train.log or NULL
} progress;

typedef struct progress_info {
    int64_t step;
    double loss, lr, grad_norm, tokens_per_s;
} progress_info;

void progress_init(progress *p, int bar, int every, int64_t total, int64_t start, FILE *log);
void progress_step(progress *p, const progress_info *in);
// A message line (the bar, if drawn, is cleared first and redrawn by the next step).
void progress_printf(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void progress_end(progress *p);
double progress_now(void);        // monotonic seconds
size_t progress_rss_bytes(void);  // resident set size of this process, 0 when unknown

#endif
