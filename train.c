// train.c: the backward pass of every layer, AdamW, the data loader, the
// training loop with GAME, and the `train` program.
//
// The layers' backward functions appear in the same order as their forwards in
// game.c, and each one names the forward expression it differentiates. A
// gradient that gathers several contributions (the weights, the tied token
// embedding, the residual stream past a layernorm) is accumulated (+=); one with
// a single producer is overwritten (=), so that it needs no clearing first. Sums
// that run across threads' work are split into fixed chunks and added in chunk
// order, so the bits do not depend on the thread count.
#include "train.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "plot.h"
#include "sampler.h"
#include "tokenizer.h"
#include "weights.h"

// "s" after a count other than one.
static const char* plural(long n) { return n == 1 ? "" : "s"; }

// The text trained on without -i, relative to the repository's root.
#define DEFAULT_TEXT "data/tinyshakespeare.txt"

// Consecutive non-finite steps after which training stops as diverged.
#define MAX_CONSECUTIVE_SKIPS 10

// Fixed-size chunks for deterministic parallel sums.
#define REDUCE_CHUNK 4096

// The GAME constants that --game-set NAME=VALUE can change, with their places
// in AmeParams (see ame.h for what each one does and its default).
typedef struct {
    const char* name;
    size_t offset;
    int is_int;
} AmeField;

#define AME_FIELD(f) {#f, offsetof(AmeParams, f), 0}
static const AmeField AME_FIELDS[] = {
    AME_FIELD(beta_a), AME_FIELD(beta_b), AME_FIELD(tau), AME_FIELD(cos_ema),
    AME_FIELD(a_min), AME_FIELD(a_max), AME_FIELD(mu_min), AME_FIELD(mu_max),
    AME_FIELD(s_min), AME_FIELD(s_max), AME_FIELD(sigma0), AME_FIELD(lambda_h),
    AME_FIELD(loss_fast), AME_FIELD(loss_slow), AME_FIELD(loss_var), AME_FIELD(eta_min),
    AME_FIELD(eta_max), AME_FIELD(kappa_r), AME_FIELD(d0), AME_FIELD(eta_rate),
    AME_FIELD(eta_init), AME_FIELD(gate_tau), AME_FIELD(jump_kappa),
    AME_FIELD(rate_target), AME_FIELD(rate_weight), AME_FIELD(rate_ema),
    AME_FIELD(gate_lr), {"trial_steps", offsetof(AmeParams, trial_steps), 1},
    AME_FIELD(temperature),
};
#define NUM_AME_FIELDS ((int)(sizeof(AME_FIELDS) / sizeof(AME_FIELDS[0])))

// ----------------------------------------------------------------------------
// Layers, backward direction

// forward: out[b][t] = wte[inp[b][t]] + wpe[t]
// so dwte[inp[b][t]] += dout[b][t] and dwpe[t] += dout[b][t].
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp,
                      int B, int T, int C) {
    // positions: each t sums its B rows in order, t's are independent
    #pragma omp parallel for
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) dwpe[(size_t)t * C + c] += d[c];
        }
    }

    // tokens: one token may repeat anywhere, so go serially in (b, t) order
    for (int n = 0; n < B * T; n++) {
        const float* d = dout + (size_t)n * C;
        float* dw = dwte + (size_t)inp[n] * C;
        for (int c = 0; c < C; c++) dw[c] += d[c];
    }
}

// forward: out = norm * w + bias, norm = (x - mean) * rstd.
// dbias = sum_n dout, dw = sum_n dout * norm, and with dnorm = dout * w,
// dx = rstd * (dnorm - mean_c(dnorm) - norm * mean_c(dnorm * norm)).
// One pass over the rows: they go in fixed chunks of LN_CHUNK, each chunk's
// share of dw and dbias summed in row order, and the chunks' shares added in
// chunk order at the end, so the sums do not depend on the thread count.
#define LN_CHUNK 64
void layernorm_backward(float* dx, float* dw, float* dbias, const float* dout,
                        const float* x, const float* w, const float* mean,
                        const float* rstd, int N, int C) {
    int chunks = (N + LN_CHUNK - 1) / LN_CHUNK;
    float* part = xcalloc((size_t)chunks * 2 * C, sizeof(float), "layernorm backward");

    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < chunks; ch++) {
        float* pw = part + (size_t)ch * 2 * C; // (C) this chunk's dw, then (C) dbias
        float* pb = pw + C;
        int n1 = (ch + 1) * LN_CHUNK < N ? (ch + 1) * LN_CHUNK : N;
        for (int n = ch * LN_CHUNK; n < n1; n++) {
            const float* d = dout + (size_t)n * C;
            const float* xr = x + (size_t)n * C;
            float m = mean[n], r = rstd[n];

            // the two means over the channels
            float mean_d = 0.0f, mean_dn = 0.0f;
            #pragma omp simd reduction(+ : mean_d, mean_dn)
            for (int c = 0; c < C; c++) {
                float dnorm = d[c] * w[c];
                mean_d += dnorm;
                mean_dn += dnorm * (xr[c] - m) * r;
            }
            mean_d /= C;
            mean_dn /= C;

            // dx of the row, and its share of dw and dbias
            float* dxr = dx + (size_t)n * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) {
                float norm = (xr[c] - m) * r;
                dxr[c] += r * (d[c] * w[c] - mean_d - norm * mean_dn);
                pw[c] += d[c] * norm;
                pb[c] += d[c];
            }
        }
    }

    // the chunks' shares, in chunk order
    for (int ch = 0; ch < chunks; ch++) {
        const float* pw = part + (size_t)ch * 2 * C;
        for (int c = 0; c < C; c++) {
            dw[c] += pw[c];
            dbias[c] += pw[C + c];
        }
    }
    free(part);
}

// forward, per (b, h), over keys t2 <= t of each query t:
//   S = Q K^T / sqrt(hs) + eta sigma_h eps,  P = softmax(S) row by row,
//   out = P V.
// backward:
//   dP = dout V^T,                     dV = P^T dout,
//   dS = P * (dP - rowsum(P * dP)),
//   dQ = dS K / sqrt(hs),              dK = dS^T Q / sqrt(hs),
//   ds_h += sum dS * eta sigma_h eps   (s_h = log sigma_h).
// The products run in blocks of GEMM_TILE_M rows that stop at the diagonal,
// as in the forward. Each (b, h) owns its slices of dq, dk, dv, which the
// products overwrite, so the pairs run in parallel and dqkv needs no clearing.

// Row t of dP into dS, in place: g (score_chunks(n) floats, n = t + 1 keys)
// becomes p * (g - sum p g) * scale over t2 < n, and 0 for t2 >= n, with p the
// row's probabilities (n floats). With noisy set, returns the row's share of
// the noise gradient, sum of dS eps(base + t2) ns before the scaling (0
// otherwise). Over all W = score_chunks(n) keys, as the forward's softmax_span,
// and like it with W a constant for rows of up to SCORE_FIXED_MAX keys without
// noise.
static inline __attribute__((always_inline)) float
softmax_span_backward(float* restrict g, const float* restrict p, int n, int W,
                      float scale, int noisy, float ns, uint64_t key, size_t base) {
    // sum over t2 < n of p g
    float dot = 0.0f;
    #pragma omp simd reduction(+ : dot)
    for (int t2 = 0; t2 < W; t2++) dot += t2 < n ? p[t2] * g[t2] : 0.0f;

    // dS, and the 1/sqrt(hs) after its noise gradient
    float dsum = 0.0f;
    #pragma omp simd
    for (int t2 = 0; t2 < W; t2++) g[t2] = t2 < n ? p[t2] * (g[t2] - dot) : 0.0f;
    if (noisy) {
        #pragma omp simd reduction(+ : dsum)
        for (int t2 = 0; t2 < W; t2++) dsum += g[t2] * ns * rng_normal(key, base + t2);
    }
    #pragma omp simd
    for (int t2 = 0; t2 < W; t2++) g[t2] *= scale;
    return dsum;
}

// softmax_span_backward, with W a constant for rows of up to SCORE_FIXED_MAX keys
// without noise (see softmax_row in game.c).
static float softmax_row_backward(float* restrict g, const float* restrict p, int n,
                                  float scale, int noisy, float ns, uint64_t key,
                                  size_t base) {
    int W = score_chunks(n);
    if (noisy || W > SCORE_FIXED_MAX)
        return softmax_span_backward(g, p, n, W, scale, noisy, ns, key, base);
    switch (W) {
    case 16: return softmax_span_backward(g, p, n, 16, scale, 0, 0.0f, 0, 0);
    case 32: return softmax_span_backward(g, p, n, 32, scale, 0, 0.0f, 0, 0);
    case 48: return softmax_span_backward(g, p, n, 48, scale, 0, 0.0f, 0, 0);
    default: return softmax_span_backward(g, p, n, 64, scale, 0, 0.0f, 0, 0);
    }
}

void attention_backward(float* dqkv, float* dnoise, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH,
                        const float* noise_scale, uint64_t noise_key) {
    int hs = C / NH, Tp = gemm_round_cols(T, INT_MAX);
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C;
    double* ds_part = noise_scale ? xcalloc((size_t)B * NH, sizeof(double), "att") : NULL;

    WorkShare work;
    #pragma omp parallel
    {
        // per thread: vt (hs, Tp) the values transposed, zero past T, and dS
        // (T, Tp), dP and then dS of one pair
        float* vt = xmalloc_lines((size_t)hs * Tp, sizeof(float), 1, "attention scratch");
        float* dS = xmalloc_lines((size_t)T * Tp, sizeof(float), 0, "attention scratch");

        // the pairs in equal contiguous runs, as in the forward
        #pragma omp single
        work_begin(&work, (long)B * NH);
        for (long pair; (pair = work_next(&work)) >= 0;) {
            int b = (int)(pair / NH), h = (int)(pair % NH);
            size_t off = (size_t)b * T * C3 + h * hs;
            const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
            const float* P = att + ((size_t)b * NH + h) * T * T;
            const float* d = dout + (size_t)b * T * C + h * hs;

            // dP = dout V^T (into dS), blocks of queries up to the diagonal,
            // rounded up to whole tiles of keys (the extra ones are masked
            // below)
            for (int i = 0; i < hs; i++)
                for (int t = 0; t < T; t++) vt[(size_t)i * Tp + t] = v[t * C3 + i];
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                int keys = gemm_round_cols(t0 + rows, Tp);
                gemm_serial(dS + (size_t)t0 * Tp, Tp, d + (size_t)t0 * C, C, 1, vt, Tp,
                            rows, keys, hs);
            }

            // dV = P^T dout: rows t2 of a block meet the queries t >= t0
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                gemm_serial(dv + (size_t)t0 * C3, C3, P + (size_t)t0 * T + t0, 1, T,
                            d + (size_t)t0 * C, C, rows, hs, T - t0);
            }

            // the softmax's backward, the noise gradient, and the 1/sqrt(hs);
            // each row also asks for row t of the next pair's q, k, v, dout and
            // (to be written) dq, dk, dv, as in the forward
            size_t step = h + 1 < NH ? (size_t)hs : (size_t)T * C3 - (NH - 1) * hs;
            size_t dstep = h + 1 < NH ? (size_t)hs : (size_t)T * C - (NH - 1) * hs;
            int more = b * NH + h + 1 < B * NH;
            double ds = 0.0;
            for (int t = 0; t < T; t++) {
                for (int part = 0; more && part < 3; part++) {
                    prefetch_span(q + step + (size_t)t * C3 + part * C, hs, 0);
                    prefetch_span(dq + step + (size_t)t * C3 + part * C, hs, 1);
                }
                if (more) prefetch_span(d + dstep + (size_t)t * C, hs, 0);
                size_t base = (((size_t)b * NH + h) * T + t) * T;
                ds += softmax_row_backward(dS + (size_t)t * Tp, P + (size_t)t * T, t + 1,
                                           scale, noise_scale != NULL,
                                           noise_scale ? noise_scale[h] : 0.0f,
                                           noise_key, base);
            }
            if (ds_part) ds_part[(size_t)b * NH + h] = ds;

            // dQ = dS K, blocks of queries over the keys they saw
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                gemm_serial(dq + (size_t)t0 * C3, C3, dS + (size_t)t0 * Tp, Tp, 1, k,
                            C3, rows, hs, t0 + rows);
            }

            // dK = dS^T Q: keys of a block meet the queries t >= t0
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                gemm_serial(dk + (size_t)t0 * C3, C3, dS + (size_t)t0 * Tp + t0, 1, Tp,
                            q + (size_t)t0 * C3, C3, rows, hs, T - t0);
            }
        }
        free(vt);
        free(dS);
    }
    work_end(&work);

    // per-head noise gradients, summed over the batch in order
    if (ds_part) {
        for (int h = 0; h < NH; h++) {
            double s = 0.0;
            for (int b = 0; b < B; b++) s += ds_part[(size_t)b * NH + h];
            dnoise[h] += (float)s;
        }
        free(ds_part);
    }
}

// forward: out = 0.5 x (1 + tanh(u)), u = k (x + c x^3)
// d out/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2); dx is
// overwritten (the GELU is its input's only reader).
void gelu_backward(float* dx, const float* x, const float* dout, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float xi = x[i];
        float u = GELU_K * (xi + GELU_C * xi * xi * xi);
        float th = fast_tanhf(u);
        float local = 0.5f * (1.0f + th) +
                      0.5f * xi * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_C * xi * xi);
        dx[i] = local * dout[i];
    }
}

// forward: out = resid + h * mult, mult = 1 + eta sigma (+-eps) (or 1 without noise)
// dresid = dout, left in place; dh = dout * mult, and since d mult / d s = mult - 1
// (s = log sigma), ds += sum dout * h * (mult - 1).
const float* residual_backward(float* dh, float* dnoise, const float* dout,
                               const float* h, const float* noise_scale, uint64_t key,
                               int dither, int B, int T, int C) {
    if (!noise_scale) return dout;

    // with noise: the s gradient as a sum of per-row partials, added in order
    float scale = *noise_scale;
    int rows = B * T;
    double* part = xcalloc(rows, sizeof(double), "residual");
    #pragma omp parallel for
    for (int n = 0; n < rows; n++) {
        size_t base, row = (size_t)n * C;
        float sc = noise_row(n, dither, B, T, C, &base) * scale;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) {
            float noise = sc * rng_normal(key, base + c); // mult - 1
            float d = dout[row + c];
            dh[row + c] = d * (1.0f + noise);
            s += d * h[row + c] * noise;
        }
        part[n] = s;
    }
    double s = 0.0;
    for (int n = 0; n < rows; n++) s += part[n];
    *dnoise += (float)s;
    free(part);
    return dh;
}

// forward: logits = lnf @ wte^T [+ sign_b eta f(eps_out) * (headin @ sigma_W^T)],
// probs = softmax(logits), loss = mean over B T of -log probs[target].
// dlogits = (probs - onehot(target)) / (B T); then, through the tied matrix,
// dlnf = dlogits @ wte (overwritten) and dwte += dlogits^T @ lnf. With head noise, let
// g = sign_b eta f(eps_out) * dlogits: dheadin = g @ sigma_W, dlnf += f(eps_in) *
// dheadin, dsigma_W = g^T @ headin, and d s_W = dsigma_W * sigma_W.
void head_backward(float* dlnf, float* dwte, float* dnoise_head, const float* probs,
                   const int* targets, const float* lnf, const float* headin,
                   const float* wte, const float* sigma_w, const float* f_out,
                   const float* f_in, float eta, int B, int T, int C, int V) {
    size_t BT = (size_t)B * T;
    float* dlogits = xmalloc(BT * V * sizeof(float), "logit gradients");

    // the fused softmax + cross-entropy backward
    float inv = 1.0f / (float)BT;
    #pragma omp parallel for
    for (size_t n = 0; n < BT; n++) {
        const float* p = probs + n * V;
        float* d = dlogits + n * V;
        for (int v = 0; v < V; v++) d[v] = p[v] * inv;
        d[targets[n]] -= inv;
    }

    // through the tied head matrix
    matmul_backward(dlnf, dwte, NULL, dlogits, lnf, wte, (int)BT, C, V);

    // through the factorised noise term, reusing dlogits for g
    if (sigma_w) {
        #pragma omp parallel for
        for (size_t n = 0; n < BT; n++) {
            int b = (int)(n / T);
            float sign = (B % 2 == 0 && b >= B / 2) ? -eta : eta;
            float* d = dlogits + n * V;
            for (int v = 0; v < V; v++) d[v] *= sign * f_out[v];
        }
        float* dheadin = xmalloc(BT * C * sizeof(float), "head noise gradients");
        float* dsigma = xcalloc((size_t)V * C, sizeof(float), "head noise gradients");
        matmul_backward(dheadin, dsigma, NULL, dlogits, headin, sigma_w, (int)BT, C, V);
        #pragma omp parallel for
        for (size_t n = 0; n < BT; n++)
            for (int c = 0; c < C; c++) dlnf[n * C + c] += f_in[c] * dheadin[n * C + c];
        for (size_t i = 0; i < (size_t)V * C; i++) dnoise_head[i] += dsigma[i] * sigma_w[i];
        free(dheadin);
        free(dsigma);
    }
    free(dlogits);
}

// ----------------------------------------------------------------------------
// The model's backward pass

void gradients_init(Gradients* g, const Model* m) {
    g->grads = xcalloc_pages(m->num_params, sizeof(float), "parameter gradients");
    g->num_grads = m->num_params;
    param_views(&g->g, g->grads, m->param_sizes);
    g->dacts = NULL;
    g->num_dacts = 0;
}

void gradients_free(Gradients* g) {
    free_pages(g->grads, g->num_grads, sizeof(float));
    free_pages(g->dacts, g->num_dacts, sizeof(float));
    memset(g, 0, sizeof(*g));
}

// Sizes the activation gradients like the model's activations. They need no
// clearing: every tensor's first producer in the backward pass overwrites it,
// but for the residual stream's, which model_backward clears itself; the
// attention probabilities, statistics and losses get no gradient.
static void gradients_prepare(Gradients* g, const Model* m) {
    if (!(g->dacts && g->num_dacts == m->num_acts)) {
        free_pages(g->dacts, g->num_dacts, sizeof(float));
        g->dacts = xcalloc_pages(m->num_acts, sizeof(float), "activation gradients");
        g->num_dacts = m->num_acts;
    }
    float* p = g->dacts;
    for (int i = 0; i < NUM_ACT_TENSORS; i++) {
        g->d.t[i] = p;
        p += m->act_sizes[i];
    }
}

// The views of block l into the activation gradients, laid out as the model's.
static void block_grad_views(BlockViews* d, const Model* m, const Gradients* g, int l) {
    Model shadow = *m;
    shadow.params = g->g;
    shadow.acts = g->d;
    block_views(d, &shadow, l);
}

void model_backward(Model* m, Gradients* g, const int* inputs, const int* targets) {
    const GameConfig* cfg = &m->config;
    int B = m->B, T = m->T, C = cfg->channels, L = cfg->layers, NH = cfg->heads;
    int V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    const NoiseConfig* nz = &m->noise;
    float** p = m->params.t;
    float** a = m->acts.t;
    float** dp = g->g.t;
    gradients_prepare(g, m);

    // the parameter gradients start at zero (the layers add to them), cleared by
    // the threads in blocks
    size_t np = m->num_params;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < np; i += 16384)
        memset(g->grads + i, 0, (np - i < 16384 ? np - i : 16384) * sizeof(float));
    float** da = g->d.t;

    // head and loss, then the final layernorm
    float *f_out = NULL, *f_in = NULL, *sigma_w = NULL;
    if (nz->head) head_noise_vectors(m, &f_out, &f_in, &sigma_w);
    head_backward(da[A_LNF], dp[P_WTE], dp[P_NOISE_HEAD], a[A_PROBS], targets, a[A_LNF],
                  a[A_HEADIN], p[P_WTE], sigma_w, f_out, f_in, nz->eta, B, T, C, V);
    free(f_out);
    free(f_in);
    free(sigma_w);

    // the residual stream's gradient, in one buffer through every block: a
    // residual add passes it on unchanged, and each layernorm adds its input's
    // gradient to it (the stream's own slices of the activation gradients,
    // A_RESID2 and A_RESID3, so go unused, and their pages are never touched)
    float* dstream = da[A_ENCODED];
    float* last = a[A_RESID3] + (L - 1) * BT * C;
    memset(dstream, 0, BT * C * sizeof(float));
    layernorm_backward(dstream, dp[P_LNFW], dp[P_LNFB], da[A_LNF], last, p[P_LNFW],
                       a[A_LNF_MEAN], a[A_LNF_RSTD], BT, C);

    // the blocks, last to first. Each activation gradient other than the stream's
    // is first written (=) by the layer that reads the activation (a product's
    // input, the GELU, the attention, a noisy residual add's branch)
    for (int l = L - 1; l >= 0; l--) {
        BlockViews w, d;
        block_views(&w, m, l);
        block_grad_views(&d, m, g, l);
        const float* resid = l == 0 ? a[A_ENCODED] : a[A_RESID3] + (l - 1) * BT * C;
        float att_scale = 0.0f, mlp_scale = 0.0f, logit_scale[1024];
        if (nz->block) {
            att_scale = nz->eta * expf(*w.noise_att);
            mlp_scale = nz->eta * expf(*w.noise_mlp);
        }
        if (nz->logits)
            for (int h = 0; h < NH; h++) logit_scale[h] = nz->eta * expf(w.noise_logit[h]);

        // MLP sublayer: resid3 = resid2 + noise(fcproj(gelu(fc(ln2(resid2)))))
        const float* dfcproj = residual_backward(
            d.fcproj, d.noise_mlp, dstream, w.fcproj, nz->block ? &mlp_scale : NULL,
            rng_key(nz->seed, nz->step, RNG_SITE_NOISE_MLP(l)), nz->dither, B, T, C);
        matmul_backward(d.fch_gelu, d.fcprojw, d.fcprojb, dfcproj, w.fch_gelu, w.fcprojw,
                        BT, 4 * C, C);
        gelu_backward(d.fch, w.fch, d.fch_gelu, BT * 4 * C);
        matmul_backward(d.ln2, d.fcw, d.fcb, d.fch, w.ln2, w.fcw, BT, C, 4 * C);
        layernorm_backward(dstream, d.ln2w, d.ln2b, d.ln2, w.resid2, w.ln2w, w.ln2_mean,
                           w.ln2_rstd, BT, C);

        // attention sublayer: resid2 = resid + noise(attproj(attention(ln1(resid))))
        const float* dattproj = residual_backward(
            d.attproj, d.noise_att, dstream, w.attproj, nz->block ? &att_scale : NULL,
            rng_key(nz->seed, nz->step, RNG_SITE_NOISE_ATT(l)), nz->dither, B, T, C);
        matmul_backward(d.atty, d.attprojw, d.attprojb, dattproj, w.atty, w.attprojw,
                        BT, C, C);
        attention_backward(d.qkv, d.noise_logit, d.atty, w.qkv, w.att, B, T, C, NH,
                           nz->logits ? logit_scale : NULL,
                           rng_key(nz->seed, nz->step, RNG_SITE_LOGIT(l)));
        matmul_backward(d.ln1, d.qkvw, d.qkvb, d.qkv, w.ln1, w.qkvw, BT, C, 3 * C);
        layernorm_backward(dstream, d.ln1w, d.ln1b, d.ln1, resid, w.ln1w, w.ln1_mean,
                           w.ln1_rstd, BT, C);
    }

    // embeddings
    encoder_backward(dp[P_WTE], dp[P_WPE], dstream, inputs, B, T, C);
}

// ----------------------------------------------------------------------------
// AdamW with a learning rate and a momentum (beta1) per parameter group

void adamw_init(AdamW* opt, const Model* m, float beta2, float eps, float weight_decay,
                int track_directions) {
    memset(opt, 0, sizeof(*opt));
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->num_params = m->num_params;
    opt->m = xcalloc_pages(m->num_params, sizeof(float), "AdamW first moment");
    opt->v = xcalloc_pages(m->num_params, sizeof(float), "AdamW second moment");
    if (track_directions) {
        opt->u = xcalloc_pages(m->num_params, sizeof(float), "GAME update direction");
        opt->d = xcalloc_pages(m->num_params, sizeof(float), "GAME momentum direction");
    }
    opt->num_slices = param_slices(&m->config, NULL, 0);
    opt->slices = xmalloc(opt->num_slices * sizeof(ParamSlice), "parameter slices");
    param_slices(&m->config, opt->slices, opt->num_slices);
    for (int g = 0; g < MAX_GROUPS; g++) opt->beta1_power[g] = 1.0;
}

void adamw_free(AdamW* opt) {
    free_pages(opt->m, opt->num_params, sizeof(float));
    free_pages(opt->v, opt->num_params, sizeof(float));
    free_pages(opt->u, opt->num_params, sizeof(float));
    free_pages(opt->d, opt->num_params, sizeof(float));
    free(opt->slices);
    memset(opt, 0, sizeof(*opt));
}

// Partial sums of one chunk of a slice: |g|^2, and with directions g.u, |u|^2,
// g.d, |d|^2 and sum g.
typedef struct {
    double gg, gu, uu, gd, dd, gsum;
} ChunkStats;

double gradient_stats(const AdamW* opt, const float* g, AmeGroupStats* stats,
                      int groups) {
    // the chunks of every slice, in slice order
    size_t chunks = 0;
    for (int s = 0; s < opt->num_slices; s++)
        chunks += (opt->slices[s].size + REDUCE_CHUNK - 1) / REDUCE_CHUNK;
    ChunkStats* part = xcalloc(chunks, sizeof(ChunkStats), "gradient statistics");
    int* chunk_slice = xmalloc(chunks * sizeof(int), "gradient statistics");
    size_t* chunk_start = xmalloc(chunks * sizeof(size_t), "gradient statistics");
    size_t k = 0;
    for (int s = 0; s < opt->num_slices; s++) {
        for (size_t i = 0; i < opt->slices[s].size; i += REDUCE_CHUNK) {
            chunk_slice[k] = s;
            chunk_start[k++] = opt->slices[s].offset + i;
        }
    }

    // partial sums in parallel, chunk by chunk
    int directions = stats && opt->u;
    #pragma omp parallel for schedule(dynamic, 8)
    for (size_t c = 0; c < chunks; c++) {
        const ParamSlice* sl = &opt->slices[chunk_slice[c]];
        size_t end = sl->offset + sl->size;
        size_t lo = chunk_start[c], hi = lo + REDUCE_CHUNK < end ? lo + REDUCE_CHUNK : end;
        // (vector sums: the lanes' order is fixed for a given build)
        double gg = 0.0, gsum = 0.0, gu = 0.0, uu = 0.0, gd = 0.0, dd = 0.0;
        #pragma omp simd reduction(+ : gg, gsum)
        for (size_t i = lo; i < hi; i++) {
            gg += (double)g[i] * g[i];
            gsum += g[i];
        }
        if (directions) {
            const float* u = opt->u;
            const float* d = opt->d;
            #pragma omp simd reduction(+ : gu, uu, gd, dd)
            for (size_t i = lo; i < hi; i++) {
                gu += (double)g[i] * u[i];
                uu += (double)u[i] * u[i];
                gd += (double)g[i] * d[i];
                dd += (double)d[i] * d[i];
            }
        }
        part[c] = (ChunkStats){gg, gu, uu, gd, dd, gsum};
    }

    // reduce in chunk order into the whole norm and the per-group statistics
    if (stats) memset(stats, 0, groups * sizeof(AmeGroupStats));
    double total = 0.0;
    for (size_t c = 0; c < chunks; c++) {
        const ParamSlice* sl = &opt->slices[chunk_slice[c]];
        total += part[c].gg;
        if (!stats) continue;
        AmeGroupStats* st = &stats[sl->group];
        st->g_norm2 += part[c].gg;
        st->g_dot_u += part[c].gu;
        st->u_norm2 += part[c].uu;
        st->g_dot_d += part[c].gd;
        st->d_norm2 += part[c].dd;
        if (sl->tensor >= NUM_BASE_PARAM_TENSORS) st->ds += part[c].gsum;
    }
    free(part);
    free(chunk_slice);
    free(chunk_start);
    return total;
}

// The constants of one slice's update.
typedef struct {
    float grad_scale, b1, beta2, inv_bc2, c1, eps, wd, alpha;
} AdamConsts;

// The update of elements lo .. hi - 1, shared among the threads of the enclosing
// parallel region (without a barrier at the end): m, v, then the decoupled
// update theta -= alpha (mhat / (sqrt(vhat) + eps) + wd theta). With track set
// (GAME), the direction u and the derivative of the direction with respect to
// beta1, (m_prev - g) / (c1 (sqrt(vhat) + eps)), are kept for the next step's
// hypergradients (bias correction's own dependence on beta1 is neglected
// there). Inlined with track a constant, so that each loop is branch-free vector
// code.
static inline __attribute__((always_inline)) void
adamw_range(AdamW* opt, float* restrict params, const float* restrict g, size_t lo,
            size_t hi, AdamConsts k, int track) {
    float* restrict mom = opt->m;
    float* restrict vel = opt->v;
    float* restrict u = opt->u;
    float* restrict dd = opt->d;
    #pragma omp for simd schedule(static) nowait
    for (size_t i = lo; i < hi; i++) {
        float gr = g[i] * k.grad_scale;
        float m_prev = mom[i];
        float m = k.b1 * m_prev + (1.0f - k.b1) * gr;
        float v = k.beta2 * vel[i] + (1.0f - k.beta2) * gr * gr;
        mom[i] = m;
        vel[i] = v;
        float inv = 1.0f / (k.c1 * (sqrtf(v * k.inv_bc2) + k.eps)); // one division
        float dir = m * inv + k.wd * params[i];
        params[i] -= k.alpha * dir;
        if (track) {
            u[i] = dir;
            dd[i] = (m_prev - gr) * inv;
        }
    }
}

void adamw_step(AdamW* opt, float* params, const float* g, float grad_scale,
                const float* lr, const float* beta1) {
    opt->t++;
    float beta2 = opt->beta2, eps = opt->eps;
    float inv_bc2 = 1.0f / (1.0f - powf(beta2, (float)opt->t));

    // each group's bias correction follows the product of its own beta1's
    float bc1[MAX_GROUPS];
    for (int gi = 0; gi < MAX_GROUPS; gi++) bc1[gi] = 1.0f;
    for (int s = 0; s < opt->num_slices; s++) {
        int gi = opt->slices[s].group;
        if (bc1[gi] == 1.0f) {
            opt->beta1_power[gi] *= beta1[gi];
            bc1[gi] = 1.0f - (float)opt->beta1_power[gi];
        }
    }

    // one parallel region for all slices; each slice's elements are split
    // among the threads, with no barrier between slices (they are disjoint)
    #pragma omp parallel
    for (int s = 0; s < opt->num_slices; s++) {
        const ParamSlice* sl = &opt->slices[s];
        int gi = sl->group;
        AdamConsts k = {grad_scale, beta1[gi], beta2, inv_bc2, bc1[gi], eps,
                        sl->decay ? opt->weight_decay : 0.0f, lr[gi]};
        size_t lo = sl->offset, hi = sl->offset + sl->size;
        if (opt->u) adamw_range(opt, params, g, lo, hi, k, 1);
        else adamw_range(opt, params, g, lo, hi, k, 0);
    }
}

float lr_schedule(long step, long steps, long warmup, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (step >= steps) return min_lr;
    float progress = (float)(step - warmup) / (float)(steps - warmup > 0 ? steps - warmup : 1);
    float cosine = 0.5f * (1.0f + cosf(3.14159265358979f * progress));
    return min_lr + (lr - min_lr) * cosine;
}

// ----------------------------------------------------------------------------
// Data: the text as token ids, split into training and validation parts


// Fills inputs and targets (B, T) with B windows of T + 1 consecutive tokens.
// Window b starts at a position drawn from the counter generator keyed on
// (seed, step, site), so any batch can be rebuilt from its step number alone.
void batch_fill(int* inputs, int* targets, const Split* s, int B, int T, uint64_t seed,
                uint64_t step, uint64_t site) {
    uint64_t key = rng_key(seed, step, site);
    size_t starts = s->n - (size_t)T; // windows [start, start + T] fit for start < starts
    for (int b = 0; b < B; b++) {
        size_t start = rng_bits(key, b) % starts;
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = s->tokens[start + t];
            targets[b * T + t] = s->tokens[start + t + 1];
        }
    }
}

// ----------------------------------------------------------------------------
// Options of the train program

void train_options_default(TrainOptions* o) {
    memset(o, 0, sizeof(*o));
    o->input = DEFAULT_TEXT;
    o->output = "model.bin";
    o->layers = 4;
    o->heads = 4;
    o->channels = 128;
    o->context = 64;
    o->batch = 12;
    o->steps = 2000;
    o->warmup = 100;
    o->lr = 1e-3f;
    o->min_lr = 1e-4f;
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->val_fraction = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.99f;
    o->adam_eps = 1e-8f;
    o->seed = 1337;
    o->eval_every = 200;
    o->eval_batches = 20;
    o->log_every = 50;
    o->threads = 0;
    o->sample_chars = 300;
    o->game = "off";
    o->game_mask = 0;
    o->dither = 1;
    o->log_csv = NULL;
    o->save_every = 500;
    ame_params_default(&o->ame);
}

// ----------------------------------------------------------------------------
// The trainer: model, gradients, optimizer, GAME state and data


// Mean loss over `batches` fixed batches of a split, noise off. The batches are
// keyed on step 0 of their own site, so every evaluation sees the same text.
float trainer_eval(Trainer* tr, const Split* s, uint64_t site) {
    Model* m = &tr->model;
    int B = tr->opt.batch, T = tr->opt.context;
    NoiseConfig saved = m->noise;
    memset(&m->noise, 0, sizeof(m->noise));
    double sum = 0.0;
    for (int i = 0; i < tr->opt.eval_batches; i++) {
        batch_fill(tr->inputs, tr->targets, s, B, T, tr->opt.seed, (uint64_t)i, site);
        model_forward(m, tr->inputs, tr->targets, B, T, NULL);
        sum += m->mean_loss;
    }
    m->noise = saved;
    return (float)(sum / tr->opt.eval_batches);
}

// Noise-scale logs of group g, as (tensor, first, count) runs, for jumps and
// clamping.
static void group_noise_runs(const Model* m, int g, int* tensors, size_t* first,
                             size_t* count, int* n) {
    const GameConfig* c = &m->config;
    *n = 0;
    if (g == group_head(c)) {
        tensors[0] = P_NOISE_HEAD, first[0] = 0, count[0] = m->param_sizes[P_NOISE_HEAD];
        *n = 1;
    } else if (g > 0 && g % 2 == 1) {
        int l = (g - 1) / 2;
        tensors[0] = P_NOISE_ATT, first[0] = l, count[0] = 1;
        tensors[1] = P_NOISE_LOGIT, first[1] = (size_t)l * c->heads, count[1] = c->heads;
        *n = 2;
    } else if (g > 0) {
        int l = (g - 2) / 2;
        tensors[0] = P_NOISE_MLP, first[0] = l, count[0] = 1;
        *n = 1;
    }
}

// Adds the entropy bonus's gradient to the noise scales of the enabled sites:
// the bonus -(lambda_H / N_train) n_site s has gradient -lambda_H n_site / N_train.
static void add_entropy_bonus(Trainer* tr) {
    Model* m = &tr->model;
    const GameConfig* c = &m->config;
    float** dp = tr->grads.g.t;
    double B = tr->opt.batch, T = tr->opt.context, N = (double)tr->train.n;
    if (m->noise.block) {
        float g = ame_entropy_grad(&tr->opt.ame, B * T * c->channels, N);
        for (int l = 0; l < c->layers; l++) {
            dp[P_NOISE_ATT][l] += g;
            dp[P_NOISE_MLP][l] += g;
        }
    }
    if (m->noise.logits) {
        float g = ame_entropy_grad(&tr->opt.ame, B * T * (T + 1) / 2, N);
        for (size_t i = 0; i < m->param_sizes[P_NOISE_LOGIT]; i++) dp[P_NOISE_LOGIT][i] += g;
    }
    if (m->noise.head) {
        float g = ame_entropy_grad(&tr->opt.ame, B * T, N);
        for (size_t i = 0; i < m->param_sizes[P_NOISE_HEAD]; i++) dp[P_NOISE_HEAD][i] += g;
    }
}

// Applies a jump's (or a rejection's) shift to each group's noise scales, and
// keeps every noise scale inside its clamp.
static void apply_noise_shifts(Trainer* tr, const float* shift) {
    Model* m = &tr->model;
    for (int g = 0; g < num_groups(&m->config); g++) {
        int tensors[2], n;
        size_t first[2], count[2];
        group_noise_runs(m, g, tensors, first, count, &n);
        for (int r = 0; r < n; r++) {
            float* s = m->params.t[tensors[r]] + first[r];
            for (size_t i = 0; i < count[r]; i++)
                s[i] = ame_clamp_s(&tr->opt.ame, s[i] + (shift ? shift[g] : 0.0f));
        }
    }
}


void trainer_csv_header(Trainer* tr) {
    const GameConfig* c = &tr->model.config;
    char name[32];
    fprintf(tr->csv, "step,loss,grad_norm,eta");
    for (int g = 0; g < num_groups(c); g++) {
        group_name(c, g, name, sizeof(name));
        fprintf(tr->csv, ",lr_%s", name);
    }
    for (int g = 0; g < num_groups(c); g++) {
        group_name(c, g, name, sizeof(name));
        fprintf(tr->csv, ",mu_%s", name);
    }
    fprintf(tr->csv, ",sigma_att,sigma_mlp,sigma_logit,sigma_head,plateau,"
            "gate_prob,jumps_proposed,jumps_accepted\n");
}

// One line of the CSV trace: what this step used and where GAME stands.
static void trainer_csv_row(Trainer* tr, float loss, float norm) {
    const Model* m = &tr->model;
    int G = num_groups(&m->config);
    fprintf(tr->csv, "%ld,%.6f,%.6f,%.4f", tr->step + 1, loss, norm, ame_eta(&tr->ame));
    for (int g = 0; g < G; g++) fprintf(tr->csv, ",%.6g", tr->lr[g]);
    for (int g = 0; g < G; g++) fprintf(tr->csv, ",%.4f", tr->beta1[g]);
    fprintf(tr->csv, ",%.5f,%.5f,%.5f,%.6f", model_mean_sigma(m, P_NOISE_ATT),
            model_mean_sigma(m, P_NOISE_MLP), model_mean_sigma(m, P_NOISE_LOGIT),
            model_mean_sigma(m, P_NOISE_HEAD));
    fprintf(tr->csv, ",%.5f,%.5f,%ld,%ld\n", tr->ame.plateau, tr->ame.prop.prob,
            tr->ame.jumps_proposed, tr->ame.jumps_accepted);
}

float trainer_mean_sigma(const Trainer* tr) {
    const Model* m = &tr->model;
    return (float)(0.5 * (model_mean_sigma(m, P_NOISE_ATT) +
                          model_mean_sigma(m, P_NOISE_MLP)));
}

// Adds this step to the plot's history, thinning it by half when it is full.
static void history_add(Trainer* tr, float loss) {
    History* h = tr->history;
    if (!h) h = tr->history = xcalloc(1, sizeof(History), "history");
    if (h->stride == 0) h->stride = 1;
    if ((tr->step + 1) % h->stride != 0) return;
    if (h->n == HISTORY_POINTS) {
        int G = num_groups(&tr->model.config);
        for (int i = 0; 2 * i + 1 < h->n; i++) {
            int j = 2 * i + 1;
            h->step[i] = h->step[j], h->loss[i] = h->loss[j], h->eta[i] = h->eta[j];
            h->sigma[i] = h->sigma[j], h->jumps[i] = h->jumps[j], h->kept[i] = h->kept[j];
            for (int g = 0; g < G; g++) h->lr[g][i] = h->lr[g][j];
        }
        h->n /= 2;
        h->stride *= 2;
        if ((tr->step + 1) % h->stride != 0) return;
    }
    int i = h->n++;
    h->step[i] = (float)(tr->step + 1);
    h->loss[i] = loss;
    h->eta[i] = ame_eta(&tr->ame);
    h->sigma[i] = trainer_mean_sigma(tr);
    h->jumps[i] = (float)tr->ame.jumps_proposed;
    h->kept[i] = (float)tr->ame.jumps_accepted;
    for (int g = 0; g < num_groups(&tr->model.config); g++) h->lr[g][i] = tr->lr[g];
}

void trainer_record_eval(Trainer* tr, float train_loss, float val_loss) {
    History* h = tr->history;
    if (!h) h = tr->history = xcalloc(1, sizeof(History), "history");
    if (h->n_evals == HISTORY_EVALS) return;
    h->eval_step[h->n_evals] = (float)tr->step;
    h->eval_train[h->n_evals] = train_loss;
    h->eval_val[h->n_evals++] = val_loss;
}

int trainer_plot(const Trainer* tr, const char* path, char* err, size_t errlen) {
    const History* h = tr->history;
    if (!h) {
        snprintf(err, errlen, "nothing to plot yet");
        return -1;
    }
    const GameConfig* c = &tr->model.config;
    int G = num_groups(c);
    char names[MAX_GROUPS][16];

    // losses: the minibatch loss of each recorded step, and the evaluations
    PlotSeries loss[3] = {
        {"minibatch", h->step, h->loss, h->n, 0xb8c4d6},
        {"train (eval)", h->eval_step, h->eval_train, h->n_evals, 0x1f77b4},
        {"validation", h->eval_step, h->eval_val, h->n_evals, 0xd62728},
    };

    // learning rates of the groups
    PlotSeries lr[MAX_GROUPS];
    for (int g = 0; g < G; g++) {
        group_name(c, g, names[g], sizeof(names[g]));
        lr[g] = (PlotSeries){names[g], h->step, h->lr[g], h->n, 0};
    }

    // GAME's strength and noise, and its jumps
    PlotSeries eta[2] = {
        {"eta (strength)", h->step, h->eta, h->n, 0x2ca02c},
        {"mean sigma (C2)", h->step, h->sigma, h->n, 0x9467bd},
    };
    PlotSeries jumps[2] = {
        {"jumps made", h->step, h->jumps, h->n, 0xff7f0e},
        {"jumps kept", h->step, h->kept, h->n, 0x8c564b},
    };
    PlotPanel panels[4] = {
        {"loss", "step", "cross-entropy (nats)", 0, loss, 3},
        {"learning rate per group", "step", "learning rate", 1, lr, G},
        {"GAME: eta and sigma", "step", "value", 0, eta, 2},
        {"GAME: jumps (cumulative)", "step", "count", 0, jumps, 2},
    };
    int n_panels = tr->opt.game_mask ? 4 : 2;
    char heading[256];
    snprintf(heading, sizeof(heading), "%s: %d layer%s, %d channels, GAME %s, step %ld",
             tr->opt.input, c->layers, plural(c->layers), c->channels,
             tr->opt.game ? tr->opt.game : "off", tr->step);
    return plot_write_png(path, 1200, n_panels > 2 ? 900 : 800, panels, n_panels, heading,
                          err, errlen);
}

// One training step: forward, backward, GAME's coefficient step, AdamW.
// Returns the step's loss; a non-finite loss or gradient skips the update.
float trainer_step(Trainer* tr) {
    TrainOptions* o = &tr->opt;
    Model* m = &tr->model;
    int B = o->batch, T = o->context, G = num_groups(&m->config);
    unsigned mask = o->game_mask;

    // the batch and this step's noise
    batch_fill(tr->inputs, tr->targets, &tr->train, B, T, o->seed, tr->step,
               RNG_SITE_BATCH);
    m->noise.block = (mask & AME_C2) != 0;
    m->noise.dither = m->noise.block && o->dither;
    m->noise.logits = (mask & AME_C5) != 0;
    m->noise.head = (mask & AME_C5) != 0;
    m->noise.eta = ame_eta(&tr->ame);
    m->noise.seed = o->seed;
    m->noise.step = tr->step;

    // forward and backward
    model_forward(m, tr->inputs, tr->targets, B, T, NULL);
    float loss = m->mean_loss;
    model_backward(m, &tr->grads, tr->inputs, tr->targets);

    // gradient statistics: the norm for clipping, per-group dots for GAME
    AmeGroupStats stats[MAX_GROUPS];
    double norm2 = gradient_stats(&tr->adam, tr->grads.grads, mask ? stats : NULL, G);
    float norm = (float)sqrt(norm2);
    if (!isfinite(loss) || !isfinite(norm)) {
        tr->skipped++;
        tr->step++;
        return loss;
    }
    float scale = (o->clip > 0.0f && norm > o->clip) ? o->clip / norm : 1.0f;

    // learning rates and momenta: the schedule, or GAME's coefficients
    float base = lr_schedule(tr->step, o->steps, o->warmup, o->lr, o->min_lr);
    AmeActions act;
    memset(&act, 0, sizeof(act));
    if (mask) {
        // tr->lr still holds the rates that moved the weights last step, which
        // the hypergradient dL/da = -alpha <g_t, u_{t-1}> needs. The new rate is
        // alpha = exp(a) w(t) = exp(a - ln lr) * schedule(t), written this way so
        // that a at its starting value ln lr gives the schedule's rate exactly
        // (exp(0) = 1), bit for bit, as plain AdamW would.
        ame_step(&tr->ame, &o->ame, tr->step, o->steps, loss, stats, tr->lr, &act);
        double a0 = log((double)o->lr);
        // (a moves under C1, and jumps under C3, so either makes it the rate)
        int a_moves = (mask & (AME_C1 | AME_C3)) != 0;
        for (int g = 0; g < G; g++) {
            tr->lr[g] = a_moves ? (float)(exp(tr->ame.a[g] - a0) * base) : base;
            tr->beta1[g] = (mask & AME_C1) ? ame_beta1(&tr->ame, g) : o->beta1;
        }
        add_entropy_bonus(tr);
    } else {
        for (int g = 0; g < G; g++) {
            tr->lr[g] = base;
            tr->beta1[g] = o->beta1;
        }
    }

    // the weights move
    adamw_step(&tr->adam, m->params_memory, tr->grads.grads, scale, tr->lr, tr->beta1);
    if (mask & (AME_C2 | AME_C5)) apply_noise_shifts(tr, act.s_shift);

    // the per-step trace and the plot's history
    if (tr->csv) trainer_csv_row(tr, loss, norm);
    history_add(tr, loss);
    tr->step++;
    return loss;
}

// ----------------------------------------------------------------------------
// Checkpoints of a training run
//
// Besides the model (VOCB, PARM), a training checkpoint holds the optimizer's
// moments (MOM1, MOM2), GAME's last directions (DIRU, DIRD, when tracked), the
// GAME state (GAME) and the training state (TRAN): the step, the best
// validation loss, the optimizer's counters and every option that shapes the
// run, so that --resume continues it exactly. All generators are counter-based
// (keyed on seed and step), so the seed and the step are their whole state.

#define TRAN_VERSION 1u
#define TRAN_MAGIC 0x4e415254u // "TRAN"

// Writes (or, with b->p NULL, measures) the training state.
static void tran_write(const Trainer* tr, CkptBlob* b) {
    const TrainOptions* o = &tr->opt;
    int G = num_groups(&tr->model.config);

    // the state of the run
    ckpt_blob_put_u64(b, ((uint64_t)TRAN_VERSION << 32) | TRAN_MAGIC);
    ckpt_blob_put_u64(b, (uint64_t)tr->step);
    ckpt_blob_put_f64(b, tr->best_val);
    ckpt_blob_put_u64(b, (uint64_t)tr->best_step);
    ckpt_blob_put_u64(b, (uint64_t)tr->skipped);
    ckpt_blob_put_u64(b, (uint64_t)tr->adam.t);
    ckpt_blob_put_u64(b, (uint64_t)G);
    for (int g = 0; g < G; g++) ckpt_blob_put_f64(b, tr->adam.beta1_power[g]);
    for (int g = 0; g < G; g++) ckpt_blob_put_f64(b, tr->lr[g]);
    for (int g = 0; g < G; g++) ckpt_blob_put_f64(b, tr->beta1[g]);

    // the options that shape it
    ckpt_blob_put_str(b, o->input);
    ckpt_blob_put_str(b, o->output);
    ckpt_blob_put_str(b, o->last);
    ckpt_blob_put_u64(b, o->seed);
    ckpt_blob_put_u64(b, (uint64_t)o->batch);
    ckpt_blob_put_u64(b, (uint64_t)o->steps);
    ckpt_blob_put_u64(b, (uint64_t)o->warmup);
    ckpt_blob_put_f64(b, o->lr);
    ckpt_blob_put_f64(b, o->min_lr);
    ckpt_blob_put_f64(b, o->weight_decay);
    ckpt_blob_put_f64(b, o->clip);
    ckpt_blob_put_f64(b, o->val_fraction);
    ckpt_blob_put_f64(b, o->beta1);
    ckpt_blob_put_f64(b, o->beta2);
    ckpt_blob_put_f64(b, o->adam_eps);
    ckpt_blob_put_u64(b, (uint64_t)o->eval_every);
    ckpt_blob_put_u64(b, (uint64_t)o->eval_batches);
    ckpt_blob_put_u64(b, (uint64_t)o->save_every);
    ckpt_blob_put_u64(b, o->game_mask);
    ckpt_blob_put_u64(b, (uint64_t)o->dither);
    for (int i = 0; i < NUM_AME_FIELDS; i++) {
        const char* f = (const char*)&o->ame + AME_FIELDS[i].offset;
        ckpt_blob_put_f64(b, AME_FIELDS[i].is_int ? (double)*(const int*)f : *(const double*)f);
    }
}

int trainer_save(const Trainer* tr, const char* path, char* err, size_t errlen) {
    const Model* m = &tr->model;

    // a non-finite weight is never written
    for (size_t i = 0; i < m->num_params; i++) {
        if (!isfinite(m->params_memory[i])) {
            snprintf(err, errlen, "not saving %s: parameter %zu is not finite (the run "
                     "diverged; try a lower --lr)", path, i);
            return -1;
        }
    }

    // the sections
    Checkpoint ck;
    ckpt_init(&ck, &m->config);
    ckpt_add_u32(&ck, "VOCB", tr->tok.symbols, tr->tok.size);
    ckpt_add_f32(&ck, "PARM", m->params_memory, m->num_params);
    ckpt_add_f32(&ck, "MOM1", tr->adam.m, m->num_params);
    ckpt_add_f32(&ck, "MOM2", tr->adam.v, m->num_params);
    if (tr->adam.u) {
        ckpt_add_f32(&ck, "DIRU", tr->adam.u, m->num_params);
        ckpt_add_f32(&ck, "DIRD", tr->adam.d, m->num_params);
    }
    CkptBlob size = {0};
    tran_write(tr, &size);
    CkptBlob tran = {xcalloc(size.n, 1, "training state"), 0, size.n, 0};
    tran_write(tr, &tran);
    ckpt_add(&ck, "TRAN", tran.p, tran.n);
    size_t game_size = ame_serialize(&tr->ame, NULL);
    unsigned char* game = xmalloc(game_size, "GAME state");
    ame_serialize(&tr->ame, game);
    ckpt_add(&ck, "GAME", game, game_size);

    // written to a temporary file, then renamed over path
    int rc = ckpt_save(&ck, path, err, errlen);
    free(game);
    free(tran.p);
    return rc;
}

// The options stored in a checkpoint's TRAN section. Strings are malloc'd into
// strings[0..2] (input, output, last), which the caller frees.
static int tran_read_options(const CkptSection* sec, TrainOptions* o, char* strings[3],
                             char* err, size_t errlen) {
    CkptBlob b = {sec->data, 0, sec->size, 0};
    uint64_t magic = ckpt_blob_get_u64(&b);
    if ((magic & 0xffffffffu) != TRAN_MAGIC || (magic >> 32) != TRAN_VERSION) {
        snprintf(err, errlen, "its training state has an unknown format (version %u); "
                 "it was written by another version of train", (unsigned)(magic >> 32));
        return -1;
    }
    for (int i = 0; i < 5; i++) ckpt_blob_get_u64(&b); // step .. optimizer steps, read later
    uint64_t G = ckpt_blob_get_u64(&b);
    if (b.bad || G > MAX_GROUPS) goto corrupt;
    b.n += 3 * 8 * G;
    strings[0] = ckpt_blob_get_str(&b);
    strings[1] = ckpt_blob_get_str(&b);
    strings[2] = ckpt_blob_get_str(&b);
    o->input = strings[0] ? strings[0] : o->input;
    o->output = strings[1] ? strings[1] : o->output;
    o->last = strings[2];
    o->seed = ckpt_blob_get_u64(&b);
    o->batch = (int)ckpt_blob_get_u64(&b);
    o->steps = (long)ckpt_blob_get_u64(&b);
    o->warmup = (long)ckpt_blob_get_u64(&b);
    o->lr = (float)ckpt_blob_get_f64(&b);
    o->min_lr = (float)ckpt_blob_get_f64(&b);
    o->weight_decay = (float)ckpt_blob_get_f64(&b);
    o->clip = (float)ckpt_blob_get_f64(&b);
    o->val_fraction = (float)ckpt_blob_get_f64(&b);
    o->beta1 = (float)ckpt_blob_get_f64(&b);
    o->beta2 = (float)ckpt_blob_get_f64(&b);
    o->adam_eps = (float)ckpt_blob_get_f64(&b);
    o->eval_every = (long)ckpt_blob_get_u64(&b);
    o->eval_batches = (int)ckpt_blob_get_u64(&b);
    o->save_every = (long)ckpt_blob_get_u64(&b);
    o->game_mask = (unsigned)ckpt_blob_get_u64(&b);
    o->dither = (int)ckpt_blob_get_u64(&b);
    for (int i = 0; i < NUM_AME_FIELDS; i++) {
        char* f = (char*)&o->ame + AME_FIELDS[i].offset;
        double v = ckpt_blob_get_f64(&b);
        if (AME_FIELDS[i].is_int) *(int*)f = (int)v;
        else *(double*)f = v;
    }
    if (b.bad || o->batch < 1 || o->steps < 1 || o->eval_every < 1 || o->eval_batches < 1)
        goto corrupt;
    return 0;
corrupt:
    snprintf(err, errlen, "its training state is damaged");
    return -1;
}

int train_options_from_checkpoint(const char* path, TrainOptions* o, char* strings[3],
                                  char* err, size_t errlen) {
    Checkpoint ck;
    strings[0] = strings[1] = strings[2] = NULL;
    if (ckpt_load(&ck, path, err, errlen) != 0) return -1;
    const CkptSection* sec = ckpt_find(&ck, "TRAN");
    char why[512];
    const char* bad_shape;
    int rc = 0;
    if (!sec) {
        snprintf(err, errlen, "%s holds a model but no training state, so it cannot be "
                 "resumed; start a new run (it can still be sampled with run)", path);
        rc = -1;
    } else if (tran_read_options(sec, o, strings, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        rc = -1;
    } else if ((bad_shape = config_check(&ck.config)) != NULL) {
        snprintf(err, errlen, "%s: its configuration is invalid (%s): it is damaged",
                 path, bad_shape);
        rc = -1;
    }
    o->layers = ck.config.layers;
    o->heads = ck.config.heads;
    o->channels = ck.config.channels;
    o->context = ck.config.context;
    o->game = NULL;
    ckpt_free_loaded(&ck);
    return rc;
}

// Restores the state of a run from its checkpoint, into a trainer whose model,
// optimizer and GAME state are already built with the checkpoint's shapes.
static int trainer_restore(Trainer* tr, const Checkpoint* ck, char* err, size_t errlen) {
    Model* m = &tr->model;
    size_t n = m->num_params;

    // optimizer moments, and GAME's directions when this run tracks them
    if (ckpt_read_f32(ck, "MOM1", tr->adam.m, n, err, errlen) != 0 ||
        ckpt_read_f32(ck, "MOM2", tr->adam.v, n, err, errlen) != 0)
        return -1;
    if (tr->adam.u && ckpt_find(ck, "DIRU")) {
        if (ckpt_read_f32(ck, "DIRU", tr->adam.u, n, err, errlen) != 0 ||
            ckpt_read_f32(ck, "DIRD", tr->adam.d, n, err, errlen) != 0)
            return -1;
    }

    // the training state
    const CkptSection* sec = ckpt_find(ck, "TRAN");
    if (!sec) {
        snprintf(err, errlen, "no training state in the checkpoint");
        return -1;
    }
    CkptBlob b = {sec->data, 0, sec->size, 0};
    ckpt_blob_get_u64(&b);
    tr->step = (long)ckpt_blob_get_u64(&b);
    tr->best_val = (float)ckpt_blob_get_f64(&b);
    tr->best_step = (long)ckpt_blob_get_u64(&b);
    tr->skipped = (long)ckpt_blob_get_u64(&b);
    tr->adam.t = (long)ckpt_blob_get_u64(&b);
    int G = (int)ckpt_blob_get_u64(&b);
    if (b.bad || G != num_groups(&m->config) || tr->step < 0) {
        snprintf(err, errlen, "the training state does not match the model");
        return -1;
    }
    for (int g = 0; g < G; g++) tr->adam.beta1_power[g] = ckpt_blob_get_f64(&b);
    for (int g = 0; g < G; g++) tr->lr[g] = (float)ckpt_blob_get_f64(&b);
    for (int g = 0; g < G; g++) tr->beta1[g] = (float)ckpt_blob_get_f64(&b);
    if (b.bad) {
        snprintf(err, errlen, "the training state is damaged");
        return -1;
    }

    // the GAME state
    const CkptSection* game = ckpt_find(ck, "GAME");
    if (!game) {
        snprintf(err, errlen, "it has no GAME section, which resuming needs: it was not "
                 "written by train, or is damaged; resume from a .last checkpoint of train");
        return -1;
    }
    char why[256];
    if (ame_deserialize(&tr->ame, game->data, game->size, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "its GAME state: %s", why);
        return -1;
    }
    if (tr->ame.mask != tr->opt.game_mask || tr->ame.groups != G) {
        char was[64];
        ame_mode_string(tr->ame.mask, was, sizeof(was));
        snprintf(err, errlen, "the checkpoint was trained with --game %s; resume it "
                 "with that mode", was);
        return -1;
    }
    return 0;
}

// Reads and encodes the input, splits it, builds the model and optimizer (or
// restores them with o->resume). Returns 0, or -1 with a message in err.
int trainer_init(Trainer* tr, const TrainOptions* o, char* err, size_t errlen) {
    memset(tr, 0, sizeof(*tr));
    tr->opt = *o;
    char why[512];

    // the text
    size_t n;
    unsigned char* text = read_file(o->input, &n, err, errlen);
    if (!text) return -1;
    if (n == 0) {
        snprintf(err, errlen, "%s is empty; give a text file with -i FILE", o->input);
        free(text);
        return -1;
    }

    // the model and its vocabulary: from the checkpoint, or new
    Checkpoint ck;
    int resuming = o->resume != NULL;
    if (resuming) {
        if (ckpt_load(&ck, o->resume, err, errlen) != 0) {
            free(text);
            return -1;
        }
        if (model_from_checkpoint(&tr->model, &tr->tok, &ck, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s: %s", o->resume, why);
            ckpt_free_loaded(&ck);
            free(text);
            return -1;
        }
        const GameConfig* c = &tr->model.config;
        if (c->layers != o->layers || c->heads != o->heads || c->channels != o->channels ||
            c->context != o->context) {
            snprintf(err, errlen, "%s has %d layers, %d heads, %d channels and context "
                     "%d; a resumed run keeps its shape, so leave out the shape flags",
                     o->resume, c->layers, c->heads, c->channels, c->context);
            ckpt_free_loaded(&ck);
            free(text);
            return -1;
        }
    } else {
        tokenizer_build(&tr->tok, text, n);
    }

    // the text as ids; a resumed run's text must fit its vocabulary
    tr->tokens = xmalloc(n * sizeof(int), "token ids");
    size_t bad_offset;
    uint32_t bad_symbol;
    long count = tokenizer_encode(&tr->tok, text, n, tr->tokens, &bad_offset, &bad_symbol);
    free(text);
    if (count < 0) {
        char what[64];
        tokenizer_describe(bad_symbol, what, sizeof(what));
        snprintf(err, errlen, "%s has the character %s (byte %zu) that the checkpoint's "
                 "vocabulary lacks; resume with the text the run was trained on",
                 o->input, what, bad_offset);
        if (resuming) ckpt_free_loaded(&ck);
        return -1;
    }
    tr->n_tokens = (size_t)count;

    // the last val_fraction of the text is validation; both parts need windows
    size_t n_val = (size_t)(tr->n_tokens * (double)o->val_fraction);
    size_t n_train = tr->n_tokens - n_val;
    size_t need = (size_t)o->context + 1;
    if (n_train < need || n_val < need) {
        snprintf(err, errlen, "%s has %zu characters: too short for context %d "
                 "(the training and validation parts each need at least %zu); use "
                 "a longer text, a smaller --context or a larger --val-fraction",
                 o->input, tr->n_tokens, o->context, need);
        if (resuming) ckpt_free_loaded(&ck);
        return -1;
    }
    tr->train = (Split){tr->tokens, n_train};
    tr->val = (Split){tr->tokens + n_train, n_val};

    // a new model
    if (!resuming) {
        GameConfig cfg = {o->context, tr->tok.size, o->layers, o->heads, o->channels};
        const char* bad = config_check(&cfg);
        if (bad) {
            snprintf(err, errlen, "invalid model shape: %s", bad);
            return -1;
        }
        model_init(&tr->model, &cfg);
        model_init_weights(&tr->model, o->seed);

        // the block and logit noise scales start at GAME's sigma0 (within its clamp)
        float s0 = ame_clamp_s(&o->ame, ame_initial_s(&o->ame));
        int starts[] = {P_NOISE_ATT, P_NOISE_MLP, P_NOISE_LOGIT};
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < tr->model.param_sizes[starts[k]]; i++)
                tr->model.params.t[starts[k]][i] = s0;
    }

    // gradients, optimizer, GAME, batches
    const GameConfig* cfg = &tr->model.config;
    model_prepare(&tr->model, o->batch, o->context);
    gradients_init(&tr->grads, &tr->model);
    adamw_init(&tr->adam, &tr->model, o->beta2, o->adam_eps, o->weight_decay,
               (o->game_mask & (AME_C1 | AME_C3)) != 0);
    if (ame_init(&tr->ame, &o->ame, num_groups(cfg), o->game_mask, o->seed, o->lr,
                 o->beta1) != 0) {
        snprintf(err, errlen, "the GAME constants are out of range (see --game-set)");
        if (resuming) ckpt_free_loaded(&ck);
        return -1;
    }
    tr->inputs = xmalloc((size_t)o->batch * o->context * sizeof(int), "batch");
    tr->targets = xmalloc((size_t)o->batch * o->context * sizeof(int), "batch");
    tr->best_val = INFINITY;
    tr->best_step = -1;

    // a resumed run's state
    if (resuming) {
        int rc = trainer_restore(tr, &ck, why, sizeof(why));
        ckpt_free_loaded(&ck);
        if (rc != 0) {
            snprintf(err, errlen, "%s: %s", o->resume, why);
            return -1;
        }
    }
    return 0;
}

void trainer_free(Trainer* tr) {
    model_free(&tr->model);
    gradients_free(&tr->grads);
    adamw_free(&tr->adam);
    tokenizer_free(&tr->tok);
    free(tr->tokens);
    free(tr->inputs);
    free(tr->targets);
    if (tr->csv) fclose(tr->csv);
    free(tr->history);
    memset(tr, 0, sizeof(*tr));
}

// ----------------------------------------------------------------------------
// Command-line options


void train_usage(FILE* f) {
    TrainOptions d;
    train_options_default(&d);
    fprintf(f,
        "usage: train [options]\n"
        "Trains a character-level transformer on a text file and keeps the model with\n"
        "the best validation loss.\n\n"
        "data and checkpoints\n"
        "  -i, --input FILE        text to train on (default %s)\n"
        "  -o, --output FILE       checkpoint of the best model (default %s)\n"
        "      --last FILE         checkpoint of the latest step (default OUTPUT.last)\n"
        "      --save-every N      steps between saves of the latest checkpoint, 0 only\n"
        "                          at the end (default %ld)\n"
        "      --resume FILE       continue a run from a checkpoint (the .last one)\n"
        "      --stop-at N         stop after step N, saving the latest checkpoint, as an\n"
        "                          interruption would (resume it later)\n"
        "      --val-fraction F    last fraction of the text held out (default %.2f)\n"
        "model\n"
        "      --layers N          transformer blocks (default %d)\n"
        "      --heads N           attention heads (default %d)\n"
        "      --channels N        width, a multiple of heads (default %d)\n"
        "      --context N         characters per sequence (default %d)\n"
        "optimisation\n"
        "      --batch N           sequences per step (default %d)\n"
        "      --steps N           training steps (default %ld)\n"
        "      --lr F              peak learning rate (default %g)\n"
        "      --min-lr F          final learning rate of the cosine (default %g)\n"
        "      --warmup N          linear warmup steps (default %ld, or steps/10 if less)\n"
        "      --weight-decay F    AdamW decay of the matrices (default %g)\n"
        "      --clip F            gradient-norm clip, 0 for none (default %g)\n"
        "      --beta1 F           AdamW momentum, GAME's starting mu (default %g)\n"
        "      --beta2 F           AdamW second-moment decay (default %g)\n"
        "      --seed N            seed of initialisation, batches and noise (default %llu)\n"
        "GAME (see docs/GAME.md)\n"
        "      --game MODE         full, off, or a list such as c1,c2,c4 (default %s)\n"
        "      --game-set K=V      change a GAME constant, e.g. lambda_h=0.5; repeatable\n"
        "      --no-dither         independent noise instead of antithetic pairs\n"
        "      --log FILE          per-step CSV trace of loss and coefficients\n"
        "progress\n"
        "      --eval-every N      steps between evaluations (default %ld)\n"
        "      --eval-batches N    batches per evaluation and split (default %d)\n"
        "      --log-every N       steps between log lines (default %d)\n"
        "      --plot FILE         PNG of losses and GAME traces, redrawn at every eval\n"
        "  -q, --quiet             only errors and the final summary\n"
        "      --threads N         OpenMP threads, 0 for OMP_NUM_THREADS or all (default 0)\n"
        "  -h, --help              this text\n\n"
        "examples:\n"
        "  train                                   the default recipe on Shakespeare\n"
        "  train -i notes.txt -o notes.bin --steps 3000\n"
        "  train --resume notes.bin.last --steps 5000\n",
        d.input, d.output, d.save_every, d.val_fraction, d.layers, d.heads, d.channels,
        d.context, d.batch, d.steps, d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip,
        d.beta1, d.beta2, (unsigned long long)d.seed, d.game, d.eval_every, d.eval_batches,
        d.log_every);
    fprintf(f, "\nGAME constants for --game-set:");
    for (int i = 0; i < NUM_AME_FIELDS; i++)
        fprintf(f, "%s%s", i % 8 ? ", " : "\n  ", AME_FIELDS[i].name);
    fprintf(f, "\n");
}

// Parses a whole-string integer in [lo, hi] into *out; -1 with a message if not.
static int parse_long(const char* flag, const char* s, long lo, long hi, long* out,
                      char* err, size_t errlen) {
    char* end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        snprintf(err, errlen, "--%s '%s': expected a whole number from %ld to %ld", flag,
                 s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

// Parses a whole-string finite number in [lo, hi] into *out; -1 with a message.
static int parse_double(const char* flag, const char* s, double lo, double hi,
                        double* out, char* err, size_t errlen) {
    char* end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        snprintf(err, errlen, "--%s '%s': expected a number from %g to %g", flag, s, lo,
                 hi);
        return -1;
    }
    *out = v;
    return 0;
}

// --game-set NAME=VALUE
static int parse_game_set(AmeParams* p, const char* arg, char* err, size_t errlen) {
    const char* eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : 0;
    for (int i = 0; eq && i < NUM_AME_FIELDS; i++) {
        if (strlen(AME_FIELDS[i].name) != len || strncmp(arg, AME_FIELDS[i].name, len))
            continue;
        double v;
        if (parse_double("game-set", eq + 1, -1e6, 1e6, &v, err, errlen) != 0) return -1;
        char* field = (char*)p + AME_FIELDS[i].offset;
        if (AME_FIELDS[i].is_int) *(int*)field = (int)v;
        else *(double*)field = v;
        return 0;
    }
    snprintf(err, errlen, "--game-set '%s': expected NAME=VALUE with a NAME listed by "
             "train --help", arg);
    return -1;
}

enum {
    OPT_LAYERS = 256, OPT_HEADS, OPT_CHANNELS, OPT_CONTEXT, OPT_BATCH, OPT_STEPS,
    OPT_LR, OPT_MIN_LR, OPT_WARMUP, OPT_WD, OPT_CLIP, OPT_SEED, OPT_EVAL_EVERY,
    OPT_EVAL_BATCHES, OPT_VAL_FRACTION, OPT_THREADS, OPT_LOG_EVERY, OPT_GAME, OPT_LOG,
    OPT_GAME_SET, OPT_NO_DITHER, OPT_RESUME, OPT_SAVE_EVERY, OPT_LAST, OPT_PLOT, OPT_STOP_AT,
    OPT_BETA1, OPT_BETA2,
};

// Reads an integer flag into an int or long field.
#define LONG_FLAG(name, lo, hi, field)                                              \
    do {                                                                            \
        long v_;                                                                    \
        if (parse_long(name, optarg, lo, hi, &v_, err, errlen) != 0) return -1;     \
        field = v_;                                                                 \
    } while (0)
#define FLOAT_FLAG(name, lo, hi, field)                                             \
    do {                                                                            \
        double v_;                                                                  \
        if (parse_double(name, optarg, lo, hi, &v_, err, errlen) != 0) return -1;   \
        field = (float)v_;                                                          \
    } while (0)

int train_parse_args(TrainOptions* o, int argc, char** argv, char* err, size_t errlen) {
    static const struct option longs[] = {
        {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'},
        {"layers", required_argument, 0, OPT_LAYERS},
        {"heads", required_argument, 0, OPT_HEADS},
        {"channels", required_argument, 0, OPT_CHANNELS},
        {"context", required_argument, 0, OPT_CONTEXT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"steps", required_argument, 0, OPT_STEPS},
        {"lr", required_argument, 0, OPT_LR},
        {"min-lr", required_argument, 0, OPT_MIN_LR},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"weight-decay", required_argument, 0, OPT_WD},
        {"clip", required_argument, 0, OPT_CLIP},
        {"seed", required_argument, 0, OPT_SEED},
        {"eval-every", required_argument, 0, OPT_EVAL_EVERY},
        {"eval-batches", required_argument, 0, OPT_EVAL_BATCHES},
        {"val-fraction", required_argument, 0, OPT_VAL_FRACTION},
        {"threads", required_argument, 0, OPT_THREADS},
        {"log-every", required_argument, 0, OPT_LOG_EVERY},
        {"game", required_argument, 0, OPT_GAME},
        {"game-set", required_argument, 0, OPT_GAME_SET},
        {"no-dither", no_argument, 0, OPT_NO_DITHER},
        {"log", required_argument, 0, OPT_LOG},
        {"resume", required_argument, 0, OPT_RESUME},
        {"save-every", required_argument, 0, OPT_SAVE_EVERY},
        {"last", required_argument, 0, OPT_LAST},
        {"plot", required_argument, 0, OPT_PLOT},
        {"stop-at", required_argument, 0, OPT_STOP_AT},
        {"beta1", required_argument, 0, OPT_BETA1},
        {"beta2", required_argument, 0, OPT_BETA2},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, warmup_given = 0;
    opterr = 0;
    optind = 0; // a full rescan, so the parser can run more than once
    while ((c = getopt_long(argc, argv, ":i:o:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case OPT_LAYERS: LONG_FLAG("layers", 1, 64, o->layers); break;
        case OPT_HEADS: LONG_FLAG("heads", 1, 1024, o->heads); break;
        case OPT_CHANNELS: LONG_FLAG("channels", 1, 16384, o->channels); break;
        case OPT_CONTEXT: LONG_FLAG("context", 1, 65536, o->context); break;
        case OPT_BATCH: LONG_FLAG("batch", 1, 1 << 20, o->batch); break;
        case OPT_STEPS: LONG_FLAG("steps", 1, 1L << 40, o->steps); break;
        case OPT_LR: FLOAT_FLAG("lr", 1e-12, 1e3, o->lr); break;
        case OPT_MIN_LR: FLOAT_FLAG("min-lr", 0, 1e3, o->min_lr); break;
        case OPT_WARMUP:
            LONG_FLAG("warmup", 0, 1L << 40, o->warmup);
            warmup_given = 1;
            break;
        case OPT_WD: FLOAT_FLAG("weight-decay", 0, 1e3, o->weight_decay); break;
        case OPT_CLIP: FLOAT_FLAG("clip", 0, 1e12, o->clip); break;
        case OPT_SEED: LONG_FLAG("seed", 0, 0x7fffffffffffffffL, o->seed); break;
        case OPT_EVAL_EVERY: LONG_FLAG("eval-every", 1, 1L << 40, o->eval_every); break;
        case OPT_EVAL_BATCHES: LONG_FLAG("eval-batches", 1, 1 << 20, o->eval_batches); break;
        case OPT_VAL_FRACTION: FLOAT_FLAG("val-fraction", 1e-6, 0.9, o->val_fraction); break;
        case OPT_THREADS: LONG_FLAG("threads", 0, 1024, o->threads); break;
        case OPT_LOG_EVERY: LONG_FLAG("log-every", 1, 1 << 30, o->log_every); break;
        case OPT_SAVE_EVERY: LONG_FLAG("save-every", 0, 1L << 40, o->save_every); break;
        case OPT_STOP_AT: LONG_FLAG("stop-at", 1, 1L << 40, o->stop_at); break;
        case OPT_BETA1: FLOAT_FLAG("beta1", 0.0, 0.9999, o->beta1); break;
        case OPT_BETA2: FLOAT_FLAG("beta2", 0.0, 0.99999, o->beta2); break;
        case OPT_GAME: {
            char why[256];
            if (ame_parse_mode(optarg, &o->game_mask, why, sizeof(why)) != 0) {
                snprintf(err, errlen, "--game '%s': %s", optarg, why);
                return -1;
            }
            o->game = optarg;
            break;
        }
        case OPT_GAME_SET:
            if (parse_game_set(&o->ame, optarg, err, errlen) != 0) return -1;
            o->game_sets++;
            break;
        case OPT_NO_DITHER: o->dither = 0; break;
        case OPT_LOG: o->log_csv = optarg; break;
        case OPT_RESUME: o->resume = optarg; break;
        case OPT_LAST: o->last = optarg; break;
        case OPT_PLOT: o->plot = optarg; break;
        case 'q': o->quiet = 1; break;
        case 'h': return 1;
        case ':':
            snprintf(err, errlen, "%s needs a value; see train --help", argv[optind - 1]);
            return -1;
        default:
            snprintf(err, errlen, "unknown option '%s'; see train --help",
                     optind > 0 && optind <= argc ? argv[optind - 1] : "?");
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s'; the text is given with -i FILE",
                 argv[optind]);
        return -1;
    }

    // checks that involve more than one flag
    if (!warmup_given && o->warmup > o->steps / 10) o->warmup = o->steps / 10;
    if (o->channels % o->heads != 0) {
        snprintf(err, errlen, "--channels %d is not a multiple of --heads %d", o->channels,
                 o->heads);
        return -1;
    }
    if (o->min_lr > o->lr) {
        snprintf(err, errlen, "--min-lr %g is above --lr %g", o->min_lr, o->lr);
        return -1;
    }
    if (o->warmup > o->steps) {
        snprintf(err, errlen, "--warmup %ld is longer than --steps %ld", o->warmup,
                 o->steps);
        return -1;
    }
    if (o->ame.trial_steps < 1 || o->ame.a_min > o->ame.a_max ||
        o->ame.mu_min > o->ame.mu_max || o->ame.s_min > o->ame.s_max ||
        o->ame.eta_min > o->ame.eta_max) {
        snprintf(err, errlen, "--game-set: a range is empty (a minimum above its maximum) "
                 "or trial_steps < 1");
        return -1;
    }
    return 0;
}

#ifndef GAME_NO_MAIN
// ----------------------------------------------------------------------------
// The train program

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Prints a sample of n characters from the model, seeded, temperature 1,
// starting from the first character of the validation text.
static void print_sample(Model* m, const Tokenizer* tk, const Split* val, uint64_t seed,
                         int n) {
    Sampler s;
    sampler_init(&s, m->config.vocab_size, 1.0f, 0, 1.0f, seed);
    generate(m, tk, &s, val->tokens, 1, n, stdout);
    fputc('\n', stdout);
    sampler_free(&s);
}

// Signals: the first SIGINT or SIGTERM asks the loop to stop after the current
// step and save; a second one ends the process at once. Saves go through a
// temporary file and a rename, so the checkpoints on disk stay whole either
// way; the handler removes this process's temporary files on the way out.
static volatile sig_atomic_t stop_signal = 0;
static char temp_paths[2][4200];

static void on_signal(int sig) {
    if (stop_signal) {
        for (int i = 0; i < 2; i++)
            if (temp_paths[i][0]) unlink(temp_paths[i]);
        _exit(128 + sig);
    }
    stop_signal = sig;
}

// 1 when paths a and b name the same existing file (links and ./ included).
static int same_file(const char* a, const char* b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

// Checks before any work that train can write the file at path (flag names
// the option it came from): not a folder, not the training text, and a file
// can be created in its folder (tried with this process's temporary name,
// which is removed again). Returns 0, or -1 with a message.
static int check_output(const char* flag, const char* path, const char* input, char* err,
                        size_t errlen) {
    struct stat st;
    if (path[0] == '\0') {
        snprintf(err, errlen, "%s is an empty file name", flag);
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s %s is a folder; give a file name", flag, path);
        return -1;
    }
    if (same_file(path, input) || strcmp(path, input) == 0) {
        snprintf(err, errlen, "%s %s is the training text itself; choose another file",
                 flag, path);
        return -1;
    }
    char probe[4200];
    snprintf(probe, sizeof(probe), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create files next to %.900s: %s; choose "
                 "another path", flag, path, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

// Whether two output paths name one file (the same string, or the same inode).
static int same_output(const char* a, const char* b) {
    return strcmp(a, b) == 0 || same_file(a, b);
}

// Checks every file the run will write, against the input and each other.
static int check_outputs(const TrainOptions* o, char* err, size_t errlen) {
    const char* flags[4] = {"-o", "--last", "--plot", "--log"};
    const char* paths[4] = {o->output, o->last, o->plot, o->log_csv};
    for (int i = 0; i < 4; i++) {
        if (!paths[i]) continue;
        if (check_output(flags[i], paths[i], o->input, err, errlen) != 0) return -1;
        for (int j = 0; j < i; j++) {
            if (paths[j] && same_output(paths[i], paths[j])) {
                snprintf(err, errlen, "%s and %s are the same file (%s); give them "
                         "different paths", flags[j], flags[i], paths[i]);
                return -1;
            }
        }
    }
    return 0;
}

static void format_duration(double sec, char* buf, size_t len) {
    long s = (long)(sec + 0.5);
    if (s >= 3600) snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
}

int main(int argc, char** argv) {
    // options: the defaults, or a resumed run's own, then the flags on top
    TrainOptions o;
    train_options_default(&o);
    char err[1024];
    int parsed = train_parse_args(&o, argc, argv, err, sizeof(err));
    if (parsed == 1) {
        train_usage(stdout);
        return stdout_finish() == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    char* stored[3] = {NULL, NULL, NULL};
    if (parsed == 0 && o.resume) {
        const char* resume = o.resume;
        train_options_default(&o);
        if (train_options_from_checkpoint(resume, &o, stored, err, sizeof(err)) != 0) {
            fprintf(stderr, "error: %s\n", err);
            return EXIT_FAILURE;
        }
        parsed = train_parse_args(&o, argc, argv, err, sizeof(err));
    }
    if (parsed != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    char mode[64], last_path[4096];
    ame_mode_string(o.game_mask, mode, sizeof(mode));
    o.game = mode;
    if (o.game_sets > 0 && o.game_mask == 0)
        fprintf(stderr, "note: GAME is off, so --game-set changes nothing; turn it on with "
                "--game full or a list such as c1,c2\n");

    // the latest checkpoint: --last; or, resuming, the file resumed from (unless
    // a new -o was given); or OUTPUT.last
    int output_given = !o.resume || o.output != stored[1];
    int last_given = o.last && (!o.resume || o.last != stored[2]);
    if (!last_given) {
        if (o.resume && !output_given) {
            o.last = o.resume;
        } else {
            snprintf(last_path, sizeof(last_path), "%s.last", o.output);
            o.last = last_path;
        }
    }
    // resuming the best checkpoint itself: its latest step would go over it
    if (o.resume && !output_given && !last_given && same_output(o.output, o.last)) {
        fprintf(stderr, "error: %s is this run's best checkpoint (its -o), and a resumed "
                "run saves its latest step into the file it resumed; resume from %s.last "
                "instead, or give --last another path\n", o.resume, o.output);
        return EXIT_FAILURE;
    }
    if (check_outputs(&o, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif

    // set up
    Trainer tr;
    if (trainer_init(&tr, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        if (o.resume && o.input == stored[0] && access(o.input, R_OK) != 0)
            fprintf(stderr, "       (the text path %s comes from the checkpoint; give "
                    "-i FILE if the text is elsewhere)\n", o.input);
        if (!o.resume && strcmp(o.input, DEFAULT_TEXT) == 0 && access(o.input, R_OK) != 0)
            fprintf(stderr, "       (%s is the default text, found from the project's "
                    "directory; run train there, or give -i FILE)\n", o.input);
        return EXIT_FAILURE;
    }
    if (tr.step >= o.steps) {
        fprintf(stderr, "error: %s has already run %ld of %ld steps; give a larger "
                "--steps to train on\n", o.resume, tr.step, o.steps);
        return EXIT_FAILURE;
    }
    if (o.log_csv) {
        tr.csv = fopen(o.log_csv, tr.step > 0 ? "a" : "w");
        if (!tr.csv) {
            fprintf(stderr, "error: cannot write the log %s: %s\n", o.log_csv,
                    strerror(errno));
            return EXIT_FAILURE;
        }
        if (tr.step == 0) trainer_csv_header(&tr);
    }
    snprintf(temp_paths[0], sizeof(temp_paths[0]), "%s.tmp.%ld", o.output, (long)getpid());
    snprintf(temp_paths[1], sizeof(temp_paths[1]), "%s.tmp.%ld", o.last, (long)getpid());
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    // the banner
    const GameConfig* cfg = &tr.model.config;
    size_t base_params = 0;
    for (int i = 0; i < NUM_BASE_PARAM_TENSORS; i++) base_params += tr.model.param_sizes[i];
    FILE* info = o.quiet ? NULL : stdout;
    int live = info && isatty(fileno(stdout));
    if (info) {
        printf("model: %d layer%s, %d head%s, %d channels, context %d, vocabulary %d\n",
               cfg->layers, plural(cfg->layers), cfg->heads, plural(cfg->heads),
               cfg->channels, cfg->context, cfg->vocab_size);
        printf("parameters: %zu (plus %zu GAME noise scales)\n", base_params,
               tr.model.num_params - base_params);
        printf("data: %s, %zu characters: %zu train, %zu validation\n", o.input,
               tr.n_tokens, tr.train.n, tr.val.n);
        printf("training: %ld steps, batch %d, lr %g -> %g, warmup %ld, GAME %s, "
               "%d thread%s\n", o.steps, o.batch, o.lr, o.min_lr, o.warmup, o.game, threads,
               plural(threads));
        if (tr.step > 0)
            printf("resumed from %s at step %ld (best validation loss %.4f)\n", o.resume,
                   tr.step, tr.best_val);
        fflush(stdout);
    }

    // the loop
    double t_log = now_ms(), t_start = t_log, t_train = 0.0;
    long tokens_per_step = (long)o.batch * o.context, first_step = tr.step;
    double loss_sum = 0.0;
    int loss_count = 0, consecutive_skips = 0, status = EXIT_SUCCESS, best_saved = 0;
    while (tr.step < o.steps && !stop_signal) {
        double t0 = now_ms();
        long skipped_before = tr.skipped;
        float loss = trainer_step(&tr);
        t_train += now_ms() - t0;
        long step = tr.step;

        // a skipped step: a non-finite loss or gradient never reaches the weights
        if (tr.skipped > skipped_before) {
            consecutive_skips++;
            fprintf(stderr, "%swarning: step %ld: the loss or gradient is not finite; the "
                    "step was skipped\n", live ? "\n" : "", step);
            if (consecutive_skips >= MAX_CONSECUTIVE_SKIPS) {
                fprintf(stderr, "error: %d steps in a row had a non-finite loss or "
                        "gradient: training diverged. Try a lower --lr (now %g); the last "
                        "good checkpoints are kept\n", consecutive_skips, o.lr);
                status = EXIT_FAILURE;
                break;
            }
        } else {
            consecutive_skips = 0;
            loss_sum += loss;
            loss_count++;
        }

        // progress: a line updated in place on a terminal, log lines otherwise
        double elapsed = (now_ms() - t_start) / 1e3;
        if (live) {
            double per_step = elapsed / (step - first_step);
            char el[32], eta[32];
            format_duration(elapsed, el, sizeof(el));
            format_duration(per_step * (o.steps - step), eta, sizeof(eta));
            printf("\r\033[Kstep %ld/%ld | loss %.4f | %.0f tok/s | %s elapsed | ETA %s",
                   step, o.steps, loss, tokens_per_step / per_step, el, eta);
            fflush(stdout);
        }
        if (!live && info && (step % o.log_every == 0 || step == o.steps)) {
            double t = now_ms();
            int n = (int)(step % o.log_every ? step % o.log_every : o.log_every);
            double ms = (t - t_log) / n;
            printf("step %5ld/%ld | loss %.4f | lr %.2e | %7.2f ms/step | %8.0f tok/s\n",
                   step, o.steps, loss_count ? loss_sum / loss_count : NAN,
                   tr.lr[group_head(cfg)], ms, tokens_per_step / ms * 1e3);
            fflush(stdout);
            loss_sum = 0.0;
            loss_count = 0;
            t_log = now_ms();
        }

        // evaluation, and the best checkpoint
        if (step % o.eval_every == 0 || step == o.steps) {
            float train_loss = trainer_eval(&tr, &tr.train, RNG_SITE_EVAL_TRAIN);
            float val_loss = trainer_eval(&tr, &tr.val, RNG_SITE_EVAL_VAL);
            trainer_record_eval(&tr, train_loss, val_loss);
            int best = val_loss < tr.best_val;
            if (best) {
                // the checkpoint carries its own best loss, so set it first, and
                // take it back if the save fails
                float was_val = tr.best_val;
                long was_step = tr.best_step;
                tr.best_val = val_loss;
                tr.best_step = step;
                if (trainer_save(&tr, o.output, err, sizeof(err)) != 0) {
                    tr.best_val = was_val;
                    tr.best_step = was_step;
                    fprintf(stderr, "%serror: %s\n", live ? "\n" : "", err);
                    status = EXIT_FAILURE;
                    break;
                }
                best_saved = 1;
            }
            if (info) {
                printf("%seval step %ld: train %.4f, val %.4f%s%s", live ? "\r\033[K" : "",
                       step, train_loss, val_loss, best ? " (best, saved to " : "",
                       best ? o.output : "");
                if (best) printf(")");
                if (o.game_mask) {
                    char summary[512];
                    ame_summary(&tr.ame, tr.lr[0] / (float)exp(tr.ame.a[0]),
                                trainer_mean_sigma(&tr), summary, sizeof(summary));
                    printf("\n  game: %s", summary);
                }
                printf("\n");
                fflush(stdout);
            }
            if (o.plot && trainer_plot(&tr, o.plot, err, sizeof(err)) != 0)
                fprintf(stderr, "warning: %s\n", err);
            t_log = now_ms(); // evaluation time is not training time
        }

        // the latest checkpoint, every save_every steps
        if (o.save_every > 0 && step % o.save_every == 0 && step < o.steps) {
            if (trainer_save(&tr, o.last, err, sizeof(err)) != 0) {
                fprintf(stderr, "%serror: %s\n", live ? "\n" : "", err);
                status = EXIT_FAILURE;
                break;
            }
        }
        if (o.stop_at > 0 && step >= o.stop_at) break;
    }
    if (live) printf("\n");

    // the latest checkpoint, at the end or on a signal (not after a failure)
    int last_saved = 0;
    if (status == EXIT_SUCCESS) {
        last_saved = trainer_save(&tr, o.last, err, sizeof(err)) == 0;
        if (!last_saved) {
            fprintf(stderr, "error: %s\n", err);
            status = EXIT_FAILURE;
        }
    }
    if (stop_signal) {
        fprintf(stderr, "stopped by signal %d at step %ld; continue with: train --resume "
                "%s\n", (int)stop_signal, tr.step, o.last);
        trainer_free(&tr);
        return 128 + stop_signal;
    }

    // the summary, and a sample from the best model
    char took[32];
    format_duration((now_ms() - t_start) / 1e3, took, sizeof(took));
    printf("done: %ld steps in %s (%.1f ms/step), %ld tokens seen\n", tr.step - first_step,
           took, t_train / (tr.step - first_step > 0 ? tr.step - first_step : 1),
           (tr.step - first_step) * tokens_per_step);
    // where the best model is: this run's -o if it saved one; resumed without a
    // better loss, the earlier run's -o, which a new -o does not replace
    const char* best_path = NULL;
    if (tr.best_step >= 0 && best_saved) best_path = o.output;
    else if (tr.best_step >= 0 && first_step > 0) best_path = stored[1] ? stored[1] : o.output;
    if (best_path) {
        printf("best validation loss %.4f at step %ld, saved in %s%s\n", tr.best_val,
               tr.best_step, best_path, best_saved ? "" : " by the earlier run");
        if (!best_saved && strcmp(best_path, o.output) != 0)
            printf("(this run did not improve on it, so it wrote nothing to %s)\n",
                   o.output);
        printf("sample it with: ./run %s -n 500 -i \"...\"\n", best_path);
    }
    if (last_saved)
        printf("latest step saved in %s (train --resume %s continues it)\n", o.last,
               o.last);
    Model best;
    Tokenizer tok;
    if (status == EXIT_SUCCESS && !o.quiet && o.sample_chars > 0 && best_path &&
        model_load(&best, &tok, NULL, best_path, err, sizeof(err)) == 0) {
        printf("sample from the best model:\n----\n");
        print_sample(&best, &tok, &tr.val, o.seed, o.sample_chars);
        printf("----\n");
        model_free(&best);
        tokenizer_free(&tok);
    }
    if (stdout_finish() != 0) status = EXIT_FAILURE; // the checkpoints are saved
    trainer_free(&tr);
    free(stored[0]);
    free(stored[1]);
    free(stored[2]);
    return status;
}
#endif
