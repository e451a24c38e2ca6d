// cli/infer.c: resolving --model and --adapter for chat and export (cli.h "cli/infer.c"), so that the
// three loading mistakes end with a message that says what to pass instead:
//   - an adapter directory (adapter_config.json, no config.json), a training checkpoint (checkpoints/step-N/:
//     adapter files + state.bin) or a run directory (config.resolved.yaml) given as --model;
//   - a model directory (config.json, no adapter_config.json) given as --adapter;
//   - an adapter whose adapter_config.json names another base (base_model_name_or_path); shape mismatches
//     are caught by lora_peft_load, which names the tensor.
// A run directory given as --adapter means its final adapter/ (else its newest complete checkpoint).
#include "cli/cli.h"
#include "core/core.h"
#include "trainer/trainer.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>

static int has(const char *dir, const char *name) {
    char *p = fs_join(dir, name);
    int r = fs_exists(p);
    free(p);
    return r;
}

// The model: key of a run directory's config.resolved.yaml, for the message (run_config_load_file).
static char *run_model_name(const char *run_dir) {
    char *path = fs_join(run_dir, "config.resolved.yaml");
    run_config cfg;
    run_config_defaults(&cfg);
    gt_error err;
    char *name = NULL;
    if (run_config_load_file(&cfg, path, &err) == GT_OK && cfg.model.name && cfg.model.name[0])
        name = xstrdup(cfg.model.name);
    run_config_free(&cfg);
    free(path);
    return name;
}

json_t *cli_json_load(const char *cmd, const char *path) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fprintf(stderr, "gptoss %s: %s:%d:%d: %s\n", cmd, path, je.line, je.column, je.text);
    return root;
}

int cli_infer_adapter_base(const char *cmd, const char *adapter_dir, char *base, size_t size) {
    base[0] = 0;
    char *path = fs_join(adapter_dir, "adapter_config.json");
    json_t *root = cli_json_load(cmd, path);
    if (!root) {
        free(path);
        return 1;
    }
    json_t *b = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(b)) snprintf(base, size, "%s", json_string_value(b));
    json_decref(root);
    free(path);
    return 0;
}

int cli_infer_model_dir(const char *cmd, const char *model_arg, char *dir, size_t size) {
    if (fs_is_dir(model_arg) && !has(model_arg, "config.json")) {
        char base[1024] = "";
        if (has(model_arg, "adapter_config.json")) {
            int ckpt = has(model_arg, "state.bin") || has(model_arg, "COMPLETE");
            cli_infer_adapter_base(cmd, model_arg, base, sizeof base);
            fprintf(stderr,
                    "gptoss %s: --model %s is a %s (adapter_config.json, no config.json), not a model: pass it as "
                    "--adapter %s together with --model %s%s\n",
                    cmd, model_arg, ckpt ? "training checkpoint's LoRA adapter" : "LoRA adapter", model_arg,
                    base[0] ? base : "BASE", base[0] ? " (its base_model_name_or_path)" : " (the base model it was trained on)");
            return 1;
        }
        if (has(model_arg, "config.resolved.yaml") || has(model_arg, "checkpoints")) {
            char *name = run_model_name(model_arg);
            fprintf(stderr,
                    "gptoss %s: --model %s is a training run directory, not a model: pass --adapter %s (its final "
                    "adapter, else its newest checkpoint) together with --model %s\n",
                    cmd, model_arg, model_arg, name ? name : "BASE (model.name in its config.resolved.yaml)");
            free(name);
            return 1;
        }
    }
    gt_error err = {0};
    if (hfcache_resolve(model_arg, HF_MODEL, NULL, dir, size, &err)) {
        fprintf(stderr, "gptoss %s: --model: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

int cli_infer_adapter_dir(const char *cmd, const char *adapter_arg, char *dir, size_t size) {
    if (!fs_is_dir(adapter_arg)) {
        fprintf(stderr, "gptoss %s: --adapter %s: no such directory (a PEFT adapter directory, a checkpoint or a run "
                "directory)\n", cmd, adapter_arg);
        return 1;
    }
    if (has(adapter_arg, "adapter_config.json")) {
        snprintf(dir, size, "%s", adapter_arg);
        return 0;
    }
    if (has(adapter_arg, "config.json")) {
        fprintf(stderr, "gptoss %s: --adapter %s is a model (config.json, no adapter_config.json), not a LoRA "
                "adapter: pass it as --model %s\n", cmd, adapter_arg, adapter_arg);
        return 1;
    }
    char *final = fs_join(adapter_arg, "adapter");
    if (has(final, "adapter_config.json")) {
        snprintf(dir, size, "%s", final);
        free(final);
        log_info("%s: using the run's final adapter %s", cmd, dir);
        return 0;
    }
    free(final);
    gt_error err = {0};
    int64_t step;
    if (has(adapter_arg, "checkpoints") && ckpt_find_latest(adapter_arg, dir, size, &step, &err) == GT_OK) {
        log_info("%s: the run has no final adapter yet; using its newest checkpoint %s (step %lld)", cmd, dir,
                 (long long)step);
        return 0;
    }
    fprintf(stderr, "gptoss %s: --adapter %s holds no adapter_config.json (nor adapter/ or a complete checkpoint of a "
            "run): pass a PEFT adapter directory\n", cmd, adapter_arg);
    return 1;
}

// Two names for the same model: equal strings, or both resolve (path or hub name) to one directory.
static int same_model(const char *a, const char *a_dir, const char *b) {
    if (!strcmp(a, b)) return 1;
    char bd[4096], ra[PATH_MAX], rb[PATH_MAX];
    gt_error err;
    if (hfcache_resolve(b, HF_MODEL, NULL, bd, sizeof bd, &err) != GT_OK) return 0;
    return realpath(a_dir, ra) && realpath(bd, rb) && !strcmp(ra, rb);
}

int cli_infer_check_base(const char *cmd, const char *adapter_dir, const char *model_arg, const char *model_dir,
                         int ignore) {
    char base[1024];
    if (cli_infer_adapter_base(cmd, adapter_dir, base, sizeof base)) return 1;
    if (!base[0] || same_model(model_arg, model_dir, base)) return 0;
    if (ignore) {
        log_warn("%s: adapter %s was trained on '%s', used here on '%s' (--ignore-base-mismatch)", cmd, adapter_dir,
                 base, model_arg);
        return 0;
    }
    fprintf(stderr,
            "gptoss %s: adapter %s was trained on base '%s' (base_model_name_or_path in its adapter_config.json), "
            "but --model is '%s': pass --model %s, or add --ignore-base-mismatch if '%s' holds the same weights\n",
            cmd, adapter_dir, base, model_arg, base, model_arg);
    return 1;
}
