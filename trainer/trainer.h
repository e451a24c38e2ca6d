// trainer: the run configuration (schema, YAML loading, --set overrides, validation, printing and
// saving), and later the training loop, evaluation, checkpoints and resume, metrics and the loss plot.
//
// The one door of trainer/. cli/ and tests include only this header (which includes the others').
#ifndef GPTOSS_TRAINER_H
#define GPTOSS_TRAINER_H

#include "core/core.h"
#include "model/model.h"

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

#endif
