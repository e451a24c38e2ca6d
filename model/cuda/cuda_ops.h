// model/cuda/cuda_ops.h: the CUDA ops of the GPT-OSS training step, one .cu file each with forward and
// backward together (private to model/; tests/test_gpu_*.c include it to check every op against its CPU
// twin in model/cpu/). Plain C declarations: the .cu files define them with C linkage.
//
// Dimension legend as in model/model.h: T tokens, D hidden, H heads, KVH kv heads, HD head dim,
// E experts, K per token, I intermediate, R LoRA rank, V vocab, S = T*K expert slots.
// Every pointer is device memory unless it says "host". Storage: activations bf16 (uint16_t bits, round
// to nearest even: every tensor a step keeps, from the residual stream to the experts' SwiGLU), the
// activation gradients, the loss and softmax statistics fp32, base weights bf16 or 4-bit, LoRA fp32.
// Arithmetic is fp32 throughout (fp32 accumulation; sums of squares and the loss in double): a kernel reads
// bf16, computes in fp32 registers and rounds once when it stores an activation. fp32 "scratch" below is
// work space that no later op reads as an activation.
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
// elementwise.cu: cast, bias, residual. (The embedding rows are gathered on the host: model.cu.)
void cuda_cast_bf16(uint16_t *out, const float *in, size_t n);
void cuda_add_bias(float *y, const float *b, int M, int N);            // y (M, N) += b (N) per row
// The residual add: y = bf16(x + f) (y may alias x).
void cuda_residual(uint16_t *y, const uint16_t *x, const float *f, size_t n);

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
// rmsnorm.cu (model/cpu/rmsnorm.c): y = bf16(w * (x * rstd)), rstd fp32.
void cuda_rmsnorm_forward(uint16_t *y, float *rstd, const uint16_t *x, const float *w, int T, int D, float eps);
// dx (T, D) += d/dx of sum(dy * y) (with the x and rstd of the forward).
void cuda_rmsnorm_backward(float *dx, const float *dy, const uint16_t *x, const float *w, const float *rstd, int T,
                           int D);

// ---------------------------------------------------------------------------------------------------
// rope.cu (model/cpu/rope.c): tables cos, sin (T, HD/2) = f((float)pos * inv_freq) * factor; inv_freq
// (HD/2) comes from cpu_rope_inv_freq. Forward: out = bf16(rotate(x)), x (T, NH, HD) the projection's fp32
// result (unchanged); backward: the gradient dx (fp32) rotated back in place.
void cuda_rope_tables(float *cos_t, float *sin_t, const int32_t *pos, const float *inv_freq, float factor, int T,
                      int half);
void cuda_rope_forward(uint16_t *out, const float *x, const float *cos_t, const float *sin_t, int T, int NH, int HD);
void cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int NH, int HD);

// ---------------------------------------------------------------------------------------------------
// attention.cu (model/cpu/attention.c): flash-style GQA with sinks, causal window and documents; no
// (T, T) matrix. doc_lo/doc_hi (T): first index of t's document and one past its last (cuda_doc_bounds).
void cuda_doc_bounds(int32_t *doc_lo, int32_t *doc_hi, const int32_t *doc, int T);
// q (T, H, HD), k, v (T, KVH, HD) bf16; out (T, H, HD) bf16 (the fp32 result rounded once); stat_max,
// stat_den (T, H) fp32 as the CPU keeps them. HD <= 128.
void cuda_attention_forward(uint16_t *out, float *stat_max, float *stat_den, const uint16_t *q, const uint16_t *k,
                            const uint16_t *v, const float *sinks, const int32_t *doc_lo, cpu_attn_dims d);
// dq (T, H, HD), dk, dv (T, KVH, HD) fp32, overwritten; Dt (T, H) scratch; dout fp32.
void cuda_attention_backward(float *dq, float *dk, float *dv, float *Dt, const float *dout, const uint16_t *out,
                             const uint16_t *q, const uint16_t *k, const uint16_t *v, const int32_t *doc_lo,
                             const int32_t *doc_hi, const float *stat_max, const float *stat_den, cpu_attn_dims d);

// ---------------------------------------------------------------------------------------------------
// router.cu (model/cpu/router.c). K <= 16.
void cuda_router_forward(int32_t *sel, float *w, const float *logits, int T, int E, int K);
void cuda_router_backward(float *dlogits, const float *dw, const float *w, const int32_t *sel, int T, int E, int K);

// ---------------------------------------------------------------------------------------------------
// swiglu.cu (model/cpu/swiglu.c) on n elements. Forward from the fp32 GEMM results gate, up (scratch):
// gate_bf, up_bf = their bf16 roundings (kept for the backward) and act = bf16(swiglu(gate_bf, up_bf)), so
// that forward and backward see the same inputs.
void cuda_swiglu_forward(uint16_t *act, uint16_t *gate_bf, uint16_t *up_bf, const float *gate, const float *up,
                         size_t n, float limit, float alpha);
// dgate may alias dact.
void cuda_swiglu_backward(float *dgate, float *dup, const float *dact, const uint16_t *gate, const uint16_t *up,
                          size_t n, float limit, float alpha);

// ---------------------------------------------------------------------------------------------------
// lora.cu: THE LoRA funnel on the GPU (model/cpu/lora.c), fp32 arithmetic, deterministic; p holds device
// pointers; x is the projection's bf16 input.
void cuda_lora_forward(float *y, float *z, const uint16_t *x, const lora_pair *p, int M, int in, int out, int R,
                       float scale);
void cuda_lora_backward(float *dx, float *dz, const float *dy, const uint16_t *x, const float *z, const lora_pair *p,
                        int M, int in, int out, int R, float scale);
// The funnel's z = x P^T kernel on one plain fp32 matrix W (N, K) with N small (the router's logits, N = E),
// fp32 arithmetic in a fixed order: z (M, N) = x W^T with x (M, K) bf16 (overwritten).
void cuda_narrow_xwt(float *z, const uint16_t *x, const float *W, int M, int K, int N);

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
// *out (one double on the device) += sum of loss[t] over t with targets[t] >= 0, in a fixed order.
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

#define CUDA_MOE_TILE_M 128 // slot rows per GEMM tile (moe_gemm.cu's tile height)
// Row tiles over S slots and E experts, at most: sum over experts of ceil(n_e / CUDA_MOE_TILE_M).
int cuda_moe_max_tiles(int S, int E);

// moe_gemm.cu: the experts' grouped GEMM over the slot rows (sorted by expert; off (E+1) and the tile map
// tiles from moe.cu's plan). Rows of expert e: C = A W_e^T (wt 1, W_e (N, Kd)) or C = A W_e (wt 0, W_e (Kd, N)).
// A element (r, k): a0[row * lda + k], row = arow ? arow[r] : r; or, when a1, the interleaving of a0 (even k)
// and a1 (odd k) at column k/2; bf16 bits when a_bf16, else fp32 (rounded to bf16 for the tensor cores).
// C (fp32): c0[r * ldc + n] = acc + bias[e * N + n] (bias may be NULL); or, when c1, even n into c0 and odd n
// into c1 at column n/2.
typedef struct cuda_moe_gemm_args {
    const void *a0, *a1;
    int a_bf16;
    const int32_t *arow;
    int lda;
    cuda_experts w;
    int wt;
    float *c0, *c1;
    int ldc;
    const float *bias;
    int N, Kd;
    const int32_t *tiles, *off;
} cuda_moe_gemm_args;
void cuda_moe_gemm(const cuda_moe_gemm_args *g, int S, int E);

// lora.cu: the funnel on the experts' S slot rows (sorted by expert, off (E+1)); pairs: device array [E] of
// device lora_pair; x (the projection's bf16 input) row r at xrow[r] (NULL: r); z, dz (S, R) fp32.
void cuda_lora_experts_forward(float *y, float *z, const uint16_t *x, const int32_t *xrow, const lora_pair *pairs,
                               const int32_t *off, int S, int E, int in, int out, int R, float scale);
void cuda_lora_experts_backward(float *dx, float *dz, const float *dy, const uint16_t *x, const int32_t *xrow,
                                const float *z, const lora_pair *pairs, const int32_t *off, int S, int E, int in,
                                int out, int R, float scale);

typedef struct cuda_moe_acts { // kept for the backward
    int32_t *off;            // (E+1) first slot of each expert
    int32_t *tiles;          // (2 * cuda_moe_max_tiles(S, E)) per row tile: expert (-1: unused), first slot
    int32_t *tok;            // (S) token of each slot
    int32_t *kof;            // (S) choice k of each slot
    int32_t *slot;           // (T, K) slot of each (token, choice)
    uint16_t *gate, *up, *act; // (S, I) bf16: gate and up (GEMM + LoRA, rounded), swiglu of those
    float *zg, *zu, *zd;     // (S, R) fp32 LoRA intermediates
    uint16_t *y;             // (S, D) bf16 expert output before the routing weight (GEMM + LoRA, rounded)
} cuda_moe_acts;

// The plan alone (cuda_moe_forward runs it first): a->off, tiles, tok, kof, slot from sel (T, K) on the
// device, model/cpu/moe.c's counting sort exactly (slots by expert, tokens ascending within one). E <= 1024.
void cuda_moe_plan(cuda_moe_acts *a, const int32_t *sel, int T, int E, int K);

typedef struct cuda_moe_scratch { // fp32 work space of the forward and the backward
    float *dact;          // (S, I) forward: gate (fp32, before rounding); backward: d act, then d gate in place
    float *dup;           // (S, I) forward: up; backward: d up
    float *dz;            // (S, R)
    float *dxs;           // (S, D) forward: y; backward: d y, then d x per slot
} cuda_moe_scratch;

// out (T, D) = bf16(res + sum over the token's slots of w * y) with x, res and out bf16 (out may alias
// res); lora: NULL for no LoRA on the experts.
void cuda_moe_forward(uint16_t *out, const uint16_t *res, const uint16_t *x, const int32_t *sel, const float *w,
                      const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                      cuda_moe_acts *a, cuda_moe_scratch *s);
// dx (T, D) fp32 overwritten, dw (T, K) fp32; dout fp32; x the forward's bf16 input.
void cuda_moe_backward(float *dx, float *dw, const float *dout, const uint16_t *x, const float *w,
                       const cuda_moe_weights *W, const model_config *c, const cuda_moe_lora *lora, int T,
                       const cuda_moe_acts *a, cuda_moe_scratch *s);

#endif
#ifdef __cplusplus
}
#endif
#endif
