/* refine.c: group scales (and zeros) by least squares with the codes fixed
 * (quant.h's fs_refine_scales).  Per row, the dequant is w^ = Phi s with one
 * basis vector per group (sym: q - z on the group) or two (asym: q and 1,
 * the scale and offset), so the layer loss (w - w^)^T H (w - w^) is a small
 * quadratic in the group parameters, solved in double, then the scales
 * rounded onto the stored grid (Q8.8, F16 on top in gptq_v1 mode) and nudged
 * code by code while the quadratic loss drops.  Everything is written around
 * the old grid's residual e = w - w^_old (K = Phi^T H Phi, b = Phi^T H e,
 * c = e^T H e): w^T H w can be 10^7 times the loss when H has a dominant
 * direction, and c - 2 s.b + s^T K s would cancel away every digit.  A row
 * keeps its old grid unless the new one is strictly better, so no row gets
 * worse. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "src/quant/quant.h"
#include "src/quant/quant-math.h"

#define SLAB_ROWS 128               /* rows per Gram slab */
#define SLAB_K_DOUBLES (64 << 20)   /* bound on the slab's K matrices (512 MB) */

/* In-place Cholesky solve of A x = y (A [n, n] SPD, overwritten; y -> x).
 * A ridge of lam * mean(diag) is added; 0 if A is not positive definite. */
static int chol_solve(double *A, double *y, int64_t n, double lam)
{
    double md = 0.0;
    for (int64_t i = 0; i < n; i++) md += A[i * n + i];
    md = md > 0.0 ? md / (double)n : 1.0;
    for (int64_t i = 0; i < n; i++) A[i * n + i] += lam * md;
    for (int64_t j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int64_t k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0.0)) return 0;
        d = sqrt(d);
        A[j * n + j] = d;
        for (int64_t i = j + 1; i < n; i++) {
            double s = A[i * n + j];
            for (int64_t k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / d;
        }
    }
    for (int64_t i = 0; i < n; i++) {              /* L u = y */
        double s = y[i];
        for (int64_t k = 0; k < i; k++) s -= A[i * n + k] * y[k];
        y[i] = s / A[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; i--) {         /* L^T x = u */
        double s = y[i];
        for (int64_t k = i + 1; k < n; k++) s -= A[k * n + i] * y[k];
        y[i] = s / A[i * n + i];
    }
    return 1;
}

/* Solve with a growing ridge (1e-12 .. 1e-4 of the mean diagonal); 0 if all fail. */
static int solve_ridge(const double *A, const double *y, int64_t n, double *work, double *x)
{
    for (double lam = 1e-12; lam <= 1e-4; lam *= 100.0) {
        memcpy(work, A, sizeof(double) * (size_t)(n * n));
        memcpy(x, y, sizeof(double) * (size_t)n);
        if (chol_solve(work, x, n, lam)) {
            int ok = 1;
            for (int64_t i = 0; i < n; i++) ok &= isfinite(x[i]);
            if (ok) return 1;
        }
    }
    return 0;
}

/* The loss of parameters theta = theta_old + d in the residual form,
 * c - 2 d.b + d^T K d (c = e^T H e, b = Phi^T H e of the old residual e):
 * every term is of the loss's size, so nothing cancels. */
static double loss_d(const double *K, const double *b, double c, const double *d, int64_t n)
{
    double l = c;
    for (int64_t g = 0; g < n; g++) {
        double kd = 0.0;
        for (int64_t h = 0; h < n; h++) kd += K[g * n + h] * d[h];
        l += d[g] * (kd - 2.0 * b[g]);
    }
    return l;
}

static double scale_of(const fs_grid_params *gp, int32_t code)
{
    uint8_t m[4];
    float s, z;
    fs_qmeta_pack(m, (int16_t)code, 0, 0);
    fs_grid_unpack(gp, m, &s, &z);
    return s;
}

/* theta - theta_old for scales s and zeros z: sym theta = s; asym theta =
 * (s_g, -s_g z_g) per group (the scale and the offset of w^ = s q + o). */
static void delta_of(const double *s, const double *z, const double *th0, int64_t ng, int nbpg,
                     double *d)
{
    for (int64_t g = 0; g < ng; g++) {
        d[g * nbpg] = s[g] - th0[g * nbpg];
        if (nbpg == 2) d[2 * g + 1] = -s[g] * z[g] - th0[2 * g + 1];
    }
}

/* One row: K, b, c over nbpg bases per group (residual form); qm [ng, 4] in
 * and out.  scratch: 8 nb^2 + 16 nb doubles. */
static void refine_row(const fs_grid_params *gp, const double *K, const double *b, double c,
                       int64_t ng, int nbpg, uint8_t *qm, double *scratch, double *lb, double *la)
{
    const int64_t nb = ng * nbpg;
    double *Ka = scratch, *work = Ka + nb * nb, *ba = work + nb * nb, *x = ba + nb;
    double *s = x + nb, *th0 = s + nb, *zo = th0 + nb, *zn = zo + nb, *Ks = zn + nb, *d = Ks + nb;
    double *Kt = d + nb;
    int32_t *code = (int32_t *)(Kt + nb);
    const double zmin = gp->gptq_v1 ? 1.0 : 0.0;
    for (int64_t g = 0; g < ng; g++) {
        float sf, zf;
        fs_grid_unpack(gp, qm + 4 * g, &sf, &zf);
        zo[g] = zf;
        th0[g * nbpg] = sf;
        if (nbpg == 2) th0[2 * g + 1] = -(double)sf * zf;
        code[g] = (int16_t)(uint16_t)(qm[4 * g] | (qm[4 * g + 1] << 8));
    }
    *lb = *la = c;                               /* the old grid's loss: e^T H e itself */
    memcpy(zn, zo, sizeof(double) * (size_t)ng);
    if (nbpg == 2) {                      /* the joint scale-and-offset optimum gives the zeros */
        if (!solve_ridge(K, b, nb, work, x)) return;
        for (int64_t g = 0; g < ng; g++) {
            double sg = th0[2 * g] + x[2 * g], og = th0[2 * g + 1] + x[2 * g + 1];
            double z = sg > 0.0 ? rint(-og / sg) : zo[g];
            zn[g] = z < zmin ? zmin : (z > gp->maxq ? gp->maxq : z);
        }
    }
    /* scales for zeros zn: theta = T s, T s_g = (s_g, -zn_g s_g); minimise
     * |e + Phi theta_old - Phi T s|_H: (T^T K T) s = T^T (b + K theta_old) */
    for (int64_t j = 0; j < nb; j++) {
        double kt = 0.0;
        for (int64_t h = 0; h < nb; h++) kt += K[j * nb + h] * th0[h];
        Kt[j] = b[j] + kt;
    }
    for (int64_t g = 0; g < ng; g++) {
        for (int64_t h = 0; h < ng; h++) {
            if (nbpg == 1) { Ka[g * ng + h] = K[g * nb + h]; continue; }
            const double *r0 = K + (2 * g) * nb, *r1 = K + (2 * g + 1) * nb;
            Ka[g * ng + h] = r0[2 * h] - zn[h] * r0[2 * h + 1] - zn[g] * r1[2 * h] +
                             zn[g] * zn[h] * r1[2 * h + 1];
        }
        ba[g] = nbpg == 1 ? Kt[g] : Kt[2 * g] - zn[g] * Kt[2 * g + 1];
    }
    if (!solve_ridge(Ka, ba, ng, work, x)) return;
    for (int64_t g = 0; g < ng; g++) {
        if (x[g] > 0.0 && x[g] < 1e30) code[g] = fs_q88_encode((float)x[g]);
        s[g] = scale_of(gp, code[g]);
    }
    for (int64_t g = 0; g < ng; g++) {
        double ks = 0.0;
        for (int64_t h = 0; h < ng; h++) ks += Ka[g * ng + h] * s[h];
        Ks[g] = ks;
    }
    for (int pass = 0; pass < 2; pass++)      /* the grid's neighbours, one code at a time */
        for (int64_t g = 0; g < ng; g++)
            for (int dir = -1; dir <= 1; dir += 2)
                for (int step = 0; step < 4; step++) {
                    int32_t cn = code[g] + dir;
                    if (cn < -32768 || cn > 32767) break;
                    double dd = scale_of(gp, cn) - s[g];
                    if (!(dd * (2.0 * (Ks[g] - ba[g]) + dd * Ka[g * ng + g]) < 0.0)) break;
                    for (int64_t h = 0; h < ng; h++) Ks[h] += dd * Ka[h * ng + g];
                    s[g] += dd;
                    code[g] = cn;
                }
    for (int64_t g = 0; g < ng; g++) s[g] = scale_of(gp, code[g]);
    delta_of(s, zn, th0, ng, nbpg, d);
    const double lnew = loss_d(K, b, c, d, nb);
    if (!(lnew < c)) return;
    *la = lnew;
    for (int64_t g = 0; g < ng; g++)
        fs_qmeta_pack(qm + 4 * g, (int16_t)code[g], (uint8_t)zn[g], gp->sym ? FS_QMETA_SYM : 0);
}

fs_status fs_refine_scales(fs_ctx *ctx, const fs_grid_params *gp, const float *H, const float *W,
                           const uint8_t *codes, int64_t rows, int64_t cols, int64_t gw,
                           uint8_t *qmeta, double *lbefore, double *lafter)
{
    const int64_t ng = (cols + gw - 1) / gw;
    const int nbpg = gp->sym ? 1 : 2;
    const int64_t nb = ng * nbpg;
    int64_t slab = SLAB_ROWS;
    while (slab > 1 && slab * nb * nb > SLAB_K_DOUBLES) slab /= 2;
    if (slab > rows) slab = rows;
    const size_t cc = (size_t)cols * (size_t)cols, sc = (size_t)slab * (size_t)cols;
    const int nthr = omp_get_max_threads();
    const size_t per_thr = (size_t)(8 * nb * nb + 16 * nb);
    double *Hd = fs_alloc2(cc, sizeof(double)), *Wd = fs_alloc2(sc, sizeof(double));
    double *Phi = fs_alloc2(sc * (size_t)nbpg, sizeof(double)), *Y = fs_alloc2(sc, sizeof(double));
    double *K = fs_alloc2((size_t)slab * (size_t)(nb * nb), sizeof(double));
    double *bb = fs_alloc2((size_t)slab * (size_t)nb, sizeof(double));
    double *c = fs_alloc2((size_t)slab, sizeof(double)), *lx = fs_alloc2((size_t)slab, sizeof(double));
    uint8_t *qc = fs_alloc2((size_t)slab * (size_t)ng, 4);
    double *scr = fs_alloc2((size_t)nthr * per_thr, sizeof(double));
    fs_status rc = FS_OK;
    if (!Hd || !Wd || !Phi || !Y || !K || !bb || !c || !lx || !qc || !scr) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "refine scales: %lld x %lld, %lld groups", (long long)rows,
                        (long long)cols, (long long)ng);
        goto out;
    }
    for (size_t i = 0; i < cc; i++) Hd[i] = H[i];
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
        const int64_t nr = rows - r0 < slab ? rows - r0 : slab;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nr; r++)
            for (int64_t d = 0; d < cols; d++) {
                const size_t i = (size_t)(r * cols + d), src = (size_t)(r0 + r) * (size_t)cols + (size_t)d;
                float s, z;
                fs_grid_unpack(gp, qmeta + ((r0 + r) * ng + d / gw) * 4, &s, &z);
                /* the residual of the dequant as stored (float): c is then the true loss */
                Wd[i] = (double)W[src] - (double)fs_qm_dequant((float)codes[src], s, z);
                if (nbpg == 1) {
                    Phi[i] = (double)codes[src] - (double)z;
                } else {
                    Phi[i] = codes[src];
                    Phi[(size_t)nr * (size_t)cols + i] = 1.0;     /* the plane of this slab */
                }
            }
        fs_cpu_group_gram(Hd, Wd, Phi, nbpg, nr, cols, gw, Y, K, bb, c);
        memcpy(qc, qmeta + r0 * ng * 4, (size_t)(nr * ng * 4));
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nr; r++) {
            double lb, la;
            refine_row(gp, K + (size_t)r * (size_t)(nb * nb), bb + r * nb, c[r], ng, nbpg, qc + r * ng * 4,
                       scr + (size_t)omp_get_thread_num() * per_thr, &lb, &la);
        }
        /* the candidates' true losses, from their float dequant: a grid goes in
         * only if it beats the old one there too */
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nr; r++)
            for (int64_t d = 0; d < cols; d++) {
                const size_t src = (size_t)(r0 + r) * (size_t)cols + (size_t)d;
                float s, z;
                fs_grid_unpack(gp, qc + (r * ng + d / gw) * 4, &s, &z);
                Wd[r * cols + d] = (double)W[src] - (double)fs_qm_dequant((float)codes[src], s, z);
            }
        fs_cpu_row_losses(Hd, Wd, nr, cols, Y, lx);
        for (int64_t r = 0; r < nr; r++) {
            const int take = lx[r] < c[r];
            if (take) memcpy(qmeta + (r0 + r) * ng * 4, qc + r * ng * 4, (size_t)ng * 4);
            if (lbefore) lbefore[r0 + r] = c[r];
            if (lafter) lafter[r0 + r] = take ? lx[r] : c[r];
        }
    }
out:
    free(Hd); free(Wd); free(Phi); free(Y); free(K); free(bb); free(c); free(lx); free(qc); free(scr);
    return rc;
}
