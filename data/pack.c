// Packing documents into rows of at most max_seq_len tokens, the row layout the model reads, and the
// deterministic shuffles (document order, epoch order).
//
// Invariants:
//   - every placed document is whole, or cut to its first max_seq_len tokens (overlong = truncate);
//     a document that is longer under overlong = drop, or that keeps no trained target after the cut, is
//     left out and counted in `dropped`.
//   - packing is best fit, longest first (ties in the seeded shuffle order): each document goes to the
//     row with the least room that still holds it, else a new row. A segment tree over "rows with c free
//     tokens" finds that row in O(log max_seq_len).
//   - the result depends only on (documents, doc_idx, max_seq_len, packing, overlong, shuffle, seed);
//     without shuffle, documents keep their order (with packing, ties of length keep it).
#include "data/data.h"

#include <stdlib.h>

// splitmix64: small, fast, and fully determined by the seed.
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void data_shuffle(uint32_t *a, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(&s) % i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void data_epoch_order(const data_options *o, size_t n_rows, uint64_t epoch, uint32_t *perm) {
    for (size_t i = 0; i < n_rows; i++) perm[i] = (uint32_t)i;
    if (!o->shuffle) return;
    uint64_t s = o->seed ^ 0x5851f42d4c957f2dull;
    uint64_t mix = rng_next(&s) ^ (epoch * 0x2545f4914f6cdd1dull);
    data_shuffle(perm, n_rows, mix);
}

// ---------------------------------------------------------------------------------------------------
// Best fit: rows bucketed by free room; tree[] counts rows per room value over [0, cap].
typedef struct fit_tree {
    int size;       // leaves (a power of two > cap)
    uint32_t *cnt;  // (2 * size) rows in the subtree
    int64_t *head;  // (cap + 1) a row with that room, -1 if none
    int64_t *next;  // (rows) the next row in the same bucket
} fit_tree;

static void fit_add(fit_tree *f, int room, int64_t row, int delta) {
    if (delta > 0) {
        f->next[row] = f->head[room];
        f->head[room] = row;
    } else {
        CHECK(f->head[room] == row); // only bucket heads are ever taken
        f->head[room] = f->next[row];
    }
    for (int i = room + f->size; i >= 1; i /= 2) f->cnt[i] = (uint32_t)((int64_t)f->cnt[i] + delta);
}

// The smallest room >= need that some row has, or -1.
static int fit_find(const fit_tree *f, int need) {
    int lo = need + f->size;
    // Walk up from the leaf `need`, looking at right siblings, then down to the leftmost nonzero leaf.
    if (f->cnt[lo]) return need;
    int i = lo;
    while (i > 1) {
        if (!(i & 1) && f->cnt[i + 1]) {
            i = i + 1;
            while (i < f->size) i = f->cnt[2 * i] ? 2 * i : 2 * i + 1;
            return i - f->size;
        }
        i /= 2;
    }
    return -1;
}

static int cmp_len_desc(const void *a, const void *b) {
    const uint64_t *x = a, *y = b; // (len << 32 | order), len descending, order ascending
    uint64_t lx = *x >> 32, ly = *y >> 32;
    if (lx != ly) return lx < ly ? 1 : -1;
    return (*x & 0xffffffffu) < (*y & 0xffffffffu) ? -1 : (*x & 0xffffffffu) > (*y & 0xffffffffu);
}

gt_status data_pack_build(const data_docs *docs, const uint32_t *doc_idx, size_t n, const data_options *o,
                          data_pack *out, gt_error *err) {
    memset(out, 0, sizeof *out);
    int max_seq_len = o->max_seq_len, packing = o->packing;
    if (max_seq_len < 2) return gt_fail(err, GT_EINVAL, "max_seq_len %d is too small (at least 2)", max_seq_len);
    if (n > UINT32_MAX) return gt_fail(err, GT_EUNSUPPORTED, "%zu documents: at most 2^32-1", n);
    uint32_t *order = xmalloc((n ? n : 1) * sizeof *order);
    for (size_t i = 0; i < n; i++) order[i] = doc_idx[i];
    if (o->shuffle) data_shuffle(order, n, o->seed);

    // Keep, cut or drop each document; key = (length << 32 | position in the shuffled order).
    uint64_t *items = xmalloc((n ? n : 1) * sizeof *items);
    size_t n_items = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t d = order[i];
        CHECK(d < docs->n_docs);
        uint64_t len = docs->offsets[d + 1] - docs->offsets[d];
        if (len > (uint64_t)max_seq_len) {
            if (o->overlong == DATA_OVERLONG_DROP) {
                out->dropped++;
                continue;
            }
            len = (uint64_t)max_seq_len;
            const uint8_t *m = docs->mask + docs->offsets[d];
            int any = 0;
            for (uint64_t j = 1; j < len && !any; j++) any = m[j];
            if (!any) { // the cut removed every trained token
                out->dropped++;
                continue;
            }
            out->truncated++;
        }
        items[n_items++] = len << 32 | i;
    }
    if (packing) qsort(items, n_items, sizeof *items, cmp_len_desc);

    uint32_t *item_row = xmalloc((n_items ? n_items : 1) * sizeof *item_row);
    fit_tree f = {0};
    if (packing) {
        f.size = 1;
        while (f.size <= max_seq_len) f.size *= 2;
        f.cnt = xcalloc(2 * (size_t)f.size, sizeof *f.cnt);
        f.head = xmalloc(((size_t)max_seq_len + 1) * sizeof *f.head);
        for (int c = 0; c <= max_seq_len; c++) f.head[c] = -1;
    }
    size_t n_rows = 0, cap_rows = 0;
    uint32_t *room = NULL;
    for (size_t k = 0; k < n_items; k++) {
        int len = (int)(items[k] >> 32);
        int64_t row = -1;
        if (packing) {
            int c = fit_find(&f, len);
            if (c >= 0) {
                row = f.head[c];
                fit_add(&f, c, row, -1);
            }
        }
        if (row < 0) {
            if (n_rows == cap_rows) {
                cap_rows = cap_rows ? cap_rows * 2 : 64;
                room = xrealloc(room, cap_rows * sizeof *room);
                if (packing) f.next = xrealloc(f.next, cap_rows * sizeof *f.next);
            }
            row = (int64_t)n_rows++;
            room[row] = (uint32_t)max_seq_len;
        }
        room[row] -= (uint32_t)len;
        if (packing && room[row] > 0) fit_add(&f, (int)room[row], row, +1);
        item_row[k] = (uint32_t)row;
    }

    // Group items by row (stable: longest first within a row).
    out->n_rows = n_rows;
    out->row_start = xcalloc(n_rows + 1, sizeof *out->row_start);
    out->row_len = xcalloc(n_rows ? n_rows : 1, sizeof *out->row_len);
    out->item_doc = xmalloc((n_items ? n_items : 1) * sizeof *out->item_doc);
    out->item_len = xmalloc((n_items ? n_items : 1) * sizeof *out->item_len);
    for (size_t k = 0; k < n_items; k++) out->row_start[item_row[k] + 1]++;
    for (size_t r = 0; r < n_rows; r++) out->row_start[r + 1] += out->row_start[r];
    uint64_t *fill = xmalloc((n_rows ? n_rows : 1) * sizeof *fill);
    for (size_t r = 0; r < n_rows; r++) fill[r] = out->row_start[r];
    for (size_t k = 0; k < n_items; k++) {
        uint32_t r = item_row[k], d = order[items[k] & 0xffffffffu], len = (uint32_t)(items[k] >> 32);
        uint64_t at = fill[r]++;
        out->item_doc[at] = d;
        out->item_len[at] = len;
        out->row_len[r] += len;
        out->tokens += len;
        const uint8_t *m = docs->mask + docs->offsets[d];
        for (uint32_t j = 1; j < len; j++) out->trained += m[j];
    }
    for (size_t r = 0; r < n_rows; r++)
        if (out->row_len[r] > out->max_row_len) out->max_row_len = out->row_len[r];
    out->n_docs = n_items;

    free(fill);
    free(room);
    free(f.cnt);
    free(f.head);
    free(f.next);
    free(item_row);
    free(items);
    free(order);
    return GT_OK;
}

void data_pack_free(data_pack *p) {
    free(p->row_start);
    free(p->item_doc);
    free(p->item_len);
    free(p->row_len);
    memset(p, 0, sizeof *p);
}

int data_pack_row(const data_pack *p, const data_docs *docs, size_t r, int T, int32_t pad_id, int32_t *ids,
                  int32_t *pos, int32_t *doc, int32_t *targets) {
    CHECK(r < p->n_rows && (uint64_t)T >= p->row_len[r]);
    int t = 0, k = 0;
    for (uint64_t it = p->row_start[r]; it < p->row_start[r + 1]; it++, k++) {
        const uint32_t *tok = docs->tokens + docs->offsets[p->item_doc[it]];
        const uint8_t *m = docs->mask + docs->offsets[p->item_doc[it]];
        int len = (int)p->item_len[it];
        for (int j = 0; j < len; j++, t++) {
            ids[t] = (int32_t)tok[j];
            pos[t] = j;
            doc[t] = k;
            targets[t] = j + 1 < len && m[j + 1] ? (int32_t)tok[j + 1] : -1;
        }
    }
    int real = t;
    for (int j = 0; t < T; t++, j++) {
        ids[t] = pad_id;
        pos[t] = j;
        doc[t] = k;
        targets[t] = -1;
    }
    return real;
}
