// qmatrix: one expert weight [rows=out, cols=in] in its storage format (fp32, bf16, MXFP4, NF4); row
// dequantization for the forward, and building a qmatrix from fp32 (quantize-on-load and init-model).
#include "model/model.h"

#include <stdlib.h>

void qmatrix_dequant_rows(const qmatrix *w, int row0, int nrows, float *out) {
    CHECK(row0 >= 0 && nrows >= 0 && row0 + nrows <= w->rows);
    size_t cols = (size_t)w->cols;
    switch (w->fmt) {
    case WF_F32:
        memcpy(out, w->f32 + (size_t)row0 * cols, (size_t)nrows * cols * sizeof(float));
        return;
    case WF_BF16: {
        const uint16_t *src = w->bf16 + (size_t)row0 * cols;
        for (size_t i = 0; i < (size_t)nrows * cols; i++) out[i] = bf16_to_f32(src[i]);
        return;
    }
    case WF_MXFP4: {
        size_t bpr = cols / 2, spr = cols / MXFP4_BLOCK; // bytes and scales per row
        for (int r = 0; r < nrows; r++)
            mxfp4_dequant_row(w->blocks + (size_t)(row0 + r) * bpr, w->scales + (size_t)(row0 + r) * spr, w->cols,
                              out + (size_t)r * cols);
        return;
    }
    case WF_NF4:
        nf4_dequant(w->blocks, w->absmax, w->quant_map, w->blocksize, (int64_t)row0 * w->cols, (int64_t)nrows * w->cols,
                    out);
        return;
    }
    CHECK(!"unknown qmatrix format");
}

void *qmatrix_from_f32(qmatrix *q, wformat fmt, const float *w, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    memset(q, 0, sizeof *q);
    q->fmt = fmt;
    q->rows = rows;
    q->cols = cols;
    switch (fmt) {
    case WF_F32: {
        float *buf = xmalloc(n * sizeof(float));
        memcpy(buf, w, n * sizeof(float));
        q->f32 = buf;
        return buf;
    }
    case WF_BF16: {
        uint16_t *buf = xmalloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) buf[i] = f32_to_bf16(w[i]);
        q->bf16 = buf;
        return buf;
    }
    case WF_MXFP4: {
        CHECK(cols % MXFP4_BLOCK == 0);
        uint8_t *buf = xmalloc(n / 2 + n / MXFP4_BLOCK);
        size_t bpr = (size_t)cols / 2, spr = (size_t)cols / MXFP4_BLOCK;
        for (int r = 0; r < rows; r++)
            mxfp4_quantize_row(w + (size_t)r * cols, cols, buf + (size_t)r * bpr, buf + n / 2 + (size_t)r * spr);
        q->blocks = buf;
        q->scales = buf + n / 2;
        return buf;
    }
    case WF_NF4: {
        size_t packed = ((n + 1) / 2 + 3) & ~(size_t)3, nblocks = (n + NF4_BLOCKSIZE - 1) / NF4_BLOCKSIZE;
        uint8_t *buf = xmalloc(packed + nblocks * sizeof(float));
        float *absmax = (float *)(void *)(buf + packed);
        nf4_quantize(w, (int64_t)n, NF4_BLOCKSIZE, buf, absmax);
        q->blocks = buf;
        q->absmax = absmax;
        q->blocksize = NF4_BLOCKSIZE;
        memcpy(q->quant_map, NF4_CODE, sizeof q->quant_map);
        return buf;
    }
    }
    CHECK(!"unknown qmatrix format");
    return NULL;
}
