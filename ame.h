// ame.h: the model-independent half of GAME, the coefficients that evolve during
// training.
//
// Each parameter group g carries two coefficients that this module owns: a_g, the
// log of its learning rate, and b_g, the logit of its momentum (Adam's beta1). A
// third, the log noise scale s, lives among the model's parameters and is trained
// by the optimizer; this module only tells the caller when a jump shifts it.
//
// Once per step, after the gradient is known and before the weights move, the
// trainer hands over a few dot products per group and the step's loss, and
// ame_step runs the enabled components:
//   C1  a Markov step of a and b along their one-step hypergradients, plus noise;
//   C3  a learned gate that now and then proposes a jump of a and s, keeps the
//       jump on trial for a while and then accepts or undoes it (Metropolis);
//   C4  loss statistics, a plateau score, and from it the strength eta that
//       scales all exploration noise.
// C2 and C5 are noise sites inside the model; here they only have a switch bit,
// the entropy-bonus gradient and the clamp of s.
//
// The counter-based generator at the top is shared with the model code: every
// random number is a pure function of (seed, step, site, index), so a backward
// pass can regenerate its forward's noise and no result depends on thread count.
//
// Not here: anything that knows the model's tensors, the noise sites themselves,
// the dot products (the trainer gathers them), and the optimizer step.
#ifndef AME_H
#define AME_H

#include <stddef.h>
#include <stdint.h>

#include "game.h" // MAX_GROUPS

// ----------------------------------------------------------------------------
// Counter-based random numbers

// Sites: which use of randomness a key is for. The model sites are per layer.
enum {
    RNG_SITE_BATCH = 1, // which training windows form a batch
    RNG_SITE_INIT,      // weight initialisation
    RNG_SITE_SAMPLE,    // sampling tokens when generating text
    RNG_SITE_C1,        // C1 exploration noise xi of a and b
    RNG_SITE_GATE,      // C3 binary-concrete uniform U
    RNG_SITE_JUMP,      // C3 Rademacher signs zeta
    RNG_SITE_ACCEPT,    // C3 Metropolis uniform
    RNG_SITE_HEAD_OUT,  // C5 head weight noise, output side f(eps_out)
    RNG_SITE_HEAD_IN,   // C5 head weight noise, input side f(eps_in)
    RNG_SITE_LAYER_BASE = 64
};
#define RNG_SITE_NOISE_ATT(l) (RNG_SITE_LAYER_BASE + 3 * (uint64_t)(l))     // C2 attention
#define RNG_SITE_NOISE_MLP(l) (RNG_SITE_LAYER_BASE + 3 * (uint64_t)(l) + 1) // C2 MLP
#define RNG_SITE_LOGIT(l) (RNG_SITE_LAYER_BASE + 3 * (uint64_t)(l) + 2)     // C5 logits

#define RNG_GAMMA 0x9E3779B97F4A7C15ULL // 2^64 / golden ratio, odd

// The splitmix64 finaliser: a bijection of 64-bit words with good avalanche.
static inline uint64_t rng_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Key of one (seed, step, site) stream. Each stage is a bijection of the running
// value plus the next input, so distinct triples give unrelated keys.
static inline uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site)
{
    uint64_t k = rng_mix(seed + RNG_GAMMA);
    k = rng_mix(k + (step + 1) * RNG_GAMMA);
    return rng_mix(k ^ ((site + 1) * 0xD1B54A32D192ED03ULL));
}

// 64 random bits for element `index` of a stream. The first mix alone would let
// two keys that differ by a multiple of RNG_GAMMA share a shifted stream; mixing
// the key in again makes such overlaps as unlikely as any other collision.
static inline uint64_t rng_bits(uint64_t key, uint64_t index)
{
    uint64_t z = rng_mix(key + (index + 1) * RNG_GAMMA);
    return rng_mix(z ^ key);
}

// Maps bits to (0, 1): the top 23 bits k give (2k + 1) / 2^24, so the smallest
// value is 2^-24 and the largest 1 - 2^-24, both exact in float.
static inline float rng_uniform_from_bits(uint64_t bits)
{
    return (float)(2 * (bits >> 41) + 1) * (1.0f / 16777216.0f);
}

static inline float rng_uniform(uint64_t key, uint64_t index)
{
    return rng_uniform_from_bits(rng_bits(key, index));
}

// Maps bits to an approximate standard normal: the sum of the four 16-bit parts
// (Irwin-Hall with n = 4), centred and scaled to unit variance. Values lie in
// [-3.4641, 3.4641], symmetric about 0; the kurtosis is 2.7 instead of 3. This
// costs one hash per element and vectorises. It is enough here because the
// reparameterised noise only needs E[eps] = 0 (so E[z] = h) and E[eps^2] = 1 (so
// sigma means what it says); the gradients never use the shape of the tails.
static inline float rng_normal_from_bits(uint64_t bits)
{
    int32_t sum = (int32_t)(bits & 0xFFFF) + (int32_t)((bits >> 16) & 0xFFFF)
                + (int32_t)((bits >> 32) & 0xFFFF) + (int32_t)(bits >> 48);

    // the mean of the sum is 4 * 32767.5, its variance (65536^2 - 1) / 3
    return (float)(sum - 131070) * (1.7320508075688772f / 65536.0f);
}

static inline float rng_normal(uint64_t key, uint64_t index)
{
    return rng_normal_from_bits(rng_bits(key, index));
}

// ----------------------------------------------------------------------------
// Constants

// Component switches, combined into a mask.
#define AME_C1 (1u << 0) // Markov coefficient layer: a and b follow hypergradients
#define AME_C2 (1u << 1) // block output noise (in the model), learned s
#define AME_C3 (1u << 2) // gated jumps with Metropolis selection
#define AME_C4 (1u << 3) // resonant feedback: eta from the loss trend
#define AME_C5 (1u << 4) // attention-logit and LM-head noise (in the model)
#define AME_FULL 0x1Fu

#define AME_GATE_FEATURES 5 // plateau d, mean cosine EMA, mean a, progress, 1

typedef struct {
    // C1: the Markov step a <- a + beta_a * EMA(cos) + tau * eta * xi
    double beta_a;  // drift rate of a per unit cosine (0.02)
    double beta_b;  // drift rate of b per unit cosine (0.01)
    double tau;     // exploration noise scale (0.002)
    double cos_ema; // EMA factor of the cosines (0.9 keeps 90% of the old value)
    double a_min, a_max;   // clamp of a: [ln 1e-5, ln 3e-2]
    double mu_min, mu_max; // clamp of the momentum S(b): [0.5, 0.99]

    // C2 / C5: noise scales s = log sigma, trained by the optimizer
    double s_min, s_max; // clamp of s: [ln 1e-3, ln 1]
    double sigma0;       // initial sigma (0.1)
    double lambda_h;     // weight of the entropy bonus (1.0); tunable, it sets
                         // how much noise the network is asked to carry

    // C4: loss statistics and the strength eta
    double loss_fast; // fast loss EMA rate (0.05)
    double loss_slow; // slow loss EMA rate (0.005)
    double loss_var;  // dispersion EMA rate (0.05)
    double loss_eps;  // added to sqrt(V) in the plateau score (1e-8)
    double eta_min, eta_max; // range of eta: [0.5, 2]
    double kappa_r;   // steepness of eta in d (2)
    double d0;        // centre of eta's sigmoid in d (-1)
    double eta_rate;  // largest change of eta per step (0.01)
    double eta_init;  // eta before C4 has moved it (1: every noise site runs at
                      // its nominal sigma until the loss trend is known)

    // C3: gate, jumps and selection
    double gate_tau;    // binary-concrete temperature (2/3)
    double jump_kappa;  // jump size of a and s (ln 2, a factor of two)
    double rate_target; // wanted firing rate of the gate r* (1/500)
    double rate_weight; // rho, weight of the rate penalty (1.0)
    double rate_ema;    // EMA rate of the running mean of S(q) (0.01)
    double gate_lr;     // SGD rate of the gate weights (0.01)
    int trial_steps;    // K, steps a jump stays on trial (50)
    double temperature; // Metropolis temperature T in nats (0.01)
} AmeParams;

// Fills p with the defaults listed beside each field.
void ame_params_default(AmeParams* p);

// ----------------------------------------------------------------------------
// Modes

// Parses a component list into *mask: "full" (all five), "off" (none), or a comma
// list of c1 .. c5, case-insensitive, where a word may start with '-' to remove a
// component ("full,-c3" is every component but C3). Returns 0 on success; on an
// unknown or empty word returns -1 and writes a message listing the valid words
// into err (errlen bytes; err may be NULL).
int ame_parse_mode(const char* mode, unsigned* mask, char* err, size_t errlen);

// Writes mask as a mode string ("off", "full" or "c1,c2,c4") into buf.
void ame_mode_string(unsigned mask, char* buf, size_t len);

// ----------------------------------------------------------------------------
// State

// A proposal of the C3 gate: drawn every step, it becomes a jump only when the
// hard gate fires while no other jump is on trial. It is kept for one step,
// because the next step's hypergradients are what trains the gate on it.
typedef struct {
    int valid;                        // 1 once a proposal was drawn
    int fired;                        // hard gate [b_soft > 0.5]
    double phi[AME_GATE_FEATURES];    // features phi_t
    double q;                         // gate logit w . phi
    double prob;                      // S(q), the probability of firing
    double b_soft;                    // relaxed gate S((q + logistic) / tau_g)
    double zeta_a[MAX_GROUPS];        // +-1 per group, direction of the a jump
    double zeta_s[MAX_GROUPS];        // +-1 per group, direction of the s jump
                                      // (0 when no noise component is on)
} AmeProposal;

// A jump waiting for its verdict.
typedef struct {
    int active;                  // 1 while on trial
    long start_step;             // step at which the jump was made
    double a_saved[MAX_GROUPS];  // a and b just before the jump
    double b_saved[MAX_GROUPS];
    double s_shift[MAX_GROUPS];  // what the jump asked the caller to add to s
    double fast_at_jump;         // fast loss EMA when the jump was made
    double trend;                // per-step loss slope before the jump
} AmeTrial;

typedef struct {
    int groups;     // G, 1 <= G <= MAX_GROUPS
    unsigned mask;  // AME_C* bits of the enabled components
    uint64_t seed;  // keys every random number drawn here

    // C1: coefficients and their hypergradient signals, (G) each
    double a[MAX_GROUPS];     // log learning rate, alpha = exp(a) * shape
    double b[MAX_GROUPS];     // momentum logit, mu = S(b)
    double cos_a[MAX_GROUPS]; // EMA of cos(g_t, u_{t-1})
    double cos_b[MAX_GROUPS]; // EMA of cos(g_t, d_{t-1})
    double dl_da[MAX_GROUPS]; // last raw dL/da = -alpha <g_t, u_{t-1}>
    double dl_db[MAX_GROUPS]; // last raw dL/db = -alpha mu (1 - mu) <g_t, d_{t-1}>
    double dl_ds[MAX_GROUPS]; // last dL/ds summed over the group's noise scales

    // C4: loss statistics (updated when C3 or C4 is on)
    int loss_seen;     // 0 until the first finite loss
    double loss_fast;  // fast EMA L^f
    double loss_slow;  // slow EMA L^s
    double loss_var;   // dispersion V of the loss around L^f
    double plateau;    // d = (L^f - L^s) / (sqrt(V) + eps)
    double eta;        // mutation strength, eta_init until C4 moves it

    // C3: gate and selection
    double gate_w[AME_GATE_FEATURES]; // weights; the last one (feature 1) is the bias
    double rate_mean;  // running mean of S(q), for the rate penalty
    AmeProposal prop;  // the latest proposal
    AmeTrial trial;    // the jump on trial, if any
    long proposals;      // gate evaluations
    long gate_fires;     // times the hard gate fired
    long jumps_proposed; // jumps made and put on trial
    long jumps_accepted; // of those, kept by the Metropolis test
} AmeState;

// Sets up G groups with a = ln(base_lr), b = logit(base_beta1) for every group,
// all statistics empty, eta = eta_init and the gate weights zero except the bias,
// logit(rate_target), so that the gate starts at the target rate. a and b are not
// clamped here: with C1 off they stay exactly at the given values, and
// ame_lr / ame_beta1 then return base_lr and base_beta1 bit for bit. Returns 0,
// or -1 with a message on stderr when G or a base value is out of range.
int ame_init(AmeState* st, const AmeParams* p, int groups, unsigned mask, uint64_t seed,
             float base_lr, float base_beta1);

// ----------------------------------------------------------------------------
// One step

// What the trainer measured for one group at step t, after g_t is known and
// before the weights move. Sums run over the group's parameters.
typedef struct {
    double g_dot_u; // <g_t, u_{t-1}>, u the update direction of the last step
    double g_norm2; // <g_t, g_t>
    double u_norm2; // <u_{t-1}, u_{t-1}>
    double g_dot_d; // <g_t, d_{t-1}>, d the momentum-derivative direction of C1
    double d_norm2; // <d_{t-1}, d_{t-1}>
    double ds;      // dL_t/ds of the data loss (no entropy bonus) summed over the
                    // group's noise-scale logs; 0 when the group has none
} AmeGroupStats;

// What the caller must do to the noise-scale logs after ame_step: add s_shift[g]
// to every s of group g (then clamp with ame_clamp_s). a and b change in place.
typedef struct {
    float s_shift[MAX_GROUPS]; // (G) a jump adds kappa * zeta_s, a rejection subtracts
                               // what its jump added; both may happen in one step
    int jumped;   // 1 when a jump was made this step
    int restored; // 1 when a jump was rejected and a, b were restored
    int accepted; // 1 when a jump passed its trial this step
} AmeActions;

// Runs the enabled components for step t:
//   1. C4 (or C3): loss statistics, plateau score d; C4: eta, moved at most
//      eta_rate toward its target;
//   2. raw hypergradients and cosine EMAs (C1 or C3);
//   3. C1: a and b step along the cosine EMAs plus tau * eta * xi, then clamp;
//   4. C3: SGD on the gate for last step's proposal, the verdict on a jump whose
//      trial is over, a new proposal and, when its gate fires and no trial runs,
//      a jump.
// gs holds G stats (NULL reads as zeros). alpha[g] is the learning rate that
// multiplied u_{t-1} in the last update, shape included (NULL: exp(a_g)). A
// non-finite loss leaves the loss statistics untouched. With mask 0 nothing in st
// changes; *out is always rewritten.
void ame_step(AmeState* st, const AmeParams* p, long step, long total_steps, float loss,
              const AmeGroupStats* gs, const float* alpha, AmeActions* out);

// Straight-through gradient of the gate logit: dL/dq = dL/db * b_soft (1 - b_soft)
// / tau_g, the derivative of the relaxed gate standing in for the hard one.
double ame_gate_ste(double dl_db, double b_soft, double gate_tau);

// ----------------------------------------------------------------------------
// Reading the coefficients

// Learning rate of group g: exp(a_g) * shape, shape the warmup/cosine factor.
// exp is rounded to float before the product, so with a untouched this equals
// base_lr * shape computed in float.
float ame_lr(const AmeState* st, int g, float shape);

// Momentum of group g, S(b_g). C1 keeps it inside [mu_min, mu_max]; with C1 off it
// is base_beta1 exactly.
float ame_beta1(const AmeState* st, int g);

// Current mutation strength eta, to scale the model's noise sites.
float ame_eta(const AmeState* st);

// Initial noise-scale log, ln sigma0.
float ame_initial_s(const AmeParams* p);

// Gradient with respect to s_site of the entropy bonus -(lambda_h / n_train) *
// n_site * s_site: -lambda_h * n_site / n_train. n_site is the number of elements
// the site perturbs per step, n_train the number of training tokens.
float ame_entropy_grad(const AmeParams* p, double n_site, double n_train);

// s clamped to [s_min, s_max].
float ame_clamp_s(const AmeParams* p, float s);

// One line for eval logs: "alpha [min, max] mu mean sigma x eta y d z jumps p/a".
// alpha includes shape. sigma is a model parameter, so the caller passes its
// mean; a negative mean_sigma leaves it out.
void ame_summary(const AmeState* st, float shape, float mean_sigma, char* buf, size_t len);

// ----------------------------------------------------------------------------
// Checkpoints

// Writes st into buf as little-endian words behind a magic and a version word and
// returns the byte count; with buf NULL only returns the count. Only the first G
// entries of each per-group array are stored.
size_t ame_serialize(const AmeState* st, unsigned char* buf);

// Reads what ame_serialize wrote (n bytes). Returns 0, or -1 with a message in err
// when the magic, version, group count or size does not match; st is then left
// unchanged. Serialising the result gives the same bytes.
int ame_deserialize(AmeState* st, const unsigned char* buf, size_t n, char* err,
                    size_t errlen);

#endif
