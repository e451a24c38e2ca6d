// core/cuda_device.cu: choosing the GPU (core/cuda_rt.h, cuda_device_set). Everything after it (weights,
// arenas, the cuBLASLt handle) lives on the chosen device.
#include "core/cuda_check.h"
#include "core/cuda_rt.h"

extern "C" void cuda_device_set(int index) { CUDA_CHECK(cudaSetDevice(index)); }
