/* gelu.c — exact (erf) GELU, what HF's "gelu" activation computes. Pythia was
 * trained with the tanh approximation, but HF logits use erf, and fidelity to
 * HF is the requirement (../shared/docs/gpt-neox.md trap 5). */
#include "kn.h"

#include <math.h>

void kn_gelu(float *x, size_t n) {
    #pragma omp parallel for if (n > 65536) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void kn_gelu_ref(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
}
