// xor.c: the smallest GAME demo, a 2-2-1 network learning XOR with and without
// evolving coefficients.
//
// The network: h = tanh(W1 x + b1) (2 units), p = sigmoid(w2 . h + b2), binary
// cross-entropy averaged over the four XOR points (full batch), plain gradient
// descent. All nine weights and biases start as independent draws of the
// project's approximate N(0, 1) (rng_normal, keyed on the seed and RNG_SITE_INIT),
// so both arms start from the same point for a given seed.
//
// Arms:
//   plain  theta <- theta - lr g
//   game   two groups (hidden layer W1, b1; output layer w2, b2) with C1 on their
//          learning rates (plain descent has no momentum, so b is unused), C2
//          multiplicative noise on the hidden activations with a learned log
//          scale s, C4 resonance, and C3 gated jumps of the learning rates and s.
// A run succeeds when the clean loss (no noise) falls below 0.05 within the step
// budget. For each initial learning rate the program prints the success rate and
// the median number of steps to success over the seeds, as a markdown table.
//
// Usage: ./xor [--seeds N] [--steps N] [--mode LIST]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ame.h"

#define NP 9          // parameters: W1 (2x2), b1 (2), w2 (2), b2
#define HIDDEN_END 6  // parameters 0 .. 5 are the hidden layer (group 0), 6 .. 8 the output
#define SUCCESS_LOSS 0.05

static const double XS[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
static const double YS[4] = {0, 1, 1, 0};

// ----------------------------------------------------------------------------
// The network

// Loss and gradient at theta (NP). With noise on, each hidden activation h of
// point n is multiplied by (1 + eta sigma eps), eps element 2n + j of `key`'s
// stream; ds then receives dL/ds for s = ln sigma. grad (NP) and ds may be NULL
// for a loss-only call.
static double xor_loss(const double* th, int noise, double eta, double s, uint64_t key,
                       double* grad, double* ds)
{
    const double *w1 = th, *b1 = th + 4, *w2 = th + 6, *b2 = th + 8;
    double sigma = exp(s), loss = 0.0, dsum = 0.0;
    if (grad) {
        memset(grad, 0, NP * sizeof(double));
    }
    for (int n = 0; n < 4; n++) {

        // forward: hidden, noise, output logit
        double h[2], z[2], eps[2] = {0, 0}, o = *b2;
        for (int j = 0; j < 2; j++) {
            h[j] = tanh(w1[2 * j] * XS[n][0] + w1[2 * j + 1] * XS[n][1] + b1[j]);
            if (noise) {
                eps[j] = rng_normal(key, 2 * (uint64_t)n + (uint64_t)j);
            }
            z[j] = h[j] * (1.0 + eta * sigma * eps[j]);
            o += w2[j] * z[j];
        }

        // BCE from the logit, stable for large |o|: softplus(o) - y o
        loss += (o > 0 ? o + log1p(exp(-o)) : log1p(exp(o))) - YS[n] * o;
        if (!grad) {
            continue;
        }

        // backward: dL/do = (p - y) / 4, then through the noise (z = h (1 + e s e))
        double dout = (1.0 / (1.0 + exp(-o)) - YS[n]) / 4.0;
        grad[8] += dout;
        for (int j = 0; j < 2; j++) {
            double dz = dout * w2[j];
            grad[6 + j] += dout * z[j];
            dsum += dz * h[j] * eps[j];
            double da = dz * (1.0 + eta * sigma * eps[j]) * (1.0 - h[j] * h[j]);
            grad[2 * j] += da * XS[n][0];
            grad[2 * j + 1] += da * XS[n][1];
            grad[4 + j] += da;
        }
    }
    if (ds) {
        *ds = eta * sigma * dsum;
    }
    return loss / 4.0;
}

// The initial weights of a seed.
static void xor_init(double* th, uint64_t seed)
{
    uint64_t key = rng_key(seed, 0, RNG_SITE_INIT);
    for (int i = 0; i < NP; i++) {
        th[i] = rng_normal(key, (uint64_t)i);
    }
}

// ----------------------------------------------------------------------------
// The two arms; each returns the steps to success, or -1

static long run_plain(uint64_t seed, double lr, long steps)
{
    double th[NP], g[NP];
    xor_init(th, seed);
    for (long t = 0; t < steps; t++) {
        xor_loss(th, 0, 0.0, 0.0, 0, g, NULL);
        for (int i = 0; i < NP; i++) {
            th[i] -= lr * g[i];
        }
        if (xor_loss(th, 0, 0.0, 0.0, 0, NULL, NULL) < SUCCESS_LOSS) {
            return t + 1;
        }
    }
    return -1;
}

// Group of parameter i: 0 hidden, 1 output.
static int group_of(int i) { return i < HIDDEN_END ? 0 : 1; }

static long run_game(uint64_t seed, double lr, long steps, const AmeParams* p, unsigned mask,
                     AmeState* st)
{
    double th[NP], g[NP], u[NP] = {0};
    float alpha_prev[2] = {0, 0};
    double s = ame_initial_s(p);
    xor_init(th, seed);
    if (ame_init(st, p, 2, mask, seed, (float)lr, 0.9f) != 0) {
        exit(EXIT_FAILURE);
    }
    int noise = (mask & AME_C2) != 0;

    // the entropy bonus: the site perturbs 4 x 2 activations, the data set has 4
    // points
    double dbonus = ame_entropy_grad(p, 8.0, 4.0);
    for (long t = 0; t < steps; t++) {

        // noisy loss and gradients
        uint64_t key = rng_key(seed, (uint64_t)t, RNG_SITE_NOISE_MLP(0));
        double ds = 0.0;
        double loss = xor_loss(th, noise, ame_eta(st), s, key, g, &ds);

        // per-group statistics; s takes part through ds only, not in the dot
        // products, because its update follows the entropy bonus as well as the
        // loss and would bias the cosine of the learning-rate signal
        AmeGroupStats gs[2];
        memset(gs, 0, sizeof gs);
        for (int i = 0; i < NP; i++) {
            AmeGroupStats* q = &gs[group_of(i)];
            q->g_dot_u += g[i] * u[i];
            q->g_norm2 += g[i] * g[i];
            q->u_norm2 += u[i] * u[i];
        }
        gs[0].ds = noise ? ds : 0.0;

        // the coefficients move, then the noise scale takes any jump
        AmeActions act;
        ame_step(st, p, t, steps, (float)loss, gs, alpha_prev, &act);
        s = ame_clamp_s(p, (float)(s + act.s_shift[0]));

        // descent with the group learning rates; s with the hidden layer's
        float lr_g[2] = {ame_lr(st, 0, 1.0f), ame_lr(st, 1, 1.0f)};
        for (int i = 0; i < NP; i++) {
            th[i] -= lr_g[group_of(i)] * g[i];
            u[i] = g[i];
        }
        if (noise) {
            s = ame_clamp_s(p, (float)(s - lr_g[0] * (ds + dbonus)));
        }
        alpha_prev[0] = lr_g[0];
        alpha_prev[1] = lr_g[1];

        // success is judged on the clean network
        if (xor_loss(th, 0, 0.0, 0.0, 0, NULL, NULL) < SUCCESS_LOSS) {
            return t + 1;
        }
    }
    return -1;
}

// ----------------------------------------------------------------------------
// Main

static int cmp_long(const void* a, const void* b)
{
    long x = *(const long*)a, y = *(const long*)b;
    return (x > y) - (x < y);
}

static void usage(void)
{
    fprintf(stderr, "usage: ./xor [--seeds N] [--steps N] [--mode LIST]\n"
                    "  --seeds N    seeds per initial learning rate (default 200)\n"
                    "  --steps N    step budget per run (default 5000)\n"
                    "  --mode LIST  GAME components of the game arm (default "
                    "c1,c2,c3,c4)\n");
}

// Prints one table row from the steps of `n` runs (-1 for a failure).
static void print_row(const char* arm, double lr, long* res, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        if (res[i] >= 0) {
            res[ok++] = res[i];
        }
    }
    qsort(res, (size_t)ok, sizeof res[0], cmp_long);
    char med[32] = "-";
    if (ok > 0) {
        long m = ok % 2 ? res[ok / 2] : (res[ok / 2 - 1] + res[ok / 2]) / 2;
        snprintf(med, sizeof med, "%ld", m);
    }
    printf("| %-5s | %-6g | %5.1f%% (%d/%d) | %s |\n", arm, lr, 100.0 * ok / n, ok, n, med);
}

int main(int argc, char** argv)
{
    int seeds = 200;
    long steps = 5000;
    const char* mode = "c1,c2,c3,c4";

    // flags
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            seeds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            mode = argv[++i];
        } else {
            usage();
            return EXIT_FAILURE;
        }
    }
    if (seeds < 1 || steps < 1) {
        fprintf(stderr, "xor: --seeds and --steps must be at least 1\n");
        return EXIT_FAILURE;
    }
    unsigned mask;
    char err[256];
    if (ame_parse_mode(mode, &mask, err, sizeof err) != 0) {
        fprintf(stderr, "xor: %s\n", err);
        return EXIT_FAILURE;
    }

    // GAME constants for this problem; see the printed notes for why
    AmeParams p;
    ame_params_default(&p);
    p.a_min = log(1e-3);
    p.a_max = log(100.0);
    p.lambda_h = 1e-3;

    printf("XOR 2-2-1, full batch, %d seeds, %ld steps, success: clean loss < %g\n",
           seeds, steps, SUCCESS_LOSS);
    printf("game arm: %s; AmeParams differing from the defaults:\n", mode);
    printf("  a in [ln 1e-3, ln 100] (default [ln 1e-5, ln 3e-2], a transformer's range;\n"
           "    XOR's useful rates run from 0.01 to 10)\n");
    printf("  lambda_h = 1e-3 (default 1; the bonus gradient here is -2 lambda_h per "
           "step\n    on 4 points, which at 1 would push sigma to its clamp at once)\n\n");
    printf("| arm   | lr     | success        | median steps |\n");
    printf("|-------|--------|----------------|--------------|\n");

    // the grid
    static const double lrs[4] = {0.01, 0.1, 1.0, 10.0};
    long* res = malloc((size_t)seeds * sizeof(long));
    AmeState* st = malloc(sizeof *st);
    if (!res || !st) {
        fprintf(stderr, "xor: out of memory\n");
        return EXIT_FAILURE;
    }
    for (int arm = 0; arm < 2; arm++) {
        for (int k = 0; k < 4; k++) {
            for (int sd = 0; sd < seeds; sd++) {
                res[sd] = arm == 0 ? run_plain((uint64_t)sd + 1, lrs[k], steps)
                                   : run_game((uint64_t)sd + 1, lrs[k], steps, &p, mask, st);
            }
            print_row(arm == 0 ? "plain" : "game", lrs[k], res, seeds);
        }
    }
    free(res);
    free(st);
    return 0;
}
