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
// Tokenizer: byte-level BPE (repeatedly merge the adjacent pair of lowest rank: for tiktoken ranks the rank
// of the merged token, for a tokenizer.json the line of the merge) after the pre-tokenizer regex split;
// special/added tokens are whole tokens.
typedef struct tokenizer tokenizer;

// HF tokenizer.json (model.type BPE, byte-level). Errors name the file and the JSON path. Supported: what
// gpt-oss's file uses (no normalizer; pre_tokenizer Sequence[Split(Regex, Isolated), ByteLevel(use_regex
// false)]; merges as "a b" or ["a", "b"], ranked by their line as HF does; ignore_merges; added tokens
// without lstrip/rstrip/single_word); anything else is refused with GT_EUNSUPPORTED naming the field.
gt_status tokenizer_load_hf(tokenizer **tok, const char *tokenizer_json_path, gt_error *err);
// The same from the bytes of a tokenizer.json; `what` names it in messages (tests, fuzz target).
gt_status tokenizer_load_hf_json(tokenizer **tok, const char *json, size_t len, const char *what, gt_error *err);
// tiktoken rank file ("base64 rank" per line; gzip-compressed files are read too) + special tokens + the
// pre-tokenizer regex. Merges follow tiktoken's rule (the rank of the merged token).
gt_status tokenizer_load_tiktoken(tokenizer **tok, const char *ranks_path, const char *pattern,
                                  const char *const *special_names, const int32_t *special_ids, int n_special,
                                  gt_error *err);
void tokenizer_free(tokenizer *tok);

int tokenizer_vocab_size(const tokenizer *tok);          // highest id + 1, specials included
int32_t tokenizer_special_id(const tokenizer *tok, const char *name); // "<|end|>" -> id, -1 if none
// The bytes of one token (raw bytes, not the byte-level unicode form). NULL for an unknown id.
const char *tokenizer_token_bytes(const tokenizer *tok, int32_t id, size_t *len);

// Appends the tokens of text[0..len) to out. With allow_special, added/special token strings in the text
// are emitted as their single ids (template text); without, they are encoded as ordinary text (user data)
// (added tokens not marked special are always whole tokens, as in HF). Any bytes encode, valid UTF-8 or
// not, and decode back unchanged. Thread-safe on one tokenizer.
gt_status tokenizer_encode(const tokenizer *tok, const char *text, size_t len, int allow_special,
                           token_buf *out, gt_error *err);
// Decodes ids into a malloc'ed NUL-terminated byte string (len without the NUL). Unknown ids: error.
gt_status tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len,
                           gt_error *err);

// Incremental decode for streaming: never emits half a UTF-8 character; the output is valid UTF-8 with
// each invalid byte sequence shown as U+FFFD, exactly as Python's bytes.decode("utf-8", "replace") of the
// whole decode. Start with tokenizer_stream s = {.tok = tok}; out must hold tokenizer_stream_out_size().
typedef struct tokenizer_stream {
    const tokenizer *tok;
    unsigned char pending[8];
    int n_pending;
} tokenizer_stream;
// Writes the newly complete UTF-8 text for one more token into out (NUL-terminated); returns its length.
// An id with no bytes adds U+FFFD.
size_t tokenizer_stream_push(tokenizer_stream *s, int32_t id, char *out, size_t out_size);
size_t tokenizer_stream_out_size(const tokenizer *tok); // enough for any one push or flush
// Flushes what is left (an incomplete sequence is emitted as U+FFFD).
size_t tokenizer_stream_flush(tokenizer_stream *s, char *out, size_t out_size);

// ===================================================================================================
// Harmony render, dataset readers, loss masks, packing, token cache (data/harmony.c, data/dataset.c,
// data/pack.c, data/token_cache.c, data/pipeline.c).

// ---------------------------------------------------------------------------------------------------
// Harmony render (data/harmony.c): GPT-OSS's HF chat_template.jinja, byte for byte, for conversations
// without tools. The text goes out with the byte spans of the special tokens the template wrote (only
// those become special ids: the same strings inside message text are encoded as ordinary text) and the
// byte spans that are trained under train_on.
typedef enum harmony_variant {
    HARMONY_VARIANT_HF,      // chat_template.jinja: "# Instructions\n\n{developer}\n\n<|end|>"
    HARMONY_VARIANT_HARMONY, // OpenAI's harmony renderer: no "\n\n" before the developer <|end|>
} harmony_variant;

typedef enum harmony_train_on {
    HARMONY_TRAIN_ASSISTANT, // the last assistant turn: thinking + <|end|>, content + <|return|>
    HARMONY_TRAIN_FINAL,     // the last assistant turn's content + <|return|> only
    HARMONY_TRAIN_ALL,       // every token
} harmony_train_on;

typedef struct harmony_options {
    const char *reasoning_effort; // "low" | "medium" | "high"; NULL = "medium"
    const char *model_identity;   // NULL = "You are ChatGPT, a large language model trained by OpenAI."
    const char *date;             // "YYYY-MM-DD" (pin it: tokens change with it); NULL = today, local time
    harmony_variant variant;
    harmony_train_on train_on;
} harmony_options;
void harmony_options_defaults(harmony_options *o); // medium, default identity, date NULL, HF, assistant
// Checks effort, date format and that no field holds a special-token string. Names the bad field.
gt_status harmony_options_check(const harmony_options *o, gt_error *err);

typedef enum chat_role { CHAT_SYSTEM, CHAT_DEVELOPER, CHAT_USER, CHAT_ASSISTANT } chat_role;
typedef struct chat_message {
    chat_role role;
    const char *content;  // never NULL
    const char *thinking; // assistant only; NULL = absent ("" renders an empty analysis message)
} chat_message;

typedef struct harmony_span {
    size_t begin, end; // [begin, end) bytes of harmony_text.text
} harmony_span;

typedef struct harmony_text {
    char *text; // NUL-terminated
    size_t len;
    harmony_span *specials; // the special tokens the template wrote, in order
    int n_specials;
    harmony_span *trained; // sorted, disjoint, adjacent ones merged; empty with a generation prompt
    int n_trained;
} harmony_text;

// Renders msgs as the template does with add_generation_prompt = gen_prompt: a leading system or
// developer message becomes the developer instructions, the last assistant turn (training) carries its
// thinking in the analysis channel and ends with <|return|>, earlier ones are final-channel messages
// ending <|end|>; gen_prompt appends "<|start|>assistant". Errors: a system/developer message after the
// first, assistant text holding "<|channel|>analysis<|message|>"/"<|channel|>final<|message|>" (the
// template's own exceptions), thinking on a non-assistant message.
gt_status harmony_render(const chat_message *msgs, int n, const harmony_options *o, int gen_prompt,
                         harmony_text *out, gt_error *err);
void harmony_text_free(harmony_text *t);
// Tokenizes a render: template special tokens become their single ids, every run of text between them
// is encoded as ordinary text (specials not allowed). Appends to ids, and to labels the id of each
// token that lies in a trained span or -1 (HF labels, unshifted).
gt_status harmony_tokenize(const tokenizer *tok, const harmony_text *t, token_buf *ids, token_buf *labels,
                           gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Options of the data pipeline. trainer/ maps its YAML config onto this; data/ never sees the YAML.
typedef enum data_format {
    DATA_FORMAT_AUTO,     // per row: "input_ids" -> tokens, "messages" -> messages, else columns
    DATA_FORMAT_MESSAGES, // {"messages": [{"role", "content", "thinking"?}...]} (+ any other columns)
    DATA_FORMAT_COLUMNS,  // flat rows through the column mapping
    DATA_FORMAT_TOKENS,   // {"input_ids": [...], "labels"?: [...]} (labels unshifted, -100 ignored)
} data_format;
typedef enum data_bad_row { DATA_BAD_ROW_ERROR, DATA_BAD_ROW_SKIP } data_bad_row;
typedef enum data_overlong { DATA_OVERLONG_TRUNCATE, DATA_OVERLONG_DROP } data_overlong;

typedef struct data_columns {   // column names; NULL = the default in brackets; "" = no such column
    const char *messages; // the conversation of a messages row ["messages"]
    const char *system;   // flat rows: optional developer instructions ["developer"]
    const char *user;     // flat rows: required ["user"]
    const char *thinking; // flat rows: optional ["analysis"]
    const char *answer;   // flat rows: required ["final"]
} data_columns;            // (the defaults are HuggingFaceH4/Multilingual-Thinking's columns)

typedef struct data_options {
    const char *const *train_files; // JSONL, JSONL.gz or parquet (gzip and parquet detected from the bytes)
    int n_train_files;
    const char *const *val_files; // validation by file; when none, val_fraction of the train documents
    int n_val_files;
    double val_fraction;          // [0, 1)
    const char *tokenizer_path;   // tokenizer.json
    data_format format;
    data_columns columns;
    harmony_options harmony;
    int max_seq_len;              // tokens per packed row
    int packing;                  // 1: several documents per row; 0: one document per row (padded)
    data_overlong overlong;       // a document longer than max_seq_len
    data_bad_row on_bad_row;
    uint64_t max_rows;            // read at most this many rows of the training files; 0 = all
    int shuffle;                  // 0: documents in file order, rows in the same order every epoch
    uint64_t seed;                // document split, packing order and each epoch's row order
    const char *cache_dir;        // token cache folder (created); NULL = no cache
} data_options;
void data_options_defaults(data_options *o); // auto, 2048, packing, truncate, error, shuffle, seed 0
gt_status data_options_check(const data_options *o, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Rows -> documents (data/dataset.c). A document is one row's tokens and its loss mask.
typedef struct data_docs {
    size_t n_docs, n_tokens;
    uint32_t *tokens;   // (n_tokens) all documents back to back
    uint8_t *mask;      // (n_tokens) 1 = trained: the prediction of this token counts in the loss
    uint64_t *offsets;  // (n_docs + 1) document d is tokens[offsets[d] .. offsets[d+1])
    uint32_t *src_file; // (n_docs) index into files
    uint32_t *src_line; // (n_docs) 1-based line in that file
    char **files;       // (n_files) the paths read, in order
    int n_files;
    uint64_t rows_read, rows_skipped; // skipped: bad rows under on_bad_row = skip
    size_t cap_docs, cap_tokens;
} data_docs;
void data_docs_free(data_docs *d);
// Appends one document; labels are HF labels (id or -1/-100 for not trained).
void data_docs_push(data_docs *d, const int32_t *ids, const int32_t *labels, size_t n, uint32_t file,
                    uint32_t line);

// Parses one JSONL row into ids/labels (appended). `where` ("file:line") prefixes every message; a
// bad row returns GT_EFORMAT naming the field and the fix. The unit the fuzz target drives. tok may be
// NULL when only pre-tokenized rows are expected (ids then unchecked against a vocabulary; a conversation
// row is refused with GT_EUNSUPPORTED).
gt_status data_row_tokenize(const char *line, size_t len, const data_options *o, const tokenizer *tok,
                            const char *where, token_buf *ids, token_buf *labels, gt_error *err);
// Reads JSONL / JSONL.gz / parquet files into documents (appended; bad rows: error, or skipped and counted, per
// options). Stops after max_rows rows in all (out->rows_read counts them; 0 = no limit).
gt_status data_read_files(const char *const *paths, int n, const data_options *o, const tokenizer *tok,
                          uint64_t max_rows, data_docs *out, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Parquet (data/parquet.c): the rows of a .parquet file, each as the JSON object (jansson) its JSONL line
// would be: flat columns, lists and structs of them (Multilingual-Thinking's messages:
// list<struct<content, role, thinking>>); codecs UNCOMPRESSED, SNAPPY, GZIP, ZSTD. Read one row group at
// a time. data_read_files reads a file through this when it starts with "PAR1"; rows are numbered from 1
// in messages ("FILE: row N"). Errors name the file, row group, column and page; what the file holds
// that gptoss does not read (maps, lists of lists, other codecs) is GT_EUNSUPPORTED naming the column.
struct json_t;
typedef struct parquet_reader parquet_reader;
// Opens and checks the footer, the schema and every row group's chunk metadata.
gt_status parquet_open(parquet_reader **r, const char *path, gt_error *err);
// The same over bytes in memory (tests, fuzz target); `what` names them in messages. data must outlive r.
gt_status parquet_open_mem(parquet_reader **r, const uint8_t *data, size_t len, const char *what, gt_error *err);
// The next row: *row a new object (json_decref it), NULL after the last row. After an error the reader
// only repeats it.
gt_status parquet_next_row(parquet_reader *r, struct json_t **row, gt_error *err);
int64_t parquet_num_rows(const parquet_reader *r); // from the footer
void parquet_close(parquet_reader *r);
int parquet_sniff(const char *path); // 1 when the file starts with "PAR1"

// ---------------------------------------------------------------------------------------------------
// Packing (data/pack.c). A row is up to max_seq_len tokens taken from whole documents (best fit, longest
// first); a longer document is truncated to max_seq_len or dropped. Without packing each row holds one.
typedef struct data_pack {
    size_t n_rows;
    uint64_t *row_start;     // (n_rows + 1) row r holds items row_start[r] .. row_start[r+1]
    uint32_t *item_doc;      // document of each item
    uint32_t *item_len;      // tokens taken from its start (< the document's length when truncated)
    uint32_t *row_len;       // (n_rows) tokens in the row
    size_t n_docs, truncated, dropped; // documents placed, cut, left out
    uint64_t tokens, trained, max_row_len;
} data_pack;
// Packs documents doc_idx[0..n) per o's max_seq_len, packing, overlong, shuffle and seed.
gt_status data_pack_build(const data_docs *docs, const uint32_t *doc_idx, size_t n, const data_options *o,
                          data_pack *out, gt_error *err);
void data_pack_free(data_pack *p);
// Writes row r as T positions (the model_batch layout): ids, pos (restarting at 0 in each document),
// doc (0, 1, ... within the row, non-decreasing), targets (next token when it is in the same document
// and trained, else -1). Positions past the row's tokens are padding: pad_id, pos 0.., its own doc
// index, target -1. T >= row_len. Returns the tokens that are not padding.
int data_pack_row(const data_pack *p, const data_docs *docs, size_t r, int T, int32_t pad_id, int32_t *ids,
                  int32_t *pos, int32_t *doc, int32_t *targets);
// The order of rows in an epoch: a permutation of 0..n_rows-1, a function of (o->seed, epoch) only;
// the identity when o->shuffle is 0.
void data_epoch_order(const data_options *o, size_t n_rows, uint64_t epoch, uint32_t *perm);
// Fisher-Yates shuffle of a[0..n) driven by splitmix64(seed): the same seed gives the same order anywhere.
void data_shuffle(uint32_t *a, size_t n, uint64_t seed);

// ---------------------------------------------------------------------------------------------------
// Token cache (data/token_cache.c): the documents in one binary file (magic, version, sizes checked,
// written atomically), named by a hash of the data files' bytes, the tokenizer file and every option
// that changes tokens (format, columns, harmony options, on_bad_row).
gt_status token_cache_key(const data_options *o, const char *const *paths, int n, uint64_t *key,
                          gt_error *err);
gt_status token_cache_write(const char *path, uint64_t key, const data_docs *d, gt_error *err);
// GT_ENOTFOUND when absent; GT_EFORMAT (with the reason) for a damaged or foreign file.
gt_status token_cache_read(const char *path, uint64_t key, data_docs *d, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// The whole pipeline (data/pipeline.c): read or reuse the token cache, split train/validation, pack.
typedef struct data_set {
    data_docs docs;          // train files' documents, then val files' documents
    data_pack train, val;
    int cache_hit;           // the documents came from the token cache
    char *cache_path;        // NULL without a cache
    size_t n_val_docs;
} data_set;
gt_status data_set_load(const data_options *o, const tokenizer *tok, data_set *out, gt_error *err);
void data_set_free(data_set *s);

// ===================================================================================================
// Harmony stream parser (data/harmony_stream.c): generated tokens -> messages and channels, as they come.
//
// At inference the prompt ends "<|start|>assistant" and the model writes, e.g.,
//   <|channel|>analysis<|message|>THINKING<|end|><|start|>assistant<|channel|>final<|message|>ANSWER<|return|>
// <|end|> closes ONE message and is not the end of the answer: the stream ends only at <|return|>,
// <|call|> or <|endoftext|> (or when the caller stops feeding it: harmony_stream_finish).
// A header is what lies between <|start|> (or the prompt's role) and <|message|>: the role, " to=R"
// (recipient), <|channel|>NAME [to=R] [TYPE], <|constrain|>TYPE.
// Malformed streams never fail: text outside any message header (a model that never opens a channel,
// text after <|end|>) becomes a message with channel "" holding that text; a stray <|start|> closes the
// open message; a stray <|message|>/<|channel|>/<|constrain|> inside content is dropped; each such repair
// counts as an anomaly. A header longer than HARMONY_HEADER_MAX bytes is taken to be content.
#define HARMONY_HEADER_MAX 256

typedef enum harmony_close {
    HARMONY_CLOSE_OPEN,       // not closed yet
    HARMONY_CLOSE_END,        // <|end|>: more messages may follow
    HARMONY_CLOSE_RETURN,     // <|return|>: the answer is complete
    HARMONY_CLOSE_CALL,       // <|call|>: a tool call, the caller runs it
    HARMONY_CLOSE_ENDOFTEXT,  // <|endoftext|>
    HARMONY_CLOSE_START,      // cut by a stray <|start|>
    HARMONY_CLOSE_UNFINISHED, // generation stopped (max tokens) inside it
} harmony_close;
const char *harmony_close_name(harmony_close c);

typedef struct harmony_message {
    char *role;         // "assistant", ...; "" when neither the prompt nor the stream named one
    char *channel;      // "analysis", "commentary", "final", ...; "" when the model named none
    char *recipient;    // from " to=R" in the header; NULL when none
    char *content_type; // from <|constrain|>TYPE or a word after the channel name; NULL when none
    const char *content; // (len) valid UTF-8 (tokenizer_stream), NUL at [len]; owned by the stream
    size_t len;
    harmony_close closed_by;
} harmony_message;

typedef enum harmony_event_kind {
    HARMONY_EV_BEGIN, // a message's header is complete (role and channel are known)
    HARMONY_EV_TEXT,  // more content of the open message: text[0..len)
    HARMONY_EV_END,   // the message is closed (msg->closed_by says how)
} harmony_event_kind;
typedef struct harmony_event {
    harmony_event_kind kind;
    int index;                  // of the message in the stream
    const harmony_message *msg; // valid during the callback
    const char *text;           // HARMONY_EV_TEXT only
    size_t len;
} harmony_event;
typedef void (*harmony_event_fn)(void *user, const harmony_event *ev);

typedef struct harmony_stream harmony_stream;
// tok gives the special ids (<|start|>, <|end|>, <|message|>, <|channel|>, <|constrain|>, <|return|>,
// <|call|>, <|endoftext|>; those it lacks are never matched) and decodes text. role: the role the prompt
// already opened ("assistant" after harmony_render's generation prompt); NULL when the stream starts
// before a <|start|>.
harmony_stream *harmony_stream_new(const tokenizer *tok, const char *role);
void harmony_stream_free(harmony_stream *hs);
// Feeds one generated token; fn (may be NULL) gets the events it causes, in order. Returns 1 once the
// stream has ended (<|return|>, <|call|>, <|endoftext|>); later tokens are ignored (anomalies).
int harmony_stream_push(harmony_stream *hs, int32_t id, harmony_event_fn fn, void *user);
// Generation stopped without an end token: closes what is open (HARMONY_CLOSE_UNFINISHED). Idempotent.
void harmony_stream_finish(harmony_stream *hs, harmony_event_fn fn, void *user);
int harmony_stream_done(const harmony_stream *hs);
int harmony_stream_n_messages(const harmony_stream *hs);
const harmony_message *harmony_stream_message(const harmony_stream *hs, int i);
int harmony_stream_anomalies(const harmony_stream *hs);
// The answer: the last "final" message; when there is none, the last channel-less message (a model that
// never opened a channel). NULL when there is neither.
const harmony_message *harmony_stream_answer(const harmony_stream *hs);
// The last analysis message (the thinking), or NULL.
const harmony_message *harmony_stream_thinking(const harmony_stream *hs);

#endif
