// Harmony stream parser: generated token ids -> messages (role, channel, recipient, content type,
// content), with events as they happen, so a chat can stream one channel and hide the others.
//
// States:  HEADER  (after <|start|> or the prompt's "<|start|>ROLE": role, <|channel|>, <|constrain|> text)
//          CONTENT (after <|message|>: text until <|end|>, <|return|>, <|call|>, <|endoftext|>)
//          BETWEEN (after <|end|>: waiting for the next <|start|>)
//          DONE    (after <|return|>, <|call|>, <|endoftext|> or harmony_stream_finish)
// Invariants: every message that got a BEGIN event gets exactly one END event; content is valid UTF-8
// (decoded through a tokenizer_stream, flushed at each message end); <|end|> never ends the stream.
// Repairs of malformed streams (data.h) are counted in `anomalies`, never fatal.
#include "data/data.h"

#include <stdlib.h>

typedef enum { HS_HEADER, HS_CONTENT, HS_BETWEEN, HS_DONE } hs_state;
typedef enum { SEG_ROLE, SEG_CHANNEL, SEG_CONSTRAIN } hs_seg;
typedef enum { SP_START, SP_END, SP_MESSAGE, SP_CHANNEL, SP_CONSTRAIN, SP_RETURN, SP_CALL, SP_EOT, SP_COUNT } hs_special;
static const char *const SPECIAL_NAMES[SP_COUNT] = {"<|start|>", "<|end|>", "<|message|>", "<|channel|>",
                                                    "<|constrain|>", "<|return|>", "<|call|>", "<|endoftext|>"};

typedef struct strbuf {
    char *s;
    size_t n, cap;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 64;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static const char *sb_str(const strbuf *b) { return b->n ? b->s : ""; }

struct harmony_stream {
    const tokenizer *tok;
    int32_t special[SP_COUNT]; // -1 when the tokenizer lacks it
    hs_state state;
    hs_seg seg;
    int seg_seen[3];          // which header segments were opened
    strbuf hdr[3];            // role, channel, constrain text of the open header
    size_t hdr_bytes;
    char *prefill_role;       // the role the prompt (or the previous message) opened, or NULL
    tokenizer_stream ts;      // decoding the current header or content
    char *out;                // (tokenizer_stream_out_size) decode buffer
    size_t out_size;
    harmony_message *msgs;
    strbuf *content;          // [n_msgs] growing content of each message
    int n_msgs, cap_msgs;
    int anomalies;
};

const char *harmony_close_name(harmony_close c) {
    static const char *const N[] = {"open", "<|end|>", "<|return|>", "<|call|>", "<|endoftext|>", "<|start|>",
                                    "max tokens"};
    return (unsigned)c < sizeof N / sizeof *N ? N[c] : "?";
}

harmony_stream *harmony_stream_new(const tokenizer *tok, const char *role) {
    harmony_stream *hs = xcalloc(1, sizeof *hs);
    hs->tok = tok;
    for (int i = 0; i < SP_COUNT; i++) hs->special[i] = tokenizer_special_id(tok, SPECIAL_NAMES[i]);
    hs->state = role ? HS_HEADER : HS_BETWEEN;
    hs->seg = SEG_ROLE;
    hs->prefill_role = role ? xstrdup(role) : NULL;
    hs->ts = (tokenizer_stream){.tok = tok};
    hs->out_size = tokenizer_stream_out_size(tok);
    hs->out = xmalloc(hs->out_size);
    return hs;
}

static void message_free(harmony_message *m) {
    free(m->role);
    free(m->channel);
    free(m->recipient);
    free(m->content_type);
}

void harmony_stream_free(harmony_stream *hs) {
    if (!hs) return;
    for (int i = 0; i < hs->n_msgs; i++) {
        message_free(&hs->msgs[i]);
        free(hs->content[i].s);
    }
    for (int i = 0; i < 3; i++) free(hs->hdr[i].s);
    free(hs->msgs);
    free(hs->content);
    free(hs->prefill_role);
    free(hs->out);
    free(hs);
}

static void emit(harmony_stream *hs, harmony_event_fn fn, void *user, harmony_event_kind kind, const char *text,
                 size_t len) {
    if (!fn) return;
    harmony_event ev = {kind, hs->n_msgs - 1, &hs->msgs[hs->n_msgs - 1], text, len};
    fn(user, &ev);
}

// ---------------------------------------------------------------------------------------------------
// Header text: words separated by ASCII whitespace.

// The word of s starting at *p (skipping whitespace first); advances *p. NULL at the end.
static char *next_word(const char *s, size_t *p) {
    while (s[*p] == ' ' || s[*p] == '\t' || s[*p] == '\n' || s[*p] == '\r') (*p)++;
    size_t b = *p;
    while (s[*p] && s[*p] != ' ' && s[*p] != '\t' && s[*p] != '\n' && s[*p] != '\r') (*p)++;
    if (*p == b) return NULL;
    char *w = xmalloc(*p - b + 1);
    memcpy(w, s + b, *p - b);
    w[*p - b] = 0;
    return w;
}

static void set_field(char **field, char *value) {
    free(*field);
    *field = value;
}

// Splits one header segment: its first word goes to *first (if first is not NULL), "to=R" words set the
// recipient, any other word the content type.
static void parse_words(const char *s, char **first, harmony_message *m) {
    size_t p = 0;
    char *w;
    int n = 0;
    while ((w = next_word(s, &p))) {
        if (!strncmp(w, "to=", 3)) {
            set_field(&m->recipient, xstrdup(w + 3));
            free(w);
        } else if (n == 0 && first) {
            set_field(first, w);
        } else {
            set_field(&m->content_type, w);
        }
        n++;
    }
}

// Opens a new message from the header buffers and emits BEGIN.
static void message_begin(harmony_stream *hs, harmony_event_fn fn, void *user) {
    if (hs->n_msgs == hs->cap_msgs) {
        hs->cap_msgs = hs->cap_msgs ? 2 * hs->cap_msgs : 4;
        hs->msgs = xrealloc(hs->msgs, (size_t)hs->cap_msgs * sizeof *hs->msgs);
        hs->content = xrealloc(hs->content, (size_t)hs->cap_msgs * sizeof *hs->content);
    }
    harmony_message *m = &hs->msgs[hs->n_msgs];
    memset(m, 0, sizeof *m);
    hs->content[hs->n_msgs] = (strbuf){0};
    hs->n_msgs++;
    m->role = hs->prefill_role ? xstrdup(hs->prefill_role) : NULL;
    parse_words(sb_str(&hs->hdr[SEG_ROLE]), hs->prefill_role ? NULL : &m->role, m);
    parse_words(sb_str(&hs->hdr[SEG_CHANNEL]), &m->channel, m);
    char *type = NULL;
    parse_words(sb_str(&hs->hdr[SEG_CONSTRAIN]), &type, m);
    if (type) set_field(&m->content_type, type);
    if (!m->role) m->role = xstrdup("");
    if (!m->channel) m->channel = xstrdup("");
    m->content = "";
    emit(hs, fn, user, HARMONY_EV_BEGIN, NULL, 0);
}

static void content_put(harmony_stream *hs, harmony_event_fn fn, void *user, const char *s, size_t n) {
    if (!n) return;
    strbuf *c = &hs->content[hs->n_msgs - 1];
    sb_put(c, s, n);
    harmony_message *m = &hs->msgs[hs->n_msgs - 1];
    m->content = c->s;
    m->len = c->n;
    emit(hs, fn, user, HARMONY_EV_TEXT, s, n);
}

static void header_reset(harmony_stream *hs) {
    for (int i = 0; i < 3; i++) {
        hs->hdr[i].n = 0;
        if (hs->hdr[i].s) hs->hdr[i].s[0] = 0;
        hs->seg_seen[i] = 0;
    }
    hs->seg = SEG_ROLE;
    hs->hdr_bytes = 0;
}

// Starts a header: role_prefill is the role already known (NULL: the header names it).
static void header_start(harmony_stream *hs, const char *role_prefill) {
    char *r = role_prefill ? xstrdup(role_prefill) : NULL;
    free(hs->prefill_role);
    hs->prefill_role = r;
    header_reset(hs);
    hs->ts = (tokenizer_stream){.tok = hs->tok};
    hs->state = HS_HEADER;
}

static void header_flush_text(harmony_stream *hs) {
    size_t n = tokenizer_stream_flush(&hs->ts, hs->out, hs->out_size);
    sb_put(&hs->hdr[hs->seg], hs->out, n);
    hs->hdr_bytes += n;
}

// The header's text so far, as it would read as plain content (a malformed stream); NUL bytes kept.
static strbuf header_as_text(harmony_stream *hs) {
    strbuf b = {0};
    sb_put(&b, "", 0);
    for (int i = 0; i < 3; i++) sb_put(&b, sb_str(&hs->hdr[i]), hs->hdr[i].n);
    return b;
}

// A header with no <|message|> ends (by `how`). A header that opened a channel is a message with empty
// content; otherwise its text was content the model wrote without any header.
static void header_abort(harmony_stream *hs, harmony_event_fn fn, void *user, harmony_close how) {
    header_flush_text(hs);
    if (hs->seg_seen[SEG_CHANNEL] || hs->seg_seen[SEG_CONSTRAIN]) {
        message_begin(hs, fn, user);
    } else {
        if (hs->hdr_bytes == 0) return; // nothing at all was written
        strbuf text = header_as_text(hs);
        header_reset(hs);
        message_begin(hs, fn, user);
        content_put(hs, fn, user, text.s, text.n);
        free(text.s);
        hs->anomalies++;
    }
    hs->msgs[hs->n_msgs - 1].closed_by = how;
    emit(hs, fn, user, HARMONY_EV_END, NULL, 0);
}

static void content_close(harmony_stream *hs, harmony_event_fn fn, void *user, harmony_close how) {
    size_t n = tokenizer_stream_flush(&hs->ts, hs->out, hs->out_size);
    content_put(hs, fn, user, hs->out, n);
    hs->msgs[hs->n_msgs - 1].closed_by = how;
    emit(hs, fn, user, HARMONY_EV_END, NULL, 0);
}

static int classify(const harmony_stream *hs, int32_t id) {
    for (int i = 0; i < SP_COUNT; i++)
        if (hs->special[i] >= 0 && hs->special[i] == id) return i;
    return -1;
}

static harmony_close close_of(int sp) {
    return sp == SP_RETURN ? HARMONY_CLOSE_RETURN : sp == SP_CALL ? HARMONY_CLOSE_CALL : HARMONY_CLOSE_ENDOFTEXT;
}

static const char *last_role(const harmony_stream *hs) {
    return hs->n_msgs && hs->msgs[hs->n_msgs - 1].role[0] ? hs->msgs[hs->n_msgs - 1].role : "assistant";
}

int harmony_stream_push(harmony_stream *hs, int32_t id, harmony_event_fn fn, void *user) {
    int sp = classify(hs, id);
    switch (hs->state) {
    case HS_DONE:
        hs->anomalies++;
        return 1;
    case HS_BETWEEN:
        if (sp == SP_START) {
            header_start(hs, NULL);
            return 0;
        }
        if (sp == SP_RETURN || sp == SP_CALL || sp == SP_EOT) {
            hs->state = HS_DONE;
            return 1;
        }
        if (sp == SP_END) {
            hs->anomalies++;
            return 0;
        }
        // Text or a header token without <|start|>: a new message of the same role.
        hs->anomalies++;
        header_start(hs, last_role(hs));
        return harmony_stream_push(hs, id, fn, user);
    case HS_HEADER:
        switch (sp) {
        case SP_CHANNEL:
        case SP_CONSTRAIN:
            header_flush_text(hs);
            hs->seg = sp == SP_CHANNEL ? SEG_CHANNEL : SEG_CONSTRAIN;
            if (hs->seg_seen[hs->seg]) sb_put(&hs->hdr[hs->seg], " ", 1), hs->anomalies++;
            hs->seg_seen[hs->seg] = 1;
            return 0;
        case SP_MESSAGE:
            header_flush_text(hs);
            message_begin(hs, fn, user);
            hs->ts = (tokenizer_stream){.tok = hs->tok};
            hs->state = HS_CONTENT;
            return 0;
        case SP_END:
            header_abort(hs, fn, user, HARMONY_CLOSE_END);
            hs->state = HS_BETWEEN;
            return 0;
        case SP_START:
            hs->anomalies++;
            header_abort(hs, fn, user, HARMONY_CLOSE_START);
            header_start(hs, NULL);
            return 0;
        case SP_RETURN:
        case SP_CALL:
        case SP_EOT:
            header_abort(hs, fn, user, close_of(sp));
            hs->state = HS_DONE;
            return 1;
        default: {
            size_t n = tokenizer_stream_push(&hs->ts, id, hs->out, hs->out_size);
            sb_put(&hs->hdr[hs->seg], hs->out, n);
            hs->hdr_bytes += n;
            if (hs->hdr_bytes > HARMONY_HEADER_MAX) { // no header is this long: it was content
                strbuf text = header_as_text(hs);
                header_reset(hs);
                message_begin(hs, fn, user);
                content_put(hs, fn, user, text.s, text.n);
                free(text.s);
                hs->state = HS_CONTENT;
                hs->anomalies++;
            }
            return 0;
        }
        }
    case HS_CONTENT:
        switch (sp) {
        case SP_END:
            content_close(hs, fn, user, HARMONY_CLOSE_END);
            hs->state = HS_BETWEEN;
            return 0;
        case SP_RETURN:
        case SP_CALL:
        case SP_EOT:
            content_close(hs, fn, user, close_of(sp));
            hs->state = HS_DONE;
            return 1;
        case SP_START:
            hs->anomalies++;
            content_close(hs, fn, user, HARMONY_CLOSE_START);
            header_start(hs, NULL);
            return 0;
        case SP_MESSAGE:
        case SP_CHANNEL:
        case SP_CONSTRAIN:
            hs->anomalies++;
            return 0;
        default: {
            size_t n = tokenizer_stream_push(&hs->ts, id, hs->out, hs->out_size);
            content_put(hs, fn, user, hs->out, n);
            return 0;
        }
        }
    }
    return 0;
}

void harmony_stream_finish(harmony_stream *hs, harmony_event_fn fn, void *user) {
    if (hs->state == HS_HEADER) header_abort(hs, fn, user, HARMONY_CLOSE_UNFINISHED);
    else if (hs->state == HS_CONTENT) content_close(hs, fn, user, HARMONY_CLOSE_UNFINISHED);
    hs->state = HS_DONE;
}

int harmony_stream_done(const harmony_stream *hs) { return hs->state == HS_DONE; }
int harmony_stream_n_messages(const harmony_stream *hs) { return hs->n_msgs; }
const harmony_message *harmony_stream_message(const harmony_stream *hs, int i) {
    return i >= 0 && i < hs->n_msgs ? &hs->msgs[i] : NULL;
}
int harmony_stream_anomalies(const harmony_stream *hs) { return hs->anomalies; }

static const harmony_message *last_on(const harmony_stream *hs, const char *channel) {
    for (int i = hs->n_msgs - 1; i >= 0; i--)
        if (!strcmp(hs->msgs[i].channel, channel)) return &hs->msgs[i];
    return NULL;
}

const harmony_message *harmony_stream_answer(const harmony_stream *hs) {
    const harmony_message *m = last_on(hs, "final");
    return m ? m : last_on(hs, "");
}

const harmony_message *harmony_stream_thinking(const harmony_stream *hs) { return last_on(hs, "analysis"); }
