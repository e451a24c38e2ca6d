// lora: LoRA adapters for GPT-OSS — allocation in two contiguous arenas, PEFT's initialisation, and
// import/export in PEFT's format (adapter_config.json + adapter_model.safetensors).
//
// The one door of lora/. Other folders include only this header. The forward/backward reads the
// adapter through lora_adapter.ml (model_lora in model/model.h); the LoRA funnel itself is
// cpu_lora_forward/backward in model/cpu/lora.c.
//
// Dimension legend: D hidden, H heads, KVH kv heads, HD head dim, E experts, I intermediate, R rank.
//
// Invariants:
//   - every A and B lives in `params` (n_params floats), every dA and dB at the same offset in `grads`;
//     `segs` cuts both arenas into one segment per tensor as PEFT stores it (so an optimizer working per
//     tensor sees PEFT's tensor sizes), in a fixed order: layer by layer q, k, v, o, gate_up, down.
//   - gate and up of one expert: when both are targeted they SHARE one A (gate[e].A == up[e].A, and
//     dA likewise) — PEFT's adapter on the joint gate_up_proj parameter has one A per expert over the
//     interleaved gate/up rows, so sharing is what makes import exact for the forward AND the gradient
//     (the backward's dA += from gate and from up sum into the one buffer, as autograd sums them in
//     PEFT). B stays per half: gate[e].B = the even rows of PEFT's B_e, up[e].B the odd rows.
//   - a targeted projection has an adapter in every layer and (experts) for every expert.
//   - PEFT's expert layout (peft/tuners/lora/layer.py ParamWrapper, checked in model/NOTES.md "LoRA"):
//     lora_A [E*R, in] with expert-major rows (row e*R + k), lora_B [out, E*R] with RANK-major columns
//     (column k*E + e); the delta of expert e is scale * B_e A_e with B_e[:, k] = lora_B[:, k*E + e].
#ifndef GPTOSS_LORA_H
#define GPTOSS_LORA_H

#include "core/core.h"
#include "model/model.h"

// What to adapt and how (one rank and alpha for every target).
typedef struct lora_spec {
    int rank;          // R >= 1
    double alpha;      // lora_alpha
    int use_rslora;    // scale alpha / sqrt(R) instead of alpha / R
    unsigned targets;  // bit (1u << lora_target) per target; at least one
} lora_spec;

// One tensor of the arenas (PEFT's tensor granularity). name: "layers.L.<module>.lora_A|lora_B".
typedef struct lora_segment {
    char *name;
    size_t offset; // into params and grads
    size_t n;      // elements
} lora_segment;

typedef struct lora_adapter {
    model_lora ml;        // what the forward reads (pointers into the arenas)
    lora_spec spec;
    int n_layers, n_experts;
    int d_model, d_q, d_kv, d_inter; // D, H*HD, KVH*HD, I of the base it was made for
    float *params;        // (n_params) every A and B
    float *grads;         // (n_params) every dA and dB, same layout
    size_t n_params;
    lora_segment *segs;   // [n_segs]
    int n_segs;
    lora_pair *expert_pairs; // [n_layers * 3 * E] storage of ml.layers[L].gate/up/down
} lora_adapter;

// "q_proj" ... "down_proj" (PEFT's module names; gate and up are our halves of gate_up_proj).
const char *lora_target_name(lora_target t);
// Names ("q_proj", ..., "down_proj", or "all") -> bitmask. An unknown name is an error listing the valid
// ones and suggesting the nearest.
gt_status lora_targets_parse(const char *const *names, int n, unsigned *targets, gt_error *err);
// alpha / R, or alpha / sqrt(R) with rslora (as PEFT computes it, in double, then rounded to float).
float lora_spec_scale(const lora_spec *s);

// Allocates the adapter for a base with config cfg and initialises it as PEFT does (init_lora_weights
// = True): every A uniform in [-1/sqrt(in), 1/sqrt(in)] (torch's kaiming_uniform_(a=sqrt(5)) bound,
// fan_in = in), every B zero, grads zero. The values are a function of (seed, layer, tensor) only: the
// same seed gives the same A for a target whatever else is targeted, on any machine.
gt_status lora_adapter_init(lora_adapter *la, const model_config *cfg, const lora_spec *spec, uint64_t seed,
                            gt_error *err);
void lora_adapter_free(lora_adapter *la);
void lora_adapter_grads_zero(lora_adapter *la);

// PEFT import: reads DIR/adapter_config.json and DIR/adapter_model.safetensors into a new adapter for a
// base with config cfg (la is initialised here; free it with lora_adapter_free). Exact: the forward and
// the gradients equal PEFT's on the same base. Errors name the file and the key: an adapter for another
// base (a missing or extra key, a layer the model lacks, a wrong shape), features gptoss does not
// support (DoRA, lora bias, modules_to_save, per-module ranks, targets other than the seven).
gt_status lora_peft_load(lora_adapter *la, const model_config *cfg, const char *dir, gt_error *err);
// Reads PEFT-keyed tensors (as in adapter_model.safetensors) from path into an existing adapter:
// into its A/B (into_grads 0) or its dA/dB (into_grads 1, for comparing with reference gradients).
// Every tensor of the adapter must be present with its exact shape and no other tensor.
gt_status lora_peft_read_tensors(lora_adapter *la, const char *path, int into_grads, gt_error *err);
// PEFT export: DIR/adapter_config.json and DIR/adapter_model.safetensors (fp32), written atomically;
// DIR is created. base_model may be NULL (written as null). PEFT (>= 0.17, target_parameters) loads it
// onto HF's GptOssForCausalLM. When only one of gate/up is targeted the joint gate_up adapter is written
// with the other half's B rows zero: the same forward, but a re-import targets both halves.
gt_status lora_peft_save(const lora_adapter *la, const char *dir, const char *base_model, gt_error *err);

// ---------------------------------------------------------------------------------------------------
// Merge (lora/merge.c): folds an adapter into a loaded model, W += scale * (B A) for every targeted
// projection, as PEFT's merge_and_unload does (delta = (B @ A) * scaling).
//   - q, k, v, o: the model's fp32 weights, in place.
//   - experts: every expert weight is dequantized to fp32, gets its delta (gate: even rows of gate_up,
//     up: odd rows, down), and is stored as expert_fmt: WF_F32 (exact up to fp32 rounding), WF_BF16
//     (kept 16-bit: the sum rounded to bf16), or WF_MXFP4 / WF_NF4 (requantized: the delta is partly lost
//     to 4-bit rounding). Untargeted experts already in expert_fmt are left as they are; others convert.
//     The new storage is owned by the model (model_free frees it); m->expert_format becomes expert_fmt.
// The adapter must have been made for this model's shapes (else GT_EINVAL naming the mismatch).
// After merging, run the model with lora = NULL.
gt_status lora_merge(model *m, const lora_adapter *la, wformat expert_fmt, gt_error *err);

#endif
