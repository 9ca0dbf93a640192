/* ops.c: the op entry points of backend.h: each checks its arguments
 * (backend.h invariant 5: FS_ERR_USAGE naming the op and the operand, before
 * anything is queued), then hands them to the backend's slot, or says that
 * the backend does not implement the op (FS_ERR_NODEV).
 *
 * Invariants:
 *  1. Every shape rule of an op is checked here, once for every backend; the
 *     slots (cpu/, cuda/) assume them (backend-impl.h invariant 1).  What
 *     only the data can tell (an index in a row list) is the slot's
 *     execution error.
 *  2. An op given FS_QUEUE_COUNT or another bad queue is a usage error.
 */
#include <math.h>

#include "src/backend/backend-impl.h"

#define TRY(expr)                          \
    do {                                   \
        fs_status try_rc_ = (expr);        \
        if (try_rc_ != FS_OK) return try_rc_; \
    } while (0)

#define F32 FS_DTM(FS_DT_F32)
#define F64 FS_DTM(FS_DT_F64)
#define BF16 FS_DTM(FS_DT_BF16)
#define F16 FS_DTM(FS_DT_F16)
#define I32 FS_DTM(FS_DT_I32)
#define I64 FS_DTM(FS_DT_I64)
#define U8 FS_DTM(FS_DT_U8)
#define F8 FS_DTM(FS_DT_F8_E4M3)

/* A view of be: a shorthand for fs_tensor_check (-1: any size). */
#define CHK(name, t, mask, r, c) TRY(fs_tensor_check(ctx, be, op, name, &(t), mask, r, c, 0))
#define OPT(name, t, mask, r, c) TRY(fs_tensor_check(ctx, be, op, name, &(t), mask, r, c, 1))
#define DENSE(name, t, mask, r, c) TRY(fs_tensor_check_dense(ctx, be, op, name, &(t), mask, r, c, 0))
#define DENSE_OPT(name, t, mask, r, c) TRY(fs_tensor_check_dense(ctx, be, op, name, &(t), mask, r, c, 1))
#define RULE(cond, ...) do { if (!(cond)) return fs_ctx_err(ctx, FS_ERR_USAGE, __VA_ARGS__); } while (0)

static fs_status start(fs_ctx *ctx, const char *op, fs_queue q, const void *a)
{
    if ((int)q < 0 || (int)q >= FS_QUEUE_COUNT)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: queue %d does not exist (upload, compute, download)", op, (int)q);
    if (!a) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: no arguments", op);
    return FS_OK;
}

#define DISPATCH(slot)                                                                                 \
    do {                                                                                               \
        if (!be->iface.slot)                                                                           \
            return fs_ctx_err(ctx, FS_ERR_NODEV, "op %s is not implemented on %s", op + 6, fs_backend_name(be)); \
        return be->iface.slot(ctx, be, q, a);                                                          \
    } while (0)

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

fs_status fs_op_fill(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor t, double value)
{
    const char *op = "fs_op_fill";
    fs_fill_args args = {t, value}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("t", a->t, F32 | F64 | BF16 | I32 | I64 | U8, -1, -1);
    RULE(isfinite(value) || a->t.dt == FS_DT_F32 || a->t.dt == FS_DT_F64 || a->t.dt == FS_DT_BF16,
         "%s: value %g does not fit %s", op, value, fs_dtype_name(a->t.dt));
    DISPATCH(fill);
}

fs_status fs_op_gemm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gemm_args *a)
{
    const char *op = "fs_op_gemm";
    TRY(start(ctx, op, q, a));
    CHK("A", a->A, F32 | BF16, -1, -1);
    const int64_t m = a->A.rows, k = a->A.cols;
    if (a->trans_b) CHK("B", a->B, F32 | BF16, -1, k);
    else CHK("B", a->B, F32 | BF16, k, -1);
    const int64_t n = a->trans_b ? a->B.rows : a->B.cols;
    CHK("C", a->C, F32, m, n);
    DISPATCH(gemm);
}

fs_status fs_op_bias_add(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor y, fs_tensor b)
{
    const char *op = "fs_op_bias_add";
    fs_bias_args args = {y, b}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("y", a->y, F32, -1, -1);
    CHK("b", a->b, F32, 1, a->y.cols);
    DISPATCH(bias_add);
}

fs_status fs_op_add(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor y, fs_tensor x)
{
    const char *op = "fs_op_add";
    fs_add_args args = {y, x}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("y", a->y, F32, -1, -1);
    CHK("x", a->x, F32, a->y.rows, a->y.cols);
    DISPATCH(add);
}

fs_status fs_op_copy(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor dst, fs_tensor src)
{
    const char *op = "fs_op_copy";
    fs_copy_args args = {dst, src}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("dst", a->dst, F32 | BF16, -1, -1);
    CHK("src", a->src, F32 | BF16, a->dst.rows, a->dst.cols);
    DISPATCH(copy);
}

fs_status fs_op_hess_acc(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor H, fs_tensor X)
{
    const char *op = "fs_op_hess_acc";
    fs_hess_acc_args args = {H, X}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("H", a->H, F32, a->H.cols, -1);
    CHK("X", a->X, F32, -1, a->H.cols);
    DISPATCH(hess_acc);
}

fs_status fs_op_hess_finish(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor H, int64_t count)
{
    const char *op = "fs_op_hess_finish";
    fs_hess_finish_args args = {H, count}, *a = &args;
    TRY(start(ctx, op, q, a));
    RULE(count >= 1, "%s: count %lld (must be >= 1)", op, (long long)count);
    CHK("H", a->H, F32, -1, -1);
    RULE(a->H.rows == count * a->H.cols, "%s: operand H is [%lld, %lld], the op needs [%lld * %lld, %lld]", op,
         (long long)a->H.rows, (long long)a->H.cols, (long long)count, (long long)a->H.cols, (long long)a->H.cols);
    DISPATCH(hess_finish);
}

fs_status fs_op_hess_wave(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_hess_wave_args *a)
{
    const char *op = "fs_op_hess_wave";
    TRY(start(ctx, op, q, a));
    RULE(a->e0 >= 0 && a->ne >= 0, "%s: experts [%lld, + %lld)", op, (long long)a->e0, (long long)a->ne);
    CHK("X", a->X, F32, -1, -1);
    const int64_t in = a->X.cols;
    CHK("offs", a->offs, I32, 1, -1);
    RULE(a->offs.cols >= a->e0 + a->ne + 1, "%s: operand offs has %lld entries, experts [%lld, %lld) need %lld", op,
         (long long)a->offs.cols, (long long)a->e0, (long long)(a->e0 + a->ne), (long long)(a->e0 + a->ne + 1));
    CHK("rows", a->rows, I32, 1, -1);
    CHK("H", a->H, F32, a->ne * in, in);
    DISPATCH(hess_wave);
}

fs_status fs_op_damp(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_damp_args *a)
{
    const char *op = "fs_op_damp";
    TRY(start(ctx, op, q, a));
    RULE(a->count >= 1, "%s: count %lld (must be >= 1)", op, (long long)a->count);
    RULE(isfinite(a->damp), "%s: damp %g is not finite", op, a->damp);
    CHK("src", a->src, F32, -1, -1);
    RULE(a->src.rows == a->count * a->src.cols, "%s: operand src is [%lld, %lld], the op needs [%lld * %lld, %lld]",
         op, (long long)a->src.rows, (long long)a->src.cols, (long long)a->count, (long long)a->src.cols,
         (long long)a->src.cols);
    CHK("dst", a->dst, F32, a->src.rows, a->src.cols);
    DISPATCH(damp);
}

fs_status fs_op_cholinv(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_cholinv_args *a)
{
    const char *op = "fs_op_cholinv";
    TRY(start(ctx, op, q, a));
    RULE(a->count >= 1, "%s: count %lld (must be >= 1)", op, (long long)a->count);
    DENSE("A", a->A, F32, a->count * a->A.cols, -1);
    CHK("status", a->status, I32, 1, a->count);
    DISPATCH(cholinv);
}

static fs_status check_gp(fs_ctx *ctx, const char *op, const fs_grid_params *gp, int64_t gw)
{
    RULE(gp != NULL, "%s: no grid parameters", op);
    RULE(gp->n >= 1 && gp->p, "%s: grid parameters without candidates", op);
    RULE(gp->bits == 2 || gp->bits == 3 || gp->bits == 4 || gp->bits == 8, "%s: %d bits", op, gp->bits);
    RULE(gw >= 1, "%s: group width %lld (must be >= 1)", op, (long long)gw);
    return FS_OK;
}

fs_status fs_op_grid(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_grid_args *a)
{
    const char *op = "fs_op_grid";
    TRY(start(ctx, op, q, a));
    TRY(check_gp(ctx, op, a->gp, a->gw));
    CHK("W", a->W, F32, -1, -1);
    CHK("qmeta", a->qmeta, U8, a->W.rows, cdiv(a->W.cols, a->gw) * 4);
    DISPATCH(grid_op);
}

fs_status fs_op_gptq(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gptq_args *a)
{
    const char *op = "fs_op_gptq";
    TRY(start(ctx, op, q, a));
    TRY(check_gp(ctx, op, a->gp, a->gw));
    RULE(a->block >= 1, "%s: block %d (must be >= 1)", op, a->block);
    DENSE("W", a->W, F32, -1, -1);
    const int64_t R = a->W.rows, C = a->W.cols;
    DENSE("U", a->U, F32, C, C);
    DENSE("codes", a->codes, U8, R, C);
    DENSE("qmeta", a->qmeta, U8, R, cdiv(C, a->gw) * 4);
    OPT("gcol", a->gcol, I32, 1, C);
    DISPATCH(gptq_op);
}

fs_status fs_op_rtn(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rtn_args *a)
{
    const char *op = "fs_op_rtn";
    TRY(start(ctx, op, q, a));
    TRY(check_gp(ctx, op, a->gp, a->gw));
    CHK("W", a->W, F32, -1, -1);
    const int64_t R = a->W.rows, C = a->W.cols;
    CHK("qmeta", a->qmeta, U8, R, cdiv(C, a->gw) * 4);
    CHK("codes", a->codes, U8, R, C);
    OPT("D", a->D, F32, R, C);
    DISPATCH(rtn);
}

fs_status fs_op_decode(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_decode_args *a)
{
    const char *op = "fs_op_decode";
    TRY(start(ctx, op, q, a));
    CHK("src", a->src, F32 | F16 | BF16 | F8, -1, -1);
    const int64_t R = a->src.rows, C = a->src.cols;
    CHK("dst", a->dst, F32, R, C);
    CHK("status", a->status, I64, 1, 1);
    if (a->scale.buf) {
        RULE(a->src.dt == FS_DT_F8_E4M3, "%s: operand scale is given for %s weights (block scales are F8_E4M3's)",
             op, fs_dtype_name(a->src.dt));
        RULE(a->b0 >= 1 && a->b1 >= 1, "%s: blocks %lld x %lld (must be >= 1)", op, (long long)a->b0,
             (long long)a->b1);
        CHK("scale", a->scale, F32, cdiv(R, a->b0), cdiv(C, a->b1));
    }
    DISPATCH(decode);
}

fs_status fs_op_permute(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_permute_args *a)
{
    const char *op = "fs_op_permute";
    TRY(start(ctx, op, q, a));
    CHK("src", a->src, F32 | U8 | I32, -1, -1);
    const int64_t R = a->src.rows, C = a->src.cols;
    RULE(!a->rows_too || R == C, "%s: rows_too needs a square src, not [%lld, %lld]", op, (long long)R, (long long)C);
    CHK("dst", a->dst, FS_DTM(a->src.dt), R, C);
    CHK("perm", a->perm, I32, 1, C);
    DISPATCH(permute);
}

fs_status fs_op_rmsnorm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rmsnorm_args *a)
{
    const char *op = "fs_op_rmsnorm";
    TRY(start(ctx, op, q, a));
    CHK("x", a->x, F32, -1, -1);
    CHK("w", a->w, F32, 1, a->x.cols);
    CHK("out", a->out, F32, a->x.rows, a->x.cols);
    RULE(a->eps >= 0.0f, "%s: eps %g", op, (double)a->eps);
    DISPATCH(rmsnorm);
}

fs_status fs_op_rope(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rope_args *a)
{
    const char *op = "fs_op_rope";
    TRY(start(ctx, op, q, a));
    RULE(a->d >= 2 && a->d % 2 == 0, "%s: rotary dims %lld (must be even, >= 2)", op, (long long)a->d);
    RULE(a->heads >= 1 && a->hs >= 0 && a->c0 >= 0 && a->T >= 1, "%s: heads %lld, head stride %lld, first column "
         "%lld, T %lld", op, (long long)a->heads, (long long)a->hs, (long long)a->c0, (long long)a->T);
    CHK("x", a->x, F32, -1, -1);
    RULE((a->heads - 1) * a->hs + a->c0 + a->d <= a->x.cols, "%s: operand x has %lld columns, %lld heads of stride "
         "%lld rotating [%lld, + %lld) need %lld", op, (long long)a->x.cols, (long long)a->heads, (long long)a->hs,
         (long long)a->c0, (long long)a->d, (long long)((a->heads - 1) * a->hs + a->c0 + a->d));
    CHK("inv_freq", a->inv_freq, F32, 1, a->d / 2);
    DISPATCH(rope);
}

static fs_status check_attention(fs_ctx *ctx, fs_backend *be, const char *op, fs_queue q, const fs_attn_args *a)
{
    TRY(start(ctx, op, q, a));
    RULE(a->nseq >= 0 && a->T >= 1 && a->nh >= 1 && a->nkv >= 1 && a->nh % a->nkv == 0 && a->dqk >= 1 &&
         a->dv >= 1 && a->window >= 0 && a->q_hs >= 0 && a->k_hs >= 0 && a->v_hs >= 0 && a->o_hs >= 0,
         "%s: %lld sequences of %lld, %lld heads, %lld kv heads, head dims %lld / %lld, window %lld", op,
         (long long)a->nseq, (long long)a->T, (long long)a->nh, (long long)a->nkv, (long long)a->dqk,
         (long long)a->dv, (long long)a->window);
    const int64_t n = a->nseq * a->T;
    CHK("q", a->q, F32, n, -1);
    CHK("k", a->k, F32, n, -1);
    CHK("v", a->v, F32, n, -1);
    CHK("out", a->out, F32, n, -1);
    RULE((a->nh - 1) * a->q_hs + a->dqk <= a->q.cols, "%s: operand q has %lld columns, %lld heads need %lld", op,
         (long long)a->q.cols, (long long)a->nh, (long long)((a->nh - 1) * a->q_hs + a->dqk));
    RULE((a->nkv - 1) * a->k_hs + a->dqk <= a->k.cols, "%s: operand k has %lld columns, %lld heads need %lld", op,
         (long long)a->k.cols, (long long)a->nkv, (long long)((a->nkv - 1) * a->k_hs + a->dqk));
    RULE((a->nkv - 1) * a->v_hs + a->dv <= a->v.cols, "%s: operand v has %lld columns, %lld heads need %lld", op,
         (long long)a->v.cols, (long long)a->nkv, (long long)((a->nkv - 1) * a->v_hs + a->dv));
    RULE((a->nh - 1) * a->o_hs + a->dv <= a->out.cols, "%s: operand out has %lld columns, %lld heads need %lld", op,
         (long long)a->out.cols, (long long)a->nh, (long long)((a->nh - 1) * a->o_hs + a->dv));
    return FS_OK;
}

fs_status fs_op_attention(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a)
{
    const char *op = "fs_op_attention";
    TRY(check_attention(ctx, be, op, q, a));
    DISPATCH(attention);
}

fs_status fs_op_attention_libm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a)
{
    const char *op = "fs_op_attention_libm";
    TRY(check_attention(ctx, be, op, q, a));
    DISPATCH(attention_libm);
}

fs_status fs_op_swiglu(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor g, fs_tensor u, fs_tensor out)
{
    const char *op = "fs_op_swiglu";
    fs_swiglu_args args = {g, u, out}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("g", a->g, F32, -1, -1);
    CHK("u", a->u, F32, a->g.rows, a->g.cols);
    CHK("out", a->out, F32, a->g.rows, a->g.cols);
    DISPATCH(swiglu);
}

fs_status fs_op_route(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_route_args *a)
{
    const char *op = "fs_op_route";
    TRY(start(ctx, op, q, a));
    const fs_route_cfg *c = &a->cfg;
    RULE(c->kind >= FS_ROUTE_SOFTMAX && c->kind <= FS_ROUTE_DS_SIGMOID, "%s: router kind %d", op, c->kind);
    RULE(c->E >= 1 && c->topk >= 1 && c->topk <= c->E, "%s: top-%lld of %lld experts", op, (long long)c->topk,
         (long long)c->E);
    RULE(c->n_group >= 1 && c->E % c->n_group == 0 && c->topk_group >= 1 && c->topk_group <= c->n_group,
         "%s: %lld experts in %lld groups, %lld kept", op, (long long)c->E, (long long)c->n_group,
         (long long)c->topk_group);
    RULE(c->kind == FS_ROUTE_SOFTMAX || c->topk <= c->topk_group * (c->E / c->n_group),
         "%s: top-%lld from %lld groups of %lld experts", op, (long long)c->topk, (long long)c->topk_group,
         (long long)(c->E / c->n_group));
    RULE(c->kind != FS_ROUTE_SOFTMAX || c->n_group == 1, "%s: the softmax router has no groups", op);
    CHK("logits", a->logits, F32, -1, c->E);
    OPT("bias", a->bias, F32, 1, c->E);
    RULE(!a->bias.buf || c->kind == FS_ROUTE_DS_SIGMOID, "%s: operand bias is DeepSeek-V3's (sigmoid router) only", op);
    CHK("idx", a->idx, I32, a->logits.rows, c->topk);
    CHK("wt", a->wt, F32, a->logits.rows, c->topk);
    DISPATCH(route);
}

fs_status fs_op_route_lists(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_lists_args *a)
{
    const char *op = "fs_op_route_lists";
    TRY(start(ctx, op, q, a));
    RULE(a->E >= 1, "%s: %lld experts", op, (long long)a->E);
    CHK("idx", a->idx, I32, -1, -1);
    const int64_t nk = a->idx.rows * a->idx.cols;
    OPT("wt", a->wt, F32, a->idx.rows, a->idx.cols);
    CHK("offs", a->offs, I32, 1, a->E + 1);
    CHK("rows", a->rows, I32, 1, -1);
    RULE(a->rows.cols >= nk, "%s: operand rows has %lld entries, %lld routed rows need them", op,
         (long long)a->rows.cols, (long long)nk);
    OPT("rw", a->rw, F32, 1, -1);
    RULE(!a->rw.buf || a->rw.cols >= nk, "%s: operand rw has %lld entries, %lld routed rows need them", op,
         (long long)a->rw.cols, (long long)nk);
    RULE(!a->rw.buf || a->wt.buf, "%s: operand rw needs operand wt", op);
    DISPATCH(route_lists);
}

fs_status fs_op_gather(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor dst, fs_tensor src, fs_tensor rows)
{
    const char *op = "fs_op_gather";
    fs_gather_args args = {dst, src, rows}, *a = &args;
    TRY(start(ctx, op, q, a));
    CHK("dst", a->dst, F32 | BF16, -1, -1);
    CHK("src", a->src, FS_DTM(a->dst.dt), -1, a->dst.cols);
    CHK("rows", a->rows, I32, 1, a->dst.rows);
    DISPATCH(gather);
}

fs_status fs_op_scatter_add(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_scatter_args *a)
{
    const char *op = "fs_op_scatter_add";
    TRY(start(ctx, op, q, a));
    CHK("dst", a->dst, F32, -1, -1);
    CHK("src", a->src, F32, -1, a->dst.cols);
    CHK("rows", a->rows, I32, 1, a->src.rows);
    OPT("w", a->w, F32, 1, a->src.rows);
    DISPATCH(scatter_add);
}

fs_status fs_op_gate_add(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gate_add_args *a)
{
    const char *op = "fs_op_gate_add";
    TRY(start(ctx, op, q, a));
    CHK("y", a->y, F32, -1, -1);
    CHK("src", a->src, F32, a->y.rows, a->y.cols);
    CHK("x", a->x, F32, a->y.rows, -1);
    CHK("g", a->g, F32, 1, a->x.cols);
    DISPATCH(gate_add);
}

fs_status fs_op_loss(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_loss_args *a)
{
    const char *op = "fs_op_loss";
    TRY(start(ctx, op, q, a));
    RULE(a->mode >= FS_LOSS_EXACT && a->mode <= FS_LOSS_EST, "%s: mode %d", op, a->mode);
    CHK("W", a->W, F32, -1, -1);
    OPT("D", a->D, F32, a->W.rows, a->W.cols);
    CHK("H", a->H, a->mode == FS_LOSS_EXACT ? F32 | F64 : F32, a->W.cols, a->W.cols);
    CHK("out", a->out, F64, 1, 1);
    DISPATCH(loss);
}

fs_status fs_op_pack(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_pack_args *a)
{
    const char *op = "fs_op_pack";
    TRY(start(ctx, op, q, a));
    const int b = a->bits;
    RULE(b == 2 || b == 3 || b == 4 || b == 8, "%s: %d bits", op, b);
    DENSE("src", a->src, U8, -1, -1);
    const int64_t out = a->src.rows, in = a->src.cols;
    switch (a->kind) {
    case FS_PACK_FORGE:
        DENSE("dst", a->dst, U8, out, (in * b + 7) / 8);
        break;
    case FS_PACK_GPTQ_QWEIGHT:
        DENSE("dst", a->dst, I32, (in * b + 31) / 32, out);
        break;
    case FS_PACK_GPTQ_META:
        RULE(in % 4 == 0, "%s: operand src has %lld columns, qmeta has 4 per group", op, (long long)in);
        DENSE("dst", a->dst, I32, in / 4, (out * b + 31) / 32);
        DENSE("dst2", a->dst2, F16, in / 4, out);
        CHK("status", a->status, I64, 1, 1);
        break;
    default:
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: kind %d", op, a->kind);
    }
    DISPATCH(pack);
}
