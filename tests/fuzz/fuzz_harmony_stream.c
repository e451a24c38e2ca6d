// libFuzzer target: the Harmony stream parser (data/harmony_stream.c) on arbitrary token streams, with the
// fixture tokenizer (tests/fixtures/tokenizer/, from the repository root or $GPTOSS_SRC).
// Input: byte 0 picks the start (bit 0: the prompt opened "assistant", else the stream starts before any
// <|start|>) and whether harmony_stream_finish closes the stream at the end (bit 1). Then each byte b < 12
// is one special token (the Harmony ones, <|startoftext|>, <|endofprompt|>, an id past the vocabulary, -1)
// and any other byte starts a two-byte ordinary token id (modulo the vocabulary).
// Checks: push returns 1 exactly when done; every BEGIN has one END (all closed after finish); the TEXT
// events of a message concatenate to its content; content is NUL-terminated at len (a token may decode to a NUL byte); message
// count and indices agree.
#include "fuzz_util.h"

#include <stdlib.h>

static tokenizer *tok;
static int32_t specials[12];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tok = fuzz_fixture_tokenizer();
    static const char *const names[10] = {"<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>",
                                          "<|return|>", "<|call|>", "<|endoftext|>", "<|startoftext|>",
                                          "<|endofprompt|>"};
    for (int i = 0; i < 10; i++) specials[i] = tokenizer_special_id(tok, names[i]);
    specials[10] = tokenizer_vocab_size(tok) + 7;
    specials[11] = -1;
    return 0;
}

typedef struct state {
    int begins, ends, open, cur;
    char *text[64];
    size_t len[64];
} state;

static void on_event(void *user, const harmony_event *ev) {
    state *s = user;
    if (ev->index < 0 || ev->index >= 64) gt_die(__FILE__, __LINE__, "event index %d", ev->index);
    if (ev->kind == HARMONY_EV_BEGIN) {
        if (s->open || ev->index != s->begins) gt_die(__FILE__, __LINE__, "BEGIN %d while open/out of order", ev->index);
        s->begins++, s->open = 1, s->cur = ev->index;
    } else if (ev->kind == HARMONY_EV_END) {
        if (!s->open || ev->index != s->cur) gt_die(__FILE__, __LINE__, "END without BEGIN");
        if (ev->msg->closed_by == HARMONY_CLOSE_OPEN) gt_die(__FILE__, __LINE__, "END of a message still open");
        s->ends++, s->open = 0;
    } else {
        if (!s->open || ev->index != s->cur || ev->len == 0) gt_die(__FILE__, __LINE__, "TEXT outside a message");
        s->text[ev->index] = realloc(s->text[ev->index], s->len[ev->index] + ev->len);
        memcpy(s->text[ev->index] + s->len[ev->index], ev->text, ev->len);
        s->len[ev->index] += ev->len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || size > 4096) return 0;
    harmony_stream *hs = harmony_stream_new(tok, data[0] & 1 ? "assistant" : NULL);
    state s = {0};
    int vocab = tokenizer_vocab_size(tok);
    for (size_t i = 1; i < size && s.begins < 60; i++) {
        int32_t id;
        if (data[i] < 12) id = specials[data[i]];
        else if (i + 1 < size) id = (int32_t)(((unsigned)data[i] << 8 | data[i + 1]) % (unsigned)vocab), i++;
        else id = data[i];
        int done_before = harmony_stream_done(hs);
        int r = harmony_stream_push(hs, id, on_event, &s);
        if (r != harmony_stream_done(hs) || (done_before && !r)) gt_die(__FILE__, __LINE__, "push result vs done");
    }
    if (data[0] & 2) {
        harmony_stream_finish(hs, on_event, &s);
        if (s.open || !harmony_stream_done(hs)) gt_die(__FILE__, __LINE__, "a message is open after finish");
    }
    int n = harmony_stream_n_messages(hs);
    if (n != s.begins || s.ends != s.begins - s.open) gt_die(__FILE__, __LINE__, "message/event counts");
    for (int i = 0; i < n; i++) {
        const harmony_message *m = harmony_stream_message(hs, i);
        if (!m->role || !m->channel || !m->content || m->content[m->len] != 0)
            gt_die(__FILE__, __LINE__, "message %d fields", i);
        if (m->len != s.len[i] || (m->len && memcmp(m->content, s.text[i], m->len)))
            gt_die(__FILE__, __LINE__, "message %d content differs from its TEXT events", i);
    }
    const harmony_message *a = harmony_stream_answer(hs), *t = harmony_stream_thinking(hs);
    if ((a && strcmp(a->channel, "final") && a->channel[0]) || (t && strcmp(t->channel, "analysis")))
        gt_die(__FILE__, __LINE__, "answer/thinking on the wrong channel");
    harmony_stream_free(hs);
    for (int i = 0; i < 64; i++) free(s.text[i]);
    return 0;
}
