// train.h: the backward pass, the optimizer and the training loop (train.c),
// exposed for the tests. Shapes use the letters explained in game.h.
#ifndef TRAIN_H
#define TRAIN_H

#include <stdint.h>

#include <stdio.h>

#include "ame.h"
#include "game.h"
#include "tokenizer.h"

// ----------------------------------------------------------------------------
// Layers, backward direction. Each takes the input gradients first, then the
// output gradient, then what its forward used. Parameter gradients and the
// layernorm's dx are accumulated (+=); the gradients of an activation that only
// one layer reads are overwritten (=): the attention's dqkv, the GELU's dx, a
// noisy residual add's dh, the head's dlnf (and matmul_backward's dinp).

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
// The residual add out = resid + h [* mult]: the gradient of resid is dout
// itself, which so stays where it is (the residual stream's gradient is kept in
// one buffer). Returns the gradient of h: dout itself without noise (nothing to
// compute), else dh (B, T, C) filled, and then dnoise (1) receives d loss / d s.
const float* residual_backward(float* dh, float* dnoise, const float* dout,
                               const float* h, const float* noise_scale, uint64_t key,
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
    float* grads;          // (num_grads = num_params), d mean_loss / d params
    size_t num_grads;
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
    size_t num_params;
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

// ----------------------------------------------------------------------------
// Data, options and the trainer

// Generator sites of the evaluation batches (the others are in ame.h).
#define RNG_SITE_EVAL_TRAIN 32
#define RNG_SITE_EVAL_VAL 33

// One part of the text as token ids.
typedef struct {
    const int* tokens; // the split's token ids
    size_t n;          // how many
} Split;

// Fills inputs and targets (B, T) with B windows of T + 1 consecutive tokens of
// s, drawn from the counter generator keyed on (seed, step, site).
void batch_fill(int* inputs, int* targets, const Split* s, int B, int T, uint64_t seed,
                uint64_t step, uint64_t site);

// Everything the train program's flags set.
typedef struct {
    const char* input;
    const char* output;
    int layers, heads, channels, context, batch;
    long steps, warmup;
    float lr, min_lr, weight_decay, clip, val_fraction;
    float beta1, beta2, adam_eps;
    uint64_t seed;
    long eval_every;
    int eval_batches, log_every, threads, sample_chars;
    const char* game;
    unsigned game_mask;
    int dither;
    const char* log_csv;  // per-step CSV trace, or NULL
    const char* resume;   // checkpoint to continue from, or NULL
    const char* last;     // latest-step checkpoint, or NULL for OUTPUT.last
    const char* plot;     // PNG of the run, or NULL
    long save_every;      // steps between saves of the latest checkpoint
    long stop_at;         // stop after this step (0: run to the end)
    int quiet;
    AmeParams ame;
    int game_sets;        // how many --game-set flags were given
} TrainOptions;

void train_options_default(TrainOptions* o);

// Parses the train program's flags into o (which holds the defaults). Returns
// 0, 1 when --help was asked for, or -1 with a message naming the flag and
// what it accepts in err. Never exits.
int train_parse_args(TrainOptions* o, int argc, char** argv, char* err, size_t errlen);

// The --help text.
void train_usage(FILE* f);

// What a run has done, kept for the plot: one point per `stride` steps (the
// stride doubles whenever the buffer fills, so memory stays bounded), and every
// evaluation.
#define HISTORY_POINTS 2048
#define HISTORY_EVALS 4096
typedef struct {
    int n, stride;
    float step[HISTORY_POINTS], loss[HISTORY_POINTS], eta[HISTORY_POINTS];
    float sigma[HISTORY_POINTS], jumps[HISTORY_POINTS], kept[HISTORY_POINTS];
    float lr[MAX_GROUPS][HISTORY_POINTS];
    int n_evals;
    float eval_step[HISTORY_EVALS], eval_train[HISTORY_EVALS], eval_val[HISTORY_EVALS];
} History;

// A training run: model, gradients, optimizer, GAME state and data.
typedef struct {
    TrainOptions opt;
    Model model;
    Gradients grads;
    AdamW adam;
    AmeState ame;
    Tokenizer tok;
    int* tokens;      // the whole text as ids
    size_t n_tokens;
    Split train, val;
    int *inputs, *targets; // (B, T) batch buffers
    long step;             // steps completed
    float best_val;        // best validation loss so far (INFINITY before any)
    long best_step;
    long skipped;          // steps skipped for a non-finite loss or gradient
    float lr[MAX_GROUPS], beta1[MAX_GROUPS]; // what moved the weights last step
    FILE* csv;             // per-step trace, or NULL
    History* history;      // for the plot
} Trainer;

// Reads and encodes o->input, splits it, builds model and optimizer. Returns 0,
// or -1 with a message naming the problem and the fix in err.
int trainer_init(Trainer* tr, const TrainOptions* o, char* err, size_t errlen);
void trainer_free(Trainer* tr);

// One training step; returns its loss (a non-finite one skips the update and
// counts in tr->skipped).
float trainer_step(Trainer* tr);

// Writes the CSV trace's header line.
void trainer_csv_header(Trainer* tr);

// Remembers an evaluation for the plot.
void trainer_record_eval(Trainer* tr, float train_loss, float val_loss);

// Mean sigma of the C2 noise sites (attention and MLP outputs).
float trainer_mean_sigma(const Trainer* tr);

// Draws the run so far (losses, learning rates per group, eta and sigma, jumps)
// into a PNG at path.
int trainer_plot(const Trainer* tr, const char* path, char* err, size_t errlen);

// Mean loss over the fixed evaluation batches of split s (noise off).
float trainer_eval(Trainer* tr, const Split* s, uint64_t site);

// Saves model, vocabulary, optimizer, GAME and training state atomically.
// Refuses (-1, message in err) to write a non-finite parameter.
int trainer_save(const Trainer* tr, const char* path, char* err, size_t errlen);

// Replaces the options in o with those a training checkpoint was run with
// (shape, data path, schedule, GAME settings), for --resume; flags given on the
// command line are parsed on top afterwards. strings[0..2] receive malloc'd
// copies of the stored paths, for the caller to free.
int train_options_from_checkpoint(const char* path, TrainOptions* o, char* strings[3],
                                  char* err, size_t errlen);

#endif
