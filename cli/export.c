// gptoss export: write an adapter in PEFT's format, or a merged model in HF layout.
//   gptoss export --adapter RUN_DIR|DIR --out DIR [--model M]
//       the adapter (a run's final adapter/, else its newest checkpoint, or any PEFT adapter directory),
//       read against its base (--model, else base_model_name_or_path from adapter_config.json) and written
//       by lora_peft_save: adapter_config.json + adapter_model.safetensors (fp32), loadable by PEFT.
//   gptoss export --merged --model M --adapter A --out DIR [--quant bf16|mxfp4]
//       the base with the adapter folded in (lora_merge in fp32), written by model_save: config.json,
//       model.safetensors (non-expert tensors bf16; experts bf16 in HF's layout, or requantized to MXFP4),
//       generation_config.json and the tokenizer files copied from the base directory. HF transformers
//       loads it as a plain GptOssForCausalLM (tests/ref/check_merged_export.py checks its logits).
//   --ignore-base-mismatch  as in gptoss chat
#include "cli/cli.h"
#include "core/core.h"
#include "lora/lora.h"
#include "model/model.h"

#include <stdlib.h>

static const char *const FLAGS[] = {"--adapter", "--out", "--model", "--merged", "--quant", "--ignore-base-mismatch"};
#define N_FLAGS (int)(sizeof FLAGS / sizeof FLAGS[0])

// Files of the base directory that belong with the weights (those present are copied).
static const char *const SIDE_FILES[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "chat_template.jinja"};

static int copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char *src = fs_join(from_dir, name), *dst = fs_join(to_dir, name), *data = NULL;
    size_t len = 0;
    gt_error err = {0};
    int rc = 0;
    if (fs_exists(src)) {
        if (fs_read_file(src, &data, &len, &err) || fs_write_atomic(dst, data, len, &err)) {
            fprintf(stderr, "gptoss export: %s\n", err.msg);
            rc = 1;
        } else {
            printf("  %s (copied from the base)\n", dst);
        }
    }
    free(data);
    free(src);
    free(dst);
    return rc;
}

static int export_adapter(const char *adapter_arg, const char *model_arg, const char *out, int ignore) {
    char adir[4096], base[1024], mdir[4096];
    if (cli_infer_adapter_dir("export", adapter_arg, adir, sizeof adir)) return 1;
    if (cli_infer_adapter_base("export", adir, base, sizeof base)) return 1;
    const char *m = model_arg ? model_arg : base[0] ? base : NULL;
    if (!m) {
        fprintf(stderr, "gptoss export: adapter %s does not name its base (base_model_name_or_path is null): pass "
                "--model BASE\n", adir);
        return 1;
    }
    if (cli_infer_model_dir("export", m, mdir, sizeof mdir)) return 1;
    if (model_arg && cli_infer_check_base("export", adir, model_arg, mdir, ignore)) return 1;
    char *cpath = fs_join(mdir, "config.json");
    model_config cfg;
    gt_error err = {0};
    gt_status st = model_config_load(&cfg, cpath, &err);
    free(cpath);
    lora_adapter la;
    if (!st) st = lora_peft_load(&la, &cfg, adir, &err);
    if (st) {
        fprintf(stderr, "gptoss export: %s\n", err.msg);
        return 1;
    }
    st = lora_peft_save(&la, out, base[0] ? base : m, &err);
    if (st) fprintf(stderr, "gptoss export: %s\n", err.msg);
    else
        printf("wrote %s: PEFT LoRA adapter (rank %d, alpha %g%s, %zu parameters) from %s, base %s\n", out,
               la.spec.rank, la.spec.alpha, la.spec.use_rslora ? ", rslora" : "", la.n_params, adir, base[0] ? base : m);
    lora_adapter_free(&la);
    return st ? 1 : 0;
}

static int export_merged(const char *model_arg, const char *adapter_arg, const char *out, const char *quant_s,
                         int ignore) {
    char mdir[4096], adir[4096];
    model_quant q;
    gt_error err = {0};
    if (model_quant_parse(quant_s, &q, &err) || (q != MQ_BF16 && q != MQ_MXFP4))
        return cli_usage_error("export", "--quant '%s': bf16 or mxfp4", quant_s);
    if (cli_infer_model_dir("export", model_arg, mdir, sizeof mdir)) return 1;
    if (cli_infer_adapter_dir("export", adapter_arg, adir, sizeof adir)) return 1;
    if (cli_infer_check_base("export", adir, model_arg, mdir, ignore)) return 1;
    model m;
    lora_adapter la;
    if (model_load(&m, mdir, MQ_AUTO, &err)) {
        fprintf(stderr, "gptoss export: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    if (lora_peft_load(&la, &m.cfg, adir, &err)) {
        fprintf(stderr, "gptoss export: --adapter: %s\n", err.msg);
        model_free(&m);
        return 1;
    }
    if (lora_merge(&m, &la, WF_F32, &err) || model_save(&m, q, out, &err)) {
        fprintf(stderr, "gptoss export: %s\n", err.msg);
        goto done;
    }
    printf("wrote %s: %s merged with %s (rank %d, scale %g, merged in fp32); experts %s\n", out, mdir, adir,
           la.spec.rank, la.ml.scale,
           q == MQ_BF16 ? "kept bf16 (HF BF16 layout)" : "requantized to mxfp4 (openai layout; 4-bit rounding loses part of the update)");
    rc = 0;
    for (size_t i = 0; i < sizeof SIDE_FILES / sizeof *SIDE_FILES; i++) rc |= copy_file(mdir, out, SIDE_FILES[i]);
done:
    lora_adapter_free(&la);
    model_free(&m);
    return rc;
}

int cmd_export(int argc, char **argv) {
    const char *adapter = NULL, *out = NULL, *model_arg = NULL, *quant = "bf16";
    int merged = 0, ignore = 0, quant_given = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!cli_flag_known("export", f, FLAGS, N_FLAGS)) return 2;
        if (!strcmp(f, "--merged")) { merged = 1; continue; }
        if (!strcmp(f, "--ignore-base-mismatch")) { ignore = 1; continue; }
        if (i + 1 >= argc) return cli_usage_error("export", "%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--adapter")) adapter = v;
        else if (!strcmp(f, "--out")) out = v;
        else if (!strcmp(f, "--model")) model_arg = v;
        else quant = v, quant_given = 1;
    }
    if (!adapter || !out) return cli_usage_error("export", "--adapter and --out are required");
    if (merged && !model_arg)
        return cli_usage_error("export", "--merged needs --model (the base to merge the adapter into)");
    if (!merged && quant_given)
        return cli_usage_error("export", "--quant is for --merged exports (an adapter is written fp32)");
    return merged ? export_merged(model_arg, adapter, out, quant, ignore) : export_adapter(adapter, model_arg, out, ignore);
}
