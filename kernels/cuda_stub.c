/* cuda_stub.c — linked instead of kernels/cuda/ when the build has no CUDA
 * (`make CUDA=0` or no nvcc): the device query answers "none" with a reason,
 * so CPU-only binaries and GPU tests (which print SKIP) behave the same way
 * as on a CUDA build without a device. */
#include "kn.h"

int kn_cuda_device_count(void) { return 0; }

const char *kn_cuda_unavailable_reason(void) { return "built without CUDA (CUDA=0 or no nvcc)"; }
