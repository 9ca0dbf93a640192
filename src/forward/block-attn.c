/* block-attn.c: the attention block of the llama-style families
 * (ARCHITECTURES.md §2-§3): q, k, v of norm(x) with their biases, qwen3's
 * per-head q/k RMSNorm, half-split rope on the whole head, causal GQA
 * attention (sliding window), into ws->att; o_proj and the residual are
 * layer.c's.  The sums are those of the CPU forward before it (layer.h
 * invariant 2): the vectorised softmax. */
#include <math.h>

#include "src/forward/layer.h"

#define TRY(e) do { fs_status t_rc_ = (e); if (t_rc_ != FS_OK) return t_rc_; } while (0)

fs_status fs_fwd_linear_op(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor x, fs_tensor W, fs_tensor b,
                           fs_tensor y)
{
    if (x.rows == 0) return FS_OK;
    fs_gemm_args g = {.A = x, .B = W, .C = y, .trans_b = 1, .alpha = 1.0f, .beta = 0.0f};
    TRY(fs_op_gemm(ctx, be, q, &g));
    return b.buf ? fs_op_bias_add(ctx, be, q, y, b) : FS_OK;
}

fs_status fs_block_attn(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                        fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp, fs_tensor *att)
{
    (void)tp;                                   /* no tap inside: q/k/v and o are layer.c's */
    const int64_t n = nseq * T, nh = f->nh, nkv = f->nkv, hd = f->hd, qs = nh * hd, ks = nkv * hd;
    fs_tensor xn = fs_tensor_2d(ws->xn.buf, 0, FS_DT_F32, n, f->H);
    fs_tensor Q = fs_tensor_2d(ws->q.buf, 0, FS_DT_F32, n, qs), K = fs_tensor_2d(ws->k.buf, 0, FS_DT_F32, n, ks);
    fs_tensor V = fs_tensor_2d(ws->v.buf, 0, FS_DT_F32, n, ks), A = fs_tensor_2d(ws->att.buf, 0, FS_DT_F32, n, qs);
    TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[FS_Q], w->b[FS_Q], Q));
    TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[FS_K], w->b[FS_K], K));
    TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[FS_V], w->b[FS_V], V));
    if (f->qk_norm) {                           /* per head, before rope */
        fs_rmsnorm_args nq = {fs_tensor_reshape(Q, n * nh, hd), w->q_norm, fs_tensor_reshape(Q, n * nh, hd), f->eps};
        fs_rmsnorm_args nk = {fs_tensor_reshape(K, n * nkv, hd), w->k_norm, fs_tensor_reshape(K, n * nkv, hd), f->eps};
        TRY(fs_op_rmsnorm(ctx, be, q, &nq));
        TRY(fs_op_rmsnorm(ctx, be, q, &nk));
    }
    fs_rope_args rq = {.x = Q, .inv_freq = ws->inv_freq, .heads = nh, .hs = hd, .c0 = 0, .d = hd, .T = T,
                       .interleaved = 0, .attn_factor = f->attn_factor};
    fs_rope_args rk = rq;
    rk.x = K;
    rk.heads = nkv;
    TRY(fs_op_rope(ctx, be, q, &rq));
    TRY(fs_op_rope(ctx, be, q, &rk));
    fs_attn_args a = {.q = Q, .k = K, .v = V, .out = A, .nseq = nseq, .T = T, .nh = nh, .nkv = nkv, .dqk = hd,
                      .dv = hd, .q_hs = hd, .k_hs = hd, .v_hs = hd, .o_hs = hd, .scale = 1.0f / sqrtf((float)hd),
                      .window = f->window};
    TRY(fs_op_attention(ctx, be, q, &a));
    *att = A;
    return FS_OK;
}
