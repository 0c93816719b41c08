/* fwd.h — one forward pass, on the CPU (eng_state) or on a CUDA device
 * (eng_gpu_state), behind four calls, so a command can take `--gpu N`
 * without duplicating its loop.
 *
 * eng_fwd_init with gpu < 0 makes an eng_state; with gpu >= 0 it loads the
 * CUDA backend (kn_cuda_load: dlopen of libkvcuda.so), checks the device
 * count and makes an eng_gpu_state on device `gpu`. Only this call touches
 * the CUDA runtime, so a process that forks (kvworker) must call it in the
 * child. Either way `logits` is a host buffer of (n_batch, V) floats the
 * caller may pass to eng_fwd_forward. KV policies are the CPU state's only
 * (f->cpu, through eng_state_set_policy). */
#ifndef ENGINE_FWD_H
#define ENGINE_FWD_H

#include "forward.h"
#include "forward_gpu.h"

typedef struct eng_fwd {
    eng_state *cpu;       /* exactly one of cpu / gpu is set after init */
    eng_gpu_state *gpu;
    float *logits;        /* (n_batch, V) host buffer owned by the state */
    int n_batch;
} eng_fwd;

/* On failure f is left empty and err says why: for gpu >= 0 with no usable
 * device, "--gpu N: no CUDA device available (<loader's reason>)" and
 * ENG_ERR_UNSUPPORTED. */
eng_status eng_fwd_init(eng_fwd *f, const eng_model *m, int gpu, int n_ctx, int n_batch, char *err, size_t n_err);
void eng_fwd_free(eng_fwd *f);
eng_status eng_fwd_forward(eng_fwd *f, const int32_t *tokens, int n, float *logits, int all_logits);
void eng_fwd_reset(eng_fwd *f);
const char *eng_fwd_errmsg(const eng_fwd *f);
/* "cpu" or the device's name. */
const char *eng_fwd_device(const eng_fwd *f);

#endif /* ENGINE_FWD_H */
