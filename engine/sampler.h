/* sampler.h — next-token choice from logits: greedy (temperature 0) or
 * sampling with temperature, top-k and top-p applied in HF's order
 * (temperature, then top-k, then top-p). The RNG is an explicit xorshift64*
 * state seeded by the caller, so every draw is reproducible; scratch is
 * allocated once at init (no allocation per token). */
#ifndef ENGINE_SAMPLER_H
#define ENGINE_SAMPLER_H

#include "eng.h"

typedef struct eng_sampler {
    int n_vocab;
    float temperature;   /* 0: greedy */
    int top_k;           /* 0: off */
    float top_p;         /* 1: off */
    uint64_t rng;
    float *prob;         /* (V) scratch */
    int32_t *idx;        /* (V) scratch */
} eng_sampler;

eng_status eng_sampler_init(eng_sampler *s, int n_vocab, float temperature, int top_k, float top_p,
                            uint64_t seed);
void eng_sampler_free(eng_sampler *s);

/* Index of the largest logit (lowest index on ties, like torch.argmax). */
int32_t eng_argmax(const float *logits, int n);
/* -log softmax(logits)[target] in double (the PPL accumulator of kvrun ppl
 * and the ppl task); *correct (may be NULL) = argmax == target. */
double eng_token_nll(const float *logits, int n, int32_t target, int *correct);
int32_t eng_sampler_sample(eng_sampler *s, const float *logits);
/* Uniform double in [0, 1) from the sampler's RNG. */
double eng_sampler_uniform(eng_sampler *s);

/* The processed distribution eng_sampler_sample draws from, as a full
 * (V) probability vector: temperature, then top-k, then top-p, renormalized
 * over the kept tokens (the rest are 0). Temperature 0 gives a one-hot
 * vector on eng_argmax. Used by speculative decoding (spec.h). */
void eng_sampler_probs(eng_sampler *s, const float *logits, float *probs);
/* An index drawn from probs (V entries, non-negative, any positive sum)
 * with the sampler's RNG; a zero-probability index is never returned. */
int32_t eng_sampler_sample_probs(eng_sampler *s, const float *probs);

#endif /* ENGINE_SAMPLER_H */
