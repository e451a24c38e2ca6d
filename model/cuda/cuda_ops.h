// model/cuda/cuda_ops.h: the CUDA ops of the GPT-OSS training step, one .cu file each with forward and
// backward together (private to model/; tests/test_gpu_*.c include it to check every op against its CPU
// twin in model/cpu/). Plain C declarations: the .cu files define them with C linkage.
//
// Dimension legend as in model/model.h: T tokens, D hidden, H heads, KVH kv heads, HD head dim,
// E experts, K per token, I intermediate, R LoRA rank, V vocab, S = T*K expert slots.
// Every pointer is device memory unless it says "host". Storage: activations and gradients fp32, GEMM
// operands bf16 (uint16_t bits, round to nearest even), base weights bf16 or 4-bit, LoRA fp32.
// Outputs are overwritten unless a comment says "+=" (as on the CPU: LoRA dA/dB and the RMSNorm input
// gradient accumulate). All calls are asynchronous on the default stream; none synchronises the host.
#ifndef GPTOSS_MODEL_CUDA_OPS_H
#define GPTOSS_MODEL_CUDA_OPS_H

#ifdef __cplusplus
extern "C" {
#endif
#include "core/cuda_rt.h"
#include "model/model.h"

#if GPTOSS_HAVE_CUDA

// ---------------------------------------------------------------------------------------------------
// elementwise.cu: casts, bias, residual, embedding.
void cuda_cast_bf16(uint16_t *out, const float *in, size_t n);
void cuda_add_bias(float *y, const float *b, int M, int N);            // y (M, N) += b (N) per row
void cuda_add(float *y, const float *a, const float *b, size_t n);     // y = a + b (y may alias a or b)
void cuda_embed(float *h, const uint16_t *embed, const int32_t *ids, int T, int D); // h (T, D) = embed[ids]

// ---------------------------------------------------------------------------------------------------
// dequant.cu: 4-bit expert weights into a bf16 scratch (exact for MXFP4; NF4 rounds map*absmax to bf16).
// MXFP4: blocks (rows, cols/32, 16), scales (rows, cols/32) -> out (rows, cols).
void cuda_mxfp4_dequant(uint16_t *out, const uint8_t *blocks, const uint8_t *scales, int rows, int cols);
// NF4: elements [0, n) of one flattened tensor; qmap (16) on the device.
void cuda_nf4_dequant(uint16_t *out, const uint8_t *packed, const float *absmax, const float *qmap, int blocksize,
                      int64_t n);

// One layer's E experts of one projection, on the device; every expert (rows, cols), y = W x.
// moe.cu decodes them inside its GEMM tiles; MXFP4 needs cols % 32 == 0 (the format's blocks).
typedef struct cuda_experts {
    wformat fmt;           // WF_MXFP4, WF_NF4 or WF_BF16 (fp32 experts are uploaded as bf16)
    int E, rows, cols;
    const uint8_t *blocks; // MXFP4: (E, rows, cols/32, 16); NF4: (E, nf4_bytes)
    const uint8_t *scales; // MXFP4: (E, rows, cols/32)
    const float *absmax;   // NF4: (E, nf4_blocks)
    const float *qmap;     // NF4: (E, 16)
    int blocksize;         // NF4
    size_t nf4_bytes, nf4_blocks; // NF4: per expert, ceil(rows*cols/2) and ceil(rows*cols/blocksize)
    const uint16_t *bf16;  // WF_BF16: (E, rows, cols)
} cuda_experts;

// ---------------------------------------------------------------------------------------------------
// rmsnorm.cu (model/cpu/rmsnorm.c): y = w * (x * rstd); ybf (bf16 copy of y) may be NULL.
void cuda_rmsnorm_forward(float *y, uint16_t *ybf, float *rstd, const float *x, const float *w, int T, int D,
                          float eps);
// dx (T, D) += d/dx of sum(dy * y).
void cuda_rmsnorm_backward(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int T,
                           int D);

// ---------------------------------------------------------------------------------------------------
// rope.cu (model/cpu/rope.c): tables cos, sin (T, HD/2) = f((float)pos * inv_freq) * factor; inv_freq
// (HD/2) comes from cpu_rope_inv_freq. x (T, NH, HD) rotated in place; backward rotates back.
void cuda_rope_tables(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, float factor, int T,
                      int half);
void cuda_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD);
void cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int NH, int HD);

// ---------------------------------------------------------------------------------------------------
// attention.cu (model/cpu/attention.c): flash-style GQA with sinks, causal window and documents; no
// (T, T) matrix. doc_lo/doc_hi (T): first index of t's document and one past its last (cuda_doc_bounds).
void cuda_doc_bounds(int32_t *doc_lo, int32_t *doc_hi, const int32_t *doc, int T);
// out (T, H, HD); stat_max, stat_den (T, H) as the CPU keeps them. HD <= 128.
void cuda_attention_forward(float *out, float *stat_max, float *stat_den, const float *q, const float *k,
                            const float *v, const float *sinks, const int32_t *doc_lo, cpu_attn_dims d);
// dq (T, H, HD), dk, dv (T, KVH, HD) overwritten; Dt (T, H) scratch.
void cuda_attention_backward(float *dq, float *dk, float *dv, float *Dt, const float *dout, const float *out,
                             const float *q, const float *k, const float *v, const int32_t *doc_lo,
                             const int32_t *doc_hi, const float *stat_max, const float *stat_den, cpu_attn_dims d);

// ---------------------------------------------------------------------------------------------------
// router.cu (model/cpu/router.c). K <= 16.
void cuda_router_forward(int32_t *sel, float *w, const float *logits, int T, int E, int K);
void cuda_router_backward(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E, int K);

// ---------------------------------------------------------------------------------------------------
// swiglu.cu (model/cpu/swiglu.c) on n elements; act_bf (bf16 copy of act) may be NULL.
void cuda_swiglu_forward(float *act, uint16_t *act_bf, const float *gate, const float *up, size_t n, float limit,
                         float alpha);
// dgate may alias dact.
void cuda_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n,
                          float limit, float alpha);
// gu (n, 2I) interleaved (2i gate, 2i+1 up) -> gate, up (n, I); and back, as bf16.
void cuda_deinterleave(float *gate, float *up, const float *gu, size_t nI);
void cuda_interleave_bf16(uint16_t *gu, const float *gate, const float *up, size_t nI);

// ---------------------------------------------------------------------------------------------------
// lora.cu: THE LoRA funnel on the GPU (model/cpu/lora.c), fp32 GEMMs; p holds device pointers.
void cuda_lora_forward(float *y, float *z, const float *x, const lora_pair *p, int M, int in, int out, int R,
                       float scale);
void cuda_lora_backward(float *dx, float *dz, const float *dy, const float *x, const float *z, const lora_pair *p,
                        int M, int in, int out, int R, float scale);

// ---------------------------------------------------------------------------------------------------
// loss.cu (model/cpu/loss.c): LM head + cross-entropy over V in chunks of CUDA_CE_CHUNK logits.
#define CUDA_CE_CHUNK 8192
typedef struct cuda_ce_scratch {
    float *logits;   // (T, CUDA_CE_CHUNK)
    uint16_t *dl;    // (T, CUDA_CE_CHUNK) logit gradients as bf16
    float *mx, *tl;  // (T) running max, target logit
    double *sum;     // (T) running sum of exp(l - mx)
} cuda_ce_scratch;
// h (T, D) final-normed hidden state as bf16, w (V, D) bf16. loss (T): 0 where targets < 0.
void cuda_ce_forward(double *lse, float *loss, const uint16_t *h, const uint16_t *w, const int32_t *targets, int T,
                     int D, int V, cuda_ce_scratch *s);
// dh (T, D) = g * d/dh sum(loss) (overwritten).
void cuda_ce_backward(float *dh, const uint16_t *h, const uint16_t *w, const int32_t *targets, const double *lse,
                      int T, int D, int V, float g, cuda_ce_scratch *s);
// *out (one double on the device) = sum of loss[t] over t with targets[t] >= 0, in order.
void cuda_loss_sum(double *out, const float *loss, const int32_t *targets, int T);

// ---------------------------------------------------------------------------------------------------
// moe.cu (model/cpu/moe.c): one layer's experts over the S slots sorted by expert, as grouped GEMMs that
// read each expert's rows from the device (no host synchronisation).
typedef struct cuda_moe_weights {
    cuda_experts gate_up; // (2I, D) each, rows interleaved gate/up
    cuda_experts down;    // (D, I) each
    const float *gate_up_b; // (E, 2I)
    const float *down_b;    // (E, D)
} cuda_moe_weights;

// Expert LoRA: per target a device array [E] of lora_pair (device pointers), NULL when the target is off.
// gate and up may share A and dA (PEFT's joint gate_up adapter): the backward adds gate's dA first.
typedef struct cuda_moe_lora {
    const lora_pair *gate, *up, *down;
    int R;
    float scale;
} cuda_moe_lora;

#define CUDA_MOE_TILE_M 64 // slot rows per GEMM tile
// Row tiles over S slots and E experts, at most: sum over experts of ceil(n_e / CUDA_MOE_TILE_M).
int cuda_moe_max_tiles(int S, int E);

typedef struct cuda_moe_acts { // kept for the backward
    int32_t *off;            // (E+1) first slot of each expert
    int32_t *tiles;          // (2 * cuda_moe_max_tiles(S, E)) per row tile: expert (-1: unused), first slot
    int32_t *tok;            // (S) token of each slot
    int32_t *kof;            // (S) choice k of each slot
    int32_t *slot;           // (T, K) slot of each (token, choice)
    float *gate, *up, *act;  // (S, I)
    float *zg, *zu, *zd;     // (S, R)
    float *y;                // (S, D) expert output before the routing weight
} cuda_moe_acts;

typedef struct cuda_moe_scratch { // backward only
    float *dact;          // (S, I) d act, then d gate in place
    float *dup;           // (S, I)
    float *dz;            // (S, R)
    float *dxs;           // (S, D) d y, then d x per slot
} cuda_moe_scratch;

// lora: NULL for no LoRA on the experts.
void cuda_moe_forward(float *out, const float *res, const float *x, const int32_t *sel, const float *w,
                      const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                      cuda_moe_acts *a);
void cuda_moe_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                       const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                       const cuda_moe_acts *a, cuda_moe_scratch *s);

#endif
#ifdef __cplusplus
}
#endif
#endif
