// gptoss bench: not implemented yet.
#include "cli/cli.h"

int cmd_bench(int argc, char **argv) { return cli_not_implemented("bench", "the CUDA issue"); }
