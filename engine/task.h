/* task.h — one sweep job run by the engine, without Redis: the bridge that
 * kvworker (in a child process) and kvrun share.
 *
 * An eng_task names a task ("ppl", "speed", ...), an already resolved model
 * directory and dataset path, a slice (document, token offset, token count),
 * the KV policy with its params, an optional speculative-decoding block and
 * a seed. eng_task_run evaluates it and fills eng_task_result; every metric
 * it did not measure stays NaN (or -1 for counts).
 *
 * Models are loaded through an eng_task_ctx, which keeps the last model (and
 * tokenizer, and draft) loaded between jobs of the same model. kvworker calls
 * eng_task_ctx_prepare in the parent, then forks: the child inherits the
 * mmap'd weights copy-on-write and runs eng_task_run, so a crash or a hang
 * in the evaluation never takes the parent (and its heartbeat) down.
 *
 * Tasks:
 *   ppl    streaming token-by-token NLL over the slice with the job's KV
 *          policy; task_params: chunk=N switches to the chunked baseline
 *          (independent windows of N tokens, full cache in each).
 *   speed  prefill `prefill` tokens of the slice (default 512), then decode
 *          `decode` tokens greedily (default 128): TTFT, TPOT, tokens/s.
 *   spec   speculative decoding (engine/spec.h) from the slice as prompt;
 *          the job's policy is the target's, the spec block's draft_policy /
 *          intermediate_policy ("NAME:k=v,...") the other levels'.
 *   passkey RULER-style retrieval (engine/task_passkey.c): `trials` prompts
 *          of about `context` tokens, each hiding a `digits`-digit key at
 *          relative `depth` of a haystack (`filler`: the slice's text or
 *          the repeated sentences), prefilled in one call with the job's
 *          policy, then greedy decoding; accuracy = exact matches / trials,
 *          tokens = all tokens the model ran (prompts + generated).
 * An unknown policy or param fails the job naming it; nothing is silently
 * ignored. With eng_task_ctx_set_device every task runs on a CUDA device
 * (engine/fwd.h); a device that cannot be opened is ENG_ERR_DEVICE, which
 * kvworker treats as the worker's fault, not the job's. */
#ifndef ENGINE_TASK_H
#define ENGINE_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "eng.h"

#define ENG_TASK_MAX_PARAMS 32

typedef enum eng_param_type { ENG_PARAM_INT = 1, ENG_PARAM_REAL, ENG_PARAM_BOOL, ENG_PARAM_STR } eng_param_type;

typedef struct eng_param {
    const char *key;
    eng_param_type type;
    int64_t i;     /* INT, BOOL */
    double r;      /* REAL */
    const char *s; /* STR */
} eng_param;

typedef struct eng_paramset {
    int n;
    eng_param p[ENG_TASK_MAX_PARAMS];
} eng_paramset;

typedef struct eng_task {
    const char *task;        /* "ppl" | "speed" | "spec" | "passkey" */
    const char *model_dir;   /* resolved path */
    const char *draft_dir;   /* spec: resolved draft model path, else NULL */
    const char *mid_dir;     /* spec: optional intermediate model */
    const char *data_path;   /* resolved dataset path */
    int64_t doc, offset, tokens; /* tokens 0: to the end of the document */
    eng_paramset task_params;
    const char *policy;
    eng_paramset params;
    eng_paramset spec;
    uint64_t seed;
} eng_task;

typedef struct eng_task_result {
    double ppl, nll_sum, accuracy;
    int64_t tokens;
    double ttft_ms, tpot_ms, tokens_per_s;
    double cache_tokens_mean;
    int64_t cache_tokens_max, kv_bytes, evictions, peak_rss_bytes;
    int64_t spec_drafted, spec_accepted, spec_target_passes;
    double spec_acceptance_rate, spec_mean_accepted_len, spec_speedup;
    char model_fingerprint[65]; /* sha-256 hex of config.json + safetensors headers */
    char extras_json[4096];     /* a JSON object with task-specific detail ("{}" if none) */
} eng_task_result;

typedef struct eng_task_ctx eng_task_ctx;

/* weights: "auto" (keep 16-bit checkpoints 16-bit) or "f32"; tokenizer_path:
 * fallback when a model directory has no tokenizer.json (may be NULL). */
eng_status eng_task_ctx_init(eng_task_ctx **out, const char *weights, const char *tokenizer_path, char *err,
                             size_t n_err);
void eng_task_ctx_free(eng_task_ctx *c);
/* Loads (or keeps) the models and tokenizer the task needs and checks the
 * task's names and params; cheap when the model is already loaded. */
eng_status eng_task_ctx_prepare(eng_task_ctx *c, const eng_task *t);
/* Runs the task (prepare is implied). */
eng_status eng_task_run(eng_task_ctx *c, const eng_task *t, eng_task_result *r);
const char *eng_task_errmsg(const eng_task_ctx *c);
/* Run every later task on CUDA device gpu (-1, the default: the CPU): the
 * full cache in device mode, any other policy and speculative decoding in
 * offload mode (fwd.h). The device is opened by each run, not here, so a
 * process may set it before fork() and touch CUDA only in the child. */
void eng_task_ctx_set_device(eng_task_ctx *c, int gpu);
/* The loaded target model (NULL before the first prepare); tests use it to
 * check that a model is kept between jobs. */
const struct eng_model *eng_task_ctx_target(const eng_task_ctx *c);
void eng_task_result_clear(eng_task_result *r);
/* Static list check: is `task` a known task name. */
int eng_task_known(const char *task);

#endif /* ENGINE_TASK_H */
