// Dtypes of the safetensors format, their sizes and names, and conversion of float-like dtypes to fp32.
#include "core/core.h"

static const struct {
    const char *name;
    size_t size;
} DTYPES[DT_COUNT] = {
    [DT_BOOL] = {"BOOL", 1}, [DT_U8] = {"U8", 1},   [DT_I8] = {"I8", 1},     [DT_I16] = {"I16", 2},
    [DT_I32] = {"I32", 4},   [DT_I64] = {"I64", 8}, [DT_F16] = {"F16", 2},   [DT_BF16] = {"BF16", 2},
    [DT_F32] = {"F32", 4},   [DT_F64] = {"F64", 8}, [DT_F8_E4M3] = {"F8_E4M3", 1},
    [DT_F8_E5M2] = {"F8_E5M2", 1},
};

size_t dtype_size(dtype dt) { return (unsigned)dt < DT_COUNT ? DTYPES[dt].size : 0; }
const char *dtype_name(dtype dt) { return (unsigned)dt < DT_COUNT ? DTYPES[dt].name : "?"; }

int dtype_from_name(const char *name) {
    for (int i = 0; i < DT_COUNT; i++)
        if (!strcmp(DTYPES[i].name, name)) return i;
    return -1;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) { man <<= 1; exp--; }
            u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; // may carry into the exponent: correct
    return (uint16_t)h;
}

gt_status dtype_to_f32(dtype dt, const void *src, float *dst, size_t n, gt_error *err) {
    const uint8_t *s = src;
    switch (dt) {
    case DT_F32: memcpy(dst, src, n * 4); return GT_OK;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = bf16_to_f32(h); }
        return GT_OK;
    case DT_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = f16_to_f32(h); }
        return GT_OK;
    case DT_F64:
        for (size_t i = 0; i < n; i++) { double d; memcpy(&d, s + 8 * i, 8); dst[i] = (float)d; }
        return GT_OK;
    default:
        return gt_fail(err, GT_EUNSUPPORTED, "dtype %s cannot be read as a float tensor", dtype_name(dt));
    }
}
