// fuzz_flags.c: libFuzzer harness for the command-line side of the programs:
// the GAME mode parser (ame_parse_mode), the sampler's settings check
// (sampler_check) and, when the programs expose them, the flag parsers of train
// and run.
//
// Input format: byte 0 picks the target (its value mod 4), the rest is its data.
//   0  train flags: the rest split at NUL bytes into argv[1 ..], argv[0] "train"
//   1  run flags, the same way, argv[0] "run"
//   2  ame_parse_mode: the rest as one string (up to its first NUL), checked
//      against a small reference parser written here, and round-tripped through
//      ame_mode_string
//   3  sampler_check: temperature (f32), top_k (i32), top_p (f32), vocab_size
//      (i32), little-endian, checked against the rules sampler.h states
//
// The flag parsers of train.c and run.c exit on an error, so they cannot be
// fuzzed as they are. Targets 0 and 1 are built only with -DFUZZ_HAVE_TRAIN_ARGS
// (train.h declares train_parse_args) and -DFUZZ_HAVE_RUN_ARGS (run.h declares
// RunOptions, run_options_default and run_parse_args); fuzz/fuzz.mk turns them
// on when the headers have them. Without them those inputs do nothing.
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ame.h"
#include "game.h"
#include "sampler.h"
#ifdef FUZZ_HAVE_TRAIN_ARGS
#include "train.h"
#endif
#ifdef FUZZ_HAVE_RUN_ARGS
#include "run.h"
#endif

#define MAX_ARGS 64

// ----------------------------------------------------------------------------
// Helpers

static void fail(const char* what) {
    fprintf(stderr, "fuzz_flags: invariant broken: %s\n", what);
    abort();
}

static uint32_t get_u32(const unsigned char* p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static float get_f32(const unsigned char* p) {
    uint32_t bits = get_u32(p);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

// A failure message must be non-empty and terminated inside its buffer.
static void check_err(const char* err, size_t errlen, const char* who) {
    if (memchr(err, '\0', errlen) == NULL || err[0] == '\0') {
        fprintf(stderr, "fuzz_flags: %s\n", who);
        fail("failure without a terminated error message");
    }
}

#if defined(FUZZ_HAVE_TRAIN_ARGS) || defined(FUZZ_HAVE_RUN_ARGS)
// Splits a copy of data[0 .. n-1] at NUL bytes into argv[1 ..] after argv[0] =
// prog; returns argc. The strings live in *store (the caller frees it).
static int split_args(const unsigned char* data, size_t n, char* prog, char** argv,
                      char** store) {
    char* s = malloc(n + 1);
    if (s == NULL) {
        *store = NULL;
        return 0;
    }
    memcpy(s, data, n);
    s[n] = '\0';
    *store = s;
    int argc = 0;
    argv[argc++] = prog;
    size_t i = 0;
    while (i < n && argc < MAX_ARGS) {
        argv[argc++] = s + i;
        i += strlen(s + i) + 1;
    }
    argv[argc] = NULL;
    return argc;
}
#endif

// ----------------------------------------------------------------------------
// train flags

#ifdef FUZZ_HAVE_TRAIN_ARGS
static void fuzz_train(const unsigned char* data, size_t n) {
    char prog[] = "train";
    char* argv[MAX_ARGS + 1];
    char* store;
    int argc = split_args(data, n, prog, argv, &store);
    if (store == NULL) {
        return;
    }

    // parse from the defaults, as main does
    TrainOptions o;
    train_options_default(&o);
    char err[256];
    err[0] = '\0';
    optind = 0; // the parser resets getopt itself; this only makes sure
    int rc = train_parse_args(&o, argc, argv, err, sizeof(err));
    if (rc < 0) {
        check_err(err, sizeof(err), "train_parse_args");
    } else if (rc == 0) {
        // accepted options must satisfy every rule train states, and give a
        // configuration the model accepts (vocab_size is not a flag: use 1)
        GameConfig cfg = {o.context, 1, o.layers, o.heads, o.channels};
        if (config_check(&cfg) != NULL) {
            fail("train accepted flags whose model config is invalid");
        }
        if (o.batch < 1 || o.steps < 1 || o.warmup < 0 || o.warmup > o.steps ||
            !(o.lr > 0.0f) || !(o.min_lr >= 0.0f) || o.min_lr > o.lr ||
            !(o.val_fraction > 0.0f && o.val_fraction <= 0.9f) || o.eval_every < 1 ||
            o.eval_batches < 1 || o.log_every < 1 || o.threads < 0 ||
            (o.game_mask & ~AME_FULL) != 0 || !isfinite(o.clip) || o.clip < 0.0f ||
            !isfinite(o.weight_decay) || o.weight_decay < 0.0f) {
            fail("train accepted flags outside their documented ranges");
        }
        if (o.input == NULL || o.output == NULL) {
            fail("train options lost the input or output path");
        }
    } else if (rc != 1) {
        fail("train_parse_args returned something other than -1, 0 or 1");
    }
    free(store);
}
#endif

// ----------------------------------------------------------------------------
// run flags

#ifdef FUZZ_HAVE_RUN_ARGS
static void fuzz_run(const unsigned char* data, size_t n) {
    char prog[] = "run";
    char* argv[MAX_ARGS + 1];
    char* store;
    int argc = split_args(data, n, prog, argv, &store);
    if (store == NULL) {
        return;
    }

    RunOptions o;
    run_options_default(&o);
    char err[256];
    err[0] = '\0';
    optind = 0;
    int rc = run_parse_args(&o, argc, argv, err, sizeof(err));
    if (rc < 0) {
        check_err(err, sizeof(err), "run_parse_args");
    } else if (rc == 0) {
        // accepted settings must pass the sampler's own check (vocab_size 0:
        // the vocabulary is not known before the model is loaded)
        if (sampler_check(o.temperature, o.top_k, o.top_p, 0) != NULL) {
            fail("run accepted sampler settings that sampler_check rejects");
        }
        if (o.model == NULL || o.tokens < 0 || (o.prompt != NULL && o.prompt_file != NULL)) {
            fail("run accepted flags that break its documented rules");
        }
    } else if (rc != 1) {
        fail("run_parse_args returned something other than -1, 0 or 1");
    }
    free(store);
}
#endif

// ----------------------------------------------------------------------------
// ame_parse_mode, against a reference

// The reference: words between commas, blanks trimmed, an optional '-' that
// removes, then full, off or c1 .. c5 in any case. Returns 0 or -1.
static int reference_mode(const char* mode, unsigned* mask) {
    static const char* const words[7] = {"full", "off", "c1", "c2", "c3", "c4", "c5"};
    static const unsigned bits[7] = {AME_FULL, 0, 1, 2, 4, 8, 16};
    unsigned m = 0;
    const char* w = mode;
    for (;;) {
        // one word: [w, w + n)
        const char* comma = strchr(w, ',');
        size_t n = comma ? (size_t)(comma - w) : strlen(w);
        while (n > 0 && isspace((unsigned char)w[0])) {
            w++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)w[n - 1])) {
            n--;
        }
        int remove = n > 0 && w[0] == '-';
        if (remove) {
            w++;
            n--;
        }

        // the word must be one of the seven, whatever its case
        int found = -1;
        for (int k = 0; k < 7 && found < 0; k++) {
            if (strlen(words[k]) != n) {
                continue;
            }
            size_t i = 0;
            while (i < n && tolower((unsigned char)w[i]) == words[k][i]) {
                i++;
            }
            if (i == n) {
                found = k;
            }
        }
        if (found < 0) {
            return -1;
        }
        m = remove ? (m & ~bits[found]) : (m | bits[found]);
        if (comma == NULL) {
            break;
        }
        w = comma + 1;
    }
    *mask = m;
    return 0;
}

static void fuzz_mode(const unsigned char* data, size_t n) {
    char* mode = malloc(n + 1);
    if (mode == NULL) {
        return;
    }
    memcpy(mode, data, n);
    mode[n] = '\0';

    // the parser and the reference must agree on the verdict and the mask
    unsigned mask = 0xdead, want = 0;
    char err[512];
    err[0] = '\0';
    int rc = ame_parse_mode(mode, &mask, err, sizeof(err));
    int want_rc = reference_mode(mode, &want);
    if (rc != want_rc || (rc == 0 && mask != want)) {
        fprintf(stderr, "fuzz_flags: mode \"%s\": parser %d mask %#x, reference %d mask "
                "%#x\n", mode, rc, mask, want_rc, want);
        fail("ame_parse_mode disagrees with the reference");
    }
    if (rc != 0) {
        check_err(err, sizeof(err), "ame_parse_mode");

        // a short buffer and no buffer at all must be just as safe
        char small[9];
        memset(small, 'Z', sizeof(small));
        if (ame_parse_mode(mode, &mask, small, 8) != -1 || memchr(small, '\0', 8) == NULL ||
            small[8] != 'Z' || ame_parse_mode(mode, &mask, NULL, 0) != -1) {
            fail("ame_parse_mode with a short or missing error buffer");
        }
        free(mode);
        return;
    }

    // an accepted mask prints as a mode string that parses back to itself
    if ((mask & ~AME_FULL) != 0) {
        fail("ame_parse_mode set bits outside AME_FULL");
    }
    char text[64];
    unsigned again = 0xdead;
    ame_mode_string(mask, text, sizeof(text));
    if (ame_parse_mode(text, &again, NULL, 0) != 0 || again != mask) {
        fail("ame_mode_string does not parse back to the same mask");
    }
    free(mode);
}

// ----------------------------------------------------------------------------
// sampler_check, against the rules in sampler.h

static void fuzz_sampler(const unsigned char* data, size_t n) {
    if (n < 16) {
        return;
    }
    float temperature = get_f32(data);
    int top_k = (int)get_u32(data + 4);
    float top_p = get_f32(data + 8);
    int vocab = (int)get_u32(data + 12);

    // small values are the interesting ones; fold some inputs towards them
    if (n > 16 && (data[16] & 1)) {
        top_k %= 70;
        vocab %= 70;
    }
    int ok = isfinite(temperature) && temperature >= 0.0f && top_k >= 0 &&
             !(vocab > 0 && top_k > vocab) && top_p > 0.0f && top_p <= 1.0f;
    const char* msg = sampler_check(temperature, top_k, top_p, vocab);
    if ((msg == NULL) != ok) {
        fprintf(stderr, "fuzz_flags: sampler_check(%g, %d, %g, %d) gave %s\n",
                (double)temperature, top_k, (double)top_p, vocab, msg ? msg : "NULL");
        fail("sampler_check disagrees with the rules in sampler.h");
    }
    if (msg != NULL && msg[0] == '\0') {
        fail("sampler_check rejected with an empty message");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) {
        return 0;
    }
    const unsigned char* rest = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
#ifdef FUZZ_HAVE_TRAIN_ARGS
        fuzz_train(rest, n);
#endif
        break;
    case 1:
#ifdef FUZZ_HAVE_RUN_ARGS
        fuzz_run(rest, n);
#endif
        break;
    case 2:
        fuzz_mode(rest, n);
        break;
    default:
        fuzz_sampler(rest, n);
        break;
    }
    return 0;
}
