/* weights.c: one layer's weights in one backend buffer (layer.h fs_lwb), each
 * tensor of fs_lw at a 64-byte aligned offset, uploaded from the host copy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/forward/layer.h"

/* Places a [rows, cols] F32 tensor at *off (when p is present), advancing *off. */
static fs_tensor place(uint64_t *off, const float *p, int64_t rows, int64_t cols)
{
    if (!p) return fs_tensor_none();
    fs_tensor t = fs_tensor_2d(NULL, *off, FS_DT_F32, rows, cols);
    *off += ((uint64_t)(rows * cols) * 4 + 63) / 64 * 64;
    return t;
}

fs_tensor fs_lwb_weight(const fs_lwb *b, int i)
{
    return i < b->e0 ? b->w[i] : b->ex[i - b->e0];
}

void fs_lwb_free(fs_backend *be, fs_lwb *b)
{
    if (b->owned) fs_be_free(be, b->buf);
    free(b->ex);
    memset(b, 0, sizeof *b);
}

fs_status fs_lwb_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fwd *f, const fs_mlayer *L,
                        const fs_lw *w, fs_buf **keep, fs_lwb *b)
{
    memset(b, 0, sizeof *b);
    b->g0 = w->g0;
    b->e0 = w->e0;
    b->moe = w->moe;
    b->nlin = L->nlin;
    const int nex = L->nlin - w->e0;
    if (nex > 0 && !(b->ex = calloc((size_t)nex, sizeof *b->ex)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "model.layers.%d: expert views", L->index);
    uint64_t off = 0;
    const int64_t H = f->H;
    b->in_norm = place(&off, w->in_norm, 1, H);
    b->post_norm = place(&off, w->post_norm, 1, H);
    b->q_norm = place(&off, w->q_norm, 1, f->hd);
    b->k_norm = place(&off, w->k_norm, 1, f->hd);
    b->q_a_norm = place(&off, w->q_a_norm, 1, f->qr);
    b->kv_a_norm = place(&off, w->kv_a_norm, 1, f->kvr);
    b->escb = place(&off, w->escb, 1, f->E);
    b->router = place(&off, w->router, f->E, H);
    b->sgate = place(&off, w->sgate, 1, H);
    for (int i = 0; i < L->nlin; i++) {
        const float *p = i < w->e0 ? w->w[i] : w->ex[i - w->e0];
        fs_tensor t = place(&off, p, L->lin[i].out, L->lin[i].in);
        if (i < w->e0) {
            b->w[i] = t;
            b->b[i] = place(&off, w->b[i], 1, L->lin[i].out);
        } else {
            b->ex[i - w->e0] = t;
        }
    }
    char what[64];
    snprintf(what, sizeof what, "weights of model.layers.%d", L->index);
    fs_status rc = FS_OK;
    if (keep && *keep && fs_buf_size(*keep) >= (off ? off : 64)) {
        b->buf = *keep;                        /* reused: no new pages to fault in */
    } else {
        if (keep) { fs_be_free(be, *keep); *keep = NULL; }
        rc = fs_be_alloc(ctx, be, off ? off : 64, keep ? "layer weights" : what, &b->buf);
        if (rc != FS_OK) { free(b->ex); memset(b, 0, sizeof *b); return rc; }
        if (keep) *keep = b->buf;
    }
    b->owned = !keep;
    /* every view gets the buffer, every present tensor its bytes */
#define UP(t, p)                                                                                  \
    do {                                                                                          \
        if (p) {                                                                                  \
            (t).buf = b->buf;                                                                     \
            if (rc == FS_OK)                                                                      \
                rc = fs_be_upload(ctx, be, q, b->buf, (t).off, (p), (uint64_t)((t).rows * (t).cols) * 4); \
        }                                                                                         \
    } while (0)
    UP(b->in_norm, w->in_norm);
    UP(b->post_norm, w->post_norm);
    UP(b->q_norm, w->q_norm);
    UP(b->k_norm, w->k_norm);
    UP(b->q_a_norm, w->q_a_norm);
    UP(b->kv_a_norm, w->kv_a_norm);
    UP(b->escb, w->escb);
    UP(b->router, w->router);
    UP(b->sgate, w->sgate);
    for (int i = 0; i < L->nlin; i++) {
        if (i < w->e0) {
            UP(b->w[i], w->w[i]);
            UP(b->b[i], w->b[i]);
        } else {
            UP(b->ex[i - w->e0], w->ex[i - w->e0]);
        }
    }
#undef UP
    if (rc != FS_OK) fs_lwb_free(be, b);
    return rc;
}
