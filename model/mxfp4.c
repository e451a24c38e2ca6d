// MXFP4 (OCP microscaling FP4, as the openai/gpt-oss checkpoint stores its experts): quantize and dequantize
// one row of 32-element blocks.
//
// Block b of a row: blocks[16*b + j] holds element 32b+2j in its low nibble and 32b+2j+1 in its high nibble;
// scales[b] is an E8M0 exponent, value = MXFP4_LUT[code] * 2^(scales[b] - 127). Codes 0-7 are the
// non-negative E2M1 values, 8-15 their negatives.
//
// The quantizer reproduces OpenAI's triton_kernels downcast_to_mxfp (ROUND_UP scale mode), which
// transformers' quantize_to_mxfp4 calls: dequant scale = amax / 6 in fp32, rounded UP to a power of two by
// adding 0x007FFFFF to its bits and masking the exponent; each value times 1/scale is then rounded to the
// nearest E2M1 value with ties away from zero (their bit trick adds one half-ulp and truncates) and
// saturated at 6. tests/ref/make_quant_fixture.py checks a bit-level transcription of that rule against
// transformers' convert_moe_packed_tensors; tests/test_quant.c checks this file against the fixture.
#include "model/model.h"

#include <math.h>

const float MXFP4_LUT[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// |v| (already divided by the block scale) -> E2M1 magnitude code 0..7. The thresholds are the midpoints
// between neighbouring values; reaching one rounds up (ties away from zero), as the triton kernel does.
static inline uint8_t e2m1_magnitude(float a) {
    static const float MID[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    uint8_t c = 0;
    while (c < 7 && a >= MID[c]) c++;
    return c;
}

void mxfp4_quantize_row(const float *x, int cols, uint8_t *blocks, uint8_t *scales) {
    CHECK(cols % MXFP4_BLOCK == 0);
    for (int b = 0; b < cols / MXFP4_BLOCK; b++) {
        const float *v = x + (size_t)b * MXFP4_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < MXFP4_BLOCK; i++) {
            float a = v[i] < 0 ? -v[i] : v[i];
            if (a > amax) amax = a;
        }
        uint32_t e = (f32_bits(amax / 6.0f) + 0x007FFFFFu) & 0x7F800000u; // 2^ceil(log2(amax/6)), fp32 bits
        float scale = f32_from_bits(e);
        float inv = e == 0 ? 0.0f : 1.0f / scale; // exact: a power of two
        scales[b] = (uint8_t)(e >> 23);
        uint8_t *out = blocks + (size_t)b * (MXFP4_BLOCK / 2);
        for (int j = 0; j < MXFP4_BLOCK / 2; j++) {
            uint8_t code[2];
            for (int k = 0; k < 2; k++) {
                float q = v[2 * j + k] * inv;
                uint8_t mag = e2m1_magnitude(q < 0 ? -q : q);
                code[k] = (uint8_t)((signbit(q) ? 8 : 0) | mag);
            }
            out[j] = (uint8_t)(code[0] | (code[1] << 4));
        }
    }
}

void mxfp4_dequant_row(const uint8_t *blocks, const uint8_t *scales, int cols, float *out) {
    for (int b = 0; b < cols / MXFP4_BLOCK; b++) {
        // 2^(s-127) built from its bits; s = 0 is 2^-127, a subnormal, which the bit pattern cannot hold.
        float scale = scales[b] ? f32_from_bits((uint32_t)scales[b] << 23) : 0x1p-127f;
        const uint8_t *in = blocks + (size_t)b * (MXFP4_BLOCK / 2);
        float *o = out + (size_t)b * MXFP4_BLOCK;
        for (int j = 0; j < MXFP4_BLOCK / 2; j++) {
            o[2 * j] = MXFP4_LUT[in[j] & 15] * scale;
            o[2 * j + 1] = MXFP4_LUT[in[j] >> 4] * scale;
        }
    }
}
