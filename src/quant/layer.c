/* layer.c: one linear layer through the engine: dead columns, act-order,
 * damped inversion with retries, grids, the GPTQ solve (or RTN), the loss and
 * the RTN baseline.  Backend-neutral: heavy steps go through fs_be_*.
 *
 * Column orders: the solver works in processing order k (perm[k] is the
 * original column); everything returned is in original column order, and
 * qmeta's group axis is the processing order for dynamic act-order groups
 * (column perm[k] is in group k / G), the original order otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend.h"
#include "hessian/hessian.h"
#include "src/quant/quant-math.h"

#define FS_MAX_RETRIES 3    /* damping x10 retries before falling back to RTN */

double fs_frob_loss(const float *W, const float *D, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)W[i] - (double)D[i];
        s += e * e;
    }
    return s;
}

void fs_layer_result_free(fs_layer_result *res)
{
    free(res->qweight);
    free(res->qmeta);
    free(res->perm);
    free(res->dequant);
    memset(res, 0, sizeof *res);
}

static fs_status loss_of(fs_ctx *ctx, const fs_quant_opts *q, const float *W, const float *D,
                         const float *H, const double *H64, int64_t rows, int64_t cols, double *out)
{
    if (q->loss_f32 && !H64) return fs_quad_loss_est(ctx, W, D, H, rows, cols, out);
    return fs_quad_loss(ctx, W, D, H, H64, rows, cols, out);
}

/* Columns by descending diag(H), ties by index (a stable order), via qsort
 * of (value, index) keys. */
typedef struct dkey { float d; int32_t i; } dkey;

static int by_diag(const void *a, const void *b)
{
    const dkey *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static fs_status act_order_perm(fs_ctx *ctx, const float *H, int64_t n, int32_t *perm)
{
    dkey *k = fs_alloc2((size_t)n, sizeof *k);
    if (!k) return fs_ctx_err(ctx, FS_ERR_NOMEM, "act-order of %lld columns", (long long)n);
    for (int64_t i = 0; i < n; i++) k[i] = (dkey){H[i * n + i], (int32_t)i};
    qsort(k, (size_t)n, sizeof *k, by_diag);
    for (int64_t i = 0; i < n; i++) perm[i] = k[i].i;
    free(k);
    return FS_OK;
}

/* Round to nearest with grids from W itself: codes, qmeta and dequant. */
static fs_status rtn(fs_ctx *ctx, const fs_grid_params *gp, const float *W, int64_t rows,
                     int64_t cols, int64_t gw, uint8_t *codes, uint8_t *qmeta, float *D)
{
    fs_status rc = fs_be_grid(ctx, ctx->be, gp, W, rows, cols, gw, qmeta);
    if (rc != FS_OK) return rc;
    const int64_t ng = (cols + gw - 1) / gw;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float s, z;
            fs_grid_unpack(gp, qmeta + (r * ng + c / gw) * 4, &s, &z);
            float q = fs_quant1(W[r * cols + c], s, z, gp->maxq);
            codes[r * cols + c] = (uint8_t)q;
            D[r * cols + c] = (q - z) * s;
        }
    return FS_OK;
}

/* Rounds of least-squares scale refinement (fs_refine_scales) on the solved
 * codes, codes0 [rows, cols] in processing order, qmeta in and out; the
 * rounds after the first re-run GPTQ with the current grids held fixed
 * (static-group mode) from the solver's input W0, then refine again, and
 * each row keeps the codes and grid of its lowest loss so far.  Groups must
 * be contiguous for the least squares: in processing order with dynamic
 * act-order groups, in the original order otherwise (orig[k] = original
 * column of group-order column k, pinv = processing index of an original
 * column; gcol = group of each processing column for the re-runs). */
typedef struct refine_in {
    const fs_grid_params *gp;
    const float *H, *W, *W0, *U;
    int64_t rows, cols, gw, ng;
    const int32_t *perm, *pinv, *gcol;
    int dyn_act, rounds, block;
} refine_in;

static fs_status refine_rounds(fs_ctx *ctx, const refine_in *in, uint8_t *codes0, uint8_t *qmeta,
                               int *rounds_run, double *solve_loss)
{
    const int64_t R = in->rows, C = in->cols, ng = in->ng;
    const size_t rc_n = (size_t)R * (size_t)C, qm_n = (size_t)R * (size_t)ng * 4;
    const int reorder = !in->dyn_act && in->perm;    /* group order = original, != processing */
    const int gperm = in->dyn_act && in->perm;       /* group order = processing, != original */
    fs_status rc = FS_OK;
    float *Hg = NULL, *Wg = NULL, *Wt = NULL;
    uint8_t *cg = NULL, *ct = NULL, *qt = NULL;
    double *lb = fs_alloc2((size_t)R, sizeof(double)), *la = fs_alloc2((size_t)R, sizeof(double));
    double *best = fs_alloc2((size_t)R, sizeof(double));
    if (gperm) {
        Hg = fs_alloc2((size_t)C * (size_t)C, sizeof(float));
        Wg = fs_alloc2(rc_n, sizeof(float));
    }
    cg = reorder ? fs_alloc2(rc_n, 1) : NULL;
    if (in->rounds > 1) {
        Wt = fs_alloc2(rc_n, sizeof(float));
        ct = fs_alloc2(rc_n, 1);
        qt = fs_alloc2(qm_n, 1);
    }
    if (!lb || !la || !best || (gperm && (!Hg || !Wg)) || (reorder && !cg) ||
        (in->rounds > 1 && (!Wt || !ct || !qt))) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "refine scales: buffers for %lld x %lld", (long long)R, (long long)C);
        goto out;
    }
    if (gperm) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < C; i++)
            for (int64_t j = 0; j < C; j++) Hg[i * C + j] = in->H[(int64_t)in->perm[i] * C + in->perm[j]];
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++)
            for (int64_t k = 0; k < C; k++) Wg[r * C + k] = in->W[r * C + in->perm[k]];
    }
    const float *H = gperm ? Hg : in->H, *W = gperm ? Wg : in->W;
    *rounds_run = 0;
    for (int round = 0; round < in->rounds; round++) {
        uint8_t *c = round == 0 ? codes0 : ct, *q = round == 0 ? qmeta : qt;
        if (round > 0) {                            /* codes again, on the refined grids */
            memcpy(Wt, in->W0, rc_n * sizeof(float));
            memcpy(qt, qmeta, qm_n);
            fs_gptq_job job = {
                .rows = R, .cols = C, .W = Wt, .U = in->U, .codes = ct, .qmeta = qt, .ngroups = ng,
                .gw = in->gw, .gcol = in->gcol, .block = in->block, .gp = in->gp,
            };
            if ((rc = fs_be_gptq(ctx, ctx->be, &job)) != FS_OK) goto out;
        }
        const uint8_t *cin = c;
        if (reorder) {
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < C; j++) cg[r * C + j] = c[r * C + in->pinv[j]];
            cin = cg;
        }
        rc = fs_refine_scales(ctx, in->gp, H, W, cin, R, C, in->gw, q, lb, la);
        if (rc != FS_OK) goto out;
        *rounds_run = round + 1;
        if (round == 0) {
            memcpy(best, la, sizeof(double) * (size_t)R);
            *solve_loss = 0.0;
            for (int64_t r = 0; r < R; r++) *solve_loss += lb[r];
            continue;
        }
        int64_t better = 0;
        for (int64_t r = 0; r < R; r++)
            if (la[r] < best[r]) {                  /* this row's new codes and grid */
                best[r] = la[r];
                memcpy(codes0 + r * C, ct + r * C, (size_t)C);
                memcpy(qmeta + r * ng * 4, qt + r * ng * 4, (size_t)ng * 4);
                better++;
            }
        if (!better) break;
    }
out:
    free(Hg); free(Wg); free(Wt); free(cg); free(ct); free(qt); free(lb); free(la); free(best);
    return rc;
}

fs_status fs_layer_quantize(fs_ctx *ctx, const float *W, const float *H, const double *H64,
                            int64_t rows, int64_t cols, const fs_quant_opts *q,
                            fs_layer_result *res)
{
    fs_status rc;
    const size_t rc_n = (size_t)rows * (size_t)cols, cc_n = (size_t)cols * (size_t)cols;
    const int64_t gw = fs_group_width(cols, q->group_size), ng = fs_ngroups(cols, q->group_size);
    fs_grid_params gp = {0};
    memset(res, 0, sizeof *res);
    res->rows = rows;
    res->cols = cols;
    res->ngroups = ng;

    if ((rc = fs_check_finite(ctx, "weight", W, rc_n)) != FS_OK) return rc;
    if (!H && !q->rtn)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "layer: GPTQ needs a Hessian (only RTN runs without one)");
    if (H && (rc = fs_check_finite(ctx, "hessian", H, cc_n)) != FS_OK) return rc;
    if ((rc = fs_grid_params_init(ctx, &gp, q)) != FS_OK) return rc;

    /* the solver's, after the RTN baseline; W0: its input, kept for refinement's re-runs */
    float *Hw = NULL, *U = NULL, *Ww = NULL, *Wp = NULL, *W0 = NULL;
    float *colw = NULL, *hw_p = NULL;     /* HMSE column weights: original, processing order */
    uint8_t *codes = fs_alloc2(rc_n, 1);
    int32_t *perm = fs_alloc2((size_t)cols, sizeof(int32_t)), *gcol = NULL;
    res->qweight = fs_alloc2(rc_n, 1);
    res->qmeta = fs_alloc2((size_t)rows * (size_t)ng, 4);
    res->dequant = fs_alloc2(rc_n, sizeof(float));
    if (!codes || !perm || !res->qweight || !res->qmeta || !res->dequant) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "layer %lld x %lld: work buffers", (long long)rows,
                        (long long)cols);
        goto out;
    }

    if (q->grid == FS_GRID_HMSE && H) {
        colw = fs_alloc2((size_t)cols, sizeof(float));
        if (!colw) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "hmse weights"); goto out; }
        for (int64_t i = 0; i < cols; i++) colw[i] = H[i * cols + i];   /* the baseline's: diag(H) */
        gp.colw = colw;
    }

    /* RTN baseline: grids from the original weights, no feedback */
    double tg = fs_now();
    rc = rtn(ctx, &gp, W, rows, cols, gw, codes, res->qmeta, res->dequant);
    res->grid_s = fs_now() - tg;
    if (rc == FS_OK && H) rc = loss_of(ctx, q, W, res->dequant, H, H64, rows, cols, &res->rtn_loss);
    if (rc == FS_OK && !H) res->rtn_loss = fs_frob_loss(W, res->dequant, rc_n);
    if (rc != FS_OK) goto out;
    if (q->rtn) {
        memcpy(res->qweight, codes, rc_n);
        res->loss = res->rtn_loss;
        goto out;
    }

    Hw = fs_alloc2(cc_n, sizeof(float));
    U = fs_alloc2(cc_n, sizeof(float));
    Ww = fs_alloc2(rc_n, sizeof(float));
    Wp = fs_alloc2(rc_n, sizeof(float));
    if (!Hw || !U || !Ww || !Wp) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "layer %lld x %lld: solver buffers", (long long)rows, (long long)cols);
        goto out;
    }
    double t0 = fs_now();
    memcpy(Hw, H, cc_n * sizeof(float));
    memcpy(Ww, W, rc_n * sizeof(float));
    res->dead_cols = (int)fs_hess_dead_fix(Hw, Ww, rows, cols);
    if (q->act_order) {
        if ((rc = act_order_perm(ctx, Hw, cols, perm)) != FS_OK) goto out;
    } else {
        for (int64_t i = 0; i < cols; i++) perm[i] = (int32_t)i;
    }

    /* permute into processing order (act-order only: otherwise the order is the
     * identity and Hw already is H in it) */
    if (q->act_order) {                               /* (copies only: any thread split gives the same bytes) */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < cols; i++)            /* U holds the permuted H until inverted */
            for (int64_t j = 0; j < cols; j++) U[i * cols + j] = Hw[(int64_t)perm[i] * cols + perm[j]];
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < cols; k++) Wp[r * cols + k] = Ww[r * cols + perm[k]];
        memcpy(Hw, U, cc_n * sizeof(float));
    } else {
        memcpy(Wp, Ww, rc_n * sizeof(float));
    }

    double tc = fs_now();
    rc = fs_hess_invert(ctx, ctx->be, Hw, cols, q->damp, FS_MAX_RETRIES, U, &res->damp_used,
                        &res->retries);
    res->chol_s = fs_now() - tc;
    if (rc == FS_ERR_NUMERIC) {
        fs_log(ctx, "warning: %s after %d retries (damp %g): falling back to RTN",
               ctx->errmsg, res->retries, res->damp_used);
        fs_ctx_clear(ctx);
        res->fallback_rtn = 1;
        rc = rtn(ctx, &gp, W, rows, cols, gw, res->qweight, res->qmeta, res->dequant);
        res->loss = res->rtn_loss;
        if (q->act_order && rc == FS_OK) {      /* RTN ignores act-order: identity perm */
            res->perm = perm;
            for (int64_t i = 0; i < cols; i++) perm[i] = (int32_t)i;
            perm = NULL;
        }
        res->seconds = fs_now() - t0;
        goto out;
    }
    if (rc != FS_OK) goto out;

    if (colw) {                                   /* processing order, then original order */
        float *cw = fs_alloc2((size_t)cols, sizeof(float));
        if (!cw) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "hmse weights"); goto out; }
        for (int64_t k = 0; k < cols; k++) {
            double u = U[k * cols + k];
            cw[k] = q->hmse_weight == FS_HMSE_DIAG ? Hw[k * cols + k] : (float)(1.0 / (u * u));
        }
        for (int64_t k = 0; k < cols; k++) colw[perm[k]] = cw[k];
        free(hw_p);
        hw_p = cw;
    }
    if (q->static_groups) {                       /* from the original (dead-fixed) weights */
        gcol = fs_alloc2((size_t)cols, sizeof(int32_t));
        if (!gcol) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "static groups"); goto out; }
        for (int64_t k = 0; k < cols; k++) gcol[k] = (int32_t)(perm[k] / gw);
        tg = fs_now();
        rc = fs_be_grid(ctx, ctx->be, &gp, Ww, rows, cols, gw, res->qmeta);
        res->grid_s += fs_now() - tg;
        if (rc != FS_OK) goto out;
    }
    fs_gptq_job job = {
        .rows = rows, .cols = cols, .W = Wp, .U = U, .codes = codes, .qmeta = res->qmeta,
        .ngroups = ng, .gw = gw, .gcol = gcol, .block = q->block, .gp = &gp, .colw = hw_p,
    };
    if (q->refine_scales > 0) {                   /* the refinement's re-runs start from here */
        W0 = fs_alloc2(rc_n, sizeof(float));
        if (!W0) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "refine: weights"); goto out; }
        memcpy(W0, Wp, rc_n * sizeof(float));
    }
    double ts = fs_now();
    if ((rc = fs_be_gptq(ctx, ctx->be, &job)) != FS_OK) goto out;
    res->gptq_s = fs_now() - ts;
    if (q->refine_scales > 0) {
        const int dyn_act = q->act_order && !q->static_groups;
        int32_t *pinv = fs_alloc2((size_t)cols, sizeof(int32_t));
        int32_t *gmap = fs_alloc2((size_t)cols, sizeof(int32_t));
        if (!pinv || !gmap) {
            free(pinv); free(gmap);
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "refine: maps");
            goto out;
        }
        for (int64_t k = 0; k < cols; k++) {
            pinv[perm[k]] = (int32_t)k;
            gmap[k] = (int32_t)(dyn_act ? k / gw : perm[k] / gw);
        }
        refine_in ri = {
            .gp = &gp, .H = H, .W = W, .W0 = W0, .U = U, .rows = rows, .cols = cols, .gw = gw,
            .ng = ng, .perm = q->act_order ? perm : NULL, .pinv = pinv, .gcol = gmap,
            .dyn_act = dyn_act, .rounds = q->refine_scales, .block = q->block,
        };
        double tr = fs_now();
        rc = refine_rounds(ctx, &ri, codes, res->qmeta, &res->refine_rounds, &res->solve_loss);
        res->refine_s = fs_now() - tr;
        if (rc == FS_OK) {                        /* the dequant of the final codes and grids */
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t k = 0; k < cols; k++) {
                    float s, z;
                    fs_grid_unpack(&gp, res->qmeta + (r * ng + gmap[k]) * 4, &s, &z);
                    Wp[r * cols + k] = fs_qm_dequant((float)codes[r * cols + k], s, z);
                }
        }
        free(pinv); free(gmap);
        if (rc != FS_OK) goto out;
    }
    if (q->act_order) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < cols; k++) {
                res->qweight[r * cols + perm[k]] = codes[r * cols + k];
                res->dequant[r * cols + perm[k]] = Wp[r * cols + k];
            }
    } else {                                          /* identity order */
        memcpy(res->qweight, codes, rc_n);
        memcpy(res->dequant, Wp, rc_n * sizeof(float));
    }
    res->seconds = fs_now() - t0;
    rc = loss_of(ctx, q, W, res->dequant, H, H64, rows, cols, &res->loss);
    if (rc == FS_OK && q->act_order) { res->perm = perm; perm = NULL; }

out:
    free(Hw); free(U); free(Ww); free(Wp); free(W0); free(codes); free(perm); free(gcol);
    free(colw); free(hw_p);
    fs_grid_params_free(&gp);
    if (rc != FS_OK) fs_layer_result_free(res);
    return rc;
}
