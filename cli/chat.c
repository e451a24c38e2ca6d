// gptoss chat: talk to a model (+ a LoRA adapter) in the Harmony format, on the CPU.
//   --model M            base model directory or hub name (loaded first, experts as stored: 4-bit stays 4-bit)
//   --adapter DIR        PEFT adapter, checkpoint or run directory, applied on top of the base (unmerged)
//   --merge              fold the adapter into the weights instead; --merge-experts bf16|fp32|mxfp4|nf4 says
//                        how the merged experts are kept (default bf16; a 4-bit choice requantizes)
//   --prompt TEXT        answer once and exit; --batch IN.jsonl --out OUT.jsonl answers a file of prompts
//   --reasoning L        low|medium|high (the system message's "Reasoning:"); --system TEXT developer
//                        instructions; --date YYYY-MM-DD pins the template's date (default today)
//   --show-thinking      print every channel, labelled; default: only the final answer
//   --max-new-tokens N, --temperature T (0 = greedy), --top-p P, --top-k K, --seed S, --max-context N
//   --tokenizer FILE     default: the model directory's tokenizer.json
//   --ignore-base-mismatch  use an adapter whose adapter_config.json names another base
// Each turn re-renders the whole conversation with harmony_render (the training template, generation
// prompt appended; earlier assistant turns keep only their final answer, as the template drops earlier
// thinking), prefills it into a fresh KV cache and samples until <|return|>/<|call|> (the Harmony stream
// parser) or a generation_config.json stop id or the token limit. <|end|> only closes a message.
// Tokens/s are counted from the first generated token (prefill and load time excluded).
#include "cli/cli.h"
#include "core/core.h"
#include "data/data.h"
#include "lora/lora.h"
#include "model/model.h"

#include <editline/readline.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

typedef struct chat_opts {
    const char *model, *adapter, *merge_experts, *prompt, *batch, *out, *reasoning, *system, *date, *tokenizer;
    const char *device;
    int merge, show_thinking, max_new, max_context, ignore_base;
    sampler_options so;
} chat_opts;

typedef struct chat_session {
    model m;
    int have_model;
    lora_adapter la;
    int have_lora;
    const model_lora *lora; // NULL: base alone or merged
    tokenizer *tok;
    model_kv_cache *kv;
    sampler *smp;
    int32_t stop[16];
    int n_stop;
    harmony_options ho;
    char effort[16];
    char *system;           // developer instructions or NULL
    chat_message *msgs;     // the conversation after the system message; strings owned
    int n_msgs, cap_msgs;
    int show_thinking, max_new, stream;
    int32_t *out;           // (max_new)
} chat_session;

typedef struct turn_result {
    const char *answer, *thinking; // into hs (valid until the next turn)
    int n_tokens;
    char ended_by[48];             // <|return|>, <|call|>, <|endoftext|>, "stop id N" or "max tokens"
    double tok_per_s;
    harmony_close close;
    harmony_stream *hs;
} turn_result;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------------------------------
// Conversation

static void msgs_push(chat_session *s, chat_role role, const char *content, const char *thinking) {
    if (s->n_msgs == s->cap_msgs) {
        s->cap_msgs = s->cap_msgs ? 2 * s->cap_msgs : 8;
        s->msgs = xrealloc(s->msgs, (size_t)s->cap_msgs * sizeof *s->msgs);
    }
    s->msgs[s->n_msgs++] = (chat_message){role, xstrdup(content), thinking ? xstrdup(thinking) : NULL};
}

static void msgs_pop(chat_session *s) {
    chat_message *m = &s->msgs[--s->n_msgs];
    free((char *)m->content);
    free((char *)m->thinking);
}

static void msgs_clear(chat_session *s) {
    while (s->n_msgs) msgs_pop(s);
}

// ---------------------------------------------------------------------------------------------------
// One answer

typedef struct turn_ctx {
    chat_session *s;
    harmony_stream *hs;
    int n;
    double t_first, t_last;
    int printed; // something of the answer went to stdout
} turn_ctx;

static int shown(const turn_ctx *c, const harmony_message *m) {
    return c->s->stream && (c->s->show_thinking || !strcmp(m->channel, "final") || !m->channel[0]);
}

static void on_event(void *user, const harmony_event *ev) {
    turn_ctx *c = user;
    if (!shown(c, ev->msg)) return;
    if (ev->kind == HARMONY_EV_BEGIN && c->s->show_thinking) {
        printf("[%s%s%s]\n", ev->msg->channel[0] ? ev->msg->channel : "no channel",
               ev->msg->recipient ? " to=" : "", ev->msg->recipient ? ev->msg->recipient : "");
    } else if (ev->kind == HARMONY_EV_TEXT) {
        fwrite(ev->text, 1, ev->len, stdout);
        c->printed = 1;
    } else if (ev->kind == HARMONY_EV_END && c->s->show_thinking) {
        printf("\n");
    }
    fflush(stdout);
}

static int on_token(void *user, int32_t id) {
    turn_ctx *c = user;
    double t = now_s();
    if (c->n++ == 0) c->t_first = t;
    c->t_last = t;
    return harmony_stream_push(c->hs, id, on_event, c);
}

// Renders the conversation + generation prompt, generates, parses. The assistant's answer is appended
// to the conversation (its final text; its thinking is kept but the template drops it when re-rendering).
static gt_status chat_turn(chat_session *s, turn_result *r, gt_error *err) {
    memset(r, 0, sizeof *r);
    int n = s->n_msgs + (s->system ? 1 : 0);
    chat_message *all = xmalloc((size_t)n * sizeof *all);
    int k = 0;
    if (s->system) all[k++] = (chat_message){CHAT_DEVELOPER, s->system, NULL};
    memcpy(all + k, s->msgs, (size_t)s->n_msgs * sizeof *all);
    harmony_text ht;
    token_buf ids = {0}, labels = {0};
    s->ho.reasoning_effort = s->effort;
    gt_status st = harmony_render(all, n, &s->ho, 1, &ht, err);
    free(all);
    if (st) return st;
    st = harmony_tokenize(s->tok, &ht, &ids, &labels, err);
    harmony_text_free(&ht);
    token_buf_free(&labels);
    if (st) {
        token_buf_free(&ids);
        return st;
    }
    turn_ctx c = {.s = s, .hs = harmony_stream_new(s->tok, "assistant")};
    model_kv_cache_reset(s->kv);
    int n_out = 0;
    st = model_generate(s->kv, &s->m, s->lora, s->smp, ids.ids, (int)ids.n, s->stop, s->n_stop, s->max_new, on_token,
                        &c, s->out, &n_out, err);
    token_buf_free(&ids);
    harmony_stream_finish(c.hs, on_event, &c);
    if (c.printed && !s->show_thinking) printf("\n");
    fflush(stdout);
    r->hs = c.hs;
    r->n_tokens = n_out;
    r->tok_per_s = c.n > 1 && c.t_last > c.t_first ? (c.n - 1) / (c.t_last - c.t_first) : 0.0;
    const harmony_message *a = harmony_stream_answer(c.hs), *t = harmony_stream_thinking(c.hs);
    r->answer = a ? a->content : NULL;
    r->thinking = t ? t->content : NULL;
    int nm = harmony_stream_n_messages(c.hs);
    r->close = nm ? harmony_stream_message(c.hs, nm - 1)->closed_by : HARMONY_CLOSE_UNFINISHED;
    int32_t last = n_out ? s->out[n_out - 1] : -1;
    int was_stop = 0;
    for (int i = 0; i < s->n_stop; i++) was_stop |= last == s->stop[i];
    if (r->close == HARMONY_CLOSE_RETURN || r->close == HARMONY_CLOSE_CALL || r->close == HARMONY_CLOSE_ENDOFTEXT)
        snprintf(r->ended_by, sizeof r->ended_by, "%s", harmony_close_name(r->close));
    else if (was_stop)
        snprintf(r->ended_by, sizeof r->ended_by, "stop id %d", last);
    else
        snprintf(r->ended_by, sizeof r->ended_by, "%s", n_out >= s->max_new ? "max tokens" : "an error");
    if (st) return st;
    msgs_push(s, CHAT_ASSISTANT, r->answer ? r->answer : "", r->thinking);
    return GT_OK;
}

// What the user sees after an answer: speed, and why there is no answer when there is none.
static void turn_report(const chat_session *s, const turn_result *r) {
    if (!r->answer) {
        int nm = harmony_stream_n_messages(r->hs);
        const harmony_message *last = nm ? harmony_stream_message(r->hs, nm - 1) : NULL;
        if (last && last->closed_by == HARMONY_CLOSE_CALL)
            fprintf(stderr, "(the model called a tool%s%s; gptoss chat runs no tools)\n",
                    last->recipient ? ": " : "", last->recipient ? last->recipient : "");
        else if (r->n_tokens >= s->max_new)
            fprintf(stderr, "(no final answer within --max-new-tokens %d%s; raise it%s)\n", s->max_new,
                    last && !strcmp(last->channel, "analysis") ? ", the model was still thinking" : "",
                    s->show_thinking ? "" : " or use --show-thinking to see the analysis");
        else
            fprintf(stderr, "(the model wrote no final-channel message)\n");
    }
    if (harmony_stream_anomalies(r->hs))
        log_debug("chat: %d malformed Harmony pieces repaired", harmony_stream_anomalies(r->hs));
    fprintf(stderr, "[%d tokens, %.1f tokens/s, ended by %s]\n", r->n_tokens, r->tok_per_s, r->ended_by);
}

// ---------------------------------------------------------------------------------------------------
// Set-up

// eos_token_id of generation_config.json (an int or a list); <|end|> is left out with a warning (in Harmony it
// closes one message; stopping there loses the final answer). Without the file: <|return|>, <|call|>,
// <|endoftext|> from the tokenizer.
static int load_stop_ids(const char *cmd, const char *model_dir, chat_session *s) {
    char *path = fs_join(model_dir, "generation_config.json");
    int32_t end_id = tokenizer_special_id(s->tok, "<|end|>");
    s->n_stop = 0;
    if (fs_exists(path)) {
        json_t *root = cli_json_load(cmd, path);
        if (!root) {
            free(path);
            return 1;
        }
        json_t *e = json_object_get(root, "eos_token_id"), *one = json_is_integer(e) ? e : NULL;
        size_t n = one ? 1 : json_is_array(e) ? json_array_size(e) : 0;
        for (size_t i = 0; i < n && s->n_stop < 16; i++) {
            json_t *v = one ? one : json_array_get(e, i);
            if (!json_is_integer(v)) continue;
            json_int_t id = json_integer_value(v);
            if (id == end_id) {
                log_warn("%s: %s lists <|end|> (%lld) as a stop token; ignored: in Harmony it ends one message, not "
                         "the answer", cmd, path, (long long)id);
                continue;
            }
            if (id >= 0 && id < s->m.cfg.vocab) s->stop[s->n_stop++] = (int32_t)id;
        }
        json_decref(root);
    }
    if (s->n_stop == 0) {
        const char *names[3] = {"<|return|>", "<|call|>", "<|endoftext|>"};
        for (int i = 0; i < 3; i++) {
            int32_t id = tokenizer_special_id(s->tok, names[i]);
            if (id >= 0) s->stop[s->n_stop++] = id;
        }
        log_info("%s: no usable eos_token_id in %s; stopping on <|return|>, <|call|>, <|endoftext|>", cmd, path);
    }
    free(path);
    return 0;
}

static wformat parse_experts(const char *s, int *ok) {
    *ok = 1;
    if (!strcmp(s, "bf16")) return WF_BF16;
    if (!strcmp(s, "fp32")) return WF_F32;
    if (!strcmp(s, "mxfp4")) return WF_MXFP4;
    if (!strcmp(s, "nf4")) return WF_NF4;
    *ok = 0;
    return WF_BF16;
}

static void session_free(chat_session *s) {
    msgs_clear(s);
    free(s->msgs);
    free(s->system);
    free(s->out);
    sampler_free(s->smp);
    model_kv_cache_free(s->kv);
    if (s->tok) tokenizer_free(s->tok);
    if (s->have_lora) lora_adapter_free(&s->la);
    if (s->have_model) model_free(&s->m);
}

// Base first, then the adapter on top (or merged), then the tokenizer, cache and sampler.
static int session_open(const char *cmd, const chat_opts *o, chat_session *s) {
    memset(s, 0, sizeof *s);
    char dir[4096], adir[4096];
    gt_error err = {0};
    if (cli_infer_model_dir(cmd, o->model, dir, sizeof dir)) return 1;
    if (o->adapter) {
        if (cli_infer_adapter_dir(cmd, o->adapter, adir, sizeof adir)) return 1;
        if (cli_infer_check_base(cmd, adir, o->model, dir, o->ignore_base)) return 1;
    }
    double t0 = now_s();
    if (model_load(&s->m, dir, MQ_AUTO, &err)) {
        fprintf(stderr, "gptoss %s: %s\n", cmd, err.msg);
        return 1;
    }
    s->have_model = 1;
    static const char *const FMT[] = {[WF_F32] = "fp32", [WF_BF16] = "bf16", [WF_MXFP4] = "mxfp4", [WF_NF4] = "nf4"};
    fprintf(stderr, "base %s: %d layers, experts %s\n", dir, s->m.cfg.n_layers, FMT[s->m.expert_format]);
    if (o->adapter) {
        if (lora_peft_load(&s->la, &s->m.cfg, adir, &err)) {
            fprintf(stderr, "gptoss %s: --adapter: %s\n", cmd, err.msg);
            return 1;
        }
        s->have_lora = 1;
        if (o->merge) {
            int ok;
            wformat f = parse_experts(o->merge_experts, &ok);
            if (lora_merge(&s->m, &s->la, f, &err)) {
                fprintf(stderr, "gptoss %s: --merge: %s\n", cmd, err.msg);
                return 1;
            }
            fprintf(stderr, "adapter %s: merged into the base (rank %d, scale %g); merged experts %s\n", adir,
                    s->la.spec.rank, s->la.ml.scale,
                    f == WF_BF16 ? "kept bf16" : f == WF_F32 ? "kept fp32"
                    : f == WF_MXFP4 ? "requantized to mxfp4 (4-bit rounding loses part of the update)"
                                    : "requantized to nf4 (4-bit rounding loses part of the update)");
            lora_adapter_free(&s->la);
            s->have_lora = 0;
        } else {
            s->lora = &s->la.ml;
            fprintf(stderr, "adapter %s: applied on top of the base, unmerged (rank %d, scale %g)\n", adir,
                    s->la.spec.rank, s->la.ml.scale);
        }
    }
    char *tpath = o->tokenizer ? xstrdup(o->tokenizer) : fs_join(dir, "tokenizer.json");
    if (!fs_exists(tpath)) {
        fprintf(stderr, "gptoss %s: no tokenizer at %s: pass --tokenizer FILE (the model's tokenizer.json)\n", cmd,
                tpath);
        free(tpath);
        return 1;
    }
    gt_status st = tokenizer_load_hf(&s->tok, tpath, &err);
    free(tpath);
    if (st) {
        fprintf(stderr, "gptoss %s: %s\n", cmd, err.msg);
        return 1;
    }
    if (tokenizer_vocab_size(s->tok) > s->m.cfg.vocab) {
        fprintf(stderr, "gptoss %s: the tokenizer has %d ids but the model's vocabulary is %d: the tokenizer belongs "
                "to another model (pass --tokenizer)\n", cmd, tokenizer_vocab_size(s->tok), s->m.cfg.vocab);
        return 1;
    }
    if (load_stop_ids(cmd, dir, s)) return 1;
    int ctx = o->max_context > 0 ? o->max_context : 8192;
    if (s->m.cfg.max_position > 0 && ctx > s->m.cfg.max_position) ctx = s->m.cfg.max_position;
    if ((st = model_kv_cache_init(&s->kv, &s->m, s->lora ? s->lora->rank : 0, ctx, 64, &err)) ||
        (st = sampler_new(&s->smp, &o->so, s->m.cfg.vocab, &err))) {
        fprintf(stderr, "gptoss %s: %s\n", cmd, err.msg);
        return 1;
    }
    harmony_options_defaults(&s->ho);
    s->ho.date = o->date;
    snprintf(s->effort, sizeof s->effort, "%s", o->reasoning);
    s->system = o->system ? xstrdup(o->system) : NULL;
    s->show_thinking = o->show_thinking;
    s->max_new = o->max_new;
    s->out = xmalloc((size_t)o->max_new * sizeof *s->out);
    fprintf(stderr, "ready in %.1f s: context %d tokens (KV cache %.1f MiB), reasoning %s, %s\n", now_s() - t0, ctx,
            model_kv_cache_bytes(s->kv) / 1048576.0, s->effort,
            o->so.temperature == 0.0f ? "greedy" : "sampling");
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Modes

static int run_once(chat_session *s, const char *prompt) {
    gt_error err = {0};
    turn_result r;
    s->stream = 1;
    msgs_push(s, CHAT_USER, prompt, NULL);
    gt_status st = chat_turn(s, &r, &err);
    if (r.hs) turn_report(s, &r);
    harmony_stream_free(r.hs);
    if (st) {
        fprintf(stderr, "gptoss chat: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static const char *const COMMANDS[] = {"/reset", "/effort", "/think", "/system", "/quit", "/exit", "/help"};

static void repl_help(void) {
    printf("/reset             forget the conversation\n"
           "/effort LEVEL      reasoning effort low, medium or high\n"
           "/think on|off      show every channel (the thinking) or only the final answer\n"
           "/system TEXT       developer instructions (empty: none)\n"
           "/quit              leave (also Ctrl-D)\n");
}

// Returns 1 to quit.
static int repl_command(chat_session *s, const char *line) {
    const char *arg = line + strcspn(line, " ");
    size_t cmd_len = (size_t)(arg - line);
    while (*arg == ' ') arg++;
    char cmd[32];
    snprintf(cmd, sizeof cmd, "%.*s", (int)(cmd_len < sizeof cmd ? cmd_len : sizeof cmd - 1), line);
    if (!strcmp(cmd, "/quit") || !strcmp(cmd, "/exit")) return 1;
    if (!strcmp(cmd, "/help")) {
        repl_help();
    } else if (!strcmp(cmd, "/reset")) {
        msgs_clear(s);
        printf("(conversation cleared)\n");
    } else if (!strcmp(cmd, "/effort")) {
        if (strcmp(arg, "low") && strcmp(arg, "medium") && strcmp(arg, "high"))
            printf("/effort: '%s' is not one of low, medium, high\n", arg);
        else
            snprintf(s->effort, sizeof s->effort, "%s", arg), printf("(reasoning effort %s)\n", s->effort);
    } else if (!strcmp(cmd, "/think")) {
        if (strcmp(arg, "on") && strcmp(arg, "off"))
            printf("/think: on or off\n");
        else
            s->show_thinking = !strcmp(arg, "on"), printf("(thinking %s)\n", s->show_thinking ? "shown" : "hidden");
    } else if (!strcmp(cmd, "/system")) {
        free(s->system);
        s->system = *arg ? xstrdup(arg) : NULL;
        printf("(developer instructions %s)\n", *arg ? "set" : "removed");
    } else {
        const char *best = COMMANDS[0];
        for (size_t i = 1; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
            if (str_edit_distance(cmd, COMMANDS[i]) < str_edit_distance(cmd, best)) best = COMMANDS[i];
        printf("unknown command %s (did you mean %s? /help lists them)\n", cmd, best);
    }
    return 0;
}

static int run_repl(chat_session *s) {
    s->stream = 1;
    printf("gptoss chat: /help for commands, /quit or Ctrl-D to leave\n");
    char *line;
    while ((line = readline(">>> "))) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) {
            free(line);
            continue;
        }
        add_history(p);
        if (*p == '/') {
            int quit = repl_command(s, p);
            free(line);
            if (quit) break;
            continue;
        }
        gt_error err = {0};
        turn_result r;
        msgs_push(s, CHAT_USER, p, NULL);
        free(line);
        gt_status st = chat_turn(s, &r, &err);
        if (r.hs) turn_report(s, &r);
        harmony_stream_free(r.hs);
        if (st) {
            msgs_pop(s); // the user turn that failed
            fprintf(stderr, "gptoss chat: %s\n", err.msg);
        }
    }
    return 0;
}

static chat_role role_from(const char *r, int *ok) {
    *ok = 1;
    if (!strcmp(r, "system")) return CHAT_SYSTEM;
    if (!strcmp(r, "developer")) return CHAT_DEVELOPER;
    if (!strcmp(r, "user")) return CHAT_USER;
    if (!strcmp(r, "assistant")) return CHAT_ASSISTANT;
    *ok = 0;
    return CHAT_USER;
}

// One batch row: {"prompt": TEXT} or {"messages": [{role, content, thinking?}, ...]} (the last a user turn),
// optional "system" and "reasoning". Loads it into the session's conversation. Errors name file:line.
static int batch_row(chat_session *s, json_t *row, const char *where, const char *default_effort) {
    msgs_clear(s);
    json_t *p = json_object_get(row, "prompt"), *ms = json_object_get(row, "messages");
    json_t *sys = json_object_get(row, "system"), *eff = json_object_get(row, "reasoning");
    if (eff && (!json_is_string(eff) || (strcmp(json_string_value(eff), "low") && strcmp(json_string_value(eff), "medium") &&
                                         strcmp(json_string_value(eff), "high")))) {
        fprintf(stderr, "gptoss chat: %s: \"reasoning\" must be low, medium or high\n", where);
        return 1;
    }
    snprintf(s->effort, sizeof s->effort, "%s", eff ? json_string_value(eff) : default_effort);
    if (sys && !json_is_string(sys)) {
        fprintf(stderr, "gptoss chat: %s: \"system\" must be a string\n", where);
        return 1;
    }
    if (sys) {
        free(s->system);
        s->system = xstrdup(json_string_value(sys));
    }
    if (json_is_string(p)) {
        msgs_push(s, CHAT_USER, json_string_value(p), NULL);
        return 0;
    }
    if (!json_is_array(ms) || json_array_size(ms) == 0) {
        fprintf(stderr, "gptoss chat: %s: a row needs \"prompt\" (a string) or \"messages\" (a non-empty list)\n",
                where);
        return 1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        json_t *r = json_object_get(m, "role"), *c = json_object_get(m, "content"), *t = json_object_get(m, "thinking");
        int ok = json_is_string(r) && json_is_string(c) && (!t || json_is_null(t) || json_is_string(t));
        chat_role role = ok ? role_from(json_string_value(r), &ok) : CHAT_USER;
        if (!ok) {
            fprintf(stderr, "gptoss chat: %s: messages[%zu] needs \"role\" (system, developer, user, assistant) and "
                    "\"content\" strings\n", where, i);
            return 1;
        }
        if ((role == CHAT_SYSTEM || role == CHAT_DEVELOPER) && i == 0) {
            free(s->system);
            s->system = xstrdup(json_string_value(c));
            continue;
        }
        msgs_push(s, role, json_string_value(c), json_is_string(t) ? json_string_value(t) : NULL);
    }
    if (!s->n_msgs || s->msgs[s->n_msgs - 1].role != CHAT_USER) {
        fprintf(stderr, "gptoss chat: %s: the last message must be a user turn (the one to answer)\n", where);
        return 1;
    }
    return 0;
}

static int run_batch(chat_session *s, const char *in, const char *out, const char *default_effort,
                     const char *default_system) {
    char *data;
    size_t len;
    gt_error err = {0};
    if (fs_read_file(in, &data, &len, &err)) {
        fprintf(stderr, "gptoss chat: --batch: %s\n", err.msg);
        return 1;
    }
    s->stream = 0;
    char *result = xstrdup("");
    size_t rlen = 0;
    int rc = 0, line_no = 0, rows = 0;
    for (char *line = data; line && *line && !rc; line_no++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *where = xasprintf("%s:%d", in, line_no + 1);
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p) {
            json_error_t je;
            json_t *row = json_loads(p, 0, &je);
            free(s->system);
            s->system = default_system ? xstrdup(default_system) : NULL;
            if (!row || !json_is_object(row)) {
                fprintf(stderr, "gptoss chat: %s:%d: %s\n", where, je.column, row ? "a row must be a JSON object" : je.text);
                rc = 1;
            } else if (batch_row(s, row, where, default_effort)) {
                rc = 1;
            } else {
                turn_result r;
                gt_status st = chat_turn(s, &r, &err);
                if (st) {
                    fprintf(stderr, "gptoss chat: %s: %s\n", where, err.msg);
                    rc = 1;
                } else {
                    json_t *o = json_pack("{s:i,s:s,s:s?,s:i,s:s,s:f}", "index", rows, "answer",
                                          r.answer ? r.answer : "", "thinking", r.thinking, "tokens", r.n_tokens,
                                          "ended_by", r.ended_by, "tokens_per_s", r.tok_per_s);
                    json_t *id = json_object_get(row, "id");
                    if (id) json_object_set(o, "id", id);
                    char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
                    json_decref(o);
                    size_t tl = strlen(text);
                    result = xrealloc(result, rlen + tl + 2);
                    memcpy(result + rlen, text, tl);
                    rlen += tl;
                    result[rlen++] = '\n';
                    result[rlen] = 0;
                    free(text);
                    fprintf(stderr, "%s: %d tokens, %.1f tokens/s, ended by %s\n", where, r.n_tokens, r.tok_per_s,
                            r.ended_by);
                    rows++;
                }
                harmony_stream_free(r.hs);
            }
            json_decref(row);
        }
        free(where);
        line = nl ? nl + 1 : NULL;
    }
    free(data);
    if (!rc && fs_write_atomic(out, result, rlen, &err)) {
        fprintf(stderr, "gptoss chat: --out: %s\n", err.msg);
        rc = 1;
    }
    if (!rc) fprintf(stderr, "wrote %d answers to %s\n", rows, out);
    free(result);
    return rc;
}

// ---------------------------------------------------------------------------------------------------

static const char *const FLAGS[] = {"--model", "--adapter", "--merge", "--merge-experts", "--prompt", "--batch",
                                    "--out", "--reasoning", "--system", "--date", "--show-thinking",
                                    "--max-new-tokens", "--temperature", "--top-p", "--top-k", "--seed",
                                    "--max-context", "--tokenizer", "--device", "--ignore-base-mismatch"};
#define N_FLAGS (int)(sizeof FLAGS / sizeof FLAGS[0])

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "gptoss chat: %s '%s': expected a number in [%g, %g]\n", flag, v, lo, hi);
        return 0;
    }
    *out = d;
    return 1;
}

int cmd_chat(int argc, char **argv) {
    chat_opts o = {.merge_experts = "bf16", .reasoning = "medium", .device = "cpu", .max_new = 2048};
    o.so = (sampler_options){1.0f, 0, 1.0f, 0};
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!cli_flag_known("chat", f, FLAGS, N_FLAGS)) return 2;
        if (!strcmp(f, "--merge")) { o.merge = 1; continue; }
        if (!strcmp(f, "--show-thinking")) { o.show_thinking = 1; continue; }
        if (!strcmp(f, "--ignore-base-mismatch")) { o.ignore_base = 1; continue; }
        if (i + 1 >= argc) return cli_usage_error("chat", "%s needs a value", f);
        const char *v = argv[++i];
        double d;
        if (!strcmp(f, "--model")) o.model = v;
        else if (!strcmp(f, "--adapter")) o.adapter = v;
        else if (!strcmp(f, "--merge-experts")) o.merge_experts = v;
        else if (!strcmp(f, "--prompt")) o.prompt = v;
        else if (!strcmp(f, "--batch")) o.batch = v;
        else if (!strcmp(f, "--out")) o.out = v;
        else if (!strcmp(f, "--reasoning")) o.reasoning = v;
        else if (!strcmp(f, "--system")) o.system = v;
        else if (!strcmp(f, "--date")) o.date = v;
        else if (!strcmp(f, "--tokenizer")) o.tokenizer = v;
        else if (!strcmp(f, "--device")) o.device = v;
        else if (!strcmp(f, "--max-new-tokens")) { if (!parse_num(f, v, 1, 1 << 20, &d)) return 2; o.max_new = (int)d; }
        else if (!strcmp(f, "--max-context")) { if (!parse_num(f, v, 1, 1 << 24, &d)) return 2; o.max_context = (int)d; }
        else if (!strcmp(f, "--temperature")) { if (!parse_num(f, v, 0, 1e6, &d)) return 2; o.so.temperature = (float)d; }
        else if (!strcmp(f, "--top-p")) { if (!parse_num(f, v, 1e-9, 1, &d)) return 2; o.so.top_p = (float)d; }
        else if (!strcmp(f, "--top-k")) { if (!parse_num(f, v, 0, 1 << 30, &d)) return 2; o.so.top_k = (int)d; }
        else if (!strcmp(f, "--seed")) { if (!parse_num(f, v, 0, 9007199254740992.0, &d)) return 2; o.so.seed = (uint64_t)d; }
    }
    if (!o.model) return cli_usage_error("chat", "--model is required");
    if (o.merge && !o.adapter)
        return cli_usage_error("chat", "--merge needs --adapter (the adapter to fold into the base)");
    int ok;
    parse_experts(o.merge_experts, &ok);
    if (!ok) return cli_usage_error("chat", "--merge-experts '%s': one of bf16, fp32, mxfp4, nf4", o.merge_experts);
    if (strcmp(o.reasoning, "low") && strcmp(o.reasoning, "medium") && strcmp(o.reasoning, "high"))
        return cli_usage_error("chat", "--reasoning '%s': one of low, medium, high", o.reasoning);
    if (!!o.batch != !!o.out) return cli_usage_error("chat", "--batch IN.jsonl and --out OUT.jsonl go together");
    if (o.batch && o.prompt) return cli_usage_error("chat", "--prompt and --batch exclude each other");
    if (!strcmp(o.device, "cuda")) {
        fprintf(stderr, "gptoss chat: --device cuda: CUDA decoding is not built yet; use --device cpu\n");
        return 2;
    }
    if (strcmp(o.device, "cpu")) return cli_usage_error("chat", "--device '%s': expected cpu or cuda", o.device);
    if (o.date) {
        harmony_options ho;
        harmony_options_defaults(&ho);
        ho.date = o.date;
        gt_error err = {0};
        if (harmony_options_check(&ho, &err)) return cli_usage_error("chat", "--date: %s", err.msg);
    }
    chat_session s;
    int rc = session_open("chat", &o, &s);
    if (!rc) {
        if (o.prompt) rc = run_once(&s, o.prompt);
        else if (o.batch) rc = run_batch(&s, o.batch, o.out, o.reasoning, o.system);
        else rc = run_repl(&s);
    }
    session_free(&s);
    return rc;
}
