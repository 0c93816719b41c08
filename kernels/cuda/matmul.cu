/* matmul.cu — y(M,N) = x(M,K)·w(N,K)ᵀ + b(N) on the device (nn.Linear
 * weights [out, in], row-major), fp32 activations and fp32 accumulation.
 *
 * fp32 weights: one cublasGemmEx, every type CUDA_R_32F, CUBLAS_COMPUTE_32F
 * and the default math mode (no TF32), i.e. the CPU path's arithmetic. In
 * cuBLAS's column-major terms, row-major y(M,N) is yᵀ(N,M): yᵀ = op_T(w)·xᵀ
 * with w seen as (K,N) ld K and x as (K,M) ld K.
 *
 * 16-bit weights (fp16/bf16, the checkpoint's dtype, uint16 bits):
 *   M <= 8 (decode, speculative verification): our GEMV, one warp per
 *     output row, 8 weights per 16-byte load converted exactly to fp32 and
 *     multiplied with the fp32 activations — the CPU kn_matmul_lp
 *     arithmetic, and the memory-bound case where only bytes read count.
 *   M > 8 (prefill): cublasGemmEx cannot mix types (A and B must share one:
 *     16F·16F -> 32F and 16BF·16BF -> 32F with CUBLAS_COMPUTE_32F are the
 *     supported pairs; there is no 16F x 32F GEMM), so the activation tile
 *     is converted to the weight dtype in the arena. Rounding x once loses
 *     to 2^-11 (fp16) or 2^-8 (bf16) relative per element; by default each
 *     activation is split into hi = round16(x) and lo = round16(x - hi) and
 *     both GEMMs accumulate into the same fp32 y, which keeps ~22 (fp16) or
 *     ~16 (bf16) bits — close to the fp32 CPU path — for twice the tensor
 *     -core work (prefill is compute-bound, and still far faster than an
 *     fp32 SIMT GEMM). set_lp_split(c, 1) keeps only hi. fp16 hi saturates
 *     at ±65504 (lo carries the rest up to ±131008): activations beyond that
 *     would need fp32 weights.
 * The bias is broadcast into y first and the GEMMs accumulate onto it
 * (beta = 1), as the CPU path does. Faster: a cuBLASLt epilogue for the
 * bias, and a GEMV with the activation row held in shared memory. */
#include "impl.cuh"

#include <cuda_bf16.h>

#define GEMV_MAX_M 8
#define GEMV_WARPS 8   /* output rows per block */

/* y[m][n] = b[n] for the M x N outputs (grid-stride). */
static __global__ void bias_fill_kernel(float *y, const float *b, int N, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % (size_t)N];
}

/* Eight 16-bit weights (one uint4) to fp32; element 2q is the low half of word q. */
template <int F16>
static __device__ __forceinline__ void unpack8(const uint4 u, float *wf) {
    const uint32_t p[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
        wf[2 * q] = F16 ? kn_f16_bits(p[q] & 0xffffu) : kn_bf16_bits(p[q] & 0xffffu);
        wf[2 * q + 1] = F16 ? kn_f16_bits(p[q] >> 16) : kn_bf16_bits(p[q] >> 16);
    }
}

/* y(MM,N) = x(MM,K)·w(N,K)ᵀ + b: warp w of block blk owns output row n.
 * vec: K % 8 == 0 and w, x 16-byte aligned, so rows load as uint4/float4. */
template <int MM, int F16>
static __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv16_kernel(float *y, const float *x, const uint16_t *w, const float *b, int K, int N, int vec) {
    const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;   // the whole warp leaves together
    const uint16_t *wr = w + (size_t)n * K;
    float acc[MM];
#pragma unroll
    for (int m = 0; m < MM; m++) acc[m] = 0.0f;
    if (vec) {
        const uint4 *w8 = (const uint4 *)wr;
        for (int i = lane; i < K / 8; i += 32) {
            float wf[8];
            unpack8<F16>(__ldg(w8 + i), wf);
#pragma unroll
            for (int m = 0; m < MM; m++) {
                const float4 *x4 = (const float4 *)(x + (size_t)m * K) + 2 * i;
                const float4 a = x4[0], c = x4[1];
                acc[m] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + c.x * wf[4] + c.y * wf[5] +
                          c.z * wf[6] + c.w * wf[7];
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            const float wv = F16 ? kn_f16_bits(wr[k]) : kn_bf16_bits(wr[k]);
#pragma unroll
            for (int m = 0; m < MM; m++) acc[m] += x[(size_t)m * K + k] * wv;
        }
    }
#pragma unroll
    for (int m = 0; m < MM; m++) acc[m] = kn_warp_sum(acc[m]);
    if (lane == 0) {
        const float bn = b ? b[n] : 0.0f;
#pragma unroll
        for (int m = 0; m < MM; m++) y[(size_t)m * N + n] = acc[m] + bn;
    }
}

template <int F16>
static void gemv16_launch(int M, dim3 grid, cudaStream_t s, float *y, const float *x, const uint16_t *w,
                          const float *b, int K, int N, int vec) {
    const int th = GEMV_WARPS * 32;
    switch (M) {
    case 1: gemv16_kernel<1, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 2: gemv16_kernel<2, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 3: gemv16_kernel<3, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 4: gemv16_kernel<4, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 5: gemv16_kernel<5, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 6: gemv16_kernel<6, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    case 7: gemv16_kernel<7, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    default: gemv16_kernel<8, F16><<<grid, th, 0, s>>>(y, x, w, b, K, N, vec); break;
    }
}

/* hi(n), lo(n) = the 16-bit split of x(n): hi = round(x), lo = round(x - hi)
 * (lo only when two). x - hi is exact in fp32. */
template <int F16>
static __global__ void split16_kernel(uint16_t *hi, uint16_t *lo, const float *x, size_t n, int two) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        if (F16) {
            const __half h = __float2half_rn(fminf(fmaxf(v, -65504.0f), 65504.0f));
            hi[i] = __half_as_ushort(h);
            if (two) lo[i] = __half_as_ushort(__float2half_rn(v - __half2float(h)));
        } else {
            const __nv_bfloat16 h = __float2bfloat16_rn(v);
            hi[i] = __bfloat16_as_ushort(h);
            if (two) lo[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v - __bfloat162float(h)));
        }
    }
}

/* yᵀ(N,m) (+)= w·xᵀ for m rows; A (w) and B (x) of type dt, C fp32. */
static kn_status gemm_ex(kn_cuda_ctx *c, float *y, const void *x, const void *w, cudaDataType_t dt, int m, int K,
                         int N, float beta) {
    const float one = 1.0f;
    KN_BLAS(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, m, K, &one, w, dt, K, x, dt, K, &beta, y,
                            CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return KN_OK;
}

extern "C" kn_status kn_cuda_matmul(kn_cuda_ctx *c, float *y, const float *x, const void *w, kn_wtype wt,
                                    const float *b, int M, int K, int N) {
    KN_ARG(c, M >= 0 && K > 0 && N >= 0, "matmul: bad shape M=%d K=%d N=%d", M, K, N);
    KN_ARG(c, wt == KN_W_F32 || wt == KN_W_F16 || wt == KN_W_BF16, "matmul: bad weight type %d", (int)wt);
    if (M == 0 || N == 0) return KN_OK;
    const size_t total = (size_t)M * (size_t)N;
    const int f16 = wt == KN_W_F16;

    if (wt != KN_W_F32 && M <= GEMV_MAX_M) {
        const int vec = K % 8 == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
        const dim3 grid((unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS));
        if (f16) gemv16_launch<1>(M, grid, c->stream, y, x, (const uint16_t *)w, b, K, N, vec);
        else gemv16_launch<0>(M, grid, c->stream, y, x, (const uint16_t *)w, b, K, N, vec);
        KN_LAUNCHED(c, "gemv16_kernel");
        return KN_OK;
    }

    float beta = 0.0f;
    if (b) {
        bias_fill_kernel<<<kn_grid(c, total, 256), 256, 0, c->stream>>>(y, b, N, total);
        KN_LAUNCHED(c, "bias_fill_kernel");
        beta = 1.0f;
    }
    if (wt == KN_W_F32) return gemm_ex(c, y, x, w, CUDA_R_32F, M, K, N, beta);

    // 16-bit weights, prefill: rows of x in tiles whose hi/lo copies fit the arena
    const int two = c->lp_split == 2;
    const size_t row_bytes = (size_t)K * sizeof(uint16_t) * (two ? 2 : 1);
    size_t fit = c->arena_bytes > 512 ? (c->arena_bytes - 512) / row_bytes : 0;   // 512: lo's alignment
    if (fit == 0)
        return kn_cuda_errf(c, KN_ERR_INVAL, "matmul: arena of %zu bytes cannot hold one %d-wide activation row",
                            c->arena_bytes, K);
    const int tile = fit < (size_t)M ? (int)fit : M;
    const cudaDataType_t dt = f16 ? CUDA_R_16F : CUDA_R_16BF;
    uint16_t *hi = (uint16_t *)c->arena;
    uint16_t *lo = hi + (((size_t)tile * K + 127) & ~(size_t)127);   // 256-byte aligned for the tensor cores
    for (int m0 = 0; m0 < M; m0 += tile) {
        const int mt = M - m0 < tile ? M - m0 : tile;
        const size_t n = (size_t)mt * K;
        const float *xt = x + (size_t)m0 * K;
        if (f16) split16_kernel<1><<<kn_grid(c, n, 256), 256, 0, c->stream>>>(hi, lo, xt, n, two);
        else split16_kernel<0><<<kn_grid(c, n, 256), 256, 0, c->stream>>>(hi, lo, xt, n, two);
        KN_LAUNCHED(c, "split16_kernel");
        float *yt = y + (size_t)m0 * N;
        kn_status st = gemm_ex(c, yt, hi, w, dt, mt, K, N, beta);
        if (st == KN_OK && two) st = gemm_ex(c, yt, lo, w, dt, mt, K, N, 1.0f);
        if (st != KN_OK) return st;
    }
    return KN_OK;
}
