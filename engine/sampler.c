/* sampler.c — greedy and temperature/top-k/top-p sampling (see sampler.h).
 * Top-p keeps the smallest prefix of the probability-sorted vocabulary whose
 * mass reaches top_p (the token that crosses the threshold stays), which is
 * what HF's TopPLogitsWarper leaves after removing the low tail. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

eng_status eng_sampler_init(eng_sampler *s, int n_vocab, float temperature, int top_k, float top_p,
                            uint64_t seed) {
    s->n_vocab = n_vocab;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    s->prob = NULL;
    s->idx = NULL;
    if (n_vocab <= 0 || temperature < 0 || top_k < 0 || !(top_p > 0 && top_p <= 1)) return ENG_ERR_INVAL;
    s->prob = eng_alloc((size_t)n_vocab * sizeof(float));
    s->idx = eng_alloc((size_t)n_vocab * sizeof(int32_t));
    if (!s->prob || !s->idx) {
        eng_sampler_free(s);
        return ENG_ERR_NOMEM;
    }
    return ENG_OK;
}

void eng_sampler_free(eng_sampler *s) {
    eng_free(s->prob);
    eng_free(s->idx);
    s->prob = NULL;
    s->idx = NULL;
}

int32_t eng_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static uint64_t rng_next(uint64_t *st) {
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return *st * 0x2545F4914F6CDD1Dull;
}

double eng_sampler_uniform(eng_sampler *s) { return (double)(rng_next(&s->rng) >> 11) * 0x1.0p-53; }

static const float *g_sort_prob;   /* qsort has no context argument in C11 */
static int cmp_desc(const void *a, const void *b) {
    float pa = g_sort_prob[*(const int32_t *)a], pb = g_sort_prob[*(const int32_t *)b];
    if (pa != pb) return pa < pb ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

/* The processed distribution's support: s->prob[i] = exp((l_i - max) / T)
 * (unnormalized) and s->idx[0..n) the kept ids — all of them in id order,
 * or, with top-k/top-p, sorted by probability and cut (top-k first, then
 * top-p over the renormalized top-k, HF's order). Returns n; *sum is the
 * mass of the kept ids, summed in idx order. Temperature must be > 0. */
static int sampler_support(eng_sampler *s, const float *logits, double *sum) {
    int V = s->n_vocab;
    float mx = logits[eng_argmax(logits, V)];
    for (int i = 0; i < V; i++) {
        s->prob[i] = expf((logits[i] - mx) / s->temperature);
        s->idx[i] = i;
    }
    int n = V;
    if (s->top_k > 0 || s->top_p < 1.0f) {
        g_sort_prob = s->prob;
        qsort(s->idx, (size_t)V, sizeof(int32_t), cmp_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        double kept = 0.0;
        for (int i = 0; i < n; i++) kept += s->prob[s->idx[i]];
        if (s->top_p < 1.0f) {
            double cum = 0.0;
            for (int i = 0; i < n; i++) {
                cum += s->prob[s->idx[i]] / kept;
                if (cum >= s->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
    }
    *sum = 0.0;
    for (int i = 0; i < n; i++) *sum += s->prob[s->idx[i]];
    return n;
}

int32_t eng_sampler_sample(eng_sampler *s, const float *logits) {
    if (s->temperature == 0.0f) return eng_argmax(logits, s->n_vocab);
    double sum;
    int n = sampler_support(s, logits, &sum);
    double r = eng_sampler_uniform(s) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[s->idx[i]];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}

void eng_sampler_probs(eng_sampler *s, const float *logits, float *probs) {
    int V = s->n_vocab;
    for (int i = 0; i < V; i++) probs[i] = 0.0f;
    if (s->temperature == 0.0f) {
        probs[eng_argmax(logits, V)] = 1.0f;
        return;
    }
    double sum;
    int n = sampler_support(s, logits, &sum);
    for (int i = 0; i < n; i++) probs[s->idx[i]] = (float)(s->prob[s->idx[i]] / sum);
}

double eng_token_nll(const float *logits, int n, int32_t target, int *correct) {
    int32_t am = eng_argmax(logits, n);
    double mx = logits[am], sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    if (correct) *correct = am == target;
    return log(sum) + mx - (double)logits[target];
}

int32_t eng_sampler_sample_probs(eng_sampler *s, const float *probs) {
    int V = s->n_vocab, last = 0;
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        if (probs[i] > 0) {
            sum += probs[i];
            last = i;
        }
    double r = eng_sampler_uniform(s) * sum, acc = 0.0;
    for (int i = 0; i < V; i++) {
        if (!(probs[i] > 0)) continue;
        acc += probs[i];
        if (r < acc) return i;
    }
    return last;
}
