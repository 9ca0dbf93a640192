/* ws.c: the buffers of one batch of the layer forward (layer.h fs_fwd_ws),
 * sized for the widest layer of the model (f->ffn_max). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/forward/layer.h"

/* One buffer; with be NULL only its bytes, added to *dry (fs_fwd_ws_bytes:
 * the same list, so the plan's figure is what the run allocates). */
static fs_status one(fs_ctx *ctx, fs_backend *be, fs_fwd_ws *ws, const char *what, fs_dtype dt, int64_t rows,
                     int64_t cols, fs_tensor *t, uint64_t *dry)
{
    if (rows < 1) rows = 1;
    if (cols < 1) cols = 1;
    if (!be) {
        *dry += (uint64_t)rows * (uint64_t)cols * fs_dtype_size(dt);
        return FS_OK;
    }
    fs_buf *b = NULL;
    if (ws->nbufs == (int)(sizeof ws->bufs / sizeof ws->bufs[0]))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "forward buffers: too many");
    fs_status rc = fs_be_alloc(ctx, be, (uint64_t)rows * (uint64_t)cols * fs_dtype_size(dt), what, &b);
    if (rc != FS_OK) return rc;
    ws->bufs[ws->nbufs++] = b;
    *t = fs_tensor_2d(b, 0, dt, rows, cols);
    return FS_OK;
}

void fs_fwd_ws_free(fs_backend *be, fs_fwd_ws *ws)
{
    for (int i = 0; i < ws->nbufs; i++) fs_be_free(be, ws->bufs[i]);
    free(ws->offs_host);
    memset(ws, 0, sizeof *ws);
}

static fs_status build(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, int64_t n, fs_fwd_ws *ws,
                       uint64_t *dry)
{
    memset(ws, 0, sizeof *ws);
    ws->n = n;
    const int64_t H = f->H, F = f->ffn_max;
    const fs_dtype F32 = FS_DT_F32, I32 = FS_DT_I32;
    fs_status rc = FS_OK;
#define ONE(what, dt, r, c, t) if (rc == FS_OK) rc = one(ctx, be, ws, what, dt, r, c, &ws->t, dry)
    ONE("layer input batch", F32, n, H, x);
    ONE("normed batch", F32, n, H, xn);
    ONE("rounded batch", FS_DT_BF16, n, H, xh);
    ONE("block output", F32, n, H, o);
    ONE("gate", F32, n, F, g);
    ONE("up", F32, n, F, u);
    if (f->mla) {
        const int64_t qk = f->nope + f->rope;
        ONE("MLA q_a", F32, n, f->qr, cq);
        ONE("MLA q", F32, n, f->nh * qk, mq);
        ONE("MLA kv_a", F32, n, f->kvr + f->rope, ckv);
        ONE("MLA latent", F32, n, f->kvr, c);
        ONE("MLA kv", F32, n, f->nh * (f->nope + f->vh), kv);
        ONE("MLA keys", F32, n, f->nh * qk, K);
        ONE("MLA attention", F32, n, f->nh * f->vh, matt);
    } else {
        ONE("q", F32, n, f->nh * f->hd, q);
        ONE("k", F32, n, f->nkv * f->hd, k);
        ONE("v", F32, n, f->nkv * f->hd, v);
        ONE("attention", F32, n, f->nh * f->hd, att);
    }
    ONE("rope frequencies", F32, 1, f->hd / 2, inv_freq);
    if (rc == FS_OK && be && f->hd / 2 > 0)
        rc = fs_be_upload(ctx, be, q, ws->inv_freq.buf, 0, f->inv_freq, sizeof(float) * (uint64_t)(f->hd / 2));
    if (f->E > 0) {
        const int64_t K = f->topk;
        ONE("expert rows", F32, n, H, xg);
        ONE("expert output", F32, n, H, y);
        ONE("router logits", F32, n, f->E, logits);
        ONE("routing", I32, n, K, idx);
        ONE("routing weights", F32, n, K, wt);
        ONE("expert offsets", I32, 1, f->E + 1, offs);
        ONE("expert row lists", I32, 1, n * K, rows);
        ONE("expert row weights", F32, 1, n * K, rw);
        ONE("every row", I32, 1, n, iota);
        if (!be) return rc;                  /* a dry run: no host copies */
        int32_t *io = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        ws->offs_host = malloc(sizeof(int32_t) * (size_t)(f->E + 1));
        if (rc == FS_OK && (!io || !ws->offs_host)) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "expert row lists");
        for (int64_t i = 0; io && i < n; i++) io[i] = (int32_t)i;
        if (rc == FS_OK) rc = fs_be_upload(ctx, be, q, ws->iota.buf, 0, io, sizeof(int32_t) * (uint64_t)n);
        if (rc == FS_OK) rc = fs_be_sync(ctx, be, q);        /* io is freed next */
        free(io);
    }
#undef ONE
    if (rc != FS_OK && be) fs_fwd_ws_free(be, ws);
    return rc;
}

fs_status fs_fwd_ws_new(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, int64_t n, fs_fwd_ws *ws)
{
    uint64_t dry = 0;
    return build(ctx, be, q, f, n, ws, &dry);
}

uint64_t fs_fwd_ws_bytes(const fs_fwd *f, int64_t n)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_fwd_ws ws;
    uint64_t dry = 0;
    (void)build(&ctx, NULL, FS_QUEUE_COMPUTE, f, n, &ws, &dry);
    return dry;
}
