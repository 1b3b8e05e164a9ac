// test_cli.c: tests of the train and run programs as a user meets them, suite "cli".
//
// The tests run the built binaries ./train and ./run (those in $GAME_BIN_DIR when
// it is set; so `make` first, and run the tests from the repository root),
// capture their stdout and stderr in
// files, and check exit codes, messages and output bytes. Every bad input must
// end with exit code 1 (not a signal) and a message naming the flag or the
// problem, and a failed train must leave no checkpoint. The models are tiny
// (1 layer, 16 channels, context 8, 20 steps), so the suite takes seconds. Each
// test works in its own temporary folder under /tmp, removed afterwards.
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "weights.h"

#include "testutil.h"

#define MAX_ARGS  64
#define CONTEXT   8        // the tiny models' context

// ----------------------------------------------------------------------------
// The programs, the temporary folder and files

// The programs, in test_bin_dir() (set per test by setup).
static char g_train[PATH_MAX + 16], g_run[PATH_MAX + 16];
#define TRAIN_BIN g_train
#define RUN_BIN   g_run

// Per test: the binaries must exist, and a fresh folder is made (g_test_dir).
static void setup(void) {
    test_find_program(g_train, sizeof(g_train), "train", 0);
    test_find_program(g_run, sizeof(g_run), "run", 0);
    test_dir_setup("cli");
}

TestSuite(cli, .init = setup, .fini = test_dir_teardown, .timeout = 120);

static void write_text(const char* path, const char* text) {
    test_write_file(path, text, strlen(text));
}

// The tiny models' training text (test_training_text), about 3 KB.
static void write_training_text(const char* path) {
    char text[4096];
    test_write_file(path, text, test_training_text(text, sizeof(text), 0, 0));
}

// ----------------------------------------------------------------------------
// Running a program

// Runs argv[0] with argv (NULL-terminated), stdin from /dev/null, stdout and
// stderr into files of the test's folder, and reads both back.
static TestResult run_argv(char* const argv[]) {
    TestSpawn sp = {.dir = g_test_dir};
    return test_run_argv(&sp, argv);
}

// Runs a program with the arguments that follow, up to a NULL.
static TestResult run_prog(const char* prog, ...) {
    char* argv[MAX_ARGS];
    va_list ap;
    va_start(ap, prog);
    test_argv_va(argv, MAX_ARGS, prog, ap);
    va_end(ap);
    return run_argv(argv);
}

#define RUN_TRAIN(...) run_prog(TRAIN_BIN, __VA_ARGS__, (const char*)NULL)
#define RUN_RUN(...)   run_prog(RUN_BIN, __VA_ARGS__, (const char*)NULL)

// Asserts a failure: a normal exit with code 1 and an error message on stderr
// that contains each of the strings that follow (up to a NULL).
static void expect_failure(const TestResult* r, const char* what, ...) {
    cr_assert(!WIFSIGNALED(r->status), "%s: killed by signal %d; stderr:\n%s", what,
              WTERMSIG(r->status), r->err);
    cr_assert(WIFEXITED(r->status), "%s: did not exit normally", what);
    cr_expect_eq(WEXITSTATUS(r->status), 1, "%s: exit code %d, expected 1; stderr:\n%s",
                 what, WEXITSTATUS(r->status), r->err);
    cr_expect(strstr(r->err, "error: ") != NULL, "%s: no 'error: ' on stderr:\n%s", what,
              r->err);
    va_list ap;
    va_start(ap, what);
    const char* needle;
    while ((needle = va_arg(ap, const char*)) != NULL) {
        cr_expect(strstr(r->err, needle) != NULL, "%s: stderr lacks \"%s\":\n%s", what,
                  needle, r->err);
    }
    va_end(ap);
}

#define EXPECT_FAILURE(r, what, ...) expect_failure(r, what, __VA_ARGS__, (const char*)NULL)

// Asserts a normal exit with code 0.
static void expect_success(const TestResult* r, const char* what) {
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
              "%s: failed (status 0x%x); stderr:\n%s", what, r->status, r->err);
}

// Trains the tiny model on a fresh text into name and returns its path (in a
// buffer of its own).
static const char* train_tiny(const char* name) {
    static char ckpt[256];
    const char* text = test_path("train.txt");
    if (!test_file_exists(text)) write_training_text(text);
    snprintf(ckpt, sizeof(ckpt), "%s/%s", g_test_dir, name);
    TestResult r = RUN_TRAIN("-i", text, "-o", ckpt, "--layers", "1", "--channels", "16",
                             "--heads", "2", "--context", "8", "--batch", "2", "--steps", "20",
                             "--warmup", "2", "--eval-every", "10", "--eval-batches", "2",
                             "--threads", "1");
    expect_success(&r, "train of the tiny model");
    cr_assert(test_file_exists(ckpt), "train exited 0 but wrote no %s", ckpt);
    test_result_free(&r);
    return ckpt;
}

// ----------------------------------------------------------------------------
// train: bad inputs

// Runs train with the given flags after -i TEXT -o OUT and expects a failure
// whose message contains needle, and no OUT afterwards.
static void train_fails(const char* text, const char* needle, char* const flags[]) {
    const char* out = test_path("never.bin");
    char* argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = TRAIN_BIN;
    argv[argc++] = "-i";
    argv[argc++] = (char*)text;
    argv[argc++] = "-o";
    argv[argc++] = (char*)out;
    for (int i = 0; flags[i] != NULL; i++) argv[argc++] = flags[i];
    argv[argc] = NULL;

    char what[256];
    size_t used = (size_t)snprintf(what, sizeof(what), "train");
    for (int i = 0; flags[i] != NULL && used < sizeof(what); i++) {
        used += (size_t)snprintf(what + used, sizeof(what) - used, " %s", flags[i]);
    }
    TestResult r = run_argv(argv);
    EXPECT_FAILURE(&r, what, needle);
    cr_expect(!test_file_exists(out), "%s: a checkpoint was written", what);
    test_result_free(&r);
}

#define TRAIN_FAILS(text, needle, ...) \
    train_fails(text, needle, (char* const[]){__VA_ARGS__, NULL})

Test(cli, train_missing_input) {
    const char* missing = test_path("no_such_text.txt");
    TRAIN_FAILS(missing, "no_such_text.txt", "--steps", "5", "--warmup", "1");
    TRAIN_FAILS(missing, "cannot open", "--steps", "5", "--warmup", "1");
}

Test(cli, train_directory_input) {
    TRAIN_FAILS(g_test_dir, "is a directory", "--steps", "5", "--warmup", "1");
}

Test(cli, train_empty_input) {
    const char* empty = test_path("empty.txt");
    write_text(empty, "");
    TRAIN_FAILS(empty, "is empty", "--steps", "5", "--warmup", "1");
}

// With 10% held out, each part needs context + 1 characters: 20 characters
// are too few for context 8, and so is exactly context + 1.
Test(cli, train_text_too_short) {
    const char* shorter = test_path("short.txt");
    write_text(shorter, "abcdefghij abcdefghi");
    TRAIN_FAILS(shorter, "too short for context 8", "--context", "8", "--steps", "5",
                "--warmup", "1");
    write_text(shorter, "abcdefghi");
    TRAIN_FAILS(shorter, "too short for context 8", "--context", "8", "--steps", "5",
                "--warmup", "1");
}

Test(cli, train_bad_flag_values) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    TRAIN_FAILS(text, "--lr 'abc'", "--lr", "abc");
    TRAIN_FAILS(text, "--lr '-1'", "--lr", "-1");
    TRAIN_FAILS(text, "--lr '0'", "--lr", "0");
    TRAIN_FAILS(text, "--lr '1e-3x'", "--lr", "1e-3x");
    TRAIN_FAILS(text, "--channels 128 is not a multiple of --heads 3", "--heads", "3",
                "--channels", "128");
    TRAIN_FAILS(text, "--batch '0'", "--batch", "0");
    TRAIN_FAILS(text, "--steps '0'", "--steps", "0");
    TRAIN_FAILS(text, "--context '0'", "--context", "0");
    TRAIN_FAILS(text, "--layers '-2'", "--layers", "-2");
    TRAIN_FAILS(text, "--steps '99999999999999999999999'", "--steps",
                "99999999999999999999999");
    TRAIN_FAILS(text, "--game 'bogus'", "--game", "bogus");
    TRAIN_FAILS(text, "unknown option '--bogus'", "--bogus", "1");
    TRAIN_FAILS(text, "unknown option '-x'", "-x");
    TRAIN_FAILS(text, "--lr needs a value", "--lr");
    TRAIN_FAILS(text, "unexpected argument 'extra'", "extra");
    TRAIN_FAILS(text, "--min-lr 0.01 is above --lr 0.001", "--lr", "0.001", "--min-lr",
                "0.01");
    TRAIN_FAILS(text, "--warmup 30 is longer than --steps 20", "--steps", "20",
                "--warmup", "30");
    TRAIN_FAILS(text, "--val-fraction '0'", "--val-fraction", "0");
}

// The checkpoint must never overwrite the text it is trained on.
Test(cli, train_output_same_as_input) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    size_t n_before;
    char* before = test_read_file(text, &n_before);
    TestResult r = RUN_TRAIN("-i", text, "-o", text, "--layers", "1", "--channels", "16",
                             "--heads", "2", "--context", "8", "--batch", "2", "--steps", "4",
                             "--eval-every", "2", "--eval-batches", "1", "--threads", "1");
    size_t n_after;
    char* after = test_read_file(text, &n_after);
    cr_expect(n_before == n_after && memcmp(before, after, n_before) == 0,
              "train -o %s overwrote its own training text", text);
    EXPECT_FAILURE(&r, "train with -o equal to -i", "train.txt");
    free(before);
    free(after);
    test_result_free(&r);
}

// An -o in a folder that does not exist must fail before the training, not at
// the first evaluation after eval-every steps of work.
Test(cli, train_output_folder_missing) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    const char* out = test_path("no_such_folder/model.bin");
    TestResult r = RUN_TRAIN("-i", text, "-o", out, "--layers", "1", "--channels", "16",
                             "--heads", "2", "--context", "8", "--batch", "2", "--steps", "20",
                             "--eval-every", "20", "--eval-batches", "1", "--threads", "1");
    EXPECT_FAILURE(&r, "train -o in a missing folder", "no_such_folder");
    cr_expect(strstr(r.out, "step") == NULL,
              "train ran steps before finding that it cannot write %s:\n%s", out, r.out);
    test_result_free(&r);
}

// ----------------------------------------------------------------------------
// train and run: the working path

Test(cli, train_writes_checkpoint) {
    const char* text = test_path("train.txt");
    write_training_text(text);
    const char* ckpt = test_path("model.bin");
    TestResult r = RUN_TRAIN("-i", text, "-o", ckpt, "--layers", "1", "--channels", "16",
                             "--heads", "2", "--context", "8", "--batch", "2", "--steps", "20",
                             "--warmup", "2", "--eval-every", "10", "--eval-batches", "2",
                             "--threads", "1");
    expect_success(&r, "tiny train");
    cr_expect(strstr(r.out, "model: 1 layer, 2 heads, 16 channels, context 8") != NULL,
              "no model line:\n%s", r.out);
    cr_expect(strstr(r.out, "eval step 10:") != NULL, "no eval at step 10:\n%s", r.out);
    cr_expect(strstr(r.out, "eval step 20:") != NULL, "no eval at step 20:\n%s", r.out);
    cr_expect(strstr(r.out, "saved to") != NULL, "no save reported:\n%s", r.out);
    test_result_free(&r);

    // the best and the latest checkpoint, and nothing else left behind (no
    // temporary file)
    size_t n;
    char* data = test_read_file(ckpt, &n);
    cr_expect(n > 64 && memcmp(data, "GAMECKPT", 8) == 0, "%s is no checkpoint", ckpt);
    cr_expect_eq(n % 8, 0, "checkpoint size %zu is not a multiple of 8", n);
    free(data);
    DIR* d = opendir(g_test_dir);
    cr_assert_not_null(d);
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        const char* name = e->d_name;
        int known = !strcmp(name, ".") || !strcmp(name, "..") ||
                    !strcmp(name, "train.txt") || !strcmp(name, "model.bin") ||
                    !strcmp(name, "model.bin.last") ||
                    !strncmp(name, "captured.", 9);
        cr_expect(known, "train left '%s' behind", name);
    }
    closedir(d);
}

Test(cli, run_same_seed_same_text) {
    const char* ckpt = train_tiny("model.bin");
    TestResult a = RUN_RUN(ckpt, "-n", "50", "-s", "1");
    TestResult b = RUN_RUN(ckpt, "-n", "50", "-s", "1");
    TestResult c = RUN_RUN(ckpt, "-n", "50", "-s", "2");
    expect_success(&a, "run -n 50 -s 1");
    expect_success(&b, "run -n 50 -s 1, again");
    expect_success(&c, "run -n 50 -s 2");
    test_expect_text(&a, 50, "run -n 50 -s 1");
    test_expect_text(&c, 50, "run -n 50 -s 2");
    cr_expect(test_same_output(&a, &b), "same seed, different text:\n%s\n%s", a.out, b.out);
    cr_expect(!test_same_output(&a, &c), "seeds 1 and 2 gave the same text:\n%s", a.out);
    cr_expect(strstr(a.err, "50 tokens in") != NULL && strstr(a.err, "tokens/s") != NULL,
              "no speed line on stderr:\n%s", a.err);
    cr_expect(strstr(a.out, "tokens/s") == NULL, "the speed line went to stdout");
    test_result_free(&a);
    test_result_free(&b);
    test_result_free(&c);
}

Test(cli, run_settings_that_work) {
    const char* ckpt = train_tiny("model.bin");

    // greedy: the seed does not matter
    TestResult a = RUN_RUN(ckpt, "-n", "40", "-t", "0", "-s", "1");
    TestResult b = RUN_RUN(ckpt, "-n", "40", "-t", "0", "-s", "99");
    expect_success(&a, "run -t 0");
    expect_success(&b, "run -t 0 -s 99");
    test_expect_text(&a, 40, "run -t 0");
    cr_expect(test_same_output(&a, &b), "greedy text depends on the seed:\n%s\n%s", a.out,
              b.out);
    test_result_free(&a);
    test_result_free(&b);

    // the edges of each setting, long flag names, and no text at all
    const char* cases[][8] = {
        {"-k", "1", "-n", "20", NULL},
        {"-p", "1", "-n", "20", NULL},
        {"--top-k", "3", "--top-p", "0.5", "--temperature", "0.7", "-n", "20"},
        {"--tokens", "20", "--seed", "0", NULL},
    };
    for (int i = 0; i < 4; i++) {
        TestResult r = run_prog(RUN_BIN, ckpt, cases[i][0], cases[i][1], cases[i][2],
                                cases[i][3], cases[i][4], cases[i][5], cases[i][6],
                                cases[i][7], (const char*)NULL);
        char what[64];
        snprintf(what, sizeof(what), "run %s %s %s %s", cases[i][0], cases[i][1],
                 cases[i][2], cases[i][3]);
        expect_success(&r, what);
        test_expect_text(&r, 20, what);
        test_result_free(&r);
    }
    TestResult z = RUN_RUN(ckpt, "-n", "0");
    expect_success(&z, "run -n 0");
    cr_expect(z.out_len == 1 && z.out[0] == '\n', "run -n 0 printed %zu bytes", z.out_len);
    test_result_free(&z);
}

Test(cli, run_prompt_unknown_character) {
    const char* ckpt = train_tiny("model.bin");
    TestResult r = RUN_RUN(ckpt, "-n", "5", "-i", "the Q");
    EXPECT_FAILURE(&r, "prompt with Q", "'Q' (U+0051)", "position 5", "byte 4");
    cr_expect_eq(r.out_len, 0, "text printed before the prompt error");
    test_result_free(&r);

    // positions count characters, bytes count bytes: é is 2 bytes
    r = RUN_RUN(ckpt, "-n", "5", "-i", "caf\xC3\xA9 \xCE\xA9");
    EXPECT_FAILURE(&r, "prompt with omega", "U+03A9", "position 6", "byte 6");
    test_result_free(&r);

    // and from a file, with a byte that is not UTF-8
    const char* pf = test_path("prompt.txt");
    write_text(pf, "the \xFF");
    r = RUN_RUN(ckpt, "-n", "5", "-f", pf);
    EXPECT_FAILURE(&r, "prompt file with 0xFF", "byte 0xFF", "position 5");
    test_result_free(&r);
}

Test(cli, run_bad_flags) {
    const char* ckpt = train_tiny("model.bin");
    const char* pf = test_path("prompt.txt");
    write_text(pf, "the cat");
    struct {
        const char* flag;
        const char* value;
        const char* needle;
    } cases[] = {
        {"-t", "-1", "-t '-1'"},
        {"-t", "nan", "-t 'nan'"},
        {"-k", "-1", "-k '-1'"},
        {"-k", "1000", "top-k must not exceed"},
        {"-p", "0", "-p '0'"},
        {"-p", "1.5", "-p '1.5'"},
        {"-n", "abc", "-n 'abc'"},
        {"-n", "-3", "-n '-3'"},
        {"-s", "x1", "-s 'x1'"},
        {"--bogus", "1", "unknown option '--bogus'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TestResult r = RUN_RUN(ckpt, cases[i].flag, cases[i].value);
        char what[64];
        snprintf(what, sizeof(what), "run %s %s", cases[i].flag, cases[i].value);
        EXPECT_FAILURE(&r, what, cases[i].needle);
        cr_expect_eq(r.out_len, 0, "%s: printed text", what);
        test_result_free(&r);
    }
    TestResult r = RUN_RUN(ckpt, "-i", "the", "-f", pf);
    EXPECT_FAILURE(&r, "run -i and -f", "-i or -f, not both");
    test_result_free(&r);
    r = RUN_RUN(ckpt, "-n");
    EXPECT_FAILURE(&r, "run -n without a value", "-n needs a value");
    test_result_free(&r);
    r = RUN_RUN(ckpt, "the cat");
    EXPECT_FAILURE(&r, "run with a stray argument", "unexpected argument 'the cat'");
    test_result_free(&r);
    r = RUN_RUN("-n", "5");
    EXPECT_FAILURE(&r, "run without a model", "no model given");
    test_result_free(&r);
    r = RUN_RUN(ckpt, "-f", test_path("no_prompt.txt"));
    EXPECT_FAILURE(&r, "run -f missing file", "no_prompt.txt");
    test_result_free(&r);
}

// --fp32 and --bf16 are documented flags: the float weights as stored, or the
// matrices rounded to bfloat16. Either way the cached decoder and the full
// forward pass (--no-cache) sample the same model, so their greedy texts agree.
// The default decodes in int8 and gives text too; the two flags together are an
// error.
Test(cli, run_precision_flags) {
    TestResult h = RUN_RUN("--help");
    expect_success(&h, "run --help");
    cr_expect(strstr(h.out, "--fp32") && strstr(h.out, "--bf16"),
              "run --help does not mention --fp32 and --bf16:\n%s", h.out);
    test_result_free(&h);

    const char* ckpt = train_tiny("model.bin");
    TestResult a = RUN_RUN(ckpt, "-n", "40", "-t", "0", "--fp32");
    TestResult b = RUN_RUN(ckpt, "-n", "40", "-t", "0", "--fp32", "--no-cache");
    TestResult c = RUN_RUN(ckpt, "-n", "40", "-t", "0", "--bf16");
    TestResult d = RUN_RUN(ckpt, "-n", "40", "-t", "0", "--bf16", "--no-cache");
    TestResult e = RUN_RUN(ckpt, "-n", "40", "-t", "0");
    expect_success(&a, "run --fp32");
    expect_success(&b, "run --fp32 --no-cache");
    expect_success(&c, "run --bf16");
    expect_success(&d, "run --bf16 --no-cache");
    expect_success(&e, "run");
    test_expect_text(&a, 40, "run --fp32");
    test_expect_text(&c, 40, "run --bf16");
    test_expect_text(&e, 40, "run");
    cr_expect(test_same_output(&a, &b), "--fp32: cache and no cache differ:\n%s\n%s",
              a.out, b.out);
    cr_expect(test_same_output(&c, &d), "--bf16: cache and no cache differ:\n%s\n%s",
              c.out, d.out);
    test_result_free(&a);
    test_result_free(&b);
    test_result_free(&c);
    test_result_free(&d);
    test_result_free(&e);

    TestResult both = RUN_RUN(ckpt, "-n", "5", "--fp32", "--bf16");
    EXPECT_FAILURE(&both, "run --fp32 --bf16", "not both");
    test_result_free(&both);
}

Test(cli, run_missing_model) {
    const char* missing = test_path("nothing_here.bin");
    TestResult r = RUN_RUN(missing, "-n", "5");
    EXPECT_FAILURE(&r, "missing model", "nothing_here.bin", "cannot open checkpoint");
    test_result_free(&r);
    r = RUN_RUN(g_test_dir, "-n", "5");
    EXPECT_FAILURE(&r, "directory as model", "is a directory");
    test_result_free(&r);
}

// Writes data[0 .. n-1] as name, runs it, and expects a clean failure.
static void run_rejects(const char* name, const void* data, size_t n, const char* needle) {
    const char* path = test_path(name);
    test_write_file(path, data, n);
    TestResult r = RUN_RUN(path, "-n", "5");
    EXPECT_FAILURE(&r, name, name, needle);
    cr_expect_eq(r.out_len, 0, "%s: printed text", name);
    test_result_free(&r);
}

Test(cli, run_corrupt_checkpoints) {
    const char* ckpt = train_tiny("model.bin");
    size_t n;
    unsigned char* good = (unsigned char*)test_read_file(ckpt, &n);
    unsigned char* bad = malloc(n + 1);
    cr_assert_not_null(bad);

    // one flipped byte in the middle (in the parameters)
    memcpy(bad, good, n);
    bad[n / 2] ^= 0x01;
    run_rejects("flipped.bin", bad, n, "checksum mismatch");

    // cut short, one byte too many, garbage, nothing
    run_rejects("truncated.bin", good, n / 2, "truncated");
    run_rejects("truncated_header.bin", good, 40, "truncated");
    memcpy(bad, good, n);
    bad[n] = 0;
    run_rejects("appended.bin", bad, n + 1, "more than");
    uint32_t state = 777;
    for (size_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        bad[i] = (unsigned char)(state >> 24);
    }
    run_rejects("garbage.bin", bad, n, "not a game checkpoint");
    run_rejects("garbage_small.bin", bad, 7, "checkpoint");
    run_rejects("empty.bin", "", 0, "empty file");

    // a flipped bit anywhere: every offset of a spread sample
    for (int k = 0; k < 24; k++) {
        size_t at = (size_t)k * (n - 1) / 23;
        memcpy(bad, good, n);
        bad[at] ^= 0x80;
        char name[64];
        snprintf(name, sizeof(name), "flip_%zu.bin", at);
        run_rejects(name, bad, n, "checkpoint");
    }
    free(good);
    free(bad);
}

// A text with bytes that are not UTF-8 and CR LF line ends trains, and run
// still prints valid UTF-8 (raw-byte tokens as U+FFFD).
Test(cli, train_and_run_raw_bytes) {
    char text[3000];
    for (int i = 0; i < (int)sizeof(text); i++) {
        static const char pattern[] = "ab\xFF" "cd\r\n\xE9" "e f\xC3";
        text[i] = pattern[i % (int)(sizeof(pattern) - 1)];
    }
    const char* path = test_path("bytes.txt");
    test_write_file(path, text, sizeof(text));
    const char* ckpt = test_path("bytes.bin");
    TestResult r = RUN_TRAIN("-i", path, "-o", ckpt, "--layers", "1", "--channels", "16",
                             "--heads", "2", "--context", "8", "--batch", "2", "--steps", "10",
                             "--warmup", "1", "--eval-every", "10", "--eval-batches", "1",
                             "--threads", "1");
    expect_success(&r, "train on raw bytes");
    test_result_free(&r);
    TestResult g = RUN_RUN(ckpt, "-n", "300", "-t", "3", "-s", "4");
    expect_success(&g, "run on the raw-byte model");
    test_expect_text(&g, 300, "run on the raw-byte model");
    cr_expect(memmem(g.out, g.out_len, "\xEF\xBF\xBD", 3) != NULL,
              "no raw-byte token (U+FFFD) in 300 characters at temperature 3");
    test_result_free(&g);
}

// A NaN weight: run refuses the checkpoint when it loads it, exit code 1.
Test(cli, run_non_finite_weights) {
    const char* ckpt = train_tiny("model.bin");
    Checkpoint c;
    char err[512];
    cr_assert_eq(ckpt_load(&c, ckpt, err, sizeof(err)), 0, "%s", err);
    const CkptSection* parm = ckpt_find(&c, "PARM");
    cr_assert_not_null(parm);
    cr_assert_geq(parm->size, 4);
    ckpt_put_f32((unsigned char*)parm->data, NAN); // wte[0][0], so logit 0 is NaN
    const char* nan_path = test_path("nan.bin");
    cr_assert_eq(ckpt_save(&c, nan_path, err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&c);

    TestResult r = RUN_RUN(nan_path, "-n", "20");
    EXPECT_FAILURE(&r, "run on NaN weights", "weights are not finite (wte[0] is nan)");
    test_result_free(&r);
}

Test(cli, run_long_prompt_and_prompt_file) {
    const char* ckpt = train_tiny("model.bin");

    // longer than the context: works, with a note
    const char* prompt = "the quick brown fox jumps over the lazy dog";
    long chars = (long)strlen(prompt);
    TestResult a = RUN_RUN(ckpt, "-n", "30", "-s", "5", "-i", prompt);
    expect_success(&a, "run with a long prompt");
    test_expect_text(&a, 30, "run with a long prompt");
    char note[128];
    snprintf(note, sizeof(note), "note: the prompt has %ld characters; the model sees its "
             "last %d", chars, CONTEXT);
    cr_expect(strstr(a.err, note) != NULL, "no note on stderr:\n%s", a.err);
    cr_expect(strstr(a.out, "note") == NULL, "the note went to stdout");

    // only the last `context` characters matter
    TestResult b = RUN_RUN(ckpt, "-n", "30", "-s", "5", "-i", prompt + chars - CONTEXT);
    expect_success(&b, "run with the prompt's tail");
    cr_expect(test_same_output(&a, &b), "a long prompt and its last %d characters differ:\n"
              "%s\n%s", CONTEXT, a.out, b.out);
    cr_expect(strstr(b.err, "note") == NULL, "a note for a prompt that fits:\n%s", b.err);

    // the same prompt from a file gives the same text
    const char* pf = test_path("prompt.txt");
    write_text(pf, prompt);
    TestResult c = RUN_RUN(ckpt, "-n", "30", "-s", "5", "-f", pf);
    expect_success(&c, "run -f");
    cr_expect(test_same_output(&a, &c), "-f and -i with one prompt differ:\n%s\n%s", a.out,
              c.out);
    test_result_free(&a);
    test_result_free(&b);
    test_result_free(&c);

    // a short prompt file, and an empty one
    write_text(pf, "the cat");
    TestResult d = RUN_RUN(ckpt, "-n", "10", "-f", pf);
    expect_success(&d, "run -f short");
    test_expect_text(&d, 10, "run -f short");

    // a file's one final line end (an editor's) is not part of the prompt
    write_text(pf, "the cat\n");
    TestResult nl = RUN_RUN(ckpt, "-n", "10", "-f", pf);
    expect_success(&nl, "run -f with a final line end");
    cr_expect(test_same_output(&d, &nl), "a prompt file's final line end was kept:\n%s\n%s",
              d.out, nl.out);
    test_result_free(&nl);
    test_result_free(&d);
    write_text(pf, "");
    TestResult e = RUN_RUN(ckpt, "-n", "10", "-f", pf);
    expect_success(&e, "run -f empty");
    test_expect_text(&e, 10, "run -f empty");
    test_result_free(&e);
}
