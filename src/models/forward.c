/* forward.c: the model's forward description (fs_fwd: sizes, rope, routing)
 * and one layer's weights (fs_lw) on the host; the forward itself is
 * src/forward/ (layer.h), on the backend's ops.
 *
 * Invariants:
 *  1. Math in f32, reductions of norms and softmax in f32 as transformers does;
 *     the per-token NLL of eval is accumulated in double.
 *  2. RoPE is half-split ("rotate half") on the whole head, positions 0..T-1 per
 *     sequence; cos/sin from inv_freq after rope scaling, times attn_factor.
 *  3. GQA: query head h reads key/value head h / (nh / nkv).
 *  4. Nothing here computes: the blocks of src/forward/ run on the ops.
 *  5. DeepSeek (MLA, its routing) is set up here (ds_init) and computed in
 *     src/forward/block-mla.c and block-moe.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/models/forward.h"

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

void fs_fwd_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = fs_bf16_to_f32(fs_f32_to_bf16(x[i]));
}
