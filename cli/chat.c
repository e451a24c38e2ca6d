// gptoss chat: not implemented yet.
#include "cli/cli.h"

int cmd_chat(int argc, char **argv) { return cli_not_implemented("chat", "the inference issue"); }
