// Token sampling for generation: greedy, or temperature, top-k, top-p (in transformers' order:
// TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper), with our own seeded RNG.
//   temperature: x_i = logit_i / T (fp32, as scores / temperature)
//   top-k: keep x_i >= the k-th largest x (ties with it are kept, as torch.topk's threshold keeps them)
//   top-p: in descending order of x, keep a token while the probability mass BEFORE it is < p (HF
//          removes tokens whose ascending cumulative mass is <= 1 - p; the most likely one always stays)
//   draw: u in [0, 1) times the kept mass, walked in descending order (probabilities in double).
// RNG: xoshiro256** seeded through splitmix64 (Vigna's reference constants); 53-bit uniform doubles.
// V vocabulary.
#include <math.h>
#include <stdlib.h>

#include "model/model.h"

struct sampler {
    sampler_options o;
    int V;
    uint64_t rng[4];
    float *x;      // (V) scaled logits
    int32_t *idx;  // (V) candidate ids, sorted by x descending
    double *p;     // (V) probabilities of the candidates in idx order
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

gt_status sampler_new(sampler **out, const sampler_options *o, int vocab, gt_error *err) {
    *out = NULL;
    if (!(o->temperature >= 0.0f) || isinf(o->temperature))
        return gt_fail(err, GT_EINVAL, "--temperature %g: must be a finite number >= 0 (0 = greedy)", o->temperature);
    if (o->top_k < 0) return gt_fail(err, GT_EINVAL, "--top-k %d: must be >= 0 (0 = off)", o->top_k);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
        return gt_fail(err, GT_EINVAL, "--top-p %g: must be in (0, 1] (1 = off)", o->top_p);
    CHECK(vocab > 0);
    sampler *s = xcalloc(1, sizeof *s);
    s->o = *o;
    s->V = vocab;
    uint64_t seed = o->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = rng_splitmix64(&seed);
    s->x = xmalloc((size_t)vocab * sizeof *s->x);
    s->idx = xmalloc((size_t)vocab * sizeof *s->idx);
    s->p = xmalloc((size_t)vocab * sizeof *s->p);
    *out = s;
    return GT_OK;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->x);
    free(s->idx);
    free(s->p);
    free(s);
}

int32_t sampler_argmax(const float *logits, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int by_x_desc(const void *a, const void *b, void *keys) {
    const float *x = keys;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (x[i] != x[j]) return x[i] > x[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

int32_t sampler_sample(sampler *s, const float *logits) {
    const int V = s->V;
    if (s->o.temperature == 0.0f) return sampler_argmax(logits, V);
    for (int i = 0; i < V; i++) {
        s->x[i] = logits[i] / s->o.temperature;
        s->idx[i] = i;
    }
    int n = V; // candidates idx[0..n)
    int sorted = s->o.top_k > 0 || s->o.top_p < 1.0f;
    if (sorted) qsort_r(s->idx, (size_t)V, sizeof *s->idx, by_x_desc, s->x);
    if (s->o.top_k > 0 && s->o.top_k < V) {
        float kth = s->x[s->idx[s->o.top_k - 1]];
        n = s->o.top_k;
        while (n < V && s->x[s->idx[n]] >= kth) n++;
    }
    float xmax = s->x[sorted ? s->idx[0] : sampler_argmax(s->x, V)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += s->p[i] = exp((double)s->x[s->idx[i]] - xmax);
    if (s->o.top_p < 1.0f) {
        double before = 0.0;
        int keep = 0;
        while (keep < n && (keep == 0 || before < s->o.top_p)) before += s->p[keep++] / sum;
        n = keep;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += s->p[i];
    }
    double u = uniform01(s->rng) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->p[i];
        if (u < acc) return s->idx[i];
    }
    return s->idx[n - 1]; // u landed on the rounding edge of the last one
}
