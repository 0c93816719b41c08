/* embed.cu — the embedding gather: out(T, C) = table(V, C)[tok(T)], the
 * table fp32 or the checkpoint's fp16/bf16 (converted exactly, as
 * kn_f16_to_f32 / kn_bf16_to_f32 do on the CPU). One block per token, the
 * threads striding over the row, so reads and writes are coalesced. A token
 * outside [0, V) cannot be reported from a kernel, so its row is filled
 * with NaN: it shows up in the logits instead of reading out of bounds
 * (the engine validates tokens before they get here). */
#include "impl.cuh"

/* tok(T) device, table(V, C), out(T, C); block t handles token t. */
static __global__ void embed_kernel(float *out, const int32_t *tok, const void *table, int wt, int V, int C) {
    const int32_t id = tok[blockIdx.x];
    float *o = out + (size_t)blockIdx.x * C;
    if (id < 0 || id >= V) {
        for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = __int_as_float(0x7fc00000);
        return;
    }
    const size_t row = (size_t)id * C;
    if (wt == KN_W_F32) {
        const float *t = (const float *)table + row;
        for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = t[i];
    } else {
        const uint16_t *t = (const uint16_t *)table + row;
        const int f16 = wt == KN_W_F16;
        for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = kn_ld16(t, (size_t)i, f16);
    }
}

extern "C" kn_status kn_cuda_embed(kn_cuda_ctx *c, float *out, const int32_t *tok, int T, const void *table,
                                   kn_wtype wt, int V, int C) {
    KN_ARG(c, T >= 0 && V > 0 && C > 0, "embed: bad shape T=%d V=%d C=%d", T, V, C);
    KN_ARG(c, wt == KN_W_F32 || wt == KN_W_F16 || wt == KN_W_BF16, "embed: bad table type %d", (int)wt);
    if (T == 0) return KN_OK;
    embed_kernel<<<(unsigned)T, 256, 0, c->stream>>>(out, tok, table, (int)wt, V, C);
    KN_LAUNCHED(c, "embed_kernel");
    return KN_OK;
}
