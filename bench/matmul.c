// bench/matmul.c: GFLOP/s of this runtime's matrix products against OpenBLAS
// sgemm on the same shapes (a benchmark-only dependency), one line per shape.
//
// usage: bench_matmul [N IC OC]...   (defaults: the shapes of the default model)
// For each shape it times the forward product out (N, OC) = inp (N, IC) @ w^T,
// and the two backward products, each as the median of repeated calls, which
// alternate with OpenBLAS's call by call.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kernels.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

#define REPS 41

// Seconds of one call of the product `which` (0 forward, 1 dinp, 2 dw) by this
// runtime (blas 0) or by OpenBLAS (blas 1).
static double time_call(int which, int blas, int N, int IC, int OC, float* inp, float* w,
                        float* out, float* dinp, float* dw) {
    double t0 = now_s();
    if (!blas) {
        if (which == 0) matmul_forward(out, inp, w, NULL, N, IC, OC);
        if (which == 1) matmul_backward(dinp, NULL, NULL, out, inp, w, N, IC, OC);
        if (which == 2) matmul_backward(NULL, dw, NULL, out, inp, w, N, IC, OC);
    } else {
        if (which == 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w,
                        IC, 0.0f, out, OC);
        if (which == 1)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, out, OC,
                        w, IC, 1.0f, dinp, IC);
        if (which == 2)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, out, OC,
                        inp, IC, 1.0f, dw, IC);
    }
    return now_s() - t0;
}

// The median of n times.
static double median(double* t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[n / 2];
}

int main(int argc, char** argv) {
    // the default model's shapes, N = batch 12 x context 64
    int shapes[16][3] = {{768, 128, 384}, {768, 128, 128}, {768, 128, 512},
                         {768, 512, 128}, {768, 128, 65}};
    int n_shapes = 5;
    if (argc > 1) {
        n_shapes = 0;
        for (int i = 1; i + 2 < argc && n_shapes < 16; i += 3, n_shapes++)
            for (int j = 0; j < 3; j++) shapes[n_shapes][j] = atoi(argv[i + j]);
    }
    static const char* names[] = {"forward", "dinp", "dweight"};
    printf("| N | IC | OC | product | game GFLOP/s | OpenBLAS GFLOP/s | ratio |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < n_shapes; s++) {
        int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2];
        float* inp = malloc(sizeof(float) * N * IC);
        float* w = malloc(sizeof(float) * OC * IC);
        float* out = malloc(sizeof(float) * N * OC);
        float* dinp = calloc((size_t)N * IC, sizeof(float));
        float* dw = calloc((size_t)OC * IC, sizeof(float));
        for (int i = 0; i < N * IC; i++) inp[i] = (float)(i % 13) * 0.01f;
        for (int i = 0; i < OC * IC; i++) w[i] = (float)(i % 7) * 0.01f;
        for (int i = 0; i < N * OC; i++) out[i] = (float)(i % 5) * 0.01f;
        double flops = 2.0 * N * IC * OC;
        for (int which = 0; which < 3; which++) {
            // the two alternate call by call, so that a drift of the machine's speed
            // meets both alike
            double tg[REPS], tb[REPS];
            for (int r = 0; r < REPS; r++) {
                tg[r] = time_call(which, 0, N, IC, OC, inp, w, out, dinp, dw);
                tb[r] = time_call(which, 1, N, IC, OC, inp, w, out, dinp, dw);
            }
            if (which == 0) for (int i = 0; i < N * OC; i++) out[i] = (float)(i % 5) * 0.01f;
            double mg = median(tg, REPS), mb = median(tb, REPS);
            printf("| %d | %d | %d | %s | %.1f | %.1f | %.2f |\n", N, IC, OC, names[which],
                   flops / mg / 1e9, flops / mb / 1e9, mb / mg);
        }
        free(inp), free(w), free(out), free(dinp), free(dw);
    }
    return 0;
}
