// tests/test_gpu_model.c: the whole training step on the GPU (model_cuda_*) against the CPU reference
// (model_forward_backward / model_forward_loss).
//   1. The tiny model (tests/cpu_tiny.h: shapes that cannot hide bugs; 2 layers, sliding and full
//      attention, 2 packed documents, targets -1 at document ends) with a LoRA adapter on every target
//      (lora_adapter_init, then random A and B so every gradient is nonzero): loss, per-token loss of
//      the forward-only path, and every LoRA gradient tensor.
//   2. A 2-layer full-width model (the gpt-oss-20b preset: hidden 2880, 64/8 heads, 32 experts top-4,
//      random MXFP4 experts, vocabulary cut to 2048): base-model loss GPU vs CPU; then the GPU's
//      forward + backward with LoRA r 8 on every target must give the same loss and finite gradients.
//   3. The step never makes the host wait before its loss read: the tiny model's two micro-batches and the
//      optimizer's clip_step queued behind a stream hold (core/cuda_rt.h), the loss read then equal to the
//      two forward losses; and a third batch beyond the workspace's staging slots does wait (the guard).
// Both models' bf16-stored weights are rounded to bf16 for the CPU too, so the remaining difference is
// the GPU's bf16 activations (each stored activation rounded once: 2^-9 relative per element, compounded
// over the layers and through the residual stream), and the attention backward's tensor-core operands
// (P, dS and dO's high half rounded to bf16: 2^-8 relative per factor, tests/test_gpu_attention.c's budget).
// Tolerances: loss 5e-3 relative (the issue asks eval losses to agree to 1e-2); LoRA gradients 5e-2
// norm-wise per tensor. Measured on the H200: worst 2.35e-2 with bf16 activations and the fp32 attention
// backward, 3.06e-2 with the tensor-core backward (layer 0 q_proj.lora_A, whose gradient passes through
// both layers' attention backward). The op tests hold each kernel to its own tighter budget; here a wrong
// index or a missing term shows up as O(1).
#include "core/core.h"

#if !GPTOSS_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 77;
}
#else

#include "cpu_tiny.h"
#include "gpu_test.h"
#include "lora/lora.h"
#include "optim/optim.h"

static void round_model_bf16(model *m) {
    const model_config *c = &m->cfg;
    const size_t D = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    round_bf16(m->embed, (size_t)c->vocab * D);
    if (m->lm_head != m->embed) round_bf16(m->lm_head, (size_t)c->vocab * D);
    for (int l = 0; l < c->n_layers; l++) {
        model_layer *L = &m->layers[l];
        round_bf16(L->wq, Q * D), round_bf16(L->wk, KV * D), round_bf16(L->wv, KV * D), round_bf16(L->wo, D * Q);
        for (int e = 0; e < c->n_experts; e++) {
            if (L->gate_up[e].fmt == WF_F32) round_bf16((float *)L->gate_up[e].f32, (size_t)2 * c->intermediate * D);
            if (L->down[e].fmt == WF_F32) round_bf16((float *)L->down[e].f32, D * c->intermediate);
        }
    }
}

static void lora_randomize(lora_adapter *la, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (size_t i = 0; i < la->n_params; i++) la->params[i] = gpu_test_rand(&s, scale);
}

static void test_tiny(void) {
    model_config c;
    tiny_config(&c, 2, 300);
    model m;
    cpu_tiny_init(&m, &c, 4242, 3.0f);
    round_model_bf16(&m);
    lora_spec spec = {4, 8.0, 0, (1u << LT_COUNT) - 1};
    lora_adapter la;
    gt_error err = {0};
    CHECK(lora_adapter_init(&la, &c, &spec, 7, &err) == GT_OK);
    lora_randomize(&la, 99, 0.2f);
    const int lens[2] = {13, 10};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 2, c.vocab, 5);
    const int T = tb.b.T;
    // GPU first (the grads arena is still zero), then the CPU.
    model_cuda *mc;
    model_cuda_lora *cl;
    model_cuda_ws *cw;
    CHECK(model_cuda_init(&mc, &m, &err) == GT_OK);
    CHECK(model_cuda_lora_init(&cl, mc, &la.ml, la.params, la.grads, la.n_params, &err) == GT_OK);
    CHECK(model_cuda_ws_init(&cw, mc, spec.rank, 32, 1, &err) == GT_OK);
    double gl = 0, cl_ = 0, gl_fwd = 0;
    int64_t gn = 0, cn = 0;
    float *gtok = xmalloc(T * 4), *ctok = xmalloc(T * 4);
    CHECK(model_cuda_forward_loss(cw, mc, cl, &tb.b, &gl_fwd, &gn, gtok, &err) == GT_OK);
    const float gscale = 1.0f / 20.0f;
    CHECK(model_cuda_forward_backward(cw, mc, cl, &tb.b, gscale, &gn, &err) == GT_OK);
    gl = model_cuda_loss_read(cw);
    float *ggrad = xmalloc(la.n_params * 4);
    model_cuda_lora_download(cl, NULL, ggrad);
    model_ws *ws;
    CHECK(model_ws_init(&ws, &m, spec.rank, 32, 1, &err) == GT_OK);
    CHECK(model_forward_loss(ws, &m, &la.ml, &tb.b, &cl_, &cn, ctok, &err) == GT_OK);
    lora_adapter_grads_zero(&la);
    CHECK(model_forward_backward(ws, &m, &la.ml, &tb.b, gscale, &cl_, &cn, &err) == GT_OK);
    printf("tiny: loss gpu %.7f cpu %.7f over %lld targets\n", gl, cl_, (long long)cn);
    check_true("tiny: same target count", gn == cn);
    float fg = (float)gl, fc = (float)cl_, ff = (float)gl_fwd;
    check_close("tiny: loss sum (forward+backward)", &fg, &fc, 1, 5e-3);
    check_close("tiny: loss sum (forward only) = fwd+bwd's", &ff, &fg, 1, 0.0);
    check_close("tiny: per-token loss", gtok, ctok, T, 5e-3);
    for (int i = 0; i < la.n_segs; i++) {
        const lora_segment *sg = &la.segs[i];
        check_close(sg->name, ggrad + sg->offset, la.grads + sg->offset, sg->n, 5e-2);
    }
    model_ws_free(ws);
    model_cuda_ws_free(cw);
    model_cuda_lora_free(cl);
    model_cuda_free(mc);
    free(gtok), free(ctok), free(ggrad);
    tiny_batch_free(&tb);
    lora_adapter_free(&la);
    cpu_tiny_free(&m);
}

// ---------------------------------------------------------------------------------------------------
// Full width, 2 layers, random MXFP4 experts (random codes, scales 2^-11 .. 2^-7).

static float *fw_rand(uint64_t *s, size_t n, float scale, float offset) {
    float *p = rand_vec(s, n, scale);
    for (size_t i = 0; i < n; i++) p[i] = bf16_to_f32(f32_to_bf16(p[i] + offset));
    return p;
}

static void fw_init(model *m, const model_config *c, uint64_t seed, void ***owned, int *n_owned) {
    uint64_t s = seed;
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    const size_t D = c->hidden, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    const size_t E = c->n_experts, I = c->intermediate, V = c->vocab;
    const float sd = 1.0f / sqrtf((float)D), sq = 1.0f / sqrtf((float)Q);
    void **own = xcalloc(64 + 40 * (size_t)c->n_layers, sizeof(void *));
    int no = 0;
#define OWN(p) (own[no++] = (p))
    m->embed = OWN(fw_rand(&s, V * D, 1.0f, 0.0f));
    m->lm_head = OWN(fw_rand(&s, V * D, sd, 0.0f));
    m->norm = OWN(fw_rand(&s, D, 0.1f, 1.0f));
    m->layers = OWN(xcalloc((size_t)c->n_layers, sizeof(model_layer)));
    m->expert_format = WF_MXFP4;
    for (int l = 0; l < c->n_layers; l++) {
        model_layer *L = &m->layers[l];
        L->attn_norm = OWN(fw_rand(&s, D, 0.1f, 1.0f)), L->mlp_norm = OWN(fw_rand(&s, D, 0.1f, 1.0f));
        L->wq = OWN(fw_rand(&s, Q * D, sd, 0)), L->bq = OWN(fw_rand(&s, Q, 0.1f, 0));
        L->wk = OWN(fw_rand(&s, KV * D, sd, 0)), L->bk = OWN(fw_rand(&s, KV, 0.1f, 0));
        L->wv = OWN(fw_rand(&s, KV * D, sd, 0)), L->bv = OWN(fw_rand(&s, KV, 0.1f, 0));
        L->wo = OWN(fw_rand(&s, D * Q, sq, 0)), L->bo = OWN(fw_rand(&s, D, 0.1f, 0));
        L->sinks = OWN(fw_rand(&s, c->n_heads, 1.0f, 0));
        L->router_w = OWN(rand_vec(&s, E * D, sd)), L->router_b = OWN(rand_vec(&s, E, 0.1f));
        L->gate_up_b = OWN(rand_vec(&s, E * 2 * I, 0.1f)), L->down_b = OWN(rand_vec(&s, E * D, 0.05f));
        L->gate_up = OWN(xcalloc(E, sizeof(qmatrix))), L->down = OWN(xcalloc(E, sizeof(qmatrix)));
        size_t n1 = 2 * I * D, n2 = D * I;
        uint8_t *b = OWN(xmalloc(E * (n1 + n2) / 2)), *sc = OWN(xmalloc(E * (n1 + n2) / 32));
        for (size_t i = 0; i < E * (n1 + n2) / 2; i += 8) {
            uint64_t z = (s += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull, z = (z ^ (z >> 27)) * 0x94D049BB133111EBull, z ^= z >> 31;
            memcpy(b + i, &z, 8);
        }
        for (size_t i = 0; i < E * (n1 + n2) / 32; i++) sc[i] = (uint8_t)(116 + (b[i] % 5));
        for (size_t e = 0; e < E; e++) {
            qmatrix *g = &L->gate_up[e], *d = &L->down[e];
            g->fmt = d->fmt = WF_MXFP4;
            g->rows = 2 * (int)I, g->cols = (int)D, d->rows = (int)D, d->cols = (int)I;
            g->blocks = b + e * n1 / 2, g->scales = sc + e * n1 / 32;
            d->blocks = b + E * n1 / 2 + e * n2 / 2, d->scales = sc + E * n1 / 32 + e * n2 / 32;
        }
    }
#undef OWN
    *owned = own, *n_owned = no;
}

static void test_full_width(void) {
    model_config c;
    gt_error err = {0};
    CHECK(model_config_preset(&c, "gpt-oss-20b", 2, 2048, &err) == GT_OK);
    model m;
    void **own;
    int n_own;
    fw_init(&m, &c, 31337, &own, &n_own);
    const int lens[2] = {40, 24};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 2, c.vocab, 9);
    model_ws *ws;
    CHECK(model_ws_init(&ws, &m, 0, 64, 1, &err) == GT_OK);
    double cl_ = 0, gl = 0, gl2 = 0;
    int64_t cn = 0, gn = 0;
    CHECK(model_forward_loss(ws, &m, NULL, &tb.b, &cl_, &cn, NULL, &err) == GT_OK);
    model_ws_free(ws);
    model_cuda *mc;
    model_cuda_ws *cw;
    CHECK(model_cuda_init(&mc, &m, &err) == GT_OK);
    CHECK(model_cuda_ws_init(&cw, mc, 8, 64, 1, &err) == GT_OK);
    CHECK(model_cuda_forward_loss(cw, mc, NULL, &tb.b, &gl, &gn, NULL, &err) == GT_OK);
    printf("full width (2 layers, D 2880, 32 experts MXFP4): mean loss gpu %.6f cpu %.6f\n", gl / gn, cl_ / cn);
    float fg = (float)gl, fc = (float)cl_;
    check_close("full width: loss sum, base model", &fg, &fc, 1, 5e-3);
    lora_spec spec = {8, 16.0, 0, (1u << LT_COUNT) - 1};
    lora_adapter la;
    CHECK(lora_adapter_init(&la, &c, &spec, 3, &err) == GT_OK);
    lora_randomize(&la, 5, 0.01f);
    model_cuda_lora *cl;
    CHECK(model_cuda_lora_init(&cl, mc, &la.ml, la.params, la.grads, la.n_params, &err) == GT_OK);
    double gl_lora = 0;
    CHECK(model_cuda_forward_loss(cw, mc, cl, &tb.b, &gl_lora, &gn, NULL, &err) == GT_OK);
    CHECK(model_cuda_forward_backward(cw, mc, cl, &tb.b, 1.0f / (float)gn, &gn, &err) == GT_OK);
    gl2 = model_cuda_loss_read(cw);
    float *g = xmalloc(la.n_params * 4);
    model_cuda_lora_download(cl, NULL, g);
    size_t nonfinite = 0, zero = 0;
    for (size_t i = 0; i < la.n_params; i++) nonfinite += !isfinite(g[i]), zero += g[i] == 0.0f;
    char what[160];
    snprintf(what, sizeof what, "full width + LoRA r8: fwd+bwd loss %.6f = forward loss %.6f", gl2 / gn, gl_lora / gn);
    check_true(what, gl2 == gl_lora);
    snprintf(what, sizeof what, "full width + LoRA r8: %zu gradients, all finite (%zu not), %zu exactly zero",
             la.n_params, nonfinite, zero);
    check_true(what, nonfinite == 0 && zero < la.n_params / 2);
    free(g);
    model_cuda_lora_free(cl);
    lora_adapter_free(&la);
    model_cuda_ws_free(cw);
    model_cuda_free(mc);
    tiny_batch_free(&tb);
    for (int i = 0; i < n_own; i++) free(own[i]);
    free(own);
}

// ---------------------------------------------------------------------------------------------------
// 3. No host wait inside a step.

// One training step as the trainer queues it: zero grads, n micro-batches, clip + update; nothing waits.
static void step_queue(model_cuda_ws *cw, const model_cuda *mc, model_cuda_lora *cl, optim_cuda *oc,
                       const model_batch *mb, int n) {
    gt_error err = {0};
    int64_t nt;
    model_cuda_lora_grads_zero(cl);
    for (int k = 0; k < n; k++) CHECK(model_cuda_forward_backward(cw, mc, cl, &mb[k], 0.05f, &nt, &err) == GT_OK);
    optim_cuda_clip_step(oc, 1.0, 1e-3, model_cuda_loss_dev(cw));
}

// sanitizer: a compute-sanitizer run (--tiny), which serialises every launch (the host waits on each): the
// step still runs, unheld, and only the hold checks are left out.
static void test_step_no_wait(int sanitizer) {
    model_config c;
    tiny_config(&c, 2, 300);
    model m;
    cpu_tiny_init(&m, &c, 4243, 3.0f);
    lora_spec spec = {4, 8.0, 0, (1u << LT_COUNT) - 1};
    lora_adapter la;
    gt_error err = {0};
    CHECK(lora_adapter_init(&la, &c, &spec, 7, &err) == GT_OK);
    lora_randomize(&la, 98, 0.2f);
    const int lens1[2] = {13, 10}, lens2[1] = {17};
    tiny_batch b1, b2;
    tiny_batch_init(&b1, lens1, 2, c.vocab, 6);
    tiny_batch_init(&b2, lens2, 1, c.vocab, 7);
    const model_batch mb[3] = {b1.b, b2.b, b1.b};
    optim_segment *segs = xmalloc((size_t)la.n_segs * sizeof *segs);
    for (int i = 0; i < la.n_segs; i++)
        segs[i] = (optim_segment){la.params + la.segs[i].offset, la.grads + la.segs[i].offset, la.segs[i].n};
    optim_config ocfg = {OPTIM_ADAMW_8BIT, 0.9, 0.999, 1e-8, 0.01, OPTIM_MIN_8BIT_SIZE};
    optim opt;
    CHECK(optim_init(&opt, &ocfg, segs, la.n_segs, &err) == GT_OK);
    model_cuda *mc;
    model_cuda_lora *cl;
    model_cuda_ws *cw;
    optim_cuda *oc;
    CHECK(model_cuda_init(&mc, &m, &err) == GT_OK);
    CHECK(model_cuda_lora_init(&cl, mc, &la.ml, la.params, la.grads, la.n_params, &err) == GT_OK);
    CHECK(model_cuda_ws_init(&cw, mc, spec.rank, 32, 2, &err) == GT_OK);
    CHECK(optim_cuda_init(&oc, &opt, la.params, la.grads, la.n_params, model_cuda_lora_params(cl),
                          model_cuda_lora_grads(cl), &err) == GT_OK);
    // Warm-up step, not held: CUDA loads kernels and cuBLASLt makes its plans at their first use (that waits).
    step_queue(cw, mc, cl, oc, mb, 2);
    optim_cuda_finish(oc, model_cuda_loss_read(cw));
    // The reference: the two batches' forward losses with the parameters the held step starts from (the
    // forward-only loss equals the forward+backward one bit for bit, test 1).
    double l1 = 0, l2 = 0;
    int64_t n;
    CHECK(model_cuda_forward_loss(cw, mc, cl, &b1.b, &l1, &n, NULL, &err) == GT_OK);
    CHECK(model_cuda_forward_loss(cw, mc, cl, &b2.b, &l2, &n, NULL, &err) == GT_OK);
    if (!sanitizer) cuda_hold_begin(10.0);
    step_queue(cw, mc, cl, oc, mb, 2);
    if (!sanitizer) check_true("step (2 micro-batches + clip + 8-bit AdamW) queued without a host wait", cuda_hold_end());
    double loss = model_cuda_loss_read(cw), norm = optim_cuda_finish(oc, loss);
    char what[160];
    snprintf(what, sizeof what, "step loss read %.9g = the two forward losses %.9g (norm %.4g)", loss, l1 + l2, norm);
    check_true(what, loss == l1 + l2 && isfinite(norm));
    // A third batch with 2 staging slots: the workspace must wait before reusing a slot (2 s hold).
    if (!sanitizer) {
        cuda_hold_begin(2.0);
        step_queue(cw, mc, cl, oc, mb, 3);
        check_true("a 3rd batch on 2 staging slots waits for the device first", !cuda_hold_end());
        optim_cuda_finish(oc, model_cuda_loss_read(cw));
    }
    optim_cuda_free(oc);
    optim_free(&opt);
    free(segs);
    model_cuda_ws_free(cw);
    model_cuda_lora_free(cl);
    model_cuda_free(mc);
    tiny_batch_free(&b1), tiny_batch_free(&b2);
    lora_adapter_free(&la);
    cpu_tiny_free(&m);
}

int main(int argc, char **argv) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    // `--tiny`: compute-sanitizer runs. The full-width model (~1 GB of host memory, a few seconds) is left
    // out, and so are the hold checks (see test_step_no_wait).
    const int tiny = argc > 1 && !strcmp(argv[1], "--tiny");
    test_tiny();
    test_step_no_wait(tiny);
    if (!tiny) test_full_width();
    return gpu_test_finish();
}
#endif
