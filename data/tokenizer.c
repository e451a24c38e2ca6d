// tokenizer: byte-level BPE as gpt-oss uses it (o200k_harmony), loaded from an HF tokenizer.json or from a
// tiktoken rank file.
//
// Encode: text -> split at added tokens (leftmost-longest match; special ones only with allow_special) ->
// each segment split by the pre-tokenizer regex (PCRE2, UTF + UCP + MATCH_INVALID_UTF, JIT) the way HF's
// Split "Isolated" does it: every match is a piece and so is every gap between matches -> each piece:
// a single byte is its byte token; a whole piece found in the vocabulary is one token when ignore_merges is
// set (tiktoken always does this); otherwise the BPE loop merges, again and again, the adjacent pair with
// the lowest rank (leftmost on ties) until no adjacent pair has a rank.
//
// The merge table maps a pair of token ids to (rank, merged id):
//   - HF tokenizer.json: rank = the line of the pair in model.merges (HF's rule; gpt-oss's merges were
//     generated from tiktoken ranks, so there both rules agree),
//   - tiktoken: rank = the rank of the concatenated token (tiktoken's rule), one entry for every way of
//     cutting a token into two tokens.
// The merge loop is a min-heap of (rank, position) over a linked list of symbols: O(n log n) per piece,
// scratch reused across pieces. Lookups of byte-byte pairs (all initial pairs) go to a 256x256 table; the
// large merge table (446k entries for o200k) sits behind a bit filter (bench/NOTES.md has the numbers).
//
// Invariants after load (the tokenizer is immutable; encode/decode from several threads is safe):
//   - ids 0 .. n_ids-1; id i has bytes tok_off[i], tok_len[i] unless tok_len[i] == NO_TOKEN (a hole);
//   - byte_id[b] is a vocabulary token for every byte b (checked at load), so every byte string encodes
//     and decode(encode(x)) == x for any bytes x, valid UTF-8 or not;
//   - for every merge entry, bytes(merged) == bytes(left) + bytes(right).
#include "data/data.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <zlib.h>

#define NO_TOKEN UINT32_MAX
#define TOK_MAX_IDS ((1 << 21) - 1) // ids from here on are refused (o200k_harmony has 201088)
#define ID_MASK ((1u << 21) - 1)     // the id bits of a bytes_slot

enum { ID_VOCAB = 1, ID_ADDED = 2, ID_SPECIAL = 4 };

// Byte string -> id. Open addressing, linear probing; the key of a slot is the bytes of its id. A slot
// also holds the key's length (capped), so that a probe reads the token's bytes only on a likely hit.
#define SLOT_EMPTY UINT32_MAX
#define SLOT_LEN_CAP 2047u // lengths from here on are checked against tok_len
typedef struct bytes_slot {
    uint32_t hash;  // low 32 bits of the 64-bit hash
    uint32_t idlen; // id | min(len, SLOT_LEN_CAP) << 21; SLOT_EMPTY: empty
} bytes_slot;
typedef struct bytes_map {
    bytes_slot *slots;
    size_t mask;
} bytes_map;

// (left id, right id) -> (rank, merged id).
typedef struct merge_val {
    int32_t rank, merged;
} merge_val;
typedef struct pair_slot {
    uint64_t key; // left << 32 | right; PAIR_EMPTY: empty
    merge_val v;
} pair_slot;
#define PAIR_EMPTY UINT64_MAX
// Most lookups of the merge loop ask for a pair that has no merge. The filter, one bit per hash of a
// pair (16 bits per entry, so ~6% false positives, 1 MiB for o200k), answers most of them from cache.
typedef struct pair_map {
    pair_slot *slots;
    size_t mask;
    size_t n;
    uint64_t *filter;
    int filter_shift; // 64 - log2(filter bits)
} pair_map;

struct tokenizer {
    int32_t n_ids;      // highest id + 1
    size_t ids_cap;
    uint32_t *tok_off;  // (n_ids) offset into bytes
    uint32_t *tok_len;  // (n_ids) NO_TOKEN for a hole
    uint8_t *id_flags;  // (n_ids) ID_*
    unsigned char *bytes;
    size_t bytes_len, bytes_cap;
    size_t max_token_len;
    int32_t byte_id[256];
    int ignore_merges;
    bytes_map vocab;    // model vocabulary (not the added tokens)
    bytes_map added;    // added tokens by content
    pair_map merges;
    merge_val *byte_pairs;       // (256 * 256) merges of two single-byte tokens (rank -1: none), by bytes;
                                 // every initial pair is one, and this 512 KiB table stays in cache
    uint8_t added_first[2][256]; // [allow_special] first bytes of the added tokens that may match
    size_t added_lens[64];       // distinct lengths of the added tokens, longest first
    int n_added_lens;
    pcre2_code *re;
};

// ---------------------------------------------------------------------------------------------------
// Hashing

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 32);
}

static uint64_t hash_pair(uint64_t key) {
    key *= 0x9e3779b97f4a7c15ull;
    return key ^ (key >> 29);
}

static uint64_t hash_pair_filter(uint64_t key) { return key * 0xd6e8feb86659fd93ull; } // use the high bits

static size_t table_size_for(size_t n) { // power of two, load factor <= 1/2
    size_t sz = 16;
    while (sz < 2 * n) sz *= 2;
    return sz;
}

static void bytes_map_init(bytes_map *m, size_t n) {
    size_t sz = table_size_for(n);
    m->slots = xmalloc(sz * sizeof *m->slots);
    for (size_t i = 0; i < sz; i++) m->slots[i].idlen = SLOT_EMPTY;
    m->mask = sz - 1;
}

static inline int slot_holds(const tokenizer *t, const bytes_slot *s, uint32_t h, const unsigned char *p, size_t n) {
    uint32_t id = s->idlen & ID_MASK, len = s->idlen >> 21;
    return s->hash == h && len == (n < SLOT_LEN_CAP ? n : SLOT_LEN_CAP) && (n < SLOT_LEN_CAP || t->tok_len[id] == n) &&
           memcmp(t->bytes + t->tok_off[id], p, n) == 0;
}

static int32_t bytes_map_get(const tokenizer *t, const bytes_map *m, const unsigned char *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const bytes_slot *s = &m->slots[i];
        if (s->idlen == SLOT_EMPTY) return -1;
        if (slot_holds(t, s, (uint32_t)h, p, n)) return (int32_t)(s->idlen & ID_MASK);
    }
}

// Inserts id under its own bytes; returns the id already there when the bytes are taken.
static int32_t bytes_map_put(const tokenizer *t, bytes_map *m, int32_t id) {
    const unsigned char *p = t->bytes + t->tok_off[id];
    size_t n = t->tok_len[id];
    uint64_t h = hash_bytes(p, n);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        bytes_slot *s = &m->slots[i];
        if (s->idlen == SLOT_EMPTY) {
            s->idlen = (uint32_t)id | (uint32_t)(n < SLOT_LEN_CAP ? n : SLOT_LEN_CAP) << 21;
            s->hash = (uint32_t)h;
            return id;
        }
        if (slot_holds(t, s, (uint32_t)h, p, n)) return (int32_t)(s->idlen & ID_MASK);
    }
}

static void pair_map_init(pair_map *m, size_t n) {
    size_t sz = table_size_for(n);
    m->slots = xmalloc(sz * sizeof *m->slots);
    for (size_t i = 0; i < sz; i++) m->slots[i].key = PAIR_EMPTY;
    m->mask = sz - 1;
    m->n = 0;
    m->filter = NULL;
}

static inline uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t)(uint32_t)left << 32 | (uint32_t)right; }

// Fills the filter (for maps too large for the cache); after this the map is read-only.
static void pair_map_seal(pair_map *m) {
    if ((m->mask + 1) * sizeof *m->slots <= (1 << 20)) return;
    int bits = 12;
    while (((size_t)1 << bits) < 16 * m->n) bits++;
    m->filter = xcalloc((size_t)1 << (bits - 6), sizeof *m->filter);
    m->filter_shift = 64 - bits;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->slots[i].key != PAIR_EMPTY) {
            uint64_t f = hash_pair_filter(m->slots[i].key) >> m->filter_shift;
            m->filter[f >> 6] |= 1ull << (f & 63);
        }
}

// 0: the pair has no merge for sure; 1: maybe.
static inline int pair_map_maybe(const pair_map *m, uint64_t key) {
    uint64_t f = hash_pair_filter(key) >> m->filter_shift;
    return (int)(m->filter[f >> 6] >> (f & 63) & 1);
}

static inline void pair_map_prefetch(const pair_map *m, uint64_t key) {
    if (m->filter && pair_map_maybe(m, key)) __builtin_prefetch(&m->slots[hash_pair(key) & m->mask]);
}

static inline const merge_val *pair_map_get(const pair_map *m, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    if (m->filter && !pair_map_maybe(m, key)) return NULL;
    for (size_t i = hash_pair(key) & m->mask;; i = (i + 1) & m->mask) {
        const pair_slot *s = &m->slots[i];
        if (s->key == key) return &s->v;
        if (s->key == PAIR_EMPTY) return NULL;
    }
}

// Sets (left, right) -> (rank, merged), replacing an earlier entry for the pair (HF builds its merge map
// the same way: a later duplicate line wins).
static void pair_map_put(pair_map *m, int32_t left, int32_t right, int32_t rank, int32_t merged) {
    if (2 * (m->n + 1) > m->mask + 1) {
        pair_map old = *m;
        pair_map_init(m, old.mask + 1); // twice the slots
        for (size_t i = 0; i <= old.mask; i++)
            if (old.slots[i].key != PAIR_EMPTY)
                pair_map_put(m, (int32_t)(old.slots[i].key >> 32), (int32_t)(uint32_t)old.slots[i].key,
                             old.slots[i].v.rank, old.slots[i].v.merged);
        free(old.slots);
    }
    CHECK(!m->filter);
    uint64_t key = pair_key(left, right);
    for (size_t i = hash_pair(key) & m->mask;; i = (i + 1) & m->mask) {
        pair_slot *s = &m->slots[i];
        if (s->key == PAIR_EMPTY || s->key == key) {
            if (s->key == PAIR_EMPTY) m->n++;
            s->key = key;
            s->v = (merge_val){rank, merged};
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Building a tokenizer (shared by both loaders)

static tokenizer *tok_new(void) {
    tokenizer *t = xcalloc(1, sizeof *t);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tok_len);
    free(t->id_flags);
    free(t->bytes);
    free(t->vocab.slots);
    free(t->added.slots);
    free(t->merges.slots);
    free(t->merges.filter);
    free(t->byte_pairs);
    pcre2_code_free(t->re);
    free(t);
}

// Gives id the bytes p[0..n). Fails (returns 0) when the id already has bytes.
static int tok_set_bytes(tokenizer *t, int32_t id, const unsigned char *p, size_t n, uint8_t flags) {
    if ((size_t)id >= t->ids_cap) {
        size_t cap = t->ids_cap ? t->ids_cap : 1024;
        while (cap <= (size_t)id) cap *= 2;
        t->tok_off = xrealloc(t->tok_off, cap * sizeof *t->tok_off);
        t->tok_len = xrealloc(t->tok_len, cap * sizeof *t->tok_len);
        t->id_flags = xrealloc(t->id_flags, cap);
        for (size_t i = t->ids_cap; i < cap; i++) t->tok_len[i] = NO_TOKEN, t->id_flags[i] = 0;
        t->ids_cap = cap;
    }
    if (t->tok_len[id] != NO_TOKEN) return 0;
    if (t->bytes_len + n > t->bytes_cap) {
        t->bytes_cap = t->bytes_cap ? t->bytes_cap : 1 << 16;
        while (t->bytes_len + n > t->bytes_cap) t->bytes_cap *= 2;
        t->bytes = xrealloc(t->bytes, t->bytes_cap);
    }
    memcpy(t->bytes + t->bytes_len, p, n);
    t->tok_off[id] = (uint32_t)t->bytes_len;
    t->tok_len[id] = (uint32_t)n;
    t->id_flags[id] = flags;
    t->bytes_len += n;
    if (id >= t->n_ids) t->n_ids = id + 1;
    if (n > t->max_token_len) t->max_token_len = n;
    return 1;
}

// Hash maps of the vocabulary and the added tokens, the byte tokens and the added-token scan tables.
// `what` names the source in messages.
static gt_status tok_index(tokenizer *t, const char *what, gt_error *err) {
    if (t->bytes_len > UINT32_MAX) return gt_fail(err, GT_EUNSUPPORTED, "%s: token bytes exceed 4 GiB", what);
    size_t n_vocab = 0, n_added = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        n_vocab += (t->id_flags[id] & ID_VOCAB) != 0;
        n_added += (t->id_flags[id] & ID_ADDED) != 0;
    }
    bytes_map_init(&t->vocab, n_vocab);
    bytes_map_init(&t->added, n_added);
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->id_flags[id] & ID_VOCAB) {
            int32_t other = bytes_map_put(t, &t->vocab, id);
            if (other != id)
                return gt_fail(err, GT_EFORMAT, "%s: tokens %d and %d have the same bytes", what, other, id);
            if (t->tok_len[id] == 1) t->byte_id[t->bytes[t->tok_off[id]]] = id;
        }
        if (t->id_flags[id] & ID_ADDED) {
            int32_t other = bytes_map_put(t, &t->added, id);
            if (other != id)
                return gt_fail(err, GT_EFORMAT, "%s: added tokens %d and %d have the same content", what, other, id);
            size_t len = t->tok_len[id];
            unsigned char first = t->bytes[t->tok_off[id]];
            t->added_first[1][first] = 1;
            if (!(t->id_flags[id] & ID_SPECIAL)) t->added_first[0][first] = 1;
            int k = 0;
            while (k < t->n_added_lens && t->added_lens[k] > len) k++;
            if (k == t->n_added_lens || t->added_lens[k] != len) {
                if (t->n_added_lens == (int)(sizeof t->added_lens / sizeof t->added_lens[0]))
                    return gt_fail(err, GT_EUNSUPPORTED, "%s: added tokens of more than %d different lengths", what,
                                   t->n_added_lens);
                memmove(t->added_lens + k + 1, t->added_lens + k, (t->n_added_lens - k) * sizeof t->added_lens[0]);
                t->added_lens[k] = len;
                t->n_added_lens++;
            }
        }
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0)
            return gt_fail(err, GT_EFORMAT,
                           "%s: byte 0x%02x has no token (a byte-level vocabulary needs all 256 bytes)", what, b);
    return GT_OK;
}

static gt_status tok_compile_pattern(tokenizer *t, const char *pattern, const char *what, gt_error *err) {
    int code;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return gt_fail(err, GT_EFORMAT, "%s: pre-tokenizer regex: %s at pattern offset %zu", what, (char *)msg,
                       (size_t)off);
    }
    int rc = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    if (rc != 0) log_debug("%s: PCRE2 JIT unavailable (%d); the regex runs interpreted", what, rc);
    return GT_OK;
}

// Seals the merge table and fills the byte-pair table: a copy of the merges whose sides are both
// single-byte tokens.
static void tok_index_merges(tokenizer *t) {
    pair_map_seal(&t->merges);
    t->byte_pairs = xmalloc(256 * 256 * sizeof *t->byte_pairs);
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            const merge_val *p = pair_map_get(&t->merges, t->byte_id[a], t->byte_id[b]);
            t->byte_pairs[a << 8 | b] = p ? *p : (merge_val){-1, -1};
        }
}

// ---------------------------------------------------------------------------------------------------
// HF tokenizer.json

// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100.. in byte order. cp_to_byte is the inverse; -1 for a code point outside the alphabet.
#define BL_MAX_CP 324
static void bytelevel_inverse(int16_t cp_to_byte[BL_MAX_CP]) {
    int next = 256;
    for (int cp = 0; cp < BL_MAX_CP; cp++) cp_to_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        cp_to_byte[printable ? b : next++] = (int16_t)b;
    }
}

// Decodes one byte-level string (valid UTF-8 from jansson) into raw bytes; out holds strlen(s) bytes.
// Returns the number of bytes, or -1 and the offending code point in *bad.
static long bytelevel_decode(const int16_t *cp_to_byte, const char *s, unsigned char *out, uint32_t *bad) {
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) cp = *p++;
        else if ((p[0] & 0xe0) == 0xc0) cp = (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f), p += 2;
        else {
            *bad = p[0] < 0xf0 ? (uint32_t)(p[0] & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f)
                               : (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3f) << 12 |
                                     (uint32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
            return -1;
        }
        if (cp >= BL_MAX_CP || cp_to_byte[cp] < 0) {
            *bad = cp;
            return -1;
        }
        out[n++] = (unsigned char)cp_to_byte[cp];
    }
    return n;
}

static int json_flag(const json_t *obj, const char *key) { return json_is_true(json_object_get(obj, key)); }

// The pre-tokenizer gpt-oss uses (and the only one supported): Sequence[Split(Regex, Isolated, invert
// false), ByteLevel(add_prefix_space false, use_regex false)]. Returns the regex, owned by root.
static gt_status hf_pre_tokenizer(const json_t *root, const char *what, const char **pattern, gt_error *err) {
    const char *want = "gpt-oss's form: Sequence[Split(Regex, behavior Isolated), ByteLevel(use_regex false)]";
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!json_is_object(pre) || !type)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer: missing; only %s is supported", what, want);
    const json_t *seq = json_object_get(pre, "pretokenizers");
    if (strcmp(type, "Sequence") != 0 || json_array_size(seq) != 2)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer: type %s is not supported; only %s is", what, type,
                       want);
    const json_t *split = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
    const char *t0 = json_string_value(json_object_get(split, "type"));
    const char *t1 = json_string_value(json_object_get(bl, "type"));
    if (!t0 || strcmp(t0, "Split") != 0 || !t1 || strcmp(t1, "ByteLevel") != 0)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer.pretokenizers: [%s, %s] is not supported; only %s is",
                       what, t0 ? t0 : "?", t1 ? t1 : "?", want);
    const char *regex = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
    if (!regex)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer.pretokenizers[0].pattern: only a Regex pattern is "
                       "supported", what);
    const char *behavior = json_string_value(json_object_get(split, "behavior"));
    if (!behavior || strcmp(behavior, "Isolated") != 0 || json_flag(split, "invert"))
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer.pretokenizers[0]: only behavior Isolated with invert "
                       "false is supported", what);
    if (json_flag(bl, "add_prefix_space") || !json_is_false(json_object_get(bl, "use_regex")))
        return gt_fail(err, GT_EUNSUPPORTED, "%s: pre_tokenizer.pretokenizers[1]: only ByteLevel with "
                       "add_prefix_space false and use_regex false is supported", what);
    *pattern = regex;
    return GT_OK;
}

static gt_status hf_model_checks(const json_t *model, const char *what, gt_error *err) {
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE") != 0)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: model.type: %s is not supported (only BPE)", what, type);
    if (json_flag(model, "byte_fallback"))
        return gt_fail(err, GT_EUNSUPPORTED, "%s: model.byte_fallback: true is not supported", what);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(model, affix[i]));
        if (v && *v) return gt_fail(err, GT_EUNSUPPORTED, "%s: model.%s: \"%s\" is not supported", what, affix[i], v);
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) != 0)
        return gt_fail(err, GT_EUNSUPPORTED, "%s: model.dropout: only null is supported (dropout is for training "
                       "a tokenizer)", what);
    const json_t *ignore = json_object_get(model, "ignore_merges");
    if (ignore && !json_is_boolean(ignore))
        return gt_fail(err, GT_EFORMAT, "%s: model.ignore_merges: expected true or false", what);
    return GT_OK;
}

static gt_status hf_vocab(tokenizer *t, const json_t *vocab, const int16_t *cp_to_byte, unsigned char *buf,
                          const char *what, gt_error *err) {
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TOK_MAX_IDS)
            return gt_fail(err, GT_EFORMAT, "%s: model.vocab[\"%s\"]: the id must be an integer in 0..%d", what, key,
                           TOK_MAX_IDS - 1);
        int32_t id = (int32_t)json_integer_value(val);
        uint32_t bad = 0;
        long n = bytelevel_decode(cp_to_byte, key, buf, &bad);
        if (n < 0)
            return gt_fail(err, GT_EFORMAT, "%s: model.vocab[\"%s\"]: character U+%04X is not in the byte-level "
                           "alphabet (is this a byte-level BPE?)", what, key, bad);
        if (n == 0) return gt_fail(err, GT_EFORMAT, "%s: model.vocab: empty token (id %d)", what, id);
        if (!tok_set_bytes(t, id, buf, (size_t)n, ID_VOCAB))
            return gt_fail(err, GT_EFORMAT, "%s: model.vocab[\"%s\"]: id %d is used twice", what, key, id);
    }
    return GT_OK;
}

// Looks up one side of a merge: byte-level string -> vocabulary id.
static int32_t hf_merge_side(const tokenizer *t, const int16_t *cp_to_byte, const char *s, unsigned char *buf) {
    uint32_t bad;
    long n = bytelevel_decode(cp_to_byte, s, buf, &bad);
    return n > 0 ? bytes_map_get(t, &t->vocab, buf, (size_t)n) : -1;
}

static gt_status hf_merges(tokenizer *t, const json_t *merges, const int16_t *cp_to_byte, unsigned char *buf,
                           const char *what, gt_error *err) {
    size_t n = json_array_size(merges);
    if (n > INT32_MAX) return gt_fail(err, GT_EUNSUPPORTED, "%s: model.merges: too many merges", what);
    pair_map_init(&t->merges, n);
    unsigned char *cat = xmalloc(2 * t->max_token_len + 1);
    gt_status st = GT_OK;
    for (size_t i = 0; i < n && st == GT_OK; i++) {
        const json_t *m = json_array_get(merges, i);
        const char *a = NULL, *b = NULL;
        char *line = NULL;
        if (json_is_string(m)) { // "left right" (tokenizers < 0.20)
            line = xstrdup(json_string_value(m));
            char *sp = strchr(line, ' ');
            if (sp && !strchr(sp + 1, ' ')) *sp = 0, a = line, b = sp + 1;
        } else if (json_array_size(m) == 2) { // ["left", "right"]
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
        }
        if (!a || !b) {
            st = gt_fail(err, GT_EFORMAT, "%s: model.merges[%zu]: expected \"left right\" or [\"left\", \"right\"]",
                         what, i);
        } else {
            int32_t l = hf_merge_side(t, cp_to_byte, a, buf), r = l >= 0 ? hf_merge_side(t, cp_to_byte, b, buf) : -1;
            int32_t merged = -1;
            if (l >= 0 && r >= 0) {
                memcpy(cat, t->bytes + t->tok_off[l], t->tok_len[l]);
                memcpy(cat + t->tok_len[l], t->bytes + t->tok_off[r], t->tok_len[r]);
                merged = bytes_map_get(t, &t->vocab, cat, t->tok_len[l] + t->tok_len[r]);
            }
            if (merged < 0)
                st = gt_fail(err, GT_EFORMAT, "%s: model.merges[%zu]: \"%s\" + \"%s\": %s is not in model.vocab", what,
                             i, a, b, l < 0 ? "the left side" : r < 0 ? "the right side" : "the merged token");
            else
                pair_map_put(&t->merges, l, r, (int32_t)i, merged);
        }
        free(line);
    }
    free(cat);
    return st;
}

static gt_status hf_added_tokens(tokenizer *t, const json_t *root, const char *what, gt_error *err) {
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added))
        return gt_fail(err, GT_EFORMAT, "%s: added_tokens: expected an array", what);
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        const json_t *jid = json_object_get(a, "id");
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!json_is_integer(jid) || json_integer_value(jid) < 0 || json_integer_value(jid) >= TOK_MAX_IDS)
            return gt_fail(err, GT_EFORMAT, "%s: added_tokens[%zu].id: expected an integer in 0..%d", what, i,
                           TOK_MAX_IDS - 1);
        if (!content || !*content)
            return gt_fail(err, GT_EFORMAT, "%s: added_tokens[%zu].content: expected a non-empty string", what, i);
        const char *opts[] = {"lstrip", "rstrip", "single_word"};
        for (int k = 0; k < 3; k++)
            if (json_flag(a, opts[k]))
                return gt_fail(err, GT_EUNSUPPORTED, "%s: added_tokens[%zu] (\"%s\"): %s true is not supported", what,
                               i, content, opts[k]);
        int32_t id = (int32_t)json_integer_value(jid);
        size_t n = strlen(content);
        uint8_t flags = ID_ADDED | (json_flag(a, "special") ? ID_SPECIAL : 0);
        if (!tok_set_bytes(t, id, (const unsigned char *)content, n, flags)) {
            // The id is in model.vocab too: fine when the bytes agree (the token is then both).
            if (t->tok_len[id] != n || memcmp(t->bytes + t->tok_off[id], content, n) != 0 ||
                (t->id_flags[id] & ID_ADDED))
                return gt_fail(err, GT_EFORMAT, "%s: added_tokens[%zu] (\"%s\"): id %d is already another token",
                               what, i, content, id);
            t->id_flags[id] |= flags;
        }
    }
    return GT_OK;
}

gt_status tokenizer_load_hf_json(tokenizer **out, const char *json, size_t len, const char *what, gt_error *err) {
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return gt_fail(err, GT_EFORMAT, "%s:%d:%d: invalid JSON: %s", what, jerr.line, jerr.column, jerr.text);
    tokenizer *t = tok_new();
    unsigned char *buf = NULL;
    gt_status st = GT_OK;
    const json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges"), *norm = json_object_get(root, "normalizer");
    const char *pattern = NULL;
    if (!json_is_object(root)) {
        st = gt_fail(err, GT_EFORMAT, "%s: expected a JSON object (an HF tokenizer.json)", what);
    } else if (!json_is_object(model)) {
        st = gt_fail(err, GT_EFORMAT, "%s: model: missing (is this an HF tokenizer.json?)", what);
    } else if (!json_is_object(vocab)) {
        st = gt_fail(err, GT_EFORMAT, "%s: model.vocab: missing or not an object", what);
    } else if (!json_is_array(merges)) {
        st = gt_fail(err, GT_EFORMAT, "%s: model.merges: missing or not an array", what);
    } else if (norm && !json_is_null(norm)) {
        st = gt_fail(err, GT_EUNSUPPORTED, "%s: normalizer: only null is supported (gpt-oss's tokenizer.json has "
                     "none)", what);
    } else if ((st = hf_model_checks(model, what, err)) == GT_OK &&
               (st = hf_pre_tokenizer(root, what, &pattern, err)) == GT_OK) {
        int16_t cp_to_byte[BL_MAX_CP];
        bytelevel_inverse(cp_to_byte);
        buf = xmalloc(len + 1); // a decoded key is never longer than the file
        t->ignore_merges = json_flag(model, "ignore_merges");
        if ((st = hf_vocab(t, vocab, cp_to_byte, buf, what, err)) == GT_OK &&
            (st = hf_added_tokens(t, root, what, err)) == GT_OK && (st = tok_index(t, what, err)) == GT_OK &&
            (st = hf_merges(t, merges, cp_to_byte, buf, what, err)) == GT_OK) {
            tok_index_merges(t);
            st = tok_compile_pattern(t, pattern, what, err);
        }
    }
    free(buf);
    json_decref(root);
    if (st != GT_OK) {
        tokenizer_free(t);
        return st;
    }
    *out = t;
    return GT_OK;
}

gt_status tokenizer_load_hf(tokenizer **tok, const char *path, gt_error *err) {
    *tok = NULL;
    char *data;
    size_t len;
    gt_status st = fs_read_file(path, &data, &len, err);
    if (st != GT_OK) return st;
    st = tokenizer_load_hf_json(tok, data, len, path, err);
    free(data);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// tiktoken rank files: one "base64(token bytes) rank" per line (gzip-compressed files are read too)

static int base64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Standard base64 with '=' padding. Returns the decoded length, or -1 when s[0..n) is not base64.
static long base64_decode(const char *s, size_t n, unsigned char *out) {
    if (n % 4 != 0) return -1;
    long w = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = base64_value((unsigned char)s[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[w++] = (unsigned char)(x >> 16);
        if (pad < 2) out[w++] = (unsigned char)(x >> 8);
        if (pad < 1) out[w++] = (unsigned char)x;
    }
    return w;
}

static gt_status read_maybe_gz(const char *path, char **data, size_t *len, gt_error *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return gt_fail(err, GT_ENOTFOUND, "%s: cannot open", path);
    size_t cap = 1 << 20, n = 0;
    char *buf = xmalloc(cap + 1);
    int got;
    while ((got = gzread(f, buf + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)got;
        if (n == cap) buf = xrealloc(buf, (cap *= 2) + 1);
    }
    int code;
    const char *msg = gzerror(f, &code);
    gt_status st = got < 0 ? gt_fail(err, GT_EIO, "%s: read failed: %s", path, msg) : GT_OK;
    gzclose(f);
    if (st != GT_OK) {
        free(buf);
        return st;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return GT_OK;
}

// tiktoken's merge rule as a pair table: every cut of a token into two tokens is a merge of its rank.
static void tiktoken_pairs(tokenizer *t) {
    pair_map_init(&t->merges, (size_t)t->n_ids * 2);
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->id_flags[id] & ID_VOCAB) || t->tok_len[id] < 2) continue;
        const unsigned char *p = t->bytes + t->tok_off[id];
        size_t n = t->tok_len[id];
        for (size_t k = 1; k < n; k++) {
            int32_t l = bytes_map_get(t, &t->vocab, p, k);
            int32_t r = l >= 0 ? bytes_map_get(t, &t->vocab, p + k, n - k) : -1;
            if (r >= 0) pair_map_put(&t->merges, l, r, id, id);
        }
    }
}

gt_status tokenizer_load_tiktoken(tokenizer **out, const char *ranks_path, const char *pattern,
                                  const char *const *special_names, const int32_t *special_ids, int n_special,
                                  gt_error *err) {
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    gt_status st = read_maybe_gz(ranks_path, &data, &len, err);
    if (st != GT_OK) return st;
    tokenizer *t = tok_new();
    t->ignore_merges = 1; // tiktoken looks the whole piece up first
    unsigned char *tokbuf = xmalloc(len + 1);
    size_t line_no = 0;
    for (char *line = data; st == GT_OK && line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        char *end = nl ? nl : data + len;
        line_no++;
        if (end > line && end[-1] == '\r') end[-1] = 0, end--;
        *end = 0;
        char *next = nl ? nl + 1 : data + len;
        if (end == line) { // tiktoken skips empty lines
            line = next;
            continue;
        }
        char *sp = strchr(line, ' ');
        char *rank_end = NULL;
        long rank = sp ? strtol(sp + 1, &rank_end, 10) : -1;
        long n = sp ? base64_decode(line, (size_t)(sp - line), tokbuf) : -1;
        if (!sp || rank_end == sp + 1 || *rank_end || rank < 0 || rank >= TOK_MAX_IDS)
            st = gt_fail(err, GT_EFORMAT, "%s:%zu: expected \"<base64 token> <rank>\" with a rank in 0..%d", ranks_path,
                         line_no, TOK_MAX_IDS - 1);
        else if (n <= 0)
            st = gt_fail(err, GT_EFORMAT, "%s:%zu: the token is not valid non-empty base64", ranks_path, line_no);
        else if (!tok_set_bytes(t, (int32_t)rank, tokbuf, (size_t)n, ID_VOCAB))
            st = gt_fail(err, GT_EFORMAT, "%s:%zu: rank %ld is used twice", ranks_path, line_no, rank);
        line = next;
    }
    free(tokbuf);
    free(data);
    for (int i = 0; st == GT_OK && i < n_special; i++) {
        const char *name = special_names[i];
        if (!name || !*name || special_ids[i] < 0 || special_ids[i] >= TOK_MAX_IDS)
            st = gt_fail(err, GT_EINVAL, "special token %d: needs a non-empty name and an id in 0..%d", i,
                         TOK_MAX_IDS - 1);
        else if (!tok_set_bytes(t, special_ids[i], (const unsigned char *)name, strlen(name), ID_ADDED | ID_SPECIAL))
            st = gt_fail(err, GT_EINVAL, "special token %s: id %d is already taken", name, special_ids[i]);
    }
    if (st == GT_OK && (st = tok_index(t, ranks_path, err)) == GT_OK) {
        tiktoken_pairs(t);
        tok_index_merges(t);
        st = tok_compile_pattern(t, pattern, ranks_path, err);
    }
    if (st != GT_OK) {
        tokenizer_free(t);
        return st;
    }
    *out = t;
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// Queries

int tokenizer_vocab_size(const tokenizer *t) { return t->n_ids; }

int32_t tokenizer_special_id(const tokenizer *t, const char *name) {
    return bytes_map_get(t, &t->added, (const unsigned char *)name, strlen(name));
}

const char *tokenizer_token_bytes(const tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || t->tok_len[id] == NO_TOKEN) return NULL;
    if (len) *len = t->tok_len[id];
    return (const char *)t->bytes + t->tok_off[id];
}

size_t tokenizer_stream_out_size(const tokenizer *t) { return 3 * (t->max_token_len + 4) + 1; }

// ---------------------------------------------------------------------------------------------------
// Encode

// A min-heap entry of the merge loop: the pair that starts at symbol `pos`, ordered by (rank, pos).
typedef struct merge_entry {
    uint64_t key; // rank << 32 | pos
    int32_t left, right, merged;
} merge_entry;

// Scratch of one encode call (grown, never shrunk, so pieces allocate nothing).
typedef struct encoder {
    const tokenizer *t;
    token_buf *out;
    pcre2_match_data *md;
    size_t cap;
    int32_t *sym;  // (cap) token id of each live symbol; -1 once merged into its left neighbour
    int32_t *prev, *next; // (cap) linked list of live symbols, -1 at the ends
    merge_entry *heap;    // (cap)
    size_t n_heap;
} encoder;

static void heap_push(encoder *e, int32_t pos, const merge_val *p, int32_t left, int32_t right) {
    merge_entry x = {(uint64_t)(uint32_t)p->rank << 32 | (uint32_t)pos, left, right, p->merged};
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (e->heap[parent].key <= x.key) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = x;
}

static merge_entry heap_pop(encoder *e) {
    merge_entry top = e->heap[0], x = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1].key < e->heap[c].key) c++;
        if (x.key <= e->heap[c].key) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = x;
    return top;
}

// Symbol i starts at byte i of the piece p[0..n), so it is a single byte when its successor is i + 1.
static void try_pair(encoder *e, const unsigned char *p, int32_t n, int32_t i, int32_t j) {
    const merge_val *m;
    if (j == i + 1 && (j == n - 1 || e->next[j] == j + 1)) {
        m = &e->t->byte_pairs[p[i] << 8 | p[j]];
        if (m->rank < 0) return;
    } else if (!(m = pair_map_get(&e->t->merges, e->sym[i], e->sym[j]))) {
        return;
    }
    heap_push(e, i, m, e->sym[i], e->sym[j]);
}

// One pre-tokenized piece p[0..n) -> tokens. O(n log n): each merge pushes at most two heap entries.
static void encode_piece(encoder *e, const unsigned char *p, size_t n) {
    const tokenizer *t = e->t;
    if (n == 1) {
        token_buf_push(e->out, t->byte_id[p[0]]);
        return;
    }
    if (t->ignore_merges) {
        int32_t id = bytes_map_get(t, &t->vocab, p, n);
        if (id >= 0) {
            token_buf_push(e->out, id);
            return;
        }
    }
    if (n > e->cap) {
        e->cap = n > 2 * e->cap ? n : 2 * e->cap;
        e->sym = xrealloc(e->sym, e->cap * sizeof *e->sym);
        e->prev = xrealloc(e->prev, e->cap * sizeof *e->prev);
        e->next = xrealloc(e->next, e->cap * sizeof *e->next);
        e->heap = xrealloc(e->heap, 3 * e->cap * sizeof *e->heap); // n-1 pairs + 2 per merge
    }
    int32_t m = (int32_t)n;
    for (int32_t i = 0; i < m; i++) {
        e->sym[i] = t->byte_id[p[i]];
        e->prev[i] = i - 1;
        e->next[i] = i + 1 < m ? i + 1 : -1;
    }
    e->n_heap = 0;
    for (int32_t i = 0; i + 1 < m; i++) try_pair(e, p, m, i, i + 1);
    while (e->n_heap) {
        merge_entry x = heap_pop(e);
        int32_t i = (int32_t)(uint32_t)x.key, j = e->next[i];
        if (e->sym[i] != x.left || j < 0 || e->sym[j] != x.right) continue; // stale entry
        e->sym[i] = x.merged;
        e->sym[j] = -1;
        e->next[i] = e->next[j];
        if (e->next[j] >= 0) e->prev[e->next[j]] = i;
        int32_t a = e->prev[i], b = e->next[i];
        // the two lookups are independent: start both memory loads before using either
        if (a >= 0) pair_map_prefetch(&t->merges, pair_key(e->sym[a], x.merged));
        if (b >= 0) pair_map_prefetch(&t->merges, pair_key(x.merged, e->sym[b]));
        if (a >= 0) try_pair(e, p, m, a, i);
        if (b >= 0) try_pair(e, p, m, i, b);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) token_buf_push(e->out, e->sym[i]);
}

static size_t utf8_char_len(const unsigned char *p, size_t n) {
    size_t want = p[0] < 0xc0 ? 1 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
    return want <= n ? want : 1;
}

// Text without added tokens: regex pieces (matches and the gaps between them), each BPE-encoded.
static gt_status encode_segment(encoder *e, const unsigned char *s, size_t n, size_t base, gt_error *err) {
    size_t start = 0, at = 0; // end of the last piece, where the next search begins
    while (at < n) {
        int rc = pcre2_match(e->t->re, s, n, at, 0, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return gt_fail(err, GT_EINVAL, "pre-tokenizer regex failed at byte %zu of the text: %s", base + at,
                           (char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms) // only \K in a lookaround can do this
            return gt_fail(err, GT_EUNSUPPORTED, "pre-tokenizer regex: a match ends before it starts (\\K?)");
        if (ms > start) encode_piece(e, s + start, ms - start);
        if (me > ms) {
            encode_piece(e, s + ms, me - ms);
            start = at = me;
        } else { // an empty match only splits; search again one character on
            start = ms;
            at = ms + utf8_char_len(s + ms, n - ms);
        }
    }
    if (start < n) encode_piece(e, s + start, n - start);
    return GT_OK;
}

// The added token that starts at s (longest first), allowed under allow_special; -1 if none.
static int32_t added_at(const tokenizer *t, const unsigned char *s, size_t n, int allow_special, size_t *len) {
    for (int k = 0; k < t->n_added_lens; k++) {
        size_t l = t->added_lens[k];
        if (l > n) continue;
        int32_t id = bytes_map_get(t, &t->added, s, l);
        if (id >= 0 && (allow_special || !(t->id_flags[id] & ID_SPECIAL))) {
            *len = l;
            return id;
        }
    }
    return -1;
}

gt_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, int allow_special, token_buf *out,
                           gt_error *err) {
    const unsigned char *s = (const unsigned char *)text;
    encoder e = {.t = t, .out = out, .md = pcre2_match_data_create_from_pattern(t->re, NULL)};
    if (!e.md) gt_die(__FILE__, __LINE__, "pcre2_match_data_create_from_pattern: out of memory");
    const uint8_t *first = t->added_first[allow_special ? 1 : 0];
    gt_status st = GT_OK;
    size_t seg = 0;
    for (size_t i = 0; i < len && st == GT_OK;) {
        size_t mlen;
        int32_t id;
        if (first[s[i]] && (id = added_at(t, s + i, len - i, allow_special, &mlen)) >= 0) {
            st = encode_segment(&e, s + seg, i - seg, seg, err);
            token_buf_push(out, id);
            i += mlen;
            seg = i;
        } else {
            i++;
        }
    }
    if (st == GT_OK) st = encode_segment(&e, s + seg, len - seg, seg, err);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    return st;
}

// ---------------------------------------------------------------------------------------------------
// Decode

gt_status tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len,
                           gt_error *err) {
    *text = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || t->tok_len[ids[i]] == NO_TOKEN)
            return gt_fail(err, GT_EINVAL, "token %zu: id %d is not in the vocabulary (size %d)", i, ids[i], t->n_ids);
        total += t->tok_len[ids[i]];
    }
    char *buf = xmalloc(total + 1), *w = buf;
    for (size_t i = 0; i < n; i++) {
        memcpy(w, t->bytes + t->tok_off[ids[i]], t->tok_len[ids[i]]);
        w += t->tok_len[ids[i]];
    }
    *w = 0;
    *text = buf;
    if (len) *len = total;
    return GT_OK;
}

// Copies the UTF-8 in a[0..na) b[0..nb) to out, each maximal invalid subpart replaced by U+FFFD (what
// Python's decode(errors="replace") does). Without `final`, a valid but incomplete character at the end
// is not written: its bytes are left in `rest` (at most 3). Returns the bytes written.
static size_t utf8_clean(const unsigned char *a, size_t na, const unsigned char *b, size_t nb, int final, char *out,
                         unsigned char *rest, int *n_rest) {
#define AT(i) ((i) < na ? a[i] : b[(i) - na])
    size_t n = na + nb, i = 0, w = 0;
    *n_rest = 0;
    while (i < n) {
        unsigned c = AT(i);
        if (c < 0x80) {
            out[w++] = (char)c;
            i++;
            continue;
        }
        size_t need = 0;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) need = 2;
        else if (c >= 0xe0 && c <= 0xef) need = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c >= 0xf0 && c <= 0xf4) need = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        size_t k = 1;
        while (k < need && i + k < n) {
            unsigned d = AT(i + k);
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf)) break;
            k++;
        }
        if (need && k == need) {
            for (size_t j = 0; j < need; j++) out[w++] = (char)AT(i + j);
        } else if (need && i + k == n && !final) {
            for (size_t j = 0; j < k; j++) rest[j] = (unsigned char)AT(i + j);
            *n_rest = (int)k;
        } else {
            memcpy(out + w, "\xef\xbf\xbd", 3);
            w += 3;
        }
        i += need && k == need ? need : k;
    }
    out[w] = 0;
    return w;
#undef AT
}

size_t tokenizer_stream_push(tokenizer_stream *s, int32_t id, char *out, size_t out_size) {
    size_t len = 0;
    const char *bytes = tokenizer_token_bytes(s->tok, id, &len);
    if (!bytes) bytes = "\xef\xbf\xbd", len = 3; // an unknown id shows as U+FFFD
    CHECK(out_size >= 3 * (len + (size_t)s->n_pending) + 1); // tokenizer_stream_out_size() is always enough
    unsigned char pending[4];
    memcpy(pending, s->pending, (size_t)s->n_pending);
    return utf8_clean(pending, (size_t)s->n_pending, (const unsigned char *)bytes, len, 0, out, s->pending,
                      &s->n_pending);
}

size_t tokenizer_stream_flush(tokenizer_stream *s, char *out, size_t out_size) {
    CHECK(out_size >= 3 * (size_t)s->n_pending + 1);
    unsigned char pending[4];
    memcpy(pending, s->pending, (size_t)s->n_pending);
    return utf8_clean(pending, (size_t)s->n_pending, NULL, 0, 1, out, s->pending, &s->n_pending);
}
