// safetensors reader and writer:
//   - round trips of every dtype, a scalar (ndim 0), zero-size tensors, 8 dimensions, extra metadata;
//     atomic replace, and rejected writes leaving the old file;
//   - the Python reference: tests/fixtures/safetensors_py.safetensors (tests/ref/make_safetensors_fixture.py)
//     is read and every value checked against the script's formulas; then the same tensors written by
//     safetensors_write must give the same header JSON and a byte-identical data area, i.e. the file
//     Python's safetensors would write (so Python reads ours as it reads its own);
//   - a sharded checkpoint (two shards + model.safetensors.index.json) and directory resolution;
//   - malformed files made here in $GPTOSS_TMP/safetensors: each must be rejected with a message that
//     names the file and the problem.
#include "core/core.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>

#include "test_util.h"

static char *tmpdir; // $GPTOSS_TMP/safetensors

static char *tmp_path(const char *name) { return fs_join(tmpdir, name); }

// A hand-made file: 8-byte length `n` (the header's length unless n_override), the header, the data.
static void write_raw(const char *path, const char *header, uint64_t n_override, const void *data, size_t dlen) {
    size_t hlen = strlen(header);
    uint64_t n = n_override ? n_override : hlen;
    uint8_t *buf = xmalloc(8 + hlen + dlen);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (dlen) memcpy(buf + 8 + hlen, data, dlen);
    test_write_file(path, buf, 8 + hlen + dlen);
    free(buf);
}

static int64_t numel_of(const st_write_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// The file at `path` must open and hold exactly the tensors `w`.
static void expect_tensors(const char *path, const st_write_tensor *w, int n) {
    safetensors st;
    gt_error err;
    gt_status s = safetensors_open(&st, path, &err);
    EXPECT(s == GT_OK, "%s: %s", path, err.msg);
    if (s != GT_OK) return;
    EXPECT(st.n_tensors == n, "%s: %d tensors, want %d", path, st.n_tensors, n);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = safetensors_find(&st, w[i].name);
        EXPECT(t != NULL, "%s: tensor '%s' not found", path, w[i].name);
        if (!t) continue;
        size_t nb = (size_t)numel_of(&w[i]) * dtype_size(w[i].dtype);
        EXPECT(t->dtype == w[i].dtype, "'%s': dtype %s, want %s", w[i].name, dtype_name(t->dtype), dtype_name(w[i].dtype));
        EXPECT(t->ndim == w[i].ndim, "'%s': ndim %d, want %d", w[i].name, t->ndim, w[i].ndim);
        for (int d = 0; d < w[i].ndim && d < t->ndim; d++)
            EXPECT(t->shape[d] == w[i].shape[d], "'%s': shape[%d] %lld, want %lld", w[i].name, d,
                   (long long)t->shape[d], (long long)w[i].shape[d]);
        EXPECT(t->numel == numel_of(&w[i]), "'%s': numel %lld", w[i].name, (long long)t->numel);
        EXPECT(t->nbytes == nb, "'%s': nbytes %zu, want %zu", w[i].name, t->nbytes, nb);
        EXPECT(nb == 0 || memcmp(t->data, w[i].data, nb) == 0, "'%s': data differs", w[i].name);
        // Our writer aligns every tensor to its element size (the mmap base is page aligned).
        EXPECT((uintptr_t)t->data % dtype_size(t->dtype) == 0, "'%s' (%s) misaligned at %p", w[i].name,
               dtype_name(t->dtype), (const void *)t->data);
    }
    for (int i = 1; i < st.n_tensors; i++)
        EXPECT(strcmp(st.tensors[i - 1].name, st.tensors[i].name) < 0, "tensors not sorted: '%s' before '%s'",
               st.tensors[i - 1].name, st.tensors[i].name);
    EXPECT(safetensors_find(&st, "no.such.tensor") == NULL, "found a tensor that is not there");
    safetensors_close(&st);
}

static int count_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_roundtrip(void) {
    // One tensor per dtype, shape (2, 3), bytes a pattern that differs per dtype.
    static uint8_t bytes[DT_COUNT][6 * 8];
    static char names[DT_COUNT][32];
    st_write_tensor w[DT_COUNT + 5];
    int n = 0;
    for (int dt = 0; dt < DT_COUNT; dt++) {
        for (size_t i = 0; i < sizeof bytes[dt]; i++) bytes[dt][i] = (uint8_t)(i * 37 + (size_t)dt * 11 + 1);
        if (dt == DT_BOOL)
            for (size_t i = 0; i < sizeof bytes[dt]; i++) bytes[dt][i] &= 1;
        snprintf(names[dt], sizeof names[dt], "model.layers.%d.%s", dt, dtype_name((dtype)dt));
        w[n++] = (st_write_tensor){names[dt], (dtype)dt, 2, {2, 3}, bytes[dt]};
    }
    static const float scalar = 2.5f;
    static const uint8_t eight[2] = {7, 9};
    static const uint16_t f16[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
    w[n++] = (st_write_tensor){"scalar", DT_F32, 0, {0}, &scalar};
    w[n++] = (st_write_tensor){"zero.rows", DT_I64, 2, {0, 3}, NULL};
    w[n++] = (st_write_tensor){"zero.cols", DT_BF16, 2, {3, 0}, NULL};
    w[n++] = (st_write_tensor){"eight.dims", DT_U8, 8, {1, 1, 1, 1, 1, 1, 2, 1}, eight};
    w[n++] = (st_write_tensor){"f16.3d", DT_F16, 3, {2, 1, 2}, f16};
    const char *meta[] = {"source", "test_safetensors", "n\xc3\xa4me", "v\xc3\xa4lue with \"quotes\""};
    char *path = tmp_path("roundtrip.safetensors");
    gt_error err;
    gt_status s = safetensors_write(path, w, n, meta, 2, &err);
    EXPECT(s == GT_OK, "write: %s", err.msg);
    expect_tensors(path, w, n);

    safetensors st;
    if (safetensors_open(&st, path, &err) == GT_OK) {
        EXPECT(st.n_meta == 3, "%d metadata pairs, want 3", st.n_meta);
        for (int i = 0; i < st.n_meta; i++) {
            const char *want = !strcmp(st.meta_keys[i], "format") ? "pt"
                               : !strcmp(st.meta_keys[i], meta[0]) ? meta[1]
                               : !strcmp(st.meta_keys[i], meta[2]) ? meta[3]
                                                                   : NULL;
            EXPECT(want && !strcmp(st.meta_values[i], want), "metadata '%s' = '%s'", st.meta_keys[i], st.meta_values[i]);
        }
        // The header is padded so the data area starts 8-aligned.
        uint64_t hn = 0;
        for (int i = 7; i >= 0; i--) hn = (hn << 8) | st.files[0].map[i];
        EXPECT(hn % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hn);
        safetensors_close(&st);
    }

    // Replacing the file: the new content wins, no temporary file stays behind.
    static const int32_t one[1] = {42};
    st_write_tensor w2 = {"only", DT_I32, 1, {1}, one};
    EXPECT(safetensors_write(path, &w2, 1, NULL, 0, &err) == GT_OK, "rewrite: %s", err.msg);
    expect_tensors(path, &w2, 1);
    // Rejected writes leave the old file as it was.
    st_write_tensor dup[2] = {w2, w2};
    s = safetensors_write(path, dup, 2, NULL, 0, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "'only'") && strstr(err.msg, "repeated"), "duplicate names: %s", err.msg);
    st_write_tensor neg = {"neg", DT_F32, 2, {2, -1}, one};
    s = safetensors_write(path, &neg, 1, NULL, 0, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "'neg'") && strstr(err.msg, "shape[1]"), "negative dim: %s", err.msg);
    st_write_tensor nodata = {"nodata", DT_F32, 1, {2}, NULL};
    s = safetensors_write(path, &nodata, 1, NULL, 0, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "'nodata'") && strstr(err.msg, "no data"), "no data: %s", err.msg);
    st_write_tensor latin1 = {"caf\xe9", DT_I32, 1, {1}, one};
    s = safetensors_write(path, &latin1, 1, NULL, 0, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "not valid UTF-8"), "invalid UTF-8 name: %s", err.msg);
    const char *badmeta[] = {"format", "np"};
    s = safetensors_write(path, &w2, 1, badmeta, 1, &err);
    EXPECT(s == GT_EINVAL && strstr(err.msg, "'format'"), "repeated metadata key: %s", err.msg);
    expect_tensors(path, &w2, 1);
    EXPECT(count_tmp_files() == 0, "temporary files left in %s", tmpdir);
    // An I/O failure names the path.
    char *nodir = tmp_path("no/such/dir/x.safetensors");
    s = safetensors_write(nodir, &w2, 1, NULL, 0, &err);
    EXPECT(s == GT_EIO && strstr(err.msg, nodir), "write into a missing directory: %s", err.msg);
    free(nodir);
    // An empty file (no tensors) round trips too.
    EXPECT(safetensors_write(path, NULL, 0, NULL, 0, &err) == GT_OK, "empty write: %s", err.msg);
    expect_tensors(path, NULL, 0);
    free(path);
}

// ---------------------------------------------------------------------------------------------------
// Python's file, values restated from tests/ref/make_safetensors_fixture.py.

static void check_py_values(const safetensors *st) {
    const st_tensor *t;
#define GET(name, dt, nd)                                                                             \
    t = safetensors_find(st, name);                                                                   \
    EXPECT(t && t->dtype == dt && t->ndim == nd, "fixture tensor '%s' missing or wrong dtype/ndim", name); \
    if (t && t->dtype == dt && t->ndim == nd)
    GET("bool", DT_BOOL, 1) for (int i = 0; i < 5; i++) EXPECT(t->data[i] == (i % 3 == 0), "bool[%d] = %d", i, t->data[i]);
    GET("u8", DT_U8, 2) for (int i = 0; i < 6; i++) EXPECT(t->data[i] == i * 40 + 3, "u8[%d] = %d", i, t->data[i]);
    GET("i8", DT_I8, 1) for (int i = 0; i < 4; i++) EXPECT((int8_t)t->data[i] == i * -37 + 5, "i8[%d]", i);
    GET("i16", DT_I16, 1) for (int i = 0; i < 3; i++) {
        int16_t v;
        memcpy(&v, t->data + 2 * i, 2);
        EXPECT(v == i * 20000 - 30000, "i16[%d] = %d", i, v);
    }
    GET("i32", DT_I32, 2) for (int i = 0; i < 4; i++) {
        int32_t v;
        memcpy(&v, t->data + 4 * i, 4);
        EXPECT(v == (int64_t)i * 1000000007 - 2000000000, "i32[%d] = %d", i, v);
    }
    GET("i64", DT_I64, 1) for (int i = 0; i < 3; i++) {
        int64_t v;
        memcpy(&v, t->data + 8 * i, 8);
        EXPECT(v == i * (INT64_C(1) << 45) - (INT64_C(1) << 50), "i64[%d] = %lld", i, (long long)v);
    }
    float f[6];
    gt_error err;
    // Every float value below is exactly representable in its dtype: exact comparison.
    GET("f16", DT_F16, 2) {
        EXPECT(dtype_to_f32(t->dtype, t->data, f, 4, &err) == GT_OK, "%s", err.msg);
        for (int i = 0; i < 4; i++) EXPECT(f[i] == (float)((i - 1.5) * 0.75), "f16[%d] = %g", i, f[i]);
    }
    GET("bf16", DT_BF16, 1) {
        EXPECT(dtype_to_f32(t->dtype, t->data, f, 3, &err) == GT_OK, "%s", err.msg);
        for (int i = 0; i < 3; i++) EXPECT(f[i] == (float)(i * 1.25 - 2.0), "bf16[%d] = %g", i, f[i]);
    }
    GET("f32", DT_F32, 3) {
        EXPECT(t->shape[0] == 2 && t->shape[1] == 1 && t->shape[2] == 3, "f32 shape");
        EXPECT(dtype_to_f32(t->dtype, t->data, f, 6, &err) == GT_OK, "%s", err.msg);
        for (int i = 0; i < 6; i++) EXPECT(f[i] == (float)(i * 0.1 - 0.25), "f32[%d] = %.9g", i, f[i]);
    }
    GET("f64", DT_F64, 0) {
        double d;
        memcpy(&d, t->data, 8);
        EXPECT(t->numel == 1 && d == 3.141592653589793, "f64 scalar = %.17g", d);
    }
    // fp8 bit patterns: e4m3 (bias 7) 0.5 = 0 0110 000, -1 = 1 0111 000, 1.5 = 0 0111 100, 448 = 0 1111 110;
    // e5m2 (bias 15) 0.5 = 0 01110 00, -2 = 1 10000 00, 57344 = 0 11110 11.
    static const uint8_t e4m3[4] = {0x30, 0xb8, 0x3c, 0x7e}, e5m2[3] = {0x38, 0xc0, 0x7b};
    GET("f8_e4m3", DT_F8_E4M3, 1) EXPECT(t->nbytes == 4 && !memcmp(t->data, e4m3, 4), "f8_e4m3 bytes");
    GET("f8_e5m2", DT_F8_E5M2, 1) EXPECT(t->nbytes == 3 && !memcmp(t->data, e5m2, 3), "f8_e5m2 bytes");
    GET("layers.0.empty", DT_F32, 2) EXPECT(t->shape[0] == 0 && t->shape[1] == 4 && t->nbytes == 0, "empty tensor");
#undef GET
}

static uint64_t header_len(const st_file *f) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    return n;
}

static void test_python_fixture(void) {
    char *py = test_src_path("tests/fixtures/safetensors_py.safetensors");
    safetensors st, ours;
    gt_error err;
    gt_status s = safetensors_open(&st, py, &err);
    EXPECT(s == GT_OK, "%s", err.msg);
    if (s != GT_OK) {
        free(py);
        return;
    }
    EXPECT(st.n_tensors == 13, "fixture has %d tensors, want 13", st.n_tensors);
    check_py_values(&st);
    const char *made_by = NULL;
    for (int i = 0; i < st.n_meta; i++)
        if (!strcmp(st.meta_keys[i], "made_by")) made_by = st.meta_values[i];
    EXPECT(made_by && !strcmp(made_by, "tests/ref/make_safetensors_fixture.py"), "fixture metadata made_by");

    // Our writer on the same tensors and metadata must produce Python's file.
    st_write_tensor *w = xcalloc((size_t)st.n_tensors, sizeof *w);
    for (int i = 0; i < st.n_tensors; i++) {
        const st_tensor *t = &st.tensors[i];
        w[i] = (st_write_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    const char *meta[] = {"made_by", made_by ? made_by : ""};
    char *path = tmp_path("ours_like_py.safetensors");
    EXPECT(safetensors_write(path, w, st.n_tensors, meta, 1, &err) == GT_OK, "%s", err.msg);
    s = safetensors_open(&ours, path, &err);
    EXPECT(s == GT_OK, "%s", err.msg);
    if (s == GT_OK) {
        uint64_t np = header_len(&st.files[0]), no = header_len(&ours.files[0]);
        EXPECT(np == no, "header length %llu, Python's %llu", (unsigned long long)no, (unsigned long long)np);
        EXPECT(st.files[0].size == ours.files[0].size, "file size %zu, Python's %zu", ours.files[0].size,
               st.files[0].size);
        // Python orders metadata keys as its hash map does: compare headers as JSON values.
        json_t *hp = json_loadb((const char *)st.files[0].map + 8, np, 0, NULL);
        json_t *ho = json_loadb((const char *)ours.files[0].map + 8, no, 0, NULL);
        EXPECT(hp && ho && json_equal(hp, ho), "header JSON differs from Python's:\n  ours:   %.*s\n  python: %.*s",
               (int)no, (const char *)ours.files[0].map + 8, (int)np, (const char *)st.files[0].map + 8);
        json_decref(hp);
        json_decref(ho);
        if (np == no && st.files[0].size == ours.files[0].size) {
            size_t off = 8 + np, dlen = st.files[0].size - off, first = dlen;
            for (size_t i = 0; i < dlen && first == dlen; i++)
                if (st.files[0].map[off + i] != ours.files[0].map[off + i]) first = i;
            EXPECT(first == dlen, "data area differs from Python's at byte %zu of %zu", first, dlen);
        }
        safetensors_close(&ours);
    }
    free(w);
    free(path);
    free(py);
    safetensors_close(&st);
}

// ---------------------------------------------------------------------------------------------------
// Sharded checkpoints and directories

static const float A[4] = {1, 2, 3, 4}, C[4] = {-1, -2, -3, -4};
static const uint16_t B[3] = {0x3f80, 0x4000, 0x4040}; // bf16 1, 2, 3

static void make_shards(const char *dir, const char *index_json) {
    gt_error err;
    EXPECT(fs_mkdirs(dir, &err) == GT_OK, "%s", err.msg);
    st_write_tensor s1[2] = {{"a.weight", DT_F32, 2, {2, 2}, A}, {"b.bias", DT_BF16, 1, {3}, B}};
    st_write_tensor s2[1] = {{"c.weight", DT_F32, 1, {4}, C}};
    const char *meta[] = {"shard", "1"};
    char *p1 = fs_join(dir, "model-00001-of-00002.safetensors"), *p2 = fs_join(dir, "model-00002-of-00002.safetensors"),
         *pi = fs_join(dir, "model.safetensors.index.json");
    EXPECT(safetensors_write(p1, s1, 2, meta, 1, &err) == GT_OK, "%s", err.msg);
    EXPECT(safetensors_write(p2, s2, 1, NULL, 0, &err) == GT_OK, "%s", err.msg);
    test_write_file(pi, index_json, strlen(index_json));
    free(p1);
    free(p2);
    free(pi);
}

#define INDEX_OK                                                                                      \
    "{\"metadata\": {\"total_size\": 38}, \"weight_map\": {\"c.weight\": \"model-00002-of-00002.safetensors\", " \
    "\"a.weight\": \"model-00001-of-00002.safetensors\", \"b.bias\": \"model-00001-of-00002.safetensors\"}}"

static void test_sharded(void) {
    char *dir = tmp_path("sharded");
    make_shards(dir, INDEX_OK);
    st_write_tensor all[3] = {{"a.weight", DT_F32, 2, {2, 2}, A}, {"b.bias", DT_BF16, 1, {3}, B}, {"c.weight", DT_F32, 1, {4}, C}};
    expect_tensors(dir, all, 3);
    char *idx = fs_join(dir, "model.safetensors.index.json");
    expect_tensors(idx, all, 3);
    safetensors st;
    gt_error err;
    if (safetensors_open(&st, dir, &err) == GT_OK) {
        EXPECT(st.n_files == 2, "%d files", st.n_files);
        const st_tensor *c = safetensors_find(&st, "c.weight"), *a = safetensors_find(&st, "a.weight");
        EXPECT(c && strstr(st.files[c->file].path, "model-00002-of-00002"), "c.weight's file");
        EXPECT(a && strstr(st.files[a->file].path, "model-00001-of-00002"), "a.weight's file");
        EXPECT(st.n_meta == 2, "metadata of the first shard: %d pairs", st.n_meta);
        safetensors_close(&st);
    }
    free(idx);
    free(dir);

    // A directory with model.safetensors; one with a single other *.safetensors; one with two.
    char *d1 = tmp_path("dir_model"), *d2 = tmp_path("dir_adapter"), *d3 = tmp_path("dir_two"), *d4 = tmp_path("dir_empty");
    const char *names[] = {"model.safetensors", "adapter_model.safetensors"};
    char *dirs[] = {d1, d2};
    for (int i = 0; i < 2; i++) {
        EXPECT(fs_mkdirs(dirs[i], &err) == GT_OK, "%s", err.msg);
        char *p = fs_join(dirs[i], names[i]);
        EXPECT(safetensors_write(p, all, 3, NULL, 0, &err) == GT_OK, "%s", err.msg);
        free(p);
        expect_tensors(dirs[i], all, 3);
    }
    EXPECT(fs_mkdirs(d3, &err) == GT_OK && fs_mkdirs(d4, &err) == GT_OK, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
        char *p = fs_join(d3, i ? "b.safetensors" : "a.safetensors");
        EXPECT(safetensors_write(p, all + i, 1, NULL, 0, &err) == GT_OK, "%s", err.msg);
        free(p);
    }
    gt_status s = safetensors_open(&st, d3, &err);
    EXPECT(s != GT_OK && strstr(err.msg, d3) && strstr(err.msg, "no model.safetensors.index.json"), "two files: %s", err.msg);
    s = safetensors_open(&st, d4, &err);
    EXPECT(s == GT_ENOTFOUND && strstr(err.msg, d4), "empty dir: %s", err.msg);
    free(d1);
    free(d2);
    free(d3);
    free(d4);
}

// ---------------------------------------------------------------------------------------------------
// Malformed input

// `path` must be rejected with a message naming `names` (the file) and containing `problem`.
static void expect_reject(const char *path, const char *names, const char *problem) {
    safetensors st;
    gt_error err = {0};
    gt_status s = safetensors_open(&st, path, &err);
    EXPECT(s != GT_OK, "%s was accepted (expected: %s)", path, problem);
    if (s == GT_OK) {
        safetensors_close(&st);
        return;
    }
    EXPECT(strstr(err.msg, names) && strstr(err.msg, problem), "%s: message lacks '%s' or '%s':\n  %s", path, names,
           problem, err.msg);
    EXPECT(st.n_tensors == 0 && st.n_files == 0 && st.tensors == NULL && st.files == NULL, "state left after failure");
}

static void expect_reject_raw(const char *name, const char *header, uint64_t n, const void *data, size_t dlen,
                              const char *problem) {
    char *p = tmp_path(name);
    write_raw(p, header, n, data, dlen);
    expect_reject(p, p, problem);
    free(p);
}

#define E(dt, shape, b, e) "{\"dtype\": \"" dt "\", \"shape\": " shape ", \"data_offsets\": [" #b ", " #e "]}"

static void test_malformed(void) {
    static const uint8_t d16[16] = {0};
    // A valid file, then truncated inside its data area.
    char *good = tmp_path("good.safetensors");
    st_write_tensor w = {"w", DT_F32, 1, {4}, A};
    gt_error err;
    EXPECT(safetensors_write(good, &w, 1, NULL, 0, &err) == GT_OK, "%s", err.msg);
    char *text;
    size_t len;
    EXPECT(fs_read_file(good, &text, &len, &err) == GT_OK, "%s", err.msg);
    char *p = tmp_path("truncated_data.safetensors");
    test_write_file(p, text, len - 3);
    expect_reject(p, p, "past the end");
    free(p);
    p = tmp_path("truncated_5_bytes.safetensors");
    test_write_file(p, text, 5);
    expect_reject(p, p, "truncated");
    free(p);
    p = tmp_path("empty.safetensors");
    test_write_file(p, text, 0);
    expect_reject(p, p, "truncated");
    free(p);
    free(text);
    free(good);

    expect_reject_raw("truncated_header.safetensors", "{\"a\": " E("U8", "[2]", 0, 2), 100, d16, 2, "truncated header");
    expect_reject_raw("header_2p63.safetensors", "{}", UINT64_C(1) << 63, NULL, 0, "header length 9223372036854775808");
    expect_reject_raw("header_2p64m1.safetensors", "{}", UINT64_MAX, NULL, 0, "header length 18446744073709551615");
    expect_reject_raw("bad_json.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [2] \"data_offsets\": [0, 2]}}", 0,
                      d16, 2, "not valid JSON");
    expect_reject_raw("not_json_at_all.safetensors", "\x89PNG\r\n", 0, NULL, 0, "does not start with '{'");
    expect_reject_raw("json_array.safetensors", "[1, 2]", 0, NULL, 0, "does not start with '{'");
    expect_reject_raw("json_trailing.safetensors", "{} x", 0, NULL, 0, "not valid JSON");
    expect_reject_raw("dup_key.safetensors", "{\"a\": " E("U8", "[1]", 0, 1) ", \"a\": " E("U8", "[1]", 1, 2) "}", 0,
                      d16, 2, "not valid JSON");
    expect_reject_raw("overlap.safetensors",
                      "{\"a\": " E("U8", "[4]", 0, 4) ", \"b\": " E("U8", "[4]", 2, 6) "}", 0, d16, 6, "overlaps");
    expect_reject_raw("hole.safetensors", "{\"a\": " E("U8", "[2]", 2, 4) "}", 0, d16, 4, "hole");
    expect_reject_raw("trailing_data.safetensors", "{\"a\": " E("U8", "[2]", 0, 2) "}", 0, d16, 4, "cover only");
    expect_reject_raw("span_past_end.safetensors", "{\"a\": " E("F32", "[4]", 0, 16) "}", 0, d16, 8, "past the end");
    expect_reject_raw("span_2p63.safetensors", "{\"a\": " E("U8", "[1]", 9223372036854775806, 9223372036854775807) "}", 0,
                      d16, 1, "past the end");
    expect_reject_raw("span_reversed.safetensors", "{\"a\": " E("U8", "[0]", 4, 2) "}", 0, d16, 4, "begin <= end");
    expect_reject_raw("unknown_dtype.safetensors", "{\"a\": " E("F7", "[2]", 0, 2) "}", 0, d16, 2, "unknown dtype 'F7'");
    expect_reject_raw("dtype_not_string.safetensors", "{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 1]}}", 0,
                      d16, 1, "\"dtype\"");
    expect_reject_raw("shape_size_mismatch.safetensors", "{\"a\": " E("F32", "[3]", 0, 16) "}", 0, d16, 16,
                      "does not match its byte span");
    expect_reject_raw("shape_negative.safetensors", "{\"a\": " E("U8", "[-1]", 0, 0) "}", 0, NULL, 0, "shape[0]");
    expect_reject_raw("shape_float.safetensors", "{\"a\": " E("U8", "[2.0]", 0, 2) "}", 0, d16, 2, "shape[0]");
    expect_reject_raw("shape_overflow.safetensors", "{\"a\": " E("F32", "[4294967296, 4294967296]", 0, 0) "}", 0, NULL, 0,
                      "overflows");
    // 2^62 elements x 4 bytes overflows the byte count, not the element count.
    expect_reject_raw("nbytes_overflow.safetensors", "{\"a\": " E("F32", "[4611686018427387904]", 0, 0) "}", 0, NULL, 0,
                      "overflow a 64-bit byte count");
    expect_reject_raw("too_many_dims.safetensors", "{\"a\": " E("U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 0, d16, 1,
                      "9 dimensions");
    expect_reject_raw("offsets_three.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1, 2]}}",
                      0, d16, 1, "data_offsets");
    expect_reject_raw("entry_not_object.safetensors", "{\"a\": [1]}", 0, NULL, 0, "tensor 'a'");
    expect_reject_raw("meta_not_string.safetensors", "{\"__metadata__\": {\"format\": \"pt\", \"step\": 3}}", 0, NULL, 0,
                      "__metadata__ value of 'step' is not a string");
    expect_reject_raw("meta_not_object.safetensors", "{\"__metadata__\": [\"pt\"]}", 0, NULL, 0, "__metadata__");
    expect_reject(tmpdir, tmpdir, "no model.safetensors.index.json");
    char *missing = tmp_path("does_not_exist.safetensors");
    expect_reject(missing, missing, "cannot open");
    free(missing);

    // Sharded checkpoints that do not hold together.
    struct {
        const char *dir, *index, *problem;
    } bad[] = {
        {"idx_missing_shard",
         "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"b.bias\": \"model-00001-of-00002.safetensors\","
         " \"c.weight\": \"model-00002-of-00002.safetensors\", \"d\": \"model-00003-of-00003.safetensors\"}}",
         "model-00003-of-00003.safetensors does not exist"},
        {"idx_tensor_not_in_shard",
         "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"b.bias\": \"model-00001-of-00002.safetensors\","
         " \"c.weight\": \"model-00002-of-00002.safetensors\", \"z\": \"model-00002-of-00002.safetensors\"}}",
         "tensor 'z' is listed in shard 'model-00002-of-00002.safetensors' but is not in it"},
        {"idx_wrong_shard",
         "{\"weight_map\": {\"a.weight\": \"model-00002-of-00002.safetensors\", \"b.bias\": \"model-00001-of-00002.safetensors\","
         " \"c.weight\": \"model-00002-of-00002.safetensors\"}}",
         "tensor 'a.weight' is listed in shard 'model-00002-of-00002.safetensors' but is in"},
        {"idx_unlisted",
         "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"c.weight\": \"model-00002-of-00002.safetensors\"}}",
         "tensor 'b.bias' in"},
        {"idx_escape", "{\"weight_map\": {\"a.weight\": \"../good.safetensors\"}}", "must name a shard file"},
        {"idx_bad_json", "{\"weight_map\": {\"a.weight\": }}", "not valid JSON"},
        {"idx_no_weight_map", "{\"metadata\": {}}", "\"weight_map\" missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *dir = tmp_path(bad[i].dir), *idx = fs_join(dir, "model.safetensors.index.json");
        make_shards(dir, bad[i].index);
        expect_reject(dir, idx, bad[i].problem);
        free(idx);
        free(dir);
    }
    // The same tensor in two shards.
    char *dir = tmp_path("idx_duplicate");
    make_shards(dir, INDEX_OK);
    char *p2 = fs_join(dir, "model-00002-of-00002.safetensors");
    st_write_tensor dup[2] = {{"c.weight", DT_F32, 1, {4}, C}, {"a.weight", DT_F32, 2, {2, 2}, A}};
    EXPECT(safetensors_write(p2, dup, 2, NULL, 0, &err) == GT_OK, "%s", err.msg);
    expect_reject(dir, p2, "tensor 'a.weight' is also in");
    free(p2);
    free(dir);

    // The parser on bytes that are not a file.
    safetensors st = {0};
    EXPECT(safetensors_parse(&st, NULL, 0, 0, "(empty buffer)", &err) == GT_EFORMAT && strstr(err.msg, "(empty buffer)"),
           "%s", err.msg);
    safetensors_close(&st);
}

int main(void) {
    tmpdir = test_tmpdir("safetensors");
    test_roundtrip();
    test_python_fixture();
    test_sharded();
    test_malformed();
    free(tmpdir);
    return test_finish("test_safetensors");
}
