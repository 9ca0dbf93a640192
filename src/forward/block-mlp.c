/* block-mlp.c: the gated MLP (ARCHITECTURES.md §4): down(silu(gate x) * up x)
 * with optional biases; the dense MLP, the shared expert(s) and each routed
 * expert run it, so its tap (DOWN, or EXP_DOWN for an expert) is here. */
#include "src/forward/layer.h"

#define TRY(e) do { fs_status t_rc_ = (e); if (t_rc_ != FS_OK) return t_rc_; } while (0)

fs_status fs_block_mlp(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor xin, const fs_tensor *W,
                       const fs_tensor *B, int64_t I, fs_tensor g, fs_tensor u, fs_tensor out,
                       const fs_taps *tp, int down_point, int expert, int *stopped)
{
    const int64_t n = xin.rows;
    const fs_tensor none = fs_tensor_none();
    /* contiguous [n, I]: the layout (and so the bytes) of the CPU path before */
    fs_tensor G = fs_tensor_2d(g.buf, g.off, FS_DT_F32, n, I), U = fs_tensor_2d(u.buf, u.off, FS_DT_F32, n, I);
    *stopped = 0;
    TRY(fs_fwd_linear_op(ctx, be, q, xin, W[0], B ? B[0] : none, G));
    TRY(fs_fwd_linear_op(ctx, be, q, xin, W[1], B ? B[1] : none, U));
    TRY(fs_op_swiglu(ctx, be, q, G, U, G));
    if (tp && tp->stop == down_point) {
        *stopped = 1;
        return tp->fn ? tp->fn(ctx, tp->arg, down_point, expert, G) : FS_OK;
    }
    return fs_fwd_linear_op(ctx, be, q, G, W[2], B ? B[2] : none, out);
}
