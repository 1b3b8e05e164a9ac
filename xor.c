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
// the median number of steps to success over the seeds, as a markdown table; for
// the game arm also the mean over runs of the final sigma and of the jumps made
// and kept (runs stop at success, so short runs make few jumps).
//
// What the table shows, and why. About half of the seeds end in the same trap with
// either arm: typically the hidden layer maps two inputs of different labels to
// one saturated code, both get p = 1/2 and the loss sits at ln(2)/2 = 0.347 with a
// vanishing gradient; neither a rate change nor noise on h gets out, since the
// hidden weights' gradient carries the factor 1 - h^2. C1 rescues rates that are
// too small (successive gradients agree, so the rate grows) and shortens the runs
// at lr 0.1 and 1. It does not rescue lr 10: C1 does lower it (to about 5 within 80
// steps), but a moves at most beta_a = 0.02 per step, and the first steps near 10
// have already saturated the network; starting clipped (--amax 3) does help.
//
// Usage: ./xor [--seeds N] [--steps N] [--mode LIST] [--amax X]
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

        // backward: dL/do = (p - y) / 4, then through z = h (1 + eta sigma eps)
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

// What a GAME run ended with (at success or at the end of the budget).
typedef struct {
    double sigma;  // hidden-noise scale exp(s), -1 without C2
    long jumps;    // jumps made
    long accepted; // jumps kept by the Metropolis verdict
} GameInfo;

static long run_game(uint64_t seed, double lr, long steps, const AmeParams* p, unsigned mask,
                     AmeState* st, GameInfo* info)
{
    long result = -1;
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
            result = t + 1;
            break;
        }
    }
    info->sigma = noise ? exp(s) : -1.0;
    info->jumps = st->jumps_proposed;
    info->accepted = st->jumps_accepted;
    return result;
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
    fprintf(stderr, "usage: ./xor [--seeds N] [--steps N] [--mode LIST] [--amax X]\n"
                    "  --seeds N    seeds per initial learning rate (default 200)\n"
                    "  --steps N    step budget per run (default 5000)\n"
                    "  --mode LIST  GAME components of the game arm (default "
                    "c1,c2,c3,c4)\n"
                    "  --amax X     largest learning rate C1 and C3 allow (default 10)\n");
}

// Prints one table row from the steps of `n` runs (-1 for a failure); info is
// NULL for the plain arm.
static void print_row(const char* arm, double lr, long* res, int n, const GameInfo* info)
{
    char extra[64] = "- | -";
    if (info) {
        double sig = 0, jumps = 0, acc = 0;
        for (int i = 0; i < n; i++) {
            sig += info[i].sigma / n;
            jumps += (double)info[i].jumps / n;
            acc += (double)info[i].accepted / n;
        }
        char sig_text[16] = "-";
        if (sig >= 0.0) {
            snprintf(sig_text, sizeof sig_text, "%.3f", sig);
        }
        snprintf(extra, sizeof extra, "%s | %.1f / %.1f", sig_text, jumps, acc);
    }
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
    printf("| %-5s | %-5g | %5.1f%% (%3d/%d) | %6s | %s |\n", arm, lr, 100.0 * ok / n, ok, n,
           med, extra);
}

int main(int argc, char** argv)
{
    int seeds = 200;
    long steps = 5000;
    const char* mode = "c1,c2,c3,c4";
    double amax = 10.0;

    // flags
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            seeds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            mode = argv[++i];
        } else if (!strcmp(argv[i], "--amax") && i + 1 < argc) {
            amax = atof(argv[++i]);
        } else {
            usage();
            return EXIT_FAILURE;
        }
    }
    if (seeds < 1 || steps < 1 || !(amax > 1e-3)) {
        fprintf(stderr, "xor: --seeds and --steps must be at least 1, --amax above 1e-3\n");
        return EXIT_FAILURE;
    }
    unsigned mask;
    char err[256];
    if (ame_parse_mode(mode, &mask, err, sizeof err) != 0) {
        fprintf(stderr, "xor: %s\n", err);
        return EXIT_FAILURE;
    }

    // GAME constants for this problem, chosen on seeds 1001-1200 (the table uses
    // seeds 1 .. N); the printed notes say why
    AmeParams p;
    ame_params_default(&p);
    p.a_min = log(1e-3);
    p.a_max = log(amax);
    p.lambda_h = 1e-3;

    printf("XOR 2-2-1, full batch, %d seeds, %ld steps, success: clean loss < %g\n",
           seeds, steps, SUCCESS_LOSS);
    printf("game arm: %s. AmeParams that differ from the defaults:\n", mode);
    printf("  a in [ln 1e-3, ln %g]: the default [ln 1e-5, ln 3e-2] suits a transformer;\n"
           "    XOR's rates run from 0.01 to 10, and with an upper end of 10 no\n"
           "    starting rate is clipped, so any change of rate is C1's or C3's doing\n",
           amax);
    printf("  lambda_h = 1e-3 (default 1): with 8 perturbed activations over 4 points the\n"
           "    bonus gradient is -2 lambda_h per step; at 1 it pins sigma to its upper\n"
           "    clamp and no run succeeds, at 0.1 it cost a third of the successes at\n"
           "    lr 0.01 and 0.1\n\n");
    printf("| arm   | lr    | success          | median | sigma | jumps / kept |\n"
           "|-------|-------|------------------|--------|-------|--------------|\n");

    // the grid
    static const double lrs[4] = {0.01, 0.1, 1.0, 10.0};
    long* res = malloc((size_t)seeds * sizeof(long));
    GameInfo* info = malloc((size_t)seeds * sizeof(GameInfo));
    AmeState* st = malloc(sizeof *st);
    if (!res || !info || !st) {
        fprintf(stderr, "xor: out of memory for %d seeds; pass fewer\n", seeds);
        return EXIT_FAILURE;
    }
    for (int arm = 0; arm < 2; arm++) {
        for (int k = 0; k < 4; k++) {
            for (int sd = 0; sd < seeds; sd++) {
                uint64_t seed = (uint64_t)sd + 1;
                res[sd] = arm == 0 ? run_plain(seed, lrs[k], steps)
                                   : run_game(seed, lrs[k], steps, &p, mask, st, &info[sd]);
            }
            print_row(arm == 0 ? "plain" : "game", lrs[k], res, seeds, arm ? info : NULL);
        }
    }
    free(info);
    free(res);
    free(st);
    return 0;
}
