/* kivi.cu — KIVI's asymmetric min-max quantization on the device (Liu et
 * al. 2024): keys per channel (groups of `group` consecutive tokens of one
 * channel), values per token (groups of `group` consecutive channels),
 * 2/4/8 bits, codes packed LSB-first in element order e = r·cols + c — the
 * contract and the packing of kn_kivi_quant_ref (kn.h).
 *
 * Quantize is two kernels: one thread per group finds (min, max) and writes
 * mn and scale = (max - min) / (2^bits - 1); then one thread per output
 * byte computes that byte's 8/bits codes, clamp(rintf((x - mn) / scale)),
 * and stores the byte whole, so no two threads touch one byte (no atomics).
 * Every step is an exactly rounded IEEE operation (no fast math, division
 * and rintf round to nearest even), so codes, mn and scale equal the CPU's
 * bit for bit. Dequantize is one thread per element, x̂ = code·scale + mn
 * with __fmul_rn/__fadd_rn so nvcc cannot fuse it into an FMA: also bit
 * equal to the CPU. Faster: one warp per group with the min/max by shuffle,
 * and dequantization fused into the attention kernel's K/V tile loads. */
#include "impl.cuh"

/* Parameter index of element (r, c). */
static __device__ __forceinline__ size_t param_of(int r, int c, int cols, int group, int axis) {
    return axis == KN_KIVI_PER_CHANNEL ? (size_t)(r / group) * cols + c
                                       : (size_t)r * (cols / group) + c / group;
}

static __global__ void kivi_stats_kernel(float *mn, float *scale, const float *x, int cols, size_t ld, int group,
                                         float qmax, int axis, size_t n_params) {
    for (size_t pi = blockIdx.x * (size_t)blockDim.x + threadIdx.x; pi < n_params;
         pi += (size_t)gridDim.x * blockDim.x) {
        const float *p;
        size_t step;
        if (axis == KN_KIVI_PER_CHANNEL) {   // pi = g·cols + c: rows g·group .. of column c
            const size_t g = pi / (size_t)cols, col = pi % (size_t)cols;
            p = x + g * (size_t)group * ld + col;
            step = ld;
        } else {                             // pi = r·G + g: columns g·group .. of row r
            const size_t G = (size_t)(cols / group), r = pi / G, g = pi % G;
            p = x + r * ld + g * (size_t)group;
            step = 1;
        }
        float lo = p[0], hi = p[0];
        for (int i = 1; i < group; i++) {
            const float v = p[(size_t)i * step];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        mn[pi] = lo;
        scale[pi] = (hi - lo) / qmax;
    }
}

static __global__ void kivi_pack_kernel(uint8_t *codes, const float *mn, const float *scale, const float *x,
                                        int cols, size_t ld, int group, int bits, int axis, size_t n_elem,
                                        size_t n_bytes) {
    const int per = 8 / bits;
    const float qmax = (float)((1u << bits) - 1u);
    for (size_t by = blockIdx.x * (size_t)blockDim.x + threadIdx.x; by < n_bytes;
         by += (size_t)gridDim.x * blockDim.x) {
        unsigned out = 0;
        for (int q = 0; q < per; q++) {
            const size_t e = by * per + q;
            if (e >= n_elem) break;
            const int r = (int)(e / (size_t)cols), col = (int)(e % (size_t)cols);
            const size_t pi = param_of(r, col, cols, group, axis);
            const float lo = mn[pi], sc = scale[pi];
            float code = sc > 0.0f ? rintf((x[(size_t)r * ld + col] - lo) / sc) : 0.0f;
            code = code < 0.0f ? 0.0f : (code > qmax ? qmax : code);
            out |= (unsigned)code << (q * bits);
        }
        codes[by] = (uint8_t)out;
    }
}

static __global__ void kivi_dequant_kernel(float *out, size_t ld_out, const uint8_t *codes, const float *mn,
                                           const float *scale, int cols, int group, int bits, int axis,
                                           size_t n_elem) {
    const unsigned mask = (1u << bits) - 1u;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n_elem; e += (size_t)gridDim.x * blockDim.x) {
        const size_t bit = e * (size_t)bits;
        const unsigned code = ((unsigned)codes[bit >> 3] >> (bit & 7)) & mask;
        const int r = (int)(e / (size_t)cols), col = (int)(e % (size_t)cols);
        const size_t pi = param_of(r, col, cols, group, axis);
        out[(size_t)r * ld_out + col] = __fadd_rn(__fmul_rn((float)code, scale[pi]), mn[pi]);
    }
}

static kn_status kivi_check(kn_cuda_ctx *c, const char *op, int rows, int cols, size_t ld, int group, int bits,
                            kn_kivi_axis axis) {
    KN_ARG(c, rows >= 0 && cols > 0 && ld >= (size_t)cols && group > 0, "%s: bad shape rows=%d cols=%d ld=%zu group=%d",
           op, rows, cols, ld, group);
    KN_ARG(c, bits == 2 || bits == 4 || bits == 8, "%s: bits %d (2, 4 or 8)", op, bits);
    KN_ARG(c, axis == KN_KIVI_PER_CHANNEL || axis == KN_KIVI_PER_TOKEN, "%s: bad axis %d", op, (int)axis);
    KN_ARG(c, axis == KN_KIVI_PER_CHANNEL ? rows % group == 0 : cols % group == 0,
           "%s: group %d does not divide %s %d", op, group, axis == KN_KIVI_PER_CHANNEL ? "rows" : "cols",
           axis == KN_KIVI_PER_CHANNEL ? rows : cols);
    return KN_OK;
}

extern "C" kn_status kn_cuda_kivi_quant(kn_cuda_ctx *c, uint8_t *codes, float *mn, float *scale, const float *x,
                                        int rows, int cols, size_t ld, int group, int bits, kn_kivi_axis axis) {
    kn_status st = kivi_check(c, "kivi_quant", rows, cols, ld, group, bits, axis);
    if (st != KN_OK || rows == 0) return st;
    const size_t n_params = axis == KN_KIVI_PER_CHANNEL ? (size_t)(rows / group) * cols
                                                        : (size_t)rows * (cols / group);
    const float qmax = (float)((1u << bits) - 1u);
    kivi_stats_kernel<<<kn_grid(c, n_params, 256), 256, 0, c->stream>>>(mn, scale, x, cols, ld, group, qmax,
                                                                        (int)axis, n_params);
    KN_LAUNCHED(c, "kivi_stats_kernel");
    const size_t n_elem = (size_t)rows * cols, n_bytes = kn_kivi_code_bytes(rows, cols, bits);
    kivi_pack_kernel<<<kn_grid(c, n_bytes, 256), 256, 0, c->stream>>>(codes, mn, scale, x, cols, ld, group, bits,
                                                                      (int)axis, n_elem, n_bytes);
    KN_LAUNCHED(c, "kivi_pack_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_kivi_dequant(kn_cuda_ctx *c, float *out, size_t ld_out, const uint8_t *codes,
                                          const float *mn, const float *scale, int rows, int cols, int group, int bits,
                                          kn_kivi_axis axis) {
    kn_status st = kivi_check(c, "kivi_dequant", rows, cols, ld_out, group, bits, axis);
    if (st != KN_OK || rows == 0) return st;
    const size_t n_elem = (size_t)rows * cols;
    kivi_dequant_kernel<<<kn_grid(c, n_elem, 256), 256, 0, c->stream>>>(out, ld_out, codes, mn, scale, cols, group,
                                                                        bits, (int)axis, n_elem);
    KN_LAUNCHED(c, "kivi_dequant_kernel");
    return KN_OK;
}
