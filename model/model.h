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
    float swiglu_limit;  // gate <= limit, -limit <= up <= limit
    float swiglu_alpha;  // 1.702: act = gate * sigmoid(alpha * gate) * (up + 1)
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
    int eos_token_id, pad_token_id; // -1 when the file has none; a list of eos ids: its first
} model_config;

// Reads every field of a GPT-OSS config.json (rope_scaling or transformers-5 rope_parameters, with
// rope_theta at the top or inside; num_local_experts or num_experts; experts_per_token or
// num_experts_per_tok; layer_types, else even layers sliding). The shape keys are required; the others
// take transformers' GptOssConfig defaults when absent. A missing, mistyped or unsupported value (rope_type
// other than yarn/default, non-positive sizes, heads not dividing) is an error naming the file and key.
gt_status model_config_load(model_config *cfg, const char *config_json_path, gt_error *err);
// Presets for init-model: "tiny" (a shape that cannot hide bugs, model/NOTES.md) and "gpt-oss-20b" (the
// real shapes). n_layers > 0 overrides the layer count, vocab > 0 the vocabulary size.
gt_status model_config_preset(model_config *cfg, const char *preset, int n_layers, int vocab, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Weights
typedef enum wformat { WF_F32, WF_BF16, WF_MXFP4, WF_NF4 } wformat;
// model.quant: what the experts are kept as. AUTO keeps a 4-bit file 4-bit and bf16 as bf16.
typedef enum model_quant { MQ_AUTO, MQ_BF16, MQ_MXFP4, MQ_NF4 } model_quant;
// "auto" | "bf16" | "mxfp4" | "nf4" -> *q; GT_EINVAL (listing the choices) otherwise.
gt_status model_quant_parse(const char *s, model_quant *q, gt_error *err);
const char *model_quant_name(model_quant q);

// Writes cfg as an HF config.json (GptOssForCausalLM) to path, atomically. MQ_MXFP4 adds openai's
// quantization_config, MQ_NF4 Unsloth's bitsandbytes one; MQ_BF16 / MQ_AUTO none.
gt_status model_config_write(const model_config *cfg, model_quant quant, const char *path, gt_error *err);

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
// Fills q with w (rows, cols) fp32 stored as fmt (MXFP4: cols % 32 == 0; NF4: blocksize 64, NF4_CODE, no
// nested absmax). Returns the one buffer holding q's storage; the caller owns it (free after q).
void *qmatrix_from_f32(qmatrix *q, wformat fmt, const float *w, int rows, int cols);

// MXFP4 (model/mxfp4.c). A block is 32 consecutive values of a row: 16 bytes (element 2j in the low nibble
// of byte j, 2j+1 in the high one) and one E8M0 scale byte. The quantizer picks the scale as OpenAI's
// triton_kernels downcast_to_mxfp (the one transformers uses): 2^ceil(log2(amax / 6)) by the fp32 bit
// trick, then rounds each value / scale to the nearest FP4 value, ties away from zero, saturating at 6.
#define MXFP4_BLOCK 32
extern const float MXFP4_LUT[16];
void mxfp4_quantize_row(const float *x, int cols, uint8_t *blocks, uint8_t *scales); // cols % 32 == 0
void mxfp4_dequant_row(const uint8_t *blocks, const uint8_t *scales, int cols, float *out);

// NF4, bitsandbytes semantics (model/nf4.c). Blocks of `blocksize` consecutive elements of the flattened
// tensor, the last one possibly partial; element 2k in the HIGH nibble of byte k. w = map[code] * absmax.
#define NF4_BLOCKSIZE 64
#define NF4_NESTED_BLOCKSIZE 256
extern const float NF4_CODE[16]; // bitsandbytes' NF4 table, sorted ascending
// n elements -> packed (ceil(n/2)) and absmax (ceil(n/blocksize)), as bitsandbytes' quantize_4bit.
void nf4_quantize(const float *x, int64_t n, int blocksize, uint8_t *packed, float *absmax);
// Elements [start, start+n) of the flattened tensor into out (n).
void nf4_dequant(const uint8_t *packed, const float *absmax, const float quant_map[16], int blocksize,
                 int64_t start, int64_t n, float *out);
// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map), the code of nested absmax quantization.
void nf4_dynamic_map(float map[256]);
// Double quantization of n absmax values (compress_statistics=True): offset = mean, then blocks of 256 of
// (absmax - offset) to 8-bit codes of map with one fp32 absmax each (nested: ceil(n/256)).
void nf4_absmax_quantize(const float *absmax, int64_t n, const float map[256], uint8_t *q, float *nested,
                         float *offset);
// absmax[i] = map[q[i]] * nested[i / 256] + offset.
void nf4_absmax_dequant(const uint8_t *q, const float *nested, const float map[256], float offset, int64_t n,
                        float *absmax);
// Reads a bitsandbytes Linear4bit weight NAME (NAME, NAME.absmax, NAME.quant_map, NAME.nested_absmax,
// NAME.nested_quant_map, NAME.quant_state.bitsandbytes__nf4) of logical shape (rows, cols) into q
// (WF_NF4; q->blocks points into the mmap). The absmax, nested quantization undone, is a new buffer
// returned in *absmax_owned (q->absmax points to it; free it after q). Every mismatch names the tensor
// and its file.
gt_status nf4_tensor_load(const safetensors *st, const char *name, int rows, int cols, qmatrix *q,
                          float **absmax_owned, gt_error *err);
int nf4_tensor_present(const safetensors *st, const char *name); // NAME.absmax exists

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

// init-model (model/init.c): a random-weight model in HF layout under dir: config.json,
// generation_config.json and safetensors (one shard per layer plus model.safetensors.index.json when the
// model is larger than max_file_bytes (0: 2 GB), else model.safetensors). MQ_BF16: HF BF16 experts; MQ_MXFP4: openai's
// *_blocks/*_scales; MQ_NF4: Unsloth's bitsandbytes layout (experts and q/k/v/o NF4 with nested absmax).
// Weights are deterministic in seed and identical across quant (each is drawn once in fp32, rounded to
// bf16, then stored or quantized). Never holds more than one layer in memory.
gt_status model_write_random(const model_config *cfg, model_quant quant, uint64_t seed, const char *dir,
                             double max_file_bytes, gt_error *err);

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

// ---------------------------------------------------------------------------------------------------
// The CPU forward/backward (model/cpu/). fp32 storage and arithmetic as in HF transformers, with double
// sums where they get long (RMSNorm mean of squares, softmax denominators, log-sum-exp, the loss).
// OpenMP splits work so that every output element is computed by one thread in a fixed order: results
// are bitwise the same for any thread count, and with checkpointing on or off.
// Activation gradients are overwritten unless a function says "+="; LoRA dA/dB always accumulate (+=).

// HF labels (unshifted, -100 ignored) -> targets: targets[t] = labels[t+1] when t+1 is in the same
// document as t, else -1 (HF's shift; a document's first label never teaches the previous document).
// A label outside [0, vocab) other than -100 is an error naming its index.
gt_status model_batch_targets(const int32_t *labels, const int32_t *doc, int T, int vocab, int32_t *targets,
                              gt_error *err);
// Positions restarting at 0 in each document: pos (T) from doc (T).
void model_batch_positions(const int32_t *doc, int T, int32_t *pos);
// Checks a batch before any backend touches it: 1 <= T <= max_T, ids and targets in [0, vocab) (targets may
// also be -1), positions non-negative, document ids non-decreasing, and a LoRA of the workspace's rank
// (ws_rank). `workspace` names the workspace and its init function in the message. When n_targets is not
// NULL it receives the number of targets >= 0.
gt_status model_batch_check(const model_batch *b, int vocab, int max_T, const model_lora *lora, int ws_rank,
                            const char *workspace, int64_t *n_targets, gt_error *err);

// Every buffer one forward/backward needs, sized once from the config, the LoRA rank and the longest
// batch (max_T tokens); the calls below allocate nothing. checkpointing: keep only each layer's input and
// recompute the layer in backward (1), or keep every layer's activations (0). Gradients are identical.
typedef struct model_ws model_ws;
gt_status model_ws_init(model_ws **ws, const model *m, int lora_rank, int max_T, int checkpointing,
                        gt_error *err);
size_t model_ws_bytes(const model_ws *ws); // for the memory budget printed at start-up
void model_ws_free(model_ws *ws);

// Loss over the batch's targets: loss_sum = sum of -log p(target) (natural log), n_targets how many
// there were; token_loss (T) gets each position's loss (0 where there is no target) unless NULL.
// lora may be NULL (base model). A batch that does not fit the model or ws is an error.
gt_status model_forward_loss(model_ws *ws, const model *m, const model_lora *lora, const model_batch *b,
                             double *loss_sum, int64_t *n_targets, float *token_loss, gt_error *err);
// Forward and backward: every active LoRA pair gets dA += grad_scale * d(loss_sum)/dA (and dB likewise);
// the base is frozen. Pass grad_scale = 1/N for a mean over N target tokens.
gt_status model_forward_backward(model_ws *ws, const model *m, model_lora *lora, const model_batch *b,
                                 float grad_scale, double *loss_sum, int64_t *n_targets, gt_error *err);
// Full logits (T, V): for tests and small models only (the loss never forms them).
gt_status model_logits(model_ws *ws, const model *m, const model_lora *lora, const model_batch *b, float *logits,
                       gt_error *err);

// ---------------------------------------------------------------------------------------------------
// CPU ops, one file each in model/cpu/, forward and backward together. The model code above calls them;
// they are public for the finite-difference tests and for checking the CUDA kernels against them.

// matmul.c: y (M, N) = x (M, K) w (N, K)^T + b (N) (b may be NULL); accumulate: y += instead of =.
void cpu_matmul(float *y, const float *x, const float *w, const float *b, int M, int N, int K, int accumulate);
// dx (M, K) = dy (M, N) w (N, K); accumulate: += instead of =.
void cpu_matmul_dx(float *dx, const float *dy, const float *w, int M, int N, int K, int accumulate);
// dw (N, K) += alpha * dy (M, N)^T x (M, K).
void cpu_matmul_dw(float *dw, const float *dy, const float *x, int M, int N, int K, float alpha);

// rmsnorm.c: y = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps) per row (kept for backward).
void cpu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int T, int D, float eps);
// dx (T, D) += d/dx of sum(dy * y).
void cpu_rmsnorm_backward(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int T,
                          int D);

// rope.c: inverse frequencies (HD/2) and the cos/sin factor as transformers computes them (default
// RoPE, or YaRN per _compute_yarn_parameters). Tables cos, sin (T, HD/2) = f(pos * inv_freq) * factor.
void cpu_rope_inv_freq(const model_config *cfg, float *inv_freq, float *attn_factor);
void cpu_rope_tables(const model_config *cfg, const int32_t *pos, int T, float *cos_t, float *sin_t);
// x (T, NH, HD) rotated in place, rotate-half form: (a, b) -> (a cos - b sin, b cos + a sin) on the
// halves a = x[:HD/2], b = x[HD/2:]. The backward applies the inverse rotation to dx in place.
void cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD);
void cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int NH, int HD);

// attention.c: GQA with sinks. Query t of head h (KV head h / (H/KVH)) attends key j when doc[j] ==
// doc[t], j <= t and (window == 0 or j > t - window); scores (q.k) / sqrt(HD); the sink logit sinks[h]
// joins the softmax denominator and has no value. stat_max, stat_den (T, H) keep the softmax's max and
// denominator for the backward, which recomputes the probabilities bitwise.
typedef struct cpu_attn_dims {
    int T, H, KVH, HD;
    int window; // 0: full causal
} cpu_attn_dims;
void cpu_attention_forward(float *out, float *stat_max, float *stat_den, const float *q, const float *k,
                           const float *v, const float *sinks, const int32_t *doc, cpu_attn_dims d);
// out (T, H, HD); q (T, H, HD); k, v (T, KVH, HD). Backward overwrites dq, dk, dv (no sink gradient:
// the base is frozen).
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *q,
                            const float *k, const float *v, const float *sinks, const int32_t *doc,
                            const float *stat_max, const float *stat_den, cpu_attn_dims d);

// router.c: from logits (T, E), the top K experts sel (T, K) (largest first; ties: lowest index first)
// and their weights w (T, K) = softmax over the K selected logits only.
void cpu_router_forward(int32_t *sel, float *w, const float *logits, int T, int E, int K);
// dlogits (T, E) = d/dlogits of sum(dw * w): nonzero only at the selected experts.
void cpu_router_backward(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E, int K);

// swiglu.c: act (n) = g * sigmoid(alpha g) * (u + 1), g = min(gate, limit), u = clamp(up, -limit, limit)
// on de-interleaved gate, up (n). Backward: no gradient where a clamp is active (torch passes none at
// the limit itself either).
void cpu_swiglu_forward(float *act, const float *gate, const float *up, size_t n, float limit, float alpha);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n,
                         float limit, float alpha);

// lora.c: THE LoRA funnel, for q, k, v, o and every expert's gate, up and down.
// Forward: z (M, R) = x (M, in) A^T (kept for backward); y (M, out) += scale * (z B^T).
void cpu_lora_forward(float *y, float *z, const float *x, const lora_pair *p, int M, int in, int out, int R,
                      float scale);
// Backward: dB += scale dy^T z; dz = scale dy B (into dz scratch (M, R)); dA += dz^T x; dx (M, in) += dz A.
void cpu_lora_backward(float *dx, float *dz, const float *dy, const float *x, const float *z, const lora_pair *p,
                       int M, int in, int out, int R, float scale);

// loss.c: the LM head and cross-entropy over V in chunks with an online log-sum-exp, never a (T, V)
// matrix. h (T, D) is the final-normed hidden state, w (V, D) the LM head. Rows with targets[t] < 0 are
// skipped (loss 0). lse (T) gets each target row's log-sum-exp (written for target rows only).
void cpu_ce_forward(double *lse, float *loss, const float *h, const float *w, const int32_t *targets, int T, int D,
                    int V);
// The same loss and lse, and in the same pass dh (T, D) = g * d/dh of sum(loss) = g (softmax - onehot) w
// per target row, 0 elsewhere.
void cpu_ce_forward_backward(double *lse, float *loss, float *dh, const float *h, const float *w,
                             const int32_t *targets, int T, int D, int V, float g);

// ===================================================================================================
// Decoding (model/cpu/decode.c, model/sample.c): generation with a KV cache, and token sampling.
//
// The cache keeps, per layer, the RoPE'd keys and the values of the tokens seen so far. Full-attention
// layers keep up to max_ctx positions; sliding layers keep only a ring of window + max_chunk - 1 (the
// keys a chunk of up to max_chunk new tokens can see). Positions run 0, 1, ... from the last reset
// (one document). The per-token math is the CPU ops above (rmsnorm, matmul, the LoRA funnel, rope,
// router, moe) in the same order as the full forward, so the logits of cached decoding equal
// model_logits' rows of the same sequence (tests/test_decode.c).
typedef struct model_kv_cache model_kv_cache;
// lora_rank: the rank of the adapter the decode calls will pass (0: none). max_chunk: the most tokens one
// model_prefill chunk holds (longer prompts are cut into chunks of this size).
gt_status model_kv_cache_init(model_kv_cache **kv, const model *m, int lora_rank, int max_ctx, int max_chunk,
                              gt_error *err);
void model_kv_cache_free(model_kv_cache *kv);
void model_kv_cache_reset(model_kv_cache *kv);          // forget every token: the next one is position 0
int model_kv_cache_len(const model_kv_cache *kv);       // tokens seen since the reset
int model_kv_cache_capacity(const model_kv_cache *kv);  // max_ctx
size_t model_kv_cache_bytes(const model_kv_cache *kv);  // the cache and its workspace, for the budget
// Feeds n tokens at positions len .. len+n-1 (in chunks of max_chunk) and, when logits is not NULL,
// writes the logits (V) of the last one. A full cache, an id outside the vocabulary or an adapter of
// another rank is an error (nothing is added to the cache then).
gt_status model_prefill(model_kv_cache *kv, const model *m, const model_lora *lora, const int32_t *ids, int n,
                        float *logits, gt_error *err);
// One token: model_prefill of n = 1.
gt_status model_decode_step(model_kv_cache *kv, const model *m, const model_lora *lora, int32_t id, float *logits,
                            gt_error *err);

typedef struct sampler sampler;
// Generation: prefills prompt (n_prompt tokens) after what the cache holds, then samples up to max_new
// tokens, stopping after a token in stop[0..n_stop) (which is kept in out) or when on_token returns
// nonzero. on_token (may be NULL) sees each token as it is made (streaming; the Harmony parser decides
// there whether the answer is complete). Writes the tokens to out (max_new) and their count to *n_out.
// Every token but the last is fed to the cache, so the cache ends holding prompt + out[0..n_out-1).
typedef int (*model_token_fn)(void *user, int32_t id);
gt_status model_generate(model_kv_cache *kv, const model *m, const model_lora *lora, sampler *s,
                         const int32_t *prompt, int n_prompt, const int32_t *stop, int n_stop, int max_new,
                         model_token_fn on_token, void *user, int32_t *out, int *n_out, gt_error *err);

// Sampling (model/sample.c), in transformers' order: temperature, then top-k, then top-p. temperature 0
// is greedy (argmax, the lowest id on ties, as torch.argmax). top_k 0 and top_p 1 are off. The random
// numbers are our own (splitmix64 seeding xoshiro256**), so a seed gives the same tokens on any machine.
typedef struct sampler_options {
    float temperature; // >= 0
    int top_k;         // >= 0
    float top_p;       // (0, 1]
    uint64_t seed;
} sampler_options;
// Checks the options (a bad one is an error naming the flag's value range).
gt_status sampler_new(sampler **s, const sampler_options *o, int vocab, gt_error *err);
void sampler_free(sampler *s);
// The next token from logits (V); logits is left unchanged.
int32_t sampler_sample(sampler *s, const float *logits);
int32_t sampler_argmax(const float *logits, int V);

// Saving (model/save.c): a loaded (e.g. merged) model in HF layout under dir: config.json and
// safetensors (model.safetensors, or one shard per layer plus model.safetensors.index.json when larger
// than 2 GB). Every tensor but the experts is written as bf16 (fp32 values rounded to nearest even).
// MQ_BF16: HF BF16 experts (gate_up_proj [E, D, 2I], down_proj [E, I, D]); MQ_MXFP4: openai's
// *_blocks/*_scales (experts already MXFP4 are copied, others quantized). generation_config.json and the
// tokenizer files are the caller's (they are not part of the weights).
gt_status model_save(const model *m, model_quant quant, const char *dir, gt_error *err);

// Writing model files (model/save.c), shared by model_save and init-model: a growing list of tensors
// that owns each name and data buffer (model_tensors_clear frees them and keeps the capacity), and the
// writer that lays a model's tensors out in files, one part at a time.
typedef struct model_tensors {
    st_write_tensor *t;
    int n, cap;
    size_t bytes; // data bytes of the listed tensors
} model_tensors;
void model_tensors_add(model_tensors *L, const char *name, dtype dt, int ndim, const int64_t *shape, void *data);
void model_tensors_clear(model_tensors *L);
// Adds part `part` of the model to L: layer part (0 <= part < n_layers), or for part == n_layers the
// embeddings, final norm and head.
typedef void (*model_part_fn)(model_tensors *L, int part, void *ctx);
// Writes every part under dir (which must exist): all in model.safetensors (globals first) when the
// estimated size for quant is at most max_file_bytes (0: 2 GB), else one shard per part
// (model-NNNNN-of-NNNNN.safetensors: layers, then globals; each logged as "<who>: writing ...") plus
// model.safetensors.index.json. Holds at most one part in memory when sharding.
gt_status model_tensors_write(const model_config *c, model_quant quant, double max_file_bytes, const char *dir,
                              model_part_fn add_part, void *ctx, const char *who, gt_error *err);

// ===================================================================================================
// CUDA (model/cuda/; only in builds with GPTOSS_HAVE_CUDA = 1): the same training step on one GPU, checked
// op by op and end to end against the CPU functions above (tests/test_gpu_*.c). bf16 base weights (the
// experts stay 4-bit as loaded and are decoded inside the GEMM tiles; the input embedding table stays in
// host memory, its rows gathered per batch) and bf16 activations, fp32 arithmetic
// and accumulation; fp32 LoRA weights, gradients and loss. Gradient checkpointing is always on (every
// layer's bf16 input is kept). Every device buffer is allocated by the *_init functions; a step allocates
// nothing and makes the host wait only in model_cuda_loss_read (see model/cuda/model.cu's header).
#if GPTOSS_HAVE_CUDA
typedef struct model_cuda model_cuda;
// Uploads every weight (GT_EUNSUPPORTED without a GPU; GT_ENOMEM naming the size when it does not fit).
gt_status model_cuda_init(model_cuda **mc, const model *m, gt_error *err);
void model_cuda_free(model_cuda *mc);
size_t model_cuda_weight_bytes(const model_cuda *mc);

// LoRA on the device: a mirror of the host arenas params and grads (n floats each) that hold every A, B,
// dA and dB of ml (lora_adapter's params/grads), same layout, so optimizers can work on the arenas.
typedef struct model_cuda_lora model_cuda_lora;
gt_status model_cuda_lora_init(model_cuda_lora **l, const model_cuda *mc, const model_lora *ml, const float *params,
                               const float *grads, size_t n, gt_error *err);
void model_cuda_lora_free(model_cuda_lora *l);
float *model_cuda_lora_params(model_cuda_lora *l); // device (n)
float *model_cuda_lora_grads(model_cuda_lora *l);  // device (n)
void model_cuda_lora_upload(model_cuda_lora *l, const float *params);          // host params -> device
void model_cuda_lora_download(const model_cuda_lora *l, float *params, float *grads); // either may be NULL
void model_cuda_lora_grads_zero(model_cuda_lora *l);

// Workspace for batches of up to max_T tokens and LoRA rank lora_rank; n_stage: the batches queued between
// two loss reads (a step's micro-batches) that go up without a host wait (a further one waits first).
typedef struct model_cuda_ws model_cuda_ws;
gt_status model_cuda_ws_init(model_cuda_ws **ws, const model_cuda *mc, int lora_rank, int max_T, int n_stage,
                             gt_error *err);
size_t model_cuda_ws_bytes(const model_cuda_ws *ws);
void model_cuda_ws_free(model_cuda_ws *ws);
// As model_forward_loss (lora may be NULL: the base model); waits for its result. The batch lives on the
// host; a batch that does not fit the model or ws is an error.
gt_status model_cuda_forward_loss(model_cuda_ws *ws, const model_cuda *mc, const model_cuda_lora *lora,
                                  const model_batch *b, double *loss_sum, int64_t *n_targets, float *token_loss,
                                  gt_error *err);
// As model_forward_backward, but only queued: the batch's loss sum is added to a device double
// (model_cuda_loss_dev, for the optimizer's skip check) that model_cuda_loss_read returns and clears.
gt_status model_cuda_forward_backward(model_cuda_ws *ws, const model_cuda *mc, model_cuda_lora *lora,
                                      const model_batch *b, float grad_scale, int64_t *n_targets, gt_error *err);
const double *model_cuda_loss_dev(const model_cuda_ws *ws);
// The step's one host wait: the loss sum of the batches since the last read (everything queued before it is
// done when it returns).
double model_cuda_loss_read(model_cuda_ws *ws);
#endif

#endif
