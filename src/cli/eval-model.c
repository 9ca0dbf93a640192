/* eval-model.c: one model streamed through eval (eval-model.h): opened and
 * validated, its windows embedded, its layers read ahead, decoded and run
 * over every window in batches, then its head. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/eval-model.h"

#define BATCH_TOKENS 65536   /* tokens per forward batch: bounds the scratch memory */
#define Q FS_QUEUE_COMPUTE

fs_status fs_evm_open(fs_ctx *ctx, const char *dir, fs_evm *e)
{
    memset(e, 0, sizeof *e);
    e->dir = dir;
    fs_status rc = fs_ckpt_open(ctx, dir, &e->c);
    if (rc == FS_OK && !e->c->config) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no config.json", dir);
    if (rc == FS_OK) rc = fs_model_from_config(ctx, e->c->config, "config.json", &e->m);
    if (rc == FS_OK) rc = fs_model_validate(ctx, e->m, e->c, FS_CHECK_QUANTIZED);   /* every size the forward trusts */
    if (rc == FS_OK) rc = fs_qinfo_from_config(ctx, e->c->config, &e->qi);
    if (rc == FS_OK) rc = fs_fwd_init(ctx, e->c->config, e->m, &e->fw);
    return rc;
}

fs_status fs_evm_same_shape(fs_ctx *ctx, const fs_evm *b, const fs_evm *q)
{
    const fs_model *mb = b->m, *mq = q->m;
    if (strcmp(mb->family, mq->family))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--base %s and --model %s are not the same architecture: model_type %s vs %s",
                          b->dir, q->dir, mb->model_type, mq->model_type);
    const struct { const char *what; int64_t vb, vq; } k[] = {
        {"vocab_size", mb->vocab, mq->vocab},
        {"hidden_size", mb->hidden, mq->hidden},
        {"num_hidden_layers", mb->nlayers, mq->nlayers},
        {"num_attention_heads", b->fw.nh, q->fw.nh},
        {"num_key_value_heads", b->fw.nkv, q->fw.nkv},
        {"head_dim", b->fw.hd, q->fw.hd},
        {"intermediate_size", b->fw.inter, q->fw.inter},
        {"experts", b->fw.E, q->fw.E},
        {"experts per token", b->fw.topk, q->fw.topk},
        {"expert width", b->fw.Ie, q->fw.Ie},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (k[i].vb != k[i].vq)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "--base %s and --model %s differ: %s %lld vs %lld", b->dir, q->dir,
                              k[i].what, (long long)k[i].vb, (long long)k[i].vq);
    return FS_OK;
}

fs_status fs_evm_start(fs_ctx *ctx, fs_evm *e, fs_backend *be, const fs_tokens *tk, const size_t *starts,
                       int64_t nw, int64_t L, int f32)
{
    const int64_t H = e->fw.H, n = nw * L;
    e->L = L;
    e->nw = nw;
    e->f32 = f32;
    e->bw = BATCH_TOKENS / L > 0 ? BATCH_TOKENS / L : 1;
    e->x = fs_alloc2((size_t)n, (size_t)H * sizeof(float));
    if (!e->x) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: activations of %lld tokens", e->dir, (long long)n);
    fs_status rc = fs_ckpt_read_f32(ctx, e->c, "model.embed_tokens.weight", &e->E);
    if (rc != FS_OK) return rc;
    for (int64_t w = 0; w < nw; w++)
        for (int64_t t = 0; t < L; t++)
            memcpy(e->x + (w * L + t) * H, e->E + (int64_t)tk->ids[starts[w] + (size_t)t] * H,
                   sizeof(float) * (size_t)H);
    if (!f32) fs_fwd_round_bf16(e->x, (size_t)(n * H));
    if ((rc = fs_fwd_ws_new(ctx, be, Q, &e->fw, (nw < e->bw ? nw : e->bw) * L, &e->ws)) != FS_OK) return rc;
    if ((rc = fs_lr_new(ctx, e->c, e->m, 2, 1, 0, &e->lr)) != FS_OK) return rc;
    return fs_lr_start(ctx, e->lr, 0);
}

fs_status fs_evm_layer(fs_ctx *ctx, fs_evm *e, fs_backend *be, int l)
{
    const int64_t H = e->fw.H, L = e->L, n = e->nw * L;
    fs_lw lw;
    fs_lwb lwb = {0};
    fs_status rc;
    if ((rc = fs_lr_acquire(ctx, e->lr, l)) != FS_OK || (rc = fs_lr_start(ctx, e->lr, l + 1)) != FS_OK) return rc;
    rc = fs_lw_load(ctx, e->c, &e->qi, e->m, &e->fw, l, &lw);
    fs_lr_release(e->lr, l);
    if (rc != FS_OK) return rc;
    rc = fs_lwb_upload(ctx, be, Q, &e->fw, &e->m->layers[l], &lw, NULL, &lwb);
    if (rc == FS_OK) rc = fs_be_sync(ctx, be, Q);       /* the host copy goes next */
    fs_lw_free(&lw);
    for (int64_t w = 0; rc == FS_OK && w < e->nw; w += e->bw) {   /* the batch in, the layer, the batch out */
        const int64_t b = e->nw - w < e->bw ? e->nw - w : e->bw;
        float *xb = e->x + w * L * H;
        const uint64_t bytes = (uint64_t)(b * L * H) * sizeof(float);
        rc = fs_be_upload(ctx, be, Q, e->ws.x.buf, 0, xb, bytes);
        if (rc == FS_OK) rc = fs_fwd_layer_run(ctx, be, Q, &e->fw, &lwb, &e->ws, b, L);
        if (rc == FS_OK) rc = fs_be_download(ctx, be, Q, xb, e->ws.x.buf, 0, bytes);
        if (rc == FS_OK) rc = fs_be_sync(ctx, be, Q);
    }
    fs_lwb_free(be, &lwb);
    if (rc != FS_OK) return rc;
    if (!e->f32) fs_fwd_round_bf16(e->x, (size_t)(n * H));
    /* finite weights can still overflow float: refused, never a perplexity of NaN */
    char what[700];
    snprintf(what, sizeof what, "%s: activations after model.layers.%d (the weights overflow float32)", e->dir, l);
    return fs_check_finite(ctx, what, e->x, (size_t)(n * H));
}

fs_status fs_evm_head(fs_ctx *ctx, fs_evm *e, fs_backend *be)
{
    const int64_t H = e->fw.H, V = e->fw.V, L = e->L;
    float *nrm = NULL, *head = NULL;
    fs_status rc = fs_ckpt_read_f32(ctx, e->c, "model.norm.weight", &nrm);
    if (rc == FS_OK && fs_ckpt_find(e->c, "lm_head.weight") && !e->m->tied) {
        int64_t o, k;
        rc = fs_qread_linear(ctx, e->c, &e->qi, "lm_head", &head, &o, &k);
    }
    const float *Wh = head ? head : e->E;
    /* the head on the backend: [V, H] weights, the final norm, a window's logits */
#define A64(b) (((b) + 63) / 64 * 64)
    const uint64_t whb = A64((uint64_t)(V * H) * 4), nb = A64((uint64_t)H * 4), xb = A64((uint64_t)(L * H) * 4);
#undef A64
    if (rc == FS_OK) rc = fs_be_alloc(ctx, be, whb + nb + 2 * xb + (uint64_t)(L * V) * 4, "lm_head and logits", &e->hb);
    if (rc == FS_OK) rc = fs_be_upload(ctx, be, Q, e->hb, 0, Wh, (uint64_t)(V * H) * 4);
    if (rc == FS_OK) rc = fs_be_upload(ctx, be, Q, e->hb, whb, nrm, (uint64_t)H * 4);
    if (rc == FS_OK) rc = fs_be_sync(ctx, be, Q);
    free(head); free(nrm); free(e->E);                  /* uploaded: the host copies go */
    e->E = NULL;
    if (rc != FS_OK) return rc;
    e->tW = fs_tensor_2d(e->hb, 0, FS_DT_F32, V, H);
    e->tn = fs_tensor_2d(e->hb, whb, FS_DT_F32, 1, H);
    e->tx = fs_tensor_2d(e->hb, whb + nb, FS_DT_F32, L, H);
    e->txn = fs_tensor_2d(e->hb, whb + nb + xb, FS_DT_F32, L, H);
    e->tl = fs_tensor_2d(e->hb, whb + nb + 2 * xb, FS_DT_F32, L, V);
    return FS_OK;
}

fs_status fs_evm_logits(fs_ctx *ctx, fs_evm *e, fs_backend *be, int64_t w, float *logits)
{
    const int64_t H = e->fw.H, V = e->fw.V, L = e->L;
    fs_rmsnorm_args na = {e->tx, e->tn, e->txn, e->fw.eps};
    fs_status rc = fs_be_upload(ctx, be, Q, e->hb, e->tx.off, e->x + w * L * H, (uint64_t)(L * H) * 4);
    if (rc == FS_OK) rc = fs_op_rmsnorm(ctx, be, Q, &na);
    if (rc == FS_OK) rc = fs_fwd_linear_op(ctx, be, Q, e->txn, e->tW, fs_tensor_none(), e->tl);
    if (rc == FS_OK) rc = fs_be_download(ctx, be, Q, logits, e->hb, e->tl.off, (uint64_t)(L * V) * 4);
    if (rc == FS_OK) rc = fs_be_sync(ctx, be, Q);
    return rc;
}

void fs_evm_close(fs_backend *be, fs_evm *e)
{
    fs_lr_free(e->lr);
    fs_fwd_ws_free(be, &e->ws);
    if (be) fs_be_free(be, e->hb);
    free(e->x);
    free(e->E);
    fs_fwd_free(&e->fw);
    fs_model_free(e->m);
    fs_ckpt_close(e->c);
    memset(e, 0, sizeof *e);
}
