// MXFP4 and NF4 against the libraries (fixtures from tests/ref/make_quant_fixture.py):
//   MXFP4: our quantizer reproduces the packing (triton_kernels' rule, checked there against
//          transformers' convert_moe_packed_tensors) bit for bit; our dequantization equals transformers'
//          convert_moe_packed_tensors output exactly (both are LUT value times a power of two: exact in fp32),
//          including its [E, in, out] transposition.
//   NF4:   the fixture is bitsandbytes' own quantize_4bit output (Linear4bit state-dict keys). Reading it
//          (nested absmax included) and dequantizing equals bitsandbytes' dequantization exactly (the same
//          fp32 products in the same order); our quantizer reproduces its packed codes and absmax exactly.
// Plus malformed bitsandbytes tensors: each must be a clear error naming the tensor.
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"

static const st_tensor *need(const safetensors *st, const char *name) {
    const st_tensor *t = safetensors_find(st, name);
    if (!t) {
        printf("FAIL: fixture tensor %s missing (rerun tests/ref/make_quant_fixture.py)\n", name);
        exit(1);
    }
    return t;
}

static const float *f32(const st_tensor *t) {
    CHECK(t->dtype == DT_F32);
    return (const float *)(const void *)t->data; // the safetensors writer aligns tensors to their dtype
}

// Bitwise comparison of n floats; prints the worst (first) mismatch.
static void expect_same(const char *what, const float *got, const float *want, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], 4) != 0 && !(got[i] == 0 && want[i] == 0)) {
            if (!bad) first = i;
            bad++;
        }
    EXPECT(bad == 0, "%s: %zu of %zu values differ; first at %zu: got %.9g want %.9g", what, bad, n, first,
           bad ? got[first] : 0, bad ? want[first] : 0);
}

static void test_mxfp4(void) {
    safetensors st;
    gt_error err;
    CHECK(safetensors_open(&st, "tests/fixtures/quant/mxfp4.safetensors", &err) == GT_OK);
    const st_tensor *src = need(&st, "src"), *blocks = need(&st, "blocks"), *scales = need(&st, "scales"),
                    *hf = need(&st, "hf_dequant");
    int E = (int)src->shape[0], R = (int)src->shape[1], C = (int)src->shape[2];
    uint8_t *b = xmalloc((size_t)C / 2), *s = xmalloc((size_t)C / 32);
    float *row = xmalloc((size_t)C * sizeof(float)), *want = xmalloc((size_t)C * sizeof(float));
    for (int e = 0; e < E; e++)
        for (int r = 0; r < R; r++) {
            size_t off = (size_t)(e * R + r) * C;
            mxfp4_quantize_row(f32(src) + off, C, b, s);
            EXPECT(!memcmp(b, blocks->data + off / 2, (size_t)C / 2), "mxfp4 blocks of expert %d row %d differ", e, r);
            EXPECT(!memcmp(s, scales->data + off / 32, (size_t)C / 32), "mxfp4 scales of expert %d row %d differ", e, r);
            // transformers' output is [E, in, out]: column r of expert e.
            qmatrix q = {.fmt = WF_MXFP4, .rows = R, .cols = C, .blocks = blocks->data + (size_t)e * R * C / 2,
                         .scales = scales->data + (size_t)e * R * C / 32};
            qmatrix_dequant_rows(&q, r, 1, row);
            for (int c = 0; c < C; c++) want[c] = f32(hf)[((size_t)e * C + c) * R + r];
            char what[64];
            snprintf(what, sizeof what, "mxfp4 dequant expert %d row %d", e, r);
            expect_same(what, row, want, (size_t)C);
        }
    free(b), free(s), free(row), free(want);
    safetensors_close(&st);
}

static void test_nf4(void) {
    safetensors st;
    gt_error err;
    CHECK(safetensors_open(&st, "tests/fixtures/quant/nf4.safetensors", &err) == GT_OK);
    static const struct {
        const char *name;
        int rows, cols, nested;
    } CASES[] = {{"small", 3, 21, 0}, {"mid", 5, 70, 1}, {"big", 129, 130, 1}};
    char key[128];
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        const char *nm = CASES[k].name;
        int rows = CASES[k].rows, cols = CASES[k].cols;
        size_t n = (size_t)rows * cols, nb = (n + 63) / 64;
        snprintf(key, sizeof key, "%s.weight", nm);
        qmatrix q;
        float *absmax;
        gt_status s = nf4_tensor_load(&st, key, rows, cols, &q, &absmax, &err);
        EXPECT(s == GT_OK, "nf4_tensor_load %s: %s", key, err.msg);
        if (s != GT_OK) continue;
        EXPECT(nf4_tensor_present(&st, key), "%s: .absmax not seen", key);
        EXPECT(!memcmp(q.quant_map, NF4_CODE, sizeof NF4_CODE), "%s: the file's quant_map is not NF4_CODE", key);
        // Dequantize all rows, then rows [1, rows) again (a block-unaligned start).
        float *out = xmalloc(n * sizeof(float));
        qmatrix_dequant_rows(&q, 0, rows, out);
        snprintf(key, sizeof key, "%s.dequant", nm);
        const float *want = f32(need(&st, key));
        expect_same(key, out, want, n);
        qmatrix_dequant_rows(&q, 1, rows - 1, out);
        expect_same("nf4 dequant from row 1", out, want + cols, n - (size_t)cols);
        // Our quantizer against bitsandbytes': packed codes and (un-nested) absmax, exactly.
        uint8_t *packed = xmalloc((n + 1) / 2);
        float *am = xmalloc(nb * sizeof(float));
        snprintf(key, sizeof key, "%s.src", nm);
        nf4_quantize(f32(need(&st, key)), (int64_t)n, 64, packed, am);
        EXPECT(!memcmp(packed, q.blocks, (n + 1) / 2), "%s: nf4_quantize codes differ from bitsandbytes'", nm);
        snprintf(key, sizeof key, "%s.absmax_plain", nm);
        const float *am_bnb = f32(need(&st, key));
        expect_same("nf4_quantize absmax", am, am_bnb, nb);
        if (CASES[k].nested) {
            // The dynamic map: torch.linspace rounds some entries one ulp differently from our fp32 formula
            // (42 of 256 in bitsandbytes 0.50; at most 2^-22 relative); the map travels in the file, so readers
            // never depend on it.
            snprintf(key, sizeof key, "%s.weight.nested_quant_map", nm);
            const float *bmap = f32(need(&st, key));
            float map[256], worst = 0;
            nf4_dynamic_map(map);
            for (int i = 0; i < 256; i++) worst = fmaxf(worst, fabsf(map[i] - bmap[i]) / fmaxf(fabsf(bmap[i]), 1e-30f));
            EXPECT(worst <= 2.4e-7f, "nf4_dynamic_map differs from bitsandbytes' by %g relative (> 2^-22)", worst);
            // Our double quantization is as accurate as bitsandbytes': max error of the decoded absmax no worse
            // than theirs plus one code step at the rare ties the two break differently (quantize_blockwise's
            // C kernel vs our nearest code).
            uint8_t *qa = xmalloc(nb);
            float *nested = xmalloc(((nb + 255) / 256) * sizeof(float)), off, *dec = xmalloc(nb * sizeof(float));
            nf4_absmax_quantize(am_bnb, (int64_t)nb, bmap, qa, nested, &off);
            nf4_absmax_dequant(qa, nested, bmap, off, (int64_t)nb, dec);
            float ours = 0, theirs = 0;
            for (size_t i = 0; i < nb; i++) {
                ours = fmaxf(ours, fabsf(dec[i] - am_bnb[i]));
                theirs = fmaxf(theirs, fabsf(absmax[i] - am_bnb[i]));
            }
            EXPECT(ours <= theirs * 1.01f + 1e-7f, "%s: nested absmax error %g, bitsandbytes' %g", nm, ours, theirs);
            free(qa), free(nested), free(dec);
        }
        free(packed), free(am), free(out), free(absmax);
    }
    safetensors_close(&st);
}

// Malformed bitsandbytes weights, written next to a copy of the good "mid" tensors.
static void test_nf4_errors(void) {
    safetensors good;
    gt_error err;
    CHECK(safetensors_open(&good, "tests/fixtures/quant/nf4.safetensors", &err) == GT_OK);
    char *tmpdir = test_tmpdir("test_quant");
    char *path = xasprintf("%s/bad_%d.safetensors", tmpdir, (int)getpid());
    static const char *const PARTS[] = {"", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                        ".quant_state.bitsandbytes__nf4"};
    enum { NPARTS = 6 };
    static const struct {
        const char *what, *json, *expect;
        int drop, rows;
    } CASES[] = {
        {"wrong logical shape", NULL, "has 175 elements, expected 210", -1, 6},
        {"missing absmax", NULL, "mid.weight.absmax is missing", 1, 5},
        {"fp4 quant_type", "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"shape\": [5, 70]}", "fp4", -1, 5},
        {"not JSON", "{\"quant_type\": ", "not a JSON object", -1, 5},
        {"bad blocksize", "{\"quant_type\": \"nf4\", \"blocksize\": 63, \"shape\": [5, 70]}", "blocksize 63", -1, 5},
        {"shape mismatch", "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [7, 50]}", "shape [7, 50]", -1, 5},
        {"blocksize vs absmax count", "{\"quant_type\": \"nf4\", \"blocksize\": 32, \"shape\": [5, 70], \"nested_blocksize\": 256, \"nested_offset\": 0.5}",
         "has 6 elements, expected 11", -1, 5},
        {"no nested_offset", "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [5, 70], \"nested_blocksize\": 256}",
         "nested_offset", -1, 5},
    };
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        st_write_tensor w[NPARTS];
        char names[NPARTS][96];
        int n = 0;
        for (int p = 0; p < NPARTS; p++) {
            if (p == CASES[c].drop) continue;
            snprintf(names[n], sizeof names[n], "mid.weight%s", PARTS[p]);
            const st_tensor *t = need(&good, names[n]);
            w[n] = (st_write_tensor){.name = names[n], .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
            memcpy(w[n].shape, t->shape, sizeof t->shape);
            if (p == NPARTS - 1 && CASES[c].json) {
                w[n].data = CASES[c].json;
                w[n].ndim = 1;
                w[n].shape[0] = (int64_t)strlen(CASES[c].json);
            }
            n++;
        }
        CHECK(safetensors_write(path, w, n, NULL, 0, &err) == GT_OK);
        safetensors st;
        CHECK(safetensors_open(&st, path, &err) == GT_OK);
        qmatrix q;
        float *absmax = NULL;
        gt_status s = nf4_tensor_load(&st, "mid.weight", CASES[c].rows, 70, &q, &absmax, &err);
        EXPECT(s != GT_OK && strstr(err.msg, CASES[c].expect) && strstr(err.msg, "mid.weight"),
               "%s: expected an error with '%s', got %s: %s", CASES[c].what, CASES[c].expect, gt_status_name(s),
               s ? err.msg : "(ok)");
        EXPECT(absmax == NULL, "%s: absmax returned on failure", CASES[c].what);
        safetensors_close(&st);
    }
    unlink(path);
    free(path);
    free(tmpdir);
    safetensors_close(&good);
}

int main(void) {
    test_mxfp4();
    test_nf4();
    test_nf4_errors();
    return test_finish("test_quant");
}
