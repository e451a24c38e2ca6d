// Harmony render: GPT-OSS's HF chat_template.jinja (tests/fixtures/harmony/chat_template.jinja) for
// conversations without tools, byte for byte, plus the spans a tokenizer and a loss mask need.
//
// Invariants:
//   - the text is exactly what the template renders for the same messages and kwargs
//     (model_identity, reasoning_effort, strftime_now pinned to options.date, add_generation_prompt);
//     tests/test_harmony.c checks it against jinja2 renders of the template itself.
//   - specials[] lists every special token the template wrote, in order; nothing inside message text is
//     a special token (it is encoded as ordinary text), unlike an HF tokenizer applied to the whole string.
//   - trained[] spans start and end on special-token boundaries for assistant and final, so no BPE
//     token straddles a span edge.
#include "data/data.h"

#include <stdlib.h>
#include <time.h>

static const char DEFAULT_IDENTITY[] = "You are ChatGPT, a large language model trained by OpenAI.";
static const char *const TEMPLATE_SPECIALS[] = {"<|start|>", "<|message|>", "<|end|>", "<|channel|>",
                                                "<|return|>"};

void harmony_options_defaults(harmony_options *o) {
    memset(o, 0, sizeof *o);
    o->reasoning_effort = "medium";
    o->model_identity = NULL;
    o->date = NULL;
    o->variant = HARMONY_VARIANT_HF;
    o->train_on = HARMONY_TRAIN_ASSISTANT;
}

static int has_special_string(const char *s) {
    const char *p = strstr(s, "<|");
    return p && strstr(p, "|>");
}

gt_status harmony_options_check(const harmony_options *o, gt_error *err) {
    const char *e = o->reasoning_effort ? o->reasoning_effort : "medium";
    if (strcmp(e, "low") && strcmp(e, "medium") && strcmp(e, "high"))
        return gt_fail(err, GT_EINVAL, "template.reasoning_effort: '%s' is not one of low, medium, high", e);
    if (o->date) {
        const char *d = o->date;
        int ok = strlen(d) == 10 && d[4] == '-' && d[7] == '-';
        for (int i = 0; ok && i < 10; i++)
            if (i != 4 && i != 7 && (d[i] < '0' || d[i] > '9')) ok = 0;
        if (ok) {
            int mon = (d[5] - '0') * 10 + (d[6] - '0'), day = (d[8] - '0') * 10 + (d[9] - '0');
            ok = mon >= 1 && mon <= 12 && day >= 1 && day <= 31;
        }
        if (!ok) return gt_fail(err, GT_EINVAL, "template.date: '%s' is not a YYYY-MM-DD date (e.g. 2025-08-05)", d);
    }
    if (o->model_identity && has_special_string(o->model_identity))
        return gt_fail(err, GT_EINVAL, "template.model_identity holds a special-token string ('<|...|>'); remove it");
    if ((unsigned)o->variant > HARMONY_VARIANT_HARMONY) return gt_fail(err, GT_EINVAL, "template.variant: unknown value");
    if ((unsigned)o->train_on > HARMONY_TRAIN_ALL) return gt_fail(err, GT_EINVAL, "template.train_on: unknown value");
    return GT_OK;
}

// ---------------------------------------------------------------------------------------------------
// The growing output.
typedef struct render_buf {
    harmony_text *t;
    size_t cap, cap_sp, cap_tr;
} render_buf;

static void put(render_buf *b, const char *s, size_t n) {
    harmony_text *t = b->t;
    if (t->len + n + 1 > b->cap) {
        while (t->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 1024;
        t->text = xrealloc(t->text, b->cap);
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = 0;
}
static void put_str(render_buf *b, const char *s) { put(b, s, strlen(s)); }

// Writes a template string in which every "<|name|>" is one of TEMPLATE_SPECIALS, recording each.
static void put_template(render_buf *b, const char *s) {
    while (*s) {
        const char *open = strstr(s, "<|");
        if (!open) {
            put_str(b, s);
            return;
        }
        put(b, s, (size_t)(open - s));
        const char *close = strstr(open, "|>");
        CHECK(close);
        size_t n = (size_t)(close + 2 - open);
        int known = 0;
        for (size_t i = 0; i < sizeof TEMPLATE_SPECIALS / sizeof *TEMPLATE_SPECIALS; i++)
            if (strlen(TEMPLATE_SPECIALS[i]) == n && !memcmp(open, TEMPLATE_SPECIALS[i], n)) known = 1;
        CHECK(known);
        harmony_text *t = b->t;
        if (t->n_specials == (int)b->cap_sp) {
            b->cap_sp = b->cap_sp ? b->cap_sp * 2 : 32;
            t->specials = xrealloc(t->specials, b->cap_sp * sizeof *t->specials);
        }
        t->specials[t->n_specials++] = (harmony_span){t->len, t->len + n};
        put(b, open, n);
        s = open + n;
    }
}

static void mark_trained(render_buf *b, size_t begin, size_t end) {
    harmony_text *t = b->t;
    if (begin == end) return;
    if (t->n_trained > 0 && t->trained[t->n_trained - 1].end == begin) {
        t->trained[t->n_trained - 1].end = end;
        return;
    }
    if (t->n_trained == (int)b->cap_tr) {
        b->cap_tr = b->cap_tr ? b->cap_tr * 2 : 4;
        t->trained = xrealloc(t->trained, b->cap_tr * sizeof *t->trained);
    }
    t->trained[t->n_trained++] = (harmony_span){begin, end};
}

static const char *role_name(chat_role r) {
    switch (r) {
    case CHAT_SYSTEM: return "system";
    case CHAT_DEVELOPER: return "developer";
    case CHAT_USER: return "user";
    case CHAT_ASSISTANT: return "assistant";
    }
    return "?";
}

// strftime_now("%Y-%m-%d") in the template is Python's datetime.now(): local time.
static void today(char out[16]) {
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

gt_status harmony_render(const chat_message *msgs, int n, const harmony_options *o, int gen_prompt,
                         harmony_text *out, gt_error *err) {
    memset(out, 0, sizeof *out);
    gt_status st = harmony_options_check(o, err);
    if (st) return st;
    if (n < 1) return gt_fail(err, GT_EINVAL, "the conversation has no messages");
    for (int i = 0; i < n; i++) {
        const chat_message *m = &msgs[i];
        CHECK(m->content);
        if ((m->role == CHAT_SYSTEM || m->role == CHAT_DEVELOPER) && i > 0)
            return gt_fail(err, GT_EINVAL,
                           "messages[%d]: a %s message is only allowed first (the template would drop it)", i,
                           role_name(m->role));
        if (m->thinking && m->role != CHAT_ASSISTANT)
            return gt_fail(err, GT_EINVAL, "messages[%d]: only assistant messages carry thinking (role %s)", i,
                           role_name(m->role));
        if (m->role == CHAT_ASSISTANT) {
            // The template's own check (raise_exception) on both fields.
            const char *fields[2] = {m->content, m->thinking};
            for (int f = 0; f < 2; f++)
                if (fields[f] && (strstr(fields[f], "<|channel|>analysis<|message|>") ||
                                  strstr(fields[f], "<|channel|>final<|message|>")))
                    return gt_fail(err, GT_EINVAL,
                                   "messages[%d].%s holds <|channel|> tags: put the analysis text in 'thinking' "
                                   "and the final text in 'content'",
                                   i, f ? "thinking" : "content");
        }
    }

    render_buf b = {.t = out};
    char date[16];
    if (o->date)
        snprintf(date, sizeof date, "%s", o->date);
    else
        today(date);
    put_template(&b, "<|start|>system<|message|>");
    put_str(&b, o->model_identity ? o->model_identity : DEFAULT_IDENTITY);
    put_str(&b, "\nKnowledge cutoff: 2024-06\nCurrent date: ");
    put_str(&b, date);
    put_str(&b, "\n\nReasoning: ");
    put_str(&b, o->reasoning_effort ? o->reasoning_effort : "medium");
    put_str(&b, "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.");
    put_template(&b, "<|end|>");

    int first = 0;
    if (msgs[0].role == CHAT_SYSTEM || msgs[0].role == CHAT_DEVELOPER) {
        first = 1;
        if (msgs[0].content[0]) { // the template tests the string's truth: "" writes no developer block
            put_template(&b, "<|start|>developer<|message|>");
            put_str(&b, "# Instructions\n\n");
            put_str(&b, msgs[0].content);
            if (o->variant == HARMONY_VARIANT_HF) put_str(&b, "\n\n");
            put_template(&b, "<|end|>");
        }
    }

    for (int i = first; i < n; i++) {
        const chat_message *m = &msgs[i];
        if (m->role == CHAT_USER) {
            put_template(&b, "<|start|>user<|message|>");
            put_str(&b, m->content);
            put_template(&b, "<|end|>");
        } else if (m->role == CHAT_ASSISTANT && i == n - 1 && !gen_prompt) {
            // The trained turn: thinking (if present) in the analysis channel, then the final answer.
            int tr = o->train_on == HARMONY_TRAIN_ASSISTANT;
            if (m->thinking) {
                put_template(&b, "<|start|>assistant<|channel|>analysis<|message|>");
                size_t begin = out->len;
                put_str(&b, m->thinking);
                put_template(&b, "<|end|>");
                if (tr) mark_trained(&b, begin, out->len);
            }
            put_template(&b, "<|start|>assistant<|channel|>final<|message|>");
            size_t begin = out->len;
            put_str(&b, m->content);
            put_template(&b, "<|return|>");
            if (o->train_on != HARMONY_TRAIN_ALL) mark_trained(&b, begin, out->len);
        } else if (m->role == CHAT_ASSISTANT) {
            put_template(&b, "<|start|>assistant<|channel|>final<|message|>");
            put_str(&b, m->content);
            put_template(&b, "<|end|>");
        }
    }
    if (gen_prompt) put_template(&b, "<|start|>assistant");
    if (o->train_on == HARMONY_TRAIN_ALL && !gen_prompt) {
        out->n_trained = 0;
        mark_trained(&b, 0, out->len);
    }
    return GT_OK;
}

void harmony_text_free(harmony_text *t) {
    free(t->text);
    free(t->specials);
    free(t->trained);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------------------------------
// Tokenization with labels.

// Whether text byte `at` lies in a trained span; *span walks forward (calls come with growing `at`).
static int in_trained(const harmony_text *t, int *span, size_t at) {
    while (*span < t->n_trained && t->trained[*span].end <= at) (*span)++;
    return *span < t->n_trained && t->trained[*span].begin <= at;
}

gt_status harmony_tokenize(const tokenizer *tok, const harmony_text *t, token_buf *ids, token_buf *labels,
                           gt_error *err) {
    size_t at = 0;
    int span = 0;
    for (int s = 0; s <= t->n_specials; s++) {
        size_t end = s < t->n_specials ? t->specials[s].begin : t->len;
        if (end > at) {
            // A token is trained when its first byte is: spans start and end on special tokens (see the
            // header), so for assistant and final no token is half in.
            size_t from = ids->n, run = at;
            gt_status st = tokenizer_encode(tok, t->text + at, end - at, 0, ids, err);
            if (st) return st;
            for (size_t k = from; k < ids->n; k++) {
                size_t n;
                if (!tokenizer_token_bytes(tok, ids->ids[k], &n))
                    return gt_fail(err, GT_EFORMAT, "the tokenizer produced id %d that it cannot decode", ids->ids[k]);
                token_buf_push(labels, in_trained(t, &span, at) ? ids->ids[k] : -1);
                at += n;
            }
            if (at != end)
                return gt_fail(err, GT_EFORMAT, "the tokens of text bytes %zu..%zu decode to %zu bytes, not %zu",
                               run, end, at - run, end - run);
        }
        if (s == t->n_specials) break;
        const harmony_span *sp = &t->specials[s];
        char name[32];
        size_t n = sp->end - sp->begin;
        CHECK(n < sizeof name);
        memcpy(name, t->text + sp->begin, n);
        name[n] = 0;
        int32_t id = tokenizer_special_id(tok, name);
        if (id < 0)
            return gt_fail(err, GT_EFORMAT,
                           "the tokenizer has no special token %s (is it GPT-OSS's o200k_harmony tokenizer.json?)",
                           name);
        token_buf_push(ids, id);
        token_buf_push(labels, in_trained(t, &span, sp->begin) ? id : -1);
        at = sp->end;
    }
    return GT_OK;
}
