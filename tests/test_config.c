// The run config (trainer/config.c): defaults valid; every key settable through --set and landing in its
// own struct field (checked field by field against a hand-written list, so a key wired to the wrong field
// or a key missing from this list fails); type, range and enum errors with their messages; unknown keys
// and sections with FILE:LINE:COLUMN and a suggestion; YAML syntax errors; duplicate keys; lists in every
// form; the cross-field rules; and write -> load round trips (awkward strings included).
#include "trainer/trainer.h"

#include <stdlib.h>

#include "test_util.h"

static char *tmp_dir; // $GPTOSS_TMP/test_config

static char *write_file(const char *name, const char *text) {
    char *path = fs_join(tmp_dir, name);
    test_write_file(path, text, strlen(text));
    return path;
}

// Loads text (as file `name`) onto defaults; expects failure and every needle (formatted with the path
// where it holds "%s") in the message.
static void expect_load_error(const char *name, const char *text, const char *const *needles, int n) {
    char *path = write_file(name, text);
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    gt_status st = run_config_load_file(&cfg, path, &err);
    EXPECT(st != GT_OK, "%s: loaded, expected an error", name);
    for (int i = 0; i < n && st != GT_OK; i++) {
        char want[1024];
        snprintf(want, sizeof want, needles[i], path);
        EXPECT(strstr(err.msg, want), "%s: message lacks \"%s\":\n%s", name, want, err.msg);
    }
    run_config_free(&cfg);
    free(path);
}

static void expect_set_error(const char *assign, const char *needle) {
    run_config cfg, before;
    gt_error err = {0};
    char diff[256];
    run_config_defaults(&cfg);
    run_config_defaults(&before);
    EXPECT(run_config_set(&cfg, assign, &err) != GT_OK, "--set %s accepted", assign);
    EXPECT(strstr(err.msg, needle), "--set %s: message lacks \"%s\": %s", assign, needle, err.msg);
    EXPECT(strncmp(err.msg, "--set ", 6) == 0, "--set %s: message does not name --set: %s", assign, err.msg);
    EXPECT(run_config_diff(&before, &cfg, diff, sizeof diff) == 0, "--set %s failed but changed: %s", assign, diff);
    run_config_free(&cfg);
    run_config_free(&before);
}

// Every key with a valid value other than its default (lora.dropout has no other: 0 is all it allows).
static const char *const ALL_SETS[] = {
    "model.name=org/other", "model.revision=v1.0", "model.quant=nf4", "model.tokenizer=tok/tokenizer.json",
    "data.path=rows.jsonl.gz", "data.revision=abc123", "data.split=test", "data.format=flat",
    "data.messages_column=conversations", "data.system_column=", "data.user_column=question",
    "data.thinking_column=reasoning", "data.answer_column=answer", "data.max_seq_len=512", "data.packing=false",
    "data.overlong=drop", "data.on_bad_row=skip", "data.max_rows=100", "data.val_fraction=0.25",
    "data.val_path=val.jsonl", "data.shuffle=no", "data.shuffle_seed=7", "data.cache_dir=/var/cache/x",
    "template.reasoning_effort=high", "template.model_identity=You are a test.", "template.date=2024-02-29",
    "template.variant=harmony", "template.train_on=final",
    "lora.rank=16", "lora.alpha=32.5", "lora.dropout=0", "lora.use_rslora=true", "lora.targets=v_proj, q_proj",
    "lora.init_seed=3",
    "optim.name=adamw_8bit", "optim.lr=1e-3", "optim.beta1=0.8", "optim.beta2=0.95", "optim.eps=1e-6",
    "optim.weight_decay=0.01", "optim.schedule=cosine", "optim.warmup_steps=10", "optim.warmup_ratio=0.03",
    "optim.min_lr_ratio=0.2", "optim.max_grad_norm=0.5",
    "train.name=t-1.a_b", "train.out_dir=out", "train.epochs=3", "train.max_steps=50", "train.batch_size=4",
    "train.grad_accum=8", "train.gradient_checkpointing=ON", "train.seed=1", "train.nan_policy=stop",
    "checkpoint.every_steps=10", "checkpoint.keep_last=0",
    "eval.every_steps=5", "eval.max_batches=2", "eval.batch_size=2",
    "log.every_steps=1", "log.progress=off",
    "device.type=cuda", "device.index=1", "device.threads=2",
};
#define N_ALL_SETS (int)(sizeof ALL_SETS / sizeof ALL_SETS[0])

// Each field, read by name (not through the schema), after ALL_SETS.
static void check_all_fields(const run_config *c) {
    EXPECT(!strcmp(c->model.name, "org/other") && !strcmp(c->model.revision, "v1.0") && c->model.quant == MQ_NF4 &&
               !strcmp(c->model.tokenizer, "tok/tokenizer.json"), "model section");
    const run_data_config *d = &c->data;
    EXPECT(!strcmp(d->path, "rows.jsonl.gz") && !strcmp(d->revision, "abc123") && !strcmp(d->split, "test"),
           "data path/revision/split");
    EXPECT(d->format == RC_FORMAT_FLAT && !strcmp(d->messages_column, "conversations") && !strcmp(d->system_column, "") &&
               !strcmp(d->user_column, "question") && !strcmp(d->thinking_column, "reasoning") &&
               !strcmp(d->answer_column, "answer"), "data format/columns");
    EXPECT(d->max_seq_len == 512 && !d->packing && d->overlong == RC_OVERLONG_DROP && d->on_bad_row == RC_BAD_ROW_SKIP &&
               d->max_rows == 100 && d->val_fraction == 0.25 && !strcmp(d->val_path, "val.jsonl") && !d->shuffle &&
               d->shuffle_seed == 7 && !strcmp(d->cache_dir, "/var/cache/x"), "data rest");
    EXPECT(c->tmpl.reasoning_effort == RC_EFFORT_HIGH && !strcmp(c->tmpl.model_identity, "You are a test.") &&
               !strcmp(c->tmpl.date, "2024-02-29") && c->tmpl.variant == RC_VARIANT_HARMONY &&
               c->tmpl.train_on == RC_TRAIN_ON_FINAL, "template section");
    EXPECT(c->lora.rank == 16 && c->lora.alpha == 32.5 && c->lora.dropout == 0 && c->lora.use_rslora &&
               c->lora.targets.n == 2 && !strcmp(c->lora.targets.items[0], "v_proj") &&
               !strcmp(c->lora.targets.items[1], "q_proj") && c->lora.init_seed == 3, "lora section");
    const run_optim_config *o = &c->optim;
    EXPECT(o->name == RC_OPTIM_ADAMW_8BIT && o->lr == 1e-3 && o->beta1 == 0.8 && o->beta2 == 0.95 && o->eps == 1e-6 &&
               o->weight_decay == 0.01 && o->schedule == RC_SCHED_COSINE && o->warmup_steps == 10 &&
               o->warmup_ratio == 0.03 && o->min_lr_ratio == 0.2 && o->max_grad_norm == 0.5, "optim section");
    const run_train_config *t = &c->train;
    EXPECT(!strcmp(t->name, "t-1.a_b") && !strcmp(t->out_dir, "out") && t->epochs == 3 && t->max_steps == 50 &&
               t->batch_size == 4 && t->grad_accum == 8 && t->gradient_checkpointing && t->seed == 1 &&
               t->nan_policy == RC_NAN_STOP, "train section");
    EXPECT(c->checkpoint.every_steps == 10 && c->checkpoint.keep_last == 0, "checkpoint section");
    EXPECT(c->eval.every_steps == 5 && c->eval.max_batches == 2 && c->eval.batch_size == 2, "eval section");
    EXPECT(c->log.every_steps == 1 && c->log.progress == RC_PROGRESS_OFF, "log section");
    EXPECT(c->device.type == RC_DEVICE_CUDA && c->device.index == 1 && c->device.threads == 2, "device section");
}

// Number of keys in the schema: the lines of the printed table after its header.
static int schema_key_count(void) {
    run_config cfg;
    run_config_defaults(&cfg);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    run_config_print_table(f, &cfg);
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    free(buf);
    run_config_free(&cfg);
    return lines - 1;
}

static void test_defaults(void) {
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    EXPECT(run_config_validate(&cfg, &err) == GT_OK, "defaults invalid: %s", err.msg);
    EXPECT(cfg.lora.rank == 8 && cfg.lora.alpha == 16 && cfg.optim.lr == 2e-4 && cfg.data.max_seq_len == 2048 &&
               cfg.lora.targets.n == 7 && !strcmp(cfg.lora.targets.items[6], "down_proj") &&
               !strcmp(cfg.tmpl.date, "2025-08-05") && cfg.model.quant == MQ_AUTO && !strcmp(cfg.train.name, ""),
           "defaults not as documented");
    run_config_free(&cfg);
}

static void test_every_key(void) {
    EXPECT(schema_key_count() == N_ALL_SETS, "schema has %d keys, this test lists %d: keep ALL_SETS complete",
           schema_key_count(), N_ALL_SETS);
    run_config all, defaults;
    run_config_defaults(&all);
    run_config_defaults(&defaults);
    for (int i = 0; i < N_ALL_SETS; i++) {
        gt_error err = {0};
        run_config one;
        char diff[512];
        run_config_defaults(&one);
        EXPECT(run_config_set(&one, ALL_SETS[i], &err) == GT_OK, "--set %s: %s", ALL_SETS[i], err.msg);
        EXPECT(run_config_set(&all, ALL_SETS[i], &err) == GT_OK, "--set %s: %s", ALL_SETS[i], err.msg);
        // Exactly the named key changed (lora.dropout=0 is its default).
        int n = run_config_diff(&defaults, &one, diff, sizeof diff);
        size_t keylen = (size_t)(strchr(ALL_SETS[i], '=') - ALL_SETS[i]);
        int is_dropout = !strncmp(ALL_SETS[i], "lora.dropout=", 13);
        EXPECT(n == (is_dropout ? 0 : 1) && (is_dropout || (!strncmp(diff, ALL_SETS[i], keylen) && diff[keylen] == ':')),
               "--set %s changed %d keys: %s", ALL_SETS[i], n, diff);
        run_config_free(&one);
    }
    check_all_fields(&all);

    // Every value survives write -> load, and the file names every key.
    char *path = fs_join(tmp_dir, "all.yaml");
    gt_error err = {0};
    EXPECT(run_config_write_yaml(&all, path, &err) == GT_OK, "write: %s", err.msg);
    run_config back;
    run_config_defaults(&back);
    EXPECT(run_config_load_file(&back, path, &err) == GT_OK, "reload: %s", err.msg);
    char diff[2048];
    EXPECT(run_config_diff(&all, &back, diff, sizeof diff) == 0, "round trip differs:\n%s", diff);
    check_all_fields(&back);

    // The same config validates only up to its cross-field rules, all reported at once.
    EXPECT(run_config_validate(&all, &err) != GT_OK, "cross-field rules not applied");
    static const char *const rules[] = {"optim.warmup_steps (10) and optim.warmup_ratio (0.03) are both set",
                                        "optim.min_lr_ratio (0.2) has no effect with optim.schedule cosine",
                                        "data.shuffle_seed (7) has no effect with data.shuffle false",
                                        "data.val_fraction (0.25) and data.val_path (val.jsonl) both"};
    for (int i = 0; i < 4; i++) EXPECT(strstr(err.msg, rules[i]), "validate lacks \"%s\":\n%s", rules[i], err.msg);
    run_config_free(&back);
    run_config_free(&all);
    run_config_free(&defaults);
    free(path);
}

static void test_set_errors(void) {
    expect_set_error("lora.rnak=8", "unknown key 'rnak' in section 'lora' (did you mean 'rank'?)");
    expect_set_error("lorra.rank=8", "unknown section 'lorra' (did you mean 'lora'?)");
    expect_set_error("train.lr=1e-3", "unknown key 'lr' in section 'train' (did you mean 'optim.lr'?)");
    expect_set_error("lora.zzzzzzzz=1", "keys of 'lora': rank alpha dropout use_rslora targets init_seed");
    expect_set_error("lora.rank", "expected section.key=value");
    expect_set_error("rank=8", "expected section.key=value");
    expect_set_error("lora=8", "expected section.key=value"); // only device has a one-value form
    expect_set_error("device=gpu", "device.type: 'gpu' is not allowed (did you mean 'cpu'?); allowed: auto, cpu, cuda");
    expect_set_error("lora.rank.x=8", "expected section.key=value");
    expect_set_error("lora.rank=abc", "lora.rank: 'abc' is not an integer; allowed: an integer from 1 to 1024");
    expect_set_error("lora.rank=8x", "'8x' is not an integer");
    expect_set_error("lora.rank= 8", "' 8' is not an integer");
    expect_set_error("lora.rank=", "'' is not an integer");
    expect_set_error("lora.rank=1.5", "'1.5' is not an integer");
    expect_set_error("lora.rank=0", "lora.rank: 0 is out of range; allowed: an integer from 1 to 1024");
    expect_set_error("lora.rank=1025", "1025 is out of range");
    expect_set_error("lora.rank=99999999999999999999", "out of range");
    expect_set_error("train.max_steps=-1", "-1 is out of range; allowed: an integer >= 0");
    expect_set_error("optim.lr=0", "optim.lr: 0 is out of range; allowed: a number > 0 and <= 1");
    expect_set_error("optim.lr=1e-3x", "'1e-3x' is not a finite number");
    expect_set_error("optim.lr=nan", "'nan' is not a finite number");
    expect_set_error("optim.lr=inf", "'inf' is not a finite number");
    expect_set_error("optim.lr=1e999", "'1e999' is not a finite number");
    expect_set_error("optim.beta2=1", "1 is out of range; allowed: a number >= 0 and < 1");
    expect_set_error("lora.dropout=0.05", "lora.dropout: 0.05 is out of range; allowed: exactly 0 (gptoss has no LoRA dropout");
    expect_set_error("data.packing=maybe", "'maybe' is not a boolean; allowed: true or false");
    expect_set_error("optim.schedule=cosin", "'cosin' is not allowed (did you mean 'cosine'?); allowed: constant, linear, "
                                             "cosine, cosine_with_min_lr");
    expect_set_error("model.quant=int8", "'int8' is not allowed; allowed: auto, bf16, mxfp4, nf4");
    expect_set_error("model.name=", "model.name: empty; allowed: non-empty");
    expect_set_error("template.date=2025-13-01", "the month must be 01 to 12");
    expect_set_error("template.date=2025-02-29", "no such day in that month");
    expect_set_error("template.date=2025-8-5", "expected YYYY-MM-DD");
    expect_set_error("train.name=../x", "it must not start with '.' or '-'");
    expect_set_error("train.name=a/b", "only letters, digits");
    expect_set_error("lora.targets=q_proj,q_porj", "unknown item 'q_porj' (did you mean 'q_proj'?)");
    expect_set_error("lora.targets=q_proj,q_proj", "'q_proj' is listed twice");
    expect_set_error("lora.targets=all,q_proj", "'all' must be the only item");
    expect_set_error("lora.targets=q_proj,", "empty list item");
    expect_set_error("lora.targets=", "0 items");
}

static void test_set_forms(void) {
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    EXPECT(run_config_set(&cfg, "lora.targets=[ q_proj , o_proj ]", &err) == GT_OK, "bracketed list: %s", err.msg);
    EXPECT(cfg.lora.targets.n == 2 && !strcmp(cfg.lora.targets.items[1], "o_proj"), "bracketed list parsed wrong");
    EXPECT(run_config_set(&cfg, "lora.targets=all", &err) == GT_OK && cfg.lora.targets.n == 7, "all not expanded");
    EXPECT(run_config_set(&cfg, "model.name=a=b", &err) == GT_OK && !strcmp(cfg.model.name, "a=b"), "value with '='");
    EXPECT(run_config_set(&cfg, "optim.lr=1", &err) == GT_OK && cfg.optim.lr == 1, "closed upper bound");
    EXPECT(run_config_set(&cfg, "data.packing=FALSE", &err) == GT_OK && !cfg.data.packing, "FALSE");
    EXPECT(run_config_set(&cfg, "data.packing=1", &err) == GT_OK && cfg.data.packing, "1");
    EXPECT(run_config_set(&cfg, "device=cuda", &err) == GT_OK && cfg.device.type == RC_DEVICE_CUDA,
           "--set device=cuda (device.type): %s", err.msg);
    run_config_free(&cfg);
}

static void test_yaml_errors(void) {
    // 1-based line:column of the offending key or value.
    expect_load_error("rnak.yaml", "lora:\n  rank: 8\n  rnak: 8\n",
                      (const char *const[]){"%s:3:3: unknown key 'rnak' in section 'lora' (did you mean 'rank'?)"}, 1);
    expect_load_error("section.yaml", "model:\n  name: x/y\nlorra:\n  rank: 8\n",
                      (const char *const[]){"%s:3:1: unknown section 'lorra' (did you mean 'lora'?)"}, 1);
    expect_load_error("toplevel_key.yaml", "rank: 8\n",
                      (const char *const[]){"%s:1:1: unknown section 'rank' ('rank' is a key of section 'lora'"}, 1);
    expect_load_error("values.yaml",
                      "optim:\n  lr: fast\n  schedule: cosin\nlora:\n  targets: [q_proj, k_porj]\n  rank: [8]\n",
                      (const char *const[]){"%s:2:7: optim.lr: 'fast' is not a finite number",
                                            "%s:3:13: optim.schedule: 'cosin' is not allowed (did you mean 'cosine'?)",
                                            "%s:5:21: lora.targets: unknown item 'k_porj' (did you mean 'k_proj'?)",
                                            "%s:6:9: lora.rank: expected a single value, got a list"},
                      4);
    expect_load_error("dup_key.yaml", "lora:\n  rank: 8\n  alpha: 16\n  rank: 16\n",
                      (const char *const[]){"%s:4:3: duplicate key 'rank' in section 'lora' (first at line 2 column 3)"}, 1);
    expect_load_error("dup_section.yaml", "lora:\n  rank: 8\noptim:\n  lr: 1e-4\nlora:\n  alpha: 4\n",
                      (const char *const[]){"%s:5:1: duplicate section 'lora' (first at line 1 column 1)"}, 1);
    expect_load_error("syntax_indent.yaml", "lora:\n  rank: 8\n   alpha: 16\n",
                      (const char *const[]){"%s:3:9: YAML syntax error: mapping values are not allowed"}, 1);
    expect_load_error("syntax_flow.yaml", "lora:\n  targets: [q_proj\n",
                      (const char *const[]){"%s:3:1: YAML syntax error:", "starts at line 2 column 12"}, 2);
    expect_load_error("two_docs.yaml", "lora:\n  rank: 8\n---\nlora:\n  rank: 9\n",
                      (const char *const[]){"%s:4:1: a second YAML document"}, 1);
    expect_load_error("not_mapping.yaml", "- lora\n", (const char *const[]){"%s:1:1: the top level must be a mapping"}, 1);
    expect_load_error("section_scalar.yaml", "lora: 8\n",
                      (const char *const[]){"%s:1:7: section 'lora' must be a mapping of keys"}, 1);
    expect_load_error("device_scalar.yaml", "device: gpu\n",
                      (const char *const[]){"%s:1:9: device.type: 'gpu' is not allowed (did you mean 'cpu'?)"}, 1);
    expect_load_error("null_int.yaml", "lora:\n  rank:\n", (const char *const[]){"%s:2:8: lora.rank: '' is not an integer"}, 1);
    expect_load_error("nul.yaml", "model:\n  name: \"a\\0b\"\n", (const char *const[]){"%s:2:9: model.name: a NUL character"}, 1);
    expect_load_error("nul_key.yaml", "lora:\n  \"rank\\0x\": 8\n",
                      (const char *const[]){"%s:2:3: a key in section 'lora' must be a plain name, not text with a NUL"}, 1);
    expect_load_error("utf16.yaml", "\xff\xfel\0o\0", (const char *const[]){"%s: byte"}, 1);

    // Many errors: as many as fit, then a note, never an overflow.
    char many[8192] = "lora:\n";
    for (int i = 0; i < 200; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "  bad_key_%03d: 1\n", i);
    expect_load_error("many.yaml", many,
                      (const char *const[]){"%s:2:3: unknown key 'bad_key_000'", "%s:3:3: unknown key 'bad_key_001'",
                                            "(further errors not shown)"},
                      3);

    // A missing file names the path.
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    EXPECT(run_config_load_file(&cfg, "/nonexistent/x.yaml", &err) == GT_ENOTFOUND && strstr(err.msg, "/nonexistent/x.yaml"),
           "missing file: %s", err.msg);
    run_config_free(&cfg);
}

static void test_yaml_forms(void) {
    // Sequences, comma strings, "all", null sections, quoted numbers, comments, an empty file.
    char *path = write_file("forms.yaml", "# comment\nlora:\n  targets:\n    - o_proj\n    - q_proj\n  rank: \"16\"\n"
                                          "optim:   # empty section\ntrain:\n  name: 'x'\n");
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    EXPECT(run_config_load_file(&cfg, path, &err) == GT_OK, "forms: %s", err.msg);
    EXPECT(cfg.lora.targets.n == 2 && !strcmp(cfg.lora.targets.items[0], "o_proj") && cfg.lora.rank == 16 &&
               !strcmp(cfg.train.name, "x"), "forms parsed wrong");
    free(path);
    path = write_file("comma.yaml", "lora:\n  targets: k_proj, up_proj\n");
    EXPECT(run_config_load_file(&cfg, path, &err) == GT_OK && cfg.lora.targets.n == 2 &&
               !strcmp(cfg.lora.targets.items[1], "up_proj"), "comma list in YAML: %s", err.msg);
    free(path);
    path = write_file("all.yaml", "lora:\n  targets: [all]\n");
    EXPECT(run_config_load_file(&cfg, path, &err) == GT_OK && cfg.lora.targets.n == 7, "[all]: %s", err.msg);
    free(path);
    path = write_file("device.yaml", "device: cuda\n");
    EXPECT(run_config_load_file(&cfg, path, &err) == GT_OK && cfg.device.type == RC_DEVICE_CUDA,
           "device: cuda (device.type): %s", err.msg);
    free(path);
    path = write_file("empty.yaml", "");
    EXPECT(run_config_load_file(&cfg, path, &err) == GT_OK, "empty file: %s", err.msg);
    free(path);
    run_config_free(&cfg);
}

static void test_validate(void) {
    static const struct {
        const char *sets[3];
        const char *want;
    } cases[] = {
        {{"eval.every_steps=10"}, "eval.every_steps (10) needs validation data"},
        {{"train.max_steps=10", "optim.warmup_steps=10"}, "optim.warmup_steps (10) must be smaller than train.max_steps (10)"},
        {{"data.format=flat", "data.answer_column="}, "data.format flat needs data.user_column and data.answer_column"},
        {{"device.type=cpu", "device.index=1"}, "device.index (1) applies to CUDA devices"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_config cfg;
        gt_error err = {0};
        run_config_defaults(&cfg);
        for (int j = 0; j < 3 && cases[i].sets[j]; j++) CHECK(run_config_set(&cfg, cases[i].sets[j], &err) == GT_OK);
        EXPECT(run_config_validate(&cfg, &err) != GT_OK && strstr(err.msg, cases[i].want) &&
                   !strncmp(err.msg, "config: ", 8), "validate case %zu: %s", i, err.msg);
        run_config_free(&cfg);
    }
    // Fine combinations.
    static const char *const ok[] = {"eval.every_steps=10", "data.val_fraction=0.1", "optim.schedule=cosine_with_min_lr",
                                     "optim.min_lr_ratio=0.3", "data.shuffle=false"};
    run_config cfg;
    gt_error err = {0};
    run_config_defaults(&cfg);
    for (int j = 0; j < 5; j++) CHECK(run_config_set(&cfg, ok[j], &err) == GT_OK);
    EXPECT(run_config_validate(&cfg, &err) == GT_OK, "valid combination rejected: %s", err.msg);
    // Fields set from C are checked against the schema too.
    cfg.lora.rank = 0;
    EXPECT(run_config_validate(&cfg, &err) != GT_OK && strstr(err.msg, "config: lora.rank: 0 is out of range"),
           "validate missed a bad field: %s", err.msg);
    run_config_free(&cfg);
}

static void test_round_trip_strings(void) {
    // Strings the YAML writer must quote: quotes, colon, '#', leading/trailing spaces, a newline, a tab,
    // non-ASCII, YAML keywords and number-like text.
    static const char *const awkward[] = {"He said: \"hi\" # not a comment", "  padded  ", "line1\nline2\ttab",
                                          "Grüße, 世界 🙂", "true", "null", "~", "0x10", "- item", "'single'", "\\back"};
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++) {
        run_config cfg, back;
        gt_error err = {0};
        run_config_defaults(&cfg);
        free(cfg.tmpl.model_identity);
        cfg.tmpl.model_identity = xstrdup(awkward[i]);
        free(cfg.data.val_path);
        cfg.data.val_path = xstrdup(awkward[i]);
        char *path = fs_join(tmp_dir, "awkward.yaml");
        EXPECT(run_config_write_yaml(&cfg, path, &err) == GT_OK, "write: %s", err.msg);
        run_config_defaults(&back);
        EXPECT(run_config_load_file(&back, path, &err) == GT_OK, "reload of \"%s\": %s", awkward[i], err.msg);
        EXPECT(!strcmp(back.tmpl.model_identity, awkward[i]) && !strcmp(back.data.val_path, awkward[i]),
               "string \"%s\" came back as \"%s\"", awkward[i], back.tmpl.model_identity);
        run_config_free(&cfg);
        run_config_free(&back);
        free(path);
    }
    // Floats come back bit-exact.
    static const char *const floats[] = {"optim.lr=0.1", "optim.lr=3.0000000000000004e-4", "optim.eps=1e-300",
                                         "lora.alpha=0.30000000000000004"};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        run_config cfg, back;
        gt_error err = {0};
        char diff[512];
        run_config_defaults(&cfg);
        CHECK(run_config_set(&cfg, floats[i], &err) == GT_OK);
        char *path = fs_join(tmp_dir, "float.yaml");
        CHECK(run_config_write_yaml(&cfg, path, &err) == GT_OK);
        run_config_defaults(&back);
        EXPECT(run_config_load_file(&back, path, &err) == GT_OK && run_config_diff(&cfg, &back, diff, sizeof diff) == 0 &&
                   cfg.optim.lr == back.optim.lr && cfg.optim.eps == back.optim.eps && cfg.lora.alpha == back.lora.alpha,
               "float %s did not round-trip: %s", floats[i], err.msg);
        run_config_free(&cfg);
        run_config_free(&back);
        free(path);
    }
}

static void test_resolve(void) {
    run_config cfg;
    gt_error err = {0};
    char *path = write_file("my-run.v2.yml", "lora:\n  rank: 4\n");
    const char *const sets[] = {"lora.rank=32", "optim.lr=1e-4"};
    EXPECT(run_config_resolve(&cfg, path, sets, 2, &err) == GT_OK, "resolve: %s", err.msg);
    EXPECT(!strcmp(cfg.train.name, "my-run.v2") && cfg.lora.rank == 32 && cfg.optim.lr == 1e-4,
           "resolve: name '%s', rank %d (overrides apply after the file, name from the file name)", cfg.train.name,
           cfg.lora.rank);
    run_config_free(&cfg);
    free(path);
    path = write_file("named.yaml", "train:\n  name: kept\n");
    EXPECT(run_config_resolve(&cfg, path, NULL, 0, &err) == GT_OK && !strcmp(cfg.train.name, "kept"),
           "resolve replaced an explicit name: %s", cfg.train.name);
    run_config_free(&cfg);
    free(path);
    path = write_file("bad name.yaml", "");
    EXPECT(run_config_resolve(&cfg, path, NULL, 0, &err) != GT_OK && strstr(err.msg, "config: train.name: 'bad name'"),
           "a file name that is no run name: %s", err.msg);
    run_config_free(&cfg);
    free(path);
    const char *const bad[] = {"lora.rnak=1"};
    path = write_file("x.yaml", "");
    EXPECT(run_config_resolve(&cfg, path, bad, 1, &err) != GT_OK && strstr(err.msg, "--set lora.rnak=1"),
           "resolve: bad --set: %s", err.msg);
    run_config_free(&cfg);
    free(path);
}

static void test_markdown(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    run_config_schema_markdown(f);
    fclose(f);
    // One table row per key, every section with a heading.
    int rows = 0;
    for (char *p = buf; (p = strstr(p, "\n| `")); p++) rows++;
    EXPECT(rows == N_ALL_SETS, "markdown has %d key rows, expected %d", rows, N_ALL_SETS);
    static const char *const sections[] = {"model", "data", "template", "lora", "optim",
                                           "train", "checkpoint", "eval", "log", "device"};
    for (int i = 0; i < 10; i++) {
        char h[64];
        snprintf(h, sizeof h, "\n## `%s`: ", sections[i]);
        EXPECT(strstr(buf, h), "markdown lacks section %s", sections[i]);
    }
    EXPECT(strstr(buf, "| `rank` | integer | `8` | an integer from 1 to 1024 |"), "rank row wrong");
    free(buf);
}

int main(void) {
    tmp_dir = test_tmpdir("test_config");
    test_defaults();
    test_every_key();
    test_set_errors();
    test_set_forms();
    test_yaml_errors();
    test_yaml_forms();
    test_validate();
    test_round_trip_strings();
    test_resolve();
    test_markdown();
    if (failures) fprintf(stderr, "test_config: the files are in %s\n", tmp_dir);
    free(tmp_dir);
    return test_finish("test_config");
}
