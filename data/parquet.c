// data/parquet.c: Parquet files as dataset rows. Each row becomes the JSON object (jansson) that the same
// row written as one JSONL line would give (what pyarrow's Table.to_pylist() gives), so the rest of data/
// reads it unchanged.
//
// The file format is written here (Debian has no Arrow/Parquet C library); the codecs come from Debian's
// libraries: SNAPPY (libsnappy, its C API), GZIP (zlib), ZSTD (libzstd). A file is
//   "PAR1" | column chunks | FileMetaData (Thrift compact protocol) | u32 LE footer length | "PAR1".
// FileMetaData holds the schema (a depth-first list of nodes) and the row groups; a row group holds one
// column chunk per leaf column; a chunk is pages: at most one dictionary page first, then data pages
// (V1: repetition levels, definition levels and values in one compressed block; V2: the levels
// uncompressed, then the values, compressed).
//
// Supported (what pyarrow writes for Hugging Face datasets):
//   - data pages V1 and V2, dictionary pages; value encodings PLAIN, PLAIN_DICTIONARY / RLE_DICTIONARY, RLE
//     (booleans); levels in the RLE / bit-packed hybrid; codecs UNCOMPRESSED, SNAPPY, GZIP, ZSTD;
//   - leaf types BYTE_ARRAY (UTF-8 text -> JSON string; plain binary too when it is valid UTF-8),
//     INT32 / INT64 (signed or unsigned annotations) -> JSON integer, FLOAT / DOUBLE -> JSON real (NaN and
//     infinities, which JSON cannot hold, become null as in pandas' to_json), BOOLEAN -> true / false;
//     an absent value of an optional field -> null;
//   - shapes: a top-level primitive; a top-level struct of primitives -> object; a top-level list (the
//     standard 3-level LIST: <list> (LIST) { repeated group list { element } }) of primitives or of
//     structs of primitives -> array (of objects), e.g. Multilingual-Thinking's
//     messages: list<struct<content, role, thinking>>. Null lists, empty lists and null elements kept.
// Not supported, refused with GT_EUNSUPPORTED naming the column (or codec, encoding) and the way out:
// maps, lists of lists, structs holding lists or structs, legacy 2-level lists, bare repeated fields,
// INT96, FIXED_LEN_BYTE_ARRAY, date/time/timestamp/decimal annotations, LZO/BROTLI/LZ4 codecs, DELTA_* and
// BYTE_STREAM_SPLIT encodings, encrypted files, column chunks in other files.
//
// Memory: the footer is read whole; then one row group at a time: its column chunks as stored
// (compressed), one decompressed page and the dictionary per column; rows are assembled one at a time
// when asked for. So a file never has to fit in memory, one row group (compressed) does: HF's files
// have row groups of some hundred rows.
//
// Invariants: every length, offset and count read from the file is checked against what holds it before
// it is used (footer inside the file, chunks inside the data area, pages inside their chunk, decompressed
// sizes equal to the page header's, levels <= their maximum, dictionary indices < the dictionary's size,
// values inside their page, entry counts equal to the metadata's). A violation is GT_EFORMAT naming the
// file, the row group, column and page, and what is wrong; after one, the reader only repeats it. A row
// is limited to PQ_ROW_MAX_VALUES values and PQ_ROW_MAX_BYTES bytes of text: a larger one is no
// training example, and the limits keep a damaged file (one RLE run can claim 2^31 entries, one
// dictionary entry can be repeated at every index) from expanding without bound.
#include "data/data.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <snappy-c.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

enum { PQ_ROW_MAX_VALUES = 1 << 22 };
#define PQ_ROW_MAX_BYTES ((uint64_t)1 << 28)
enum { TC_MAX_DEPTH = 32, PQ_MAX_SCHEMA_DEPTH = 16 };

// Thrift compact protocol wire types.
enum { CT_STOP, CT_TRUE, CT_FALSE, CT_BYTE, CT_I16, CT_I32, CT_I64, CT_DOUBLE, CT_BINARY, CT_LIST, CT_SET, CT_MAP,
       CT_STRUCT };
// parquet.thrift enums.
enum { PT_BOOLEAN, PT_INT32, PT_INT64, PT_INT96, PT_FLOAT, PT_DOUBLE, PT_BYTE_ARRAY, PT_FIXED_LEN_BYTE_ARRAY };
enum { REP_REQUIRED, REP_OPTIONAL, REP_REPEATED };
enum { PAGE_DATA, PAGE_INDEX, PAGE_DICTIONARY, PAGE_DATA_V2 };
enum { ENC_PLAIN = 0, ENC_PLAIN_DICTIONARY = 2, ENC_RLE = 3, ENC_BIT_PACKED = 4, ENC_RLE_DICTIONARY = 8 };
enum { CODEC_UNCOMPRESSED, CODEC_SNAPPY, CODEC_GZIP, CODEC_LZO, CODEC_BROTLI, CODEC_LZ4, CODEC_ZSTD, CODEC_LZ4_RAW };
// ConvertedType values that matter here.
enum { CONV_UTF8 = 0, CONV_MAP = 1, CONV_MAP_KEY_VALUE = 2, CONV_LIST = 3, CONV_ENUM = 4, CONV_UINT_8 = 11,
       CONV_UINT_64 = 14, CONV_INT_8 = 15, CONV_INT_64 = 18, CONV_JSON = 19 };
// LogicalType union members (field ids).
enum { LT_STRING = 1, LT_MAP = 2, LT_LIST = 3, LT_ENUM = 4, LT_INTEGER = 10, LT_UNKNOWN = 11, LT_JSON = 12 };

static const char *codec_name(int c) {
    static const char *const names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
    return c >= 0 && c < (int)(sizeof names / sizeof *names) ? names[c] : "an unknown codec";
}
static const char *encoding_name(int e) {
    static const char *const names[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED",
                                        "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
                                        "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
    return e >= 0 && e < (int)(sizeof names / sizeof *names) ? names[e] : "an unknown encoding";
}
static const char *type_name(int t) {
    static const char *const names[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                                        "FIXED_LEN_BYTE_ARRAY"};
    return t >= 0 && t < (int)(sizeof names / sizeof *names) ? names[t] : "an unknown type";
}

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd_u64(const uint8_t *p) { return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }

// ---------------------------------------------------------------------------------------------------
// Thrift compact protocol: a cursor over bytes with a sticky failure (the first reason is kept and
// every later read returns zeros), so the struct decoders below read straight through and check once.
typedef struct tc {
    const uint8_t *p, *begin, *end;
    int depth;
    const char *bad; // NULL while all is well
} tc;

static void tc_fail(tc *c, const char *why) {
    if (!c->bad) c->bad = why;
    c->p = c->end;
}
static uint64_t tc_varint(tc *c) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) {
            tc_fail(c, "truncated");
            return 0;
        }
        uint8_t b = *c->p++;
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    tc_fail(c, "a varint longer than 10 bytes");
    return 0;
}
static int64_t tc_i64(tc *c) {
    uint64_t z = tc_varint(c);
    return (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
}
static int32_t tc_i32(tc *c) {
    int64_t v = tc_i64(c);
    if (v < INT32_MIN || v > INT32_MAX) {
        tc_fail(c, "an i32 out of range");
        return 0;
    }
    return (int32_t)v;
}
static const uint8_t *tc_bytes(tc *c, uint64_t n) {
    if (n > (uint64_t)(c->end - c->p)) {
        tc_fail(c, "truncated");
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    return p;
}
// A binary/string field as a new NUL-terminated string (NULL after a failure).
static char *tc_string(tc *c) {
    uint64_t n = tc_varint(c);
    const uint8_t *p = tc_bytes(c, n);
    if (!p) return NULL;
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}
// Next field of a struct: 1 with *id (delta-coded from the previous one) and *type; 0 at its end or on
// failure.
static int tc_field(tc *c, int *id, int *type) {
    const uint8_t *b = tc_bytes(c, 1);
    if (!b || *b == 0) return 0;
    *type = *b & 15;
    if (*b >> 4) {
        *id += *b >> 4;
    } else {
        int64_t v = tc_i64(c);
        if (v < INT16_MIN || v > INT16_MAX) tc_fail(c, "a field id out of range");
        *id = (int)v;
    }
    return !c->bad;
}
// A list or set header: the element count (at most one element per remaining byte) and element type.
static uint32_t tc_list(tc *c, int *elem_type) {
    const uint8_t *b = tc_bytes(c, 1);
    if (!b) return 0;
    uint64_t n = *b >> 4;
    *elem_type = *b & 15;
    if (n == 15) n = tc_varint(c);
    if (n > (uint64_t)(c->end - c->p)) {
        tc_fail(c, "a list longer than the bytes left");
        return 0;
    }
    return (uint32_t)n;
}
static void tc_skip(tc *c, int type);
// Inside lists and maps a boolean is one byte (in a struct it is the field header's type).
static void tc_skip_elem(tc *c, int type) {
    if (type == CT_TRUE || type == CT_FALSE) tc_bytes(c, 1);
    else tc_skip(c, type);
}
static void tc_skip(tc *c, int type) {
    if (++c->depth > TC_MAX_DEPTH) {
        tc_fail(c, "structures nested too deeply");
        c->depth--;
        return;
    }
    switch (type) {
    case CT_TRUE:
    case CT_FALSE: break;
    case CT_BYTE: tc_bytes(c, 1); break;
    case CT_I16:
    case CT_I32:
    case CT_I64: tc_varint(c); break;
    case CT_DOUBLE: tc_bytes(c, 8); break;
    case CT_BINARY: tc_bytes(c, tc_varint(c)); break;
    case CT_LIST:
    case CT_SET: {
        int et;
        uint32_t n = tc_list(c, &et);
        for (uint32_t i = 0; i < n && !c->bad; i++) tc_skip_elem(c, et);
        break;
    }
    case CT_MAP: {
        uint64_t n = tc_varint(c);
        if (n > (uint64_t)(c->end - c->p) / 2) {
            tc_fail(c, "a map longer than the bytes left");
            break;
        }
        if (n == 0) break;
        const uint8_t *kv = tc_bytes(c, 1);
        for (uint64_t i = 0; kv && i < n && !c->bad; i++) {
            tc_skip_elem(c, *kv >> 4);
            tc_skip_elem(c, *kv & 15);
        }
        break;
    }
    case CT_STRUCT: {
        int id = 0, t;
        while (tc_field(c, &id, &t)) tc_skip(c, t);
        break;
    }
    default: tc_fail(c, "an unknown wire type");
    }
    c->depth--;
}
// The value of an integer field whose wire type must be want (else a failure).
static int64_t tc_int_field(tc *c, int type, int want) {
    if (type != want) {
        tc_fail(c, "a field of the wrong wire type");
        return 0;
    }
    return want == CT_I32 ? tc_i32(c) : tc_i64(c);
}
static int tc_bool_field(tc *c, int type) {
    if (type != CT_TRUE && type != CT_FALSE) tc_fail(c, "a field of the wrong wire type");
    return type == CT_TRUE;
}
static void tc_want(tc *c, int type, int want) {
    if (type != want) tc_fail(c, "a field of the wrong wire type");
}

// ---------------------------------------------------------------------------------------------------
// Footer structures (only the fields gptoss uses; the rest are skipped)
typedef struct pq_element {       // SchemaElement
    char *name;
    int type;                     // physical type, -1 for a group
    int repetition;               // REP_*, -1 when absent (the root)
    int num_children;             // -1 when absent
    int converted;                // -1 when absent
    int logical;                  // LogicalType union member, 0 when absent
    int int_signed;               // LT_INTEGER's IntType.isSigned
} pq_element;

typedef struct pq_chunk_meta {    // ColumnChunk + its ColumnMetaData
    int has_meta, external;       // external: file_path set (the chunk lives in another file)
    int type, codec;
    char *path;                   // path_in_schema joined with '.'
    int64_t num_values, total_compressed, data_offset, dict_offset; // dict_offset -1 when absent
} pq_chunk_meta;

typedef struct pq_row_group {
    int64_t num_rows;
    int n_cols;
    pq_chunk_meta *cols;
} pq_row_group;

static void schema_element_read(tc *c, pq_element *e) {
    *e = (pq_element){.type = -1, .repetition = -1, .num_children = -1, .converted = -1};
    int id = 0, t;
    while (tc_field(c, &id, &t)) {
        switch (id) {
        case 1: e->type = (int)tc_int_field(c, t, CT_I32); break;
        case 3: e->repetition = (int)tc_int_field(c, t, CT_I32); break;
        case 4:
            tc_want(c, t, CT_BINARY);
            free(e->name);
            e->name = tc_string(c);
            break;
        case 5: e->num_children = (int)tc_int_field(c, t, CT_I32); break;
        case 6: e->converted = (int)tc_int_field(c, t, CT_I32); break;
        case 10: { // LogicalType: a union, one member set
            tc_want(c, t, CT_STRUCT);
            int lid = 0, lt;
            while (tc_field(c, &lid, &lt)) {
                e->logical = lid;
                if (lid == LT_INTEGER && lt == CT_STRUCT) { // IntType: 1 bitWidth, 2 isSigned
                    int iid = 0, it;
                    while (tc_field(c, &iid, &it)) {
                        if (iid == 2) e->int_signed = tc_bool_field(c, it);
                        else tc_skip(c, it);
                    }
                } else {
                    tc_skip(c, lt);
                }
            }
            break;
        }
        default: tc_skip(c, t);
        }
    }
    if (!c->bad && !e->name) tc_fail(c, "a schema element without a name");
}

static void column_meta_read(tc *c, pq_chunk_meta *m) {
    int id = 0, t;
    m->has_meta = 1;
    while (tc_field(c, &id, &t)) {
        switch (id) {
        case 1: m->type = (int)tc_int_field(c, t, CT_I32); break;
        case 3: { // path_in_schema
            tc_want(c, t, CT_LIST);
            int et;
            uint32_t n = tc_list(c, &et);
            if (n && et != CT_BINARY) tc_fail(c, "path_in_schema is not a list of strings");
            free(m->path);
            m->path = xstrdup("");
            for (uint32_t i = 0; i < n && !c->bad; i++) {
                char *part = tc_string(c);
                if (!part) break;
                char *joined = xasprintf("%s%s%s", m->path, i ? "." : "", part);
                free(m->path);
                free(part);
                m->path = joined;
            }
            break;
        }
        case 4: m->codec = (int)tc_int_field(c, t, CT_I32); break;
        case 5: m->num_values = tc_int_field(c, t, CT_I64); break;
        case 7: m->total_compressed = tc_int_field(c, t, CT_I64); break;
        case 9: m->data_offset = tc_int_field(c, t, CT_I64); break;
        case 11: m->dict_offset = tc_int_field(c, t, CT_I64); break;
        default: tc_skip(c, t);
        }
    }
}

static void column_chunk_read(tc *c, pq_chunk_meta *m) {
    *m = (pq_chunk_meta){.dict_offset = -1};
    int id = 0, t;
    while (tc_field(c, &id, &t)) {
        if (id == 1) {
            tc_want(c, t, CT_BINARY);
            tc_bytes(c, tc_varint(c));
            m->external = 1;
        } else if (id == 3) {
            tc_want(c, t, CT_STRUCT);
            column_meta_read(c, m);
        } else {
            tc_skip(c, t);
        }
    }
}

static void row_group_read(tc *c, pq_row_group *g) {
    int id = 0, t;
    int seen_cols = 0;
    while (tc_field(c, &id, &t)) {
        if (id == 1 && !seen_cols) {
            seen_cols = 1;
            tc_want(c, t, CT_LIST);
            int et;
            uint32_t n = tc_list(c, &et);
            if (n && et != CT_STRUCT) tc_fail(c, "a row group's columns are not structs");
            g->cols = xcalloc(n ? n : 1, sizeof *g->cols);
            for (uint32_t i = 0; i < n && !c->bad; i++, g->n_cols++) column_chunk_read(c, &g->cols[i]);
        } else if (id == 3) {
            g->num_rows = tc_int_field(c, t, CT_I64);
        } else {
            tc_skip(c, t);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The reader
typedef enum { V_STRING, V_INT, V_UINT, V_REAL, V_BOOL } value_kind;

typedef struct pq_leaf {
    char *path;      // "messages.list.element.content"
    const char *key; // its name in the JSON object of a struct (the leaf's own name)
    int type;        // physical type
    value_kind kind;
    int max_def, max_rep;
} pq_leaf;

typedef enum { FIELD_PRIM, FIELD_STRUCT, FIELD_LIST } field_kind;
typedef struct pq_field {  // one top-level column: one key of the row object
    const char *name;
    field_kind kind;
    int elem_struct;       // FIELD_LIST: elements are structs (else primitives)
    int first_leaf, n_leaves;
    int def_nonnull;       // def >= this: the field itself is not null
    int def_has_elem;      // FIELD_LIST: def >= this: the entry is a list element
    int def_elem;          // FIELD_LIST: def >= this: the element is not null
} pq_field;

typedef struct pq_value {
    const uint8_t *s; // BYTE_ARRAY
    uint32_t n;
    int64_t i;        // INT32 (sign-extended), INT64, BOOLEAN
    double d;         // FLOAT, DOUBLE
} pq_value;

typedef struct plain_dec {
    const uint8_t *p, *end;
    uint64_t bit; // BOOLEAN: next bit from p
} plain_dec;

// RLE / bit-packed hybrid decoder.
typedef struct rle_dec {
    const uint8_t *p, *end;
    int width;            // bits per value, 0..32
    uint32_t left;        // values left in the current run
    int packed;           // the current run is bit-packed
    uint32_t value;       // the current RLE run's value
    const uint8_t *bits;  // the current bit-packed run's data
    uint64_t bit;         // next bit in it
} rle_dec;

typedef struct pq_cursor {   // one leaf column's reading state within the current row group
    uint8_t *chunk;          // the column chunk as stored
    size_t len, pos, cap;
    int64_t num_values, seen; // entries (levels) the metadata promises; entries loaded so far
    int codec, page;         // page: pages read so far (1-based in messages)
    int data_pages;
    // dictionary
    uint8_t *dict_buf;
    pq_value *dict;
    uint32_t n_dict;
    int has_dict;
    // the current data page
    uint8_t *page_buf;       // decompressed page (or values, for V2)
    size_t page_cap;
    int64_t page_left;       // entries left in it
    rle_dec rep, def;
    int encoding;
    plain_dec plain;
    rle_dec idx;             // dictionary indices / RLE booleans
    int idx_ready;
    // the next entry, once peeked
    int have;
    int rep_level, def_level;
} pq_cursor;

struct parquet_reader {
    char *what;
    int fd;                 // -1 when reading from memory
    const uint8_t *mem;
    uint64_t size;
    pq_element *els;
    int n_els;
    pq_leaf *leaves;
    int n_leaves;
    pq_field *fields;
    int n_fields;
    pq_row_group *groups;
    int n_groups;
    int64_t num_rows;
    // reading
    int group;              // the current row group; -1 before the first
    int64_t group_row;      // rows of it returned
    int64_t row;            // rows of the file returned
    pq_cursor *cur;         // (n_leaves)
    uint64_t row_values, row_bytes;
    ZSTD_DCtx *zstd;        // NULL until a ZSTD page comes
    int failed;
    gt_error failure;
};

// Errors: "FILE: row group G, column 'PATH', page P: message". leaf < 0 leaves the column out.
static gt_status pq_fail(parquet_reader *r, gt_error *err, gt_status st, int leaf, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static gt_status pq_fail(parquet_reader *r, gt_error *err, gt_status st, int leaf, const char *fmt, ...) {
    char msg[1024], where[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = 0;
    if (r->group >= 0) n += (size_t)snprintf(where + n, sizeof where - n, ": row group %d", r->group);
    if (leaf >= 0 && n < sizeof where) {
        n += (size_t)snprintf(where + n, sizeof where - n, "%scolumn '%s'", r->group >= 0 ? ", " : ": ",
                              r->leaves[leaf].path);
        if (r->cur && r->cur[leaf].page > 0 && n < sizeof where)
            snprintf(where + n, sizeof where - n, ", page %d", r->cur[leaf].page);
    }
    return gt_fail(err, st, "%s%s: %s", r->what, where, msg);
}

static gt_status src_read(parquet_reader *r, uint64_t off, size_t len, uint8_t *dst, gt_error *err) {
    if (off > r->size || len > r->size - off)
        return pq_fail(r, err, GT_EFORMAT, -1, "bytes %llu..%llu lie past the end of the file (%llu bytes)",
                       (unsigned long long)off, (unsigned long long)(off + len), (unsigned long long)r->size);
    if (r->fd < 0) {
        memcpy(dst, r->mem + off, len);
        return GT_OK;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t got = pread(r->fd, dst + done, len - done, (off_t)(off + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return pq_fail(r, err, got < 0 ? GT_EIO : GT_EFORMAT, -1, "read failed at byte %llu: %s",
                           (unsigned long long)(off + done), got < 0 ? strerror(errno) : "the file got shorter");
        done += (size_t)got;
    }
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// Schema -> fields and leaves
static int rep_of(const pq_element *e) { return e->repetition < 0 ? REP_REQUIRED : e->repetition; }
static int is_list(const pq_element *e) { return e->logical == LT_LIST || e->converted == CONV_LIST; }
static int is_map(const pq_element *e) {
    return e->logical == LT_MAP || e->converted == CONV_MAP || e->converted == CONV_MAP_KEY_VALUE;
}

typedef struct schema_node {
    int n_children;
    int *children; // element indices
} schema_node;

// Links element i and its subtree (depth-first); returns the index after it, -1 on a bad tree.
static int schema_link(const pq_element *els, int n, schema_node *nodes, int i, int depth) {
    if (depth > PQ_MAX_SCHEMA_DEPTH) return -1;
    int nc = els[i].num_children;
    int next = i + 1;
    if (els[i].type < 0) { // a group
        if (nc <= 0 || nc > n - next) return -1;
        nodes[i].children = xmalloc((size_t)nc * sizeof *nodes[i].children);
        for (int k = 0; k < nc; k++) {
            if (next >= n) return -1;
            nodes[i].children[k] = next;
            nodes[i].n_children++;
            next = schema_link(els, n, nodes, next, depth + 1);
            if (next < 0) return -1;
        }
    } else if (nc > 0) {
        return -1;
    }
    return next;
}

static const char *unsupported_tail =
    "gptoss reads flat columns, lists and structs of them; convert the file to JSONL (pandas: "
    "pd.read_parquet(f).to_json(out, orient='records', lines=True, force_ascii=False)) or drop the column";

// A primitive leaf: checks its type and annotation, appends it.
static gt_status leaf_add(parquet_reader *r, const pq_element *e, const char *path, int max_def, int max_rep,
                          gt_error *err) {
    value_kind kind;
    int conv = e->converted, lt = e->logical;
    int annotated = conv >= 0 || (lt && lt != LT_UNKNOWN);
    switch (e->type) {
    case PT_BYTE_ARRAY:
        kind = V_STRING;
        if (annotated && !(lt == LT_STRING || lt == LT_ENUM || lt == LT_JSON) &&
            !(!lt && (conv == CONV_UTF8 || conv == CONV_ENUM || conv == CONV_JSON)))
            goto unsupported;
        break;
    case PT_INT32:
    case PT_INT64:
        kind = V_INT;
        if (lt == LT_INTEGER) kind = e->int_signed ? V_INT : V_UINT;
        else if (!lt && conv >= CONV_UINT_8 && conv <= CONV_UINT_64) kind = V_UINT;
        else if (!lt && conv >= CONV_INT_8 && conv <= CONV_INT_64) kind = V_INT;
        else if (annotated) goto unsupported;
        break;
    case PT_FLOAT:
    case PT_DOUBLE:
        kind = V_REAL;
        if (annotated) goto unsupported;
        break;
    case PT_BOOLEAN:
        kind = V_BOOL;
        if (annotated) goto unsupported;
        break;
    default:
        return gt_fail(err, GT_EUNSUPPORTED, "%s: column '%s' has physical type %s, which gptoss does not read; %s",
                       r->what, path, type_name(e->type), unsupported_tail);
    }
    r->leaves = xrealloc(r->leaves, (size_t)(r->n_leaves + 1) * sizeof *r->leaves);
    r->leaves[r->n_leaves++] = (pq_leaf){xstrdup(path), e->name, e->type, kind, max_def, max_rep};
    return GT_OK;
unsupported:
    return gt_fail(err, GT_EUNSUPPORTED,
                   "%s: column '%s' (%s) carries a %s annotation (logical type %d, converted type %d: dates, times, "
                   "timestamps and decimals are not read); %s",
                   r->what, path, type_name(e->type), lt ? "logical type" : "converted type", lt, conv,
                   unsupported_tail);
}

// A column or member name becomes a JSON key: it must be valid UTF-8.
static gt_status name_check(parquet_reader *r, const char *name, gt_error *err) {
    json_t *probe = json_string(name);
    json_decref(probe);
    return probe ? GT_OK : gt_fail(err, GT_EFORMAT, "%s: a column name is not valid UTF-8", r->what);
}

static gt_status nesting_unsupported(parquet_reader *r, const char *name, const char *what, gt_error *err) {
    return gt_fail(err, GT_EUNSUPPORTED, "%s: column '%s' is %s, a nesting gptoss does not read; %s", r->what, name,
                   what, unsupported_tail);
}

// Members of a struct (group e at base definition level def): all primitive, not repeated.
static gt_status struct_leaves(parquet_reader *r, const schema_node *nodes, int gi, const char *path, int def,
                               int rep, const char *field, gt_error *err) {
    const pq_element *g = &r->els[gi];
    if (is_list(g) || is_map(g))
        return nesting_unsupported(r, field, is_map(g) ? "a map inside a list or struct" : "a list of lists", err);
    for (int k = 0; k < nodes[gi].n_children; k++) {
        const pq_element *m = &r->els[nodes[gi].children[k]];
        for (int j = 0; j < k; j++)
            if (!strcmp(r->els[nodes[gi].children[j]].name, m->name))
                return gt_fail(err, GT_EFORMAT, "%s: column '%s' has two members named '%s'", r->what, field, m->name);
        if (m->type < 0 || rep_of(m) == REP_REPEATED)
            return nesting_unsupported(r, field, "a struct holding a list or struct", err);
        if (name_check(r, m->name, err)) return err->status;
        char *p = xasprintf("%s.%s", path, m->name);
        gt_status st = leaf_add(r, m, p, def + (rep_of(m) == REP_OPTIONAL), rep, err);
        free(p);
        if (st) return st;
    }
    return GT_OK;
}

static gt_status field_compile(parquet_reader *r, const schema_node *nodes, int i, gt_error *err) {
    const pq_element *e = &r->els[i];
    pq_field f = {.name = e->name, .first_leaf = r->n_leaves};
    int opt = rep_of(e) == REP_OPTIONAL;
    f.def_nonnull = opt;
    gt_status st;
    if (rep_of(e) == REP_REPEATED) {
        return nesting_unsupported(r, e->name, "a repeated field without a LIST annotation", err);
    } else if (e->type >= 0) {
        f.kind = FIELD_PRIM;
        st = leaf_add(r, e, e->name, opt, 0, err);
    } else if (is_map(e)) {
        return nesting_unsupported(r, e->name, "a map", err);
    } else if (is_list(e)) {
        // <name> (LIST) { repeated group list { <element> } }: the standard 3-level list.
        const pq_element *rp = nodes[i].n_children == 1 ? &r->els[nodes[i].children[0]] : NULL;
        // A repeated group named "array" or "<name>_tuple" is itself the element (parquet's backward-
        // compatibility rules for 2-level lists): refused, as is a repeated primitive.
        char *tuple = xasprintf("%s_tuple", e->name);
        int legacy = !rp || rep_of(rp) != REP_REPEATED || rp->type >= 0 || nodes[nodes[i].children[0]].n_children != 1 ||
                     !strcmp(rp->name, "array") || !strcmp(rp->name, tuple);
        free(tuple);
        if (legacy) return nesting_unsupported(r, e->name, "a list in the legacy 2-level encoding", err);
        int ei = nodes[nodes[i].children[0]].children[0];
        const pq_element *el = &r->els[ei];
        if (rep_of(el) == REP_REPEATED) return nesting_unsupported(r, e->name, "a list of repeated elements", err);
        f.kind = FIELD_LIST;
        f.def_has_elem = opt + 1;
        f.def_elem = f.def_has_elem + (rep_of(el) == REP_OPTIONAL);
        char *p = xasprintf("%s.%s.%s", e->name, rp->name, el->name);
        if (el->type >= 0) {
            st = leaf_add(r, el, p, f.def_elem, 1, err);
        } else {
            f.elem_struct = 1;
            st = struct_leaves(r, nodes, ei, p, f.def_elem, 1, e->name, err);
        }
        free(p);
    } else {
        f.kind = FIELD_STRUCT;
        st = struct_leaves(r, nodes, i, e->name, opt, 0, e->name, err);
    }
    if (st) return st;
    f.n_leaves = r->n_leaves - f.first_leaf;
    r->fields = xrealloc(r->fields, (size_t)(r->n_fields + 1) * sizeof *r->fields);
    r->fields[r->n_fields++] = f;
    return GT_OK;
}

static gt_status schema_compile(parquet_reader *r, gt_error *err) {
    if (r->n_els < 1 || r->els[0].type >= 0)
        return gt_fail(err, GT_EFORMAT, "%s: footer: the schema has no root group", r->what);
    schema_node *nodes = xcalloc((size_t)r->n_els, sizeof *nodes);
    gt_status st = GT_OK;
    int end = schema_link(r->els, r->n_els, nodes, 0, 0);
    if (end != r->n_els)
        st = gt_fail(err, GT_EFORMAT, "%s: footer: the schema's child counts do not describe a tree of its %d elements (or it "
                     "nests deeper than %d)", r->what, r->n_els, PQ_MAX_SCHEMA_DEPTH);
    for (int k = 0; !st && k < nodes[0].n_children; k++) {
        const pq_element *e = &r->els[nodes[0].children[k]];
        for (int j = 0; j < k && !st; j++)
            if (!strcmp(r->els[nodes[0].children[j]].name, e->name))
                st = gt_fail(err, GT_EFORMAT, "%s: two columns are named '%s'", r->what, e->name);
        if (!st) st = name_check(r, e->name, err);
        if (!st) st = field_compile(r, nodes, nodes[0].children[k], err);
    }
    for (int i = 0; i < r->n_els; i++) free(nodes[i].children);
    free(nodes);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Footer
static gt_status footer_read(parquet_reader *r, const uint8_t *buf, size_t len, gt_error *err) {
    tc c = {buf, buf, buf + len, 0, NULL};
    int id = 0, t, seen_schema = 0, seen_groups = 0;
    while (tc_field(&c, &id, &t)) {
        if (id == 2 && !seen_schema) {
            seen_schema = 1;
            tc_want(&c, t, CT_LIST);
            int et;
            uint32_t n = tc_list(&c, &et);
            if (n && et != CT_STRUCT) tc_fail(&c, "the schema is not a list of structs");
            if (n > INT32_MAX / 2) tc_fail(&c, "the schema is too long");
            r->els = xcalloc(n ? n : 1, sizeof *r->els);
            for (uint32_t i = 0; i < n && !c.bad; i++, r->n_els++) schema_element_read(&c, &r->els[i]);
        } else if (id == 3) {
            r->num_rows = tc_int_field(&c, t, CT_I64);
        } else if (id == 4 && !seen_groups) {
            seen_groups = 1;
            tc_want(&c, t, CT_LIST);
            int et;
            uint32_t n = tc_list(&c, &et);
            if (n && et != CT_STRUCT) tc_fail(&c, "the row groups are not a list of structs");
            if (n > INT32_MAX / 2) tc_fail(&c, "too many row groups");
            r->groups = xcalloc(n ? n : 1, sizeof *r->groups);
            for (uint32_t i = 0; i < n && !c.bad; i++, r->n_groups++) row_group_read(&c, &r->groups[i]);
        } else if (id == 8 || id == 9) {
            return gt_fail(err, GT_EUNSUPPORTED, "%s: the file is encrypted, which gptoss does not read", r->what);
        } else {
            tc_skip(&c, t);
        }
    }
    if (c.bad)
        return gt_fail(err, GT_EFORMAT, "%s: footer (FileMetaData, %zu bytes): %s at byte %zu (a damaged or truncated file?)",
                       r->what, len, c.bad, (size_t)(c.p - c.begin));
    if (!seen_schema) return gt_fail(err, GT_EFORMAT, "%s: footer: no schema", r->what);
    return GT_OK;
}

// Every row group's chunks against the schema's leaves and the file's data area [4, data_end).
static gt_status groups_check(parquet_reader *r, uint64_t data_end, gt_error *err) {
    int64_t rows = 0;
    for (int g = 0; g < r->n_groups; g++) {
        const pq_row_group *rg = &r->groups[g];
        if (rg->num_rows < 0 || rg->num_rows > INT64_MAX - rows)
            return gt_fail(err, GT_EFORMAT, "%s: row group %d: bad row count %lld", r->what, g, (long long)rg->num_rows);
        rows += rg->num_rows;
        if (rg->n_cols != r->n_leaves)
            return gt_fail(err, GT_EFORMAT, "%s: row group %d has %d column chunks, the schema %d leaf columns", r->what,
                           g, rg->n_cols, r->n_leaves);
        for (int i = 0; i < rg->n_cols; i++) {
            const pq_chunk_meta *m = &rg->cols[i];
            const char *path = r->leaves[i].path;
            if (m->external)
                return gt_fail(err, GT_EUNSUPPORTED, "%s: row group %d, column '%s': the chunk lives in another file, "
                               "which gptoss does not read", r->what, g, path);
            if (!m->has_meta)
                return gt_fail(err, GT_EFORMAT, "%s: row group %d, column '%s': no column metadata", r->what, g, path);
            if (!m->path || strcmp(m->path, path))
                return gt_fail(err, GT_EFORMAT, "%s: row group %d: chunk %d is for column '%s', the schema says '%s'",
                               r->what, g, i, m->path ? m->path : "", path);
            if (m->type != r->leaves[i].type)
                return gt_fail(err, GT_EFORMAT, "%s: row group %d, column '%s': the chunk's type %s differs from the "
                               "schema's %s", r->what, g, path, type_name(m->type), type_name(r->leaves[i].type));
            if (m->codec != CODEC_UNCOMPRESSED && m->codec != CODEC_SNAPPY && m->codec != CODEC_GZIP &&
                m->codec != CODEC_ZSTD)
                return gt_fail(err, GT_EUNSUPPORTED,
                               "%s: row group %d, column '%s' is compressed with %s (%d), which gptoss does not read (it "
                               "reads UNCOMPRESSED, SNAPPY, GZIP and ZSTD): re-save the file with one of those (pyarrow: "
                               "pq.write_table(pq.read_table(f), out, compression='zstd')) or convert it to JSONL",
                               r->what, g, path, codec_name(m->codec), m->codec);
            int64_t start = m->dict_offset > 0 && m->dict_offset < m->data_offset ? m->dict_offset : m->data_offset;
            if (m->num_values < 0 || m->total_compressed <= 0 || start < 4 || (uint64_t)start > data_end ||
                (uint64_t)m->total_compressed > data_end - (uint64_t)start)
                return gt_fail(err, GT_EFORMAT, "%s: row group %d, column '%s': the chunk (bytes %lld + %lld, %lld "
                               "values) does not lie inside the data area (bytes 4..%llu)", r->what, g, path,
                               (long long)start, (long long)m->total_compressed, (long long)m->num_values,
                               (unsigned long long)data_end);
            if ((size_t)m->total_compressed != (uint64_t)m->total_compressed)
                return gt_fail(err, GT_ENOMEM, "%s: row group %d, column '%s' is too large", r->what, g, path);
        }
    }
    if (rows != r->num_rows)
        return gt_fail(err, GT_EFORMAT, "%s: the footer says %lld rows, its row groups hold %lld", r->what,
                       (long long)r->num_rows, (long long)rows);
    return GT_OK;
}

static gt_status reader_init(parquet_reader *r, gt_error *err) {
    r->group = -1;
    if (r->size < 12)
        return gt_fail(err, GT_EFORMAT, "%s: %llu bytes is too short for a parquet file (at least 12)", r->what,
                       (unsigned long long)r->size);
    uint8_t head[4], tail[8];
    gt_status st = src_read(r, 0, 4, head, err);
    if (!st) st = src_read(r, r->size - 8, 8, tail, err);
    if (st) return st;
    if (!memcmp(head, "PARE", 4) || !memcmp(tail + 4, "PARE", 4))
        return gt_fail(err, GT_EUNSUPPORTED, "%s: the file is encrypted (magic PARE), which gptoss does not read", r->what);
    if (memcmp(head, "PAR1", 4))
        return gt_fail(err, GT_EFORMAT, "%s: not a parquet file (it does not start with PAR1)", r->what);
    if (memcmp(tail + 4, "PAR1", 4))
        return gt_fail(err, GT_EFORMAT, "%s: the file does not end with PAR1 (truncated? a complete parquet file "
                       "ends with its footer)", r->what);
    uint32_t flen = rd_u32(tail);
    if (flen == 0 || flen > r->size - 12)
        return gt_fail(err, GT_EFORMAT, "%s: the footer length %u does not fit in the file (%llu bytes; truncated?)",
                       r->what, flen, (unsigned long long)r->size);
    uint8_t *footer = xmalloc(flen);
    uint64_t data_end = r->size - 8 - flen;
    st = src_read(r, data_end, flen, footer, err);
    if (!st) st = footer_read(r, footer, flen, err);
    free(footer);
    if (!st) st = schema_compile(r, err);
    if (!st) st = groups_check(r, data_end, err);
    if (!st) r->cur = xcalloc((size_t)(r->n_leaves ? r->n_leaves : 1), sizeof *r->cur);
    return st;
}

void parquet_close(parquet_reader *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    for (int i = 0; i < r->n_els; i++) free(r->els[i].name);
    free(r->els);
    for (int i = 0; i < r->n_leaves; i++) free(r->leaves[i].path);
    free(r->leaves);
    free(r->fields);
    for (int g = 0; g < r->n_groups; g++) {
        for (int i = 0; i < r->groups[g].n_cols; i++) free(r->groups[g].cols[i].path);
        free(r->groups[g].cols);
    }
    free(r->groups);
    for (int i = 0; r->cur && i < r->n_leaves; i++) {
        free(r->cur[i].chunk);
        free(r->cur[i].dict_buf);
        free(r->cur[i].dict);
        free(r->cur[i].page_buf);
    }
    free(r->cur);
    ZSTD_freeDCtx(r->zstd);
    free(r->what);
    free(r);
}

gt_status parquet_open_mem(parquet_reader **out, const uint8_t *data, size_t len, const char *what, gt_error *err) {
    parquet_reader *r = xcalloc(1, sizeof *r);
    r->what = xstrdup(what);
    r->fd = -1;
    r->mem = data;
    r->size = len;
    gt_status st = reader_init(r, err);
    if (st) {
        parquet_close(r);
        r = NULL;
    }
    *out = r;
    return st;
}

gt_status parquet_open(parquet_reader **out, const char *path, gt_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gt_fail(err, errno == ENOENT ? GT_ENOTFOUND : GT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return gt_fail(err, GT_EIO, "%s: not a regular file", path);
    }
    parquet_reader *r = xcalloc(1, sizeof *r);
    r->what = xstrdup(path);
    r->fd = fd;
    r->size = (uint64_t)sb.st_size;
    gt_status st = reader_init(r, err);
    if (st) {
        parquet_close(r);
        r = NULL;
    }
    *out = r;
    return st;
}

int parquet_sniff(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char head[4];
    ssize_t n = read(fd, head, 4);
    close(fd);
    return n == 4 && !memcmp(head, "PAR1", 4);
}

int64_t parquet_num_rows(const parquet_reader *r) { return r->num_rows; }

// ---------------------------------------------------------------------------------------------------
// Pages
static int bit_width(int max_level) {
    int w = 0;
    while (max_level >> w) w++;
    return w;
}

// Next value of an RLE / bit-packed hybrid stream: 1, or 0 when the data ends (or is damaged).
static int rle_next(rle_dec *d, uint32_t *out) {
    while (d->left == 0) {
        if (d->p >= d->end) {
            if (d->width == 0) { // a zero-width stream may be left out: every value is 0
                *out = 0;
                return 1;
            }
            return 0;
        }
        uint64_t h = 0;
        int shift = 0;
        for (;;) {
            if (d->p >= d->end || shift > 28) return 0;
            uint8_t b = *d->p++;
            h |= (uint64_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80)) break;
        }
        if (h & 1) { // bit-packed: h >> 1 groups of 8 values
            uint64_t groups = h >> 1, avail = (uint64_t)(d->end - d->p);
            uint64_t bytes = groups * (uint64_t)d->width;
            uint64_t n = groups * 8;
            if (bytes > avail) { // a last run cut short: the values its bytes hold
                bytes = avail;
                n = d->width ? avail * 8 / (uint64_t)d->width : n;
            }
            d->packed = 1;
            d->bits = d->p;
            d->bit = 0;
            d->left = (uint32_t)(n < UINT32_MAX ? n : UINT32_MAX);
            d->p += bytes;
        } else {
            int nb = (d->width + 7) / 8;
            if (nb > d->end - d->p) return 0;
            uint32_t v = 0;
            for (int k = 0; k < nb; k++) v |= (uint32_t)d->p[k] << (8 * k);
            d->p += nb;
            d->packed = 0;
            d->value = v;
            d->left = (uint32_t)((h >> 1) < UINT32_MAX ? (h >> 1) : UINT32_MAX);
        }
    }
    d->left--;
    if (!d->packed) {
        *out = d->value;
        return 1;
    }
    uint64_t acc = 0;
    size_t byte = (size_t)(d->bit >> 3);
    int sh = (int)(d->bit & 7);
    for (int k = 0; k * 8 < sh + d->width; k++) acc |= (uint64_t)d->bits[byte + k] << (8 * k);
    d->bit += (uint64_t)d->width;
    *out = (uint32_t)((acc >> sh) & ((d->width == 32) ? 0xffffffffull : ((1ull << d->width) - 1)));
    return 1;
}

// Next PLAIN value of a leaf's type: 1, or 0 when the bytes end.
static int plain_next(plain_dec *d, int type, pq_value *v) {
    size_t left = (size_t)(d->end - d->p);
    switch (type) {
    case PT_BOOLEAN:
        if (d->bit >= (uint64_t)left * 8) return 0;
        v->i = (d->p[d->bit >> 3] >> (d->bit & 7)) & 1;
        d->bit++;
        return 1;
    case PT_INT32:
    case PT_FLOAT: {
        if (left < 4) return 0;
        uint32_t u = rd_u32(d->p);
        d->p += 4;
        if (type == PT_INT32) {
            v->i = (int32_t)u;
        } else {
            float f;
            memcpy(&f, &u, 4);
            v->d = f;
        }
        return 1;
    }
    case PT_INT64:
    case PT_DOUBLE: {
        if (left < 8) return 0;
        uint64_t u = rd_u64(d->p);
        d->p += 8;
        if (type == PT_INT64) v->i = (int64_t)u;
        else memcpy(&v->d, &u, 8);
        return 1;
    }
    case PT_BYTE_ARRAY: {
        if (left < 4) return 0;
        uint32_t n = rd_u32(d->p);
        if (n > left - 4) return 0;
        v->s = d->p + 4;
        v->n = n;
        d->p += 4 + (size_t)n;
        return 1;
    }
    }
    return 0;
}

// Decompresses src[0..n) into exactly want bytes at dst; NULL or what is wrong.
// zstd: the reader's decompression context (made on first use: one per call costs more than small pages).
static const char *decompress(int codec, ZSTD_DCtx **zstd, const uint8_t *src, size_t n, uint8_t *dst, size_t want,
                              char *why, size_t why_size) {
    switch (codec) {
    case CODEC_SNAPPY: {
        size_t ulen;
        if (snappy_uncompressed_length((const char *)src, n, &ulen) != SNAPPY_OK) return "the SNAPPY data is damaged";
        if (ulen != want) {
            snprintf(why, why_size, "decompressed size mismatch: the SNAPPY data holds %zu bytes, the page header "
                     "says %zu", ulen, want);
            return why;
        }
        if (snappy_uncompress((const char *)src, n, (char *)dst, &ulen) != SNAPPY_OK || ulen != want)
            return "the SNAPPY data is damaged";
        return NULL;
    }
    case CODEC_GZIP: { // page sizes are i32: both lengths fit zlib's 32-bit counters
        z_stream z;
        memset(&z, 0, sizeof z);
        if (inflateInit2(&z, 15 + 32) != Z_OK) return "zlib could not start"; // gzip or zlib header
        z.next_in = (Bytef *)src;
        z.avail_in = (uInt)n;
        z.next_out = dst;
        z.avail_out = (uInt)want;
        int rc;
        while ((rc = inflate(&z, Z_FINISH)) == Z_STREAM_END && z.avail_in && z.avail_out)
            inflateReset(&z); // another gzip member follows
        const char *res = NULL;
        if (rc == Z_STREAM_END && z.avail_out) {
            snprintf(why, why_size, "decompressed size mismatch: the GZIP data holds %zu bytes, the page header "
                     "says %zu", want - z.avail_out, want);
            res = why;
        } else if (rc != Z_STREAM_END && !z.avail_out) {
            snprintf(why, why_size, "decompressed size mismatch: the GZIP data does not end within the %zu bytes "
                     "the page header says", want);
            res = why;
        } else if (rc != Z_STREAM_END) {
            res = "the GZIP data is damaged or truncated";
        }
        inflateEnd(&z);
        return res;
    }
    case CODEC_ZSTD: {
        unsigned long long fcs = ZSTD_getFrameContentSize(src, n);
        if (fcs == ZSTD_CONTENTSIZE_ERROR) return "the ZSTD data is damaged (no frame header)";
        if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != want) {
            snprintf(why, why_size, "decompressed size mismatch: the ZSTD frame holds %llu bytes, the page header "
                     "says %zu", fcs, want);
            return why;
        }
        if (!*zstd && !(*zstd = ZSTD_createDCtx())) return "zstd could not start (out of memory)";
        size_t got = ZSTD_decompressDCtx(*zstd, dst, want, src, n);
        if (ZSTD_isError(got)) {
            snprintf(why, why_size, "the ZSTD data is damaged (%s; or larger than the %zu bytes the page header says)",
                     ZSTD_getErrorName(got), want);
            return why;
        }
        if (got != want) {
            snprintf(why, why_size, "decompressed size mismatch: the ZSTD data holds %zu bytes, the page header "
                     "says %zu", got, want);
            return why;
        }
        return NULL;
    }
    }
    return "an unsupported codec"; // refused at open
}

typedef struct page_header {
    int type, uncompressed, compressed;
    int has_v1, has_dict, has_v2;
    int num_values, encoding, def_encoding, rep_encoding; // V1, and num_values/encoding of the others
    int dict_num_values, dict_encoding;
    int v2_num_values, v2_num_nulls, v2_encoding, v2_def_len, v2_rep_len, v2_compressed;
} page_header;

static void page_header_read(tc *c, page_header *h) {
    memset(h, 0, sizeof *h);
    h->type = -1;
    h->v2_compressed = 1;
    int id = 0, t;
    while (tc_field(c, &id, &t)) {
        switch (id) {
        case 1: h->type = (int)tc_int_field(c, t, CT_I32); break;
        case 2: h->uncompressed = (int)tc_int_field(c, t, CT_I32); break;
        case 3: h->compressed = (int)tc_int_field(c, t, CT_I32); break;
        case 5: { // DataPageHeader
            tc_want(c, t, CT_STRUCT);
            h->has_v1 = 1;
            int sid = 0, st;
            while (tc_field(c, &sid, &st)) {
                if (sid == 1) h->num_values = (int)tc_int_field(c, st, CT_I32);
                else if (sid == 2) h->encoding = (int)tc_int_field(c, st, CT_I32);
                else if (sid == 3) h->def_encoding = (int)tc_int_field(c, st, CT_I32);
                else if (sid == 4) h->rep_encoding = (int)tc_int_field(c, st, CT_I32);
                else tc_skip(c, st);
            }
            break;
        }
        case 7: { // DictionaryPageHeader
            tc_want(c, t, CT_STRUCT);
            h->has_dict = 1;
            int sid = 0, st;
            while (tc_field(c, &sid, &st)) {
                if (sid == 1) h->dict_num_values = (int)tc_int_field(c, st, CT_I32);
                else if (sid == 2) h->dict_encoding = (int)tc_int_field(c, st, CT_I32);
                else tc_skip(c, st);
            }
            break;
        }
        case 8: { // DataPageHeaderV2
            tc_want(c, t, CT_STRUCT);
            h->has_v2 = 1;
            int sid = 0, st;
            while (tc_field(c, &sid, &st)) {
                switch (sid) {
                case 1: h->v2_num_values = (int)tc_int_field(c, st, CT_I32); break;
                case 2: h->v2_num_nulls = (int)tc_int_field(c, st, CT_I32); break;
                case 4: h->v2_encoding = (int)tc_int_field(c, st, CT_I32); break;
                case 5: h->v2_def_len = (int)tc_int_field(c, st, CT_I32); break;
                case 6: h->v2_rep_len = (int)tc_int_field(c, st, CT_I32); break;
                case 7: h->v2_compressed = tc_bool_field(c, st); break;
                default: tc_skip(c, st);
                }
            }
            break;
        }
        default: tc_skip(c, t);
        }
    }
}

// The page's bytes as decompressed (src itself when stored uncompressed), want bytes.
static gt_status page_bytes(parquet_reader *r, int li, int compressed, const uint8_t *src, size_t n, size_t want,
                            uint8_t **buf, size_t *cap, const uint8_t **out, gt_error *err) {
    pq_cursor *c = &r->cur[li];
    if (!compressed || c->codec == CODEC_UNCOMPRESSED) {
        if (n != want)
            return pq_fail(r, err, GT_EFORMAT, li, "an uncompressed page of %zu bytes says it holds %zu", n, want);
        *out = src;
        return GT_OK;
    }
    if (c->codec == CODEC_GZIP && want / 1032 > n + 64) // deflate expands at most 1032:1
        return pq_fail(r, err, GT_EFORMAT, li, "decompressed size mismatch: %zu bytes of GZIP data cannot hold the "
                       "%zu bytes the page header says", n, want);
    if (want > *cap) {
        free(*buf);
        *buf = xmalloc(want);
        *cap = want;
    }
    char why[256];
    const char *bad = decompress(c->codec, &r->zstd, src, n, *buf, want, why, sizeof why);
    if (bad) return pq_fail(r, err, GT_EFORMAT, li, "%s", bad);
    *out = *buf;
    return GT_OK;
}

static gt_status levels_init(parquet_reader *r, int li, rle_dec *d, int max_level, int encoding, const uint8_t **p,
                             const uint8_t *end, const char *what, gt_error *err) {
    *d = (rle_dec){.width = bit_width(max_level)};
    if (max_level == 0) return GT_OK;
    if (encoding != ENC_RLE)
        return pq_fail(r, err, GT_EUNSUPPORTED, li, "%s levels in the %s encoding, which gptoss does not read (only RLE)",
                       what, encoding_name(encoding));
    if (end - *p < 4) return pq_fail(r, err, GT_EFORMAT, li, "the %s levels' length is cut off", what);
    uint32_t n = rd_u32(*p);
    if (n > (size_t)(end - *p) - 4)
        return pq_fail(r, err, GT_EFORMAT, li, "the %s levels (%u bytes) run past the page's end", what, n);
    d->p = *p + 4;
    d->end = d->p + n;
    *p = d->end;
    return GT_OK;
}

static gt_status values_init(parquet_reader *r, int li, int encoding, const uint8_t *p, const uint8_t *end,
                             gt_error *err) {
    pq_cursor *c = &r->cur[li];
    int type = r->leaves[li].type;
    c->encoding = encoding;
    c->plain = (plain_dec){p, end, 0};
    c->idx_ready = 0;
    if (encoding == ENC_PLAIN) return GT_OK;
    if (encoding == ENC_PLAIN_DICTIONARY || encoding == ENC_RLE_DICTIONARY) {
        if (!c->has_dict)
            return pq_fail(r, err, GT_EFORMAT, li, "a dictionary-encoded page but the chunk has no dictionary page");
        return GT_OK;
    }
    if (encoding == ENC_RLE && type == PT_BOOLEAN) return GT_OK;
    return pq_fail(r, err, GT_EUNSUPPORTED, li,
                   "values in the %s encoding (%d), which gptoss does not read (PLAIN, dictionary, RLE booleans): "
                   "re-save the file with pyarrow's defaults or convert it to JSONL", encoding_name(encoding), encoding);
}

static gt_status dictionary_load(parquet_reader *r, int li, const page_header *h, const uint8_t *body, gt_error *err) {
    pq_cursor *c = &r->cur[li];
    if (c->data_pages || c->has_dict)
        return pq_fail(r, err, GT_EFORMAT, li, "a dictionary page after the chunk's first page");
    if (!h->has_dict) return pq_fail(r, err, GT_EFORMAT, li, "a dictionary page without its header");
    if (h->dict_encoding != ENC_PLAIN && h->dict_encoding != ENC_PLAIN_DICTIONARY)
        return pq_fail(r, err, GT_EUNSUPPORTED, li, "a dictionary in the %s encoding (only PLAIN)",
                       encoding_name(h->dict_encoding));
    const uint8_t *p;
    size_t cap = 0;
    gt_status st = page_bytes(r, li, 1, body, (size_t)h->compressed, (size_t)h->uncompressed, &c->dict_buf, &cap, &p,
                              err);
    if (st) return st;
    // Each value takes at least a bit (BOOLEAN) or 4 bytes (the others): more cannot be there.
    uint64_t most = r->leaves[li].type == PT_BOOLEAN ? (uint64_t)h->uncompressed * 8 : (uint64_t)h->uncompressed / 4;
    if (h->dict_num_values < 0 || (uint64_t)h->dict_num_values > most)
        return pq_fail(r, err, GT_EFORMAT, li, "a dictionary of %d values in %d bytes", h->dict_num_values,
                       h->uncompressed);
    c->dict = xmalloc((size_t)(h->dict_num_values ? h->dict_num_values : 1) * sizeof *c->dict);
    plain_dec d = {p, p + h->uncompressed, 0};
    for (int i = 0; i < h->dict_num_values; i++)
        if (!plain_next(&d, r->leaves[li].type, &c->dict[i]))
            return pq_fail(r, err, GT_EFORMAT, li, "the dictionary page ends after %d of its %d values", i,
                           h->dict_num_values);
    c->n_dict = (uint32_t)h->dict_num_values;
    c->has_dict = 1;
    return GT_OK;
}

// Reads the chunk's next page: a dictionary is kept, a data page becomes the current one.
static gt_status page_next(parquet_reader *r, int li, gt_error *err) {
    pq_cursor *c = &r->cur[li];
    const pq_leaf *L = &r->leaves[li];
    c->page++;
    tc t = {c->chunk + c->pos, c->chunk + c->pos, c->chunk + c->len, 0, NULL};
    page_header h;
    page_header_read(&t, &h);
    if (t.bad)
        return pq_fail(r, err, GT_EFORMAT, li, "page header at chunk byte %zu: %s", c->pos, t.bad);
    size_t hdr = (size_t)(t.p - t.begin);
    if (h.compressed < 0 || h.uncompressed < 0)
        return pq_fail(r, err, GT_EFORMAT, li, "negative page size (%d compressed, %d uncompressed)", h.compressed,
                       h.uncompressed);
    if ((size_t)h.compressed > c->len - c->pos - hdr)
        return pq_fail(r, err, GT_EFORMAT, li, "the page (%d bytes) is larger than what is left of its column chunk "
                       "(%zu bytes)", h.compressed, c->len - c->pos - hdr);
    const uint8_t *body = c->chunk + c->pos + hdr, *p;
    c->pos += hdr + (size_t)h.compressed;
    if (h.type == PAGE_DICTIONARY) return dictionary_load(r, li, &h, body, err);
    if (h.type == PAGE_INDEX) return GT_OK;
    if (h.type != PAGE_DATA && h.type != PAGE_DATA_V2)
        return pq_fail(r, err, GT_EFORMAT, li, "unknown page type %d", h.type);
    c->data_pages++;
    int v2 = h.type == PAGE_DATA_V2;
    if (v2 ? !h.has_v2 : !h.has_v1) return pq_fail(r, err, GT_EFORMAT, li, "a data page without its header");
    int64_t n = v2 ? h.v2_num_values : h.num_values;
    if (n < 0 || n > c->num_values - c->seen)
        return pq_fail(r, err, GT_EFORMAT, li, "the page holds %lld values, more than the %lld left of the chunk's %lld",
                       (long long)n, (long long)(c->num_values - c->seen), (long long)c->num_values);
    gt_status st;
    if (!v2) {
        st = page_bytes(r, li, 1, body, (size_t)h.compressed, (size_t)h.uncompressed, &c->page_buf, &c->page_cap, &p,
                        err);
        const uint8_t *end = p + h.uncompressed;
        if (!st) st = levels_init(r, li, &c->rep, L->max_rep, h.rep_encoding, &p, end, "repetition", err);
        if (!st) st = levels_init(r, li, &c->def, L->max_def, h.def_encoding, &p, end, "definition", err);
        if (!st) st = values_init(r, li, h.encoding, p, end, err);
    } else {
        if (h.v2_rep_len < 0 || h.v2_def_len < 0 || (int64_t)h.v2_rep_len + h.v2_def_len > h.compressed ||
            (int64_t)h.v2_rep_len + h.v2_def_len > h.uncompressed)
            return pq_fail(r, err, GT_EFORMAT, li, "level lengths %d + %d do not fit in the page (%d bytes)",
                           h.v2_rep_len, h.v2_def_len, h.compressed);
        size_t lv = (size_t)h.v2_rep_len + (size_t)h.v2_def_len;
        c->rep = (rle_dec){body, body + h.v2_rep_len, bit_width(L->max_rep), 0, 0, 0, NULL, 0};
        c->def = (rle_dec){body + h.v2_rep_len, body + lv, bit_width(L->max_def), 0, 0, 0, NULL, 0};
        st = page_bytes(r, li, h.v2_compressed, body + lv, (size_t)h.compressed - lv, (size_t)h.uncompressed - lv,
                        &c->page_buf, &c->page_cap, &p, err);
        if (!st) st = values_init(r, li, h.v2_encoding, p, p + ((size_t)h.uncompressed - lv), err);
    }
    if (st) return st;
    c->page_left = n;
    c->seen += n;
    return GT_OK;
}

// Loads the levels of the column's next entry (c->have): 1, 0 at the end of the chunk, -1 on an error.
static int entry_peek(parquet_reader *r, int li, gt_error *err) {
    pq_cursor *c = &r->cur[li];
    const pq_leaf *L = &r->leaves[li];
    if (c->have) return 1;
    while (c->page_left == 0) {
        if (c->pos >= c->len) {
            if (c->seen != c->num_values) {
                pq_fail(r, err, GT_EFORMAT, li, "the chunk's pages hold %lld values, its metadata says %lld",
                        (long long)c->seen, (long long)c->num_values);
                return -1;
            }
            return 0;
        }
        if (page_next(r, li, err)) return -1;
    }
    uint32_t rep = 0, def = 0;
    if (L->max_rep && !rle_next(&c->rep, &rep)) {
        pq_fail(r, err, GT_EFORMAT, li, "the repetition levels end early (%lld values left in the page)",
                (long long)c->page_left);
        return -1;
    }
    if (L->max_def && !rle_next(&c->def, &def)) {
        pq_fail(r, err, GT_EFORMAT, li, "the definition levels end early (%lld values left in the page)",
                (long long)c->page_left);
        return -1;
    }
    if (rep > (uint32_t)L->max_rep || def > (uint32_t)L->max_def) {
        pq_fail(r, err, GT_EFORMAT, li, "levels %u/%u exceed the column's maxima %d/%d (repetition/definition)", rep,
                def, L->max_rep, L->max_def);
        return -1;
    }
    c->page_left--;
    c->have = 1;
    c->rep_level = (int)rep;
    c->def_level = (int)def;
    return 1;
}

// The peeked entry must exist: a row of the row group is still being read.
static gt_status entry_need(parquet_reader *r, int li, gt_error *err) {
    int k = entry_peek(r, li, err);
    if (k < 0) return err->status;
    if (k == 0)
        return pq_fail(r, err, GT_EFORMAT, li, "the column ends at row %lld of the row group's %lld",
                       (long long)r->group_row, (long long)r->groups[r->group].num_rows);
    return GT_OK;
}

static gt_status value_json(parquet_reader *r, int li, const pq_value *v, json_t **out, gt_error *err) {
    const pq_leaf *L = &r->leaves[li];
    if (++r->row_values > PQ_ROW_MAX_VALUES)
        return pq_fail(r, err, GT_EFORMAT, li, "row %lld holds more than %d values (a damaged file? gptoss refuses "
                       "rows this large)", (long long)r->row + 1, PQ_ROW_MAX_VALUES);
    switch (L->kind) {
    case V_STRING:
        r->row_bytes += v->n;
        if (r->row_bytes > PQ_ROW_MAX_BYTES)
            return pq_fail(r, err, GT_EFORMAT, li, "row %lld holds more than %llu bytes of text (a damaged file? "
                           "gptoss refuses rows this large)", (long long)r->row + 1, (unsigned long long)PQ_ROW_MAX_BYTES);
        *out = json_stringn((const char *)v->s, v->n);
        if (!*out)
            return pq_fail(r, err, GT_EFORMAT, li, "row %lld: the value is not valid UTF-8 (binary data?)",
                           (long long)r->row + 1);
        return GT_OK;
    case V_INT: *out = json_integer(v->i); return GT_OK;
    case V_UINT:
        if (L->type == PT_INT32) {
            *out = json_integer((json_int_t)(uint32_t)v->i);
        } else if (v->i < 0) {
            return pq_fail(r, err, GT_EFORMAT, li, "row %lld: the unsigned value %llu does not fit a JSON integer "
                           "(at most 2^63 - 1)", (long long)r->row + 1, (unsigned long long)v->i);
        } else {
            *out = json_integer(v->i);
        }
        return GT_OK;
    case V_REAL: *out = isfinite(v->d) ? json_real(v->d) : json_null(); return GT_OK;
    case V_BOOL: *out = json_boolean(v->i); return GT_OK;
    }
    return GT_OK;
}

// Consumes the peeked entry: *out = its value as JSON, or NULL when it is absent (def < max).
static gt_status entry_take(parquet_reader *r, int li, json_t **out, gt_error *err) {
    pq_cursor *c = &r->cur[li];
    const pq_leaf *L = &r->leaves[li];
    c->have = 0;
    *out = NULL;
    if (c->def_level < L->max_def) return GT_OK;
    pq_value v = {0};
    if (c->encoding == ENC_PLAIN) {
        if (!plain_next(&c->plain, L->type, &v))
            return pq_fail(r, err, GT_EFORMAT, li, "the page's values end early");
    } else {
        if (!c->idx_ready) { // dictionary indices: a bit-width byte, then the hybrid; RLE booleans: a length
            const uint8_t *p = c->plain.p, *end = c->plain.end;
            if (c->encoding == ENC_RLE) {
                if (end - p < 4 || rd_u32(p) > (size_t)(end - p) - 4)
                    return pq_fail(r, err, GT_EFORMAT, li, "the RLE values' length is damaged");
                c->idx = (rle_dec){p + 4, p + 4 + rd_u32(p), 1, 0, 0, 0, NULL, 0};
            } else {
                if (p >= end || *p > 32)
                    return pq_fail(r, err, GT_EFORMAT, li, "the dictionary indices' bit width is %s",
                                   p >= end ? "missing" : "over 32");
                c->idx = (rle_dec){p + 1, end, *p, 0, 0, 0, NULL, 0};
            }
            c->idx_ready = 1;
        }
        uint32_t k;
        if (!rle_next(&c->idx, &k)) return pq_fail(r, err, GT_EFORMAT, li, "the page's values end early");
        if (c->encoding == ENC_RLE) {
            v.i = k & 1;
        } else {
            if (k >= c->n_dict)
                return pq_fail(r, err, GT_EFORMAT, li, "dictionary index %u is out of range (the dictionary has %u "
                               "values)", k, c->n_dict);
            v = c->dict[k];
        }
    }
    return value_json(r, li, &v, out, err);
}

// ---------------------------------------------------------------------------------------------------
// Rows
static gt_status group_start(parquet_reader *r, gt_error *err) {
    const pq_row_group *g = &r->groups[r->group];
    for (int i = 0; i < r->n_leaves; i++) {
        pq_cursor *c = &r->cur[i];
        const pq_chunk_meta *m = &g->cols[i];
        free(c->dict);
        free(c->dict_buf);
        uint8_t *chunk = c->chunk, *page_buf = c->page_buf;
        size_t cap = c->cap, page_cap = c->page_cap;
        *c = (pq_cursor){.chunk = chunk, .cap = cap, .page_buf = page_buf, .page_cap = page_cap};
        c->len = (size_t)m->total_compressed;
        if (c->len > c->cap) {
            free(c->chunk);
            c->chunk = xmalloc(c->len);
            c->cap = c->len;
        }
        int64_t start = m->dict_offset > 0 && m->dict_offset < m->data_offset ? m->dict_offset : m->data_offset;
        gt_status st = src_read(r, (uint64_t)start, c->len, c->chunk, err);
        if (st) return st;
        c->num_values = m->num_values;
        c->codec = m->codec;
    }
    return GT_OK;
}

// After the group's last row every column must be used up.
static gt_status group_finish(parquet_reader *r, gt_error *err) {
    for (int i = 0; i < r->n_leaves; i++) {
        int k = entry_peek(r, i, err);
        if (k < 0) return err->status;
        if (k > 0)
            return pq_fail(r, err, GT_EFORMAT, i, "the column holds more values than the row group's %lld rows",
                           (long long)r->groups[r->group].num_rows);
    }
    return GT_OK;
}

// Where an entry lies in a list column's levels: 0 null list, 1 empty list, 2 null element, 3 element.
static int list_class(const pq_field *f, int def) {
    return def < f->def_nonnull ? 0 : def < f->def_has_elem ? 1 : def < f->def_elem ? 2 : 3;
}

static gt_status leaves_disagree(parquet_reader *r, const pq_field *f, int li, gt_error *err) {
    return pq_fail(r, err, GT_EFORMAT, li, "row %lld: the columns of '%s' disagree on its shape (levels out of step)",
                   (long long)r->row + 1, f->name);
}

// Takes one entry from each of f's leaves: a null (absent) struct/element, or an object of the values.
static gt_status struct_take(parquet_reader *r, const pq_field *f, int present, json_t **out, gt_error *err) {
    *out = present ? json_object() : json_null();
    for (int k = 0; k < f->n_leaves; k++) {
        int li = f->first_leaf + k;
        json_t *v;
        gt_status st = entry_take(r, li, &v, err);
        if (st) {
            json_decref(*out);
            *out = NULL;
            return st;
        }
        if (present) json_object_set_new(*out, r->leaves[li].key, v ? v : json_null());
    }
    return GT_OK;
}

static gt_status field_value(parquet_reader *r, const pq_field *f, json_t **out, gt_error *err) {
    *out = NULL;
    gt_status st;
    for (int k = 0; k < f->n_leaves; k++) {
        int li = f->first_leaf + k;
        if ((st = entry_need(r, li, err))) return st;
        if (r->cur[li].rep_level != 0)
            return pq_fail(r, err, GT_EFORMAT, li, "row %lld starts with repetition level %d (not 0)",
                           (long long)r->row + 1, r->cur[li].rep_level);
    }
    const pq_cursor *c0 = &r->cur[f->first_leaf];
    if (f->kind == FIELD_PRIM) {
        json_t *v;
        if ((st = entry_take(r, f->first_leaf, &v, err))) return st;
        *out = v ? v : json_null();
        return GT_OK;
    }
    if (f->kind == FIELD_STRUCT) {
        int present = c0->def_level >= f->def_nonnull;
        for (int k = 1; k < f->n_leaves; k++)
            if ((r->cur[f->first_leaf + k].def_level >= f->def_nonnull) != present)
                return leaves_disagree(r, f, f->first_leaf + k, err);
        return struct_take(r, f, present, out, err);
    }
    // A list: the first entry says null / empty / first element; continuations have repetition level 1.
    int cls = list_class(f, c0->def_level);
    for (int k = 1; k < f->n_leaves; k++)
        if (list_class(f, r->cur[f->first_leaf + k].def_level) != cls) return leaves_disagree(r, f, f->first_leaf + k, err);
    if (cls < 2) {
        json_t *v;
        for (int k = 0; k < f->n_leaves; k++)
            if ((st = entry_take(r, f->first_leaf + k, &v, err))) return st;
        *out = cls == 0 ? json_null() : json_array();
        return GT_OK;
    }
    json_t *arr = json_array();
    for (;;) {
        if (++r->row_values > PQ_ROW_MAX_VALUES) {
            json_decref(arr);
            return pq_fail(r, err, GT_EFORMAT, f->first_leaf, "row %lld holds more than %d values (a damaged file? "
                           "gptoss refuses rows this large)", (long long)r->row + 1, PQ_ROW_MAX_VALUES);
        }
        json_t *e = NULL;
        if (f->elem_struct) {
            st = struct_take(r, f, cls == 3, &e, err);
        } else {
            st = entry_take(r, f->first_leaf, &e, err);
            if (!st && !e) e = json_null();
        }
        if (e) json_array_append_new(arr, e);
        if (st) break;
        // The next entry continues this row's list when its repetition level is 1, in every leaf alike.
        int more = 0, next_cls = 0;
        for (int k = 0; k < f->n_leaves; k++) {
            int li = f->first_leaf + k, got = entry_peek(r, li, err);
            if (got < 0) {
                st = err->status;
                break;
            }
            int m = got && r->cur[li].rep_level == 1, kc = m ? list_class(f, r->cur[li].def_level) : 0;
            if (m && kc < 2) {
                st = pq_fail(r, err, GT_EFORMAT, li, "row %lld: an empty or null list marker inside a list",
                             (long long)r->row + 1);
                break;
            }
            if (k == 0) {
                more = m;
                next_cls = kc;
            } else if (m != more || kc != next_cls) {
                st = leaves_disagree(r, f, li, err);
                break;
            }
        }
        if (st || !more) break;
        cls = next_cls;
    }
    if (st) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return GT_OK;
}

gt_status parquet_next_row(parquet_reader *r, json_t **row, gt_error *err) {
    *row = NULL;
    if (r->failed) {
        *err = r->failure;
        return r->failure.status;
    }
    gt_status st = GT_OK;
    while (!st && (r->group < 0 || r->group_row == r->groups[r->group].num_rows)) {
        if (r->group >= 0 && (st = group_finish(r, err))) break;
        if (r->group + 1 >= r->n_groups) return GT_OK; // the end
        r->group++;
        r->group_row = 0;
        st = group_start(r, err);
    }
    json_t *obj = st ? NULL : json_object();
    r->row_values = r->row_bytes = 0;
    for (int f = 0; !st && f < r->n_fields; f++) {
        json_t *v;
        st = field_value(r, &r->fields[f], &v, err);
        if (!st) json_object_set_new(obj, r->fields[f].name, v);
    }
    if (st) {
        json_decref(obj);
        r->failed = 1;
        r->failure = *err;
        return st;
    }
    r->group_row++;
    r->row++;
    *row = obj;
    return GT_OK;
}
