// tests/test_gpu_moe.c: model/cuda/swiglu.cu and model/cuda/moe.cu against model/cpu/swiglu.c and
// model/cpu/moe.c: the clamped SwiGLU alone, then one layer's experts (MXFP4 and NF4, LoRA on gate, up and
// down with the shared gate/up A) at GEMM tile edges, with an expert that gets no token, forward and
// backward behind a stream hold that proves neither makes the host wait; then the plan alone (the sort of
// the slots by expert and the tile map) bit for bit at realistic sizes. Skips without a GPU.
//
// The GPU keeps activations in bf16 (x, res, gate, up, act, y, out); the CPU gets the same bf16 inputs (x,
// res rounded) and keeps fp32, so the differences are the GPU's own roundings. Tolerances count them
// (norm-wise relative errors, check_close) in units of BF16_U = 2^-9: round to nearest even errs by at most
// 2^-8 of an element and by 0.85 * 2^-9 RMS over a log-uniform mantissa, so a tensor with k roundings on its
// path (each entering a GEMM or the SwiGLU with a gain of about one) gets (k + 1) BF16_U: the k errors added
// linearly (in practice they add in quadrature, sqrt(k) * 0.85 BF16_U) plus one BF16_U of headroom for the
// gains; one rounding gets 2 BF16_U = 2^-8, the per-element bound. fp32 sum-order effects (~1e-6) are below.
// Measured on an H200 (1f9bd0c): every check at 0.3 to 0.7 of its tolerance.
#include "core/core.h"

#if !GPTOSS_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 77;
}
#else

#include "gpu_test.h"
#include "model/cpu/ops.h"
#include "model/cuda/cuda_ops.h"

static uint64_t g_seed = 20261123;

#define BF16_U 0x1p-9 // one bf16 rounding, norm-wise (see the top)

// Elements whose bits differ from bf16 of ref.
static size_t count_bits_off(const uint16_t *got, const float *ref, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != f32_to_bf16(ref[i]);
    return bad;
}

// Forward from fp32 gate, up at scale 10 (the clamps at +-7 active): gate_bf, up_bf must be exactly their
// bf16 roundings; act is compared with the CPU on those rounded inputs, so only act's own rounding differs:
// norm-wise within 2 BF16_U, and its bits equal bf16 of the CPU's fp32 act except where the fp32 results (GPU
// and CPU expf differ by an ulp or two) straddle a bf16 rounding boundary, a few 2^-16 per element: at
// most 1% of the elements (an act computed from the unrounded gate, up would move about half of them).
// The backward reads the rounded gate, up on both sides: fp32 against fp32 (expf ulps, 1e-5).
static void test_swiglu(void) {
    const size_t n = 1000;
    const float limit = 7.0f, alpha = 1.702f;
    float *g = rand_vec(&g_seed, n, 10.0f), *u = rand_vec(&g_seed, n, 10.0f), *da = rand_vec(&g_seed, n, 1.0f);
    float *gg = gpu_dup_f(g, n), *gu = gpu_dup_f(u, n), *gda = gpu_dup_f(da, n);
    uint16_t *ga = gpu_poison_bf16(n), *ggb = gpu_poison_bf16(n), *gub = gpu_poison_bf16(n);
    float *gdg = gpu_poison(n), *gdu = gpu_poison(n);
    cuda_swiglu_forward(ga, ggb, gub, gg, gu, n, limit, alpha);
    cuda_swiglu_backward(gdg, gdu, gda, ggb, gub, n, limit, alpha);
    uint16_t *hgb = gpu_get_bits(ggb, n), *hub = gpu_get_bits(gub, n), *hab = gpu_get_bits(ga, n);
    check_true("swiglu forward gate_bf, up_bf = bf16(gate), bf16(up) exactly",
               count_bits_off(hgb, g, n) == 0 && count_bits_off(hub, u, n) == 0);
    round_bf16(g, n), round_bf16(u, n);
    float *a = xmalloc(n * 4), *dg = xmalloc(n * 4), *du = xmalloc(n * 4);
    cpu_swiglu_forward(a, g, u, n, limit, alpha);
    cpu_swiglu_backward(dg, du, da, g, u, n, limit, alpha);
    float *ra = gpu_get_bf16(ga, n), *rdg = gpu_get(gdg, n), *rdu = gpu_get(gdu, n);
    check_close("swiglu forward act (clamps at +-7 active)", ra, a, n, 2 * BF16_U);
    const size_t off = count_bits_off(hab, a, n);
    printf("     swiglu act bits off bf16(CPU act): %zu of %zu\n", off, n);
    check_true("swiglu act = bf16(swiglu(rounded gate, up)) bitwise but for boundary cases", off <= n / 100);
    check_close("swiglu backward dgate", rdg, dg, n, 1e-5);
    check_close("swiglu backward dup", rdu, du, n, 1e-5);
    cuda_free(gg), cuda_free(gu), cuda_free(gda), cuda_free(ga), cuda_free(ggb), cuda_free(gub), cuda_free(gdg);
    cuda_free(gdu);
    free(g), free(u), free(da), free(a), free(dg), free(du), free(ra), free(rdg), free(rdu), free(hgb), free(hub);
    free(hab);
}

// dw[tk] = dout_t . y[slot[tk]] against ref, element-wise relative to the Cauchy-Schwarz scale
// ||dout_t|| ||y_slot|| (a norm-wise check over the T*K dots would hinge on how small the few dots of a
// one-token case happen to be): |got - ref| <= tol * ||dout_t|| ||y||, y (S, D) the reference's.
static void check_dots(const char *what, const float *got, const float *ref, const float *dout, const float *y,
                       const int32_t *slot, int T, int K, int D, double tol) {
    double worst = -1.0;
    int wi = 0, bad = 0;
    for (int tk = 0; tk < T * K; tk++) {
        double na = 0.0, nb = 0.0;
        for (int j = 0; j < D; j++) {
            na += (double)dout[(size_t)(tk / K) * D + j] * dout[(size_t)(tk / K) * D + j];
            nb += (double)y[(size_t)slot[tk] * D + j] * y[(size_t)slot[tk] * D + j];
        }
        const double e = fabs((double)got[tk] - ref[tk]) / (sqrt(na * nb) + 1e-30);
        if (!isnan(worst) && !(e <= worst)) worst = e, wi = tk; // a NaN stays the worst
        bad |= !(e <= tol);
    }
    printf("%s %-40s max err / (|dout| |y|) %.3g (tol %.1g)", bad ? "FAIL" : "ok  ", what, worst, tol);
    if (bad) printf("; worst [%d] got %.9g ref %.9g", wi, got[wi], ref[wi]);
    printf("\n");
    g_failures += bad;
}

// ---------------------------------------------------------------------------------------------------
// MoE: E 4, top-2, expert 2 gets no token; experts MXFP4 or NF4; LoRA on gate, up, down. D and I are
// GEMM tile edges (moe.cu's tiles are 64 rows x 128 columns x 32 deep: I 96 and 2I 192 end in part tiles;
// NF4 with D 40, I 36 is not even a multiple of 32), T 200 gives each expert several row tiles.
// Forward + backward run behind cuda_hold_begin, checked never to wait for the device; warmup: no hold and
// no checks (see test_moe).
static void test_moe_case(wformat fmt, int T, int D, int I, int warmup) {
    model_config c;
    memset(&c, 0, sizeof c);
    c.hidden = D, c.n_experts = 4, c.top_k = 2, c.intermediate = I, c.n_layers = 1;
    c.swiglu_limit = 7.0f, c.swiglu_alpha = 1.702f;
    const int E = c.n_experts, K = c.top_k, R = 4, S = T * K;
    const float scale = 1.5f;
    model m;
    memset(&m, 0, sizeof m);
    m.cfg = c;
    model_layer L;
    memset(&L, 0, sizeof L);
    m.layers = &L;
    qmatrix gu[4], dn[4];
    void *own[8];
    for (int e = 0; e < E; e++) {
        float *w1 = rand_vec(&g_seed, (size_t)2 * I * D, 0.6f), *w2 = rand_vec(&g_seed, (size_t)D * I, 0.2f);
        own[2 * e] = qmatrix_from_f32(&gu[e], fmt, w1, 2 * I, D);
        own[2 * e + 1] = qmatrix_from_f32(&dn[e], fmt, w2, D, I);
        free(w1), free(w2);
    }
    L.gate_up = gu, L.down = dn;
    L.gate_up_b = rand_vec(&g_seed, (size_t)E * 2 * I, 0.5f), L.down_b = rand_vec(&g_seed, (size_t)E * D, 0.2f);
    // LoRA: gate and up share A as lora/ arranges it (PEFT's joint gate_up adapter).
    pair_buf pg[4], pu[4], pd[4];
    lora_pair hg[4], hu[4], hd[4], dg[4], du[4], dd[4];
    for (int e = 0; e < E; e++) {
        pair_make(&pg[e], &g_seed, R, D, I), pair_make(&pu[e], &g_seed, R, D, I), pair_make(&pd[e], &g_seed, R, I, D);
        hg[e] = pg[e].h, hu[e] = pu[e].h, hd[e] = pd[e].h, dg[e] = pg[e].d, du[e] = pu[e].d, dd[e] = pd[e].d;
        hu[e].A = hg[e].A, hu[e].dA = hg[e].dA, du[e].A = dg[e].A, du[e].dA = dg[e].dA;
    }
    lora_layer hl = {0};
    hl.gate = hg, hl.up = hu, hl.down = hd;
    model_lora hlo = {R, scale, (1u << LT_GATE) | (1u << LT_UP) | (1u << LT_DOWN), &hl};
    // Inputs: x and res rounded to bf16 (the GPU gets them as bf16); sel avoids expert 2.
    float *x = rand_vec(&g_seed, (size_t)T * D, 1.0f), *dout = rand_vec(&g_seed, (size_t)T * D, 1.0f);
    float *res = rand_vec(&g_seed, (size_t)T * D, 1.0f), *w = rand_vec(&g_seed, (size_t)S, 0.5f);
    round_bf16(x, (size_t)T * D), round_bf16(res, (size_t)T * D);
    int32_t *sel = xmalloc(S * 4);
    const int pick[3] = {0, 1, 3};
    for (int t = 0; t < T; t++) {
        int a = (int)((gpu_test_rand(&g_seed, 1.0f) + 1.0f) * 1.5f) % 3, b = (a + 1 + t % 2) % 3;
        sel[t * K] = pick[a], sel[t * K + 1] = pick[b];
        w[t * K] += 0.5f, w[t * K + 1] += 0.5f;
    }
    // CPU
    cpu_moe_acts ca;
    cpu_moe_scratch cs;
    ca.off = xmalloc((E + 1) * 4), ca.tok = xmalloc(S * 4), ca.slot = xmalloc(S * 4);
    ca.gate = xmalloc((size_t)S * I * 4), ca.up = xmalloc((size_t)S * I * 4), ca.act = xmalloc((size_t)S * I * 4);
    ca.zg = xmalloc(S * R * 4), ca.zu = xmalloc(S * R * 4), ca.zd = xmalloc(S * R * 4), ca.y = xmalloc((size_t)S * D * 4);
    cs.xs = xmalloc((size_t)T * D * 4), cs.gu = xmalloc((size_t)T * 2 * I * 4), cs.dy = xmalloc((size_t)T * D * 4);
    cs.dact = xmalloc((size_t)T * I * 4), cs.dgate = xmalloc((size_t)T * I * 4), cs.dup = xmalloc((size_t)T * I * 4);
    cs.dz = xmalloc(T * R * 4), cs.dxs = xmalloc((size_t)S * D * 4), cs.wbuf = xmalloc((size_t)2 * I * D * 4);
    float *out = xmalloc((size_t)T * D * 4), *dx = xmalloc((size_t)T * D * 4), *dw = xmalloc(S * 4);
    cpu_moe_forward(out, res, x, sel, w, &m, &hlo, 0, T, &ca, &cs);
    cpu_moe_backward(dx, dw, dout, x, w, &m, &hlo, 0, T, &ca, &cs);
    // GPU weights
    size_t n1 = (size_t)2 * I * D, n2 = (size_t)D * I;
    cuda_moe_weights W;
    memset(&W, 0, sizeof W);
    cuda_experts *xs[2] = {&W.gate_up, &W.down};
    qmatrix *qs[2] = {gu, dn};
    size_t ns[2] = {n1, n2};
    void *dev[16];
    int nd = 0;
    for (int p = 0; p < 2; p++) {
        cuda_experts *ce = xs[p];
        ce->fmt = fmt, ce->E = E, ce->rows = qs[p][0].rows, ce->cols = qs[p][0].cols;
        size_t n = ns[p];
        if (fmt == WF_MXFP4) {
            uint8_t *b = cuda_malloc(E * n / 2), *s = cuda_malloc(E * n / 32);
            for (int e = 0; e < E; e++) {
                cuda_h2d(b + e * n / 2, qs[p][e].blocks, n / 2);
                cuda_h2d(s + e * n / 32, qs[p][e].scales, n / 32);
            }
            ce->blocks = b, ce->scales = s, dev[nd++] = b, dev[nd++] = s;
        } else {
            ce->blocksize = qs[p][0].blocksize, ce->nf4_bytes = (n + 1) / 2;
            ce->nf4_blocks = (n + ce->blocksize - 1) / ce->blocksize;
            uint8_t *b = cuda_malloc(E * ce->nf4_bytes);
            float *am = cuda_malloc(E * ce->nf4_blocks * 4), *qm = cuda_malloc(E * 16 * 4);
            for (int e = 0; e < E; e++) {
                cuda_h2d(b + e * ce->nf4_bytes, qs[p][e].blocks, ce->nf4_bytes);
                cuda_h2d(am + e * ce->nf4_blocks, qs[p][e].absmax, ce->nf4_blocks * 4);
                cuda_h2d(qm + e * 16, qs[p][e].quant_map, 16 * 4);
            }
            ce->blocks = b, ce->absmax = am, ce->qmap = qm, dev[nd++] = b, dev[nd++] = am, dev[nd++] = qm;
        }
    }
    float *gub = gpu_dup_f(L.gate_up_b, (size_t)E * 2 * I), *dnb = gpu_dup_f(L.down_b, (size_t)E * D);
    W.gate_up_b = gub, W.down_b = dnb;
    // GPU acts and scratch
    cuda_moe_acts ga;
    cuda_moe_scratch gs;
    ga.off = cuda_malloc((E + 1) * 4), ga.tok = cuda_malloc(S * 4), ga.kof = cuda_malloc(S * 4);
    ga.slot = cuda_malloc(S * 4), ga.tiles = cuda_malloc((size_t)2 * cuda_moe_max_tiles(S, E) * 4);
    ga.gate = gpu_poison_bf16((size_t)S * I), ga.up = gpu_poison_bf16((size_t)S * I);
    ga.act = gpu_poison_bf16((size_t)S * I), ga.y = gpu_poison_bf16((size_t)S * D);
    ga.zg = gpu_poison(S * R), ga.zu = gpu_poison(S * R), ga.zd = gpu_poison(S * R);
    gs.dact = gpu_poison((size_t)S * I), gs.dup = gpu_poison((size_t)S * I), gs.dz = gpu_poison(S * R);
    gs.dxs = gpu_poison((size_t)S * D);
    lora_pair *tg = gpu_dup(dg, sizeof dg), *tu = gpu_dup(du, sizeof du), *td = gpu_dup(dd, sizeof dd);
    cuda_moe_lora mlo = {tg, tu, td, R, scale};
    uint16_t *gx = gpu_dup_bf16(x, (size_t)T * D), *gres = gpu_dup_bf16(res, (size_t)T * D);
    uint16_t *gout = gpu_poison_bf16((size_t)T * D);
    float *gw = gpu_dup_f(w, S), *gdo = gpu_dup_f(dout, (size_t)T * D), *gdx = gpu_poison((size_t)T * D);
    float *gdw = gpu_poison(S);
    int32_t *gsel = gpu_dup(sel, S * 4);
    // The expert row counts stay on the device: with the stream held, forward and backward must only
    // enqueue (a host wait inside would run into the hold's 10 s timeout and the check fails).
    char what[128];
    char tag[64];
    snprintf(tag, sizeof tag, "moe %s T%d D%d I%d", fmt == WF_MXFP4 ? "mxfp4" : "nf4", T, D, I);
    if (!warmup) cuda_hold_begin(10.0);
    cuda_moe_forward(gout, gres, gx, gsel, gw, &W, &c, &mlo, T, &ga, &gs);
    cuda_moe_backward(gdx, gdw, gdo, gx, gw, &W, &c, &mlo, T, &ga, &gs);
    if (!warmup) {
        snprintf(what, sizeof what, "%s forward + backward without a host wait", tag);
        check_true(what, cuda_hold_end());
    }
    float *rout = gpu_get_bf16(gout, (size_t)T * D), *rdx = gpu_get(gdx, (size_t)T * D), *rdw = gpu_get(gdw, S);
    float *rgate = gpu_get_bf16(ga.gate, (size_t)S * I), *rup = gpu_get_bf16(ga.up, (size_t)S * I);
    float *ract = gpu_get_bf16(ga.act, (size_t)S * I), *ry = gpu_get_bf16(ga.y, (size_t)S * D);
    int32_t *roff = xmalloc((E + 1) * 4), *rtok = xmalloc(S * 4);
    cuda_d2h(roff, ga.off, (E + 1) * 4);
    cuda_d2h(rtok, ga.tok, S * 4);
    if (!warmup) {
        snprintf(what, sizeof what, "%s plan offsets, tokens (expert 2 empty)", tag);
        check_true(what, !memcmp(roff, ca.off, (E + 1) * 4) && !memcmp(rtok, ca.tok, S * 4) && roff[3] == roff[2]);
        // Rounding counts k (tolerance (k + 1) BF16_U, see the top): nf = 1 for NF4, whose weights the GPU
        // rounds to bf16 when it decodes them (the CPU keeps qmap * absmax in fp32): one more rounding per GEMM
        // on the path.
        //   gate, up: their own (1 + nf);  act: gate and up (the SwiGLU's gain up to ~1.3), its own (2 + nf);
        //   y: act, the down weights, its own (3 + 2 nf);  out: y, its own (4 + 2 nf);
        //   dact: dy staged as bf16, the down weights (1 + nf); dgate, dup: dact and the rounded gate, up
        //   (2 + 2 nf); dx: dgate/dup staged, the gate_up weights (3 + 3 nf);
        //   LoRA: down dA, dB through act or zd = act A^T (2 + nf); gate/up dA, dB through dgate/dup (2 + 2 nf).
        // The slot order is the CPU's (checked above), so the kept activations compare row for row.
        const int nf = fmt == WF_NF4;
        const struct {
            const char *name;
            const float *got, *ref;
            size_t n;
            int k;
        } cmp[] = {
            {"gate (bf16)", rgate, ca.gate, (size_t)S * I, 1 + nf}, {"up (bf16)", rup, ca.up, (size_t)S * I, 1 + nf},
            {"act (bf16)", ract, ca.act, (size_t)S * I, 2 + nf},    {"y (bf16)", ry, ca.y, (size_t)S * D, 3 + 2 * nf},
            {"forward out (bf16)", rout, out, (size_t)T * D, 4 + 2 * nf},
            {"backward dx", rdx, dx, (size_t)T * D, 3 + 3 * nf},
        };
        for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
            snprintf(what, sizeof what, "%s %s", tag, cmp[i].name);
            check_close(what, cmp[i].got, cmp[i].ref, cmp[i].n, (cmp[i].k + 1) * BF16_U);
        }
        // dw: against the CPU (through y's error, Cauchy-Schwarz: |dout . dy| <= |dout| |dy|, |dy| <= y's
        // tolerance times |y|), and against dout . (the GPU's kept bf16 y) in double: the dw the backward
        // computes is the derivative of the out the forward summed (fp32 dot of D terms: D 2^-24 < 1e-5).
        float *dw_kept = xmalloc(S * 4);
        for (int tk = 0; tk < S; tk++) {
            double d = 0.0;
            for (int j = 0; j < D; j++) d += (double)dout[(size_t)(tk / K) * D + j] * ry[(size_t)ca.slot[tk] * D + j];
            dw_kept[tk] = (float)d;
        }
        snprintf(what, sizeof what, "%s backward dw", tag);
        check_dots(what, rdw, dw, dout, ca.y, ca.slot, T, K, D, (4 + 2 * nf) * BF16_U);
        snprintf(what, sizeof what, "%s backward dw = dout . kept y", tag);
        check_dots(what, rdw, dw_kept, dout, ry, ca.slot, T, K, D, 1e-5);
        free(dw_kept);
        const double tol_down = (3 + nf) * BF16_U, tol_gu = (3 + 2 * nf) * BF16_U;
        for (int e = 0; e < E; e++) {
            snprintf(what, sizeof what, "%s lora gate e%d", tag, e);
            pair_check(what, &pg[e], R, D, I, tol_gu);
            snprintf(what, sizeof what, "%s lora up e%d", tag, e);
            // up's A is gate's: only B is up's own (its dA was checked with gate's).
            float *b = gpu_get(pu[e].d.dB, (size_t)I * R);
            check_close(what, b, pu[e].h.dB, (size_t)I * R, tol_gu);
            free(b);
            snprintf(what, sizeof what, "%s lora down e%d", tag, e);
            pair_check(what, &pd[e], R, I, D, tol_down);
        }
    }
    free(rgate), free(rup), free(ract), free(ry), free(rtok);
    for (int i = 0; i < nd; i++) cuda_free(dev[i]);
    void *g1[] = {gub, dnb, ga.off, ga.tok, ga.kof, ga.slot, ga.tiles, ga.gate, ga.up, ga.act, ga.zg, ga.zu, ga.zd,
                  ga.y, gs.dact, gs.dup, gs.dz, gs.dxs, tg, tu, td, gx, gres, gw, gdo, gout, gdx, gdw, gsel};
    for (size_t i = 0; i < sizeof g1 / sizeof g1[0]; i++) cuda_free(g1[i]);
    void *h1[] = {ca.off, ca.tok, ca.slot, ca.gate, ca.up, ca.act, ca.zg, ca.zu, ca.zd, ca.y, cs.xs, cs.gu, cs.dy,
                  cs.dact, cs.dgate, cs.dup, cs.dz, cs.dxs, cs.wbuf, out, dx, dw, x, dout, res, w, sel, rout, rdx, rdw,
                  roff, L.gate_up_b, L.down_b};
    for (size_t i = 0; i < sizeof h1 / sizeof h1[0]; i++) free(h1[i]);
    for (int e = 0; e < E; e++) {
        pair_free(&pg[e]), pair_free(&pu[e]), pair_free(&pd[e]);
        free(own[2 * e]), free(own[2 * e + 1]);
    }
}

// A warm-up case runs first, without the hold and unchecked: CUDA loads kernels at their first launch, and
// that load waits for the device (seen on the H200: the first held case timed out, every later one passed).
static void test_moe(void) {
    const uint64_t seed = g_seed; // the warm-up leaves the checked cases their own random inputs
    test_moe_case(WF_MXFP4, 1, 64, 96, 1);
    g_seed = seed;
    test_moe_case(WF_MXFP4, 37, 64, 96, 0);
    test_moe_case(WF_MXFP4, 1, 64, 96, 0);
    test_moe_case(WF_MXFP4, 200, 64, 96, 0);
    test_moe_case(WF_NF4, 37, 64, 96, 0);
    test_moe_case(WF_NF4, 37, 40, 36, 0);
}

// ---------------------------------------------------------------------------------------------------
// The plan alone (cuda_moe_plan) against a host counting sort, bit for bit: off (E+1), tok, kof (S), slot
// (T, K) and the tile map (2 * cuda_moe_max_tiles(S, E)): tile q = (expert, first row) in expert order, a
// tile per CUDA_MOE_TILE_M rows of an expert, (-1, 0) past the last.
static void plan_reference(int32_t *off, int32_t *tok, int32_t *kof, int32_t *slot, int32_t *tiles, int max_tiles,
                           const int32_t *sel, int T, int E, int K) {
    const int S = T * K;
    int32_t *next = xmalloc((size_t)E * 4);
    memset(off, 0, (size_t)(E + 1) * 4);
    for (int i = 0; i < S; i++) off[sel[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    memcpy(next, off, (size_t)E * 4);
    for (int i = 0; i < S; i++) {
        const int p = next[sel[i]]++;
        slot[i] = p, tok[p] = i / K, kof[p] = i % K;
    }
    int n = 0;
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r += CUDA_MOE_TILE_M, n++) tiles[2 * n] = e, tiles[2 * n + 1] = r;
    for (; n < max_tiles; n++) tiles[2 * n] = -1, tiles[2 * n + 1] = 0;
    free(next);
}

// First index where two int arrays differ, -1 when equal.
static long first_diff(const int32_t *a, const int32_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (long)i;
    return -1;
}

// sel (T, K): K distinct experts per token as the router picks them, drawn with density ~ 1/sqrt(e) (the
// low experts get many tokens, several row tiles each; the high ones few), never an expert e with
// e % 5 == 4 (empty experts, also the last one when E % 5 == 0). The plan runs behind a stream hold (it
// must not make the host wait), twice (the second result must be the first, bit for bit).
static void test_plan_case(int T, int E, int K) {
    const int S = T * K, nt = cuda_moe_max_tiles(S, E);
    int32_t *sel = xmalloc((size_t)S * 4);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e, dup;
            do {
                const float u = 0.5f * (gpu_test_rand(&g_seed, 1.0f) + 1.0f);
                e = (int)((float)E * u * u) % E, dup = e % 5 == 4;
                for (int q = 0; q < k; q++) dup |= sel[t * K + q] == e;
            } while (dup);
            sel[t * K + k] = e;
        }
    int32_t *off = xmalloc((size_t)(E + 1) * 4), *tok = xmalloc((size_t)S * 4), *kof = xmalloc((size_t)S * 4);
    int32_t *slot = xmalloc((size_t)S * 4), *tiles = xmalloc((size_t)2 * nt * 4);
    plan_reference(off, tok, kof, slot, tiles, nt, sel, T, E, K);
    cuda_moe_acts a;
    memset(&a, 0, sizeof a);
    a.off = cuda_malloc((size_t)(E + 1) * 4), a.tok = cuda_malloc((size_t)S * 4), a.kof = cuda_malloc((size_t)S * 4);
    a.slot = cuda_malloc((size_t)S * 4), a.tiles = cuda_malloc((size_t)2 * nt * 4);
    int32_t *dsel = gpu_dup(sel, (size_t)S * 4);
    const struct {
        const char *name;
        int32_t *dev, *ref;
        size_t n;
    } out[] = {{"off", a.off, off, (size_t)E + 1}, {"tok", a.tok, tok, (size_t)S}, {"kof", a.kof, kof, (size_t)S},
               {"slot", a.slot, slot, (size_t)S}, {"tiles", a.tiles, tiles, (size_t)2 * nt}};
    int32_t *first[5] = {0};
    char what[160];
    for (int run = 0; run < 2; run++) {
        for (int i = 0; i < 5; i++) cuda_memset(out[i].dev, 0x7f, out[i].n * 4); // unwritten: 0x7f7f7f7f
        cuda_hold_begin(10.0);
        cuda_moe_plan(&a, dsel, T, E, K);
        snprintf(what, sizeof what, "plan T%d E%d K%d run %d without a host wait", T, E, K, run);
        check_true(what, cuda_hold_end());
        for (int i = 0; i < 5; i++) {
            int32_t *got = xmalloc(out[i].n * 4);
            cuda_sync();
            cuda_d2h(got, out[i].dev, out[i].n * 4);
            const int32_t *want = run ? first[i] : out[i].ref;
            const long d = first_diff(got, want, out[i].n);
            snprintf(what, sizeof what, "plan T%d E%d K%d %s %s", T, E, K, out[i].name,
                     run ? "= the first run's, bit for bit" : "= host counting sort, bit for bit");
            check_true(what, d < 0);
            if (d >= 0) printf("     first difference at [%ld]: got %d want %d\n", d, got[d], want[d]);
            if (run) free(got);
            else first[i] = got;
        }
    }
    int empty = 0, big = 0;
    for (int e = 0; e < E; e++) empty += off[e + 1] == off[e], big += off[e + 1] - off[e] > CUDA_MOE_TILE_M;
    printf("     plan T%d E%d K%d: %d empty experts, %d with several row tiles\n", T, E, K, empty, big);
    for (int i = 0; i < 5; i++) cuda_free(out[i].dev), free(first[i]);
    cuda_free(dsel);
    free(sel), free(off), free(tok), free(kof), free(slot), free(tiles);
}

// Realistic sizes (gpt-oss-20b: E 32, gpt-oss-120b: E 128, K 4 at 2048 tokens), one token, tens of
// thousands of tokens, and E 1024 (the plan's fewest segments) with K 16 (the most choices).
static void test_plan(void) {
    test_plan_case(2048, 32, 4);
    test_plan_case(2048, 128, 4);
    test_plan_case(1, 32, 4);
    test_plan_case(1, 128, 4);
    test_plan_case(20000, 128, 4);
    test_plan_case(3000, 1024, 4);
    test_plan_case(517, 1024, 16);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 77;
    }
    test_swiglu();
    test_moe();
    test_plan(); // after test_moe's warm-up: the plan kernel is loaded, so the hold checks hold
    return gpu_test_finish();
}
#endif
