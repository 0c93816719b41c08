/* embed.c — the embedding gather's reference: out(T, C) = table(V, C)
 * row tok[t], fp32 or 16-bit converted exactly (what forward_chunk does
 * inline). A token outside [0, V) gives a NaN row rather than an
 * out-of-bounds read, the same rule as the CUDA version. */
#include "kn.h"

#include <math.h>
#include <string.h>

void kn_embed_ref(float *out, const int32_t *tok, int T, const void *table, kn_wtype wt, int V, int C) {
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * C;
        if (tok[t] < 0 || tok[t] >= V) {
            for (int i = 0; i < C; i++) o[i] = NAN;
            continue;
        }
        size_t row = (size_t)tok[t] * C;
        if (wt == KN_W_F32) memcpy(o, (const float *)table + row, (size_t)C * sizeof(float));
        else kn_f16_or_bf16_to_f32(o, (const uint16_t *)table + row, (size_t)C, wt == KN_W_F16);
    }
}
