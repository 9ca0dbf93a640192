/* model.c: config.json -> model description (model.h), family by family, as
 * ARCHITECTURES.md §3-§8 describe them.  A builder appends linears and
 * other tensors to the current layer; each family is one function. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/models/model.h"

const char fs_model_types[] =
    "llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3, kimi_k2";

#define MAX_DIM (1ll << 24)       /* any config size above this is refused: products of
                                     two sizes then stay far from int64 overflow */
#define MAX_LAYERS 4096
#define MAX_EXPERTS 65536
#define MAX_MTP 64

typedef struct cfg {
    fs_ctx *ctx;
    json_t *j;
    const char *where;
    char missing[512];            /* required keys found absent, comma separated */
    int bad;                      /* a key present with an invalid value */
} cfg;

/* An integer key in [lo, MAX_DIM]; `def` < 0 means required. */
static int64_t geti(cfg *c, const char *key, int64_t def, int64_t lo)
{
    json_t *v = json_object_get(c->j, key);
    if (!v || json_is_null(v)) {
        if (def < 0) {
            size_t n = strlen(c->missing);
            snprintf(c->missing + n, sizeof c->missing - n, "%s%s", n ? ", " : "", key);
        }
        return def < 0 ? lo : def;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > MAX_DIM) {
        if (!c->bad)
            fs_ctx_err(c->ctx, FS_ERR_FORMAT, "%s: \"%s\" must be an integer in %lld..%lld", c->where,
                       key, (long long)lo, MAX_DIM);
        c->bad = 1;
        return lo;
    }
    return json_integer_value(v);
}

static int getb(cfg *c, const char *key, int def)
{
    json_t *v = json_object_get(c->j, key);
    if (!v || json_is_null(v)) return def;
    if (!json_is_boolean(v)) {
        if (!c->bad) fs_ctx_err(c->ctx, FS_ERR_FORMAT, "%s: \"%s\" must be true or false", c->where, key);
        c->bad = 1;
        return def;
    }
    return json_is_true(v);
}

/* ---- builder ------------------------------------------------------------ */

typedef struct builder {
    fs_ctx *ctx;
    fs_model *m;
    fs_mlayer *L;                 /* current layer */
    int oom;
} builder;

static char *fmt(builder *b, const char *f, ...) __attribute__((format(printf, 2, 3)));
static char *fmt(builder *b, const char *f, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (!s) b->oom = 1;
    return s;
}

static void lin(builder *b, int group, int expert, int bias, int64_t out, int64_t in,
                const char *f, ...) __attribute__((format(printf, 7, 8)));
static void lin(builder *b, int group, int expert, int bias, int64_t out, int64_t in,
                const char *f, ...)
{
    fs_mlayer *L = b->L;
    fs_mlinear *n = realloc(L->lin, sizeof *n * (size_t)(L->nlin + 1));
    if (!n) { b->oom = 1; return; }
    L->lin = n;
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    fs_mlinear *x = &L->lin[L->nlin++];
    x->name = strdup(buf);
    if (!x->name) b->oom = 1;
    x->out = out;
    x->in = in;
    x->group = group;
    x->expert = expert;
    x->bias = bias;
    if (group + 1 > L->ngroups) L->ngroups = group + 1;
}

static void tensor_to(builder *b, fs_mtensor **arr, int *n, int optional, int ndim, int64_t d0,
                      int64_t d1, char *name)
{
    fs_mtensor *a = realloc(*arr, sizeof *a * (size_t)(*n + 1));
    if (!a || !name) { b->oom = 1; free(name); return; }
    *arr = a;
    a[*n] = (fs_mtensor){name, ndim, {d0, d1}, optional};
    (*n)++;
}

#define OTHER(b, ndim, d0, d1, ...) tensor_to(b, &(b)->L->other, &(b)->L->nother, 0, ndim, d0, d1, fmt(b, __VA_ARGS__))
#define OTHER_OPT(b, ndim, d0, d1, ...) tensor_to(b, &(b)->L->other, &(b)->L->nother, 1, ndim, d0, d1, fmt(b, __VA_ARGS__))

/* Biases of the linears just added that have one. */
static void biases(builder *b)
{
    for (int i = 0; i < b->L->nlin; i++)
        if (b->L->lin[i].bias)
            OTHER(b, 1, b->L->lin[i].out, 0, "%s.bias", b->L->lin[i].name);
}

/* ---- families ------------------------------------------------------------- */

typedef struct dims {
    int64_t H, I, nh, nkv, hd, V;
} dims;

static void attn_std(builder *b, int l, const dims *d, int qkv_bias, int o_bias, int qk_norm)
{
    const char *p = "model.layers";
    lin(b, 0, -1, qkv_bias, d->nh * d->hd, d->H, "%s.%d.self_attn.q_proj", p, l);
    lin(b, 0, -1, qkv_bias, d->nkv * d->hd, d->H, "%s.%d.self_attn.k_proj", p, l);
    lin(b, 0, -1, qkv_bias, d->nkv * d->hd, d->H, "%s.%d.self_attn.v_proj", p, l);
    lin(b, 1, -1, o_bias, d->H, d->nh * d->hd, "%s.%d.self_attn.o_proj", p, l);
    OTHER(b, 1, d->H, 0, "%s.%d.input_layernorm.weight", p, l);
    OTHER(b, 1, d->H, 0, "%s.%d.post_attention_layernorm.weight", p, l);
    if (qk_norm) {
        OTHER(b, 1, d->hd, 0, "%s.%d.self_attn.q_norm.weight", p, l);
        OTHER(b, 1, d->hd, 0, "%s.%d.self_attn.k_norm.weight", p, l);
    }
}

/* gate/up then down of an MLP named prefix (group g, g + 1). */
static void mlp(builder *b, int g, int expert, int bias, int64_t H, int64_t I, const char *prefix,
                const char *gate, const char *up, const char *down)
{
    lin(b, g, expert, bias, I, H, "%s.%s", prefix, gate);
    lin(b, g, expert, bias, I, H, "%s.%s", prefix, up);
    lin(b, g + 1, expert, bias, H, I, "%s.%s", prefix, down);
}

static int64_t next_group(builder *b) { return b->L->ngroups; }

static fs_status family_layers(builder *b, cfg *c, const char *fam, const dims *d)
{
    fs_model *m = b->m;
    int is_mixtral = !strcmp(fam, "mixtral"), is_q2m = !strcmp(fam, "qwen2_moe");
    int is_q3m = !strcmp(fam, "qwen3_moe"), is_ds = !strncmp(fam, "deepseek", 8);
    int attn_bias = (int)getb(c, "attention_bias", 0), mlp_bias = (int)getb(c, "mlp_bias", 0);
    int qkv_bias = !strcmp(fam, "qwen2") || (is_q2m && getb(c, "qkv_bias", 1)) ||
                   ((!strcmp(fam, "llama") || !strcmp(fam, "qwen3") || is_q3m) && attn_bias);
    int o_bias = (!strcmp(fam, "llama") || !strcmp(fam, "qwen3") || is_q3m) && attn_bias;
    int qk_norm = !strcmp(fam, "qwen3") || is_q3m;
    int64_t E = 0, Ie = 0, Is = 0, step = 1, first_dense = 0, freq = 1;
    json_t *only = NULL;
    if (is_mixtral) {
        E = geti(c, "num_local_experts", -1, 1);
        m->top_k = (int)geti(c, "num_experts_per_tok", 2, 1);
        Ie = d->I;
    } else if (is_q2m || is_q3m) {
        E = geti(c, "num_experts", -1, 0);
        m->top_k = (int)geti(c, "num_experts_per_tok", 4, 1);
        Ie = geti(c, "moe_intermediate_size", -1, 1);
        if (is_q2m) Is = geti(c, "shared_expert_intermediate_size", -1, 0);
        step = geti(c, "decoder_sparse_step", 1, 1);
        only = json_object_get(c->j, "mlp_only_layers");
    }
    /* deepseek */
    int64_t qr = 0, kvr = 0, nope = 0, rope = 0, vh = 0, nshared = 0;
    if (is_ds) {
        json_t *q = json_object_get(c->j, "q_lora_rank");
        qr = (q && !json_is_null(q)) ? geti(c, "q_lora_rank", -1, 1) : 0;
        kvr = geti(c, "kv_lora_rank", -1, 1);
        nope = geti(c, "qk_nope_head_dim", -1, 1);
        rope = geti(c, "qk_rope_head_dim", -1, 1);
        vh = geti(c, "v_head_dim", -1, 1);
        E = geti(c, "n_routed_experts", -1, 1);
        m->top_k = (int)geti(c, "num_experts_per_tok", -1, 1);
        Ie = geti(c, "moe_intermediate_size", -1, 1);
        nshared = geti(c, "n_shared_experts", 0, 0);
        first_dense = geti(c, "first_k_dense_replace", 0, 0);
        freq = geti(c, "moe_layer_freq", 1, 1);
        int64_t nmtp = geti(c, "num_nextn_predict_layers", 0, 0);
        if (nmtp > MAX_MTP)
            return fs_ctx_err(b->ctx, FS_ERR_FORMAT, "%s: num_nextn_predict_layers %lld (at most %d)",
                              c->where, (long long)nmtp, MAX_MTP);
        m->nmtp = (int)nmtp;
    }
    if (E > MAX_EXPERTS)
        return fs_ctx_err(b->ctx, FS_ERR_FORMAT, "%s: %lld experts (at most %d)", c->where, (long long)E, MAX_EXPERTS);
    /* the description itself is bounded by what a checkpoint may hold */
    if ((int64_t)m->nlayers * (E * 3 + 16) > FS_CKPT_MAX_TENSORS)
        return fs_ctx_err(b->ctx, FS_ERR_FORMAT, "%s: %d layers x %lld experts describe more tensors than a "
                          "checkpoint may hold (%d)", c->where, m->nlayers, (long long)E, FS_CKPT_MAX_TENSORS);
    if (c->missing[0])
        return fs_ctx_err(b->ctx, FS_ERR_FORMAT, "%s: model_type %s needs missing field(s): %s",
                          c->where, m->model_type, c->missing);
    if (c->bad) return b->ctx->err;
    m->experts = (int)E;
    m->layers = calloc((size_t)(m->nlayers + m->nmtp), sizeof *m->layers);
    if (!m->layers) return fs_ctx_err(b->ctx, FS_ERR_NOMEM, "layers");

    for (int l = 0; l < m->nlayers + m->nmtp && !b->oom; l++) {
        fs_mlayer *L = b->L = &m->layers[l];
        L->index = l;
        if (l >= m->nlayers) { L->mtp = 1; continue; }     /* copied through by prefix */
        const char *p = "model.layers";
        char pre[128];
        if (is_ds) {
            int64_t qk = nope + rope;
            if (qr) {
                lin(b, 0, -1, attn_bias, qr, d->H, "%s.%d.self_attn.q_a_proj", p, l);
                lin(b, 0, -1, attn_bias, kvr + rope, d->H, "%s.%d.self_attn.kv_a_proj_with_mqa", p, l);
                lin(b, 1, -1, 0, d->nh * qk, qr, "%s.%d.self_attn.q_b_proj", p, l);
                OTHER(b, 1, qr, 0, "%s.%d.self_attn.q_a_layernorm.weight", p, l);
            } else {
                lin(b, 0, -1, 0, d->nh * qk, d->H, "%s.%d.self_attn.q_proj", p, l);
                lin(b, 0, -1, attn_bias, kvr + rope, d->H, "%s.%d.self_attn.kv_a_proj_with_mqa", p, l);
            }
            int g = qr ? 2 : 1;
            lin(b, g, -1, 0, d->nh * (nope + vh), kvr, "%s.%d.self_attn.kv_b_proj", p, l);
            lin(b, g + 1, -1, attn_bias, d->H, d->nh * vh, "%s.%d.self_attn.o_proj", p, l);
            OTHER(b, 1, kvr, 0, "%s.%d.self_attn.kv_a_layernorm.weight", p, l);
            OTHER(b, 1, d->H, 0, "%s.%d.input_layernorm.weight", p, l);
            OTHER(b, 1, d->H, 0, "%s.%d.post_attention_layernorm.weight", p, l);
            L->moe = l >= first_dense && l % freq == 0;
            snprintf(pre, sizeof pre, "%s.%d.mlp", p, l);
            if (!L->moe) {
                mlp(b, (int)next_group(b), -1, 0, d->H, d->I, pre, "gate_proj", "up_proj", "down_proj");
            } else {
                OTHER(b, 2, E, d->H, "%s.gate.weight", pre);
                if (!strcmp(fam, "deepseek_v3")) OTHER_OPT(b, 1, E, 0, "%s.gate.e_score_correction_bias", pre);
                if (nshared > 0)
                    mlp(b, (int)next_group(b), -1, 0, d->H, Ie * nshared, pre, "shared_experts.gate_proj",
                        "shared_experts.up_proj", "shared_experts.down_proj");
                for (int64_t e = 0; e < E && !b->oom; e++) {
                    char ep[160];
                    snprintf(ep, sizeof ep, "%s.experts.%lld", pre, (long long)e);
                    mlp(b, (int)next_group(b), (int)e, 0, d->H, Ie, ep, "gate_proj", "up_proj", "down_proj");
                }
            }
        } else {
            attn_std(b, l, d, qkv_bias, o_bias, qk_norm);
            int sparse = 0;
            if (is_mixtral) sparse = 1;
            else if (is_q2m || is_q3m) {
                int in_only = 0;
                for (size_t k = 0; json_is_array(only) && k < json_array_size(only); k++)
                    if (json_integer_value(json_array_get(only, k)) == l) in_only = 1;
                sparse = !in_only && E > 0 && (l + 1) % step == 0;
            }
            L->moe = sparse;
            if (!sparse) {
                snprintf(pre, sizeof pre, "%s.%d.mlp", p, l);
                mlp(b, 2, -1, mlp_bias, d->H, d->I, pre, "gate_proj", "up_proj", "down_proj");
            } else if (is_mixtral) {
                snprintf(pre, sizeof pre, "%s.%d.block_sparse_moe", p, l);
                OTHER(b, 2, E, d->H, "%s.gate.weight", pre);
                for (int64_t e = 0; e < E && !b->oom; e++) {
                    char ep[160];
                    snprintf(ep, sizeof ep, "%s.experts.%lld", pre, (long long)e);
                    mlp(b, (int)next_group(b), (int)e, 0, d->H, Ie, ep, "w1", "w3", "w2");
                }
            } else {
                snprintf(pre, sizeof pre, "%s.%d.mlp", p, l);
                OTHER(b, 2, E, d->H, "%s.gate.weight", pre);
                if (is_q2m && Is > 0) {
                    mlp(b, (int)next_group(b), -1, 0, d->H, Is, pre, "shared_expert.gate_proj",
                        "shared_expert.up_proj", "shared_expert.down_proj");
                    OTHER(b, 2, 1, d->H, "%s.shared_expert_gate.weight", pre);
                }
                for (int64_t e = 0; e < E && !b->oom; e++) {
                    char ep[160];
                    snprintf(ep, sizeof ep, "%s.experts.%lld", pre, (long long)e);
                    mlp(b, (int)next_group(b), (int)e, 0, d->H, Ie, ep, "gate_proj", "up_proj", "down_proj");
                }
            }
        }
        biases(b);
    }
    if (b->oom) return fs_ctx_err(b->ctx, FS_ERR_NOMEM, "model description");
    return FS_OK;
}

void fs_model_free(fs_model *m)
{
    if (!m) return;
    for (int l = 0; m->layers && l < m->nlayers + m->nmtp; l++) {
        fs_mlayer *L = &m->layers[l];
        for (int i = 0; i < L->nlin; i++) free(L->lin[i].name);
        for (int i = 0; i < L->nother; i++) free(L->other[i].name);
        free(L->lin);
        free(L->other);
    }
    for (int i = 0; i < m->nglobal; i++) free(m->global[i].name);
    free(m->global);
    free(m->layers);
    free(m);
}

fs_status fs_model_from_config(fs_ctx *ctx, const void *config, const char *where, fs_model **out)
{
    *out = NULL;
    json_t *j = (json_t *)config;
    json_t *mt = json_object_get(j, "model_type");
    if (!json_is_string(mt))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no \"model_type\" (supported: %s)", where, fs_model_types);
    const char *type = json_string_value(mt);
    const char *fam = !strcmp(type, "kimi_k2") ? "deepseek_v3" : type;
    static const char *known[] = {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe",
                                  "qwen3_moe", "deepseek_v2", "deepseek_v3"};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(fam, known[i]);
    if (!ok)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model_type \"%.40s\" is not supported (supported: %s)",
                          where, type, fs_model_types);
    fs_model *m = calloc(1, sizeof *m);
    if (!m) return fs_ctx_err(ctx, FS_ERR_NOMEM, "model");
    snprintf(m->family, sizeof m->family, "%s", fam);
    snprintf(m->model_type, sizeof m->model_type, "%s", type);
    cfg c = {ctx, j, where, "", 0};
    dims d;
    d.H = geti(&c, "hidden_size", -1, 1);
    int64_t nl = geti(&c, "num_hidden_layers", -1, 1);
    m->nlayers = nl > MAX_LAYERS ? MAX_LAYERS + 1 : (int)nl;
    d.nh = geti(&c, "num_attention_heads", -1, 1);
    d.nkv = geti(&c, "num_key_value_heads", d.nh, 1);
    d.V = geti(&c, "vocab_size", -1, 1);
    int is_ds = !strncmp(fam, "deepseek", 8), is_moe_only = !strcmp(fam, "qwen3_moe") || !strcmp(fam, "qwen2_moe");
    d.I = geti(&c, "intermediate_size", is_moe_only ? 0 : -1, 0);
    d.hd = geti(&c, "head_dim", !strcmp(fam, "qwen3") || !strcmp(fam, "qwen3_moe") ? 128 : (d.nh ? d.H / d.nh : 1), 1);
    if (is_ds) d.nkv = d.nh;
    m->hidden = d.H;
    m->vocab = d.V;
    m->tied = getb(&c, "tie_word_embeddings", 0);
    fs_status rc = FS_OK;
    if (nl > MAX_LAYERS && !c.bad)
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: num_hidden_layers %lld (at most %d)", where, (long long)nl, MAX_LAYERS);
    builder b = {ctx, m, NULL, 0};
    if (rc == FS_OK) rc = family_layers(&b, &c, fam, &d);
    if (rc == FS_OK) {
        fs_mtensor **g = &m->global;
        tensor_to(&b, g, &m->nglobal, 0, 2, d.V, d.H, fmt(&b, "model.embed_tokens.weight"));
        tensor_to(&b, g, &m->nglobal, 0, 1, d.H, 0, fmt(&b, "model.norm.weight"));
        /* tied checkpoints sometimes still store a copy: optional then */
        tensor_to(&b, g, &m->nglobal, m->tied, 2, d.V, d.H, fmt(&b, "lm_head.weight"));
        if (b.oom) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "model description");
    }
    if (rc != FS_OK) {
        fs_model_free(m);
        return rc;
    }
    *out = m;
    return FS_OK;
}

static fs_status check_one(fs_ctx *ctx, const fs_ckpt *c, const char *name, int ndim,
                           const int64_t *shape, int optional)
{
    const fs_ckpt_entry *e = fs_ckpt_find(c, name);
    if (!e) {
        if (optional) return FS_OK;
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s' is missing (config.json describes it)",
                          c->dir, name);
    }
    const fs_st_tensor *t = e->t;
    int okshape = t->ndim == ndim;
    for (int i = 0; okshape && i < ndim; i++) okshape = t->shape[i] == shape[i];
    if (!okshape)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s' has shape [%lld%s%lld] but config.json says [%lld%s%lld]",
                          c->shard_names[e->shard], name, (long long)(t->ndim > 0 ? t->shape[0] : 0),
                          t->ndim > 1 ? ", " : "", (long long)(t->ndim > 1 ? t->shape[1] : 0),
                          (long long)shape[0], ndim > 1 ? ", " : "", (long long)(ndim > 1 ? shape[1] : 0));
    if (t->dtype == FS_DT_F8_E4M3 && !fs_ckpt_scale_of(c, name))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: F8_E4M3 tensor '%s' has no '%s_scale_inv'",
                          c->shard_names[e->shard], name, name);
    return FS_OK;
}

fs_status fs_model_check(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c)
{
    fs_status rc = FS_OK;
    char buf[600];
    for (int i = 0; rc == FS_OK && i < m->nglobal; i++)
        rc = check_one(ctx, c, m->global[i].name, m->global[i].ndim, m->global[i].shape, m->global[i].optional);
    for (int l = 0; rc == FS_OK && l < m->nlayers; l++) {
        const fs_mlayer *L = &m->layers[l];
        for (int i = 0; rc == FS_OK && i < L->nlin; i++) {
            int64_t s[2] = {L->lin[i].out, L->lin[i].in};
            snprintf(buf, sizeof buf, "%s.weight", L->lin[i].name);
            rc = check_one(ctx, c, buf, 2, s, 0);
            const fs_ckpt_entry *e = rc == FS_OK ? fs_ckpt_find(c, buf) : NULL;
            if (e && e->t->dtype != FS_DT_F32 && e->t->dtype != FS_DT_F16 &&
                e->t->dtype != FS_DT_BF16 && e->t->dtype != FS_DT_F8_E4M3)
                rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: linear weight '%s' has dtype %s (F32, F16, BF16 or F8_E4M3 expected)",
                                c->shard_names[e->shard], buf, fs_dtype_name(e->t->dtype));
        }
        for (int i = 0; rc == FS_OK && i < L->nother; i++)
            rc = check_one(ctx, c, L->other[i].name, L->other[i].ndim, L->other[i].shape, L->other[i].optional);
    }
    return rc;
}

const fs_mlinear *fs_model_linear_of(const fs_model *m, const char *tensor, const fs_mlayer **layer)
{
    int l = -1;
    if (sscanf(tensor, "model.layers.%d.", &l) != 1 || l < 0 || l >= m->nlayers) return NULL;
    size_t n = strlen(tensor);
    if (n < 8 || strcmp(tensor + n - 7, ".weight") != 0) return NULL;
    const fs_mlayer *L = &m->layers[l];
    for (int i = 0; i < L->nlin; i++)
        if (strlen(L->lin[i].name) == n - 7 && !strncmp(L->lin[i].name, tensor, n - 7)) {
            if (layer) *layer = L;
            return &L->lin[i];
        }
    return NULL;
}
