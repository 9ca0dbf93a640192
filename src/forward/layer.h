/* layer.h: the one decoder-layer forward (ARCHITECTURES.md §2-§5), written
 * once against the ops of src/backend/backend.h, used by eval, by quantize's
 * true-sequential passes and by its final MoE pass.
 *
 * Blocks (one file each): the GQA attention block (block-attn.c: q/k/v with
 * biases, qwen3's q/k norms, rope, causal attention with a sliding window,
 * o_proj), DeepSeek's MLA block (block-mla.c), the gated MLP (block-mlp.c:
 * the dense MLP, the shared expert(s) and every routed expert), the MoE block
 * with its routers (block-moe.c); layer.c composes them into the two halves
 * of a layer (attention, FFN), each with a residual add.
 *
 * Invariants:
 *  1. Every computation is an op on queue q of the backend that holds the
 *     weights (fs_lwb) and the batch's buffers (fs_fwd_ws); nothing here reads
 *     or writes the backend's memory, except the row counts of a routing,
 *     which the MoE block downloads (its gemms are sized by them).
 *  2. The order of every sum is the one of the CPU path before the blocks
 *     (same kernels, same calls), so the cpu backends give its bytes.
 *  3. Taps: a pass may stop at a capture point; the input of the linears
 *     there is handed to the tap function (a view in ws, valid until the
 *     next op on the queue), which accumulates a Hessian on the same queue.
 *     Every point, in forward order:
 *       ATTN_IN  norm(x): q, k, v (GQA) or q_a|q, kv_a (MLA)
 *       QB       q_a_layernorm(x q_a^T) (MLA with q LoRA)
 *       KVB      kv_a_layernorm(c) (MLA)
 *       O_IN     the attention output
 *       FFN_IN   norm(x) after the attention's residual (dense MLP, shared
 *                expert, every expert under all-tokens)
 *       DOWN     silu(gate) * up of the dense MLP / the shared expert
 *       EXP_IN   expert e's gathered rows of FFN_IN
 *       EXP_DOWN expert e's silu(gate) * up
 */
#ifndef FS_FWD_LAYER_H
#define FS_FWD_LAYER_H

#include "src/backend/backend.h"
#include "src/models/forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One layer's weights in backend buffers (views into one buffer), the
 * layout of fs_lw. */
typedef struct fs_lwb {
    fs_buf *buf;
    int owned;               /* 0: buf is the caller's (fs_lwb_upload's keep) */
    fs_tensor in_norm, post_norm, q_norm, k_norm, q_a_norm, kv_a_norm, escb, router, sgate;
    fs_tensor w[FS_LW_SLOTS], b[FS_LW_SLOTS];
    fs_tensor *ex;           /* [3 E] */
    int g0, e0, moe, nlin;
} fs_lwb;

/* Allocates layer L's buffer and uploads w into it on queue q (w must stay
 * unchanged until q has run the uploads: an event recorded after, or a sync
 * of q).  keep (optional): a buffer of the caller's reused when large enough
 * (else replaced by a new one, which *keep then holds): the caller frees it,
 * and no work may still use it.  Errors: FS_ERR_NOMEM (the budget), the
 * queue's error. */
fs_status fs_lwb_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_mlayer *L,
                        const fs_lw *w, fs_buf **keep, fs_lwb *out);
/* The view of linear i (fs_lw_weight's order). */
fs_tensor fs_lwb_weight(const fs_lwb *b, int i);
void fs_lwb_free(fs_backend *be, fs_lwb *b);          /* accepts a zeroed one */

/* The buffers of one batch of up to n rows. */
typedef struct fs_fwd_ws {
    int64_t n;
    fs_buf *bufs[24];
    int nbufs;
    fs_tensor x, xn, q, k, v, att, g, u, o, xg, y;
    fs_tensor xh;            /* [n, H] BF16: x rounded to the activations' dtype */
    /* MLA */
    fs_tensor cq, mq, ckv, c, kv, K, matt;
    fs_tensor inv_freq;      /* [1, hd / 2] f->inv_freq */
    /* MoE routing */
    fs_tensor logits, idx, wt, offs, rows, rw, iota;
    int32_t *offs_host;      /* [E + 1]: downloaded row counts */
} fs_fwd_ws;

fs_status fs_fwd_ws_new(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, int64_t n, fs_fwd_ws *ws);
/* The bytes fs_fwd_ws_new allocates on a backend for n rows (the plan's
 * figure of a batch on the device). Cannot fail. */
uint64_t fs_fwd_ws_bytes(const fs_fwd *f, int64_t n);
void fs_fwd_ws_free(fs_backend *be, fs_fwd_ws *ws);   /* accepts a zeroed one */

enum {
    FS_TAP_NONE = 0, FS_TAP_ATTN_IN, FS_TAP_QB, FS_TAP_KVB, FS_TAP_O_IN, FS_TAP_FFN_IN, FS_TAP_DOWN,
    FS_TAP_EXP_IN, FS_TAP_EXP_DOWN
};

/* What a pass captures.  stop: the point after which it stops (FS_TAP_NONE:
 * none).  fn(arg, point, expert, x) is called at stop (experts: once per
 * expert of [e0, e1) with rows, at EXP_IN or EXP_DOWN), x the rows of the
 * batch at that point.  all[e]: expert e's taps take every row of the batch
 * (all-tokens policy) instead of its routed ones. */
typedef struct fs_taps {
    int stop;
    fs_status (*fn)(fs_ctx *ctx, void *arg, int point, int expert, fs_tensor x);
    void *arg;
    int e0, e1;
    const int *all;
} fs_taps;

/* The attention half on the batch x = ws->x [n, H] (nseq sequences of T):
 * x += o_proj(attention(norm(x))), or a stop at ATTN_IN, QB, KVB or O_IN
 * (x unchanged).  Errors: the ops'. */
fs_status fs_fwd_attn_half(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                           fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp);
/* The FFN half: x += MLP(norm(x)) or MoE(norm(x)), or a stop at FFN_IN
 * (norm(x) into ws->xn), DOWN, EXP_IN or EXP_DOWN (x unchanged). */
fs_status fs_fwd_ffn_half(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                          fs_fwd_ws *ws, int64_t n, const fs_taps *tp);
/* Both halves (no taps). */
fs_status fs_fwd_layer_run(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                           fs_fwd_ws *ws, int64_t nseq, int64_t T);
/* The routing of xn = ws->xn [n, H] into ws->idx, ws->wt (the router of the
 * family, f32 logits). */
fs_status fs_fwd_route(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t n);

/* ---- blocks (layer.c composes them) ---- */
fs_status fs_block_attn(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                        fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp, fs_tensor *att);
fs_status fs_block_mla(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t nseq, int64_t T, const fs_taps *tp, fs_tensor *att);
/* out [n, H] = down(silu(gate xin) * up xin) (+ biases), g/u [n, >= I]
 * scratch; tap point DOWN of tp (when tp->stop == down_point) gets silu * up
 * and the block stops (returns with *stopped = 1). */
fs_status fs_block_mlp(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor xin, const fs_tensor *W,
                       const fs_tensor *B, int64_t I, fs_tensor g, fs_tensor u, fs_tensor out,
                       const fs_taps *tp, int down_point, int expert, int *stopped);
fs_status fs_block_moe(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_lwb *w,
                       fs_fwd_ws *ws, int64_t n, const fs_taps *tp, int *stopped);

/* A linear: y [n, out] = x W^T (+ b). */
fs_status fs_fwd_linear_op(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor x, fs_tensor W, fs_tensor b,
                           fs_tensor y);

#ifdef __cplusplus
}
#endif

#endif
