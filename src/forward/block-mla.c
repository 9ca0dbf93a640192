/* block-mla.c: DeepSeek's Multi-head Latent Attention (ARCHITECTURES.md
 * §5.3-§5.4) into ws->matt, with the taps of its latents.
 *
 * Invariants:
 *  1. Linear slots (fs_lw): with q LoRA q_a 0, kv_a 1, q_b 2, kv_b 3, o 4;
 *     without q_proj 0, kv_a 1, kv_b 2, o 3.
 *  2. q_a_layernorm and kv_a_layernorm use eps f->mla_eps (1e-6).
 *  3. RoPE on the last qk_rope_head_dim columns of every q head and on the
 *     one shared k_pe (kv_a's last columns), interleaved pairs unless
 *     f->interleave is 0; every head's key is [k_nope ; k_pe], assembled by
 *     copies.
 *  4. Scores * f->mla_scale, the softmax with libm's expf (the bytes of the
 *     CPU path before the blocks), heads concatenated [n, nh * v_head_dim].
 */
#include "src/forward/layer.h"

#define TRY(e) do { fs_status t_rc_ = (e); if (t_rc_ != FS_OK) return t_rc_; } while (0)

static fs_tensor mat(fs_tensor t, int64_t n, int64_t cols) { return fs_tensor_2d(t.buf, 0, FS_DT_F32, n, cols); }

fs_status fs_block_mla(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp, fs_tensor *att)
{
    const int64_t n = nseq * T, nh = f->nh, nope = f->nope, rp = f->rope, vh = f->vh, qk = nope + rp;
    const int64_t kc = f->kvr + rp, kvs = nh * (nope + vh);
    const int kvb = f->qr ? 3 : 2, stop = tp ? tp->stop : FS_TAP_NONE;
    att->buf = NULL;
    fs_tensor xn = mat(ws->xn, n, f->H), cq = mat(ws->cq, n, f->qr), ckv = mat(ws->ckv, n, kc);
    fs_tensor c = mat(ws->c, n, f->kvr), Q = mat(ws->mq, n, nh * qk), KV = mat(ws->kv, n, kvs);
    fs_tensor K = mat(ws->K, n, nh * qk), A = mat(ws->matt, n, nh * vh);
    if (f->qr) {
        TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[0], w->b[0], cq));
        fs_rmsnorm_args na = {cq, w->q_a_norm, cq, f->mla_eps};
        TRY(fs_op_rmsnorm(ctx, be, q, &na));
        if (stop == FS_TAP_QB) return tp->fn ? tp->fn(ctx, tp->arg, FS_TAP_QB, -1, cq) : FS_OK;
    }
    TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[1], w->b[1], ckv));
    TRY(fs_op_copy(ctx, be, q, c, fs_tensor_cols(ckv, 0, f->kvr)));
    fs_rmsnorm_args nc = {c, w->kv_a_norm, c, f->mla_eps};
    TRY(fs_op_rmsnorm(ctx, be, q, &nc));
    if (stop == FS_TAP_KVB) return tp->fn ? tp->fn(ctx, tp->arg, FS_TAP_KVB, -1, c) : FS_OK;
    if (f->qr) TRY(fs_fwd_linear_op(ctx, be, q, cq, w->w[2], w->b[2], Q));
    else TRY(fs_fwd_linear_op(ctx, be, q, xn, w->w[0], w->b[0], Q));
    TRY(fs_fwd_linear_op(ctx, be, q, c, w->w[kvb], w->b[kvb], KV));
    fs_rope_args rq = {.x = Q, .inv_freq = ws->inv_freq, .heads = nh, .hs = qk, .c0 = nope, .d = rp, .T = T,
                       .interleaved = f->interleave, .attn_factor = f->attn_factor};
    fs_rope_args rk = rq;
    rk.x = ckv;
    rk.heads = 1;
    rk.hs = 0;
    rk.c0 = f->kvr;
    TRY(fs_op_rope(ctx, be, q, &rq));
    TRY(fs_op_rope(ctx, be, q, &rk));
    for (int64_t h = 0; h < nh; h++) {          /* invariant 3 */
        TRY(fs_op_copy(ctx, be, q, fs_tensor_cols(K, h * qk, nope), fs_tensor_cols(KV, h * (nope + vh), nope)));
        TRY(fs_op_copy(ctx, be, q, fs_tensor_cols(K, h * qk + nope, rp), fs_tensor_cols(ckv, f->kvr, rp)));
    }
    fs_attn_args a = {.q = Q, .k = K, .v = fs_tensor_cols(KV, nope, kvs - nope), .out = A, .nseq = nseq, .T = T,
                      .nh = nh, .nkv = nh, .dqk = qk, .dv = vh, .q_hs = qk, .k_hs = qk, .v_hs = nope + vh,
                      .o_hs = vh, .scale = f->mla_scale, .window = 0};
    TRY(fs_op_attention_libm(ctx, be, q, &a));
    *att = A;
    return FS_OK;
}
