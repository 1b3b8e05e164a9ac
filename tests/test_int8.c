// test_int8.c: the 8-bit integer products of the decoder (suite "int8").
//
//   - i8_quantize against its definition: the largest magnitude maps to +-127,
//     each value to its nearest step, the padding to zero, and the edge cases
//     (all zeros, a NaN, an infinity);
//   - i8_matrix_init against the documented layout: every weight byte read back
//     from where int8.h says it lies, with its row's scale and offset;
//   - i8_matmul against i8_matmul_ref bit for bit (the vector instructions
//     against the plain loops, where the build has them), over ragged shapes and
//     row counts;
//   - i8_matmul against the exact product of the float inputs in double
//     precision, within the bound the two roundings allow, and against the
//     integer formula computed here from the quantized values.
// The whole model decoding in int8 is checked in test_model.c and test_sampler.c.
#define _GNU_SOURCE // for testutil.h (nftw, wait4)
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "int8.h"
#include "testutil.h"

// Shapes (OC, IC): outputs short of a block, a block and a part, full and
// partial panels of 8 blocks; inputs short of a group of 4, ragged, and the
// default model's C and 4C.
static const int SHAPES[][2] = {{1, 1},   {5, 3},    {16, 4},   {17, 7},  {65, 128},
                                {129, 130}, {300, 37}, {384, 128}, {128, 512}};
#define NUM_SHAPES (int)(sizeof(SHAPES) / sizeof(SHAPES[0]))

// n values, normal with standard deviation sd; every 7th multiplied by 8, so
// that the scales are set by a few large entries as in a trained model.
static void random_values(TestRng* r, float* x, size_t n, double sd) {
    for (size_t i = 0; i < n; i++) {
        double v = sd * test_rng_normal(r);
        x[i] = (float)(i % 7 == 3 ? 8.0 * v : v);
    }
}

Test(int8, quantize_follows_definition) {
    TestRng r = {3};
    int sizes[] = {1, 3, 4, 13, 128, 515};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int n = sizes[k];
        size_t nq = i8_row_bytes(n);
        cr_assert_eq(nq, (size_t)(n + 3) / 4 * 4);
        float* x = test_calloc((size_t)n, sizeof(float));
        uint8_t* q = test_calloc(nq, 1);
        random_values(&r, x, (size_t)n, 1.0);
        float s = i8_quantize(q, x, n);

        // the scale from the largest magnitude, which maps to +-127
        double top = 0.0;
        int at = 0;
        for (int i = 0; i < n; i++) {
            if (fabs(x[i]) > top) {
                top = fabs(x[i]);
                at = i;
            }
        }
        cr_assert(fabs(s - top / 127.0) <= 1e-6 * top, "n %d: scale %.9g, want %.9g", n, s,
                  top / 127.0);
        cr_assert_eq(abs((int)q[at] - 128), 127, "n %d: the largest maps to %d", n,
                     (int)q[at] - 128);

        // every value within half a step of its code, and the padding zero
        for (int i = 0; i < n; i++) {
            int code = (int)q[i] - 128;
            cr_assert(code >= -127 && code <= 127, "n %d: code %d", n, code);
            cr_assert(fabs(code * (double)s - x[i]) <= 0.5 * s * (1 + 1e-5),
                      "n %d: x[%d] = %.9g coded %d (step %.9g)", n, i, x[i], code, s);
        }
        for (size_t i = n; i < nq; i++) cr_assert_eq(q[i], 128, "n %d: padding %zu", n, i);
        free(x);
        free(q);
    }

    // all zeros: scale 0, codes 0
    float z[5] = {0};
    uint8_t q[8];
    cr_assert_eq(i8_quantize(q, z, 5), 0.0f);
    for (int i = 0; i < 8; i++) cr_assert_eq(q[i], 128);

    // a NaN or an infinity: a NaN scale, so that the product cannot look sane
    float bad[2][5] = {{1, 2, NAN, 4, 5}, {1, -INFINITY, 3, 4, 5}};
    for (int k = 0; k < 2; k++) {
        cr_assert(isnan(i8_quantize(q, bad[k], 5)), "case %d: scale not NaN", k);
        for (int i = 0; i < 8; i++) cr_assert_eq(q[i], 128);
    }
}

// The weight byte for output o, input i, read from the packed layout as int8.h
// describes it.
static int packed_weight(const I8Matrix* m, int o, int i) {
    int b = o / I8_BLOCK, k = o % I8_BLOCK, p = b / I8_PANEL, g = i / I8_GROUP;
    int np = m->blocks - p * I8_PANEL < I8_PANEL ? m->blocks - p * I8_PANEL : I8_PANEL;
    size_t at = (size_t)p * I8_PANEL * m->groups * 64 + ((size_t)g * np + (b - p * I8_PANEL)) *
                64 + (size_t)k * I8_GROUP + i % I8_GROUP;
    return m->q[at];
}

Test(int8, matrix_layout) {
    TestRng r = {5};
    for (int s = 0; s < NUM_SHAPES; s++) {
        int OC = SHAPES[s][0], IC = SHAPES[s][1];
        float* w = test_calloc((size_t)OC * IC, sizeof(float));
        random_values(&r, w, (size_t)OC * IC, 0.1);
        for (int i = 0; i < IC; i++) w[(size_t)(OC / 2) * IC + i] = 0.0f; // a zero row
        I8Matrix m;
        i8_matrix_init(&m, w, OC, IC);
        cr_assert_eq(m.groups, (IC + 3) / 4);
        cr_assert_eq(m.blocks, (OC + 15) / 16);

        for (int o = 0; o < m.blocks * I8_BLOCK; o++) {
            // the row's scale and offset; the padding rows are zero
            double top = 0.0;
            for (int i = 0; o < OC && i < IC; i++) top = fmax(top, fabs(w[(size_t)o * IC + i]));
            cr_assert(fabs(m.scale[o] - top / 127.0) <= 1e-6 * top, "(%d, %d) o %d: "
                      "scale %.9g, want %.9g", OC, IC, o, m.scale[o], top / 127.0);
            long sum = 0;
            for (int i = 0; i < m.groups * I8_GROUP; i++) {
                int q = packed_weight(&m, o, i);
                sum += q;
                if (o >= OC || i >= IC || top == 0.0) {
                    cr_assert_eq(q, 0, "(%d, %d): padding weight [%d][%d] is %d", OC, IC, o,
                                 i, q);
                    continue;
                }
                double want = w[(size_t)o * IC + i] / m.scale[o];
                cr_assert(fabs(q - want) <= 0.5 + 1e-4 && abs(q) <= 127, "(%d, %d): weight "
                          "[%d][%d] %.6g coded %d", OC, IC, o, i, want, q);
            }
            cr_assert_eq(m.offset[o], 128 * sum, "(%d, %d) o %d: offset", OC, IC, o);
        }
        i8_matrix_free(&m);
        free(w);
    }
}

// A product to test: random w (OC, IC), n rows of x (n, IC) and a bias, the
// packed matrix, and the rows quantized (q, n rows of i8_row_bytes(IC), and xs).
typedef struct {
    int OC, IC, n;
    float *w, *x, *bias, *xs;
    uint8_t* q;
    I8Matrix m;
} Product;

static void product_init(Product* p, TestRng* r, int OC, int IC, int n) {
    p->OC = OC;
    p->IC = IC;
    p->n = n;
    p->w = test_calloc((size_t)OC * IC, sizeof(float));
    p->x = test_calloc((size_t)n * IC, sizeof(float));
    p->bias = test_calloc((size_t)OC, sizeof(float));
    random_values(r, p->w, (size_t)OC * IC, 0.1);
    random_values(r, p->x, (size_t)n * IC, 1.0);
    random_values(r, p->bias, (size_t)OC, 0.5);
    i8_matrix_init(&p->m, p->w, OC, IC);
    p->q = test_calloc((size_t)n * i8_row_bytes(IC), 1);
    p->xs = test_calloc((size_t)n, sizeof(float));
    for (int t = 0; t < n; t++)
        p->xs[t] = i8_quantize(p->q + t * i8_row_bytes(IC), p->x + (size_t)t * IC, IC);
}

static void product_free(Product* p) {
    i8_matrix_free(&p->m);
    free(p->w);
    free(p->x);
    free(p->bias);
    free(p->q);
    free(p->xs);
}

Test(int8, matmul_matches_plain_loops) {
    cr_log_info("i8_matmul runs on %s", i8_vnni() ? "AVX-512 VNNI" : "plain loops");
    TestRng r = {9};
    for (int s = 0; s < NUM_SHAPES; s++) {
        Product p;
        product_init(&p, &r, SHAPES[s][0], SHAPES[s][1], 7);
        float* a = test_calloc((size_t)p.n * p.OC, sizeof(float));
        float* b = test_calloc((size_t)p.n * p.OC, sizeof(float));

        // every row count up to 7 (groups of 3 rows and the rest), with and
        // without the bias
        for (int rows = 1; rows <= p.n; rows++) {
            for (int with = 0; with < 2; with++) {
                i8_matmul(a, p.q, p.xs, rows, &p.m, with ? p.bias : NULL);
                i8_matmul_ref(b, p.q, p.xs, rows, &p.m, with ? p.bias : NULL);
                cr_assert(memcmp(a, b, (size_t)rows * p.OC * sizeof(float)) == 0,
                          "(%d, %d), %d rows, bias %d: the two products differ", p.OC, p.IC,
                          rows, with);
            }
        }
        free(a);
        free(b);
        product_free(&p);
    }
}

Test(int8, matmul_against_exact_product) {
    TestRng r = {13};
    for (int s = 0; s < NUM_SHAPES; s++) {
        Product p;
        product_init(&p, &r, SHAPES[s][0], SHAPES[s][1], 4);
        int OC = p.OC, IC = p.IC;
        size_t row = i8_row_bytes(IC);
        float* out = test_calloc((size_t)p.n * OC, sizeof(float));
        i8_matmul(out, p.q, p.xs, p.n, &p.m, p.bias);

        for (int t = 0; t < p.n; t++) {
            for (int o = 0; o < OC; o++) {
                // the integer formula, from the codes
                long dot = 0;
                for (int i = 0; i < IC; i++)
                    dot += (long)((int)p.q[t * row + i] - 128) * packed_weight(&p.m, o, i);
                double sx = p.xs[t], sw = p.m.scale[o];
                double formula = p.bias[o] + sx * sw * (double)dot;

                // the exact product, and what rounding both sides may cost: half
                // a step of each factor, per term
                double exact = p.bias[o], bound = 0.0;
                for (int i = 0; i < IC; i++) {
                    double xi = p.x[(size_t)t * IC + i], wi = p.w[(size_t)o * IC + i];
                    exact += xi * wi;
                    bound += 0.5 * sw * fabs(xi) + 0.5 * sx * fabs(wi) + 0.25 * sx * sw;
                }
                double got = out[(size_t)t * OC + o];
                cr_assert(fabs(got - formula) <= 1e-5 * (fabs(formula) + 1.0),
                          "(%d, %d) row %d out %d: %.9g, formula %.9g", OC, IC, t, o, got,
                          formula);
                cr_assert(fabs(got - exact) <= bound * (1 + 1e-4) + 1e-6,
                          "(%d, %d) row %d out %d: %.9g, exact %.9g, bound %.3g", OC, IC, t,
                          o, got, exact, bound);
            }
        }
        free(out);
        product_free(&p);
    }
}

// A NaN in the input comes out as NaNs, not as plausible numbers.
Test(int8, matmul_carries_nan) {
    float w[16 * 8];
    for (int i = 0; i < 16 * 8; i++) w[i] = (float)((i % 5) - 2);
    I8Matrix m;
    i8_matrix_init(&m, w, 16, 8);
    float x[8] = {1, 2, 3, NAN, 5, 6, 7, 8}, s, out[16];
    uint8_t q[8];
    s = i8_quantize(q, x, 8);
    i8_matmul(out, q, &s, 1, &m, NULL);
    for (int o = 0; o < 16; o++) cr_assert(isnan(out[o]), "out[%d] = %g", o, out[o]);
    i8_matrix_free(&m);
}
