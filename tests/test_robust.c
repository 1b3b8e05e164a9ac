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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "game.h"
#include "tokenizer.h"
#include "weights.h"

#define MAX_ARGS 64
#define CHILD_TIMEOUT_S 60 // a program still running after this is killed (SIGALRM)
#define CONTEXT 8          // the tiny models' context
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

static char g_dir[64];
static char g_train[PATH_MAX + 16], g_run[PATH_MAX + 16];

static int remove_entry(const char* p, const struct stat* st, int type, struct FTW* ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    remove(p);
    return 0;
}

static void remove_dir(void) {
    if (g_dir[0] != '\0') {
        chmod(g_dir, 0700);
        nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        g_dir[0] = '\0';
    }
}

// Per test: the programs' folder made absolute (children run in other folders
// too), the programs must exist, and a fresh folder is made.
static void setup(void) {
    const char* dir = getenv("GAME_BIN_DIR");
    if (dir == NULL || dir[0] == '\0') dir = ".";
    char abs[PATH_MAX];
    cr_assert_not_null(realpath(dir, abs), "GAME_BIN_DIR '%s': %s", dir, strerror(errno));
    snprintf(g_train, sizeof(g_train), "%s/train", abs);
    snprintf(g_run, sizeof(g_run), "%s/run", abs);
    cr_assert(access(g_train, X_OK) == 0 && access(g_run, X_OK) == 0,
              "%s and %s not found: build them with `make` and run the tests from the "
              "repository root (or set GAME_BIN_DIR)", g_train, g_run);
    snprintf(g_dir, sizeof(g_dir), "/tmp/game_robust_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir), "mkdtemp failed: %s", strerror(errno));
    atexit(remove_dir); // also when a test ends by exit(), which skips .fini
}

static void teardown(void) { remove_dir(); }

TestSuite(robust, .init = setup, .fini = teardown, .timeout = 120);

// The path of name inside the test's folder, in one of 16 rotating buffers.
static const char* path_of(const char* name) {
    static char bufs[16][256];
    static int next = 0;
    char* b = bufs[next++ % 16];
    snprintf(b, sizeof(bufs[0]), "%s/%s", g_dir, name);
    return b;
}

static void write_bytes(const char* path, const void* data, size_t n) {
    FILE* f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

// Reads a whole file into a new NUL-terminated buffer; *n gets its size.
static char* read_bytes(const char* path, size_t* n) {
    FILE* f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char* buf = malloc(cap);
    cr_assert_not_null(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    *n = len;
    return buf;
}

static int file_exists(const char* path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int same_file_bytes(const char* a, const char* b) {
    size_t na, nb;
    char* da = read_bytes(a, &na);
    char* db = read_bytes(b, &nb);
    int same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

// A text of about 3 KB over a fixed word list, made by a small generator; with
// latin1 the accented letters are single Latin-1 bytes (not UTF-8), with crlf
// the line ends are CR LF.
static size_t make_text(char* text, size_t cap, int latin1, int crlf) {
    static const char* utf8_words[] = {
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and",
        "then", "runs", "away", "from", "caf\xC3\xA9", "\xC3\xBC" "ber", "na\xC3\xAFve",
        "cat", "sat", "on", "mat", "in", "old", "town",
    };
    static const char* latin1_words[] = {
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and",
        "then", "runs", "away", "from", "caf\xE9", "\xFC" "ber", "na\xEFve",
        "cat", "sat", "on", "mat", "in", "old", "town",
    };
    const char** words = latin1 ? latin1_words : utf8_words;
    int nwords = (int)(sizeof(utf8_words) / sizeof(utf8_words[0]));
    size_t len = 0;
    uint32_t state = 12345;
    while (len < 3000 && len + 16 < cap) {
        state = state * 1664525u + 1013904223u;
        const char* w = words[(state >> 16) % nwords];
        const char* sep = (state >> 8) % 9 == 0 ? (crlf ? "\r\n" : "\n") : " ";
        len += (size_t)snprintf(text + len, cap - len, "%s%s", w, sep);
    }
    return len;
}

static void write_training_text(const char* path) {
    char text[4096];
    write_bytes(path, text, make_text(text, sizeof(text), 0, 0));
}

// Names in folder dir that contain ".tmp." (an atomic save's temporary file),
// written into found; returns how many.
static int count_temp_files(const char* dir, char* found, size_t len) {
    DIR* d = opendir(dir);
    cr_assert_not_null(d, "cannot list %s: %s", dir, strerror(errno));
    int count = 0;
    found[0] = '\0';
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp.") != NULL) {
            count++;
            size_t used = strlen(found);
            snprintf(found + used, len - used, " %s", e->d_name);
        }
    }
    closedir(d);
    return count;
}

#define EXPECT_NO_TEMP_FILES(dir, what)                                                \
    do {                                                                               \
        char temps_[512];                                                              \
        cr_expect_eq(count_temp_files(dir, temps_, sizeof(temps_)), 0,                 \
                     "%s: temporary files left behind:%s", what, temps_);              \
    } while (0)

// ----------------------------------------------------------------------------
// Running a program

typedef struct {
    const char* cwd;  // folder to run in, NULL for the test's folder
    long fsize_limit; // RLIMIT_FSIZE in bytes (SIGXFSZ ignored), 0 for none
    long as_limit;    // RLIMIT_AS in bytes, 0 for none
    int timeout_s;    // SIGALRM after this many seconds, 0 for CHILD_TIMEOUT_S
    const char* asan_options; // appended to ASAN_OPTIONS, or NULL
} Spawn;

typedef struct {
    int status;  // from waitpid
    char* out;   // stdout, NUL-terminated
    size_t out_len;
    char* err;   // stderr, NUL-terminated
    size_t err_len;
    long max_rss_kb; // the child's peak resident memory
} Result;

static void result_free(Result* r) {
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

// The captured output's files, in buffers of their own (path_of's rotate).
static const char* out_path(void) {
    static char b[256];
    snprintf(b, sizeof(b), "%s/captured.stdout", g_dir);
    return b;
}

static const char* err_path(void) {
    static char b[256];
    snprintf(b, sizeof(b), "%s/captured.stderr", g_dir);
    return b;
}

// Starts argv[0] with argv (NULL-terminated) as sp says, stdin from /dev/null,
// stdout and stderr into the captured files. Returns the child's pid.
static pid_t spawn_argv(const Spawn* sp, char* const argv[]) {
    static const Spawn none = {0};
    if (sp == NULL) sp = &none;
    const char* outp = out_path();
    const char* errp = err_path();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork failed: %s", strerror(errno));
    if (pid > 0) return pid;

    // the child: files, folder, limits, default signals, then the program
    int in = open("/dev/null", O_RDONLY);
    int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (chdir(sp->cwd ? sp->cwd : g_dir) != 0) _exit(126);
    if (sp->fsize_limit > 0) {
        struct rlimit rl = {(rlim_t)sp->fsize_limit, (rlim_t)sp->fsize_limit};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(126);
    }
    if (sp->as_limit > 0) {
        struct rlimit rl = {(rlim_t)sp->as_limit, (rlim_t)sp->as_limit};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(126);
    }
    if (sp->asan_options) {
        const char* old = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof(opts), "%s%s%s", old ? old : "", old && *old ? ":" : "",
                 sp->asan_options);
        setenv("ASAN_OPTIONS", opts, 1);
    }
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGXFSZ, sp->fsize_limit > 0 ? SIG_IGN : SIG_DFL);
    alarm(sp->timeout_s > 0 ? (unsigned)sp->timeout_s : CHILD_TIMEOUT_S);
    execv(argv[0], argv);
    _exit(127);
}

// Waits for pid up to timeout_ms; kills it (SIGKILL) and fails the test when it
// is still running then. Returns the status; *max_rss_kb (may be NULL) gets its
// peak memory.
static int wait_child(pid_t pid, int timeout_ms, long* max_rss_kb, const char* what) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int status;
        struct rusage ru;
        pid_t got = wait4(pid, &status, WNOHANG, &ru);
        if (got == pid) {
            if (max_rss_kb) *max_rss_kb = ru.ru_maxrss;
            return status;
        }
        cr_assert(got == 0 || errno == EINTR, "%s: wait4 failed: %s", what, strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("%s: still running after %d ms (killed)", what, timeout_ms);
        }
        usleep(2000);
    }
}

static Result collect(int status, long max_rss_kb) {
    Result r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.max_rss_kb = max_rss_kb;
    r.out = read_bytes(out_path(), &r.out_len);
    r.err = read_bytes(err_path(), &r.err_len);
    return r;
}

// Runs argv to its end (SIGALRM ends it after the timeout) and reads its output.
static Result run_argv(const Spawn* sp, char* const argv[]) {
    pid_t pid = spawn_argv(sp, argv);
    long rss = 0;
    int status = wait_child(pid, (CHILD_TIMEOUT_S + 10) * 1000, &rss, argv[0]);
    return collect(status, rss);
}

// Collects prog and the arguments that follow, up to a NULL, into argv.
static void build_argv(char* argv[MAX_ARGS], const char* prog, va_list ap) {
    int argc = 0;
    argv[argc++] = (char*)prog;
    const char* a;
    while ((a = va_arg(ap, const char*)) != NULL) {
        cr_assert_lt(argc, MAX_ARGS - 1);
        argv[argc++] = (char*)a;
    }
    argv[argc] = NULL;
}

static Result run_prog(const Spawn* sp, const char* prog, ...) {
    char* argv[MAX_ARGS];
    va_list ap;
    va_start(ap, prog);
    build_argv(argv, prog, ap);
    va_end(ap);
    return run_argv(sp, argv);
}

static pid_t start_prog(const Spawn* sp, const char* prog, ...) {
    char* argv[MAX_ARGS];
    va_list ap;
    va_start(ap, prog);
    build_argv(argv, prog, ap);
    va_end(ap);
    return spawn_argv(sp, argv);
}

#define TRAIN(sp, ...) run_prog(sp, g_train, __VA_ARGS__, (const char*)NULL)
#define RUN(sp, ...)   run_prog(sp, g_run, __VA_ARGS__, (const char*)NULL)
#define START_TRAIN(sp, ...) start_prog(sp, g_train, __VA_ARGS__, (const char*)NULL)

// Waits up to timeout_ms until the captured stdout contains needle; returns 1
// when it does, 0 when the time ran out or the child ended first.
static int wait_for_output(pid_t pid, const char* needle, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        if (file_exists(out_path())) {
            size_t n;
            char* out = read_bytes(out_path(), &n);
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

static void expect_exit(const Result* r, int code, const char* what) {
    cr_assert(!WIFSIGNALED(r->status), "%s: killed by signal %d; stderr:\n%s", what,
              WTERMSIG(r->status), r->err);
    cr_assert(WIFEXITED(r->status), "%s: did not exit normally", what);
    cr_assert_eq(WEXITSTATUS(r->status), code, "%s: exit code %d, expected %d; stderr:\n%s",
                 what, WEXITSTATUS(r->status), code, r->err);
}

static void expect_success(const Result* r, const char* what) { expect_exit(r, 0, what); }

// Asserts a failure with exit code 1 and a message containing needle.
static void expect_failure(const Result* r, const char* needle, const char* what) {
    expect_exit(r, 1, what);
    cr_expect(strstr(r->err, "error: ") != NULL, "%s: no 'error: ' on stderr:\n%s", what,
              r->err);
    cr_expect(strstr(r->err, needle) != NULL, "%s: stderr lacks \"%s\":\n%s", what, needle,
              r->err);
}

// Counts the code points of s[0 .. n-1]; -1 unless it is strict UTF-8.
static long utf8_count(const unsigned char* s, size_t n) {
    long count = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            len = 1;
            cp = b;
        } else if (b >= 0xC2 && b <= 0xDF) {
            len = 2;
            cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3;
            cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4;
            cp = b & 0x07;
        } else {
            return -1;
        }
        if (i + len > n) return -1;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return -1;
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return -1;
        i += len;
        count++;
    }
    return count;
}

// Checks that run's stdout is n characters of valid UTF-8 and one final newline.
static void expect_text(const Result* r, long n, const char* what) {
    cr_assert_gt(r->out_len, 0, "%s: empty stdout", what);
    cr_expect_eq(r->out[r->out_len - 1], '\n', "%s: stdout does not end in a newline",
                 what);
    long chars = utf8_count((const unsigned char*)r->out, r->out_len - 1);
    cr_expect_eq(chars, n, "%s: %ld characters of valid UTF-8 (-1: invalid), expected %ld",
                 what, chars, n);
}

static int same_output(const Result* a, const Result* b) {
    return a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0;
}

// Every file that train's stdout says it saved ("saved to X", "saved in X")
// must exist (relative names are taken in folder dir).
static void expect_saves_exist(const Result* r, const char* dir, const char* what) {
    static const char* marks[] = {"saved to ", "saved in "};
    for (int k = 0; k < 2; k++) {
        for (const char* p = strstr(r->out, marks[k]); p; p = strstr(p + 1, marks[k])) {
            const char* name = p + strlen(marks[k]);
            size_t len = strcspn(name, " )\n");
            char path[512];
            snprintf(path, sizeof(path), "%s%s%.*s", name[0] == '/' ? "" : dir,
                     name[0] == '/' ? "" : "/", (int)len, name);
            cr_expect(file_exists(path), "%s: stdout says \"%s%.*s\" but there is no %s; "
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
    Result r = RUN(NULL, ckpt, "-n", "5");
    expect_success(&r, what);
    expect_text(&r, 5, what);
    result_free(&r);
}

// Trains the tiny model for 20 steps into name (in the test's folder) and
// returns its path in a buffer of its own.
static const char* train_tiny(const char* name) {
    static char ckpt[256];
    const char* text = path_of("train.txt");
    if (!file_exists(text)) write_training_text(text);
    snprintf(ckpt, sizeof(ckpt), "%s/%s", g_dir, name);
    Result r = TRAIN(NULL, "-i", text, "-o", ckpt, TINY, "--steps", "20", "--warmup", "2",
                     "--eval-every", "10", "-q");
    expect_success(&r, "train of the tiny model");
    cr_assert(file_exists(ckpt), "train exited 0 but wrote no %s", ckpt);
    result_free(&r);
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
    snprintf(dir_a, sizeof(dir_a), "%s/A", g_dir);
    snprintf(dir_b, sizeof(dir_b), "%s/B", g_dir);
    cr_assert_eq(mkdir(dir_a, 0755), 0);
    cr_assert_eq(mkdir(dir_b, 0755), 0);
    char text[4096];
    size_t n = make_text(text, sizeof(text), 0, 0);
    write_bytes(path_of("A/t.txt"), text, n);
    write_bytes(path_of("B/t.txt"), text, n);
    Spawn in_a = {.cwd = dir_a}, in_b = {.cwd = dir_b};
    char what[64];
    snprintf(what, sizeof(what), "--game %s", game);

    // the whole run, and the run stopped at step 20
    Result a = TRAIN(&in_a, "-i", "t.txt", "-o", "m.bin", TINY, "--steps", "40", "--warmup",
                     "2", "--eval-every", "10", "--game", game);
    expect_success(&a, what);
    Result b1 = TRAIN(&in_b, "-i", "t.txt", "-o", "m.bin", TINY, "--steps", "40",
                      "--warmup", "2", "--eval-every", "10", "--game", game, "--stop-at",
                      "20");
    expect_success(&b1, what);
    cr_expect(strstr(b1.out, "eval step 30") == NULL, "%s: --stop-at 20 ran on:\n%s", what,
              b1.out);

    // the resume takes every setting from the checkpoint
    Result b2 = TRAIN(&in_b, "--resume", "m.bin.last");
    expect_success(&b2, what);
    cr_expect(strstr(b2.out, "resumed from m.bin.last at step 20") != NULL,
              "%s: no resume line:\n%s", what, b2.out);

    // the same files, byte for byte, and the same losses
    cr_expect(same_file_bytes(path_of("A/m.bin"), path_of("B/m.bin")),
              "%s: the best checkpoints differ", what);
    cr_expect(same_file_bytes(path_of("A/m.bin.last"), path_of("B/m.bin.last")),
              "%s: the latest checkpoints differ", what);
    char la[4096] = "", lb[4096] = "";
    eval_lines(a.out, la, sizeof(la));
    eval_lines(b1.out, lb, sizeof(lb));
    eval_lines(b2.out, lb, sizeof(lb));
    cr_expect(strstr(la, "eval step 40:") != NULL, "%s: no eval at step 40:\n%s", what,
              a.out);
    cr_expect_str_eq(la, lb, "%s: the printed losses differ:\n%s----\n%s", what, la, lb);
    EXPECT_NO_TEMP_FILES(dir_b, what);
    result_free(&a);
    result_free(&b1);
    result_free(&b2);
}

Test(robust, resume_exact_game_off) { check_resume_exact("off"); }

Test(robust, resume_exact_game_full) { check_resume_exact("full"); }

// ----------------------------------------------------------------------------
// Signals

// Starts a long run into name, waits for its first step line and sends sig;
// expects exit code 128 + sig, a stop message, and a latest checkpoint that
// loads. Returns the step it stopped at.
static long interrupt_run(const char* name, int sig) {
    const char* text = path_of("train.txt");
    if (!file_exists(text)) write_training_text(text);
    const char* out = path_of(name);
    pid_t pid = START_TRAIN(NULL, "-i", text, "-o", out, TINY, "--steps", MANY_STEPS,
                            "--save-every", "0", "--log-every", "1");
    cr_assert(wait_for_output(pid, "/" MANY_STEPS " | loss", 20000),
              "no step line after 20 s");
    kill(pid, sig);
    int status = wait_child(pid, 20000, NULL, "train after a signal");
    Result r = collect(status, 0);
    char what[64];
    snprintf(what, sizeof(what), "train stopped by signal %d", sig);
    expect_exit(&r, 128 + sig, what);
    char stop[64];
    snprintf(stop, sizeof(stop), "stopped by signal %d at step ", sig);
    const char* at = strstr(r.err, stop);
    cr_assert_not_null(at, "%s: no stop message:\n%s", what, r.err);
    long step = atol(at + strlen(stop));
    cr_expect_gt(step, 0, "%s: stopped at step %ld", what, step);
    char last[300];
    snprintf(last, sizeof(last), "%s.last", out);
    cr_assert(file_exists(last), "%s: no %s", what, last);
    expect_loads(last, what);
    EXPECT_NO_TEMP_FILES(g_dir, what);
    result_free(&r);
    return step;
}

Test(robust, sigint_saves_and_resumes) {
    long step = interrupt_run("s.bin", SIGINT);

    // the resumed run starts where the signal stopped it
    char stop_at[32], resumed[128];
    snprintf(stop_at, sizeof(stop_at), "%ld", step + 5);
    snprintf(resumed, sizeof(resumed), "at step %ld ", step);
    Result r = TRAIN(NULL, "--resume", path_of("s.bin.last"), "--stop-at", stop_at);
    expect_success(&r, "resume after SIGINT");
    cr_expect(strstr(r.out, resumed) != NULL, "resume did not start %s:\n%s", resumed,
              r.out);
    cr_expect(strstr(r.out, "done: 5 steps") != NULL, "resume did not run 5 steps:\n%s",
              r.out);
    result_free(&r);
    expect_loads(path_of("s.bin.last"), "the resumed latest checkpoint");
}

Test(robust, sigterm_saves) { interrupt_run("t.bin", SIGTERM); }

// A second SIGINT right after the first ends the run at once, in whatever it
// was doing: no temporary file stays, and the checkpoints on disk still load.
// The model is larger here (about 5 MB saved twice a step, and once more after
// the first signal), so the second signal lands before the run has finished
// what the first asks for. Step 1's checkpoints are on disk once step 2 is
// printed.
Test(robust, second_sigint_ends_at_once) {
    const char* text = path_of("train.txt");
    write_training_text(text);
    static const int delays_us[] = {0, 3000, 11000};
    int at_once = 0;
    for (int k = 0; k < 3; k++) {
        char name[32], last[300];
        snprintf(name, sizeof(name), "d%d.bin", k);
        const char* out = path_of(name);
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
        Result r = collect(status, 0);
        expect_exit(&r, 130, "train after two SIGINTs");
        at_once += strstr(r.err, "stopped by signal") == NULL;
        EXPECT_NO_TEMP_FILES(g_dir, "two SIGINTs");
        cr_assert(file_exists(out) && file_exists(last), "no checkpoints after step 1");
        expect_loads(out, "the best checkpoint after two SIGINTs");
        expect_loads(last, "the latest checkpoint after two SIGINTs");
        result_free(&r);
    }
    cr_expect_gt(at_once, 0, "each of 3 runs finished its step and saved after the "
                 "second SIGINT instead of ending at once");
}

// ----------------------------------------------------------------------------
// Divergence

// Trains with a learning rate far too high: the run either stops with the
// divergence error or finishes, and no checkpoint holds a non-finite value.
static void check_divergence(const char* lr, const char* game) {
    const char* text = path_of("train.txt");
    if (!file_exists(text)) write_training_text(text);
    char name[64], what[64];
    snprintf(name, sizeof(name), "lr%s_%s.bin", lr, game);
    snprintf(what, sizeof(what), "train --lr %s --game %s", lr, game);
    const char* out = path_of(name);
    Result r = TRAIN(NULL, "-i", text, "-o", out, TINY, "--steps", "200", "--warmup", "2",
                     "--eval-every", "10", "--lr", lr, "--game", game, "-q");
    cr_assert(WIFEXITED(r.status), "%s: killed by signal %d; stderr:\n%s", what,
              WTERMSIG(r.status), r.err);
    int code = WEXITSTATUS(r.status);
    cr_expect(code == 0 || code == 1, "%s: exit code %d", what, code);
    if (code == 1) {
        cr_expect(strstr(r.err, "diverged") != NULL && strstr(r.err, "lower --lr") != NULL,
                  "%s: failed without the divergence message:\n%s", what, r.err);
    }
    expect_saves_exist(&r, g_dir, what);
    EXPECT_NO_TEMP_FILES(g_dir, what);

    // whatever checkpoint exists is finite, and run on it ends normally
    char last[300];
    snprintf(last, sizeof(last), "%s.last", out);
    const char* ckpts[2] = {out, last};
    for (int k = 0; k < 2; k++) {
        if (!file_exists(ckpts[k])) continue;
        cr_expect_eq(count_non_finite(ckpts[k]), 0, "%s: %s holds non-finite values", what,
                     ckpts[k]);
        Result g = RUN(NULL, ckpts[k], "-n", "20");
        cr_expect(WIFEXITED(g.status), "%s: run %s killed by signal %d", what, ckpts[k],
                  WTERMSIG(g.status));
        int rc = WEXITSTATUS(g.status);
        cr_expect(rc == 0 || (rc == 1 && strstr(g.err, "error: ") != NULL),
                  "%s: run %s exit code %d; stderr:\n%s", what, ckpts[k], rc, g.err);
        if (rc == 0) expect_text(&g, 20, "run on a high-lr checkpoint");
        result_free(&g);
    }
    result_free(&r);
}

Test(robust, divergence_lr10_game_off) { check_divergence("10", "off"); }

Test(robust, divergence_lr10_game_full) { check_divergence("10", "full"); }

// At 1000 (the largest --lr allowed) the run diverges within a few steps.
Test(robust, divergence_lr1000) { check_divergence("1000", "off"); }

// ----------------------------------------------------------------------------
// Full disk

// A file-size limit below the checkpoint's size: the first save fails, with a
// message naming the path, and leaves neither a partial checkpoint nor a
// temporary file.
Test(robust, disk_full_first_save) {
    const char* text = path_of("train.txt");
    write_training_text(text);
    const char* out = path_of("full.bin");
    Spawn small = {.fsize_limit = 16384}; // the checkpoint is about 60 KB
    Result r = TRAIN(&small, "-i", text, "-o", out, TINY, "--steps", "20", "--warmup", "2",
                     "--eval-every", "10");
    cr_assert(!WIFSIGNALED(r.status), "killed by signal %d", WTERMSIG(r.status));
    cr_expect_neq(WEXITSTATUS(r.status), 0, "train succeeded with no room to save");
    cr_expect(strstr(r.err, "error: ") != NULL && strstr(r.err, "full.bin") != NULL,
              "the error does not name full.bin:\n%s", r.err);
    cr_expect(!file_exists(out), "a partial %s was left", out);
    cr_expect(!file_exists(path_of("full.bin.last")), "a partial full.bin.last was left");
    EXPECT_NO_TEMP_FILES(g_dir, "a failed save");
    expect_saves_exist(&r, g_dir, "a failed save");
    result_free(&r);
}

// A good checkpoint survives a later save that fails: the resumed run cannot
// write, and both files keep their bytes and still load.
Test(robust, disk_full_keeps_good_checkpoint) {
    const char* ckpt = train_tiny("good.bin");
    char last[300];
    snprintf(last, sizeof(last), "%s.last", ckpt);
    size_t n_best, n_last;
    char* best = read_bytes(ckpt, &n_best);
    char* latest = read_bytes(last, &n_last);

    Spawn small = {.fsize_limit = 16384};
    Result r = TRAIN(&small, "--resume", last, "--steps", "40", "-q");
    cr_assert(!WIFSIGNALED(r.status), "killed by signal %d", WTERMSIG(r.status));
    cr_expect_neq(WEXITSTATUS(r.status), 0, "the resumed train succeeded with no room");
    cr_expect(strstr(r.err, "good.bin") != NULL, "the error names no checkpoint:\n%s",
              r.err);
    size_t n;
    char* now = read_bytes(ckpt, &n);
    cr_expect(n == n_best && memcmp(now, best, n) == 0, "the best checkpoint changed");
    free(now);
    now = read_bytes(last, &n);
    cr_expect(n == n_last && memcmp(now, latest, n) == 0, "the latest checkpoint changed");
    free(now);
    EXPECT_NO_TEMP_FILES(g_dir, "a failed later save");
    expect_loads(ckpt, "the best checkpoint after a failed save");
    expect_loads(last, "the latest checkpoint after a failed save");
    free(best);
    free(latest);
    result_free(&r);
}

// ----------------------------------------------------------------------------
// Hostile input files

// Trains 20 steps on text[0 .. n-1] into name; returns the checkpoint's path.
static const char* train_on(const char* name, const char* text, size_t n) {
    static char ckpt[256];
    char txt[64];
    snprintf(txt, sizeof(txt), "%s.txt", name);
    const char* path = path_of(txt);
    write_bytes(path, text, n);
    snprintf(ckpt, sizeof(ckpt), "%s/%s.bin", g_dir, name);
    Result r = TRAIN(NULL, "-i", path, "-o", ckpt, TINY, "--steps", "20", "--warmup", "2",
                     "--eval-every", "10");
    expect_success(&r, name);
    char count[64];
    snprintf(count, sizeof(count), ", %zu characters", symbol_count(text, n));
    cr_expect(strstr(r.out, count) != NULL, "%s: not %s:\n%s", name, count, r.out);
    result_free(&r);
    return ckpt;
}

// Latin-1 accents are not UTF-8: they become raw-byte tokens, and run prints
// them as U+FFFD, so its output is still valid UTF-8.
Test(robust, latin1_text) {
    char text[4096];
    size_t n = make_text(text, sizeof(text), 1, 0);
    const char* ckpt = train_on("latin1", text, n);
    int v;
    uint32_t* vocab = read_vocab(ckpt, &v);
    cr_expect(has_symbol(vocab, v, TOKEN_RAW_BASE + 0xE9), "no raw-byte token for 0xE9");
    cr_expect(has_symbol(vocab, v, TOKEN_RAW_BASE + 0xFC), "no raw-byte token for 0xFC");
    cr_expect(!has_symbol(vocab, v, 0xE9), "0xE9 was read as U+00E9");
    free(vocab);
    Result g = RUN(NULL, ckpt, "-n", "200", "-t", "2", "-s", "3");
    expect_success(&g, "run on the Latin-1 model");
    expect_text(&g, 200, "run on the Latin-1 model");
    cr_expect(memmem(g.out, g.out_len, "\xEF\xBF\xBD", 3) != NULL,
              "no U+FFFD in 200 characters at temperature 2");
    result_free(&g);

    // a prompt with the same raw byte encodes
    Result p = RUN(NULL, ckpt, "-n", "10", "-i", "caf\xE9");
    expect_success(&p, "run with a Latin-1 prompt");
    expect_text(&p, 10, "run with a Latin-1 prompt");
    result_free(&p);
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
    Result g = RUN(NULL, ckpt, "-n", "100", "-t", "3", "-s", "2");
    expect_success(&g, "run on the NUL model");
    expect_text(&g, 100, "run on the NUL model");
    cr_expect(memchr(g.out, '\0', g.out_len) != NULL, "no NUL in 100 characters at t 3");
    result_free(&g);
}

Test(robust, crlf_text) {
    char text[4096];
    size_t n = make_text(text, sizeof(text), 0, 1);
    const char* ckpt = train_on("crlf", text, n);
    int v;
    uint32_t* vocab = read_vocab(ckpt, &v);
    cr_expect(has_symbol(vocab, v, '\r') && has_symbol(vocab, v, '\n'),
              "CR or LF missing from the vocabulary");
    free(vocab);
    Result g = RUN(NULL, ckpt, "-n", "60", "-t", "0");
    expect_success(&g, "run on the CR LF model");
    expect_text(&g, 60, "run on the CR LF model");
    result_free(&g);
}

// Runs train on a text of n bytes and expects the too-short message.
static void expect_too_short(const char* text, size_t n, const char* val_fraction,
                             const char* needle) {
    const char* path = path_of("short.txt");
    write_bytes(path, text, n);
    const char* out = path_of("short.bin");
    Result r = TRAIN(NULL, "-i", path, "-o", out, TINY, "--steps", "10", "--warmup", "1",
                     "--val-fraction", val_fraction);
    expect_failure(&r, needle, "a text too short");
    cr_expect(strstr(r.err, "too short for context 8") != NULL, "no context in:\n%s", r.err);
    cr_expect(!file_exists(out), "a checkpoint was written for a text too short");
    result_free(&r);
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

    const char* path = path_of("edge.txt");
    write_bytes(path, "abcdefghiabcdefghi", 18);
    const char* out = path_of("edge.bin");
    Result r = TRAIN(NULL, "-i", path, "-o", out, TINY, "--steps", "10", "--warmup", "1",
                     "--eval-every", "5", "--val-fraction", "0.5");
    expect_success(&r, "train on 18 characters with half held out");
    cr_expect(strstr(r.out, "18 characters: 9 train, 9 validation") != NULL,
              "not split 9 and 9:\n%s", r.out);
    result_free(&r);
    expect_loads(out, "the 18-character model");
}

// A FIFO whose writer sends a text and closes trains like the file. (A FIFO
// with no writer at all waits in open(), as any reader of it does.)
Test(robust, fifo_input) {
    const char* fifo = path_of("text.fifo");
    cr_assert_eq(mkfifo(fifo, 0644), 0, "mkfifo: %s", strerror(errno));
    char text[4096];
    size_t n = make_text(text, sizeof(text), 0, 0);
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
    const char* out = path_of("fifo.bin");
    Spawn limited = {.timeout_s = 20};
    Result r = TRAIN(&limited, "-i", fifo, "-o", out, TINY, "--steps", "10", "--warmup",
                     "1", "--eval-every", "10");
    int ws;
    waitpid(writer, &ws, 0);
    expect_success(&r, "train from a FIFO");
    char count[64];
    snprintf(count, sizeof(count), ", %zu characters", symbol_count(text, n));
    cr_expect(strstr(r.out, count) != NULL, "not %s:\n%s", count, r.out);
    cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the FIFO writer failed");
    result_free(&r);
    expect_loads(out, "the FIFO model");
}

// /dev/zero never ends: train must refuse it promptly with an error naming it,
// not read until memory runs out. The child runs under a memory limit (2 GB
// of address space, or ASan's allocation limit) so a failure here cannot take
// the machine down.
Test(robust, dev_zero_input) {
    Spawn limited = {.timeout_s = 20};
    if (SANITIZED) limited.asan_options = "allocator_may_return_null=1:"
                                          "max_allocation_size_mb=1024";
    else limited.as_limit = 2L << 30;
    const char* out = path_of("zero.bin");
    Result r = TRAIN(&limited, "-i", "/dev/zero", "-o", out, TINY, "--steps", "5",
                     "--warmup", "1");
    cr_assert(!(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGALRM),
              "train -i /dev/zero still ran after 20 s");
    expect_failure(&r, "/dev/zero", "train -i /dev/zero");
    cr_expect(!file_exists(out), "a checkpoint was written from /dev/zero");
    cr_expect_lt(r.max_rss_kb, 256 * 1024, "train -i /dev/zero used %ld MB before failing "
                 "(it reads the endless device into memory); stderr:\n%s",
                 r.max_rss_kb / 1024, r.err);
    result_free(&r);
}

// ----------------------------------------------------------------------------
// run: long prompts, long outputs, greedy decoding, bad checkpoints

Test(robust, run_longer_than_context) {
    const char* ckpt = train_tiny("model.bin");

    // a prompt of 43 characters and an output of 3 contexts
    const char* prompt = "the quick brown fox jumps over the lazy dog";
    Result a = RUN(NULL, ckpt, "-n", "24", "-s", "5", "-i", prompt);
    expect_success(&a, "run with a long prompt");
    expect_text(&a, 3 * CONTEXT, "run with a long prompt");
    cr_expect(strstr(a.err, "note: the prompt has 43 characters") != NULL,
              "no note for the long prompt:\n%s", a.err);
    result_free(&a);

    // far past the context, with and without the key/value cache
    Result b = RUN(NULL, ckpt, "-n", "100", "-s", "6");
    expect_success(&b, "run -n 100");
    expect_text(&b, 100, "run -n 100");
    Result c = RUN(NULL, ckpt, "-n", "100", "-s", "6", "--no-cache");
    expect_success(&c, "run -n 100 --no-cache");
    expect_text(&c, 100, "run -n 100 --no-cache");
    result_free(&b);
    result_free(&c);
}

// Context 1, the smallest: the window keeps context/2 = 0 tokens when it
// slides, so every character sees only the one before it. The cached and the
// recomputing decoder must agree (and, under make test-asan, touch no memory
// outside their buffers).
Test(robust, run_context_one) {
    const char* text = path_of("train.txt");
    write_training_text(text);
    const char* ckpt = path_of("c1.bin");
    Result r = TRAIN(NULL, "-i", text, "-o", ckpt, "--layers", "1", "--channels", "16",
                     "--heads", "2", "--context", "1", "--batch", "2", "--eval-batches",
                     "2", "--threads", "1", "--steps", "10", "--warmup", "1", "-q");
    expect_success(&r, "train --context 1");
    result_free(&r);
    Result a = RUN(NULL, ckpt, "-n", "12", "-t", "0", "-i", "the");
    Result b = RUN(NULL, ckpt, "-n", "12", "-t", "0", "-i", "the", "--no-cache");
    expect_success(&a, "run on a context-1 model");
    expect_success(&b, "run --no-cache on a context-1 model");
    expect_text(&a, 12, "run on a context-1 model");
    cr_expect(same_output(&a, &b), "cache and no cache differ at context 1:\n%s\n%s",
              a.out, b.out);
    result_free(&a);
    result_free(&b);
}

// Temperature 0 gives the same text whatever the seed and the thread count.
Test(robust, run_greedy_deterministic) {
    const char* ckpt = train_tiny("model.bin");
    Result a = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ");
    Result b = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ");
    Result c = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ", "-s", "77");
    Result d = RUN(NULL, ckpt, "-n", "40", "-t", "0", "-i", "the ", "--threads", "2");
    expect_success(&a, "run -t 0");
    expect_success(&d, "run -t 0 --threads 2");
    expect_text(&a, 40, "run -t 0");
    cr_expect(same_output(&a, &b), "greedy runs differ:\n%s\n%s", a.out, b.out);
    cr_expect(same_output(&a, &c), "greedy text depends on the seed:\n%s\n%s", a.out, c.out);
    cr_expect(same_output(&a, &d), "greedy text depends on threads:\n%s\n%s", a.out, d.out);
    result_free(&a);
    result_free(&b);
    result_free(&c);
    result_free(&d);
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
    const char* path = path_of("vocab6.bin");
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof(err)), 0, "%s", err);
    free(params);

    // the file itself is sound: only the sizes disagree
    Checkpoint back;
    cr_assert_eq(ckpt_load(&back, path, err, sizeof(err)), 0, "%s", err);
    ckpt_free_loaded(&back);
    Result r = RUN(NULL, path, "-n", "5");
    expect_failure(&r, "VOCB", "run on a 6-symbol VOCB with vocab_size 5");
    cr_expect(strstr(r.err, "vocab6.bin") != NULL, "the file is not named:\n%s", r.err);
    cr_expect(strstr(r.err, "vocab_size 5") != NULL, "the header's size is not named:\n%s",
              r.err);
    cr_expect_eq(r.out_len, 0, "text printed for a bad checkpoint");
    result_free(&r);
}

// A checkpoint of format version 2 (header checksum fixed up): rejected with
// the version in the message.
Test(robust, run_rejects_newer_version) {
    const char* ckpt = train_tiny("model.bin");
    size_t n;
    unsigned char* data = (unsigned char*)read_bytes(ckpt, &n);
    cr_assert_gt(n, CKPT_HEADER_SIZE);
    ckpt_put_u32(data + CKPT_OFF_VERSION, CKPT_VERSION + 1);
    ckpt_put_u32(data + CKPT_OFF_HEADER_CRC, (uint32_t)crc32(0L, data, CKPT_OFF_HEADER_CRC));
    const char* path = path_of("newer.bin");
    write_bytes(path, data, n);
    free(data);
    char version[64];
    snprintf(version, sizeof(version), "format version %u", CKPT_VERSION + 1);
    Result r = RUN(NULL, path, "-n", "5");
    expect_failure(&r, version, "run on a newer checkpoint");
    cr_expect(strstr(r.err, "newer") != NULL, "the message does not say newer:\n%s", r.err);
    cr_expect(strstr(r.err, "newer.bin") != NULL, "the file is not named:\n%s", r.err);
    result_free(&r);
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
    Result r = run_prog(NULL, "/usr/bin/valgrind", "-q", "--error-exitcode=99",
                        "--leak-check=full", prog, ckpt, "-n", "20", (const char*)NULL);
    if ((WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGILL) ||
        strstr(r.err, "unhandled instruction") != NULL) {
        result_free(&r);
        cr_skip_test("valgrind cannot decode the instructions of %s (built for this "
                     "CPU); make test-valgrind checks a portable build", prog);
    }
    expect_success(&r, "run under valgrind");
    expect_text(&r, 20, "run under valgrind");
    result_free(&r);
}
