/* registry.c: the one place that knows every backend: opens the one asked
 * for (cpu, cpu-async, cuda, or auto with CUDA's start-up self-test) and says
 * what the build and the machine have.  Kept apart from backend.c, the
 * dispatcher, so the backends depend on the dispatcher and only this file
 * depends on them.
 *
 * A CUDA backend is handed out only after its start-up self-test
 * (selftest.c) passed: `auto` falls back to cpu saying why in one log line;
 * `cuda` without a usable device is FS_ERR_NODEV (exit 2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend-impl.h"

int fs_backend_cuda_devices(void)
{
#ifdef FS_HAVE_CUDA
    return fs_cuda_device_count();
#else
    return 0;
#endif
}

void fs_backend_cuda_summary(char *buf, size_t n)
{
#ifdef FS_HAVE_CUDA
    fs_cuda_describe(buf, n);
#else
    snprintf(buf, n, "cuda: not in this build");
#endif
}

static fs_status finish_open(fs_ctx *ctx, fs_backend_kind kind, const fs_backend_opts *opts, fs_backend *be,
                             fs_backend **out)
{
    be->kind = kind;
    be->budget = opts ? opts->mem_budget : 0;
    be->used = be->peak = 0;
    if (pthread_mutex_init(&be->mu, NULL) != 0) {
        be->iface.free(be);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "backend: mutex");
    }
    *out = be;
    return FS_OK;
}

#ifdef FS_HAVE_CUDA
/* The CUDA backend, trusted only after the self-test (selftest.c); its
 * buffers do not count in the peak the caller sees. */
static fs_status open_cuda(fs_ctx *ctx, const fs_backend_opts *opts, fs_backend **out)
{
    fs_backend *be = NULL;
    fs_status rc = fs_backend_cuda_new(ctx, &be);
    if (rc == FS_OK) rc = finish_open(ctx, FS_BE_CUDA, opts, be, &be);
    if (rc != FS_OK) return rc;
    const double t0 = fs_now();
    fs_backend *ref = NULL;
    if ((rc = fs_backend_open(ctx, FS_BE_CPU, NULL, &ref)) == FS_OK) rc = fs_backend_selftest(ctx, be, ref);
    fs_backend_free(ref);
    if (rc != FS_OK) {
        fs_backend_free(be);
        return rc;
    }
    be->peak = be->used;
    fs_log(ctx, "backend cuda: start-up self-test passed in %.0f ms", (fs_now() - t0) * 1e3);
    *out = be;
    return FS_OK;
}
#endif

fs_status fs_backend_open(fs_ctx *ctx, fs_backend_kind kind, const fs_backend_opts *opts, fs_backend **out)
{
    fs_backend *be = NULL;
    fs_status rc;
    *out = NULL;
    if (kind == FS_BE_CPU_ASYNC) {
        if ((rc = fs_backend_cpu_async_new(ctx, opts, &be)) != FS_OK) return rc;
        return finish_open(ctx, kind, opts, be, out);
    }
    if (kind != FS_BE_CPU) {
#ifdef FS_HAVE_CUDA
        if (fs_cuda_device_count() > 0) {
            fs_ctx why;
            fs_ctx_init(&why);
            why.quiet = 1;
            if (open_cuda(&why, opts, out) == FS_OK) return FS_OK;
            if (kind == FS_BE_CUDA)             /* a device that fails its self-test is no device to use */
                return fs_ctx_err(ctx, FS_ERR_NODEV, "--backend cuda: the device is not usable: %s", why.errmsg);
            fs_log(ctx, "backend auto: using cpu: the CUDA device is not usable: %s", why.errmsg);
        } else {
            char line[256];
            fs_cuda_describe(line, sizeof line);
            const char *d = strncmp(line, "cuda: ", 6) == 0 ? line + 6 : line;
            if (kind == FS_BE_CUDA)
                return fs_ctx_err(ctx, FS_ERR_NODEV, "--backend cuda: no usable CUDA device (%s)", d);
            fs_log(ctx, "backend auto: using cpu: no usable CUDA device (%s)", d);
        }
#else
        if (kind == FS_BE_CUDA)
            return fs_ctx_err(ctx, FS_ERR_NODEV,
                              "--backend cuda: this build has no CUDA support (nvcc was not found "
                              "at build time; rebuild with CUDA=1)");
#endif
    }
    if ((rc = fs_backend_cpu_new(ctx, opts, &be)) != FS_OK) return rc;
    return finish_open(ctx, FS_BE_CPU, opts, be, out);
}
