// The data pipeline end to end: token cache or (read rows -> render -> tokenize -> mask), then the
// train/validation split and packing.
//
// Invariants: the documents are the same whether they come from the cache or from the files (the cache
// key covers everything that changes them); the split and the packing depend only on the documents and
// on (val_fraction, max_seq_len, packing, overlong, shuffle, seed), none of which is in the key, so they
// can change without re-tokenizing. A cache that cannot be written is a warning, not a failure.
#include "data/data.h"

#include <stdlib.h>

// Validation documents: those of the validation files, else val_fraction of all of them chosen by seed.
static void split_docs(const data_options *o, const data_docs *d, uint32_t **train, size_t *n_train,
                       uint32_t **val, size_t *n_val) {
    size_t n = d->n_docs;
    uint32_t *tr = xmalloc((n ? n : 1) * sizeof *tr), *va = xmalloc((n ? n : 1) * sizeof *va);
    size_t nt = 0, nv = 0;
    if (o->n_val_files > 0) {
        for (size_t i = 0; i < n; i++) {
            if (d->src_file[i] >= (uint32_t)o->n_train_files) va[nv++] = (uint32_t)i;
            else tr[nt++] = (uint32_t)i;
        }
    } else {
        size_t want = (size_t)(o->val_fraction * (double)n + 0.5);
        if (o->val_fraction > 0 && want == 0 && n >= 2) want = 1;
        if (want >= n && n > 0) want = n - 1;
        uint32_t *perm = xmalloc((n ? n : 1) * sizeof *perm);
        uint8_t *is_val = xcalloc(n ? n : 1, 1);
        for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
        data_shuffle(perm, n, o->seed ^ 0x76616c6964617465ull); // "validate": apart from the packing shuffle
        for (size_t i = 0; i < want; i++) is_val[perm[i]] = 1;
        for (size_t i = 0; i < n; i++) {
            if (is_val[i]) va[nv++] = (uint32_t)i;
            else tr[nt++] = (uint32_t)i;
        }
        free(perm);
        free(is_val);
    }
    *train = tr, *n_train = nt, *val = va, *n_val = nv;
}

static gt_status read_docs(const data_options *o, const tokenizer *tok, data_docs *d, gt_error *err) {
    gt_status st = data_read_files(o->train_files, o->n_train_files, o, tok, o->max_rows, d, err);
    // max_rows limits the training files only.
    if (!st && o->n_val_files) st = data_read_files(o->val_files, o->n_val_files, o, tok, 0, d, err);
    return st;
}

gt_status data_set_load(const data_options *o, const tokenizer *tok, data_set *out, gt_error *err) {
    memset(out, 0, sizeof *out);
    gt_status st = data_options_check(o, err);
    if (st) return st;

    int n_paths = o->n_train_files + o->n_val_files;
    const char **paths = xmalloc((size_t)n_paths * sizeof *paths);
    for (int i = 0; i < o->n_train_files; i++) paths[i] = o->train_files[i];
    for (int i = 0; i < o->n_val_files; i++) paths[o->n_train_files + i] = o->val_files[i];

    uint64_t key = 0;
    if (o->cache_dir) {
        st = token_cache_key(o, paths, n_paths, &key, err);
        if (st) goto done;
        char name[64];
        snprintf(name, sizeof name, "tokens-%016llx.bin", (unsigned long long)key);
        out->cache_path = fs_join(o->cache_dir, name);
        gt_error ce;
        gt_status cst = token_cache_read(out->cache_path, key, &out->docs, &ce);
        if (cst == GT_OK) {
            out->cache_hit = 1;
            log_info("token cache hit: %s", out->cache_path);
        } else if (cst != GT_ENOTFOUND) {
            log_warn("ignoring the token cache: %s", ce.msg);
        }
    }
    if (!out->cache_hit) {
        st = read_docs(o, tok, &out->docs, err);
        if (st) goto done;
        if (out->cache_path) {
            gt_error ce;
            if (fs_mkdirs(o->cache_dir, &ce) || token_cache_write(out->cache_path, key, &out->docs, &ce))
                log_warn("token cache not written (the next run tokenizes again): %s", ce.msg);
        }
    }
    if (out->docs.n_docs == 0) {
        st = gt_fail(err, GT_EFORMAT, "%s%s: no usable rows (%llu read, %llu skipped as bad)", paths[0],
                     n_paths > 1 ? " and the other data files" : "", (unsigned long long)out->docs.rows_read,
                     (unsigned long long)out->docs.rows_skipped);
        goto done;
    }

    uint32_t *tr, *va;
    size_t nt, nv;
    split_docs(o, &out->docs, &tr, &nt, &va, &nv);
    out->n_val_docs = nv;
    st = data_pack_build(&out->docs, tr, nt, o, &out->train, err);
    if (!st) st = data_pack_build(&out->docs, va, nv, o, &out->val, err);
    free(tr);
    free(va);
done:
    free(paths);
    if (st) data_set_free(out);
    return st;
}

void data_set_free(data_set *s) {
    data_docs_free(&s->docs);
    data_pack_free(&s->train);
    data_pack_free(&s->val);
    free(s->cache_path);
    memset(s, 0, sizeof *s);
}
