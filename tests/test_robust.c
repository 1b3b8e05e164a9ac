// test_robust.c: the train and run programs under hostile conditions, suite
// "robust".
//
// Like the cli suite, the tests start the built programs (from $GAME_BIN_DIR,
// default ".", so `make` first and run the tests from the repository root) on
// tiny models: 1 layer, 16 channels, context 8, tens of steps. They check that
// an interrupted and resumed run gives the same bytes as an uninterrupted one,
// that SIGINT and SIGTERM leave a checkpoint that loads and resumes, that a
// diverging run never writes a non-finite weight, that a full disk leaves no
// partial file and keeps the good checkpoint, that odd input files (Latin-1,
// NUL bytes, CR LF, too short, a FIFO, /dev/zero) train or fail cleanly, that
// run copes with long prompts and long outputs and rejects inconsistent or
// newer checkpoints, and that run is clean under valgrind. Each test works in
// its own temporary folder under /tmp, removed afterwards.
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "game.h"
#include "tokenizer.h"
#include "weights.h"

#include "testutil.h"

#define MAX_ARGS 64
#define CONTEXT 8 // the tiny models' context
#define MANY_STEPS "100000000"

// The tiny model's flags, spliced into argument lists.
#define TINY "--layers", "1", "--channels", "16", "--heads", "2", "--context", "8", \
             "--batch", "2", "--eval-batches", "2", "--threads", "1"

// Under AddressSanitizer (make test-asan builds the programs and the tests with
// it) an address-space limit breaks the sanitizer's shadow memory, and valgrind
// cannot run the programs at all.
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

// ----------------------------------------------------------------------------
// Programs, temporary folder and files

static char g_train[PATH_MAX + 16], g_run[PATH_MAX + 16];

// Per test: the programs, with absolute paths (children run in other folders
// too), must exist, and a fresh folder is made (g_test_dir).
static void setup(void) {
    test_find_program(g_train, sizeof(g_train), "train", 1);
    test_find_program(g_run, sizeof(g_run), "run", 1);
    test_dir_setup("robust");
}

TestSuite(robust, .init = setup, .fini = test_dir_teardown, .timeout = 120);

static int same_file_bytes(const char* a, const char* b) {
    size_t na, nb;
    char* da = test_read_file(a, &na);
    char* db = test_read_file(b, &nb);
    int same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

// The tiny models' training text (test_training_text), about 3 KB.
static void write_training_text(const char* path) {
    char text[4096];
    test_write_file(path, text, test_training_text(text, sizeof(text), 0, 0));
}

#define EXPECT_NO_TEMP_FILES(dir, what)                                                \
    do {                                                                               \
        char temps_[512];                                                              \
        cr_expect_eq(test_count_temp_files(dir, temps_, sizeof(temps_)), 0,            \
                     "%s: temporary files left behind:%s", what, temps_);              \
    } while (0)

// ----------------------------------------------------------------------------
// Running a program

// How long run_prog waits for a child: 10 s more than its alarm gives it.
#define WAIT_MS ((TEST_CHILD_TIMEOUT_S + 10) * 1000)

// Starts prog with the arguments in ap, up to a NULL, as sp (NULL: no options)
// says, and in this suite's way: output captured in the test's folder, the
// child run there unless sp names another folder, with default signals.
// Returns the child's pid.
static pid_t start_va(const TestSpawn* sp, const char* prog, va_list ap) {
    char* argv[MAX_ARGS];
    test_argv_va(argv, MAX_ARGS, prog, ap);
    TestSpawn s = sp ? *sp : (TestSpawn){0};
    s.dir = g_test_dir;
    if (s.cwd == NULL) s.cwd = g_test_dir;
    s.default_signals = 1;
    return test_spawn(&s, argv);
}

// Starts prog with the arguments that follow, up to a NULL; returns its pid.
static pid_t start_prog(const TestSpawn* sp, const char* prog, ...) {
    va_list ap;
    va_start(ap, prog);
    pid_t pid = start_va(sp, prog, ap);
    va_end(ap);
    return pid;
}

// Runs prog the same way to its end and reads back its output.
static TestResult run_prog(const TestSpawn* sp, const char* prog, ...) {
    va_list ap;
    va_start(ap, prog);
    pid_t pid = start_va(sp, prog, ap);
    va_end(ap);
    long rss = 0;
    int status = test_wait(pid, WAIT_MS, &rss, prog);
    return test_collect(g_test_dir, status, rss);
}

#define TRAIN(sp, ...) run_prog(sp, g_train, __VA_ARGS__, (const char*)NULL)
#define RUN(sp, ...)   run_prog(sp, g_run, __VA_ARGS__, (const char*)NULL)
#define START_TRAIN(sp, ...) start_prog(sp, g_train, __VA_ARGS__, (const char*)NULL)

// Waits up to timeout_ms until the captured stdout contains needle; returns 1
// when it does, 0 when the time ran out or the child ended first.
static int wait_for_output(pid_t pid, const char* needle, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        const char* captured = test_capture_path(g_test_dir, 1);
        if (test_file_exists(captured)) {
            size_t n;
            char* out = test_read_file(captured, &n);
            int found = strstr(out, needle) != NULL;
            free(out);
            if (found) return 1;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            cr_assert_fail("the program ended (status 0x%x) before printing \"%s\"",
                           status, needle);
        }
        usleep(5000);
    }
    return 0;
}

static void expect_success(const TestResult* r, const char* what) {
    test_expect_exit(r, 0, what);
}

// Asserts a failure with exit code 1 and a message containing needle.
static void expect_failure(const TestResult* r, const char* needle, const char* what) {
    test_expect_exit(r, 1, what);
    cr_expect(strstr(r->err, "error: ") != NULL, "%s: no 'error: ' on stderr:\n%s", what,
              r->err);
    cr_expect(strstr(r->err, needle) != NULL, "%s: stderr lacks \"%s\":\n%s", what, needle,
              r->err);
}

// Every file that train's stdout says it saved ("saved to X", "saved in X")
// must exist (relative names are taken in folder dir).
static void expect_saves_exist(const TestResult* r, const char* dir, const char* what) {
    static const char* marks[] = {"saved to ", "saved in "};
    for (int k = 0; k < 2; k++) {
        for (const char* p = strstr(r->out, marks[k]); p; p = strstr(p + 1, marks[k])) {
            const char* name = p + strlen(marks[k]);
            size_t len = strcspn(name, " )\n");
            char path[512];
            snprintf(path, sizeof(path), "%s%s%.*s", name[0] == '/' ? "" : dir,
                     name[0] == '/' ? "" : "/", (int)len, name);
            cr_expect(test_file_exists(path), "%s: stdout says \"%s%.*s\" but there is no %s; "
                      "stdout:\n%s", what, marks[k], (int)len, name, path, r->out);
        }
    }
}

// The characters (tokens) of text[0 .. n-1]: code points, and raw bytes for
// the rest, as the tokenizer splits it.
static size_t symbol_count(const char* text, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; count++) {
        uint32_t symbol;
        i += utf8_next((const unsigned char*)text + i, n - i, &symbol);
    }
    return count;
}

// ----------------------------------------------------------------------------
// Checkpoints

// Loads path as a model and counts its non-finite parameters and optimizer
// moments (MOM1, MOM2). Fails the test when it does not load.
static long count_non_finite(const char* path) {
    Checkpoint c;
    char err[512];
    cr_assert_eq(ckpt_load(&c, path, err, sizeof(err)), 0, "%s does not load: %s", path,
                 err);
    Model m;
    Tokenizer tk;
    cr_assert_eq(model_from_checkpoint(&m, &tk, &c, err, sizeof(err)), 0,
                 "%s is no model: %s", path, err);
    long bad = 0;
    for (size_t i = 0; i < m.num_params; i++) bad += !isfinite(m.params_memory[i]);
    static const char* moments[] = {"MOM1", "MOM2"};
    for (int k = 0; k < 2; k++) {
        const CkptSection* s = ckpt_find(&c, moments[k]);
        if (s == NULL) continue;
        for (uint64_t i = 0; i + 4 <= s->size; i += 4)
            bad += !isfinite(ckpt_get_f32((const unsigned char*)s->data + i));
    }
    model_free(&m);
    tokenizer_free(&tk);
    ckpt_free_loaded(&c);
    return bad;
}

// Reads the vocabulary of the checkpoint at path; returns a malloc'd list of
// *n symbols.
static uint32_t* read_vocab(const char* path, int* n) {
    Checkpoint c;
    char err[512];
    cr_assert_eq(ckpt_load(&c, path, err, sizeof(err)), 0, "%s does not load: %s", path,
                 err);
    *n = c.config.vocab_size;
    uint32_t* symbols = malloc((size_t)*n * sizeof(uint32_t));
    cr_assert_not_null(symbols);
    cr_assert_eq(ckpt_read_u32(&c, "VOCB", symbols, (size_t)*n, err, sizeof(err)), 0, "%s",
                 err);
    ckpt_free_loaded(&c);
    return symbols;
}

static int has_symbol(const uint32_t* symbols, int n, uint32_t s) {
    for (int i = 0; i < n; i++)
        if (symbols[i] == s) return 1;
    return 0;
}

// `run CKPT -n 5` exits 0 and prints 5 characters.
static void expect_loads(const char* ckpt, const char* what) {
    TestResult r = RUN(NULL, ckpt, "-n", "5");
    expect_success(&r, what);
    test_expect_text(&r, 5, what);
    test_result_free(&r);
}

// Trains the tiny model for 20 steps into name (in the test's folder) and
// returns its path in a buffer of its own.
static const char* train_tiny(const char* name) {
    static char ckpt[256];
    const char* text = test_path("train.txt");
    if (!test_file_exists(text)) write_training_text(text);
    snprintf(ckpt, sizeof(ckpt), "%s/%s", g_test_dir, name);
    TestResult r = TRAIN(NULL, "-i", text, "-o", ckpt, TINY, "--steps", "20", "--warmup", "2",
                         "--eval-every", "10", "-q");
    expect_success(&r, "train of the tiny model");
    cr_assert(test_file_exists(ckpt), "train exited 0 but wrote no %s", ckpt);
    test_result_free(&r);
    return ckpt;
}

// ----------------------------------------------------------------------------
// Resume is exact

// Appends the evaluation and GAME summary lines of out to lines.
static void eval_lines(const char* out, char* lines, size_t len) {
    for (const char* p = out; *p;) {
        const char* end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!strncmp(p, "eval step", 9) || !strncmp(p, "  game:", 7)) {
            size_t used = strlen(lines);
            snprintf(lines + used, len - used, "%.*s\n", (int)n, p);
        }
        p += n + (end ? 1 : 0);
    }
}

// Runs 40 steps in folder A, and 20 steps then a resume in folder B, with the
// same relative names (the stored paths are part of the checkpoint), and
// compares checkpoints and printed losses.
static void check_resume_exact(const char* game) {
    char dir_a[256], dir_b[256];
    snprintf(dir_a, sizeof(dir_a), "%s/A", g_test_dir);
    snprintf(dir_b, sizeof(dir_b), "%s/B", g_test_dir);
    cr_assert_eq(mkdir(dir_a, 0755), 0);
    cr_assert_eq(mkdir(dir_b, 0755), 0);
    char text[4096];
    size_t n = test_training_text(text, sizeof(text), 0, 0);
    test_write_file(test_path("A/t.txt"), text, n);
    test_write_file(test_path("B/t.txt"), text, n);
    TestSpawn in_a = {.cwd = dir_a}, in_b = {.cwd = dir_b};
    char what[64];
    snprintf(what, sizeof(what), "--game %s", game);

    // the whole run, and the run stopped at step 20
    TestResult a = TRAIN(&in_a, "-i", "t.txt", "-o", "m.bin", TINY, "--steps", "40",
                         "--warmup", "2", "--eval-every", "10", "--game", game);
    expect_success(&a, what);
    TestResult b1 = TRAIN(&in_b, "-i", "t.txt", "-o", "m.bin", TINY, "--steps", "40",
                          "--warmup", "2", "--eval-every", "10", "--game", game, "--stop-at",
                          "20");
    expect_success(&b1, what);
    cr_expect(strstr(b1.out, "eval step 30") == NULL, "%s: --stop-at 20 ran on:\n%s", what,
              b1.out);

    // the resume takes every setting from the checkpoint
    TestResult b2 = TRAIN(&in_b, "--resume", "m.bin.last");
    expect_success(&b2, what);
    cr_expect(strstr(b2.out, "resumed from m.bin.last at step 20") != NULL,
              "%s: no resume line:\n%s", what, b2.out);

    // the same files, byte for byte, and the same losses
    cr_expect(same_file_bytes(test_path("A/m.bin"), test_path("B/m.bin")),
              "%s: the best checkpoints differ", what);
    cr_expect(same_file_bytes(test_path("A/m.bin.last"), test_path("B/m.bin.last")),
              "%s: the latest checkpoints differ", what);
    char la[4096] = "", lb[4096] = "";
    eval_lines(a.out, la, sizeof(la));
    eval_lines(b1.out, lb, sizeof(lb));
    eval_lines(b2.out, lb, sizeof(lb));
    cr_expect(strstr(la, "eval step 40:") != NULL, "%s: no eval at step 40:\n%s", what,
              a.out);
    cr_expect_str_eq(la, lb, "%s: the printed losses differ:\n%s----\n%s", what, la, lb);
    EXPECT_NO_TEMP_FILES(dir_b, what);
    test_result_free(&a);
    test_result_free(&b1);
    test_result_free(&b2);
}

Test(robust, resume_exact_game_off) { check_resume_exact("off"); }

Test(robust, resume_exact_game_full) { check_resume_exact("full"); }

// ----------------------------------------------------------------------------
// Signals

// Starts a long run into name, waits for its first step line and sends sig;
// expects exit code 128 + sig, a stop message, and a latest checkpoint that
// loads. Returns the step it stopped at.
static long interrupt_run(const char* name, int sig) {
    const char* text = test_path("train.txt");
    if (!test_file_exists(text)) write_training_text(text);
    const char* out = test_path(name);
    pid_t pid = START_TRAIN(NULL, "-i", text, "-o", out, TINY, "--steps", MANY_STEPS,
                            "--save-every", "0", "--log-every", "1");
    cr_assert(wait_for_output(pid, "/" MANY_STEPS " | loss", 20000),
              "no step line after 20 s");
    kill(pid, sig);
    int status = test_wait(pid, 20000, NULL, "train after a signal");
    TestResult r = test_collect(g_test_dir, status, 0);
    char what[64];
    snprintf(what, sizeof(what), "train stopped by signal %d", sig);
    test_expect_exit(&r, 128 + sig, what);
    char stop[64];
    snprintf(stop, sizeof(stop), "stopped by signal %d at step ", sig);
    const char* at = strstr(r.err, stop);
    cr_assert_not_null(at, "%s: no stop message:\n%s", what, r.err);
    long step = atol(at + strlen(stop));
    cr_expect_gt(step, 0, "%s: stopped at step %ld", what, step);
    char last[300];
    snprintf(last, sizeof(last), "%s.last", out);
    cr_assert(test_file_exists(last), "%s: no %s", what, last);
    expect_loads(last, what);
    EXPECT_NO_TEMP_FILES(g_test_dir, what);
    test_result_free(&r);
    return step;
}

Test(robust, sigint_saves_and_resumes) {
    long step = interrupt_run("s.bin", SIGINT);

    // the resumed run starts where the signal stopped it
    char stop_at[32], resumed[128];
    snprintf(stop_at, sizeof(stop_at), "%ld", step + 5);
    snprintf(resumed, sizeof(resumed), "at step %ld ", step);
    TestResult r = TRAIN(NULL, "--resume", test_path("s.bin.last"), "--stop-at", stop_at);
    expect_success(&r, "resume after SIGINT");
    cr_expect(strstr(r.out, resumed) != NULL, "resume did not start %s:\n%s", resumed,
              r.out);
    cr_expect(strstr(r.out, "done: 5 steps") != NULL, "resume did not run 5 steps:\n%s",
              r.out);
    test_result_free(&r);
    expect_loads(test_path("s.bin.last"), "the resumed latest checkpoint");
}

Test(robust, sigterm_saves) { interrupt_run("t.bin", SIGTERM); }

// A second SIGINT right after the first ends the run at once, in whatever it
// was doing: no temporary file stays, and the checkpoints on disk still load.
// The model is larger here (about 5 MB saved twice a step, and once more after
// the first signal), so the second signal lands before the run has finished
// what the first asks for. Step 1's checkpoints are on disk once step 2 is
// printed.
Test(robust, second_sigint_ends_at_once) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    static const int delays_us[] = {0, 3000, 11000};
    int at_once = 0;
    for (int k = 0; k < 3; k++) {
        char name[32], last[300];
        snprintf(name, sizeof(name), "d%d.bin", k);
        const char* out = test_path(name);
        snprintf(last, sizeof(last), "%s.last", out);
        pid_t pid = START_TRAIN(NULL, "-i", text, "-o", out, "--layers", "2", "--channels",
                                "128", "--heads", "4", "--context", "16", "--batch", "2",
                                "--eval-batches", "1", "--threads", "1", "--steps",
                                MANY_STEPS, "--save-every", "1", "--eval-every", "1",
                                "--log-every", "1");
        cr_assert(wait_for_output(pid, "step     2/", 30000), "no step 2 after 30 s");
        usleep(delays_us[k]);
        kill(pid, SIGINT);

        // the second: repeated every 2 ms until the run ends, since two signals
        // that arrive while it waits in a system call (an fsync) count as one
        int status = 0;
        for (int waited = 0; waitpid(pid, &status, WNOHANG) != pid; waited += 2) {
            cr_assert_lt(waited, 5000, "train still running 5 s after two SIGINTs");
            usleep(2000);
            kill(pid, SIGINT);
        }
        TestResult r = test_collect(g_test_dir, status, 0);
        test_expect_exit(&r, 130, "train after two SIGINTs");
        at_once += strstr(r.err, "stopped by signal") == NULL;
        EXPECT_NO_TEMP_FILES(g_test_dir, "two SIGINTs");
        cr_assert(test_file_exists(out) && test_file_exists(last),
                  "no checkpoints after step 1");
        expect_loads(out, "the best checkpoint after two SIGINTs");
        expect_loads(last, "the latest checkpoint after two SIGINTs");
        test_result_free(&r);
    }
    cr_expect_gt(at_once, 0, "each of 3 runs finished its step and saved after the "
                 "second SIGINT instead of ending at once");
}

// ----------------------------------------------------------------------------
// Divergence

// Trains with a learning rate far too high: the run either stops with the
// divergence error or finishes, and no checkpoint holds a non-finite value.
static void check_divergence(const char* lr, const char* game) {
    const char* text = test_path("train.txt");
    if (!test_file_exists(text)) write_training_text(text);
    char name[64], what[64];
    snprintf(name, sizeof(name), "lr%s_%s.bin", lr, game);
    snprintf(what, sizeof(what), "train --lr %s --game %s", lr, game);
    const char* out = test_path(name);
    TestResult r = TRAIN(NULL, "-i", text, "-o", out, TINY, "--steps", "200", "--warmup", "2",
                         "--eval-every", "10", "--lr", lr, "--game", game, "-q");
    cr_assert(WIFEXITED(r.status), "%s: killed by signal %d; stderr:\n%s", what,
              WTERMSIG(r.status), r.err);
    int code = WEXITSTATUS(r.status);
    cr_expect(code == 0 || code == 1, "%s: exit code %d", what, code);
    if (code == 1) {
        cr_expect(strstr(r.err, "diverged") != NULL && strstr(r.err, "lower --lr") != NULL,
                  "%s: failed without the divergence message:\n%s", what, r.err);
    }
    expect_saves_exist(&r, g_test_dir, what);
    EXPECT_NO_TEMP_FILES(g_test_dir, what);

    // whatever checkpoint exists is finite, and run on it ends normally
    char last[300];
    snprintf(last, sizeof(last), "%s.last", out);
    const char* ckpts[2] = {out, last};
    for (int k = 0; k < 2; k++) {
        if (!test_file_exists(ckpts[k])) continue;
        cr_expect_eq(count_non_finite(ckpts[k]), 0, "%s: %s holds non-finite values", what,
                     ckpts[k]);
        TestResult g = RUN(NULL, ckpts[k], "-n", "20");
        cr_expect(WIFEXITED(g.status), "%s: run %s killed by signal %d", what, ckpts[k],
                  WTERMSIG(g.status));
        int rc = WEXITSTATUS(g.status);
        cr_expect(rc == 0 || (rc == 1 && strstr(g.err, "error: ") != NULL),
                  "%s: run %s exit code %d; stderr:\n%s", what, ckpts[k], rc, g.err);
        if (rc == 0) test_expect_text(&g, 20, "run on a high-lr checkpoint");
        test_result_free(&g);
    }
    test_result_free(&r);
}

Test(robust, divergence_lr10_game_off) { check_divergence("10", "off"); }

Test(robust, divergence_lr10_game_full) { check_divergence("10", "full"); }

// At 1000 (the largest --lr allowed) the run diverges within a few steps.
Test(robust, divergence_lr1000) { check_divergence("1000", "off"); }

// Resuming the best checkpoint instead of the latest one: the latest step would
// be saved over the best, so train refuses, names the file to resume instead,
// and leaves the checkpoint as it was.
Test(robust, resume_best_checkpoint_refused) {
    const char* ckpt = train_tiny("best.bin");
    size_t n0, n1;
    char* before = test_read_file(ckpt, &n0);
    TestResult r = TRAIN(NULL, "--resume", ckpt, "--steps", "30", "-q");
    cr_expect_neq(WEXITSTATUS(r.status), 0, "resuming the best checkpoint succeeded");
    char want[512];
    snprintf(want, sizeof(want), "resume from %s.last instead", ckpt);
    cr_expect(strstr(r.err, want) != NULL, "the error does not point to .last:\n%s", r.err);
    char* after = test_read_file(ckpt, &n1);
    cr_expect(n0 == n1 && memcmp(before, after, n0) == 0, "the best checkpoint changed");
    free(before);
    free(after);
    test_result_free(&r);
}

// Resuming with a new -o at a learning rate that never improves on the earlier
// best: nothing is written to the new -o, so the summary must name the earlier
// run's file, which holds the best model, and every file it names must exist.
Test(robust, resume_new_output_without_improvement) {
    const char* ckpt = train_tiny("earlier.bin");
    char last[300], fresh[300];
    snprintf(last, sizeof(last), "%s.last", ckpt);
    snprintf(fresh, sizeof(fresh), "%s/fresh.bin", g_test_dir);
    TestResult r = TRAIN(NULL, "--resume", last, "--steps", "30", "--lr", "20",
                         "--min-lr", "20", "--clip", "0", "-o", fresh);
    expect_saves_exist(&r, g_test_dir, "a resumed run with a new -o");
    cr_expect(!test_file_exists(fresh), "the run improved on the best after all (its "
              "premise): choose a larger --lr\n%s", r.out);
    char want[400];
    snprintf(want, sizeof(want), "saved in %s by the earlier run", ckpt);
    cr_expect(strstr(r.out, want) != NULL, "the summary does not name %s:\n%s", ckpt,
              r.out);
    cr_expect(strstr(r.out, "wrote nothing to") != NULL,
              "the summary does not say the new -o was not written:\n%s", r.out);
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// Full disk

// A file-size limit below the checkpoint's size: the first save fails, with a
// message naming the path, and leaves neither a partial checkpoint nor a
// temporary file.
Test(robust, disk_full_first_save) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    const char* out = test_path("full.bin");
    TestSpawn small = {.fsize_limit = 16384}; // the checkpoint is about 60 KB
    TestResult r = TRAIN(&small, "-i", text, "-o", out, TINY, "--steps", "20", "--warmup", "2",
                         "--eval-every", "10");
    cr_assert(!WIFSIGNALED(r.status), "killed by signal %d", WTERMSIG(r.status));
    cr_expect_neq(WEXITSTATUS(r.status), 0, "train succeeded with no room to save");
    cr_expect(strstr(r.err, "error: ") != NULL && strstr(r.err, "full.bin") != NULL,
              "the error does not name full.bin:\n%s", r.err);
    cr_expect(!test_file_exists(out), "a partial %s was left", out);
    cr_expect(!test_file_exists(test_path("full.bin.last")),
              "a partial full.bin.last was left");
    EXPECT_NO_TEMP_FILES(g_test_dir, "a failed save");
    expect_saves_exist(&r, g_test_dir, "a failed save");
    test_result_free(&r);
}

// A good checkpoint survives a later save that fails: the resumed run cannot
// write, and both files keep their bytes and still load.
Test(robust, disk_full_keeps_good_checkpoint) {
    const char* ckpt = train_tiny("good.bin");
    char last[300];
    snprintf(last, sizeof(last), "%s.last", ckpt);
    size_t n_best, n_last;
    char* best = test_read_file(ckpt, &n_best);
    char* latest = test_read_file(last, &n_last);

    TestSpawn small = {.fsize_limit = 16384};
    TestResult r = TRAIN(&small, "--resume", last, "--steps", "40", "-q");
    cr_assert(!WIFSIGNALED(r.status), "killed by signal %d", WTERMSIG(r.status));
    cr_expect_neq(WEXITSTATUS(r.status), 0, "the resumed train succeeded with no room");
    cr_expect(strstr(r.err, "good.bin") != NULL, "the error names no checkpoint:\n%s",
              r.err);
    size_t n;
    char* now = test_read_file(ckpt, &n);
    cr_expect(n == n_best && memcmp(now, best, n) == 0, "the best checkpoint changed");
    free(now);
    now = test_read_file(last, &n);
    cr_expect(n == n_last && memcmp(now, latest, n) == 0, "the latest checkpoint changed");
    free(now);
    EXPECT_NO_TEMP_FILES(g_test_dir, "a failed later save");
    expect_loads(ckpt, "the best checkpoint after a failed save");
    expect_loads(last, "the latest checkpoint after a failed save");
    free(best);
    free(latest);
    test_result_free(&r);
}

// A full disk under run's output: stdout stops taking the text partway, and run
// says so and fails, instead of reporting a speed for text that was lost. The
// same for run --info and train --help (train checks its log the same way).
Test(robust, disk_full_output) {
    const char* ckpt = train_tiny("out.bin");
    TestSpawn small = {.fsize_limit = 512};
    TestResult r = RUN(&small, ckpt, "-n", "2000", "-s", "1");
    cr_assert(!WIFSIGNALED(r.status), "killed by signal %d", WTERMSIG(r.status));
    cr_expect_neq(WEXITSTATUS(r.status), 0, "run succeeded with its text lost");
    cr_expect(strstr(r.err, "error: cannot write the generated text") != NULL,
              "no message for the lost text:\n%s", r.err);
    cr_expect(strstr(r.err, "tokens/s") == NULL, "a speed for lost text:\n%s", r.err);
    cr_expect_leq(r.out_len, 512);
    test_result_free(&r);

    TestSpawn tiny = {.fsize_limit = 64};
    r = RUN(&tiny, "--info", ckpt);
    cr_expect_neq(WEXITSTATUS(r.status), 0, "run --info succeeded with its text lost");
    cr_expect(strstr(r.err, "error: cannot write to standard output") != NULL,
              "no message for the lost description:\n%s", r.err);
    test_result_free(&r);

    r = TRAIN(&tiny, "--help");
    cr_expect_neq(WEXITSTATUS(r.status), 0, "train --help succeeded with its text lost");
    cr_expect(strstr(r.err, "error: cannot write to standard output") != NULL,
              "no message for the lost help:\n%s", r.err);
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// Hostile input files

// Trains 20 steps on text[0 .. n-1] into name; returns the checkpoint's path.
static const char* train_on(const char* name, const char* text, size_t n) {
    static char ckpt[256];
    char txt[64];
    snprintf(txt, sizeof(txt), "%s.txt", name);
    const char* path = test_path(txt);
    test_write_file(path, text, n);
    snprintf(ckpt, sizeof(ckpt), "%s/%s.bin", g_test_dir, name);
    TestResult r = TRAIN(NULL, "-i", path, "-o", ckpt, TINY, "--steps", "20", "--warmup", "2",
                         "--eval-every", "10");
    expect_success(&r, name);
    char count[64];
    snprintf(count, sizeof(count), ", %zu characters", symbol_count(text, n));
    cr_expect(strstr(r.out, count) != NULL, "%s: not %s:\n%s", name, count, r.out);
    test_result_free(&r);
    return ckpt;
}

// Latin-1 accents are not UTF-8: they become raw-byte tokens, and run prints
// them as U+FFFD, so its output is still valid UTF-8.
Test(robust, latin1_text) {
    char text[4096];
    size_t n = test_training_text(text, sizeof(text), 1, 0);
    const char* ckpt = train_on("latin1", text, n);
    int v;
    uint32_t* vocab = read_vocab(ckpt, &v);
    cr_expect(has_symbol(vocab, v, TOKEN_RAW_BASE + 0xE9), "no raw-byte token for 0xE9");
    cr_expect(has_symbol(vocab, v, TOKEN_RAW_BASE + 0xFC), "no raw-byte token for 0xFC");
    cr_expect(!has_symbol(vocab, v, 0xE9), "0xE9 was read as U+00E9");
    free(vocab);
    TestResult g = RUN(NULL, ckpt, "-n", "200", "-t", "2", "-s", "3");
    expect_success(&g, "run on the Latin-1 model");
    test_expect_text(&g, 200, "run on the Latin-1 model");
    cr_expect(memmem(g.out, g.out_len, "\xEF\xBF\xBD", 3) != NULL,
              "no U+FFFD in 200 characters at temperature 2");
    test_result_free(&g);

    // a prompt with the same raw byte encodes
    TestResult p = RUN(NULL, ckpt, "-n", "10", "-i", "caf\xE9");
    expect_success(&p, "run with a Latin-1 prompt");
    test_expect_text(&p, 10, "run with a Latin-1 prompt");
    test_result_free(&p);
}

Test(robust, nul_bytes_in_text) {
    char text[3000];
    static const char pattern[] = "ab\0cd\0ef gh\0\n";
    for (size_t i = 0; i < sizeof(text); i++) text[i] = pattern[i % (sizeof(pattern) - 1)];
    const char* ckpt = train_on("nul", text, sizeof(text));
    int v;
    uint32_t* vocab = read_vocab(ckpt, &v);
    cr_expect_eq(v, 11, "vocabulary of %d tokens, expected 11 (NUL among them)", v);
    cr_expect(has_symbol(vocab, v, 0), "NUL is not in the vocabulary");
    free(vocab);
    TestResult g = RUN(NULL, ckpt, "-n", "100", "-t", "3", "-s", "2");
    expect_success(&g, "run on the NUL model");
    test_expect_text(&g, 100, "run on the NUL model");
    cr_expect(memchr(g.out, '\0', g.out_len) != NULL, "no NUL in 100 characters at t 3");
    test_result_free(&g);
}

Test(robust, crlf_text) {
    char text[4096];
    size_t n = test_training_text(text, sizeof(text), 0, 1);
    const char* ckpt = train_on("crlf", text, n);
    int v;
    uint32_t* vocab = read_vocab(ckpt, &v);
    cr_expect(has_symbol(vocab, v, '\r') && has_symbol(vocab, v, '\n'),
              "CR or LF missing from the vocabulary");
    free(vocab);
    TestResult g = RUN(NULL, ckpt, "-n", "60", "-t", "0");
    expect_success(&g, "run on the CR LF model");
    test_expect_text(&g, 60, "run on the CR LF model");
    test_result_free(&g);
}

// Runs train on a text of n bytes and expects the too-short message.
static void expect_too_short(const char* text, size_t n, const char* val_fraction,
                             const char* needle) {
    const char* path = test_path("short.txt");
    test_write_file(path, text, n);
    const char* out = test_path("short.bin");
    TestResult r = TRAIN(NULL, "-i", path, "-o", out, TINY, "--steps", "10", "--warmup", "1",
                         "--val-fraction", val_fraction);
    expect_failure(&r, needle, "a text too short");
    cr_expect(strstr(r.err, "too short for context 8") != NULL, "no context in:\n%s", r.err);
    cr_expect(!test_file_exists(out), "a checkpoint was written for a text too short");
    test_result_free(&r);
}

// Each part (training, validation) needs context + 1 = 9 characters: one
// character fails, and so does exactly context + 1 with the default 10% held
// out; with half held out, 18 characters is the shortest text that trains.
Test(robust, texts_at_the_length_limit) {
    expect_too_short("a", 1, "0.1", "has 1 characters");
    expect_too_short("abcdefghi", 9, "0.1",
                     "has 9 characters: too short for context 8 (the training and "
                     "validation parts each need at least 9)");
    expect_too_short("abcdefghiabcdefgh", 17, "0.5", "has 17 characters");

    const char* path = test_path("edge.txt");
    test_write_file(path, "abcdefghiabcdefghi", 18);
    const char* out = test_path("edge.bin");
    TestResult r = TRAIN(NULL, "-i", path, "-o", out, TINY, "--steps", "10", "--warmup", "1",
                         "--eval-every", "5", "--val-fraction", "0.5");
    expect_success(&r, "train on 18 characters with half held out");
    cr_expect(strstr(r.out, "18 characters: 9 train, 9 validation") != NULL,
              "not split 9 and 9:\n%s", r.out);
    test_result_free(&r);
    expect_loads(out, "the 18-character model");
}

// A FIFO whose writer sends a text and closes trains like the file. (A FIFO
// with no writer at all waits in open(), as any reader of it does.)
Test(robust, fifo_input) {
    const char* fifo = test_path("text.fifo");
    cr_assert_eq(mkfifo(fifo, 0644), 0, "mkfifo: %s", strerror(errno));
    char text[4096];
    size_t n = test_training_text(text, sizeof(text), 0, 0);
    fflush(NULL);
    pid_t writer = fork();
    cr_assert_geq(writer, 0);
    if (writer == 0) {
        alarm(30);
        int fd = open(fifo, O_WRONLY);
        if (fd < 0) _exit(1);
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(fd, text + done, n - done);
            if (w <= 0) _exit(1);
            done += (size_t)w;
        }
        close(fd);
        _exit(0);
    }
    const char* out = test_path("fifo.bin");
    TestSpawn limited = {.timeout_s = 20};
    TestResult r = TRAIN(&limited, "-i", fifo, "-o", out, TINY, "--steps", "10", "--warmup",
                         "1", "--eval-every", "10");
    int ws;
    waitpid(writer, &ws, 0);
    expect_success(&r, "train from a FIFO");
    char count[64];
    snprintf(count, sizeof(count), ", %zu characters", symbol_count(text, n));
    cr_expect(strstr(r.out, count) != NULL, "not %s:\n%s", count, r.out);
    cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the FIFO writer failed");
    test_result_free(&r);
    expect_loads(out, "the FIFO model");
}

// /dev/zero never ends: train must refuse it promptly with an error naming it,
// not read until memory runs out. The child runs under a memory limit (2 GB
// of address space, or ASan's allocation limit) so a failure here cannot take
// the machine down.
Test(robust, dev_zero_input) {
    TestSpawn limited = {.timeout_s = 20};
    if (SANITIZED) limited.asan_options = "allocator_may_return_null=1:"
                                          "max_allocation_size_mb=1024";
    else limited.as_limit = 2L << 30;
    const char* out = test_path("zero.bin");
    TestResult r = TRAIN(&limited, "-i", "/dev/zero", "-o", out, TINY, "--steps", "5",
                         "--warmup", "1");
    cr_assert(!(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGALRM),
              "train -i /dev/zero still ran after 20 s");
    expect_failure(&r, "/dev/zero", "train -i /dev/zero");
    cr_expect(!test_file_exists(out), "a checkpoint was written from /dev/zero");
    cr_expect_lt(r.max_rss_kb, 256 * 1024, "train -i /dev/zero used %ld MB before failing "
                 "(it reads the endless device into memory); stderr:\n%s",
                 r.max_rss_kb / 1024, r.err);
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// run: long prompts, long outputs, greedy decoding, bad checkpoints

Test(robust, run_longer_than_context) {
    const char* ckpt = train_tiny("model.bin");

    // a prompt of 43 characters and an output of 3 contexts
    const char* prompt = "the quick brown fox jumps over the lazy dog";
    TestResult a = RUN(NULL, ckpt, "-n", "24", "-s", "5", "-i", prompt);
    expect_success(&a, "run with a long prompt");
    test_expect_text(&a, 3 * CONTEXT, "run with a long prompt");
    cr_expect(strstr(a.err, "note: the prompt has 43 characters") != NULL,
              "no note for the long prompt:\n%s", a.err);
    test_result_free(&a);

    // far past the context, with and without the key/value cache
    TestResult b = RUN(NULL, ckpt, "-n", "100", "-s", "6");
    expect_success(&b, "run -n 100");
    test_expect_text(&b, 100, "run -n 100");
    TestResult c = RUN(NULL, ckpt, "-n", "100", "-s", "6", "--no-cache");
    expect_success(&c, "run -n 100 --no-cache");
    test_expect_text(&c, 100, "run -n 100 --no-cache");
    test_result_free(&b);
    test_result_free(&c);
}

// Context 1, the smallest: the window keeps context/2 = 0 tokens when it
// slides, so every character sees only the one before it. The cached and the
// recomputing decoder must agree (and, under make test-asan, touch no memory
// outside their buffers).
Test(robust, run_context_one) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    const char* ckpt = test_path("c1.bin");
    TestResult r = TRAIN(NULL, "-i", text, "-o", ckpt, "--layers", "1", "--channels", "16",
                         "--heads", "2", "--context", "1", "--batch", "2", "--eval-batches",
                         "2", "--threads", "1", "--steps", "10", "--warmup", "1", "-q");
    expect_success(&r, "train --context 1");
    test_result_free(&r);
    TestResult a = RUN(NULL, ckpt, "-n", "12", "-t", "0", "-i", "the");
    TestResult b = RUN(NULL, ckpt, "-n", "12", "-t", "0", "-i", "the", "--no-cache");
    expect_success(&a, "run on a context-1 model");
    expect_success(&b, "run --no-cache on a context-1 model");
    test_expect_text(&a, 12, "run on a context-1 model");
    cr_expect(test_same_output(&a, &b), "cache and no cache differ at context 1:\n%s\n%s",
              a.out, b.out);
    test_result_free(&a);
    test_result_free(&b);
}

// Temperature 0 gives the same text whatever the seed and the thread count.
Test(robust, run_greedy_deterministic) {
    const char* ckpt = train_tiny("model.bin");
    TestResult a = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ");
    TestResult b = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ");
    TestResult c = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ", "-s", "77");
    TestResult d = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ", "--threads", "2");
    expect_success(&a, "run -t 0");
    expect_success(&d, "run -t 0 --threads 2");
    test_expect_text(&a, 40, "run -t 0");
    cr_expect(test_same_output(&a, &b), "greedy runs differ:\n%s\n%s", a.out, b.out);
    cr_expect(test_same_output(&a, &c), "greedy text depends on the seed:\n%s\n%s", a.out,
              c.out);
    cr_expect(test_same_output(&a, &d), "greedy text depends on threads:\n%s\n%s", a.out,
              d.out);
    test_result_free(&a);
    test_result_free(&b);
    test_result_free(&c);
    test_result_free(&d);
}

// A checkpoint with valid checksums whose VOCB holds 6 symbols while its header
// says 5: run rejects it, naming the file and the section.
Test(robust, run_rejects_vocab_mismatch) {
    GameConfig cfg = {.context = CONTEXT, .vocab_size = 5, .layers = 1, .heads = 2,
                      .channels = 16};
    size_t sizes[NUM_PARAM_TENSORS];
    size_t count = param_sizes(&cfg, sizes);
    float* params = calloc(count, sizeof(float));
    cr_assert_not_null(params);
    uint32_t symbols[6] = {'\n', ' ', 'a', 'b', 'c', 'd'};
    Checkpoint c;
    ckpt_init(&c, &cfg);
    ckpt_add_u32(&c, "VOCB", symbols, 6);
    ckpt_add_f32(&c, "PARM", params, count);
    const char* path = test_path("vocab6.bin");
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "%s", err);
    free(params);

    // the file itself is sound: only the sizes disagree
    Checkpoint back;
    cr_assert_eq(ckpt_load(&back, path, err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&back);
    TestResult r = RUN(NULL, path, "-n", "5");
    expect_failure(&r, "VOCB", "run on a 6-symbol VOCB with vocab_size 5");
    cr_expect(strstr(r.err, "vocab6.bin") != NULL, "the file is not named:\n%s", r.err);
    cr_expect(strstr(r.err, "vocab_size 5") != NULL, "the header's size is not named:\n%s",
              r.err);
    cr_expect_eq(r.out_len, 0, "text printed for a bad checkpoint");
    test_result_free(&r);
}

// A training checkpoint in which one weight is NaN (checksums valid): run --info
// and train --resume reject it as not finite when they load it, instead of
// resuming into a run that diverges and blames the learning rate.
Test(robust, non_finite_weights_rejected_at_load) {
    const char* ckpt = train_tiny("nan-src.bin");
    char last[300], err[512];
    snprintf(last, sizeof(last), "%s.last", ckpt);
    Checkpoint c;
    cr_assert_eq(ckpt_load(&c, last, err, sizeof(err)), 0, "%s", err);
    const CkptSection* parm = ckpt_find(&c, "PARM");
    cr_assert_not_null(parm);
    cr_assert_geq(parm->size, 4 * 41);
    ckpt_put_f32((unsigned char*)parm->data + 4 * 40, NAN);
    const char* path = test_path("nan.bin");
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&c);

    TestResult r = RUN(NULL, "--info", path);
    expect_failure(&r, "weights are not finite", "run --info on a NaN weight");
    test_result_free(&r);
    r = TRAIN(NULL, "--resume", path, "--steps", "30", "-q");
    expect_failure(&r, "weights are not finite", "train --resume on a NaN weight");
    cr_expect(strstr(r.err, "diverged") == NULL || strstr(r.err, "diverged run") != NULL,
              "a NaN checkpoint is blamed on the training:\n%s", r.err);
    cr_expect(strstr(r.err, "--lr") == NULL, "a NaN checkpoint is blamed on --lr:\n%s",
              r.err);
    test_result_free(&r);
}

// A checkpoint of format version 2 (header checksum fixed up): rejected with
// the version in the message.
Test(robust, run_rejects_newer_version) {
    const char* ckpt = train_tiny("model.bin");
    size_t n;
    unsigned char* data = (unsigned char*)test_read_file(ckpt, &n);
    cr_assert_gt(n, CKPT_HEADER_SIZE);
    ckpt_put_u32(data + CKPT_OFF_VERSION, CKPT_VERSION + 1);
    ckpt_put_u32(data + CKPT_OFF_HEADER_CRC, (uint32_t)crc32(0L, data, CKPT_OFF_HEADER_CRC));
    const char* path = test_path("newer.bin");
    test_write_file(path, data, n);
    free(data);
    char version[64];
    snprintf(version, sizeof(version), "format version %u", CKPT_VERSION + 1);
    TestResult r = RUN(NULL, path, "-n", "5");
    expect_failure(&r, version, "run on a newer checkpoint");
    cr_expect(strstr(r.err, "newer") != NULL, "the message does not say newer:\n%s", r.err);
    cr_expect(strstr(r.err, "newer.bin") != NULL, "the file is not named:\n%s", r.err);
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// valgrind

// run under valgrind: no invalid access, no use of uninitialised memory, no
// leak. $GAME_VALGRIND_RUN names the run to check (make test-valgrind builds a
// portable one: valgrind cannot decode AVX-512 code built for this machine).
Test(robust, run_under_valgrind) {
    if (access("/usr/bin/valgrind", X_OK) != 0)
        cr_skip_test("valgrind is not installed (/usr/bin/valgrind)");
    if (SANITIZED) cr_skip_test("the programs are built with AddressSanitizer");
    const char* ckpt = train_tiny("model.bin");
    const char* prog = getenv("GAME_VALGRIND_RUN");
    char prog_abs[PATH_MAX];
    if (prog && prog[0]) {
        cr_assert_not_null(realpath(prog, prog_abs), "GAME_VALGRIND_RUN '%s': %s", prog,
                           strerror(errno));
        prog = prog_abs;
    } else {
        prog = g_run;
    }
    TestResult r = run_prog(NULL, "/usr/bin/valgrind", "-q", "--error-exitcode=99",
                            "--leak-check=full", prog, ckpt, "-n", "20", (const char*)NULL);
    if ((WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGILL) ||
        strstr(r.err, "unhandled instruction") != NULL) {
        test_result_free(&r);
        cr_skip_test("valgrind cannot decode the instructions of %s (built for this "
                     "CPU); make test-valgrind checks a portable build", prog);
    }
    expect_success(&r, "run under valgrind");
    test_expect_text(&r, 20, "run under valgrind");
    test_result_free(&r);
}
