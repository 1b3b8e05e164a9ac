// sampler.c: temperature, top-k and top-p (nucleus) sampling.
#define _GNU_SOURCE // qsort_r
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ame.h"
#include "game.h"
#include "tokenizer.h"

const char* sampler_check(float temperature, int top_k, float top_p, int vocab_size) {
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return "temperature must be a finite number >= 0 (0 picks the likeliest token)";
    if (top_k < 0) return "top-k must be >= 0 (0 turns it off)";
    if (vocab_size > 0 && top_k > vocab_size) return "top-k must not exceed the vocabulary size";
    if (!(top_p > 0.0f && top_p <= 1.0f)) return "top-p must be in (0, 1] (1 turns it off)";
    return NULL;
}

void sampler_init(Sampler* s, int vocab_size, float temperature, int top_k, float top_p,
                  uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->seed = seed;
    s->draws = 0;
    s->no_cache = 0;
    s->precision = KV_FP32;
    s->cache = NULL;
    s->probs = xmalloc((size_t)vocab_size * sizeof(float), "sampler");
    s->order = xmalloc((size_t)vocab_size * sizeof(int), "sampler");
}

void sampler_free(Sampler* s) {
    free(s->probs);
    free(s->order);
    s->probs = NULL;
    s->order = NULL;
}

int sampler_argmax(const float* logits, int V) {
    int best = 0;
    for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
    return best;
}

// qsort_r order over token ids: higher probability first, lower id first among
// equals, so the order is fully determined.
static int by_prob_desc(const void* a, const void* b, void* probs) {
    const float* p = probs;
    int i = *(const int*)a, j = *(const int*)b;
    if (p[i] != p[j]) return p[i] > p[j] ? -1 : 1;
    return i - j;
}

int sampler_sample(Sampler* s, const float* logits) {
    int V = s->vocab_size;
    for (int v = 0; v < V; v++) if (!isfinite(logits[v])) return -1;
    if (s->temperature == 0.0f) return sampler_argmax(logits, V);

    // softmax of logits / temperature
    int top = sampler_argmax(logits, V);
    float sum = 0.0f;
    for (int v = 0; v < V; v++) {
        s->probs[v] = expf((logits[v] - logits[top]) / s->temperature);
        sum += s->probs[v];
    }
    for (int v = 0; v < V; v++) s->probs[v] /= sum;

    // the candidate set: all tokens, or the top k, cut further to mass top_p
    int n = V;
    for (int v = 0; v < V; v++) s->order[v] = v;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        qsort_r(s->order, V, sizeof(int), by_prob_desc, s->probs);
        if (s->top_k > 0 && s->top_k < V) n = s->top_k;
        if (s->top_p < 1.0f) {
            float mass = 0.0f;
            for (int i = 0; i < n; i++) {
                mass += s->probs[s->order[i]];
                if (mass >= s->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
    }

    // one uniform draw over the candidates' renormalised mass
    float mass = 0.0f;
    for (int i = 0; i < n; i++) mass += s->probs[s->order[i]];
    float r = rng_uniform(rng_key(s->seed, s->draws++, RNG_SITE_SAMPLE), 0) * mass;
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += s->probs[s->order[i]];
        if (r < cdf) return s->order[i];
    }
    return s->order[n - 1];
}

// ----------------------------------------------------------------------------
// Generation with a sliding window over the KV cache

typedef struct {
    Model* m;
    KVCache* kv;    // the cache: the sampler's, or own (NULL without the cache)
    KVCache own;
    int* window;    // (context) the tokens now in the cache, in position order
    int len;        // how many
    int no_cache;   // recompute the window with the full forward instead
    uint64_t fed;   // tokens fed so far: keys each token's noise when noise is on
    float* logits;  // (context, V) the full forward's logits, without the cache
} Window;

// Runs one token at the next position, sliding the window first if it is full.
// Returns the logits (V) for the token after it.
static float* window_feed(Window* w, int token) {
    int T = w->m->config.context, V = w->m->config.vocab_size;
    if (w->len == T) {
        int keep = T / 2;
        memmove(w->window, w->window + T - keep, keep * sizeof(int));
        if (!w->no_cache && keep > 0) model_prefill(w->m, w->kv, w->window, keep);
        w->len = keep;
    }
    w->window[w->len++] = token;
    if (!w->no_cache) return model_decode(w->m, w->kv, token, w->len - 1);

    // without the cache: the whole window again, keeping its last row (with
    // GAME noise, if the model's noise switches are on, fresh for each token)
    w->m->noise.step = w->fed++;
    model_forward(w->m, w->window, NULL, 1, w->len, w->logits);
    return w->logits + (size_t)(w->len - 1) * V;
}

int generate_start_token(const Tokenizer* tk) {
    int nl = tokenizer_lookup(tk, '\n');
    return nl >= 0 ? nl : 0;
}

long generate(Model* m, const Tokenizer* tk, Sampler* s, const int* prompt, long n_prompt,
              long n_new, FILE* out) {
    int noisy = m->noise.block || m->noise.logits || m->noise.head;
    Window w = {m, NULL, {0}, NULL, 0, s->no_cache || noisy, 0, NULL};
    if (!w.no_cache) {
        w.kv = s->cache ? s->cache : &w.own;
        if (!s->cache) kvcache_init(&w.own, m, s->precision);
    }
    w.window = xmalloc((size_t)m->config.context * sizeof(int), "window");
    if (w.no_cache) {
        size_t n = (size_t)m->config.context * m->config.vocab_size;
        w.logits = xmalloc(n * sizeof(float), "window logits");
    }

    // the prompt: its last `context` tokens, or a newline
    float* logits = NULL;
    long start = n_prompt > m->config.context ? n_prompt - m->config.context : 0;
    if (!w.no_cache && n_prompt > start) {
        w.len = (int)(n_prompt - start);
        memcpy(w.window, prompt + start, w.len * sizeof(int));
        logits = model_prefill(m, w.kv, w.window, w.len);
    } else {
        for (long i = start; i < n_prompt; i++) logits = window_feed(&w, prompt[i]);
    }
    if (!logits) logits = window_feed(&w, generate_start_token(tk));

    // sample, print, feed back
    long written = 0;
    unsigned char buf[4];
    for (long i = 0; i < n_new; i++) {
        int token = sampler_sample(s, logits);
        if (token < 0) {
            fflush(out);
            fprintf(stderr, "\nerror: the model produced a non-finite logit after %ld "
                    "tokens; the checkpoint's weights are damaged or diverged\n", written);
            written = -1;
            break;
        }
        fwrite(buf, 1, tokenizer_token_utf8(tk, token, buf), out);
        if (fflush(out) != 0 || ferror(out)) {
            fprintf(stderr, "\nerror: cannot write the generated text after %ld tokens "
                    "(%s); is the disk full, or the reader gone?\n", written,
                    strerror(errno));
            written = -1;
            break;
        }
        written++;
        if (i + 1 < n_new) logits = window_feed(&w, token);
    }
    free(w.window);
    free(w.logits);
    if (w.kv == &w.own) kvcache_free(&w.own);
    return written;
}
