// model/cpu/rope.c: rotary position embedding, default or YaRN, rotate-half form. T tokens, NH heads,
// HD head dim, HF = HD/2 frequencies.
//
// inv_freq and the attention factor follow transformers' _compute_yarn_parameters step by step in fp32
// (pos_freqs = theta^(2i/HD) in fp32, the ramp in fp32, the correction range in double):
//   extrap = 1 / pos_freqs, interp = 1 / (factor * pos_freqs)
//   low, high = HD * ln(orig_max / (beta * 2 pi)) / (2 ln theta) for beta_fast, beta_slow;
//               floor/ceil only when truncate; then max(low, 0), min(high, HD - 1)
//   ramp_i = clamp((i - low) / (high - low), 0, 1); inv_freq = interp * ramp + extrap * (1 - ramp)
//   attention factor = 0.1 ln(factor) + 1 (1 when factor <= 1), multiplied into cos and sin.
// Positions are per document (the batch's pos); freqs = (float)pos * inv_freq in fp32.
#include <math.h>

#include "model/cpu/ops.h"

void cpu_rope_inv_freq(const model_config *cfg, float *inv_freq, float *attn_factor) {
    int dim = cfg->head_dim, half = dim / 2;
    float base = (float)cfg->rope_theta;
    if (!cfg->rope_yarn) {
        for (int i = 0; i < half; i++) inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        *attn_factor = 1.0f;
        return;
    }
    double factor = cfg->yarn_factor, theta = cfg->rope_theta;
    double low = dim * log(cfg->yarn_orig_max_pos / (cfg->yarn_beta_fast * 2 * M_PI)) / (2 * log(theta));
    double high = dim * log(cfg->yarn_orig_max_pos / (cfg->yarn_beta_slow * 2 * M_PI)) / (2 * log(theta));
    if (cfg->yarn_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0) low = 0;
    if (high > dim - 1) high = dim - 1;
    if (low == high) high += 0.001; // transformers' guard against a zero-width ramp
    for (int i = 0; i < half; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)dim);
        float extrap = 1.0f / pos_freq;
        float interp = 1.0f / ((float)factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extrap_factor = 1.0f - ramp;
        inv_freq[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
    *attn_factor = factor <= 1.0 ? 1.0f : (float)(0.1 * log(factor) + 1.0);
}

void cpu_rope_tables(const model_config *cfg, const int32_t *pos, int T, float *cos_t, float *sin_t) {
    int half = cfg->head_dim / 2;
    float inv_freq[half], factor;
    cpu_rope_inv_freq(cfg, inv_freq, &factor);
#pragma omp parallel for schedule(static) if ((size_t)T * half >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            float f = (float)pos[t] * inv_freq[i];
            cos_t[(size_t)t * half + i] = cosf(f) * factor;
            sin_t[(size_t)t * half + i] = sinf(f) * factor;
        }
    }
}

// sign = +1 rotates forward, -1 applies the transpose (the backward of a rotation).
static void rope_rotate(float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD, float sign) {
    int half = HD / 2;
#pragma omp parallel for schedule(static) if ((size_t)T * NH * HD >= CPU_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < NH; h++) {
            float *a = x + ((size_t)t * NH + h) * HD, *b = a + half;
            for (int i = 0; i < half; i++) {
                float ai = a[i], bi = b[i], si = sign * s[i];
                a[i] = ai * c[i] - bi * si;
                b[i] = bi * c[i] + ai * si;
            }
        }
    }
}

void cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD) {
    rope_rotate(x, cos_t, sin_t, T, NH, HD, 1.0f);
}

// y_a = a c - b s, y_b = b c + a s  =>  da = dy_a c + dy_b s, db = dy_b c - dy_a s.
void cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int NH, int HD) {
    rope_rotate(dx, cos_t, sin_t, T, NH, HD, -1.0f);
}
