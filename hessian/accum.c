/* accum.c: streaming Hessian accumulation on the CPU: H += X^T X per chunk
 * with BLAS ssyrk (upper triangle, f32), mirrored when read out.  Never makes
 * a full copy of the inputs. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

typedef struct hess_cpu {
    int64_t in;
    float *H;    /* [in, in], upper triangle valid */
} hess_cpu;

fs_status fs_hess_cpu_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state)
{
    (void)be;
    hess_cpu *h = calloc(1, sizeof *h);
    if (h) h->H = calloc((size_t)in * (size_t)in, sizeof(float));
    if (!h || !h->H) {
        if (h) free(h);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "hessian: %lld x %lld", (long long)in,
                          (long long)in);
    }
    h->in = in;
    *state = h;
    return FS_OK;
}

fs_status fs_hess_cpu_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x,
                          int64_t rows)
{
    (void)ctx; (void)be;
    hess_cpu *h = state;
    if (rows > 0)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)h->in, (int)rows, 1.0f, x,
                    (int)h->in, 1.0f, h->H, (int)h->in);
    return FS_OK;
}

fs_status fs_hess_cpu_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    (void)ctx; (void)be;
    hess_cpu *h = state;
    const int64_t n = h->in;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            H[i * n + j] = j >= i ? h->H[i * n + j] : h->H[j * n + i];
    return FS_OK;
}

void fs_hess_cpu_free(fs_backend *be, void *state)
{
    (void)be;
    hess_cpu *h = state;
    if (!h) return;
    free(h->H);
    free(h);
}

fs_status fs_hess_from_inputs(fs_ctx *ctx, fs_backend *be, const float *X, int64_t n,
                              int64_t in, int64_t chunk, float *H)
{
    void *st = NULL;
    fs_status rc = fs_be_hess_new(ctx, be, in, &st);
    for (int64_t r = 0; rc == FS_OK && r < n; r += chunk)
        rc = fs_be_hess_add(ctx, be, st, X + r * in, n - r < chunk ? n - r : chunk);
    if (rc == FS_OK) rc = fs_be_hess_get(ctx, be, st, H);
    fs_be_hess_free(be, st);
    return rc;
}
