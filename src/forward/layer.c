/* layer.c: a decoder layer from its blocks (layer.h): the attention half
 * (input_layernorm, the GQA or MLA block, o_proj, the residual) and the FFN
 * half (post_attention_layernorm, the dense MLP or the MoE block, the
 * residual), each able to stop at a tap. */
#include "src/forward/layer.h"

#define TRY(e) do { fs_status t_rc_ = (e); if (t_rc_ != FS_OK) return t_rc_; } while (0)

static fs_status tap(fs_ctx *ctx, const fs_taps *tp, int point, fs_tensor x)
{
    return tp->fn ? tp->fn(ctx, tp->arg, point, -1, x) : FS_OK;
}

fs_status fs_fwd_attn_half(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                           fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp)
{
    const int64_t n = nseq * T, H = f->H;
    const int stop = tp ? tp->stop : FS_TAP_NONE;
    fs_tensor x = fs_tensor_2d(ws->x.buf, 0, FS_DT_F32, n, H), xn = fs_tensor_2d(ws->xn.buf, 0, FS_DT_F32, n, H);
    fs_rmsnorm_args na = {x, w->in_norm, xn, f->eps};
    TRY(fs_op_rmsnorm(ctx, be, q, &na));
    if (stop == FS_TAP_ATTN_IN) return tap(ctx, tp, stop, xn);
    fs_tensor att = fs_tensor_none();
    if (f->mla) TRY(fs_block_mla(ctx, be, q, f, w, ws, nseq, T, tp, &att));
    else TRY(fs_block_attn(ctx, be, q, f, w, ws, nseq, T, tp, &att));
    if (!att.buf) return FS_OK;                               /* stopped at QB or KVB */
    if (stop == FS_TAP_O_IN) return tap(ctx, tp, stop, att);
    const int io = w->g0 - 1;                                 /* o_proj: the last attention linear */
    fs_tensor o = fs_tensor_2d(ws->o.buf, 0, FS_DT_F32, n, H);
    TRY(fs_fwd_linear_op(ctx, be, q, att, w->w[io], w->b[io], o));
    return fs_op_add(ctx, be, q, x, o);
}

fs_status fs_fwd_ffn_half(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                          fs_fwd_ws *ws, int64_t n, const fs_taps *tp)
{
    const int64_t H = f->H;
    const int stop = tp ? tp->stop : FS_TAP_NONE;
    fs_tensor x = fs_tensor_2d(ws->x.buf, 0, FS_DT_F32, n, H), xn = fs_tensor_2d(ws->xn.buf, 0, FS_DT_F32, n, H);
    fs_tensor o = fs_tensor_2d(ws->o.buf, 0, FS_DT_F32, n, H);
    fs_rmsnorm_args na = {x, w->post_norm, xn, f->eps};
    TRY(fs_op_rmsnorm(ctx, be, q, &na));
    if (stop == FS_TAP_FFN_IN) return tap(ctx, tp, stop, xn);
    int st = 0;
    if (!w->moe || stop == FS_TAP_DOWN) {                     /* dense MLP, or the shared expert's down input */
        const int g0 = w->g0;
        TRY(fs_block_mlp(ctx, be, q, xn, &w->w[g0], &w->b[g0], w->w[g0].rows, ws->g, ws->u, o, tp, FS_TAP_DOWN, -1,
                         &st));
    } else {
        TRY(fs_block_moe(ctx, be, q, f, w, ws, n, tp, &st));
    }
    return st ? FS_OK : fs_op_add(ctx, be, q, x, o);
}

fs_status fs_fwd_layer_run(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                           fs_fwd_ws *ws, int64_t nseq, int64_t T)
{
    TRY(fs_fwd_attn_half(ctx, be, q, f, w, ws, nseq, T, NULL));
    return fs_fwd_ffn_half(ctx, be, q, f, w, ws, nseq * T, NULL);
}
