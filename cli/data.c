// gptoss data CONFIG.yaml [--set section.key=value]... [--show N]
//
// Resolves the config as `gptoss train` does, runs the data pipeline (token cache or read -> render ->
// tokenize -> mask, then split and pack) and prints: rows read and skipped, documents, tokens and trained
// tokens, packing (rows, fill, truncated, dropped), a histogram of document lengths, and with --show N
// document N decoded with its trained tokens marked ([[...]], or green on a terminal).
//
// Also here: cli_data_resolve, the one mapping of a run_config onto data/'s data_options (cli/cli.h).
// Exit codes: 0 ok, 1 config or data problem, 2 usage error.
#include "cli/cli.h"
#include "data/data.h"
#include "trainer/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------------
// Config -> data_options
static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

typedef struct path_list {
    char **p;
    int n;
} path_list;

// Every *.jsonl / *.jsonl.gz / *.parquet under dir (recursively, hidden entries skipped) whose file name
// holds split (a HF dataset snapshot: data/train-00000-of-00001.parquet).
static void find_data_files(const char *dir, const char *split, path_list *out, int depth) {
    DIR *d = opendir(dir);
    if (!d || depth > 8) {
        if (d) closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = fs_join(dir, e->d_name);
        if (fs_is_dir(p)) {
            find_data_files(p, split, out, depth + 1);
        } else if ((has_suffix(e->d_name, ".jsonl") || has_suffix(e->d_name, ".jsonl.gz") ||
                    has_suffix(e->d_name, ".parquet")) &&
                   (!split[0] || strstr(e->d_name, split))) {
            out->p = xrealloc(out->p, (size_t)(out->n + 1) * sizeof *out->p);
            out->p[out->n++] = p;
            continue;
        }
        free(p);
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static gt_status resolve_files(const char *name, const char *revision, const char *split, path_list *out,
                               gt_error *err) {
    char path[4096];
    gt_status st = hfcache_resolve(name, HF_DATASET, revision, path, sizeof path, err);
    if (st) return st;
    if (!fs_is_dir(path)) {
        out->p = xmalloc(sizeof *out->p);
        out->p[out->n++] = xstrdup(path);
        return GT_OK;
    }
    find_data_files(path, split, out, 0);
    if (out->n == 0)
        return gt_fail(err, GT_ENOTFOUND, "%s: no *.jsonl, *.jsonl.gz or *.parquet file%s%s%s in it", path,
                       split[0] ? " whose name holds '" : "", split, split[0] ? "' (data.split)" : "");
    qsort(out->p, (size_t)out->n, sizeof *out->p, cmp_str);
    return GT_OK;
}

void cli_data_free(cli_data *d) {
    for (int i = 0; i < d->n_train; i++) free(d->train[i]);
    free(d->train);
    free(d->val);
    free(d->tokenizer);
    memset(d, 0, sizeof *d);
}

static const char *empty_null(const char *s) { return s && s[0] ? s : NULL; }

int cli_data_resolve(const char *cmd, const run_config *cfg, data_options *o, cli_data *own) {
    memset(own, 0, sizeof *own);
    gt_error err;
    const run_data_config *d = &cfg->data;
    path_list files = {0};
    if (resolve_files(d->path, d->revision, d->split, &files, &err)) {
        for (int i = 0; i < files.n; i++) free(files.p[i]);
        free(files.p);
        fprintf(stderr, "gptoss %s: data.path: %s\n", cmd, err.msg);
        return 1;
    }
    own->train = files.p;
    own->n_train = files.n;
    if (d->val_path[0]) {
        char p[4096];
        if (hfcache_resolve(d->val_path, HF_DATASET, d->revision, p, sizeof p, &err) || fs_is_dir(p)) {
            fprintf(stderr, "gptoss %s: data.val_path: %s\n", cmd,
                    fs_is_dir(p) ? "must be a JSONL, JSONL.gz or parquet file, not a directory" : err.msg);
            cli_data_free(own);
            return 1;
        }
        own->val = xstrdup(p);
    }
    if (cfg->model.tokenizer[0]) {
        own->tokenizer = xstrdup(cfg->model.tokenizer);
    } else {
        char dir[4096];
        if (hfcache_resolve(cfg->model.name, HF_MODEL, cfg->model.revision, dir, sizeof dir, &err)) {
            fprintf(stderr, "gptoss %s: the tokenizer comes from the model directory, and: %s (or set model.tokenizer)\n",
                    cmd, err.msg);
            cli_data_free(own);
            return 1;
        }
        own->tokenizer = fs_join(dir, "tokenizer.json");
    }
    if (!fs_exists(own->tokenizer)) {
        fprintf(stderr, "gptoss %s: tokenizer %s not found (set model.tokenizer to a tokenizer.json)\n", cmd,
                own->tokenizer);
        cli_data_free(own);
        return 1;
    }

    data_options_defaults(o);
    o->train_files = (const char *const *)own->train;
    o->n_train_files = own->n_train;
    o->val_files = (const char *const *)&own->val;
    o->n_val_files = own->val ? 1 : 0;
    o->val_fraction = d->val_fraction;
    o->tokenizer_path = own->tokenizer;
    static const data_format formats[] = {[RC_FORMAT_AUTO] = DATA_FORMAT_AUTO, [RC_FORMAT_MESSAGES] = DATA_FORMAT_MESSAGES,
                                          [RC_FORMAT_FLAT] = DATA_FORMAT_COLUMNS, [RC_FORMAT_TOKENIZED] = DATA_FORMAT_TOKENS};
    o->format = formats[d->format];
    o->columns = (data_columns){d->messages_column, d->system_column, d->user_column, d->thinking_column,
                                d->answer_column};
    static const char *const efforts[] = {[RC_EFFORT_LOW] = "low", [RC_EFFORT_MEDIUM] = "medium", [RC_EFFORT_HIGH] = "high"};
    o->harmony.reasoning_effort = efforts[cfg->tmpl.reasoning_effort];
    o->harmony.model_identity = empty_null(cfg->tmpl.model_identity);
    o->harmony.date = empty_null(cfg->tmpl.date);
    o->harmony.variant = cfg->tmpl.variant == RC_VARIANT_HARMONY ? HARMONY_VARIANT_HARMONY : HARMONY_VARIANT_HF;
    static const harmony_train_on train_on[] = {[RC_TRAIN_ON_ASSISTANT] = HARMONY_TRAIN_ASSISTANT,
                                                [RC_TRAIN_ON_FINAL] = HARMONY_TRAIN_FINAL,
                                                [RC_TRAIN_ON_ALL] = HARMONY_TRAIN_ALL};
    o->harmony.train_on = train_on[cfg->tmpl.train_on];
    o->max_seq_len = d->max_seq_len;
    o->packing = d->packing;
    o->overlong = d->overlong == RC_OVERLONG_DROP ? DATA_OVERLONG_DROP : DATA_OVERLONG_TRUNCATE;
    o->on_bad_row = d->on_bad_row == RC_BAD_ROW_SKIP ? DATA_BAD_ROW_SKIP : DATA_BAD_ROW_ERROR;
    o->max_rows = (uint64_t)d->max_rows;
    o->shuffle = d->shuffle;
    o->seed = (uint64_t)(d->shuffle_seed >= 0 ? d->shuffle_seed : cfg->train.seed);
    o->cache_dir = empty_null(d->cache_dir);
    if (data_options_check(o, &err)) {
        fprintf(stderr, "gptoss %s: %s\n", cmd, err.msg);
        cli_data_free(own);
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Report
// Ten equal buckets from 1 to the longest document (at least max_seq_len), then the count beyond it.
static void print_histogram(const data_docs *d, int max_seq_len) {
    enum { BUCKETS = 10 };
    uint64_t hi = (uint64_t)max_seq_len;
    for (size_t i = 0; i < d->n_docs; i++)
        if (d->offsets[i + 1] - d->offsets[i] > hi) hi = d->offsets[i + 1] - d->offsets[i];
    uint64_t width = (hi + BUCKETS - 1) / BUCKETS;
    size_t count[BUCKETS] = {0}, most = 0, over = 0;
    for (size_t i = 0; i < d->n_docs; i++) {
        uint64_t len = d->offsets[i + 1] - d->offsets[i];
        count[(len - 1) / width]++;
        over += len > (uint64_t)max_seq_len;
    }
    for (int b = 0; b < BUCKETS; b++)
        if (count[b] > most) most = count[b];
    printf("document lengths (tokens):\n");
    for (int b = 0; b < BUCKETS; b++) {
        int bar = most ? (int)((count[b] * 40 + most - 1) / most) : 0;
        printf("  %7llu .. %-7llu %8zu  %.*s\n", (unsigned long long)(b * width + 1),
               (unsigned long long)((b + 1) * width), count[b], bar, "########################################");
    }
    printf("  longer than max_seq_len (%d): %zu\n", max_seq_len, over);
}

static int show_doc(const data_set *s, const tokenizer *tok, long long n) {
    const data_docs *d = &s->docs;
    if (n < 0 || (size_t)n >= d->n_docs) {
        fprintf(stderr, "gptoss data: --show %lld: there are documents 0..%zu\n", n, d->n_docs - 1);
        return 1;
    }
    int color = isatty(STDOUT_FILENO);
    const char *open = color ? "\033[1;32m" : "[[", *close = color ? "\033[0m" : "]]";
    uint64_t a = d->offsets[n], b = d->offsets[n + 1];
    size_t trained = 0;
    for (uint64_t i = a; i < b; i++) trained += d->mask[i];
    printf("\ndocument %lld (%s:%u): %llu tokens, %zu trained, marked %s...%s\n", n, d->files[d->src_file[n]],
           d->src_line[n], (unsigned long long)(b - a), trained, open, close);
    int32_t *ids = xmalloc((b - a) * sizeof *ids);
    for (uint64_t i = a; i < b; i++) ids[i - a] = (int32_t)d->tokens[i];
    // Decode run by run: a run is a stretch of tokens that are all trained or all not.
    for (uint64_t i = a; i < b;) {
        uint64_t j = i;
        while (j < b && d->mask[j] == d->mask[i]) j++;
        char *text;
        size_t len;
        gt_error err;
        if (tokenizer_decode(tok, ids + (i - a), (size_t)(j - i), &text, &len, &err)) {
            fprintf(stderr, "gptoss data: %s\n", err.msg);
            free(ids);
            return 1;
        }
        if (d->mask[i]) fputs(open, stdout);
        fwrite(text, 1, len, stdout);
        if (d->mask[i]) fputs(close, stdout);
        free(text);
        i = j;
    }
    putchar('\n');
    free(ids);
    return 0;
}

static void print_pack(const char *name, const data_pack *p, int max_seq_len) {
    double fill = p->n_rows ? 100.0 * (double)p->tokens / ((double)p->n_rows * max_seq_len) : 0;
    printf("%-10s %8zu documents  %10llu tokens  %10llu trained targets  %7zu rows (%.1f%% full)  %zu truncated  "
           "%zu dropped\n",
           name, p->n_docs, (unsigned long long)p->tokens, (unsigned long long)p->trained, p->n_rows, fill,
           p->truncated, p->dropped);
}

static int usage_error(const char *msg, const char *arg) {
    fprintf(stderr, "gptoss data: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\nusage: gptoss data CONFIG.yaml [--set section.key=value]... [--show N]\n");
    return 2;
}

int cmd_data(int argc, char **argv) {
    const char *config = NULL, *show = NULL;
    const char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, rc = 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], **slot = NULL;
        if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) slot = &sets[n_sets++];
        else if (!strcmp(a, "--show") || !strncmp(a, "--show=", 7)) slot = &show;
        if (slot) {
            const char *eq = strchr(a, '=');
            if (eq) *slot = eq + 1;
            else if (i + 1 < argc) *slot = argv[++i];
            else {
                free(sets);
                return usage_error("%s needs a value", a);
            }
        } else if (a[0] == '-' && a[1]) {
            free(sets);
            return usage_error("unknown option '%s' (options: --set, --show)", a);
        } else if (config) {
            free(sets);
            return usage_error("one config file expected; '%s' is a second one", a);
        } else {
            config = a;
        }
    }
    if (!config) {
        free(sets);
        return usage_error("%s", "a config file is needed, e.g. configs/tiny.yaml");
    }
    long long show_n = -1;
    if (show) {
        char *end;
        errno = 0;
        show_n = strtoll(show, &end, 10);
        if (errno || end == show || *end || show_n < 0) {
            free(sets);
            return usage_error("--show '%s': expected a document number (0, 1, ...)", show);
        }
    }

    run_config cfg;
    gt_error err;
    cli_data own = {0};
    tokenizer *tok = NULL;
    data_set s = {0};
    int have_set = 0;
    rc = 1;
    if (run_config_resolve(&cfg, config, sets, n_sets, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    data_options o;
    if (cli_data_resolve("data", &cfg, &o, &own)) goto done;
    if (tokenizer_load_hf(&tok, o.tokenizer_path, &err) || data_set_load(&o, tok, &s, &err)) {
        fprintf(stderr, "gptoss data: %s\n", err.msg);
        goto done;
    }
    have_set = 1;
    const data_docs *d = &s.docs;
    for (int i = 0; i < d->n_files; i++) printf("%s %s\n", i < o.n_train_files ? "train file:" : "val file:  ", d->files[i]);
    printf("tokenizer:  %s\n", o.tokenizer_path);
    printf("template:   date %s, reasoning %s, variant %s, train_on %s\n", o.harmony.date ? o.harmony.date : "today",
           o.harmony.reasoning_effort, o.harmony.variant == HARMONY_VARIANT_HF ? "hf" : "harmony",
           o.harmony.train_on == HARMONY_TRAIN_ASSISTANT ? "assistant" : o.harmony.train_on == HARMONY_TRAIN_FINAL ? "final" : "all");
    printf("token cache: %s (%s)\n", s.cache_path ? s.cache_path : "off", !s.cache_path ? "data.cache_dir empty"
                                                                         : s.cache_hit ? "hit: nothing re-tokenized" : "written");
    size_t trained = 0;
    for (size_t i = 0; i < d->n_tokens; i++) trained += d->mask[i];
    printf("rows:       %llu read, %llu skipped as bad%s\n", (unsigned long long)d->rows_read,
           (unsigned long long)d->rows_skipped, d->rows_skipped ? " (data.on_bad_row: skip)" : "");
    printf("documents:  %zu, %zu tokens, %zu trained (%.1f%%)\n", d->n_docs, d->n_tokens, trained,
           d->n_tokens ? 100.0 * (double)trained / (double)d->n_tokens : 0.0);
    printf("packing:    max_seq_len %d, %s, overlong documents %s\n", o.max_seq_len,
           o.packing ? "several documents per row" : "one document per row (padded)",
           o.overlong == DATA_OVERLONG_DROP ? "dropped" : "truncated");
    print_pack("train", &s.train, o.max_seq_len);
    if (s.n_val_docs) print_pack("validation", &s.val, o.max_seq_len);
    print_histogram(d, o.max_seq_len);
    rc = show ? show_doc(&s, tok, show_n) : 0;

done:
    if (have_set) data_set_free(&s);
    if (tok) tokenizer_free(tok);
    cli_data_free(&own);
    run_config_free(&cfg);
    free(sets);
    return rc;
}
