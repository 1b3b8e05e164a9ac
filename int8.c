// int8.c: 8-bit integer matrix products for decoding (the layout and the
// arithmetic are described in int8.h).
#include "int8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512VNNI__
#include <immintrin.h>
#endif

#include "game.h"

#define I8_BYTES (I8_GROUP * I8_BLOCK) // bytes of one block of one group: 64
#define I8_ROWS 3 // input rows summed at once: 3 x 8 sums in 24 vector registers

size_t i8_row_bytes(int IC) { return (size_t)(IC + I8_GROUP - 1) / I8_GROUP * I8_GROUP; }

// Blocks of panel p in a matrix of nb blocks: I8_PANEL but in the last one.
static inline int panel_blocks(int nb, int p) {
    int left = nb - p * I8_PANEL;
    return left < I8_PANEL ? left : I8_PANEL;
}

// Where panel p starts: the panels before it are whole.
static inline size_t panel_start(const I8Matrix* m, int p) {
    return (size_t)p * I8_PANEL * m->groups * I8_BYTES;
}

// ----------------------------------------------------------------------------
// The weights

void i8_matrix_init(I8Matrix* m, const float* w, int OC, int IC) {
    m->IC = IC;
    m->OC = OC;
    m->groups = (IC + I8_GROUP - 1) / I8_GROUP;
    m->blocks = (OC + I8_BLOCK - 1) / I8_BLOCK;
    size_t outs = (size_t)m->blocks * I8_BLOCK;
    m->q = xmalloc_lines((size_t)m->groups * m->blocks * I8_BYTES, 1, 1, "int8 weights");
    m->scale = xmalloc_lines(outs, sizeof(float), 1, "int8 weights");
    m->offset = xmalloc_lines(outs, sizeof(int32_t), 1, "int8 weights");

    for (int o = 0; o < OC; o++) {
        // the row's scale: its largest magnitude maps to 127
        const float* row = w + (size_t)o * IC;
        float top = 0.0f;
        for (int i = 0; i < IC; i++) top = fabsf(row[i]) > top ? fabsf(row[i]) : top;
        if (top == 0.0f) continue;
        float inv = 127.0f / top;
        m->scale[o] = top / 127.0f;

        // each weight to its nearest step, into its place in the panel
        int b = o / I8_BLOCK, k = o % I8_BLOCK, p = b / I8_PANEL;
        int np = panel_blocks(m->blocks, p);
        int8_t* dst = m->q + panel_start(m, p) + (size_t)(b - p * I8_PANEL) * I8_BYTES;
        int32_t sum = 0;
        for (int i = 0; i < IC; i++) {
            float r = rintf(row[i] * inv);
            int q = r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r;
            size_t g = (size_t)(i / I8_GROUP);
            dst[g * np * I8_BYTES + k * I8_GROUP + i % I8_GROUP] = (int8_t)q;
            sum += q;
        }
        m->offset[o] = 128 * sum;
    }
}

void i8_matrix_free(I8Matrix* m) {
    free(m->q);
    free(m->scale);
    free(m->offset);
    memset(m, 0, sizeof(*m));
}

// ----------------------------------------------------------------------------
// The activations

float i8_quantize(uint8_t* q, const float* x, int IC) {
    // the largest magnitude, and a probe that a NaN or an infinity turns to NaN
    // (x * 0 is 0 for every finite x)
    float top = 0.0f, probe = 0.0f;
    #pragma omp simd reduction(max : top) reduction(+ : probe)
    for (int i = 0; i < IC; i++) {
        float a = fabsf(x[i]);
        top = a > top ? a : top;
        probe += x[i] * 0.0f;
    }
    int bad = probe != probe;
    size_t nq = i8_row_bytes(IC);
    if (bad || top == 0.0f) {
        memset(q, 128, nq);
        return bad ? NAN : 0.0f;
    }

    // each value to its nearest step, shifted by 128 to be unsigned
    float inv = 127.0f / top;
    #pragma omp simd
    for (int i = 0; i < IC; i++) {
        float r = rintf(x[i] * inv);
        r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
        q[i] = (uint8_t)((int)r + 128);
    }
    for (size_t i = IC; i < nq; i++) q[i] = 128;
    return top / 127.0f;
}

// ----------------------------------------------------------------------------
// The products

// out[r][o] for outputs o0 .. o0 + 15 (cut at OC) of R rows, from their integer
// sums acc[r] (16 each, activations shifted by 128): both ways of summing end
// here, so they agree bit for bit.
static inline __attribute__((always_inline)) void
block_store(float* out, int OC, const int32_t (*acc)[I8_BLOCK], int R, const float* xs,
            const I8Matrix* w, const float* bias, int o0) {
    int n = OC - o0 < I8_BLOCK ? OC - o0 : I8_BLOCK;
    for (int r = 0; r < R; r++) {
        for (int k = 0; k < n; k++) {
            int o = o0 + k;
            float y = (float)(acc[r][k] - w->offset[o]) * (xs[r] * w->scale[o]);
            out[(size_t)r * OC + o] = bias ? bias[o] + y : y;
        }
    }
}

// R rows (R <= I8_ROWS) of one panel of np blocks (np <= I8_PANEL), both
// constants once inlined, with plain loops: each 32-bit sum adds its four byte
// products per group, as the vector instruction does.
static inline __attribute__((always_inline)) void
panel_ref(float* out, const uint8_t* xq, size_t ldx, const float* xs, int R,
          const I8Matrix* w, const float* bias, int p, int np) {
    int32_t acc[I8_ROWS][I8_PANEL][I8_BLOCK] = {{{0}}};
    const int8_t* panel = w->q + panel_start(w, p);
    for (int g = 0; g < w->groups; g++) {
        const int8_t* wg = panel + (size_t)g * np * I8_BYTES;
        for (int r = 0; r < R; r++) {
            const uint8_t* x = xq + r * ldx + (size_t)g * I8_GROUP;
            for (int b = 0; b < np; b++) {
                for (int k = 0; k < I8_BLOCK; k++) {
                    const int8_t* q = wg + b * I8_BYTES + k * I8_GROUP;
                    acc[r][b][k] += x[0] * q[0] + x[1] * q[1] + x[2] * q[2] + x[3] * q[3];
                }
            }
        }
    }
    for (int b = 0; b < np; b++) {
        int32_t sums[I8_ROWS][I8_BLOCK];
        for (int r = 0; r < R; r++) memcpy(sums[r], acc[r][b], sizeof(sums[r]));
        block_store(out, w->OC, sums, R, xs, w, bias, (p * I8_PANEL + b) * I8_BLOCK);
    }
}

#ifdef __AVX512VNNI__
// acc + the products of x's and w's bytes, four per lane (vpdpbusd). Written as
// one instruction of inline assembly because gcc 12 compiles the intrinsic
// _mm512_dpbusd_epi32 in a loop with two register copies around each use,
// which here cost as much as the products themselves.
static inline __m512i dot_bytes(__m512i acc, __m512i x, __m512i w) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "vm"(w));
    return acc;
}

// panel_ref's work with AVX-512 VNNI: per group, the R rows' four bytes
// broadcast to every lane, each block's 64 weight bytes loaded once, and one
// vpdpbusd per (row, block) adding 64 products into that block's 16 sums. The
// R np sums stay in registers while the panel streams past.
static inline __attribute__((always_inline)) void
panel_vnni(float* out, const uint8_t* xq, size_t ldx, const float* xs, int R,
           const I8Matrix* w, const float* bias, int p, int np) {
    __m512i acc[I8_ROWS][I8_PANEL];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < np; b++) acc[r][b] = _mm512_setzero_si512();
    const int8_t* panel = w->q + panel_start(w, p);
    for (int g = 0; g < w->groups; g++) {
        const int8_t* wg = panel + (size_t)g * np * I8_BYTES;
        __m512i x[I8_ROWS];
        for (int r = 0; r < R; r++) {
            int32_t four;
            memcpy(&four, xq + r * ldx + (size_t)g * I8_GROUP, sizeof(four));
            x[r] = _mm512_set1_epi32(four);
        }
        for (int b = 0; b < np; b++) {
            __m512i q = _mm512_loadu_si512(wg + b * I8_BYTES);
            for (int r = 0; r < R; r++) acc[r][b] = dot_bytes(acc[r][b], x[r], q);
        }
    }
    for (int b = 0; b < np; b++) {
        int32_t sums[I8_ROWS][I8_BLOCK];
        for (int r = 0; r < R; r++) _mm512_storeu_si512(sums[r], acc[r][b]);
        block_store(out, w->OC, sums, R, xs, w, bias, (p * I8_PANEL + b) * I8_BLOCK);
    }
}
#define PANEL panel_vnni
#else
#define PANEL panel_ref
#endif

// One panel for R rows, with np made a constant for the loops.
#define PANEL_CASES(kernel, R)                                                         \
    switch (np) {                                                                      \
    case 8: kernel(out, xq, ldx, xs, R, w, bias, p, 8); break;                         \
    case 7: kernel(out, xq, ldx, xs, R, w, bias, p, 7); break;                         \
    case 6: kernel(out, xq, ldx, xs, R, w, bias, p, 6); break;                         \
    case 5: kernel(out, xq, ldx, xs, R, w, bias, p, 5); break;                         \
    case 4: kernel(out, xq, ldx, xs, R, w, bias, p, 4); break;                         \
    case 3: kernel(out, xq, ldx, xs, R, w, bias, p, 3); break;                         \
    case 2: kernel(out, xq, ldx, xs, R, w, bias, p, 2); break;                         \
    default: kernel(out, xq, ldx, xs, R, w, bias, p, 1); break;                        \
    }

// Every panel, the rows I8_ROWS at a time (the rest together), so that each
// group's weights, once loaded, serve several rows.
#define MATMUL_BODY(kernel)                                                            \
    size_t ldx = i8_row_bytes(w->IC);                                                  \
    for (int p = 0; p * I8_PANEL < w->blocks; p++) {                                   \
        int np = panel_blocks(w->blocks, p);                                           \
        for (int r0 = 0; r0 < n; r0 += I8_ROWS) {                                      \
            float* out = out0 + (size_t)r0 * w->OC;                                    \
            const uint8_t* xq = xq0 + r0 * ldx;                                        \
            const float* xs = xs0 + r0;                                                \
            switch (n - r0 < I8_ROWS ? n - r0 : I8_ROWS) {                             \
            case 3: PANEL_CASES(kernel, 3); break;                                     \
            case 2: PANEL_CASES(kernel, 2); break;                                     \
            default: PANEL_CASES(kernel, 1); break;                                    \
            }                                                                          \
        }                                                                              \
    }

void i8_matmul(float* out0, const uint8_t* xq0, const float* xs0, int n, const I8Matrix* w,
               const float* bias) {
    MATMUL_BODY(PANEL)
}

void i8_matmul_ref(float* out0, const uint8_t* xq0, const float* xs0, int n,
                   const I8Matrix* w, const float* bias) {
    MATMUL_BODY(panel_ref)
}

int i8_vnni(void) {
#ifdef __AVX512VNNI__
    return 1;
#else
    return 0;
#endif
}
