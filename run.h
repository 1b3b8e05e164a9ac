// run.h: the options of the run program and the pieces of run.c that the
// tests and the fuzzers call.
#ifndef RUN_H
#define RUN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenizer.h"

// What run's flags set.
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
    int threads;             // --threads (default 1)
} RunOptions;

void run_options_default(RunOptions* o);

// Parses run's flags into o (which holds the defaults). Returns 0, 1 when
// --help was asked for, or -1 with a message naming the flag and what it
// accepts in err. Never exits. The sampling values are range-checked here;
// top-k against the vocabulary is checked once the model is loaded.
int run_parse_args(RunOptions* o, int argc, char** argv, char* err, size_t errlen);

// The --help text.
void run_usage(FILE* f);

// Encodes a prompt with the model's vocabulary. Returns the count, or -1 with
// a message in err naming the first unknown character and its position.
long encode_prompt(const Tokenizer* tk, const unsigned char* text, size_t n, int* ids,
                   char* err, size_t errlen);

#endif
