/* cuda_mock.h — a kn_cuda_api table that runs on the CPU, for tests.
 *
 * "Device" memory is host memory (mem_alloc = malloc, copies = memcpy) and
 * every op is the CPU op of the same name from kernels/kn.h (the optimized
 * kn_* where one exists, else the kn_*_ref reference). Graph capture is
 * real: captured calls are recorded and replayed, and the calls CUDA
 * refuses while capturing fail here too. Code written against
 * the table — engine/forward_gpu.c — can so be run, and compared with the
 * CPU engine, on machines without a GPU: what it proves is the
 * orchestration (buffers, strides, offsets, positions, order of ops), not
 * the CUDA kernels (tests/test_cuda_ops.c does those on a device).
 *
 * Linked only into test binaries (Makefile); the real binaries load
 * libkvcuda.so through kernels/cuda_loader.c as before. */
#ifndef TESTS_CUDA_MOCK_H
#define TESTS_CUDA_MOCK_H

#include "kn_cuda.h"

/* The mock's table (abi/size as the loader expects). */
const kn_cuda_api *cuda_mock_api(void);
/* Fault injection: the k-th next call (0-based) that can fail — mem_alloc,
 * a copy, sync or an op — returns KN_ERR_CUDA with an errmsg naming it, and
 * every later one too; k < 0 disables. */
void cuda_mock_fail_after(long k);
/* Calls that could have failed so far (monotonic), to size injection loops. */
long cuda_mock_calls(void);

/* Graphs (graph_begin ... graph_end record the calls, graph_launch replays
 * them; see cuda_mock.c). Successful captures and launches so far, over
 * every context (monotonic). */
long cuda_mock_graph_captures(void);
long cuda_mock_graph_launches(void);
/* Capture failure injection, until called again with 0: every graph_begin
 * (CUDA_MOCK_GRAPH_FAIL_BEGIN) or every graph_end, as an instantiation
 * failure (CUDA_MOCK_GRAPH_FAIL_END), returns KN_ERR_CUDA with a message
 * containing "injected". */
enum { CUDA_MOCK_GRAPH_FAIL_BEGIN = 1, CUDA_MOCK_GRAPH_FAIL_END = 2 };
void cuda_mock_graph_fail(int where);

#endif /* TESTS_CUDA_MOCK_H */
