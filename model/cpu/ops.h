// model/cpu/ops.h: helpers shared by the CPU op files (private to model/; the ops themselves are declared
// in model/model.h). Dimension legend as in model.h.
#ifndef GPTOSS_MODEL_CPU_OPS_H
#define GPTOSS_MODEL_CPU_OPS_H

#include "model/model.h"

// Loops with fewer multiply-adds than this run on one thread (a fork/join costs more). Threads never
// change a result: every output element is reduced by one thread in a fixed order either way.
#define CPU_PAR_MIN 32768

// fp32 dot product in 8 lanes summed pairwise, then the tail: a fixed order, vectorizable.
static inline float cpu_dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[k + l] * b[k + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; k < n; k++) s += a[k] * b[k];
    return s;
}

// Two-pass bump allocation of a workspace (forward.c, decode.c): with base == NULL take() only counts
// (offsets aligned to 64 bytes); then base = malloc(used), used = 0 and the same layout takes again.
typedef struct cpu_arena {
    char *base;
    size_t used;
} cpu_arena;

static inline void *cpu_arena_take(cpu_arena *a, size_t n, size_t elem) {
    size_t off = (a->used + 63) & ~(size_t)63;
    a->used = off + n * elem;
    return a->base ? a->base + off : NULL;
}
static inline float *cpu_take_f(cpu_arena *a, size_t n) { return (float *)cpu_arena_take(a, n, sizeof(float)); }
static inline int32_t *cpu_take_i(cpu_arena *a, size_t n) { return (int32_t *)cpu_arena_take(a, n, sizeof(int32_t)); }

// The active LoRA pair of (layer, target, expert) or NULL: off in lora->targets, no adapter, or no A.
static inline const lora_pair *cpu_lora_pick(const model_lora *lora, int layer, lora_target t, int e) {
    if (!lora || !lora->layers || !(lora->targets & (1u << t))) return NULL;
    const lora_layer *ll = &lora->layers[layer];
    const lora_pair *p = NULL;
    switch (t) {
    case LT_Q: p = &ll->q; break;
    case LT_K: p = &ll->k; break;
    case LT_V: p = &ll->v; break;
    case LT_O: p = &ll->o; break;
    case LT_GATE: p = ll->gate ? &ll->gate[e] : NULL; break;
    case LT_UP: p = ll->up ? &ll->up[e] : NULL; break;
    case LT_DOWN: p = ll->down ? &ll->down[e] : NULL; break;
    default: break;
    }
    return p && p->A ? p : NULL;
}

// ---------------------------------------------------------------------------------------------------
// moe.c: one layer's experts over "slots", the (token, choice) pairs sorted by expert then token, so
// that each expert's rows are contiguous. S = T*K slots; no expert gets more than T of them.
typedef struct cpu_moe_acts {  // kept for the backward
    int32_t *off;              // (E+1) first slot of each expert
    int32_t *tok;              // (S) token of each slot
    int32_t *slot;             // (T, K) slot of each (token, choice)
    float *gate, *up;          // (S, I) after bias and LoRA, before the clamps
    float *act;                // (S, I) SwiGLU output
    float *zg, *zu, *zd;       // (S, R) LoRA A x of gate, up, down
    float *y;                  // (S, D) expert output before the routing weight
} cpu_moe_acts;
// Takes a's buffers for S slots from the arena.
void cpu_moe_acts_take(cpu_moe_acts *a, cpu_arena *ar, size_t S, size_t E, size_t I, size_t R, size_t D);

typedef struct cpu_moe_scratch {
    float *xs;                 // (T, D) one expert's gathered inputs
    float *gu;                 // (T, 2I) one expert's interleaved gate_up (its gradient in backward)
    float *dy;                 // (T, D) one expert's output gradient
    float *dact, *dgate, *dup; // (T, I)
    float *dz;                 // (T, R)
    float *dxs;                // (S, D) input gradient of every slot
    float *wbuf;               // (2I * D) a dequantized expert weight
} cpu_moe_scratch;

// out (T, D) = res + sum over the token's experts, in increasing expert index (HF's index_add_ order),
// of w * expert(x). x (T, D) is the MLP-normed input, sel and w (T, K) the router's choice.
void cpu_moe_forward(float *out, const float *res, const float *x, const int32_t *sel, const float *w,
                     const model *m, const model_lora *lora, int layer, int T, cpu_moe_acts *a,
                     cpu_moe_scratch *s);
// From dout (T, D): dx (T, D) = the experts' input gradient (overwritten), dw (T, K) = the routing
// weights' gradient; LoRA dA/dB of the layer's experts +=.
void cpu_moe_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, const model *m,
                      const model_lora *lora, int layer, int T, const cpu_moe_acts *a, cpu_moe_scratch *s);

#endif
