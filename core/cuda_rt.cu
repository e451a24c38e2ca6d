// core/cuda_rt.cu: device facts, raw memory, the device arena and the cuBLASLt GEMM (core/cuda_rt.h).
//
// GEMM: cuBLASLt is column-major, so the row-major C (M, N) = op(A) op(B) is computed as the column-major
// C^T (N, M) = op(B)^T op(A)^T: B goes first with cuBLAS op T exactly when tb, A second with T when ta.
// Each problem class (types, transposes, sizes rounded up to a power of two, leading dimensions, pointer
// alignments) gets its descriptors and heuristic algorithm once and keeps them in a direct-mapped cache
// (a collision replaces the entry); each call then sets the exact sizes on the cached layouts. The
// heuristic query costs far more than the matmul for LoRA-sized problems, and the expert GEMMs see a new
// row count every step, hence the rounding. Pointer alignment is part of the key because cuBLASLt's
// heuristics assume 256-byte aligned operands unless told otherwise.
#include "core/cuda_check.h"
#include "core/cuda_rt.h"

#include <stdlib.h>

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" void cuda_device_name(char *buf, size_t size) {
    int dev = 0;
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    snprintf(buf, size, "%s", p.name);
}

static size_t g_mem_peak;

extern "C" size_t cuda_mem_used(void) {
    size_t free_b = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
    return total - free_b;
}

extern "C" size_t cuda_mem_sample(void) {
    size_t u = cuda_mem_used();
    if (u > g_mem_peak) g_mem_peak = u;
    return g_mem_peak;
}

extern "C" void *cuda_malloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}
extern "C" void cuda_free(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}
extern "C" void cuda_h2d(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
extern "C" void cuda_h2d_async(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, 0));
}
extern "C" void cuda_d2h(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
extern "C" void cuda_d2h_async(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, 0));
}
extern "C" void cuda_memset(void *dst, int byte, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, 0));
}

__global__ void fill_f32_kernel(float *p, float v, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}
extern "C" void cuda_fill_f32(float *dst, float value, size_t n) {
    if (!n) return;
    fill_f32_kernel<<<cuda_blocks(n, 256), 256>>>(dst, value, n);
    CUDA_LAUNCH_CHECK();
}
extern "C" void cuda_sync(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

// hold_flag[0]: set by the host to release; [1]: set by the kernel when it gave up (timeout). Mapped memory.
static volatile int *hold_flag;

__global__ void hold_kernel(volatile int *flag, unsigned long long timeout_ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        if (flag[0]) return;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < timeout_ns);
    flag[1] = 1;
}

extern "C" void cuda_hold_begin(double timeout_s) {
    if (!hold_flag) CUDA_CHECK(cudaHostAlloc((void **)&hold_flag, 2 * sizeof(int), cudaHostAllocMapped));
    CUDA_CHECK(cudaDeviceSynchronize());
    hold_flag[0] = 0, hold_flag[1] = 0;
    int *dev = NULL;
    CUDA_CHECK(cudaHostGetDevicePointer((void **)&dev, (void *)hold_flag, 0));
    hold_kernel<<<1, 1>>>(dev, (unsigned long long)(timeout_s * 1e9));
    CUDA_LAUNCH_CHECK();
}

extern "C" int cuda_hold_end(void) {
    const int held = cudaStreamQuery(0) == cudaErrorNotReady && !hold_flag[1];
    hold_flag[0] = 1;
    CUDA_CHECK(cudaDeviceSynchronize());
    return held && !hold_flag[1];
}
extern "C" void *cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 1));
    return p;
}
extern "C" void cuda_host_free(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

// ---------------------------------------------------------------------------------------------------
// Arena

extern "C" void *cuda_arena_take(cuda_arena *a, size_t bytes) {
    size_t off = (a->used + 255) & ~(size_t)255;
    a->used = off + bytes;
    if (!a->base) return NULL;
    CHECK(a->used <= a->size);
    return a->base + off;
}

extern "C" gt_status cuda_arena_alloc(cuda_arena *a, const char *what, gt_error *err) {
    size_t need = a->used ? a->used : 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, need);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total = 0;
        cudaMemGetInfo(&free_b, &total);
        return gt_fail(err, GT_ENOMEM, "%s: %.2f GiB of GPU memory did not fit (%.2f GiB free of %.2f GiB); use "
                       "fewer tokens per batch or a smaller LoRA rank", what, need / 1073741824.0,
                       free_b / 1073741824.0, total / 1073741824.0);
    }
    a->base = (char *)p;
    a->size = need;
    a->used = 0;
    return GT_OK;
}

extern "C" void cuda_arena_free(cuda_arena *a) {
    cuda_free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}

// ---------------------------------------------------------------------------------------------------
// GEMM

#define GEMM_WORKSPACE (32u << 20)
#define GEMM_CACHE 4096

typedef struct gemm_key {
    int type, ta, tb, M, N, K, lda, ldb, ldc, align_a, align_b, align_c;
} gemm_key;

typedef struct gemm_plan {
    int used;
    gemm_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

static cublasLtHandle_t g_lt;
static void *g_ws;
static gemm_plan *g_plans;

extern "C" void cuda_gemm_init(void) {
    if (g_lt) return;
    CUBLAS_CHECK(cublasLtCreate(&g_lt));
    CUDA_CHECK(cudaMalloc(&g_ws, GEMM_WORKSPACE));
    g_plans = (gemm_plan *)xcalloc(GEMM_CACHE, sizeof(gemm_plan));
}

static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = 1;
    while (a < 256 && !(u & (uintptr_t)a)) a <<= 1;
    return a;
}

static uint64_t key_hash(const gemm_key *k) {
    const int *w = (const int *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k / sizeof(int); i++) h = (h ^ (uint32_t)w[i]) * 1099511628211ull;
    return h;
}

static int pow2_up(int x) {
    int p = 1;
    while (p < x) p <<= 1;
    return p;
}

// Sets the three layouts to the exact problem (the plan was made for its power-of-two class).
static void plan_size(gemm_plan *p, int ta, int tb, int M, int N, int K) {
    uint64_t r, c;
    r = tb ? K : N, c = tb ? N : K; // operand B as cuBLAS's first operand (m = N, k = K)
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->la, CUBLASLT_MATRIX_LAYOUT_ROWS, &r, sizeof r));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->la, CUBLASLT_MATRIX_LAYOUT_COLS, &c, sizeof c));
    r = ta ? M : K, c = ta ? K : M; // operand A second (k = K, n = M)
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->lb, CUBLASLT_MATRIX_LAYOUT_ROWS, &r, sizeof r));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->lb, CUBLASLT_MATRIX_LAYOUT_COLS, &c, sizeof c));
    r = N, c = M;
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->lc, CUBLASLT_MATRIX_LAYOUT_ROWS, &r, sizeof r));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->lc, CUBLASLT_MATRIX_LAYOUT_COLS, &c, sizeof c));
}

static void plan_free(gemm_plan *p) {
    if (!p->used) return;
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
    p->used = 0;
}

// The heuristic is asked for the exact problem that first met this class (key k holds rounded sizes).
static void plan_make(gemm_plan *p, const gemm_key *k, int M, int N, int K) {
    cudaDataType_t dt = k->type == CUDA_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    // cuBLAS problem: m = N, n = M, k = K; first operand B, second A (see the file header).
    cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    int m = N, n = M, kk = K;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, dt, opa == CUBLAS_OP_N ? m : kk, opa == CUBLAS_OP_N ? kk : m,
                                            k->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, dt, opb == CUBLAS_OP_N ? kk : n, opb == CUBLAS_OP_N ? n : kk,
                                            k->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, m, n, k->ldc));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = GEMM_WORKSPACE;
    uint32_t aa = (uint32_t)k->align_b, ab = (uint32_t)k->align_a, ac = (uint32_t)k->align_c;
    // No split-K reductions: the algorithm then needs no workspace that grows with the problem (a class
    // shares one algorithm across sizes) and results do not depend on reduction order between blocks.
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g_lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found));
    if (!found)
        gt_die(__FILE__, __LINE__, "cuBLASLt has no algorithm for %s gemm ta=%d tb=%d M=%d N=%d K=%d",
               k->type == CUDA_GEMM_BF16 ? "bf16" : "f32", k->ta, k->tb, M, N, K);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    p->algo = res.algo;
    p->key = *k;
    p->used = 1;
}

extern "C" void cuda_gemm_free(void) {
    if (!g_lt) return;
    for (int i = 0; i < GEMM_CACHE; i++) plan_free(&g_plans[i]);
    free(g_plans);
    g_plans = NULL;
    CUDA_CHECK(cudaFree(g_ws));
    g_ws = NULL;
    CUBLAS_CHECK(cublasLtDestroy(g_lt));
    g_lt = NULL;
}

__global__ void scale_rows_kernel(float *C, int M, int N, int ldc, float beta) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)M * N) return;
    float *c = C + (i / N) * ldc + i % N;
    *c = beta == 0.0f ? 0.0f : *c * beta;
}

extern "C" void cuda_gemm(cuda_gemm_type type, int ta, int tb, int M, int N, int K, float alpha, const void *A,
                          int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta != 1.0f) {
            scale_rows_kernel<<<cuda_blocks((size_t)M * N, 256), 256>>>(C, M, N, ldc, beta);
            CUDA_LAUNCH_CHECK();
        }
        return;
    }
    cuda_gemm_init();
    gemm_key k;
    memset(&k, 0, sizeof k);
    k.type = type, k.ta = ta, k.tb = tb, k.lda = lda, k.ldb = ldb, k.ldc = ldc;
    k.align_a = ptr_align(A), k.align_b = ptr_align(B), k.align_c = ptr_align(C);
    k.M = pow2_up(M), k.N = pow2_up(N), k.K = pow2_up(K);
    gemm_plan *p = &g_plans[key_hash(&k) % GEMM_CACHE];
    if (!p->used || memcmp(&p->key, &k, sizeof k)) {
        plan_free(p);
        plan_make(p, &k, M, N, K);
    }
    plan_size(p, ta, tb, M, N, K);
    CUBLAS_CHECK(cublasLtMatmul(g_lt, p->desc, &alpha, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc, &p->algo, g_ws,
                                GEMM_WORKSPACE, 0));
}
