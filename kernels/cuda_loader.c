/* cuda_loader.c — finds and loads libkvcuda.so at run time (always built;
 * CPU binaries decide at run time, not at link time, whether CUDA exists).
 *
 * Why dlopen: the CPU binaries must start, and run --cpu, on machines with
 * no CUDA libraries at all, so nothing here links against cudart or cuBLAS.
 * The first call to kn_cuda_load() (or kn_cuda_device_count()) dlopen()s the
 * library — $KV_CUDA_LIB if set (and only that), else libkvcuda.so next to
 * the executable, else in its parent directory (tests run from build/tests/),
 * else the plain soname through the dynamic linker's search path — and takes
 * its one exported symbol, kn_cuda_api_get. A library that is present but
 * fails to load (missing libcublas, say) is reported as such rather than
 * hidden behind a later "not found". In a CUDA=0 build (KN_CUDA 0) nothing
 * is attempted and the reason is "built without CUDA". The handle is never
 * closed: the table points into the library. */
#include "kn_cuda.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef KN_CUDA
#define KN_CUDA 0
#endif

#define KN_CUDA_SONAME "libkvcuda.so"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const kn_cuda_api *g_api;
static char g_reason[768] = "CUDA backend not probed";

#if KN_CUDA
/* dlopen(path); on failure keeps dlerror() in err. */
static void *open_lib(const char *path, char *err, size_t n_err) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(err, n_err, "%.480s", e ? e : "dlopen failed");
    }
    return h;
}

/* The executable's directory into dir (no trailing slash); 0 on failure. */
static int exe_dir(char *dir, size_t n) {
    char buf[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (len <= 0) return 0;
    buf[len] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return 0;
    *slash = 0;
    return snprintf(dir, n, "%s", buf) < (int)n;
}

static void *find_lib(void) {
    char err[512] = "";
    const char *env = getenv("KV_CUDA_LIB");
    if (env && *env) {
        void *h = open_lib(env, err, sizeof err);
        if (!h) snprintf(g_reason, sizeof g_reason, "%s not found: %s (KV_CUDA_LIB)", KN_CUDA_SONAME, err);
        return h;
    }
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (exe_dir(dir, sizeof dir)) {
        const char *rel[] = {"/" KN_CUDA_SONAME, "/../" KN_CUDA_SONAME};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            snprintf(path, sizeof path, "%s%s", dir, rel[i]);
            if (access(path, F_OK) != 0) continue;
            void *h = open_lib(path, err, sizeof err);
            if (!h) snprintf(g_reason, sizeof g_reason, "%s not loadable: %s", KN_CUDA_SONAME, err);
            return h;   // present: its own error is the one worth reporting
        }
    }
    void *h = open_lib(KN_CUDA_SONAME, err, sizeof err);
    if (!h) snprintf(g_reason, sizeof g_reason, "%s not found: %s", KN_CUDA_SONAME, err);
    return h;
}
#endif

static void load_once(void) {
#if !KN_CUDA
    snprintf(g_reason, sizeof g_reason, "built without CUDA (CUDA=0 or no nvcc)");
#else
    void *h = find_lib();
    if (!h) return;
    kn_cuda_api_get_fn get;
    void *sym = dlsym(h, "kn_cuda_api_get");
    memcpy(&get, &sym, sizeof get);   // object -> function pointer, the POSIX way
    if (!sym) {
        snprintf(g_reason, sizeof g_reason, "%s has no kn_cuda_api_get", KN_CUDA_SONAME);
        dlclose(h);
        return;
    }
    const kn_cuda_api *api = get();
    if (!api || api->abi != KN_CUDA_ABI || api->size != sizeof *api) {
        snprintf(g_reason, sizeof g_reason, "%s ABI mismatch (library %u/%u bytes, loader %u/%zu bytes): rebuild",
                 KN_CUDA_SONAME, api ? api->abi : 0u, api ? api->size : 0u, (unsigned)KN_CUDA_ABI, sizeof *api);
        dlclose(h);
        return;
    }
    g_api = api;
    snprintf(g_reason, sizeof g_reason, "no CUDA device");
#endif
}

const kn_cuda_api *kn_cuda_load(void) {
    pthread_once(&g_once, load_once);
    return g_api;
}

int kn_cuda_device_count(void) {
    const kn_cuda_api *api = kn_cuda_load();
    if (!api) return 0;
    char why[512] = "CUDA runtime reports 0 devices";
    int n = api->device_count(why, sizeof why);
    if (n > 0) return n;
    snprintf(g_reason, sizeof g_reason, "%s", why);
    return 0;
}

const char *kn_cuda_unavailable_reason(void) {
    pthread_once(&g_once, load_once);
    return g_reason;
}
