// data/parquet.c against pyarrow (tests/ref/make_parquet_fixture.py wrote tests/fixtures/parquet/):
//   - every mt_*.parquet (Multilingual-Thinking's schema in 9 variants: data page V1/V2, dictionary
//     on/off/falling back, RLE_DICTIONARY and (format 1.0) PLAIN_DICTIONARY pages, UNCOMPRESSED/SNAPPY/
//     GZIP/ZSTD, one page or many pages and row groups) gives,
//     row by row, exactly (json_equal) the objects pyarrow reads (mt_rows.jsonl); types_*.parquet the
//     same for INT32/INT64/FLOAT/DOUBLE/BOOLEAN, unsigned and 8-bit annotations, a required column,
//     list<string>, list<int64>, a struct (types_rows.jsonl);
//   - through the pipeline (data_read_files): a parquet file and its JSONL twin give the same documents,
//     skips and errors ("FILE: row N: ..." for parquet), and max_rows holds;
//   - valid files gptoss does not read (map, list of lists, timestamp, LZ4, BROTLI) are GT_EUNSUPPORTED
//     naming the column or codec;
//   - damaged files: the patched fixtures (a page past its chunk, a SNAPPY / uncompressed size mismatch,
//     a dictionary index out of range) fail with the file, row group, column, page and the reason;
//     every truncation of a file, of its data area under an intact footer, and of its footer under a
//     fixed-up length, and every byte XOR-ed with 0xff (for one file also set to 0 and to 0x80), must
//     fail cleanly (or, for a byte inside the text, read): a message naming the file, no crash
//     (ASan/UBSan in CI).
#include "data/data.h"

#include <jansson.h>
#include <stdlib.h>

#include "test_util.h"

#define DIR "tests/fixtures/parquet/"
static const char *TOKENIZER = "tests/fixtures/tokenizer/tokenizer.json";
static const char *const MT_FILES[] = {
    "mt_v1_plain_none", "mt_v1_dict_snappy", "mt_v1_dict_gzip_pages", "mt_v1_fallback_snappy_pages",
    "mt_v2_dict_zstd_pages", "mt_v2_plain_gzip_pages", "mt_v2_plain_none", "mt_v2_dict_snappy",
    "mt_format1_dict_snappy",
};
static const char *const TYPES_FILES[] = {"types_v1_dict_snappy", "types_v2_plain_zstd_pages"};

static char *fixture(const char *name, const char *ext) {
    char *rel = xasprintf(DIR "%s%s", name, ext), *p = test_src_path(rel);
    free(rel);
    return p;
}

static void read_bytes(const char *path, char **data, size_t *len) {
    gt_error err;
    if (fs_read_file(path, data, len, &err)) gt_die(__FILE__, __LINE__, "test setup: %s", err.msg);
}

// The expected rows: one JSON object a line.
static json_t **load_jsonl(const char *path, size_t *n) {
    char *text;
    size_t len;
    read_bytes(path, &text, &len);
    json_t **rows = NULL;
    *n = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        CHECK(nl);
        json_error_t jerr;
        json_t *row = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!row) gt_die(__FILE__, __LINE__, "%s: %s", path, jerr.text);
        rows = xrealloc(rows, (*n + 1) * sizeof *rows);
        rows[(*n)++] = row;
    }
    free(text);
    return rows;
}

// Reads every row of a parquet file in memory; returns the status of the first failure (err set).
static gt_status read_all(const uint8_t *data, size_t len, const char *what, json_t ***rows, size_t *n, gt_error *err) {
    parquet_reader *r;
    *n = 0;
    if (rows) *rows = NULL;
    gt_status st = parquet_open_mem(&r, data, len, what, err);
    while (!st) {
        json_t *row;
        if ((st = parquet_next_row(r, &row, err)) || !row) break;
        if (rows) {
            *rows = xrealloc(*rows, (*n + 1) * sizeof **rows);
            (*rows)[*n] = row;
        } else {
            json_decref(row);
        }
        (*n)++;
    }
    if (!st) {
        json_t *again; // the end stays the end
        st = parquet_next_row(r, &again, err);
        EXPECT(st == GT_OK && !again, "%s: a row after the end", what);
    }
    parquet_close(r);
    return st;
}

static void free_rows(json_t **rows, size_t n) {
    for (size_t i = 0; i < n; i++) json_decref(rows[i]);
    free(rows);
}

// Each file's rows equal the JSONL's, in order; the first difference is printed.
static void test_against(const char *const *names, int n_names, const char *jsonl) {
    char *jpath = fixture(jsonl, ".jsonl");
    size_t n_want;
    json_t **want = load_jsonl(jpath, &n_want);
    for (int f = 0; f < n_names; f++) {
        char *path = fixture(names[f], ".parquet"), *data;
        size_t len, n_got;
        read_bytes(path, &data, &len);
        json_t **got;
        gt_error err;
        gt_status st = read_all((const uint8_t *)data, len, path, &got, &n_got, &err);
        size_t bad = n_got;
        for (size_t i = 0; i < n_got && i < n_want && bad == n_got; i++)
            if (!json_equal(got[i], want[i])) bad = i;
        int ok = st == GT_OK && n_got == n_want && bad == n_got;
        test_report(ok, "%s: %zu rows equal pyarrow's (%s)", names[f], n_got, st ? err.msg : "read to the end");
        if (!ok && bad < n_got && bad < n_want) {
            char *a = json_dumps(got[bad], JSON_SORT_KEYS), *b = json_dumps(want[bad], JSON_SORT_KEYS);
            fprintf(stderr, "  row %zu differs:\n  got  %s\n  want %s\n", bad + 1, a, b);
            free(a);
            free(b);
        }
        // The same through the file API.
        parquet_reader *r;
        EXPECT(parquet_open(&r, path, &err) == GT_OK && parquet_num_rows(r) == (int64_t)n_want, "%s: %s", path,
               err.msg);
        parquet_close(r);
        EXPECT(parquet_sniff(path) == 1, "%s: not sniffed as parquet", path);
        free_rows(got, n_got);
        free(data);
        free(path);
    }
    free_rows(want, n_want);
    free(jpath);
}

// ---------------------------------------------------------------------------------------------------
// Through the pipeline
static void opts(data_options *o, const char *const *files) {
    data_options_defaults(o);
    o->train_files = files;
    o->n_train_files = 1;
    o->tokenizer_path = TOKENIZER;
    o->harmony.date = "2025-08-05";
}

static int docs_equal(const data_docs *a, const data_docs *b) {
    if (a->n_docs != b->n_docs || a->n_tokens != b->n_tokens || a->rows_read != b->rows_read ||
        a->rows_skipped != b->rows_skipped)
        return 0;
    return !memcmp(a->tokens, b->tokens, a->n_tokens * 4) && !memcmp(a->mask, b->mask, a->n_tokens) &&
           !memcmp(a->offsets, b->offsets, (a->n_docs + 1) * 8) && !memcmp(a->src_line, b->src_line, a->n_docs * 4);
}

static void test_pipeline(const tokenizer *tok) {
    struct {
        const char *parquet, *jsonl;
        int skip;
    } pairs[] = {{"mt_good", "mt_good", 0}, {"mt_v2_dict_zstd_pages", "mt_rows", 1}, {"mt_v1_plain_none", "mt_rows", 1}};
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        char *pq = fixture(pairs[k].parquet, ".parquet"), *js = fixture(pairs[k].jsonl, ".jsonl");
        const char *files[2] = {pq, js};
        data_docs d[2] = {{0}};
        gt_error err;
        for (int i = 0; i < 2; i++) {
            data_options o;
            opts(&o, files + i);
            o.on_bad_row = pairs[k].skip ? DATA_BAD_ROW_SKIP : DATA_BAD_ROW_ERROR;
            EXPECT(data_read_files(files + i, 1, &o, tok, 0, &d[i], &err) == GT_OK, "%s", err.msg);
        }
        test_report(docs_equal(&d[0], &d[1]) && d[0].n_docs > 0,
                    "%s and %s.jsonl: the same %zu documents, %zu tokens, %llu rows, %llu skipped", pairs[k].parquet,
                    pairs[k].jsonl, d[0].n_docs, d[0].n_tokens, (unsigned long long)d[0].rows_read,
                    (unsigned long long)d[0].rows_skipped);
        for (int i = 0; i < 2; i++) data_docs_free(&d[i]);
        free(pq);
        free(js);
    }
    // A bad row stops the read with the file and the row (7: the empty messages list).
    char *pq = fixture("mt_v1_dict_snappy", ".parquet");
    const char *files[1] = {pq};
    data_options o;
    opts(&o, files);
    data_docs d = {0};
    gt_error err;
    gt_status st = data_read_files(files, 1, &o, tok, 0, &d, &err);
    char *want = xasprintf("%s: row 7: 'messages' is empty", pq);
    test_report(st == GT_EFORMAT && strstr(err.msg, want), "a bad parquet row: %s", err.msg);
    free(want);
    data_docs_free(&d);
    // max_rows: reading stops there.
    st = data_read_files(files, 1, &o, tok, 3, &d, &err);
    test_report(st == GT_OK && d.rows_read == 3 && d.n_docs == 3 && d.src_line[2] == 3, "max_rows 3: %llu rows read",
                (unsigned long long)d.rows_read);
    data_docs_free(&d);
    free(pq);
}

// ---------------------------------------------------------------------------------------------------
// Refusals
static void expect_failure(const char *name, gt_status want_st, const char *const *parts, int n_parts) {
    char *path = fixture(name, ".parquet"), *data;
    size_t len, n;
    read_bytes(path, &data, &len);
    gt_error err;
    gt_status st = read_all((const uint8_t *)data, len, path, NULL, &n, &err);
    int ok = st == want_st && !strncmp(err.msg, path, strlen(path));
    for (int i = 0; i < n_parts && ok; i++) ok = strstr(err.msg, parts[i]) != NULL;
    test_report(ok, "%s: %s (%s)", name, st ? err.msg : "read without an error", gt_status_name(st));
    free(data);
    free(path);
}

static void test_refusals(void) {
    static const char *const map[] = {"column 'm' is a map", "JSONL"};
    static const char *const lol[] = {"column 'll'", "list of lists"};
    static const char *const ts[] = {"column 't'", "annotation"};
    static const char *const lz4[] = {"compressed with LZ4", "ZSTD"};
    static const char *const brotli[] = {"compressed with BROTLI"};
    expect_failure("unsupported_map", GT_EUNSUPPORTED, map, 2);
    expect_failure("unsupported_list_of_lists", GT_EUNSUPPORTED, lol, 2);
    expect_failure("unsupported_timestamp", GT_EUNSUPPORTED, ts, 2);
    expect_failure("unsupported_lz4", GT_EUNSUPPORTED, lz4, 2);
    expect_failure("unsupported_brotli", GT_EUNSUPPORTED, brotli, 1);
    static const char *const past[] = {"row group 0, column 'reasoning_language', page 2",
                                       "larger than what is left of its column chunk"};
    static const char *const snappy[] = {"row group 0, column 'reasoning_language', page 1",
                                         "decompressed size mismatch: the SNAPPY data holds"};
    static const char *const dict[] = {"row group 0, column 'reasoning_language', page 2",
                                       "dictionary index 1 is out of range (the dictionary has 1 values)"};
    static const char *const usize[] = {"row group 0, column 'developer', page 1", "says it holds"};
    expect_failure("bad_page_past_chunk", GT_EFORMAT, past, 2);
    expect_failure("bad_snappy_size", GT_EFORMAT, snappy, 2);
    expect_failure("bad_dict_index", GT_EFORMAT, dict, 2);
    expect_failure("bad_uncompressed_size", GT_EFORMAT, usize, 2);

    static const char *const magic[] = {"not a parquet file"};
    static const char *const nothing[] = {"too short"};
    char *text = test_src_path(DIR "mt_rows.jsonl");
    char *data;
    size_t len, n;
    read_bytes(text, &data, &len);
    gt_error err;
    gt_status st = read_all((const uint8_t *)data, len, "rows.jsonl", NULL, &n, &err);
    test_report(st == GT_EFORMAT && strstr(err.msg, magic[0]) && parquet_sniff(text) == 0, "JSONL bytes: %s", err.msg);
    st = read_all((const uint8_t *)"PAR1PAR1", 8, "tiny", NULL, &n, &err);
    test_report(st == GT_EFORMAT && strstr(err.msg, nothing[0]), "8 bytes: %s", err.msg);
    parquet_reader *r;
    st = parquet_open(&r, "tests/fixtures/parquet/no_such_file.parquet", &err);
    test_report(st == GT_ENOTFOUND && !r && strstr(err.msg, "no_such_file.parquet"), "a missing file: %s", err.msg);
    free(data);
    free(text);
}

// ---------------------------------------------------------------------------------------------------
// Damage everywhere: no crash, and a failure names the file. Returns how many variants failed cleanly.
static int damaged_one(const uint8_t *data, size_t len, const char *what, int must_fail, size_t *bad_at) {
    size_t n;
    gt_error err;
    gt_status st = read_all(data, len, what, NULL, &n, &err);
    if (st == GT_OK) {
        if (must_fail && *bad_at == SIZE_MAX) *bad_at = len;
        return 0;
    }
    if (strncmp(err.msg, what, strlen(what)) && *bad_at == SIZE_MAX) *bad_at = len;
    return 1;
}

// modes: 1 = every byte XOR-ed with 0xff; 3 = also set to 0 and to 0x80. data_cuts: also cut the data area.
static void test_damage(const char *name, int modes, int data_cuts) {
    char *path = fixture(name, ".parquet"), *data;
    size_t len;
    read_bytes(path, &data, &len);
    const uint8_t *src = (const uint8_t *)data;
    uint8_t *buf = xmalloc(len + 16);
    uint32_t flen = (uint32_t)src[len - 8] | (uint32_t)src[len - 7] << 8 | (uint32_t)src[len - 6] << 16 |
                    (uint32_t)src[len - 5] << 24;
    size_t data_end = len - 8 - flen;
    size_t bad = SIZE_MAX, failed = 0, tried = 0;
    // 1. every prefix of the file
    for (size_t k = 0; k < len; k++, tried++) {
        memcpy(buf, src, k);
        failed += damaged_one(buf, k, "cut", 1, &bad);
    }
    test_report(bad == SIZE_MAX && failed == tried, "%s: all %zu truncations fail cleanly", name, tried);
    // 2. the data area cut at every length, the footer kept: the chunks lie past the data
    bad = SIZE_MAX;
    failed = tried = 0;
    for (size_t k = 4; data_cuts && k < data_end; k++, tried++) {
        memcpy(buf, src, k);
        memcpy(buf + k, src + data_end, len - data_end);
        failed += damaged_one(buf, k + len - data_end, "cut data", 1, &bad);
    }
    if (data_cuts)
        test_report(bad == SIZE_MAX && failed == tried, "%s: all %zu cuts of the data area fail cleanly", name, tried);
    // 3. the footer cut at every length, its length field set to match: the Thrift reader runs out (a
    // struct always ends with a stop byte)
    bad = SIZE_MAX;
    failed = tried = 0;
    for (uint32_t j = 1; j < flen; j++, tried++) {
        memcpy(buf, src, data_end + j);
        uint8_t tail[8] = {(uint8_t)j, (uint8_t)(j >> 8), (uint8_t)(j >> 16), (uint8_t)(j >> 24), 'P', 'A', 'R', '1'};
        memcpy(buf + data_end + j, tail, 8);
        failed += damaged_one(buf, data_end + j + 8, "cut footer", 1, &bad);
    }
    test_report(bad == SIZE_MAX && failed == tried, "%s: all %zu cuts of the footer fail cleanly", name, tried);
    // 4. every byte changed: must not crash; a failure names the file
    bad = SIZE_MAX;
    failed = tried = 0;
    for (size_t i = 0; i < len; i++)
        for (int m = 0; m < modes; m++, tried++) {
            memcpy(buf, src, len);
            buf[i] = m == 0 ? (uint8_t)~src[i] : m == 1 ? 0 : 0x80;
            if (buf[i] == src[i]) continue;
            failed += damaged_one(buf, len, "changed", 0, &bad);
        }
    test_report(bad == SIZE_MAX, "%s: %zu changed bytes: %zu fail cleanly, the rest read", name, tried, failed);
    free(buf);
    free(data);
    free(path);
}

int main(void) {
    test_against(MT_FILES, (int)(sizeof MT_FILES / sizeof *MT_FILES), "mt_rows");
    test_against((const char *const[]){"mt_good"}, 1, "mt_good");
    test_against(TYPES_FILES, (int)(sizeof TYPES_FILES / sizeof *TYPES_FILES), "types_rows");
    tokenizer *tok;
    gt_error err;
    char *tp = test_src_path(TOKENIZER);
    if (tokenizer_load_hf(&tok, tp, &err)) gt_die(__FILE__, __LINE__, "%s", err.msg);
    free(tp);
    test_pipeline(tok);
    tokenizer_free(tok);
    test_refusals();
    // Time (ASan, -O0): the changed bytes of the paged file cost most; the fuzz target goes further.
    test_damage("mt_v1_dict_snappy", 3, 1);
    test_damage("mt_v2_dict_zstd_pages", 1, 0);
    test_damage("types_v2_plain_zstd_pages", 1, 1);
    return test_finish("test_parquet");
}
