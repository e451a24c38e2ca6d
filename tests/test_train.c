// tests/test_train.c: the training loop through its API (train_run_main) on a tiny random model made by
// model_write_random, the fixture tokenizer and the bundled sample data:
//   1. exact resume: 10 steps straight == the same run resumed from its step-5 checkpoint in a new run
//      directory: every step's loss and grad norm and the final adapter file bit for bit;
//   2. gradient accumulation: 1 x 4 rows and 2 x 2 rows give the same step loss (the loss is normalised by
//      the step's total target-token count, and the rows hold different numbers of targets, so a mean of
//      per-micro-batch means would differ) and the same gradient norm;
//   3. NaN/Inf (GPTOSS_TEST_INJECT_NAN_STEP): skip leaves the adapter as it was (step-2 and step-3
//      adapters equal) and logs a skip line; stop returns an error naming the step;
//   4. checkpoint files: keep_last, a damaged state.bin / manifest refused with the reason, an unfinished
//      checkpoint (no COMPLETE) ignored, an unwritable place reported with the path;
//   5. the loss plot is an SVG with one polyline point per finite loss.
#include "trainer/trainer.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                   \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

static char base[1024], model_dir[1100];
static const char *TOKENIZER = "tests/fixtures/tokenizer/tokenizer.json";
static const char *data_path = "data/samples/multilingual_sample.jsonl";

// Settings every run here shares: small rows, so that one step is 128 tokens (the tests also run under
// ASan at -O0, some 25 times slower).
static const char *const COMMON[] = {
    "data.max_seq_len=64", "train.batch_size=1", "train.grad_accum=2", "optim.lr=0.003",
    "optim.warmup_steps=2", "optim.schedule=cosine", "checkpoint.every_steps=5", "checkpoint.keep_last=0",
    "eval.every_steps=5", "eval.max_batches=2", "log.every_steps=100", "log.progress=off",
    "data.val_fraction=0.2", "lora.rank=4", "template.train_on=all", "device.threads=1", "train.epochs=100",
};

typedef struct run_out {
    gt_status st;
    train_result res;
    char dir[1200];
    char msg[2048];
} run_out;

// A run named name with COMMON, then sets (in order). resume: continue the directory.
static run_out run(const char *name, const char *const *sets, int n_sets, int resume) {
    run_out o;
    memset(&o, 0, sizeof o);
    run_config cfg;
    gt_error err;
    run_config_defaults(&cfg);
    for (size_t i = 0; i < sizeof COMMON / sizeof COMMON[0]; i++) CHECK(run_config_set(&cfg, COMMON[i], &err) == GT_OK);
    for (int i = 0; i < n_sets; i++) {
        if (run_config_set(&cfg, sets[i], &err)) {
            fprintf(stderr, "%s\n", err.msg);
            CHECK(0);
        }
    }
    if (run_config_validate(&cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        CHECK(0);
    }
    snprintf(o.dir, sizeof o.dir, "%s/%s", base, name);
    CHECK(fs_mkdirs(o.dir, &err) == GT_OK);

    data_options d;
    data_options_defaults(&d);
    const char *files[] = {data_path};
    d.train_files = files, d.n_train_files = 1;
    d.tokenizer_path = TOKENIZER;
    d.format = DATA_FORMAT_MESSAGES;
    d.harmony.date = "2025-08-05";
    d.harmony.train_on = cfg.tmpl.train_on == RC_TRAIN_ON_ALL ? HARMONY_TRAIN_ALL : HARMONY_TRAIN_ASSISTANT;
    d.max_seq_len = cfg.data.max_seq_len;
    d.packing = cfg.data.packing;
    d.max_rows = 24;
    d.val_fraction = cfg.data.val_fraction;
    d.seed = (uint64_t)cfg.train.seed;

    train_run r = {.cfg = &cfg, .run_dir = o.dir, .model_dir = model_dir, .data = &d, .resume = resume};
    o.st = train_run_main(&r, &o.res, &err);
    if (o.st) snprintf(o.msg, sizeof o.msg, "%s", err.msg);
    run_config_free(&cfg);
    return o;
}

static char *read_all(const char *path, size_t *len) {
    char *d = NULL;
    gt_error err;
    if (fs_read_file(path, &d, len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        *len = 0;
        return NULL;
    }
    return d;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_all(a, &na), *y = read_all(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

// metrics.jsonl -> per step (1..max) the train loss and grad norm (NaN when absent); skip lines counted.
typedef struct curve {
    double loss[64], gnorm[64];
    int n_skip, n_eval;
} curve;

static curve read_curve(const char *run_dir) {
    curve c;
    for (int i = 0; i < 64; i++) c.loss[i] = c.gnorm[i] = NAN;
    c.n_skip = c.n_eval = 0;
    char *p = fs_join(run_dir, "metrics.jsonl");
    size_t len;
    char *d = read_all(p, &len);
    free(p);
    for (char *line = d, *nl; d && (nl = strchr(line, '\n')); line = nl + 1) {
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &je);
        CHECK(o);
        const char *type = json_string_value(json_object_get(o, "type"));
        json_int_t s = json_integer_value(json_object_get(o, "step"));
        if (!strcmp(type, "train") && s >= 0 && s < 64) {
            c.loss[s] = json_real_value(json_object_get(o, "loss"));
            c.gnorm[s] = json_real_value(json_object_get(o, "grad_norm"));
        }
        c.n_skip += !strcmp(type, "skip");
        c.n_eval += !strcmp(type, "eval");
        json_decref(o);
    }
    free(d);
    return c;
}

static char *ckpt_file(const char *run_dir, int step, const char *file) {
    return xasprintf("%s/checkpoints/step-%08d/%s", run_dir, step, file);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *d = read_all(from, &n);
    gt_error err;
    CHECK(d && fs_write_atomic(to, d, n, &err) == GT_OK);
    free(d);
}

// 1. 10 steps straight vs resumed from step 5.
static void test_exact_resume(void) {
    const char *sets[] = {"train.max_steps=10"};
    run_out a = run("straight", sets, 1, 0);
    EXPECT(a.st == GT_OK, "%s", a.msg);
    EXPECT(a.res.steps == 10, "steps %lld", (long long)a.res.steps);
    // A new run directory holding only step 5 of the straight run: the resumed process starts from files.
    char *b_dir = xasprintf("%s/resumed/checkpoints/step-00000005", base);
    gt_error err;
    CHECK(fs_mkdirs(b_dir, &err) == GT_OK);
    static const char *const files[] = {"state.bin", "adapter_model.safetensors", "adapter_config.json", "COMPLETE"};
    for (int i = 0; i < 4; i++) {
        char *from = ckpt_file(a.dir, 5, files[i]), *to = fs_join(b_dir, files[i]);
        copy_file(from, to);
        free(from);
        free(to);
    }
    free(b_dir);
    run_out b = run("resumed", sets, 1, 1);
    EXPECT(b.st == GT_OK, "%s", b.msg);
    EXPECT(b.res.steps == 10, "steps %lld", (long long)b.res.steps);
    curve ca = read_curve(a.dir), cb = read_curve(b.dir);
    EXPECT(a.res.loss == ca.loss[10] && b.res.loss == cb.loss[10], "result loss %.17g / %.17g vs metrics %.17g",
           a.res.loss, b.res.loss, ca.loss[10]);
    EXPECT(a.res.val_loss == b.res.val_loss && isfinite(a.res.val_loss), "result val_loss %.17g vs %.17g",
           a.res.val_loss, b.res.val_loss);
    size_t lc = strlen(a.res.checkpoint);
    EXPECT(lc > 14 && !strcmp(a.res.checkpoint + lc - 14, "/step-00000010"), "result checkpoint '%s'",
           a.res.checkpoint);
    for (int s = 6; s <= 10; s++) {
        EXPECT(ca.loss[s] == cb.loss[s] && ca.gnorm[s] == cb.gnorm[s],
               "step %d: loss %.17g vs %.17g, grad norm %.17g vs %.17g", s, ca.loss[s], cb.loss[s], ca.gnorm[s],
               cb.gnorm[s]);
    }
    EXPECT(ca.loss[1] > ca.loss[10], "the loss should fall over 10 steps: %.4f -> %.4f", ca.loss[1], ca.loss[10]);
    char *fa = xasprintf("%s/adapter/adapter_model.safetensors", a.dir);
    char *fb = xasprintf("%s/adapter/adapter_model.safetensors", b.dir);
    EXPECT(same_file(fa, fb), "final adapters differ: %s vs %s", fa, fb);
    free(fa);
    free(fb);
    char *sa = ckpt_file(a.dir, 10, "state.bin"), *sb = ckpt_file(b.dir, 10, "state.bin");
    // state.bin also holds the wall time trained, which differs; compare the adapter and optimizer part.
    size_t na, nb;
    char *x = read_all(sa, &na), *y = read_all(sb, &nb);
    EXPECT(x && y && na == nb && na > 128 && !memcmp(x + 128, y + 128, na - 128),
           "step-10 adapter/optimizer state differs");
    EXPECT(x && y && !memcmp(x + 32, y + 32, 120 - 32), "step-10 cursor/counters differ");
    free(x);
    free(y);
    free(sa);
    free(sb);
    EXPECT(ca.n_eval == 3 && cb.n_eval == 1, "evals: straight %d (steps 0, 5, 10), resumed %d (step 10)", ca.n_eval,
           cb.n_eval);
    char *svg = fs_join(a.dir, "loss.svg");
    EXPECT(fs_exists(svg), "no %s", svg);
    free(svg);
    char *cfgj = xasprintf("%s/adapter/adapter_config.json", a.dir);
    size_t n;
    char *cj = read_all(cfgj, &n);
    EXPECT(cj && strstr(cj, "\"peft_type\": \"LORA\"") && strstr(cj, "\"task_type\": \"CAUSAL_LM\"") &&
               strstr(cj, "\"target_parameters\"") && strstr(cj, "\"base_model_name_or_path\""),
           "adapter_config.json lacks PEFT keys:\n%s", cj ? cj : "(missing)");
    free(cj);
    free(cfgj);
}

// 2. Gradient accumulation normalisation, on short conversations whose answers differ in length.
static void test_grad_accum(void) {
    char *path = fs_join(base, "short.jsonl");
    FILE *f = fopen(path, "w");
    CHECK(f);
    for (int i = 0; i < 8; i++) {
        fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"question %d\"}, {\"role\": \"assistant\", "
                   "\"content\": \"", i);
        for (int w = 0; w < 1 + 7 * (i % 4); w++) fprintf(f, "%sword%d", w ? " " : "", w);
        fprintf(f, "\"}]}\n");
    }
    fclose(f);
    data_path = path;
    // One conversation per row (no packing), only the answers trained: rows hold 3 to 46 targets.
    const char *s1[] = {"train.max_steps=1", "train.batch_size=4", "train.grad_accum=1", "data.max_seq_len=256",
                        "template.train_on=assistant", "checkpoint.every_steps=0", "eval.every_steps=0",
                        "data.val_fraction=0", "optim.warmup_steps=0", "data.packing=false"};
    const char *s2[] = {"train.max_steps=1", "train.batch_size=2", "train.grad_accum=2", "data.max_seq_len=256",
                        "template.train_on=assistant", "checkpoint.every_steps=0", "eval.every_steps=0",
                        "data.val_fraction=0", "optim.warmup_steps=0", "data.packing=false"};
    run_out a = run("accum1", s1, 10, 0), b = run("accum2", s2, 10, 0);
    data_path = "data/samples/multilingual_sample.jsonl";
    free(path);
    EXPECT(a.st == GT_OK && b.st == GT_OK, "%s %s", a.msg, b.msg);
    curve ca = read_curve(a.dir), cb = read_curve(b.dir);
    // Same tokens, same per-token losses; only the order of the double sums differs: 1e-12 relative.
    EXPECT(fabs(ca.loss[1] - cb.loss[1]) <= 1e-12 * fabs(ca.loss[1]), "loss %.17g vs %.17g", ca.loss[1], cb.loss[1]);
    // Gradients accumulate in fp32 in another order (micro-batch sums): 1e-5 relative is ~100 fp32 ulps.
    EXPECT(fabs(ca.gnorm[1] - cb.gnorm[1]) <= 1e-5 * ca.gnorm[1], "grad norm %.9g vs %.9g", ca.gnorm[1], cb.gnorm[1]);
}

// 3. NaN injection.
static void test_nan(void) {
    const char *skip[] = {"train.max_steps=3", "checkpoint.every_steps=1", "eval.every_steps=0"};
    setenv("GPTOSS_TEST_INJECT_NAN_STEP", "3", 1);
    run_out a = run("nan_skip", skip, 3, 0);
    EXPECT(a.st == GT_OK, "%s", a.msg);
    EXPECT(a.res.skipped == 1 && a.res.steps == 3, "skipped %lld steps %lld", (long long)a.res.skipped,
           (long long)a.res.steps);
    char *p2 = ckpt_file(a.dir, 2, "adapter_model.safetensors"), *p3 = ckpt_file(a.dir, 3, "adapter_model.safetensors");
    EXPECT(same_file(p2, p3), "a skipped step changed the adapter (%s vs %s)", p2, p3);
    free(p2);
    free(p3);
    curve c = read_curve(a.dir);
    EXPECT(c.n_skip == 1 && isnan(c.loss[3]) && !isnan(c.loss[2]), "skip lines %d, loss[3] %g", c.n_skip, c.loss[3]);

    const char *stop[] = {"train.max_steps=3", "checkpoint.every_steps=1", "eval.every_steps=0",
                          "train.nan_policy=stop"};
    run_out b = run("nan_stop", stop, 4, 0);
    unsetenv("GPTOSS_TEST_INJECT_NAN_STEP");
    EXPECT(b.st != GT_OK && strstr(b.msg, "step 3") && strstr(b.msg, "stopped"), "stop: %s", b.msg);
    char path[4096];
    int64_t step = -1;
    gt_error err;
    EXPECT(ckpt_find_latest(b.dir, path, sizeof path, &step, &err) == GT_OK && step == 2, "latest step %lld",
           (long long)step);
}

// 4. Checkpoint files.
static void test_checkpoint_files(void) {
    const char *sets[] = {"train.max_steps=6", "checkpoint.every_steps=2", "checkpoint.keep_last=2",
                          "eval.every_steps=0"};
    run_out a = run("keep", sets, 4, 0);
    EXPECT(a.st == GT_OK, "%s", a.msg);
    for (int s = 2; s <= 6; s += 2) {
        char *d = xasprintf("%s/checkpoints/step-%08d", a.dir, s);
        EXPECT(fs_is_dir(d) == (s >= 4), "keep_last 2: %s %s", d, fs_is_dir(d) ? "kept" : "removed");
        free(d);
    }
    // Read the newest into a fresh adapter/optimizer of the same config.
    model m;
    gt_error err;
    CHECK(model_load(&m, model_dir, MQ_AUTO, &err) == GT_OK);
    lora_adapter la;
    lora_spec spec = {.rank = 4, .alpha = 16, .targets = (1u << LT_COUNT) - 1};
    CHECK(lora_adapter_init(&la, &m.cfg, &spec, 42, &err) == GT_OK);
    optim_segment *segs = xmalloc((size_t)la.n_segs * sizeof *segs);
    for (int i = 0; i < la.n_segs; i++)
        segs[i] = (optim_segment){la.params + la.segs[i].offset, la.grads + la.segs[i].offset, la.segs[i].n};
    optim opt;
    optim_config oc = {.kind = OPTIM_ADAMW, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0};
    CHECK(optim_init(&opt, &oc, segs, la.n_segs, &err) == GT_OK);
    char path[4096];
    int64_t step;
    ckpt_state s;
    EXPECT(ckpt_find_latest(a.dir, path, sizeof path, &step, &err) == GT_OK && step == 6, "latest %lld", (long long)step);
    EXPECT(ckpt_read(path, &s, &la, &opt, &err) == GT_OK, "%s", err.msg);
    EXPECT(s.step == 6 && opt.step == 6, "state step %lld, optimizer step %lld", (long long)s.step, (long long)opt.step);

    // A damaged byte in state.bin: the manifest's CRC catches it; without the manifest check, state.bin's own.
    char *sp = fs_join(path, "state.bin");
    size_t n;
    char *d = read_all(sp, &n);
    d[n / 2] ^= 1;
    CHECK(fs_write_atomic(sp, d, n, &err) == GT_OK);
    EXPECT(ckpt_read(path, &s, &la, &opt, &err) == GT_EFORMAT && strstr(err.msg, "damaged"), "%s", err.msg);
    // Truncated: the size check names the file.
    CHECK(fs_write_atomic(sp, d, n - 7, &err) == GT_OK);
    EXPECT(ckpt_read(path, &s, &la, &opt, &err) == GT_EFORMAT && strstr(err.msg, "state.bin"), "%s", err.msg);
    free(d);
    free(sp);
    // Without COMPLETE, step 6 is unfinished: the latest complete is step 4.
    char *marker = fs_join(path, "COMPLETE");
    CHECK(unlink(marker) == 0);
    EXPECT(ckpt_find_latest(a.dir, path, sizeof path, &step, &err) == GT_OK && step == 4, "latest %lld",
           (long long)step);
    free(marker);
    // A wrong manifest version.
    char *m4 = fs_join(path, "COMPLETE");
    d = read_all(m4, &n);
    char *v = strstr(d, "\"version\": 1");
    CHECK(v);
    v[11] = '9';
    CHECK(fs_write_atomic(m4, d, n, &err) == GT_OK);
    EXPECT(ckpt_read(path, &s, &la, &opt, &err) == GT_EFORMAT && strstr(err.msg, "version"), "%s", err.msg);
    free(d);
    free(m4);

    // Unwritable: the run directory lies under a regular file (root can write anywhere else).
    char *file = fs_join(base, "a_file");
    CHECK(fs_write_atomic(file, "x", 1, &err) == GT_OK);
    char *under = fs_join(file, "run");
    char out[4096];
    s.step = 7;
    EXPECT(ckpt_write(under, &s, &la, &opt, NULL, 0, out, sizeof out, &err) == GT_EIO && strstr(err.msg, under),
           "%s", err.msg);
    free(under);
    free(file);

    optim_free(&opt);
    free(segs);
    lora_adapter_free(&la);
    model_free(&m);
}

// 5. The SVG.
static void test_plot(void) {
    int64_t steps[] = {1, 2, 3, 4};
    double loss[] = {3.0, 2.5, NAN, 2.0};
    int64_t es[] = {2, 4};
    double el[] = {2.8, 2.4};
    char *svg = loss_plot_svg("run <a&b>", steps, loss, 4, es, el, 2, 4);
    EXPECT(!strncmp(svg, "<svg ", 5) && strstr(svg, "</svg>\n"), "not an SVG document");
    EXPECT(strstr(svg, "run &lt;a&amp;b&gt;") != NULL, "title not escaped");
    EXPECT(strstr(svg, "nan") == NULL && strstr(svg, "inf") == NULL, "non-finite coordinates written");
    // The train polyline has 3 points (the NaN is left out), the eval one 2 points and 2 dots.
    const char *pl = strstr(svg, "<polyline");
    int pts = 0;
    for (const char *q = strstr(pl, "points=\""); *q != '/'; q++) pts += *q == ',';
    EXPECT(pts == 3, "train points %d", pts);
    int dots = 0;
    for (const char *q = svg; (q = strstr(q, "<circle")); q++) dots++;
    EXPECT(dots == 3, "circles %d (2 eval points + the legend)", dots);
    free(svg);
}

int main(void) {
    const char *tmp = getenv("GPTOSS_TMP");
    snprintf(base, sizeof base, "%s/test_train", tmp && tmp[0] ? tmp : "/tmp");
    char *cmd = xasprintf("rm -rf '%s'", base);
    CHECK(system(cmd) == 0);
    free(cmd);
    snprintf(model_dir, sizeof model_dir, "%s/model", base);
    // The tiny preset with 1 layer and the fixture tokenizer's vocabulary (3015 ids).
    model_config mc;
    gt_error err;
    CHECK(model_config_preset(&mc, "tiny", 1, 3015, &err) == GT_OK);
    if (model_write_random(&mc, MQ_BF16, 7, model_dir, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_plot();
    test_exact_resume();
    test_grad_accum();
    test_nan();
    test_checkpoint_files();
    if (failures) {
        fprintf(stderr, "test_train: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_train: ok\n");
    return 0;
}
