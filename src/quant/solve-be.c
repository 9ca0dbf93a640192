/* solve-be.c: fs_solve_be (solve-be.h): fs_layer_quantize's steps on the
 * backend's ops, in its order, so the cpu backends give its bytes.
 *
 * Invariants:
 *  1. W and H never leave the backend.  The host gets diag(H) (one sync:
 *     dead columns and the act-order permutation are decided from it, as
 *     layer.c decides them from the same floats), the inversion's status
 *     (one sync per try: the retry policy of hessian/cholinv.c), and at the
 *     end codes, qmeta and three losses (the final sync).
 *  2. Every op of one linear goes to one queue, so their order is the order
 *     of the calls; the buffers are the workspace's and are reused only
 *     after the final sync of the linear before.
 *  3. W is read by the RTN baseline, the losses and the trace(W H W^T) norm
 *     before the dequant overwrites it (the last op).
 *  4. The step timings are the host's view: each ends at the sync that shows
 *     its work done (on the cpu backend, the work itself).
 */
#include <stdlib.h>
#include <string.h>

#include "hessian/hessian.h"
#include "src/quant/solve-be.h"

#define SOLVE_RETRIES 3      /* damping x10 retries before RTN: layer.c's FS_MAX_RETRIES */
#define ALIGN 256

static uint64_t al(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

/* The small buffer's parts, at these offsets. */
typedef struct small_layout {
    uint64_t qmeta, perm, gcol, diag, fin, cst, loss, total;
} small_layout;

static small_layout layout(int64_t rows, int64_t cols, int64_t ng)
{
    small_layout s;
    uint64_t o = 0;
    s.qmeta = o; o += al((uint64_t)rows * (uint64_t)ng * 4);
    s.perm = o;  o += al((uint64_t)cols * 4);
    s.gcol = o;  o += al((uint64_t)cols * 4);
    s.diag = o;  o += al((uint64_t)cols * 4);
    s.fin = o;   o += al(2 * 8);                /* I64 x 2: first non-finite of W, of H (+ 1) */
    s.cst = o;   o += al(4);                    /* I32: the inversion's status */
    s.loss = o;  o += al(3 * 8);                /* F64 x 3: RTN, final, trace(W H W^T) */
    s.total = o;
    return s;
}

uint64_t fs_solve_be_bytes(int64_t rows, int64_t cols, int64_t group_size)
{
    const uint64_t rc = al((uint64_t)rows * (uint64_t)cols), cc = al((uint64_t)cols * (uint64_t)cols * 4);
    return 2 * 4 * rc + 2 * cc + 2 * rc + layout(rows, cols, fs_ngroups(cols, group_size)).total;
}

int fs_solve_be_supports(const fs_quant_opts *q, const char **why)
{
    const char *w = NULL;
    if (q->grid == FS_GRID_HMSE) w = "--grid hmse (its column weights have no op)";
    else if (q->refine_scales > 0) w = "--refine-scales (the refinement has no op)";
    if (why) *why = w;
    return w == NULL;
}

void fs_solve_ws_release(fs_backend *be, fs_solve_ws *ws)
{
    for (int k = 0; k < 2; k++) {
        fs_be_free(be, ws->w2[k]);
        fs_be_free(be, ws->h2[k]);
        fs_be_free(be, ws->codes[k]);
    }
    fs_be_free(be, ws->small);
    memset(ws, 0, sizeof *ws);
}

/* bufs[0..n) of at least bytes each (grown: the old ones freed first). */
static fs_status grow(fs_ctx *ctx, fs_backend *be, fs_buf **bufs, int n, uint64_t *cap, uint64_t bytes,
                      const char *what)
{
    if (bytes <= *cap && bufs[0]) return FS_OK;
    for (int k = 0; k < n; k++) { fs_be_free(be, bufs[k]); bufs[k] = NULL; }
    *cap = 0;
    for (int k = 0; k < n; k++) {
        fs_status rc = fs_be_alloc(ctx, be, bytes ? bytes : ALIGN, what, &bufs[k]);
        if (rc != FS_OK) return rc;
    }
    *cap = bytes;
    return FS_OK;
}

typedef struct solve {
    fs_ctx *ctx;
    fs_backend *be;
    fs_queue q;
    const fs_quant_opts *qo;
    fs_grid_params gp;
    int64_t rows, cols, gw, ng;
    fs_tensor W, H;                  /* the caller's */
    fs_tensor Ww, Wp, Hw, U, c0, c1, qmeta, perm, gcol, diag, fin, cst, loss;
} solve;

static fs_tensor loss_at(const solve *s, int k) { return fs_tensor_cols(s->loss, k, 1); }

/* Grids of W into qmeta, codes and dequant D on them (layer.c's rtn()). */
static fs_status rtn(solve *s, fs_tensor D)
{
    const fs_grid_args ga = {.W = s->W, .qmeta = s->qmeta, .gw = s->gw, .gp = &s->gp};
    fs_status rc = fs_op_grid(s->ctx, s->be, s->q, &ga);
    const fs_rtn_args ra = {.W = s->W, .qmeta = s->qmeta, .codes = s->c0, .D = D, .gw = s->gw, .gp = &s->gp};
    return rc == FS_OK ? fs_op_rtn(s->ctx, s->be, s->q, &ra) : rc;
}

/* The layer loss trace((W - D) H (W - D)^T) into loss slot k (layer.c's
 * loss_of with H64 NULL), or with D absent and f32 precision the norm. */
static fs_status loss(solve *s, fs_tensor D, int k, int norm)
{
    const int mode = s->qo->loss_f32 ? FS_LOSS_EST : norm ? FS_LOSS_F32 : FS_LOSS_EXACT;
    const fs_loss_args la = {.W = s->W, .D = D, .H = s->H, .out = loss_at(s, k), .mode = mode};
    return fs_op_loss(s->ctx, s->be, s->q, &la);
}

/* The damped inversion with the retry policy of fs_hess_invert: U from Hw. */
static fs_status invert(solve *s, fs_layer_result *res, int *failed)
{
    double damp = s->qo->damp;
    int32_t st = 0;
    *failed = 0;
    res->retries = 0;
    for (int attempt = 0;; attempt++) {
        const fs_damp_args da = {.src = s->Hw, .dst = s->U, .count = 1, .damp = damp};
        const fs_cholinv_args ca = {.A = s->U, .status = s->cst, .count = 1};
        fs_status rc = fs_op_damp(s->ctx, s->be, s->q, &da);
        if (rc == FS_OK) rc = fs_op_cholinv(s->ctx, s->be, s->q, &ca);
        if (rc == FS_OK) rc = fs_be_download(s->ctx, s->be, s->q, &st, s->cst.buf, s->cst.off, 4);
        if (rc == FS_OK) rc = fs_be_sync(s->ctx, s->be, s->q);
        if (rc != FS_OK) return rc;
        res->damp_used = damp;
        if (st == 0) return FS_OK;
        fs_ctx_err(s->ctx, FS_ERR_NUMERIC, "cholesky: H is not positive definite (its trailing minor from column %d)",
                   (int)st - 1);
        if (attempt == SOLVE_RETRIES) { *failed = 1; return FS_OK; }
        const double next = fs_hess_damp_next(damp);
        fs_log(s->ctx, "warning: %s with damp %g; retrying with damp %g", s->ctx->errmsg, damp, next);
        fs_ctx_clear(s->ctx);
        damp = next;
        res->retries++;
    }
}

/* The finiteness statuses of W and H (decode's flat index + 1): an error
 * naming the first non-finite value, as fs_check_finite does. */
static fs_status check_finite(solve *s, const int64_t fin[2])
{
    for (int k = 0; k < 2; k++) {
        if (!fin[k]) continue;
        const fs_tensor t = k ? s->Hw : s->Ww;
        float v = 0.0f;
        fs_status rc = fs_be_download(s->ctx, s->be, s->q, &v, t.buf, t.off + (uint64_t)(fin[k] - 1) * 4, 4);
        if (rc == FS_OK) rc = fs_be_sync(s->ctx, s->be, s->q);
        if (rc != FS_OK) return rc;
        return fs_ctx_err(s->ctx, FS_ERR_NUMERIC, "%s: non-finite value (%s) at flat index %lld", k ? "hessian" : "weight",
                          v != v ? "NaN" : "Inf", (long long)(fin[k] - 1));
    }
    return FS_OK;
}

/* Columns by descending diag, ties by index (layer.c's act_order_perm). */
typedef struct dkey { float d; int32_t i; } dkey;

static int by_diag(const void *a, const void *b)
{
    const dkey *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static fs_status workspace(solve *s, fs_solve_ws *ws)
{
    const uint64_t rc_n = (uint64_t)s->rows * (uint64_t)s->cols, cc_n = (uint64_t)s->cols * (uint64_t)s->cols;
    const small_layout L = layout(s->rows, s->cols, s->ng);
    fs_status rc = grow(s->ctx, s->be, ws->w2, 2, &ws->cap_w, rc_n * 4, "solver weights");
    if (rc == FS_OK) rc = grow(s->ctx, s->be, ws->h2, 2, &ws->cap_h, cc_n * 4, "solver hessian");
    if (rc == FS_OK) rc = grow(s->ctx, s->be, ws->codes, 2, &ws->cap_c, rc_n, "solver codes");
    if (rc == FS_OK) rc = grow(s->ctx, s->be, &ws->small, 1, &ws->cap_s, L.total, "solver grids");
    if (rc != FS_OK) return rc;
    const int64_t R = s->rows, C = s->cols;
    s->Ww = fs_tensor_2d(ws->w2[0], 0, FS_DT_F32, R, C);
    s->Wp = fs_tensor_2d(ws->w2[1], 0, FS_DT_F32, R, C);
    s->Hw = fs_tensor_2d(ws->h2[0], 0, FS_DT_F32, C, C);
    s->U = fs_tensor_2d(ws->h2[1], 0, FS_DT_F32, C, C);
    s->c0 = fs_tensor_2d(ws->codes[0], 0, FS_DT_U8, R, C);
    s->c1 = fs_tensor_2d(ws->codes[1], 0, FS_DT_U8, R, C);
    s->qmeta = fs_tensor_2d(ws->small, L.qmeta, FS_DT_U8, R, s->ng * 4);
    s->perm = fs_tensor_2d(ws->small, L.perm, FS_DT_I32, 1, C);
    s->gcol = fs_tensor_2d(ws->small, L.gcol, FS_DT_I32, 1, C);
    s->diag = fs_tensor_2d(ws->small, L.diag, FS_DT_F32, C, 1);
    s->fin = fs_tensor_2d(ws->small, L.fin, FS_DT_I64, 1, 2);
    s->cst = fs_tensor_2d(ws->small, L.cst, FS_DT_I32, 1, 1);
    s->loss = fs_tensor_2d(ws->small, L.loss, FS_DT_F64, 1, 3);
    return FS_OK;
}

/* The end of every path: the final dequant D into W (after the losses that
 * read W, invariant 3), then codes (c, original order), qmeta and the losses
 * down, and the sync. */
static fs_status finish(solve *s, fs_tensor D, fs_tensor c, fs_layer_result *res, double losses[3])
{
    const uint64_t rc_n = (uint64_t)s->rows * (uint64_t)s->cols;
    fs_status rc = fs_op_copy(s->ctx, s->be, s->q, s->W, D);
    if (rc == FS_OK) rc = fs_be_download(s->ctx, s->be, s->q, res->qweight, c.buf, c.off, rc_n);
    if (rc == FS_OK)
        rc = fs_be_download(s->ctx, s->be, s->q, res->qmeta, s->qmeta.buf, s->qmeta.off,
                            (uint64_t)s->rows * (uint64_t)s->ng * 4);
    if (rc == FS_OK) rc = fs_be_download(s->ctx, s->be, s->q, losses, s->loss.buf, s->loss.off, 3 * 8);
    if (rc == FS_OK) rc = fs_be_sync(s->ctx, s->be, s->q);
    return rc;
}

fs_status fs_solve_be(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_solve_ws *ws, fs_tensor W, fs_tensor H,
                      const fs_quant_opts *qo, fs_layer_result *res, double *wnorm)
{
    const int64_t R = W.rows, C = W.cols;
    solve s = {.ctx = ctx, .be = be, .q = q, .qo = qo, .rows = R, .cols = C, .W = W, .H = H,
               .gw = fs_group_width(C, qo->group_size), .ng = fs_ngroups(C, qo->group_size)};
    memset(res, 0, sizeof *res);
    res->rows = R;
    res->cols = C;
    res->ngroups = s.ng;
    if (H.rows != C || H.cols != C)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "solve: a Hessian [%lld, %lld] for a weight of %lld columns",
                          (long long)H.rows, (long long)H.cols, (long long)C);
    const char *why = NULL;
    if (!fs_solve_be_supports(qo, &why)) return fs_ctx_err(ctx, FS_ERR_USAGE, "solve: %s runs on the host solver", why);
    const double t0 = fs_now();
    float *diag = fs_alloc2((size_t)C, sizeof(float));
    dkey *k = qo->act_order ? fs_alloc2((size_t)C, sizeof(dkey)) : NULL;
    int32_t *perm = fs_alloc2((size_t)C, sizeof(int32_t)), *gcol = NULL;
    res->qweight = fs_alloc2((size_t)R, (size_t)C);
    res->qmeta = fs_alloc2((size_t)R * (size_t)s.ng, 4);
    fs_status rc = FS_OK;
    if (!diag || !perm || (qo->act_order && !k) || !res->qweight || !res->qmeta)
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "layer %lld x %lld: host buffers", (long long)R, (long long)C);
    if (rc == FS_OK) rc = fs_grid_params_init(ctx, &s.gp, qo);
    if (rc == FS_OK) rc = workspace(&s, ws);
    if (rc != FS_OK) goto out;

    /* the checks (decode copies W and H into the work copies and finds the
     * first non-finite value of each), the norm, diag(H) down: one sync */
    int64_t fin[2] = {0, 0};
    const fs_decode_args dw = {.src = W, .dst = s.Ww, .status = fs_tensor_cols(s.fin, 0, 1)};
    const fs_decode_args dh = {.src = H, .dst = s.Hw, .status = fs_tensor_cols(s.fin, 1, 1)};
    rc = fs_op_decode(ctx, be, q, &dw);
    if (rc == FS_OK) rc = fs_op_decode(ctx, be, q, &dh);
    if (rc == FS_OK) rc = fs_op_copy(ctx, be, q, s.diag, fs_tensor_ld(s.Hw.buf, s.Hw.off, FS_DT_F32, C, 1, C + 1));
    if (rc == FS_OK) rc = fs_be_download(ctx, be, q, fin, s.fin.buf, s.fin.off, 16);
    if (rc == FS_OK) rc = fs_be_download(ctx, be, q, diag, s.diag.buf, s.diag.off, (uint64_t)C * 4);
    if (rc == FS_OK) rc = fs_be_sync(ctx, be, q);
    if (rc == FS_OK) rc = check_finite(&s, fin);
    if (rc != FS_OK) goto out;
    double losses[3] = {0, 0, 0};
    /* the norm and the RTN baseline (grids from the original weights; its dequant in Wp) */
    double tg = fs_now();
    rc = loss(&s, fs_tensor_none(), 2, 1);
    if (rc == FS_OK) rc = rtn(&s, s.Wp);
    if (rc == FS_OK) rc = loss(&s, s.Wp, 0, 0);
    if (rc != FS_OK) goto out;
    if (qo->rtn) {
        rc = finish(&s, s.Wp, s.c0, res, losses);
        res->grid_s = fs_now() - tg;
        res->rtn_loss = res->loss = losses[0];
        if (wnorm) *wnorm = losses[2];
        goto out;
    }
    /* dead columns (diag 0): H[d][d] = 1 and W[:, d] = 0 in the work copies */
    for (int64_t d = 0; rc == FS_OK && d < C; d++) {
        if (diag[d] != 0.0f) continue;
        diag[d] = 1.0f;
        res->dead_cols++;
        rc = fs_op_fill(ctx, be, q, fs_tensor_ld(s.Hw.buf, s.Hw.off + (uint64_t)(d * C + d) * 4, FS_DT_F32, 1, 1, 1), 1.0);
        if (rc == FS_OK) rc = fs_op_fill(ctx, be, q, fs_tensor_ld(s.Ww.buf, s.Ww.off + (uint64_t)d * 4, FS_DT_F32, R, 1, C), 0.0);
    }
    if (rc != FS_OK) goto out;
    /* processing order: H -> P^T H P (through U), W's columns (Ww -> Wp) */
    if (qo->act_order) {
        for (int64_t i = 0; i < C; i++) k[i] = (dkey){diag[i], (int32_t)i};
        qsort(k, (size_t)C, sizeof *k, by_diag);
        for (int64_t i = 0; i < C; i++) perm[i] = k[i].i;
        const fs_permute_args ph = {.src = s.Hw, .dst = s.U, .perm = s.perm, .rows_too = 1};
        const fs_permute_args pw = {.src = s.Ww, .dst = s.Wp, .perm = s.perm};
        rc = fs_be_upload(ctx, be, q, s.perm.buf, s.perm.off, perm, (uint64_t)C * 4);
        if (rc == FS_OK) rc = fs_op_permute(ctx, be, q, &ph);
        if (rc == FS_OK) rc = fs_op_copy(ctx, be, q, s.Hw, s.U);
        if (rc == FS_OK) rc = fs_op_permute(ctx, be, q, &pw);
    } else {
        for (int64_t i = 0; i < C; i++) perm[i] = (int32_t)i;
        rc = fs_op_copy(ctx, be, q, s.Wp, s.Ww);
    }
    res->grid_s = fs_now() - tg;
    if (rc != FS_OK) goto out;
    const double t1 = fs_now();
    int failed = 0;
    rc = invert(&s, res, &failed);
    res->chol_s = fs_now() - t1;
    if (rc != FS_OK) goto out;
    if (failed) {                                    /* RTN: the baseline again, identity order */
        fs_log(ctx, "warning: %s after %d retries (damp %g): falling back to RTN", ctx->errmsg, res->retries,
               res->damp_used);
        fs_ctx_clear(ctx);
        res->fallback_rtn = 1;
        rc = rtn(&s, s.Wp);
        if (rc == FS_OK) rc = finish(&s, s.Wp, s.c0, res, losses);
        res->rtn_loss = res->loss = losses[0];
        if (wnorm) *wnorm = losses[2];
        if (rc == FS_OK && qo->act_order) {
            for (int64_t i = 0; i < C; i++) perm[i] = (int32_t)i;
            res->perm = perm;
            perm = NULL;
        }
        res->seconds = fs_now() - t0;
        goto out;
    }
    const double ts = fs_now();
    if (qo->static_groups) {                         /* grids from the original (dead-fixed) weights */
        gcol = fs_alloc2((size_t)C, sizeof(int32_t));
        if (!gcol) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "static groups"); goto out; }
        for (int64_t j = 0; j < C; j++) gcol[j] = (int32_t)(perm[j] / s.gw);
        const fs_grid_args ga = {.W = s.Ww, .qmeta = s.qmeta, .gw = s.gw, .gp = &s.gp};
        rc = fs_be_upload(ctx, be, q, s.gcol.buf, s.gcol.off, gcol, (uint64_t)C * 4);
        if (rc == FS_OK) rc = fs_op_grid(ctx, be, q, &ga);   /* (gcol's host copy lives to the final sync) */
        if (rc != FS_OK) goto out;
    }
    const fs_gptq_args ga = {.W = s.Wp, .U = s.U, .codes = s.c0, .qmeta = s.qmeta,
                             .gcol = qo->static_groups ? s.gcol : fs_tensor_none(), .gw = s.gw, .block = qo->block,
                             .gp = &s.gp};
    rc = fs_op_gptq(ctx, be, q, &ga);
    /* back to the original order: codes into c1, the dequant into Ww (free now) */
    fs_tensor D = s.Wp, c = s.c0;
    if (rc == FS_OK && qo->act_order) {
        const fs_permute_args pc = {.src = s.c0, .dst = s.c1, .perm = s.perm, .inverse = 1};
        const fs_permute_args pd = {.src = s.Wp, .dst = s.Ww, .perm = s.perm, .inverse = 1};
        rc = fs_op_permute(ctx, be, q, &pc);
        if (rc == FS_OK) rc = fs_op_permute(ctx, be, q, &pd);
        D = s.Ww;
        c = s.c1;
    }
    if (rc == FS_OK) rc = loss(&s, D, 1, 0);
    if (rc == FS_OK) rc = finish(&s, D, c, res, losses);
    res->gptq_s = fs_now() - ts;
    res->seconds = fs_now() - t0;
    res->rtn_loss = losses[0];
    res->loss = losses[1];
    if (wnorm) *wnorm = losses[2];
    if (rc == FS_OK && qo->act_order) { res->perm = perm; perm = NULL; }

out:
    if (rc != FS_OK) {                 /* nothing of this linear may still be queued on the buffers */
        fs_ctx lc;
        fs_ctx_init(&lc);
        (void)fs_be_sync(&lc, be, q);
        fs_layer_result_free(res);
    }
    free(diag); free(k); free(perm); free(gcol);
    fs_grid_params_free(&s.gp);
    return rc;
}
