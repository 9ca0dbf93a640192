/* solve-be.h: one linear's GPTQ solve on a backend's queue, with its weight
 * and Hessian resident there (the pipeline's solver; src/quant/layer.c's
 * fs_layer_quantize is the host one, for the options that have no op).
 *
 * The steps and their arithmetic are fs_layer_quantize's, each through the
 * ops of backend.h (decode as the finiteness check, grid, rtn, loss, fill
 * for dead columns, permute, damp, cholinv, gptq), so on the cpu backends the
 * result is the host solver's byte for byte (specifications.md §4.6).  Only
 * small things cross to the host: diag(H) (dead columns and the act-order
 * order are decided there), each inversion's status (the damping retries),
 * and at the end the codes, the grids and the losses. */
#ifndef FS_SOLVE_BE_H
#define FS_SOLVE_BE_H

#include "src/backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The solver's buffers on a backend, grown to the largest linear given and
 * reused (fs_solve_ws_release gives them back; the struct stays usable). */
typedef struct fs_solve_ws {
    fs_buf *w2[2];          /* [rows, cols] F32: the dead-fixed copy, the processing-order one */
    fs_buf *h2[2];          /* [cols, cols] F32: the dead-fixed (permuted) H, U */
    fs_buf *codes[2];       /* [rows, cols] U8: processing order, original order */
    fs_buf *small;          /* qmeta, perm, gcol, diag, statuses, losses */
    uint64_t cap_w, cap_h, cap_c, cap_s;
} fs_solve_ws;

/* Device bytes fs_solve_be needs for a [rows, cols] linear (what the plan and
 * the expert waves count). Cannot fail. */
uint64_t fs_solve_be_bytes(int64_t rows, int64_t cols, int64_t group_size);

/* 1 when every option of q has an op (then the pipeline solves on the
 * backend), 0 with *why naming the first that has none (--grid hmse,
 * --refine-scales: the host solver runs them). */
int fs_solve_be_supports(const fs_quant_opts *q, const char **why);

/* Quantizes the linear W [rows, cols] (F32 on be; on return its dequant, in
 * the original column order) with the Hessian H [cols, cols] (F32 on be, as
 * accumulated: undamped, dead columns included; not modified), on queue q.
 * q->rtn: round to nearest, H then only measures the loss.  res gets what
 * fs_layer_quantize gives except the dequant (NULL: it is W now): qweight,
 * qmeta and perm on the host, the losses, retries, timings.  *wnorm (may be
 * NULL) = trace(W H W^T) of the input W, estimated when q->loss_f32 (the
 * pipeline's relative-loss denominator).  Returns with q drained.  Errors:
 * FS_ERR_NUMERIC (a non-finite weight or Hessian), FS_ERR_NOMEM, the
 * backend's. */
fs_status fs_solve_be(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_solve_ws *ws, fs_tensor W, fs_tensor H,
                      const fs_quant_opts *qo, fs_layer_result *res, double *wnorm);

/* Frees the buffers (the queues are waited for). Accepts a zeroed ws. */
void fs_solve_ws_release(fs_backend *be, fs_solve_ws *ws);

#ifdef __cplusplus
}
#endif

#endif
