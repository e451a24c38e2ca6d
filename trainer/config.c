// trainer/config.c: the run config. One static schema table (KEYS) drives everything: defaults, YAML
// loading (libyaml), --set overrides, validation, the printed table, the YAML write-back, the diff and
// the Markdown schema (configs/README.md).
//
// Invariants:
//   - every value, the defaults included, enters a run_config through value_parse + value_commit, so one
//     place decides what is allowed;
//   - a key's default is text in the table, parsed like user input (an invalid default aborts at start-up);
//   - error places are 1-based FILE:LINE:COLUMN for YAML and "--set ASSIGNMENT" for overrides.
#include "trainer/trainer.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <strings.h>
#include <yaml.h>

// ---------------------------------------------------------------------------------------------------
// The schema

typedef enum cfg_type { CFG_STRING, CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_ENUM, CFG_LIST } cfg_type;
enum {
    CFG_MIN_OPEN = 1, // FLOAT: value > min (else >=)
    CFG_MAX_OPEN = 2, // FLOAT: value < max (else <=)
    CFG_LIST_ALL = 4, // LIST: the single item "all" stands for every allowed item
};

typedef struct cfg_section {
    const char *name, *doc;
    const char *scalar_key; // the section given as one value sets this key ("device: cuda" is device.type)
} cfg_section;

typedef struct cfg_key {
    const char *section, *name;
    cfg_type type;
    size_t offset;              // into run_config
    const char *def;            // the default, as text parsed like user input
    double min, max;            // INT/FLOAT: value range; STRING: length (max 0: no limit); LIST: item count
    unsigned flags;
    const char *const *values;  // ENUM: names indexed by value; LIST: allowed items; NULL-terminated
    const char *(*check)(const char *s); // STRING: an extra rule; returns why s fails, or NULL
    const char *allowed;        // STRING with check: what is allowed, in words
    const char *note;           // appended to this key's value errors
    const char *doc;
} cfg_key;

static const char *check_date(const char *s);
static const char *check_run_name(const char *s);

static const char *const QUANT_NAMES[] = {[MQ_AUTO] = "auto", [MQ_BF16] = "bf16", [MQ_MXFP4] = "mxfp4",
                                          [MQ_NF4] = "nf4", NULL};
static const char *const FORMAT_NAMES[] = {[RC_FORMAT_AUTO] = "auto", [RC_FORMAT_MESSAGES] = "messages",
                                           [RC_FORMAT_FLAT] = "flat", [RC_FORMAT_TOKENIZED] = "tokenized", NULL};
static const char *const OVERLONG_NAMES[] = {[RC_OVERLONG_TRUNCATE] = "truncate", [RC_OVERLONG_DROP] = "drop", NULL};
static const char *const BAD_ROW_NAMES[] = {[RC_BAD_ROW_ERROR] = "error", [RC_BAD_ROW_SKIP] = "skip", NULL};
static const char *const EFFORT_NAMES[] = {[RC_EFFORT_LOW] = "low", [RC_EFFORT_MEDIUM] = "medium",
                                           [RC_EFFORT_HIGH] = "high", NULL};
static const char *const VARIANT_NAMES[] = {[RC_VARIANT_HF] = "hf", [RC_VARIANT_HARMONY] = "harmony", NULL};
static const char *const TRAIN_ON_NAMES[] = {[RC_TRAIN_ON_ASSISTANT] = "assistant", [RC_TRAIN_ON_FINAL] = "final",
                                             [RC_TRAIN_ON_ALL] = "all", NULL};
static const char *const OPTIM_NAMES[] = {[RC_OPTIM_ADAMW] = "adamw", [RC_OPTIM_ADAMW_8BIT] = "adamw_8bit", NULL};
static const char *const SCHEDULE_NAMES[] = {[RC_SCHED_CONSTANT] = "constant", [RC_SCHED_LINEAR] = "linear",
                                             [RC_SCHED_COSINE] = "cosine",
                                             [RC_SCHED_COSINE_MIN_LR] = "cosine_with_min_lr", NULL};
static const char *const NAN_NAMES[] = {[RC_NAN_SKIP] = "skip", [RC_NAN_STOP] = "stop", NULL};
static const char *const PROGRESS_NAMES[] = {[RC_PROGRESS_AUTO] = "auto", [RC_PROGRESS_ON] = "on",
                                             [RC_PROGRESS_OFF] = "off", NULL};
static const char *const DEVICE_NAMES[] = {[RC_DEVICE_AUTO] = "auto", [RC_DEVICE_CPU] = "cpu",
                                           [RC_DEVICE_CUDA] = "cuda", NULL};
// The order of model.h's lora_target (LT_Q .. LT_DOWN).
static const char *const TARGET_NAMES[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj", NULL};

// Enum fields are written through int *: they must be int-sized (no -fshort-enums).
_Static_assert(sizeof(model_quant) == sizeof(int) && sizeof(run_data_format) == sizeof(int) &&
                   sizeof(run_overlong) == sizeof(int) && sizeof(run_bad_row) == sizeof(int) &&
                   sizeof(run_effort) == sizeof(int) && sizeof(run_variant) == sizeof(int) &&
                   sizeof(run_train_on) == sizeof(int) && sizeof(run_optim) == sizeof(int) &&
                   sizeof(run_schedule) == sizeof(int) && sizeof(run_nan_policy) == sizeof(int) &&
                   sizeof(run_progress) == sizeof(int) && sizeof(run_device) == sizeof(int),
               "config enums must be int-sized");

static const cfg_section SECTIONS[] = {
    {"model", "the frozen base model", NULL},
    {"data", "the dataset: where rows come from, their shape, length, packing and the validation split", NULL},
    {"template", "the Harmony chat template that renders each conversation, and which tokens carry the loss", NULL},
    {"lora", "the LoRA adapters", NULL},
    {"optim", "optimizer, learning-rate schedule and gradient clipping", NULL},
    {"train", "the run: name, output directory, length, batch, seed", NULL},
    {"checkpoint", "periodic checkpoints (adapter, optimizer, scheduler, RNG, data cursor) that --resume continues from", NULL},
    {"eval", "evaluation on the validation data", NULL},
    {"log", "console output (metrics.jsonl always gets every step)", NULL},
    {"device", "where the run computes", "type"},
};
#define N_SECTIONS (int)(sizeof SECTIONS / sizeof SECTIONS[0])

#define KEY(sec, key, typ, field, ...) \
    {.section = sec, .name = key, .type = typ, .offset = offsetof(run_config, field), __VA_ARGS__}
#define INT_MAXD ((double)INT_MAX)

static const cfg_key KEYS[] = {
    // model
    KEY("model", "name", CFG_STRING, model.name, .def = "openai/gpt-oss-20b", .min = 1,
        .doc = "Base model: a hub name org/name looked up in the local Hugging Face cache (HF_HUB_CACHE, "
               "HF_HOME/hub, ~/.cache/huggingface/hub), or a directory with config.json and *.safetensors."),
    KEY("model", "revision", CFG_STRING, model.revision, .def = "main", .min = 1,
        .doc = "Revision of a hub model: a branch or tag under refs/, or a commit hash. Ignored for a directory."),
    KEY("model", "quant", CFG_ENUM, model.quant, .def = "auto", .values = QUANT_NAMES,
        .doc = "How the frozen expert weights are kept: auto keeps the file's format (MXFP4 and NF4 stay 4-bit, "
               "bf16 stays bf16); mxfp4 or nf4 quantize bf16 experts on load; bf16 dequantizes 4-bit ones."),
    KEY("model", "tokenizer", CFG_STRING, model.tokenizer, .def = "",
        .doc = "A tokenizer.json to use instead of the model's. Empty: the one in the model directory."),

    // data
    KEY("data", "path", CFG_STRING, data.path, .def = "HuggingFaceH4/Multilingual-Thinking", .min = 1,
        .doc = "Training rows: a .jsonl, .jsonl.gz or .parquet file, or a hub dataset name org/name looked up in "
               "the local Hugging Face cache. Relative paths are relative to the working directory."),
    KEY("data", "revision", CFG_STRING, data.revision, .def = "main", .min = 1,
        .doc = "Revision of a hub dataset (branch, tag or commit hash). Ignored for a file."),
    KEY("data", "split", CFG_STRING, data.split, .def = "train", .min = 1,
        .doc = "Which split of a hub dataset to read (its files named SPLIT-*). Ignored for a file."),
    KEY("data", "format", CFG_ENUM, data.format, .def = "auto", .values = FORMAT_NAMES,
        .doc = "Row shape. messages: a list of {role, content, thinking} in messages_column; flat: one column per "
               "part (the *_column keys); tokenized: input_ids and labels (unshifted, -100 ignored); auto: "
               "decided from the first row's keys."),
    KEY("data", "messages_column", CFG_STRING, data.messages_column, .def = "messages", .min = 1,
        .doc = "Column that holds the conversation in messages rows."),
    KEY("data", "system_column", CFG_STRING, data.system_column, .def = "developer",
        .doc = "Flat rows: column with the instructions, rendered as the developer message. Empty: none."),
    KEY("data", "user_column", CFG_STRING, data.user_column, .def = "user",
        .doc = "Flat rows: column with the user message."),
    KEY("data", "thinking_column", CFG_STRING, data.thinking_column, .def = "analysis",
        .doc = "Flat rows: column with the assistant's reasoning (the analysis channel). Empty: none."),
    KEY("data", "answer_column", CFG_STRING, data.answer_column, .def = "final",
        .doc = "Flat rows: column with the assistant's answer (the final channel)."),
    KEY("data", "max_seq_len", CFG_INT, data.max_seq_len, .def = "2048", .min = 16, .max = 131072,
        .doc = "Tokens per training row, packed or padded. Must not exceed the model's max_position_embeddings."),
    KEY("data", "packing", CFG_BOOL, data.packing, .def = "true",
        .doc = "Pack several samples into each row (positions restart per sample and attention never crosses "
               "samples). false: one sample per row, padded."),
    KEY("data", "overlong", CFG_ENUM, data.overlong, .def = "truncate", .values = OVERLONG_NAMES,
        .doc = "A sample longer than max_seq_len is truncated to its first max_seq_len tokens or dropped; "
               "either way it is counted in the data summary."),
    KEY("data", "on_bad_row", CFG_ENUM, data.on_bad_row, .def = "error", .values = BAD_ROW_NAMES,
        .doc = "A malformed row (bad JSON, missing or mistyped field, no assistant turn): error stops with "
               "FILE:LINE and the reason; skip leaves it out and counts it in the summary."),
    KEY("data", "max_rows", CFG_INT, data.max_rows, .def = "0", .min = 0, .max = INT_MAXD,
        .doc = "Read at most this many rows. 0: all."),
    KEY("data", "val_fraction", CFG_FLOAT, data.val_fraction, .def = "0", .min = 0, .max = 0.5,
        .doc = "Fraction of the rows held out for validation (chosen by the seeded shuffle). 0: none, unless "
               "val_path is set."),
    KEY("data", "val_path", CFG_STRING, data.val_path, .def = "",
        .doc = "A separate validation file (same formats as path). Empty: none. Excludes val_fraction."),
    KEY("data", "shuffle", CFG_BOOL, data.shuffle, .def = "true",
        .doc = "Shuffle the training samples each epoch (seeded: the same seed gives the same order)."),
    KEY("data", "shuffle_seed", CFG_INT, data.shuffle_seed, .def = "-1", .min = -1, .max = INT_MAXD,
        .doc = "Seed of the shuffle and of the validation split. -1: train.seed."),
    KEY("data", "cache_dir", CFG_STRING, data.cache_dir, .def = "runs/cache", .min = 1,
        .doc = "Directory of the token cache, keyed by a hash of the data, tokenizer and template settings, so "
               "that a restart does not tokenize again."),

    // template
    KEY("template", "reasoning_effort", CFG_ENUM, tmpl.reasoning_effort, .def = "medium", .values = EFFORT_NAMES,
        .doc = "The 'Reasoning:' line of the system message."),
    KEY("template", "model_identity", CFG_STRING, tmpl.model_identity,
        .def = "You are ChatGPT, a large language model trained by OpenAI.", .min = 1,
        .doc = "The first line of the system message."),
    KEY("template", "date", CFG_STRING, tmpl.date, .def = "2025-08-05", .check = check_date,
        .allowed = "a date YYYY-MM-DD",
        .doc = "The 'Current date:' line of the system message. Pinned, so that renders and token caches are "
               "reproducible (HF's template writes today's date)."),
    KEY("template", "variant", CFG_ENUM, tmpl.variant, .def = "hf", .values = VARIANT_NAMES,
        .doc = "hf renders exactly like the model's chat_template.jinja; harmony like OpenAI's harmony library "
               "(no blank line before the developer message's <|end|>)."),
    KEY("template", "train_on", CFG_ENUM, tmpl.train_on, .def = "assistant", .values = TRAIN_ON_NAMES,
        .doc = "Tokens that carry the loss. assistant: the last assistant turn's analysis and final messages "
               "with their <|end|> and <|return|>; final: its final channel only; all: every token."),

    // lora
    KEY("lora", "rank", CFG_INT, lora.rank, .def = "8", .min = 1, .max = 1024,
        .doc = "LoRA rank r of every adapted projection."),
    KEY("lora", "alpha", CFG_FLOAT, lora.alpha, .def = "16", .min = 0, .max = 1e6, .flags = CFG_MIN_OPEN,
        .doc = "Scale numerator: the update is (alpha / r) B A x, or (alpha / sqrt(r)) B A x with use_rslora."),
    KEY("lora", "dropout", CFG_FLOAT, lora.dropout, .def = "0", .min = 0, .max = 0,
        .note = "gptoss has no LoRA dropout: the backward would need each target's dropout mask kept per "
                "step, and the reference recipe uses none",
        .doc = "Dropout on the adapter input. Only 0 is supported (gptoss implements no LoRA dropout)."),
    KEY("lora", "use_rslora", CFG_BOOL, lora.use_rslora, .def = "false",
        .doc = "Rank-stabilized scaling alpha / sqrt(r) instead of alpha / r (PEFT's use_rslora)."),
    KEY("lora", "targets", CFG_LIST, lora.targets, .def = "all", .min = 1, .max = 7, .flags = CFG_LIST_ALL,
        .values = TARGET_NAMES,
        .doc = "Projections that get adapters: q_proj, k_proj, v_proj, o_proj (attention) and gate_proj, "
               "up_proj, down_proj (every expert's MLP). all: the seven."),
    KEY("lora", "init_seed", CFG_INT, lora.init_seed, .def = "-1", .min = -1, .max = INT_MAXD,
        .doc = "Seed of the A matrices' kaiming-uniform init (B starts at zero, as in PEFT). -1: train.seed."),

    // optim
    KEY("optim", "name", CFG_ENUM, optim.name, .def = "adamw", .values = OPTIM_NAMES,
        .doc = "adamw keeps fp32 moments; adamw_8bit keeps them blockwise-quantized to 8 bits (bitsandbytes "
               "semantics, 256 values per block; tensors under 4096 elements stay fp32)."),
    KEY("optim", "lr", CFG_FLOAT, optim.lr, .def = "2e-4", .min = 0, .max = 1, .flags = CFG_MIN_OPEN,
        .doc = "Peak learning rate (after warmup)."),
    KEY("optim", "beta1", CFG_FLOAT, optim.beta1, .def = "0.9", .min = 0, .max = 1, .flags = CFG_MAX_OPEN,
        .doc = "AdamW decay rate of the first moment."),
    KEY("optim", "beta2", CFG_FLOAT, optim.beta2, .def = "0.999", .min = 0, .max = 1, .flags = CFG_MAX_OPEN,
        .doc = "AdamW decay rate of the second moment."),
    KEY("optim", "eps", CFG_FLOAT, optim.eps, .def = "1e-8", .min = 0, .max = 1, .flags = CFG_MIN_OPEN,
        .doc = "AdamW epsilon, added to the root of the second moment."),
    KEY("optim", "weight_decay", CFG_FLOAT, optim.weight_decay, .def = "0", .min = 0, .max = 1,
        .doc = "Decoupled weight decay (AdamW) on the LoRA matrices."),
    KEY("optim", "schedule", CFG_ENUM, optim.schedule, .def = "linear", .values = SCHEDULE_NAMES,
        .doc = "Learning rate after warmup: constant; linear decay to 0; cosine decay to 0; cosine_with_min_lr: "
               "cosine decay to min_lr_ratio * lr. The same curves as HF transformers' schedulers."),
    KEY("optim", "warmup_steps", CFG_INT, optim.warmup_steps, .def = "0", .min = 0, .max = INT_MAXD,
        .doc = "Linear warmup from 0 over this many optimizer steps. Excludes warmup_ratio."),
    KEY("optim", "warmup_ratio", CFG_FLOAT, optim.warmup_ratio, .def = "0", .min = 0, .max = 1,
        .doc = "Warmup as a fraction of all optimizer steps, rounded up (as HF does). Excludes warmup_steps."),
    KEY("optim", "min_lr_ratio", CFG_FLOAT, optim.min_lr_ratio, .def = "0.1", .min = 0, .max = 1,
        .doc = "cosine_with_min_lr only: the final learning rate as a fraction of lr (HF's min_lr_rate)."),
    KEY("optim", "max_grad_norm", CFG_FLOAT, optim.max_grad_norm, .def = "1", .min = 0, .max = 1e6,
        .doc = "Clip the global L2 norm of all LoRA gradients to this. 0: no clipping."),

    // train
    KEY("train", "name", CFG_STRING, train.name, .def = "", .max = 100, .check = check_run_name,
        .allowed = "letters, digits, '.', '_', '-' (not first: '.', '-'), at most 100",
        .doc = "Run name: the run directory is out_dir/name. Empty: the config file's name without .yaml."),
    KEY("train", "out_dir", CFG_STRING, train.out_dir, .def = "runs", .min = 1,
        .doc = "Directory that holds the run directories."),
    KEY("train", "epochs", CFG_INT, train.epochs, .def = "1", .min = 1, .max = 10000,
        .doc = "Passes over the training data (unless max_steps ends the run first)."),
    KEY("train", "max_steps", CFG_INT, train.max_steps, .def = "0", .min = 0, .max = INT_MAXD,
        .doc = "Stop after this many optimizer steps. 0: run all epochs."),
    KEY("train", "batch_size", CFG_INT, train.batch_size, .def = "1", .min = 1, .max = 4096,
        .doc = "Rows of max_seq_len tokens per micro-batch."),
    KEY("train", "grad_accum", CFG_INT, train.grad_accum, .def = "1", .min = 1, .max = 65536,
        .doc = "Micro-batches whose gradients are summed into one optimizer step; the effective batch is "
               "batch_size * grad_accum rows."),
    KEY("train", "gradient_checkpointing", CFG_BOOL, train.gradient_checkpointing, .def = "false",
        .doc = "Keep only each layer's input and recompute its activations in the backward: much less memory "
               "for about one more forward per step."),
    KEY("train", "seed", CFG_INT, train.seed, .def = "42", .min = 0, .max = INT_MAXD,
        .doc = "Seed of everything random that has no seed of its own (data.shuffle_seed, lora.init_seed)."),
    KEY("train", "nan_policy", CFG_ENUM, train.nan_policy, .def = "skip", .values = NAN_NAMES,
        .doc = "A NaN or Inf loss or gradient is reported with its step and never applied. skip: training goes "
               "on with the next step; stop: the run stops (its last complete checkpoint stays)."),

    // checkpoint
    KEY("checkpoint", "every_steps", CFG_INT, checkpoint.every_steps, .def = "100", .min = 0, .max = INT_MAXD,
        .doc = "Save a checkpoint every this many optimizer steps, and always at the end. 0: only at the end."),
    KEY("checkpoint", "keep_last", CFG_INT, checkpoint.keep_last, .def = "3", .min = 0, .max = 100000,
        .doc = "Keep the newest this many checkpoints and delete older ones. 0: keep all."),

    // eval
    KEY("eval", "every_steps", CFG_INT, eval.every_steps, .def = "0", .min = 0, .max = INT_MAXD,
        .doc = "Evaluate on the validation data every this many optimizer steps (and at the end when there is "
               "validation data). 0: only at the end. Needs data.val_fraction or data.val_path."),
    KEY("eval", "max_batches", CFG_INT, eval.max_batches, .def = "0", .min = 0, .max = INT_MAXD,
        .doc = "Batches per evaluation. 0: the whole validation set."),
    KEY("eval", "batch_size", CFG_INT, eval.batch_size, .def = "0", .min = 0, .max = 4096,
        .doc = "Rows per evaluation batch. 0: train.batch_size."),

    // log
    KEY("log", "every_steps", CFG_INT, log.every_steps, .def = "10", .min = 1, .max = INT_MAXD,
        .doc = "Without a progress bar, one log line every this many optimizer steps."),
    KEY("log", "progress", CFG_ENUM, log.progress, .def = "auto", .values = PROGRESS_NAMES,
        .doc = "Progress bar (step, loss, lr, grad norm, tokens/s, ETA, memory). auto: on when stderr is a "
               "terminal."),

    // device
    KEY("device", "type", CFG_ENUM, device.type, .def = "auto", .values = DEVICE_NAMES,
        .doc = "auto: a CUDA GPU when this build has CUDA and one is present, else the CPU."),
    KEY("device", "index", CFG_INT, device.index, .def = "0", .min = 0, .max = 255,
        .doc = "CUDA device number (as CUDA numbers them after CUDA_VISIBLE_DEVICES). cuda only."),
    KEY("device", "threads", CFG_INT, device.threads, .def = "0", .min = 0, .max = 4096,
        .doc = "CPU threads for the CPU backend and data preparation. 0: all cores."),
};
#define N_KEYS (int)(sizeof KEYS / sizeof KEYS[0])

// ---------------------------------------------------------------------------------------------------
// Small helpers

static void *key_field(run_config *cfg, const cfg_key *k) { return (char *)cfg + k->offset; }
static const void *key_cfield(const run_config *cfg, const cfg_key *k) { return (const char *)cfg + k->offset; }

static const cfg_section *section_find(const char *name) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i].name, name)) return &SECTIONS[i];
    return NULL;
}

static const cfg_key *key_find(const char *section, const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].name, name)) return &KEYS[i];
    return NULL;
}

static int names_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

// A suggestion is made when the typo is small next to the word: at most 2 edits, or a third of it.
static int close_enough(const char *typed, size_t d) { return d <= 2 || d * 3 <= strlen(typed); }

// The candidate nearest to typed, or NULL when none is close enough.
static const char *nearest_name(const char *typed, const char *const *cands, int n) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (int i = 0; i < n; i++) {
        size_t d = str_edit_distance(typed, cands[i]);
        if (d < best_d) best_d = d, best = cands[i];
    }
    return best && close_enough(typed, best_d) ? best : NULL;
}

// Shortest text that reads back as exactly x.
static void fmt_double(double x, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return;
    }
}

static void str_list_free(run_str_list *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void str_list_push(run_str_list *l, const char *s, size_t len) {
    l->items = xrealloc(l->items, (size_t)(l->n + 1) * sizeof *l->items);
    char *c = xmalloc(len + 1);
    memcpy(c, s, len);
    c[len] = 0;
    l->items[l->n++] = c;
}

// A growing text buffer.
typedef struct text_buf {
    char *s;
    size_t n, cap;
} text_buf;

static void text_add(text_buf *b, const char *s, size_t len) {
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = 0;
}

// Several errors in one gt_error, one per line, up to what fits.
typedef struct err_list {
    gt_error *err;
    int n;
    int full;
} err_list;

static void err_list_add(err_list *l, const gt_error *e) {
    if (!l->err) return;
    if (l->n == 0) {
        *l->err = *e;
    } else if (!l->full) {
        size_t used = strlen(l->err->msg), need = strlen(e->msg) + 1;
        const char *more = "\n(further errors not shown)";
        if (used + need + strlen(more) + 1 < sizeof l->err->msg) {
            l->err->msg[used] = '\n';
            memcpy(l->err->msg + used + 1, e->msg, need);
        } else {
            snprintf(l->err->msg + used, sizeof l->err->msg - used, "%s", more);
            l->full = 1;
        }
    }
    l->n++;
}

// ---------------------------------------------------------------------------------------------------
// String rules

static const char *check_date(const char *s) {
    static const int days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return "expected YYYY-MM-DD";
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) return "expected YYYY-MM-DD";
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    if (m < 1 || m > 12) return "the month must be 01 to 12";
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int dmax = (m == 2 && !leap) ? 28 : days[m - 1];
    if (d < 1 || d > dmax) return "no such day in that month";
    return NULL;
}

static const char *check_run_name(const char *s) {
    if (s[0] == '.' || s[0] == '-') return "it must not start with '.' or '-'";
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return "only letters, digits, '.', '_' and '-' (it names a directory)";
    return NULL;
}

// ---------------------------------------------------------------------------------------------------
// What a key allows, in words (messages and the Markdown schema). md: names in backticks.

static void names_text(const char *const *names, int md, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; names[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s%s%s", i ? ", " : "", md ? "`" : "", names[i],
                                 md ? "`" : "");
}

static void allowed_text(const cfg_key *k, int md, char *buf, size_t n) {
    char lo[40], hi[40], names[400];
    switch (k->type) {
    case CFG_STRING:
        if (k->allowed) snprintf(buf, n, "%s", k->allowed);
        else if (k->min >= 1) snprintf(buf, n, "non-empty");
        else snprintf(buf, n, "any text");
        return;
    case CFG_INT:
        if (k->min == k->max) snprintf(buf, n, "exactly %d", (int)k->min);
        else if (k->max == INT_MAXD) snprintf(buf, n, "an integer >= %d", (int)k->min);
        else snprintf(buf, n, "an integer from %d to %d", (int)k->min, (int)k->max);
        return;
    case CFG_FLOAT:
        fmt_double(k->min, lo, sizeof lo);
        fmt_double(k->max, hi, sizeof hi);
        if (k->min == k->max) snprintf(buf, n, "exactly %s", lo);
        else snprintf(buf, n, "a number %s %s and %s %s", (k->flags & CFG_MIN_OPEN) ? ">" : ">=", lo,
                      (k->flags & CFG_MAX_OPEN) ? "<" : "<=", hi);
        return;
    case CFG_BOOL:
        snprintf(buf, n, md ? "`true`, `false`" : "true or false (also yes/no, on/off, 1/0)");
        return;
    case CFG_ENUM:
        names_text(k->values, md, buf, n);
        return;
    case CFG_LIST:
        if (k->values) {
            names_text(k->values, md, names, sizeof names);
            snprintf(buf, n, "%d to %d distinct of %s%s", (int)k->min, (int)k->max, names,
                     (k->flags & CFG_LIST_ALL) ? (md ? "; or `all`" : "; or all") : "");
        } else {
            snprintf(buf, n, "%d to %d strings", (int)k->min, (int)k->max);
        }
        return;
    }
}

// " (NOTE)" when the key has a note, else "".
static const char *note_text(const cfg_key *k, char *buf, size_t n) {
    if (!k->note) return "";
    snprintf(buf, n, " (%s)", k->note);
    return buf;
}

// ---------------------------------------------------------------------------------------------------
// Values: text -> checked value -> commit. `where` is the place for messages.

typedef struct cfg_value {
    int i;
    double f;
    bool b;
    char *s;
    run_str_list list;
} cfg_value;

static void value_free(cfg_value *v) {
    free(v->s);
    v->s = NULL;
    str_list_free(&v->list);
}

static gt_status value_error(const cfg_key *k, const char *where, const char *what, gt_error *err) {
    char allowed[600], note[400];
    allowed_text(k, 0, allowed, sizeof allowed);
    return gt_fail(err, GT_EINVAL, "%s: %s.%s: %s; allowed: %s%s", where, k->section, k->name, what, allowed,
                   note_text(k, note, sizeof note));
}

static int parse_bool(const char *t, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(t, yes[i])) return *out = true, 1;
        if (!strcasecmp(t, no[i])) return *out = false, 1;
    }
    return 0;
}

// One list item: non-empty and, when the key names its items, one of them.
static gt_status list_item_check(const cfg_key *k, const char *item, const char *where, gt_error *err) {
    char what[300];
    if (!item[0]) return value_error(k, where, "empty list item", err);
    if (!k->values || ((k->flags & CFG_LIST_ALL) && !strcmp(item, "all"))) return GT_OK;
    for (int i = 0; k->values[i]; i++)
        if (!strcmp(item, k->values[i])) return GT_OK;
    const char *near = nearest_name(item, k->values, names_count(k->values));
    if (near) snprintf(what, sizeof what, "unknown item '%.100s' (did you mean '%s'?)", item, near);
    else snprintf(what, sizeof what, "unknown item '%.100s'", item);
    return value_error(k, where, what, err);
}

// The whole list (items already checked one by one): "all" alone, no repeats, count in range.
static gt_status list_finish(const cfg_key *k, run_str_list *l, const char *where, gt_error *err) {
    char what[300];
    if ((k->flags & CFG_LIST_ALL) && l->n >= 1) {
        for (int i = 0; i < l->n; i++) {
            if (strcmp(l->items[i], "all")) continue;
            if (l->n > 1) return value_error(k, where, "'all' must be the only item", err);
            str_list_free(l);
            for (int j = 0; k->values[j]; j++) str_list_push(l, k->values[j], strlen(k->values[j]));
            break;
        }
    }
    for (int i = 0; i < l->n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(l->items[i], l->items[j])) {
                snprintf(what, sizeof what, "'%.100s' is listed twice", l->items[i]);
                return value_error(k, where, what, err);
            }
    if (l->n < (int)k->min || l->n > (int)k->max) {
        snprintf(what, sizeof what, "%d items", l->n);
        return value_error(k, where, what, err);
    }
    return GT_OK;
}

// Parses text as a value of k. LIST: comma-separated, optionally inside [ ]; items trimmed.
static gt_status value_parse(const cfg_key *k, const char *text, const char *where, cfg_value *v, gt_error *err) {
    char what[400], num[40];
    memset(v, 0, sizeof *v);
    switch (k->type) {
    case CFG_STRING: {
        size_t len = strlen(text);
        if (len < (size_t)k->min) return value_error(k, where, "empty", err);
        if (k->max > 0 && len > (size_t)k->max) {
            snprintf(what, sizeof what, "%zu characters is too long (at most %d)", len, (int)k->max);
            return value_error(k, where, what, err);
        }
        const char *why = k->check ? k->check(text) : NULL;
        if (why) {
            snprintf(what, sizeof what, "'%.100s': %s", text, why);
            return value_error(k, where, what, err);
        }
        v->s = xstrdup(text);
        return GT_OK;
    }
    case CFG_INT: {
        char *end;
        errno = 0;
        long x = strtol(text, &end, 10);
        if (!text[0] || isspace((unsigned char)text[0]) || *end) {
            snprintf(what, sizeof what, "'%.100s' is not an integer", text);
            return value_error(k, where, what, err);
        }
        if (errno == ERANGE || x < (long)k->min || x > (long)k->max) {
            snprintf(what, sizeof what, "%.100s is out of range", text);
            return value_error(k, where, what, err);
        }
        v->i = (int)x;
        return GT_OK;
    }
    case CFG_FLOAT: {
        char *end;
        errno = 0;
        double x = strtod(text, &end);
        if (!text[0] || isspace((unsigned char)text[0]) || *end || !isfinite(x)) {
            snprintf(what, sizeof what, "'%.100s' is not a finite number", text);
            return value_error(k, where, what, err);
        }
        int lo_ok = (k->flags & CFG_MIN_OPEN) ? x > k->min : x >= k->min;
        int hi_ok = (k->flags & CFG_MAX_OPEN) ? x < k->max : x <= k->max;
        if (errno == ERANGE || !lo_ok || !hi_ok) {
            fmt_double(x, num, sizeof num);
            snprintf(what, sizeof what, "%s is out of range", num);
            return value_error(k, where, what, err);
        }
        v->f = x;
        return GT_OK;
    }
    case CFG_BOOL:
        if (!parse_bool(text, &v->b)) {
            snprintf(what, sizeof what, "'%.100s' is not a boolean", text);
            return value_error(k, where, what, err);
        }
        return GT_OK;
    case CFG_ENUM: {
        for (int i = 0; k->values[i]; i++)
            if (!strcmp(text, k->values[i])) return v->i = i, GT_OK;
        const char *near = nearest_name(text, k->values, names_count(k->values));
        if (near) snprintf(what, sizeof what, "'%.100s' is not allowed (did you mean '%s'?)", text, near);
        else snprintf(what, sizeof what, "'%.100s' is not allowed", text);
        return value_error(k, where, what, err);
    }
    case CFG_LIST: {
        const char *s = text, *e = text + strlen(text);
        while (s < e && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) e--;
        if (e - s >= 2 && *s == '[' && e[-1] == ']') s++, e--;
        while (s < e) {
            const char *c = memchr(s, ',', (size_t)(e - s));
            const char *ie = c ? c : e, *is = s;
            while (is < ie && isspace((unsigned char)*is)) is++;
            while (ie > is && isspace((unsigned char)ie[-1])) ie--;
            str_list_push(&v->list, is, (size_t)(ie - is));
            gt_status st = list_item_check(k, v->list.items[v->list.n - 1], where, err);
            if (!st && c && c + 1 == e) st = list_item_check(k, "", where, err); // trailing comma: empty item
            if (st) {
                value_free(v);
                return st;
            }
            if (!c) break;
            s = c + 1;
        }
        gt_status st = list_finish(k, &v->list, where, err);
        if (st) value_free(v);
        return st;
    }
    }
    return gt_fail(err, GT_EINVAL, "%s: unhandled key type", where);
}

// Moves v into the config (v is left empty).
static void value_commit(run_config *cfg, const cfg_key *k, cfg_value *v) {
    void *p = key_field(cfg, k);
    switch (k->type) {
    case CFG_STRING:
        free(*(char **)p);
        *(char **)p = v->s;
        v->s = NULL;
        break;
    case CFG_INT:
    case CFG_ENUM: *(int *)p = v->i; break;
    case CFG_FLOAT: *(double *)p = v->f; break;
    case CFG_BOOL: *(bool *)p = v->b; break;
    case CFG_LIST:
        str_list_free(p);
        *(run_str_list *)p = v->list;
        memset(&v->list, 0, sizeof v->list);
        break;
    }
}

// The value as text, parsed back by value_parse to the same value. LIST: comma-separated.
static char *value_text(const run_config *cfg, const cfg_key *k) {
    const void *p = key_cfield(cfg, k);
    char num[40];
    switch (k->type) {
    case CFG_STRING: return xstrdup(*(char *const *)p);
    case CFG_INT: return xasprintf("%d", *(const int *)p);
    case CFG_FLOAT: fmt_double(*(const double *)p, num, sizeof num); return xstrdup(num);
    case CFG_BOOL: return xstrdup(*(const bool *)p ? "true" : "false");
    case CFG_ENUM: return xstrdup(k->values[*(const int *)p]);
    case CFG_LIST: {
        const run_str_list *l = p;
        text_buf b = {0};
        text_add(&b, "", 0);
        for (int i = 0; i < l->n; i++) {
            if (i) text_add(&b, ",", 1);
            text_add(&b, l->items[i], strlen(l->items[i]));
        }
        return b.s;
    }
    }
    return xstrdup("?");
}

// ---------------------------------------------------------------------------------------------------
// Unknown sections and keys: the nearest valid name, or the list of valid ones.

static void suggest_section(const char *typed, char *buf, size_t n) {
    for (int i = 0; i < N_KEYS; i++) {
        if (!strcmp(KEYS[i].name, typed)) {
            snprintf(buf, n, " ('%s' is a key of section '%s': write it under %s:)", typed, KEYS[i].section,
                     KEYS[i].section);
            return;
        }
    }
    const char *names[N_SECTIONS];
    for (int i = 0; i < N_SECTIONS; i++) names[i] = SECTIONS[i].name;
    const char *near = nearest_name(typed, names, N_SECTIONS);
    if (near) {
        snprintf(buf, n, " (did you mean '%s'?)", near);
        return;
    }
    size_t used = (size_t)snprintf(buf, n, "; sections:");
    for (int i = 0; i < N_SECTIONS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, " %s", names[i]);
}

static void suggest_key(const char *section, const char *typed, char *buf, size_t n) {
    const char *names[N_KEYS];
    int m = 0;
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section)) names[m++] = KEYS[i].name;
    const char *near = nearest_name(typed, names, m);
    if (near) {
        snprintf(buf, n, " (did you mean '%s'?)", near);
        return;
    }
    for (int i = 0; i < N_KEYS; i++) {
        if (!strcmp(KEYS[i].name, typed)) {
            snprintf(buf, n, " (did you mean '%s.%s'?)", KEYS[i].section, KEYS[i].name);
            return;
        }
    }
    size_t used = (size_t)snprintf(buf, n, "; keys of '%s':", section);
    for (int i = 0; i < m && used < n; i++) used += (size_t)snprintf(buf + used, n - used, " %s", names[i]);
}

// ---------------------------------------------------------------------------------------------------
// Defaults, free, --set

void run_config_defaults(run_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++) {
        gt_error e;
        cfg_value v;
        if (value_parse(&KEYS[i], KEYS[i].def, "default", &v, &e) != GT_OK) gt_die(__FILE__, __LINE__, "%s", e.msg);
        value_commit(cfg, &KEYS[i], &v);
    }
}

void run_config_free(run_config *cfg) {
    for (int i = 0; i < N_KEYS; i++) {
        void *p = key_field(cfg, &KEYS[i]);
        if (KEYS[i].type == CFG_STRING) free(*(char **)p), *(char **)p = NULL;
        if (KEYS[i].type == CFG_LIST) str_list_free(p);
    }
}

gt_status run_config_set(run_config *cfg, const char *assignment, gt_error *err) {
    char where[600], hint[600];
    snprintf(where, sizeof where, "--set %.500s", assignment);
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    const cfg_section *whole = NULL; // --set device=cuda: a section with a scalar form
    if (eq && !dot) {
        char *sec = xasprintf("%.*s", (int)(eq - assignment), assignment);
        whole = section_find(sec);
        free(sec);
        if (whole && !whole->scalar_key) whole = NULL;
    }
    if (!eq || (!dot && !whole) || (dot && memchr(dot + 1, '.', (size_t)(eq - dot - 1))))
        return gt_fail(err, GT_EINVAL, "%s: expected section.key=value (for example --set lora.rank=16)", where);
    char *section = whole ? xasprintf("%s", whole->name) : xasprintf("%.*s", (int)(dot - assignment), assignment);
    char *name = whole ? xasprintf("%s", whole->scalar_key) : xasprintf("%.*s", (int)(eq - dot - 1), dot + 1);
    gt_status st = GT_OK;
    const cfg_key *k = NULL;
    if (!section_find(section)) {
        suggest_section(section, hint, sizeof hint);
        st = gt_fail(err, GT_EINVAL, "%s: unknown section '%s'%s", where, section, hint);
    } else if (!(k = key_find(section, name))) {
        suggest_key(section, name, hint, sizeof hint);
        st = gt_fail(err, GT_EINVAL, "%s: unknown key '%s' in section '%s'%s", where, name, section, hint);
    } else {
        cfg_value v;
        st = value_parse(k, eq + 1, where, &v, err);
        if (st == GT_OK) value_commit(cfg, k, &v);
    }
    free(section);
    free(name);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// YAML loading (libyaml document API: every node keeps its start mark)

typedef struct yaml_ctx {
    const char *path;
    yaml_document_t *doc;
    run_config *cfg;
    err_list errs;
} yaml_ctx;

static void yaml_place(const yaml_ctx *c, yaml_mark_t m, char *buf, size_t n) {
    snprintf(buf, n, "%s:%zu:%zu", c->path, m.line + 1, m.column + 1);
}

static void yaml_error(yaml_ctx *c, yaml_mark_t m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void yaml_error(yaml_ctx *c, yaml_mark_t m, const char *fmt, ...) {
    gt_error e;
    char place[600], msg[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    yaml_place(c, m, place, sizeof place);
    gt_fail(&e, GT_EINVAL, "%s: %s", place, msg);
    err_list_add(&c->errs, &e);
}

static int yaml_is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = (const char *)n->data.scalar.value;
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static const char *yaml_kind(const yaml_node_t *n) {
    if (n->type == YAML_SCALAR_NODE && strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
        return "text with a NUL character";
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

// A key node usable as a name: a scalar without NUL characters.
static int yaml_is_name(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && strlen((const char *)n->data.scalar.value) == n->data.scalar.length;
}

// The earlier key of map equal to pair's key, if any (duplicate keys are errors).
static const yaml_node_t *yaml_earlier_key(yaml_ctx *c, const yaml_node_t *map, yaml_node_pair_t *pair) {
    const yaml_node_t *key = yaml_document_get_node(c->doc, pair->key);
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
        const yaml_node_t *qk = yaml_document_get_node(c->doc, q->key);
        if (qk->type == YAML_SCALAR_NODE && !strcmp((const char *)qk->data.scalar.value, (const char *)key->data.scalar.value))
            return qk;
    }
    return NULL;
}

// A list from a YAML sequence: each item checked at its own place, then the whole list.
static gt_status yaml_list_parse(yaml_ctx *c, const cfg_key *k, const yaml_node_t *seq, cfg_value *v, gt_error *e) {
    char where[700];
    memset(v, 0, sizeof *v);
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        const yaml_node_t *in = yaml_document_get_node(c->doc, *it);
        yaml_place(c, in->start_mark, where, sizeof where);
        if (in->type != YAML_SCALAR_NODE)
            return gt_fail(e, GT_EINVAL, "%s: %s.%s: list items must be plain names, not %s", where, k->section,
                           k->name, yaml_kind(in));
        const char *t = (const char *)in->data.scalar.value;
        if (strlen(t) != in->data.scalar.length)
            return gt_fail(e, GT_EINVAL, "%s: %s.%s: a NUL character inside a list item", where, k->section, k->name);
        str_list_push(&v->list, t, in->data.scalar.length);
        gt_status st = list_item_check(k, v->list.items[v->list.n - 1], where, e);
        if (st) return st;
    }
    yaml_place(c, seq->start_mark, where, sizeof where);
    return list_finish(k, &v->list, where, e);
}

static void yaml_apply_value(yaml_ctx *c, const cfg_key *k, const yaml_node_t *vn) {
    char where[700];
    gt_error e;
    cfg_value v;
    gt_status st;
    yaml_place(c, vn->start_mark, where, sizeof where);
    if (k->type == CFG_LIST && vn->type == YAML_SEQUENCE_NODE) {
        st = yaml_list_parse(c, k, vn, &v, &e);
    } else if (vn->type != YAML_SCALAR_NODE) {
        char allowed[600];
        allowed_text(k, 0, allowed, sizeof allowed);
        st = gt_fail(&e, GT_EINVAL, "%s: %s.%s: expected a single value, got %s; allowed: %s", where, k->section,
                     k->name, yaml_kind(vn), allowed);
        memset(&v, 0, sizeof v);
    } else if (strlen((const char *)vn->data.scalar.value) != vn->data.scalar.length) {
        st = gt_fail(&e, GT_EINVAL, "%s: %s.%s: a NUL character inside the value", where, k->section, k->name);
        memset(&v, 0, sizeof v);
    } else {
        st = value_parse(k, yaml_is_null(vn) ? "" : (const char *)vn->data.scalar.value, where, &v, &e);
    }
    if (st) {
        err_list_add(&c->errs, &e);
        value_free(&v);
        return;
    }
    value_commit(c->cfg, k, &v);
}

static void yaml_apply_section(yaml_ctx *c, const char *section, const yaml_node_t *map) {
    char hint[600];
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        const yaml_node_t *kn = yaml_document_get_node(c->doc, pair->key);
        const yaml_node_t *vn = yaml_document_get_node(c->doc, pair->value);
        if (!yaml_is_name(kn)) {
            yaml_error(c, kn->start_mark, "a key in section '%s' must be a plain name, not %s", section, yaml_kind(kn));
            continue;
        }
        const char *name = (const char *)kn->data.scalar.value;
        const yaml_node_t *first = yaml_earlier_key(c, map, pair);
        if (first) {
            yaml_error(c, kn->start_mark, "duplicate key '%s' in section '%s' (first at line %zu column %zu)", name,
                       section, first->start_mark.line + 1, first->start_mark.column + 1);
            continue;
        }
        const cfg_key *k = key_find(section, name);
        if (!k) {
            suggest_key(section, name, hint, sizeof hint);
            yaml_error(c, kn->start_mark, "unknown key '%s' in section '%s'%s", name, section, hint);
            continue;
        }
        yaml_apply_value(c, k, vn);
    }
}

static void yaml_apply_root(yaml_ctx *c, const yaml_node_t *root) {
    char hint[600];
    if (yaml_is_null(root)) return; // an empty file: all defaults
    if (root->type != YAML_MAPPING_NODE) {
        yaml_error(c, root->start_mark, "the top level must be a mapping of sections (model:, data:, lora:, ...), "
                                        "not %s", yaml_kind(root));
        return;
    }
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        const yaml_node_t *kn = yaml_document_get_node(c->doc, pair->key);
        const yaml_node_t *vn = yaml_document_get_node(c->doc, pair->value);
        if (!yaml_is_name(kn)) {
            yaml_error(c, kn->start_mark, "a section name must be a plain name, not %s", yaml_kind(kn));
            continue;
        }
        const char *name = (const char *)kn->data.scalar.value;
        const yaml_node_t *first = yaml_earlier_key(c, root, pair);
        if (first) {
            yaml_error(c, kn->start_mark, "duplicate section '%s' (first at line %zu column %zu)", name,
                       first->start_mark.line + 1, first->start_mark.column + 1);
            continue;
        }
        if (!section_find(name)) {
            suggest_section(name, hint, sizeof hint);
            yaml_error(c, kn->start_mark, "unknown section '%s'%s", name, hint);
            continue;
        }
        if (yaml_is_null(vn)) continue; // "lora:" with nothing under it
        const cfg_section *sec = section_find(name);
        if (vn->type == YAML_SCALAR_NODE && sec->scalar_key) { // "device: cuda"
            yaml_apply_value(c, key_find(name, sec->scalar_key), vn);
            continue;
        }
        if (vn->type != YAML_MAPPING_NODE) {
            yaml_error(c, vn->start_mark, "section '%s' must be a mapping of keys (key: value), not %s", name,
                       yaml_kind(vn));
            continue;
        }
        yaml_apply_section(c, name, vn);
    }
}

static gt_status yaml_syntax_error(const char *path, const yaml_parser_t *p, gt_error *err) {
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_READER_ERROR)
        return gt_fail(err, GT_EFORMAT, "%s: byte %zu: %s (a config must be UTF-8 text)", path, p->problem_offset,
                       problem);
    if (p->context)
        return gt_fail(err, GT_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s (%s, which starts at line %zu column %zu)",
                       path, p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                       p->context_mark.line + 1, p->context_mark.column + 1);
    return gt_fail(err, GT_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s", path, p->problem_mark.line + 1,
                   p->problem_mark.column + 1, problem);
}

gt_status run_config_load_file(run_config *cfg, const char *path, gt_error *err) {
    char *text;
    size_t len;
    gt_status st = fs_read_file(path, &text, &len, err);
    if (st) return st;
    yaml_parser_t parser;
    yaml_document_t doc;
    CHECK(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        st = yaml_syntax_error(path, &parser, err);
        yaml_parser_delete(&parser);
        free(text);
        return st;
    }
    yaml_ctx c = {.path = path, .doc = &doc, .cfg = cfg, .errs = {.err = err}};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) yaml_apply_root(&c, root);
    yaml_document_delete(&doc);
    // A second document is refused rather than ignored.
    if (root && c.errs.n == 0) {
        if (!yaml_parser_load(&parser, &doc)) {
            st = yaml_syntax_error(path, &parser, err);
        } else {
            yaml_node_t *second = yaml_document_get_root_node(&doc);
            if (second) yaml_error(&c, second->start_mark, "a second YAML document; a config is one document");
            yaml_document_delete(&doc);
        }
    }
    yaml_parser_delete(&parser);
    free(text);
    if (st) return st;
    return c.errs.n ? GT_EINVAL : GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// Validation

static int key_is_default(const run_config *cfg, const run_config *defaults, const cfg_key *k) {
    char *a = value_text(cfg, k), *b = value_text(defaults, k);
    int same = !strcmp(a, b);
    free(a);
    free(b);
    return same;
}

static void cross_error(err_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cross_error(err_list *l, const char *fmt, ...) {
    gt_error e;
    char msg[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gt_fail(&e, GT_EINVAL, "config: %s", msg);
    err_list_add(l, &e);
}

gt_status run_config_validate(const run_config *cfg, gt_error *err) {
    err_list l = {.err = err};
    for (int i = 0; i < N_KEYS; i++) { // each key's own rule, for fields set from C
        gt_error e;
        cfg_value v;
        char *t = value_text(cfg, &KEYS[i]);
        if (value_parse(&KEYS[i], t, "config", &v, &e)) err_list_add(&l, &e);
        else value_free(&v);
        free(t);
    }
    const run_data_config *d = &cfg->data;
    const run_optim_config *o = &cfg->optim;
    int have_val = d->val_fraction > 0 || d->val_path[0];
    if (o->warmup_steps > 0 && o->warmup_ratio > 0)
        cross_error(&l, "optim.warmup_steps (%d) and optim.warmup_ratio (%g) are both set; set one of them to 0",
                    o->warmup_steps, o->warmup_ratio);
    if (cfg->train.max_steps > 0 && o->warmup_steps >= cfg->train.max_steps)
        cross_error(&l, "optim.warmup_steps (%d) must be smaller than train.max_steps (%d)", o->warmup_steps,
                    cfg->train.max_steps);
    run_config defaults;
    run_config_defaults(&defaults);
    if (o->schedule != RC_SCHED_COSINE_MIN_LR && !key_is_default(cfg, &defaults, key_find("optim", "min_lr_ratio")))
        cross_error(&l, "optim.min_lr_ratio (%g) has no effect with optim.schedule %s; use schedule "
                        "cosine_with_min_lr or remove min_lr_ratio", o->min_lr_ratio, SCHEDULE_NAMES[o->schedule]);
    if (!d->shuffle && d->shuffle_seed != -1)
        cross_error(&l, "data.shuffle_seed (%d) has no effect with data.shuffle false; remove one of them",
                    d->shuffle_seed);
    run_config_free(&defaults);
    if (d->val_fraction > 0 && d->val_path[0])
        cross_error(&l, "data.val_fraction (%g) and data.val_path (%s) both give validation data; keep one",
                    d->val_fraction, d->val_path);
    if (cfg->eval.every_steps > 0 && !have_val)
        cross_error(&l, "eval.every_steps (%d) needs validation data: set data.val_fraction or data.val_path, "
                        "or eval.every_steps 0", cfg->eval.every_steps);
    if (d->format == RC_FORMAT_FLAT && (!d->user_column[0] || !d->answer_column[0]))
        cross_error(&l, "data.format flat needs data.user_column and data.answer_column");
    if (cfg->device.type == RC_DEVICE_CPU && cfg->device.index != 0)
        cross_error(&l, "device.index (%d) applies to CUDA devices, but device.type is cpu", cfg->device.index);
    return l.n ? GT_EINVAL : GT_OK;
}

gt_status run_config_resolve(run_config *cfg, const char *path, const char *const *sets, int n_sets, gt_error *err) {
    run_config_defaults(cfg);
    gt_status st = run_config_load_file(cfg, path, err);
    for (int i = 0; i < n_sets && !st; i++) st = run_config_set(cfg, sets[i], err);
    if (st) return st;
    if (!cfg->train.name[0]) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        const char *dot = strrchr(base, '.');
        size_t len = (dot && dot != base && (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml"))) ? (size_t)(dot - base)
                                                                                            : strlen(base);
        free(cfg->train.name);
        cfg->train.name = xasprintf("%.*s", (int)len, base);
    }
    return run_config_validate(cfg, err);
}

// ---------------------------------------------------------------------------------------------------
// Output: table, YAML, diff, Markdown

void run_config_print_table(FILE *f, const run_config *cfg) {
    run_config defaults;
    run_config_defaults(&defaults);
    fprintf(f, "resolved config (* = not the default):\n");
    for (int i = 0; i < N_KEYS; i++) {
        const cfg_key *k = &KEYS[i];
        char *t = value_text(cfg, k), full[64];
        snprintf(full, sizeof full, "%s.%s", k->section, k->name);
        fprintf(f, "%c %-32s %s\n", key_is_default(cfg, &defaults, k) ? ' ' : '*', full, t[0] ? t : "\"\"");
        free(t);
    }
    run_config_free(&defaults);
}

static int yaml_buf_write(void *data, unsigned char *buffer, size_t size) {
    text_add(data, (const char *)buffer, size);
    return 1;
}

static void yaml_scalar(yaml_emitter_t *em, const char *s, yaml_scalar_style_t style) {
    yaml_event_t ev;
    CHECK(yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1, style));
    CHECK(yaml_emitter_emit(em, &ev));
}

static void yaml_event(yaml_emitter_t *em, int ok, yaml_event_t *ev) {
    CHECK(ok);
    CHECK(yaml_emitter_emit(em, ev));
}

gt_status run_config_write_yaml(const run_config *cfg, const char *path, gt_error *err) {
    text_buf b = {0};
    char *head = xasprintf("# gptoss resolved config: every key, defaults included (gptoss %s, commit %s).\n"
                           "# `gptoss train` on this file repeats the run; configs/README.md documents each key.\n",
                           gptoss_version(), gptoss_git_commit());
    text_add(&b, head, strlen(head));
    free(head);
    yaml_emitter_t em;
    yaml_event_t ev;
    CHECK(yaml_emitter_initialize(&em));
    yaml_emitter_set_output(&em, yaml_buf_write, &b);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_event(&em, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING), &ev);
    yaml_event(&em, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1), &ev);
    yaml_event(&em, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE), &ev);
    for (int s = 0; s < N_SECTIONS; s++) {
        yaml_scalar(&em, SECTIONS[s].name, YAML_PLAIN_SCALAR_STYLE);
        yaml_event(&em, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE), &ev);
        for (int i = 0; i < N_KEYS; i++) {
            const cfg_key *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s].name)) continue;
            yaml_scalar(&em, k->name, YAML_PLAIN_SCALAR_STYLE);
            if (k->type == CFG_LIST) {
                const run_str_list *l = key_cfield(cfg, k);
                yaml_event(&em, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_SEQUENCE_STYLE), &ev);
                for (int j = 0; j < l->n; j++) yaml_scalar(&em, l->items[j], YAML_DOUBLE_QUOTED_SCALAR_STYLE);
                yaml_event(&em, yaml_sequence_end_event_initialize(&ev), &ev);
            } else {
                char *t = value_text(cfg, k);
                yaml_scalar(&em, t, k->type == CFG_STRING ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE);
                free(t);
            }
        }
        yaml_event(&em, yaml_mapping_end_event_initialize(&ev), &ev);
    }
    yaml_event(&em, yaml_mapping_end_event_initialize(&ev), &ev);
    yaml_event(&em, yaml_document_end_event_initialize(&ev, 1), &ev);
    yaml_event(&em, yaml_stream_end_event_initialize(&ev), &ev);
    yaml_emitter_delete(&em);
    gt_status st = fs_write_atomic(path, b.s, b.n, err);
    free(b.s);
    return st;
}

int run_config_diff(const run_config *a, const run_config *b, char *out, size_t size) {
    int n = 0;
    size_t used = 0;
    if (size) out[0] = 0;
    for (int i = 0; i < N_KEYS; i++) {
        char *ta = value_text(a, &KEYS[i]), *tb = value_text(b, &KEYS[i]);
        if (strcmp(ta, tb)) {
            if (used < size)
                used += (size_t)snprintf(out + used, size - used, "%s%s.%s: %s -> %s", n ? "\n" : "", KEYS[i].section,
                                         KEYS[i].name, ta[0] ? ta : "\"\"", tb[0] ? tb : "\"\"");
            n++;
        }
        free(ta);
        free(tb);
    }
    return n;
}

static void md_cell(FILE *f, const char *s) { // a Markdown table cell: | escaped, no newlines
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else fputc(*s == '\n' ? ' ' : *s, f);
    }
}

void run_config_schema_markdown(FILE *f) {
    static const char *const type_names[] = {[CFG_STRING] = "string", [CFG_INT] = "integer", [CFG_FLOAT] = "number",
                                             [CFG_BOOL] = "boolean", [CFG_ENUM] = "one of", [CFG_LIST] = "list"};
    fputs("# gptoss run config\n\n"
          "<!-- Generated from the schema in trainer/config.c by `gptoss train --schema-markdown`; do not edit.\n"
          "     tests/cli_config.sh fails when this file differs from that output. To update it:\n"
          "     ./build/gptoss train --schema-markdown > configs/README.md -->\n\n"
          "A run is one YAML file of the sections below; every key is optional and takes its default when left "
          "out. The configs here: `tiny.yaml` trains a tiny model on the CPU in about a minute; "
          "`multilingual.yaml` is the real recipe (GPT-OSS-20B on HuggingFaceH4/Multilingual-Thinking).\n\n"
          "    gptoss train configs/tiny.yaml --set lora.rank=16 --set lora.targets=q_proj,v_proj --dry-run\n\n"
          "- Strict: an unknown section or key, a value of the wrong type or out of range is an error naming "
          "FILE:LINE:COLUMN (or the `--set`) and what is allowed, with the nearest valid key suggested. A key "
          "given twice is an error.\n"
          "- `--set section.key=value` overrides one key with the same checks; lists are comma-separated there "
          "(`--set lora.targets=q_proj,v_proj`) and YAML lists in a file (`targets: [q_proj, v_proj]`).\n"
          "- Booleans are `true`/`false` (also yes/no, on/off, 1/0). Relative paths are relative to the working "
          "directory.\n"
          "- `gptoss train` prints the resolved config as a table (`*` marks values that differ from the default) "
          "and saves it, every key included, as `out_dir/name/config.resolved.yaml`; `gptoss train` on that file "
          "repeats the run. `--dry-run` prints it and stops.\n\n",
          f);
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "## `%s`: %s\n\n", SECTIONS[s].name, SECTIONS[s].doc);
        if (SECTIONS[s].scalar_key)
            fprintf(f, "The section given as one value sets `%s`: `%s: VALUE` in the file, `--set %s=VALUE`.\n\n",
                    SECTIONS[s].scalar_key, SECTIONS[s].name, SECTIONS[s].name);
        fputs("| key | type | default | allowed | description |\n|---|---|---|---|---|\n", f);
        for (int i = 0; i < N_KEYS; i++) {
            const cfg_key *k = &KEYS[i];
            if (strcmp(k->section, SECTIONS[s].name)) continue;
            char allowed[600];
            allowed_text(k, 1, allowed, sizeof allowed);
            fprintf(f, "| `%s` | %s | `", k->name, type_names[k->type]);
            md_cell(f, k->def[0] ? k->def : "\"\"");
            fputs("` | ", f);
            md_cell(f, allowed);
            fputs(" | ", f);
            md_cell(f, k->doc);
            fputs(" |\n", f);
        }
        fputc('\n', f);
    }
}
