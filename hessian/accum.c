/* accum.c: streaming Hessian accumulation on the CPU: H += X^T X per chunk
 * with BLAS ssyrk (upper triangle, f32), mirrored when read out.  Never makes
 * a full copy of the inputs. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "hessian/hessian.h"

typedef struct hess_cpu {
    int64_t in;
    float *H;    /* [in, in], upper triangle valid */
} hess_cpu;

fs_status fs_hess_cpu_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state)
{
    (void)be;
    hess_cpu *h = calloc(1, sizeof *h);
    /* zeroed here rather than by calloc's lazy zero pages, so the page faults
     * are not taken inside the first ssyrk (which runs them on every thread) */
    if (h) h->H = fs_alloc2((size_t)in * (size_t)in, sizeof(float));
    if (h && h->H) memset(h->H, 0, (size_t)in * (size_t)in * sizeof(float));
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
    const int64_t n = h->in, B = 64;   /* tiles keep the transposed reads in cache */
    for (int64_t i0 = 0; i0 < n; i0 += B)
        for (int64_t j0 = 0; j0 < n; j0 += B) {
            int64_t i1 = i0 + B < n ? i0 + B : n, j1 = j0 + B < n ? j0 + B : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    H[i * n + j] = j >= i ? h->H[i * n + j] : h->H[j * n + i];
        }
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
