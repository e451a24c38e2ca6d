// gptoss eval: not implemented yet.
#include "cli/cli.h"

int cmd_eval(int argc, char **argv) { return cli_not_implemented("eval", "the CPU model issue"); }
