// data: tokenizer (byte-level BPE, PCRE2 pre-split), Harmony render and stream parser, dataset readers
// (JSONL, .gz, pre-tokenized), loss masks, packing, shuffling, token cache.
#ifndef GPTOSS_DATA_H
#define GPTOSS_DATA_H

#include "core/core.h"

// ---------------------------------------------------------------------------------------------------
// Token buffers
typedef struct token_buf {
    int32_t *ids;
    size_t n, cap;
} token_buf;
void token_buf_push(token_buf *b, int32_t id);
void token_buf_free(token_buf *b);

// ---------------------------------------------------------------------------------------------------
// Tokenizer: byte-level BPE with the tiktoken merge rule (repeatedly merge the adjacent pair whose merged
// token has the lowest rank) after the pre-tokenizer regex split; special/added tokens are whole tokens.
typedef struct tokenizer tokenizer;

// HF tokenizer.json (model.type BPE, byte-level). Errors name the file and the JSON path.
gt_status tokenizer_load_hf(tokenizer **tok, const char *tokenizer_json_path, gt_error *err);
// tiktoken rank file ("base64 rank" per line) + special tokens + the pre-tokenizer regex.
gt_status tokenizer_load_tiktoken(tokenizer **tok, const char *ranks_path, const char *pattern,
                                  const char *const *special_names, const int32_t *special_ids, int n_special,
                                  gt_error *err);
void tokenizer_free(tokenizer *tok);

int tokenizer_vocab_size(const tokenizer *tok);          // highest id + 1, specials included
int32_t tokenizer_special_id(const tokenizer *tok, const char *name); // "<|end|>" -> id, -1 if none
// The bytes of one token (raw bytes, not the byte-level unicode form). NULL for an unknown id.
const char *tokenizer_token_bytes(const tokenizer *tok, int32_t id, size_t *len);

// Appends the tokens of text[0..len) to out. With allow_special, added/special token strings in the text
// are emitted as their single ids (template text); without, they are encoded as ordinary text (user data).
gt_status tokenizer_encode(const tokenizer *tok, const char *text, size_t len, int allow_special,
                           token_buf *out, gt_error *err);
// Decodes ids into a malloc'ed NUL-terminated byte string (len without the NUL). Unknown ids: error.
gt_status tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len,
                           gt_error *err);

// Incremental decode for streaming: never emits half a UTF-8 character.
typedef struct tokenizer_stream {
    const tokenizer *tok;
    unsigned char pending[8];
    int n_pending;
} tokenizer_stream;
// Writes the newly complete UTF-8 text for one more token into out (NUL-terminated); returns its length.
size_t tokenizer_stream_push(tokenizer_stream *s, int32_t id, char *out, size_t out_size);
// Flushes what is left (an incomplete sequence is emitted as U+FFFD).
size_t tokenizer_stream_flush(tokenizer_stream *s, char *out, size_t out_size);

#endif
