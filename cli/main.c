// gptoss: dispatch to subcommands. `gptoss-train CONFIG` (the symlink) is `gptoss train CONFIG`.
#include "cli/cli.h"
#include "core/core.h"

#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>

static const cli_command COMMANDS[] = {
    {"train", cmd_train, "fine-tune with LoRA from a YAML config",
     "usage: gptoss train CONFIG.yaml [--set section.key=value]... [--resume RUN_DIR] [--overwrite] [--dry-run]\n"
     "       gptoss-train CONFIG.yaml ...\n\n"
     "Resolves the config (defaults, --set overrides, validation), prints it as a table, saves it as\n"
     "runs/NAME/config.resolved.yaml, loads the base model, attaches LoRA and trains.\n"
     "  --set K=V     override one config key (same validation as the file), repeatable\n"
     "  --resume DIR  continue a run from its last complete checkpoint\n"
     "  --overwrite   allow reusing an existing run directory\n"
     "  --dry-run     resolve and print the config, then exit\n"},
    {"eval", cmd_eval, "mean next-token loss of a model (+adapter) on a dataset",
     "usage: gptoss eval --model M [--adapter DIR] --data FILE [--device auto|cpu|cuda] [--json]\n"
     "       [--tokenizer FILE] [--reasoning low|medium|high] [--date YYYY-MM-DD] [--train-on assistant|final|all]\n\n"
     "Prints the token-weighted mean next-token loss over all target tokens. FILE is JSONL or JSONL.gz; each\n"
     "row's shape is detected as for training: pre-tokenized {\"input_ids\", \"labels\"?} (labels unshifted,\n"
     "-100 ignored), conversations {\"messages\": [...]} or flat rows (developer/user/analysis/final), which\n"
     "are rendered in Harmony and tokenized with the template options below (the defaults of `gptoss train`).\n"
     "  --device auto|cpu|cuda  auto (default): the GPU when this build has CUDA and one is present, else the CPU\n"
     "  --tokenizer FILE        tokenizer.json for conversation rows (default: the model directory's)\n"
     "  --reasoning L           the system message's reasoning effort (default medium)\n"
     "  --date YYYY-MM-DD       the template's current date (default: template.date's pinned default)\n"
     "  --train-on T            targets: assistant (default: the last turn's thinking and answer), final, all\n"},
    {"chat", cmd_chat, "chat with a model (+adapter) in the Harmony format",
     "usage: gptoss chat --model M [--adapter DIR] [--merge] [--prompt TEXT] [--reasoning low|medium|high]\n"
     "       [--show-thinking] [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--device ...]\n\n"
     "Loads the 4-bit base, then the adapter on top (or folded in with --merge), and answers in the Harmony\n"
     "format. Without --prompt/--batch: a REPL with /reset, /effort LEVEL, /think on|off, /system TEXT, /quit.\n"
     "  --merge-experts bf16|fp32|mxfp4|nf4  what merged experts are kept as (with --merge)\n"
     "  --batch IN.jsonl --out OUT.jsonl     answer a file of prompts\n"
     "  --system TEXT      developer instructions      --date YYYY-MM-DD  the template's current date\n"
     "  --top-k K          sample from the K best      --max-context N    KV-cache length\n"
     "  --tokenizer FILE   tokenizer.json (default: the model's)\n"
     "  --ignore-base-mismatch  load an adapter whose base_model_name_or_path names another model\n"},
    {"export", cmd_export, "export an adapter (PEFT format) or a merged model",
     "usage: gptoss export --adapter RUN_DIR|DIR --out DIR [--model M] [--merged --model M [--quant bf16|mxfp4]]\n\n"
     "Writes the adapter in PEFT's format (adapter_model.safetensors + adapter_config.json); --model names the\n"
     "base when the adapter's base_model_name_or_path does not resolve. --merged writes a merged model in HF\n"
     "layout (config.json, generation_config.json, tokenizer files) with the experts in --quant.\n"
     "  --ignore-base-mismatch  accept an adapter whose base_model_name_or_path names another model\n"},
    {"data", cmd_data, "render and tokenize a config's dataset; print statistics",
     "usage: gptoss data CONFIG.yaml [--set K=V]... [--show N]\n"},
    {"init-model", cmd_init_model, "write a random-weight GPT-OSS model in HF layout",
     "usage: gptoss init-model --preset tiny|gpt-oss-20b [--layers N] [--vocab V] [--quant mxfp4|nf4|bf16] [--seed S]\n"
     "       --out DIR\n\n"
     "Writes config.json, generation_config.json and safetensors (sharded with an index above 2 GB) in HF layout:\n"
     "mxfp4 as openai/gpt-oss-20b (default), bf16 as save_pretrained, nf4 as Unsloth's bitsandbytes checkpoint.\n"
     "The weights depend on the seed only, the same across --quant. tiny's vocab defaults to 201088.\n"},
    {"bench", cmd_bench, "time training steps on synthetic data",
     "usage: gptoss bench --model M [--batch B] [--seq T] [--lora-r R] [--targets all|attn] [--steps N] [--json]\n"},
    {"version", cmd_version, "version, git commit, build type, CUDA and GPUs",
     "usage: gptoss version\n"},
};
#define N_COMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "gptoss %s: LoRA fine-tuning and chat for GPT-OSS on one GPU\n\nusage: gptoss <command> [options]\n\n"
               "commands:\n", gptoss_version());
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\n`gptoss <command> --help` describes each command.\n");
}

int cli_wants_help(const char *name, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            for (int c = 0; c < N_COMMANDS; c++)
                if (!strcmp(COMMANDS[c].name, name)) fputs(COMMANDS[c].usage, stdout);
            return 1;
        }
    }
    return 0;
}

int cli_flag_known(const char *cmd, const char *arg, const char *const *flags, int n) {
    for (int k = 0; k < n; k++)
        if (!strcmp(arg, flags[k])) return 1;
    const char *best = flags[0];
    for (int k = 1; k < n; k++)
        if (str_edit_distance(arg, flags[k]) < str_edit_distance(arg, best)) best = flags[k];
    fprintf(stderr, "gptoss %s: unknown argument '%s' (did you mean %s?); see gptoss %s --help\n", cmd, arg, best, cmd);
    return 0;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gptoss %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; see gptoss %s --help\n", cmd);
    va_end(ap);
    return 2;
}

int main(int argc, char **argv) {
    // OpenMP threads sleep at barriers unless the user chose otherwise: spinning made 2 threads up to 10x
    // slower than 1 on a machine with other work running (model/NOTES.md). Set before any OpenMP call.
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    const char *self = basename(argv[0]);
    if (!strcmp(self, "gptoss-train")) return cmd_train(argc - 1, argv + 1);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(0, NULL);
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (int i = 0; i < N_COMMANDS; i++) {
        if (!strcmp(argv[1], COMMANDS[i].name)) {
            if (cli_wants_help(COMMANDS[i].name, argc - 2, argv + 2)) return 0;
            return COMMANDS[i].run(argc - 2, argv + 2);
        }
        size_t d = str_edit_distance(argv[1], COMMANDS[i].name);
        if (d < best_d) best_d = d, best = COMMANDS[i].name;
    }
    fprintf(stderr, "gptoss: unknown command '%s'", argv[1]);
    if (best && best_d <= 3) fprintf(stderr, " (did you mean '%s'?)", best);
    fprintf(stderr, "\n\n");
    usage(stderr);
    return 2;
}
