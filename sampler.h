// sampler.h: turning a row of logits (V) into the next token.
#ifndef SAMPLER_H
#define SAMPLER_H

#include <stdint.h>
#include <stdio.h>

struct KVCache;

typedef struct {
    int vocab_size;    // V
    float temperature; // 0 means greedy (argmax); otherwise logits / temperature
    int top_k;         // keep the k most likely tokens; 0 keeps all
    float top_p;       // keep the smallest most-likely set whose mass reaches p; 1 keeps all
    uint64_t seed;     // the draws are keyed on (seed, draw number)
    uint64_t draws;    // draws made so far
    int no_cache;      // generate() recomputes the whole window per token (for benchmarks)
    int precision;     // generate()'s KV cache decodes in KV_FP32 (sampler_init's
                       // choice), KV_BF16 or KV_INT8 (game.h; run's default):
                       // bf16 is exact for a model rounded with model_round_bf16,
                       // as run --bf16 does
    struct KVCache* cache; // NULL: generate() makes a cache for each call; else one
                           // kvcache_init made for this model, which every call
                           // reuses (each overwrites what it holds)
    float* probs;      // (V) scratch
    int* order;        // (V) scratch: token ids sorted by probability
} Sampler;

// Checks the settings; returns NULL or a message naming the bad value and its range.
const char* sampler_check(float temperature, int top_k, float top_p, int vocab_size);

void sampler_init(Sampler* s, int vocab_size, float temperature, int top_k, float top_p,
                  uint64_t seed);
void sampler_free(Sampler* s);

// Index of the largest logit (the lowest index among equal ones).
int sampler_argmax(const float* logits, int V);

// Draws the next token from logits (V). Returns -1 when a logit is not finite,
// so the caller can stop with an error instead of printing garbage.
int sampler_sample(Sampler* s, const float* logits);

// Generation: feeds the prompt (n_prompt ids; only its last `context` are kept,
// and an empty prompt starts from a newline, or token 0 without one) through
// the KV cache, then samples n_new tokens and writes each one's text to out
// (flushed per token; raw-byte tokens print as U+FFFD so the text is valid
// UTF-8). When the cache is full, the window slides by half: the newest
// context/2 tokens are run again at positions 0.., and generation goes on, so
// every token sees at least context/2 and at most context - 1 earlier tokens.
// With any of m->noise's sites switched on, the text is sampled from the noisy
// network GAME trains (C2 and C5 noise at the model's learned scales, drawn
// afresh for every token, keyed on m->noise.seed): that needs the full forward
// pass, so the KV cache is not used. The cache is s->cache, or one made for
// the call in s->precision: KV_BF16 is meant for a model rounded with
// model_round_bf16 (then the cache, the window's prefills and the full forward
// pass all compute that one model); KV_INT8 rounds the products' inputs as
// well, which only its own decode steps and prefills do.
// Returns the number of tokens written, or -1 if the model produced a
// non-finite logit or out could not be written (after a message on stderr).
struct Model;
struct Tokenizer;

// The token generate() starts from after an empty prompt: a newline, or token 0
// when the vocabulary has none.
int generate_start_token(const struct Tokenizer* tk);

long generate(struct Model* m, const struct Tokenizer* tk, Sampler* s, const int* prompt,
              long n_prompt, long n_new, FILE* out);

#endif
