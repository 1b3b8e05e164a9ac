// kernels.c: matrix products for the forward and backward passes.
//
// All three products of a linear layer (the forward, and the two gradients)
// are the same operation, C (M, N) += A (M, K) @ B (K, N), with B row-major and
// A read through two strides, so that A can be a matrix or a transposed one
// without copying. That operation is computed in register tiles of 8 x 32: the
// tile of C stays in sixteen 512-bit registers (or thirty-two 256-bit ones)
// while k runs, each step broadcasting 8 numbers of A against 32 of B. Plain C
// loops of fixed length, which the compiler turns into vector instructions.
//
// Threads split the tiles of C between them; each tile is summed over k by
// one thread in increasing k, so the bits do not depend on the thread count.
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#include "game.h"

#define TILE_M GEMM_TILE_M // rows of a register tile
#define TILE_N 32 // columns of a register tile

// C (TILE_M, TILE_N) += A (TILE_M, K) @ B (K, TILE_N); A(r, k) = A[r a_rs + k a_ks].
static inline void tile_full(float* restrict C, size_t ldc, const float* restrict A,
                             size_t a_rs, size_t a_ks, const float* restrict B,
                             size_t ldb, int K) {
    float acc[TILE_M][TILE_N];
    memset(acc, 0, sizeof(acc));
    for (int k = 0; k < K; k++) {
        const float* b = B + (size_t)k * ldb;
        const float* a = A + (size_t)k * a_ks;
        for (int r = 0; r < TILE_M; r++) {
            float ar = a[r * a_rs];
            #pragma omp simd
            for (int j = 0; j < TILE_N; j++) acc[r][j] += ar * b[j];
        }
    }
    for (int r = 0; r < TILE_M; r++) {
        #pragma omp simd
        for (int j = 0; j < TILE_N; j++) C[r * ldc + j] += acc[r][j];
    }
}

// The same for a partial tile of m <= TILE_M rows and n <= TILE_N columns, at
// the bottom and right edges of C.
static void tile_edge(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                      const float* B, size_t ldb, int K, int m, int n) {
    float acc[TILE_M][TILE_N];
    memset(acc, 0, sizeof(acc));
    for (int k = 0; k < K; k++) {
        const float* b = B + (size_t)k * ldb;
        const float* a = A + (size_t)k * a_ks;
        for (int r = 0; r < m; r++) {
            float ar = a[r * a_rs];
            for (int j = 0; j < n; j++) acc[r][j] += ar * b[j];
        }
    }
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) C[r * ldc + j] += acc[r][j];
}

// One tile of C: rows [i, i + TILE_M) and columns [j, j + TILE_N), cut at M, N.
static inline void gemm_tile(float* C, size_t ldc, const float* A, size_t a_rs,
                             size_t a_ks, const float* B, size_t ldb, int M, int N, int K,
                             int i, int j) {
    int m = M - i < TILE_M ? M - i : TILE_M;
    int n = N - j < TILE_N ? N - j : TILE_N;
    float* c = C + (size_t)i * ldc + j;
    const float* a = A + (size_t)i * a_rs;
    if (m == TILE_M && n == TILE_N) tile_full(c, ldc, a, a_rs, a_ks, B + j, ldb, K);
    else tile_edge(c, ldc, a, a_rs, a_ks, B + j, ldb, K, m, n);
}

void gemm_serial(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                 const float* B, size_t ldb, int M, int N, int K) {
    for (int i = 0; i < M; i += TILE_M)
        for (int j = 0; j < N; j += TILE_N) gemm_tile(C, ldc, A, a_rs, a_ks, B, ldb, M, N, K, i, j);
}

// The same with the tiles shared among the threads.
static void gemm_acc(float* C, size_t ldc, const float* A, size_t a_rs, size_t a_ks,
                     const float* B, size_t ldb, int M, int N, int K) {
    int tiles_m = (M + TILE_M - 1) / TILE_M, tiles_n = (N + TILE_N - 1) / TILE_N;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int tm = 0; tm < tiles_m; tm++)
        for (int tn = 0; tn < tiles_n; tn++)
            gemm_tile(C, ldc, A, a_rs, a_ks, B, ldb, M, N, K, tm * TILE_M, tn * TILE_N);
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
    // out starts as the bias (or zero), then out += inp @ wt
    #pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        float* o = out + (size_t)n * OC;
        if (bias) memcpy(o, bias, (size_t)OC * sizeof(float));
        else memset(o, 0, (size_t)OC * sizeof(float));
    }
    gemm_acc(out, OC, inp, IC, 1, wt, OC, N, OC, IC);
}

void matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                    int N, int IC, int OC) {
    // w (OC, IC) transposed to wt (IC, OCp), so that a row of B is contiguous.
    // An output width that is not a multiple of the tile (the head's V) is padded
    // with zero columns to whole tiles, so that no column is left to the slow
    // edge tiles; the real columns are then copied out.
    int OCp = (OC % TILE_N == 0 || OC < TILE_N) ? OC : (OC + TILE_N - 1) / TILE_N * TILE_N;
    float* wt = xcalloc((size_t)IC * OCp, sizeof(float), "matmul scratch");
    transpose_matrix(wt, OCp, w, OC, IC);
    if (OCp == OC) {
        matmul_forward_t(out, inp, wt, bias, N, IC, OC);
        free(wt);
        return;
    }
    float* wide = xmalloc((size_t)N * OCp * sizeof(float), "matmul scratch");
    matmul_forward_t(wide, inp, wt, NULL, N, IC, OCp);
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++)
            out[(size_t)n * OC + o] = (bias ? bias[o] : 0.0f) + wide[(size_t)n * OCp + o];
    free(wt);
    free(wide);
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC) {
    // dinp (N, IC) += dout (N, OC) @ w (OC, IC)
    if (dinp) gemm_acc(dinp, IC, dout, OC, 1, w, IC, N, IC, OC);

    // dw (OC, IC) += dout^T (OC, N) @ inp (N, IC): A(o, n) = dout[n OC + o]
    if (dw) gemm_acc(dw, IC, dout, 1, OC, inp, IC, OC, IC, N);

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
