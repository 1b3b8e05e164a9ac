// kernels.h: the matrix products every layer is built on, forward and backward.
//
// A linear layer maps inp (N, IC) to out (N, OC) with a weight w (OC, IC), one
// row per output channel (the layout GPT-2 checkpoints use), and an optional
// bias (OC). Each output element is summed by one thread in a fixed order, so
// the results do not depend on the number of threads.
#ifndef KERNELS_H
#define KERNELS_H

#include <stddef.h>

// out (N, OC) = inp (N, IC) @ w^T + bias; bias may be NULL.
void matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                    int N, int IC, int OC);

// The gradients of matmul_forward, accumulated (+=) into
//   dinp (N, IC)  = dout @ w        (skipped when dinp is NULL)
//   dw   (OC, IC) = dout^T @ inp    (skipped when dw is NULL)
//   dbias (OC)    = sum over rows of dout (skipped when dbias is NULL)
// from dout (N, OC) and the forward's inp and w.
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC);

// out (OC) = w (OC, IC) @ x (IC) + bias, for decoding one token; bias may be NULL.
void matvec_forward(float* out, const float* x, const float* w, const float* bias,
                    int IC, int OC);

#endif
