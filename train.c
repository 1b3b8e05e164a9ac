// train.c: the backward pass of every layer, AdamW, the data loader, the
// training loop with GAME, and the `train` program.
//
// The layers' backward functions appear in the same order as their forwards in
// game.c, and each one names the forward expression it differentiates. All
// gradients are accumulated (+=) so that a tensor used twice (the tied token
// embedding, the residual stream) collects both contributions. Sums that run
// across threads' work are split into fixed chunks and added in chunk order, so
// the bits do not depend on the thread count.
#include "train.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "sampler.h"
#include "tokenizer.h"
#include "weights.h"

// Fixed-size chunks for deterministic parallel sums.
#define REDUCE_CHUNK 4096

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
void layernorm_backward(float* dx, float* dw, float* dbias, const float* dout,
                        const float* x, const float* w, const float* mean,
                        const float* rstd, int N, int C) {
    // dx, row by row
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * C;
        const float* xr = x + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        float mean_d = 0.0f, mean_dn = 0.0f;
        for (int c = 0; c < C; c++) {
            float dnorm = d[c] * w[c];
            mean_d += dnorm;
            mean_dn += dnorm * (xr[c] - m) * r;
        }
        mean_d /= C;
        mean_dn /= C;
        float* dxr = dx + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float norm = (xr[c] - m) * r;
            dxr[c] += r * (d[c] * w[c] - mean_d - norm * mean_dn);
        }
    }

    // dw and dbias, channel by channel, each summing the rows in order
    #pragma omp parallel for
    for (int c = 0; c < C; c++) {
        float sw = 0.0f, sb = 0.0f;
        for (int n = 0; n < N; n++) {
            float d = dout[(size_t)n * C + c];
            sw += d * (x[(size_t)n * C + c] - mean[n]) * rstd[n];
            sb += d;
        }
        dw[c] += sw;
        dbias[c] += sb;
    }
}

// forward, per (b, h), over keys t2 <= t of each query t:
//   S = Q K^T / sqrt(hs) + eta sigma_h eps,  P = softmax(S) row by row,
//   out = P V.
// backward:
//   dP = dout V^T,                     dV += P^T dout,
//   dS = P * (dP - rowsum(P * dP)),
//   dQ += dS K / sqrt(hs),             dK += dS^T Q / sqrt(hs),
//   ds_h += sum dS * eta sigma_h eps   (s_h = log sigma_h).
// The products run in blocks of GEMM_TILE_M rows that stop at the diagonal,
// as in the forward. Each (b, h) owns its slices of dq, dk, dv, so the pairs
// run in parallel.
void attention_backward(float* dqkv, float* dnoise, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH,
                        const float* noise_scale, uint64_t noise_key) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C;
    double* ds_part = noise_scale ? xcalloc((size_t)B * NH, sizeof(double), "att") : NULL;

    #pragma omp parallel
    {
        float* vt = xmalloc((size_t)hs * T * sizeof(float), "attention scratch");
        float* dS = xmalloc((size_t)T * T * sizeof(float), "attention scratch");
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                size_t off = (size_t)b * T * C3 + h * hs;
                const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
                float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
                const float* P = att + ((size_t)b * NH + h) * T * T;
                const float* d = dout + (size_t)b * T * C + h * hs;

                // dP = dout V^T (into dS), blocks of queries up to the diagonal
                for (int t = 0; t < T; t++)
                    for (int i = 0; i < hs; i++) vt[(size_t)i * T + t] = v[t * C3 + i];
                for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                    int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                    for (int r = 0; r < rows; r++)
                        memset(dS + (size_t)(t0 + r) * T, 0, (t0 + rows) * sizeof(float));
                    gemm_serial(dS + (size_t)t0 * T, T, d + (size_t)t0 * C, C, 1, vt, T,
                                rows, t0 + rows, hs);
                }

                // dV += P^T dout: rows t2 of a block meet the queries t >= t0
                for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                    int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                    gemm_serial(dv + (size_t)t0 * C3, C3, P + (size_t)t0 * T + t0, 1, T,
                                d + (size_t)t0 * C, C, rows, hs, T - t0);
                }

                // the softmax's backward, the noise gradient, and the 1/sqrt(hs)
                double ds = 0.0;
                for (int t = 0; t < T; t++) {
                    const float* p = P + (size_t)t * T;
                    float* g = dS + (size_t)t * T;
                    float dot = 0.0f;
                    for (int t2 = 0; t2 <= t; t2++) dot += p[t2] * g[t2];
                    for (int t2 = 0; t2 <= t; t2++) g[t2] = p[t2] * (g[t2] - dot);
                    if (noise_scale) {
                        size_t base = (((size_t)b * NH + h) * T + t) * T;
                        for (int t2 = 0; t2 <= t; t2++)
                            ds += g[t2] * noise_scale[h] * rng_normal(noise_key, base + t2);
                    }
                    for (int t2 = 0; t2 <= t; t2++) g[t2] *= scale;
                    for (int t2 = t + 1; t2 < T; t2++) g[t2] = 0.0f;
                }
                if (ds_part) ds_part[(size_t)b * NH + h] = ds;

                // dQ += dS K, blocks of queries over the keys they saw
                for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                    int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                    gemm_serial(dq + (size_t)t0 * C3, C3, dS + (size_t)t0 * T, T, 1, k, C3,
                                rows, hs, t0 + rows);
                }

                // dK += dS^T Q: keys of a block meet the queries t >= t0
                for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                    int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                    gemm_serial(dk + (size_t)t0 * C3, C3, dS + (size_t)t0 * T + t0, 1, T,
                                q + (size_t)t0 * C3, C3, rows, hs, T - t0);
                }
            }
        }
        free(vt);
        free(dS);
    }

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
// d out/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2)
void gelu_backward(float* dx, const float* x, const float* dout, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float xi = x[i];
        float u = GELU_K * (xi + GELU_C * xi * xi * xi);
        float th = fast_tanhf(u);
        float local = 0.5f * (1.0f + th) +
                      0.5f * xi * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_C * xi * xi);
        dx[i] += local * dout[i];
    }
}

// forward: out = resid + h * mult, mult = 1 + eta sigma (+-eps) (or 1 without noise)
// dresid += dout, dh += dout * mult, and since d mult / d s = mult - 1 (s = log
// sigma), ds += sum dout * h * (mult - 1).
void residual_backward(float* dresid, float* dh, float* dnoise, const float* dout,
                       const float* h, size_t N, const float* noise_scale, uint64_t key,
                       int dither, int B, int T, int C) {
    if (!noise_scale) {
        #pragma omp parallel for
        for (size_t i = 0; i < N; i++) {
            dresid[i] += dout[i];
            dh[i] += dout[i];
        }
        return;
    }

    // with noise: the s gradient as a fixed-order sum of chunk partials
    float scale = *noise_scale;
    size_t chunks = (N + REDUCE_CHUNK - 1) / REDUCE_CHUNK;
    double* part = xcalloc(chunks, sizeof(double), "residual");
    #pragma omp parallel for
    for (size_t k = 0; k < chunks; k++) {
        size_t end = (k + 1) * REDUCE_CHUNK < N ? (k + 1) * REDUCE_CHUNK : N;
        double s = 0.0;
        for (size_t i = k * REDUCE_CHUNK; i < end; i++) {
            float mult = noise_multiplier(key, scale, dither, B, T, C, i);
            dresid[i] += dout[i];
            dh[i] += dout[i] * mult;
            s += (double)dout[i] * h[i] * (mult - 1.0f);
        }
        part[k] = s;
    }
    double s = 0.0;
    for (size_t k = 0; k < chunks; k++) s += part[k];
    *dnoise += (float)s;
    free(part);
}

// forward: logits = lnf @ wte^T [+ sign_b eta f(eps_out) * (headin @ sigma_W^T)],
// probs = softmax(logits), loss = mean over B T of -log probs[target].
// dlogits = (probs - onehot(target)) / (B T); then, through the tied matrix,
// dlnf += dlogits @ wte and dwte += dlogits^T @ lnf. With head noise, let
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
        float* dheadin = xcalloc(BT * C, sizeof(float), "head noise gradients");
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
    g->grads = xcalloc(m->num_params, sizeof(float), "parameter gradients");
    param_views(&g->g, g->grads, m->param_sizes);
    g->dacts = NULL;
    g->num_dacts = 0;
}

void gradients_free(Gradients* g) {
    free(g->grads);
    free(g->dacts);
    memset(g, 0, sizeof(*g));
}

// Sizes the activation gradients like the model's activations.
static void gradients_prepare(Gradients* g, const Model* m) {
    if (g->dacts && g->num_dacts == m->num_acts) {
        memset(g->dacts, 0, g->num_dacts * sizeof(float));
    } else {
        free(g->dacts);
        g->dacts = xcalloc(m->num_acts, sizeof(float), "activation gradients");
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
    memset(g->grads, 0, m->num_params * sizeof(float));
    gradients_prepare(g, m);
    float** da = g->d.t;

    // head and loss, then the final layernorm
    float *f_out = NULL, *f_in = NULL, *sigma_w = NULL;
    if (nz->head) head_noise_vectors(m, &f_out, &f_in, &sigma_w);
    head_backward(da[A_LNF], dp[P_WTE], dp[P_NOISE_HEAD], a[A_PROBS], targets, a[A_LNF],
                  a[A_HEADIN], p[P_WTE], sigma_w, f_out, f_in, nz->eta, B, T, C, V);
    free(f_out);
    free(f_in);
    free(sigma_w);
    float* last = a[A_RESID3] + (L - 1) * BT * C;
    float* dlast = da[A_RESID3] + (L - 1) * BT * C;
    layernorm_backward(dlast, dp[P_LNFW], dp[P_LNFB], da[A_LNF], last, p[P_LNFW],
                       a[A_LNF_MEAN], a[A_LNF_RSTD], BT, C);

    // the blocks, last to first
    for (int l = L - 1; l >= 0; l--) {
        BlockViews w, d;
        block_views(&w, m, l);
        block_grad_views(&d, m, g, l);
        const float* resid = l == 0 ? a[A_ENCODED] : a[A_RESID3] + (l - 1) * BT * C;
        float* dresid = l == 0 ? da[A_ENCODED] : da[A_RESID3] + (l - 1) * BT * C;
        float att_scale = 0.0f, mlp_scale = 0.0f, logit_scale[1024];
        if (nz->block) {
            att_scale = nz->eta * expf(*w.noise_att);
            mlp_scale = nz->eta * expf(*w.noise_mlp);
        }
        if (nz->logits)
            for (int h = 0; h < NH; h++) logit_scale[h] = nz->eta * expf(w.noise_logit[h]);

        // MLP sublayer: resid3 = resid2 + noise(fcproj(gelu(fc(ln2(resid2)))))
        residual_backward(d.resid2, d.fcproj, d.noise_mlp, d.resid3, w.fcproj, BT * C,
                          nz->block ? &mlp_scale : NULL,
                          rng_key(nz->seed, nz->step, RNG_SITE_NOISE_MLP(l)),
                          nz->dither, B, T, C);
        matmul_backward(d.fch_gelu, d.fcprojw, d.fcprojb, d.fcproj, w.fch_gelu, w.fcprojw,
                        BT, 4 * C, C);
        gelu_backward(d.fch, w.fch, d.fch_gelu, BT * 4 * C);
        matmul_backward(d.ln2, d.fcw, d.fcb, d.fch, w.ln2, w.fcw, BT, C, 4 * C);
        layernorm_backward(d.resid2, d.ln2w, d.ln2b, d.ln2, w.resid2, w.ln2w, w.ln2_mean,
                           w.ln2_rstd, BT, C);

        // attention sublayer: resid2 = resid + noise(attproj(attention(ln1(resid))))
        residual_backward(dresid, d.attproj, d.noise_att, d.resid2, w.attproj, BT * C,
                          nz->block ? &att_scale : NULL,
                          rng_key(nz->seed, nz->step, RNG_SITE_NOISE_ATT(l)),
                          nz->dither, B, T, C);
        matmul_backward(d.atty, d.attprojw, d.attprojb, d.attproj, w.atty, w.attprojw,
                        BT, C, C);
        attention_backward(d.qkv, d.noise_logit, d.atty, w.qkv, w.att, B, T, C, NH,
                           nz->logits ? logit_scale : NULL,
                           rng_key(nz->seed, nz->step, RNG_SITE_LOGIT(l)));
        matmul_backward(d.ln1, d.qkvw, d.qkvb, d.qkv, w.ln1, w.qkvw, BT, C, 3 * C);
        layernorm_backward(dresid, d.ln1w, d.ln1b, d.ln1, resid, w.ln1w, w.ln1_mean,
                           w.ln1_rstd, BT, C);
    }

    // embeddings
    encoder_backward(dp[P_WTE], dp[P_WPE], da[A_ENCODED], inputs, B, T, C);
}

// ----------------------------------------------------------------------------
// AdamW with a learning rate and a momentum (beta1) per parameter group

void adamw_init(AdamW* opt, const Model* m, float beta2, float eps, float weight_decay,
                int track_directions) {
    memset(opt, 0, sizeof(*opt));
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->m = xcalloc(m->num_params, sizeof(float), "AdamW first moment");
    opt->v = xcalloc(m->num_params, sizeof(float), "AdamW second moment");
    if (track_directions) {
        opt->u = xcalloc(m->num_params, sizeof(float), "GAME update direction");
        opt->d = xcalloc(m->num_params, sizeof(float), "GAME momentum direction");
    }
    opt->num_slices = param_slices(&m->config, NULL, 0);
    opt->slices = xmalloc(opt->num_slices * sizeof(ParamSlice), "parameter slices");
    param_slices(&m->config, opt->slices, opt->num_slices);
    for (int g = 0; g < MAX_GROUPS; g++) opt->beta1_power[g] = 1.0;
}

void adamw_free(AdamW* opt) {
    free(opt->m);
    free(opt->v);
    free(opt->u);
    free(opt->d);
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
        ChunkStats cs = {0};
        for (size_t i = lo; i < hi; i++) {
            cs.gg += (double)g[i] * g[i];
            cs.gsum += g[i];
        }
        if (directions) {
            for (size_t i = lo; i < hi; i++) {
                cs.gu += (double)g[i] * opt->u[i];
                cs.uu += (double)opt->u[i] * opt->u[i];
                cs.gd += (double)g[i] * opt->d[i];
                cs.dd += (double)opt->d[i] * opt->d[i];
            }
        }
        part[c] = cs;
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

void adamw_step(AdamW* opt, float* params, const float* g, float grad_scale,
                const float* lr, const float* beta1) {
    opt->t++;
    float beta2 = opt->beta2, eps = opt->eps;
    float bc2 = 1.0f - powf(beta2, (float)opt->t);

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

    for (int s = 0; s < opt->num_slices; s++) {
        const ParamSlice* sl = &opt->slices[s];
        int gi = sl->group;
        float b1 = beta1[gi], alpha = lr[gi], c1 = bc1[gi];
        float wd = sl->decay ? opt->weight_decay : 0.0f;
        float* u = opt->u;
        float* dd = opt->d;

        // m, v, then the decoupled update theta -= alpha (mhat / (sqrt(vhat) + eps)
        // + wd theta); with GAME the direction u and the derivative of the
        // direction with respect to beta1, (m_prev - g) / (c1 (sqrt(vhat) + eps)),
        // are kept for the next step's hypergradients (bias correction's own
        // dependence on beta1 is neglected there).
        #pragma omp parallel for schedule(static)
        for (size_t i = sl->offset; i < sl->offset + sl->size; i++) {
            float gr = g[i] * grad_scale;
            float m_prev = opt->m[i];
            float m = b1 * m_prev + (1.0f - b1) * gr;
            float v = beta2 * opt->v[i] + (1.0f - beta2) * gr * gr;
            opt->m[i] = m;
            opt->v[i] = v;
            float denom = sqrtf(v / bc2) + eps;
            float dir = (m / c1) / denom + wd * params[i];
            params[i] -= alpha * dir;
            if (u) {
                u[i] = dir;
                dd[i] = (m_prev - gr) / (c1 * denom);
            }
        }
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
    o->input = "data/tinyshakespeare.txt";
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

// Mean sigma over a tensor of noise-scale logs.
static float mean_sigma(const Model* m, int tensor) {
    double s = 0.0;
    for (size_t i = 0; i < m->param_sizes[tensor]; i++) s += expf(m->params.t[tensor][i]);
    return (float)(s / m->param_sizes[tensor]);
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
        // the hypergradient dL/da = -alpha <g_t, u_{t-1}> needs
        float shape = base / o->lr;
        ame_step(&tr->ame, &o->ame, tr->step, o->steps, loss, stats, tr->lr, &act);
        for (int g = 0; g < G; g++) {
            tr->lr[g] = (mask & AME_C1) ? ame_lr(&tr->ame, g, shape) : base;
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

    // the per-step trace
    if (tr->csv) {
        fprintf(tr->csv, "%ld,%.6f,%.6f,%.4f", tr->step + 1, loss, norm,
                mask ? ame_eta(&tr->ame) : 1.0f);
        for (int g = 0; g < G; g++) fprintf(tr->csv, ",%.6g", tr->lr[g]);
        for (int g = 0; g < G; g++) fprintf(tr->csv, ",%.4f", tr->beta1[g]);
        fprintf(tr->csv, ",%.5f,%.5f,%.5f,%.5f", mean_sigma(m, P_NOISE_ATT),
                mean_sigma(m, P_NOISE_MLP), mean_sigma(m, P_NOISE_LOGIT),
                mean_sigma(m, P_NOISE_HEAD));
        fprintf(tr->csv, ",%.5f,%.4f,%ld,%ld\n", tr->ame.plateau,
                tr->ame.prop.prob, tr->ame.jumps_proposed, tr->ame.jumps_accepted);
    }
    tr->step++;
    return loss;
}

// ----------------------------------------------------------------------------
// Checkpoints of a training run

// The training state blob (section TRAN), little-endian:
//   u64 steps completed, u64 seed, f32 best validation loss, u64 its step,
//   u64 skipped steps, u64 optimizer steps, G x f64 beta1 products.
#define TRAN_VERSION 1u
static size_t tran_encode(const Trainer* tr, unsigned char* buf) {
    int G = num_groups(&tr->model.config);
    size_t n = 4 + 8 * 5 + 4 + 8 * (size_t)G;
    if (!buf) return n;
    unsigned char* p = buf;
    ckpt_put_u32(p, TRAN_VERSION), p += 4;
    ckpt_put_u64(p, (uint64_t)tr->step), p += 8;
    ckpt_put_u64(p, tr->opt.seed), p += 8;
    ckpt_put_f32(p, tr->best_val), p += 4;
    ckpt_put_u64(p, (uint64_t)tr->best_step), p += 8;
    ckpt_put_u64(p, (uint64_t)tr->skipped), p += 8;
    ckpt_put_u64(p, (uint64_t)tr->adam.t), p += 8;
    for (int g = 0; g < G; g++) {
        uint64_t bits;
        memcpy(&bits, &tr->adam.beta1_power[g], 8);
        ckpt_put_u64(p, bits), p += 8;
    }
    return n;
}

// Saves the model, vocabulary, optimizer and GAME state to path, atomically.
int trainer_save(const Trainer* tr, const char* path, char* err, size_t errlen) {
    const Model* m = &tr->model;
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
    unsigned char tran[4096];
    ckpt_add(&ck, "TRAN", tran, tran_encode(tr, tran));
    size_t game_size = ame_serialize(&tr->ame, NULL);
    unsigned char* game = xmalloc(game_size, "GAME state");
    ame_serialize(&tr->ame, game);
    ckpt_add(&ck, "GAME", game, game_size);
    int rc = ckpt_save(&ck, path, err, errlen);
    free(game);
    return rc;
}

// ----------------------------------------------------------------------------
// Setting up and tearing down a trainer

// Reads and encodes the input, splits it, builds the model and optimizer.
// Returns 0, or -1 with a message (naming the problem and the fix) in err.
int trainer_init(Trainer* tr, const TrainOptions* o, char* err, size_t errlen) {
    memset(tr, 0, sizeof(*tr));
    tr->opt = *o;

    // the text and its vocabulary
    size_t n;
    unsigned char* text = read_file(o->input, &n, err, errlen);
    if (!text) return -1;
    if (n == 0) {
        snprintf(err, errlen, "%s is empty; give a text file with -i FILE", o->input);
        free(text);
        return -1;
    }
    tokenizer_build(&tr->tok, text, n);
    tr->tokens = xmalloc(n * sizeof(int), "token ids");
    size_t bad_offset;
    uint32_t bad_symbol;
    long count = tokenizer_encode(&tr->tok, text, n, tr->tokens, &bad_offset, &bad_symbol);
    free(text);
    if (count < 0) {
        snprintf(err, errlen, "internal error: %s has a character missing from its own "
                 "vocabulary at byte %zu", o->input, bad_offset);
        return -1;
    }
    tr->n_tokens = (size_t)count;

    // the last val_fraction of the text is validation; both parts need windows
    size_t n_val = (size_t)(tr->n_tokens * (double)o->val_fraction);
    size_t n_train = tr->n_tokens - n_val;
    size_t need = (size_t)o->context + 1;
    if (n_train < need || (o->val_fraction > 0.0f && n_val < need)) {
        snprintf(err, errlen, "%s has %zu characters: too short for context %d "
                 "(the training and validation parts each need at least %zu); use "
                 "a longer text, a smaller --context or a different --val-fraction",
                 o->input, tr->n_tokens, o->context, need);
        return -1;
    }
    tr->train = (Split){tr->tokens, n_train};
    tr->val = (Split){tr->tokens + n_train, n_val};

    // model, gradients, optimizer, GAME
    GameConfig cfg = {o->context, tr->tok.size, o->layers, o->heads, o->channels};
    const char* bad = config_check(&cfg);
    if (bad) {
        snprintf(err, errlen, "invalid model shape: %s", bad);
        return -1;
    }
    model_init(&tr->model, &cfg);
    model_init_weights(&tr->model, o->seed);
    model_prepare(&tr->model, o->batch, o->context);
    gradients_init(&tr->grads, &tr->model);
    adamw_init(&tr->adam, &tr->model, o->beta2, o->adam_eps, o->weight_decay,
               (o->game_mask & AME_C1) != 0 || (o->game_mask & AME_C3) != 0);
    ame_init(&tr->ame, &o->ame, num_groups(&cfg), o->game_mask, o->seed, o->lr, o->beta1);
    tr->inputs = xmalloc((size_t)o->batch * o->context * sizeof(int), "batch");
    tr->targets = xmalloc((size_t)o->batch * o->context * sizeof(int), "batch");
    tr->best_val = INFINITY;
    tr->best_step = -1;
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
    memset(tr, 0, sizeof(*tr));
}

#ifndef GAME_NO_MAIN
// ----------------------------------------------------------------------------
// The train program

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void usage(FILE* f, const TrainOptions* d) {
    fprintf(f,
        "usage: train [options]\n"
        "Trains a character-level transformer on a text file.\n\n"
        "data and output\n"
        "  -i, --input FILE        text to train on (default %s)\n"
        "  -o, --output FILE       checkpoint of the best model (default %s)\n"
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
        "      --warmup N          linear warmup steps (default %ld, at most steps/10)\n"
        "      --weight-decay F    AdamW decay of the matrices (default %g)\n"
        "      --clip F            gradient-norm clip, 0 for none (default %g)\n"
        "      --seed N            seed of initialisation, batches and noise (default %llu)\n"
        "GAME\n"
        "      --game MODE         full, off, or a list such as c1,c2,c4 (default %s)\n"
        "      --log FILE          per-step CSV trace of loss and coefficients\n"
        "progress\n"
        "      --eval-every N      steps between evaluations (default %ld)\n"
        "      --eval-batches N    batches per evaluation and split (default %d)\n"
        "      --log-every N       steps between log lines (default %d)\n"
        "      --threads N         OpenMP threads, 0 for OMP_NUM_THREADS or all (default 0)\n"
        "  -h, --help              this text\n\n"
        "example: train -i mytext.txt -o mytext.bin --steps 3000\n",
        d->input, d->output, d->val_fraction, d->layers, d->heads, d->channels,
        d->context, d->batch, d->steps, d->lr, d->min_lr, d->warmup, d->weight_decay,
        d->clip, (unsigned long long)d->seed, d->game, d->eval_every, d->eval_batches,
        d->log_every);
}

// Parses a whole-string integer in [lo, hi]; exits with a message otherwise.
static long parse_long(const char* flag, const char* s, long lo, long hi) {
    char* end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "error: --%s '%s': expected a whole number from %ld to %ld\n",
                flag, s, lo, hi);
        exit(EXIT_FAILURE);
    }
    return v;
}

// Parses a whole-string number in [lo, hi]; exits with a message otherwise.
static float parse_float(const char* flag, const char* s, double lo, double hi) {
    char* end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "error: --%s '%s': expected a number from %g to %g\n",
                flag, s, lo, hi);
        exit(EXIT_FAILURE);
    }
    return (float)v;
}

enum {
    OPT_LAYERS = 256, OPT_HEADS, OPT_CHANNELS, OPT_CONTEXT, OPT_BATCH, OPT_STEPS,
    OPT_LR, OPT_MIN_LR, OPT_WARMUP, OPT_WD, OPT_CLIP, OPT_SEED, OPT_EVAL_EVERY,
    OPT_EVAL_BATCHES, OPT_VAL_FRACTION, OPT_THREADS, OPT_LOG_EVERY, OPT_GAME, OPT_LOG,
};

static void parse_options(TrainOptions* o, int argc, char** argv) {
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
        {"log", required_argument, 0, OPT_LOG},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    TrainOptions defaults = *o;
    int c, warmup_given = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":i:o:h", longs, NULL)) != -1) {
        switch (c) {
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case OPT_LAYERS: o->layers = parse_long("layers", optarg, 1, 64); break;
        case OPT_HEADS: o->heads = parse_long("heads", optarg, 1, 1024); break;
        case OPT_CHANNELS: o->channels = parse_long("channels", optarg, 1, 16384); break;
        case OPT_CONTEXT: o->context = parse_long("context", optarg, 1, 65536); break;
        case OPT_BATCH: o->batch = parse_long("batch", optarg, 1, 1 << 20); break;
        case OPT_STEPS: o->steps = parse_long("steps", optarg, 1, 1L << 40); break;
        case OPT_LR: o->lr = parse_float("lr", optarg, 1e-12, 1e3); break;
        case OPT_MIN_LR: o->min_lr = parse_float("min-lr", optarg, 0, 1e3); break;
        case OPT_WARMUP:
            o->warmup = parse_long("warmup", optarg, 0, 1L << 40);
            warmup_given = 1;
            break;
        case OPT_WD: o->weight_decay = parse_float("weight-decay", optarg, 0, 1e3); break;
        case OPT_CLIP: o->clip = parse_float("clip", optarg, 0, 1e12); break;
        case OPT_SEED:
            o->seed = (uint64_t)parse_long("seed", optarg, 0, 0x7fffffffffffffffL);
            break;
        case OPT_EVAL_EVERY:
            o->eval_every = parse_long("eval-every", optarg, 1, 1L << 40);
            break;
        case OPT_EVAL_BATCHES:
            o->eval_batches = parse_long("eval-batches", optarg, 1, 1 << 20);
            break;
        case OPT_VAL_FRACTION:
            o->val_fraction = parse_float("val-fraction", optarg, 0.0, 0.9);
            break;
        case OPT_THREADS: o->threads = parse_long("threads", optarg, 0, 1024); break;
        case OPT_LOG_EVERY: o->log_every = parse_long("log-every", optarg, 1, 1 << 30); break;
        case OPT_GAME: {
            char err[256];
            if (ame_parse_mode(optarg, &o->game_mask, err, sizeof(err)) != 0) {
                fprintf(stderr, "error: --game '%s': %s\n", optarg, err);
                exit(EXIT_FAILURE);
            }
            o->game = optarg;
            break;
        }
        case OPT_LOG: o->log_csv = optarg; break;
        case 'h': usage(stdout, &defaults); exit(EXIT_SUCCESS);
        case ':':
            fprintf(stderr, "error: %s needs a value; see train --help\n", argv[optind - 1]);
            exit(EXIT_FAILURE);
        default:
            fprintf(stderr, "error: unknown option '%s'; see train --help\n",
                    argv[optind - 1]);
            exit(EXIT_FAILURE);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'; the text is given with -i FILE\n",
                argv[optind]);
        exit(EXIT_FAILURE);
    }

    // checks that involve more than one flag
    if (o->channels % o->heads != 0) {
        fprintf(stderr, "error: --channels %d is not a multiple of --heads %d\n",
                o->channels, o->heads);
        exit(EXIT_FAILURE);
    }
    if (o->min_lr > o->lr) {
        fprintf(stderr, "error: --min-lr %g is above --lr %g\n", o->min_lr, o->lr);
        exit(EXIT_FAILURE);
    }
    if (!warmup_given && o->warmup > o->steps / 10) o->warmup = o->steps / 10;
    if (o->warmup > o->steps) {
        fprintf(stderr, "error: --warmup %ld is longer than --steps %ld\n", o->warmup,
                o->steps);
        exit(EXIT_FAILURE);
    }
    if (o->val_fraction == 0.0f) {
        fprintf(stderr, "error: --val-fraction 0 leaves no text to choose the best model "
                "on; use a value in (0, 0.9]\n");
        exit(EXIT_FAILURE);
    }
}

// Prints a sample of n characters from the model, seeded, temperature 1,
// starting from the first character of the validation text.
static void print_sample(Trainer* tr, int n) {
    Sampler s;
    sampler_init(&s, tr->model.config.vocab_size, 1.0f, 0, 1.0f, tr->opt.seed);
    generate(&tr->model, &tr->tok, &s, tr->val.tokens, 1, n, stdout);
    fputc('\n', stdout);
    sampler_free(&s);
}

int main(int argc, char** argv) {
    TrainOptions o;
    train_options_default(&o);
    parse_options(&o, argc, argv);
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif

    // set up
    Trainer tr;
    char err[1024];
    if (trainer_init(&tr, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return EXIT_FAILURE;
    }
    if (o.log_csv) {
        tr.csv = fopen(o.log_csv, "w");
        if (!tr.csv) {
            fprintf(stderr, "error: cannot write the log %s: %s\n", o.log_csv,
                    strerror(errno));
            return EXIT_FAILURE;
        }
        fprintf(tr.csv, "step,loss,grad_norm,eta");
        char name[32];
        for (int g = 0; g < num_groups(&tr.model.config); g++) {
            group_name(&tr.model.config, g, name, sizeof(name));
            fprintf(tr.csv, ",lr_%s", name);
        }
        for (int g = 0; g < num_groups(&tr.model.config); g++) {
            group_name(&tr.model.config, g, name, sizeof(name));
            fprintf(tr.csv, ",mu_%s", name);
        }
        fprintf(tr.csv, ",sigma_att,sigma_mlp,sigma_logit,sigma_head,plateau,"
                "gate_prob,jumps_proposed,jumps_accepted\n");
    }
    const GameConfig* cfg = &tr.model.config;
    size_t base_params = 0;
    for (int i = 0; i < NUM_BASE_PARAM_TENSORS; i++) base_params += tr.model.param_sizes[i];
    printf("model: %d layers, %d heads, %d channels, context %d, vocabulary %d\n",
           cfg->layers, cfg->heads, cfg->channels, cfg->context, cfg->vocab_size);
    printf("parameters: %zu (plus %zu GAME noise scales)\n", base_params,
           tr.model.num_params - base_params);
    printf("data: %s, %zu characters: %zu train, %zu validation\n", o.input, tr.n_tokens,
           tr.train.n, tr.val.n);
    printf("training: %ld steps, batch %d, lr %g -> %g, warmup %ld, GAME %s, %d threads\n",
           o.steps, o.batch, o.lr, o.min_lr, o.warmup, o.game, threads);
    fflush(stdout);

    // the loop
    double t_log = now_ms(), t_start = t_log;
    long tokens_per_step = (long)o.batch * o.context;
    double loss_sum = 0.0;
    int loss_count = 0, consecutive_skips = 0;
    while (tr.step < o.steps) {
        long skipped_before = tr.skipped;
        float loss = trainer_step(&tr);
        long step = tr.step;
        if (tr.skipped > skipped_before) {
            consecutive_skips++;
            fprintf(stderr, "warning: step %ld: loss or gradient is not finite; the step "
                    "was skipped\n", step);
            if (consecutive_skips >= 10) {
                fprintf(stderr, "error: %d steps in a row had a non-finite loss; training "
                        "diverged. Try a lower --lr (now %g)\n", consecutive_skips, o.lr);
                trainer_free(&tr);
                return EXIT_FAILURE;
            }
        } else {
            consecutive_skips = 0;
            loss_sum += loss;
            loss_count++;
        }

        // the log line
        if (step % o.log_every == 0 || step == o.steps) {
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
            printf("eval step %ld: train %.4f, val %.4f", step, train_loss, val_loss);
            if (val_loss < tr.best_val) {
                tr.best_val = val_loss;
                tr.best_step = step;
                if (trainer_save(&tr, o.output, err, sizeof(err)) != 0) {
                    fprintf(stderr, "\nerror: %s\n", err);
                    trainer_free(&tr);
                    return EXIT_FAILURE;
                }
                printf(" (best, saved to %s)", o.output);
            }
            if (o.game_mask) {
                char summary[512];
                ame_summary(&tr.ame, lr_schedule(step, o.steps, o.warmup, 1.0f, o.min_lr / o.lr),
                            mean_sigma(&tr.model, P_NOISE_ATT), summary, sizeof(summary));
                printf("\n  game: %s", summary);
            }
            printf("\n");
            fflush(stdout);
            t_log = now_ms(); // evaluation time is not training time
        }
    }

    // the end: a sample from the best model
    printf("done in %.1f s; best validation loss %.4f at step %ld, in %s\n",
           (now_ms() - t_start) / 1e3, tr.best_val, tr.best_step, o.output);
    Model best;
    Tokenizer tok;
    if (model_load(&best, &tok, NULL, o.output, err, sizeof(err)) == 0) {
        Model tmp = tr.model;
        tr.model = best;
        printf("sample from the best model:\n----\n");
        print_sample(&tr, o.sample_chars);
        printf("----\n");
        tr.model = tmp;
        model_free(&best);
        tokenizer_free(&tok);
    }
    trainer_free(&tr);
    return EXIT_SUCCESS;
}
#endif
