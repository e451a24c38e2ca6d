// gptoss version: version, git commit, build type, CUDA on/off and the GPUs found.
#include "cli/cli.h"
#include "core/core.h"

int cmd_version(int argc, char **argv) {
    char gpus[4096];
    gptoss_gpu_list(gpus, sizeof gpus);
    printf("gptoss %s\ncommit: %s\nbuild: %s\ncuda: %s\ngpus: %s\n", gptoss_version(), gptoss_git_commit(),
           gptoss_build_type(), gptoss_have_cuda() ? "on" : "off", gpus);
    return 0;
}
