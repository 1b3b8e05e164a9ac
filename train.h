// train.h: the backward pass, the optimizer and the training loop (train.c),
// exposed for the tests. Shapes use the letters explained in game.h.
#ifndef TRAIN_H
#define TRAIN_H

#include <stdint.h>

#include "ame.h"
#include "game.h"

// ----------------------------------------------------------------------------
// Layers, backward direction. Each takes the input gradients first (all
// accumulated with +=), then the output gradient, then what its forward used.

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp,
                      int B, int T, int C);
void layernorm_backward(float* dx, float* dw, float* dbias, const float* dout,
                        const float* x, const float* w, const float* mean,
                        const float* rstd, int N, int C);
// dnoise (NH) receives d loss / d s_{l,h} when noise_scale is not NULL.
void attention_backward(float* dqkv, float* dnoise, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH,
                        const float* noise_scale, uint64_t noise_key);
void gelu_backward(float* dx, const float* x, const float* dout, size_t N);
// dnoise (1) receives d loss / d s of the site when noise_scale is not NULL.
void residual_backward(float* dresid, float* dh, float* dnoise, const float* dout,
                       const float* h, size_t N, const float* noise_scale, uint64_t key,
                       int dither, int B, int T, int C);
// From probs (B, T, V) and targets: dlnf (B, T, C), dwte (V, C) and, with head
// noise, dnoise_head (V, C) = d loss / d s_W. The loss is the mean over B T.
void head_backward(float* dlnf, float* dwte, float* dnoise_head, const float* probs,
                   const int* targets, const float* lnf, const float* headin,
                   const float* wte, const float* sigma_w, const float* f_out,
                   const float* f_in, float eta, int B, int T, int C, int V);

// ----------------------------------------------------------------------------
// Gradients of the whole model

typedef struct {
    float* grads;          // (num_params), d mean_loss / d params
    ParamViews g;          // views into grads
    float* dacts;          // gradients of the activations, laid out as Model.acts
    ActViews d;
    size_t num_dacts;
} Gradients;

void gradients_init(Gradients* g, const Model* m);
void gradients_free(Gradients* g);

// Backward pass of the last model_forward (which must have had targets):
// overwrites g->grads with the gradient of m->mean_loss.
void model_backward(Model* m, Gradients* g, const int* inputs, const int* targets);

// ----------------------------------------------------------------------------
// The optimizer: AdamW with a learning rate and a momentum per parameter group

typedef struct {
    float beta2, eps, weight_decay;
    long t;                // steps taken
    float* m;              // (num_params) first moment
    float* v;              // (num_params) second moment
    float* u;              // (num_params) last update direction (GAME C1), or NULL
    float* d;              // (num_params) last momentum derivative (GAME C1), or NULL
    double beta1_power[MAX_GROUPS]; // running product of each group's beta1
    int num_slices;
    ParamSlice* slices;
} AdamW;

void adamw_init(AdamW* opt, const Model* m, float beta2, float eps, float weight_decay,
                int track_directions);
void adamw_free(AdamW* opt);

// Per-group statistics of the gradient g (num_params) against the optimizer's
// last directions, and the squared norm of g over the whole model (returned).
// stats may be NULL (then only the norm is computed).
double gradient_stats(const AdamW* opt, const float* g, AmeGroupStats* stats,
                      int groups);

// One AdamW step on params with gradient g scaled by grad_scale, learning rate
// lr[group] and beta1[group].
void adamw_step(AdamW* opt, float* params, const float* g, float grad_scale,
                const float* lr, const float* beta1);

// ----------------------------------------------------------------------------
// Learning-rate schedule: linear warmup to lr, cosine decay to min_lr at `steps`.
float lr_schedule(long step, long steps, long warmup, float lr, float min_lr);

#endif
