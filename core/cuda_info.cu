// GPU enumeration for `gptoss version`. A machine without a GPU (or driver) reports "none", no error.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int cuda_gpu_list(char *buf, size_t size) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError();
        snprintf(buf, size, "none");
        return 0;
    }
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off < size; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
        off += (size_t)snprintf(buf + off, size - off, "%s[%d] %s, %.1f GiB, sm_%d%d", i ? "; " : "", i,
                                p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor);
    }
    return n;
}
