// optim: AdamW with fp32 states (torch.optim.AdamW), 8-bit AdamW (bitsandbytes AdamW8bit), learning-rate
// schedules (HF transformers' get_scheduler) and gradient clipping (torch clip_grad_norm_). CPU, fp32.
//
// The one door of optim/. Other folders include only this header.
//
// The optimizer sees the trainable parameters as a flat list of segments: one (param, grad, n) view per
// LoRA tensor, pointing into the caller's contiguous arenas. Pass one segment per tensor (not one per
// arena): bitsandbytes works per tensor, so its 256-value quantization blocks start at each tensor's
// first element and its 4096-element threshold for 8-bit states is per tensor. All optimizer state is
// sized at optim_init and lives in one arena; optim_step allocates nothing.
//
// Invariants:
//   - opt->step counts the optimizer steps taken; optim_step(opt, lr) makes it step+1 and uses that
//     number in the bias corrections (torch and bitsandbytes both count from 1);
//   - the serialized state (optim_serialize) is the step counter, the segment sizes and the moments,
//     little-endian host order; optim_deserialize checks every size against this optimizer.
#ifndef GPTOSS_OPTIM_H
#define GPTOSS_OPTIM_H

#include "core/core.h"

// ---------------------------------------------------------------------------------------------------
// Optimizers (optim/adamw.c: the optimizer object and fp32 AdamW; optim/adamw8.c: the 8-bit kernels)

typedef enum optim_kind {
    OPTIM_ADAMW,      // "adamw_torch": torch.optim.AdamW (foreach=False), fp32 moments
    OPTIM_ADAMW_8BIT, // "adamw_8bit": bitsandbytes AdamW8bit (its CUDA kernels' arithmetic)
} optim_kind;

typedef struct optim_segment {
    float *param;      // (n,) updated in place by optim_step
    float *grad;       // (n,) read by optim_step; scaled in place by optim_grad_clip
    size_t n;
} optim_segment;

typedef struct optim_config {
    optim_kind kind;
    double beta1, beta2, eps, weight_decay; // torch uses them as doubles, bitsandbytes as floats
    size_t min_8bit_size; // ADAMW_8BIT: tensors with fewer elements keep fp32 states (OPTIM_MIN_8BIT_SIZE)
} optim_config;

#define OPTIM_MIN_8BIT_SIZE 4096 // bitsandbytes' default min_8bit_size

// How one segment's moments are stored.
typedef enum optim_state_mode {
    OPTIM_STATE_F32,  // m, v fp32 (n each)
    OPTIM_STATE_8BIT, // m, v one byte each (n each) + one fp32 absmax per 256-value block for each
} optim_state_mode;

#define OPTIM_8BIT_BLOCK 256 // values per quantization block (bitsandbytes' blockwise optimizers)

typedef struct optim_seg_state {
    optim_state_mode mode;
    float *m, *v;             // F32: (n,) first and second moments
    uint8_t *m8, *v8;         // 8BIT: (n,) codes into the signed / unsigned dynamic map
    float *absmax1, *absmax2; // 8BIT: (ceil(n / 256),) per-block scales of m and v
} optim_seg_state;

typedef struct optim {
    optim_config cfg;
    int n_seg;
    optim_segment *seg;     // [n_seg] the caller's views (copied at init)
    optim_seg_state *state; // [n_seg] pointers into arena
    int64_t step;           // optimizer steps taken
    uint8_t *arena;         // every moment and absmax, zeroed at init (bnb and torch start from zeros)
    size_t arena_bytes;
    float qmap1[256], qmap2[256]; // ADAMW_8BIT: signed and unsigned dynamic maps (optim_dynamic_map)
} optim;

// Validates the config (0 <= beta < 1, eps >= 0, weight_decay >= 0, finite) and sizes and zeroes the
// state. segs may point into arenas; they must stay valid for the optimizer's life.
gt_status optim_init(optim *opt, const optim_config *cfg, const optim_segment *segs, int n_seg, gt_error *err);
void optim_free(optim *opt);
// Bytes of optimizer state (moments and absmax), to print at start-up.
size_t optim_state_bytes(const optim *opt);
// One update of every segment with learning rate lr: step += 1 first. Gradients are read as they are
// (clip them first). ADAMW: NaN/Inf gradients propagate, as in torch. ADAMW_8BIT, 8-bit segments:
// elements with a non-finite gradient keep their parameter and get zero moments, as bnb's kernel does.
void optim_step(optim *opt, double lr);

// Checkpoint state: plain bytes, optim_serialized_size(opt) long, for the caller to wrap in its file
// (magic, version). deserialize fails with a message naming the mismatch when the blob was written by
// an optimizer of another kind or other segment sizes (a changed LoRA config), or is truncated.
size_t optim_serialized_size(const optim *opt);
void optim_serialize(const optim *opt, void *buf);
gt_status optim_deserialize(optim *opt, const void *buf, size_t len, gt_error *err);

// fp32 AdamW update of one segment (torch.optim.AdamW's _single_tensor_adam arithmetic), for `step`
// (>= 1, already counted) and learning rate lr. m, v: (n,) updated in place.
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, const optim_config *cfg,
                  int64_t step, double lr);

// bitsandbytes' quantization map create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): 256
// ascending values in [-1, 1] (signed) or [0, 1] (unsigned), bit-identical to the one bnb builds.
void optim_dynamic_map(float map[256], int is_signed);
// bnb's blockwise quantizer (quantize_2D): the code of the map value nearest to x, found by bnb's
// binary search (its tie rule included). x is a value already divided by the block's absmax.
uint8_t optim_quantize(const float map[256], int is_signed, float x);
// One bnb AdamW8bit step of one tensor with 8-bit states (kOptimizerStatic8bit2StateBlockwise): per
// 256-value block dequantize m and v, update them, update the parameters, take the new absmax over the
// block, quantize with qmap1 (signed, m) and qmap2 (unsigned, v). m8, v8: (n,); absmax1, absmax2:
// (ceil(n/256),), all updated in place.
void adamw8_update_blockwise(float *param, const float *grad, uint8_t *m8, uint8_t *v8, float *absmax1,
                             float *absmax2, size_t n, const float qmap1[256], const float qmap2[256],
                             const optim_config *cfg, int64_t step, double lr);
// The fp32-state step bnb AdamW8bit takes for tensors under min_8bit_size (kOptimizer32bit2State, adam).
void adamw8_update_f32(float *param, const float *grad, float *m, float *v, size_t n, const optim_config *cfg,
                       int64_t step, double lr);

// ---------------------------------------------------------------------------------------------------
// Learning-rate schedules (optim/schedule.c): HF transformers' LambdaLR factories, lr = lr0 * f(step).
//   constant       get_constant_schedule_with_warmup (no warmup: get_constant_schedule)
//   linear         get_linear_schedule_with_warmup
//   cosine         get_cosine_schedule_with_warmup (num_cycles 0.5)
//   cosine_min_lr  get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate; num_cycles 0.5)
typedef enum sched_kind { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE, SCHED_COSINE_MIN_LR } sched_kind;

typedef struct sched {
    sched_kind kind;
    double lr;            // peak learning rate (the optimizer's initial lr in HF)
    int64_t total_steps;  // num_training_steps
    int64_t warmup_steps; // resolved
    double min_lr_rate;   // cosine_min_lr: min_lr / lr
} sched;

// Warmup as HF TrainingArguments.get_warmup_steps: warmup_steps when > 0, else ceil(total * warmup_ratio).
int64_t sched_warmup_steps(int64_t total_steps, int64_t warmup_steps, double warmup_ratio);
// Validates lr > 0, total_steps >= 1, 0 <= warmup_steps, 0 <= min_lr_rate <= 1 (all finite).
gt_status sched_init(sched *s, sched_kind kind, double lr, int64_t total_steps, int64_t warmup_steps,
                     double min_lr_rate, gt_error *err);
// The learning rate of the optimizer step that follows `step` completed steps (HF: the lr in the
// optimizer after `step` calls of scheduler.step(); step 0 of a warmup is 0).
double sched_lr(const sched *s, int64_t step);

// ---------------------------------------------------------------------------------------------------
// Gradient clipping (optim/clip.c), torch.nn.utils.clip_grad_norm_ semantics over all segments together.

// Global L2 norm of every gradient, accumulated in double in segment order (deterministic). +Inf or NaN
// when a gradient is non-finite.
double optim_grad_norm(const optim_segment *segs, int n_seg);
// Returns the pre-clip global norm. When it is finite and max_norm > 0, scales every gradient by
// min(1, max_norm / (norm + 1e-6)) (torch's coefficient); a non-finite norm leaves the gradients as they
// are for the caller to skip the step (torch would scale them by NaN).
double optim_grad_clip(const optim_segment *segs, int n_seg, double max_norm);

// ---------------------------------------------------------------------------------------------------
// CUDA (optim/cuda/; only in builds with GPTOSS_HAVE_CUDA = 1): the same optimizer, clipping and norm on
// the GPU, bit-identical to the CPU step (tests/test_gpu_optim.c). The parameters and gradients live in
// device arenas that mirror the host arenas the host optimizer's segments point into; the state lives
// on the device in the host optimizer's arena layout.
#if GPTOSS_HAVE_CUDA
typedef struct optim_cuda optim_cuda;
// host: an initialised optimizer whose segments lie in host_params / host_grads (n floats each);
// dev_params / dev_grads: their device copies (same layout). Copies host's state and step to the device.
gt_status optim_cuda_init(optim_cuda **o, const optim *host, const float *host_params, const float *host_grads,
                          size_t n, float *dev_params, float *dev_grads, gt_error *err);
void optim_cuda_free(optim_cuda *o);
// optim_grad_clip + optim_step on the device, queued without a host wait: the global gradient norm (kept on
// the device, and copied into pinned host memory with cuda_d2h_async), clipping exactly as optim_grad_clip
// (coefficient computed on the device from the device norm: bit-identical to the CPU), and the update for
// step o->step + 1 at lr. The device makes the trainer's skip decision itself: when the norm or *dev_loss
// (a double in device memory; NULL: not checked) is not finite, it leaves gradients, parameters and state
// untouched. Each clip_step must be followed by optim_cuda_finish before the next clip_step, pull or push.
void optim_cuda_clip_step(optim_cuda *o, double max_norm, double lr, const double *dev_loss);
// After the caller's next host wait (e.g. its loss read, queued after clip_step): returns the pre-clip norm
// of the last clip_step and advances the step count iff the update was applied, i.e. iff the norm and loss
// (the value the caller read from dev_loss; pass 0 when it passed NULL) are finite. It aborts (a programming
// error) when the copy it reads is not the last clip_step's (no host wait yet) or the loss's finiteness
// is not what the device saw.
double optim_cuda_finish(optim_cuda *o, double loss);
// Device state and step -> host (for optim_serialize), and back (after optim_deserialize).
void optim_cuda_pull(const optim_cuda *o, optim *host);
void optim_cuda_push(optim_cuda *o, const optim *host);
#endif

#endif
