/* kivi.c — the reference of KIVI's asymmetric min-max group quantization
 * (contract in kn.h): the arithmetic of engine/policy_quant.c's
 * pol_quant_minmax (min/max from the first element, scale = (max - min) /
 * qmax, rintf, clamp), laid out as one dense code stream in element order
 * so the CUDA version (kernels/cuda/kivi.cu) can be compared byte for byte. */
#include "kn.h"

#include <math.h>
#include <string.h>

static size_t param_of(int r, int c, int cols, int group, kn_kivi_axis axis) {
    return axis == KN_KIVI_PER_CHANNEL ? (size_t)(r / group) * cols + c : (size_t)r * (cols / group) + c / group;
}

void kn_kivi_quant_ref(uint8_t *codes, float *mn, float *scale, const float *x, int rows, int cols, size_t ld,
                       int group, int bits, kn_kivi_axis axis) {
    float qmax = (float)((1u << bits) - 1u);
    size_t n_params = axis == KN_KIVI_PER_CHANNEL ? (size_t)(rows / group) * cols : (size_t)rows * (cols / group);
    for (size_t pi = 0; pi < n_params; pi++) {
        const float *p;
        size_t step;
        if (axis == KN_KIVI_PER_CHANNEL) {
            p = x + (pi / (size_t)cols) * (size_t)group * ld + pi % (size_t)cols;
            step = ld;
        } else {
            size_t G = (size_t)(cols / group);
            p = x + (pi / G) * ld + (pi % G) * (size_t)group;
            step = 1;
        }
        float lo = p[0], hi = p[0];
        for (int i = 1; i < group; i++) {
            float v = p[(size_t)i * step];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        mn[pi] = lo;
        scale[pi] = (hi - lo) / qmax;
    }
    memset(codes, 0, kn_kivi_code_bytes(rows, cols, bits));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t pi = param_of(r, c, cols, group, axis), bit = ((size_t)r * cols + c) * (size_t)bits;
            float sc = scale[pi];
            float code = sc > 0.0f ? rintf((x[(size_t)r * ld + c] - mn[pi]) / sc) : 0.0f;
            if (code < 0.0f) code = 0.0f;
            if (code > qmax) code = qmax;
            codes[bit >> 3] |= (uint8_t)((unsigned)code << (bit & 7));
        }
}

void kn_kivi_dequant_ref(float *out, size_t ld_out, const uint8_t *codes, const float *mn, const float *scale,
                         int rows, int cols, int group, int bits, kn_kivi_axis axis) {
    unsigned mask = (1u << bits) - 1u;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t pi = param_of(r, c, cols, group, axis), bit = ((size_t)r * cols + c) * (size_t)bits;
            unsigned code = ((unsigned)codes[bit >> 3] >> (bit & 7)) & mask;
            float prod = (float)code * scale[pi];   // two roundings, no FMA (C11 mode: no contraction)
            out[(size_t)r * ld_out + c] = prod + mn[pi];
        }
}
