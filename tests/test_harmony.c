// Harmony render against GPT-OSS's own chat template:
//   - tests/fixtures/harmony/renders.json (tests/ref/make_harmony_fixture.py) holds jinja2 renders of
//     tests/fixtures/harmony/chat_template.jinja through transformers' render_jinja_template, with the
//     clock pinned; harmony_render must give the same bytes, and the trained spans the script found
//     with HF's {% generation %} machinery (train_on assistant and final);
//   - train_on all, the harmony variant (the HF text minus the "\n\n" before the developer <|end|>),
//     an unpinned date (today's), and the template's refusals;
//   - with the tokenizer fixture (tests/fixtures/tokenizer/tokenizer.json): harmony_tokenize must give the
//     ids HF `tokenizers` gave for the whole rendered string, every template special token one id, labels
//     exactly on the trained spans, and a special-token string typed in user text must stay text.
#include "data/data.h"

#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "test_util.h"

static const char *RENDERS = "tests/fixtures/harmony/renders.json";
static const char *TOKENIZER = "tests/fixtures/tokenizer/tokenizer.json";

// Prints where two texts first differ, with some context, escaped.
static void show_diff(const char *name, const char *got, size_t got_len, const char *want, size_t want_len) {
    size_t i = 0;
    while (i < got_len && i < want_len && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "%s: texts differ at byte %zu (got %zu bytes, want %zu)\n  got:  ", name, i, got_len, want_len);
    for (size_t k = from; k < got_len && k < i + 40; k++) fputs(got[k] == '\n' ? "\\n" : (char[]){got[k], 0}, stderr);
    fprintf(stderr, "\n  want: ");
    for (size_t k = from; k < want_len && k < i + 40; k++)
        fputs(want[k] == '\n' ? "\\n" : (char[]){want[k], 0}, stderr);
    fputc('\n', stderr);
}

typedef struct fixture_case {
    const char *name;
    chat_message *msgs;
    int n;
    harmony_options opt;
    int gen;
    const char *text;
    size_t text_len;
    json_t *rec;
} fixture_case;

static chat_role role_of(const char *r) {
    if (!strcmp(r, "system")) return CHAT_SYSTEM;
    if (!strcmp(r, "developer")) return CHAT_DEVELOPER;
    if (!strcmp(r, "user")) return CHAT_USER;
    CHECK(!strcmp(r, "assistant"));
    return CHAT_ASSISTANT;
}

static void case_load(fixture_case *c, json_t *rec) {
    memset(c, 0, sizeof *c);
    c->rec = rec;
    c->name = json_string_value(json_object_get(rec, "name"));
    json_t *msgs = json_object_get(rec, "messages");
    c->n = (int)json_array_size(msgs);
    c->msgs = xcalloc((size_t)c->n, sizeof *c->msgs);
    for (int i = 0; i < c->n; i++) {
        json_t *m = json_array_get(msgs, (size_t)i);
        c->msgs[i].role = role_of(json_string_value(json_object_get(m, "role")));
        c->msgs[i].content = json_string_value(json_object_get(m, "content"));
        json_t *th = json_object_get(m, "thinking");
        c->msgs[i].thinking = th ? json_string_value(th) : NULL;
    }
    harmony_options_defaults(&c->opt);
    c->opt.date = json_string_value(json_object_get(rec, "date"));
    json_t *kw = json_object_get(rec, "kwargs");
    if (json_object_get(kw, "reasoning_effort"))
        c->opt.reasoning_effort = json_string_value(json_object_get(kw, "reasoning_effort"));
    if (json_object_get(kw, "model_identity"))
        c->opt.model_identity = json_string_value(json_object_get(kw, "model_identity"));
    c->gen = json_is_true(json_object_get(rec, "add_generation_prompt"));
    c->text = json_string_value(json_object_get(rec, "text"));
    c->text_len = json_string_length(json_object_get(rec, "text"));
}

static void expect_spans(const char *name, const char *mode, const harmony_text *t, json_t *want) {
    int n = (int)json_array_size(want);
    EXPECT(t->n_trained == n, "%s: train_on %s: %d spans, want %d", name, mode, t->n_trained, n);
    for (int i = 0; i < n && i < t->n_trained; i++) {
        json_t *s = json_array_get(want, (size_t)i);
        size_t b = (size_t)json_integer_value(json_array_get(s, 0)), e = (size_t)json_integer_value(json_array_get(s, 1));
        EXPECT(t->trained[i].begin == b && t->trained[i].end == e, "%s: train_on %s: span %d is [%zu, %zu), want [%zu, %zu)",
               name, mode, i, t->trained[i].begin, t->trained[i].end, b, e);
    }
}

static void test_render(fixture_case *c) {
    static const harmony_train_on modes[2] = {HARMONY_TRAIN_ASSISTANT, HARMONY_TRAIN_FINAL};
    static const char *const keys[2] = {"trained_assistant", "trained_final"};
    for (int m = 0; m < 2; m++) {
        harmony_text t;
        gt_error err;
        c->opt.train_on = modes[m];
        gt_status st = harmony_render(c->msgs, c->n, &c->opt, c->gen, &t, &err);
        EXPECT(st == GT_OK, "%s: %s", c->name, err.msg);
        if (st) return;
        int same = t.len == c->text_len && !memcmp(t.text, c->text, t.len);
        EXPECT(same, "%s: render differs from the template's", c->name);
        if (!same) show_diff(c->name, t.text, t.len, c->text, c->text_len);
        expect_spans(c->name, keys[m] + 8, &t, json_object_get(c->rec, keys[m]));
        // Every recorded special is a template special at that place, and no bytes of the text that
        // look like "<|...|>" outside user-typed text are missed: count them.
        for (int s = 0; s < t.n_specials; s++)
            EXPECT(t.text[t.specials[s].begin] == '<' && t.text[t.specials[s].end - 1] == '>',
                   "%s: special %d is not a <|...|> token", c->name, s);
        harmony_text_free(&t);
    }
    // train_on all: the whole text, one span (none with a generation prompt).
    harmony_text t;
    gt_error err;
    c->opt.train_on = HARMONY_TRAIN_ALL;
    if (harmony_render(c->msgs, c->n, &c->opt, c->gen, &t, &err) == GT_OK) {
        if (c->gen) EXPECT(t.n_trained == 0, "%s: train_on all with a generation prompt has spans", c->name);
        else EXPECT(t.n_trained == 1 && t.trained[0].begin == 0 && t.trained[0].end == t.len,
                    "%s: train_on all is not one whole-text span", c->name);
        harmony_text_free(&t);
    }
    c->opt.train_on = HARMONY_TRAIN_ASSISTANT;
}

// The harmony variant is the HF text without the "\n\n" that ends the developer instructions.
static void test_variant(fixture_case *c) {
    if (c->msgs[0].role != CHAT_SYSTEM && c->msgs[0].role != CHAT_DEVELOPER) return;
    if (!c->msgs[0].content[0]) return;
    char *needle = xasprintf("# Instructions\n\n%s\n\n<|end|>", c->msgs[0].content);
    const char *at = strstr(c->text, needle);
    EXPECT(at, "%s: no developer block in the reference text", c->name);
    if (!at) {
        free(needle);
        return;
    }
    size_t cut = (size_t)(at - c->text) + strlen(needle) - strlen("\n\n<|end|>");
    char *want = xasprintf("%.*s%s", (int)cut, c->text, c->text + cut + 2);
    harmony_text t;
    gt_error err;
    c->opt.variant = HARMONY_VARIANT_HARMONY;
    gt_status st = harmony_render(c->msgs, c->n, &c->opt, c->gen, &t, &err);
    c->opt.variant = HARMONY_VARIANT_HF;
    EXPECT(st == GT_OK && !strcmp(t.text, want), "%s: harmony variant wrong", c->name);
    if (st == GT_OK && strcmp(t.text, want)) show_diff(c->name, t.text, t.len, want, strlen(want));
    if (st == GT_OK) harmony_text_free(&t);
    free(want);
    free(needle);
}

// Ids against HF tokenizers' encoding of the whole string; specials single; labels on the spans.
static void test_tokenize(fixture_case *c, const tokenizer *tok) {
    json_t *want = json_object_get(c->rec, "ids");
    harmony_text t;
    gt_error err;
    if (harmony_render(c->msgs, c->n, &c->opt, c->gen, &t, &err) != GT_OK) return;
    token_buf ids = {0}, labels = {0};
    gt_status st = harmony_tokenize(tok, &t, &ids, &labels, &err);
    EXPECT(st == GT_OK, "%s: %s", c->name, err.msg);
    if (st == GT_OK) {
        EXPECT(ids.n == labels.n, "%s: %zu ids, %zu labels", c->name, ids.n, labels.n);
        if (want) {
            size_t n = json_array_size(want), bad = (size_t)-1;
            for (size_t i = 0; i < n && i < ids.n && bad == (size_t)-1; i++)
                if (ids.ids[i] != json_integer_value(json_array_get(want, i))) bad = i;
            EXPECT(ids.n == n && bad == (size_t)-1, "%s: %zu ids, HF %zu; first difference at %zd (ours %d, HF %lld)",
                   c->name, ids.n, n, (ssize_t)bad, bad != (size_t)-1 ? ids.ids[bad] : -1,
                   bad != (size_t)-1 ? (long long)json_integer_value(json_array_get(want, bad)) : -1LL);
        }
        // Each template special is one id; no other id is special (user text stays text).
        size_t n_special_ids = 0;
        const char *names[] = {"<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|return|>"};
        for (size_t i = 0; i < ids.n; i++)
            for (int k = 0; k < 5; k++) n_special_ids += ids.ids[i] == tokenizer_special_id(tok, names[k]);
        EXPECT(n_special_ids == (size_t)t.n_specials, "%s: %zu special ids for %d template specials", c->name,
               n_special_ids, t.n_specials);
        // The labelled tokens' bytes are exactly the trained spans' bytes.
        char *lab = xmalloc(t.len + 1), *spn = xmalloc(t.len + 1);
        size_t nl = 0, ns = 0;
        for (size_t i = 0; i < labels.n; i++) {
            if (labels.ids[i] < 0) continue;
            EXPECT(labels.ids[i] == ids.ids[i], "%s: label %zu is %d, id %d", c->name, i, labels.ids[i], ids.ids[i]);
            size_t bl;
            const char *b = tokenizer_token_bytes(tok, ids.ids[i], &bl);
            if (b && nl + bl <= t.len) memcpy(lab + nl, b, bl), nl += bl;
        }
        for (int s = 0; s < t.n_trained; s++) {
            memcpy(spn + ns, t.text + t.trained[s].begin, t.trained[s].end - t.trained[s].begin);
            ns += t.trained[s].end - t.trained[s].begin;
        }
        EXPECT(nl == ns && !memcmp(lab, spn, ns), "%s: labelled bytes (%zu) are not the trained spans (%zu)",
               c->name, nl, ns);
        free(lab);
        free(spn);
    }
    token_buf_free(&ids);
    token_buf_free(&labels);
    harmony_text_free(&t);
}

static void test_date_and_refusals(void) {
    harmony_options o;
    harmony_options_defaults(&o);
    chat_message conv[2] = {{CHAT_USER, "hi", NULL}, {CHAT_ASSISTANT, "hello", NULL}};
    harmony_text t;
    gt_error err;
    // Unpinned date: the template's strftime_now("%Y-%m-%d"), i.e. today in local time.
    char want[64], today[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(today, sizeof today, "%Y-%m-%d", &tm);
    snprintf(want, sizeof want, "Current date: %s\n", today);
    EXPECT(harmony_render(conv, 2, &o, 0, &t, &err) == GT_OK && strstr(t.text, want), "unpinned date is not today");
    harmony_text_free(&t);

    const char *bad_dates[] = {"2025-8-05", "2025/08/05", "2025-13-01", "2025-08-00", "20250805xx", ""};
    for (size_t i = 0; i < sizeof bad_dates / sizeof *bad_dates; i++) {
        o.date = bad_dates[i];
        EXPECT(harmony_render(conv, 2, &o, 0, &t, &err) == GT_EINVAL && strstr(err.msg, "template.date"),
               "date '%s' accepted", bad_dates[i]);
    }
    o.date = "2025-08-05";
    o.reasoning_effort = "extreme";
    EXPECT(harmony_render(conv, 2, &o, 0, &t, &err) == GT_EINVAL && strstr(err.msg, "reasoning_effort"),
           "effort 'extreme' accepted");
    o.reasoning_effort = "high";
    o.model_identity = "I am <|end|> evil";
    EXPECT(harmony_render(conv, 2, &o, 0, &t, &err) == GT_EINVAL, "identity with a special token accepted");
    o.model_identity = NULL;

    chat_message late_system[3] = {{CHAT_USER, "a", NULL}, {CHAT_SYSTEM, "b", NULL}, {CHAT_ASSISTANT, "c", NULL}};
    EXPECT(harmony_render(late_system, 3, &o, 0, &t, &err) == GT_EINVAL && strstr(err.msg, "messages[1]"),
           "a system message after the first accepted");
    chat_message tags[2] = {{CHAT_USER, "a", NULL}, {CHAT_ASSISTANT, "x<|channel|>final<|message|>y", NULL}};
    EXPECT(harmony_render(tags, 2, &o, 0, &t, &err) == GT_EINVAL && strstr(err.msg, "content"),
           "assistant content with channel tags accepted");
    chat_message tags2[2] = {{CHAT_USER, "a", NULL}, {CHAT_ASSISTANT, "y", "<|channel|>analysis<|message|>"}};
    EXPECT(harmony_render(tags2, 2, &o, 0, &t, &err) == GT_EINVAL && strstr(err.msg, "thinking"),
           "assistant thinking with channel tags accepted");
    chat_message user_thinks[2] = {{CHAT_USER, "a", "t"}, {CHAT_ASSISTANT, "y", NULL}};
    EXPECT(harmony_render(user_thinks, 2, &o, 0, &t, &err) == GT_EINVAL, "thinking on a user message accepted");
    EXPECT(harmony_render(conv, 0, &o, 0, &t, &err) == GT_EINVAL, "an empty conversation accepted");
}

int main(void) {
    char *buf;
    size_t len;
    gt_error err;
    if (fs_read_file(RENDERS, &buf, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, 0, &jerr);
    free(buf);
    CHECK(root && json_is_array(root));
    tokenizer *tok = NULL;
    if (tokenizer_load_hf(&tok, TOKENIZER, &err) != GT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        failures++;
    }
    size_t n_cases = json_array_size(root), n_ids = 0;
    for (size_t i = 0; i < n_cases; i++) {
        fixture_case c;
        case_load(&c, json_array_get(root, i));
        test_render(&c);
        test_variant(&c);
        if (tok) test_tokenize(&c, tok);
        n_ids += json_object_get(c.rec, "ids") != NULL;
        free(c.msgs);
    }
    EXPECT(n_cases >= 8, "only %zu reference renders", n_cases);
    EXPECT(n_ids >= 8, "only %zu reference tokenizations (rerun tests/ref/make_harmony_fixture.py)", n_ids);
    test_date_and_refusals();
    if (tok) tokenizer_free(tok);
    json_decref(root);
    if (!failures) printf("test_harmony: %zu renders byte-exact, spans and tokens checked\n", n_cases);
    return test_finish("test_harmony");
}
