/* cuda_mock.h — a kn_cuda_api table that runs on the CPU, for tests.
 *
 * "Device" memory is host memory (mem_alloc = malloc, copies = memcpy) and
 * every op is the CPU op of the same name from kernels/kn.h (the optimized
 * kn_* where one exists, else the kn_*_ref reference). Code written against
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

#endif /* TESTS_CUDA_MOCK_H */
