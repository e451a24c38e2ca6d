// gptoss export: not implemented yet.
#include "cli/cli.h"

int cmd_export(int argc, char **argv) { return cli_not_implemented("export", "the training issue"); }
