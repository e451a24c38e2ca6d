// core/cuda_check.h: fatal checks for CUDA and cuBLASLt calls, for .cu files only (it includes the CUDA
// headers). A failing call is a programming or environment error, never bad user input: the macro prints
// the expression, its error string, file and line, then aborts (STYLE.md habit 4). CUDA_LAUNCH_CHECK()
// after every kernel launch catches bad launch configurations at the launch site.
#ifndef GPTOSS_CORE_CUDA_CHECK_H
#define GPTOSS_CORE_CUDA_CHECK_H

#include <cublasLt.h>
#include <cuda_runtime.h>

// The project's C headers, seen from C++: C linkage, and C11's _Noreturn spelled as GCC's attribute.
#ifndef _Noreturn
#define _Noreturn __attribute__((noreturn))
#endif
extern "C" {
#include "core/core.h"
#include "core/cuda_rt.h"
}

#define CUDA_CHECK(expr)                                                                                  \
    do {                                                                                                  \
        cudaError_t e_ = (expr);                                                                          \
        if (e_ != cudaSuccess) gt_die(__FILE__, __LINE__, "%s: %s", #expr, cudaGetErrorString(e_));     \
    } while (0)

#define CUBLAS_CHECK(expr)                                                                                \
    do {                                                                                                  \
        cublasStatus_t s_ = (expr);                                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                  \
            gt_die(__FILE__, __LINE__, "%s: cuBLAS status %d (%s)", #expr, (int)s_, cublasLtGetStatusString(s_)); \
    } while (0)

#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// Blocks of `threads` covering n items.
static inline unsigned cuda_blocks(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

#endif
