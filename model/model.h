// model: GPT-OSS config.json, weights (MXFP4 | NF4 | BF16 experts; everything else fp32 on the CPU),
// and the fp32 CPU forward/backward with LoRA on all seven projection types.
//
// Dimension legend: T tokens, D hidden, H query heads, KVH kv heads, HD head dim, E experts,
// K experts per token, I intermediate, R LoRA rank, V vocab.
// Matrices are row-major [out, in] and apply as y = W x (PyTorch Linear convention).
#ifndef GPTOSS_MODEL_H
#define GPTOSS_MODEL_H

#include "core/core.h"

// ---------------------------------------------------------------------------------------------------
// config.json
#define MODEL_MAX_LAYERS 256

typedef struct model_config {
    int hidden;        // D
    int n_layers;
    int n_heads;       // H
    int n_kv_heads;    // KVH
    int head_dim;      // HD
    int n_experts;     // E
    int top_k;         // K
    int intermediate;  // I
    int vocab;         // V
    float rms_eps;
    float swiglu_limit;
    int sliding_window;
    unsigned char layer_sliding[MODEL_MAX_LAYERS]; // 1: sliding_attention, 0: full_attention
    double rope_theta;
    int rope_yarn;                 // 0: plain RoPE, 1: YaRN
    double yarn_factor, yarn_beta_fast, yarn_beta_slow;
    int yarn_orig_max_pos;
    int yarn_truncate;
    int max_position;
    int tie_word_embeddings;
    int attention_bias;
    int eos_token_id, pad_token_id;
} model_config;

// Reads every field of a GPT-OSS config.json (rope_scaling or transformers-5 rope_parameters,
// num_local_experts or num_experts, experts_per_token or num_experts_per_tok). Missing or unsupported
// values are errors naming the file and the key.
gt_status model_config_load(model_config *cfg, const char *config_json_path, gt_error *err);
// Presets for init-model: "tiny" (a shape that cannot hide bugs) and "gpt-oss-20b" (the real shapes).
gt_status model_config_preset(model_config *cfg, const char *preset, int n_layers, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Weights
typedef enum wformat { WF_F32, WF_BF16, WF_MXFP4, WF_NF4 } wformat;
// model.quant: what the experts are kept as. AUTO keeps a 4-bit file 4-bit and bf16 as bf16.
typedef enum model_quant { MQ_AUTO, MQ_BF16, MQ_MXFP4, MQ_NF4 } model_quant;

// One expert weight [rows=out, cols=in], y = W x, kept in its storage format and dequantized where used.
typedef struct qmatrix {
    wformat fmt;
    int rows, cols;
    const uint16_t *bf16;  // WF_BF16: (rows, cols)
    const float *f32;      // WF_F32: (rows, cols)
    const uint8_t *blocks; // WF_MXFP4: (rows, cols/32, 16), low nibble = even element;
                           // WF_NF4: (ceil(rows*cols/2)) high nibble = even element, row-major flattened
    const uint8_t *scales; // WF_MXFP4: (rows, cols/32) E8M0, value = LUT[code] * 2^(scale-127)
    const float *absmax;   // WF_NF4: (ceil(rows*cols/blocksize)); nested quantization already undone
    float quant_map[16];   // WF_NF4: code -> value, read from the file
    int blocksize;         // WF_NF4: 64
} qmatrix;
// Dequantizes rows [row0, row0+nrows) into out (nrows, cols) fp32.
void qmatrix_dequant_rows(const qmatrix *w, int row0, int nrows, float *out);

typedef struct model_layer {
    float *attn_norm;            // (D)
    float *wq, *bq;              // (H*HD, D), (H*HD)
    float *wk, *bk;              // (KVH*HD, D), (KVH*HD)
    float *wv, *bv;              // (KVH*HD, D), (KVH*HD)
    float *wo, *bo;              // (D, H*HD), (D)
    float *sinks;                // (H)
    float *mlp_norm;             // (D)
    float *router_w, *router_b;  // (E, D), (E)
    qmatrix *gate_up;            // [E], each (2I, D); rows interleaved: row 2i gate_i, row 2i+1 up_i
    float *gate_up_b;            // (E, 2I) interleaved like the rows
    qmatrix *down;               // [E], each (D, I)
    float *down_b;               // (E, D)
} model_layer;

typedef struct model {
    model_config cfg;
    float *embed;        // (V, D)
    float *norm;         // (D)
    float *lm_head;      // (V, D)
    model_layer *layers; // [n_layers]
    wformat expert_format;
    safetensors st;      // kept open: experts in the file's 4-bit format point into the mmap
    void **owned;        // buffers this model allocated (freed by model_free)
    int n_owned;
} model;

// dir: a directory with config.json and safetensors (single or sharded). Detects the layout: HF MXFP4
// (*_blocks/*_scales), HF BF16 (gate_up_proj [E,D,2I], down_proj [E,I,D]), or Unsloth bitsandbytes NF4
// (per-expert gate_up_projs.{e}/down_projs.{e}, router.linear). quant converts on load when asked.
gt_status model_load(model *m, const char *dir, model_quant quant, gt_error *err);
void model_free(model *m);

// ---------------------------------------------------------------------------------------------------
// LoRA adapters as the forward sees them: plain arrays owned by lora/ (which allocates, initialises,
// imports and exports them). A NULL A means the target is off. y += scale * B (A x).
typedef enum lora_target {
    LT_Q, LT_K, LT_V, LT_O, LT_GATE, LT_UP, LT_DOWN, LT_COUNT
} lora_target;

typedef struct lora_pair {
    float *A, *B;   // (R, in), (out, R)
    float *dA, *dB; // gradients, same shapes; accumulated (+=) by the backward
} lora_pair;

typedef struct lora_layer {
    lora_pair q, k, v, o;           // attention projections
    lora_pair *gate, *up, *down;    // [E] each; gate/up are the even/odd rows of gate_up
} lora_layer;

typedef struct model_lora {
    int rank;          // R
    float scale;       // alpha / R, or alpha / sqrt(R) with rslora
    unsigned targets;  // bit (1u << lora_target) set when that target is on
    lora_layer *layers; // [n_layers]
} model_lora;

// ---------------------------------------------------------------------------------------------------
// Forward / backward (CPU fp32 reference). A batch is one packed row: documents back to back, positions
// restarting at 0 in each, attention never crossing documents. B rows of a batch are B more documents.
typedef struct model_batch {
    int T;
    const int32_t *ids;     // (T)
    const int32_t *pos;     // (T) position within the document
    const int32_t *doc;     // (T) document index, non-decreasing
    const int32_t *targets; // (T) next-token target of each position, or -1 (already shifted)
} model_batch;

#endif
