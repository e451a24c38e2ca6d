// cli: one file per subcommand. Each cmd_* takes the arguments after the command name and returns the
// process exit code (0 ok, 1 failure, 2 usage error).
#ifndef GPTOSS_CLI_H
#define GPTOSS_CLI_H

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    const char *usage; // full --help text
} cli_command;

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_init_model(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_version(int argc, char **argv);

// Prints the command's usage (to stdout) when argv holds -h/--help; returns 1 when it did.
int cli_wants_help(const char *name, int argc, char **argv);
// 1 when arg is one of flags[0..n); else prints "gptoss CMD: unknown argument 'ARG' (did you mean
// FLAG?); see gptoss CMD --help" (FLAG the nearest by edit distance) and returns 0.
int cli_flag_known(const char *cmd, const char *arg, const char *const *flags, int n);
// Prints "gptoss CMD: " + the formatted message + "; see gptoss CMD --help" to stderr; returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---------------------------------------------------------------------------------------------------
// cli/data.c: the one mapping of a resolved config onto data/'s options, for every command that reads
// the config's data (data, train). data.path is a file, a directory or a hub dataset in the local cache
// (its *.jsonl / *.jsonl.gz / *.parquet files whose name holds data.split, sorted); the tokenizer is model.tokenizer,
// else the model directory's tokenizer.json. Prints the problem as "gptoss CMD: ..." and returns 1, or
// returns 0 with *o pointing into cfg and *owned (free with cli_data_free after the last use of *o).
struct run_config;
struct data_options;
typedef struct cli_data {
    char **train; // resolved training files
    int n_train;
    char *val;       // resolved data.val_path, or NULL
    char *tokenizer; // tokenizer.json
} cli_data;
int cli_data_resolve(const char *cmd, const struct run_config *cfg, struct data_options *o, cli_data *owned);
void cli_data_free(cli_data *owned);

// ---------------------------------------------------------------------------------------------------
#include <stddef.h>
// cli/infer.c: what chat and export load, with the three mistakes caught before anything is loaded: an
// adapter (or a training checkpoint, or a run directory) passed as the model, a model passed as the
// adapter, and an adapter made for another base. Each prints "gptoss CMD: ..." saying what to pass
// instead and returns 1; 0 on success.
// --model: a model directory or hub name (hfcache_resolve) holding config.json -> dir.
int cli_infer_model_dir(const char *cmd, const char *model_arg, char *dir, size_t size);
// --adapter: a PEFT adapter directory, a checkpoint (checkpoints/step-N/) or a run directory (its
// adapter/, else its newest complete checkpoint) -> dir.
int cli_infer_adapter_dir(const char *cmd, const char *adapter_arg, char *dir, size_t size);
// The adapter's base_model_name_or_path (adapter_config.json) into base (size; "" when null or absent).
int cli_infer_adapter_base(const char *cmd, const char *adapter_dir, char *base, size_t size);
// Refuses an adapter whose base_model_name_or_path names another model than --model (the same hub name,
// or a path or hub name that resolves to the same directory, matches); ignore: only a warning.
int cli_infer_check_base(const char *cmd, const char *adapter_dir, const char *model_arg, const char *model_dir,
                         int ignore);
// The JSON file at path (json_decref it), or NULL after printing "gptoss CMD: PATH:LINE:COLUMN: problem".
struct json_t *cli_json_load(const char *cmd, const char *path);

#endif
