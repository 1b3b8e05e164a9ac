// kernels.h: the matrix products every layer is built on, forward and backward.
//
// A linear layer maps inp (N, IC) to out (N, OC) with a weight w (OC, IC), one
// row per output channel (the layout GPT-2 checkpoints use), and an optional
// bias (OC). Each output element is summed by one thread in a fixed order, so
// the results do not depend on the number of threads.
#ifndef KERNELS_H
#define KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// exp(x) for float, written so that loops over it vectorise (libm's expf is a
// function call the compiler cannot vectorise). exp(x) = 2^n exp(r) with
// n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2], where a degree-7
// Taylor polynomial is accurate to about 1e-8 relative; 2^n is built in the
// exponent bits. Inputs are clamped to [-87, 88], where 2^n stays a normal
// float, so exp of a very negative number is about 1e-38 rather than 0; a NaN
// stays NaN (without ever reaching the integer conversion). (fminf, fmaxf and
// floorf would block vectorisation: plain comparisons and the round-to-nearest
// trick of adding 1.5 * 2^23 do not.)
static inline float fast_expf(float x) {
    // the clamp: both comparisons are false for a NaN, which so goes through as
    // -87 and is given back at the end (two selects, which vectorise well)
    float in = x;
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return in != in ? in : p * scale;
}

// tanh(x) = 1 - 2 / (exp(2x) + 1), exact at the limits +-1, with an absolute
// error of a few 1e-8 (what GELU needs: it uses 1 + tanh).
static inline float fast_tanhf(float x) {
    return 1.0f - 2.0f / (fast_expf(2.0f * x) + 1.0f);
}

// C (M, N) = A (M, K) @ B (K, N) on the calling thread alone, overwriting C,
// with C and B row-major (leading dimensions ldc, ldb) and A read as A(i, k) =
// A[i a_rs + k a_ks], so a_rs = 1 reads a transposed matrix. For the small
// products inside attention, which runs its (batch, head) pairs in parallel
// itself.
void gemm_serial(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                 const float* B, size_t ldb, int M, int N, int K);

// The tile height of gemm_serial: the causal attention computes the scores in
// row blocks of this many queries, each against the keys up to the block's end.
#define GEMM_TILE_M 8

// Its width: a product whose columns are a whole number of these runs all in
// full vector tiles, so callers that may compute a few extra columns pad to it.
#define GEMM_TILE_N 32

// n rounded up to whole tiles, but at most limit.
static inline int gemm_round_cols(int n, int limit) {
    int r = (n + GEMM_TILE_N - 1) / GEMM_TILE_N * GEMM_TILE_N;
    return r < limit ? r : limit;
}

// The attention's rows of scores run in chunks of this many keys, a masked tail
// included, so that its loops have a fixed length that becomes vector code.
#define SCORE_CHUNK 16

// n rounded up to whole chunks.
static inline int score_chunks(int n) {
    return (n + SCORE_CHUNK - 1) / SCORE_CHUNK * SCORE_CHUNK;
}

// Rows of up to this many keys (four chunks) run, without noise, in copies of the
// softmax and its backward compiled for their exact width (softmax_row in game.c,
// softmax_row_backward in train.c).
#define SCORE_FIXED_MAX 64

// Work items 0 .. n-1 shared out among the threads of a parallel region: thread t
// owns the t-th of equal contiguous runs (items n t / threads up to n (t + 1) /
// threads), and takes its own items from the front of its run; a thread whose
// run is used up takes what is left of the others' runs, from their back ends.
// So each thread still computes the same rows in every layer (what keeps them in
// its core's cache), while a thread that the machine slows down does not hold up
// the rest. Which thread computes an item never changes the item's result.
//
// Usage, inside a parallel region: one thread calls work_begin (e.g. under omp
// single, whose barrier then publishes it), which sizes the runs for the region's
// threads; every thread loops on work_next until it returns -1; after the region
// work_end frees the runs.
typedef struct {
    struct WorkRun* runs; // one per thread, each on its own cache line
    int threads;
} WorkShare;

void work_begin(WorkShare* w, long n);
long work_next(WorkShare* w);
void work_end(WorkShare* w);

// The calling thread's number in its parallel region, and the region's size (0
// and 1 in a build without OpenMP).
static inline int team_member(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Asks the caches for the n floats at p, one request per 64-byte line, ahead of
// a read (or of a write, when write is set): a hint that changes no result.
static inline void prefetch_span(const float* p, int n, int write) {
    for (int i = 0; i < n; i += 16) {
        if (write) __builtin_prefetch(p + i, 1, 2);
        else __builtin_prefetch(p + i, 0, 2);
    }
}

// dst (cols, rows) = src (rows, cols)^T, with rows of dst ld >= rows apart.
void transpose_matrix(float* dst, size_t ld, const float* src, int rows, int cols);

// out (N, OC) = inp (N, IC) @ w^T + bias; bias may be NULL.
void matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                    int N, int IC, int OC);

// The same with the weight already transposed: wt (IC, OC).
void matmul_forward_t(float* out, const float* inp, const float* wt, const float* bias,
                      int N, int IC, int OC);

// The gradients of matmul_forward, from dout (N, OC) and the forward's inp and w:
//   dinp (N, IC)  = dout @ w,             overwritten (skipped when dinp is NULL)
//   dw   (OC, IC) += dout^T @ inp,        accumulated (skipped when dw is NULL)
//   dbias (OC)    += sum over rows of dout, accumulated (skipped when dbias is NULL)
// An input feeds one layer only, so its gradient has a single producer and needs
// no clearing; a weight's gradient may gather several (the tied embedding).
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC);

// out (OC) = w (OC, IC) @ x (IC) + bias, for decoding one token; bias may be NULL.
void matvec_forward(float* out, const float* x, const float* w, const float* bias,
                    int IC, int OC);

#endif
