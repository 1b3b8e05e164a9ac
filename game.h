// game.h: the AEON-GPT-AME model, a GPT-2 style character transformer.
//
// This header defines the model's configuration, its parameters (one contiguous
// block of floats with a named view per tensor), its activations, and the two
// ways to run it: a full forward pass over a batch for training and evaluation,
// and a single-token decode step with a key/value cache for sampling. The
// backward pass lives in train.c, next to the optimizer.
//
// Dimension letters, used in every comment that states a shape:
//   B   batch size: sequences processed together
//   T   sequence length of this call (1 <= T <= context)
//   C   channels: width of the residual stream
//   V   vocabulary size: number of distinct tokens (characters)
//   L   number of transformer blocks (layers)
//   NH  number of attention heads
//   hs  head size, C / NH
//   BT  B * T, the number of token positions in a batch
//
// Tensors are row-major; a shape (B, T, C) means index [b][t][c] lives at
// (b * T + t) * C + c.
#ifndef GAME_H
#define GAME_H

#include <stddef.h>
#include <stdint.h>

// ----------------------------------------------------------------------------
// Configuration

typedef struct {
    int context;    // maximum sequence length the position table covers
    int vocab_size; // V
    int layers;     // L
    int heads;      // NH
    int channels;   // C, a multiple of NH
} GameConfig;

// Checks a configuration; returns NULL when it is usable, else a message that
// names the offending field (a static string, not to be freed).
const char* config_check(const GameConfig* cfg);

// ----------------------------------------------------------------------------
// Parameters
//
// Every tensor of a kind is stacked over the L layers, so the block of floats
// holds wte, wpe, then ln1w for all layers, and so on, in the order below. The
// last four tensors are the GAME noise scales, stored as logarithms s so that
// sigma = exp(s) is always positive; plain training never touches them.

enum {
    P_WTE,       // (V, C)        token embedding, also the LM head (tied)
    P_WPE,       // (context, C)  learned position embedding
    P_LN1W,      // (L, C)        layernorm before attention: scale
    P_LN1B,      // (L, C)        ... and shift
    P_QKVW,      // (L, 3C, C)    query, key, value projection
    P_QKVB,      // (L, 3C)
    P_ATTPROJW,  // (L, C, C)     attention output projection
    P_ATTPROJB,  // (L, C)
    P_LN2W,      // (L, C)        layernorm before the MLP
    P_LN2B,      // (L, C)
    P_FCW,       // (L, 4C, C)    MLP up projection
    P_FCB,       // (L, 4C)
    P_FCPROJW,   // (L, C, 4C)    MLP down projection
    P_FCPROJB,   // (L, C)
    P_LNFW,      // (C)           final layernorm
    P_LNFB,      // (C)
    P_NOISE_ATT, // (L)           log sigma of the noise on attention outputs (C2)
    P_NOISE_MLP, // (L)           log sigma of the noise on MLP outputs (C2)
    P_NOISE_LOGIT, // (L, NH)     log sigma of each head's logit noise (C5)
    P_NOISE_HEAD,  // (V, C)      log sigma_W of the LM head's weight noise (C5)
    NUM_PARAM_TENSORS
};

// The first tensors, wte to lnfb, are the GPT-2 model proper.
#define NUM_BASE_PARAM_TENSORS P_NOISE_ATT

typedef struct {
    float* t[NUM_PARAM_TENSORS]; // t[P_WTE] and so on: views into one block
} ParamViews;

// Fills sizes[i] with the number of floats of tensor i; returns their sum.
size_t param_sizes(const GameConfig* cfg, size_t sizes[NUM_PARAM_TENSORS]);

// Points each view at its place in `memory`.
void param_views(ParamViews* v, float* memory, const size_t sizes[NUM_PARAM_TENSORS]);

// Name of tensor i ("wte", "qkvw", ...) for messages and tests.
const char* param_name(int i);

// ----------------------------------------------------------------------------
// Parameter groups
//
// GAME gives each group its own learning rate, momentum and noise scale. The
// groups are: 0 the embeddings; 1 + 2l the attention of block l; 2 + 2l the MLP
// of block l; 2L + 1 the head (final layernorm and the head's noise scale). A
// "slice" is a run of consecutive floats that belongs to one group and is either
// weight-decayed (matrices) or not (biases, norms, embeddings' positions are
// matrices too, noise scales are not).

#define MAX_GROUPS 130 // 2 * 64 layers + 2

typedef struct {
    size_t offset; // first float, counted from the start of the parameter block
    size_t size;   // number of floats
    int group;     // parameter group
    int decay;     // 1 when weight decay applies
    int tensor;    // which P_* tensor the slice is part of
} ParamSlice;

static inline int num_groups(const GameConfig* cfg) { return 2 * cfg->layers + 2; }
static inline int group_attn(int l) { return 1 + 2 * l; }
static inline int group_mlp(int l) { return 2 + 2 * l; }
static inline int group_head(const GameConfig* cfg) { return 2 * cfg->layers + 1; }

// Writes the model's slices into `out` (capacity `cap`); returns how many.
int param_slices(const GameConfig* cfg, ParamSlice* out, int cap);

// Short name of a group ("emb", "attn0", "mlp3", "head"), into buf.
void group_name(const GameConfig* cfg, int g, char* buf, size_t len);

// ----------------------------------------------------------------------------
// Activations kept by the training forward pass for the backward pass.
// Every tensor is sized for the B and T the model was last prepared for.

enum {
    A_ENCODED,  // (B, T, C)       token + position embedding
    A_LN1,      // (L, B, T, C)    layernorm 1 output
    A_LN1_MEAN, // (L, B, T)
    A_LN1_RSTD, // (L, B, T)       1 / standard deviation
    A_QKV,      // (L, B, T, 3C)
    A_ATTY,     // (L, B, T, C)    attention output, heads concatenated
    A_ATT,      // (L, B, NH, T, T) attention probabilities (causal, lower triangle)
    A_ATTPROJ,  // (L, B, T, C)    attention projection before its noise
    A_RESID2,   // (L, B, T, C)    residual after attention
    A_LN2,      // (L, B, T, C)
    A_LN2_MEAN, // (L, B, T)
    A_LN2_RSTD, // (L, B, T)
    A_FCH,      // (L, B, T, 4C)   MLP hidden before GELU
    A_FCH_GELU, // (L, B, T, 4C)
    A_FCPROJ,   // (L, B, T, C)    MLP projection before its noise
    A_RESID3,   // (L, B, T, C)    residual after the MLP, the block's output
    A_LNF,      // (B, T, C)
    A_LNF_MEAN, // (B, T)
    A_LNF_RSTD, // (B, T)
    A_HEADIN,   // (B, T, C)       f(eps_in) * lnf, the head-noise input (C5)
    A_PROBS,    // (B, T, V)       softmax of the logits
    A_LOSSES,   // (B, T)          cross-entropy per position
    NUM_ACT_TENSORS
};

typedef struct {
    float* t[NUM_ACT_TENSORS];
} ActViews;

// ----------------------------------------------------------------------------
// GAME noise switches used by the forward pass (all off for plain training).

typedef struct {
    int block;     // C2: multiplicative noise on attention and MLP outputs
    int dither;    // C2: antithetic noise, rows b and b + B/2 share -eps
    int logits;    // C5: additive noise on attention logits
    int head;      // C5: factorised weight noise on the LM head
    float eta;     // C4: current mutation strength, scales every noise site
    uint64_t seed; // keys the counter-based generator ...
    uint64_t step; // ... together with the training step
} NoiseConfig;

// ----------------------------------------------------------------------------
// The model

typedef struct Model {
    GameConfig config;

    // parameters, one block of num_params floats with views
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_params;
    float* params_memory;
    ParamViews params;

    // activations for the B, T of the last model_prepare call
    int B, T;
    size_t act_sizes[NUM_ACT_TENSORS];
    size_t num_acts;
    size_t acts_capacity; // floats allocated at acts_memory (>= num_acts)
    float* acts_memory;
    ActViews acts;

    // noise switches for the next forward pass
    NoiseConfig noise;

    // the loss of the last forward with targets: mean over B * T positions
    float mean_loss;
} Model;

// Allocates a model with zeroed parameters. Exits with a message on failure.
void model_init(Model* m, const GameConfig* cfg);

// GPT-2 initialisation from `seed`: weights normal(0, 0.02), the two residual
// output projections scaled by 1 / sqrt(2 L), biases zero, layernorm scales one,
// noise scales at their documented starting values.
void model_init_weights(Model* m, uint64_t seed);

// Mean sigma = exp(s) over the noise-scale logs s of tensor (one of P_NOISE_*).
double model_mean_sigma(const Model* m, int tensor);

// Sizes the activation buffers for batches of B sequences of T tokens.
void model_prepare(Model* m, int B, int T);

void model_free(Model* m);

// Forward pass over inputs (B, T) of token ids. With targets (B, T) it also
// computes the losses and m->mean_loss; with targets NULL it stops at the
// probabilities. logits_out, when not NULL, receives the raw logits (B, T, V).
void model_forward(Model* m, const int* inputs, const int* targets, int B, int T,
                   float* logits_out);

// The views of one block l: its weights, and its slice of the activations
// (the activation pointers are NULL until model_prepare has run).
typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb;    // attention weights
    float *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;        // MLP weights
    float *noise_att, *noise_mlp, *noise_logit;                // (1), (1), (NH)
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *attproj, *resid2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *resid3;
} BlockViews;

void block_views(BlockViews* w, const Model* m, int l);

// ----------------------------------------------------------------------------
// Layers (forward here, backward in train.c). Shapes are in game.c.

#define LAYERNORM_EPS 1e-5f
#define GELU_K 0.7978845608028654f // sqrt(2 / pi)
#define GELU_C 0.044715f

void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe,
                     int B, int T, int C);
void layernorm_forward(float* out, float* mean, float* rstd, const float* x,
                       const float* w, const float* bias, int N, int C);
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                       int NH, const float* noise_scale, uint64_t noise_key);
void gelu_forward(float* out, const float* x, size_t N);
float noise_row(int n, int dither, int B, int T, int C, size_t* base);
void residual_forward(float* out, const float* resid, const float* h,
                      const float* noise_scale, uint64_t key, int dither,
                      int B, int T, int C);
void residual_layernorm_forward(float* out, float* ln, float* mean, float* rstd,
                                const float* resid, const float* h,
                                const float* noise_scale, uint64_t key, int dither,
                                const float* w, const float* bias, int B, int T, int C);
float head_noise_f(float x);
void head_forward(float* probs, float* losses, float* headin, float* logits_out,
                  const float* lnf, const float* wte, const float* sigma_w,
                  const float* f_out, const float* f_in, float eta,
                  const int* targets, int B, int T, int C, int V);

// The head's noise of this step: f(eps_out) (V), f(eps_in) (C) and
// sigma_W = exp(s_W) (V, C), each malloc'd (the caller frees them).
void head_noise_vectors(const Model* m, float** f_out, float** f_in, float** sigma_w);

// ----------------------------------------------------------------------------
// Single-token decoding with a key/value cache
//
// The decoder keeps its own copy of the weight matrices, in float32 and
// bfloat16 transposed to (IC, OC), so that one token's products are sums of
// rows (vector-friendly axpy's) instead of dot products that each end in a
// horizontal sum (int8 has a layout of its own, int8.h). The copy
// is made by kvcache_init: a model whose weights change afterwards needs a new
// cache. It is kept in one of three precisions:
//
//   KV_FP32  the float matrices, as the model holds them (kv->wt);
//   KV_BF16  bfloat16 matrices packed in pairs (kv->wp, layout below): half
//            the bytes, most of which then stay in a core's L2 cache, which
//            makes a decode step of the default model about three times
//            faster. Exact for a model whose matrices hold bfloat16 values
//            (model_round_bf16); otherwise each weight is rounded to its
//            nearest bfloat16 first.
//   KV_INT8  8-bit integer matrices with a scale per output, and each input
//            of a product rounded to 8-bit integers with a scale of its own
//            (int8.h): a quarter of the float bytes, and a vector instruction
//            that adds 64 byte products at once where the processor has
//            AVX-512 VNNI. The head keeps float32 weights (kv->wt). Not
//            exact for any model: it moves the default model's logits by
//            about 0.02 on average and 0.5 at most.
//
// bfloat16 is the upper half of a float's bits: the sign, the 8 exponent bits
// and the top 7 of the 23 mantissa bits (8 significant bits), so a float with
// zero lower bits is exactly a bfloat16, and rounding to the nearest one costs
// a relative error of at most 2^-8.

enum { KV_FP32 = 0, KV_BF16 = 1, KV_INT8 = 2 };

// The bits of the bfloat16 nearest to x, ties to the one with an even last
// bit. Beyond the largest finite bfloat16 (about 3.39e38) the rounding gives
// infinity, as IEEE rounding does; infinities stay, and a NaN stays a NaN (its
// quiet bit set, so a payload in the lower bits cannot turn it into infinity).
uint16_t bf16_from_float(float x);

// The float whose upper half is the bfloat16 bits b and whose lower half is
// zero: exactly the bfloat16's value.
float bf16_to_float(uint16_t b);

// x rounded to its nearest bfloat16 value (as bf16_from_float), as a float.
float bf16_round(float x);

// Rounds the model's matrices in place to bfloat16 values (bf16_round), so
// that every way of running it (the full forward pass, model_prefill,
// model_decode in either precision) computes the same model: the token
// embedding wte (also the tied head), qkvw, attprojw, fcw and fcprojw. The
// biases, layernorms, position embedding and noise scales keep their floats.
void model_round_bf16(Model* m);

// The packed bfloat16 layout of a matrix w (OC, IC), transposed, as kvcache_init
// stores it for KV_BF16. The outputs go in blocks of BF16_BLOCK = 32, the last
// block padded with zero weights to whole blocks, nb = ceil(OC / 32) in all. A
// block of one input row i is 16 uint32 words; word k holds output 32 b + k in
// its low 16 bits and output 32 b + 16 + k in its high 16 bits, so that a
// shift left by 16 gives the first float and masking off the low half the
// second. The blocks are grouped into panels of BF16_PANEL = 8 (the last panel
// may have fewer, np blocks): panel p, starting at word 128 IC p, holds for
// each input row i in order its np blocks (16 np words from 128 IC p + 16 np i).
// So a matrix-vector product streams each panel once, front to back, with its
// 256 outputs held in registers.
#define BF16_BLOCK 32
#define BF16_PANEL 8

// uint32 words of the packed form of a (OC, IC) matrix: 16 IC ceil(OC / 32).
size_t bf16_packed_words(int IC, int OC);

// Packs w (OC, IC) into dst (bf16_packed_words(IC, OC) words), rounding each
// weight with bf16_from_float.
void bf16_pack(uint32_t* dst, const float* w, int OC, int IC);

typedef struct KVCache {
    int capacity;   // positions the cache holds (the model's context)
    int precision;  // KV_FP32, KV_BF16 or KV_INT8: which copy of the weights decodes
    int key_stride; // ks: capacity rounded up to a multiple of 16
    int layers;     // L, the model's number of blocks
    float* keys;    // (L, C, ks) transposed, so that one query's scores over
                    // the positions are sums of rows (axpy's over t); zero
                    // past the positions written
    float* values; // (L, capacity, C)
    float* wt;     // KV_FP32: per layer qkvw^T (C, 3C), attprojw^T (C, C),
                   // fcw^T (C, 4C), fcprojw^T (4C, C); then wte^T (C, V) for
                   // the head. KV_INT8: that head alone. KV_BF16: NULL
    uint32_t* wp;  // KV_BF16 only (else NULL): the same matrices in the packed
                   // bfloat16 layout, each of bf16_packed_words(IC, OC) words
    float* unpacked; // KV_BF16 only: (2, 4C, 32) two blocks of a matrix unpacked
                     // to floats, model_prefill's scratch
    struct I8Matrix* i8; // KV_INT8 only: (4 L) the blocks' matrices in int8.h's
                         // packed form, layer by layer (the head is in wt)
    uint8_t* xq;   // KV_INT8 only: (capacity, 4C) the rows of a product's input,
                   // quantized (i8_quantize), and ...
    float* xs;     // (capacity) ... their scales
    // the state of the current token, or of model_prefill's rows 0 .. n - 1;
    // model_decode uses the first row
    float* x;      // (capacity, C)  residual stream
    float* xb;     // (capacity, C)  normalised input of the current sublayer
    float* qkv;    // (capacity, 3C)
    float* atty;   // (capacity, C)  attention output, heads concatenated
    float* hidden; // (capacity, 4C) MLP hidden before GELU
    float* hidden_gelu; // (capacity, 4C) ... and after
    float* att;    // (NH, ks) scores of the current token
    float* logits; // (V)
    float* window_logits; // (capacity, V) scratch of model_prefill (KV_FP32)
} KVCache;

// Allocates an empty cache for m and copies m's matrices, transposed, in
// `precision` (KV_FP32, KV_BF16 or KV_INT8; anything else is a programming
// error and exits with a message).
void kvcache_init(KVCache* kv, const Model* m, int precision);
void kvcache_free(KVCache* kv);

// Runs token `token` at position `pos` (0 <= pos < context), reading the cached
// keys and values of positions 0 .. pos - 1 and storing this position's. Returns
// kv->logits, (V). Noise is never applied here.
float* model_decode(Model* m, KVCache* kv, int token, int pos);

// Runs tokens (n, 1 <= n <= context) at positions 0 .. n - 1 (noise off),
// filling the cache's keys and values for those positions, and returns the
// logits (V) after the last one (in kv->logits). Much faster than n
// model_decode calls. With KV_BF16 or KV_INT8 it is those n decode steps done
// a few tokens at a time, the same operations in the same order, so the results
// match model_decode's bit for bit. With KV_FP32 it is one batched forward pass
// (as model_forward computes it), equal to the decode steps up to float
// rounding.
float* model_prefill(Model* m, KVCache* kv, const int* tokens, int n);

// ----------------------------------------------------------------------------
// Checkpoints (the file format itself is in weights.h)

struct Tokenizer;
struct Checkpoint;

// Builds the model and its tokenizer from a loaded checkpoint: checks the
// configuration, the vocabulary and the parameter count. Returns 0, or -1 with
// a message in err.
int model_from_checkpoint(Model* m, struct Tokenizer* tk, const struct Checkpoint* ck,
                          char* err, size_t errlen);

// Loads path and builds the model from it. With keep not NULL, the loaded
// checkpoint is handed over (free it with ckpt_free_loaded) for its other
// sections; otherwise it is freed here.
int model_load(Model* m, struct Tokenizer* tk, struct Checkpoint* keep, const char* path,
               char* err, size_t errlen);

// ----------------------------------------------------------------------------
// Small helpers shared by the programs

// malloc/calloc that exit with a message naming the caller on failure.
void* xmalloc(size_t n, const char* what);
void* xcalloc(size_t count, size_t size, const char* what);

// count elements of size bytes (zeroed when zero is set) starting on a 64-byte
// cache line, so that vector loops over them need no unaligned start; free()
// releases them.
void* xmalloc_lines(size_t count, size_t size, int zero, const char* what);

// A zeroed block for the large arrays of a training step: from 1 MB up, mapped on
// a 2 MB boundary and advised for huge pages (fewer TLB misses), its pages taken
// only when first touched; free_pages, given the same count and size, releases
// it (and accepts NULL).
void* xcalloc_pages(size_t count, size_t size, const char* what);
void free_pages(void* p, size_t count, size_t size);

// Whether xcalloc_pages maps its large blocks (1); 0 in checked builds, where
// they come from calloc so that AddressSanitizer and valgrind see them.
int large_blocks_mapped(void);

// Flushes stdout and checks that everything written to it arrived. Returns 0,
// or -1 after a message on stderr (a full disk, a closed pipe): the programs'
// output is their product, so losing it is an error.
int stdout_finish(void);

#endif
