// Decoding with the KV cache (model/cpu/decode.c), sampling (model/sample.c) and greedy generation against
// HF transformers' generate.
//   1. cached decoding == the full forward: on the cpu_tiny.h model (sliding window 3, LoRA on all seven
//      targets) the logits of each decode step, and of prefills cut into chunks of 1, 4 and 16, must equal
//      the rows of model_logits over the whole sequence. Both run the same ops row by row in the same
//      order, so we ask for equality up to 1e-6 relative (observed: bitwise equal); the sliding layers' ring
//      buffer is smaller than the sequence, so a slot mix-up would show as an O(1) difference.
//   2. cache errors: a full context, an id outside the vocabulary, an adapter of another rank.
//   3. sampling: greedy = argmax (lowest id on ties); the same seed gives the same tokens; top-k and top-p
//      keep exactly the sets transformers' warpers keep (worked out by hand below); the empirical
//      frequencies of 40,000 draws are within 5 standard deviations of softmax(logits / T).
//   4. tests/fixtures/generate/generate.json (tests/ref/make_generate_fixture.py): HF generate's greedy
//      tokens for the tiny models of tests/fixtures/model/ (bf16 and MXFP4 bases, with and without their
//      PEFT adapters), which our model_generate must reproduce token for token, stop token included. The
//      fixture records HF's smallest top-1/top-2 logit margin so that a near-tie cannot flip a token.
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "cpu_tiny.h"
#include "lora/lora.h"
#include "model/model.h"
#include "test_util.h"

// Worst relative difference of got vs want (V), with its index.
static double worst_rel(const float *got, const float *want, int V, int *at) {
    double worst = 0.0;
    for (int i = 0; i < V; i++) {
        double d = fabs((double)got[i] - want[i]) / (fabs((double)want[i]) + 1e-6);
        if (d > worst || isnan(d)) worst = d, *at = i;
    }
    return worst;
}

static void test_cache_equals_forward(const model *m, const model_lora *lora, const char *name) {
    const int T = 19, V = m->cfg.vocab;
    int lens[1] = {T};
    tiny_batch tb;
    tiny_batch_init(&tb, lens, 1, V, 77);
    model_ws *ws;
    gt_error err = {0};
    CHECK(model_ws_init(&ws, m, lora ? lora->rank : 0, T, 0, &err) == GT_OK);
    float *full = xmalloc((size_t)T * V * sizeof(float)), *got = xmalloc((size_t)V * sizeof(float));
    CHECK(model_logits(ws, m, lora, &tb.b, full, &err) == GT_OK);
    const int chunks[3] = {1, 4, 16};
    for (int ci = 0; ci < 3; ci++) {
        model_kv_cache *kv;
        CHECK(model_kv_cache_init(&kv, m, lora ? lora->rank : 0, 32, chunks[ci], &err) == GT_OK);
        for (int rep = 0; rep < 2; rep++) { // the second pass after a reset must see nothing of the first
            model_kv_cache_reset(kv);
            // Prefill the first 7 tokens (cut into chunks), then one step per token.
            const int P = 7;
            CHECK(model_prefill(kv, m, lora, tb.ids, P, got, &err) == GT_OK);
            int at = 0;
            double w = worst_rel(got, full + (size_t)(P - 1) * V, V, &at);
            EXPECT(w <= 1e-6, "%s, chunk %d: prefill logits of token %d differ by %.3g rel at %d (%g vs %g)", name,
                   chunks[ci], P - 1, w, at, got[at], full[(size_t)(P - 1) * V + at]);
            for (int t = P; t < T; t++) {
                CHECK(model_decode_step(kv, m, lora, tb.ids[t], got, &err) == GT_OK);
                w = worst_rel(got, full + (size_t)t * V, V, &at);
                EXPECT(w <= 1e-6, "%s, chunk %d: step logits of token %d differ by %.3g rel at %d (%g vs %g)", name,
                       chunks[ci], t, w, at, got[at], full[(size_t)t * V + at]);
            }
            EXPECT(model_kv_cache_len(kv) == T, "%s: cache length %d, want %d", name, model_kv_cache_len(kv), T);
        }
        // A whole prefill in one call: its last logits are row T-1.
        model_kv_cache_reset(kv);
        CHECK(model_prefill(kv, m, lora, tb.ids, T, got, &err) == GT_OK);
        int at = 0;
        double w = worst_rel(got, full + (size_t)(T - 1) * V, V, &at);
        EXPECT(w <= 1e-6, "%s, chunk %d: whole-prefill logits differ by %.3g rel at %d", name, chunks[ci], w, at);
        model_kv_cache_free(kv);
    }
    free(full);
    free(got);
    model_ws_free(ws);
    tiny_batch_free(&tb);
}

static void test_cache_errors(const model *m, const model_lora *lora) {
    model_kv_cache *kv;
    gt_error err = {0};
    CHECK(model_kv_cache_init(&kv, m, lora->rank, 5, 4, &err) == GT_OK);
    int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    EXPECT(model_prefill(kv, m, lora, ids, 6, NULL, &err) == GT_EINVAL && strstr(err.msg, "context full"),
           "full context: %s", err.msg);
    EXPECT(model_kv_cache_len(kv) == 0, "a refused prefill must add nothing");
    CHECK(model_prefill(kv, m, lora, ids, 5, NULL, &err) == GT_OK);
    EXPECT(model_decode_step(kv, m, lora, 1, NULL, &err) == GT_EINVAL && strstr(err.msg, "/reset"),
           "full after 5: %s", err.msg);
    model_kv_cache_reset(kv);
    int32_t bad = m->cfg.vocab;
    EXPECT(model_decode_step(kv, m, lora, bad, NULL, &err) == GT_EINVAL && strstr(err.msg, "vocabulary"),
           "bad id: %s", err.msg);
    model_kv_cache_free(kv);
    CHECK(model_kv_cache_init(&kv, m, lora->rank + 1, 5, 4, &err) == GT_OK);
    EXPECT(model_decode_step(kv, m, lora, 1, NULL, &err) == GT_EINVAL && strstr(err.msg, "rank"), "rank: %s",
           err.msg);
    model_kv_cache_free(kv);
}

// ---------------------------------------------------------------------------------------------------
static void test_sampler(void) {
    gt_error err = {0};
    sampler *s;
    const float tie[5] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};
    EXPECT(sampler_argmax(tie, 5) == 1, "argmax on a tie must take the lowest id");
    sampler_options greedy = {0.0f, 0, 1.0f, 1};
    CHECK(sampler_new(&s, &greedy, 5, &err) == GT_OK);
    EXPECT(sampler_sample(s, tie) == 1, "temperature 0 must be greedy");
    sampler_free(s);

    sampler_options bad[3] = {{-1.0f, 0, 1.0f, 0}, {1.0f, -2, 1.0f, 0}, {1.0f, 0, 0.0f, 0}};
    const char *flag[3] = {"--temperature", "--top-k", "--top-p"};
    for (int i = 0; i < 3; i++)
        EXPECT(sampler_new(&s, &bad[i], 5, &err) == GT_EINVAL && strstr(err.msg, flag[i]), "bad %s: %s", flag[i],
               err.msg);

    // logits ln(p) for p = .5, .25, .15, .07, .03: softmax gives p back (T = 1).
    const double p[5] = {0.5, 0.25, 0.15, 0.07, 0.03};
    float lg[5];
    for (int i = 0; i < 5; i++) lg[i] = (float)log(p[i]);
    // Kept sets: top-k 2 -> {0, 1}; top-p 0.8 -> {0, 1, 2} (mass before token 2 is .75 < .8, before 3 is .9);
    // top-p 0.7 -> {0, 1} (mass before token 2 is .75 >= .7; HF removes ascending cumulative mass <= .3);
    // top-k 3 with top-p 0.6 -> {0, 1} (renormalised over the three: .5/.9 = .556 < .6, then .833).
    struct {
        int k;
        float top_p;
        int n_keep;
    } cases[4] = {{2, 1.0f, 2}, {0, 0.8f, 3}, {0, 0.7f, 2}, {3, 0.6f, 2}};
    for (int c = 0; c < 4; c++) {
        sampler_options o = {1.0f, cases[c].k, cases[c].top_p, 1234 + (uint64_t)c};
        CHECK(sampler_new(&s, &o, 5, &err) == GT_OK);
        int count[5] = {0};
        const int N = 40000;
        for (int i = 0; i < N; i++) count[sampler_sample(s, lg)]++;
        double kept = 0.0;
        for (int i = 0; i < cases[c].n_keep; i++) kept += p[i];
        for (int i = 0; i < 5; i++) {
            double want = i < cases[c].n_keep ? p[i] / kept : 0.0;
            double sd = sqrt(want * (1 - want) / N) + 1e-12;
            double got = (double)count[i] / N;
            EXPECT(fabs(got - want) <= 5 * sd, "top-k %d top-p %g: token %d drawn %.4f of the time, want %.4f",
                   cases[c].k, cases[c].top_p, i, got, want);
        }
        sampler_free(s);
    }
    // Temperature 2: probabilities proportional to p^(1/2).
    sampler_options o = {2.0f, 0, 1.0f, 99};
    CHECK(sampler_new(&s, &o, 5, &err) == GT_OK);
    int count[5] = {0};
    const int N = 40000;
    for (int i = 0; i < N; i++) count[sampler_sample(s, lg)]++;
    double z = 0.0;
    for (int i = 0; i < 5; i++) z += sqrt(p[i]);
    for (int i = 0; i < 5; i++) {
        double want = sqrt(p[i]) / z, sd = sqrt(want * (1 - want) / N), got = (double)count[i] / N;
        EXPECT(fabs(got - want) <= 5 * sd, "temperature 2: token %d drawn %.4f, want %.4f", i, got, want);
    }
    sampler_free(s);
    // Same seed, same draws; another seed, other draws.
    sampler *a, *b, *c;
    sampler_options o1 = {1.0f, 0, 0.95f, 7}, o2 = {1.0f, 0, 0.95f, 8};
    CHECK(sampler_new(&a, &o1, 5, &err) == GT_OK && sampler_new(&b, &o1, 5, &err) == GT_OK);
    CHECK(sampler_new(&c, &o2, 5, &err) == GT_OK);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = sampler_sample(a, lg), y = sampler_sample(b, lg), w = sampler_sample(c, lg);
        same &= x == y;
        differ |= x != w;
    }
    EXPECT(same, "the same seed must give the same tokens");
    EXPECT(differ, "another seed gave the very same 200 tokens");
    sampler_free(a), sampler_free(b), sampler_free(c);
}

// ---------------------------------------------------------------------------------------------------
static void test_hf_generate(void) {
    json_error_t je;
    json_t *root = json_load_file("tests/fixtures/generate/generate.json", 0, &je);
    if (!root) {
        failures++;
        fprintf(stderr, "FAIL: tests/fixtures/generate/generate.json:%d: %s (run tests/ref/make_generate_fixture.py)\n",
                je.line, je.text);
        return;
    }
    json_t *cases = json_object_get(root, "cases");
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *mdir = json_string_value(json_object_get(cs, "model"));
        json_t *ad = json_object_get(cs, "adapter");
        json_t *jp = json_object_get(cs, "prompt"), *jw = json_object_get(cs, "tokens"), *js = json_object_get(cs, "stop");
        int max_new = (int)json_integer_value(json_object_get(cs, "max_new_tokens"));
        gt_error err = {0};
        model m;
        if (model_load(&m, mdir, MQ_AUTO, &err)) {
            failures++;
            fprintf(stderr, "FAIL %s: %s\n", name, err.msg);
            continue;
        }
        lora_adapter la;
        int have = json_is_string(ad);
        if (have && lora_peft_load(&la, &m.cfg, json_string_value(ad), &err)) {
            failures++;
            fprintf(stderr, "FAIL %s: %s\n", name, err.msg);
            model_free(&m);
            continue;
        }
        int np = (int)json_array_size(jp), nw = (int)json_array_size(jw), ns = (int)json_array_size(js);
        int32_t *prompt = xmalloc(sizeof(int32_t) * (size_t)np), *out = xmalloc(sizeof(int32_t) * (size_t)max_new);
        int32_t stop[8];
        for (int k = 0; k < np; k++) prompt[k] = (int32_t)json_integer_value(json_array_get(jp, (size_t)k));
        for (int k = 0; k < ns && k < 8; k++) stop[k] = (int32_t)json_integer_value(json_array_get(js, (size_t)k));
        model_kv_cache *kv;
        sampler *s;
        sampler_options greedy = {0.0f, 0, 1.0f, 0};
        CHECK(model_kv_cache_init(&kv, &m, have ? la.ml.rank : 0, np + max_new, 8, &err) == GT_OK);
        CHECK(sampler_new(&s, &greedy, m.cfg.vocab, &err) == GT_OK);
        int n = 0;
        gt_status st = model_generate(kv, &m, have ? &la.ml : NULL, s, prompt, np, stop, ns, max_new, NULL, NULL, out,
                                      &n, &err);
        EXPECT(st == GT_OK, "%s: %s", name, err.msg);
        int first_diff = -1;
        for (int k = 0; k < nw && k < n; k++)
            if (out[k] != (int32_t)json_integer_value(json_array_get(jw, (size_t)k))) {
                first_diff = k;
                break;
            }
        EXPECT(n == nw && first_diff < 0, "%s: %d tokens, HF %d; first difference at %d (ours %d, HF %lld)", name, n,
               nw, first_diff, first_diff >= 0 ? out[first_diff] : -1,
               first_diff >= 0 ? json_integer_value(json_array_get(jw, (size_t)first_diff)) : -1LL);
        if (failures == 0) printf("  %s: %d tokens equal to HF generate\n", name, n);
        sampler_free(s);
        model_kv_cache_free(kv);
        free(prompt);
        free(out);
        if (have) lora_adapter_free(&la);
        model_free(&m);
    }
    json_decref(root);
}

int main(void) {
    model_config c;
    tiny_config(&c, 4, 40);
    model m;
    cpu_tiny_init(&m, &c, 5, 3.0f);
    model_lora lo;
    cpu_tiny_lora_init(&lo, &m, 2, 0.75f, 9);
    test_cache_equals_forward(&m, NULL, "base");
    test_cache_equals_forward(&m, &lo, "LoRA");
    test_cache_errors(&m, &lo);
    cpu_tiny_lora_free(&lo, &m);
    cpu_tiny_free(&m);
    test_sampler();
    test_hf_generate();
    return test_finish("test_decode");
}
