/* pointwise.cu — the elementwise ops: exact-erf GELU in place (HF's
 * "gelu"; Pythia was trained with the tanh form, but HF logits use erf,
 * ../shared/docs/gpt-neox.md trap 5) and the parallel-residual add
 * y += a + b. Grid-stride loops sized by kn_grid. erff is CUDA's accurate
 * erf (2 ulp), not a fast-math approximation; add2 adds in the CPU's order,
 * (a + b) then y + that, so it matches kn_add2 bit for bit. Faster: fuse
 * GELU into the fc1 GEMM epilogue and add2 into fc2's (cuBLASLt). */
#include "impl.cuh"

static __global__ void gelu_kernel(float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    }
}

static __global__ void add2_kernel(float *y, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b ? a[i] + b[i] : a[i];
}

/* grid (ceil((to - from) / 256), rows) */
static __global__ void fill_rows_kernel(float *x, size_t stride, int from, int to, float v) {
    const int j = from + blockIdx.x * blockDim.x + threadIdx.x;
    if (j < to) x[(size_t)blockIdx.y * stride + j] = v;
}

extern "C" kn_status kn_cuda_fill_rows(kn_cuda_ctx *c, float *x, int rows, size_t stride, int from, int to, float v) {
    KN_ARG(c, rows >= 0 && rows <= 65535 && from >= 0 && (size_t)to <= stride,
           "fill_rows: bad range rows=%d stride=%zu from=%d to=%d", rows, stride, from, to);
    if (rows == 0 || from >= to) return KN_OK;
    fill_rows_kernel<<<dim3((unsigned)((to - from + 255) / 256), (unsigned)rows), 256, 0, c->stream>>>(x, stride, from,
                                                                                                     to, v);
    KN_LAUNCHED(c, "fill_rows_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_gelu(kn_cuda_ctx *c, float *x, size_t n) {
    if (n == 0) return KN_OK;
    gelu_kernel<<<kn_grid(c, n, 256), 256, 0, c->stream>>>(x, n);
    KN_LAUNCHED(c, "gelu_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_add2(kn_cuda_ctx *c, float *y, const float *a, const float *b, size_t n) {
    if (n == 0) return KN_OK;
    add2_kernel<<<kn_grid(c, n, 256), 256, 0, c->stream>>>(y, a, b, n);
    KN_LAUNCHED(c, "add2_kernel");
    return KN_OK;
}
