/* spec.h — speculative decoding: a small draft model proposes tokens, the
 * target verifies them in one forward pass (Leviathan et al. 2023 / Chen et
 * al. 2023), optionally through an intermediate model (a 3-level cascade).
 * See spec.c for the exact rules. Lossless: sampled output follows the
 * target's processed distribution; greedy output equals the target's own
 * greedy decoding token for token. */
#ifndef ENGINE_SPEC_H
#define ENGINE_SPEC_H

#include "eng.h"
#include "forward.h"
#include "model.h"
#include "policy.h"
#include "policy_mark.h"
#include "sampler.h"
#include "tokenizer.h"
#include "utf8.h"

#define ENG_SPEC_GAMMA_CAP 32   /* largest gamma_max accepted */

typedef enum eng_spec_schedule {
    ENG_SPEC_CONSTANT = 0,  /* gamma stays at opts.gamma */
    ENG_SPEC_HEURISTIC,     /* +2 on full accept, -1 otherwise (floor 1), like HF's assistant */
    ENG_SPEC_AIMD           /* +1 on full accept, halve on a rejection (floor 1) */
} eng_spec_schedule;

typedef struct eng_spec_opts {
    int gamma;              /* initial draft length (>= 1) */
    int gamma_max;          /* cap for every schedule (>= gamma, <= ENG_SPEC_GAMMA_CAP) */
    eng_spec_schedule schedule;
    float temperature;      /* 0: greedy verification */
    int top_k;              /* 0: off */
    float top_p;            /* 1: off */
    uint64_t seed;
    int stop_at_eos;        /* stop after the target's eos_id is emitted */
    int compare;            /* also run target-only decoding and fill stats.speedup */
    int n_batch;            /* prefill chunk (0: 64) */
    int gpu;                /* -1 (default): CPU; >= 0: every level runs offload mode on this CUDA
                               device (fwd.h): dense math there, cache, policies and marks here */
} eng_spec_opts;

/* Defaults: gamma 5, gamma_max 16, constant, greedy, no stop at EOS, CPU. */
void eng_spec_opts_default(eng_spec_opts *o);
/* "constant" | "heuristic" | "aimd" -> schedule; -1 if unknown. */
int eng_spec_schedule_parse(const char *name);
const char *eng_spec_schedule_name(eng_spec_schedule s);

typedef struct eng_spec_stats {
    long n_new;                 /* tokens emitted */
    long drafted;               /* tokens proposed to the target */
    long accepted;              /* of which the target accepted */
    double acceptance_rate;     /* accepted / drafted */
    double mean_accepted_len;   /* tokens emitted per target pass (accepted + 1) */
    long target_passes;         /* target verification forwards (prefill not counted) */
    long pos_drafted[ENG_SPEC_GAMMA_CAP + 1];   /* proposals at position i of a block */
    long pos_accepted[ENG_SPEC_GAMMA_CAP + 1];  /* of which accepted */
    long resampled;             /* rounds that ended in a rejection (residual sample) */
    long mid_drafted, mid_accepted, mid_passes; /* draft -> intermediate level (cascade) */
    long invariant_violations;  /* n_past checks failed after a round (must be 0) */
    double ttft_s, tpot_s, tokens_per_s, total_s;
    double base_tokens_per_s;   /* target-only decoding (opts.compare) */
    double speedup;             /* tokens_per_s / base_tokens_per_s; 0 when not compared */
} eng_spec_stats;

typedef struct eng_spec eng_spec;

/* target and draft are required, mid may be NULL. The models must share
 * n_vocab (ENG_ERR_INVAL naming both dirs otherwise) and outlive the object.
 * n_ctx: KV capacity of every model. On failure *out is NULL, err says why. */
eng_status eng_spec_init(eng_spec **out, const eng_model *target, const eng_model *draft,
                         const eng_model *mid, int n_ctx, const eng_spec_opts *opts, char *err,
                         size_t n_err);
/* Generates up to max_new tokens after prompt[0..n_prompt), appended to out.
 * ENG_ERR_CAPACITY when n_prompt + max_new + 2 > n_ctx. Allocates nothing
 * when out already has room for max_new more ids. */
eng_status eng_spec_generate(eng_spec *sp, const int32_t *prompt, int n_prompt, int max_new, eng_ids *out,
                             eng_spec_stats *st);
/* Reseeds the RNG (the next generate starts from this seed). */
void eng_spec_set_seed(eng_spec *sp, uint64_t seed);
/* Attach a KV policy to one level (which: 0 target, 1 draft, 2
 * intermediate); NULL detaches. Borrowed: p must outlive sp's generates and
 * be created for that level's model shape. Allocates the level's mark (a
 * copy of its cache, policy_mark.h) unless p is "full"; call between
 * generates, not per token. Rules with a policy (spec.c "Policies"): output
 * equals target-only decoding under the same policy, token for token
 * (greedy); rejected tokens leave no trace in cache or policy state. */
eng_status eng_spec_set_policy(eng_spec *sp, int which, eng_policy *p);
eng_policy *eng_spec_policy(eng_spec *sp, int which);
/* States for inspection (which: 0 target, 1 draft, 2 intermediate or NULL). */
eng_state *eng_spec_state(eng_spec *sp, int which);
const char *eng_spec_errmsg(const eng_spec *sp);
void eng_spec_free(eng_spec *sp);

/* The accept/resample rule alone (pure function of its inputs and the RNG).
 * p: (m+1, V) verifier probabilities, q: (m, V) proposer probabilities,
 * draft: m proposed ids. Returns n accepted (0..m) and writes the extra
 * token (residual sample on a rejection, bonus from p row m otherwise) to
 * *next; *resampled says which. Greedy (s->temperature == 0): accept while
 * draft[i] == argmax p_i, next = argmax p_n. resid: (V) scratch. */
int eng_spec_verify(eng_sampler *s, const float *p, const float *q, const int32_t *draft, int m,
                    float *resid, int32_t *next, int *resampled);

#endif /* ENGINE_SPEC_H */
