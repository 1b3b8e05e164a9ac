// kernels.c: matrix products for the forward and backward passes.
//
// All three products of a linear layer (the forward, and the two gradients)
// are the same operation, C (M, N) += A (M, K) @ B (K, N), with A and B each
// read through two strides, so that either can be a matrix or a transposed one
// without copying it first. That operation is computed in register tiles of
// 8 x 32: the tile of C stays in sixteen 512-bit registers (or thirty-two
// 256-bit ones) while k runs, each step broadcasting 8 numbers of A against 32
// of B. Plain C loops of fixed length, which the compiler turns into vector
// instructions.
//
// The parallel product (gemm_acc) first packs B into panels of 32 columns, each
// one contiguous, so that a tile reads B as a single sequential stream, and
// runs k in blocks whose panel stays in L1 while the tiles below it use it.
// Threads share out the tiles of C; each tile is summed over k by one thread in
// increasing k, so the bits do not depend on the thread count.
#include "kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "game.h"

#define TILE_M GEMM_TILE_M // rows of a register tile
#define TILE_N GEMM_TILE_N // columns of a register tile
#define GEMM_KB 256        // rows of a packed panel of B summed per pass: 32 KB

// C (TILE_M, n) += A (TILE_M, K) @ B (K, n), n <= TILE_N, with A(r, k) =
// A[r a_rs + k a_ks] and B(k, j) = B[k ldb + j]; with store set, C = bias (or 0)
// + A @ B instead, overwriting C, with bias (n) NULL or a row added to each row.
// B must have TILE_N readable columns (a packed panel is padded with zeros);
// only n columns of C are written.
static inline void tile_full(float* restrict C, size_t ldc, const float* restrict A,
                             size_t a_rs, size_t a_ks, const float* restrict B,
                             size_t ldb, int K, int n, int store, const float* bias) {
    // the sum over k, in registers. A transposed A (a_rs = 1: a weight gradient's
    // dout^T) gives each k its own line of A, a row of dout apart, which comes
    // late unless asked for: each step asks for the line 32 steps ahead (as an
    // address, not a pointer, since it may lie past the matrix, where a prefetch
    // is harmless). A plain A needs no help, and its "ahead" is its own line, so
    // the loop stays free of a branch.
    float acc[TILE_M][TILE_N];
    memset(acc, 0, sizeof(acc));
    size_t ahead = a_rs == 1 ? 32 * a_ks * sizeof(float) : 0;
    for (int k = 0; k < K; k++) {
        const float* b = B + (size_t)k * ldb;
        const float* a = A + (size_t)k * a_ks;
        __builtin_prefetch((const void*)((uintptr_t)a + ahead), 0, 3);
        for (int r = 0; r < TILE_M; r++) {
            float ar = a[r * a_rs];
            #pragma omp simd
            for (int j = 0; j < TILE_N; j++) acc[r][j] += ar * b[j];
        }
    }

    // into C: added, or stored over it after the bias
    if (store) {
        float base[TILE_N] = {0};
        if (bias) memcpy(base, bias, (size_t)n * sizeof(float));
        for (int r = 0; r < TILE_M; r++)
            for (int j = 0; j < TILE_N; j++) acc[r][j] += base[j];
    } else {
        for (int r = 0; r < TILE_M; r++)
            for (int j = 0; j < n; j++) acc[r][j] += C[r * ldc + j];
    }
    for (int r = 0; r < TILE_M; r++) {
        if (n == TILE_N) memcpy(C + r * ldc, acc[r], sizeof(acc[r]));
        else memcpy(C + r * ldc, acc[r], (size_t)n * sizeof(float));
    }
}

// The same for a partial tile of m <= TILE_M rows and n <= TILE_N columns, with
// B(k, j) = B[k b_ks + j b_js], at the bottom and right edges of C.
static void tile_edge(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                      const float* B, size_t b_ks, size_t b_js, int K, int m, int n,
                      int store, const float* bias) {
    float acc[TILE_M][TILE_N];
    memset(acc, 0, sizeof(acc));
    for (int k = 0; k < K; k++) {
        const float* b = B + (size_t)k * b_ks;
        const float* a = A + (size_t)k * a_ks;
        for (int r = 0; r < m; r++) {
            float ar = a[r * a_rs];
            for (int j = 0; j < n; j++) acc[r][j] += ar * b[j * b_js];
        }
    }
    for (int r = 0; r < m; r++) {
        for (int j = 0; j < n; j++) {
            float base = store ? (bias ? bias[j] : 0.0f) : C[r * ldc + j];
            C[r * ldc + j] = base + acc[r][j];
        }
    }
}

void gemm_serial(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                 const float* B, size_t ldb, int M, int N, int K) {
    for (int i = 0; i < M; i += TILE_M) {
        for (int j = 0; j < N; j += TILE_N) {
            int m = M - i < TILE_M ? M - i : TILE_M;
            int n = N - j < TILE_N ? N - j : TILE_N;
            float* c = C + (size_t)i * ldc + j;
            const float* a = A + (size_t)i * a_rs;
            if (m == TILE_M && n == TILE_N)
                tile_full(c, ldc, a, a_rs, a_ks, B + j, ldb, K, n, 1, NULL);
            else tile_edge(c, ldc, a, a_rs, a_ks, B + j, ldb, 1, K, m, n, 1, NULL);
        }
    }
}

// The packed copy of B that gemm_acc reads: B (K, N) cut into panels of TILE_N
// columns, each panel stored contiguously as (K, TILE_N), the last one padded
// with zero columns. Grown as needed and kept: gemm_acc is not reentrant.
static float* packed_b;
static size_t packed_b_cap;

static void reserve_packed_b(int N, int K) {
    size_t need = (size_t)((N + TILE_N - 1) / TILE_N) * K * TILE_N;
    if (need <= packed_b_cap) return;
    free_pages(packed_b, packed_b_cap, sizeof(float));
    packed_b = xcalloc_pages(need, sizeof(float), "packed matrix");
    packed_b_cap = need;
}

// Packs B (K, N), B(k, j) = B[k b_ks + j b_js], into packed_b. Called by every
// thread of a parallel region, which it leaves at a barrier.
static void pack_b(const float* B, size_t b_ks, size_t b_js, int N, int K) {
    int panels = (N + TILE_N - 1) / TILE_N;
    #pragma omp for collapse(2) schedule(static)
    for (int p = 0; p < panels; p++) {
        for (int k0 = 0; k0 < K; k0 += 32) {
            int j0 = p * TILE_N, n = N - j0 < TILE_N ? N - j0 : TILE_N;
            int k1 = k0 + 32 < K ? k0 + 32 : K;
            float* dst = packed_b + (size_t)p * K * TILE_N;
            for (int k = k0; k < k1; k++) {
                const float* src = B + (size_t)k * b_ks + (size_t)j0 * b_js;
                float* d = dst + (size_t)k * TILE_N;
                for (int j = 0; j < n; j++) d[j] = src[j * b_js];
                for (int j = n; j < TILE_N; j++) d[j] = 0.0f;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Sharing work among the threads

// A thread's run [front, back) of work items, in one atomic word (front in the
// low 32 bits), so that its owner taking from the front and another thread
// taking from the back can never both take the same item: every change is a
// compare-and-swap of the whole run.
struct WorkRun {
    _Atomic uint64_t span;
    char pad[64 - sizeof(uint64_t)]; // alone on its cache line
};

static uint64_t run_span(long front, long back) {
    return (uint64_t)front | (uint64_t)back << 32;
}

void work_begin(WorkShare* w, long n) {
    int threads = team_size();
    if (n > INT32_MAX) {
        fprintf(stderr, "error: %ld work items are too many to share out (a bug)\n", n);
        exit(EXIT_FAILURE);
    }
    w->threads = threads;
    w->runs = xmalloc_lines((size_t)threads, sizeof(struct WorkRun), 0, "thread work");
    for (int t = 0; t < threads; t++)
        atomic_init(&w->runs[t].span, run_span(n * t / threads, n * (t + 1) / threads));
}

// Takes an item off run r, from its front or its back; -1 when the run is empty.
static long run_take(struct WorkRun* r, int from_back) {
    uint64_t s = atomic_load_explicit(&r->span, memory_order_relaxed);
    for (;;) {
        long front = (long)(s & 0xFFFFFFFFu), back = (long)(s >> 32);
        if (front >= back) return -1;
        uint64_t next = from_back ? run_span(front, back - 1)
                                  : run_span(front + 1, back);
        if (atomic_compare_exchange_weak_explicit(&r->span, &s, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return from_back ? back - 1 : front;
    }
}

long work_next(WorkShare* w) {
    int thread = team_member();
    // its own items first, in order
    long item = run_take(&w->runs[thread], 0);
    if (item >= 0) return item;

    // then the others' last items, the next thread's first
    for (int i = 1; i < w->threads; i++) {
        item = run_take(&w->runs[(thread + i) % w->threads], 1);
        if (item >= 0) return item;
    }
    return -1;
}

void work_end(WorkShare* w) {
    free(w->runs);
    w->runs = NULL;
}

// ----------------------------------------------------------------------------
// The parallel product

// C (M, N) += A (M, K) @ B (K, N) with the threads, A(i, k) = A[i a_rs + k a_ks]
// and B(k, j) = B[k b_ks + j b_js]; with store set, C = bias (N, or NULL for
// zero) + A @ B instead, so that C needs no clearing first.
//
// After packing B, the work goes out in units of up to GEMM_UNIT tiles of one
// column. The units are numbered row block by row block and shared out in equal
// contiguous runs (work_next), so that each thread computes the same rows of C
// in every product over the tokens (the forward ones and the input gradients; a
// weight gradient's rows are output channels): the rows that the same thread's
// share of the row-wise layers around it (layernorm, GELU, residuals, attention
// by batch row) also touches, which so stay in its own core's cache instead of
// crossing to the other's. A thread done with its run early helps with the
// others'. A unit runs k in blocks of GEMM_KB: each block for all of its tiles
// before the next, so that the block of the column's panel (GEMM_KB x 32, up to
// 32 KB) stays in L1 while the unit's rows of A (32 rows, 16 KB at K = 128) pass
// by, and those rows stay there for the next unit, the same rows against the
// next panel. (Units of 8 tiles were 6% slower in a training step, units of 2
// another 6%.) A tile is summed block after block by the one thread that owns
// its unit, so the bits do not depend on the thread count.
#define GEMM_UNIT 4
static void gemm_acc(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                     const float* B, size_t b_ks, size_t b_js, int M, int N, int K,
                     int store, const float* bias) {
    int tiles_m = (M + TILE_M - 1) / TILE_M, tiles_n = (N + TILE_N - 1) / TILE_N;
    int units_m = (tiles_m + GEMM_UNIT - 1) / GEMM_UNIT;
    reserve_packed_b(N, K);
    WorkShare work;
    #pragma omp parallel
    {
        #pragma omp single
        work_begin(&work, (long)units_m * tiles_n);
        pack_b(B, b_ks, b_js, N, K);
        for (long unit; (unit = work_next(&work)) >= 0;) {
            int u = (int)unit;
            int tn = u % tiles_n, j = tn * TILE_N;
            int tm0 = u / tiles_n * GEMM_UNIT;
            int tm1 = tm0 + GEMM_UNIT < tiles_m ? tm0 + GEMM_UNIT : tiles_m;
            int n = N - j < TILE_N ? N - j : TILE_N;
            const float* bj = bias ? bias + j : NULL;
            for (int k0 = 0; k0 < K; k0 += GEMM_KB) {
                int kb = K - k0 < GEMM_KB ? K - k0 : GEMM_KB;
                int st = store && k0 == 0; // the first block stores, the others add
                const float* b = packed_b + ((size_t)tn * K + k0) * TILE_N;
                for (int tm = tm0; tm < tm1; tm++) {
                    int i = tm * TILE_M, m = M - i < TILE_M ? M - i : TILE_M;
                    float* c = C + (size_t)i * ldc + j;
                    const float* a = A + (size_t)i * a_rs + (size_t)k0 * a_ks;
                    if (m == TILE_M) tile_full(c, ldc, a, a_rs, a_ks, b, TILE_N, kb, n, st, bj);
                    else tile_edge(c, ldc, a, a_rs, a_ks, b, TILE_N, 1, kb, m, n, st, bj);
                }
            }
        }
    }
    work_end(&work);
}

// ----------------------------------------------------------------------------
// A linear layer: forward and backward

void transpose_matrix(float* dst, size_t ld, const float* src, int rows, int cols) {
    // in blocks of 16 x 16, so that both sides stay within a few cache lines
    int blocks = (cols + 15) / 16;
    #pragma omp parallel for
    for (int bc = 0; bc < blocks; bc++) {
        int c0 = bc * 16, c1 = c0 + 16 < cols ? c0 + 16 : cols;
        for (int r0 = 0; r0 < rows; r0 += 16) {
            int r1 = r0 + 16 < rows ? r0 + 16 : rows;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++)
                    dst[(size_t)c * ld + r] = src[(size_t)r * cols + c];
        }
    }
}

void matmul_forward_t(float* out, const float* inp, const float* wt, const float* bias,
                      int N, int IC, int OC) {
    // out = bias + inp (N, IC) @ wt (IC, OC)
    gemm_acc(out, OC, inp, IC, 1, wt, OC, 1, N, OC, IC, 1, bias);
}

void matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                    int N, int IC, int OC) {
    // out = bias + inp (N, IC) @ w^T: B(k, j) = w[j IC + k]
    gemm_acc(out, OC, inp, IC, 1, w, 1, IC, N, OC, IC, 1, bias);
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC) {
    // dinp (N, IC) = dout (N, OC) @ w (OC, IC), overwritten
    if (dinp) gemm_acc(dinp, IC, dout, OC, 1, w, IC, 1, N, IC, OC, 1, NULL);

    // dw (OC, IC) += dout^T (OC, N) @ inp (N, IC): A(o, n) = dout[n OC + o]
    if (dw) gemm_acc(dw, IC, dout, 1, OC, inp, IC, 1, OC, IC, N, 0, NULL);

    // dbias (OC) += the column sums of dout, in blocks of columns
    if (dbias) {
        int blocks = (OC + 63) / 64;
        #pragma omp parallel for
        for (int blk = 0; blk < blocks; blk++) {
            int o0 = blk * 64, o1 = o0 + 64 < OC ? o0 + 64 : OC;
            float acc[64] = {0};
            for (int n = 0; n < N; n++) {
                const float* d = dout + (size_t)n * OC;
                for (int o = o0; o < o1; o++) acc[o - o0] += d[o];
            }
            for (int o = o0; o < o1; o++) dbias[o] += acc[o - o0];
        }
    }
}

// A dot product of n floats; the simd reduction keeps partial sums in vector
// lanes (a fixed order for a given build).
static inline float dot(const float* a, const float* b, int n) {
    float s = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void matvec_forward(float* out, const float* x, const float* w, const float* bias,
                    int IC, int OC) {
    for (int oc = 0; oc < OC; oc++) {
        out[oc] = (bias ? bias[oc] : 0.0f) + dot(x, w + (size_t)oc * IC, IC);
    }
}
