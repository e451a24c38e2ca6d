// gptoss train: not implemented yet.
#include "cli/cli.h"

int cmd_train(int argc, char **argv) { return cli_not_implemented("train", "the training issue"); }
