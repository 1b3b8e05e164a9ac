// ame.c: the coefficient dynamics of GAME (C1 Markov step, C3 gated jumps with a
// Metropolis verdict, C4 resonant strength), independent of any model.
//
// Everything here works on a handful of numbers per parameter group; the cost per
// step is O(G). The trainer gathers the dot products, calls ame_step, applies the
// returned shifts of the noise scales and then reads the learning rates and
// momenta with ame_lr and ame_beta1.
#include "ame.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

// ----------------------------------------------------------------------------
// Small helpers

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double logit(double p) { return log(p / (1.0 - p)); }

static double clampd(double x, double lo, double hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

// Cosine of two vectors from their dot product and squared norms; 0 when either
// vector is zero (or anything is not finite), since then the step carries no
// information about the coefficient and its EMA should decay.
static double cosine(double dot, double n1, double n2)
{
    double den = sqrt(n1 * n2);
    if (!(den > 0.0) || !isfinite(den) || !isfinite(dot)) {
        return 0.0;
    }
    return clampd(dot / den, -1.0, 1.0);
}

// Rademacher sign from one random bit.
static double rademacher(uint64_t key, uint64_t index)
{
    return (rng_bits(key, index) >> 63) ? 1.0 : -1.0;
}

// ----------------------------------------------------------------------------
// Parameters and modes

void ame_params_default(AmeParams* p)
{
    memset(p, 0, sizeof *p);
    p->beta_a = 0.02;
    p->beta_b = 0.01;
    p->tau = 0.002;
    p->cos_ema = 0.9;
    p->a_min = log(1e-5);
    p->a_max = log(3e-2);
    p->mu_min = 0.5;
    p->mu_max = 0.99;

    p->s_min = log(1e-3);
    p->s_max = 0.0;
    p->sigma0 = 0.1;
    p->lambda_h = 1.0;

    p->loss_fast = 0.05;
    p->loss_slow = 0.005;
    p->loss_var = 0.05;
    p->loss_eps = 1e-8;
    p->eta_min = 0.5;
    p->eta_max = 2.0;
    p->kappa_r = 2.0;
    p->d0 = -1.0;
    p->eta_rate = 0.01;
    p->eta_init = 1.0;

    p->gate_tau = 2.0 / 3.0;
    p->jump_kappa = log(2.0);
    p->rate_target = 1.0 / 500.0;
    p->rate_weight = 1.0;
    p->rate_ema = 0.01;
    p->gate_lr = 0.01;
    p->trial_steps = 50;
    p->temperature = 0.01;
}

static const char* const component_words[5] = {"c1", "c2", "c3", "c4", "c5"};

// Case-insensitive comparison of the word w[0 .. n-1] with the C string s.
static int word_is(const char* w, size_t n, const char* s)
{
    if (strlen(s) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (tolower((unsigned char)w[i]) != s[i]) {
            return 0;
        }
    }
    return 1;
}

int ame_parse_mode(const char* mode, unsigned* mask, char* err, size_t errlen)
{
    static const char* valid = "valid words: full, off, c1, c2, c3, c4, c5, "
                               "joined by commas, '-' before a component removes it";
    unsigned m = 0;
    const char* w = mode ? mode : "";

    // walk the comma-separated words, trimming blanks around each
    for (;;) {
        const char* end = strchr(w, ',');
        size_t n = end ? (size_t)(end - w) : strlen(w);
        while (n > 0 && isspace((unsigned char)*w)) {
            w++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)w[n - 1])) {
            n--;
        }

        // a leading '-' removes the component instead of adding it
        int remove = 0;
        if (n > 0 && *w == '-') {
            remove = 1;
            w++;
            n--;
        }
        unsigned bits = 0;
        if (word_is(w, n, "full")) {
            bits = AME_FULL;
        } else if (word_is(w, n, "off")) {
            bits = 0;
        } else {
            for (int c = 0; c < 5; c++) {
                if (word_is(w, n, component_words[c])) {
                    bits = 1u << c;
                }
            }
            if (bits == 0) {
                if (err && errlen > 0) {
                    snprintf(err, errlen, "unknown GAME mode word '%.*s' in \"%s\"; %s",
                             (int)n, w, mode ? mode : "", valid);
                }
                return -1;
            }
        }
        m = remove ? (m & ~bits) : (m | bits);
        if (!end) {
            break;
        }
        w = end + 1;
    }
    *mask = m;
    return 0;
}

void ame_mode_string(unsigned mask, char* buf, size_t len)
{
    if (len == 0) {
        return;
    }
    mask &= AME_FULL;
    if (mask == 0) {
        snprintf(buf, len, "off");
        return;
    }
    if (mask == AME_FULL) {
        snprintf(buf, len, "full");
        return;
    }
    buf[0] = '\0';
    size_t used = 0;
    for (int c = 0; c < 5; c++) {
        if ((mask & (1u << c)) && used < len) {
            int k = snprintf(buf + used, len - used, "%s%s", used ? "," : "",
                             component_words[c]);
            used += k > 0 ? (size_t)k : 0;
        }
    }
}

// ----------------------------------------------------------------------------
// Initialisation

int ame_init(AmeState* st, const AmeParams* p, int groups, unsigned mask, uint64_t seed,
             float base_lr, float base_beta1)
{
    if (groups < 1 || groups > MAX_GROUPS) {
        fprintf(stderr, "ame_init: %d groups, but 1 to %d are supported; "
                        "use fewer layers\n", groups, MAX_GROUPS);
        return -1;
    }
    if (!(base_lr > 0.0f) || !isfinite(base_lr)) {
        fprintf(stderr, "ame_init: learning rate %g is not positive; pass lr > 0\n",
                (double)base_lr);
        return -1;
    }
    if (!(base_beta1 > 0.0f && base_beta1 < 1.0f)) {
        fprintf(stderr, "ame_init: beta1 %g is outside (0, 1); pass 0 < beta1 < 1\n",
                (double)base_beta1);
        return -1;
    }

    // zero everything, padding included, so states compare with memcmp
    memset(st, 0, sizeof *st);
    st->groups = groups;
    st->mask = mask & AME_FULL;
    st->seed = seed;

    // a and b in double: exp(log(x)) and S(logit(x)) then round back to the float
    // x exactly, which keeps the C1-off arm bit-identical to plain training
    for (int g = 0; g < groups; g++) {
        st->a[g] = log((double)base_lr);
        st->b[g] = logit((double)base_beta1);
    }
    st->eta = p->eta_init;

    // the gate starts at the target rate: only the bias is non-zero
    st->gate_w[AME_GATE_FEATURES - 1] = logit(p->rate_target);
    st->rate_mean = p->rate_target;
    return 0;
}

// ----------------------------------------------------------------------------
// C4: loss statistics and the strength eta

// Updates L^f, L^s, V and the plateau score d from this step's loss. V tracks the
// squared innovation L - L^f taken before L^f moves: the part of the new loss the
// fast average did not expect.
static void loss_stats_update(AmeState* st, const AmeParams* p, float loss)
{
    if (!isfinite(loss)) {
        return;
    }
    double l = loss;

    // the first loss seeds both averages, so neither starts biased toward 0
    if (!st->loss_seen) {
        st->loss_seen = 1;
        st->loss_fast = l;
        st->loss_slow = l;
        st->loss_var = 0.0;
        st->plateau = 0.0;
        return;
    }

    // EMAs and dispersion
    double e = l - st->loss_fast;
    st->loss_var += p->loss_var * (e * e - st->loss_var);
    st->loss_fast += p->loss_fast * e;
    st->loss_slow += p->loss_slow * (l - st->loss_slow);

    // plateau score: negative while falling, about 0 when flat, positive rising
    st->plateau = (st->loss_fast - st->loss_slow) / (sqrt(st->loss_var) + p->loss_eps);
}

// Moves eta toward eta_min + (eta_max - eta_min) S(kappa_r (d - d0)) by at most
// eta_rate. The shape (eta_min, eta_max, kappa_r, d0) is fixed, not learned: near
// a minimum the expected loss under noise exceeds the clean loss by about
// eta^2/2 xi'H xi > 0, so a greedy one-step gradient would always push eta down
// to eta_min and switch exploration off.
static void eta_update(AmeState* st, const AmeParams* p)
{
    double target = p->eta_min + (p->eta_max - p->eta_min)
                                     * sigmoid(p->kappa_r * (st->plateau - p->d0));
    double delta = clampd(target - st->eta, -p->eta_rate, p->eta_rate);
    st->eta = clampd(st->eta + delta, p->eta_min, p->eta_max);
}

// ----------------------------------------------------------------------------
// C1: hypergradients and the Markov step

// Raw one-step hypergradients and the cosine EMAs of every group.
// With theta_t = theta_{t-1} - exp(a) u_{t-1}: dL_t/da = -alpha <g_t, u_{t-1}>.
// With m_{t-1} = mu m_{t-2} + (1 - mu) g_{t-1}: dL_t/db = -alpha mu (1 - mu)
// <g_t, d_{t-1}>; d is built by the trainer, which ignores how Adam's bias
// correction depends on mu (a small term that fades as training goes on).
static void hypergrad_update(AmeState* st, const AmeParams* p, const AmeGroupStats* gs,
                             const float* alpha)
{
    static const AmeGroupStats zero;
    for (int g = 0; g < st->groups; g++) {
        const AmeGroupStats* s = gs ? &gs[g] : &zero;
        double al = alpha ? (double)alpha[g] : exp(st->a[g]);
        double mu = sigmoid(st->b[g]);

        // raw derivatives, kept for the gate and for finite-difference checks
        st->dl_da[g] = -al * s->g_dot_u;
        st->dl_db[g] = -al * mu * (1.0 - mu) * s->g_dot_d;
        st->dl_ds[g] = isfinite(s->ds) ? s->ds : 0.0;
        if (!isfinite(st->dl_da[g])) {
            st->dl_da[g] = 0.0;
        }
        if (!isfinite(st->dl_db[g])) {
            st->dl_db[g] = 0.0;
        }

        // scale-free form: the cosine, smoothed; the hypergradient is -EMA
        double ca = cosine(s->g_dot_u, s->g_norm2, s->u_norm2);
        double cb = cosine(s->g_dot_d, s->g_norm2, s->d_norm2);
        st->cos_a[g] = p->cos_ema * st->cos_a[g] + (1.0 - p->cos_ema) * ca;
        st->cos_b[g] = p->cos_ema * st->cos_b[g] + (1.0 - p->cos_ema) * cb;
    }
}

// c <- clamp(c - beta * h + tau * eta * xi) with h = -EMA(cos). The noise of a_g
// and b_g is element 2g and 2g + 1 of the step's C1 stream.
static void markov_step(AmeState* st, const AmeParams* p, long step)
{
    uint64_t key = rng_key(st->seed, (uint64_t)step, RNG_SITE_C1);
    double b_min = logit(p->mu_min), b_max = logit(p->mu_max);
    double noise = p->tau * st->eta;
    for (int g = 0; g < st->groups; g++) {
        double xa = rng_normal(key, 2 * (uint64_t)g);
        double xb = rng_normal(key, 2 * (uint64_t)g + 1);
        st->a[g] = clampd(st->a[g] + p->beta_a * st->cos_a[g] + noise * xa,
                          p->a_min, p->a_max);
        st->b[g] = clampd(st->b[g] + p->beta_b * st->cos_b[g] + noise * xb, b_min, b_max);
    }
}

// ----------------------------------------------------------------------------
// C3: gate, trial and jumps

double ame_gate_ste(double dl_db, double b_soft, double gate_tau)
{
    return dl_db * b_soft * (1.0 - b_soft) / gate_tau;
}

// One SGD step of the gate weights for last step's proposal. The first-order
// effect of its jump on this step's loss is dL/db = sum_g kappa (zeta^a_g dL/da_g
// + zeta^s_g dL/ds_g), known from this step's gradients even when the gate stayed
// shut, so every step trains the gate.
//
// The rate penalty is rho (ln m - ln r*)^2 with m the running mean of S(q), not
// rho (m - r*)^2: both vanish at the target, but the squared difference has a
// gradient proportional to S'(q), which dies as the gate closes (measured: with
// large random hypergradients the gate drifted to q < -10 and never fired again).
// In logs the pull is 2 rho ln(m / r*) (1 - S(q)) S(q) / m, about 2 rho ln(m / r*),
// whatever the rate. m is differentiated through the current S(q) only.
static void gate_learn(AmeState* st, const AmeParams* p)
{
    const AmeProposal* pr = &st->prop;
    if (!pr->valid) {
        return;
    }
    double dl_db = 0.0;
    for (int g = 0; g < st->groups; g++) {
        dl_db += p->jump_kappa
               * (pr->zeta_a[g] * st->dl_da[g] + pr->zeta_s[g] * st->dl_ds[g]);
    }
    double dl_dq = ame_gate_ste(dl_db, pr->b_soft, p->gate_tau);
    double m = st->rate_mean > 1e-12 ? st->rate_mean : 1e-12;
    dl_dq += 2.0 * p->rate_weight * log(m / p->rate_target) * pr->prob * (1.0 - pr->prob)
           / m;
    if (!isfinite(dl_dq)) {
        return;
    }
    for (int k = 0; k < AME_GATE_FEATURES; k++) {
        st->gate_w[k] -= p->gate_lr * dl_dq * pr->phi[k];
    }
}

// Loss slope per step implied by L^f - L^s: EMAs of rate r lag a linear trend by
// slope * (1 - r) / r, so their difference is slope times the difference of lags.
static double loss_trend(const AmeState* st, const AmeParams* p)
{
    double lag_f = (1.0 - p->loss_fast) / p->loss_fast;
    double lag_s = (1.0 - p->loss_slow) / p->loss_slow;
    double lag = lag_s - lag_f;
    return lag > 0.0 ? (st->loss_fast - st->loss_slow) / lag : 0.0;
}

// Verdict on a jump after K steps: Delta is the change of L^f since the jump minus
// K times the slope before it, accepted with probability min(1, exp(-Delta / T)).
// A rejection puts a and b back to their pre-jump values (so the C1 drift during
// the trial is dropped too) and asks the caller to take the s shift back; the
// weights keep whatever they learned during the trial.
static void trial_judge(AmeState* st, const AmeParams* p, long step, AmeActions* out)
{
    AmeTrial* tr = &st->trial;
    if (!tr->active || step - tr->start_step < p->trial_steps) {
        return;
    }
    double delta = (st->loss_fast - tr->fast_at_jump)
                 - (double)(step - tr->start_step) * tr->trend;
    int accept = 1;
    if (delta > 0.0) {
        double u = rng_uniform(rng_key(st->seed, (uint64_t)step, RNG_SITE_ACCEPT), 0);
        accept = u < exp(-delta / p->temperature);
    }
    tr->active = 0;
    if (accept) {
        st->jumps_accepted++;
        out->accepted = 1;
        return;
    }
    for (int g = 0; g < st->groups; g++) {
        st->a[g] = tr->a_saved[g];
        st->b[g] = tr->b_saved[g];
        out->s_shift[g] -= (float)tr->s_shift[g];
    }
    out->restored = 1;
}

// Draws this step's proposal and, when the hard gate fires and no jump is on
// trial, makes the jump: a += kappa zeta^a (clamped), s += kappa zeta^s (by the
// caller), b unchanged since its kappa is 0.
static void gate_propose(AmeState* st, const AmeParams* p, long step, long total_steps,
                         AmeActions* out)
{
    AmeProposal* pr = &st->prop;
    int G = st->groups;

    // features: plateau score, mean cosine EMA, mean a mapped to [0, 1] over its
    // clamp range (so all features are of order one and one SGD rate suits them),
    // progress through training, and the constant 1 for the bias
    double mean_cos = 0.0, mean_a = 0.0;
    for (int g = 0; g < G; g++) {
        mean_cos += st->cos_a[g];
        mean_a += st->a[g];
    }
    mean_cos /= G;
    mean_a /= G;
    pr->phi[0] = st->plateau;
    pr->phi[1] = mean_cos;
    pr->phi[2] = p->a_max > p->a_min ? (mean_a - p->a_min) / (p->a_max - p->a_min) : 0.0;
    pr->phi[3] = total_steps > 0 ? (double)step / (double)total_steps : 0.0;
    pr->phi[4] = 1.0;

    // gate logit and its running firing probability
    pr->q = 0.0;
    for (int k = 0; k < AME_GATE_FEATURES; k++) {
        pr->q += st->gate_w[k] * pr->phi[k];
    }
    pr->prob = sigmoid(pr->q);
    st->rate_mean += p->rate_ema * (pr->prob - st->rate_mean);

    // binary-concrete sample; the hard gate fires with probability S(q)
    double u = rng_uniform(rng_key(st->seed, (uint64_t)step, RNG_SITE_GATE), 0);
    pr->b_soft = sigmoid((pr->q + log(u) - log(1.0 - u)) / p->gate_tau);
    pr->fired = pr->b_soft > 0.5;
    pr->valid = 1;
    st->proposals++;
    st->gate_fires += pr->fired;

    // directions: element 2g for a, 2g + 1 for s; s only moves when a noise
    // component exists to give it meaning
    uint64_t key = rng_key(st->seed, (uint64_t)step, RNG_SITE_JUMP);
    int noisy = (st->mask & (AME_C2 | AME_C5)) != 0;
    for (int g = 0; g < G; g++) {
        pr->zeta_a[g] = rademacher(key, 2 * (uint64_t)g);
        pr->zeta_s[g] = noisy ? rademacher(key, 2 * (uint64_t)g + 1) : 0.0;
    }

    // the jump, remembered for its trial
    if (!pr->fired || st->trial.active) {
        return;
    }
    AmeTrial* tr = &st->trial;
    tr->active = 1;
    tr->start_step = step;
    tr->fast_at_jump = st->loss_fast;
    tr->trend = loss_trend(st, p);
    for (int g = 0; g < G; g++) {
        tr->a_saved[g] = st->a[g];
        tr->b_saved[g] = st->b[g];
        st->a[g] = clampd(st->a[g] + p->jump_kappa * pr->zeta_a[g], p->a_min, p->a_max);
        tr->s_shift[g] = p->jump_kappa * pr->zeta_s[g];
        out->s_shift[g] += (float)tr->s_shift[g];
    }
    st->jumps_proposed++;
    out->jumped = 1;
}

// ----------------------------------------------------------------------------
// One step

void ame_step(AmeState* st, const AmeParams* p, long step, long total_steps, float loss,
              const AmeGroupStats* gs, const float* alpha, AmeActions* out)
{
    memset(out, 0, sizeof *out);
    unsigned m = st->mask;

    // C4 statistics (C3 also needs them for its features and verdicts), then eta
    if (m & (AME_C3 | AME_C4)) {
        loss_stats_update(st, p, loss);
    }
    if (m & AME_C4) {
        eta_update(st, p);
    }

    // hypergradients feed both the Markov step and the gate
    if (m & (AME_C1 | AME_C3)) {
        hypergrad_update(st, p, gs, alpha);
    }
    if (m & AME_C1) {
        markov_step(st, p, step);
    }

    // C3: learn from the last proposal, judge a finished trial, propose anew
    if (m & AME_C3) {
        gate_learn(st, p);
        trial_judge(st, p, step, out);
        gate_propose(st, p, step, total_steps, out);
    }
}

// ----------------------------------------------------------------------------
// Reading the coefficients

float ame_lr(const AmeState* st, int g, float shape)
{
    return (float)exp(st->a[g]) * shape;
}

float ame_beta1(const AmeState* st, int g)
{
    return (float)sigmoid(st->b[g]);
}

float ame_eta(const AmeState* st) { return (float)st->eta; }

float ame_initial_s(const AmeParams* p) { return (float)log(p->sigma0); }

float ame_entropy_grad(const AmeParams* p, double n_site, double n_train)
{
    return n_train > 0.0 ? (float)(-p->lambda_h * n_site / n_train) : 0.0f;
}

float ame_clamp_s(const AmeParams* p, float s)
{
    return (float)clampd(s, p->s_min, p->s_max);
}

void ame_summary(const AmeState* st, float shape, float mean_sigma, char* buf, size_t len)
{
    if (len == 0) {
        return;
    }

    // range of alpha and mean of mu over the groups
    double lo = INFINITY, hi = -INFINITY, mu = 0.0;
    for (int g = 0; g < st->groups; g++) {
        double al = exp(st->a[g]) * shape;
        lo = al < lo ? al : lo;
        hi = al > hi ? al : hi;
        mu += sigmoid(st->b[g]);
    }
    mu /= st->groups > 0 ? st->groups : 1;

    char sig[32] = "";
    if (mean_sigma >= 0.0f) {
        snprintf(sig, sizeof sig, " sigma %.3g", (double)mean_sigma);
    }
    snprintf(buf, len, "alpha [%.3g, %.3g] mu %.3f%s eta %.3f d %.2f jumps %ld/%ld", lo,
             hi, mu, sig, st->eta, st->plateau, st->jumps_proposed, st->jumps_accepted);
}

// ----------------------------------------------------------------------------
// Checkpoints
//
// Layout, every word little-endian: u32 magic "AME1", u32 version, u32 G, u32 mask,
// u64 seed, then the fields in the order of AmeState with doubles as their IEEE
// bits, ints as i32, longs as i64, and per-group arrays G entries long.

#define AME_MAGIC 0x31454D41u // "AME1" read as a little-endian word
#define AME_VERSION 1u

typedef struct {
    unsigned char* p; // NULL: only count
    size_t n;         // bytes written (or counted) so far
} Writer;

static void put_u64(Writer* w, uint64_t x, int bytes)
{
    if (w->p) {
        for (int i = 0; i < bytes; i++) {
            w->p[w->n + i] = (unsigned char)(x >> (8 * i));
        }
    }
    w->n += (size_t)bytes;
}

static void put_f64(Writer* w, double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    put_u64(w, u, 8);
}

static void put_arr(Writer* w, const double* x, int n)
{
    for (int i = 0; i < n; i++) {
        put_f64(w, x[i]);
    }
}

typedef struct {
    const unsigned char* p;
    size_t n;   // bytes available
    size_t pos; // next byte to read
} Reader;

// Reads `bytes` bytes as an unsigned little-endian number; the caller has checked
// the total size, so reads never run past the end.
static uint64_t get_u64(Reader* r, int bytes)
{
    uint64_t x = 0;
    for (int i = 0; i < bytes; i++) {
        x |= (uint64_t)r->p[r->pos + i] << (8 * i);
    }
    r->pos += (size_t)bytes;
    return x;
}

static double get_f64(Reader* r)
{
    uint64_t u = get_u64(r, 8);
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void get_arr(Reader* r, double* x, int n)
{
    for (int i = 0; i < n; i++) {
        x[i] = get_f64(r);
    }
}

static int32_t get_i32(Reader* r) { return (int32_t)(uint32_t)get_u64(r, 4); }

static int64_t get_i64(Reader* r) { return (int64_t)get_u64(r, 8); }

// Every field, in one order for both directions. `w` is used when writing, `r`
// when reading into st (exactly one of them is non-NULL).
static void ame_fields(Writer* w, Reader* r, AmeState* st)
{
    int G = st->groups;
#define F64(x) (w ? put_f64(w, (x)) : (void)((x) = get_f64(r)))
#define ARR(x) (w ? put_arr(w, (x), G) : get_arr(r, (x), G))
#define I32(x) (w ? put_u64(w, (uint32_t)(int32_t)(x), 4) : (void)((x) = get_i32(r)))
#define I64(x) (w ? put_u64(w, (uint64_t)(int64_t)(x), 8) : (void)((x) = (long)get_i64(r)))

    // C1
    ARR(st->a);
    ARR(st->b);
    ARR(st->cos_a);
    ARR(st->cos_b);
    ARR(st->dl_da);
    ARR(st->dl_db);
    ARR(st->dl_ds);

    // C4
    I32(st->loss_seen);
    F64(st->loss_fast);
    F64(st->loss_slow);
    F64(st->loss_var);
    F64(st->plateau);
    F64(st->eta);

    // C3 gate and proposal
    for (int k = 0; k < AME_GATE_FEATURES; k++) {
        F64(st->gate_w[k]);
    }
    F64(st->rate_mean);
    I32(st->prop.valid);
    I32(st->prop.fired);
    for (int k = 0; k < AME_GATE_FEATURES; k++) {
        F64(st->prop.phi[k]);
    }
    F64(st->prop.q);
    F64(st->prop.prob);
    F64(st->prop.b_soft);
    ARR(st->prop.zeta_a);
    ARR(st->prop.zeta_s);

    // C3 trial and counters
    I32(st->trial.active);
    I64(st->trial.start_step);
    ARR(st->trial.a_saved);
    ARR(st->trial.b_saved);
    ARR(st->trial.s_shift);
    F64(st->trial.fast_at_jump);
    F64(st->trial.trend);
    I64(st->proposals);
    I64(st->gate_fires);
    I64(st->jumps_proposed);
    I64(st->jumps_accepted);
#undef F64
#undef ARR
#undef I32
#undef I64
}

size_t ame_serialize(const AmeState* st, unsigned char* buf)
{
    Writer w = {buf, 0};
    put_u64(&w, AME_MAGIC, 4);
    put_u64(&w, AME_VERSION, 4);
    put_u64(&w, (uint32_t)st->groups, 4);
    put_u64(&w, st->mask, 4);
    put_u64(&w, st->seed, 8);

    // the field walker writes only, so casting away const is safe
    ame_fields(&w, NULL, (AmeState*)st);
    return w.n;
}

int ame_deserialize(AmeState* st, const unsigned char* buf, size_t n, char* err,
                    size_t errlen)
{
    // header
    if (!buf || n < 24) {
        if (err && errlen > 0) {
            snprintf(err, errlen, "GAME state of %zu bytes is too short for its header; "
                                  "the checkpoint is truncated", n);
        }
        return -1;
    }
    Reader r = {buf, n, 0};
    uint32_t magic = (uint32_t)get_u64(&r, 4);
    uint32_t version = (uint32_t)get_u64(&r, 4);
    uint32_t groups = (uint32_t)get_u64(&r, 4);
    uint32_t mask = (uint32_t)get_u64(&r, 4);
    uint64_t seed = get_u64(&r, 8);
    const char* problem = NULL;
    if (magic != AME_MAGIC) {
        problem = "has no GAME magic; it is not a GAME state";
    } else if (version != AME_VERSION) {
        problem = "has an unknown version; it was written by another build";
    } else if (groups < 1 || groups > MAX_GROUPS) {
        problem = "has a group count outside 1 .. MAX_GROUPS";
    }
    if (problem) {
        if (err && errlen > 0) {
            snprintf(err, errlen, "GAME state %s (magic 0x%08X, version %u, groups %u)",
                     problem, magic, version, groups);
        }
        return -1;
    }

    // size check against what this header implies
    AmeState tmp; // about 13 KB
    memset(&tmp, 0, sizeof tmp);
    tmp.groups = (int)groups;
    Writer count = {NULL, 0};
    ame_fields(&count, NULL, &tmp);
    if (count.n + 24 != n) {
        if (err && errlen > 0) {
            snprintf(err, errlen, "GAME state is %zu bytes but %u groups need %zu; the "
                                  "checkpoint is truncated or corrupt", n, groups,
                     count.n + 24);
        }
        return -1;
    }

    // fields, into a scratch copy so st stays unchanged on any failure
    tmp.mask = mask & AME_FULL;
    tmp.seed = seed;
    ame_fields(NULL, &r, &tmp);
    *st = tmp;
    return 0;
}
