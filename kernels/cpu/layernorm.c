/* layernorm.c — torch.nn.LayerNorm over the last dim: biased variance,
 * eps inside the square root. Row statistics in double so the result does
 * not depend on C or summation order beyond fp32 rounding of the output. */
#include "kn.h"

#include <math.h>

static void layernorm_row(float *o, const float *x, const float *w, const float *b, int C, float eps) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < C; i++) mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    var /= C;
    double rstd = 1.0 / sqrt(var + eps);
    for (int i = 0; i < C; i++) o[i] = (float)((x[i] - mean) * rstd) * w[i] + b[i];
}

void kn_layernorm(float *out, const float *x, const float *w, const float *b, int M, int C, float eps) {
    #pragma omp parallel for if (M > 8) schedule(static)
    for (int r = 0; r < M; r++)
        layernorm_row(out + (size_t)r * C, x + (size_t)r * C, w, b, C, eps);
}

void kn_layernorm_ref(float *out, const float *x, const float *w, const float *b, int M, int C, float eps) {
    for (int r = 0; r < M; r++) {
        const float *xr = x + (size_t)r * C;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < C; i++) mean += xr[i];
        mean /= C;
        for (int i = 0; i < C; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= C;
        for (int i = 0; i < C; i++)
            out[(size_t)r * C + i] = (float)((xr[i] - mean) / sqrt(var + eps) * w[i] + b[i]);
    }
}
