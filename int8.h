// int8.h: 8-bit integer matrix products, for decoding with the KV cache.
//
// One decode step of the default model reads every weight matrix once for a
// single token, so its speed is set by the bytes of weights read and the
// instructions spent on each. Here the weights are stored as 8-bit integers
// with one scale per output (row) and each input vector is rounded to 8-bit
// integers with one scale of its own, so that a product is a sum of integer
// products:
//
//   w[o][i] ~ sw[o] qw[o][i]   sw[o] = max_i |w[o][i]| / 127, qw in -127 .. 127
//   x[i]    ~ sx qx[i]         sx = max_i |x[i]| / 127,       qx in -127 .. 127
//   out[o]  = bias[o] + (sx sw[o]) * sum_i qx[i] qw[o][i]
//
// The integer sum is exact (at most 127 * 127 * IC, far inside 32 bits), so it
// does not depend on the order of its terms: a decode step and a prefill of many
// rows, the vector instructions and the plain loops below, all give the same bits.
// On a processor with AVX-512 VNNI one instruction (vpdpbusd) adds 64 products
// of bytes into 16 sums; it takes one operand unsigned, so the activations are
// stored as qx + 128 (0 .. 255 -- never 0 in fact, as |qx| <= 127) and the
// matrix keeps, per output, 128 sum_i qw[o][i] to subtract again.
//
// Rounding both sides to 8 bits moves each term of a product by up to half a
// step of either factor (a step is 1/127 of the largest magnitude): on the
// default model the logits move by about 0.02 on average and 0.5 at most, and
// the mean loss on its text by 0.0002 nats (README, on `run`). The float32 and
// bfloat16 decoders remain for comparisons (run --fp32, --bf16).
#ifndef INT8_H
#define INT8_H

#include <stddef.h>
#include <stdint.h>

// The packed layout. The inputs go in groups of I8_GROUP = 4 (the bytes one
// 32-bit lane sums), IC padded with zero weights to whole groups; the outputs in
// blocks of I8_BLOCK = 16 (the lanes of one vector), OC padded with zero rows to
// whole blocks; the blocks in panels of I8_PANEL = 8 (the last may have fewer,
// np). Panel p holds, for each group g in order, its np blocks of 64 bytes; byte
// 4 k + j of block b is qw[16 (8 p + b) + k][4 g + j]. A product streams each
// panel once, front to back, with its 128 outputs' sums in registers.
#define I8_GROUP 4
#define I8_BLOCK 16
#define I8_PANEL 8

typedef struct I8Matrix {
    int IC, OC;      // the matrix's shape: (OC, IC)
    int groups;      // ceil(IC / 4)
    int blocks;      // ceil(OC / 16)
    int8_t* q;       // (64 groups blocks) the packed weights, layout above
    float* scale;    // (16 blocks) sw per output, 0 for the padding
    int32_t* offset; // (16 blocks) 128 sum_i qw[o][i] per output
} I8Matrix;

// Packs w (OC, IC) into m, allocating it. A row of zeros gets scale 0.
void i8_matrix_init(I8Matrix* m, const float* w, int OC, int IC);
void i8_matrix_free(I8Matrix* m);

// Bytes of one quantized input row of IC values: 4 ceil(IC / 4).
size_t i8_row_bytes(int IC);

// Rounds x (IC) to q (i8_row_bytes(IC) bytes, qx + 128, the padding 128, that
// is 0) and returns its scale sx. All zeros give scale 0; a NaN or an infinity
// in x gives a NaN scale (and q all 128), so that the product's outputs are
// NaN too and the caller sees the failure.
float i8_quantize(uint8_t* q, const float* x, int IC);

// out (n, OC) = bias + the rows of x (n, IC) @ w^T, from the rows' quantized
// form xq (n rows, i8_row_bytes(IC) apart) and their scales xs (n), as the
// formula above; bias may be NULL. Single-threaded.
void i8_matmul(float* out, const uint8_t* xq, const float* xs, int n, const I8Matrix* w,
               const float* bias);

// The same with plain loops over the integers, whatever the processor: the
// reference the tests hold i8_matmul to, bit for bit.
void i8_matmul_ref(float* out, const uint8_t* xq, const float* xs, int n,
                   const I8Matrix* w, const float* bias);

// Whether i8_matmul runs on AVX-512 VNNI instructions (1) or on the plain loops
// (0), as this build was compiled.
int i8_vnni(void);

#endif
