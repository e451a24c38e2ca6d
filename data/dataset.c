// Dataset readers: JSONL, JSONL.gz and parquet rows -> tokenized documents with a loss mask.
//
// Row shapes (data_format): {"messages": [{"role", "content", "thinking"?}, ...]} with any other columns
// ignored (HuggingFaceH4/Multilingual-Thinking), flat rows through a column mapping, and pre-tokenized
// {"input_ids": [...], "labels"?: [...]} (HF labels: unshifted, -100 = ignored; labels equal to
// input_ids elsewhere, since gptoss keeps a mask and not a second id stream).
//
// Invariants: a bad row is never silent. Under on_bad_row = error the first one stops the read with
// "file:line: field: reason (fix)"; under skip it is counted in rows_skipped and the first few are logged.
// Files are read through zlib's gzread, which passes plain files through unchanged; a file that starts
// with "PAR1" through data/parquet.c, whose rows are the JSON objects their JSONL lines would be.
#include "data/data.h"

#include <jansson.h>
#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

// ---------------------------------------------------------------------------------------------------
// Options
void data_options_defaults(data_options *o) {
    memset(o, 0, sizeof *o);
    o->format = DATA_FORMAT_AUTO;
    harmony_options_defaults(&o->harmony);
    o->max_seq_len = 2048;
    o->packing = 1;
    o->overlong = DATA_OVERLONG_TRUNCATE;
    o->on_bad_row = DATA_BAD_ROW_ERROR;
    o->shuffle = 1;
}

static const char *col_messages(const data_options *o) { return o->columns.messages ? o->columns.messages : "messages"; }
static const char *col_system(const data_options *o) { return o->columns.system ? o->columns.system : "developer"; }
static const char *col_user(const data_options *o) { return o->columns.user ? o->columns.user : "user"; }
static const char *col_thinking(const data_options *o) { return o->columns.thinking ? o->columns.thinking : "analysis"; }
static const char *col_answer(const data_options *o) { return o->columns.answer ? o->columns.answer : "final"; }

gt_status data_options_check(const data_options *o, gt_error *err) {
    if (o->n_train_files < 1) return gt_fail(err, GT_EINVAL, "data.path: no training file given");
    for (int i = 0; i < o->n_train_files; i++)
        if (!o->train_files[i] || !o->train_files[i][0]) return gt_fail(err, GT_EINVAL, "data.path: training file %d has no name", i);
    for (int i = 0; i < o->n_val_files; i++)
        if (!o->val_files[i] || !o->val_files[i][0]) return gt_fail(err, GT_EINVAL, "data.val_path: validation file %d has no name", i);
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return gt_fail(err, GT_EINVAL, "data.val_fraction: %g is not in [0, 1)", o->val_fraction);
    if (o->n_val_files > 0 && o->val_fraction > 0)
        return gt_fail(err, GT_EINVAL, "data: give validation files or val_fraction, not both");
    if (o->max_seq_len < 2) return gt_fail(err, GT_EINVAL, "data.max_seq_len: %d is too small (at least 2)", o->max_seq_len);
    if ((unsigned)o->format > DATA_FORMAT_TOKENS) return gt_fail(err, GT_EINVAL, "data.format: unknown value");
    // system and thinking may be "" (no such column); the others name a column.
    const char *cols[3] = {o->columns.messages, o->columns.user, o->columns.answer};
    static const char *const names[3] = {"messages", "user", "answer"};
    for (int i = 0; i < 3; i++)
        if (cols[i] && !cols[i][0]) return gt_fail(err, GT_EINVAL, "data.%s_column is empty", names[i]);
    return harmony_options_check(&o->harmony, err);
}

// ---------------------------------------------------------------------------------------------------
// Documents
void data_docs_push(data_docs *d, const int32_t *ids, const int32_t *labels, size_t n, uint32_t file,
                    uint32_t line) {
    if (d->n_docs + 1 >= d->cap_docs) {
        d->cap_docs = d->cap_docs ? d->cap_docs * 2 : 256;
        d->offsets = xrealloc(d->offsets, (d->cap_docs + 1) * sizeof *d->offsets);
        d->src_file = xrealloc(d->src_file, d->cap_docs * sizeof *d->src_file);
        d->src_line = xrealloc(d->src_line, d->cap_docs * sizeof *d->src_line);
    }
    if (d->n_tokens + n > d->cap_tokens) {
        while (d->n_tokens + n > d->cap_tokens) d->cap_tokens = d->cap_tokens ? d->cap_tokens * 2 : 1 << 16;
        d->tokens = xrealloc(d->tokens, d->cap_tokens * sizeof *d->tokens);
        d->mask = xrealloc(d->mask, d->cap_tokens);
    }
    if (d->n_docs == 0) d->offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        d->tokens[d->n_tokens + i] = (uint32_t)ids[i];
        d->mask[d->n_tokens + i] = labels[i] >= 0;
    }
    d->n_tokens += n;
    d->src_file[d->n_docs] = file;
    d->src_line[d->n_docs] = line;
    d->n_docs++;
    d->offsets[d->n_docs] = d->n_tokens;
}

void data_docs_free(data_docs *d) {
    free(d->tokens);
    free(d->mask);
    free(d->offsets);
    free(d->src_file);
    free(d->src_line);
    for (int i = 0; i < d->n_files; i++) free(d->files[i]);
    free(d->files);
    memset(d, 0, sizeof *d);
}

// ---------------------------------------------------------------------------------------------------
// One row
static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

// A string field: required (missing/null is an error) or optional (*out = NULL when missing or null, or
// when key is "": a column the options say does not exist). `label` names it in messages.
static gt_status get_string(const json_t *obj, const char *key, int required, const char *label, const char **out,
                            gt_error *err) {
    *out = NULL;
    if (!key[0]) return GT_OK;
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return gt_fail(err, GT_EFORMAT, "%s is missing", label);
        return GT_OK;
    }
    if (!json_is_string(v)) return gt_fail(err, GT_EFORMAT, "%s is %s, not a string", label, json_type_name(v));
    *out = json_string_value(v);
    return GT_OK;
}

static gt_status check_conversation(const chat_message *m, int n, gt_error *err) {
    int n_assistant = 0;
    for (int i = 0; i < n; i++) n_assistant += m[i].role == CHAT_ASSISTANT;
    if (n_assistant == 0) return gt_fail(err, GT_EFORMAT, "no assistant turn: nothing to train on");
    if (m[n - 1].role != CHAT_ASSISTANT)
        return gt_fail(err, GT_EFORMAT, "the last message is not the assistant's (the trained turn is the last one)");
    return GT_OK;
}

static gt_status render_tokenize(const chat_message *m, int n, const data_options *o, const tokenizer *tok,
                                 token_buf *ids, token_buf *labels, gt_error *err) {
    gt_status st = check_conversation(m, n, err);
    if (st) return st;
    harmony_text t;
    st = harmony_render(m, n, &o->harmony, 0, &t, err);
    if (!st) st = harmony_tokenize(tok, &t, ids, labels, err);
    harmony_text_free(&t);
    return st;
}

static gt_status row_messages(const json_t *row, const data_options *o, const tokenizer *tok, token_buf *ids,
                              token_buf *labels, gt_error *err) {
    const char *key = col_messages(o);
    const json_t *msgs = json_object_get(row, key);
    if (!msgs) return gt_fail(err, GT_EFORMAT, "'%s' is missing", key);
    if (!json_is_array(msgs)) return gt_fail(err, GT_EFORMAT, "'%s' is %s, not an array", key, json_type_name(msgs));
    size_t n = json_array_size(msgs);
    if (n == 0) return gt_fail(err, GT_EFORMAT, "'%s' is empty", key);
    if (n > INT32_MAX) return gt_fail(err, GT_EFORMAT, "'%s' has %zu entries", key, n);
    chat_message *m = xcalloc(n, sizeof *m);
    gt_status st = GT_OK;
    for (size_t i = 0; i < n && !st; i++) {
        const json_t *e = json_array_get(msgs, i);
        char label[3][64];
        static const char *const fields[3] = {"role", "content", "thinking"};
        for (int f = 0; f < 3; f++) snprintf(label[f], sizeof label[f], "messages[%zu].%s", i, fields[f]);
        if (!json_is_object(e)) {
            st = gt_fail(err, GT_EFORMAT, "messages[%zu] is %s, not an object", i, json_type_name(e));
            break;
        }
        const char *role;
        if ((st = get_string(e, "role", 1, label[0], &role, err))) break;
        if (!strcmp(role, "system")) m[i].role = CHAT_SYSTEM;
        else if (!strcmp(role, "developer")) m[i].role = CHAT_DEVELOPER;
        else if (!strcmp(role, "user")) m[i].role = CHAT_USER;
        else if (!strcmp(role, "assistant")) m[i].role = CHAT_ASSISTANT;
        else {
            st = gt_fail(err, GT_EFORMAT, "messages[%zu].role: '%s' is not supported (system, developer, user, assistant)",
                         i, role);
            break;
        }
        const json_t *calls = json_object_get(e, "tool_calls");
        if (calls && !json_is_null(calls) && !(json_is_array(calls) && json_array_size(calls) == 0)) {
            st = gt_fail(err, GT_EFORMAT, "messages[%zu].tool_calls: tool calls are not supported", i);
            break;
        }
        if ((st = get_string(e, "content", 1, label[1], &m[i].content, err))) break;
        if ((st = get_string(e, "thinking", 0, label[2], &m[i].thinking, err))) break;
        // Multilingual-Thinking writes "thinking": null on system and user messages; null = absent.
    }
    if (!st) st = render_tokenize(m, (int)n, o, tok, ids, labels, err);
    free(m);
    return st;
}

static gt_status row_columns(const json_t *row, const data_options *o, const tokenizer *tok, token_buf *ids,
                             token_buf *labels, gt_error *err) {
    chat_message m[3];
    int n = 0;
    const char *cols[4] = {col_system(o), col_user(o), col_thinking(o), col_answer(o)}, *val[4];
    static const char *const keys[4] = {"system", "user", "thinking", "answer"};
    for (int c = 0; c < 4; c++) {
        char label[256];
        snprintf(label, sizeof label, "column '%.100s' (data.%s_column)", cols[c], keys[c]);
        gt_status st = get_string(row, cols[c], c == 1 || c == 3, label, &val[c], err);
        if (st) return st;
    }
    const char *system = val[0], *user = val[1], *thinking = val[2], *answer = val[3];
    if (system) m[n++] = (chat_message){CHAT_SYSTEM, system, NULL};
    m[n++] = (chat_message){CHAT_USER, user, NULL};
    m[n++] = (chat_message){CHAT_ASSISTANT, answer, thinking};
    return render_tokenize(m, n, o, tok, ids, labels, err);
}

// HF labels: -100 is ignored; anything else must be the token itself (gptoss stores a mask).
static gt_status row_tokens(const json_t *row, const tokenizer *tok, token_buf *ids, token_buf *labels,
                            gt_error *err) {
    const json_t *in = json_object_get(row, "input_ids"), *lab = json_object_get(row, "labels");
    if (!in) return gt_fail(err, GT_EFORMAT, "'input_ids' is missing");
    if (!json_is_array(in)) return gt_fail(err, GT_EFORMAT, "'input_ids' is %s, not an array", json_type_name(in));
    size_t n = json_array_size(in);
    if (n < 2) return gt_fail(err, GT_EFORMAT, "'input_ids' has %zu token(s): at least 2 are needed for a target", n);
    if (lab && !json_is_null(lab)) {
        if (!json_is_array(lab)) return gt_fail(err, GT_EFORMAT, "'labels' is %s, not an array", json_type_name(lab));
        if (json_array_size(lab) != n)
            return gt_fail(err, GT_EFORMAT, "'labels' has %zu entries, 'input_ids' %zu: they must match",
                           json_array_size(lab), n);
    } else {
        lab = NULL; // no labels: every token is trained (HF's labels = input_ids)
    }
    // tok may be NULL for pre-tokenized rows (gptoss eval on a model without tokenizer.json): the ids
    // are then range-checked by the model against its vocabulary.
    int vocab = tok ? tokenizer_vocab_size(tok) : INT32_MAX;
    size_t trained = 0, base = ids->n;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(in, i);
        if (!json_is_integer(v))
            return gt_fail(err, GT_EFORMAT, "input_ids[%zu] is %s, not an integer", i, json_type_name(v));
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= vocab)
            return gt_fail(err, GT_EFORMAT, "input_ids[%zu] = %lld is out of range: the tokenizer has ids 0..%d", i,
                           (long long)id, vocab - 1);
        int32_t label = (int32_t)id;
        if (lab) {
            const json_t *l = json_array_get(lab, i);
            if (!json_is_integer(l))
                return gt_fail(err, GT_EFORMAT, "labels[%zu] is %s, not an integer", i, json_type_name(l));
            json_int_t lv = json_integer_value(l);
            if (lv == -100) label = -1;
            else if (lv != id)
                return gt_fail(err, GT_EFORMAT,
                               "labels[%zu] = %lld is neither -100 nor input_ids[%zu] = %lld (labels are unshifted)",
                               i, (long long)lv, i, (long long)id);
        }
        trained += label >= 0 && i > 0; // position 0 is never a target
        token_buf_push(ids, (int32_t)id);
        token_buf_push(labels, label);
    }
    if (trained == 0) {
        ids->n = labels->n = base;
        return gt_fail(err, GT_EFORMAT, "no trained token: every label after the first is -100");
    }
    return GT_OK;
}

// One row's JSON value -> ids/labels; a refused row leaves ids/labels as they were and says `where`.
static gt_status row_tokenize(const json_t *row, const data_options *o, const tokenizer *tok, const char *where,
                              token_buf *ids, token_buf *labels, gt_error *err) {
    size_t ids0 = ids->n, labels0 = labels->n;
    gt_error e;
    gt_status st;
    if (!json_is_object(row)) {
        st = gt_fail(&e, GT_EFORMAT, "the row is %s, not a JSON object", json_type_name(row));
    } else {
        data_format f = o->format;
        if (f == DATA_FORMAT_AUTO)
            f = json_object_get(row, "input_ids") ? DATA_FORMAT_TOKENS
                : json_object_get(row, col_messages(o)) ? DATA_FORMAT_MESSAGES : DATA_FORMAT_COLUMNS;
        if (f == DATA_FORMAT_TOKENS) st = row_tokens(row, tok, ids, labels, &e);
        else if (!tok) st = gt_fail(&e, GT_EUNSUPPORTED, "a conversation row needs a tokenizer (only pre-tokenized "
                                                         "{\"input_ids\": [...]} rows are read without one)");
        else if (f == DATA_FORMAT_MESSAGES) st = row_messages(row, o, tok, ids, labels, &e);
        else st = row_columns(row, o, tok, ids, labels, &e);
    }
    if (!st) return GT_OK;
    ids->n = ids0;
    labels->n = labels0;
    if (st == GT_EINVAL) st = GT_EFORMAT; // a render refusal is the row's fault
    return gt_fail(err, st, "%s: %s", where, e.msg);
}

gt_status data_row_tokenize(const char *line, size_t len, const data_options *o, const tokenizer *tok,
                            const char *where, token_buf *ids, token_buf *labels, gt_error *err) {
    json_error_t jerr;
    json_t *row = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!row) return gt_fail(err, GT_EFORMAT, "%s:%d: invalid JSON: %s", where, jerr.column, jerr.text);
    gt_status st = row_tokenize(row, o, tok, where, ids, labels, err);
    json_decref(row);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Files
typedef struct line_reader {
    gzFile gz;
    char *buf;
    size_t cap, len, pos; // buf[pos..len) not yet returned
    int eof;
} line_reader;

// Next line without its "\n" (and "\r"); 0 at the end, -1 on a read error (err set).
static int line_next(line_reader *r, const char *path, const char **line, size_t *n, gt_error *err) {
    for (;;) {
        char *nl = r->pos < r->len ? memchr(r->buf + r->pos, '\n', r->len - r->pos) : NULL;
        if (nl || (r->eof && r->pos < r->len)) {
            size_t end = nl ? (size_t)(nl - r->buf) : r->len;
            *line = r->buf + r->pos;
            *n = end - r->pos;
            if (*n > 0 && (*line)[*n - 1] == '\r') (*n)--;
            r->pos = nl ? end + 1 : end;
            return 1;
        }
        if (r->eof) return 0;
        if (r->pos > 0) { // keep the partial line at the front
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->len -= r->pos;
            r->pos = 0;
        }
        if (r->cap - r->len < (1 << 16)) r->buf = xrealloc(r->buf, r->cap = r->cap * 2 + (1 << 17));
        size_t room = r->cap - r->len;
        int got = gzread(r->gz, r->buf + r->len, (unsigned)(room < (1u << 30) ? room : (1u << 30)));
        if (got < 0) {
            int code;
            const char *msg = gzerror(r->gz, &code);
            gt_fail(err, GT_EFORMAT, "%s: read failed: %s (a damaged .gz file?)", path, msg);
            return -1;
        }
        if (got == 0) {
            int code;
            const char *msg = gzerror(r->gz, &code);
            if (code != Z_OK) {
                gt_fail(err, GT_EFORMAT, "%s: %s (a truncated .gz file?)", path, msg);
                return -1;
            }
            r->eof = 1;
        }
        r->len += (size_t)got;
    }
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

enum { LOGGED_SKIPS = 5 };

// Where the rows of one file go: each is tokenized and appended, or (a bad row under on_bad_row = skip)
// counted and the first few logged.
typedef struct row_sink {
    const data_options *o;
    const tokenizer *tok;
    data_docs *out;
    uint32_t file_index;
    token_buf ids, labels;
} row_sink;

// One row: a JSONL line (line, n) or a parquet row's JSON object (row, with line NULL). GT_OK when it
// was taken or skipped; else the error that stops the read.
static gt_status sink_row(row_sink *s, const char *line, size_t n, const json_t *row, const char *where,
                          uint32_t rowno, gt_error *err) {
    s->out->rows_read++;
    s->ids.n = s->labels.n = 0;
    gt_error row_err;
    gt_status st = line ? data_row_tokenize(line, n, s->o, s->tok, where, &s->ids, &s->labels, &row_err)
                        : row_tokenize(row, s->o, s->tok, where, &s->ids, &s->labels, &row_err);
    if (st == GT_EFORMAT && s->o->on_bad_row == DATA_BAD_ROW_SKIP) {
        if (s->out->rows_skipped < LOGGED_SKIPS) log_warn("skipping bad row: %s", row_err.msg);
        if (s->out->rows_skipped == LOGGED_SKIPS) log_warn("skipping more bad rows (counted in the summary)");
        s->out->rows_skipped++;
        return GT_OK;
    }
    if (st)
        return gt_fail(err, st, "%s%s", row_err.msg,
                       st == GT_EFORMAT ? " (or set data.on_bad_row: skip to leave bad rows out, counted)" : "");
    data_docs_push(s->out, s->ids.ids, s->labels.ids, s->ids.n, s->file_index, rowno);
    return GT_OK;
}

// A parquet file (data/parquet.c): row N is named "FILE: row N", N from 1.
static gt_status read_parquet(const char *path, row_sink *s, uint64_t max_rows, gt_error *err) {
    parquet_reader *pr;
    gt_status st = parquet_open(&pr, path, err);
    for (uint32_t rowno = 1; !st; rowno++) {
        if (max_rows && s->out->rows_read >= max_rows) break;
        json_t *row;
        if ((st = parquet_next_row(pr, &row, err)) || !row) break;
        char where[4096 + 32];
        snprintf(where, sizeof where, "%s: row %u", path, rowno);
        st = sink_row(s, NULL, 0, row, where, rowno, err);
        json_decref(row);
    }
    parquet_close(pr);
    return st;
}

static gt_status read_one(const char *path, uint32_t file_index, const data_options *o, const tokenizer *tok,
                          uint64_t max_rows, data_docs *out, gt_error *err) {
    row_sink s = {o, tok, out, file_index, {0}, {0}};
    gt_status st = GT_OK;
    if (parquet_sniff(path)) {
        st = read_parquet(path, &s, max_rows, err);
        token_buf_free(&s.ids);
        token_buf_free(&s.labels);
        return st;
    }
    line_reader r = {0};
    r.gz = gzopen(path, "rb");
    if (!r.gz) return gt_fail(err, fs_exists(path) ? GT_EIO : GT_ENOTFOUND, "%s: cannot open: %s", path,
                               fs_exists(path) ? strerror(errno) : "no such file");
    gzbuffer(r.gz, 1 << 17);
    const char *line;
    size_t n;
    int rc;
    uint32_t lineno = 0;
    gt_error read_err;
    while ((rc = line_next(&r, path, &line, &n, &read_err)) > 0) {
        lineno++;
        if (blank(line, n)) continue;
        if (max_rows && out->rows_read >= max_rows) break;
        char where[4096 + 16];
        snprintf(where, sizeof where, "%s:%u", path, lineno);
        if ((st = sink_row(&s, line, n, NULL, where, lineno, err))) break;
    }
    if (rc < 0) st = gt_fail(err, read_err.status, "%s", read_err.msg);
    token_buf_free(&s.ids);
    token_buf_free(&s.labels);
    gzclose(r.gz);
    free(r.buf);
    return st;
}

gt_status data_read_files(const char *const *paths, int n, const data_options *o, const tokenizer *tok,
                          uint64_t max_rows, data_docs *out, gt_error *err) {
    for (int i = 0; i < n; i++) {
        uint32_t idx = (uint32_t)out->n_files;
        out->files = xrealloc(out->files, (size_t)(out->n_files + 1) * sizeof *out->files);
        out->files[out->n_files++] = xstrdup(paths[i]);
        gt_status st = read_one(paths[i], idx, o, tok, max_rows, out, err);
        if (st) return st;
    }
    return GT_OK;
}
