/* eval-model.h: one model streamed through `forge-stream eval` (its
 * checkpoint, description, layer reader, batch buffers and the boundary
 * activations of every window), and the per-token statistics of eval
 * (perplexity, and with --base the KL divergence and top-token agreement
 * against the original; specifications.md §11.2).
 *
 * eval runs one fs_evm (plain eval) or two (--base: the original and the
 * quantized model, layer l of both before layer l + 1 of either, on the
 * same windows), each on the same backend.  Invariants:
 *  1. x holds every window's rows [nw * L, H] in f32 (rounded to BF16 after
 *     each layer unless f32): the boundary, one per model.
 *  2. The logits of window w are the final norm and the head on x's rows of
 *     w; the statistics take them in double.
 */
#ifndef FS_EVAL_MODEL_H
#define FS_EVAL_MODEL_H

#include "src/forward/layer.h"
#include "src/formats/tokens.h"
#include "src/models/forward.h"
#include "stream/layerio.h"

typedef struct fs_evm {
    const char *dir;
    fs_ckpt *c;
    fs_model *m;
    fs_qinfo qi;
    fs_fwd fw;
    fs_layer_reader *lr;
    fs_fwd_ws ws;
    float *x;                /* [n, H]: the boundary of every window */
    float *E;                /* embeddings, until the head is uploaded */
    int64_t L, nw, bw;       /* window length, windows, windows per batch */
    int f32;                 /* activations kept in f32 (else rounded to BF16) */
    fs_buf *hb;              /* lm_head [V, H], final norm, one window's rows, normed rows, logits */
    fs_tensor tW, tn, tx, txn, tl;
} fs_evm;

/* Opens dir and checks it as eval trusts it (config.json, §8 validation,
 * quantization config, the forward's description).  Errors: as fs_ckpt_open,
 * fs_model_from_config, fs_model_validate, fs_fwd_init. */
fs_status fs_evm_open(fs_ctx *ctx, const char *dir, fs_evm *e);
/* FS_ERR_USAGE naming both folders and the first size that differs when q
 * cannot be compared token for token with base (architecture, vocabulary,
 * hidden size, layers, heads, widths). */
fs_status fs_evm_same_shape(fs_ctx *ctx, const fs_evm *base, const fs_evm *q);
/* Embeds windows starts[0..nw) of L tokens of tk and prepares the batch
 * buffers and the layer reader.  Errors: FS_ERR_NOMEM, I/O, the backend's. */
fs_status fs_evm_start(fs_ctx *ctx, fs_evm *e, fs_backend *be, const fs_tokens *tk, const size_t *starts,
                       int64_t nw, int64_t L, int f32);
/* Layer l over every window (reads it, decodes it, runs it, frees it);
 * activations that overflow float are refused (FS_ERR_NUMERIC). */
fs_status fs_evm_layer(fs_ctx *ctx, fs_evm *e, fs_backend *be, int l);
/* The final norm and the head (lm_head, or the embeddings when tied) on the backend. */
fs_status fs_evm_head(fs_ctx *ctx, fs_evm *e, fs_backend *be);
/* Window w's logits [L, V] into logits. */
fs_status fs_evm_logits(fs_ctx *ctx, fs_evm *e, fs_backend *be, int64_t w, float *logits);
void fs_evm_close(fs_backend *be, fs_evm *e);     /* accepts a zeroed one */

/* ---- per-token statistics (eval-stats.c) ---- */

/* Accumulates, per scored token (position t predicting the id at t + 1):
 * the NLL of the model and (with a base) of the original, KL(base || model),
 * whether the top-1 ids agree, and the differences of probability. */
typedef struct fs_evstat {
    int64_t n, cap;
    double *kl;              /* [cap] per token (with a base) */
    double nll, nll_base;    /* sums */
    double dp2, dp2_top;     /* sums of squared probability differences */
    int64_t same;
} fs_evstat;

typedef struct fs_evsum {
    int64_t tokens;
    double nll, ppl, nll_base, ppl_base;
    double kl_mean, kl_median, kl_p99, kl_max;
    double same_top;         /* share in [0, 1] */
    double rms_dp;           /* RMS of p_model(target) - p_base(target) (llama.cpp's RMS Δp) */
    double rms_dp_top;       /* RMS of p_model(top) - p_base(top), top = the base's top-1 */
} fs_evsum;

/* cap: tokens to be added (for the KL values; 0 without a base). */
fs_status fs_evstat_init(fs_ctx *ctx, fs_evstat *s, int64_t cap);
/* One token: lg the model's logits [V], lb the base's or NULL. */
void fs_evstat_add(fs_evstat *s, const float *lg, const float *lb, int64_t V, uint32_t target);
/* The figures (sorts the KL values).  Cannot fail. */
void fs_evstat_finish(fs_evstat *s, fs_evsum *out);
void fs_evstat_free(fs_evstat *s);
/* The q-quantile of sorted v[n] (linear between the two nearest ranks: the
 * value at position q (n - 1)). */
double fs_quantile_sorted(const double *v, int64_t n, double q);

#endif
