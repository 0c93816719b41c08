/* fuzz_policy_spec.c — libFuzzer target for the policy strings users type
 * (kvrun --policy / --draft-policy, a sweep's spec.draft_policy): any input
 * through eng_policy_parse_spec and then eng_policy_create for a small
 * Pythia shape either yields a policy whose capacity is sane and whose
 * description re-parses, or an error naming what is wrong; never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    char spec[600], name[32], pbuf[640], err[512] = "";
    if (len >= sizeof spec) len = sizeof spec - 1;
    memcpy(spec, buf, len);
    spec[len] = 0;
    eng_paramset ps;
    eng_status st = eng_policy_parse_spec(spec, &ps, name, sizeof name, pbuf, sizeof pbuf, err, sizeof err);
    if (st != ENG_OK) {
        if (st != ENG_ERR_INVAL || !err[0]) abort();
        return 0;
    }
    eng_config cfg = {0};
    cfg.n_layer = 3;
    cfg.n_embd = 64;
    cfg.n_head = 4;
    cfg.head_dim = 16;
    cfg.n_rot = 4;
    cfg.n_ff = 256;
    cfg.n_vocab = 512;
    cfg.n_ctx_train = 2048;
    cfg.rotary_pct = 0.25;
    cfg.rope_base = 10000;
    cfg.ln_eps = 1e-5f;
    cfg.parallel_residual = 1;
    eng_policy *p = NULL;
    st = eng_policy_create(&p, name, &ps, &cfg, err, sizeof err);
    if (st != ENG_OK) {
        if (p || !err[0] || (st != ENG_ERR_INVAL && st != ENG_ERR_UNSUPPORTED && st != ENG_ERR_NOMEM)) abort();
        return 0;
    }
    int cap = eng_policy_capacity(p, 4096);
    if (cap <= 0 || cap > 4096) abort();
    /* the effective params re-parse */
    char again[700];
    snprintf(again, sizeof again, "%s:%s", eng_policy_name(p), eng_policy_describe(p));
    eng_paramset ps2;
    char name2[32], pbuf2[760];
    if (strlen(again) + 1 < sizeof pbuf2 &&
        eng_policy_parse_spec(again, &ps2, name2, sizeof name2, pbuf2, sizeof pbuf2, err, sizeof err) != ENG_OK)
        abort();
    eng_policy_free(p);
    return 0;
}
