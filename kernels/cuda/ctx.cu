/* ctx.cu — the library's front door: device discovery, the context (device,
 * non-blocking stream, cuBLAS handle, one scratch allocation), device
 * memory and copies, CUDA graph capture and replay, error formatting, and
 * the exported table kn_cuda_api_get() that kernels/cuda_loader.c fetches
 * with dlsym.
 *
 * Allocation discipline: ctx_init makes the only allocation the ops ever
 * use — cuBLAS's workspace (given to cublasSetWorkspace right after
 * cublasSetStream, which would otherwise reset it to cuBLAS's own pool) and
 * the arena behind it. Weights, the KV pool and activations are the
 * caller's mem_alloc buffers, made once at setup; alloc_count lets tests
 * assert that no op allocates. The same workspace is what makes cuBLAS
 * capturable into a graph: with it cuBLAS allocates nothing while capturing
 * (no cublasLt handle is used). Errors never exit: they become KN_ERR_CUDA
 * with the failing call and file:line in the context's message. */
#include "impl.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KN_CUBLAS_WORKSPACE ((size_t)32 << 20)   /* NVIDIA's recommendation for Hopper */

/* ------------------------------------------------------------ errors */

extern "C" kn_status kn_cuda_errf(kn_cuda_ctx *c, kn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return st;
}

static int call_name_len(const char *call) { return (int)strcspn(call, "( "); }

extern "C" kn_status kn_cuda_fail_rt(kn_cuda_ctx *c, const char *call, cudaError_t e, const char *file, int line) {
    (void)cudaGetLastError();   // a non-sticky error must not resurface at the next launch check
    snprintf(c->err, sizeof c->err, "%.*s: %s: %s (%s:%d)", call_name_len(call), call, cudaGetErrorName(e),
             cudaGetErrorString(e), file, line);
    return KN_ERR_CUDA;
}

static const char *blas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_(unknown)";
    }
}

extern "C" kn_status kn_cuda_fail_blas(kn_cuda_ctx *c, const char *call, cublasStatus_t s, const char *file,
                                       int line) {
    cudaError_t e = cudaGetLastError();   /* an execution failure usually has a CUDA error behind it */
    if (e != cudaSuccess)
        snprintf(c->err, sizeof c->err, "%.*s: %s, after %s (%s:%d)", call_name_len(call), call, blas_status_name(s),
                 cudaGetErrorName(e), file, line);
    else
        snprintf(c->err, sizeof c->err, "%.*s: %s (%s:%d)", call_name_len(call), call, blas_status_name(s), file,
                 line);
    return KN_ERR_CUDA;
}

/* 1 while c->stream is capturing a graph (or the query failed: then no
 * synchronize is attempted either). */
static int capturing(kn_cuda_ctx *c) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return cs != cudaStreamCaptureStatusNone;
}

extern "C" kn_status kn_cuda_launched(kn_cuda_ctx *c, const char *kernel, const char *file, int line) {
    // Launch errors (bad configuration, a capture the launch invalidated) come back here, captured or not.
    cudaError_t e = cudaGetLastError();
    // KV_CUDA_SYNC=1: a synchronize inside a capture would invalidate it, so only eager launches wait.
    if (e == cudaSuccess && c->sync_each && !capturing(c)) e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) return KN_OK;
    (void)cudaGetLastError();
    snprintf(c->err, sizeof c->err, "launch %s: %s: %s (%s:%d)", kernel, cudaGetErrorName(e), cudaGetErrorString(e),
             file, line);
    return KN_ERR_CUDA;
}

/* ------------------------------------------------------------ discovery and context */

static int dev_count(char *why, size_t n_why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, n_why, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) snprintf(why, n_why, "CUDA runtime reports 0 devices");
    return n > 0 ? n : 0;
}

static kn_status ctx_setup(kn_cuda_ctx *c, int device, size_t arena_bytes) {
    int n = 0;
    KN_CU(c, cudaGetDeviceCount(&n));
    if (device < 0 || device >= n)
        return kn_cuda_errf(c, KN_ERR_INVAL, "device %d: this machine has %d CUDA device(s)", device, n);
    c->device = device;
    KN_CU(c, cudaSetDevice(device));
    cudaDeviceProp p;
    KN_CU(c, cudaGetDeviceProperties(&p, device));
    if (p.major < 8)
        return kn_cuda_errf(c, KN_ERR_UNSUPPORTED, "device %d (%.100s) is sm_%d%d; libkvcuda.so has sm_80/sm_90 code only",
                            device, p.name, p.major, p.minor);
    c->n_sm = p.multiProcessorCount > 0 ? p.multiProcessorCount : 1;
    snprintf(c->name, sizeof c->name, "%.100s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, c->n_sm,
             (double)p.totalGlobalMem / (1u << 30));
    KN_CU(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    KN_BLAS(c, cublasCreate(&c->blas));
    KN_BLAS(c, cublasSetStream(c->blas, c->stream));
    // No TF32: fp32 GEMMs stay fp32 (CUBLAS_COMPUTE_32F), as the CPU path computes.
    KN_BLAS(c, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    arena_bytes = (arena_bytes + 255) & ~(size_t)255;
    c->workspace_bytes = KN_CUBLAS_WORKSPACE;
    KN_CU(c, cudaMalloc(&c->mem, c->workspace_bytes + arena_bytes));
    c->workspace = c->mem;
    c->arena = (char *)c->mem + c->workspace_bytes;
    c->arena_bytes = arena_bytes;
    KN_BLAS(c, cublasSetWorkspace(c->blas, c->workspace, c->workspace_bytes));
    c->lp_split = 2;
    const char *s = getenv("KV_CUDA_SYNC");
    c->sync_each = s && s[0] == '1';
    return KN_OK;
}

static void ctx_free(kn_cuda_ctx *c) {
    if (!c) return;
    if (c->stream || c->blas || c->mem) (void)cudaSetDevice(c->device);
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    if (c->blas) (void)cublasDestroy(c->blas);
    if (c->mem) (void)cudaFree(c->mem);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

static kn_status ctx_init(kn_cuda_ctx **out, int device, size_t arena_bytes, char *err, size_t n_err) {
    *out = NULL;
    kn_cuda_ctx *c = (kn_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, n_err, "ctx_init: out of host memory");
        return KN_ERR_INVAL;
    }
    kn_status st = ctx_setup(c, device, arena_bytes);
    if (st != KN_OK) {
        snprintf(err, n_err, "%s", c->err);
        ctx_free(c);
        return st;
    }
    *out = c;
    return KN_OK;
}

static const char *api_errmsg(const kn_cuda_ctx *c) { return c ? c->err : "no CUDA context"; }
static const char *api_device_name(const kn_cuda_ctx *c) { return c->name; }
static void *api_stream(kn_cuda_ctx *c) { return (void *)c->stream; }
static void api_set_lp_split(kn_cuda_ctx *c, int terms) { c->lp_split = terms == 1 ? 1 : 2; }
static size_t api_alloc_count(const kn_cuda_ctx *c) { return c->n_alloc; }

static kn_status api_sync(kn_cuda_ctx *c) {
    KN_CU(c, cudaStreamSynchronize(c->stream));
    return KN_OK;
}

/* ------------------------------------------------------------ memory */

static kn_status api_mem_alloc(kn_cuda_ctx *c, void **d_ptr, size_t bytes) {
    *d_ptr = NULL;
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaSetDevice(c->device));
    KN_CU(c, cudaMalloc(d_ptr, bytes));
    c->n_alloc++;
    return KN_OK;
}

static void api_mem_free(kn_cuda_ctx *c, void *d_ptr) {
    if (!d_ptr) return;
    (void)cudaSetDevice(c->device);
    (void)cudaFree(d_ptr);
    (void)cudaGetLastError();
}

static kn_status api_host_alloc(kn_cuda_ctx *c, void **ptr, size_t bytes) {
    *ptr = NULL;
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMallocHost(ptr, bytes));
    return KN_OK;
}

static void api_host_free(kn_cuda_ctx *c, void *ptr) {
    (void)c;
    if (ptr) (void)cudaFreeHost(ptr);
    (void)cudaGetLastError();
}

static kn_status api_copy_h2d(kn_cuda_ctx *c, void *d_dst, const void *src, size_t bytes) {
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return KN_OK;
}

static kn_status api_copy_d2h(kn_cuda_ctx *c, void *dst, const void *d_src, size_t bytes) {
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream));
    KN_CU(c, cudaStreamSynchronize(c->stream));
    return KN_OK;
}

static kn_status api_copy_d2h_async(kn_cuda_ctx *c, void *dst, const void *d_src, size_t bytes) {
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return KN_OK;
}

static kn_status api_copy_d2d(kn_cuda_ctx *c, void *d_dst, const void *d_src, size_t bytes) {
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return KN_OK;
}

static kn_status api_mem_set(kn_cuda_ctx *c, void *d_dst, int byte, size_t bytes) {
    if (bytes == 0) return KN_OK;
    KN_CU(c, cudaMemsetAsync(d_dst, byte, bytes, c->stream));
    return KN_OK;
}

/* ------------------------------------------------------------ graphs */

/* The instantiated graph only: the cudaGraph_t it came from is destroyed
 * at once (an executable graph does not depend on it). */
struct kn_cuda_graph {
    cudaGraphExec_t exec;
};

static kn_status api_graph_begin(kn_cuda_ctx *c) {
    // ThreadLocal: an unsafe call (cudaMalloc, a synchronize, ...) made by this thread while capturing fails
    // and invalidates the capture, so a capture mistake is an error, never a silent hang; other threads
    // (other contexts) are not affected.
    KN_CU(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    return KN_OK;
}

static kn_status api_graph_end(kn_cuda_ctx *c, kn_cuda_graph **out) {
    *out = NULL;
    cudaGraph_t graph = NULL;
    // Always ends the capture, even an invalidated one (then it fails and graph is NULL).
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e != cudaSuccess) {
        if (graph) (void)cudaGraphDestroy(graph);
        return kn_cuda_fail_rt(c, "cudaStreamEndCapture(c->stream, &graph)", e, __FILE__, __LINE__);
    }
    if (!graph)
        return kn_cuda_errf(c, KN_ERR_CUDA, "cudaStreamEndCapture: no graph returned (%s:%d)", __FILE__, __LINE__);
    kn_cuda_graph *g = (kn_cuda_graph *)calloc(1, sizeof *g);
    if (!g) {
        (void)cudaGraphDestroy(graph);
        return kn_cuda_errf(c, KN_ERR_CUDA, "graph_end: out of host memory (%s:%d)", __FILE__, __LINE__);
    }
    e = cudaGraphInstantiate(&g->exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        free(g);
        return kn_cuda_fail_rt(c, "cudaGraphInstantiate(&g->exec, graph, 0)", e, __FILE__, __LINE__);
    }
    *out = g;
    return KN_OK;
}

static kn_status api_graph_launch(kn_cuda_ctx *c, kn_cuda_graph *g) {
    KN_ARG(c, g != NULL && g->exec != NULL, "graph_launch: no graph");
    KN_CU(c, cudaGraphLaunch(g->exec, c->stream));
    // KV_CUDA_SYNC=1: a fault inside the replay is reported by the launch that ran it.
    if (c->sync_each && !capturing(c)) KN_CU(c, cudaStreamSynchronize(c->stream));
    return KN_OK;
}

static void api_graph_free(kn_cuda_ctx *c, kn_cuda_graph *g) {
    (void)c;
    if (!g) return;
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);   // an in-flight replay completes, then is freed
    (void)cudaGetLastError();
    free(g);
}

/* ------------------------------------------------------------ the table */

#define KN_STR_(x) #x
#define KN_STR(x) KN_STR_(x)

static kn_cuda_api make_api(void) {
    kn_cuda_api a;
    memset(&a, 0, sizeof a);
    a.abi = KN_CUDA_ABI;
    a.size = (uint32_t)sizeof a;
    a.build_info = "CUDA runtime " KN_STR(CUDART_VERSION) ", sm_80 sm_90 (+compute_90 PTX)";
    a.device_count = dev_count;
    a.ctx_init = ctx_init;
    a.ctx_free = ctx_free;
    a.errmsg = api_errmsg;
    a.device_name = api_device_name;
    a.stream = api_stream;
    a.sync = api_sync;
    a.set_lp_split = api_set_lp_split;
    a.alloc_count = api_alloc_count;
    a.mem_alloc = api_mem_alloc;
    a.mem_free = api_mem_free;
    a.host_alloc = api_host_alloc;
    a.host_free = api_host_free;
    a.copy_h2d = api_copy_h2d;
    a.copy_d2h = api_copy_d2h;
    a.copy_d2h_async = api_copy_d2h_async;
    a.copy_d2d = api_copy_d2d;
    a.mem_set = api_mem_set;
    a.graph_begin = api_graph_begin;
    a.graph_end = api_graph_end;
    a.graph_launch = api_graph_launch;
    a.graph_free = api_graph_free;
    a.matmul = kn_cuda_matmul;
    a.embed = kn_cuda_embed;
    a.layernorm = kn_cuda_layernorm;
    a.gelu = kn_cuda_gelu;
    a.add2 = kn_cuda_add2;
    a.fill_rows = kn_cuda_fill_rows;
    a.attn_head_mean = kn_cuda_attn_head_mean;
    a.rope_table = kn_cuda_rope_table;
    a.rope = kn_cuda_rope;
    a.attention = kn_cuda_attention;
    a.kv_append = kn_cuda_kv_append;
    a.kv_move = kn_cuda_kv_move;
    a.kv_compact = kn_cuda_kv_compact;
    a.key_norms = kn_cuda_key_norms;
    a.attn_accum = kn_cuda_attn_accum;
    a.pool1d = kn_cuda_pool1d;
    a.kivi_quant = kn_cuda_kivi_quant;
    a.kivi_dequant = kn_cuda_kivi_dequant;
    a.argmax = kn_cuda_argmax;
    a.softmax = kn_cuda_softmax;
    return a;
}

extern "C" __attribute__((visibility("default"))) const kn_cuda_api *kn_cuda_api_get(void) {
    static const kn_cuda_api api = make_api();   // C++ magic static: initialised once, thread-safe
    return &api;
}
