// NF4 with bitsandbytes semantics: blockwise quantize/dequantize, the nested (double) quantization of the
// absmax, and reading a bitsandbytes Linear4bit weight out of a safetensors file.
//
// Layout (bitsandbytes functional.py quantize_4bit / dequantize_4bit, QuantState.from_dict, checked against
// bitsandbytes 0.50 by tests/ref/make_quant_fixture.py): the tensor is flattened row-major and cut into
// blocks of `blocksize` elements, the last one possibly partial; absmax[b] = max |x| over block b; byte k
// holds element 2k in its HIGH nibble and 2k+1 in its LOW nibble (an odd count pads the code of 0.0).
// w = quant_map[code] * absmax[b]. Nested: absmax is U8 codes of the 256-entry dynamic map, blocks of 256
// with one fp32 nested_absmax each, plus nested_offset (the mean that was subtracted):
// absmax[i] = nested_quant_map[q[i]] * nested_absmax[i / 256] + nested_offset, in fp32 in that order.
//
// The quantizer follows bitsandbytes' default (torch) kernel exactly: full blocks scale by x * (1/absmax),
// the partial last block by x / absmax, clamp to [-1, 1], then pick the first code whose upper midpoint
// is >= the value (torch.bucketize, right=False: a tie goes to the lower code).
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

const float NF4_CODE[16] = {-1.0f,         -0.696192801f, -0.525073051f, -0.394917488f,
                            -0.284441382f, -0.18477343f,  -0.0910500363f, 0.0f,
                            0.0795802996f, 0.160930201f,  0.246112302f,  0.337915242f,
                            0.440709829f,  0.562617004f,  0.722956836f,  1.0f};

// Index of the code nearest to v in a sorted map of n entries, bucketize-style: ties to the lower code.
static inline int nearest_code(const float *mid, int n, float v) {
    int lo = 0, hi = n - 1; // first i with v <= mid[i], else n-1
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (v <= mid[m]) hi = m;
        else lo = m + 1;
    }
    return lo;
}

static void midpoints(const float *code, int n, float *mid) {
    for (int i = 0; i + 1 < n; i++) mid[i] = (code[i] + code[i + 1]) / 2.0f;
    mid[n - 1] = INFINITY;
}

// Scales block b's values as bitsandbytes does (see header) into s (len).
static void block_scale(const float *x, int64_t len, int full_block, float amax, float *s) {
    float am = amax > 1e-38f ? amax : 1e-38f;
    float inv = 1.0f / am;
    for (int64_t i = 0; i < len; i++) {
        float v = full_block ? x[i] * inv : x[i] / am;
        s[i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    }
}

static float block_amax(const float *x, int64_t len) {
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        if (a > amax) amax = a;
    }
    return amax;
}

void nf4_quantize(const float *x, int64_t n, int blocksize, uint8_t *packed, float *absmax) {
    CHECK(blocksize > 0 && blocksize % 2 == 0);
    float mid[16], *s = xmalloc((size_t)blocksize * sizeof(float));
    midpoints(NF4_CODE, 16, mid);
    memset(packed, 0, (size_t)((n + 1) / 2));
    for (int64_t b = 0, start = 0; start < n; b++, start += blocksize) {
        int64_t len = n - start < blocksize ? n - start : blocksize;
        absmax[b] = block_amax(x + start, len);
        block_scale(x + start, len, len == blocksize, absmax[b], s);
        for (int64_t i = 0; i < len; i++) {
            int64_t k = start + i;
            uint8_t c = (uint8_t)nearest_code(mid, 16, s[i]);
            packed[k / 2] |= (uint8_t)(k % 2 == 0 ? c << 4 : c);
        }
    }
    if (n % 2) packed[n / 2] |= (uint8_t)nearest_code(mid, 16, 0.0f); // bnb pads with a 0.0 value, not code 0
    free(s);
}

void nf4_dequant(const uint8_t *packed, const float *absmax, const float quant_map[16], int blocksize,
                 int64_t start, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) {
        int64_t k = start + i;
        uint8_t byte = packed[k / 2];
        int code = k % 2 == 0 ? byte >> 4 : byte & 15;
        out[i] = quant_map[code] * absmax[k / blocksize];
    }
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for i = 0..6, the 2^i
// midpoints of torch.linspace(0.1, 1, 2^i + 1) (fp32, torch's two-sided formula) times 10^(i-6), both
// signs; then 0 and 1; sorted. 7 * 2 * (2^7 - 1) / 7 + 2 = 256 entries.
void nf4_dynamic_map(float map[256]) {
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int steps = (1 << i) + 1;
        float start = 0.1f, end = 1.0f, step = (end - start) / (float)(steps - 1);
        float b[65];
        for (int k = 0; k < steps; k++)
            b[k] = k < steps / 2 ? start + step * (float)k : end - step * (float)(steps - k - 1);
        float pw = (float)pow(10.0, i - 6);
        for (int k = 0; k + 1 < steps; k++) {
            float mean = (b[k] + b[k + 1]) / 2.0f;
            map[n++] = pw * mean;
            map[n++] = -pw * mean;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    CHECK(n == 256);
    for (int i = 1; i < 256; i++) // insertion sort: 256 entries, once
        for (int j = i; j > 0 && map[j - 1] > map[j]; j--) {
            float t = map[j];
            map[j] = map[j - 1];
            map[j - 1] = t;
        }
}

void nf4_absmax_quantize(const float *absmax, int64_t n, const float map[256], uint8_t *q, float *nested,
                         float *offset) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += absmax[i];
    *offset = n > 0 ? (float)(sum / (double)n) : 0.0f;
    float mid[256], s[NF4_NESTED_BLOCKSIZE], centred[NF4_NESTED_BLOCKSIZE];
    midpoints(map, 256, mid);
    for (int64_t b = 0, start = 0; start < n; b++, start += NF4_NESTED_BLOCKSIZE) {
        int64_t len = n - start < NF4_NESTED_BLOCKSIZE ? n - start : NF4_NESTED_BLOCKSIZE;
        for (int64_t i = 0; i < len; i++) centred[i] = absmax[start + i] - *offset;
        nested[b] = block_amax(centred, len);
        block_scale(centred, len, len == NF4_NESTED_BLOCKSIZE, nested[b], s);
        for (int64_t i = 0; i < len; i++) q[start + i] = (uint8_t)nearest_code(mid, 256, s[i]);
    }
}

void nf4_absmax_dequant(const uint8_t *q, const float *nested, const float map[256], float offset, int64_t n,
                        float *absmax) {
    for (int64_t i = 0; i < n; i++) absmax[i] = map[q[i]] * nested[i / NF4_NESTED_BLOCKSIZE] + offset;
}

// ---------------------------------------------------------------------------------------------------
// Reading a Linear4bit weight.
static const char *file_of(const safetensors *st, const st_tensor *t) { return st->files[t->file].path; }

// NAME+suffix with the expected dtype and element count (numel < 0: any).
static gt_status find_part(const safetensors *st, const char *name, const char *suffix, dtype dt, int64_t numel,
                           const st_tensor **out, gt_error *err) {
    char *full = xasprintf("%s%s", name, suffix);
    const st_tensor *t = safetensors_find(st, full);
    gt_status s = GT_OK;
    if (!t)
        s = gt_fail(err, GT_ENOTFOUND, "%s: tensor %s is missing (a bitsandbytes 4-bit weight needs it)",
                    st->n_files > 0 ? st->files[0].path : "?", full);
    else if (t->dtype != dt)
        s = gt_fail(err, GT_EFORMAT, "%s: tensor %s has dtype %s, expected %s", file_of(st, t), full,
                    dtype_name(t->dtype), dtype_name(dt));
    else if (numel >= 0 && t->numel != numel)
        s = gt_fail(err, GT_EFORMAT, "%s: tensor %s has %lld elements, expected %lld", file_of(st, t), full,
                    (long long)t->numel, (long long)numel);
    free(full);
    *out = t;
    return s;
}

int nf4_tensor_present(const safetensors *st, const char *name) {
    char *full = xasprintf("%s.absmax", name);
    int yes = safetensors_find(st, full) != NULL;
    free(full);
    return yes;
}

static gt_status json_field_int(json_t *o, const char *key, const char *what, int64_t *out, gt_error *err) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return gt_fail(err, GT_EFORMAT, "%s: quant_state '%s' is missing or not an integer", what, key);
    *out = json_integer_value(v);
    return GT_OK;
}

gt_status nf4_tensor_load(const safetensors *st, const char *name, int rows, int cols, qmatrix *q,
                          float **absmax_owned, gt_error *err) {
    *absmax_owned = NULL;
    const st_tensor *w, *am, *qm, *qs;
    int64_t n = (int64_t)rows * cols;
    gt_status s;
    if ((s = find_part(st, name, "", DT_U8, (n + 1) / 2, &w, err)) != GT_OK) return s;
    if ((s = find_part(st, name, ".quant_state.bitsandbytes__nf4", DT_U8, -1, &qs, err)) != GT_OK) {
        if (s == GT_ENOTFOUND) {
            char *fp4 = xasprintf("%s.quant_state.bitsandbytes__fp4", name);
            int is_fp4 = safetensors_find(st, fp4) != NULL;
            free(fp4);
            if (is_fp4)
                return gt_fail(err, GT_EUNSUPPORTED, "%s: %s is bitsandbytes FP4; gptoss reads NF4 only",
                               file_of(st, w), name);
        }
        return s;
    }
    char *what = xasprintf("%s: %s", file_of(st, qs), name);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)qs->data, qs->nbytes, 0, &jerr);
    if (!j || !json_is_object(j)) {
        s = gt_fail(err, GT_EFORMAT, "%s.quant_state.bitsandbytes__nf4: not a JSON object (%s)", what,
                    j ? "wrong type" : jerr.text);
        json_decref(j);
        free(what);
        return s;
    }
    int64_t blocksize = 0, nested_bs = 0, dim0 = 0, dim1 = 0;
    double offset = 0.0;
    const char *qt = json_string_value(json_object_get(j, "quant_type"));
    json_t *shape = json_object_get(j, "shape");
    float *absmax = NULL;
    char *nested_name = xasprintf("%s.nested_absmax", name);
    int nested = safetensors_find(st, nested_name) != NULL;
    free(nested_name);
    if (!qt || strcmp(qt, "nf4") != 0) {
        s = gt_fail(err, GT_EUNSUPPORTED, "%s: quant_type %s is not supported (nf4 only)", what, qt ? qt : "(missing)");
        goto out;
    }
    if ((s = json_field_int(j, "blocksize", what, &blocksize, err)) != GT_OK) goto out;
    if (blocksize <= 0 || blocksize % 2 != 0 || blocksize > 4096) {
        s = gt_fail(err, GT_EFORMAT, "%s: quant_state blocksize %lld is not one of bitsandbytes' (32..4096)", what,
                    (long long)blocksize);
        goto out;
    }
    if (!json_is_array(shape) || json_array_size(shape) != 2 || !json_is_integer(json_array_get(shape, 0)) ||
        !json_is_integer(json_array_get(shape, 1))) {
        s = gt_fail(err, GT_EFORMAT, "%s: quant_state shape must be [out, in]", what);
        goto out;
    }
    dim0 = json_integer_value(json_array_get(shape, 0));
    dim1 = json_integer_value(json_array_get(shape, 1));
    if (dim0 != rows || dim1 != cols) {
        s = gt_fail(err, GT_EFORMAT, "%s: quant_state shape [%lld, %lld], expected [%d, %d] from config.json", what,
                    (long long)dim0, (long long)dim1, rows, cols);
        goto out;
    }
    int64_t nblocks = (n + blocksize - 1) / blocksize;
    if ((s = find_part(st, name, ".quant_map", DT_F32, 16, &qm, err)) != GT_OK) goto out;
    if ((s = find_part(st, name, ".absmax", nested ? DT_U8 : DT_F32, nblocks, &am, err)) != GT_OK) goto out;
    absmax = xmalloc((size_t)nblocks * sizeof(float));
    if (nested) {
        const st_tensor *na, *nm;
        if ((s = json_field_int(j, "nested_blocksize", what, &nested_bs, err)) != GT_OK) goto out;
        json_t *ov = json_object_get(j, "nested_offset");
        if (!json_is_number(ov)) {
            s = gt_fail(err, GT_EFORMAT, "%s: quant_state nested_offset is missing or not a number", what);
            goto out;
        }
        offset = json_number_value(ov);
        if (nested_bs != NF4_NESTED_BLOCKSIZE) {
            s = gt_fail(err, GT_EUNSUPPORTED, "%s: nested_blocksize %lld (bitsandbytes writes %d)", what,
                        (long long)nested_bs, NF4_NESTED_BLOCKSIZE);
            goto out;
        }
        int64_t n2 = (nblocks + nested_bs - 1) / nested_bs;
        if ((s = find_part(st, name, ".nested_absmax", DT_F32, n2, &na, err)) != GT_OK) goto out;
        if ((s = find_part(st, name, ".nested_quant_map", DT_F32, 256, &nm, err)) != GT_OK) goto out;
        float map[256], *nab = xmalloc((size_t)n2 * sizeof(float));
        memcpy(map, nm->data, sizeof map);
        memcpy(nab, na->data, (size_t)n2 * sizeof(float));
        nf4_absmax_dequant(am->data, nab, map, (float)offset, nblocks, absmax);
        free(nab);
    } else {
        memcpy(absmax, am->data, (size_t)nblocks * sizeof(float));
    }
    memset(q, 0, sizeof *q);
    q->fmt = WF_NF4;
    q->rows = rows;
    q->cols = cols;
    q->blocks = w->data;
    q->absmax = absmax;
    q->blocksize = (int)blocksize;
    memcpy(q->quant_map, qm->data, sizeof q->quant_map);
    *absmax_owned = absmax;
    absmax = NULL;
out:
    free(absmax);
    json_decref(j);
    free(what);
    return s;
}
