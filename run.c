// run.c: the `run` program, sampling text from a checkpoint in the terminal.
//
// stdout carries only the generated text, flushed token by token; everything
// else (speed, errors) goes to stderr, so the output can be piped or compared.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "game.h"
#include "sampler.h"
#include "tokenizer.h"
#include "weights.h"

typedef struct {
    const char* model;
    long tokens;
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    const char* prompt;      // -i TEXT
    const char* prompt_file; // -f FILE
    int no_cache;            // --no-cache: recompute the window for every token
} RunOptions;

void run_options_default(RunOptions* o) {
    memset(o, 0, sizeof(*o));
    o->tokens = 500;
    o->temperature = 1.0f;
    o->top_k = 0;
    o->top_p = 1.0f;
    o->seed = 1337;
}

// Encodes a prompt with the model's vocabulary. Returns the count, or -1 with
// a message in err naming the first unknown character and its position.
long encode_prompt(const Tokenizer* tk, const unsigned char* text, size_t n, int* ids,
                   char* err, size_t errlen) {
    size_t bad_offset;
    uint32_t bad_symbol;
    long count = tokenizer_encode(tk, text, n, ids, &bad_offset, &bad_symbol);
    if (count >= 0) return count;

    // count characters (not bytes) up to the bad one, for a human position
    size_t chars = 0;
    for (size_t i = 0; i < bad_offset;) {
        uint32_t sym;
        i += utf8_next(text + i, n - i, &sym);
        chars++;
    }
    char what[64];
    tokenizer_describe(bad_symbol, what, sizeof(what));
    snprintf(err, errlen, "the prompt's character %s at position %zu (byte %zu) never "
             "occurs in the model's training text; remove or replace it", what, chars + 1,
             bad_offset);
    return -1;
}

#ifndef GAME_NO_MAIN

static void usage(FILE* f, const RunOptions* d) {
    fprintf(f,
        "usage: run MODEL [options]\n"
        "Generates text from a checkpoint written by train.\n\n"
        "  -n, --tokens N        characters to generate (default %ld)\n"
        "  -t, --temperature F   0 picks the likeliest character; higher is more varied "
        "(default %g)\n"
        "  -k, --top-k N         sample among the N likeliest; 0 for all (default %d)\n"
        "  -p, --top-p F         sample among the likeliest with mass F; 1 for all "
        "(default %g)\n"
        "  -s, --seed N          random seed; the same seed repeats the text (default "
        "%llu)\n"
        "  -i, --prompt TEXT     text to continue\n"
        "  -f, --prompt-file F   read the text to continue from a file\n"
        "      --no-cache        recompute the whole window for every token instead of\n"
        "                        using the key/value cache (slower; for comparisons)\n"
        "  -h, --help            this text\n\n"
        "example: run model.bin -n 300 -t 0.8 -i \"ROMEO:\"\n",
        d->tokens, d->temperature, d->top_k, d->top_p, (unsigned long long)d->seed);
}

static double parse_number(const char* flag, const char* s, double lo, double hi,
                           int integer) {
    char* end;
    errno = 0;
    double v = integer ? (double)strtoll(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "error: %s '%s': expected %s from %g to %g\n", flag, s,
                integer ? "a whole number" : "a number", lo, hi);
        exit(EXIT_FAILURE);
    }
    return v;
}

static void parse_options(RunOptions* o, int argc, char** argv) {
    static const struct option longs[] = {
        {"tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 's'},
        {"prompt", required_argument, 0, 'i'},
        {"prompt-file", required_argument, 0, 'f'},
        {"no-cache", no_argument, 0, 'N'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    RunOptions defaults = *o;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":n:t:k:p:s:i:f:h", longs, NULL)) != -1) {
        switch (c) {
        case 'n': o->tokens = (long)parse_number("-n", optarg, 0, 1e12, 1); break;
        case 't': o->temperature = parse_number("-t", optarg, 0, 1e6, 0); break;
        case 'k': o->top_k = (int)parse_number("-k", optarg, 0, 1 << 21, 1); break;
        case 'p': o->top_p = parse_number("-p", optarg, 1e-30, 1, 0); break;
        case 's': o->seed = (uint64_t)parse_number("-s", optarg, 0, 9e15, 1); break;
        case 'i': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'N': o->no_cache = 1; break;
        case 'h': usage(stdout, &defaults); exit(EXIT_SUCCESS);
        case ':':
            fprintf(stderr, "error: %s needs a value; see run --help\n", argv[optind - 1]);
            exit(EXIT_FAILURE);
        default:
            fprintf(stderr, "error: unknown option '%s'; see run --help\n",
                    argv[optind - 1]);
            exit(EXIT_FAILURE);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "error: no model given; usage: run MODEL [options] (try run "
                "model.bin after train)\n");
        exit(EXIT_FAILURE);
    }
    o->model = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'; a prompt is given with -i\n",
                argv[optind]);
        exit(EXIT_FAILURE);
    }
    if (o->prompt && o->prompt_file) {
        fprintf(stderr, "error: give the prompt with -i or -f, not both\n");
        exit(EXIT_FAILURE);
    }
}

int main(int argc, char** argv) {
    RunOptions o;
    run_options_default(&o);
    parse_options(&o, argc, argv);

    // the model
    Model m;
    Tokenizer tk;
    char err[1024];
    if (model_load(&m, &tk, NULL, o.model, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    const char* bad = sampler_check(o.temperature, o.top_k, o.top_p, tk.size);
    if (bad) {
        fprintf(stderr, "error: %s (the vocabulary has %d tokens)\n", bad, tk.size);
        return EXIT_FAILURE;
    }

    // the prompt
    const unsigned char* text = (const unsigned char*)(o.prompt ? o.prompt : "");
    size_t n = strlen((const char*)text);
    unsigned char* file_text = NULL;
    if (o.prompt_file) {
        file_text = read_file(o.prompt_file, &n, err, sizeof(err));
        if (!file_text) {
            fprintf(stderr, "error: %s\n", err);
            return EXIT_FAILURE;
        }
        text = file_text;
    }
    int* ids = xmalloc((n + 1) * sizeof(int), "prompt");
    long n_ids = encode_prompt(&tk, text, n, ids, err, sizeof(err));
    if (n_ids < 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    if (n_ids > m.config.context)
        fprintf(stderr, "note: the prompt has %ld characters; the model sees its last %d\n",
                n_ids, m.config.context);

    // generate, timing the whole loop
    Sampler s;
    sampler_init(&s, tk.size, o.temperature, o.top_k, o.top_p, o.seed);
    s.no_cache = o.no_cache;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long written = generate(&m, &tk, &s, ids, n_ids, o.tokens, stdout);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (written >= 0) {
        printf("\n");
        double sec = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        fprintf(stderr, "%ld tokens in %.3f s: %.0f tokens/s\n", written, sec,
                sec > 0 ? written / sec : 0.0);
    }
    sampler_free(&s);
    free(ids);
    free(file_text);
    tokenizer_free(&tk);
    model_free(&m);
    return written >= 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
#endif
