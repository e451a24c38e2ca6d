// safetensors: reader (mmap, single files and sharded checkpoints) and atomic writer.
//
// File layout (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON header
// (may end in spaces), then the data area. The header maps tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data area) plus an optional
// "__metadata__" object of string values.
//
// Invariants the reader establishes before a single tensor is handed out (the same rules the reference
// reader enforces, so a file we accept is a file Python's safetensors accepts):
//   - N <= ST_MAX_HEADER and 8 + N <= file size (no overflow: compared as N > size - 8);
//   - the header is one JSON object parsed from the bounded buffer (no NUL assumed), no duplicate keys;
//   - every entry has a known dtype string, a shape of at most ST_MAX_DIMS non-negative integers whose
//     product does not overflow, and data_offsets of two integers with begin <= end <= data size;
//   - numel * dtype_size == end - begin;
//   - the spans, sorted by begin, tile the data area exactly: no overlap, no hole, nothing after the last;
//   - __metadata__ is null or an object whose values are all strings;
//   - across the shards of one checkpoint a tensor name occurs once, and index.json agrees with the
//     shards in both directions.
// Tensor data pointers point into the read-only mmap and stay valid until safetensors_close. Unknown
// fields inside a tensor entry are ignored, as the reference reader ignores them.
//
// The writer lays the data out as the reference writer does (by dtype, larger elements first in the
// reference's dtype order, then by name), which keeps every tensor aligned to its element size and
// makes our files byte-identical to Python's save_file for the same tensors and metadata (up to the
// order of metadata keys).
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// The reference reader's limit on the header (100 MB); real headers are a few hundred KB at most.
#define ST_MAX_HEADER 100000000ull

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int tensor_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

const st_tensor *safetensors_find(const safetensors *st, const char *name) {
    if (!st->n_tensors) return NULL;
    st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_cmp_name);
}

// Name of file `idx` for messages about a tensor already loaded from it.
static const char *file_label(const safetensors *st, int idx, char *buf, size_t size) {
    if (idx >= 0 && idx < st->n_files && st->files[idx].path) return st->files[idx].path;
    snprintf(buf, size, "file #%d", idx);
    return buf;
}

// ---------------------------------------------------------------------------------------------------
// Header parse

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Validates one tensor entry; fills t (name borrowed from the JSON) and its span.
static gt_status parse_entry(const char *what, const char *name, json_t *v, uint64_t data_len, st_tensor *t,
                             span *sp, gt_error *err) {
    if (!json_is_object(v))
        return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': entry must be a JSON object with dtype, shape and data_offsets",
                       what, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': \"dtype\" missing or not a string", what, name);
    int dt = dtype_from_name(json_string_value(jd));
    if (dt < 0)
        return gt_fail(err, GT_EUNSUPPORTED,
                       "%s: tensor '%s': unknown dtype '%s' (gptoss reads BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, "
                       "F64, F8_E4M3, F8_E5M2)", what, name, json_string_value(jd));
    if (!json_is_array(js)) return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': \"shape\" missing or not an array", what, name);
    size_t ndim = json_array_size(js);
    if (ndim > ST_MAX_DIMS)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: tensor '%s': shape has %zu dimensions, gptoss supports at most %d", what,
                       name, ndim, ST_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = (dtype)dt;
    t->ndim = (int)ndim;
    int64_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': shape[%zu] must be a non-negative integer", what, name, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel))
            return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': shape's element count overflows 64 bits", what, name);
    }
    t->numel = numel;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be an array of two integers [begin, end]",
                       what, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b)
        return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] must satisfy 0 <= begin <= end", what,
                       name, (long long)b, (long long)e);
    if ((uint64_t)e > data_len)
        return gt_fail(err, GT_EFORMAT,
                       "%s: tensor '%s': data_offsets [%lld, %lld] run past the end of the data area (%llu bytes); "
                       "the file is truncated or corrupted", what, name, (long long)b, (long long)e,
                       (unsigned long long)data_len);
    uint64_t nbytes;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)dtype_size(t->dtype), &nbytes))
        return gt_fail(err, GT_EFORMAT, "%s: tensor '%s': %lld elements of %s overflow a 64-bit byte count", what, name,
                       (long long)numel, dtype_name(t->dtype));
    if (nbytes != (uint64_t)(e - b)) {
        char dims[ST_MAX_DIMS * 24 + 4] = "";
        size_t at = 0;
        for (int i = 0; i < t->ndim; i++)
            at += (size_t)snprintf(dims + at, sizeof dims - at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        return gt_fail(err, GT_EFORMAT,
                       "%s: tensor '%s': shape [%s] x %s (%zu bytes each) does not match its byte span [%lld, %lld] "
                       "(%lld bytes)", what, name, dims, dtype_name(t->dtype), dtype_size(t->dtype), (long long)b,
                       (long long)e, (long long)(e - b));
    }
    t->nbytes = (size_t)nbytes;
    sp->begin = (uint64_t)b;
    sp->end = (uint64_t)e;
    sp->name = name;
    return GT_OK;
}

static gt_status parse_metadata(const char *what, json_t *m, gt_error *err) {
    if (json_is_null(m)) return GT_OK;
    if (!json_is_object(m))
        return gt_fail(err, GT_EFORMAT, "%s: __metadata__ must be an object of string values", what);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return gt_fail(err, GT_EFORMAT, "%s: __metadata__ value of '%s' is not a string (safetensors allows strings only)",
                           what, k);
    }
    return GT_OK;
}

// Checks that the spans tile [0, data_len) exactly.
static gt_status check_spans(const char *what, span *sp, size_t n, uint64_t data_len, gt_error *err) {
    qsort(sp, n, sizeof *sp, span_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin < at)
            return gt_fail(err, GT_EFORMAT, "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' (which ends at %llu)", what,
                           sp[i].name, (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                           sp[i - 1].name, (unsigned long long)at);
        if (sp[i].begin > at)
            return gt_fail(err, GT_EFORMAT, "%s: tensor '%s' starts at %llu, leaving a hole of unindexed bytes from %llu",
                           what, sp[i].name, (unsigned long long)sp[i].begin, (unsigned long long)at);
        at = sp[i].end;
    }
    if (at != data_len)
        return gt_fail(err, GT_EFORMAT, "%s: the data area has %llu bytes but its tensors cover only the first %llu", what,
                       (unsigned long long)data_len, (unsigned long long)at);
    return GT_OK;
}

gt_status safetensors_parse(safetensors *st, const uint8_t *buf, size_t len, int file_index, const char *what,
                            gt_error *err) {
    if (len < 8)
        return gt_fail(err, GT_EFORMAT, "%s: truncated: %zu bytes, shorter than the 8-byte header length", what, len);
    uint64_t n = le64(buf);
    if (n > len - 8) {
        if (n > ST_MAX_HEADER)
            return gt_fail(err, GT_EFORMAT,
                           "%s: header length %llu is not plausible (the file has %zu bytes); not a safetensors file?",
                           what, (unsigned long long)n, len);
        return gt_fail(err, GT_EFORMAT, "%s: truncated header: the header length says %llu bytes but only %zu follow", what,
                       (unsigned long long)n, len - 8);
    }
    if (n > ST_MAX_HEADER)
        return gt_fail(err, GT_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit", what, (unsigned long long)n,
                       ST_MAX_HEADER);
    if (n == 0 || buf[8] != '{')
        return gt_fail(err, GT_EFORMAT, "%s: header does not start with '{' (not a safetensors file?)", what);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return gt_fail(err, GT_EFORMAT, "%s: header is not valid JSON: %s (header line %d, column %d)", what, jerr.text,
                       jerr.line, jerr.column);
    const uint64_t data_len = len - 8 - n;
    const uint8_t *data = buf + 8 + n;
    gt_status s = GT_OK;
    json_t *meta = NULL;
    size_t cap = json_is_object(root) ? json_object_size(root) : 0, nt = 0;
    st_tensor *ts = xcalloc(cap, sizeof *ts);
    span *sp = xcalloc(cap, sizeof *sp);
    char lbl[32];
    if (!json_is_object(root)) {
        s = gt_fail(err, GT_EFORMAT, "%s: header must be a JSON object", what);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if ((s = parse_metadata(what, v, err)) != GT_OK) goto done;
            meta = v;
            continue;
        }
        if ((s = parse_entry(what, key, v, data_len, &ts[nt], &sp[nt], err)) != GT_OK) goto done;
        const st_tensor *other = safetensors_find(st, key);
        if (other) {
            s = gt_fail(err, GT_EFORMAT, "%s: tensor '%s' is also in %s; a tensor may occur in one shard only", what, key,
                        file_label(st, other->file, lbl, sizeof lbl));
            goto done;
        }
        ts[nt].data = data + sp[nt].begin;
        ts[nt].file = file_index;
        nt++;
    }
    if ((s = check_spans(what, sp, nt, data_len, err)) != GT_OK) goto done;

    // Commit: everything validated.
    st->tensors = xrealloc(st->tensors, ((size_t)st->n_tensors + nt) * sizeof *st->tensors);
    for (size_t i = 0; i < nt; i++) {
        ts[i].name = xstrdup(ts[i].name);
        st->tensors[st->n_tensors++] = ts[i];
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_cmp_name);
    if (meta && file_index == 0 && st->n_meta == 0 && json_object_size(meta) > 0) {
        st->meta_keys = xcalloc(json_object_size(meta), sizeof(char *));
        st->meta_values = xcalloc(json_object_size(meta), sizeof(char *));
        json_object_foreach(meta, key, v) {
            st->meta_keys[st->n_meta] = xstrdup(key);
            st->meta_values[st->n_meta++] = xstrdup(json_string_value(v));
        }
    }
done:
    free(ts);
    free(sp);
    json_decref(root);
    return s;
}

// ---------------------------------------------------------------------------------------------------
// Open / close

void safetensors_close(safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap((void *)st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    memset(st, 0, sizeof *st);
}

// Maps `path` read-only, appends it to st->files and parses its header.
static gt_status open_file(safetensors *st, const char *path, gt_error *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return gt_fail(err, errno == ENOENT ? GT_ENOTFOUND : GT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return gt_fail(err, GT_EIO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return gt_fail(err, GT_EIO, "%s: mmap of %zu bytes failed: %s", path, size, strerror(e));
        }
    }
    close(fd);
    int idx = st->n_files++;
    st->files = xrealloc(st->files, (size_t)st->n_files * sizeof *st->files);
    st->files[idx] = (st_file){.path = xstrdup(path), .map = map, .size = size};
    return safetensors_parse(st, map, size, idx, path, err);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// A shard name from index.json: a relative path that stays inside the checkpoint's directory.
static int shard_name_ok(const char *s) {
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p; p++)
        if (p[0] == '.' && p[1] == '.' && (p == s || p[-1] == '/') && (p[2] == '/' || !p[2])) return 0;
    return 1;
}

static gt_status open_index(safetensors *st, const char *index_path, gt_error *err) {
    char *text;
    size_t len;
    gt_status s = fs_read_file(index_path, &text, &len, err);
    if (s != GT_OK) return s;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return gt_fail(err, GT_EFORMAT, "%s:%d:%d: not valid JSON: %s", index_path, jerr.line, jerr.column, jerr.text);
    json_t *wm = json_object_get(root, "weight_map");
    char **shards = NULL;
    size_t n_shards = 0;
    char *dir = NULL;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        s = gt_fail(err, GT_EFORMAT, "%s: \"weight_map\" missing, not an object, or empty", index_path);
        goto done;
    }
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v))) {
            s = gt_fail(err, GT_EFORMAT,
                        "%s: weight_map entry '%s' must name a shard file relative to the index's directory", index_path,
                        name);
            goto done;
        }
        size_t i = 0;
        while (i < n_shards && strcmp(shards[i], json_string_value(v))) i++;
        if (i == n_shards) {
            shards = xrealloc(shards, (n_shards + 1) * sizeof *shards);
            shards[n_shards++] = xstrdup(json_string_value(v));
        }
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str); // file 0 is the first shard by name
    char *dcopy = xstrdup(index_path);
    dir = xstrdup(dirname(dcopy));
    free(dcopy);
    for (size_t i = 0; i < n_shards; i++) {
        char *p = fs_join(dir, shards[i]);
        if (!fs_exists(p)) {
            s = gt_fail(err, GT_ENOTFOUND, "%s: names shard '%s', but %s does not exist (incomplete download?)", index_path,
                        shards[i], p);
            free(p);
            goto done;
        }
        s = open_file(st, p, err);
        free(p);
        if (s != GT_OK) goto done;
    }
    json_object_foreach(wm, name, v) {
        const st_tensor *t = safetensors_find(st, name);
        const char *want = json_string_value(v);
        if (!t) {
            s = gt_fail(err, GT_EFORMAT, "%s: tensor '%s' is listed in shard '%s' but is not in it", index_path, name, want);
            goto done;
        }
        char *want_path = fs_join(dir, want);
        int same = !strcmp(st->files[t->file].path, want_path);
        free(want_path);
        if (!same) {
            s = gt_fail(err, GT_EFORMAT, "%s: tensor '%s' is listed in shard '%s' but is in %s", index_path, name, want,
                        st->files[t->file].path);
            goto done;
        }
    }
    for (int i = 0; i < st->n_tensors; i++) {
        if (!json_object_get(wm, st->tensors[i].name)) {
            s = gt_fail(err, GT_EFORMAT, "%s: tensor '%s' in %s is not listed in the weight_map", index_path,
                        st->tensors[i].name, st->files[st->tensors[i].file].path);
            goto done;
        }
    }
done:
    for (size_t i = 0; i < n_shards; i++) free(shards[i]);
    free(shards);
    free(dir);
    json_decref(root);
    return s;
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

// A directory: model.safetensors.index.json, else model.safetensors, else its only *.safetensors.
static gt_status open_dir(safetensors *st, const char *dir, gt_error *err) {
    char *p = fs_join(dir, "model.safetensors.index.json");
    if (fs_exists(p)) {
        gt_status s = open_index(st, p, err);
        free(p);
        return s;
    }
    free(p);
    p = fs_join(dir, "model.safetensors");
    if (fs_exists(p)) {
        gt_status s = open_file(st, p, err);
        free(p);
        return s;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return gt_fail(err, GT_EIO, "%s: cannot list directory: %s", dir, strerror(errno));
    char **found = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".safetensors")) continue;
        found = xrealloc(found, (n + 1) * sizeof *found);
        found[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    gt_status s;
    if (n == 1) {
        p = fs_join(dir, found[0]);
        s = open_file(st, p, err);
        free(p);
    } else if (n == 0) {
        s = gt_fail(err, GT_ENOTFOUND, "%s: no model.safetensors.index.json, model.safetensors or other *.safetensors file",
                    dir);
    } else {
        qsort(found, n, sizeof *found, cmp_str);
        s = gt_fail(err, GT_EFORMAT,
                    "%s: %zu .safetensors files (%s, %s%s) but no model.safetensors.index.json saying how they fit together; "
                    "pass one file or add the index", dir, n, found[0], found[1], n > 2 ? ", ..." : "");
    }
    for (size_t i = 0; i < n; i++) free(found[i]);
    free(found);
    return s;
}

gt_status safetensors_open(safetensors *st, const char *path, gt_error *err) {
    memset(st, 0, sizeof *st);
    gt_status s;
    if (fs_is_dir(path)) s = open_dir(st, path, err);
    else if (has_suffix(path, ".json")) s = open_index(st, path, err);
    else s = open_file(st, path, err);
    if (s != GT_OK) safetensors_close(st);
    return s;
}

// ---------------------------------------------------------------------------------------------------
// Writer

// The reference writer's dtype order (its Dtype enum); the data area holds higher ranks first.
static int dtype_rank(dtype dt) {
    static const int rank[DT_COUNT] = {
        [DT_BOOL] = 0, [DT_U8] = 1,   [DT_I8] = 2,  [DT_F8_E5M2] = 3, [DT_F8_E4M3] = 4, [DT_I16] = 5,
        [DT_F16] = 6,  [DT_BF16] = 7, [DT_I32] = 8, [DT_F32] = 9,     [DT_F64] = 10,    [DT_I64] = 11,
    };
    return rank[dt];
}

typedef struct write_slot {
    int rank, index;
    const char *name;
} write_slot;

static int write_slot_cmp(const void *a, const void *b) {
    const write_slot *x = a, *y = b;
    if (x->rank != y->rank) return y->rank - x->rank;
    return strcmp(x->name, y->name);
}

gt_status safetensors_write(const char *path, const st_write_tensor *tensors, int n, const char *const *meta_kv,
                            int n_meta, gt_error *err) {
    gt_status s = GT_OK;
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(root, "__metadata__", meta);
    json_object_set_new(meta, "format", json_string("pt"));
    size_t *nbytes = xcalloc((size_t)n, sizeof *nbytes);
    write_slot *order = xcalloc((size_t)n, sizeof *order);
    char *header = NULL;
    fs_part *parts = NULL;
    for (int i = 0; i < n_meta; i++) {
        const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
        if (json_object_get(meta, k) || json_object_set_new(meta, k, json_string(v))) { // a NULL value fails
            s = gt_fail(err, GT_EINVAL, "%s: metadata key '%s' repeated or not valid UTF-8", path, k);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        if ((unsigned)t->dtype >= DT_COUNT || t->ndim < 0 || t->ndim > ST_MAX_DIMS || !t->name || !*t->name ||
            !strcmp(t->name, "__metadata__")) {
            s = gt_fail(err, GT_EINVAL, "%s: tensor #%d ('%s'): bad name, dtype or ndim", path, i, t->name ? t->name : "");
            goto done;
        }
        order[i] = (write_slot){dtype_rank(t->dtype), i, t->name};
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, t->shape[d], &numel)) {
                s = gt_fail(err, GT_EINVAL, "%s: tensor '%s': shape[%d] = %lld is negative or overflows", path, t->name, d,
                            (long long)t->shape[d]);
                goto done;
            }
        if (__builtin_mul_overflow((size_t)numel, dtype_size(t->dtype), &nbytes[i])) {
            s = gt_fail(err, GT_EINVAL, "%s: tensor '%s': size overflows", path, t->name);
            goto done;
        }
        if (nbytes[i] > 0 && !t->data) {
            s = gt_fail(err, GT_EINVAL, "%s: tensor '%s': %zu bytes but no data", path, t->name, nbytes[i]);
            goto done;
        }
    }
    qsort(order, (size_t)n, sizeof *order, write_slot_cmp);
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        const st_write_tensor *t = &tensors[order[k].index];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(dtype_name(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nbytes[order[k].index])));
        off += nbytes[order[k].index];
        if (json_object_get(root, t->name)) {
            json_decref(e);
            s = gt_fail(err, GT_EINVAL, "%s: tensor name '%s' is repeated", path, t->name);
            goto done;
        }
        if (json_object_set_new(root, t->name, e)) { // takes e either way
            s = gt_fail(err, GT_EINVAL, "%s: tensor name '%s' is not valid UTF-8", path, t->name);
            goto done;
        }
    }
    char *json = json_dumps(root, JSON_COMPACT);
    CHECK(json);
    size_t hlen = strlen(json), padded = (hlen + 7) / 8 * 8; // the data area starts 8-aligned
    header = xmalloc(8 + padded);
    for (int i = 0; i < 8; i++) header[i] = (char)((uint64_t)padded >> (8 * i));
    memcpy(header + 8, json, hlen);
    memset(header + 8 + hlen, ' ', padded - hlen);
    free(json);
    parts = xcalloc((size_t)n + 1, sizeof *parts);
    parts[0] = (fs_part){header, 8 + padded};
    for (int k = 0; k < n; k++) parts[k + 1] = (fs_part){tensors[order[k].index].data, nbytes[order[k].index]};
    s = fs_write_atomic_parts(path, parts, n + 1, err);
done:
    free(parts);
    free(header);
    free(order);
    free(nbytes);
    json_decref(root);
    return s;
}
