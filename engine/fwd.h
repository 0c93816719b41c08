/* fwd.h — one forward pass on the CPU or on a CUDA device, behind a few
 * calls, so every command and task can take a device index (`--gpu N`,
 * kvworker --gpu N) without duplicating its loop.
 *
 * Three modes, chosen by eng_fwd_init:
 *   cpu      gpu < 0: an eng_state (forward.h), KV policy attached to it.
 *   device   gpu >= 0 with no policy, full, window, streaming, h2o, lazy_h2o
 *            or tova: eng_gpu_state runs the whole pass with its KV cache on
 *            the device (the fast path; window/streaming by a moving window
 *            of the cache, the attention-score policies with their scores on
 *            the device, forward_gpu.h). The policy object gets its
 *            statistics from the device cache (eng_policy_account_uniform),
 *            so results carry the same fields.
 *   offload  gpu >= 0 with any other policy: an eng_state holds the cache and
 *            runs the attention block with the policy's hooks on the host, a
 *            cache-less eng_gpu_state runs the dense math (forward_gpu.h
 *            "offload mode"). Same tokens as the CPU path, up to matmul
 *            rounding; slower than `device` since attention stays on the CPU.
 * Only eng_fwd_init touches the CUDA runtime (kn_cuda_load, device probe),
 * so a process that forks (kvworker) must call it in the child. `logits` is
 * a host buffer of (n_batch, V) floats the caller may pass to forward. */
#ifndef ENGINE_FWD_H
#define ENGINE_FWD_H

#include "forward.h"
#include "forward_gpu.h"

struct eng_policy;   /* policy.h */

typedef struct eng_fwd {
    eng_state *cpu;       /* cpu and offload modes: the state eng_forward drives */
    eng_gpu_state *gpu;   /* device mode: the whole pass; offload mode: the dense math */
    struct eng_policy *policy; /* borrowed */
    float *logits;        /* (n_batch, V) host buffer owned by a state */
    int n_batch;
} eng_fwd;

/* Opens the CUDA device when gpu >= 0 and attaches policy p (NULL: none;
 * borrowed, outlives f). n_ctx: KV slots per head (eng_policy_capacity for a
 * bounded policy). On failure f is left empty and err says why: for gpu >= 0
 * with no usable device, "--gpu N: no CUDA device available (<loader's
 * reason>)" or "--gpu N: no such device (...)" and ENG_ERR_DEVICE (also when
 * the device refuses a context: eng_gpu_state_init). */
eng_status eng_fwd_init(eng_fwd *f, const eng_model *m, int gpu, int n_ctx, int n_batch, struct eng_policy *p,
                        char *err, size_t n_err);
void eng_fwd_free(eng_fwd *f);
eng_status eng_fwd_forward(eng_fwd *f, const int32_t *tokens, int n, float *logits, int all_logits);
/* Forget the last n tokens (eng_state_rollback / eng_gpu_state_rollback). */
eng_status eng_fwd_rollback(eng_fwd *f, int n);
void eng_fwd_reset(eng_fwd *f);
const char *eng_fwd_errmsg(const eng_fwd *f);
/* "cpu" or the device's name. */
const char *eng_fwd_device(const eng_fwd *f);
/* "cpu", "device" or "offload". */
const char *eng_fwd_mode(const eng_fwd *f);

/* Perplexity's scoring loop, shared by the ppl task (task.c) and `kvrun
 * ppl`: tokens t[0..n) through f, each next token t[i+1] scored against the
 * logits after t[i] (NLL by eng_token_nll, top-1 hits). chunk 0: streaming —
 * an optional first call of `prefill` tokens with every row's logits into
 * pre ((prefill, V) floats from the caller; prefill-time policies compress
 * it), then one token per call; chunk > 0: independent windows of `chunk`
 * tokens, f reset before each, fed f->n_batch rows per call. A failing
 * forward returns its status (message in eng_fwd_errmsg(f)). */
typedef struct eng_ppl_sums {
    double nll;
    size_t scored, correct;
} eng_ppl_sums;
eng_status eng_fwd_ppl(eng_fwd *f, const int32_t *t, size_t n, size_t prefill, size_t chunk, float *pre,
                       eng_ppl_sums *out);

/* The device probe alone: the backend's table for device `gpu`, or NULL with
 * err as eng_fwd_init's and *st set. */
const kn_cuda_api *eng_fwd_open_device(int gpu, eng_status *st, char *err, size_t n_err);

#endif /* ENGINE_FWD_H */
