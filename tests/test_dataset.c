// Dataset pipeline: readers, bad rows, masks, packing, shuffles, split, token cache, and the acceptance
// run (1,000 Multilingual-Thinking-shaped rows in a .jsonl.gz, twice: the second from the cache).
//   - one conversation written as a messages row, a flat row and a pre-tokenized row gives one document
//     (the render itself is checked against the template in test_harmony); .gz equals plain; CRLF and
//     blank lines; max_rows;
//   - tests/fixtures/data/bad_rows.jsonl: each row, placed at line 3 after two good rows, must stop the
//     read with "FILE:3: <reason>"; the whole file under on_bad_row = skip is counted row by row;
//   - packing against brute-force facts (each document once, rows within max_seq_len, best fit reaches
//     the optimum where one is known) and the row layout against a direct reconstruction;
//   - the token cache: round trip, damaged/foreign/short files refused, hits and misses by key.
// Uses the tokenizer tests' small BPE (tests/fixtures/tokenizer/tokenizer.json); temp files in
// $GPTOSS_TMP/dataset.
#include "data/data.h"

#include <stdlib.h>
#include <time.h>
#include <zlib.h>

#include "test_util.h"

static const char *TOKENIZER = "tests/fixtures/tokenizer/tokenizer.json";
static const char *BAD_ROWS = "tests/fixtures/data/bad_rows.jsonl";
static const char *SAMPLES = "data/samples/multilingual_sample.jsonl";
static char *tmpdir;
static tokenizer *tok;

static char *tmp(const char *name) { return fs_join(tmpdir, name); }

static void write_gz(const char *path, const char *text, size_t len) {
    gzFile gz = gzopen(path, "wb");
    CHECK(gz && gzwrite(gz, text, (unsigned)len) == (int)len && gzclose(gz) == Z_OK);
}

static void opts(data_options *o, const char *const *files, int n) {
    data_options_defaults(o);
    o->train_files = files;
    o->n_train_files = n;
    o->tokenizer_path = TOKENIZER;
    o->harmony.date = "2025-08-05";
    o->max_seq_len = 256;
}

static int docs_equal(const data_docs *a, const data_docs *b) {
    if (a->n_docs != b->n_docs || a->n_tokens != b->n_tokens) return 0;
    return !memcmp(a->tokens, b->tokens, a->n_tokens * 4) && !memcmp(a->mask, b->mask, a->n_tokens) &&
           !memcmp(a->offsets, b->offsets, (a->n_docs + 1) * 8) && !memcmp(a->src_line, b->src_line, a->n_docs * 4);
}

// ---------------------------------------------------------------------------------------------------
static void test_row_shapes(void) {
    const char *messages_row =
        "{\"id\": 7, \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\", \"thinking\": null},"
        " {\"role\": \"user\", \"content\": \"Wie spät ist es?\", \"thinking\": null},"
        " {\"role\": \"assistant\", \"content\": \"Es ist 12 Uhr.\", \"thinking\": \"Uhrzeit nennen.\"}]}";
    const char *flat_row = "{\"developer\": \"Be brief.\", \"user\": \"Wie spät ist es?\", \"analysis\": \"Uhrzeit "
                           "nennen.\", \"final\": \"Es ist 12 Uhr.\", \"other\": [1, 2]}";
    data_options o;
    opts(&o, NULL, 0);
    token_buf ids[2] = {{0}}, labels[2] = {{0}};
    gt_error err;
    EXPECT(data_row_tokenize(messages_row, strlen(messages_row), &o, tok, "m:1", &ids[0], &labels[0], &err) == GT_OK,
           "%s", err.msg);
    EXPECT(data_row_tokenize(flat_row, strlen(flat_row), &o, tok, "f:1", &ids[1], &labels[1], &err) == GT_OK, "%s",
           err.msg);
    EXPECT(ids[0].n > 20 && ids[0].n == ids[1].n && !memcmp(ids[0].ids, ids[1].ids, ids[0].n * 4) &&
               !memcmp(labels[0].ids, labels[1].ids, ids[0].n * 4),
           "messages and flat rows of one conversation differ (%zu vs %zu tokens)", ids[0].n, ids[1].n);
    // The same as a render + tokenize through the C API, and the labelled tokens end with <|return|>.
    chat_message m[3] = {{CHAT_SYSTEM, "Be brief.", NULL}, {CHAT_USER, "Wie spät ist es?", NULL},
                         {CHAT_ASSISTANT, "Es ist 12 Uhr.", "Uhrzeit nennen."}};
    harmony_text t;
    token_buf want = {0}, want_labels = {0};
    CHECK(harmony_render(m, 3, &o.harmony, 0, &t, &err) == GT_OK);
    CHECK(harmony_tokenize(tok, &t, &want, &want_labels, &err) == GT_OK);
    EXPECT(want.n == ids[0].n && !memcmp(want.ids, ids[0].ids, want.n * 4), "row != direct render");
    EXPECT(labels[0].ids[labels[0].n - 1] == tokenizer_special_id(tok, "<|return|>"), "the last token is not trained <|return|>");
    harmony_text_free(&t);

    // Pre-tokenized: labels -100 are not trained; without labels everything is.
    char row[256];
    snprintf(row, sizeof row, "{\"input_ids\": [%d, 5, 6, 7], \"labels\": [-100, -100, 6, 7]}",
             tokenizer_special_id(tok, "<|start|>"));
    token_buf pi = {0}, pl = {0};
    EXPECT(data_row_tokenize(row, strlen(row), &o, tok, "p:1", &pi, &pl, &err) == GT_OK, "%s", err.msg);
    EXPECT(pi.n == 4 && pl.ids[0] == -1 && pl.ids[1] == -1 && pl.ids[2] == 6 && pl.ids[3] == 7, "pre-tokenized labels wrong");
    const char *nolab = "{\"input_ids\": [4, 5]}";
    pi.n = pl.n = 0;
    EXPECT(data_row_tokenize(nolab, strlen(nolab), &o, tok, "p:2", &pi, &pl, &err) == GT_OK && pl.ids[0] == 4 &&
               pl.ids[1] == 5, "pre-tokenized row without labels is not all trained");
    // Without a tokenizer only pre-tokenized rows are read.
    pi.n = pl.n = 0;
    EXPECT(data_row_tokenize(nolab, strlen(nolab), &o, NULL, "p:3", &pi, &pl, &err) == GT_OK && pi.n == 2,
           "pre-tokenized row without a tokenizer refused");
    EXPECT(data_row_tokenize(messages_row, strlen(messages_row), &o, NULL, "m:2", &pi, &pl, &err) == GT_EUNSUPPORTED &&
               pi.n == 2, "a conversation row without a tokenizer: %s", err.msg);
    // format: messages refuses a flat row; columns with renamed columns and no thinking column.
    o.format = DATA_FORMAT_MESSAGES;
    EXPECT(data_row_tokenize(flat_row, strlen(flat_row), &o, tok, "f:2", &pi, &pl, &err) == GT_EFORMAT &&
               strstr(err.msg, "f:2: 'messages' is missing"), "format messages took a flat row: %s", err.msg);
    o.format = DATA_FORMAT_COLUMNS;
    o.columns.user = "q";
    o.columns.answer = "a";
    o.columns.thinking = "";
    o.columns.system = "";
    const char *renamed = "{\"q\": \"hi\", \"a\": \"yo\", \"analysis\": \"ignored\"}";
    pi.n = pl.n = 0;
    EXPECT(data_row_tokenize(renamed, strlen(renamed), &o, tok, "r:1", &pi, &pl, &err) == GT_OK, "%s", err.msg);
    chat_message m2[2] = {{CHAT_USER, "hi", NULL}, {CHAT_ASSISTANT, "yo", NULL}};
    token_buf w2 = {0}, wl2 = {0};
    CHECK(harmony_render(m2, 2, &o.harmony, 0, &t, &err) == GT_OK);
    CHECK(harmony_tokenize(tok, &t, &w2, &wl2, &err) == GT_OK);
    EXPECT(w2.n == pi.n && !memcmp(w2.ids, pi.ids, pi.n * 4), "renamed columns row differs from its conversation");
    harmony_text_free(&t);
    token_buf *bufs[] = {&ids[0], &ids[1], &labels[0], &labels[1], &want, &want_labels, &pi, &pl, &w2, &wl2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) token_buf_free(bufs[i]);
}

static void test_files(void) {
    char *buf;
    size_t len;
    gt_error err;
    CHECK(fs_read_file(SAMPLES, &buf, &len, &err) == GT_OK);
    // The first 5 rows, CRLF line ends, blank lines between.
    size_t cut = 0;
    for (int k = 0; k < 5; k++) cut = (size_t)(strchr(buf + cut, '\n') - buf) + 1;
    char *crlf = xmalloc(cut * 2 + 16);
    size_t n = 0;
    for (size_t i = 0; i < cut; i++) {
        if (buf[i] == '\n') crlf[n++] = '\r', crlf[n++] = '\n', crlf[n++] = '\r', crlf[n++] = '\n';
        else crlf[n++] = buf[i];
    }
    char *plain = tmp("five.jsonl"), *gz = tmp("five.jsonl.gz"), *crlf_path = tmp("five_crlf.jsonl");
    test_write_file(plain, buf, cut);
    write_gz(gz, buf, cut);
    test_write_file(crlf_path, crlf, n);
    const char *files[3] = {plain, gz, crlf_path};
    data_docs d[3] = {{0}};
    data_options o;
    for (int i = 0; i < 3; i++) {
        opts(&o, files + i, 1);
        EXPECT(data_read_files(files + i, 1, &o, tok, 0, &d[i], &err) == GT_OK, "%s", err.msg);
    }
    EXPECT(d[0].n_docs == 5 && d[0].rows_read == 5, "%zu docs from 5 rows", d[0].n_docs);
    EXPECT(docs_equal(&d[0], &d[1]), ".gz gives other documents than plain");
    EXPECT(d[2].n_docs == 5 && d[2].n_tokens == d[0].n_tokens && !memcmp(d[2].tokens, d[0].tokens, d[0].n_tokens * 4),
           "CRLF + blank lines change the documents");
    EXPECT(d[2].src_line[4] == 9, "line numbers count blank lines: doc 4 at line %u, want 9", d[2].src_line[4]);
    data_docs lim = {0};
    EXPECT(data_read_files(files, 2, &o, tok, 3, &lim, &err) == GT_OK && lim.n_docs == 3 && lim.rows_read == 3,
           "max_rows 3 over two files gave %zu docs", lim.n_docs);
    // Missing and damaged files.
    const char *missing = "tests/fixtures/data/no_such_file.jsonl";
    data_docs m = {0};
    EXPECT(data_read_files(&missing, 1, &o, tok, 0, &m, &err) == GT_ENOTFOUND && strstr(err.msg, missing),
           "missing file: %s", err.msg);
    data_docs_free(&m);
    char *cutgz = tmp("cut.jsonl.gz");
    char *gzbytes;
    size_t gzlen;
    CHECK(fs_read_file(gz, &gzbytes, &gzlen, &err) == GT_OK);
    test_write_file(cutgz, gzbytes, gzlen / 2);
    const char *cf = cutgz;
    EXPECT(data_read_files(&cf, 1, &o, tok, 0, &m, &err) != GT_OK && strstr(err.msg, cutgz),
           "a truncated .gz read without error");
    data_docs_free(&m);
    for (int i = 0; i < 3; i++) data_docs_free(&d[i]);
    data_docs_free(&lim);
    free(gzbytes), free(cutgz), free(plain), free(gz), free(crlf_path), free(crlf), free(buf);
}

// Reasons, in the order of tests/fixtures/data/bad_rows.jsonl.
static const char *const BAD_REASONS[] = {
    "invalid JSON",
    "the row is an array, not a JSON object",
    "'messages' is a string, not an array",
    "'messages' is empty",
    "no assistant turn",
    "the last message is not the assistant's",
    "messages[0].role: 'wizard' is not supported",
    "messages[0].content is an integer, not a string",
    "messages[0].content is missing",
    "messages[1]: a system message is only allowed first",
    "messages[1].content holds <|channel|> tags",
    "input_ids[2] = 999999 is out of range",
    "input_ids[1] is a string, not an integer",
    "'labels' has 1 entries, 'input_ids' 2",
    "no trained token",
    "labels[1] = 7 is neither -100 nor input_ids[1] = 2",
    "column 'final' (data.answer_column) is missing",
    "column 'final' (data.answer_column) is an array, not a string",
    "duplicate object key",
    "tool calls are not supported",
    "only assistant messages carry thinking",
    "invalid JSON",
    "input_ids[1] is a number, not an integer",
    "messages[1] is an integer, not an object",
};

static void test_bad_rows(void) {
    char *buf;
    size_t len;
    gt_error err;
    CHECK(fs_read_file(BAD_ROWS, &buf, &len, &err) == GT_OK);
    const char *good = "{\"user\": \"a\", \"final\": \"b\"}\n{\"input_ids\": [1, 2]}\n";
    size_t n_bad = sizeof BAD_REASONS / sizeof *BAD_REASONS, i = 0;
    char *path = tmp("bad_one.jsonl");
    data_options o;
    for (char *line = buf; *line; i++) {
        char *nl = strchr(line, '\n');
        CHECK(nl);
        char *text = xasprintf("%s%.*s\n", good, (int)(nl - line), line);
        test_write_file(path, text, strlen(text));
        const char *f = path;
        opts(&o, &f, 1);
        data_docs d = {0};
        gt_status st = data_read_files(&f, 1, &o, tok, 0, &d, &err);
        char *where = xasprintf("%s:3:", path);
        EXPECT(i < n_bad && st == GT_EFORMAT && strstr(err.msg, where) == err.msg && strstr(err.msg, BAD_REASONS[i]),
               "bad row %zu: got \"%s\", want \"%s ... %s\"", i + 1, err.msg, where, i < n_bad ? BAD_REASONS[i] : "?");
        EXPECT(strstr(err.msg, "on_bad_row: skip"), "bad row %zu: the message does not name the fix", i + 1);
        data_docs_free(&d);
        free(where);
        free(text);
        line = nl + 1;
    }
    EXPECT(i == n_bad, "%zu bad rows in the fixture, %zu reasons", i, n_bad);
    // Skip: the good rows stay, every bad one is counted.
    char *mixed = xasprintf("%s%s%s", good, buf, good);
    test_write_file(path, mixed, strlen(mixed));
    const char *f = path;
    opts(&o, &f, 1);
    o.on_bad_row = DATA_BAD_ROW_SKIP;
    data_docs d = {0};
    EXPECT(data_read_files(&f, 1, &o, tok, 0, &d, &err) == GT_OK, "skip: %s", err.msg);
    EXPECT(d.n_docs == 4 && d.rows_skipped == n_bad && d.rows_read == n_bad + 4,
           "skip: %zu docs, %llu skipped, %llu read", d.n_docs, (unsigned long long)d.rows_skipped,
           (unsigned long long)d.rows_read);
    EXPECT(d.n_docs == 4 && d.src_line[2] == n_bad + 3, "skip: the third good row is at line %u", d.src_line[2]);
    data_docs_free(&d);
    free(mixed);
    free(path);
    free(buf);
}

// ---------------------------------------------------------------------------------------------------
// Synthetic documents: doc i has lens[i] tokens, token j = 1000*i + j, trained from j >= lens[i]/2.
static void synth_docs(data_docs *d, const int *lens, int n) {
    memset(d, 0, sizeof *d);
    for (int i = 0; i < n; i++) {
        int32_t *ids = xmalloc((size_t)lens[i] * 4), *lab = xmalloc((size_t)lens[i] * 4);
        for (int j = 0; j < lens[i]; j++) ids[j] = 1000 * i + j, lab[j] = j >= lens[i] / 2 ? ids[j] : -1;
        data_docs_push(d, ids, lab, (size_t)lens[i], 0, (uint32_t)i + 1);
        free(ids), free(lab);
    }
}

static void check_pack(const char *what, const data_pack *p, const data_docs *d, const uint32_t *idx, size_t n,
                       int max_seq_len) {
    int *seen = xcalloc(d->n_docs, sizeof *seen);
    for (size_t r = 0; r < p->n_rows; r++) {
        uint32_t len = 0;
        for (uint64_t it = p->row_start[r]; it < p->row_start[r + 1]; it++) {
            seen[p->item_doc[it]]++;
            len += p->item_len[it];
        }
        EXPECT(len == p->row_len[r] && len <= (uint32_t)max_seq_len && len > 0, "%s: row %zu has %u tokens", what, r, len);
    }
    size_t placed = 0;
    for (size_t i = 0; i < n; i++) placed += seen[idx[i]];
    EXPECT(placed == p->n_docs && placed + p->dropped == n, "%s: %zu placed + %zu dropped of %zu", what, placed,
           p->dropped, n);
    for (size_t i = 0; i < d->n_docs; i++) EXPECT(seen[i] <= 1, "%s: document %zu placed %d times", what, i, seen[i]);
    free(seen);
}

static void test_packing(void) {
    // Best fit reaches the optimum 3 rows of 10 here; one document per row gives 6.
    int lens[] = {6, 4, 5, 5, 3, 7, 12, 2};
    data_docs d;
    synth_docs(&d, lens, 8);
    uint32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    data_options o;
    data_options_defaults(&o);
    o.max_seq_len = 10;
    data_pack p;
    gt_error err;
    // doc 6 (12 tokens) is cut to 10 (and fills a row); doc 7 (2) joins a row with 3 + 5 or 7 + ...
    EXPECT(data_pack_build(&d, idx, 8, &o, &p, &err) == GT_OK, "%s", err.msg);
    check_pack("best fit", &p, &d, idx, 8, 10);
    EXPECT(p.n_rows == 5 && p.truncated == 1 && p.dropped == 0, "best fit: %zu rows (optimum 5), %zu cut, %zu dropped",
           p.n_rows, p.truncated, p.dropped);
    EXPECT(p.tokens == 6 + 4 + 5 + 5 + 3 + 7 + 10 + 2, "best fit: %llu tokens", (unsigned long long)p.tokens);

    // The row layout against a direct reconstruction from the items.
    int32_t ids[16], pos[16], doc[16], tgt[16];
    for (size_t r = 0; r < p.n_rows; r++) {
        int real = data_pack_row(&p, &d, r, 16, 99, ids, pos, doc, tgt);
        EXPECT(real == (int)p.row_len[r], "row %zu: %d real tokens, want %u", r, real, p.row_len[r]);
        int t = 0, k = 0;
        for (uint64_t it = p.row_start[r]; it < p.row_start[r + 1]; it++, k++) {
            uint32_t dd = p.item_doc[it];
            for (uint32_t j = 0; j < p.item_len[it]; j++, t++) {
                int32_t want_t = j + 1 < p.item_len[it] && j + 1 >= (uint32_t)lens[dd] / 2 ? (int32_t)(1000 * dd + j + 1) : -1;
                EXPECT(ids[t] == (int32_t)(1000 * dd + j) && pos[t] == (int32_t)j && doc[t] == k && tgt[t] == want_t,
                       "row %zu pos %d: id %d pos %d doc %d target %d; want %u %u %d %d", r, t, ids[t], pos[t], doc[t],
                       tgt[t], 1000 * dd + j, j, k, want_t);
            }
        }
        for (; t < 16; t++) EXPECT(ids[t] == 99 && tgt[t] == -1 && doc[t] == k, "row %zu pad %d wrong", r, t);
    }
    data_pack p2;
    CHECK(data_pack_build(&d, idx, 8, &o, &p2, &err) == GT_OK);
    EXPECT(p2.n_rows == p.n_rows && !memcmp(p2.item_doc, p.item_doc, p.n_docs * 4), "packing is not deterministic");
    data_pack_free(&p2);
    data_pack_free(&p);

    // drop; no packing, no shuffle: file order, one per row.
    o.overlong = DATA_OVERLONG_DROP;
    o.packing = 0;
    o.shuffle = 0;
    CHECK(data_pack_build(&d, idx, 8, &o, &p, &err) == GT_OK);
    check_pack("padding", &p, &d, idx, 8, 10);
    EXPECT(p.n_rows == 7 && p.dropped == 1 && p.truncated == 0, "padding: %zu rows, %zu dropped", p.n_rows, p.dropped);
    for (size_t r = 0; r < p.n_rows; r++)
        EXPECT(p.item_doc[r] == (r < 6 ? r : r + 1), "no shuffle: row %zu holds doc %u", r, p.item_doc[r]);
    data_pack_free(&p);
    // A cut that leaves no trained token drops the document: 12 tokens trained from 6, cut to 5.
    o.overlong = DATA_OVERLONG_TRUNCATE;
    o.max_seq_len = 5;
    uint32_t only6 = 6;
    CHECK(data_pack_build(&d, &only6, 1, &o, &p, &err) == GT_OK);
    EXPECT(p.n_rows == 0 && p.dropped == 1, "cut to nothing trained: %zu rows, %zu dropped", p.n_rows, p.dropped);
    data_pack_free(&p);
    data_docs_free(&d);

    // Many documents: invariants and fill.
    enum { N = 3000 };
    int *many = xmalloc(N * sizeof *many);
    uint32_t *all = xmalloc(N * sizeof *all);
    uint64_t s = 42, total = 0;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        many[i] = 2 + (int)((s >> 33) % 300);
        all[i] = (uint32_t)i;
        total += (uint64_t)many[i];
    }
    synth_docs(&d, many, N);
    data_options_defaults(&o);
    o.max_seq_len = 512;
    o.seed = 7;
    CHECK(data_pack_build(&d, all, N, &o, &p, &err) == GT_OK);
    check_pack("3000 docs", &p, &d, all, N, 512);
    size_t lower = (size_t)((total + 511) / 512);
    EXPECT(p.n_rows <= lower + lower / 50 + 1, "3000 docs: %zu rows, lower bound %zu (fill below 98%%)", p.n_rows, lower);
    data_pack_free(&p);
    data_docs_free(&d);
    free(many);
    free(all);
}

static void test_orders(void) {
    data_options o;
    data_options_defaults(&o);
    o.seed = 3;
    uint32_t a[50], b[50], c[50];
    data_epoch_order(&o, 50, 0, a);
    data_epoch_order(&o, 50, 0, b);
    data_epoch_order(&o, 50, 1, c);
    int seen[50] = {0}, same01 = 1, ident = 1;
    for (int i = 0; i < 50; i++) {
        seen[a[i]]++;
        same01 &= a[i] == c[i];
        ident &= a[i] == (uint32_t)i;
    }
    int perm = 1;
    for (int i = 0; i < 50; i++) perm &= seen[i] == 1;
    EXPECT(perm && !memcmp(a, b, sizeof a) && !same01 && !ident, "epoch order: not a fixed per-epoch permutation");
    o.shuffle = 0;
    data_epoch_order(&o, 50, 5, c);
    for (int i = 0; i < 50; i++) EXPECT(c[i] == (uint32_t)i, "no shuffle: epoch order is not the identity");
}

// ---------------------------------------------------------------------------------------------------
static void test_cache_file(void) {
    int lens[] = {3, 9, 4};
    data_docs d, r;
    synth_docs(&d, lens, 3);
    d.files = xmalloc(sizeof *d.files);
    d.files[0] = xstrdup("some/file.jsonl");
    d.n_files = 1;
    d.rows_read = 5;
    d.rows_skipped = 2;
    char *path = tmp("cache.bin");
    gt_error err;
    EXPECT(token_cache_write(path, 77, &d, &err) == GT_OK, "%s", err.msg);
    EXPECT(token_cache_read(path, 77, &r, &err) == GT_OK, "%s", err.msg);
    EXPECT(docs_equal(&d, &r) && r.rows_read == 5 && r.rows_skipped == 2 && r.n_files == 1 &&
               !strcmp(r.files[0], "some/file.jsonl"), "cache round trip differs");
    data_docs_free(&r);
    EXPECT(token_cache_read(path, 78, &r, &err) == GT_EFORMAT && strstr(err.msg, "key"), "another key accepted");
    char *buf;
    size_t len;
    CHECK(fs_read_file(path, &buf, &len, &err) == GT_OK);
    char *bad = tmp("cache_bad.bin");
    struct { size_t at; int cut; const char *want; } cases[] = {
        {0, 0, "magic"}, {8, 0, "version"}, {len - 1, 0, "hash"}, {len / 2, 0, "hash"}, {0, 1, "bytes"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *copy = xmalloc(len);
        memcpy(copy, buf, len);
        if (cases[i].cut) test_write_file(bad, copy, len - 3);
        else {
            copy[cases[i].at] ^= 0x5a;
            test_write_file(bad, copy, len);
        }
        EXPECT(token_cache_read(bad, 77, &r, &err) == GT_EFORMAT && strstr(err.msg, cases[i].want) && strstr(err.msg, bad),
               "damaged cache %zu: %s", i, err.msg);
        free(copy);
    }
    EXPECT(token_cache_read("tests/fixtures/data/none.bin", 77, &r, &err) == GT_ENOTFOUND, "absent cache");
    free(buf), free(bad), free(path);
    data_docs_free(&d);
}

// The acceptance run: 1,000 Multilingual-Thinking-shaped rows (the 100 bundled samples, ten times, each
// copy's user text made unique) in a .jsonl.gz; the second load must come from the cache, equal.
static void test_pipeline_and_cache(void) {
    char *buf;
    size_t len;
    gt_error err;
    CHECK(fs_read_file(SAMPLES, &buf, &len, &err) == GT_OK);
    size_t cap = len * 11, n = 0;
    char *big = xmalloc(cap);
    int rows = 0;
    for (int copy = 0; copy < 10; copy++) {
        for (char *line = buf; *line;) {
            char *nl = strchr(line, '\n');
            // The user message's "content": "..." becomes "(N) ..." (it precedes "role": "user").
            const char *key = "\"role\": \"user\"";
            char *u = strstr(line, key);
            CHECK(u && u < nl);
            char *c = u;
            while (c > line && strncmp(c, "\"content\": \"", 12)) c--;
            c += 12;
            n += (size_t)snprintf(big + n, cap - n, "%.*s(%d) %.*s\n", (int)(c - line), line, copy, (int)(nl - c), c);
            rows++;
            line = nl + 1;
        }
    }
    EXPECT(rows == 1000, "%d rows", rows);
    char *gz = tmp("mt1000.jsonl.gz"), *cache = tmp("cache"), *plain_copy = tmp("five.jsonl"); // from test_files
    write_gz(gz, big, n);
    const char *files[1] = {gz};
    data_options o;
    opts(&o, files, 1);
    o.max_seq_len = 2048;
    o.val_fraction = 0.05;
    o.cache_dir = cache;
    o.seed = 11;
    // A clean start: remove a cache a previous run left.
    char *cmd = xasprintf("rm -rf '%s'", cache);
    CHECK(system(cmd) == 0);
    free(cmd);
    data_set s1, s2;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT(data_set_load(&o, tok, &s1, &err) == GT_OK, "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    EXPECT(data_set_load(&o, tok, &s2, &err) == GT_OK, "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    EXPECT(!s1.cache_hit && s2.cache_hit, "cache: first %d second %d (want a miss then a hit)", s1.cache_hit, s2.cache_hit);
    EXPECT(s1.docs.n_docs == 1000 && docs_equal(&s1.docs, &s2.docs), "cached documents differ (%zu docs)", s1.docs.n_docs);
    EXPECT(s1.n_val_docs == 50 && s1.val.n_docs == 50 && s1.train.n_docs == 950, "split: %zu val docs, %zu train",
           s1.n_val_docs, s1.train.n_docs);
    EXPECT(s1.train.n_rows == s2.train.n_rows && !memcmp(s1.train.item_doc, s2.train.item_doc, s1.train.n_docs * 4),
           "packing differs between the runs");
    printf("test_dataset: 1,000 rows (%zu tokens, %zu packed rows of <= 2048): %.2f s first, %.3f s from the cache "
           "(informational; bench/NOTES.md has the measurement)\n",
           s1.docs.n_tokens, s1.train.n_rows, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           (double)(t2.tv_sec - t1.tv_sec) + 1e-9 * (double)(t2.tv_nsec - t1.tv_nsec));
    data_set_free(&s2);
    // Packing options are not in the key: a hit; the date is: a miss.
    o.max_seq_len = 1024;
    o.packing = 0;
    EXPECT(data_set_load(&o, tok, &s2, &err) == GT_OK && s2.cache_hit && s2.train.n_rows == s2.train.n_docs,
           "other packing options missed the cache");
    data_set_free(&s2);
    // The rest on the 100 samples (quicker under the sanitizers): the date is in the key.
    const char *small[1] = {SAMPLES};
    o.train_files = small;
    EXPECT(data_set_load(&o, tok, &s2, &err) == GT_OK && !s2.cache_hit, "new data hit the cache");
    data_set_free(&s2);
    o.harmony.date = "2025-08-06";
    EXPECT(data_set_load(&o, tok, &s2, &err) == GT_OK && !s2.cache_hit, "another date hit the cache");
    data_set_free(&s2);
    // Validation by file: the train file's documents train, the val file's validate.
    o.harmony.date = "2025-08-05";
    o.val_fraction = 0;
    const char *val[1] = {plain_copy};
    o.val_files = val;
    o.n_val_files = 1;
    EXPECT(data_set_load(&o, tok, &s2, &err) == GT_OK && s2.n_val_docs == 5 && s2.train.n_docs == 100,
           "validation by file: %zu val docs, %zu train", s2.n_val_docs, s2.train.n_docs);
    data_set_free(&s2);
    data_set_free(&s1);
    free(gz), free(cache), free(plain_copy), free(big), free(buf);
}

int main(void) {
    tmpdir = test_tmpdir("dataset");
    gt_error err;
    if (tokenizer_load_hf(&tok, TOKENIZER, &err) != GT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_row_shapes();
    test_files();
    test_bad_rows();
    test_packing();
    test_orders();
    test_cache_file();
    test_pipeline_and_cache();
    tokenizer_free(tok);
    free(tmpdir);
    return test_finish("test_dataset");
}
