/* forward.c: the decoder forward on the CPU (forward.h; the MoE block in moe.c), the reference
 * the CUDA forward and the pipeline are checked against.
 *
 * Invariants:
 *  1. Math in f32, reductions of norms and softmax in f32 as transformers does;
 *     the per-token NLL of eval is accumulated in double.
 *  2. RoPE is half-split ("rotate half") on the whole head, positions 0..T-1 per
 *     sequence; cos/sin from inv_freq after rope scaling, times attn_factor.
 *  3. GQA: query head h reads key/value head h / (nh / nkv).
 *  4. Attention, norms, rope and the GEMMs are cpu/'s kernels (cpu/cpu.h),
 *     the ones the backend ops run: nothing here calls BLAS.
 *  5. DeepSeek (MLA, its routing) is set up here (ds_init) and computed in
 *     mla.c / moe.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "src/models/forward.h"
#include "src/models/mla.h"
#include "src/models/moe.h"

void fs_fwd_free(fs_fwd *f)
{
    free(f->inv_freq);
    f->inv_freq = NULL;
}

/* inv_freq with the rope scaling of config.json (ARCHITECTURES.md §2.4), from
 * the numbers fs_model_from_config checked (model.h fs_mrope). */
static fs_status rope_init(fs_ctx *ctx, const fs_mrope *r, fs_fwd *f)
{
    const int64_t d = f->hd, half = d / 2;
    f->inv_freq = malloc(sizeof(float) * (size_t)(half ? half : 1));
    if (!f->inv_freq) return fs_ctx_err(ctx, FS_ERR_NOMEM, "rope");
    f->attn_factor = 1.0f;
    const double theta = r->theta, factor = r->factor;
    for (int64_t i = 0; i < half; i++) {
        double inv = 1.0 / pow(theta, (double)(2 * i) / (double)d);
        switch (r->type) {
        case FS_ROPE_DEFAULT:
        case FS_ROPE_DYNAMIC:           /* dynamic (NTK) equals default up to max_position_embeddings */
            break;
        case FS_ROPE_LINEAR:
            inv /= factor;
            break;
        case FS_ROPE_LLAMA3: {
            const double lo = r->low, hi = r->high, L = r->orig_max, wl = 2.0 * M_PI / inv;
            if (wl < L / hi) {
            } else if (wl > L / lo) {
                inv /= factor;
            } else {
                double s = (L / wl - lo) / (hi - lo);
                inv = (1 - s) * inv / factor + s * inv;
            }
            break;
        }
        case FS_ROPE_YARN: {
            const double orig = r->orig_max > 0 ? r->orig_max : (double)f->max_pos / factor;
            const double bf = r->beta_fast, bs = r->beta_slow;
            double cd_f = d * log(orig / (2 * M_PI * bf)) / (2 * log(theta));
            double cd_s = d * log(orig / (2 * M_PI * bs)) / (2 * log(theta));
            double lo = r->truncate ? floor(cd_f) : cd_f, hi = r->truncate ? ceil(cd_s) : cd_s;
            if (lo < 0) lo = 0;
            if (hi > d - 1) hi = d - 1;
            if (lo == hi) hi += 0.001;
            double q = ((double)i - lo) / (hi - lo);
            q = q < 0 ? 0 : (q > 1 ? 1 : q);
            inv = inv * (1 - q) + inv / factor * q;
            break;
        }
        }
        f->inv_freq[i] = (float)inv;
    }
    if (r->type == FS_ROPE_YARN) {
#define YARN_M(s, mm) ((s) <= 1 ? 1.0 : 0.1 * (mm) * log(s) + 1.0)
        if (r->attention_factor > 0) f->attn_factor = (float)r->attention_factor;
        else if (r->mscale != 0 && r->mscale_all_dim != 0)
            f->attn_factor = (float)(YARN_M(factor, r->mscale) / YARN_M(factor, r->mscale_all_dim));
        else f->attn_factor = (float)YARN_M(factor, 1.0);
#undef YARN_M
    }
    return FS_OK;
}

/* YaRN's M(s, m) (ARCHITECTURES.md §2.4). */
static double yarn_m(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

/* deepseek_v2 / deepseek_v3 (kimi_k2): MLA sizes, softmax scale, routing (§5). */
static fs_status ds_init(fs_ctx *ctx, const fs_model *m, fs_fwd *f)
{
    const fs_mfwd *c = &m->fwd;
    const int v3 = !strcmp(m->family, "deepseek_v3");
    f->mla = 1;
    f->H = m->hidden;
    f->V = m->vocab;
    f->tied = m->tied;
    f->nh = c->nh;
    f->nkv = f->nh;
    f->qr = c->qr;
    f->kvr = c->kvr;
    f->nope = c->nope;
    f->rope = c->rope_dim;
    f->vh = c->vh;
    f->hd = f->rope;
    f->eps = (float)c->eps;
    f->mla_eps = 1e-6f;                       /* q_a/kv_a_layernorm: class default, §2.1 */
    f->max_pos = c->max_pos;
    f->interleave = c->interleave;
    for (int l = 0; l < m->nlayers; l++) {
        const fs_mlayer *L = &m->layers[l];
        const int g0 = f->qr ? 5 : 4;
        if (L->nlin < g0 + 3 && !L->moe)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "model.layers.%d: %d linears", l, L->nlin);
        if (!L->moe && !f->inter) f->inter = L->lin[g0].out;
        if (L->moe && !f->E) {
            f->E = m->experts;
            f->topk = m->top_k;
            int e0 = L->nlin - 3 * m->experts;
            if (e0 != g0 && e0 != g0 + 3)
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "model.layers.%d: %d linears for %d experts", l,
                                  L->nlin, m->experts);
            f->Ie = L->lin[e0].out;
            f->Is = e0 == g0 + 3 ? L->lin[g0].out : 0;
        }
    }
    f->ffn_max = f->inter > f->Ie ? f->inter : f->Ie;
    if (f->Is > f->ffn_max) f->ffn_max = f->Is;
    f->route = v3 ? FS_ROUTE_DS_SIGMOID : FS_ROUTE_DS_SOFTMAX;
    f->rsf = (float)c->rsf;
    f->norm_topk = c->norm_topk;
    f->group_max = !v3;
    f->n_group = c->n_group;
    f->topk_group = c->topk_group;
    fs_status rc = rope_init(ctx, &c->rope, f);
    if (rc != FS_OK) return rc;
    /* softmax scale (§5.4): qk^-0.5, times M(factor, mscale_all_dim)^2 under yarn */
    double scale = 1.0 / sqrt((double)(f->nope + f->rope));
    if (c->rope.type == FS_ROPE_YARN && c->rope.mscale_all_dim != 0) {
        double mm = yarn_m(c->rope.factor, c->rope.mscale_all_dim);
        scale *= mm * mm;
    }
    f->mla_scale = (float)scale;
    return FS_OK;
}

fs_status fs_fwd_init(fs_ctx *ctx, const void *config, const fs_model *m, fs_fwd *f)
{
    (void)config;                             /* its numbers were checked into m->fwd */
    memset(f, 0, sizeof *f);
    const char *fam = m->family;
    if (!strncmp(fam, "deepseek", 8)) return ds_init(ctx, m, f);
    int llama = !strcmp(fam, "llama"), mistral = !strcmp(fam, "mistral");
    int qwen2 = !strcmp(fam, "qwen2"), qwen3 = !strcmp(fam, "qwen3");
    int mixtral = !strcmp(fam, "mixtral"), q2m = !strcmp(fam, "qwen2_moe"), q3m = !strcmp(fam, "qwen3_moe");
    if (!llama && !mistral && !qwen2 && !qwen3 && !mixtral && !q2m && !q3m)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "model_type %s: no forward for this family", m->model_type);
    const fs_mfwd *c = &m->fwd;
    const fs_mlayer *L0 = &m->layers[0];
    f->H = m->hidden;
    f->V = m->vocab;
    f->tied = m->tied;
    f->nh = c->nh;
    f->nkv = c->nkv;
    f->hd = L0->lin[FS_Q].out / f->nh;        /* = head_dim: q_proj is [nh * hd, H] */
    f->eps = (float)c->eps;
    f->max_pos = c->max_pos;
    f->qkv_bias = L0->lin[FS_Q].bias;
    f->o_bias = L0->lin[FS_O].bias;
    f->qk_norm = qwen3 || q3m;
    /* widths: the dense MLP of the first dense layer, the experts and shared
     * expert of the first MoE layer */
    for (int l = 0; l < m->nlayers; l++) {
        const fs_mlayer *L = &m->layers[l];
        if (!L->moe && !f->inter) { f->inter = L->lin[FS_G].out; f->mlp_bias = L->lin[FS_G].bias; }
        if (L->moe && !f->E) {
            f->E = m->experts;
            f->topk = m->top_k;
            int e0 = L->nlin - 3 * m->experts;
            if (e0 != 4 && e0 != 7)
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "model.layers.%d: %d linears for %d experts", l,
                                  L->nlin, m->experts);
            f->Ie = L->lin[e0].out;
            f->Is = e0 == 7 ? L->lin[FS_G].out : 0;
        }
    }
    f->ffn_max = f->inter > f->Ie ? f->inter : f->Ie;
    if (f->Is > f->ffn_max) f->ffn_max = f->Is;
    f->norm_topk = c->norm_topk;
    f->window = c->window;
    return rope_init(ctx, &c->rope, f);
}

void fs_lw_free(fs_lw *w)
{
    free(w->in_norm); free(w->post_norm); free(w->q_norm); free(w->k_norm);
    free(w->q_a_norm); free(w->kv_a_norm); free(w->escb);
    for (int i = 0; i < FS_LW_SLOTS; i++) { free(w->w[i]); free(w->b[i]); }
    free(w->router); free(w->sgate);
    for (int i = 0; w->ex && i < 3 * (w->moe ? w->moe : 0); i++) free(w->ex[i]);
    free(w->ex);
    memset(w, 0, sizeof *w);
}

float **fs_lw_weight(fs_lw *w, int i)
{
    return i < w->e0 ? &w->w[i] : &w->ex[i - w->e0];
}

/* The other tensor of L whose name ends with suffix, or NULL. */
static const char *other_named(const fs_mlayer *L, const char *suffix)
{
    size_t k = strlen(suffix);
    for (int i = 0; i < L->nother; i++) {
        size_t n = strlen(L->other[i].name);
        if (n >= k && !strcmp(L->other[i].name + n - k, suffix)) return L->other[i].name;
    }
    return NULL;
}

fs_status fs_lw_load(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const fs_model *m,
                     const fs_fwd *f, int l, fs_lw *w)
{
    memset(w, 0, sizeof *w);
    const fs_mlayer *L = &m->layers[l];
    char name[600];
    fs_status rc = FS_OK;
    w->e0 = L->nlin;
    w->g0 = f->mla && f->qr ? 5 : 4;
    if (L->moe) {
        w->e0 = L->nlin - 3 * (int)f->E;
        w->ex = calloc((size_t)(3 * f->E), sizeof *w->ex);
        if (!w->ex) return fs_ctx_err(ctx, FS_ERR_NOMEM, "model.layers.%d: expert table", l);
        w->moe = (int)f->E;        /* also the expert count fs_lw_free walks */
    }
    if (w->e0 > FS_LW_SLOTS || w->e0 < 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "model.layers.%d: %d linears before the experts", l, w->e0);
    for (int i = 0; rc == FS_OK && i < L->nlin; i++) {
        int64_t o, n;
        float **slot = fs_lw_weight(w, i);
        rc = fs_qread_linear(ctx, c, qi, L->lin[i].name, slot, &o, &n);
        if (rc == FS_OK && (o != L->lin[i].out || n != L->lin[i].in))
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: [%lld, %lld], config.json says [%lld, %lld]",
                            L->lin[i].name, (long long)o, (long long)n, (long long)L->lin[i].out,
                            (long long)L->lin[i].in);
        if (rc == FS_OK && L->lin[i].bias) {
            if (i >= w->e0) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: expert biases are not supported", L->lin[i].name);
            snprintf(name, sizeof name, "%s.bias", L->lin[i].name);
            if (rc == FS_OK) rc = fs_ckpt_read_f32(ctx, c, name, &w->b[i]);
        }
    }
    if (rc == FS_OK && L->moe) {
        const char *r = other_named(L, ".gate.weight"), *sg = other_named(L, ".shared_expert_gate.weight");
        if (!r) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "model.layers.%d: no router", l);
        else rc = fs_ckpt_read_f32(ctx, c, r, &w->router);
        if (rc == FS_OK && w->e0 == 7 && sg) rc = fs_ckpt_read_f32(ctx, c, sg, &w->sgate);
        const char *eb = other_named(L, ".gate.e_score_correction_bias");
        if (rc == FS_OK && eb && fs_ckpt_find(c, eb)) rc = fs_ckpt_read_f32(ctx, c, eb, &w->escb);
    }
    if (rc == FS_OK && f->mla) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.kv_a_layernorm.weight", l);
        rc = fs_ckpt_read_f32(ctx, c, name, &w->kv_a_norm);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_a_layernorm.weight", l);
        if (rc == FS_OK && f->qr) rc = fs_ckpt_read_f32(ctx, c, name, &w->q_a_norm);
    }
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if (rc == FS_OK) rc = fs_ckpt_read_f32(ctx, c, name, &w->in_norm);
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if (rc == FS_OK) rc = fs_ckpt_read_f32(ctx, c, name, &w->post_norm);
    if (f->qk_norm) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
        if (rc == FS_OK) rc = fs_ckpt_read_f32(ctx, c, name, &w->q_norm);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
        if (rc == FS_OK) rc = fs_ckpt_read_f32(ctx, c, name, &w->k_norm);
    }
    if (rc != FS_OK) fs_lw_free(w);
    return rc;
}

void fs_fwd_rmsnorm(const float *x, const float *w, int64_t n, int64_t dim, float eps, float *out)
{
    fs_cpu_rmsnorm(x, dim, w, n, dim, eps, out, dim);
}

void fs_fwd_linear(const float *x, const float *W, const float *b, int64_t n, int64_t in,
                   int64_t out, float *y)
{
    if (n == 0) return;
    fs_cpu_sgemm(1, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (b)
        for (int64_t r = 0; r < n; r++)
            for (int64_t o = 0; o < out; o++) y[r * out + o] += b[o];
}

void fs_fwd_swiglu(const float *g, const float *u, int64_t n, int64_t inter, float *a)
{
    fs_cpu_swiglu(g, inter, u, inter, n, inter, a, inter);
}

fs_status fs_fwd_attention(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, float *q, float *k,
                           const float *v, int64_t nseq, int64_t T, float *out)
{
    const int64_t nh = f->nh, nkv = f->nkv, hd = f->hd, n = nseq * T;
    const int64_t qs = nh * hd, ks = nkv * hd;
    /* qk-norm (qwen3) per head, then rope on the whole head (invariant 2) */
    if (f->qk_norm) {
        fs_cpu_rmsnorm(q, hd, w->q_norm, n * nh, hd, f->eps, q, hd);
        fs_cpu_rmsnorm(k, hd, w->k_norm, n * nkv, hd, f->eps, k, hd);
    }
    fs_cpu_rope(q, qs, n, nh, hd, 0, hd, 0, f->inv_freq, f->attn_factor, T);
    fs_cpu_rope(k, ks, n, nkv, hd, 0, hd, 0, f->inv_freq, f->attn_factor, T);
    fs_cpu_attn j = {
        .nseq = nseq, .T = T, .nh = nh, .nkv = nkv, .dqk = hd, .dv = hd,
        .q = q, .ldq = qs, .q_hs = hd, .k = k, .ldk = ks, .k_hs = hd,
        .kpe = NULL, .ldpe = 0, .dpe = 0, .v = v, .ldv = ks, .v_hs = hd,
        .out = out, .ldo = qs, .o_hs = hd, .scale = 1.0f / sqrtf((float)hd), .window = f->window, .libm_exp = 0,
    };
    return fs_cpu_attention(ctx, &j);
}

void fs_fwd_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = fs_bf16_to_f32(fs_f32_to_bf16(x[i]));
}

fs_status fs_fwd_layer(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, float *x, int64_t nseq,
                       int64_t T)
{
    if (f->mla) return fs_mla_layer(ctx, f, w, x, nseq, T);
    const int64_t n = nseq * T, H = f->H, qs = f->nh * f->hd, ks = f->nkv * f->hd, NI = w->moe ? 1 : f->inter;
    float *xn = fs_alloc2((size_t)n, (size_t)H * 4), *q = fs_alloc2((size_t)n, (size_t)qs * 4);
    float *k = fs_alloc2((size_t)n, (size_t)ks * 4), *v = fs_alloc2((size_t)n, (size_t)ks * 4);
    float *att = fs_alloc2((size_t)n, (size_t)qs * 4), *g = fs_alloc2((size_t)n, (size_t)NI * 4);
    float *u = fs_alloc2((size_t)n, (size_t)NI * 4), *o = fs_alloc2((size_t)n, (size_t)H * 4);
    fs_status rc = FS_OK;
    if (!xn || !q || !k || !v || !att || !g || !u || !o) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "layer activations for %lld tokens", (long long)n);
        goto out;
    }
    fs_fwd_rmsnorm(x, w->in_norm, n, H, f->eps, xn);
    fs_fwd_linear(xn, w->w[FS_Q], w->b[FS_Q], n, H, qs, q);
    fs_fwd_linear(xn, w->w[FS_K], w->b[FS_K], n, H, ks, k);
    fs_fwd_linear(xn, w->w[FS_V], w->b[FS_V], n, H, ks, v);
    if ((rc = fs_fwd_attention(ctx, f, w, q, k, v, nseq, T, att)) != FS_OK) goto out;
    fs_fwd_linear(att, w->w[FS_O], w->b[FS_O], n, qs, H, o);
    for (int64_t i = 0; i < n * H; i++) x[i] += o[i];
    fs_fwd_rmsnorm(x, w->post_norm, n, H, f->eps, xn);
    if (w->moe) {
        if ((rc = fs_moe_ffn(ctx, f, w, xn, n, o)) != FS_OK) goto out;
        for (int64_t i = 0; i < n * H; i++) x[i] += o[i];
        goto out;
    }
    fs_fwd_linear(xn, w->w[FS_G], w->b[FS_G], n, H, NI, g);
    fs_fwd_linear(xn, w->w[FS_U], w->b[FS_U], n, H, NI, u);
    fs_fwd_swiglu(g, u, n, NI, g);
    fs_fwd_linear(g, w->w[FS_D], w->b[FS_D], n, NI, H, o);
    for (int64_t i = 0; i < n * H; i++) x[i] += o[i];
out:
    free(xn); free(q); free(k); free(v); free(att); free(g); free(u); free(o);
    return rc;
}
