// model/cuda/rope.cu: rotary tables and the rotate-half rotation (model/cpu/rope.c). inv_freq and the
// YaRN attention factor come from cpu_rope_inv_freq (host, once per model); the tables per batch.
// Forward: out (T, NH, HD) = bf16 of the rotated fp32 projection x (x unchanged); backward: the fp32
// gradient rotated back in place.
#include "model/cuda/common.cuh"

__global__ void rope_tables_kernel(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, float factor,
                                   int T, int half) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * half) return;
    float f = (float)pos[i / half] * inv_freq[i % half];
    cos_t[i] = cosf(f) * factor;
    sin_t[i] = sinf(f) * factor;
}

extern "C" void cuda_rope_tables(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, float factor,
                                 int T, int half) {
    if (!T) return;
    rope_tables_kernel<<<cuda_blocks((size_t)T * half, 256), 256>>>(cos_t, sin_t, pos, inv_freq, factor, T, half);
    CUDA_LAUNCH_CHECK();
}

// One rotation for both directions: a thread rotates the pair (a, b) = (x[f], x[f + half]) of one head and
// stores it to out, rounded to bf16 in the forward, in place (out == x) in fp32 in the backward; the thread
// reads both elements before it writes them. sign +1: (a, b) -> (a c - b s, b c + a s); sign -1 applies the
// transpose (the backward).

template <typename Out>
__global__ void rope_kernel(Out *out, const float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD,
                            float sign) {
    int half = HD / 2;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * NH * half) return;
    size_t t = i / ((size_t)NH * half), h = (i / half) % NH, f = i % half;
    size_t at = (t * NH + h) * HD + f;
    float c = cos_t[t * half + f], s = sign * sin_t[t * half + f];
    float ai = x[at], bi = x[at + half];
    store_as(out + at, ai * c - bi * s);
    store_as(out + at + half, bi * c + ai * s);
}

template <typename Out>
static void rope_run(Out *out, const float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD,
                     float sign) {
    size_t n = (size_t)T * NH * (HD / 2);
    if (!n) return;
    rope_kernel<Out><<<cuda_blocks(n, 256), 256>>>(out, x, cos_t, sin_t, T, NH, HD, sign);
    CUDA_LAUNCH_CHECK();
}
extern "C" void cuda_rope_forward(uint16_t *out, const float *x, const float *cos_t, const float *sin_t, int T, int NH,
                                  int HD) {
    rope_run(out, x, cos_t, sin_t, T, NH, HD, 1.0f);
}
extern "C" void cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int NH, int HD) {
    rope_run(dx, dx, cos_t, sin_t, T, NH, HD, -1.0f);
}
