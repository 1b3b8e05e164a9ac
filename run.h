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
    int fp32;                // --fp32: decode with the float weights as stored
    int bf16;                // --bf16: round the matrices to bfloat16 and decode with
                             // those (neither: 8-bit integers, KV_INT8)
    int noise;               // --noise: sample with the GAME noise the model learned
    int threads;             // --threads (default 1)
    int info;                // --info: describe the checkpoint instead of sampling
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

// Reads everything left in stream f (a pipe or a file) into a new buffer, which
// the caller frees, and stores its size in *n; a NUL byte follows the data, not
// counted in *n. Empty input gives a non-NULL buffer and *n = 0. Returns NULL with
// a message in err (naming `what`) when reading fails. Exits if memory runs out.
unsigned char* read_stream(FILE* f, const char* what, size_t* n, char* err,
                           size_t errlen);

// Writes a human-readable description of the checkpoint at path to out (what
// `run --info` prints): the file, the configuration, the parameter counts, the
// vocabulary, the sections, and, when present, the training state (TRAN), the
// GAME state (GAME) and the mean noise scales. Returns 0, or -1 with a message
// in err when the file does not load as a model (the loader's message) or its
// TRAN or GAME section cannot be decoded; on -1 nothing has been written to out
// for a file that does not load, and the readable part for a section that does
// not decode.
//
// The TRAN section is decoded here following tran_write() in train.c field by
// field (run does not link train.c); the two must change together. A layout
// that differs in size is reported as an error, and the tests compare what is
// printed with the trainer's own values, so a drift fails them.
int run_info(const char* path, FILE* out, char* err, size_t errlen);

struct Model;
struct Checkpoint;
int noise_from_checkpoint(struct Model* m, const struct Checkpoint* ck, uint64_t seed,
                          char* err, size_t errlen);

#endif
