// tests/test_ops_fd.c: every CPU op's backward against central finite differences of its forward, and
// every forward against an independent double-precision reference written here (or HF's RoPE tables
// from tests/ref/make_rope_fixture.py). Then a whole tiny model's LoRA gradients (A and B of q, k, v, o,
// gate, up, down, with B nonzero) against finite differences of the loss.
//
// Finite differences are taken on the fp32 ops with a scalar L = sum(r * y) accumulated in double (r
// random). Their error has two parts: truncation eps^2/6 |f'''| and fp32 rounding of L divided by 2 eps.
// Each check states eps and the tolerance; a wrong backward errs by O(|gradient|), far above them.
#include <math.h>
#include <stdlib.h>

#include "cpu_tiny.h"
#include "model/model.h"
#include "test_util.h"

// |got - want| <= atol + rtol |want| everywhere; prints the worst element otherwise.
static void check(const char *what, const float *got, const double *want, size_t n, double atol, double rtol) {
    size_t worst = 0;
    double worst_excess = -1e300;
    for (size_t i = 0; i < n; i++) {
        double excess = fabs(got[i] - want[i]) - (atol + rtol * fabs(want[i]));
        if (excess > worst_excess || isnan(got[i])) worst_excess = isnan(got[i]) ? 1e300 : excess, worst = i;
    }
    if (n && worst_excess > 0)
        test_report(0, "%s: element %zu is %.9g, want %.9g (atol %.3g, rtol %.3g)", what, worst, got[worst],
                    want[worst], atol, rtol);
    else
        test_report(1, "%s (%zu values)", what, n);
}

static double maxabs_d(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static double dot_rd(const double *r, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += r[i] * y[i];
    return s;
}

static double *rand_d(tiny_rng *g, size_t n) {
    double *p = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) p[i] = 2.0 * tiny_uniform(g) - 1.0;
    return p;
}

// Central difference of f() in x[i]; the step actually taken in fp32 is used as the denominator.
typedef double (*scalar_fn)(void *ctx);
static double fd_at(scalar_fn f, void *ctx, float *x, size_t i, float eps) {
    float x0 = x[i], xp = x0 + eps, xm = x0 - eps;
    x[i] = xp;
    double fp = f(ctx);
    x[i] = xm;
    double fm = f(ctx);
    x[i] = x0;
    return (fp - fm) / ((double)xp - (double)xm);
}

static double *fd_all(scalar_fn f, void *ctx, float *x, size_t n, float eps) {
    double *g = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) g[i] = fd_at(f, ctx, x, i, eps);
    return g;
}

// Compares an analytic gradient with finite differences: atol relative to the largest FD value.
static void check_grad(const char *what, const float *an, const double *fd, size_t n, double rel_atol, double rtol) {
    check(what, an, fd, n, rel_atol * fmax(maxabs_d(fd, n), 1e-3), rtol);
}

// ---------------------------------------------------------------------------------------------------
// matmul: against double sums. fp32 dot products of K terms in 8 lanes err by at most ~K/8 * 6e-8 of
// sum |x_k w_k|; the tolerance 1e-5 of that sum is well above it.
static void test_matmul(void) {
    tiny_rng g = {11};
    const int M = 5, N = 37, K = 300; // N crosses the 16-row blocks, K the 256-column blocks and the 8 lanes
    float *x = tiny_rand(&g, (size_t)M * K, 1), *w = tiny_rand(&g, (size_t)N * K, 1), *b = tiny_rand(&g, N, 1);
    float *y = tiny_rand(&g, (size_t)M * N, 1), *dy = tiny_rand(&g, (size_t)M * N, 1);
    float *dx = tiny_rand(&g, (size_t)M * K, 1), *dw = tiny_rand(&g, (size_t)N * K, 1);
    size_t big = (size_t)N * K; // the largest of M*N, M*K, N*K here
    double *want = xmalloc(sizeof(double) * big), *scale = xmalloc(sizeof(double) * big);
    // y += x w^T + b
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) s += (double)x[i * K + k] * w[j * K + k], a += fabs(x[i * K + k] * w[j * K + k]);
            want[i * N + j] = y[i * N + j] + s + b[j];
            scale[i * N + j] = a;
        }
    cpu_matmul(y, x, w, b, M, N, K, 1);
    for (int i = 0; i < M * N; i++) want[i] = (y[i] - want[i]) / scale[i]; // relative error
    double worst = maxabs_d(want, (size_t)M * N);
    test_report(worst < 1e-5, "matmul (y += x w^T + b): worst error %.3g of sum|x w|", worst);
    // dx = dy w
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (int j = 0; j < N; j++) s += (double)dy[i * N + j] * w[j * K + k], a += fabs(dy[i * N + j] * w[j * K + k]);
            want[i * K + k] = s, scale[i * K + k] = a;
        }
    cpu_matmul_dx(dx, dy, w, M, N, K, 0);
    worst = 0;
    for (int i = 0; i < M * K; i++) worst = fmax(worst, fabs(dx[i] - want[i]) / scale[i]);
    test_report(worst < 1e-5, "matmul_dx (dx = dy w): worst error %.3g of sum|dy w|", worst);
    // dw += 0.5 dy^T x
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (int i = 0; i < M; i++) s += (double)dy[i * N + j] * x[i * K + k], a += fabs(dy[i * N + j] * x[i * K + k]);
            want[j * K + k] = dw[j * K + k] + 0.5 * s, scale[j * K + k] = 0.5 * a + fabs(dw[j * K + k]);
        }
    cpu_matmul_dw(dw, dy, x, M, N, K, 0.5f);
    worst = 0;
    for (int i = 0; i < N * K; i++) worst = fmax(worst, fabs(dw[i] - want[i]) / scale[i]);
    test_report(worst < 1e-5, "matmul_dw (dw += a dy^T x): worst error %.3g of the magnitudes", worst);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(want), free(scale);
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm
typedef struct rms_ctx {
    float *x, *w, *y, *rstd;
    double *r;
    int T, D;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    cpu_rmsnorm_forward(c->y, c->rstd, c->x, c->w, c->T, c->D, 1e-5f);
    return dot_rd(c->r, c->y, (size_t)c->T * c->D);
}

static void test_rmsnorm(void) {
    tiny_rng g = {21};
    rms_ctx c = {.T = 3, .D = 24};
    size_t n = (size_t)c.T * c.D;
    c.x = tiny_rand(&g, n, 2), c.w = tiny_rand(&g, c.D, 1), c.y = xmalloc(n * 4), c.rstd = xmalloc(c.T * 4);
    c.r = rand_d(&g, n);
    // forward vs double
    double *want = xmalloc(n * sizeof(double));
    for (int t = 0; t < c.T; t++) {
        double ss = 0;
        for (int i = 0; i < c.D; i++) ss += (double)c.x[t * c.D + i] * c.x[t * c.D + i];
        double r = 1 / sqrt(ss / c.D + 1e-5);
        for (int i = 0; i < c.D; i++) want[t * c.D + i] = c.w[i] * c.x[t * c.D + i] * r;
    }
    rms_loss(&c);
    check("rmsnorm forward vs double (fp32 rounding: 1e-6)", c.y, want, n, 1e-6, 1e-6);
    float *dx = xcalloc(n, 4), *r32 = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) r32[i] = (float)c.r[i];
    // the backward takes fp32 dy: use r rounded to fp32 in the loss too, so both see the same dy
    for (size_t i = 0; i < n; i++) c.r[i] = r32[i];
    cpu_rmsnorm_backward(dx, r32, c.x, c.w, c.rstd, c.T, c.D);
    // eps 1e-2 on x ~ 1: truncation ~2e-5 |f'''|, rounding ~1e-6 / 2e-2 = 5e-5 -> 1e-3 of max |grad|
    double *fd = fd_all(rms_loss, &c, c.x, n, 1e-2f);
    check_grad("rmsnorm backward vs FD (eps 1e-2)", dx, fd, n, 1e-3, 1e-3);
    free(c.x), free(c.w), free(c.y), free(c.rstd), free(c.r), free(want), free(dx), free(r32), free(fd);
}

// ---------------------------------------------------------------------------------------------------
// RoPE: tables vs transformers' GptOssRotaryEmbedding (fixture), backward vs FD.
// HF computes (float)pos * inv_freq and cos/sin in fp32 as we do; an ulp of difference in inv_freq
// (powf vs torch.pow) moves the angle by pos * 6e-8 * inv_freq, 4e-3 rad at pos 70000 and inv_freq 1:
// the tolerance is 1e-6 + 1.5e-7 pos.
static void rope_case_report(const char *name, double worst, double maxerr, int rows) {
    if (!name[0]) return;
    test_report(!(worst > 0), "rope %s: %d cos/sin rows vs transformers, largest difference %.3g (excess over "
                "tolerance %.3g)", name, rows, maxerr, worst);
}

static void test_rope_tables(void) {
    char *txt;
    size_t len;
    gt_error err;
    if (fs_read_file("tests/fixtures/cpu_ops/rope.txt", &txt, &len, &err) != GT_OK) {
        test_report(0, "rope fixture: %s", err.msg);
        return;
    }
    model_config c;
    memset(&c, 0, sizeof c);
    char name[64] = "";
    int cases = 0, rows = 0, total = 0;
    double worst = -1e300, maxerr = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "case ", 5)) {
            rope_case_report(name, worst, maxerr, rows);
            double theta, factor, bf, bs;
            int hd, yarn, orig, trunc;
            CHECK(sscanf(line + 5, "%63s %d %lf %d %lf %lf %lf %d %d", name, &hd, &theta, &yarn, &factor, &bf, &bs,
                         &orig, &trunc) == 9);
            c.head_dim = hd, c.rope_theta = theta, c.rope_yarn = yarn, c.yarn_factor = factor;
            c.yarn_beta_fast = bf, c.yarn_beta_slow = bs, c.yarn_orig_max_pos = orig, c.yarn_truncate = trunc;
            cases++, rows = 0, worst = -1e300, maxerr = 0;
            continue;
        }
        int is_cos = !strncmp(line, "cos ", 4), pos, off;
        CHECK(is_cos || !strncmp(line, "sin ", 4));
        CHECK(sscanf(line + 4, "%d%n", &pos, &off) == 1);
        int half = c.head_dim / 2;
        char *p = line + 4 + off;
        float ct[64], st[64];
        int32_t pp = pos;
        cpu_rope_tables(&c, &pp, 1, ct, st);
        for (int i = 0; i < half; i++) {
            double want = strtod(p, &p), got = is_cos ? ct[i] : st[i];
            worst = fmax(worst, fabs(got - want) - (1e-6 + pos * 1.5e-7));
            maxerr = fmax(maxerr, fabs(got - want));
        }
        rows++, total++;
    }
    rope_case_report(name, worst, maxerr, rows);
    free(txt);
    if (cases < 4 || total < 8) {
        test_report(0, "rope fixture: only %d cases, %d rows", cases, total);
    }
}

typedef struct rope_ctx {
    float *x, *y, *cos_t, *sin_t;
    double *r;
    int T, NH, HD;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->T * c->NH * c->HD;
    memcpy(c->y, c->x, n * 4);
    cpu_rope_forward(c->y, c->cos_t, c->sin_t, c->T, c->NH, c->HD);
    return dot_rd(c->r, c->y, n);
}

static void test_rope_backward(void) {
    tiny_rng g = {31};
    model_config cfg;
    tiny_config(&cfg, 1, 16);
    rope_ctx c = {.T = 4, .NH = 3, .HD = cfg.head_dim};
    size_t n = (size_t)c.T * c.NH * c.HD;
    int32_t pos[4] = {0, 1, 2, 9};
    c.cos_t = xmalloc(c.T * c.HD / 2 * 4), c.sin_t = xmalloc(c.T * c.HD / 2 * 4);
    cpu_rope_tables(&cfg, pos, c.T, c.cos_t, c.sin_t);
    c.x = tiny_rand(&g, n, 1), c.y = xmalloc(n * 4), c.r = rand_d(&g, n);
    float *dx = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) dx[i] = (float)c.r[i], c.r[i] = dx[i];
    cpu_rope_backward(dx, c.cos_t, c.sin_t, c.T, c.NH, c.HD);
    // linear in x: FD is exact up to rounding (~1e-7 / 2e-2)
    double *fd = fd_all(rope_loss, &c, c.x, n, 1e-2f);
    check_grad("rope backward vs FD (eps 1e-2)", dx, fd, n, 1e-4, 1e-4);
    free(c.cos_t), free(c.sin_t), free(c.x), free(c.y), free(c.r), free(dx), free(fd);
}

// ---------------------------------------------------------------------------------------------------
// Attention with sinks, sliding window and two packed documents.
typedef struct attn_ctx {
    float *q, *k, *v, *sinks, *out, *smax, *sden;
    int32_t *doc;
    double *r;
    cpu_attn_dims d;
} attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    cpu_attention_forward(c->out, c->smax, c->sden, c->q, c->k, c->v, c->sinks, c->doc, c->d);
    return dot_rd(c->r, c->out, (size_t)c->d.T * c->d.H * c->d.HD);
}

// Straight from the definition: explicit mask, softmax over the visible keys plus the sink, in double.
static void attn_reference(double *out, const attn_ctx *c) {
    cpu_attn_dims d = c->d;
    int group = d.H / d.KVH;
    for (int t = 0; t < d.T; t++)
        for (int h = 0; h < d.H; h++) {
            int g = h / group;
            double s[64], m = c->sinks[h], den = 0;
            int vis[64];
            for (int j = 0; j < d.T; j++) {
                vis[j] = j <= t && c->doc[j] == c->doc[t] && (d.window == 0 || t - j < d.window);
                if (!vis[j]) continue;
                double dot = 0;
                for (int i = 0; i < d.HD; i++)
                    dot += (double)c->q[(t * d.H + h) * d.HD + i] * c->k[(j * d.KVH + g) * d.HD + i];
                s[j] = dot / sqrt((double)d.HD);
                m = fmax(m, s[j]);
            }
            den = exp(c->sinks[h] - m);
            for (int j = 0; j < d.T; j++)
                if (vis[j]) den += exp(s[j] - m);
            for (int i = 0; i < d.HD; i++) {
                double o = 0;
                for (int j = 0; j < d.T; j++)
                    if (vis[j]) o += exp(s[j] - m) / den * c->v[(j * d.KVH + g) * d.HD + i];
                out[(t * d.H + h) * d.HD + i] = o;
            }
        }
}

static void test_attention(int window) {
    tiny_rng g = {41 + (uint64_t)window};
    int32_t doc[10] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    attn_ctx c = {.d = {10, 4, 2, 8, window}, .doc = doc};
    size_t nq = (size_t)c.d.T * c.d.H * c.d.HD, nk = (size_t)c.d.T * c.d.KVH * c.d.HD;
    c.q = tiny_rand(&g, nq, 1.5f), c.k = tiny_rand(&g, nk, 1.5f), c.v = tiny_rand(&g, nk, 1);
    c.sinks = tiny_rand(&g, c.d.H, 1.5f), c.out = xmalloc(nq * 4);
    c.smax = xmalloc(c.d.T * c.d.H * 4), c.sden = xmalloc(c.d.T * c.d.H * 4), c.r = rand_d(&g, nq);
    double *want = xmalloc(nq * sizeof(double));
    attn_reference(want, &c);
    float *dout = xmalloc(nq * 4);
    for (size_t i = 0; i < nq; i++) dout[i] = (float)c.r[i], c.r[i] = dout[i];
    attn_loss(&c);
    char what[128];
    snprintf(what, sizeof what, "attention window %d forward vs double (fp32: 1e-6)", window);
    check(what, c.out, want, nq, 1e-6, 1e-5);
    float *dq = xmalloc(nq * 4), *dk = xmalloc(nk * 4), *dv = xmalloc(nk * 4);
    cpu_attention_backward(dq, dk, dv, dout, c.out, c.q, c.k, c.v, c.sinks, c.doc, c.smax, c.sden, c.d);
    // eps 3e-3 on O(1) inputs of a smooth function: truncation ~1e-6 |f'''|, rounding ~1e-6 / 6e-3
    double *fq = fd_all(attn_loss, &c, c.q, nq, 3e-3f), *fk = fd_all(attn_loss, &c, c.k, nk, 3e-3f);
    double *fv = fd_all(attn_loss, &c, c.v, nk, 3e-3f);
    snprintf(what, sizeof what, "attention window %d dq vs FD", window);
    check_grad(what, dq, fq, nq, 2e-3, 2e-3);
    snprintf(what, sizeof what, "attention window %d dk vs FD", window);
    check_grad(what, dk, fk, nk, 2e-3, 2e-3);
    snprintf(what, sizeof what, "attention window %d dv vs FD", window);
    check_grad(what, dv, fv, nk, 2e-3, 2e-3);
    free(c.q), free(c.k), free(c.v), free(c.sinks), free(c.out), free(c.smax), free(c.sden), free(c.r);
    free(want), free(dout), free(dq), free(dk), free(dv), free(fq), free(fk), free(fv);
}

// ---------------------------------------------------------------------------------------------------
// Router
typedef struct router_ctx {
    float *logits, *w;
    int32_t *sel;
    double *r;
    int T, E, K;
} router_ctx;

static double router_loss(void *p) {
    router_ctx *c = p;
    cpu_router_forward(c->sel, c->w, c->logits, c->T, c->E, c->K);
    return dot_rd(c->r, c->w, (size_t)c->T * c->K);
}

static void test_router(void) {
    tiny_rng g = {51};
    router_ctx c = {.T = 5, .E = 6, .K = 3};
    size_t nl = (size_t)c.T * c.E, nw = (size_t)c.T * c.K;
    c.logits = tiny_rand(&g, nl, 3), c.w = xmalloc(nw * 4), c.sel = xmalloc(nw * 4), c.r = rand_d(&g, nw);
    float *dw = xmalloc(nw * 4), *dl = xmalloc(nl * 4);
    for (size_t i = 0; i < nw; i++) dw[i] = (float)c.r[i], c.r[i] = dw[i];
    router_loss(&c);
    // forward: selection by repeated argmax (first maximum), softmax in double
    int bad_sel = 0;
    double *want = xmalloc(nw * sizeof(double));
    for (int t = 0; t < c.T; t++) {
        int used[16] = {0};
        double z = 0;
        for (int k = 0; k < c.K; k++) {
            int best = -1;
            for (int e = 0; e < c.E; e++)
                if (!used[e] && (best < 0 || c.logits[t * c.E + e] > c.logits[t * c.E + best])) best = e;
            used[best] = 1;
            bad_sel += c.sel[t * c.K + k] != best;
            want[t * c.K + k] = c.logits[t * c.E + best];
        }
        double mx = want[t * c.K];
        for (int k = 0; k < c.K; k++) z += exp(want[t * c.K + k] - mx);
        for (int k = 0; k < c.K; k++) want[t * c.K + k] = exp(want[t * c.K + k] - mx) / z;
    }
    test_report(bad_sel == 0, "router selection vs argmax reference");
    check("router weights vs double softmax", c.w, want, nw, 1e-7, 1e-6);
    cpu_router_backward(dl, dw, c.w, c.sel, c.T, c.E, c.K);
    // eps 1e-3 (logits are >= ~1e-2 apart for this seed, so the selection never flips)
    double *fd = fd_all(router_loss, &c, c.logits, nl, 1e-3f);
    check_grad("router backward vs FD (eps 1e-3)", dl, fd, nl, 2e-3, 2e-3);
    // ties: lowest index first
    float tie[6] = {1, 3, 3, 0, 3, 2};
    int32_t s3[3];
    float w3[3];
    cpu_router_forward(s3, w3, tie, 1, 6, 3);
    int ok = s3[0] == 1 && s3[1] == 2 && s3[2] == 4;
    test_report(ok, "router ties -> lowest index first (got %d %d %d)", s3[0], s3[1], s3[2]);
    free(c.logits), free(c.w), free(c.sel), free(c.r), free(dw), free(dl), free(want), free(fd);
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU on both sides of each clamp, at least 0.1 away from the kinks.
typedef struct swiglu_ctx {
    float *gate, *up, *act;
    double *r;
    size_t n;
} swiglu_ctx;

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    cpu_swiglu_forward(c->act, c->gate, c->up, c->n, 7.0f, 1.702f);
    return dot_rd(c->r, c->act, c->n);
}

static void test_swiglu(void) {
    tiny_rng g = {61};
    float gv[] = {-9, -3, -0.5f, 0.3f, 2, 6.9f, 7.2f, 9}, uv[] = {-8, -7.2f, -6.8f, 0, 3, 6.9f, 7.3f, 10};
    enum { NG = 8, NU = 8 };
    swiglu_ctx c = {.n = NG * NU};
    c.gate = xmalloc(c.n * 4), c.up = xmalloc(c.n * 4), c.act = xmalloc(c.n * 4), c.r = rand_d(&g, c.n);
    for (int i = 0; i < NG; i++)
        for (int j = 0; j < NU; j++) c.gate[i * NU + j] = gv[i], c.up[i * NU + j] = uv[j];
    float *dact = xmalloc(c.n * 4), *dg = xmalloc(c.n * 4), *du = xmalloc(c.n * 4);
    for (size_t i = 0; i < c.n; i++) dact[i] = (float)c.r[i], c.r[i] = dact[i];
    swiglu_loss(&c);
    double *want = xmalloc(c.n * sizeof(double));
    for (size_t i = 0; i < c.n; i++) {
        double gg = fmin(c.gate[i], 7.0), uu = fmax(-7.0, fmin(c.up[i], 7.0));
        want[i] = gg / (1 + exp(-1.702 * gg)) * (uu + 1);
    }
    check("swiglu forward vs double (fp32: 1e-6)", c.act, want, c.n, 1e-6, 1e-6);
    cpu_swiglu_backward(dg, du, dact, c.gate, c.up, c.n, 7.0f, 1.702f);
    // eps 1e-2 < 0.1 distance to the kinks; truncation 2e-5 |f'''|
    double *fg = fd_all(swiglu_loss, &c, c.gate, c.n, 1e-2f), *fu = fd_all(swiglu_loss, &c, c.up, c.n, 1e-2f);
    check_grad("swiglu dgate vs FD (zero above the limit)", dg, fg, c.n, 1e-3, 1e-3);
    check_grad("swiglu dup vs FD (zero outside the limits)", du, fu, c.n, 1e-3, 1e-3);
    // exactly zero where clamped (the FD above only says "small")
    int nz = 0;
    for (size_t i = 0; i < c.n; i++) nz += (c.gate[i] > 7 && dg[i] != 0) || (fabsf(c.up[i]) > 7 && du[i] != 0);
    test_report(nz == 0, "swiglu clamped positions pass exactly zero gradient");
    free(c.gate), free(c.up), free(c.act), free(c.r), free(dact), free(dg), free(du), free(want), free(fg), free(fu);
}

// ---------------------------------------------------------------------------------------------------
// The LoRA funnel
typedef struct lora_ctx {
    float *x, *y0, *y, *z;
    lora_pair p;
    double *r;
    int M, in, out, R;
    float scale;
} lora_ctx;

static double lora_loss(void *p) {
    lora_ctx *c = p;
    memcpy(c->y, c->y0, (size_t)c->M * c->out * 4);
    cpu_lora_forward(c->y, c->z, c->x, &c->p, c->M, c->in, c->out, c->R, c->scale);
    return dot_rd(c->r, c->y, (size_t)c->M * c->out);
}

static void test_lora(void) {
    tiny_rng g = {71};
    lora_ctx c = {.M = 5, .in = 300, .out = 20, .R = 4, .scale = 2.0f};
    size_t nx = (size_t)c.M * c.in, ny = (size_t)c.M * c.out, na = (size_t)c.R * c.in, nb = (size_t)c.out * c.R;
    c.x = tiny_rand(&g, nx, 1), c.y0 = tiny_rand(&g, ny, 1), c.y = xmalloc(ny * 4), c.z = xmalloc(c.M * c.R * 4);
    tiny_pair(&c.p, &g, c.R, c.in, c.out);
    c.r = rand_d(&g, ny);
    float *dy = xmalloc(ny * 4), *dx = xcalloc(nx, 4), *dz = xmalloc(c.M * c.R * 4);
    for (size_t i = 0; i < ny; i++) dy[i] = (float)c.r[i], c.r[i] = dy[i];
    lora_loss(&c);
    // forward vs double: y0 + scale B (A x)
    double *want = xmalloc(ny * sizeof(double));
    for (int i = 0; i < c.M; i++)
        for (int o = 0; o < c.out; o++) {
            double s = 0;
            for (int r = 0; r < c.R; r++) {
                double zr = 0;
                for (int k = 0; k < c.in; k++) zr += (double)c.p.A[r * c.in + k] * c.x[i * c.in + k];
                s += c.p.B[o * c.R + r] * zr;
            }
            want[i * c.out + o] = c.y0[i * c.out + o] + c.scale * s;
        }
    check("lora forward vs double (fp32 sums of 300: 1e-5)", c.y, want, ny, 1e-5, 1e-5);
    cpu_lora_backward(dx, dz, dy, c.x, c.z, &c.p, c.M, c.in, c.out, c.R, c.scale);
    // bilinear in (A, B) and linear in x: FD exact up to rounding ~1e-6 / 2e-2
    double *fx = fd_all(lora_loss, &c, c.x, nx, 1e-2f), *fa = fd_all(lora_loss, &c, c.p.A, na, 1e-2f);
    double *fb = fd_all(lora_loss, &c, c.p.B, nb, 1e-2f);
    check_grad("lora dx vs FD", dx, fx, nx, 1e-3, 1e-3);
    check_grad("lora dA vs FD", c.p.dA, fa, na, 1e-3, 1e-3);
    check_grad("lora dB vs FD", c.p.dB, fb, nb, 1e-3, 1e-3);
    free(c.x), free(c.y0), free(c.y), free(c.z), free(c.p.A), free(c.p.B), free(c.p.dA), free(c.p.dB), free(c.r);
    free(dy), free(dx), free(dz), free(want), free(fx), free(fa), free(fb);
}

// ---------------------------------------------------------------------------------------------------
// Chunked cross-entropy: V = 600 crosses two 256-entry chunks and ends in a partial one.
typedef struct ce_ctx {
    float *h, *w, *loss;
    double *lse;
    int32_t *tg;
    int T, D, V;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    cpu_ce_forward(c->lse, c->loss, c->h, c->w, c->tg, c->T, c->D, c->V);
    double s = 0;
    for (int t = 0; t < c->T; t++) s += c->loss[t];
    return s;
}

static void test_ce(void) {
    tiny_rng g = {81};
    int32_t tg[7] = {5, -1, 599, 256, -1, 0, 300};
    ce_ctx c = {.T = 7, .D = 24, .V = 600, .tg = tg};
    size_t nh = (size_t)c.T * c.D;
    c.h = tiny_rand(&g, nh, 1), c.w = tiny_rand(&g, (size_t)c.V * c.D, 1);
    c.loss = xmalloc(c.T * 4), c.lse = xmalloc(c.T * sizeof(double));
    ce_loss(&c);
    double want[7];
    for (int t = 0; t < c.T; t++) {
        if (tg[t] < 0) {
            want[t] = 0;
            continue;
        }
        double l[600], mx = -1e300, z = 0;
        for (int v = 0; v < c.V; v++) {
            l[v] = 0;
            for (int i = 0; i < c.D; i++) l[v] += (double)c.h[t * c.D + i] * c.w[v * c.D + i];
            mx = fmax(mx, l[v]);
        }
        for (int v = 0; v < c.V; v++) z += exp(l[v] - mx);
        want[t] = mx + log(z) - l[tg[t]];
    }
    check("chunked CE loss vs full double softmax (fp32 logits: 1e-5)", c.loss, want, c.T, 1e-5, 1e-6);
    float *dh = xmalloc(nh * 4), *loss2 = xmalloc(c.T * 4);
    double *lse2 = xmalloc(c.T * sizeof(double));
    cpu_ce_forward_backward(lse2, loss2, dh, c.h, c.w, c.tg, c.T, c.D, c.V, 1.0f);
    int same = 1;
    for (int t = 0; t < c.T; t++) same &= loss2[t] == c.loss[t] && (tg[t] < 0 || lse2[t] == c.lse[t]);
    test_report(same, "chunked CE: the fused forward+backward gives the forward's losses bitwise");
    double *fd = fd_all(ce_loss, &c, c.h, nh, 1e-2f);
    check_grad("chunked CE dh vs FD (eps 1e-2)", dh, fd, nh, 1e-3, 2e-3);
    free(c.h), free(c.w), free(c.loss), free(c.lse), free(dh), free(fd), free(loss2), free(lse2);
}

// ---------------------------------------------------------------------------------------------------
// A whole tiny model: LoRA gradients of every pair against finite differences of the loss, along a
// random unit direction per (layer, pair, A|B) (one FD per block: a strong signal from few forwards),
// and single entries (the largest gradient of each q/k/v/o and down A, B).
typedef struct model_ctx {
    const model *m;
    model_lora *lo;
    model_ws *ws;
    const model_batch *b;
} model_ctx;

static double model_loss(void *p) {
    model_ctx *c = p;
    double loss;
    int64_t n;
    gt_error err;
    CHECK(model_forward_loss(c->ws, c->m, c->lo, c->b, &loss, &n, NULL, &err) == GT_OK);
    return loss;
}

static void test_model_lora_grads(void) {
    model_config cfg;
    tiny_config(&cfg, 2, 64);
    model m;
    cpu_tiny_init(&m, &cfg, 91, 6.0f);
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 2, 2.0f, 92);
    int lens[2] = {7, 6};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 2, cfg.vocab, 93);
    model_ws *ws;
    gt_error err;
    CHECK(model_ws_init(&ws, &m, lo.rank, tb.b.T, 1, &err) == GT_OK);
    double loss;
    int64_t n;
    CHECK(model_forward_backward(ws, &m, &lo, &tb.b, 1.0f, &loss, &n, &err) == GT_OK);
    model_ctx c = {&m, &lo, ws, &tb.b};
    tiny_rng g = {94};
    lora_pair *ps[4 + 3 * 4];
    const char *names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    int bad = 0, blocks = 0, zero_blocks = 0;
    double worst = 0;
    char worst_what[128] = "";
    for (int l = 0; l < cfg.n_layers; l++) {
        int np = cpu_tiny_pairs(&lo, &m, l, ps);
        for (int pi = 0; pi < np; pi++) {
            for (int ab = 0; ab < 2; ab++) {
                lora_pair *p = ps[pi];
                const char *nm = names[pi < 4 ? pi : 4 + (pi - 4) % 3];
                int e = pi < 4 ? -1 : (pi - 4) / 3;
                int in = pi < 4 ? (pi == 3 ? cfg.n_heads * cfg.head_dim : cfg.hidden)
                                : ((pi - 4) % 3 == 2 ? cfg.intermediate : cfg.hidden);
                int out = pi == 0 ? cfg.n_heads * cfg.head_dim
                        : pi < 3  ? cfg.n_kv_heads * cfg.head_dim
                        : pi == 3 ? cfg.hidden
                                  : ((pi - 4) % 3 == 2 ? cfg.hidden : cfg.intermediate);
                size_t cnt = ab ? (size_t)out * lo.rank : (size_t)lo.rank * in;
                float *x = ab ? p->B : p->A, *gr = ab ? p->dB : p->dA;
                // unit direction u; FD of L(x + s u) at s = 0 against <grad, u>
                double *u = rand_d(&g, cnt), nu = 0, gn = 0, an = 0;
                for (size_t i = 0; i < cnt; i++) nu += u[i] * u[i];
                for (size_t i = 0; i < cnt; i++) u[i] /= sqrt(nu), an += gr[i] * u[i], gn += (double)gr[i] * gr[i];
                float *x0 = xmalloc(cnt * 4);
                memcpy(x0, x, cnt * 4);
                const double s = 1e-2;
                for (size_t i = 0; i < cnt; i++) x[i] = (float)(x0[i] + s * u[i]);
                double lp = model_loss(&c);
                for (size_t i = 0; i < cnt; i++) x[i] = (float)(x0[i] - s * u[i]);
                double lm = model_loss(&c);
                memcpy(x, x0, cnt * 4);
                double fd = (lp - lm) / (2 * s);
                // rounding of the loss (~1e-5 absolute over 11 targets) / 2e-2 -> 5e-4; truncation
                // s^2/6 |f'''| ~ 1e-5; plus 1% of the directional derivative
                double tol = 1e-3 + 1e-2 * fabs(an) + 1e-3 * sqrt(gn);
                double excess = fabs(fd - an) - tol;
                blocks++;
                zero_blocks += gn == 0;
                char what[64];
                if (e >= 0) snprintf(what, sizeof what, "layer %d expert %d %s %s", l, e, nm, ab ? "B" : "A");
                else snprintf(what, sizeof what, "layer %d %s %s", l, nm, ab ? "B" : "A");
                if (excess > 0) {
                    printf("FAIL model LoRA %s: directional FD %.6g, analytic %.6g\n", what, fd, an);
                    bad++;
                }
                if (fabs(fd - an) / fmax(fabs(an), 1e-3) > worst) {
                    worst = fabs(fd - an) / fmax(fabs(an), 1e-3);
                    snprintf(worst_what, sizeof worst_what, "%s: FD %.6g, analytic %.6g", what, fd, an);
                }
                // the largest single entry of the block
                if (gn > 0) {
                    size_t imax = 0;
                    for (size_t i = 0; i < cnt; i++)
                        if (fabsf(gr[i]) > fabsf(gr[imax])) imax = i;
                    double f1 = fd_at(model_loss, &c, x, imax, 1e-2f);
                    if (fabs(f1 - gr[imax]) > 1e-3 + 1e-2 * fabs(gr[imax])) {
                        printf("FAIL model LoRA %s[%zu]: FD %.6g, analytic %.6g\n", what, imax, f1, gr[imax]);
                        bad++;
                    }
                }
                free(u), free(x0);
            }
        }
    }
    test_report(bad == 0, "model LoRA grads vs FD: %d blocks (%d with zero gradient: experts no token chose), worst "
                "relative difference %.3g (%s)", blocks, zero_blocks, worst, worst_what);
    model_ws_free(ws);
    tiny_batch_free(&tb);
    cpu_tiny_lora_free(&lo, &m);
    cpu_tiny_free(&m);
}

int main(void) {
    test_matmul();
    test_rmsnorm();
    test_rope_tables();
    test_rope_backward();
    test_attention(0);
    test_attention(3);
    test_router();
    test_swiglu();
    test_lora();
    test_ce();
    test_model_lora_grads();
    return test_finish("test_ops_fd");
}
