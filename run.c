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
#ifdef _OPENMP
#include <omp.h>
#endif

#include "game.h"
#include "run.h"
#include "sampler.h"
#include "tokenizer.h"
#include "weights.h"


void run_options_default(RunOptions* o) {
    memset(o, 0, sizeof(*o));
    o->tokens = 500;
    o->temperature = 1.0f;
    o->top_k = 0;
    o->top_p = 1.0f;
    o->seed = 1337;
    o->threads = 1;
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

void run_usage(FILE* f) {
    RunOptions d;
    run_options_default(&d);
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
        "      --threads N       OpenMP threads (default 1: one token at a time gains\n"
        "                        nothing from more)\n"
        "  -h, --help            this text\n\n"
        "example: run model.bin -n 300 -t 0.8 -i \"ROMEO:\"\n",
        d.tokens, d.temperature, d.top_k, d.top_p, (unsigned long long)d.seed);
}

// Parses a whole-string number in [lo, hi] into *out; -1 with a message if not.
static int parse_number(const char* flag, const char* s, double lo, double hi,
                        int integer, double* out, char* err, size_t errlen) {
    char* end;
    errno = 0;
    double v = integer ? (double)strtoll(s, &end, 10) : strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected %s from %g to %g", flag, s,
                 integer ? "a whole number" : "a number", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int run_parse_args(RunOptions* o, int argc, char** argv, char* err, size_t errlen) {
    static const struct option longs[] = {
        {"tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 's'},
        {"prompt", required_argument, 0, 'i'},
        {"prompt-file", required_argument, 0, 'f'},
        {"no-cache", no_argument, 0, 'N'},
        {"threads", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    double v = 0.0;
    opterr = 0;
    optind = 0; // a full rescan, so the parser can run more than once
    while ((c = getopt_long(argc, argv, ":n:t:k:p:s:i:f:h", longs, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'n':
            rc = parse_number("-n", optarg, 0, 1e12, 1, &v, err, errlen);
            o->tokens = (long)v;
            break;
        case 't':
            rc = parse_number("-t", optarg, 0, 1e6, 0, &v, err, errlen);
            o->temperature = (float)v;
            break;
        case 'k':
            rc = parse_number("-k", optarg, 0, 1 << 21, 1, &v, err, errlen);
            o->top_k = (int)v;
            break;
        case 'p':
            rc = parse_number("-p", optarg, 1e-30, 1, 0, &v, err, errlen);
            o->top_p = (float)v;
            break;
        case 's':
            rc = parse_number("-s", optarg, 0, 9e15, 1, &v, err, errlen);
            o->seed = (uint64_t)v;
            break;
        case 'T':
            rc = parse_number("--threads", optarg, 1, 1024, 1, &v, err, errlen);
            o->threads = (int)v;
            break;
        case 'i': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'N': o->no_cache = 1; break;
        case 'h': return 1;
        case ':':
            snprintf(err, errlen, "%s needs a value; see run --help", argv[optind - 1]);
            return -1;
        default:
            snprintf(err, errlen, "unknown option '%s'; see run --help",
                     optind > 0 && optind <= argc ? argv[optind - 1] : "?");
            return -1;
        }
        if (rc != 0) return -1;
    }
    if (optind >= argc) {
        snprintf(err, errlen, "no model given; usage: run MODEL [options] (try run "
                 "model.bin after train)");
        return -1;
    }
    o->model = argv[optind++];
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s'; a prompt is given with -i",
                 argv[optind]);
        return -1;
    }
    if (o->prompt && o->prompt_file) {
        snprintf(err, errlen, "give the prompt with -i or -f, not both");
        return -1;
    }
    return 0;
}

#ifndef GAME_NO_MAIN
int main(int argc, char** argv) {
    RunOptions o;
    run_options_default(&o);
    char err[1024];
    int parsed = run_parse_args(&o, argc, argv, err, sizeof(err));
    if (parsed == 1) {
        run_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (parsed != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
#ifdef _OPENMP
    omp_set_num_threads(o.threads);
#endif

    // the model
    Model m;
    Tokenizer tk;
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
