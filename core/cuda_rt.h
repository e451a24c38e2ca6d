// core/cuda_rt.h: the CUDA helpers every CUDA user needs, as plain C (no CUDA headers, so .c files include
// it without nvcc). Exists only in builds with GPTOSS_HAVE_CUDA = 1; callers guard with #if.
//
//   - device presence and memory facts;
//   - raw device memory for tests and uploads (cuda_malloc / cuda_h2d / ...; failures abort: they are
//     programming or environment errors, or sizes the caller checked first);
//   - a device arena: sized by a counting pass, allocated once (the only allocation of a training run's
//     workspace), then carved by bump allocation, 256-byte aligned;
//   - dense GEMMs through cuBLASLt, row-major, fp32 accumulation and fp32 output, operands either both
//     bf16 (the base weights) or both fp32 (LoRA; exact fp32, no TF32).
// All work goes to the legacy default stream, in order; nothing here synchronises unless it says so.
#ifndef GPTOSS_CORE_CUDA_RT_H
#define GPTOSS_CORE_CUDA_RT_H

#include "core/core.h"

#if GPTOSS_HAVE_CUDA

int cuda_device_count(void); // 0 when there is no GPU or driver (not an error)
// Makes GPU index (0 <= index < cuda_device_count()) current for everything after (core/cuda_device.cu).
void cuda_device_set(int index);
// "NVIDIA H100 80GB HBM3" etc. of the current device.
void cuda_device_name(char *buf, size_t size);
// Bytes in use on the device now (total - free, as nvidia-smi counts: context, every allocation).
size_t cuda_mem_used(void);
// cuda_mem_used's largest value seen by cuda_mem_sample (call it where the peak may be).
size_t cuda_mem_sample(void);

void *cuda_malloc(size_t bytes);
void cuda_free(void *p);
void cuda_h2d(void *dst, const void *src, size_t bytes);
// Asynchronous upload; src must be pinned (cuda_host_alloc) and stay unchanged until the device has read it.
void cuda_h2d_async(void *dst, const void *src, size_t bytes);
void cuda_d2h(void *dst, const void *src, size_t bytes);
// Asynchronous download into pinned dst (cuda_host_alloc), in stream order: valid after the next host wait
// (cuda_sync, or a cuda_d2h queued after it).
void cuda_d2h_async(void *dst, const void *src, size_t bytes);
void cuda_memset(void *dst, int byte, size_t bytes);   // asynchronous
void cuda_fill_f32(float *dst, float value, size_t n); // asynchronous; tests poison outputs with NaN
void cuda_sync(void);                                  // waits for the device; checks for kernel faults
void *cuda_host_alloc(size_t bytes);                   // pinned host memory, for asynchronous copies
void cuda_host_free(void *p);
// A hold on the default stream, for tests that assert a piece of code never makes the host wait for the
// device: cuda_hold_begin enqueues a kernel that holds back all later work until cuda_hold_end (or until
// timeout_s passes, so a host that does wait is not deadlocked). cuda_hold_end returns 1 when the hold was
// still in place when it was called (nothing between the two waited for the device), 0 when it had timed
// out; then it releases the hold and synchronises. Not for use inside a training step (it allocates).
void cuda_hold_begin(double timeout_s);
int cuda_hold_end(void);

// Device arena. Counting pass: base == NULL, take() only counts. Then cuda_arena_alloc reserves the
// counted bytes (GT_ENOMEM with the size when they do not fit), reset used to 0 and take again.
typedef struct cuda_arena {
    char *base;
    size_t size, used;
} cuda_arena;
void *cuda_arena_take(cuda_arena *a, size_t bytes);
gt_status cuda_arena_alloc(cuda_arena *a, const char *what, gt_error *err);
void cuda_arena_free(cuda_arena *a);

// GEMM: C (M, N) = alpha op(A) op(B) + beta C, all row-major. op(A) is (M, K): A stored (M, K) with
// leading dimension lda, or (K, M) when ta. op(B) is (K, N): B stored (K, N), or (N, K) when tb.
// C is fp32 (ldc). The Linear shapes: y = x W^T is (ta 0, tb 1), dx = dy W is (0, 0), dW += dy^T x is (1, 0).
// M, N or K == 0 is allowed (K == 0 scales C by beta).
typedef enum cuda_gemm_type { CUDA_GEMM_BF16, CUDA_GEMM_F32 } cuda_gemm_type;
void cuda_gemm(cuda_gemm_type type, int ta, int tb, int M, int N, int K, float alpha, const void *A, int lda,
               const void *B, int ldb, float beta, float *C, int ldc);
// Creates the cuBLASLt handle and its workspace (call before the first step so nothing allocates in it);
// cuda_gemm_free releases them (and the cached plans) at the end of a program.
void cuda_gemm_init(void);
void cuda_gemm_free(void);

#endif
#endif
