/* block-moe.c: the MoE block (ARCHITECTURES.md §4.3, §5.5): the router of
 * the family (fs_op_route), the per-expert row lists, each expert's gated
 * MLP on its gathered rows, their weighted sum in expert order per token,
 * then the shared expert(s) (qwen2_moe: behind sigmoid(x . shared_expert_gate);
 * DeepSeek: weight 1).  A pass that captures expert inputs (EXP_IN,
 * EXP_DOWN) runs the experts of [e0, e1) on their rows (every row under
 * all[e]) and stops.
 *
 * Invariants:
 *  1. An expert's rows are its tokens in ascending order (fs_op_route_lists),
 *     as the CPU path before gathered them, so the sums are the same.
 *  2. The row counts are downloaded (one sync of q per batch): the gemms of
 *     an expert are sized by them.
 */
#include <stdlib.h>
#include <string.h>

#include "src/forward/layer.h"
#include "src/models/moe.h"

#define TRY(e) do { fs_status t_rc_ = (e); if (t_rc_ != FS_OK) return t_rc_; } while (0)

static fs_route_cfg route_cfg(const fs_fwd *f)
{
    fs_route_cfg c;
    c.kind = f->route;
    c.E = f->E;
    c.topk = f->topk;
    c.norm_topk = f->norm_topk;
    c.n_group = f->route == FS_ROUTE_SOFTMAX ? 1 : f->n_group;
    c.topk_group = f->route == FS_ROUTE_SOFTMAX ? 1 : f->topk_group;
    c.group_max = f->group_max;
    c.rsf = f->rsf;
    return c;
}

/* idx, wt of xn [n, H] by router [E, H] (bias: DS_SIGMOID's correction). */
static fs_status route(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, fs_tensor router, fs_tensor bias,
                       fs_tensor xn, fs_tensor logits, fs_tensor idx, fs_tensor wt)
{
    TRY(fs_fwd_linear_op(ctx, be, q, xn, router, fs_tensor_none(), logits));
    fs_route_args a = {.logits = logits, .bias = f->route == FS_ROUTE_DS_SIGMOID ? bias : fs_tensor_none(),
                       .idx = idx, .wt = wt, .cfg = route_cfg(f)};
    return fs_op_route(ctx, be, q, &a);
}

fs_status fs_fwd_route(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t n)
{
    return route(ctx, be, q, f, w->router, w->escb, fs_tensor_2d(ws->xn.buf, 0, FS_DT_F32, n, f->H),
                 fs_tensor_2d(ws->logits.buf, 0, FS_DT_F32, n, f->E), fs_tensor_2d(ws->idx.buf, 0, FS_DT_I32, n, f->topk),
                 fs_tensor_2d(ws->wt.buf, 0, FS_DT_F32, n, f->topk));
}

fs_status fs_block_moe(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t n, const fs_taps *tp, int *stopped)
{
    const int64_t H = f->H, E = f->E, K = f->topk;
    const int stop = tp ? tp->stop : FS_TAP_NONE, capture = stop == FS_TAP_EXP_IN || stop == FS_TAP_EXP_DOWN;
    fs_tensor xn = fs_tensor_2d(ws->xn.buf, 0, FS_DT_F32, n, H), out = fs_tensor_2d(ws->o.buf, 0, FS_DT_F32, n, H);
    *stopped = 0;
    TRY(fs_fwd_route(ctx, be, q, f, w, ws, n));
    fs_lists_args la = {.idx = fs_tensor_2d(ws->idx.buf, 0, FS_DT_I32, n, K),
                        .wt = fs_tensor_2d(ws->wt.buf, 0, FS_DT_F32, n, K), .offs = ws->offs,
                        .rows = ws->rows, .rw = ws->rw, .E = E};
    TRY(fs_op_route_lists(ctx, be, q, &la));
    TRY(fs_be_download(ctx, be, q, ws->offs_host, ws->offs.buf, 0, sizeof(int32_t) * (uint64_t)(E + 1)));
    TRY(fs_be_sync(ctx, be, q));                                   /* invariant 2 */
    const int32_t *offs = ws->offs_host;
    if (!capture) TRY(fs_op_fill(ctx, be, q, out, 0.0));
    const int e0 = capture ? tp->e0 : 0, e1 = capture ? tp->e1 : (int)E;
    for (int e = e0; e < e1; e++) {
        const int all = capture && tp->all && tp->all[e];
        const int64_t r0 = all ? 0 : offs[e], nr = all ? n : offs[e + 1] - offs[e];
        if (nr == 0) continue;
        fs_tensor rows = fs_tensor_cols(all ? ws->iota : ws->rows, r0, nr);
        fs_tensor xg = fs_tensor_2d(ws->xg.buf, 0, FS_DT_F32, nr, H), y = fs_tensor_2d(ws->y.buf, 0, FS_DT_F32, nr, H);
        TRY(fs_op_gather(ctx, be, q, xg, xn, rows));
        if (stop == FS_TAP_EXP_IN) {
            if (tp->fn) TRY(tp->fn(ctx, tp->arg, FS_TAP_EXP_IN, e, xg));
            continue;
        }
        int st = 0;
        TRY(fs_block_mlp(ctx, be, q, xg, &w->ex[3 * e], NULL, f->Ie, ws->g, ws->u, y, tp, FS_TAP_EXP_DOWN, e, &st));
        if (st) continue;
        fs_scatter_args sa = {.dst = out, .src = y, .rows = rows, .w = fs_tensor_cols(ws->rw, r0, nr)};
        TRY(fs_op_scatter_add(ctx, be, q, &sa));
    }
    if (capture) {
        *stopped = 1;
        return FS_OK;
    }
    if (f->Is > 0 && w->e0 > w->g0) {              /* shared expert(s) */
        fs_tensor y = fs_tensor_2d(ws->y.buf, 0, FS_DT_F32, n, H);
        int st = 0;
        TRY(fs_block_mlp(ctx, be, q, xn, &w->w[w->g0], NULL, f->Is, ws->g, ws->u, y, NULL, FS_TAP_NONE, -1, &st));
        if (w->sgate.buf) {
            fs_gate_add_args ga = {.y = out, .src = y, .x = xn, .g = w->sgate};
            TRY(fs_op_gate_add(ctx, be, q, &ga));
        } else {
            TRY(fs_op_add(ctx, be, q, out, y));
        }
    }
    return FS_OK;
}

/* moe.h's host-pointer router, on a cpu backend of its own. */
fs_status fs_moe_route_ex(fs_ctx *ctx, const fs_fwd *f, const float *router, const float *bias,
                          const float *xn, int64_t n, int32_t *idx, float *wt)
{
    const int64_t H = f->H, E = f->E, K = f->topk;
    fs_backend *be = NULL;
    fs_buf *b[6] = {0};
    const uint64_t sz[6] = {(uint64_t)(E * H) * 4, (uint64_t)E * 4, (uint64_t)(n * H) * 4, (uint64_t)(n * E) * 4,
                            (uint64_t)(n * K) * 4, (uint64_t)(n * K) * 4};
    const fs_queue q = FS_QUEUE_COMPUTE;
    fs_status rc = fs_backend_open(ctx, FS_BE_CPU, NULL, &be);
    for (int i = 0; rc == FS_OK && i < 6; i++) rc = fs_be_alloc(ctx, be, sz[i] ? sz[i] : 4, "routing", &b[i]);
    if (rc == FS_OK) rc = fs_be_upload(ctx, be, q, b[0], 0, router, sz[0]);
    if (rc == FS_OK && bias) rc = fs_be_upload(ctx, be, q, b[1], 0, bias, sz[1]);
    if (rc == FS_OK) rc = fs_be_upload(ctx, be, q, b[2], 0, xn, sz[2]);
    if (rc == FS_OK && n > 0)
        rc = route(ctx, be, q, f, fs_tensor_2d(b[0], 0, FS_DT_F32, E, H),
                   bias ? fs_tensor_2d(b[1], 0, FS_DT_F32, 1, E) : fs_tensor_none(), fs_tensor_2d(b[2], 0, FS_DT_F32, n, H),
                   fs_tensor_2d(b[3], 0, FS_DT_F32, n, E), fs_tensor_2d(b[4], 0, FS_DT_I32, n, K),
                   fs_tensor_2d(b[5], 0, FS_DT_F32, n, K));
    if (rc == FS_OK) rc = fs_be_download(ctx, be, q, idx, b[4], 0, sz[4]);
    if (rc == FS_OK) rc = fs_be_download(ctx, be, q, wt, b[5], 0, sz[5]);
    if (rc == FS_OK) rc = fs_be_sync(ctx, be, q);
    for (int i = 0; i < 6; i++) fs_be_free(be, b[i]);
    fs_backend_free(be);
    return rc;
}
