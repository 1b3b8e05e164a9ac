// test_ame.c: tests for the GAME coefficient dynamics and the counter-based
// generator (suite "ame").
//
// The generator's determinism and moments; the C1 fixed point alpha ~ 1/lambda on
// quadratics; mask 0 leaving the state untouched; C4's eta on falling, flat and
// rising losses with its rate cap; the C3 gate's firing rate, its straight-through
// gradient and its SGD step; the Metropolis verdict restoring or keeping a jump;
// mode parsing; exact base values; and the checkpoint round trip.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ame.h"

// ----------------------------------------------------------------------------
// Helpers

// A loss of `level` plus `slope` per step plus N(0, noise^2), drawn from the
// project's generator so every run sees the same sequence.
static float synthetic_loss(long t, double level, double slope, double noise)
{
    uint64_t key = rng_key(12345, (uint64_t)t, RNG_SITE_BATCH);
    return (float)(level + slope * (double)t + noise * rng_normal(key, 0));
}

// Random statistics for G groups at step t: cosines with u and d drawn from the
// generator (unit norms), ds of scale ds_scale.
static void random_stats(AmeGroupStats* gs, int G, uint64_t seed, long t, double ds_scale)
{
    uint64_t key = rng_key(seed, (uint64_t)t, RNG_SITE_BATCH);
    for (int g = 0; g < G; g++) {
        uint64_t i = 3 * (uint64_t)g;
        gs[g] = (AmeGroupStats){.g_dot_u = 0.5 * rng_normal(key, i), .g_norm2 = 1.0,
                                .u_norm2 = 1.0, .g_dot_d = 0.5 * rng_normal(key, i + 1),
                                .d_norm2 = 1.0, .ds = ds_scale * rng_normal(key, i + 2)};
    }
}

// Fresh state with the given mask and defaults; p receives the parameters.
static AmeState* new_state(AmeParams* p, int groups, unsigned mask, float lr)
{
    AmeState* st = calloc(1, sizeof *st);
    cr_assert_not_null(st);
    ame_params_default(p);
    cr_assert_eq(ame_init(st, p, groups, mask, 7, lr, 0.9f), 0);
    return st;
}

// ----------------------------------------------------------------------------
// Generator

Test(ame, rng_is_deterministic_and_order_free)
{
    uint64_t key = rng_key(42, 1000, RNG_SITE_NOISE_MLP(3));
    cr_assert_eq(key, rng_key(42, 1000, RNG_SITE_NOISE_MLP(3)), "keys differ");
    cr_assert_neq(key, rng_key(43, 1000, RNG_SITE_NOISE_MLP(3)), "seed ignored");
    cr_assert_neq(key, rng_key(42, 1001, RNG_SITE_NOISE_MLP(3)), "step ignored");
    cr_assert_neq(key, rng_key(42, 1000, RNG_SITE_NOISE_ATT(3)), "site ignored");

    // forward order, then a scattered order, must give the same element values
    enum { N = 4096 };
    static uint64_t fwd[N], scat[N];
    for (uint64_t i = 0; i < N; i++) {
        fwd[i] = rng_bits(key, i);
    }
    for (uint64_t j = 0; j < N; j++) {
        uint64_t i = (j * 1237) % N; // 1237 is prime, so this visits every index
        scat[i] = rng_bits(key, i);
    }
    cr_assert_eq(memcmp(fwd, scat, sizeof fwd), 0, "values depend on the call order");

    // two streams should not share values
    int same = 0;
    uint64_t other = rng_key(42, 1000, RNG_SITE_NOISE_MLP(4));
    for (uint64_t i = 0; i < N; i++) {
        same += rng_bits(other, i) == fwd[i];
    }
    cr_assert_eq(same, 0, "%d equal words in two streams", same);
}

Test(ame, rng_uniform_in_open_interval)
{
    // the extremes of the mapping itself
    cr_assert_float_eq(rng_uniform_from_bits(0), 1.0f / 16777216.0f, 0.0);
    cr_assert(rng_uniform_from_bits(~0ULL) < 1.0f, "largest value reaches 1");
    cr_assert_float_eq(rng_uniform_from_bits(~0ULL), 1.0f - 1.0f / 16777216.0f, 0.0);

    // a million draws: inside (0, 1), mean 1/2 and variance 1/12 within 5 standard
    // errors (1.4e-3 and 4e-4)
    uint64_t key = rng_key(1, 2, 3);
    double s = 0, s2 = 0;
    const long n = 1000000;
    for (long i = 0; i < n; i++) {
        double u = rng_uniform(key, (uint64_t)i);
        cr_assert(u > 0.0 && u < 1.0, "draw %ld is %g", i, u);
        s += u;
        s2 += u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    cr_assert_float_eq(mean, 0.5, 1.5e-3, "uniform mean %g", mean);
    cr_assert_float_eq(var, 1.0 / 12.0, 4e-4, "uniform variance %g", var);
}

Test(ame, rng_normal_moments)
{
    // a million draws. Standard errors: mean 1e-3, variance 1.3e-3 (the fourth
    // moment is 2.7), third moment 3.5e-3, fourth 9e-3; tolerances are 5 of them
    uint64_t key = rng_key(2024, 7, RNG_SITE_C1);
    const long n = 1000000;
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0, zmax = 0;
    long pos = 0, neg = 0;
    for (long i = 0; i < n; i++) {
        double z = rng_normal(key, (uint64_t)i);
        m1 += z;
        m2 += z * z;
        m3 += z * z * z;
        m4 += z * z * z * z;
        pos += z > 0;
        neg += z < 0;
        zmax = fabs(z) > zmax ? fabs(z) : zmax;
    }
    m1 /= n;
    m2 /= n;
    m3 /= n;
    m4 /= n;
    cr_assert_float_eq(m1, 0.0, 5e-3, "normal mean %g", m1);
    cr_assert_float_eq(m2, 1.0, 7e-3, "normal variance %g", m2);
    cr_assert_float_eq(m3, 0.0, 1.8e-2, "normal third moment %g", m3);
    cr_assert_float_eq(m4, 2.7, 4.5e-2, "Irwin-Hall fourth moment %g", m4);
    cr_assert(zmax <= 3.4642, "draw %g beyond the cut at 3.4641", zmax);

    // sign symmetry: counts within 5 standard errors (2500) of each other
    cr_assert(labs(pos - neg) < 5000, "%ld positive vs %ld negative", pos, neg);

    // the mapping is exactly symmetric: complementing all bits negates the value
    uint64_t bits = rng_bits(key, 99);
    cr_assert_float_eq(rng_normal_from_bits(~bits), -rng_normal_from_bits(bits), 0.0);
}

// ----------------------------------------------------------------------------
// C1

// Gradient descent x <- x - alpha g on f = lambda_g / 2 |x_g|^2 for three groups of
// four coordinates, alpha from C1 alone with tau = 0. The C1 signal is the cosine
// of successive gradients, which is +1 while alpha lambda < 1 (the iterate keeps
// its sign) and -1 beyond (it flips), so a moves toward ln(1/lambda) from either
// side and then circles it. Because the map x -> (1 - alpha lambda) x is linear,
// rescaling x each step changes no cosine; it only keeps the numbers finite.
Test(ame, alpha_settles_near_inverse_curvature)
{
    enum { G = 3, D = 4 };
    const double lambda[G] = {100.0, 1000.0, 10000.0};
    AmeParams p;
    AmeState* st = new_state(&p, G, AME_C1, 3e-4f);
    p.tau = 0.0;

    // start: the first group below its fixed point (alpha lambda = 0.03), the
    // second below (0.3), the third diverging (3)
    double x[G][D], gprev[G][D];
    for (int g = 0; g < G; g++) {
        for (int i = 0; i < D; i++) {
            x[g][i] = 1.0 + 0.5 * i - 0.3 * g;
            gprev[g][i] = 0.0;
        }
    }
    double alpha_prev[G] = {0};
    double mean_log_ratio[G] = {0};
    const long steps = 4000, tail = 1000;
    for (long t = 0; t < steps; t++) {
        AmeGroupStats gs[G];
        float al[G];
        memset(gs, 0, sizeof gs);

        // gradients and their dots with the last update direction
        double grad[G][D];
        for (int g = 0; g < G; g++) {
            for (int i = 0; i < D; i++) {
                grad[g][i] = lambda[g] * x[g][i];
                gs[g].g_dot_u += grad[g][i] * gprev[g][i];
                gs[g].g_norm2 += grad[g][i] * grad[g][i];
                gs[g].u_norm2 += gprev[g][i] * gprev[g][i];
            }
            al[g] = (float)alpha_prev[g];
        }
        AmeActions act;
        ame_step(st, &p, t, steps, 0.0f, gs, al, &act);

        // raw hypergradient as the formula gives it
        for (int g = 0; g < G; g++) {
            cr_assert_float_eq(st->dl_da[g], -(double)al[g] * gs[g].g_dot_u,
                               1e-12 * (1.0 + fabs(st->dl_da[g])), "dL/da of group %d", g);
        }

        // the descent step, then the rescaling
        for (int g = 0; g < G; g++) {
            double alpha = ame_lr(st, g, 1.0f), norm = 0.0;
            for (int i = 0; i < D; i++) {
                x[g][i] -= alpha * grad[g][i];
                norm += x[g][i] * x[g][i];
            }
            norm = sqrt(norm);
            for (int i = 0; i < D; i++) {
                x[g][i] /= norm;
                gprev[g][i] = grad[g][i];
            }
            alpha_prev[g] = alpha;
            if (t >= steps - tail) {
                mean_log_ratio[g] += log(alpha * lambda[g]) / tail;
            }
        }
    }

    // final alpha within [0.8, 1.25] / lambda, and its geometric mean over the last
    // 1000 steps within [0.95, 1.05] / lambda. Near the fixed point the cosine flips
    // sign every few steps, its EMA stays near 0 and a hardly moves (measured:
    // alpha lambda within 0.5% of 1 from step 250 on)
    for (int g = 0; g < G; g++) {
        double r = ame_lr(st, g, 1.0f) * lambda[g];
        cr_assert(r > 0.8 && r < 1.25, "group %d: alpha lambda = %g at the end", g, r);
        double gm = exp(mean_log_ratio[g]);
        cr_assert(gm > 0.95 && gm < 1.05, "group %d: mean alpha lambda = %g", g, gm);
    }
    free(st);
}

Test(ame, momentum_moves_with_its_cosine_and_stays_clamped)
{
    // a positive cosine with d raises b; a long run stops at mu_max
    AmeParams p;
    AmeState* st = new_state(&p, 1, AME_C1, 1e-3f);
    p.tau = 0.0;
    AmeGroupStats gs = {.g_dot_d = 1.0, .g_norm2 = 1.0, .d_norm2 = 1.0};
    float mu0 = ame_beta1(st, 0);
    AmeActions act;
    ame_step(st, &p, 0, 100, 1.0f, &gs, NULL, &act);
    cr_assert(ame_beta1(st, 0) > mu0, "mu did not rise with a positive cosine");
    for (long t = 1; t < 5000; t++) {
        ame_step(st, &p, t, 5000, 1.0f, &gs, NULL, &act);
    }
    cr_assert_float_eq(ame_beta1(st, 0), 0.99f, 1e-6, "mu %g", (double)ame_beta1(st, 0));

    // the raw derivative: -alpha mu (1 - mu) <g, d>
    double mu = ame_beta1(st, 0);
    float al = 0.5f;
    ame_step(st, &p, 5000, 5000, 1.0f, &gs, &al, &act);
    cr_assert_float_eq(st->dl_db[0], -0.5 * mu * (1.0 - mu), 1e-6);
    free(st);
}

Test(ame, mask_zero_changes_nothing)
{
    AmeParams p;
    AmeState* st = new_state(&p, 10, 0, 1e-3f);
    AmeState* before = malloc(sizeof *st);
    cr_assert_not_null(before);
    memcpy(before, st, sizeof *st);

    // random stats and losses for many steps
    AmeGroupStats gs[10];
    AmeActions act;
    for (long t = 0; t < 2000; t++) {
        random_stats(gs, 10, 5, t, 1.0);
        ame_step(st, &p, t, 2000, synthetic_loss(t, 2.0, 0.0, 0.1), gs, NULL, &act);
        cr_assert(!act.jumped && !act.restored && act.s_shift[0] == 0.0f);
    }
    cr_assert_eq(memcmp(before, st, sizeof *st), 0, "mask 0 changed the state");
    free(before);
    free(st);
}

// ----------------------------------------------------------------------------
// C4

// Runs C4 alone over 3000 steps of a loss with the given slope and N(0, 0.01^2)
// noise; returns the mean eta over the last 500 steps and checks the rate cap at
// every step.
static double eta_on_trend(double slope)
{
    AmeParams p;
    AmeState* st = new_state(&p, 1, AME_C4, 1e-3f);
    AmeActions act;
    double prev = ame_eta(st), tail = 0.0;
    for (long t = 0; t < 3000; t++) {
        ame_step(st, &p, t, 3000, synthetic_loss(t, 4.0, slope, 0.01), NULL, NULL, &act);
        double eta = st->eta;
        cr_assert(fabs(eta - prev) <= 0.01 + 1e-12, "eta jumped by %g at step %ld",
                  eta - prev, t);
        cr_assert(eta >= 0.5 && eta <= 2.0, "eta %g outside [0.5, 2]", eta);
        prev = eta;
        if (t >= 2500) {
            tail += eta / 500.0;
        }
    }
    free(st);
    return tail;
}

Test(ame, resonance_follows_the_loss_trend)
{
    // falling by 1e-3 per step against noise 0.01: d is about -8, eta at its floor;
    // flat: d near 0, eta near 0.5 + 1.5 S(2) = 1.82; rising: d about +8, eta at 2
    double falling = eta_on_trend(-1e-3);
    double flat = eta_on_trend(0.0);
    double rising = eta_on_trend(1e-3);
    cr_assert(falling < 0.55, "eta %g while the loss falls", falling);
    cr_assert(flat > 1.5 && flat < 1.98, "eta %g on a plateau", flat);
    cr_assert(rising > 1.98, "eta %g while the loss rises", rising);
    cr_assert(rising > flat && flat > falling, "eta not ordered: %g %g %g", falling, flat,
              rising);
}

// ----------------------------------------------------------------------------
// C3

Test(ame, gate_fires_near_target_rate)
{
    // 200k steps, flat noisy loss. Without hypergradients only the rate penalty
    // moves the gate; with random ones (dL/da of sd 0.1 per group, far above a
    // real run's) the straight-through term kicks it about and the penalty must
    // hold it. Expected 400 firings (sd 20); allowed: within a factor 1.5 of 1/500.
    for (int noisy = 0; noisy <= 1; noisy++) {
        AmeParams p;
        AmeState* st = new_state(&p, 4, AME_C2 | AME_C3 | AME_C4, 1e-3f);
        AmeGroupStats gs[4];
        memset(gs, 0, sizeof gs);
        AmeActions act;
        const long steps = 200000;
        for (long t = 0; t < steps; t++) {
            if (noisy) {
                uint64_t key = rng_key(9, (uint64_t)t, RNG_SITE_BATCH);
                for (int g = 0; g < 4; g++) {
                    gs[g].g_dot_u = 100.0 * rng_normal(key, 2 * g); // alpha 1e-3
                    gs[g].ds = 0.1 * rng_normal(key, 2 * g + 1);
                }
            }
            ame_step(st, &p, t, steps, synthetic_loss(t, 2.0, 0.0, 0.05), gs, NULL, &act);
        }
        double rate = (double)st->gate_fires / (double)st->proposals;
        cr_assert_eq(st->proposals, steps);
        cr_assert(rate > 1.0 / 750 && rate < 1.0 / 333, "gate rate %g (noisy %d), target %g",
                  rate, noisy, 1.0 / 500);
        cr_assert(st->jumps_proposed > 0 && st->jumps_proposed <= st->gate_fires);
        free(st);
    }
}

Test(ame, straight_through_gradient_formula)
{
    // dL/db = -0.3, b_soft = 0.2, tau = 2/3: -0.3 * 0.2 * 0.8 * 1.5 = -0.072
    cr_assert_float_eq(ame_gate_ste(-0.3, 0.2, 2.0 / 3.0), -0.072, 1e-12);
    cr_assert_float_eq(ame_gate_ste(1.0, 0.5, 0.5), 0.5, 1e-12);
    cr_assert_float_eq(ame_gate_ste(2.0, 1.0, 0.5), 0.0, 1e-12);
}

Test(ame, gate_sgd_uses_next_step_hypergradients)
{
    // one step draws a proposal; the next hands over known hypergradients, and the
    // gate weights must move by -lr (dL/dq + penalty) phi
    AmeParams p;
    AmeState* st = new_state(&p, 2, AME_C2 | AME_C3, 1e-3f);
    p.gate_lr = 0.5;
    AmeActions act;
    AmeGroupStats cos_half[2] = {{.g_dot_u = 0.5, .g_norm2 = 1, .u_norm2 = 1},
                                 {.g_dot_u = 0.5, .g_norm2 = 1, .u_norm2 = 1}};
    for (long t = 0; t < 30; t++) {
        ame_step(st, &p, t, 100, synthetic_loss(t, 3.0, -0.01, 0.01), cos_half, NULL, &act);
    }

    // every feature is in use, and the rate mean is off target so the penalty acts
    AmeProposal pr = st->prop;
    for (int i = 0; i < AME_GATE_FEATURES; i++) {
        cr_assert(fabs(pr.phi[i]) > 1e-3, "feature %d is %g", i, pr.phi[i]);
    }
    st->rate_mean = 0.01;
    double w0[AME_GATE_FEATURES], rate_mean = st->rate_mean;
    memcpy(w0, st->gate_w, sizeof w0);

    // dL/da_g = -alpha <g, u> = -0.5 * (1, -2) = (-0.5, 1); dL/ds = (0.25, 0)
    AmeGroupStats gs[2] = {{.g_dot_u = 1.0, .ds = 0.25}, {.g_dot_u = -2.0}};
    float al[2] = {0.5f, 0.5f};
    ame_step(st, &p, 30, 100, 2.0f, gs, al, &act);
    double k = log(2.0);
    double dl_db = k * (pr.zeta_a[0] * -0.5 + pr.zeta_s[0] * 0.25 + pr.zeta_a[1] * 1.0);
    double dl_dq = dl_db * pr.b_soft * (1.0 - pr.b_soft) / (2.0 / 3.0)
                 + 2.0 * log(rate_mean * 500.0) * pr.prob * (1.0 - pr.prob) / rate_mean;
    for (int i = 0; i < AME_GATE_FEATURES; i++) {
        double want = w0[i] - 0.5 * dl_dq * pr.phi[i];
        cr_assert_float_eq(st->gate_w[i], want, 1e-12, "gate weight %d: %g, want %g", i,
                           st->gate_w[i], want);
    }
    cr_assert(fabs(pr.zeta_a[0]) == 1.0 && fabs(pr.zeta_s[0]) == 1.0, "zeta not +-1");
    free(st);
}

// Runs C2+C3+C4 on a flat loss of 2.0 for 300 steps, forces one jump, then feeds
// `after` for K = 50 steps. Returns the state; jump receives what the jump did,
// a0/b0 the coefficients before it, verdict the actions of the judging step.
static AmeState* trial_run(float after, AmeActions* jump, double* a0, double* b0,
                           AmeActions* verdict)
{
    enum { G = 3 };
    AmeParams p;
    AmeState* st = new_state(&p, G, AME_C2 | AME_C3 | AME_C4, 1e-3f);
    AmeActions act;
    long t = 0;

    // a quiet start, with the gate shut
    st->gate_w[AME_GATE_FEATURES - 1] = -40.0;
    for (; t < 300; t++) {
        ame_step(st, &p, t, 1000, synthetic_loss(t, 2.0, 0.0, 0.001), NULL, NULL, &act);
        cr_assert(!act.jumped);
    }

    // open the gate for one step: a jump must happen
    memcpy(a0, st->a, G * sizeof(double));
    memcpy(b0, st->b, G * sizeof(double));
    st->gate_w[AME_GATE_FEATURES - 1] = 40.0;
    ame_step(st, &p, t++, 1000, 2.0f, NULL, NULL, jump);
    cr_assert(jump->jumped && st->trial.active, "no jump with the gate open");
    st->gate_w[AME_GATE_FEATURES - 1] = -40.0;
    for (int g = 0; g < G; g++) {
        cr_assert_float_eq(fabs(st->a[g] - a0[g]), log(2.0), 1e-12, "a jump of group %d", g);
        cr_assert_float_eq(fabsf(jump->s_shift[g]), (float)log(2.0), 1e-6);
    }

    // the trial
    for (int k = 0; k < 50; k++, t++) {
        ame_step(st, &p, t, 1000, after, NULL, NULL, verdict);
        int last = k == 49;
        cr_assert_eq(st->trial.active, !last, "trial state wrong at trial step %d", k + 1);
        if (!last) {
            cr_assert(!verdict->restored && !verdict->accepted && !verdict->jumped);
        }
    }
    return st;
}

Test(ame, metropolis_rejects_a_worse_jump_and_restores)
{
    double a0[3], b0[3];
    AmeActions jump, verdict;
    AmeState* st = trial_run(2.5f, &jump, a0, b0, &verdict);
    cr_assert(verdict.restored && !verdict.accepted, "a loss rise of 0.5 was accepted");
    cr_assert_eq(memcmp(st->a, a0, sizeof a0), 0, "a not restored exactly");
    cr_assert_eq(memcmp(st->b, b0, sizeof b0), 0, "b not restored exactly");
    for (int g = 0; g < 3; g++) {
        cr_assert_float_eq(verdict.s_shift[g], -jump.s_shift[g], 0.0, "s shift %d", g);
    }
    cr_assert_eq(st->jumps_proposed, 1);
    cr_assert_eq(st->jumps_accepted, 0);
    free(st);
}

Test(ame, metropolis_accepts_a_better_jump)
{
    double a0[3], b0[3];
    AmeActions jump, verdict;
    AmeState* st = trial_run(1.5f, &jump, a0, b0, &verdict);
    cr_assert(verdict.accepted && !verdict.restored, "a loss drop of 0.5 was rejected");
    for (int g = 0; g < 3; g++) {
        cr_assert_float_eq(fabs(st->a[g] - a0[g]), log(2.0), 1e-12, "jump of a undone");
        cr_assert_float_eq(verdict.s_shift[g], 0.0f, 0.0);
    }
    cr_assert_eq(st->jumps_accepted, 1);
    free(st);
}

// ----------------------------------------------------------------------------
// Modes, accessors, checkpoints

Test(ame, parse_mode)
{
    unsigned m = 99;
    char err[256];
    cr_assert_eq(ame_parse_mode("full", &m, err, sizeof err), 0);
    cr_assert_eq(m, AME_FULL);
    cr_assert_eq(ame_parse_mode("off", &m, err, sizeof err), 0);
    cr_assert_eq(m, 0u);
    cr_assert_eq(ame_parse_mode("c1,c2,c4", &m, err, sizeof err), 0);
    cr_assert_eq(m, AME_C1 | AME_C2 | AME_C4);
    cr_assert_eq(ame_parse_mode(" C3 , c5", &m, err, sizeof err), 0);
    cr_assert_eq(m, AME_C3 | AME_C5);
    cr_assert_eq(ame_parse_mode("full,-c3", &m, err, sizeof err), 0);
    cr_assert_eq(m, AME_FULL & ~AME_C3);

    // unknown and empty words fail, leave the mask, and list the valid words
    m = 7;
    cr_assert_eq(ame_parse_mode("c1,c6", &m, err, sizeof err), -1);
    cr_assert_eq(m, 7u);
    cr_assert(strstr(err, "'c6'") && strstr(err, "full, off, c1"), "message: %s", err);
    cr_assert_eq(ame_parse_mode("c1,", &m, err, sizeof err), -1);
    cr_assert_eq(ame_parse_mode("", &m, NULL, 0), -1);

    char buf[32];
    ame_mode_string(AME_C1 | AME_C4, buf, sizeof buf);
    cr_assert_str_eq(buf, "c1,c4");
    ame_mode_string(AME_FULL, buf, sizeof buf);
    cr_assert_str_eq(buf, "full");
    ame_mode_string(0, buf, sizeof buf);
    cr_assert_str_eq(buf, "off");
}

Test(ame, base_values_are_exact)
{
    // with a and b untouched, the C1-off arm must see exactly its own lr and beta1
    const float lrs[] = {1e-4f, 3e-4f, 1e-3f, 3e-3f, 1e-2f, 6e-4f, 0.1f, 10.0f};
    const float betas[] = {0.9f, 0.95f, 0.5f, 0.99f, 0.8f, 0.999f};
    AmeParams p;
    ame_params_default(&p);
    AmeState* st = malloc(sizeof *st);
    cr_assert_not_null(st);
    for (size_t i = 0; i < sizeof lrs / sizeof lrs[0]; i++) {
        for (size_t j = 0; j < sizeof betas / sizeof betas[0]; j++) {
            cr_assert_eq(ame_init(st, &p, 3, AME_C2, 1, lrs[i], betas[j]), 0);
            cr_assert(ame_lr(st, 2, 1.0f) == lrs[i], "lr %g came back as %g",
                      (double)lrs[i], (double)ame_lr(st, 2, 1.0f));
            cr_assert(ame_lr(st, 0, 0.37f) == lrs[i] * 0.37f, "lr * shape differs");
            cr_assert(ame_beta1(st, 1) == betas[j], "beta1 %g came back as %g",
                      (double)betas[j], (double)ame_beta1(st, 1));
        }
    }

    // bad arguments are refused
    cr_assert_eq(ame_init(st, &p, 0, 0, 1, 1e-3f, 0.9f), -1);
    cr_assert_eq(ame_init(st, &p, MAX_GROUPS + 1, 0, 1, 1e-3f, 0.9f), -1);
    cr_assert_eq(ame_init(st, &p, 2, 0, 1, 0.0f, 0.9f), -1);
    cr_assert_eq(ame_init(st, &p, 2, 0, 1, 1e-3f, 1.0f), -1);
    free(st);
}

Test(ame, entropy_gradient_clamp_and_summary)
{
    AmeParams p;
    ame_params_default(&p);
    p.lambda_h = 0.5;
    cr_assert_float_eq(ame_entropy_grad(&p, 1000.0, 4000.0), -0.125f, 1e-7);
    cr_assert_float_eq(ame_clamp_s(&p, 3.0f), 0.0f, 0.0);
    cr_assert_float_eq(ame_clamp_s(&p, -20.0f), (float)log(1e-3), 1e-6);
    cr_assert_float_eq(ame_clamp_s(&p, -1.0f), -1.0f, 0.0);
    cr_assert_float_eq(ame_initial_s(&p), (float)log(0.1), 1e-7);

    AmeState* st = new_state(&p, 2, AME_FULL, 1e-3f);
    st->a[1] = log(4e-3);
    char buf[160];
    ame_summary(st, 0.5f, 0.1f, buf, sizeof buf);
    cr_assert_str_eq(buf, "alpha [0.0005, 0.002] mu 0.900 sigma 0.1 eta 1.000 d 0.00 "
                          "jumps 0/0", "summary: %s", buf);
    ame_summary(st, 1.0f, -1.0f, buf, sizeof buf);
    cr_assert(strstr(buf, "sigma") == NULL, "sigma printed without a value: %s", buf);
    free(st);
}

Test(ame, serialisation_round_trip_is_exact)
{
    // a state with every part in use: run the full mask for a while, with a trial
    // open at the end
    AmeParams p;
    AmeState* st = new_state(&p, 10, AME_FULL, 1e-3f);
    AmeGroupStats gs[10];
    AmeActions act;
    long t = 0;
    for (; t < 3000; t++) {
        random_stats(gs, 10, 3, t, 0.01);
        if (t == 2990) {
            st->gate_w[AME_GATE_FEATURES - 1] = 40.0;
        }
        ame_step(st, &p, t, 5000, synthetic_loss(t, 3.0, -1e-4, 0.05), gs, NULL, &act);
    }
    cr_assert(st->trial.active && st->prop.valid, "the state has no open trial");

    // write, read, write again
    size_t n = ame_serialize(st, NULL);
    unsigned char* buf = malloc(n);
    unsigned char* buf2 = malloc(n);
    AmeState* back = calloc(1, sizeof *back);
    cr_assert(buf && buf2 && back);
    cr_assert_eq(ame_serialize(st, buf), n);
    char err[256];
    cr_assert_eq(ame_deserialize(back, buf, n, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ame_serialize(back, buf2), n);
    cr_assert_eq(memcmp(buf, buf2, n), 0, "reserialised bytes differ");
    cr_assert_eq(memcmp(st, back, sizeof *st), 0, "restored state differs");

    // the header is explicit little-endian: "AME1", version 1, 10 groups
    cr_assert(buf[0] == 'A' && buf[1] == 'M' && buf[2] == 'E' && buf[3] == '1');
    cr_assert(buf[4] == 1 && buf[5] == 0 && buf[8] == 10 && buf[9] == 0);

    // corrupt inputs are refused and leave the target alone
    cr_assert_eq(ame_deserialize(back, buf, n - 1, err, sizeof err), -1);
    cr_assert(strstr(err, "truncated"), "message: %s", err);
    buf[4] = 2;
    cr_assert_eq(ame_deserialize(back, buf, n, err, sizeof err), -1);
    cr_assert(strstr(err, "version"), "message: %s", err);
    cr_assert_eq(memcmp(st, back, sizeof *st), 0, "a failed read changed the state");
    free(buf);
    free(buf2);
    free(back);
    free(st);
}
