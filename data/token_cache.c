// Token cache: tokenized documents in one binary file, so a restart does not re-tokenize.
//
// Layout (host byte order; the magic doubles as the byte-order check):
//   header   magic "GPTOSSTC", u32 version, u32 header bytes, u64 key, u64 n_docs, u64 n_tokens,
//            u64 n_files, u64 rows_read, u64 rows_skipped, u64 names bytes, u64 body hash
//   body     u64 offsets[n_docs + 1], u32 src_file[n_docs], u32 src_line[n_docs], u32 tokens[n_tokens],
//            u8 mask[n_tokens], the n_files file names each NUL-terminated (names bytes in all)
// Invariants: written with fs_write_atomic (temporary name, fsync, rename), so a reader sees a whole file
// or none; the reader checks the magic, version, key, that the size is exactly what the counts imply, the
// body hash, and every offset/index, before anything is used.
#include "data/data.h"

#include <errno.h>
#include <stdlib.h>

#define CACHE_MAGIC "GPTOSSTC"
enum { CACHE_VERSION = 1 };

typedef struct cache_header {
    char magic[8];
    uint32_t version, header_bytes;
    uint64_t key, n_docs, n_tokens, n_files, rows_read, rows_skipped, names_bytes, body_hash;
} cache_header;

// A 64-bit hash over 8-byte words (a multiply-xorshift step per word); the tail is zero-padded and the
// length mixed in. Not cryptographic: it names cache files and catches damaged ones.
typedef struct hash64 {
    uint64_t h, n;
} hash64;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void hash_bytes(hash64 *s, const void *data, size_t len) {
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        s->h = mix64(s->h ^ w) + 0x9e3779b97f4a7c15ull;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, p + i, len - i);
        s->h = mix64(s->h ^ w ^ 0xff00000000000000ull) + 0x9e3779b97f4a7c15ull;
    }
    s->n += len;
    s->h = mix64(s->h ^ s->n);
}

static void hash_str(hash64 *s, const char *str) { hash_bytes(s, str ? str : "\x01(null)", str ? strlen(str) + 1 : 8); }

static gt_status hash_file(hash64 *s, const char *path, gt_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return gt_fail(err, fs_exists(path) ? GT_EIO : GT_ENOTFOUND, "%s: cannot open: %s", path, strerror(errno));
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = xmalloc(CHUNK);
    size_t got;
    hash_str(s, "file");
    while ((got = fread(buf, 1, CHUNK, f)) > 0) hash_bytes(s, buf, got);
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) return gt_fail(err, GT_EIO, "%s: read failed", path);
    return GT_OK;
}

gt_status token_cache_key(const data_options *o, const char *const *paths, int n, uint64_t *key, gt_error *err) {
    hash64 s = {0x6770746f73735443ull, 0};
    char num[64];
    snprintf(num, sizeof num, "v%d fmt%d bad%d max%llu", CACHE_VERSION, (int)o->format, (int)o->on_bad_row,
             (unsigned long long)o->max_rows);
    hash_str(&s, num);
    const data_columns *c = &o->columns;
    const char *cols[5] = {c->messages, c->system, c->user, c->thinking, c->answer};
    for (int i = 0; i < 5; i++) hash_str(&s, cols[i]);
    // The date as rendered: an unpinned date is today's, so the key changes with it.
    harmony_text t;
    chat_message probe = {CHAT_USER, "", NULL};
    harmony_options h = o->harmony;
    h.train_on = HARMONY_TRAIN_ALL;
    gt_status st = harmony_render(&probe, 1, &h, 0, &t, err);
    if (st) return st;
    hash_str(&s, t.text);
    harmony_text_free(&t);
    snprintf(num, sizeof num, "variant%d train_on%d", (int)o->harmony.variant, (int)o->harmony.train_on);
    hash_str(&s, num);
    if (!o->tokenizer_path) return gt_fail(err, GT_EINVAL, "the token cache needs the tokenizer's path");
    if ((st = hash_file(&s, o->tokenizer_path, err))) return st;
    snprintf(num, sizeof num, "files %d train %d", n, o->n_train_files);
    hash_str(&s, num);
    for (int i = 0; i < n; i++) {
        hash_str(&s, paths[i]); // a renamed file could change which is train and which validation
        if ((st = hash_file(&s, paths[i], err))) return st;
    }
    *key = s.h;
    return GT_OK;
}

static size_t body_bytes(uint64_t n_docs, uint64_t n_tokens, uint64_t names_bytes) {
    return (size_t)((n_docs + 1) * 8 + n_docs * 8 + n_tokens * 5 + names_bytes);
}

gt_status token_cache_write(const char *path, uint64_t key, const data_docs *d, gt_error *err) {
    size_t names = 0;
    for (int i = 0; i < d->n_files; i++) names += strlen(d->files[i]) + 1;
    size_t body = body_bytes(d->n_docs, d->n_tokens, names), total = sizeof(cache_header) + body;
    uint8_t *buf = xmalloc(total), *p = buf + sizeof(cache_header);
    uint64_t zero = 0;
#define PUT(src, bytes) ((bytes) > 0 ? (memcpy(p, (src), (bytes)), p += (bytes)) : p) // empty arrays may be NULL
    if (d->n_docs) PUT(d->offsets, (d->n_docs + 1) * 8);
    else PUT(&zero, 8);
    PUT(d->src_file, d->n_docs * 4);
    PUT(d->src_line, d->n_docs * 4);
    PUT(d->tokens, d->n_tokens * 4);
    PUT(d->mask, d->n_tokens);
    for (int i = 0; i < d->n_files; i++) PUT(d->files[i], strlen(d->files[i]) + 1);
#undef PUT
    CHECK(p == buf + total);
    cache_header h = {.version = CACHE_VERSION, .header_bytes = sizeof(cache_header), .key = key,
                      .n_docs = d->n_docs, .n_tokens = d->n_tokens, .n_files = (uint64_t)d->n_files,
                      .rows_read = d->rows_read, .rows_skipped = d->rows_skipped, .names_bytes = names};
    memcpy(h.magic, CACHE_MAGIC, 8);
    hash64 s = {0, 0};
    hash_bytes(&s, buf + sizeof h, body);
    h.body_hash = s.h;
    memcpy(buf, &h, sizeof h);
    gt_status st = fs_write_atomic(path, buf, total, err);
    free(buf);
    return st;
}

gt_status token_cache_read(const char *path, uint64_t key, data_docs *d, gt_error *err) {
    memset(d, 0, sizeof *d);
    if (!fs_exists(path)) return gt_fail(err, GT_ENOTFOUND, "%s: no token cache yet", path);
    char *buf;
    size_t len;
    gt_status st = fs_read_file(path, &buf, &len, err);
    if (st) return st;
    cache_header h;
#define BAD(...) (free(buf), data_docs_free(d), gt_fail(err, GT_EFORMAT, __VA_ARGS__))
    if (len < sizeof h) return BAD("%s: %zu bytes, shorter than the header (delete it)", path, len);
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, CACHE_MAGIC, 8)) return BAD("%s: not a gptoss token cache (bad magic)", path);
    if (h.version != CACHE_VERSION || h.header_bytes != sizeof h)
        return BAD("%s: token cache version %u, this build reads %d (delete it to rebuild)", path, h.version,
                   CACHE_VERSION);
    if (h.key != key) return BAD("%s: made for other data or settings (key mismatch)", path);
    if (h.n_docs > UINT32_MAX || h.n_tokens > ((uint64_t)1 << 40) || h.n_files > UINT32_MAX ||
        h.names_bytes > ((uint64_t)1 << 30))
        return BAD("%s: implausible counts in the header", path);
    size_t body = body_bytes(h.n_docs, h.n_tokens, h.names_bytes);
    if (len != sizeof h + body)
        return BAD("%s: %zu bytes, the header implies %zu (truncated? delete it)", path, len, sizeof h + body);
    hash64 s = {0, 0};
    hash_bytes(&s, buf + sizeof h, body);
    if (s.h != h.body_hash) return BAD("%s: contents do not match their hash (damaged; delete it)", path);

    const uint8_t *p = (const uint8_t *)buf + sizeof h;
    d->n_docs = d->cap_docs = h.n_docs;
    d->n_tokens = d->cap_tokens = h.n_tokens;
    d->offsets = xmalloc((h.n_docs + 1) * 8);
    d->src_file = xmalloc(h.n_docs ? h.n_docs * 4 : 1);
    d->src_line = xmalloc(h.n_docs ? h.n_docs * 4 : 1);
    d->tokens = xmalloc(h.n_tokens ? h.n_tokens * 4 : 1);
    d->mask = xmalloc(h.n_tokens ? h.n_tokens : 1);
#define GET(dst, bytes) (memcpy((dst), p, (bytes)), p += (bytes))
    GET(d->offsets, (h.n_docs + 1) * 8);
    GET(d->src_file, h.n_docs * 4);
    GET(d->src_line, h.n_docs * 4);
    GET(d->tokens, h.n_tokens * 4);
    GET(d->mask, h.n_tokens);
#undef GET
    if (d->offsets[0] != 0 || d->offsets[h.n_docs] != h.n_tokens) return BAD("%s: bad document offsets", path);
    for (uint64_t i = 0; i < h.n_docs; i++) {
        if (d->offsets[i + 1] <= d->offsets[i]) return BAD("%s: document %llu is empty or out of order", path,
                                                            (unsigned long long)i);
        if (d->src_file[i] >= h.n_files) return BAD("%s: document %llu names file %u of %llu", path,
                                                     (unsigned long long)i, d->src_file[i],
                                                     (unsigned long long)h.n_files);
    }
    for (uint64_t i = 0; i < h.n_tokens; i++)
        if (d->mask[i] > 1) return BAD("%s: mask byte %llu is %u", path, (unsigned long long)i, d->mask[i]);
    const char *names = (const char *)p, *end = names + h.names_bytes;
    d->files = xcalloc(h.n_files ? h.n_files : 1, sizeof *d->files);
    for (uint64_t i = 0; i < h.n_files; i++) {
        const char *z = names < end ? memchr(names, 0, (size_t)(end - names)) : NULL;
        if (!z) return BAD("%s: file name table is cut short", path);
        d->files[i] = xstrdup(names);
        d->n_files++;
        names = z + 1;
    }
    if (names != end) return BAD("%s: file name table has trailing bytes", path);
#undef BAD
    d->rows_read = h.rows_read;
    d->rows_skipped = h.rows_skipped;
    free(buf);
    return GT_OK;
}
