/* mla.c: DeepSeek MLA attention and decoder layer (mla.h).
 *
 * Attention runs per (sequence, head) on OpenMP threads with a
 * single-threaded BLAS, as forward.c does: per head the key [T, nope + rope]
 * is assembled from k_nope (kv rows) and the shared k_pe, the query is the
 * contiguous head slice of q. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

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

/* RoPE on one rope vector h[rope] at position p (invariant 3). */
static void rope_ds(const fs_fwd *f, float *h, int64_t p)
{
    const int64_t half = f->rope / 2;
    for (int64_t i = 0; i < half; i++) {
        double ang = (double)p * (double)f->inv_freq[i];
        float c = (float)cos(ang) * f->attn_factor, s = (float)sin(ang) * f->attn_factor;
        float *a = f->interleave ? h + 2 * i : h + i, *bb = f->interleave ? h + 2 * i + 1 : h + i + half;
        float x = *a, y = *bb;
        *a = x * c - y * s;
        *bb = y * c + x * s;
    }
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
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const int64_t p = t % T;
        for (int64_t h = 0; h < nh; h++) rope_ds(f, b->q + t * qs + h * qk + nope, p);
        rope_ds(f, b->ckv + t * kc + f->kvr, p);
    }
    const int nthr = omp_get_max_threads();
    float *S = fs_alloc2((size_t)nthr * (size_t)T, (size_t)T * sizeof(float));
    float *Kb = fs_alloc2((size_t)nthr * (size_t)T, (size_t)qk * sizeof(float));
    if (!S || !Kb) {
        free(S); free(Kb);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "attention scores %lld x %lld", (long long)T, (long long)T);
    }
    const int blas = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic)
    for (int64_t sh = 0; sh < nseq * nh; sh++) {
        const int64_t s = sh / nh, h = sh % nh;
        const int th = omp_get_thread_num();
        float *Sc = S + (size_t)th * (size_t)(T * T), *K = Kb + (size_t)th * (size_t)(T * qk);
        for (int64_t j = 0; j < T; j++) {
            const int64_t t = s * T + j;
            memcpy(K + j * qk, b->kv + t * kvs + h * (nope + vh), sizeof(float) * (size_t)nope);
            memcpy(K + j * qk + nope, b->ckv + t * kc + f->kvr, sizeof(float) * (size_t)rp);
        }
        const float *Q = b->q + s * T * qs + h * qk, *V = b->kv + s * T * kvs + h * (nope + vh) + nope;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)qk, f->mla_scale, Q, (int)qs,
                    K, (int)qk, 0.0f, Sc, (int)T);
        for (int64_t i = 0; i < T; i++) {              /* causal softmax, f32 */
            float *row = Sc + i * T, mx = -INFINITY, sum = 0.0f;
            for (int64_t j = 0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            for (int64_t j = 0; j <= i; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j <= i; j++) row[j] *= inv;
            for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)vh, (int)T, 1.0f, Sc, (int)T,
                    V, (int)kvs, 0.0f, b->att + s * T * as + h * vh, (int)as);
    }
    openblas_set_num_threads(blas);
    free(S);
    free(Kb);
    return FS_OK;
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
