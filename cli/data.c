// gptoss data: not implemented yet.
#include "cli/cli.h"

int cmd_data(int argc, char **argv) { return cli_not_implemented("data", "the dataset issue"); }
