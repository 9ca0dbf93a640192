/* mla.c: DeepSeek MLA attention and decoder layer (mla.h).
 *
 * Attention is cpu/attention.c's core: per head the key [T, nope + rope] is
 * assembled from k_nope (kv rows) and the shared k_pe, the query is the
 * contiguous head slice of q, the softmax takes expf (this path's bytes). */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

#include "src/models/mla.h"
#include "src/models/moe.h"

void fs_mla_buf_free(fs_mla_buf *b)
{
    free(b->cq); free(b->q); free(b->ckv); free(b->c); free(b->kv); free(b->att);
    memset(b, 0, sizeof *b);
}

fs_status fs_mla_buf_new(fs_ctx *ctx, const fs_fwd *f, int64_t n, fs_mla_buf *b)
{
    memset(b, 0, sizeof *b);
    const size_t N = (size_t)(n ? n : 1);
    b->cq = fs_alloc2(N, (size_t)(f->qr ? f->qr : 1) * 4);
    b->q = fs_alloc2(N, (size_t)(f->nh * (f->nope + f->rope)) * 4);
    b->ckv = fs_alloc2(N, (size_t)(f->kvr + f->rope) * 4);
    b->c = fs_alloc2(N, (size_t)f->kvr * 4);
    b->kv = fs_alloc2(N, (size_t)(f->nh * (f->nope + f->vh)) * 4);
    b->att = fs_alloc2(N, (size_t)(f->nh * f->vh) * 4);
    if (!b->cq || !b->q || !b->ckv || !b->c || !b->kv || !b->att) {
        fs_mla_buf_free(b);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "MLA activations of %lld tokens", (long long)n);
    }
    return FS_OK;
}

int fs_mla_slot_kvb(const fs_fwd *f) { return f->qr ? 3 : 2; }
int fs_mla_slot_o(const fs_fwd *f) { return f->qr ? 4 : 3; }

void fs_mla_latents(const fs_fwd *f, const fs_lw *w, const float *xn, int64_t n, fs_mla_buf *b)
{
    const int64_t H = f->H, kc = f->kvr + f->rope;
    if (f->qr) {
        fs_fwd_linear(xn, w->w[0], w->b[0], n, H, f->qr, b->cq);
        fs_fwd_rmsnorm(b->cq, w->q_a_norm, n, f->qr, f->mla_eps, b->cq);
    }
    fs_fwd_linear(xn, w->w[1], w->b[1], n, H, kc, b->ckv);
    for (int64_t t = 0; t < n; t++) memcpy(b->c + t * f->kvr, b->ckv + t * kc, sizeof(float) * (size_t)f->kvr);
    fs_fwd_rmsnorm(b->c, w->kv_a_norm, n, f->kvr, f->mla_eps, b->c);
}

fs_status fs_mla_attend(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, const float *xn, int64_t nseq,
                        int64_t T, fs_mla_buf *b)
{
    const int64_t n = nseq * T, nh = f->nh, nope = f->nope, rp = f->rope, vh = f->vh, qk = nope + rp;
    const int64_t qs = nh * qk, kc = f->kvr + rp, kvs = nh * (nope + vh), as = nh * vh;
    if (f->qr) fs_fwd_linear(b->cq, w->w[2], w->b[2], n, f->qr, qs, b->q);
    else fs_fwd_linear(xn, w->w[0], w->b[0], n, f->H, qs, b->q);
    const int kvb = fs_mla_slot_kvb(f);
    fs_fwd_linear(b->c, w->w[kvb], w->b[kvb], n, f->kvr, kvs, b->kv);
    /* rope on every q head's last `rope` columns and on the shared k_pe (invariant 3) */
    fs_cpu_rope(b->q, qs, n, nh, qk, nope, rp, f->interleave, f->inv_freq, f->attn_factor, T);
    fs_cpu_rope(b->ckv, kc, n, 1, 0, f->kvr, rp, f->interleave, f->inv_freq, f->attn_factor, T);
    fs_cpu_attn j = {
        .nseq = nseq, .T = T, .nh = nh, .nkv = nh, .dqk = qk, .dv = vh,
        .q = b->q, .ldq = qs, .q_hs = qk, .k = b->kv, .ldk = kvs, .k_hs = nope + vh,
        .kpe = b->ckv + f->kvr, .ldpe = kc, .dpe = rp, .v = b->kv + nope, .ldv = kvs, .v_hs = nope + vh,
        .out = b->att, .ldo = as, .o_hs = vh, .scale = f->mla_scale, .window = 0, .libm_exp = 1,
    };
    return fs_cpu_attention(ctx, &j);
}

fs_status fs_mla_layer(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, float *x, int64_t nseq, int64_t T)
{
    const int64_t n = nseq * T, H = f->H, NI = w->moe ? 1 : f->inter, io = fs_mla_slot_o(f);
    fs_mla_buf b;
    fs_status rc = fs_mla_buf_new(ctx, f, n, &b);
    if (rc != FS_OK) return rc;
    float *xn = fs_alloc2((size_t)n, (size_t)H * 4), *o = fs_alloc2((size_t)n, (size_t)H * 4);
    float *g = fs_alloc2((size_t)n, (size_t)NI * 4), *u = fs_alloc2((size_t)n, (size_t)NI * 4);
    if (!xn || !o || !g || !u) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "layer activations for %lld tokens", (long long)n);
        goto out;
    }
    fs_fwd_rmsnorm(x, w->in_norm, n, H, f->eps, xn);
    fs_mla_latents(f, w, xn, n, &b);
    if ((rc = fs_mla_attend(ctx, f, w, xn, nseq, T, &b)) != FS_OK) goto out;
    fs_fwd_linear(b.att, w->w[io], w->b[io], n, f->nh * f->vh, H, o);
    for (int64_t i = 0; i < n * H; i++) x[i] += o[i];
    fs_fwd_rmsnorm(x, w->post_norm, n, H, f->eps, xn);
    if (w->moe) {
        rc = fs_moe_ffn(ctx, f, w, xn, n, o);
    } else {
        const int g0 = w->g0;
        fs_fwd_linear(xn, w->w[g0], w->b[g0], n, H, NI, g);
        fs_fwd_linear(xn, w->w[g0 + 1], w->b[g0 + 1], n, H, NI, u);
        fs_fwd_swiglu(g, u, n, NI, g);
        fs_fwd_linear(g, w->w[g0 + 2], w->b[g0 + 2], n, NI, H, o);
    }
    if (rc == FS_OK)
        for (int64_t i = 0; i < n * H; i++) x[i] += o[i];
out:
    fs_mla_buf_free(&b);
    free(xn); free(o); free(g); free(u);
    return rc;
}
