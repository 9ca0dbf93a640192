/* hessian.c: Hessian accumulation on the CPU: H += X^T X with BLAS ssyrk on
 * the upper triangle (f32), mirrored when read out; the v1 state slots, the
 * ops (one sum, its finish, a wave of expert sums from row lists) and the
 * damping.  Never makes a full copy of the inputs.
 *
 * Invariants:
 *  1. One accumulation call is one ssyrk of all its rows: a caller that gives
 *     the chunks of before gets the bytes of before (v1 and ops alike).
 *  2. The finish writes only the lower triangle, which ssyrk never reads: a
 *     sum stays valid for more accumulation after it.
 *  3. Damping: mean(diag) summed in double in index order, the added value
 *     rounded to float once (specifications.md §4.2 step 3).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

void fs_cpu_ssyrk_upper(float *H, int64_t ldh, int64_t in, const float *X, int64_t ldx, int64_t rows)
{
    if (rows > 0 && in > 0)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)in, (int)rows, 1.0f, X, (int)ldx, 1.0f, H,
                    (int)ldh);
}

void fs_cpu_dsyrk_upper(double *H, int64_t in, const double *X, int64_t rows)
{
    if (rows > 0 && in > 0)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)in, (int)rows, 1.0, X, (int)in, 1.0, H, (int)in);
}

/* Lower triangle of H [n, n] (ld ldh) from its upper one, or into out (ld
 * ldo) as the full matrix; tiles keep the transposed reads in cache. */
static void mirror(const float *H, int64_t ldh, int64_t n, float *out, int64_t ldo)
{
    const int64_t B = 64;
    for (int64_t i0 = 0; i0 < n; i0 += B)
        for (int64_t j0 = 0; j0 < n; j0 += B) {
            int64_t i1 = i0 + B < n ? i0 + B : n, j1 = j0 + B < n ? j0 + B : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    if (out != H || j < i) out[i * ldo + j] = j >= i ? H[i * ldh + j] : H[j * ldh + i];
        }
}

/* ---- v1 state slots ---------------------------------------------------------------- */

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
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "hessian: %lld x %lld", (long long)in, (long long)in);
    }
    h->in = in;
    *state = h;
    return FS_OK;
}

fs_status fs_hess_cpu_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x, int64_t rows)
{
    (void)ctx; (void)be;
    hess_cpu *h = state;
    fs_cpu_ssyrk_upper(h->H, h->in, h->in, x, h->in, rows);
    return FS_OK;
}

fs_status fs_hess_cpu_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    (void)ctx; (void)be;
    hess_cpu *h = state;
    mirror(h->H, h->in, h->in, H, h->in);
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

/* ---- ops ----------------------------------------------------------------------------- */

fs_status fs_cpu_op_hess_acc(fs_ctx *ctx, const fs_hess_acc_args *a)
{
    (void)ctx;
    if (a->X.rows > 0)
        fs_cpu_ssyrk_upper(FS_CPU_F32(a->H), a->H.ld, a->H.cols, FS_CPU_F32(a->X), a->X.ld, a->X.rows);
    return FS_OK;
}

fs_status fs_cpu_op_hess_finish(fs_ctx *ctx, const fs_hess_finish_args *a)
{
    (void)ctx;
    const int64_t n = a->H.cols;
    for (int64_t m = 0; m < a->count; m++) {
        float *H = (float *)fs_cpu_at(&a->H, m * n, 0);
        mirror(H, a->H.ld, n, H, a->H.ld);
    }
    return FS_OK;
}

fs_status fs_cpu_op_hess_wave(fs_ctx *ctx, const fs_hess_wave_args *a)
{
    const int32_t *offs = (const int32_t *)fs_cpu_at(&a->offs, 0, 0), *rows = (const int32_t *)fs_cpu_at(&a->rows, 0, 0);
    const int64_t in = a->X.cols, n = a->X.rows;
    float *xg = NULL;
    int64_t cap = 0;
    fs_status rc = FS_OK;
    for (int64_t e = a->e0; rc == FS_OK && e < a->e0 + a->ne; e++) {
        const int64_t r0 = offs[e], r1 = offs[e + 1];
        if (r0 < 0 || r1 < r0 || r1 > a->rows.cols) {
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "hess_wave: expert %lld's rows [%lld, %lld) are outside the %lld "
                            "of the row list", (long long)e, (long long)r0, (long long)r1, (long long)a->rows.cols);
            break;
        }
        const int64_t nr = r1 - r0;
        if (nr == 0) continue;
        if (nr > cap) {
            free(xg);
            cap = nr;
            xg = fs_alloc2((size_t)cap, (size_t)(in ? in : 1) * sizeof(float));
            if (!xg) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "hess_wave: %lld rows of %lld", (long long)nr, (long long)in); break; }
        }
        for (int64_t r = 0; r < nr; r++) {
            const int64_t t = rows[r0 + r];
            if (t < 0 || t >= n) {
                rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "hess_wave: expert %lld: row %lld at list entry %lld is outside "
                                "X's %lld rows", (long long)e, (long long)t, (long long)(r0 + r), (long long)n);
                break;
            }
            memcpy(xg + r * in, fs_cpu_at(&a->X, t, 0), sizeof(float) * (size_t)in);
        }
        if (rc == FS_OK)
            fs_cpu_ssyrk_upper((float *)fs_cpu_at(&a->H, (e - a->e0) * in, 0), a->H.ld, in, xg, in, nr);
    }
    free(xg);
    return rc;
}

fs_status fs_cpu_op_damp(fs_ctx *ctx, const fs_damp_args *a)
{
    (void)ctx;
    const int64_t n = a->src.cols;
    for (int64_t m = 0; m < a->count; m++) {
        double mean = 0.0;
        for (int64_t i = 0; i < n; i++) mean += *(const float *)fs_cpu_at(&a->src, m * n + i, i);
        mean /= (double)n;
        const float add = (float)(a->damp * mean);
        for (int64_t i = 0; i < n; i++) {
            const float *s = (const float *)fs_cpu_at(&a->src, m * n + i, 0);
            float *d = (float *)fs_cpu_at(&a->dst, m * n + i, 0);
            if (d != s) memcpy(d, s, sizeof(float) * (size_t)n);
            d[i] += add;
        }
    }
    return FS_OK;
}
