// run.c: the `run` program, sampling text from a checkpoint in the terminal.
//
// stdout carries only the generated text, flushed token by token; everything
// else (speed, hints, errors) goes to stderr, so the output can be piped or
// compared. The prompt comes from -i or -f; without either it is read from
// stdin: line by line, each line answered, when stdin is a terminal, and as one
// whole text otherwise. `run --info MODEL` describes a checkpoint instead.
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ame.h"
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
    snprintf(err, errlen, "the prompt's %s at position %zu (counting from 1; "
             "byte %zu counting from 0) never occurs in the model's training text; "
             "remove or replace it", what, chars + 1, bad_offset);
    return -1;
}

void run_usage(FILE* f) {
    RunOptions d;
    run_options_default(&d);
    fprintf(f,
        "usage: run MODEL [options]\n"
        "       run --info MODEL\n"
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
        "  -f, --prompt-file F   read the text to continue from a file (less one final\n"
        "                        line end, as from stdin)\n"
        "      --no-cache        recompute the whole window for every token instead of\n"
        "                        using the key/value cache, with the float32 forward pass\n"
        "                        (slower; for comparisons: it samples what --fp32 does,\n"
        "                        or with --bf16 what --bf16 does)\n"
        "      --bf16            decode with the weight matrices rounded to bfloat16\n"
        "                        (half as fast as the default, which decodes with 8-bit\n"
        "                        integers; --no-cache and --noise then sample the same\n"
        "                        rounded model)\n"
        "      --fp32            decode with the float32 weights as stored (slowest)\n"
        "      --noise           sample from the noisy network GAME trained (its C2 and\n"
        "                        C5 noise at the learned scales and strength), not the\n"
        "                        clean weights; slower, it needs the full forward pass\n"
        "      --threads N       OpenMP threads (default 1: one token at a time gains\n"
        "                        nothing from more)\n"
        "      --info            describe the checkpoint (shape, vocabulary, sections,\n"
        "                        training state, GAME state) and exit\n"
        "  -h, --help            this text\n\n"
        "Without -i or -f the prompt comes from stdin: on a terminal, each line you type\n"
        "is continued in turn (an empty line starts from a newline; Ctrl-D ends);\n"
        "from a pipe or a file, the whole input is one prompt, less one final line end\n"
        "(empty: a newline). stdout holds the generated text and one final newline.\n\n"
        "examples:\n"
        "  run model.bin -n 300 -t 0.8 -i \"ROMEO:\"\n"
        "  run model.bin                         type prompts, Ctrl-D to end\n"
        "  echo \"ROMEO:\" | run model.bin -n 300  the same as -i with that text\n"
        "  run --info model.bin\n",
        d.tokens, d.temperature, d.top_k, d.top_p, (unsigned long long)d.seed);
}

// Parses a whole-string number in [lo, hi] into *out; -1 with a message if not.
static int parse_number(const char* flag, const char* s, double lo, double hi, double* out,
                        char* err, size_t errlen) {
    char* end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected a number from %g to %g", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

// The same for a whole number, written in decimal digits.
static int parse_whole(const char* flag, const char* s, long long lo, long long hi,
                       long long* out, char* err, size_t errlen) {
    char* end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected a whole number from %lld to %lld", flag, s,
                 lo, hi);
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
        {"fp32", no_argument, 0, 'F'},
        {"bf16", no_argument, 0, 'B'},
        {"noise", no_argument, 0, 'G'},
        {"threads", required_argument, 0, 'T'},
        {"info", no_argument, 0, 'I'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    double v = 0.0;
    long long w = 0;
    opterr = 0;
    optind = 0; // a full rescan, so the parser can run more than once
    while ((c = getopt_long(argc, argv, ":n:t:k:p:s:i:f:h", longs, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'n':
            rc = parse_whole("-n", optarg, 0, 1000000000000LL, &w, err, errlen);
            if (rc == 0) o->tokens = (long)w;
            break;
        case 't':
            rc = parse_number("-t", optarg, 0, 1e6, &v, err, errlen);
            if (rc == 0) o->temperature = (float)v;
            break;
        case 'k':
            rc = parse_whole("-k", optarg, 0, 1 << 21, &w, err, errlen);
            if (rc == 0) o->top_k = (int)w;
            break;
        case 'p':
            rc = parse_number("-p", optarg, 1e-30, 1, &v, err, errlen);
            if (rc == 0) o->top_p = (float)v;
            break;
        case 's':
            rc = parse_whole("-s", optarg, 0, LLONG_MAX, &w, err, errlen);
            if (rc == 0) o->seed = (uint64_t)w;
            break;
        case 'T':
            rc = parse_whole("--threads", optarg, 1, 1024, &w, err, errlen);
            if (rc == 0) o->threads = (int)w;
            break;
        case 'i': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'N': o->no_cache = 1; break;
        case 'F': o->fp32 = 1; break;
        case 'B': o->bf16 = 1; break;
        case 'G': o->noise = 1; break;
        case 'I': o->info = 1; break;
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
    if (o->fp32 && o->bf16) {
        snprintf(err, errlen, "give one precision, --bf16 or --fp32, not both");
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// Reading a prompt from a stream

// The largest prompt read from a stream.
#define MAX_PROMPT_BYTES (64 << 20)

unsigned char* read_stream(FILE* f, const char* what, size_t* n, char* err,
                           size_t errlen) {
    size_t cap = 4096, len = 0;
    unsigned char* buf = xmalloc(cap, "prompt");

    // read in growing blocks until the end, keeping room for the NUL
    for (;;) {
        if (cap - len < 2) {
            if (cap > SIZE_MAX / 2) {
                fprintf(stderr, "error: %s is too large to hold in memory\n", what);
                exit(EXIT_FAILURE);
            }
            unsigned char* grown = realloc(buf, cap * 2);
            if (!grown) {
                fprintf(stderr, "error: out of memory reading %s (%zu bytes so far)\n",
                        what, len);
                exit(EXIT_FAILURE);
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
        if (len > MAX_PROMPT_BYTES) {
            snprintf(err, errlen, "%s holds more than %d MiB; a prompt that long is not a "
                     "prompt (the model sees only its last characters): give a shorter "
                     "one", what, MAX_PROMPT_BYTES >> 20);
            free(buf);
            *n = 0;
            return NULL;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read the prompt from %s: %s; give it with -i or -f",
                 what, strerror(errno));
        free(buf);
        *n = 0;
        return NULL;
    }
    buf[len] = '\0';
    *n = len;
    return buf;
}

// ----------------------------------------------------------------------------
// run --info: what a checkpoint holds

// The vocabulary line shows every token up to this many; a larger vocabulary
// shows its first VOCAB_HEAD and last VOCAB_TAIL tokens.
#define VOCAB_SHOW_ALL 160
#define VOCAB_HEAD 120
#define VOCAB_TAIL 20

// n with commas between groups of three digits, into buf (at least 32 bytes).
static const char* with_commas(uint64_t n, char* buf) {
    char digits[24];
    int nd = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < nd; i++) {
        if (i > 0 && (nd - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

// A byte count for people: "260 bytes" or "3,281,460 bytes (3.1 MiB)", into buf
// (at least 64 bytes).
static const char* human_bytes(uint64_t n, char* buf, size_t len) {
    char c[32];
    with_commas(n, c);
    if (n < 1024) snprintf(buf, len, "%s bytes", c);
    else if (n < 1024 * 1024) snprintf(buf, len, "%s bytes (%.1f KiB)", c, n / 1024.0);
    else if (n < 1024ull * 1024 * 1024)
        snprintf(buf, len, "%s bytes (%.1f MiB)", c, n / (1024.0 * 1024.0));
    else snprintf(buf, len, "%s bytes (%.2f GiB)", c, n / (1024.0 * 1024.0 * 1024.0));
    return buf;
}

// Code points that would be invisible, would look like a plain space, or would
// join the character before them: the vocabulary line shows them as \uXXXX.
static int hidden_code_point(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0xA0) || cp == 0xAD || (cp >= 0x300 && cp <= 0x36F) ||
           cp == 0x34F || cp == 0x1680 || cp == 0x180E || (cp >= 0x2000 && cp <= 0x200F) ||
           (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F) ||
           cp == 0x3000 || (cp >= 0xE000 && cp <= 0xF8FF) || cp == 0xFEFF ||
           (cp >= 0xFFF9 && cp <= 0xFFFF) || (cp >= 0xE0000 && cp <= 0xE007F) ||
           cp >= 0xF0000;
}

// Writes token id for the vocabulary line: a printable character as itself;
// \n \t \r \\ \" as C escapes; other ASCII controls and the raw-byte tokens
// (bytes that are not UTF-8, always 0x80 or above) as \xNN; hidden code points
// as \uXXXX (\UXXXXXXXX above the BMP).
static void put_token(FILE* out, const Tokenizer* tk, int id) {
    uint32_t sym = tk->symbols[id];
    switch (sym) {
    case '\n': fputs("\\n", out); return;
    case '\t': fputs("\\t", out); return;
    case '\r': fputs("\\r", out); return;
    case '\\': fputs("\\\\", out); return;
    case '"': fputs("\\\"", out); return;
    }
    if (sym >= TOKEN_RAW_BASE) fprintf(out, "\\x%02X", (unsigned)(sym - TOKEN_RAW_BASE));
    else if (sym < 0x20 || sym == 0x7F) fprintf(out, "\\x%02X", (unsigned)sym);
    else if (hidden_code_point(sym))
        fprintf(out, sym > 0xFFFF ? "\\U%08X" : "\\u%04X", (unsigned)sym);
    else {
        unsigned char b[4];
        int nb = tokenizer_token_bytes(tk, id, b);
        if (nb > 0) fwrite(b, 1, (size_t)nb, out);
    }
}

// The vocabulary on one line, in token id order.
static void print_vocabulary(FILE* out, const Tokenizer* tk) {
    int V = tk->size, raw = 0;
    for (int i = 0; i < V; i++) raw += tk->symbols[i] >= TOKEN_RAW_BASE;
    int head = V > VOCAB_SHOW_ALL ? VOCAB_HEAD : V;
    int tail = V > VOCAB_SHOW_ALL ? VOCAB_TAIL : 0;

    // the tokens, cut in the middle for a large vocabulary
    if (tail) fprintf(out, "vocabulary: %d tokens, the first %d and the last %d: \"", V,
                      head, tail);
    else fprintf(out, "vocabulary: %d tokens: \"", V);
    for (int i = 0; i < head; i++) put_token(out, tk, i);
    if (tail) {
        fputs("\" ... \"", out);
        for (int i = V - tail; i < V; i++) put_token(out, tk, i);
    }
    fputs("\"\n", out);
    if (raw)
        fprintf(out, "  (%d of them are bytes that are not UTF-8, shown as \\xNN)\n", raw);
}

// Writes a stored path or option string with control bytes as \xNN.
static void put_text(FILE* out, const char* s) {
    if (!s) {
        fputs("(none)", out);
        return;
    }
    for (const unsigned char* p = (const unsigned char*)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7F) fprintf(out, "\\x%02X", *p);
        else fputc(*p, out);
    }
}

// What a section tag holds, for the sections table ("" for a tag not known here).
static const char* section_meaning(const char* tag) {
    static const char* const known[][2] = {
        {"VOCB", "vocabulary"},           {"PARM", "parameters"},
        {"MOM1", "AdamW first moments"},  {"MOM2", "AdamW second moments"},
        {"DIRU", "GAME: last update directions"},
        {"DIRD", "GAME: last momentum derivatives"},
        {"TRAN", "training state"},       {"GAME", "GAME state"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(tag, known[i][0]) == 0) return known[i][1];
    return "";
}

// The TRAN section, decoded. Its layout is the one tran_write() in train.c
// writes, every word a little-endian 64-bit value, doubles as their bits:
//   magic | version << 32, step, best validation loss (f64), best step,
//   skipped steps, optimizer steps, G, then G f64 each of beta1 powers, learning
//   rates and beta1s of the last step; the strings input, output and last (u64
//   length, or all ones for none, then the bytes padded with zeros to 8); seed,
//   batch, steps, warmup; f64 lr, min-lr, weight decay, clip, validation
//   fraction, beta1, beta2, eps; eval-every, eval-batches, save-every, GAME mask,
//   dither; and TRAN_GAME_CONSTANTS f64 GAME constants (train.c's AME_FIELDS).
// Any change there must be made here too; the tests catch a mismatch.
#define TRAN_MAGIC_WORD 0x4e415254u // "TRAN" as a little-endian word
#define TRAN_LAYOUT_VERSION 1u
#define TRAN_GAME_CONSTANTS 29

typedef struct {
    long step, best_step, skipped, adam_steps;
    double best_val;                // INFINITY before the first evaluation
    int groups;
    double lr_lo, lr_hi;            // the last step's learning rates over the groups
    char *input, *output, *last;    // malloc'd, or NULL when not stored
    uint64_t seed;
    long batch, steps, warmup;
    double lr, min_lr, weight_decay, clip, val_fraction, beta1, beta2, adam_eps;
    long eval_every, eval_batches, save_every;
    unsigned game_mask;
    int dither;
} TranInfo;

static void tran_info_free(TranInfo* t) {
    free(t->input);
    free(t->output);
    free(t->last);
    memset(t, 0, sizeof(*t));
}

// Decodes a TRAN section into t. Returns 0, or -1 with a message in err (t then
// holds nothing to free).
static int tran_decode(const CkptSection* sec, TranInfo* t, char* err, size_t errlen) {
    memset(t, 0, sizeof(*t));
    CkptBlob c = {sec->data, 0, (size_t)sec->size, 0};

    // the state of the run
    uint64_t magic = ckpt_blob_get_u64(&c);
    if (c.bad || (magic & 0xffffffffu) != TRAN_MAGIC_WORD) {
        snprintf(err, errlen, "its training state (TRAN) does not start with the TRAN "
                 "magic: the section is damaged, or was written by another version of "
                 "train");
        return -1;
    }
    if ((magic >> 32) != TRAN_LAYOUT_VERSION) {
        snprintf(err, errlen, "its training state (TRAN) has layout version %u, but this "
                 "run reads version %u: it was written by another version of train",
                 (unsigned)(magic >> 32), TRAN_LAYOUT_VERSION);
        return -1;
    }
    t->step = (long)ckpt_blob_get_u64(&c);
    t->best_val = ckpt_blob_get_f64(&c);
    t->best_step = (long)ckpt_blob_get_u64(&c);
    t->skipped = (long)ckpt_blob_get_u64(&c);
    t->adam_steps = (long)ckpt_blob_get_u64(&c);
    uint64_t G = ckpt_blob_get_u64(&c);
    if (c.bad || G < 1 || G > MAX_GROUPS) goto damaged;
    t->groups = (int)G;
    c.n += 8 * (size_t)G; // beta1 powers: not shown
    if (c.n > c.cap) goto damaged;
    t->lr_lo = INFINITY;
    t->lr_hi = -INFINITY;
    for (int g = 0; g < t->groups; g++) {
        double lr = ckpt_blob_get_f64(&c);
        t->lr_lo = lr < t->lr_lo ? lr : t->lr_lo;
        t->lr_hi = lr > t->lr_hi ? lr : t->lr_hi;
    }
    c.n += 8 * (size_t)G; // beta1s of the last step: not shown
    if (c.n > c.cap) goto damaged;

    // the options that shape the run
    t->input = ckpt_blob_get_str(&c);
    t->output = ckpt_blob_get_str(&c);
    t->last = ckpt_blob_get_str(&c);
    t->seed = ckpt_blob_get_u64(&c);
    t->batch = (long)ckpt_blob_get_u64(&c);
    t->steps = (long)ckpt_blob_get_u64(&c);
    t->warmup = (long)ckpt_blob_get_u64(&c);
    t->lr = ckpt_blob_get_f64(&c);
    t->min_lr = ckpt_blob_get_f64(&c);
    t->weight_decay = ckpt_blob_get_f64(&c);
    t->clip = ckpt_blob_get_f64(&c);
    t->val_fraction = ckpt_blob_get_f64(&c);
    t->beta1 = ckpt_blob_get_f64(&c);
    t->beta2 = ckpt_blob_get_f64(&c);
    t->adam_eps = ckpt_blob_get_f64(&c);
    t->eval_every = (long)ckpt_blob_get_u64(&c);
    t->eval_batches = (long)ckpt_blob_get_u64(&c);
    t->save_every = (long)ckpt_blob_get_u64(&c);
    t->game_mask = (unsigned)ckpt_blob_get_u64(&c);
    t->dither = (int)ckpt_blob_get_u64(&c);
    if (c.bad) goto damaged;

    // the GAME constants close the blob: exactly that many words must remain
    if (c.cap - c.n != 8 * (size_t)TRAN_GAME_CONSTANTS) {
        snprintf(err, errlen, "its training state (TRAN) is %zu bytes, but its layout "
                 "needs %zu: the section is damaged, or was written by another version "
                 "of train (the model itself can still be sampled)",
                 c.cap, c.n + 8 * (size_t)TRAN_GAME_CONSTANTS);
        tran_info_free(t);
        return -1;
    }
    return 0;
damaged:
    snprintf(err, errlen, "its training state (TRAN) ends too soon (%zu bytes) for its "
             "layout: the section is damaged, or was written by another version of train "
             "(the model itself can still be sampled)", c.n);
    tran_info_free(t);
    return -1;
}

static void print_training(FILE* out, const TranInfo* t) {
    char mode[64];
    ame_mode_string(t->game_mask, mode, sizeof(mode));
    fprintf(out, "training state (TRAN):\n");
    fprintf(out, "  steps trained: %ld of %ld (%ld skipped, %ld optimizer steps)\n",
            t->step, t->steps, t->skipped, t->adam_steps);
    if (t->best_step >= 0 && isfinite(t->best_val))
        fprintf(out, "  best validation loss: %.4f at step %ld\n", t->best_val,
                t->best_step);
    else fprintf(out, "  best validation loss: none yet (no evaluation has run)\n");
    fprintf(out, "  options: batch %ld, steps %ld, lr %g, min-lr %g, warmup %ld, seed %llu\n",
            t->batch, t->steps, t->lr, t->min_lr, t->warmup, (unsigned long long)t->seed);
    fprintf(out, "           weight decay %g, clip %g, beta1 %g, beta2 %g, eps %g\n",
            t->weight_decay, t->clip, t->beta1, t->beta2, t->adam_eps);
    fprintf(out, "           val fraction %g, eval every %ld steps on %ld batches, save "
            "every %ld\n", t->val_fraction, t->eval_every, t->eval_batches, t->save_every);
    fputs("  input: ", out);
    put_text(out, t->input);
    fputs("\n  output: ", out);
    put_text(out, t->output);
    fputs(", latest: ", out);
    put_text(out, t->last);
    fprintf(out, "\n  GAME mode: %s%s\n", mode,
            (t->game_mask & AME_C2) ? (t->dither ? " (antithetic noise)" :
                                       " (independent noise)") : "");
    fprintf(out, "  learning rate of the last step: %.4g .. %.4g over %d groups\n",
            t->lr_lo, t->lr_hi, t->groups);
}

static void print_game(FILE* out, const AmeState* st) {
    char mode[64];
    ame_mode_string(st->mask, mode, sizeof(mode));
    double lo = INFINITY, hi = -INFINITY, mu = 0.0;
    for (int g = 0; g < st->groups; g++) {
        double alpha = exp(st->a[g]);
        lo = alpha < lo ? alpha : lo;
        hi = alpha > hi ? alpha : hi;
        mu += 1.0 / (1.0 + exp(-st->b[g]));
    }
    mu /= st->groups;
    fprintf(out, "GAME state (GAME):\n");
    fprintf(out, "  mode: %s\n", mode);
    fprintf(out, "  eta: %.4f (plateau score d %.3f)\n", st->eta, st->plateau);
    fprintf(out, "  alpha = exp(a): %.4g .. %.4g over %d groups (without the warmup and "
            "cosine shape)\n", lo, hi, st->groups);
    fprintf(out, "  mean mu = S(b): %.4f\n", mu);
    fprintf(out, "  jumps: %ld proposed, %ld accepted (the gate fired %ld times in %ld "
            "proposals)\n", st->jumps_proposed, st->jumps_accepted, st->gate_fires,
            st->proposals);
}

int run_info(const char* path, FILE* out, char* err, size_t errlen) {
    // the model: every check the loader makes, with its messages
    Model m;
    Tokenizer tk;
    Checkpoint ck;
    if (model_load(&m, &tk, &ck, path, err, errlen) != 0) return -1;

    // the two optional sections, decoded before anything is printed
    char why[512];
    int rc = 0;
    TranInfo tran;
    int have_tran = 0;
    const CkptSection* ts = ckpt_find(&ck, "TRAN");
    if (ts) {
        if (tran_decode(ts, &tran, why, sizeof(why)) == 0) have_tran = 1;
        else {
            snprintf(err, errlen, "%s: %s", path, why);
            rc = -1;
        }
    }
    AmeState* game = NULL;
    const CkptSection* gs = ckpt_find(&ck, "GAME");
    if (gs) {
        game = xmalloc(sizeof(AmeState), "GAME state");
        if (ame_deserialize(game, gs->data, (size_t)gs->size, why, sizeof(why)) != 0) {
            if (rc == 0) snprintf(err, errlen, "%s: %s", path, why);
            rc = -1;
            free(game);
            game = NULL;
        }
    }

    // the file: its size, and the format version from its header
    struct stat st;
    unsigned long long file_size = stat(path, &st) == 0 ? (unsigned long long)st.st_size : 0;
    unsigned char head[CKPT_OFF_VERSION + 4];
    unsigned version = 0;
    FILE* f = fopen(path, "rb");
    if (f && fread(head, 1, sizeof(head), f) == sizeof(head))
        version = ckpt_get_u32(head + CKPT_OFF_VERSION);
    if (f) fclose(f);
    char size_text[64];
    fputs("file: ", out);
    put_text(out, path);
    fprintf(out, ", %s, checkpoint format version %u\n",
            human_bytes(file_size, size_text, sizeof(size_text)), version);

    // configuration and parameter counts
    const GameConfig* c = &m.config;
    fprintf(out, "model: %d layer%s, %d head%s, %d channels (head size %d), context %d, "
            "vocabulary %d\n", c->layers, c->layers == 1 ? "" : "s", c->heads,
            c->heads == 1 ? "" : "s", c->channels, c->channels / c->heads, c->context,
            c->vocab_size);
    size_t base = 0;
    for (int i = 0; i < NUM_BASE_PARAM_TENSORS; i++) base += m.param_sizes[i];
    char n1[32], n2[32], n3[32];
    fprintf(out, "parameters: %s (GPT-2 part %s, GAME noise scales %s)\n",
            with_commas(m.num_params, n1), with_commas(base, n2),
            with_commas(m.num_params - base, n3));
    print_vocabulary(out, &tk);

    // the sections
    fprintf(out, "sections: %d\n", ck.num_sections);
    for (int i = 0; i < ck.num_sections; i++) {
        const CkptSection* s = &ck.sections[i];
        char sz[64];
        const char* meaning = section_meaning(s->tag);
        fprintf(out, "  %s  %-32s%s\n", s->tag, human_bytes(s->size, sz, sizeof(sz)),
                meaning);
    }

    // training and GAME state, then the noise scales the parameters hold
    if (have_tran) print_training(out, &tran);
    else if (ts) fprintf(out, "training state (TRAN): cannot be decoded (see the error)\n");
    else fprintf(out, "training state: none (a model without its training run)\n");
    if (game) print_game(out, game);
    else if (gs) fprintf(out, "GAME state (GAME): cannot be decoded (see the error)\n");
    else fprintf(out, "GAME state: none\n");
    fprintf(out, "noise scales (mean sigma = exp(s)):\n");
    fprintf(out, "  C2: attention output %.4g, MLP output %.4g\n",
            model_mean_sigma(&m, P_NOISE_ATT), model_mean_sigma(&m, P_NOISE_MLP));
    fprintf(out, "  C5: attention logits %.4g, LM head %.4g\n",
            model_mean_sigma(&m, P_NOISE_LOGIT), model_mean_sigma(&m, P_NOISE_HEAD));

    if (have_tran) tran_info_free(&tran);
    free(game);
    ckpt_free_loaded(&ck);
    tokenizer_free(&tk);
    model_free(&m);
    return rc;
}

// Switches on the noise a model was trained with (--noise): the C2 and C5
// sites of its GAME mode, at the strength eta of its GAME state. Returns 0, or
// -1 with a message when the checkpoint has no noise to offer.
int noise_from_checkpoint(Model* m, const Checkpoint* ck, uint64_t seed, char* err,
                          size_t errlen) {
    const CkptSection* sec = ckpt_find(ck, "GAME");
    AmeState st;
    char why[256];
    if (!sec || ame_deserialize(&st, sec->data, sec->size, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "--noise needs the GAME state of a training checkpoint, and "
                 "this one has %s", sec ? "a damaged one" : "none");
        return -1;
    }
    if (!(st.mask & (AME_C2 | AME_C5))) {
        snprintf(err, errlen, "--noise: this model was trained without noise sites (GAME "
                 "c2 or c5 off), so it has no learned noise to sample with; train one "
                 "with --game c2, c5 or full, or sample without --noise");
        return -1;
    }
    m->noise = (NoiseConfig){(st.mask & AME_C2) != 0, 0, (st.mask & AME_C5) != 0,
                             (st.mask & AME_C5) != 0, (float)st.eta, seed, 0};
    return 0;
}

#ifndef GAME_NO_MAIN
// ----------------------------------------------------------------------------
// The run program

// Generates `tokens` characters after the prompt ids (n, maybe 0) with sampler
// s: the text and a final newline on stdout, the speed on stderr. echo (echo_len
// bytes, or NULL) is the prompt's text, shown on stderr just before the
// continuation, after any note. Returns 0, or -1 when the model produced a
// non-finite logit or the text could not be written (generate has said so).
static int generate_after(Model* m, const Tokenizer* tk, Sampler* s, long tokens,
                          const int* ids, long n, const char* echo, size_t echo_len) {
    if (n > m->config.context)
        fprintf(stderr, "note: the prompt has %ld characters; the model sees its last %d\n",
                n, m->config.context);
    uint32_t start = tk->symbols[generate_start_token(tk)];
    if (n == 0 && start != '\n') {
        char first[64];
        tokenizer_describe(start, first, sizeof(first));
        fprintf(stderr, "note: the model's text had no line ends, so without a prompt it "
                "starts after its first character, %s; give one with -i\n", first);
    }
    if (echo) fwrite(echo, 1, echo_len, stderr);

    // generate, timing the whole loop
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long written = generate(m, tk, s, ids, n, tokens, stdout);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (written < 0) return -1;
    printf("\n");
    fflush(stdout);
    double sec = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "%ld tokens in %.3f s: %.0f tokens/s\n", written, sec,
            sec > 0 ? written / sec : 0.0);
    return 0;
}

// Interactive mode, for a terminal on stdin: each line read is a prompt (without
// its line end) and gets a continuation, until the end of input (Ctrl-D). The
// hint, the "> " marker and the prompt's echo go to stderr; a prompt with a
// character outside the vocabulary is reported and the next line is read. One
// sampler serves every prompt of the run, so a repeated prompt gets a new
// continuation, and the same seed and lines give the same text. Returns the
// exit status.
static int run_interactive(Model* m, const Tokenizer* tk, Sampler* s, long tokens) {
    fprintf(stderr, "Type a prompt and press Enter; run continues it with %ld characters. "
            "An empty line starts from a newline; Ctrl-D ends.\n", tokens);
    char* line = NULL;
    size_t cap = 0;
    int* ids = NULL;
    size_t ids_cap = 0;
    int status = EXIT_SUCCESS;
    for (;;) {
        // one line of any length; the end of input ends the loop
        fputs("> ", stderr);
        errno = 0;
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0) {
            fputc('\n', stderr);
            if (ferror(stdin)) {
                fprintf(stderr, "error: cannot read standard input: %s\n", strerror(errno));
                status = EXIT_FAILURE;
            }
            break;
        }
        if (len > 0 && line[len - 1] == '\n') len--;
        if (len > 0 && line[len - 1] == '\r') len--;

        // the prompt's tokens; an unknown character asks for another line
        if ((size_t)len + 1 > ids_cap) {
            free(ids);
            ids_cap = (size_t)len + 1;
            ids = xmalloc(ids_cap * sizeof(int), "prompt");
        }
        char err[1024];
        long n = encode_prompt(tk, (const unsigned char*)line, (size_t)len, ids, err,
                               sizeof(err));
        if (n < 0) {
            fprintf(stderr, "error: %s\n", err);
            continue;
        }

        // the prompt again (stderr), then its continuation (stdout) after it
        if (generate_after(m, tk, s, tokens, ids, n, line, (size_t)len) != 0) {
            status = EXIT_FAILURE;
            break;
        }
    }
    free(line);
    free(ids);
    return status;
}

// One prompt, from -i, -f or the whole of stdin (a pipe or a file; empty input
// starts from a newline), and its continuation. Returns the exit status.
static int run_one_prompt(Model* m, const Tokenizer* tk, Sampler* s, const RunOptions* o) {
    char err[1024];

    // the text: the flag's, or a new buffer read from the file or stdin
    const unsigned char* text = (const unsigned char*)(o->prompt ? o->prompt : "");
    size_t n = strlen((const char*)text);
    unsigned char* read_text = NULL;
    if (!o->prompt) {
        read_text = o->prompt_file ? read_file(o->prompt_file, &n, err, sizeof(err))
                                   : read_stream(stdin, "standard input", &n, err,
                                                 sizeof(err));
        if (!read_text) {
            fprintf(stderr, "error: %s\n", err);
            return EXIT_FAILURE;
        }

        // the input loses one final line end, which `echo TEXT |` and editors add
        if (n > 0 && read_text[n - 1] == '\n') {
            read_text[--n] = '\0';
            if (n > 0 && read_text[n - 1] == '\r') read_text[--n] = '\0';
        }
        text = read_text;
    }

    // its tokens, then the continuation
    int* ids = xmalloc((n + 1) * sizeof(int), "prompt");
    long n_ids = encode_prompt(tk, text, n, ids, err, sizeof(err));
    int status = EXIT_SUCCESS;
    if (n_ids < 0) fprintf(stderr, "error: %s\n", err);
    if (n_ids < 0 || generate_after(m, tk, s, o->tokens, ids, n_ids, NULL, 0) != 0)
        status = EXIT_FAILURE;
    free(ids);
    free(read_text);
    return status;
}

int main(int argc, char** argv) {
    RunOptions o;
    run_options_default(&o);
    char err[1024];
    int parsed = run_parse_args(&o, argc, argv, err, sizeof(err));
    if (parsed == 1) {
        run_usage(stdout);
        return stdout_finish() == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    if (parsed != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }

    // --info: describe the checkpoint and stop
    if (o.info) {
        int rc = run_info(o.model, stdout, err, sizeof(err));
        if (rc != 0) fprintf(stderr, "error: %s\n", err);
        if (stdout_finish() != 0) rc = -1;
        return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
#ifdef _OPENMP
    omp_set_num_threads(o.threads);
#endif

    // the model; with --bf16 its matrices rounded to bfloat16, so that every path
    // (the cache, --no-cache, --noise) computes that rounded model
    Model m;
    Tokenizer tk;
    Checkpoint ck;
    if (model_load(&m, &tk, &ck, o.model, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    if (o.bf16) model_round_bf16(&m);
    int noise_rc = o.noise ? noise_from_checkpoint(&m, &ck, o.seed, err, sizeof(err)) : 0;
    ckpt_free_loaded(&ck);
    if (noise_rc != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    const char* bad = sampler_check(o.temperature, o.top_k, o.top_p, tk.size);
    if (bad) {
        fprintf(stderr, "error: %s (the vocabulary has %d tokens)\n", bad, tk.size);
        return EXIT_FAILURE;
    }
    Sampler s;
    sampler_init(&s, tk.size, o.temperature, o.top_k, o.top_p, o.seed);
    s.no_cache = o.no_cache;
    s.precision = o.fp32 ? KV_FP32 : o.bf16 ? KV_BF16 : KV_INT8;

    // the key/value cache and its copy of the weights, made once for every
    // prompt (without the cache, or with noise, every token runs the full pass)
    KVCache kv;
    if (!o.no_cache && !o.noise) {
        kvcache_init(&kv, &m, s.precision);
        s.cache = &kv;
    }

    // a terminal without -i or -f: prompts line by line; otherwise one prompt
    int interactive = !o.prompt && !o.prompt_file && isatty(STDIN_FILENO);
    int status = interactive ? run_interactive(&m, &tk, &s, o.tokens)
                             : run_one_prompt(&m, &tk, &s, &o);
    if (status == EXIT_SUCCESS && stdout_finish() != 0) status = EXIT_FAILURE;
    if (s.cache) kvcache_free(&kv);
    sampler_free(&s);
    tokenizer_free(&tk);
    model_free(&m);
    return status;
}
#endif
