// cli: one file per subcommand. Each cmd_* takes the arguments after the command name and returns the
// process exit code (0 ok, 1 failure, 2 usage error or not implemented).
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

// Prints "gptoss NAME: not implemented yet (NOTE)" to stderr and returns 2.
int cli_not_implemented(const char *name, const char *note);
// Prints the command's usage (to stdout) when argv holds -h/--help; returns 1 when it did.
int cli_wants_help(const char *name, int argc, char **argv);

// ---------------------------------------------------------------------------------------------------
// cli/data.c: the one mapping of a resolved config onto data/'s options, for every command that reads
// the config's data (data, train). data.path is a file, a directory or a hub dataset in the local cache
// (its *.jsonl / *.jsonl.gz files whose name holds data.split, sorted); the tokenizer is model.tokenizer,
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

#endif
