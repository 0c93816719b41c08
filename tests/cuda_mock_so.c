/* cuda_mock_so.c — the mock table (cuda_mock.c) as a stand-in libkvcuda.so:
 * build/tests/libkvcuda_mock.so exports kn_cuda_api_get like the real
 * library, so `KV_CUDA_LIB=build/tests/libkvcuda_mock.so kvrun ... --gpu 0`
 * drives the real binaries' --gpu wiring (loader, device probe,
 * eng_gpu_state, output) on a machine without a GPU; tests/test_cli.sh
 * compares its output with the CPU run. Never installed or loaded unless
 * KV_CUDA_LIB names it. */
#include "cuda_mock.h"

const kn_cuda_api *kn_cuda_api_get(void) { return cuda_mock_api(); }
