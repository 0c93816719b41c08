/* task_impl.h — what task.c and the task_<name>.c files share: the body of
 * eng_task_ctx, the typed-parameter helpers and the policy accounting, plus
 * the pieces of the passkey task (task_passkey.c) that tests check one by
 * one (prompt builder, scorer). Engine-internal: kvworker and kvrun see only
 * task.h.
 *
 * Helpers write their message into c->err and return a status; none of
 * them allocates except where stated. */
#ifndef ENGINE_TASK_IMPL_H
#define ENGINE_TASK_IMPL_H

#include "model.h"
#include "policy.h"
#include "task.h"
#include "tokenizer.h"

typedef struct task_model {
    char dir[1024];
    eng_model *m;
    char fingerprint[65];
} task_model;

struct eng_task_ctx {
    int keep_16bit;
    int gpu;            /* CUDA device of every run (fwd.h), -1: the CPU */
    char tok_fallback[1024];
    task_model target, draft, mid;
    eng_tokenizer *tok;
    char tok_path[1100];
    char err[1536];
};

/* ---- shared helpers (task.c) ---- */
/* Integer param `key` of set ps in [lo, hi] (def when absent); ENG_ERR_INVAL
 * naming "what.key" otherwise. */
eng_status task_param_int(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, int64_t def,
                          int64_t lo, int64_t hi, int64_t *out);
/* Number param (INT or REAL) in [lo, hi], def when absent. */
eng_status task_param_real(eng_task_ctx *c, const eng_paramset *ps, const char *what, const char *key, double def,
                           double lo, double hi, double *out);
/* The param named key, or NULL. */
const eng_param *task_param_find(const eng_paramset *ps, const char *key);
/* Copies the policy's accounting into r and writes its part of extras
 * (no braces) into x[0..n_x); returns the characters written. */
int task_policy_report(const eng_policy *pol, eng_task_result *r, char *x, size_t n_x);

/* ---- passkey (task_passkey.c) ---- */
extern const char *const task_passkey_keys[]; /* the task params it accepts, NULL-terminated */

typedef struct task_passkey_opts {
    int64_t context;  /* prompt length aimed at, in tokens */
    double depth;     /* needle start as a fraction of the haystack (0 first, 1 last) */
    int digits;       /* passkey length */
    int64_t trials;
    int filler_data;  /* 1: haystack cut from the job's slice; 0: the repeated sentences */
} task_passkey_opts;

/* Reads and checks the passkey task params; n_slice: the slice's tokens
 * (the default context). */
eng_status task_passkey_opts_parse(eng_task_ctx *c, const eng_task *t, size_t n_slice, task_passkey_opts *o);

/* What one job builds once: the preamble, the question and one cycle of
 * haystack units (sentences) that the trials repeat as far as needed. */
typedef struct task_passkey_job {
    task_passkey_opts o;
    eng_ids pre, question, hay; /* hay: the units, concatenated */
    int32_t *ends;              /* (n_units) end offset of each unit in hay */
    int n_units;
} task_passkey_job;

/* One trial: its key, its prompt, the tokens of " KEY" and where the needle
 * starts in the prompt. */
typedef struct task_passkey_trial {
    char key[24];
    eng_ids prompt, answer;
    int64_t needle_pos;   /* token index of the needle's first token */
    int64_t hay_tokens;   /* haystack tokens in the prompt */
    int n_gen;            /* tokens generated greedily for scoring */
} task_passkey_trial;

/* Builds the job's token pieces from tok and (filler_data) the slice; one
 * allocation per piece, freed by task_passkey_job_free. */
eng_status task_passkey_job_init(task_passkey_job *j, eng_tokenizer *tok, const int32_t *slice, size_t n_slice,
                                 const task_passkey_opts *o, char *err, size_t n_err);
void task_passkey_job_free(task_passkey_job *j);
/* Trial i of a job with seed `seed`: the key comes from (seed, i) alone. */
eng_status task_passkey_trial_make(const task_passkey_job *j, eng_tokenizer *tok, uint64_t seed, int64_t i,
                                   task_passkey_trial *tr, char *err, size_t n_err);
void task_passkey_trial_free(task_passkey_trial *tr);
/* Scores generated text against key: got = the first run of digits in
 * text[0..len) (cut to n_got - 1), *digit_frac = matching positions / digits.
 * Returns 1 when got equals key exactly. */
int task_passkey_score(const char *key, const char *text, size_t len, char *got, size_t n_got, double *digit_frac);
/* The task itself (called by eng_task_run with the job's slice). */
eng_status task_passkey_run(eng_task_ctx *c, const eng_task *t, const int32_t *v, size_t n, eng_task_result *r);

#endif /* ENGINE_TASK_IMPL_H */
