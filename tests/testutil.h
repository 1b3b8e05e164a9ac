// testutil.h: small helpers shared by the test files: a seeded generator for test
// data, error measures in double precision, checked allocation, files, test texts,
// a temporary folder per test, and running the built programs with their output
// captured.
//
// Everything is static inline so that each test file gets its own copy and no
// helper it does not use raises a warning. The file and process helpers fail the
// running test through Criterion's asserts. A test file defines _GNU_SOURCE before
// its first #include (nftw, wait4, mkdtemp).
#ifndef TESTUTIL_H
#define TESTUTIL_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before the first #include to use testutil.h"
#endif

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

// ----------------------------------------------------------------------------
// Random test data

// A splitmix64 stream, deliberately separate from the library's counter
// generator, so that a fault there cannot shape the data meant to expose it.
typedef struct {
    uint64_t state;
} TestRng;

static inline uint64_t test_rng_next(TestRng* r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Uniform in [0, 1), 53 bits.
static inline double test_rng_uniform(TestRng* r) {
    return (double)(test_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller (one of the pair is used).
static inline double test_rng_normal(TestRng* r) {
    double u1 = 1.0 - test_rng_uniform(r); // (0, 1], so the log is finite
    double u2 = test_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Uniform integer in [0, n), n > 0.
static inline int test_rng_int(TestRng* r, int n) {
    return (int)(test_rng_next(r) % (uint64_t)n);
}

// ----------------------------------------------------------------------------
// Error measures

// |got - want| / max(|want|, floor): a relative error that turns absolute (over
// floor) near zero.
static inline double test_rel_err(double got, double want, double floor) {
    double scale = fabs(want) > floor ? fabs(want) : floor;
    return fabs(got - want) / scale;
}

// Largest |x[i]| of n doubles; 0 for n == 0.
static inline double test_max_abs(const double* x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

// ----------------------------------------------------------------------------
// Allocation and files

// calloc that aborts the test process with a message instead of returning NULL.
static inline void* test_calloc(size_t count, size_t size) {
    void* p = calloc(count ? count : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory (%zu x %zu bytes)\n", count, size);
        abort();
    }
    return p;
}

// Creates a new empty file /tmp/game-test-TAG-XXXXXX and writes its name into path
// (len bytes). Returns 0, or -1 when the name does not fit or the file cannot be
// made. The caller removes the file (unlink) when done.
static inline int test_temp_file(char* path, size_t len, const char* tag) {
    int n = snprintf(path, len, "/tmp/game-test-%s-XXXXXX", tag);
    if (n < 0 || (size_t)n >= len) return -1;
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

// Like test_temp_file, then writes the n bytes of data into the file.
static inline int test_temp_write(char* path, size_t len, const char* tag,
                                  const void* data, size_t n) {
    if (test_temp_file(path, len, tag) != 0) return -1;
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    size_t wrote = fwrite(data, 1, n, f);
    if (fclose(f) != 0 || wrote != n) return -1;
    return 0;
}

// ----------------------------------------------------------------------------
// Files

// Writes data[0 .. n-1] to path (created or truncated); fails the test when it
// cannot.
static inline void test_write_file(const char* path, const void* data, size_t n) {
    FILE* f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

// Reads the whole file at path into a new buffer with a NUL after its bytes, so
// that text can be searched as a string; *n gets the size without the NUL. The
// caller frees it. Fails the test when the file cannot be read.
static inline void* test_read_file(const char* path, size_t* n) {
    FILE* f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s: %s", path, strerror(errno));

    // grow the buffer as the reads fill it, keeping a byte for the NUL
    size_t cap = 4096, len = 0, got;
    char* buf = malloc(cap);
    cr_assert_not_null(buf);
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

static inline int test_file_exists(const char* path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Counts the names in folder dir that contain ".tmp." (an atomic save's
// temporary file). found (len bytes, may be NULL) gets them, each after a space.
static inline int test_count_temp_files(const char* dir, char* found, size_t len) {
    DIR* d = opendir(dir);
    cr_assert_not_null(d, "cannot list %s: %s", dir, strerror(errno));
    int count = 0;
    if (found) found[0] = '\0';
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp.") == NULL) continue;
        count++;
        if (found) {
            size_t used = strlen(found);
            snprintf(found + used, len - used, " %s", e->d_name);
        }
    }
    closedir(d);
    return count;
}

// ----------------------------------------------------------------------------
// Test texts

// A text of about 3 KB into text (cap bytes: 4096 hold all of it; a smaller cap
// ends it early), from a fixed list of words drawn by a small generator:
// lowercase letters, spaces, newlines and a few accented letters, in UTF-8, or
// with latin1 as single Latin-1 bytes; with crlf the line ends are CR LF.
// Returns its length (no NUL is added).
static inline size_t test_training_text(char* text, size_t cap, int latin1, int crlf) {
    static const char* const utf8_words[] = {
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and",
        "then", "runs", "away", "from", "caf\xC3\xA9", "\xC3\xBC" "ber", "na\xC3\xAFve",
        "cat", "sat", "on", "mat", "in", "old", "town",
    };
    static const char* const latin1_words[] = {
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and",
        "then", "runs", "away", "from", "caf\xE9", "\xFC" "ber", "na\xEFve",
        "cat", "sat", "on", "mat", "in", "old", "town",
    };
    const char* const* words = latin1 ? latin1_words : utf8_words;
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

// Writes n_words words drawn by seed from words[0 .. n_list-1] to a new
// temporary file (see test_temp_file; its name goes into path, len bytes): each
// word is followed by a space, every line_words-th by ".\n" instead. Fails the
// test when the file cannot be written.
static inline void test_write_words(char* path, size_t len, const char* tag,
                                    const char* const words[], int n_list, int n_words,
                                    int line_words, uint64_t seed) {
    // room for the longest word and ".\n" each time
    size_t longest = 0;
    for (int i = 0; i < n_list; i++) {
        if (strlen(words[i]) > longest) longest = strlen(words[i]);
    }
    size_t cap = (size_t)n_words * (longest + 2) + 1, used = 0;
    char* text = test_calloc(cap, 1);

    // the words, one draw each
    TestRng r = {seed};
    for (int i = 0; i < n_words; i++) {
        const char* w = words[test_rng_int(&r, n_list)];
        const char* sep = (i % line_words == line_words - 1) ? ".\n" : " ";
        used += (size_t)snprintf(text + used, cap - used, "%s%s", w, sep);
    }
    cr_assert_eq(test_temp_write(path, len, tag, text, used), 0,
                 "cannot write a temporary text file");
    free(text);
}

// Counts the code points of s[0 .. n-1]; returns -1 unless it is strict UTF-8
// (no overlong forms, no surrogates, nothing above U+10FFFF).
static inline long test_utf8_count(const unsigned char* s, size_t n) {
    long count = 0;
    size_t i = 0;
    while (i < n) {
        // the sequence's length and the lead byte's bits
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

        // the continuation bytes, then the overlong and out-of-range forms
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

// ----------------------------------------------------------------------------
// A temporary folder per test

// Makes a new folder /tmp/game_TAG_XXXXXX and writes its name into dir (len
// bytes); fails the test when it cannot. test_dir_remove deletes it.
static inline void test_dir_make(char* dir, size_t len, const char* tag) {
    int n = snprintf(dir, len, "/tmp/game_%s_XXXXXX", tag);
    cr_assert(n > 0 && (size_t)n < len, "the folder name for %s does not fit", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed: %s", strerror(errno));
}

static inline int test_dir_unlock_(const char* p, const struct stat* st, int type,
                                   struct FTW* ftw) {
    (void)st;
    (void)ftw;
    if (type == FTW_D || type == FTW_DNR) chmod(p, 0700);
    return 0;
}

static inline int test_dir_remove_entry_(const char* p, const struct stat* st, int type,
                                         struct FTW* ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    remove(p);
    return 0;
}

// Deletes the folder dir and everything in it, its subfolders made writable
// first (tests take permissions away), and empties dir; an empty dir is left
// alone, so calling it twice is harmless.
static inline void test_dir_remove(char* dir) {
    if (dir[0] == '\0') return;
    chmod(dir, 0700);
    nftw(dir, test_dir_unlock_, 16, FTW_PHYS);
    nftw(dir, test_dir_remove_entry_, 16, FTW_DEPTH | FTW_PHYS);
    dir[0] = '\0';
}

// The running test's own folder, made by test_dir_setup; empty when it has none.
// (Each test file has its copy, as it has of everything here.)
static char g_test_dir[64] __attribute__((unused));

// A suite's .fini: removes the test's folder.
static inline void test_dir_teardown(void) { test_dir_remove(g_test_dir); }

// A suite's .init calls this: makes a fresh folder /tmp/game_TAG_XXXXXX for the
// test in g_test_dir, removed by test_dir_teardown, or at exit when a test ends
// by exit() (which skips .fini).
static inline void test_dir_setup(const char* tag) {
    test_dir_make(g_test_dir, sizeof(g_test_dir), tag);
    atexit(test_dir_teardown);
}

// name inside the test's folder, in one of 16 rotating buffers (enough for the
// paths one test holds at a time).
static inline const char* test_path(const char* name) {
    static char bufs[16][256];
    static int next = 0;
    char* b = bufs[next++ % 16];
    snprintf(b, sizeof(bufs[0]), "%s/%s", g_test_dir, name);
    return b;
}

// ----------------------------------------------------------------------------
// Running the built programs

// A program still running after this many seconds is ended by SIGALRM.
#define TEST_CHILD_TIMEOUT_S 60

// The folder of the built programs: $GAME_BIN_DIR (make test-asan points it at
// the sanitized build), default "." (the repository root).
static inline const char* test_bin_dir(void) {
    const char* dir = getenv("GAME_BIN_DIR");
    return dir && dir[0] ? dir : ".";
}

// Writes the path of the built program name (in test_bin_dir(), made absolute
// with absolute set, for children that run in other folders) into out (len
// bytes); fails the test unless an executable is there.
static inline void test_find_program(char* out, size_t len, const char* name, int absolute) {
    const char* dir = test_bin_dir();
    char abs[PATH_MAX];
    if (absolute) {
        cr_assert_not_null(realpath(dir, abs), "GAME_BIN_DIR '%s': %s", dir,
                           strerror(errno));
        dir = abs;
    }
    snprintf(out, len, "%s/%s", dir, name);
    cr_assert(access(out, X_OK) == 0, "%s not found: build it with `make` and run the "
              "tests from the repository root (or set GAME_BIN_DIR)", out);
}

// Where a child's stdin comes from.
typedef enum { TEST_STDIN_NULL, TEST_STDIN_FILE, TEST_STDIN_PIPE } TestStdin;

// How test_spawn starts a child. Zero fields mean: stdin from /dev/null, the
// caller's folder, no limits, the signal state inherited, SIGALRM after
// TEST_CHILD_TIMEOUT_S, and test_run_argv waiting for the end however long.
typedef struct {
    const char* dir;      // the test's folder: stdout and stderr go to its captured.*
    TestStdin stdin_from; // /dev/null, the file `input`, or a pipe fed with input
    const char* input;    // the file's path, or the bytes for the pipe
    size_t input_len;     // how many bytes of input go down the pipe
    const char* cwd;      // folder to run in, NULL for the caller's
    long fsize_limit;     // RLIMIT_FSIZE in bytes, 0 for none
    long as_limit;        // RLIMIT_AS in bytes, 0 for none
    int timeout_s;        // SIGALRM after this many seconds, 0 for TEST_CHILD_TIMEOUT_S
    const char* asan_options; // appended to ASAN_OPTIONS, or NULL
    int default_signals;  // unblock all and reset SIGINT, SIGTERM, SIGXFSZ (ignored
                          // under an fsize_limit) to their defaults
    int wait_ms;          // test_run_argv kills the child and fails after this, 0: no limit
} TestSpawn;

// What a finished child left.
typedef struct {
    int status;      // from waitpid
    char* out;       // stdout, NUL-terminated
    size_t out_len;
    char* err;       // stderr, NUL-terminated
    size_t err_len;
    long max_rss_kb; // the child's peak resident memory
} TestResult;

static inline void test_result_free(TestResult* r) {
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

// The file in folder dir that captures a child's stdout (fd 1) or stderr (fd 2),
// in a buffer of its own for each.
static inline const char* test_capture_path(const char* dir, int fd) {
    static char paths[2][256];
    char* p = paths[fd == 2];
    snprintf(p, sizeof(paths[0]), "%s/captured.%s", dir, fd == 2 ? "stderr" : "stdout");
    return p;
}

// Fills argv with prog and the arguments that follow in ap, up to a NULL, and a
// final NULL; fails the test past max entries.
static inline void test_argv_va(char* argv[], int max, const char* prog, va_list ap) {
    int argc = 0;
    argv[argc++] = (char*)prog;
    const char* a;
    while ((a = va_arg(ap, const char*)) != NULL) {
        cr_assert_lt(argc, max - 1);
        argv[argc++] = (char*)a;
    }
    argv[argc] = NULL;
}

// The same for the NULL-terminated list args.
static inline void test_argv_list(char* argv[], int max, const char* prog,
                                  const char* const args[]) {
    int argc = 0;
    argv[argc++] = (char*)prog;
    for (int i = 0; args[i] != NULL; i++) {
        cr_assert_lt(argc, max - 1);
        argv[argc++] = (char*)args[i];
    }
    argv[argc] = NULL;
}

// Starts argv[0] with argv (NULL-terminated) as sp says, stdout and stderr into
// the captured files of sp->dir, and feeds the pipe to its end when stdin is
// one. Returns the child's pid.
static inline pid_t test_spawn(const TestSpawn* sp, char* const argv[]) {
    const char* outp = test_capture_path(sp->dir, 1);
    const char* errp = test_capture_path(sp->dir, 2);
    int fds[2] = {-1, -1};
    if (sp->stdin_from == TEST_STDIN_PIPE) {
        cr_assert_eq(pipe(fds), 0, "pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork failed: %s", strerror(errno));
    if (pid == 0) {
        // the child: files, folder, limits, signals, then the program
        int in = sp->stdin_from == TEST_STDIN_PIPE
                     ? fds[0]
                     : open(sp->stdin_from == TEST_STDIN_FILE ? sp->input : "/dev/null",
                            O_RDONLY);
        int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(126);
        if (sp->stdin_from == TEST_STDIN_PIPE) close(fds[1]);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        if (sp->cwd && chdir(sp->cwd) != 0) _exit(126);
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
        if (sp->default_signals) {
            sigset_t all;
            sigemptyset(&all);
            sigprocmask(SIG_SETMASK, &all, NULL);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGXFSZ, sp->fsize_limit > 0 ? SIG_IGN : SIG_DFL);
        }
        alarm(sp->timeout_s > 0 ? (unsigned)sp->timeout_s : TEST_CHILD_TIMEOUT_S);
        execv(argv[0], argv);
        _exit(127);
    }

    // feed the pipe (the child reads it while it fills), then close it: the EOF
    if (sp->stdin_from == TEST_STDIN_PIPE) {
        close(fds[0]);
        signal(SIGPIPE, SIG_IGN);
        size_t done = 0;
        while (done < sp->input_len) {
            ssize_t w = write(fds[1], sp->input + done, sp->input_len - done);
            if (w < 0 && errno == EINTR) continue;
            cr_assert_gt(w, 0, "writing the child's stdin: %s", strerror(errno));
            done += (size_t)w;
        }
        close(fds[1]);
    }
    return pid;
}

// Waits for pid and returns its status; *max_rss_kb (may be NULL) gets its peak
// memory. With timeout_ms > 0, a child still running then is killed (SIGKILL)
// and the test fails; with 0 the wait has no limit.
static inline int test_wait(pid_t pid, int timeout_ms, long* max_rss_kb, const char* what) {
    int status;
    struct rusage ru;

    // no limit: one blocking wait, resumed after a signal
    if (timeout_ms <= 0) {
        while (wait4(pid, &status, 0, &ru) < 0) {
            cr_assert_eq(errno, EINTR, "%s: wait4 failed: %s", what, strerror(errno));
        }
        if (max_rss_kb) *max_rss_kb = ru.ru_maxrss;
        return status;
    }

    // a limit: poll every 2 ms
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
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

// A finished child's status and memory with the output it left in the
// captured files of folder dir.
static inline TestResult test_collect(const char* dir, int status, long max_rss_kb) {
    TestResult r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.max_rss_kb = max_rss_kb;
    r.out = test_read_file(test_capture_path(dir, 1), &r.out_len);
    r.err = test_read_file(test_capture_path(dir, 2), &r.err_len);
    return r;
}

// Runs argv as sp says to its end (sp->wait_ms bounds the wait) and reads back
// its output. The caller frees the result with test_result_free.
static inline TestResult test_run_argv(const TestSpawn* sp, char* const argv[]) {
    pid_t pid = test_spawn(sp, argv);
    long rss = 0;
    int status = test_wait(pid, sp->wait_ms, &rss, argv[0]);
    return test_collect(sp->dir, status, rss);
}

// Asserts a normal exit (no signal) with the given code.
static inline void test_expect_exit(const TestResult* r, int code, const char* what) {
    cr_assert(!WIFSIGNALED(r->status), "%s: killed by signal %d; stderr:\n%s", what,
              WTERMSIG(r->status), r->err);
    cr_assert(WIFEXITED(r->status), "%s: did not exit normally", what);
    cr_assert_eq(WEXITSTATUS(r->status), code, "%s: exit code %d, expected %d; stderr:\n%s",
                 what, WEXITSTATUS(r->status), code, r->err);
}

// Checks that run's stdout is n characters of valid UTF-8 and one final newline.
static inline void test_expect_text(const TestResult* r, long n, const char* what) {
    cr_assert_gt(r->out_len, 0, "%s: empty stdout", what);
    cr_expect_eq(r->out[r->out_len - 1], '\n', "%s: stdout does not end in a newline",
                 what);
    long chars = test_utf8_count((const unsigned char*)r->out, r->out_len - 1);
    cr_expect_eq(chars, n, "%s: %ld characters of valid UTF-8 (-1: invalid), expected %ld",
                 what, chars, n);
}

// Whether two runs printed the same bytes on stdout.
static inline int test_same_output(const TestResult* a, const TestResult* b) {
    return a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0;
}

#endif
