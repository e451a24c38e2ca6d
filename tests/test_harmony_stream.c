// Harmony stream parser (data/harmony_stream.c) on token streams made by encoding Harmony text with the
// tokenizer fixture (tests/fixtures/tokenizer/tokenizer.json, which carries the Harmony special tokens):
//   - the normal answer: analysis closed by <|end|>, then <|start|>assistant, the final channel, <|return|>:
//     the stream must NOT end at <|end|>, and the answer is the final message;
//   - a tool call (recipient, <|constrain|> content type, <|call|>);
//   - malformed streams: no channel ever opened, a stray <|start|> inside content, text and a header
//     without <|start|> after <|end|>, an over-long header, tokens after the end, max tokens inside a
//     header and inside content, UTF-8 split across tokens;
//   - events: BEGIN/END balanced, the TEXT events of a message concatenate to its content.
// The expected values are written out by hand from the Harmony format (GPTOSS_FACTS.md), not computed.
#include "data/data.h"

#include <stdlib.h>

#include "test_util.h"

static const char *TOKENIZER = "tests/fixtures/tokenizer/tokenizer.json";

// What the events said, per message.
typedef struct record {
    int begins, ends, texts;
    char text[8][2048]; // concatenated TEXT of message i
    int begin_order_ok;
} record;

static void on_event(void *user, const harmony_event *ev) {
    record *r = user;
    if (ev->index < 0 || ev->index >= 8) return;
    if (ev->kind == HARMONY_EV_BEGIN) {
        if (ev->index != r->begins) r->begin_order_ok = 0;
        r->begins++;
    } else if (ev->kind == HARMONY_EV_END) {
        r->ends++;
    } else {
        r->texts++;
        size_t have = strlen(r->text[ev->index]);
        if (have + ev->len < sizeof r->text[0]) {
            memcpy(r->text[ev->index] + have, ev->text, ev->len);
            r->text[ev->index][have + ev->len] = 0;
        }
    }
}

// Feeds the encoding of `text` (specials as single ids) one token at a time. Returns the index of the
// token at which push first returned 1, or -1.
static int feed(harmony_stream *hs, const tokenizer *tok, const char *text, record *r, int *n_tokens) {
    token_buf ids = {0};
    gt_error err = {0};
    CHECK(tokenizer_encode(tok, text, strlen(text), 1, &ids, &err) == GT_OK);
    int ended = -1;
    for (size_t i = 0; i < ids.n; i++)
        if (harmony_stream_push(hs, ids.ids[i], r ? on_event : NULL, r) && ended < 0) ended = (int)i;
    if (n_tokens) *n_tokens = (int)ids.n;
    token_buf_free(&ids);
    return ended;
}

static void check_events(const harmony_stream *hs, const record *r, const char *name) {
    int n = harmony_stream_n_messages(hs);
    EXPECT(r->begins == n && r->ends == n && r->begin_order_ok, "%s: %d messages, %d BEGIN, %d END events", name,
           n, r->begins, r->ends);
    for (int i = 0; i < n && i < 8; i++) {
        const harmony_message *m = harmony_stream_message(hs, i);
        EXPECT(!strcmp(m->content, r->text[i]) && m->len == strlen(m->content),
               "%s: message %d content '%s' but its TEXT events said '%s'", name, i, m->content, r->text[i]);
    }
}

static void expect_msg(const harmony_stream *hs, int i, const char *role, const char *channel, const char *recipient,
                       const char *type, const char *content, harmony_close closed, const char *name) {
    const harmony_message *m = harmony_stream_message(hs, i);
    EXPECT(m, "%s: no message %d", name, i);
    if (!m) return;
    EXPECT(!strcmp(m->role, role), "%s: message %d role '%s', want '%s'", name, i, m->role, role);
    EXPECT(!strcmp(m->channel, channel), "%s: message %d channel '%s', want '%s'", name, i, m->channel, channel);
    EXPECT(recipient ? m->recipient && !strcmp(m->recipient, recipient) : !m->recipient,
           "%s: message %d recipient '%s', want '%s'", name, i, m->recipient ? m->recipient : "(none)",
           recipient ? recipient : "(none)");
    EXPECT(type ? m->content_type && !strcmp(m->content_type, type) : !m->content_type,
           "%s: message %d content type '%s', want '%s'", name, i, m->content_type ? m->content_type : "(none)",
           type ? type : "(none)");
    EXPECT(!strcmp(m->content, content), "%s: message %d content '%s', want '%s'", name, i, m->content, content);
    EXPECT(m->closed_by == closed, "%s: message %d closed by %s, want %s", name, i, harmony_close_name(m->closed_by),
           harmony_close_name(closed));
}

static void test_analysis_then_final(const tokenizer *tok) {
    const char *name = "analysis+final";
    harmony_stream *hs = harmony_stream_new(tok, "assistant");
    record r = {.begin_order_ok = 1};
    // Up to and including the analysis <|end|>: the stream must go on.
    int ended = feed(hs, tok, "<|channel|>analysis<|message|>The user greets. Answer briefly.<|end|>", &r, NULL);
    EXPECT(ended < 0 && !harmony_stream_done(hs), "%s: the stream ended at the analysis message's <|end|>", name);
    EXPECT(harmony_stream_answer(hs) == NULL, "%s: an answer before the final channel", name);
    int n = 0;
    ended = feed(hs, tok, "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>", &r, &n);
    EXPECT(ended == n - 1 && harmony_stream_done(hs), "%s: ended at token %d of %d", name, ended, n);
    EXPECT(harmony_stream_n_messages(hs) == 2, "%s: %d messages", name, harmony_stream_n_messages(hs));
    expect_msg(hs, 0, "assistant", "analysis", NULL, NULL, "The user greets. Answer briefly.", HARMONY_CLOSE_END, name);
    expect_msg(hs, 1, "assistant", "final", NULL, NULL, "Hello! How can I help?", HARMONY_CLOSE_RETURN, name);
    const harmony_message *a = harmony_stream_answer(hs), *t = harmony_stream_thinking(hs);
    EXPECT(a && !strcmp(a->content, "Hello! How can I help?"), "%s: answer", name);
    EXPECT(t && !strcmp(t->content, "The user greets. Answer briefly."), "%s: thinking", name);
    EXPECT(harmony_stream_anomalies(hs) == 0, "%s: %d anomalies", name, harmony_stream_anomalies(hs));
    check_events(hs, &r, name);
    // Tokens after the end change nothing.
    EXPECT(feed(hs, tok, "more text<|end|>", &r, NULL) == 0, "%s: push after the end must return 1", name);
    EXPECT(harmony_stream_n_messages(hs) == 2 && harmony_stream_anomalies(hs) > 0, "%s: after the end", name);
    harmony_stream_free(hs);
}

static void test_tool_call(const tokenizer *tok) {
    const char *name = "tool call";
    harmony_stream *hs = harmony_stream_new(tok, "assistant");
    record r = {.begin_order_ok = 1};
    feed(hs, tok,
         "<|channel|>analysis<|message|>Need the weather.<|end|>"
         "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
         "{\"city\": \"Zürich\"}<|call|>",
         &r, NULL);
    EXPECT(harmony_stream_done(hs), "%s: not done at <|call|>", name);
    expect_msg(hs, 1, "assistant", "commentary", "functions.get_weather", "json", "{\"city\": \"Zürich\"}",
               HARMONY_CLOSE_CALL, name);
    EXPECT(harmony_stream_answer(hs) == NULL, "%s: a tool call is not an answer", name);
    check_events(hs, &r, name);
    harmony_stream_free(hs);

    // The recipient in the role part of the header, the content type after the channel name.
    hs = harmony_stream_new(tok, NULL);
    record r2 = {.begin_order_ok = 1};
    feed(hs, tok, "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>", &r2, NULL);
    expect_msg(hs, 0, "assistant", "commentary", "functions.f", "json", "{}", HARMONY_CLOSE_CALL, "recipient in role");
    check_events(hs, &r2, "recipient in role");
    harmony_stream_free(hs);
}

static void test_malformed(const tokenizer *tok) {
    // A model that never opens a channel: its text is the answer.
    harmony_stream *hs = harmony_stream_new(tok, "assistant");
    record r = {.begin_order_ok = 1};
    feed(hs, tok, "Just text, no header.<|return|>", &r, NULL);
    expect_msg(hs, 0, "assistant", "", NULL, NULL, "Just text, no header.", HARMONY_CLOSE_RETURN, "no channel");
    const harmony_message *a = harmony_stream_answer(hs);
    EXPECT(a && !strcmp(a->content, "Just text, no header."), "no channel: answer");
    EXPECT(harmony_stream_anomalies(hs) == 1, "no channel: %d anomalies", harmony_stream_anomalies(hs));
    check_events(hs, &r, "no channel");
    harmony_stream_free(hs);

    // A stray <|start|> inside content closes it; stray <|message|>/<|channel|> in content are dropped.
    hs = harmony_stream_new(tok, "assistant");
    record r2 = {.begin_order_ok = 1};
    feed(hs, tok,
         "<|channel|>analysis<|message|>think<|channel|>ing<|start|>assistant<|channel|>final<|message|>ok<|message|>!"
         "<|return|>",
         &r2, NULL);
    expect_msg(hs, 0, "assistant", "analysis", NULL, NULL, "thinking", HARMONY_CLOSE_START, "stray start");
    expect_msg(hs, 1, "assistant", "final", NULL, NULL, "ok!", HARMONY_CLOSE_RETURN, "stray start");
    EXPECT(harmony_stream_anomalies(hs) == 3, "stray start: %d anomalies, want 3", harmony_stream_anomalies(hs));
    check_events(hs, &r2, "stray start");
    harmony_stream_free(hs);

    // After <|end|>: a header without <|start|>, then text without anything.
    hs = harmony_stream_new(tok, "assistant");
    record r3 = {.begin_order_ok = 1};
    feed(hs, tok, "<|channel|>analysis<|message|>a<|end|><|channel|>final<|message|>b<|end|>loose text<|end|><|end|>",
         &r3, NULL);
    EXPECT(!harmony_stream_done(hs), "no start: done without an end token");
    harmony_stream_finish(hs, on_event, &r3);
    harmony_stream_finish(hs, on_event, &r3); // idempotent
    EXPECT(harmony_stream_n_messages(hs) == 3, "no start: %d messages", harmony_stream_n_messages(hs));
    expect_msg(hs, 1, "assistant", "final", NULL, NULL, "b", HARMONY_CLOSE_END, "no start");
    expect_msg(hs, 2, "assistant", "", NULL, NULL, "loose text", HARMONY_CLOSE_END, "no start");
    a = harmony_stream_answer(hs);
    EXPECT(a && !strcmp(a->content, "b"), "no start: the final message is the answer");
    check_events(hs, &r3, "no start");
    harmony_stream_free(hs);

    // A "header" longer than HARMONY_HEADER_MAX is content, streamed from then on.
    char longtext[700];
    size_t n = 0;
    while (n + 30 < sizeof longtext - 20) n += (size_t)snprintf(longtext + n, sizeof longtext - n, "word %zu and more ", n);
    hs = harmony_stream_new(tok, "assistant");
    record r4 = {.begin_order_ok = 1};
    char *text = xasprintf("%s<|return|>", longtext);
    feed(hs, tok, text, &r4, NULL);
    free(text);
    expect_msg(hs, 0, "assistant", "", NULL, NULL, longtext, HARMONY_CLOSE_RETURN, "long header");
    EXPECT(r4.texts > 2, "long header: the content must stream (got %d TEXT events)", r4.texts);
    check_events(hs, &r4, "long header");
    harmony_stream_free(hs);

    // Max tokens inside a header that opened a channel, and inside content.
    hs = harmony_stream_new(tok, "assistant");
    record r5 = {.begin_order_ok = 1};
    feed(hs, tok, "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fin", &r5, NULL);
    harmony_stream_finish(hs, on_event, &r5);
    expect_msg(hs, 1, "assistant", "fin", NULL, NULL, "", HARMONY_CLOSE_UNFINISHED, "cut header");
    check_events(hs, &r5, "cut header");
    harmony_stream_free(hs);
    hs = harmony_stream_new(tok, "assistant");
    record r6 = {.begin_order_ok = 1};
    feed(hs, tok, "<|channel|>final<|message|>half an ans", &r6, NULL);
    harmony_stream_finish(hs, on_event, &r6);
    expect_msg(hs, 0, "assistant", "final", NULL, NULL, "half an ans", HARMONY_CLOSE_UNFINISHED, "cut content");
    check_events(hs, &r6, "cut content");
    harmony_stream_free(hs);

    // A stream that starts before any <|start|> (role NULL) and an <|endoftext|>.
    hs = harmony_stream_new(tok, NULL);
    record r7 = {.begin_order_ok = 1};
    feed(hs, tok, "<|start|>assistant<|channel|>final<|message|>done<|endoftext|>", &r7, NULL);
    expect_msg(hs, 0, "assistant", "final", NULL, NULL, "done", HARMONY_CLOSE_ENDOFTEXT, "endoftext");
    EXPECT(harmony_stream_done(hs), "endoftext: not done");
    harmony_stream_free(hs);

    // Nothing but an end token: no message at all.
    hs = harmony_stream_new(tok, "assistant");
    feed(hs, tok, "<|return|>", NULL, NULL);
    EXPECT(harmony_stream_n_messages(hs) == 0 && harmony_stream_answer(hs) == NULL, "empty: %d messages",
           harmony_stream_n_messages(hs));
    harmony_stream_free(hs);
}

// UTF-8 characters split over byte tokens come out whole, never as U+FFFD.
static void test_utf8(const tokenizer *tok) {
    const char *want = "Grüße, 東京 🙂";
    harmony_stream *hs = harmony_stream_new(tok, "assistant");
    record r = {.begin_order_ok = 1};
    token_buf ids = {0};
    gt_error err = {0};
    CHECK(tokenizer_encode(tok, "<|channel|>final<|message|>", 27, 1, &ids, &err) == GT_OK);
    // The text as single-byte tokens: each byte of a multi-byte character is its own token.
    for (const char *p = want; *p; p++) {
        token_buf one = {0};
        CHECK(tokenizer_encode(tok, p, 1, 0, &one, &err) == GT_OK);
        for (size_t i = 0; i < one.n; i++) token_buf_push(&ids, one.ids[i]);
        token_buf_free(&one);
    }
    token_buf_push(&ids, tokenizer_special_id(tok, "<|return|>"));
    for (size_t i = 0; i < ids.n; i++) harmony_stream_push(hs, ids.ids[i], on_event, &r);
    expect_msg(hs, 0, "assistant", "final", NULL, NULL, want, HARMONY_CLOSE_RETURN, "utf8");
    check_events(hs, &r, "utf8");
    token_buf_free(&ids);
    harmony_stream_free(hs);
}

int main(void) {
    tokenizer *tok = NULL;
    gt_error err = {0};
    if (tokenizer_load_hf(&tok, TOKENIZER, &err) != GT_OK) {
        fprintf(stderr, "FAIL: %s\n", err.msg);
        return 1;
    }
    test_analysis_then_final(tok);
    test_tool_call(tok);
    test_malformed(tok);
    test_utf8(tok);
    tokenizer_free(tok);
    return test_finish("test_harmony_stream");
}
