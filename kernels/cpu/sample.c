/* sample.c — references of the device sampling helpers: argmax with
 * eng_argmax's rule (first index of the largest value) and
 * softmax(logits / temperature) as eng_sampler_probs computes it without
 * top-k/top-p (exp in fp32 after max subtraction, sum in double;
 * temperature 0 gives the one-hot argmax). */
#include "kn.h"

#include <math.h>

static int32_t row_argmax(const float *x, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

void kn_argmax_ref(int32_t *idx, const float *logits, int M, int V) {
    for (int m = 0; m < M; m++) idx[m] = row_argmax(logits + (size_t)m * V, V);
}

void kn_softmax_ref(float *probs, const float *logits, int M, int V, float temperature) {
    for (int m = 0; m < M; m++) {
        const float *x = logits + (size_t)m * V;
        float *p = probs + (size_t)m * V;
        int32_t am = row_argmax(x, V);
        if (temperature == 0.0f) {
            for (int i = 0; i < V; i++) p[i] = i == am ? 1.0f : 0.0f;
            continue;
        }
        float mx = x[am];
        double sum = 0.0;
        for (int i = 0; i < V; i++) {
            p[i] = expf((x[i] - mx) / temperature);
            sum += p[i];
        }
        for (int i = 0; i < V; i++) p[i] = (float)(p[i] / sum);
    }
}
