// Build facts for `gptoss version` and the GPU list (through core/cuda_info.cu when CUDA is built).
#include "core/core.h"
#include "gitinfo.h" // generated in the build directory: GPTOSS_GIT_COMMIT

const char *gptoss_version(void) { return GPTOSS_VERSION; }
const char *gptoss_git_commit(void) { return GPTOSS_GIT_COMMIT; }
const char *gptoss_build_type(void) { return GPTOSS_BUILD_TYPE; }
int gptoss_have_cuda(void) { return GPTOSS_HAVE_CUDA; }

#if GPTOSS_HAVE_CUDA
int cuda_gpu_list(char *buf, size_t size); // core/cuda_info.cu
int gptoss_gpu_list(char *buf, size_t size) { return cuda_gpu_list(buf, size); }
#else
int gptoss_gpu_list(char *buf, size_t size) {
    snprintf(buf, size, "none (built without CUDA)");
    return 0;
}
#endif
