// gptoss train CONFIG.yaml [--set section.key=value]... [--resume RUN_DIR] [--overwrite] [--dry-run]
// (also `gptoss-train CONFIG.yaml ...`).
//
// Order, so that a run that cannot start leaves nothing behind: resolve the config (file, then --set
// overrides in order, then validation) and print it as a table; stop there with --dry-run; check the run
// directory (out_dir/name; an existing one needs --resume or --overwrite); find the base model and a hub
// dataset in the local cache; only then create the run directory and write config.resolved.yaml; then
// train (trainer/train.c: train_run_main). --overwrite first removes what the old run wrote
// (train_run_dir_clear); --resume continues from the run's newest complete checkpoint.
//
// Hidden: `gptoss train --schema-markdown` prints the config schema as Markdown (configs/README.md).
// Exit codes: 0 ok, 1 config/run-directory/model/data/training problem, 2 usage error, 130/143 stopped by
// SIGINT/SIGTERM after writing a checkpoint (128 + the signal, as a shell reports a killed command).
#include "cli/cli.h"
#include "trainer/trainer.h"

#include <stdlib.h>

typedef struct train_args {
    const char *config;
    const char **sets; // [n_sets] "section.key=value", applied in order
    int n_sets;
    const char *resume;
    int overwrite, dry_run, schema_markdown;
} train_args;

static int usage_error(const char *fmt, const char *arg) {
    fputs("gptoss train: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nusage: gptoss train CONFIG.yaml [--set section.key=value]... [--resume RUN_DIR] [--overwrite] "
          "[--dry-run]\n(gptoss train --help describes them)\n", stderr);
    return 2;
}

// Parses argv into a; returns 0, or the exit code of a usage error.
static int args_parse(int argc, char **argv, train_args *a) {
    static const char *const opts[] = {"--set", "--resume", "--overwrite", "--dry-run", "--help"};
    memset(a, 0, sizeof *a);
    a->sets = xcalloc((size_t)argc + 1, sizeof *a->sets);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i], **slot = NULL, *name = NULL;
        if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) slot = &a->sets[a->n_sets++], name = "--set";
        else if (!strcmp(s, "--resume") || !strncmp(s, "--resume=", 9)) slot = &a->resume, name = "--resume";
        if (slot) {
            const char *eq = strchr(s, '=');
            if (eq) *slot = eq + 1;
            else if (i + 1 < argc) *slot = argv[++i];
            else return usage_error("%s needs a value", name);
        } else if (!strcmp(s, "--overwrite")) {
            a->overwrite = 1;
        } else if (!strcmp(s, "--dry-run")) {
            a->dry_run = 1;
        } else if (!strcmp(s, "--schema-markdown")) {
            a->schema_markdown = 1;
        } else if (s[0] == '-' && s[1]) {
            const char *best = NULL;
            size_t best_d = (size_t)-1;
            for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
                size_t d = str_edit_distance(s, opts[o]);
                if (d < best_d) best_d = d, best = opts[o];
            }
            char msg[300];
            snprintf(msg, sizeof msg, "unknown option '%.200s'%s%s%s", s, best_d <= 3 ? " (did you mean '" : "",
                     best_d <= 3 ? best : "", best_d <= 3 ? "'?)" : "");
            return usage_error("%s", msg);
        } else if (a->config) {
            return usage_error("one config file expected; '%s' is a second one", s);
        } else {
            a->config = s;
        }
    }
    if (a->schema_markdown) return 0;
    if (!a->config) return usage_error("%s", "a config file is needed, e.g. configs/tiny.yaml");
    if (a->resume && a->overwrite) return usage_error("%s", "--resume continues a run; --overwrite starts one over: pick one");
    return 0;
}

// --resume RUN_DIR: the run's saved config must equal the resolved one, or the run would not continue
// the same training.
static int resume_check(const char *run_dir, const run_config *cfg) {
    gt_error err;
    char *saved = fs_join(run_dir, "config.resolved.yaml");
    int rc = 0;
    if (!fs_is_dir(run_dir)) {
        fprintf(stderr, "gptoss train: --resume %s: no such directory\n", run_dir);
        rc = 1;
    } else if (!fs_exists(saved)) {
        fprintf(stderr, "gptoss train: --resume %s: not a run directory (it has no config.resolved.yaml)\n", run_dir);
        rc = 1;
    } else {
        run_config prev;
        run_config_defaults(&prev);
        if (run_config_load_file(&prev, saved, &err)) {
            fprintf(stderr, "gptoss train: --resume %s: %s\n", run_dir, err.msg);
            rc = 1;
        } else {
            char diff[4096];
            int n = run_config_diff(&prev, cfg, diff, sizeof diff);
            if (n) {
                fprintf(stderr, "gptoss train: --resume %s: the config differs from the run's in %d key%s (saved -> now):\n"
                                "%s\nTo continue the run as it was: gptoss train %s --resume %s\n",
                        run_dir, n, n == 1 ? "" : "s", diff, saved, run_dir);
                rc = 1;
            }
        }
        run_config_free(&prev);
    }
    free(saved);
    return rc;
}

static int train_main(const train_args *a) {
    gt_error err;
    run_config cfg;
    int rc = 1;
    char *run_dir = NULL, *saved = NULL;
    char model_dir[4096], data_path[4096];
    data_options data;
    cli_data data_own;
    int have_data = 0;

    if (run_config_resolve(&cfg, a->config, a->sets, a->n_sets, &err)) {
        fprintf(stderr, "gptoss train: %s\n", err.msg);
        goto done;
    }
    run_config_print_table(stdout, &cfg);
    fflush(stdout);
    if (a->dry_run) {
        fprintf(stderr, "gptoss train: dry run: config valid, nothing written\n");
        rc = 0;
        goto done;
    }

    run_dir = a->resume ? xstrdup(a->resume) : fs_join(cfg.train.out_dir, cfg.train.name);
    if (a->resume) {
        if (resume_check(run_dir, &cfg)) goto done;
    } else if (fs_exists(run_dir) && !a->overwrite) {
        fprintf(stderr, "gptoss train: run directory %s already exists. Continue that run with --resume %s, "
                        "reuse the directory with --overwrite, or start another with --set train.name=NEW_NAME\n",
                run_dir, run_dir);
        goto done;
    }

    if (hfcache_resolve(cfg.model.name, HF_MODEL, cfg.model.revision, model_dir, sizeof model_dir, &err) ||
        hfcache_resolve(cfg.data.path, HF_DATASET, cfg.data.revision, data_path, sizeof data_path, &err)) {
        fprintf(stderr, "gptoss train: %s\n", err.msg);
        goto done;
    }

    if (cli_data_resolve("train", &cfg, &data, &data_own)) goto done;
    have_data = 1;
    if (train_check_device(&cfg, &err)) {
        fprintf(stderr, "gptoss train: %s\n", err.msg);
        goto done;
    }

    if (!a->resume) {
        saved = fs_join(run_dir, "config.resolved.yaml");
        if ((a->overwrite && fs_exists(run_dir) && train_run_dir_clear(run_dir, &err)) || fs_mkdirs(run_dir, &err) ||
            run_config_write_yaml(&cfg, saved, &err)) {
            fprintf(stderr, "gptoss train: %s\n", err.msg);
            goto done;
        }
    }
    printf("run directory: %s\nmodel: %s\ndata: %s\n", run_dir, model_dir, data_path);
    fflush(stdout);

    // TRAINING
    train_run tr = {.cfg = &cfg, .run_dir = run_dir, .model_dir = model_dir, .data = &data, .resume = a->resume != NULL};
    train_result res;
    if (train_run_main(&tr, &res, &err)) {
        fprintf(stderr, "gptoss train: %s\n", err.msg);
        goto done;
    }
    rc = res.signal ? 128 + res.signal : 0;

done:
    if (have_data) cli_data_free(&data_own);
    free(run_dir);
    free(saved);
    run_config_free(&cfg);
    return rc;
}

int cmd_train(int argc, char **argv) {
    if (cli_wants_help("train", argc, argv)) return 0; // `gptoss-train --help` comes here directly
    train_args a;
    int rc = args_parse(argc, argv, &a);
    if (rc == 0 && a.schema_markdown) run_config_schema_markdown(stdout);
    else if (rc == 0) rc = train_main(&a);
    free(a.sets);
    return rc;
}
