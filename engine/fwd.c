/* fwd.c — the CPU-or-device switch of fwd.h: a thin dispatch, plus the
 * device probe that turns "no library", "no device" and "no such device"
 * into one clear message naming the flag. */
#include "fwd.h"

#include <string.h>

#include "kn.h"
#include "kn_cuda.h"

eng_status eng_fwd_init(eng_fwd *f, const eng_model *m, int gpu, int n_ctx, int n_batch, char *err, size_t n_err) {
    memset(f, 0, sizeof *f);
    if (gpu < 0) {
        eng_status st = eng_state_init(&f->cpu, m, n_ctx, n_batch, err, n_err);
        if (st != ENG_OK) return st;
        f->logits = f->cpu->logits;
        f->n_batch = f->cpu->n_batch;
        return ENG_OK;
    }
    const kn_cuda_api *api = kn_cuda_load();
    int n_dev = api ? kn_cuda_device_count() : 0;
    if (n_dev <= 0) {
        eng_errf(err, n_err, "--gpu %d: no CUDA device available (%s)", gpu, kn_cuda_unavailable_reason());
        return ENG_ERR_UNSUPPORTED;
    }
    if (gpu >= n_dev) {
        eng_errf(err, n_err, "--gpu %d: no such device (this machine has %d)", gpu, n_dev);
        return ENG_ERR_INVAL;
    }
    eng_status st = eng_gpu_state_init(&f->gpu, api, m, gpu, n_ctx, n_batch, err, n_err);
    if (st != ENG_OK) return st;
    f->logits = f->gpu->logits;
    f->n_batch = f->gpu->n_batch;
    return ENG_OK;
}

void eng_fwd_free(eng_fwd *f) {
    eng_state_free(f->cpu);
    eng_gpu_state_free(f->gpu);
    memset(f, 0, sizeof *f);
}

eng_status eng_fwd_forward(eng_fwd *f, const int32_t *tokens, int n, float *logits, int all_logits) {
    return f->gpu ? eng_gpu_forward(f->gpu, tokens, n, logits, all_logits)
                  : eng_forward(f->cpu, tokens, n, logits, all_logits);
}

void eng_fwd_reset(eng_fwd *f) {
    if (f->gpu) eng_gpu_state_reset(f->gpu);
    else eng_state_reset(f->cpu);
}

const char *eng_fwd_errmsg(const eng_fwd *f) {
    return f->gpu ? eng_gpu_state_errmsg(f->gpu) : eng_state_errmsg(f->cpu);
}

const char *eng_fwd_device(const eng_fwd *f) { return f->gpu ? eng_gpu_state_device_name(f->gpu) : "cpu"; }
