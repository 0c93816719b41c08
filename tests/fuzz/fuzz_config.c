/* fuzz_config.c — libFuzzer target for eng_config_parse (config.json): any
 * input either yields a config that satisfies the engine's invariants
 * (positive sizes, head_dim * n_head == n_embd, even n_rot within head_dim)
 * or an error naming the file. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    eng_config c;
    char err[512] = "";
    eng_status st = eng_config_parse(&c, (const char *)buf, len, "fuzz/config.json", err, sizeof err);
    if (st != ENG_OK) {
        if (st != ENG_ERR_FORMAT && st != ENG_ERR_UNSUPPORTED && st != ENG_ERR_NOMEM) abort();
        if (!strstr(err, "fuzz/config.json")) abort();
        return 0;
    }
    if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_head <= 0 || c.n_ff <= 0 || c.n_vocab <= 0 || c.n_ctx_train <= 0)
        abort();
    if (c.head_dim * c.n_head != c.n_embd || c.n_rot <= 0 || c.n_rot % 2 || c.n_rot > c.head_dim) abort();
    if (!(c.ln_eps > 0) || !(c.rope_base > 0) || !isfinite(c.rope_base) || !(c.rotary_pct > 0 && c.rotary_pct <= 1))
        abort();
    if (c.bos_id < -1 || c.eos_id < -1 || (c.parallel_residual != 0 && c.parallel_residual != 1)) abort();
    if (!(eng_model_decode_bytes(&c, 2.0) > 0)) abort();
    return 0;
}
