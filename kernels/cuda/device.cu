/* device.cu — device discovery for the CUDA build. The runtime is linked
 * statically (libcudart_static), so a CUDA build still starts on machines
 * without a driver: cudaGetDeviceCount then fails and we report 0 devices
 * with the runtime's reason instead of crashing. */
extern "C" {
#include "kn.h"
}
#include <cuda_runtime.h>
#include <stdio.h>

static char g_reason[160] = "no CUDA device";

extern "C" int kn_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        cudaGetLastError();  /* clear the sticky-free error state */
        return 0;
    }
    if (n == 0) snprintf(g_reason, sizeof g_reason, "CUDA runtime reports 0 devices");
    return n;
}

extern "C" const char *kn_cuda_unavailable_reason(void) { return g_reason; }
