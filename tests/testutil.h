// testutil.h: small helpers shared by the test files: a seeded generator for test
// data, error measures in double precision, checked allocation and temporary files.
//
// Everything is static inline so that each test file gets its own copy and no
// helper it does not use raises a warning.
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif
