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

#endif
