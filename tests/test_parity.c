// test_parity.c: the C model against an independent PyTorch reference (suite "parity").
//
// tests/data/parity.bin is a checkpoint that tools/reference.py wrote from a small
// trained model: the model's VOCB and PARM, a fixed batch (INPT, TGTS, SHAP), and
// what PyTorch computed for it in float64 with noise off: the logits (LOGT), the
// mean loss (LOSS) and the gradient of that loss with respect to every parameter
// (GRAD, laid out as PARM). The tests run model_forward and model_backward on the
// same batch and compare. tools/README.md says how to regenerate the file.
#define _GNU_SOURCE // for testutil.h (nftw, wait4)
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "game.h"
#include "tokenizer.h"
#include "train.h"
#include "weights.h"

#include "testutil.h"

// ----------------------------------------------------------------------------
// Tolerances

// Logits, absolute. The C forward is float32 (sums of up to 4C products rounded at
// 6e-8 each, exp and tanh by polynomials good to a few ulp) against a float64
// reference; on logits of order 1 that leaves about 1e-6. A wrong layer, a wrong
// epsilon or scale moves them by 1e-3 or more.
#define LOGIT_TOL 1e-5

// Mean loss, absolute: the same rounding, averaged over B T positions.
#define LOSS_TOL 1e-5

// Each gradient tensor: max |C - reference| over the tensor, relative to the
// tensor's largest |reference gradient|. The backward adds float32 rounding of the
// same order as the forward's to each chain of products, about 1e-6 here.
#define GRAD_REL_TOL 1e-4

// Where the fixture lives, relative to the repository root (where the tests run)
// or to tests/.
static const char* const FIXTURE_PATHS[] = {"tests/data/parity.bin",
                                            "../tests/data/parity.bin"};

// ----------------------------------------------------------------------------
// The fixture, loaded into a model

typedef struct {
    Checkpoint ck;
    Model m;
    Tokenizer tok;
    int B, T, V;
    int* inputs;   // (B, T)
    int* targets;  // (B, T)
    float* logits; // (B, T, V) reference logits
    float loss;    // reference mean loss
    float* grad;   // (num_params) reference gradient
} Fixture;

// Reads section tag as n u32 token ids into a new int array, checking each id.
static int* read_ids(const Checkpoint* ck, const char* tag, size_t n, int V) {
    char err[512];
    uint32_t* raw = test_calloc(n, sizeof(uint32_t));
    cr_assert(ckpt_read_u32(ck, tag, raw, n, err, sizeof(err)) == 0, "%s", err);
    int* ids = test_calloc(n, sizeof(int));
    for (size_t i = 0; i < n; i++) {
        cr_assert(raw[i] < (uint32_t)V, "%s[%zu] = %u is not a token id (V = %d)", tag, i,
                  raw[i], V);
        ids[i] = (int)raw[i];
    }
    free(raw);
    return ids;
}

static void fixture_load(Fixture* f) {
    char err[512] = "";
    memset(f, 0, sizeof(*f));

    // the file, from the repository root or from tests/
    int loaded = -1;
    for (size_t i = 0; i < sizeof(FIXTURE_PATHS) / sizeof(FIXTURE_PATHS[0]); i++) {
        loaded = ckpt_load(&f->ck, FIXTURE_PATHS[i], err, sizeof(err));
        if (loaded == 0) break;
    }
    cr_assert(loaded == 0, "cannot load the parity fixture: %s (run the tests from the "
              "repository root; tools/README.md says how to regenerate the file)", err);

    // the model, noise off
    cr_assert(model_from_checkpoint(&f->m, &f->tok, &f->ck, err, sizeof(err)) == 0, "%s",
              err);
    memset(&f->m.noise, 0, sizeof(f->m.noise));

    // the batch and its shape
    uint32_t shape[2];
    cr_assert(ckpt_read_u32(&f->ck, "SHAP", shape, 2, err, sizeof(err)) == 0, "%s", err);
    f->B = (int)shape[0];
    f->T = (int)shape[1];
    f->V = f->m.config.vocab_size;
    cr_assert(f->B >= 1 && f->T >= 1 && f->T <= f->m.config.context,
              "SHAP: batch %d x %d does not fit the context %d", f->B, f->T,
              f->m.config.context);
    size_t BT = (size_t)f->B * f->T;
    f->inputs = read_ids(&f->ck, "INPT", BT, f->V);
    f->targets = read_ids(&f->ck, "TGTS", BT, f->V);

    // the reference results
    f->logits = test_calloc(BT * f->V, sizeof(float));
    cr_assert(ckpt_read_f32(&f->ck, "LOGT", f->logits, BT * f->V, err, sizeof(err)) == 0,
              "%s", err);
    cr_assert(ckpt_read_f32(&f->ck, "LOSS", &f->loss, 1, err, sizeof(err)) == 0, "%s", err);
    f->grad = test_calloc(f->m.num_params, sizeof(float));
    cr_assert(ckpt_read_f32(&f->ck, "GRAD", f->grad, f->m.num_params, err, sizeof(err)) == 0,
              "%s", err);
}

static void fixture_free(Fixture* f) {
    free(f->inputs);
    free(f->targets);
    free(f->logits);
    free(f->grad);
    model_free(&f->m);
    tokenizer_free(&f->tok);
    ckpt_free_loaded(&f->ck);
}

// Largest |got[i] - want[i]| over n floats; its index goes into *at (may be NULL).
static double max_abs_diff(const float* got, const float* want, size_t n, size_t* at) {
    double d = 0.0;
    size_t where = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (e > d) {
            d = e;
            where = i;
        }
    }
    if (at) *at = where;
    return d;
}

// ----------------------------------------------------------------------------
// Tests

// The forward's logits and loss.
Test(parity, forward) {
    Fixture f;
    fixture_load(&f);
    size_t n = (size_t)f.B * f.T * f.V;
    float* logits = test_calloc(n, sizeof(float));

    // forward with targets, the raw logits copied out
    model_forward(&f.m, f.inputs, f.targets, f.B, f.T, logits);

    // logits element by element, then the loss
    size_t worst;
    double dl = max_abs_diff(logits, f.logits, n, &worst);
    cr_expect(dl <= LOGIT_TOL, "logits: max |C - reference| = %.3g > %.0e, at [b %zu, t "
              "%zu, v %zu]: %.9g vs %.9g", dl, LOGIT_TOL, worst / ((size_t)f.T * f.V),
              worst / f.V % f.T, worst % f.V, logits[worst], f.logits[worst]);
    cr_expect(fabs(f.m.mean_loss - f.loss) <= LOSS_TOL, "loss: C %.9g, reference %.9g "
              "(tolerance %.0e)", f.m.mean_loss, f.loss, LOSS_TOL);
    free(logits);
    fixture_free(&f);
}

// The gradient of every parameter tensor, each against its own scale; the noise
// tensors, which the loss does not depend on with noise off, must be exactly zero.
Test(parity, gradients) {
    Fixture f;
    fixture_load(&f);
    Gradients g;
    gradients_init(&g, &f.m);

    // forward and backward on the fixture's batch
    model_forward(&f.m, f.inputs, f.targets, f.B, f.T, NULL);
    model_backward(&f.m, &g, f.inputs, f.targets);

    // tensor by tensor, each named in its message
    ParamViews want;
    param_views(&want, f.grad, f.m.param_sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t n = f.m.param_sizes[i];
        double scale = 0.0;
        for (size_t j = 0; j < n; j++)
            scale = fabs(want.t[i][j]) > scale ? fabs(want.t[i][j]) : scale;
        double diff = max_abs_diff(g.g.t[i], want.t[i], n, NULL);
        if (i >= NUM_BASE_PARAM_TENSORS) {
            cr_expect(scale == 0.0 && diff == 0.0, "d%s: expected all zero with noise off, "
                      "max |reference| = %.3g, max |C - reference| = %.3g", param_name(i),
                      scale, diff);
            continue;
        }
        cr_expect(scale > 0.0, "d%s: the reference gradient is all zero, so the check "
                  "would prove nothing", param_name(i));
        cr_expect(diff <= GRAD_REL_TOL * scale, "d%s: max |C - reference| = %.3g, %.3g of "
                  "the tensor's max |gradient| %.3g (tolerance %.0e)", param_name(i), diff,
                  diff / scale, scale, GRAD_REL_TOL);
    }
    gradients_free(&g);
    fixture_free(&f);
}
