// kernels.c: matrix products for the forward and backward passes.
#include "kernels.h"

#include <string.h>

// A dot product of n floats; the simd reduction lets the compiler keep several
// partial sums in vector lanes (a fixed order for a given build).
static inline float dot(const float* a, const float* b, int n) {
    float s = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                    int N, int IC, int OC) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * IC;
        float* o = out + (size_t)n * OC;
        for (int oc = 0; oc < OC; oc++) {
            o[oc] = (bias ? bias[oc] : 0.0f) + dot(x, w + (size_t)oc * IC, IC);
        }
    }
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC) {
    // dinp[n] += sum_oc dout[n][oc] w[oc]: rows of dinp are independent
    if (dinp) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            float* di = dinp + (size_t)n * IC;
            const float* d = dout + (size_t)n * OC;
            for (int oc = 0; oc < OC; oc++) {
                const float* wr = w + (size_t)oc * IC;
                float g = d[oc];
                for (int i = 0; i < IC; i++) di[i] += g * wr[i];
            }
        }
    }

    // dw[oc] += sum_n dout[n][oc] inp[n], dbias[oc] += sum_n dout[n][oc]
    if (dw || dbias) {
        #pragma omp parallel for
        for (int oc = 0; oc < OC; oc++) {
            float* dwr = dw ? dw + (size_t)oc * IC : NULL;
            float db = 0.0f;
            for (int n = 0; n < N; n++) {
                float g = dout[(size_t)n * OC + oc];
                db += g;
                if (dwr) {
                    const float* x = inp + (size_t)n * IC;
                    for (int i = 0; i < IC; i++) dwr[i] += g * x[i];
                }
            }
            if (dbias) dbias[oc] += db;
        }
    }
}

void matvec_forward(float* out, const float* x, const float* w, const float* bias,
                    int IC, int OC) {
    for (int oc = 0; oc < OC; oc++) {
        out[oc] = (bias ? bias[oc] : 0.0f) + dot(x, w + (size_t)oc * IC, IC);
    }
}
