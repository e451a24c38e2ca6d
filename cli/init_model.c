// gptoss init-model: write a random-weight GPT-OSS model in HF layout (model_write_random).
//   --preset tiny|gpt-oss-20b  shapes (model_config_preset)
//   --layers N                 override the layer count
//   --vocab V                  override the vocabulary size (tiny defaults to o200k_harmony's 201088)
//   --quant mxfp4|nf4|bf16     expert format and file layout (default mxfp4, like openai/gpt-oss-20b)
//   --seed S                   weights are a function of the seed only (default 0)
//   --out DIR                  created if needed; existing files of the same names are replaced
#include "cli/cli.h"
#include "core/core.h"
#include "model/model.h"

#include <errno.h>
#include <stdlib.h>

static int parse_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gptoss init-model: %s '%s': expected an integer in %lld..%lld\n", flag, s, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

int cmd_init_model(int argc, char **argv) {
    static const char *const FLAGS[] = {"--preset", "--layers", "--vocab", "--quant", "--seed", "--out"};
    const char *preset = NULL, *out = NULL, *quant_s = "mxfp4";
    long long layers = 0, vocab = 0, seed = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!cli_flag_known("init-model", f, FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]))) return 2;
        if (i + 1 >= argc) return cli_usage_error("init-model", "%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--preset")) preset = v;
        else if (!strcmp(f, "--out")) out = v;
        else if (!strcmp(f, "--quant")) quant_s = v;
        else if (!strcmp(f, "--layers") && !parse_int(f, v, 1, MODEL_MAX_LAYERS, &layers)) return 2;
        else if (!strcmp(f, "--vocab") && !parse_int(f, v, 1, 1 << 30, &vocab)) return 2;
        else if (!strcmp(f, "--seed") && !parse_int(f, v, 0, (long long)(~0ull >> 1), &seed)) return 2;
    }
    if (!preset || !out) return cli_usage_error("init-model", "--preset and --out are required");
    gt_error err = {0};
    model_config cfg;
    model_quant quant;
    if (model_quant_parse(quant_s, &quant, &err) != GT_OK || quant == MQ_AUTO) {
        fprintf(stderr, "gptoss init-model: --quant %s: one of mxfp4, nf4, bf16\n", quant_s);
        return 2;
    }
    if (model_config_preset(&cfg, preset, (int)layers, (int)vocab, &err) != GT_OK) {
        fprintf(stderr, "gptoss init-model: %s\n", err.msg);
        return 2;
    }
    if (model_write_random(&cfg, quant, (uint64_t)seed, out, 0, &err) != GT_OK) {
        fprintf(stderr, "gptoss init-model: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: %s, %d layers, D %d, I %d, E %d top-%d, vocab %d, %s experts, seed %lld\n", out, preset,
           cfg.n_layers, cfg.hidden, cfg.intermediate, cfg.n_experts, cfg.top_k, cfg.vocab, model_quant_name(quant), seed);
    return 0;
}
