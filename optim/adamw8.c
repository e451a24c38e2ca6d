// 8-bit AdamW as bitsandbytes computes it (AdamW8bit, bitsandbytes 0.4x-0.50): the dynamic quantization
// maps, the blockwise quantizer, the 8-bit two-state blockwise step and the fp32 step bnb takes for small
// tensors. The arithmetic follows bnb's CUDA kernels (kOptimizerStatic8bit2StateBlockwise and
// kOptimizer32bit2State, csrc/kernels.cu), operation by operation in fp32, because that is what a GPU
// run of the peer (HF Trainer with optim=adamw_8bit) executes. Where CUDA uses approximate intrinsics
// (__powf, __fdividef) this file uses the exact operation; see tests/test_optim.c for what that costs.
//
// Kernel facts reproduced here (each one changes results):
//   - weight decay is applied AFTER the Adam update: p = (p + step_size * m / (sqrt(v) + c2 * eps)) *
//     (1 - lr * wd), with step_size = -lr * c2 / c1, c1 = 1 - beta1^t, c2 = sqrt(1 - beta2^t);
//   - 8-bit: v = v * beta2 + ((1 - beta2) * g) * g, while the fp32 kernel computes (1 - beta2) * (g * g);
//   - 8-bit: a non-finite gradient element gets m = v = 0 and leaves its parameter alone;
//   - 8-bit: the new absmax of a block is taken over all 256 slots; in a partial last block the empty
//     slots hold g = 0 and the codes 128 (m) and 0 (v) the kernel pads its loads with, so the padding m
//     slot contributes |map1[128] * old_absmax1 * beta1| (a 5.5e-7 relative floor, never larger);
//   - quantization: bnb's binary search over the map with its own tie rule (optim_quantize), then for m
//     a sign fix: if the chosen code's sign differs from m's, step one code towards m's sign (so a tiny
//     negative m never becomes +0). When a block is all zeros, x = 0/0 = NaN and the search yields code 0;
//     the sign fix then wraps +0's code to 255, exactly as the unsigned char arithmetic in CUDA does.
#include "optim/optim.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------------
// The dynamic map.
//
// bnb builds it with torch: for exponent i = 0..6, the midpoints of torch.linspace(0.1, 1, k) (float32)
// scaled by 10^(i-6), k = 2^i + 1 (signed, each value also negated) or 2^(i+1) + 1 (unsigned); then 0
// and 1 are appended and the 256 values sorted. torch's CPU linspace computes element idx as
// start + step * idx below the midpoint and end - step * (k - 1 - idx) from it, and in the AVX2/AVX-512
// builds every x86-64 GPU host runs, the compiler fuses those into one FMA. The fused form is what gives
// bnb's map bit for bit (the unfused DEFAULT-capability build differs in a few last bits); checked
// against the map bnb 0.50.2 stores in its optimizer state (tests/fixtures/optim).
static void torch_linspace_f32(float *out, int k, float start, float end) {
    float step = (end - start) / (float)(k - 1);
    int half = k / 2;
    for (int idx = 0; idx < k; idx++)
        out[idx] = idx < half ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(k - 1 - idx), end);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void optim_dynamic_map(float map[256], int is_signed) {
    int n = 0;
    float bounds[129];
    for (int i = 0; i < 7; i++) {
        int k = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        torch_linspace_f32(bounds, k, 0.1f, 1.0f);
        // Python's 10 ** (i - 6) is a double; torch casts it to the tensor's float32 before multiplying.
        float scale = (float)pow(10.0, i - 6);
        for (int j = 0; j + 1 < k; j++) {
            float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            map[n++] = scale * mean;
            if (is_signed) map[n++] = -scale * mean;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    CHECK(n == 256);
    qsort(map, 256, sizeof(float), cmp_float);
}

// ---------------------------------------------------------------------------------------------------
// The quantizer: a 7-level binary search from the middle code (127) with strides 64, 32, ..., 1 that
// tracks the codes just below and above x (starting from the ends of the range: -1 or 0, and 1), then
// picks the nearer of the final code and its neighbour on x's side. Ties go to the final code.
uint8_t optim_quantize(const float map[256], int is_signed, float x) {
    int code = 127, below = 0, above = 255;
    float below_val = is_signed ? -1.0f : 0.0f, above_val = 1.0f;
    float val = map[code];
    for (int stride = 64; stride > 0; stride >>= 1) {
        if (x > val) {
            below = code;
            below_val = val;
            code += stride;
        } else {
            above = code;
            above_val = val;
            code -= stride;
        }
        val = map[code];
    }
    if (x > val) return (uint8_t)(x > (above_val + val) * 0.5f ? above : code);
    return (uint8_t)(x < (below_val + val) * 0.5f ? below : code);
}

// ---------------------------------------------------------------------------------------------------
// The steps.

static int is_finite_f(float x) { return !isnan(x) && !isinf(x); }

void adamw8_update_blockwise(float *param, const float *grad, uint8_t *m8, uint8_t *v8, float *absmax1,
                             float *absmax2, size_t n, const float qmap1[256], const float qmap2[256],
                             const optim_config *cfg, int64_t step, double lr) {
    // bnb passes every hyperparameter to the kernel as a C float (ctypes c_float) and the step as int32.
    const float beta1 = (float)cfg->beta1, beta2 = (float)cfg->beta2, eps = (float)cfg->eps;
    const float wd = (float)cfg->weight_decay, lr_f = (float)lr;
    const float c1 = 1.0f - powf(beta1, (float)step);
    const float c2 = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = (-lr_f * c2) / c1;
    const size_t n_blocks = (n + OPTIM_8BIT_BLOCK - 1) / OPTIM_8BIT_BLOCK;

#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blocks; b++) {
        const size_t base = b * OPTIM_8BIT_BLOCK;
        const size_t cnt = n - base < OPTIM_8BIT_BLOCK ? n - base : OPTIM_8BIT_BLOCK;
        float s1[OPTIM_8BIT_BLOCK], s2[OPTIM_8BIT_BLOCK];
        float max1 = -FLT_MAX, max2 = -FLT_MAX;
        // Dequantize and update both moments; slots past the end are the kernel's padding (see header).
        for (size_t j = 0; j < OPTIM_8BIT_BLOCK; j++) {
            const int valid = j < cnt;
            const float g = valid ? grad[base + j] : 0.0f;
            const uint8_t c1j = valid ? m8[base + j] : 128, c2j = valid ? v8[base + j] : 0;
            if (is_finite_f(g)) {
                s2[j] = qmap2[c2j] * absmax2[b];
                s2[j] = s2[j] * beta2 + (1.0f - beta2) * g * g;
                s1[j] = qmap1[c1j] * absmax1[b];
                s1[j] = s1[j] * beta1 + (1.0f - beta1) * g;
            } else {
                s1[j] = 0.0f;
                s2[j] = 0.0f;
            }
            max1 = fmaxf(max1, fabsf(s1[j]));
            max2 = fmaxf(max2, fabsf(s2[j]));
        }
        absmax1[b] = max1;
        absmax2[b] = max2;
        for (size_t j = 0; j < cnt; j++) {
            if (!is_finite_f(grad[base + j])) continue;
            float p = param[base + j] + step_size * (s1[j] / (sqrtf(s2[j]) + c2 * eps));
            if (wd > 0.0f) p = p * (1.0f - lr_f * wd);
            param[base + j] = p;
        }
        for (size_t j = 0; j < cnt; j++) {
            uint8_t q1 = optim_quantize(qmap1, 1, s1[j] / max1);
            if (signbit(qmap1[q1]) != signbit(s1[j])) q1 = (uint8_t)(s1[j] > 0.0f ? q1 + 1 : q1 - 1);
            m8[base + j] = q1;
            v8[base + j] = optim_quantize(qmap2, 0, s2[j] / max2);
        }
    }
}

void adamw8_update_f32(float *param, const float *grad, float *m, float *v, size_t n, const optim_config *cfg,
                       int64_t step, double lr) {
    const float beta1 = (float)cfg->beta1, beta2 = (float)cfg->beta2, eps = (float)cfg->eps;
    const float wd = (float)cfg->weight_decay, lr_f = (float)lr;
    const float c1 = 1.0f - powf(beta1, (float)step);
    const float c2 = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = -lr_f * c2 / c1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i];
        m[i] = m[i] * beta1 + (1.0f - beta1) * g;
        v[i] = v[i] * beta2 + (1.0f - beta2) * (g * g);
        float p = param[i] + step_size * (m[i] / (sqrtf(v[i]) + eps * c2));
        if (wd > 0.0f) p = p * (1.0f - lr_f * wd);
        param[i] = p;
    }
}
