// gptoss init-model: not implemented yet.
#include "cli/cli.h"

int cmd_init_model(int argc, char **argv) { return cli_not_implemented("init-model", "the CPU model issue"); }
