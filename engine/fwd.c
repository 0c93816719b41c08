/* fwd.c — the cpu / device / offload switch of fwd.h: a thin dispatch, the
 * device probe that turns "no library", "no device" and "no such device"
 * into one clear message naming the flag, and perplexity's scoring loop
 * (one copy for the ppl task and `kvrun ppl`). */
#include "fwd.h"

#include <string.h>

#include "kn.h"
#include "kn_cuda.h"
#include "policy.h"
#include "sampler.h"

const kn_cuda_api *eng_fwd_open_device(int gpu, eng_status *st, char *err, size_t n_err) {
    const kn_cuda_api *api = kn_cuda_load();
    int n_dev = api ? kn_cuda_device_count() : 0;
    if (n_dev <= 0) {
        eng_errf(err, n_err, "--gpu %d: no CUDA device available (%s)", gpu, kn_cuda_unavailable_reason());
        *st = ENG_ERR_DEVICE;
        return NULL;
    }
    if (gpu >= n_dev) {
        eng_errf(err, n_err, "--gpu %d: no such device (this machine has %d)", gpu, n_dev);
        *st = ENG_ERR_DEVICE;
        return NULL;
    }
    *st = ENG_OK;
    return api;
}

static eng_status cpu_state(eng_fwd *f, const eng_model *m, int n_ctx, int n_batch, char *err, size_t n_err) {
    eng_status st = eng_state_init(&f->cpu, m, n_ctx, n_batch, err, n_err);
    if (st == ENG_OK && f->policy && (st = eng_state_set_policy(f->cpu, f->policy)) != ENG_OK)
        eng_errf(err, n_err, "%s", eng_state_errmsg(f->cpu));
    return st;
}

eng_status eng_fwd_init(eng_fwd *f, const eng_model *m, int gpu, int n_ctx, int n_batch, eng_policy *p,
                        char *err, size_t n_err) {
    memset(f, 0, sizeof *f);
    f->policy = p;
    eng_status st = ENG_OK;
    if (gpu < 0) {
        st = cpu_state(f, m, n_ctx, n_batch, err, n_err);
    } else {
        const kn_cuda_api *api = eng_fwd_open_device(gpu, &st, err, n_err);
        int native = eng_gpu_policy_supported(p);
        if (!api) {
            /* st and err set by the probe */
        } else if (native) {
            st = eng_gpu_state_init(&f->gpu, api, m, gpu, n_ctx, n_batch, err, n_err);
            if (st == ENG_OK && (st = eng_gpu_state_set_policy(f->gpu, p)) != ENG_OK)
                eng_errf(err, n_err, "%s", eng_gpu_state_errmsg(f->gpu));
        } else if ((st = cpu_state(f, m, n_ctx, n_batch, err, n_err)) == ENG_OK &&
                   (st = eng_gpu_state_init(&f->gpu, api, m, gpu, 0, f->cpu->n_batch, err, n_err)) == ENG_OK &&
                   (st = eng_state_set_device(f->cpu, f->gpu)) != ENG_OK) {
            eng_errf(err, n_err, "%s", eng_state_errmsg(f->cpu));
        }
    }
    if (st != ENG_OK) {
        eng_fwd_free(f);
        return st;
    }
    f->logits = f->cpu ? f->cpu->logits : f->gpu->logits;
    f->n_batch = f->cpu ? f->cpu->n_batch : f->gpu->n_batch;
    return ENG_OK;
}

void eng_fwd_free(eng_fwd *f) {
    eng_state_free(f->cpu);   /* first: it borrows the device state in offload mode */
    eng_gpu_state_free(f->gpu);
    memset(f, 0, sizeof *f);
}

eng_status eng_fwd_forward(eng_fwd *f, const int32_t *tokens, int n, float *logits, int all_logits) {
    if (f->cpu) return eng_forward(f->cpu, tokens, n, logits, all_logits);
    return eng_gpu_forward(f->gpu, tokens, n, logits, all_logits);
}

eng_status eng_fwd_rollback(eng_fwd *f, int n) {
    return f->cpu ? eng_state_rollback(f->cpu, n) : eng_gpu_state_rollback(f->gpu, n);
}

void eng_fwd_reset(eng_fwd *f) {
    if (f->cpu) eng_state_reset(f->cpu);
    else eng_gpu_state_reset(f->gpu);
}

const char *eng_fwd_errmsg(const eng_fwd *f) {
    return f->cpu ? eng_state_errmsg(f->cpu) : eng_gpu_state_errmsg(f->gpu);
}

const char *eng_fwd_device(const eng_fwd *f) { return f->gpu ? eng_gpu_state_device_name(f->gpu) : "cpu"; }

/* Adds rows [0, rows) of lg (rows, V) scored against next[0..rows). */
static void ppl_rows(eng_ppl_sums *s, const float *lg, int rows, int V, const int32_t *next) {
    for (int k = 0; k < rows; k++) {
        int ok;
        s->nll += eng_token_nll(lg + (size_t)k * V, V, next[k], &ok);
        s->correct += (size_t)ok;
        s->scored++;
    }
}

eng_status eng_fwd_ppl(eng_fwd *f, const int32_t *t, size_t n, size_t prefill, size_t chunk, float *pre,
                       eng_ppl_sums *out) {
    const eng_model *m = f->cpu ? f->cpu->model : f->gpu->model;
    int V = m->cfg.n_vocab;
    eng_status st;
    memset(out, 0, sizeof *out);
    if (!chunk) {
        if (prefill) {
            if ((st = eng_fwd_forward(f, t, (int)prefill, pre, 1)) != ENG_OK) return st;
            ppl_rows(out, pre, (int)prefill, V, t + 1);
        }
        for (size_t i = prefill; i + 1 < n; i++) {
            if ((st = eng_fwd_forward(f, t + i, 1, f->logits, 0)) != ENG_OK) return st;
            ppl_rows(out, f->logits, 1, V, t + i + 1);
        }
        return ENG_OK;
    }
    for (size_t c0 = 0; c0 + 1 < n; c0 += chunk) {
        size_t w = n - c0 < chunk ? n - c0 : chunk;
        eng_fwd_reset(f);
        for (size_t i = 0; i + 1 < w; i += (size_t)f->n_batch) {
            int T = (int)((w - 1 - i) < (size_t)f->n_batch ? (w - 1 - i) : (size_t)f->n_batch);
            if ((st = eng_fwd_forward(f, t + c0 + i, T, f->logits, 1)) != ENG_OK) return st;
            ppl_rows(out, f->logits, T, V, t + c0 + i + 1);
        }
    }
    return ENG_OK;
}

const char *eng_fwd_mode(const eng_fwd *f) { return !f->gpu ? "cpu" : f->cpu ? "offload" : "device"; }
