// test_run.c: tests of the run program's prompt sources and of `run --info`,
// suite "run".
//
// The checkpoints are made in this process with the trainer (train.h), so the
// tests know every value a checkpoint holds and can compare what `./run --info`
// prints with the trainer's own numbers: run.c decodes the TRAN section with a
// reader of its own, and a drift between it and train.c's writer fails here.
// The prompt tests run the built ./run (so `make` first, and run the tests from
// the repository root) with stdin from a pipe, a file, /dev/null, or a
// pseudo-terminal (forkpty), and compare the bytes on stdout. forkpty is in
// glibc's libc since 2.34; older systems need -lutil on the link line.
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ame.h"
#include "game.h"
#include "tokenizer.h"
#include "train.h"
#include "weights.h"

#include "testutil.h"

// The run program, in test_bin_dir() (set per test by setup).
static char g_run[PATH_MAX + 16];
#define RUN_BIN g_run
#define MAX_ARGS 32
#define PTY_TIMEOUT_MS 60000 // how long the terminal test waits for the child
#define TRAIN_STEPS 7       // steps the test checkpoints are trained for
#define LONG_LINE 1500      // a typed line longer than any fixed line buffer

// ----------------------------------------------------------------------------
// Temporary folder and files

// Per test: ./run must exist, and a fresh folder is made (g_test_dir).
static void setup(void) {
    test_find_program(g_run, sizeof(g_run), "run", 0);
    test_dir_setup("run");
}

TestSuite(run, .init = setup, .fini = test_dir_teardown, .timeout = 120);

// A text of about n bytes of lowercase words, spaces and newlines (so 'Q' and
// other capitals are outside its vocabulary), from a fixed word list.
static char* word_text(size_t n) {
    static const char* words[] = {
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away",
        "from", "old", "town", "over", "hill", "by", "river", "quick", "brown", "fox",
    };
    int nwords = (int)(sizeof(words) / sizeof(words[0]));
    char* text = malloc(n + 16);
    cr_assert_not_null(text);
    size_t len = 0;
    uint32_t state = 2024;
    while (len < n) {
        state = state * 1664525u + 1013904223u;
        len += (size_t)snprintf(text + len, n + 16 - len, "%s%s",
                                words[(state >> 16) % nwords],
                                (state >> 8) % 7 == 0 ? "\n" : " ");
    }
    text[n] = '\0';
    return text;
}

// ----------------------------------------------------------------------------
// A checkpoint made by the trainer

// The trainer's options for the test checkpoints: a tiny model, a schedule whose
// values are all distinct, and GAME components c1, c2, c4.
static void tiny_options(TrainOptions* o, const char* input, const char* output) {
    static char last[300];
    snprintf(last, sizeof(last), "%s.last", output);
    train_options_default(o);
    o->input = input;
    o->output = output;
    o->last = last;
    o->layers = 1;
    o->heads = 2;
    o->channels = 16;
    o->context = 8;
    o->batch = 2;
    o->steps = 40;
    o->warmup = 3;
    o->lr = 2e-3f;
    o->min_lr = 3e-4f;
    o->seed = 4242;
    o->eval_batches = 2;
    o->sample_chars = 0;
    char err[256];
    cr_assert_eq(ame_parse_mode("c1,c2,c4", &o->game_mask, err, sizeof(err)), 0, "%s", err);
    o->game = "c1,c2,c4";
}

// Trains TRAIN_STEPS steps on a fresh text, records an evaluation as the best
// one, and saves the run into path; the trainer stays open for the caller to
// compare against (trainer_free it).
static void make_checkpoint(Trainer* tr, const char* path) {
    static char text_path[256], out_path[256];
    snprintf(text_path, sizeof(text_path), "%s/train.txt", g_test_dir);
    snprintf(out_path, sizeof(out_path), "%s", path);
    char* text = word_text(4000);
    test_write_file(text_path, text, strlen(text));
    free(text);
    TrainOptions o;
    tiny_options(&o, text_path, out_path);
    char err[512];
    cr_assert_eq(trainer_init(tr, &o, err, sizeof(err)), 0, "trainer_init: %s", err);
    for (int i = 0; i < TRAIN_STEPS; i++) trainer_step(tr);
    tr->best_val = trainer_eval(tr, &tr->val, RNG_SITE_EVAL_VAL);
    tr->best_step = tr->step;
    cr_assert_eq(trainer_save(tr, path, err, sizeof(err)), 0, "trainer_save: %s", err);
}

// ----------------------------------------------------------------------------
// Running ./run

// Runs ./run with args (NULL-terminated, without argv[0]). Its stdin is
// /dev/null, the file `input`, or a pipe fed with input[0 .. input_len-1];
// stdout and stderr go to files of the test's folder and are read back.
static TestResult run_with(TestStdin from, const char* input, size_t input_len,
                           const char* const args[]) {
    char* argv[MAX_ARGS];
    test_argv_list(argv, MAX_ARGS, RUN_BIN, args);
    TestSpawn sp = {.dir = g_test_dir, .stdin_from = from, .input = input,
                    .input_len = input_len};
    return test_run_argv(&sp, argv);
}

#define ARGS(...) ((const char* const[]){__VA_ARGS__, NULL})

// Asserts that haystack holds the line fragment that the format gives.
static void expect_has(const char* haystack, const char* what, const char* fmt, ...) {
    char needle[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(needle, sizeof(needle), fmt, ap);
    va_end(ap);
    cr_expect(strstr(haystack, needle) != NULL, "%s lacks \"%s\":\n%s", what, needle,
              haystack);
}

// n with commas between groups of three digits, as --info prints counts.
static const char* commas(uint64_t n, char* buf) {
    char d[24];
    int nd = snprintf(d, sizeof(d), "%llu", (unsigned long long)n), o = 0;
    for (int i = 0; i < nd; i++) {
        if (i > 0 && (nd - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = d[i];
    }
    buf[o] = '\0';
    return buf;
}

static double mean_sigma_of(const Model* m, int tensor) {
    double s = 0.0;
    for (size_t i = 0; i < m->param_sizes[tensor]; i++) s += exp(m->params.t[tensor][i]);
    return s / m->param_sizes[tensor];
}

// ----------------------------------------------------------------------------
// run --info

Test(run, info_matches_the_trainer) {
    const char* ckpt = test_path("model.bin");
    Trainer tr;
    make_checkpoint(&tr, ckpt);
    TestResult r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--info", ckpt));
    test_expect_exit(&r, 0, "run --info");
    const char* out = r.out;
    const TrainOptions* o = &tr.opt;
    const Model* m = &tr.model;
    char c1[32], c2[32], c3[32];

    // the file and the model
    struct stat st;
    cr_assert_eq(stat(ckpt, &st), 0);
    expect_has(out, "--info", "file: %s, %s bytes", ckpt, commas((uint64_t)st.st_size, c1));
    expect_has(out, "--info", "checkpoint format version %u", CKPT_VERSION);
    expect_has(out, "--info", "model: 1 layer, 2 heads, 16 channels (head size 8), "
               "context 8, vocabulary %d\n", tr.tok.size);
    size_t base = 0;
    for (int i = 0; i < NUM_BASE_PARAM_TENSORS; i++) base += m->param_sizes[i];
    expect_has(out, "--info", "parameters: %s (GPT-2 part %s, GAME noise scales %s)\n",
               commas(m->num_params, c1), commas(base, c2),
               commas(m->num_params - base, c3));

    // the vocabulary: newline escaped, then space and the letters in order
    char vocab[256] = "";
    size_t vn = 0;
    for (int i = 0; i < tr.tok.size; i++) {
        uint32_t sym = tr.tok.symbols[i];
        cr_assert(sym == '\n' || sym == ' ' || (sym >= 'a' && sym <= 'z'));
        if (sym == '\n') vn += (size_t)snprintf(vocab + vn, sizeof(vocab) - vn, "\\n");
        else vocab[vn++] = (char)sym;
        vocab[vn] = '\0';
    }
    expect_has(out, "--info", "vocabulary: %d tokens: \"%s\"\n", tr.tok.size, vocab);

    // the sections a training checkpoint has
    const char* tags[] = {"VOCB", "PARM", "MOM1", "MOM2", "DIRU", "DIRD", "TRAN", "GAME"};
    expect_has(out, "--info", "sections: 8\n");
    for (int i = 0; i < 8; i++) expect_has(out, "--info", "  %s  ", tags[i]);
    expect_has(out, "--info", "  PARM  %s bytes", commas(4 * (uint64_t)m->num_params, c1));

    // the training state: steps, best loss, options, GAME mode
    expect_has(out, "--info", "steps trained: %d of %ld (%ld skipped, %ld optimizer steps)",
               TRAIN_STEPS, o->steps, tr.skipped, tr.adam.t);
    expect_has(out, "--info", "best validation loss: %.4f at step %d\n",
               (double)tr.best_val, TRAIN_STEPS);
    expect_has(out, "--info", "options: batch 2, steps 40, lr %g, min-lr %g, warmup 3, "
               "seed 4242\n", (double)o->lr, (double)o->min_lr);
    expect_has(out, "--info", "weight decay %g, clip %g, beta1 %g, beta2 %g, eps %g\n",
               (double)o->weight_decay, (double)o->clip, (double)o->beta1,
               (double)o->beta2, (double)o->adam_eps);
    expect_has(out, "--info", "val fraction %g, eval every %ld steps on %d batches, save "
               "every %ld\n", (double)o->val_fraction, o->eval_every, o->eval_batches,
               o->save_every);
    expect_has(out, "--info", "  input: %s\n", o->input);
    expect_has(out, "--info", "  output: %s, latest: %s\n", ckpt, o->last);
    expect_has(out, "--info", "  GAME mode: c1,c2,c4 (antithetic noise)\n");

    // the GAME state, from the trainer's own AmeState
    const AmeState* a = &tr.ame;
    double lo = INFINITY, hi = -INFINITY, mu = 0.0;
    for (int g = 0; g < a->groups; g++) {
        lo = fmin(lo, exp(a->a[g]));
        hi = fmax(hi, exp(a->a[g]));
        mu += 1.0 / (1.0 + exp(-a->b[g]));
    }
    cr_assert_gt(hi, lo, "C1 left every group's rate alike; the range shows nothing");
    expect_has(out, "--info", "  mode: c1,c2,c4\n");
    expect_has(out, "--info", "  eta: %.4f (", a->eta);
    expect_has(out, "--info", "alpha = exp(a): %.4g .. %.4g over %d groups", lo, hi,
               a->groups);
    expect_has(out, "--info", "mean mu = S(b): %.4f\n", mu / a->groups);
    expect_has(out, "--info", "jumps: %ld proposed, %ld accepted", a->jumps_proposed,
               a->jumps_accepted);

    // the noise scales, which C2 has moved away from their start
    double att = mean_sigma_of(m, P_NOISE_ATT);
    cr_assert(fabs(att - 0.1) > 1e-6, "C2 left sigma at its start");
    expect_has(out, "--info", "C2: attention output %.4g, MLP output %.4g\n", att,
               mean_sigma_of(m, P_NOISE_MLP));
    expect_has(out, "--info", "C5: attention logits %.4g, LM head %.4g\n",
               mean_sigma_of(m, P_NOISE_LOGIT), mean_sigma_of(m, P_NOISE_HEAD));
    cr_expect(strstr(r.err, "error") == NULL, "--info wrote an error:\n%s", r.err);

    // train's own reader of the options agrees with what --info printed
    TrainOptions back;
    train_options_default(&back);
    char* strings[3];
    char err[512];
    cr_assert_eq(train_options_from_checkpoint(ckpt, &back, strings, err, sizeof(err)), 0,
                 "%s", err);
    cr_expect(back.batch == o->batch && back.steps == o->steps && back.warmup == o->warmup &&
              back.seed == o->seed && back.lr == o->lr && back.min_lr == o->min_lr &&
              back.game_mask == o->game_mask, "train reads other options back");
    for (int i = 0; i < 3; i++) free(strings[i]);
    test_result_free(&r);
    trainer_free(&tr);
}

Test(run, info_model_without_training_state) {
    // a checkpoint of a model alone: VOCB and PARM
    GameConfig cfg = {8, 3, 1, 2, 16};
    Model m;
    model_init(&m, &cfg);
    model_init_weights(&m, 7);
    uint32_t symbols[3] = {'\t', 'a', TOKEN_RAW_BASE + 0xE9};
    Checkpoint c;
    ckpt_init(&c, &cfg);
    ckpt_add_u32(&c, "VOCB", symbols, 3);
    ckpt_add_f32(&c, "PARM", m.params_memory, m.num_params);
    const char* path = test_path("bare.bin");
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "%s", err);

    TestResult r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--info", path));
    test_expect_exit(&r, 0, "run --info on a bare model");
    expect_has(r.out, "--info", "vocabulary: 3 tokens: \"\\ta\\xE9\"\n");
    expect_has(r.out, "--info", "(1 of them are bytes that are not UTF-8");
    expect_has(r.out, "--info", "sections: 2\n");
    expect_has(r.out, "--info", "training state: none");
    expect_has(r.out, "--info", "GAME state: none");
    expect_has(r.out, "--info", "C2: attention output 0.1, MLP output 0.1\n");
    test_result_free(&r);
    model_free(&m);
}

Test(run, info_rejects_damage_and_drift) {
    const char* ckpt = test_path("model.bin");
    Trainer tr;
    make_checkpoint(&tr, ckpt);
    trainer_free(&tr);
    size_t n;
    char* good = test_read_file(ckpt, &n);

    // a flipped byte: the loader's message, exit 1, nothing on stdout
    const char* flipped = test_path("flipped.bin");
    good[n / 2] ^= 0x10;
    test_write_file(flipped, good, n);
    good[n / 2] ^= 0x10;
    TestResult r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--info", flipped));
    test_expect_exit(&r, 1, "run --info on a flipped byte");
    expect_has(r.err, "stderr", "error: ");
    expect_has(r.err, "stderr", "checksum mismatch");
    cr_expect_eq(r.out_len, 0, "--info printed for a damaged file:\n%s", r.out);
    test_result_free(&r);

    // a missing file
    r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--info", test_path("absent.bin")));
    test_expect_exit(&r, 1, "run --info on a missing file");
    expect_has(r.err, "stderr", "absent.bin");
    test_result_free(&r);

    // a TRAN section one word longer than tran_write writes, with valid checksums:
    // the reader must notice that it is not the layout it knows
    Checkpoint c, grown;
    char err[512];
    cr_assert_eq(ckpt_load(&c, ckpt, err, sizeof(err)), 0, "%s", err);
    ckpt_init(&grown, &c.config);
    unsigned char* tran = NULL;
    for (int i = 0; i < c.num_sections; i++) {
        const CkptSection* s = &c.sections[i];
        if (strcmp(s->tag, "TRAN") == 0) {
            tran = calloc(s->size + 8, 1);
            cr_assert_not_null(tran);
            memcpy(tran, s->data, s->size);
            ckpt_add(&grown, "TRAN", tran, s->size + 8);
        } else {
            ckpt_add(&grown, s->tag, s->data, s->size);
        }
    }
    cr_assert_not_null(tran, "the checkpoint has no TRAN section");
    const char* drifted = test_path("drifted.bin");
    cr_assert_eq(ckpt_save(&grown, drifted, err, sizeof(err)), 0, "%s", err);
    r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--info", drifted));
    test_expect_exit(&r, 1, "run --info on a longer TRAN");
    expect_has(r.err, "stderr", "but its layout needs");
    expect_has(r.out, "stdout", "training state (TRAN): cannot be decoded");
    test_result_free(&r);
    free(tran);
    ckpt_free_loaded(&c);
    free(good);
}

Test(run, help_mentions_info_and_stdin) {
    TestResult r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS("--help"));
    test_expect_exit(&r, 0, "run --help");
    expect_has(r.out, "--help", "--info");
    expect_has(r.out, "--help", "Ctrl-D");
    expect_has(r.out, "--help", "from a pipe or a file, the whole input is one prompt");
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// Prompts from stdin

Test(run, piped_prompt_equals_flag) {
    const char* ckpt = test_path("model.bin");
    Trainer tr;
    make_checkpoint(&tr, ckpt);
    trainer_free(&tr);

    // a short prompt: -i TEXT and TEXT on a pipe give the same bytes
    const char* prompt = "the cat sat";
    TestResult flag = run_with(TEST_STDIN_NULL, NULL, 0,
                               ARGS(ckpt, "-n", "40", "-s", "5", "-i", prompt));
    TestResult piped = run_with(TEST_STDIN_PIPE, prompt, strlen(prompt),
                                ARGS(ckpt, "-n", "40", "-s", "5"));
    test_expect_exit(&flag, 0, "run -i");
    test_expect_exit(&piped, 0, "run < pipe");
    cr_assert_gt(flag.out_len, 40, "run -i printed %zu bytes", flag.out_len);
    cr_expect(test_same_output(&flag, &piped), "-i and a pipe differ:\n%s\n%s", flag.out,
              piped.out);
    cr_expect(strstr(piped.err, "Ctrl-D") == NULL, "a pipe got the terminal's hint");
    test_result_free(&flag);
    test_result_free(&piped);

    // a prompt of 100 KB (more than a pipe holds) on a pipe and as a file on
    // stdin equals -f of that file
    char* text = word_text(100000);
    const char* pf = test_path("prompt.txt");
    test_write_file(pf, text, strlen(text));
    TestResult file = run_with(TEST_STDIN_NULL, NULL, 0,
                               ARGS(ckpt, "-n", "30", "-s", "9", "-f", pf));
    TestResult big = run_with(TEST_STDIN_PIPE, text, strlen(text),
                              ARGS(ckpt, "-n", "30", "-s", "9"));
    TestResult redirected = run_with(TEST_STDIN_FILE, pf, 0,
                                     ARGS(ckpt, "-n", "30", "-s", "9"));
    test_expect_exit(&file, 0, "run -f");
    test_expect_exit(&big, 0, "run < a long pipe");
    test_expect_exit(&redirected, 0, "run < file");
    cr_expect(test_same_output(&file, &big), "-f and a long pipe differ");
    cr_expect(test_same_output(&file, &redirected), "-f and a file on stdin differ");
    expect_has(big.err, "stderr", "note: the prompt has 100000 characters");
    free(text);
    test_result_free(&file);
    test_result_free(&big);
    test_result_free(&redirected);

    // empty stdin starts from a newline, as -i "" does
    TestResult empty = run_with(TEST_STDIN_NULL, NULL, 0, ARGS(ckpt, "-n", "25", "-s", "3"));
    TestResult nothing = run_with(TEST_STDIN_NULL, NULL, 0,
                                  ARGS(ckpt, "-n", "25", "-s", "3", "-i", ""));
    test_expect_exit(&empty, 0, "run < /dev/null");
    test_expect_exit(&nothing, 0, "run -i ''");
    cr_expect(test_same_output(&empty, &nothing), "empty stdin and -i '' differ");
    test_result_free(&empty);
    test_result_free(&nothing);

    // a character outside the vocabulary on a pipe is an error, not text
    TestResult bad = run_with(TEST_STDIN_PIPE, "the Q", 5, ARGS(ckpt, "-n", "5"));
    test_expect_exit(&bad, 1, "run < 'the Q'");
    expect_has(bad.err, "stderr", "'Q' (U+0051)");
    cr_expect_eq(bad.out_len, 0, "text printed for a bad piped prompt");
    test_result_free(&bad);
}

// Runs ./run with args on a pseudo-terminal as its stdin and stderr, types
// `typed` into it, and collects what the terminal showed (the echo of the
// input and stderr) into *shown. stdout goes to a file, read into *out. Returns
// the wait status.
static int run_on_terminal(const char* typed, size_t typed_len, const char* const args[],
                           char** shown, char** out, size_t* out_len) {
    char* argv[MAX_ARGS];
    test_argv_list(argv, MAX_ARGS, RUN_BIN, args);
    char out_path[128];
    snprintf(out_path, sizeof(out_path), "%s/terminal.stdout", g_test_dir);
    fflush(NULL);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    cr_assert_geq(pid, 0, "forkpty failed: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, 1);
        alarm(TEST_CHILD_TIMEOUT_S);
        execv(argv[0], argv);
        _exit(127);
    }

    // type everything at once: the terminal keeps the lines until they are read
    size_t done = 0;
    while (done < typed_len) {
        ssize_t w = write(master, typed + done, typed_len - done);
        if (w < 0 && errno == EINTR) continue;
        cr_assert_gt(w, 0, "typing into the terminal: %s", strerror(errno));
        done += (size_t)w;
    }

    // read what the terminal shows until the child closes it (EIO) or time runs out
    size_t cap = 1 << 16, len = 0;
    char* buf = malloc(cap);
    cr_assert_not_null(buf);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct pollfd p = {master, POLLIN, 0};
        int ready = poll(&p, 1, 200);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        cr_assert_lt(waited, PTY_TIMEOUT_MS, "the program on the terminal did not end; it "
                     "showed:\n%.*s", (int)len, buf);
        if (ready <= 0) continue;
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        ssize_t got = read(master, buf + len, cap - len - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    close(master);
    int status;
    while (waitpid(pid, &status, 0) < 0) cr_assert_eq(errno, EINTR);
    *shown = buf;
    *out = test_read_file(out_path, out_len);
    return status;
}

Test(run, interactive_terminal) {
    const char* ckpt = test_path("model.bin");
    Trainer tr;
    make_checkpoint(&tr, ckpt);
    trainer_free(&tr);

    // what greedy decoding gives for the two good prompts, through -i
    char* long_prompt = word_text(LONG_LINE);
    for (char* p = long_prompt; *p; p++)
        if (*p == '\n') *p = ' ';
    TestResult a = run_with(TEST_STDIN_NULL, NULL, 0, ARGS(ckpt, "-n", "12", "-t", "0", "-i",
                                                           "the cat"));
    TestResult b = run_with(TEST_STDIN_NULL, NULL, 0, ARGS(ckpt, "-n", "12", "-t", "0", "-i",
                                                           long_prompt));
    test_expect_exit(&a, 0, "run -i 'the cat'");
    test_expect_exit(&b, 0, "run -i LONG");

    // typed: a prompt, one with an unknown character, a long one, then Ctrl-D
    size_t cap = LONG_LINE + 64, len = 0;
    char* typed = malloc(cap);
    cr_assert_not_null(typed);
    len += (size_t)snprintf(typed + len, cap - len, "the cat\nthe Q\n%s\n\x04", long_prompt);
    char *shown, *out;
    size_t out_len;
    int status = run_on_terminal(typed, len, ARGS(ckpt, "-n", "12", "-t", "0"), &shown,
                                 &out, &out_len);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "run on a terminal failed (status 0x%x); it showed:\n%s", status, shown);

    // stdout: exactly the two continuations, each with its newline
    cr_expect(out_len == a.out_len + b.out_len && memcmp(out, a.out, a.out_len) == 0 &&
              memcmp(out + a.out_len, b.out, b.out_len) == 0,
              "stdout is not the two continuations:\n[%s]\nexpected:\n[%s%s]", out, a.out,
              b.out);

    // the terminal: the hint, the marker, and the error for 'Q' with no exit
    expect_has(shown, "the terminal", "Ctrl-D ends");
    expect_has(shown, "the terminal", "> ");
    expect_has(shown, "the terminal", "error: the prompt's 'Q' (U+0051) at position");
    free(shown);
    free(out);

    // Ctrl-D at once: a clean end with nothing on stdout
    status = run_on_terminal("\x04", 1, ARGS(ckpt, "-n", "12"), &shown, &out, &out_len);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "Ctrl-D at the first prompt: status 0x%x; it showed:\n%s", status, shown);
    cr_expect_eq(out_len, 0, "Ctrl-D at the first prompt printed:\n%s", out);
    free(shown);
    free(out);
    free(typed);
    free(long_prompt);
    test_result_free(&a);
    test_result_free(&b);
}

// ----------------------------------------------------------------------------
// --noise: sampling from the noisy network GAME trained

Test(run, noise_samples_the_trained_noise) {
    // the tiny run uses c1,c2,c4, so it has C2 noise to sample with
    Trainer tr;
    const char* ckpt = test_path("noisy.bin");
    make_checkpoint(&tr, ckpt);
    trainer_free(&tr);

    // the same seed repeats, and the noise changes the text of the clean model
    TestResult clean = run_with(TEST_STDIN_NULL, NULL, 0, ARGS(ckpt, "-n", "200", "-s", "3"));
    TestResult a = run_with(TEST_STDIN_NULL, NULL, 0,
                            ARGS(ckpt, "--noise", "-n", "200", "-s", "3"));
    TestResult b = run_with(TEST_STDIN_NULL, NULL, 0,
                            ARGS(ckpt, "--noise", "-n", "200", "-s", "3"));
    test_expect_exit(&clean, 0, "run");
    test_expect_exit(&a, 0, "run --noise");
    test_expect_exit(&b, 0, "run --noise again");
    cr_expect(test_same_output(&a, &b), "run --noise with one seed gave two texts");
    cr_expect(!test_same_output(&a, &clean), "run --noise gave the clean model's text");
    test_result_free(&clean);
    test_result_free(&a);
    test_result_free(&b);

    // a model trained without noise sites has no noise to offer
    TrainOptions o;
    char text_path[256], err[512];
    snprintf(text_path, sizeof(text_path), "%s/train.txt", g_test_dir);
    const char* plain = test_path("plain.bin");
    tiny_options(&o, text_path, plain);
    o.game_mask = 0;
    o.game = "off";
    cr_assert_eq(trainer_init(&tr, &o, err, sizeof(err)), 0, "trainer_init: %s", err);
    trainer_step(&tr);
    cr_assert_eq(trainer_save(&tr, plain, err, sizeof(err)), 0, "trainer_save: %s", err);
    trainer_free(&tr);
    TestResult r = run_with(TEST_STDIN_NULL, NULL, 0, ARGS(plain, "--noise", "-n", "10"));
    test_expect_exit(&r, 1, "run --noise on a model without noise");
    expect_has(r.err, "stderr of run --noise",
               "error: --noise: this model was trained without noise");
    test_result_free(&r);
}
