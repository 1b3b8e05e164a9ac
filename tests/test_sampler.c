// test_sampler.c: tests of sampler.c, suite "sampler".
//
// The settings check must refuse every value outside its range and accept the
// edges; the greedy settings must all give the argmax; draws must repeat for a
// seed and follow the softmax at temperature 1; top-k and top-p must keep exactly
// their candidate sets; non-finite logits must be refused. generate() is run on a
// tiny randomly initialised model: its output must be n characters of valid
// UTF-8, repeat for a seed, keep only the prompt's last `context` tokens, and
// follow the documented sliding window past the context.
#define _GNU_SOURCE // open_memstream
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "game.h"
#include "sampler.h"
#include "tokenizer.h"

#include "testutil.h"

#define FREQ_DRAWS 200000
// One frequency has a standard deviation of at most 0.5 / sqrt(200000) = 0.0011;
// 0.006 is more than five of them.
#define FREQ_TOL 0.006

// ----------------------------------------------------------------------------
// Helpers

// Uniform in [lo, hi), from the test's own generator (24 bits).
static float next_float(TestRng* r, float lo, float hi) {
    return lo + (hi - lo) * (float)((test_rng_next(r) >> 40) / 16777216.0);
}

// Reference argmax: the first index holding the largest value.
static int first_max(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) best = i;
    }
    return best;
}

// Output of one generate() call, captured in memory.
typedef struct {
    char* data;
    size_t size;
    long written;
} GenOut;

// The same, with the KV cache in `precision` (KV_FP32 or KV_BF16).
static GenOut run_generate_in(int precision, Model* m, const Tokenizer* tk,
                              float temperature, int top_k, float top_p, uint64_t seed,
                              const int* prompt, long n_prompt, long n_new) {
    GenOut g = {NULL, 0, 0};
    FILE* f = open_memstream(&g.data, &g.size);
    cr_assert_not_null(f, "open_memstream failed");
    Sampler s;
    sampler_init(&s, tk->size, temperature, top_k, top_p, seed);
    cr_assert_eq(s.precision, KV_FP32, "sampler_init does not default to float32");
    s.precision = precision;
    g.written = generate(m, tk, &s, prompt, n_prompt, n_new, f);
    sampler_free(&s);
    fclose(f);
    return g;
}

static GenOut run_generate(Model* m, const Tokenizer* tk, float temperature, int top_k,
                           float top_p, uint64_t seed, const int* prompt, long n_prompt,
                           long n_new) {
    return run_generate_in(KV_FP32, m, tk, temperature, top_k, top_p, seed, prompt,
                           n_prompt, n_new);
}

// The tiny model of the generation tests: 1 layer, 2 heads, 16 channels, its
// vocabulary taken from text, GPT-2 initial weights from seed 7.
static void tiny_model(Model* m, Tokenizer* tk, const char* text, size_t n, int context) {
    cr_assert_eq(tokenizer_build(tk, (const unsigned char*)text, n), 0);
    GameConfig cfg = {context, tk->size, 1, 2, 16};
    cr_assert_null(config_check(&cfg));
    model_init(m, &cfg);
    model_init_weights(m, 7);
}

static const char TEXT[] = "the cat sat on the mat; der Bär aß café crème \xE2\x82\xAC 5\n"
                           "and then \xF0\x9F\x90\x88 went home\n";

// Encodes a string with tk into a new array, storing the count in *n.
static int* encode(const Tokenizer* tk, const char* s, long* n) {
    size_t len = strlen(s);
    int* ids = malloc((len + 1) * sizeof(int));
    cr_assert_not_null(ids);
    *n = tokenizer_encode(tk, (const unsigned char*)s, len, ids, NULL, NULL);
    cr_assert_geq(*n, 0, "test prompt '%s' is not in the vocabulary", s);
    return ids;
}

// ----------------------------------------------------------------------------
// sampler_check

Test(sampler, check_rejects_bad_values) {
    int V = 10;
    cr_expect_not_null(sampler_check(-0.5f, 0, 1.0f, V), "negative temperature");
    cr_expect_not_null(sampler_check(-1e-30f, 0, 1.0f, V), "tiny negative temperature");
    cr_expect_not_null(sampler_check(NAN, 0, 1.0f, V), "NaN temperature");
    cr_expect_not_null(sampler_check(INFINITY, 0, 1.0f, V), "infinite temperature");
    cr_expect_not_null(sampler_check(1.0f, -1, 1.0f, V), "negative top-k");
    cr_expect_not_null(sampler_check(1.0f, V + 1, 1.0f, V), "top-k above V");
    cr_expect_not_null(sampler_check(1.0f, 0, 0.0f, V), "top-p 0");
    cr_expect_not_null(sampler_check(1.0f, 0, -0.1f, V), "negative top-p");
    cr_expect_not_null(sampler_check(1.0f, 0, 1.0001f, V), "top-p above 1");
    cr_expect_not_null(sampler_check(1.0f, 0, NAN, V), "NaN top-p");

    // each message names its setting
    cr_expect(strstr(sampler_check(-1.0f, 0, 1.0f, V), "temperature") != NULL);
    cr_expect(strstr(sampler_check(1.0f, -1, 1.0f, V), "top-k") != NULL);
    cr_expect(strstr(sampler_check(1.0f, V + 1, 1.0f, V), "top-k") != NULL);
    cr_expect(strstr(sampler_check(1.0f, 0, 1.5f, V), "top-p") != NULL);
}

Test(sampler, check_accepts_edges) {
    int V = 10;
    cr_expect_null(sampler_check(0.0f, 0, 1.0f, V), "t=0, k=0, p=1");
    cr_expect_null(sampler_check(1.0f, V, 1.0f, V), "k = V");
    cr_expect_null(sampler_check(1.0f, 1, 1.0f, V), "k = 1");
    cr_expect_null(sampler_check(1.0f, 0, 1e-6f, V), "tiny p");
    cr_expect_null(sampler_check(100.0f, 3, 0.5f, V), "high temperature");
}

// ----------------------------------------------------------------------------
// Greedy settings

Test(sampler, argmax_lowest_index_on_ties) {
    float x[6] = {1.0f, 3.0f, -2.0f, 3.0f, 0.0f, 3.0f};
    cr_expect_eq(sampler_argmax(x, 6), 1);
    float y[4] = {-INFINITY, -5.0f, -5.0f, -6.0f};
    cr_expect_eq(sampler_argmax(y, 4), 1);
    float z[1] = {42.0f};
    cr_expect_eq(sampler_argmax(z, 1), 0);
}

// temperature 0, top-k 1 and top-p 1e-6 (the latter two at temperature 1 and
// 0.7) must all return the first largest logit. Half of the rows hold small
// integers, so ties are common.
Test(sampler, greedy_settings_give_argmax) {
    enum { V = 17, ROWS = 2000 };
    Sampler greedy, top1, top1_cool, nucleus, nucleus_cool;
    sampler_init(&greedy, V, 0.0f, 0, 1.0f, 1);
    sampler_init(&top1, V, 1.0f, 1, 1.0f, 2);
    sampler_init(&top1_cool, V, 0.7f, 1, 1.0f, 3);
    sampler_init(&nucleus, V, 1.0f, 0, 1e-6f, 4);
    sampler_init(&nucleus_cool, V, 0.7f, 0, 1e-6f, 5);
    TestRng st = {99};
    float x[V];
    for (int r = 0; r < ROWS; r++) {
        for (int v = 0; v < V; v++) {
            x[v] = (r % 2) ? next_float(&st, -8.0f, 8.0f)
                           : (float)(int)next_float(&st, 0.0f, 4.0f);
        }
        int want = first_max(x, V);
        cr_assert_eq(sampler_sample(&greedy, x), want, "t=0, row %d", r);
        cr_assert_eq(sampler_sample(&top1, x), want, "k=1, row %d", r);
        cr_assert_eq(sampler_sample(&top1_cool, x), want, "k=1 t=0.7, row %d", r);
        cr_assert_eq(sampler_sample(&nucleus, x), want, "p=1e-6, row %d", r);
        cr_assert_eq(sampler_sample(&nucleus_cool, x), want, "p=1e-6 t=0.7, row %d", r);
    }
    sampler_free(&greedy);
    sampler_free(&top1);
    sampler_free(&top1_cool);
    sampler_free(&nucleus);
    sampler_free(&nucleus_cool);
}

// ----------------------------------------------------------------------------
// Seeds

Test(sampler, seed_repeats_draws) {
    enum { V = 12, N = 2000 };
    float x[V];
    TestRng st = {5};
    for (int v = 0; v < V; v++) x[v] = next_float(&st, -1.0f, 1.0f);
    Sampler a, b, c, d;
    sampler_init(&a, V, 1.0f, 0, 1.0f, 1234);
    sampler_init(&b, V, 1.0f, 0, 1.0f, 1234);
    sampler_init(&c, V, 1.0f, 0, 1.0f, 1235);
    sampler_init(&d, V, 1.0f, 0, 1.0f, 1233);
    int same_ab = 0, same_ac = 0, same_ad = 0, shifted = 0;
    int prev_c = -1;
    for (int i = 0; i < N; i++) {
        int ta = sampler_sample(&a, x), tb = sampler_sample(&b, x);
        int tc = sampler_sample(&c, x), td = sampler_sample(&d, x);
        cr_assert(ta >= 0 && ta < V && tc >= 0 && tc < V && td >= 0 && td < V);
        same_ab += ta == tb;
        same_ac += ta == tc;
        same_ad += ta == td;
        shifted += ta == prev_c; // seed + 1 one draw behind must not line up either
        prev_c = tc;
    }
    cr_expect_eq(same_ab, N, "seed 1234 twice: %d of %d draws agree", same_ab, N);
    cr_expect_eq(a.draws, (uint64_t)N, "the draw counter counts draws");

    // unrelated streams agree about sum(p^2) = ~1/12 of the time
    cr_expect_lt(same_ac, N / 4, "seeds 1234 and 1235 agree on %d of %d draws", same_ac, N);
    cr_expect_lt(same_ad, N / 4, "seeds 1234 and 1233 agree on %d of %d draws", same_ad, N);
    cr_expect_lt(shifted, N / 4, "seed 1235 shifted by one draw agrees on %d", shifted);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
    sampler_free(&d);
}

// ----------------------------------------------------------------------------
// Distributions

Test(sampler, temperature_one_matches_softmax) {
    enum { V = 6 };
    const float x[V] = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -3.0f};
    double p[V], sum = 0.0;
    for (int v = 0; v < V; v++) sum += (p[v] = exp(x[v]));
    for (int v = 0; v < V; v++) p[v] /= sum;

    Sampler s;
    sampler_init(&s, V, 1.0f, 0, 1.0f, 42);
    long count[V] = {0};
    for (int i = 0; i < FREQ_DRAWS; i++) {
        int t = sampler_sample(&s, x);
        cr_assert(t >= 0 && t < V, "token %d out of range", t);
        count[t]++;
    }
    for (int v = 0; v < V; v++) {
        double f = (double)count[v] / FREQ_DRAWS;
        cr_expect(fabs(f - p[v]) < FREQ_TOL, "token %d: frequency %.5f, softmax %.5f", v,
                  f, p[v]);
    }
    sampler_free(&s);
}

// At temperature 2 the draws follow softmax(x / 2).
Test(sampler, temperature_two_flattens) {
    enum { V = 4 };
    const float x[V] = {2.0f, 0.0f, -2.0f, 1.0f};
    double p[V], sum = 0.0;
    for (int v = 0; v < V; v++) sum += (p[v] = exp(x[v] / 2.0));
    for (int v = 0; v < V; v++) p[v] /= sum;
    Sampler s;
    sampler_init(&s, V, 2.0f, 0, 1.0f, 43);
    long count[V] = {0};
    for (int i = 0; i < FREQ_DRAWS; i++) count[sampler_sample(&s, x)]++;
    for (int v = 0; v < V; v++) {
        double f = (double)count[v] / FREQ_DRAWS;
        cr_expect(fabs(f - p[v]) < FREQ_TOL, "token %d: frequency %.5f, expected %.5f", v,
                  f, p[v]);
    }
    sampler_free(&s);
}

Test(sampler, top_k_two_keeps_two_likeliest) {
    enum { V = 8, N = 50000 };
    const float x[V] = {0.1f, 1.5f, -0.3f, 0.9f, 1.2f, 0.0f, -2.0f, 1.1f};
    // the two likeliest are 1 (1.5) and 4 (1.2); renormalised 1 : exp(-0.3)
    double p1 = 1.0 / (1.0 + exp(-0.3));
    Sampler s;
    sampler_init(&s, V, 1.0f, 2, 1.0f, 9);
    long count[V] = {0};
    for (int i = 0; i < N; i++) {
        int t = sampler_sample(&s, x);
        cr_assert(t == 1 || t == 4, "top-k 2 drew token %d", t);
        count[t]++;
    }
    double f1 = (double)count[1] / N;
    cr_expect(fabs(f1 - p1) < 0.01, "token 1: frequency %.4f, expected %.4f", f1, p1);
    sampler_free(&s);
}

// probabilities 0.05 0.30 0.25 0.40: sorted 0.40 (id 3), 0.30 (id 1), ... so
// top-p 0.5 is the nucleus {3, 1}, renormalised 4/7 and 3/7.
Test(sampler, top_p_half_is_the_nucleus) {
    enum { V = 4, N = 50000 };
    const double p[V] = {0.05, 0.30, 0.25, 0.40};
    float x[V];
    for (int v = 0; v < V; v++) x[v] = (float)log(p[v]);
    Sampler s;
    sampler_init(&s, V, 1.0f, 0, 0.5f, 10);
    long count[V] = {0};
    for (int i = 0; i < N; i++) {
        int t = sampler_sample(&s, x);
        cr_assert(t == 1 || t == 3, "top-p 0.5 drew token %d", t);
        count[t]++;
    }
    double f3 = (double)count[3] / N;
    cr_expect(fabs(f3 - 4.0 / 7.0) < 0.01, "token 3: frequency %.4f, expected %.4f", f3,
              4.0 / 7.0);

    // 0.75 needs the third (0.40 + 0.30 = 0.70 < 0.75), id 2
    Sampler s2;
    sampler_init(&s2, V, 1.0f, 0, 0.75f, 11);
    long seen[V] = {0};
    for (int i = 0; i < N; i++) seen[sampler_sample(&s2, x)]++;
    cr_expect_eq(seen[0], 0, "top-p 0.75 drew token 0 %ld times", seen[0]);
    cr_expect(seen[1] > 0 && seen[2] > 0 && seen[3] > 0, "top-p 0.75 misses a token");
    sampler_free(&s);
    sampler_free(&s2);
}

// top-k and top-p together: the nucleus is cut from the top k.
Test(sampler, top_k_and_top_p_combine) {
    enum { V = 5, N = 20000 };
    const double p[V] = {0.35, 0.30, 0.20, 0.10, 0.05};
    float x[V];
    for (int v = 0; v < V; v++) x[v] = (float)log(p[v]);
    Sampler s;
    sampler_init(&s, V, 1.0f, 3, 0.9f, 12);
    long seen[V] = {0};
    for (int i = 0; i < N; i++) seen[sampler_sample(&s, x)]++;
    cr_expect(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    cr_expect_eq(seen[3] + seen[4], 0, "tokens outside the top 3 were drawn");
    sampler_free(&s);
}

Test(sampler, non_finite_logits_give_minus_one) {
    enum { V = 5 };
    const float bad[] = {NAN, INFINITY, -INFINITY};
    Sampler hot, greedy, topk;
    sampler_init(&hot, V, 1.0f, 0, 1.0f, 1);
    sampler_init(&greedy, V, 0.0f, 0, 1.0f, 1);
    sampler_init(&topk, V, 0.8f, 2, 0.9f, 1);
    for (int b = 0; b < 3; b++) {
        for (int pos = 0; pos < V; pos++) {
            float x[V] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
            x[pos] = bad[b];
            cr_expect_eq(sampler_sample(&hot, x), -1, "value %g at %d, t=1", bad[b], pos);
            cr_expect_eq(sampler_sample(&greedy, x), -1, "value %g at %d, t=0", bad[b], pos);
            cr_expect_eq(sampler_sample(&topk, x), -1, "value %g at %d, k=2", bad[b], pos);
        }
    }
    sampler_free(&hot);
    sampler_free(&greedy);
    sampler_free(&topk);
}

// Logits far apart stay finite through the softmax (no inf - inf, no 0 / 0).
Test(sampler, extreme_logits_stay_sane) {
    enum { V = 4 };
    const float x[V] = {-3e38f, 3e38f, -3e38f, 1e30f};
    Sampler s;
    sampler_init(&s, V, 1.0f, 0, 1.0f, 3);
    for (int i = 0; i < 100; i++) cr_assert_eq(sampler_sample(&s, x), 1);
    sampler_free(&s);
}

// ----------------------------------------------------------------------------
// generate()

Test(sampler, generate_writes_n_utf8_characters) {
    // a raw byte 0xFF in the text gives a raw-byte token, printed as U+FFFD
    char text[sizeof(TEXT) + 2];
    memcpy(text, TEXT, sizeof(TEXT));
    text[sizeof(TEXT) - 1] = (char)0xFF;
    text[sizeof(TEXT)] = '\0';
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, text, sizeof(TEXT), 8);
    cr_assert_geq(tokenizer_lookup(&tk, TOKEN_RAW_BASE + 0xFF), 0);

    long n_prompt;
    int* prompt = encode(&tk, "the ", &n_prompt);
    const long lengths[] = {0, 1, 7, 50, 200};
    for (int i = 0; i < 5; i++) {
        long n = lengths[i];
        GenOut g = run_generate(&m, &tk, 1.0f, 0, 1.0f, 77, prompt, n_prompt, n);
        cr_expect_eq(g.written, n, "generate returned %ld for n = %ld", g.written, n);
        long chars = test_utf8_count((unsigned char*)g.data, g.size);
        cr_expect_eq(chars, n, "n = %ld: %ld characters of valid UTF-8 (-1: invalid)", n,
                     chars);
        free(g.data);
    }

    // temperature 4 draws widely, so some raw-byte token is likely; still UTF-8
    GenOut g = run_generate(&m, &tk, 4.0f, 0, 1.0f, 5, prompt, n_prompt, 400);
    cr_expect_eq(test_utf8_count((unsigned char*)g.data, g.size), 400);
    free(g.data);
    free(prompt);
    tokenizer_free(&tk);
    model_free(&m);
}

Test(sampler, generate_same_seed_same_bytes) {
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, 8);
    long n_prompt;
    int* prompt = encode(&tk, "der", &n_prompt);
    GenOut a = run_generate(&m, &tk, 1.0f, 0, 1.0f, 2024, prompt, n_prompt, 100);
    GenOut b = run_generate(&m, &tk, 1.0f, 0, 1.0f, 2024, prompt, n_prompt, 100);
    GenOut c = run_generate(&m, &tk, 1.0f, 0, 1.0f, 2025, prompt, n_prompt, 100);
    cr_expect_eq(a.size, b.size);
    cr_expect(a.size == b.size && memcmp(a.data, b.data, a.size) == 0,
              "same seed, different text:\n%s\n%s", a.data, b.data);
    cr_expect(a.size != c.size || memcmp(a.data, c.data, a.size) != 0,
              "seeds 2024 and 2025 gave the same 100 characters");
    free(a.data);
    free(b.data);
    free(c.data);
    free(prompt);
    tokenizer_free(&tk);
    model_free(&m);
}

// Only the prompt's last `context` tokens count: a long prompt and its tail
// give the same text.
Test(sampler, generate_long_prompt_keeps_tail) {
    enum { CONTEXT = 8 };
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, CONTEXT);
    long n_prompt;
    int* prompt = encode(&tk, "the cat sat on the mat; der B\xC3\xA4r a\xC3\x9F", &n_prompt);
    cr_assert_gt(n_prompt, 3 * CONTEXT);
    GenOut full = run_generate(&m, &tk, 0.9f, 0, 1.0f, 3, prompt, n_prompt, 40);
    GenOut tail = run_generate(&m, &tk, 0.9f, 0, 1.0f, 3, prompt + n_prompt - CONTEXT,
                               CONTEXT, 40);
    cr_expect_eq(full.written, 40);
    cr_expect_eq(test_utf8_count((unsigned char*)full.data, full.size), 40);
    cr_expect(full.size == tail.size && memcmp(full.data, tail.data, full.size) == 0,
              "prompt of %ld and its last %d differ:\n%s\n%s", n_prompt, CONTEXT,
              full.data, tail.data);
    free(full.data);
    free(tail.data);
    free(prompt);
    tokenizer_free(&tk);
    model_free(&m);
}

// An empty prompt starts from a newline, or from token 0 without one.
Test(sampler, generate_empty_prompt_start) {
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, 8);
    int nl = tokenizer_lookup(&tk, '\n');
    cr_assert_geq(nl, 0);
    GenOut empty = run_generate(&m, &tk, 1.0f, 0, 1.0f, 8, NULL, 0, 30);
    GenOut start = run_generate(&m, &tk, 1.0f, 0, 1.0f, 8, &nl, 1, 30);
    cr_expect(empty.size == start.size && memcmp(empty.data, start.data, empty.size) == 0,
              "an empty prompt does not start from the newline");
    free(empty.data);
    free(start.data);
    tokenizer_free(&tk);
    model_free(&m);

    const char plain[] = "abcabcxyz";
    tiny_model(&m, &tk, plain, sizeof(plain) - 1, 8);
    int zero = 0;
    empty = run_generate(&m, &tk, 1.0f, 0, 1.0f, 8, NULL, 0, 30);
    start = run_generate(&m, &tk, 1.0f, 0, 1.0f, 8, &zero, 1, 30);
    cr_expect_eq(empty.written, 30);
    cr_expect(empty.size == start.size && memcmp(empty.data, start.data, empty.size) == 0,
              "without a newline an empty prompt does not start from token 0");
    free(empty.data);
    free(start.data);
    tokenizer_free(&tk);
    model_free(&m);
}

// Appends token to the reference window, first keeping only its newest
// context/2 tokens when it is full.
static void window_push(int* window, int* len, int context, int token) {
    if (*len == context) {
        int keep = context / 2;
        memmove(window, window + context - keep, (size_t)keep * sizeof(int));
        *len = keep;
    }
    window[(*len)++] = token;
}

// Generation past the context, against a reference that follows the documented
// window rule and recomputes every prediction from its window alone, with the
// window's tokens at positions 0 .. len - 1, drawing with a sampler of the same
// seed. The reference runs model_decode alone; generate also prefills the
// window after each slide, which in float32 is the full forward pass (equal up
// to rounding, which a draw meets only by a rare chance) and in bfloat16 the
// decode steps themselves (int8 likewise), so there the bytes must agree exactly. (Sampled
// rather than greedy: a random model's greedy text soon repeats one character,
// which would hide a wrong window.) In bfloat16 the model is rounded first.
static void check_window_rule(int context, long n_new, int precision) {
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, context);
    if (precision == KV_BF16) model_round_bf16(&m);
    long n_prompt;
    int* prompt = encode(&tk, "on the", &n_prompt);
    GenOut g = run_generate_in(precision, &m, &tk, 1.0f, 0, 1.0f, 11, prompt, n_prompt,
                               n_new);
    cr_assert_eq(g.written, n_new, "context %d: wrote %ld", context, g.written);

    // the reference: the prompt's tail, then predict, print and feed back
    int* window = malloc((size_t)context * sizeof(int));
    unsigned char* want = malloc((size_t)n_new * 4 + 1);
    cr_assert(window && want);
    int len = 0;
    size_t want_len = 0;
    long first = n_prompt > context ? n_prompt - context : 0;
    for (long i = first; i < n_prompt; i++) window_push(window, &len, context, prompt[i]);
    KVCache kv;
    kvcache_init(&kv, &m, precision);
    Sampler s;
    sampler_init(&s, tk.size, 1.0f, 0, 1.0f, 11);
    for (long k = 0; k < n_new; k++) {
        float* logits = NULL;
        for (int p = 0; p < len; p++) logits = model_decode(&m, &kv, window[p], p);
        int next = sampler_sample(&s, logits);
        cr_assert_geq(next, 0);
        int nb = tokenizer_token_utf8(&tk, next, want + want_len);
        cr_assert_gt(nb, 0);
        want_len += (size_t)nb;
        window_push(window, &len, context, next);
    }
    sampler_free(&s);
    kvcache_free(&kv);
    cr_expect_eq(g.size, want_len, "context %d: %zu bytes, reference %zu", context, g.size,
                 want_len);
    cr_expect(g.size == want_len && memcmp(g.data, want, want_len) == 0,
              "context %d: text differs from the window rule:\n%.*s\n%.*s",
              context, (int)g.size, g.data, (int)want_len, (char*)want);

    // and it repeats
    GenOut again = run_generate_in(precision, &m, &tk, 1.0f, 0, 1.0f, 11, prompt, n_prompt,
                                   n_new);
    cr_expect(again.size == g.size && memcmp(again.data, g.data, g.size) == 0,
              "context %d: a second run differs", context);
    free(again.data);
    free(g.data);
    free(want);
    free(window);
    free(prompt);
    tokenizer_free(&tk);
    model_free(&m);
}

Test(sampler, generate_past_context_follows_window) {
    check_window_rule(8, 3 * 8, KV_FP32);
    check_window_rule(7, 40, KV_FP32);
    check_window_rule(2, 12, KV_FP32);
    check_window_rule(1, 6, KV_FP32);
}

// The same in bfloat16, also with a context of 20, whose slides prefill 10
// tokens: a batch of 8 rows and 2 single ones.
Test(sampler, generate_bf16_follows_window) {
    check_window_rule(8, 3 * 8, KV_BF16);
    check_window_rule(7, 40, KV_BF16);
    check_window_rule(20, 70, KV_BF16);
    check_window_rule(1, 6, KV_BF16);
}

// The same in int8, whose slides also prefill the decode steps themselves (a
// context of 20 prefills 10 tokens: three groups of 3 rows and a single one).
Test(sampler, generate_int8_follows_window) {
    check_window_rule(8, 3 * 8, KV_INT8);
    check_window_rule(7, 40, KV_INT8);
    check_window_rule(20, 70, KV_INT8);
    check_window_rule(1, 6, KV_INT8);
}

// A cache handed to generate (s.cache, as run makes one for all its prompts) is
// reused call after call: two prompts in a row, each past the context, give the
// bytes that fresh caches give, in every precision.
Test(sampler, generate_reuses_a_given_cache) {
    enum { CONTEXT = 8 };
    static const char* prompts[2] = {"the cat", "on"};
    for (int precision = KV_FP32; precision <= KV_INT8; precision++) {
        Model m;
        Tokenizer tk;
        tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, CONTEXT);
        if (precision == KV_BF16) model_round_bf16(&m);
        KVCache kv;
        kvcache_init(&kv, &m, precision);
        for (int k = 0; k < 2; k++) {
            long n_prompt;
            int* prompt = encode(&tk, prompts[k], &n_prompt);
            GenOut fresh = run_generate_in(precision, &m, &tk, 1.0f, 0, 1.0f, 5 + k, prompt,
                                           n_prompt, 3 * CONTEXT);
            GenOut shared = {NULL, 0, 0};
            FILE* f = open_memstream(&shared.data, &shared.size);
            cr_assert_not_null(f);
            Sampler s;
            sampler_init(&s, tk.size, 1.0f, 0, 1.0f, 5 + k);
            s.precision = precision;
            s.cache = &kv;
            shared.written = generate(&m, &tk, &s, prompt, n_prompt, 3 * CONTEXT, f);
            sampler_free(&s);
            fclose(f);
            cr_expect_eq(shared.written, 3 * CONTEXT);
            cr_expect(shared.size == fresh.size &&
                          memcmp(shared.data, fresh.data, fresh.size) == 0,
                      "precision %d, prompt %d: the reused cache gives other text",
                      precision, k);
            free(fresh.data);
            free(shared.data);
            free(prompt);
        }
        kvcache_free(&kv);
        tokenizer_free(&tk);
        model_free(&m);
    }
}

// Sampled (not greedy) generation of 3 * context tokens: n characters, and the
// same bytes for the same seed.
Test(sampler, generate_past_context_deterministic) {
    enum { CONTEXT = 8 };
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, CONTEXT);
    long n_prompt;
    int* prompt = encode(&tk, "cat", &n_prompt);
    GenOut a = run_generate(&m, &tk, 1.0f, 5, 0.95f, 31, prompt, n_prompt, 3 * CONTEXT);
    GenOut b = run_generate(&m, &tk, 1.0f, 5, 0.95f, 31, prompt, n_prompt, 3 * CONTEXT);
    cr_expect_eq(a.written, 3 * CONTEXT);
    cr_expect_eq(test_utf8_count((unsigned char*)a.data, a.size), 3 * CONTEXT);
    cr_expect(a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
    free(a.data);
    free(b.data);
    free(prompt);
    tokenizer_free(&tk);
    model_free(&m);
}

// Damaged weights: generate stops with -1 and a message, before printing.
Test(sampler, generate_non_finite_model_fails, .init = cr_redirect_stderr) {
    Model m;
    Tokenizer tk;
    tiny_model(&m, &tk, TEXT, sizeof(TEXT) - 1, 8);
    m.params.t[P_LNFB][0] = NAN;
    GenOut g = run_generate(&m, &tk, 1.0f, 0, 1.0f, 1, NULL, 0, 20);
    cr_expect_eq(g.written, -1);
    cr_expect_eq(g.size, 0, "%zu bytes written before the failure", g.size);
    fflush(stderr);
    cr_expect_stderr_neq_str("");
    free(g.data);
    tokenizer_free(&tk);
    model_free(&m);
}
