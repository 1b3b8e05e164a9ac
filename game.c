// game.c: the model's parameters, its forward pass and single-token decoding.
//
// Scope: a CPU runtime that a reader can follow end to end. Every layer is a
// plain C function over float arrays; OpenMP spreads the heavy loops over cores.
// Each output element is computed by exactly one thread with a fixed order of
// additions, so results are bit-identical for any number of threads. The
// backward pass of every layer below lives in train.c, in the same order.
//
// Non-goals: GPUs, training in reduced precision (only sampling uses bfloat16
// weights, in the decoder below), tokenizers other than characters.
#include "game.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ame.h"
#include "int8.h"
#include "kernels.h"
#include "tokenizer.h"
#include "weights.h"

// ----------------------------------------------------------------------------
// Checked allocation

void* xmalloc(size_t n, const char* what) {
    void* p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory allocating %zu bytes for %s\n"
                "       try a smaller --batch, --context or --channels\n", n, what);
        exit(EXIT_FAILURE);
    }
    return p;
}

void* xcalloc(size_t count, size_t size, const char* what) {
    void* p = calloc(count ? count : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory allocating %zu x %zu bytes for %s\n"
                "       try a smaller --batch, --context or --channels\n",
                count, size, what);
        exit(EXIT_FAILURE);
    }
    return p;
}

// A block of count elements of size bytes, zeroed when `zero` is set, that
// starts on a cache line, so that no 512-bit load of a packed row or a cache
// row straddles two lines. Exits with a message on failure; free() releases it.
void* xmalloc_lines(size_t count, size_t size, int zero, const char* what) {
    size_t n = count * size;
    if (n == 0) n = 1;
    void* p = NULL;
    if (posix_memalign(&p, 64, n) != 0) {
        fprintf(stderr, "error: out of memory allocating %zu bytes for %s\n"
                "       try a smaller --batch, --context or --channels\n", n, what);
        exit(EXIT_FAILURE);
    }
    if (zero) memset(p, 0, n);
    return p;
}

// The size of a huge page on x86-64 Linux: one TLB entry covers this much.
#define HUGE_PAGE ((size_t)2 << 20)

// Under AddressSanitizer, and in the valgrind build (GAME_PLAIN_ALLOC), every
// block comes from calloc instead, so that the checkers watch its bounds.
#if defined(__SANITIZE_ADDRESS__) || defined(GAME_PLAIN_ALLOC)
#define MAP_BLOCKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAP_BLOCKS 0
#endif
#endif
#ifndef MAP_BLOCKS
#define MAP_BLOCKS 1
#endif

int large_blocks_mapped(void) { return MAP_BLOCKS; }

// Whether a block of n bytes is one of xcalloc_pages' own mappings (from 1 MB
// up), and how many bytes that mapping spans (whole huge pages).
static int block_is_mapped(size_t n) { return MAP_BLOCKS && n >= HUGE_PAGE / 2; }
static size_t mapped_bytes(size_t n) { return (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE; }

// A zeroed block for the arrays a training step walks through from end to end
// (parameters, activations, their gradients, the optimiser's moments: tens of MB
// at the default size). With 4 KB pages every 4 KB of them costs a TLB entry,
// and a miss costs a page walk, which under a hypervisor is twice as long. A
// block of 1 MB or more is therefore mapped straight from the kernel, on a 2 MB
// boundary and in whole huge pages, and offered for transparent huge pages
// (madvise; where the kernel is not in "madvise" or "always" mode the advice is
// ignored and nothing else changes). The kernel hands the pages out zeroed when
// they are first touched, so the 2 MB pages of a block that are never used (the
// gradients of the attention probabilities, which no layer computes) cost no
// memory. Smaller blocks come from calloc. free_pages releases either.
void* xcalloc_pages(size_t count, size_t size, const char* what) {
    if (size && count > (SIZE_MAX - 2 * HUGE_PAGE) / size)
        return xcalloc(count, size, what); // which fails, with its message
    size_t n = count * size;
    if (!block_is_mapped(n)) return xcalloc(count, size, what);

    // 2 MB more than the block, of which the unaligned ends are given back
    size_t bytes = mapped_bytes(n);
    char* raw = mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        fprintf(stderr, "error: out of memory allocating %zu bytes for %s\n"
                "       try a smaller --batch, --context or --channels\n", bytes, what);
        exit(EXIT_FAILURE);
    }
    size_t head = (HUGE_PAGE - (uintptr_t)raw % HUGE_PAGE) % HUGE_PAGE;
    if (head) munmap(raw, head);
    munmap(raw + head + bytes, HUGE_PAGE - head);
    char* p = raw + head;

    // the advice, before the first touch, which is when pages are chosen
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void free_pages(void* p, size_t count, size_t size) {
    if (!p) return;
    if (block_is_mapped(count * size)) munmap(p, mapped_bytes(count * size));
    else free(p);
}

int stdout_finish(void) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    fprintf(stderr, "error: cannot write to standard output (%s); is the disk full, or "
            "the reader gone?\n", errno ? strerror(errno) : "write error");
    return -1;
}

// ----------------------------------------------------------------------------
// Configuration and parameter layout

const char* config_check(const GameConfig* c) {
    if (c->context < 1 || c->context > 65536) return "context must be in 1..65536";
    if (c->vocab_size < 1 || c->vocab_size > (1 << 21))
        return "vocabulary size must be in 1..2097152";
    if (c->layers < 1 || c->layers > (MAX_GROUPS - 2) / 2) return "layers must be in 1..64";
    if (c->heads < 1 || c->heads > 1024) return "heads must be in 1..1024";
    if (c->channels < 1 || c->channels > 16384) return "channels must be in 1..16384";
    if (c->channels % c->heads != 0) return "channels must be a multiple of heads";
    return NULL;
}

size_t param_sizes(const GameConfig* cfg, size_t s[NUM_PARAM_TENSORS]) {
    size_t V = cfg->vocab_size, C = cfg->channels, L = cfg->layers;
    size_t T = cfg->context, NH = cfg->heads;
    s[P_WTE] = V * C;
    s[P_WPE] = T * C;
    s[P_LN1W] = L * C;
    s[P_LN1B] = L * C;
    s[P_QKVW] = L * 3 * C * C;
    s[P_QKVB] = L * 3 * C;
    s[P_ATTPROJW] = L * C * C;
    s[P_ATTPROJB] = L * C;
    s[P_LN2W] = L * C;
    s[P_LN2B] = L * C;
    s[P_FCW] = L * 4 * C * C;
    s[P_FCB] = L * 4 * C;
    s[P_FCPROJW] = L * C * 4 * C;
    s[P_FCPROJB] = L * C;
    s[P_LNFW] = C;
    s[P_LNFB] = C;
    s[P_NOISE_ATT] = L;
    s[P_NOISE_MLP] = L;
    s[P_NOISE_LOGIT] = L * NH;
    s[P_NOISE_HEAD] = V * C;
    size_t total = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) total += s[i];
    return total;
}

void param_views(ParamViews* v, float* memory, const size_t sizes[NUM_PARAM_TENSORS]) {
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        v->t[i] = memory;
        memory += sizes[i];
    }
}

static const char* const PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
    "noise_att", "noise_mlp", "noise_logit", "noise_head",
};

const char* param_name(int i) {
    return (i >= 0 && i < NUM_PARAM_TENSORS) ? PARAM_NAMES[i] : "?";
}

// Which group a tensor's layer-l slice belongs to, and whether it is decayed.
static int tensor_group(const GameConfig* cfg, int tensor, int l) {
    switch (tensor) {
    case P_WTE: case P_WPE:
        return 0;
    case P_LN1W: case P_LN1B: case P_QKVW: case P_QKVB:
    case P_ATTPROJW: case P_ATTPROJB: case P_NOISE_ATT: case P_NOISE_LOGIT:
        return group_attn(l);
    case P_LN2W: case P_LN2B: case P_FCW: case P_FCB:
    case P_FCPROJW: case P_FCPROJB: case P_NOISE_MLP:
        return group_mlp(l);
    default:
        return group_head(cfg);
    }
}

static int tensor_decayed(int tensor) {
    return tensor == P_WTE || tensor == P_WPE || tensor == P_QKVW ||
           tensor == P_ATTPROJW || tensor == P_FCW || tensor == P_FCPROJW;
}

static int tensor_per_layer(int tensor) {
    return !(tensor == P_WTE || tensor == P_WPE || tensor == P_LNFW ||
             tensor == P_LNFB || tensor == P_NOISE_HEAD);
}

int param_slices(const GameConfig* cfg, ParamSlice* out, int cap) {
    size_t sizes[NUM_PARAM_TENSORS];
    param_sizes(cfg, sizes);
    int n = 0;
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        int parts = tensor_per_layer(i) ? cfg->layers : 1;
        size_t each = sizes[i] / parts;
        for (int l = 0; l < parts; l++) {
            if (n < cap) {
                out[n] = (ParamSlice){offset, each, tensor_group(cfg, i, l),
                                      tensor_decayed(i), i};
            }
            n++;
            offset += each;
        }
    }
    return n;
}

void group_name(const GameConfig* cfg, int g, char* buf, size_t len) {
    if (g == 0) snprintf(buf, len, "emb");
    else if (g == group_head(cfg)) snprintf(buf, len, "head");
    else if (g % 2 == 1) snprintf(buf, len, "attn%d", (g - 1) / 2);
    else snprintf(buf, len, "mlp%d", (g - 2) / 2);
}

// ----------------------------------------------------------------------------
// Model allocation and initialisation

void model_init(Model* m, const GameConfig* cfg) {
    memset(m, 0, sizeof(*m));
    m->config = *cfg;
    m->num_params = param_sizes(cfg, m->param_sizes);
    m->params_memory = xcalloc_pages(m->num_params, sizeof(float), "parameters");
    param_views(&m->params, m->params_memory, m->param_sizes);
}

// A normal(0, 1) draw by Box-Muller from two counter-keyed uniforms. Only used
// at initialisation, where exactness matters more than speed.
static float init_normal(uint64_t key, uint64_t i) {
    double u1 = rng_uniform(key, 2 * i), u2 = rng_uniform(key, 2 * i + 1);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void model_init_weights(Model* m, uint64_t seed) {
    const GameConfig* cfg = &m->config;
    float** t = m->params.t;
    float proj_std = 0.02f / sqrtf(2.0f * cfg->layers);

    // normal weights: the generator is keyed on the tensor, so adding a tensor
    // never changes the others' draws
    int normal_tensors[] = {P_WTE, P_WPE, P_QKVW, P_ATTPROJW, P_FCW, P_FCPROJW};
    for (size_t k = 0; k < sizeof(normal_tensors) / sizeof(int); k++) {
        int i = normal_tensors[k];
        float std = (i == P_ATTPROJW || i == P_FCPROJW) ? proj_std : 0.02f;
        uint64_t key = rng_key(seed, 0, RNG_SITE_INIT + (uint64_t)i);
        for (size_t j = 0; j < m->param_sizes[i]; j++) t[i][j] = std * init_normal(key, j);
    }

    // layernorm scales one, biases zero (calloc'd), noise scales at their start
    int ones[] = {P_LN1W, P_LN2W, P_LNFW};
    for (int k = 0; k < 3; k++)
        for (size_t j = 0; j < m->param_sizes[ones[k]]; j++) t[ones[k]][j] = 1.0f;
    int zeros[] = {P_QKVB, P_ATTPROJB, P_FCB, P_FCPROJB, P_LN1B, P_LN2B, P_LNFB};
    for (int k = 0; k < 7; k++) memset(t[zeros[k]], 0, m->param_sizes[zeros[k]] * 4);
    float s_block = logf(0.1f), s_head = logf(0.05f / sqrtf((float)cfg->channels));
    int block_noise[] = {P_NOISE_ATT, P_NOISE_MLP, P_NOISE_LOGIT};
    for (int k = 0; k < 3; k++)
        for (size_t j = 0; j < m->param_sizes[block_noise[k]]; j++)
            t[block_noise[k]][j] = s_block;
    for (size_t j = 0; j < m->param_sizes[P_NOISE_HEAD]; j++) t[P_NOISE_HEAD][j] = s_head;
}

double model_mean_sigma(const Model* m, int tensor) {
    size_t n = m->param_sizes[tensor];
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += exp((double)m->params.t[tensor][i]);
    return n ? sum / n : 0.0;
}

void model_prepare(Model* m, int B, int T) {
    if (m->acts_memory && B == m->B && T == m->T) return;
    size_t V = m->config.vocab_size, C = m->config.channels, L = m->config.layers;
    size_t NH = m->config.heads, BT = (size_t)B * T;
    size_t* s = m->act_sizes;
    s[A_ENCODED] = BT * C;
    s[A_LN1] = L * BT * C;
    s[A_LN1_MEAN] = L * BT;
    s[A_LN1_RSTD] = L * BT;
    s[A_QKV] = L * BT * 3 * C;
    s[A_ATTY] = L * BT * C;
    s[A_ATT] = L * B * NH * T * T;
    s[A_ATTPROJ] = L * BT * C;
    s[A_RESID2] = L * BT * C;
    s[A_LN2] = L * BT * C;
    s[A_LN2_MEAN] = L * BT;
    s[A_LN2_RSTD] = L * BT;
    s[A_FCH] = L * BT * 4 * C;
    s[A_FCH_GELU] = L * BT * 4 * C;
    s[A_FCPROJ] = L * BT * C;
    s[A_RESID3] = L * BT * C;
    s[A_LNF] = BT * C;
    s[A_LNF_MEAN] = BT;
    s[A_LNF_RSTD] = BT;
    s[A_HEADIN] = BT * C;
    s[A_PROBS] = BT * V;
    s[A_LOSSES] = BT;
    size_t total = 0;
    for (int i = 0; i < NUM_ACT_TENSORS; i++) total += s[i];

    // the memory is kept when it is large enough (every tensor is written by
    // the forward pass before it is read)
    if (total > m->acts_capacity) {
        free_pages(m->acts_memory, m->acts_capacity, sizeof(float));
        m->acts_memory = xcalloc_pages(total, sizeof(float), "activations");
        m->acts_capacity = total;
    }
    m->num_acts = total;
    float* p = m->acts_memory;
    for (int i = 0; i < NUM_ACT_TENSORS; i++) {
        m->acts.t[i] = p;
        p += s[i];
    }
    m->B = B;
    m->T = T;
}

void model_free(Model* m) {
    free_pages(m->params_memory, m->num_params, sizeof(float));
    free_pages(m->acts_memory, m->acts_capacity, sizeof(float));
    memset(m, 0, sizeof(*m));
}

// ----------------------------------------------------------------------------
// Layers, forward direction. Argument order: outputs, then inputs, then
// weights, then sizes. The matching backward functions are in train.c.

// out (B, T, C) = wte[inp] + wpe[t]
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe,
                     int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* e = wte + (size_t)inp[b * T + t] * C;
            const float* p = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        }
    }
}

// One row of layernorm: o (C) = (x - mean) * rstd * w + bias; returns mean and
// rstd through the pointers.
static inline void layernorm_row(float* o, float* mean, float* rstd, const float* x,
                                 const float* w, const float* bias, int C) {
    // mean and variance, in that order, as two passes for accuracy
    float m = 0.0f;
    #pragma omp simd reduction(+ : m)
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float v = 0.0f;
    #pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    float r = 1.0f / sqrtf(v + LAYERNORM_EPS);

    // normalise, scale and shift
    #pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * w[c] + bias[c];
    *mean = m;
    *rstd = r;
}

// out (N, C) = (x - mean) * rstd * w + bias, per row of x (N, C); saves the
// row statistics mean (N) and rstd (N) for the backward pass.
void layernorm_forward(float* out, float* mean, float* rstd, const float* x,
                       const float* w, const float* bias, int N, int C) {
    #pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, &mean[n], &rstd[n], x + (size_t)n * C, w, bias, C);
}

// Causal multi-head attention.
// qkv (B, T, 3C) holds q, k, v of every position, head h at channels
// [h hs, (h + 1) hs) of each third. For each query t the scores
// S[t2] = q_t . k_t2 / sqrt(hs) over t2 <= t, plus the C5 logit noise
// eta sigma_{l,h} eps when noise_scale (NH) is not NULL, go through a softmax
// into att (B, NH, T, T), whose masked entries t2 > t are zero, and
// out (B, T, C) = att @ v.

// Row t of the scores into probabilities, in place: s (W = score_chunks(n)
// floats, n = t + 1 keys) becomes softmax over t2 < n of scale s[t2] (+ ns
// eps(base + t2) when noisy), and 0 for t2 >= n. The loops run over all W keys,
// the masked tail included, so that they are vector code with no scalar
// remainder; the simd reductions add in one fixed order for a given build and W.
//
// The work goes through v (W floats), which may be s itself; a row of up to
// SCORE_FIXED_MAX keys goes through a local array that, with W a constant, stays
// in registers.
static inline __attribute__((always_inline)) void
softmax_span(float* s, float* v, int n, int W, float scale, int noisy, float ns,
             uint64_t key, size_t base) {
    // the scaled scores (with their noise), -inf past n, and the largest
    float maxv = -INFINITY;
    #pragma omp simd reduction(max : maxv)
    for (int t2 = 0; t2 < W; t2++) {
        float e = s[t2] * scale;
        if (noisy) e += ns * rng_normal(key, base + t2);
        e = t2 < n ? e : -INFINITY;
        v[t2] = e;
        maxv = e > maxv ? e : maxv;
    }

    // exp(e - max), 0 past n, their sum, and the division by it
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int t2 = 0; t2 < W; t2++) {
        float e = t2 < n ? fast_expf(v[t2] - maxv) : 0.0f;
        v[t2] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    #pragma omp simd
    for (int t2 = 0; t2 < W; t2++) s[t2] = v[t2] * inv;
}

// softmax_span with W a constant for the rows of up to SCORE_FIXED_MAX keys
// without noise (every row at the default context), which so become
// straight-line vector code that keeps the row in registers: about 2% less time per training step, on one
// thread and on two, than one loop for every width (measured with steps that
// alternate between the two in one run).
static void softmax_row(float* restrict s, int n, float scale, int noisy, float ns,
                        uint64_t key, size_t base) {
    float v[SCORE_FIXED_MAX];
    int W = score_chunks(n);
    if (noisy || W > SCORE_FIXED_MAX) {
        softmax_span(s, s, n, W, scale, noisy, ns, key, base);
        return;
    }
    switch (W) {
    case 16: softmax_span(s, v, n, 16, scale, 0, 0.0f, 0, 0); break;
    case 32: softmax_span(s, v, n, 32, scale, 0, 0.0f, 0, 0); break;
    case 48: softmax_span(s, v, n, 48, scale, 0, 0.0f, 0, 0); break;
    default: softmax_span(s, v, n, 64, scale, 0, 0.0f, 0, 0); break;
    }
}

// Each (b, h) pair is two small matrix products, S = Q K^T and out = P V, done
// in blocks of GEMM_TILE_M queries: a block only meets the keys up to its last
// query, so the masked upper triangle is skipped but for the diagonal blocks.
// Both products overwrite their outputs.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                       int NH, const float* noise_scale, uint64_t noise_key) {
    int hs = C / NH, Tp = gemm_round_cols(T, INT_MAX);
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C;

    WorkShare work;
    #pragma omp parallel
    {
        // per thread: kt (hs, Tp) the keys transposed, zero past T, and S (T, Tp)
        // the scores, then the probabilities, of one pair
        float* kt = xmalloc_lines((size_t)hs * Tp, sizeof(float), 1, "attention scratch");
        float* S = xmalloc_lines((size_t)T * Tp, sizeof(float), 0, "attention scratch");

        // the pairs in equal contiguous runs (b, h) = pair / NH, pair % NH, so that
        // a thread reads the batch rows of qkv that it wrote in the product before
        // (see gemm_acc in kernels.c)
        #pragma omp single
        work_begin(&work, (long)B * NH);
        for (long pair; (pair = work_next(&work)) >= 0;) {
            int b = (int)(pair / NH), h = (int)(pair % NH);
            const float* q = qkv + (size_t)b * T * C3 + h * hs;
            const float* k = q + C;
            const float* v = q + 2 * C;
            float* P = att + ((size_t)b * NH + h) * T * T;
            float* o = out + (size_t)b * T * C + h * hs;

            // kt = k^T, so that the keys are the columns of a product
            for (int i = 0; i < hs; i++)
                for (int t = 0; t < T; t++) kt[(size_t)i * Tp + t] = k[t * C3 + i];

            // S = Q K^T, block by block of queries, over the keys they see
            // rounded up to whole tiles (the softmax masks the extra keys)
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                int keys = gemm_round_cols(t0 + rows, Tp);
                gemm_serial(S + (size_t)t0 * Tp, Tp, q + t0 * C3, C3, 1, kt, Tp, rows,
                            keys, hs);
            }

            // the softmax row by row, into att with its zeros past the diagonal;
            // each row also asks for row t of the next pair's q, k and v, whose
            // short rows far apart defeat the hardware's prefetching
            // (the next pair is the next head, or the first of the next row)
            size_t step = h + 1 < NH ? (size_t)hs : (size_t)T * C3 - (NH - 1) * hs;
            int more = b * NH + h + 1 < B * NH;
            for (int t = 0; t < T; t++) {
                for (int part = 0; more && part < 3; part++)
                    prefetch_span(q + step + (size_t)t * C3 + part * C, hs, 0);
                float* s = S + (size_t)t * Tp;
                size_t base = (((size_t)b * NH + h) * T + t) * T;
                softmax_row(s, t + 1, scale, noise_scale != NULL,
                            noise_scale ? noise_scale[h] : 0.0f, noise_key, base);
                int w = score_chunks(t + 1) < T ? score_chunks(t + 1) : T;
                memcpy(P + (size_t)t * T, s, (size_t)w * sizeof(float));
                memset(P + (size_t)t * T + w, 0, (size_t)(T - w) * sizeof(float));
            }

            // out = P V, each block of queries over the values it sees
            for (int t0 = 0; t0 < T; t0 += GEMM_TILE_M) {
                int rows = T - t0 < GEMM_TILE_M ? T - t0 : GEMM_TILE_M;
                gemm_serial(o + (size_t)t0 * C, C, S + (size_t)t0 * Tp, Tp, 1, v, C3,
                            rows, hs, t0 + rows);
            }
        }
        free(kt);
        free(S);
    }
    work_end(&work);
}

// GELU, tanh form (as GPT-2): 0.5 x (1 + tanh(k (x + 0.044715 x^3))),
// k = sqrt(2 / pi).
static inline float gelu(float x) {
    float u = GELU_K * (x + GELU_C * x * x * x);
    return 0.5f * x * (1.0f + fast_tanhf(u));
}

// out (N) = gelu of x (N).
void gelu_forward(float* out, const float* x, size_t N) {
    #pragma omp parallel for simd if (parallel : N > 16384)
    for (size_t i = 0; i < N; i++) out[i] = gelu(x[i]);
}

// The C2 noise of row n (of B T rows of C) of a site: eps of row n is drawn at
// indices n C .. n C + C - 1, and with dither a row b >= B/2 reuses the eps of
// row b - B/2 with the sign flipped, so each pair's first-order noise cancels.
// Returns the sign, and the first index in *base.
float noise_row(int n, int dither, int B, int T, int C, size_t* base) {
    int b = n / T;
    if (dither && B % 2 == 0 && b >= B / 2) {
        *base = (size_t)(n - (B / 2) * T) * C;
        return -1.0f;
    }
    *base = (size_t)n * C;
    return 1.0f;
}

// Row n of a residual add: out = resid + h, or with C2 noise (noise_scale
// pointing at eta sigma) out = resid + h * (1 + eta sigma eps).
static inline void residual_row(float* out, const float* resid, const float* h,
                                const float* noise_scale, uint64_t key, int dither,
                                int B, int T, int C, int n) {
    size_t base, row = (size_t)n * C;
    float* o = out + row;
    if (!noise_scale) {
        #pragma omp simd
        for (int c = 0; c < C; c++) o[c] = resid[row + c] + h[row + c];
        return;
    }
    float sc = noise_row(n, dither, B, T, C, &base) * *noise_scale;
    #pragma omp simd
    for (int c = 0; c < C; c++)
        o[c] = resid[row + c] + h[row + c] * (1.0f + sc * rng_normal(key, base + c));
}

// out (B, T, C) = resid + h, or resid + h * (1 + eta sigma eps) with C2 noise
// (noise_scale points at eta sigma).
void residual_forward(float* out, const float* resid, const float* h,
                      const float* noise_scale, uint64_t key, int dither,
                      int B, int T, int C) {
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++)
        residual_row(out, resid, h, noise_scale, key, dither, B, T, C, n);
}

// The residual add and the layernorm that always follows it, fused so that each
// row is read once: out (B, T, C) = resid + h [* (1 + eta sigma eps)], as
// residual_forward, then ln (B, T, C) = layernorm(out) with its statistics mean
// and rstd (B, T), as layernorm_forward.
void residual_layernorm_forward(float* out, float* ln, float* mean, float* rstd,
                                const float* resid, const float* h,
                                const float* noise_scale, uint64_t key, int dither,
                                const float* w, const float* bias, int B, int T, int C) {
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++) {
        residual_row(out, resid, h, noise_scale, key, dither, B, T, C, n);
        size_t row = (size_t)n * C;
        layernorm_row(ln + row, &mean[n], &rstd[n], out + row, w, bias, C);
    }
}

// f(x) = sign(x) sqrt(|x|), the shaping of the head's factorised noise.
float head_noise_f(float x) { return x < 0.0f ? -sqrtf(-x) : sqrtf(x); }

// The LM head and the loss, fused.
// logits (V) of row n = lnf_n . wte_v (tied weights); with C5 head noise, plus
// sign_b * eta * f(eps_out_v) * sum_c sigma_W[v][c] * headin_n[c], where
// headin = f(eps_in) * lnf is saved in headin (B, T, C). The softmax goes into
// probs (B, T, V); with targets, losses (B, T) = -log probs[target].
// logits_out (B, T, V), when not NULL, receives the logits.
void head_forward(float* probs, float* losses, float* headin, float* logits_out,
                  const float* lnf, const float* wte, const float* sigma_w,
                  const float* f_out, const float* f_in, float eta,
                  const int* targets, int B, int T, int C, int V) {
    int BT = B * T;

    // logits = lnf @ wte^T, written into probs, which has the right shape
    matmul_forward(probs, lnf, wte, NULL, BT, C, V);

    // factorised head noise: a second product with the noise-scale matrix
    if (sigma_w) {
        #pragma omp parallel for
        for (int n = 0; n < BT; n++) {
            const float* x = lnf + (size_t)n * C;
            float* hi = headin + (size_t)n * C;
            for (int c = 0; c < C; c++) hi[c] = f_in[c] * x[c];
        }
        float* noise = xmalloc((size_t)BT * V * sizeof(float), "head noise logits");
        matmul_forward(noise, headin, sigma_w, NULL, BT, C, V);
        #pragma omp parallel for
        for (int n = 0; n < BT; n++) {
            int b = n / T;
            float sign = (B % 2 == 0 && b >= B / 2) ? -eta : eta;
            float* lg = probs + (size_t)n * V;
            const float* nz = noise + (size_t)n * V;
            for (int v = 0; v < V; v++) lg[v] += sign * f_out[v] * nz[v];
        }
        free(noise);
    }
    if (logits_out) memcpy(logits_out, probs, (size_t)BT * V * sizeof(float));

    // softmax and cross-entropy per row
    #pragma omp parallel for
    for (int n = 0; n < BT; n++) {
        float* p = probs + (size_t)n * V;
        float maxv = p[0];
        for (int v = 1; v < V; v++) if (p[v] > maxv) maxv = p[v];
        float sum = 0.0f;
        float target_logit = targets ? p[targets[n]] : 0.0f;
        #pragma omp simd reduction(+ : sum)
        for (int v = 0; v < V; v++) {
            p[v] = fast_expf(p[v] - maxv);
            sum += p[v];
        }
        if (targets) losses[n] = logf(sum) + maxv - target_logit;
        float inv = 1.0f / sum;
        for (int v = 0; v < V; v++) p[v] *= inv;
    }
}

// ----------------------------------------------------------------------------
// The model's forward pass

// sigma = exp(s) of the noise-scale logs s, times eta, into out (n).
static void noise_scales(float* out, const float* s, int n, float eta) {
    for (int i = 0; i < n; i++) out[i] = eta * expf(s[i]);
}

// A linear layer from w (OC, IC), or from its transpose wt (IC, OC) when the
// caller keeps one (the decoder does); wt NULL means use w.
static void linear_forward(float* out, const float* inp, const float* w, const float* wt,
                           const float* bias, int N, int IC, int OC) {
    if (wt) matmul_forward_t(out, inp, wt, bias, N, IC, OC);
    else matmul_forward(out, inp, w, bias, N, IC, OC);
}

static size_t layer_wt_size(int C);

// The forward pass. With wt (the decoder's transposed weights, see KVCache)
// the products use it, and the pass stops at the logits (into logits_out),
// without softmax or loss: that is model_prefill's use.
static void forward_impl(Model* m, const int* inputs, const int* targets, int B, int T,
                         float* logits_out, const float* wt) {
    const GameConfig* cfg = &m->config;
    int C = cfg->channels, L = cfg->layers, NH = cfg->heads, V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    model_prepare(m, B, T);
    float** p = m->params.t;
    float** a = m->acts.t;
    const NoiseConfig* nz = &m->noise;

    // embeddings
    encoder_forward(a[A_ENCODED], inputs, p[P_WTE], p[P_WPE], B, T, C);

    // the transformer blocks
    for (int l = 0; l < L; l++) {
        BlockViews w;
        block_views(&w, m, l);
        const float* resid = l == 0 ? a[A_ENCODED] : a[A_RESID3] + (l - 1) * BT * C;
        float att_scale = 0.0f, mlp_scale = 0.0f, logit_scale[1024];
        if (nz->block) {
            noise_scales(&att_scale, w.noise_att, 1, nz->eta);
            noise_scales(&mlp_scale, w.noise_mlp, 1, nz->eta);
        }
        if (nz->logits) noise_scales(logit_scale, w.noise_logit, NH, nz->eta);

        // attention sublayer: resid2 = resid + noise(attproj(attention(ln1(resid))))
        const float* lwt = wt ? wt + l * layer_wt_size(C) : NULL;
        size_t CC = (size_t)C * C;
        if (l == 0) // later blocks get ln1 from the previous block's fused residual
            layernorm_forward(w.ln1, w.ln1_mean, w.ln1_rstd, resid, w.ln1w, w.ln1b, BT, C);
        linear_forward(w.qkv, w.ln1, w.qkvw, lwt, w.qkvb, BT, C, 3 * C);
        attention_forward(w.atty, w.att, w.qkv, B, T, C, NH,
                          nz->logits ? logit_scale : NULL,
                          rng_key(nz->seed, nz->step, RNG_SITE_LOGIT(l)));
        linear_forward(w.attproj, w.atty, w.attprojw, lwt ? lwt + 3 * CC : NULL, w.attprojb,
                       BT, C, C);
        residual_layernorm_forward(w.resid2, w.ln2, w.ln2_mean, w.ln2_rstd, resid, w.attproj,
                                   nz->block ? &att_scale : NULL,
                                   rng_key(nz->seed, nz->step, RNG_SITE_NOISE_ATT(l)),
                                   nz->dither, w.ln2w, w.ln2b, B, T, C);

        // MLP sublayer: resid3 = resid2 + noise(fcproj(gelu(fc(ln2(resid2))))), and
        // the next layernorm (the next block's ln1, or the final one) with it
        linear_forward(w.fch, w.ln2, w.fcw, lwt ? lwt + 4 * CC : NULL, w.fcb, BT, C, 4 * C);
        gelu_forward(w.fch_gelu, w.fch, BT * 4 * C);
        linear_forward(w.fcproj, w.fch_gelu, w.fcprojw, lwt ? lwt + 8 * CC : NULL, w.fcprojb,
                       BT, 4 * C, C);
        BlockViews next;
        if (l + 1 < L) block_views(&next, m, l + 1);
        residual_layernorm_forward(w.resid3, l + 1 < L ? next.ln1 : a[A_LNF],
                                   l + 1 < L ? next.ln1_mean : a[A_LNF_MEAN],
                                   l + 1 < L ? next.ln1_rstd : a[A_LNF_RSTD], w.resid2,
                                   w.fcproj, nz->block ? &mlp_scale : NULL,
                                   rng_key(nz->seed, nz->step, RNG_SITE_NOISE_MLP(l)),
                                   nz->dither, l + 1 < L ? next.ln1w : p[P_LNFW],
                                   l + 1 < L ? next.ln1b : p[P_LNFB], B, T, C);
    }

    // the head (lnf came with the last block's residual), softmax and loss
    if (wt) {
        matmul_forward_t(logits_out, a[A_LNF], wt + L * layer_wt_size(C), NULL, BT, C, V);
        m->mean_loss = -1.0f;
        return;
    }
    float* f_out = NULL;
    float* f_in = NULL;
    float* sigma_w = NULL;
    if (nz->head) {
        head_noise_vectors(m, &f_out, &f_in, &sigma_w);
    }
    head_forward(a[A_PROBS], a[A_LOSSES], a[A_HEADIN], logits_out, a[A_LNF], p[P_WTE],
                 sigma_w, f_out, f_in, nz->eta, targets, B, T, C, V);
    free(f_out);
    free(f_in);
    free(sigma_w);

    // mean loss, summed in a fixed order
    if (targets) {
        double sum = 0.0;
        for (size_t i = 0; i < BT; i++) sum += a[A_LOSSES][i];
        m->mean_loss = (float)(sum / BT);
    } else {
        m->mean_loss = -1.0f;
    }
}

void model_forward(Model* m, const int* inputs, const int* targets, int B, int T,
                   float* logits_out) {
    forward_impl(m, inputs, targets, B, T, logits_out, NULL);
}

void head_noise_vectors(const Model* m, float** f_out, float** f_in, float** sigma_w) {
    int V = m->config.vocab_size, C = m->config.channels;
    const NoiseConfig* nz = &m->noise;
    *f_out = xmalloc((size_t)V * sizeof(float), "head noise");
    *f_in = xmalloc((size_t)C * sizeof(float), "head noise");
    *sigma_w = xmalloc((size_t)V * C * sizeof(float), "head noise scales");
    uint64_t ko = rng_key(nz->seed, nz->step, RNG_SITE_HEAD_OUT);
    uint64_t ki = rng_key(nz->seed, nz->step, RNG_SITE_HEAD_IN);
    for (int v = 0; v < V; v++) (*f_out)[v] = head_noise_f(rng_normal(ko, v));
    for (int c = 0; c < C; c++) (*f_in)[c] = head_noise_f(rng_normal(ki, c));
    const float* s = m->params.t[P_NOISE_HEAD];
    #pragma omp parallel for
    for (size_t i = 0; i < (size_t)V * C; i++) (*sigma_w)[i] = expf(s[i]);
}

void block_views(BlockViews* w, const Model* m, int l) {
    size_t C = m->config.channels, NH = m->config.heads;
    size_t BT = (size_t)m->B * m->T, TT = (size_t)m->T * m->T;
    float* const* p = m->params.t;
    float* const* a = m->acts.t;
    w->ln1w = p[P_LN1W] + l * C;
    w->ln1b = p[P_LN1B] + l * C;
    w->qkvw = p[P_QKVW] + l * 3 * C * C;
    w->qkvb = p[P_QKVB] + l * 3 * C;
    w->attprojw = p[P_ATTPROJW] + l * C * C;
    w->attprojb = p[P_ATTPROJB] + l * C;
    w->ln2w = p[P_LN2W] + l * C;
    w->ln2b = p[P_LN2B] + l * C;
    w->fcw = p[P_FCW] + l * 4 * C * C;
    w->fcb = p[P_FCB] + l * 4 * C;
    w->fcprojw = p[P_FCPROJW] + l * 4 * C * C;
    w->fcprojb = p[P_FCPROJB] + l * C;
    w->noise_att = p[P_NOISE_ATT] + l;
    w->noise_mlp = p[P_NOISE_MLP] + l;
    w->noise_logit = p[P_NOISE_LOGIT] + l * NH;
    if (!m->acts_memory) return;
    w->ln1 = a[A_LN1] + l * BT * C;
    w->ln1_mean = a[A_LN1_MEAN] + l * BT;
    w->ln1_rstd = a[A_LN1_RSTD] + l * BT;
    w->qkv = a[A_QKV] + l * BT * 3 * C;
    w->atty = a[A_ATTY] + l * BT * C;
    w->att = a[A_ATT] + l * m->B * NH * TT;
    w->attproj = a[A_ATTPROJ] + l * BT * C;
    w->resid2 = a[A_RESID2] + l * BT * C;
    w->ln2 = a[A_LN2] + l * BT * C;
    w->ln2_mean = a[A_LN2_MEAN] + l * BT;
    w->ln2_rstd = a[A_LN2_RSTD] + l * BT;
    w->fch = a[A_FCH] + l * BT * 4 * C;
    w->fch_gelu = a[A_FCH_GELU] + l * BT * 4 * C;
    w->fcproj = a[A_FCPROJ] + l * BT * C;
    w->resid3 = a[A_RESID3] + l * BT * C;
}

// ----------------------------------------------------------------------------
// Single-token decoding with a key/value cache

// Floats of one layer's transposed matrices: 3CC + CC + 4CC + 4CC.
static size_t layer_wt_size(int C) { return 12 * (size_t)C * C; }

// ---- bfloat16 weights

uint16_t bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));

    // round to nearest, ties to even: add half an ulp less one, plus one when
    // the last kept bit is odd; a carry runs on into the exponent, as it must
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;

    // a NaN keeps its sign and upper payload, with the quiet bit set (a select,
    // not a branch, so that loops over this vectorise)
    uint32_t nan = (u >> 16) | 0x0040u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float bf16_round(float x) { return bf16_to_float(bf16_from_float(x)); }

void model_round_bf16(Model* m) {
    static const int matrices[] = {P_WTE, P_QKVW, P_ATTPROJW, P_FCW, P_FCPROJW};
    for (size_t k = 0; k < sizeof(matrices) / sizeof(matrices[0]); k++) {
        float* t = m->params.t[matrices[k]];
        size_t n = m->param_sizes[matrices[k]];
        for (size_t i = 0; i < n; i++) t[i] = bf16_round(t[i]);
    }
}

#define BF16_WORDS (BF16_BLOCK / 2) // uint32 words of one block of one row

size_t bf16_packed_words(int IC, int OC) {
    size_t nb = ((size_t)OC + BF16_BLOCK - 1) / BF16_BLOCK;
    return (size_t)IC * nb * BF16_WORDS;
}

// Words of one block's packed matrices: qkvw, attprojw, fcw, fcprojw.
static size_t layer_wp_size(int C) {
    return bf16_packed_words(C, 3 * C) + bf16_packed_words(C, C) +
           bf16_packed_words(C, 4 * C) + bf16_packed_words(4 * C, C);
}

// Blocks of panel p in a matrix of nb blocks: BF16_PANEL but in the last one.
static inline int panel_blocks(int nb, int p) {
    int left = nb - p * BF16_PANEL;
    return left < BF16_PANEL ? left : BF16_PANEL;
}

void bf16_pack(uint32_t* dst, const float* w, int OC, int IC) {
    int nb = (OC + BF16_BLOCK - 1) / BF16_BLOCK;
    for (int b = 0; b < nb; b++) {
        int p = b / BF16_PANEL, np = panel_blocks(nb, p), jb = b - p * BF16_PANEL;
        uint32_t* panel = dst + (size_t)IC * BF16_PANEL * BF16_WORDS * p;

        // 16 input rows at a time: word k of the block holds outputs 32 b + k
        // (low half) and 32 b + 16 + k, read from rows of w; outputs past OC
        // are zero
        for (int i0 = 0; i0 < IC; i0 += 16) {
            int ni = IC - i0 < 16 ? IC - i0 : 16;
            uint32_t tile[16][BF16_WORDS];
            for (int k = 0; k < BF16_WORDS; k++) {
                int olo = b * BF16_BLOCK + k, ohi = olo + BF16_WORDS;
                const float* rlo = w + (size_t)(olo < OC ? olo : 0) * IC + i0;
                const float* rhi = w + (size_t)(ohi < OC ? ohi : 0) * IC + i0;
                for (int ii = 0; ii < ni; ii++) {
                    uint32_t lo = olo < OC ? bf16_from_float(rlo[ii]) : 0u;
                    uint32_t hi = ohi < OC ? bf16_from_float(rhi[ii]) : 0u;
                    tile[ii][k] = lo | hi << 16;
                }
            }
            for (int ii = 0; ii < ni; ii++)
                memcpy(panel + ((size_t)(i0 + ii) * np + jb) * BF16_WORDS, tile[ii],
                       sizeof(tile[ii]));
        }
    }
}

// The two floats of a packed word: its low half and its high half.
static inline float bf16_low(uint32_t w) {
    uint32_t u = w << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline float bf16_high(uint32_t w) {
    uint32_t u = w & 0xffff0000u;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

// acc (16) = bias[o .. o + 15], zero past OC or without a bias.
static inline __attribute__((always_inline)) void
acc_from_bias(float* restrict acc, const float* restrict bias, int o, int OC) {
    if (bias && o + BF16_WORDS <= OC) {
        memcpy(acc, bias + o, BF16_WORDS * sizeof(float));
        return;
    }
    for (int k = 0; k < BF16_WORDS; k++) acc[k] = bias && o + k < OC ? bias[o + k] : 0.0f;
}

// out[o .. o + 15] = acc (16), cut at OC.
static inline __attribute__((always_inline)) void
acc_store(float* restrict out, const float* restrict acc, int o, int OC) {
    if (o + BF16_WORDS <= OC) {
        memcpy(out + o, acc, BF16_WORDS * sizeof(float));
        return;
    }
    for (int k = 0; k < BF16_WORDS && o + k < OC; k++) out[o + k] = acc[k];
}

// How far ahead (in words, 4 KB) matvec_blocks asks for the weights it will read:
// the packed matrices lie one after the other in the order a decode step uses
// them, so this runs on across panels and matrices, where the hardware's own
// prefetch would start over. In interleaved runs on the shared test machine it
// sampled 10-15% faster while the machine was busy, and the same when it was quiet.
#define BF16_PREFETCH 1024

// Blocks jb .. jb + nb - 1 of one panel of a packed product: out[o0 ..]
// (outputs o0 .. o0 + 32 nb - 1, cut at OC) = bias + x (IC) @ those blocks,
// whose row i starts at panel + i * stride + 16 jb. Inlined with nb a
// constant, so that the loops have fixed lengths: the 2 nb accumulator vectors
// stay in registers while the panel streams past, one shift, one AND and two
// FMAs per 16 words. Each output is bias (or 0) plus x[i] w[i] added in
// increasing i, whatever nb.
static inline __attribute__((always_inline)) void
matvec_blocks(float* restrict out, const float* restrict x, const uint32_t* restrict panel,
              size_t stride, const float* restrict bias, int IC, int o0, int OC, int nb) {
    float lo[BF16_PANEL * BF16_WORDS], hi[BF16_PANEL * BF16_WORDS];
    for (int b = 0; b < nb; b++) {
        int o = o0 + b * BF16_BLOCK;
        acc_from_bias(lo + b * BF16_WORDS, bias, o, OC);
        acc_from_bias(hi + b * BF16_WORDS, bias, o + BF16_WORDS, OC);
    }
    for (int i = 0; i < IC; i++) {
        const uint32_t* row = panel + (size_t)i * stride;
        for (int b = 0; b < nb; b++) __builtin_prefetch(row + BF16_PREFETCH + b * BF16_WORDS);
        float xi = x[i];
        #pragma omp simd
        for (int j = 0; j < nb * BF16_WORDS; j++) {
            lo[j] += xi * bf16_low(row[j]);
            hi[j] += xi * bf16_high(row[j]);
        }
    }
    for (int b = 0; b < nb; b++) {
        int o = o0 + b * BF16_BLOCK;
        acc_store(out, lo + b * BF16_WORDS, o, OC);
        acc_store(out, hi + b * BF16_WORDS, o + BF16_WORDS, OC);
    }
}

// out (OC) = bias + x (IC) @ wp, wp a packed (OC, IC) matrix; bias may be NULL.
// A panel at a time, each in one pass whatever its width.
static void matvec_bf16(float* restrict out, const float* restrict x,
                        const uint32_t* restrict wp, const float* restrict bias, int IC,
                        int OC) {
    int nb = (OC + BF16_BLOCK - 1) / BF16_BLOCK;
    for (int p = 0; p * BF16_PANEL < nb; p++) {
        const uint32_t* panel = wp + (size_t)IC * BF16_PANEL * BF16_WORDS * p;
        int np = panel_blocks(nb, p), o0 = p * BF16_PANEL * BF16_BLOCK;
        size_t stride = (size_t)np * BF16_WORDS;
        switch (np) {
        case 8: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 8); break;
        case 7: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 7); break;
        case 6: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 6); break;
        case 5: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 5); break;
        case 4: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 4); break;
        case 3: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 3); break;
        case 2: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 2); break;
        default: matvec_blocks(out, x, panel, stride, bias, IC, o0, OC, 1); break;
        }
    }
}

// Rows of x that matmat_block takes at once: 2 x 8 accumulator vectors.
#define MATMAT_ROWS 8

// Row i of a packed block (16 words at w) unpacked into f (32 floats), in
// output order.
static inline void unpack_row(float* restrict f, const uint32_t* restrict w) {
    #pragma omp simd
    for (int k = 0; k < BF16_WORDS; k++) {
        f[k] = bf16_low(w[k]);
        f[BF16_WORDS + k] = bf16_high(w[k]);
    }
}

// One block of a packed product for MATMAT_ROWS rows, its weights unpacked to
// floats: out (rows, OC), outputs o0 .. o0 + 31 (cut at OC), = bias + x (rows,
// IC) @ wf, wf (IC, 32) the block's weights in output order. Every output gets
// the very additions of matvec_blocks, in the same order, so the two agree bit
// for bit. With next not NULL, the rows of the next packed block (16 words
// stride apart) are unpacked into wf_next on the way, so that their loads from
// the outer caches overlap this block's arithmetic.
static void matmat_block(float* restrict out, const float* restrict x,
                         const float* restrict wf, const float* restrict bias, int IC,
                         int o0, int OC, const uint32_t* restrict next, size_t stride,
                         float* restrict wf_next) {
    float lo[MATMAT_ROWS][BF16_WORDS], hi[MATMAT_ROWS][BF16_WORDS];
    float blo[BF16_WORDS], bhi[BF16_WORDS];
    acc_from_bias(blo, bias, o0, OC);
    acc_from_bias(bhi, bias, o0 + BF16_WORDS, OC);
    for (int r = 0; r < MATMAT_ROWS; r++) {
        memcpy(lo[r], blo, sizeof(blo));
        memcpy(hi[r], bhi, sizeof(bhi));
    }
    for (int i = 0; i < IC; i++) {
        const float* w = wf + (size_t)i * BF16_BLOCK;
        for (int r = 0; r < MATMAT_ROWS; r++) {
            float xr = x[(size_t)r * IC + i];
            #pragma omp simd
            for (int k = 0; k < BF16_WORDS; k++) {
                lo[r][k] += xr * w[k];
                hi[r][k] += xr * w[BF16_WORDS + k];
            }
        }
        if (next) unpack_row(wf_next + (size_t)i * BF16_BLOCK, next + (size_t)i * stride);
    }
    for (int r = 0; r < MATMAT_ROWS; r++) {
        acc_store(out + (size_t)r * OC, lo[r], o0, OC);
        acc_store(out + (size_t)r * OC, hi[r], o0 + BF16_WORDS, OC);
    }
}

// Where block b of a packed (OC, IC) matrix of nb blocks starts: its row 0,
// with the rows *stride words apart.
static inline const uint32_t* packed_block(const uint32_t* wp, int IC, int nb, int b,
                                           size_t* stride) {
    int p = b / BF16_PANEL;
    *stride = (size_t)panel_blocks(nb, p) * BF16_WORDS;
    return wp + (size_t)IC * BF16_PANEL * BF16_WORDS * p +
           (size_t)(b - p * BF16_PANEL) * BF16_WORDS;
}

// out (n, OC) = bias + x (n, IC) @ wp, row by row the same as matvec_bf16:
// MATMAT_ROWS rows at a time, the rest one by one. Block by block, the block's
// weights are unpacked to floats (into one half of wf, 2 (IC, 32), while the
// previous block is being used from the other half), read from memory once,
// and then serve every group of rows from the nearer caches.
static void matmat_bf16(float* out, const float* x, const uint32_t* wp, const float* bias,
                        int n, int IC, int OC, float* restrict wf) {
    int nb = (OC + BF16_BLOCK - 1) / BF16_BLOCK;
    int full = n / MATMAT_ROWS * MATMAT_ROWS;
    if (full > 0) {
        // the first block, then each one while the one before it is in use
        float* cur = wf;
        float* nxt = wf + (size_t)IC * BF16_BLOCK;
        size_t stride;
        const uint32_t* blk = packed_block(wp, IC, nb, 0, &stride);
        for (int i = 0; i < IC; i++)
            unpack_row(cur + (size_t)i * BF16_BLOCK, blk + (size_t)i * stride);
        for (int b = 0; b < nb; b++) {
            const uint32_t* next = NULL;
            if (b + 1 < nb) next = packed_block(wp, IC, nb, b + 1, &stride);
            for (int r = 0; r < full; r += MATMAT_ROWS)
                matmat_block(out + (size_t)r * OC, x + (size_t)r * IC, cur, bias, IC,
                             b * BF16_BLOCK, OC, r == 0 ? next : NULL, stride, nxt);
            float* t = cur;
            cur = nxt;
            nxt = t;
        }
    }
    for (int r = full; r < n; r++)
        matvec_bf16(out + (size_t)r * OC, x + (size_t)r * IC, wp, bias, IC, OC);
}

// ---- the cache

void kvcache_init(KVCache* kv, const Model* m, int precision) {
    const GameConfig* cfg = &m->config;
    size_t L = cfg->layers, C = cfg->channels, T = cfg->context, V = cfg->vocab_size;
    if (precision != KV_FP32 && precision != KV_BF16 && precision != KV_INT8) {
        fprintf(stderr, "error: kvcache_init: precision %d is not KV_FP32, KV_BF16 or "
                "KV_INT8\n", precision);
        exit(EXIT_FAILURE);
    }
    memset(kv, 0, sizeof(*kv));
    kv->capacity = cfg->context;
    kv->layers = cfg->layers;
    kv->key_stride = (cfg->context + 15) / 16 * 16;
    kv->precision = precision;
    // the caches start on cache lines; the keys are read (and masked) past the
    // positions written, up to a multiple of 16, so they start as zeros
    kv->keys = xmalloc_lines(L * C * kv->key_stride, sizeof(float), 1, "key cache");
    kv->values = xmalloc_lines(L * T * C, sizeof(float), 1, "value cache");
    kv->att = xmalloc_lines((size_t)cfg->heads * kv->key_stride, sizeof(float), 1,
                            "decode state");

    // the state rows, which calloc zeroes as pages are first touched: most of
    // them only model_prefill reaches
    kv->x = xcalloc(T * C, sizeof(float), "decode state");
    kv->xb = xcalloc(T * C, sizeof(float), "decode state");
    kv->qkv = xcalloc(T * 3 * C, sizeof(float), "decode state");
    kv->atty = xcalloc(T * C, sizeof(float), "decode state");
    kv->hidden = xcalloc(T * 4 * C, sizeof(float), "decode state");
    kv->hidden_gelu = xcalloc(T * 4 * C, sizeof(float), "decode state");
    kv->logits = xcalloc(V, sizeof(float), "decode state");

    // int8: the blocks' packed matrices, layer by layer, the head's float copy
    // (transposed), and room for a product's quantized input rows
    if (precision == KV_INT8) {
        kv->i8 = xmalloc(4 * L * sizeof(I8Matrix), "decode weights");
        for (size_t l = 0; l < L; l++) {
            BlockViews w;
            block_views(&w, m, (int)l);
            i8_matrix_init(&kv->i8[4 * l + 0], w.qkvw, 3 * C, C);
            i8_matrix_init(&kv->i8[4 * l + 1], w.attprojw, C, C);
            i8_matrix_init(&kv->i8[4 * l + 2], w.fcw, 4 * C, C);
            i8_matrix_init(&kv->i8[4 * l + 3], w.fcprojw, C, 4 * C);
        }
        kv->wt = xmalloc(C * V * sizeof(float), "decode weights");
        transpose_matrix(kv->wt, V, m->params.t[P_WTE], V, C);
        kv->xq = xmalloc_lines(T * i8_row_bytes(4 * C), 1, 0, "decode state");
        kv->xs = xmalloc(T * sizeof(float), "decode state");
        return;
    }

    // bfloat16: the packed matrices, layer by layer, then the head
    if (precision == KV_BF16) {
        size_t words = L * layer_wp_size(C) + bf16_packed_words(C, V);
        kv->wp = xmalloc_lines(words, sizeof(uint32_t), 0, "decode weights");
        kv->unpacked = xmalloc_lines(2 * 4 * C * BF16_BLOCK, sizeof(float), 1,
                                     "decode scratch");
        uint32_t* dst = kv->wp;
        for (size_t l = 0; l < L; l++) {
            BlockViews w;
            block_views(&w, m, (int)l);
            bf16_pack(dst, w.qkvw, 3 * C, C);
            dst += bf16_packed_words(C, 3 * C);
            bf16_pack(dst, w.attprojw, C, C);
            dst += bf16_packed_words(C, C);
            bf16_pack(dst, w.fcw, 4 * C, C);
            dst += bf16_packed_words(C, 4 * C);
            bf16_pack(dst, w.fcprojw, C, 4 * C);
            dst += bf16_packed_words(4 * C, C);
        }
        bf16_pack(dst, m->params.t[P_WTE], V, C);
        return;
    }

    // float: the transposed matrices, layer by layer, then the head
    kv->window_logits = xcalloc(T * V, sizeof(float), "decode state");
    kv->wt = xmalloc((L * layer_wt_size(C) + C * V) * sizeof(float), "decode weights");
    for (size_t l = 0; l < L; l++) {
        BlockViews w;
        block_views(&w, m, (int)l);
        float* dst = kv->wt + l * layer_wt_size(C);
        transpose_matrix(dst, 3 * C, w.qkvw, 3 * C, C);
        transpose_matrix(dst + 3 * C * C, C, w.attprojw, C, C);
        transpose_matrix(dst + 4 * C * C, 4 * C, w.fcw, 4 * C, C);
        transpose_matrix(dst + 8 * C * C, C, w.fcprojw, C, 4 * C);
    }
    transpose_matrix(kv->wt + L * layer_wt_size(C), V, m->params.t[P_WTE], V, C);
}

void kvcache_free(KVCache* kv) {
    if (kv->i8) {
        for (int i = 0; i < 4 * kv->layers; i++) i8_matrix_free(&kv->i8[i]);
        free(kv->i8);
    }
    free(kv->xq);
    free(kv->xs);
    free(kv->keys);
    free(kv->values);
    free(kv->wt);
    free(kv->wp);
    free(kv->unpacked);
    free(kv->x);
    free(kv->xb);
    free(kv->qkv);
    free(kv->atty);
    free(kv->hidden);
    free(kv->hidden_gelu);
    free(kv->att);
    free(kv->logits);
    free(kv->window_logits);
    memset(kv, 0, sizeof(*kv));
}

// out (OC) = bias + x (IC) @ wt (IC, OC): a sum of rows of wt; bias may be NULL.
// The outputs go in chunks of MATVEC_CHUNK that stay in registers (eight
// 512-bit vectors, enough independent sums to keep the FMA units busy) while
// the rows stream past.
#define MATVEC_CHUNK 128
static void matvec_t(float* restrict out, const float* restrict x,
                     const float* restrict wt, const float* bias, int IC, int OC) {
    int o0 = 0;
    for (; o0 + MATVEC_CHUNK <= OC; o0 += MATVEC_CHUNK) {
        float acc[MATVEC_CHUNK];
        for (int j = 0; j < MATVEC_CHUNK; j++) acc[j] = bias ? bias[o0 + j] : 0.0f;
        for (int i = 0; i < IC; i++) {
            const float* row = wt + (size_t)i * OC + o0;
            float xi = x[i];
            #pragma omp simd
            for (int j = 0; j < MATVEC_CHUNK; j++) acc[j] += xi * row[j];
        }
        memcpy(out + o0, acc, sizeof(acc));
    }

    // the last, partial chunk
    int n = OC - o0;
    if (n == 0) return;
    for (int j = 0; j < n; j++) out[o0 + j] = bias ? bias[o0 + j] : 0.0f;
    for (int i = 0; i < IC; i++) {
        const float* row = wt + (size_t)i * OC + o0;
        float xi = x[i];
        for (int j = 0; j < n; j++) out[o0 + j] += xi * row[j];
    }
}

// out (n, OC) = bias + x (n, IC) @ matrix k of block l (0 qkvw, 1 attprojw,
// 2 fcw, 3 fcprojw; block L, k 0 is the head), in the cache's own copy and
// precision, row by row.
static void decode_linear(const KVCache* kv, float* out, const float* x, int l, int k,
                          const float* bias, int n, int IC, int OC, int C) {
    // int8: a block's matrix, its input rows rounded to bytes first
    if (kv->precision == KV_INT8 && l < kv->layers) {
        size_t row = i8_row_bytes(IC);
        for (int r = 0; r < n; r++)
            kv->xs[r] = i8_quantize(kv->xq + r * row, x + (size_t)r * IC, IC);
        i8_matmul(out, kv->xq, kv->xs, n, &kv->i8[4 * l + k], bias);
        return;
    }

    // float32: any matrix (KV_FP32), or the head, the only float copy of KV_INT8
    if (kv->precision != KV_BF16) {
        static const size_t at[4] = {0, 3, 4, 8}; // in C C floats
        const float* wt = kv->precision == KV_INT8
                              ? kv->wt
                              : kv->wt + l * layer_wt_size(C) + at[k] * C * C;
        for (int r = 0; r < n; r++)
            matvec_t(out + (size_t)r * OC, x + (size_t)r * IC, wt, bias, IC, OC);
        return;
    }

    // bfloat16: the packed copy
    const uint32_t* wp = kv->wp + l * layer_wp_size(C);
    if (k > 0) wp += bf16_packed_words(C, 3 * C);
    if (k > 1) wp += bf16_packed_words(C, C);
    if (k > 2) wp += bf16_packed_words(C, 4 * C);
    matmat_bf16(out, x, wp, bias, n, IC, OC, kv->unpacked);
}

// out (C) = layernorm of x (C) with scale w and shift b, as layernorm_forward
// computes a row. This, decode_gelu and attend are kept out of line so that
// model_decode and model_prefill run the very same instructions: inlined into
// copies of decode_rows specialised for one row, their vector reductions could
// be compiled to add in another order, and the two must agree bit for bit.
static __attribute__((noinline)) void decode_layernorm(float* out, const float* x,
                                                       const float* w, const float* b,
                                                       int C) {
    float mean, rstd;
    layernorm_row(out, &mean, &rstd, x, w, b, C);
}

// out (N) = GELU of x (N), gelu_forward's function, as a plain vector loop
// without gelu_forward's parallel region (a decode step has only 4C elements),
// out of line for the reason above.
static __attribute__((noinline)) void decode_gelu(float* restrict out,
                                                  const float* restrict x, size_t N) {
    #pragma omp simd
    for (size_t i = 0; i < N; i++) out[i] = gelu(x[i]);
}

// Scores of one head over W positions (W a multiple of 16, a constant once
// inlined, so that the sums stay in registers): a (W) = q (hs) . the columns of
// kh, rows of kT ks floats apart. Four partial sums over i = 4u + j (j = 0..3;
// the last hs % 4 channels go to the first), added as (s0 + s1) + (s2 + s3), so
// that four chains of additions run side by side.
static inline __attribute__((always_inline)) void
head_scores(float* restrict a, const float* restrict q, const float* restrict kh, int ks,
            int hs, int W) {
    float s[4][64] = {{0}};
    int i = 0;
    for (; i + 4 <= hs; i += 4) {
        for (int j = 0; j < 4; j++) {
            float qi = q[i + j];
            const float* krow = kh + (size_t)(i + j) * ks;
            #pragma omp simd
            for (int t = 0; t < W; t++) s[j][t] += qi * krow[t];
        }
    }
    for (; i < hs; i++) {
        float qi = q[i];
        const float* krow = kh + (size_t)i * ks;
        #pragma omp simd
        for (int t = 0; t < W; t++) s[0][t] += qi * krow[t];
    }
    #pragma omp simd
    for (int t = 0; t < W; t++) a[t] = (s[0][t] + s[1][t]) + (s[2][t] + s[3][t]);
}

// The largest and the sum of 16 lanes, combined as a tree (lane k with lane
// k + 8, then k + 4, ...), so that the order is fixed and the chain short.
static inline float lanes_max(float* v) {
    for (int w = 8; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) v[k] = v[k + w] > v[k] ? v[k + w] : v[k];
    return v[0];
}

static inline float lanes_sum(float* v) {
    for (int w = 8; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) v[k] += v[k + w];
    return v[0];
}

// Channels c0 .. c0 + W - 1 (W a multiple of 16, at most 64, a constant once
// inlined) of one query's attention output: out[c] = sum over t < n of
// p[h][t] v[t][c], h the head of channel c (hs a multiple of 16, so each
// vector of 16 channels has one head), p (NH, ks) the probabilities. Two
// partial sums (even and odd t) of 2 W / 16 vectors stay in registers while
// the rows of v (cap, C) stream past in order.
static inline __attribute__((always_inline)) void
head_values(float* restrict out, const float* restrict att, const float* restrict v,
            int n, int ks, int C, int hs, int c0, int W) {
    float even[64] = {0}, odd[64] = {0};
    int t = 0;
    for (; t + 2 <= n; t += 2) {
        const float* v0 = v + (size_t)t * C + c0;
        const float* v1 = v0 + C;
        for (int k = 0; k < W / 16; k++) {
            const float* p = att + (size_t)((c0 + 16 * k) / hs) * ks + t;
            float p0 = p[0], p1 = p[1];
            #pragma omp simd
            for (int i = 0; i < 16; i++) {
                even[16 * k + i] += p0 * v0[16 * k + i];
                odd[16 * k + i] += p1 * v1[16 * k + i];
            }
        }
    }
    if (t < n) {
        const float* v0 = v + (size_t)t * C + c0;
        for (int k = 0; k < W / 16; k++) {
            float p0 = att[(size_t)((c0 + 16 * k) / hs) * ks + t];
            #pragma omp simd
            for (int i = 0; i < 16; i++) even[16 * k + i] += p0 * v0[16 * k + i];
        }
    }
    #pragma omp simd
    for (int i = 0; i < W; i++) out[c0 + i] = even[i] + odd[i];
}

// One query's causal attention over the cached positions 0 .. pos of a block:
// out (C) from q (C), the keys kT (C, ks) and the values v (cap, C), with the
// scores of head h in att[h ks ..] (NH, ks) as scratch. ks is a multiple of 16,
// so that the scores and the softmax run over whole vectors, past pos up to
// the next multiple of 16: those extra positions are masked out before the
// softmax sums. The sums are split (head_scores, head_values) into chains that
// run side by side; decoding and prefilling both come here, so they agree.
static __attribute__((noinline)) void attend(float* restrict out, float* restrict att,
                                             const float* restrict q,
                                             const float* restrict kT,
                                             const float* restrict v, int pos, int ks,
                                             int C, int NH) {
    int hs = C / NH, n = pos + 1, n16 = (n + 15) / 16 * 16;
    float scale = 1.0f / sqrtf((float)hs);

    for (int h = 0; h < NH; h++) {
        // scores q_h . k_t, in chunks of up to 64 positions
        float* a = att + (size_t)h * ks;
        const float* qh = q + h * hs;
        const float* kh = kT + (size_t)h * hs * ks;
        for (int t0 = 0; t0 < n16; t0 += 64) {
            switch (n16 - t0 < 64 ? n16 - t0 : 64) {
            case 64: head_scores(a + t0, qh, kh + t0, ks, hs, 64); break;
            case 48: head_scores(a + t0, qh, kh + t0, ks, hs, 48); break;
            case 32: head_scores(a + t0, qh, kh + t0, ks, hs, 32); break;
            default: head_scores(a + t0, qh, kh + t0, ks, hs, 16); break;
            }
        }

        // softmax of the scaled scores, zero past pos, 16 lanes at a time
        float lane_max[16], lane_sum[16];
        for (int k = 0; k < 16; k++) lane_max[k] = -INFINITY;
        for (int t0 = 0; t0 < n16; t0 += 16) {
            #pragma omp simd
            for (int k = 0; k < 16; k++) {
                float e = t0 + k < n ? a[t0 + k] * scale : -INFINITY;
                a[t0 + k] = e;
                lane_max[k] = e > lane_max[k] ? e : lane_max[k];
            }
        }
        float maxv = lanes_max(lane_max);
        for (int k = 0; k < 16; k++) lane_sum[k] = 0.0f;
        for (int t0 = 0; t0 < n16; t0 += 16) {
            #pragma omp simd
            for (int k = 0; k < 16; k++) {
                float e = t0 + k < n ? fast_expf(a[t0 + k] - maxv) : 0.0f;
                a[t0 + k] = e;
                lane_sum[k] += e;
            }
        }
        float inv = 1.0f / lanes_sum(lane_sum);
        for (int t0 = 0; t0 < n16; t0 += 16) {
            #pragma omp simd
            for (int k = 0; k < 16; k++) a[t0 + k] *= inv;
        }
    }

    // out_h = sum over t of p[h][t] v_t, in chunks of up to 64 channels that
    // stay in registers while the positions' values stream past in order
    if (hs % 16 == 0) {
        for (int c0 = 0; c0 < C; c0 += 64) {
            switch (C - c0 < 64 ? C - c0 : 64) {
            case 64: head_values(out, att, v, n, ks, C, hs, c0, 64); break;
            case 48: head_values(out, att, v, n, ks, C, hs, c0, 48); break;
            case 32: head_values(out, att, v, n, ks, C, hs, c0, 32); break;
            default: head_values(out, att, v, n, ks, C, hs, c0, 16); break;
            }
        }
        return;
    }
    memset(out, 0, C * sizeof(float));
    for (int t = 0; t < n; t++) {
        const float* vt = v + (size_t)t * C;
        for (int h = 0; h < NH; h++) {
            float p = att[(size_t)h * ks + t];
            #pragma omp simd
            for (int i = 0; i < hs; i++) out[h * hs + i] += p * vt[h * hs + i];
        }
    }
}

// Rows r = 0 .. n - 1 of the decode state: token tokens[r] at position pos0 + r,
// through every block, each attending to the cached positions up to its own,
// and their keys and values into the cache. The logits of the last row go to
// kv->logits. Rows that nothing later reads are dropped on the way: the last
// block takes only the last row past its keys and values.
static void decode_rows(Model* m, KVCache* kv, const int* tokens, int pos0, int n) {
    const GameConfig* cfg = &m->config;
    int C = cfg->channels, NH = cfg->heads, L = cfg->layers, V = cfg->vocab_size;
    int cap = kv->capacity, ks = kv->key_stride;
    size_t C3 = 3 * (size_t)C, C4 = 4 * (size_t)C;
    float** p = m->params.t;

    // embeddings of these tokens at these positions
    for (int r = 0; r < n; r++) {
        const float* e = p[P_WTE] + (size_t)tokens[r] * C;
        const float* wpe = p[P_WPE] + (size_t)(pos0 + r) * C;
        float* x = kv->x + (size_t)r * C;
        for (int c = 0; c < C; c++) x[c] = e[c] + wpe[c];
    }

    for (int l = 0; l < L; l++) {
        BlockViews w;
        block_views(&w, m, l);
        float* kT = kv->keys + (size_t)l * C * ks;
        float* vc = kv->values + (size_t)l * cap * C;

        // q, k, v of every row; k and v go into the cache
        for (int r = 0; r < n; r++)
            decode_layernorm(kv->xb + (size_t)r * C, kv->x + (size_t)r * C, w.ln1w, w.ln1b,
                             C);
        decode_linear(kv, kv->qkv, kv->xb, l, 0, w.qkvb, n, C, 3 * C, C);
        for (int c = 0; c < C; c++) {
            float* krow = kT + (size_t)c * ks + pos0;
            for (int r = 0; r < n; r++) krow[r] = kv->qkv[r * C3 + C + c];
        }
        for (int r = 0; r < n; r++)
            memcpy(vc + (size_t)(pos0 + r) * C, kv->qkv + r * C3 + 2 * C, C * sizeof(float));

        // attention, output projection and residual, for the rows still needed
        int r0 = l == L - 1 ? n - 1 : 0, nr = n - r0;
        float* x = kv->x + (size_t)r0 * C;
        float* xb = kv->xb + (size_t)r0 * C;
        float* atty = kv->atty + (size_t)r0 * C;
        for (int r = r0; r < n; r++)
            attend(kv->atty + (size_t)r * C, kv->att, kv->qkv + r * C3, kT, vc, pos0 + r,
                   ks, C, NH);
        decode_linear(kv, xb, atty, l, 1, w.attprojb, nr, C, C, C);
        for (size_t i = 0; i < (size_t)nr * C; i++) x[i] += xb[i];

        // MLP and residual
        for (int r = 0; r < nr; r++)
            decode_layernorm(xb + (size_t)r * C, x + (size_t)r * C, w.ln2w, w.ln2b, C);
        float* hidden = kv->hidden + r0 * C4;
        float* hidden_gelu = kv->hidden_gelu + r0 * C4;
        decode_linear(kv, hidden, xb, l, 2, w.fcb, nr, C, 4 * C, C);
        decode_gelu(hidden_gelu, hidden, nr * C4);
        decode_linear(kv, xb, hidden_gelu, l, 3, w.fcprojb, nr, 4 * C, C, C);
        for (size_t i = 0; i < (size_t)nr * C; i++) x[i] += xb[i];
    }

    // final layernorm and the tied head, for the last row
    float* xb = kv->xb + (size_t)(n - 1) * C;
    decode_layernorm(xb, kv->x + (size_t)(n - 1) * C, p[P_LNFW], p[P_LNFB], C);
    decode_linear(kv, kv->logits, xb, L, 0, NULL, 1, C, V, C);
}

float* model_decode(Model* m, KVCache* kv, int token, int pos) {
    decode_rows(m, kv, &token, pos, 1);
    return kv->logits;
}

float* model_prefill(Model* m, KVCache* kv, const int* tokens, int n) {
    const GameConfig* cfg = &m->config;
    size_t C = cfg->channels, V = cfg->vocab_size;
    int cap = kv->capacity;
    if (n < 1 || n > cap) {
        fprintf(stderr, "error: model_prefill of %d tokens (1 to %d possible)\n", n, cap);
        exit(EXIT_FAILURE);
    }

    // bfloat16 and int8: the decode steps, several rows at a time
    if (kv->precision != KV_FP32) {
        decode_rows(m, kv, tokens, 0, n);
        return kv->logits;
    }

    // float: one forward pass over the tokens as a single sequence, without noise
    NoiseConfig saved = m->noise;
    memset(&m->noise, 0, sizeof(m->noise));
    forward_impl(m, tokens, NULL, 1, n, kv->window_logits, kv->wt);
    m->noise = saved;

    // every layer's keys (transposed) and values into the cache
    for (int l = 0; l < cfg->layers; l++) {
        const float* qkv = m->acts.t[A_QKV] + (size_t)l * n * 3 * C;
        float* kT = kv->keys + (size_t)l * C * kv->key_stride;
        float* vc = kv->values + (size_t)l * cap * C;
        for (int t = 0; t < n; t++) {
            for (size_t c = 0; c < C; c++)
                kT[c * kv->key_stride + t] = qkv[t * 3 * C + C + c];
            memcpy(vc + t * C, qkv + t * 3 * C + 2 * C, C * sizeof(float));
        }
    }
    memcpy(kv->logits, kv->window_logits + (size_t)(n - 1) * V, V * sizeof(float));
    return kv->logits;
}

// ----------------------------------------------------------------------------
// Loading a model from a checkpoint

int model_from_checkpoint(Model* m, Tokenizer* tk, const Checkpoint* ck, char* err,
                          size_t errlen) {
    // the configuration and the vocabulary must agree with each other
    const char* bad = config_check(&ck->config);
    if (bad) {
        snprintf(err, errlen, "the checkpoint's configuration is invalid: %s", bad);
        return -1;
    }
    if (ckpt_check_vocab(ck, err, errlen) != 0) return -1;
    int V = ck->config.vocab_size;
    uint32_t* symbols = xmalloc((size_t)V * sizeof(uint32_t), "vocabulary");
    if (ckpt_read_u32(ck, "VOCB", symbols, V, err, errlen) != 0 ||
        tokenizer_from_symbols(tk, symbols, V, err, errlen) != 0) {
        free(symbols);
        return -1;
    }
    free(symbols);

    // the parameters, whose count the configuration fixes: checked against the
    // section before anything of that size is allocated
    size_t sizes[NUM_PARAM_TENSORS];
    size_t count = param_sizes(&ck->config, sizes);
    const CkptSection* parm = ckpt_find(ck, "PARM");
    if (!parm || parm->size != 4 * (uint64_t)count) {
        snprintf(err, errlen, "its configuration needs %zu parameter bytes but the "
                 "PARM section %s %llu", 4 * count, parm ? "holds" : "is missing:",
                 parm ? (unsigned long long)parm->size : 0ULL);
        tokenizer_free(tk);
        return -1;
    }
    model_init(m, &ck->config);
    if (ckpt_read_f32(ck, "PARM", m->params_memory, m->num_params, err, errlen) != 0) {
        model_free(m);
        tokenizer_free(tk);
        return -1;
    }

    // every weight finite: a NaN or an infinity would only surface later, as a
    // diverged run or a failed sample, far from its cause
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        const float* x = m->params.t[t];
        for (size_t i = 0; i < sizes[t]; i++) {
            if (isfinite(x[i])) continue;
            snprintf(err, errlen, "its weights are not finite (%s[%zu] is %g): it was "
                     "saved from a diverged run or is damaged; use an earlier checkpoint",
                     param_name(t), i, x[i]);
            model_free(m);
            tokenizer_free(tk);
            return -1;
        }
    }
    return 0;
}

int model_load(Model* m, Tokenizer* tk, Checkpoint* keep, const char* path, char* err,
               size_t errlen) {
    Checkpoint ck;
    if (ckpt_load(&ck, path, err, errlen) != 0) return -1;
    char inner[512];
    if (model_from_checkpoint(m, tk, &ck, inner, sizeof(inner)) != 0) {
        snprintf(err, errlen, "%s: %s", path, inner);
        ckpt_free_loaded(&ck);
        return -1;
    }
    if (keep) *keep = ck;
    else ckpt_free_loaded(&ck);
    return 0;
}
