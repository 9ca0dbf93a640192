/* model.c: config.json -> model description (model.h), family by family, as
 * ARCHITECTURES.md §3-§8 describe them.  A builder appends linears and
 * other tensors to the current layer; each family is one function. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/formats/qread.h"
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
    int bad;                      /* a key present with an invalid value (the first one is in ctx) */
} cfg;

/* ---- typed, range-checked keys ------------------------------------------------
 * Each getter returns the key's value, or `def` when it is absent or null; a
 * value of the wrong type or out of range records the first such error
 * (naming the key's path, the rule and the value found) and sets c->bad.  No
 * double reaches an integer or float cast outside the target's range. */

/* A JSON value as a message shows it: numbers as written, strings quoted. */
static void show(const json_t *v, char *buf, size_t n)
{
    if (json_is_integer(v)) snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, n, "%g", json_real_value(v));
    else if (json_is_string(v))
        snprintf(buf, n, "\"%.40s\"%s (a string)", json_string_value(v), strlen(json_string_value(v)) > 40 ? "..." : "");
    else snprintf(buf, n, "%s", json_is_true(v) ? "true" : json_is_false(v) ? "false" : json_is_null(v) ? "null"
                                : json_is_array(v) ? "an array" : "an object");
}

static void bad_key(cfg *c, const char *path, const char *rule, const json_t *v)
{
    if (!c->bad) {
        char got[96];
        show(v, got, sizeof got);
        fs_ctx_err(c->ctx, FS_ERR_FORMAT, "%s: \"%s\" must be %s, got %s", c->where, path, rule, got);
    }
    c->bad = 1;
}

/* o[key] (o may be NULL), its path "oname.key" (or "key") into path[n]. */
static json_t *key_of(const json_t *o, const char *oname, const char *key, char *path, size_t n)
{
    snprintf(path, n, "%s%s%s", oname ? oname : "", oname ? "." : "", key);
    json_t *v = o ? json_object_get(o, key) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

/* A finite number in [lo or (lo, hi] or hi) (lo_in / hi_in: inclusive). */
static double getnum(cfg *c, const json_t *o, const char *oname, const char *key, double def, double lo, int lo_in,
                     double hi, int hi_in)
{
    char path[128];
    json_t *v = key_of(o, oname, key, path, sizeof path);
    if (!v) return def;
    double x = json_is_number(v) ? json_number_value(v) : 0.0;
    if (!json_is_number(v) || !isfinite(x) || (lo_in ? x < lo : x <= lo) || (hi_in ? x > hi : x >= hi)) {
        char rule[96];
        snprintf(rule, sizeof rule, "a number %s %g and %s %g", lo_in ? ">=" : ">", lo, hi_in ? "<=" : "<", hi);
        bad_key(c, path, rule, v);
        return def;
    }
    return x;
}

/* An integer in lo..hi: a JSON integer, or a real with an integral value in
 * range (checked before the cast). */
static int64_t getint(cfg *c, const json_t *o, const char *oname, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    char path[128];
    json_t *v = key_of(o, oname, key, path, sizeof path);
    if (!v) return def;
    if (json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi) return json_integer_value(v);
    double x = json_is_real(v) ? json_real_value(v) : NAN;
    if (json_is_real(v) && isfinite(x) && x == floor(x) && x >= (double)lo && x <= (double)hi) return (int64_t)x;
    char rule[96];
    snprintf(rule, sizeof rule, "an integer in %lld..%lld", (long long)lo, (long long)hi);
    bad_key(c, path, rule, v);
    return def;
}

static int getbool(cfg *c, const json_t *o, const char *oname, const char *key, int def)
{
    char path[128];
    json_t *v = key_of(o, oname, key, path, sizeof path);
    if (!v) return def;
    if (!json_is_boolean(v)) {
        bad_key(c, path, "true or false", v);
        return def;
    }
    return json_is_true(v);
}

static const char *getstr(cfg *c, const json_t *o, const char *oname, const char *key, const char *def)
{
    char path[128];
    json_t *v = key_of(o, oname, key, path, sizeof path);
    if (!v) return def;
    if (!json_is_string(v)) {
        bad_key(c, path, "a string", v);
        return def;
    }
    return json_string_value(v);
}

/* A top-level integer key in [lo, MAX_DIM]; `def` < 0 means required. */
static int64_t geti(cfg *c, const char *key, int64_t def, int64_t lo)
{
    json_t *v = json_object_get(c->j, key);
    if ((!v || json_is_null(v)) && def < 0) {
        size_t n = strlen(c->missing);
        snprintf(c->missing + n, sizeof c->missing - n, "%s%s", n ? ", " : "", key);
        return lo;
    }
    if (v && !json_is_null(v) && !json_is_integer(v)) {     /* sizes are JSON integers, never reals */
        char rule[96];
        snprintf(rule, sizeof rule, "an integer in %lld..%lld", (long long)lo, MAX_DIM);
        bad_key(c, key, rule, v);
        return lo;
    }
    return getint(c, c->j, NULL, key, def < 0 ? lo : def, lo, MAX_DIM);
}

static int getb(cfg *c, const char *key, int def) { return getbool(c, c->j, NULL, key, def); }

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
        if (json_is_null(only)) only = NULL;
        for (size_t k = 0; only && json_is_array(only) && k < json_array_size(only); k++) {
            json_t *x = json_array_get(only, k);
            if (!json_is_integer(x) || json_integer_value(x) < 0) {
                char path[64];
                snprintf(path, sizeof path, "mlp_only_layers[%zu]", k);
                bad_key(c, path, "a layer index (an integer >= 0)", x);
            }
        }
        if (only && !json_is_array(only)) bad_key(c, "mlp_only_layers", "an array of layer indices", only);
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
        m->fwd.qr = qr;
        m->fwd.kvr = kvr;
        m->fwd.nope = nope;
        m->fwd.rope_dim = rope;
        m->fwd.vh = vh;
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

/* ---- the forward's numbers (fs_mfwd) ---------------------------------------- */

/* rope_theta and rope_scaling / rope_parameters (ARCHITECTURES.md §2.4). */
static void rope_params(cfg *c, fs_mrope *r)
{
    const json_t *j = c->j;
    const char *rn = "rope_scaling";
    json_t *rs = json_object_get(j, "rope_scaling");
    if (!rs || json_is_null(rs)) { rs = json_object_get(j, "rope_parameters"); rn = "rope_parameters"; }
    if (rs && json_is_null(rs)) rs = NULL;
    if (rs && !json_is_object(rs)) { bad_key(c, rn, "an object or null", rs); rs = NULL; }
    json_t *top = json_object_get(j, "rope_theta");
    r->theta = top && !json_is_null(top) ? getnum(c, j, NULL, "rope_theta", 10000.0, 1.0, 0, 1e15, 1)
                                         : getnum(c, rs, rn, "rope_theta", 10000.0, 1.0, 0, 1e15, 1);
    json_t *rt = rs ? json_object_get(rs, "rope_type") : NULL;
    const char *tk = rt && !json_is_null(rt) ? "rope_type" : "type";
    const char *type = getstr(c, rs, rn, tk, "default");
    static const char *const names[] = {"default", "linear", "dynamic", "llama3", "yarn"};
    int t = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(type, names[i])) t = i;
    if (t < 0) {
        char path[64];
        snprintf(path, sizeof path, "%s.%s", rn, tk);
        bad_key(c, path, "one of default, linear, dynamic, llama3, yarn (the rope types supported)",
                json_object_get(rs, tk));
        t = 0;
    }
    r->type = (fs_rope_type)t;
    r->factor = getnum(c, rs, rn, "factor", 1.0, 0.0, 0, 1e6, 1);
    if (r->type == FS_ROPE_LLAMA3) {
        r->low = getnum(c, rs, rn, "low_freq_factor", 1.0, 0.0, 0, 1e6, 1);
        r->high = getnum(c, rs, rn, "high_freq_factor", 4.0, 0.0, 0, 1e6, 1);
        r->orig_max = getnum(c, rs, rn, "original_max_position_embeddings", 8192.0, 0.0, 0, 2147483648.0, 1);
        if (!c->bad && !(r->high > r->low)) {
            char path[64], rule[96];
            snprintf(path, sizeof path, "%s.high_freq_factor", rn);
            snprintf(rule, sizeof rule, "a number > low_freq_factor (%g)", r->low);
            bad_key(c, path, rule, json_object_get(rs, "high_freq_factor") ? json_object_get(rs, "high_freq_factor")
                                                                             : json_object_get(rs, "low_freq_factor"));
        }
    } else if (r->type == FS_ROPE_YARN) {
        r->orig_max = getnum(c, rs, rn, "original_max_position_embeddings", 0.0, 0.0, 0, 2147483648.0, 1);
        r->beta_fast = getnum(c, rs, rn, "beta_fast", 32.0, 0.0, 0, 1e6, 1);
        r->beta_slow = getnum(c, rs, rn, "beta_slow", 1.0, 0.0, 0, 1e6, 1);
        r->truncate = getbool(c, rs, rn, "truncate", 1);
        r->mscale = getnum(c, rs, rn, "mscale", 0.0, 0.0, 1, 1e3, 1);
        r->mscale_all_dim = getnum(c, rs, rn, "mscale_all_dim", 0.0, 0.0, 1, 1e3, 1);
        r->attention_factor = getnum(c, rs, rn, "attention_factor", 0.0, 0.0, 0, 1e3, 1);
        if (!c->bad && r->beta_fast < r->beta_slow) {
            char path[64], rule[96];
            snprintf(path, sizeof path, "%s.beta_fast", rn);
            snprintf(rule, sizeof rule, "a number >= beta_slow (%g)", r->beta_slow);
            bad_key(c, path, rule, json_object_get(rs, "beta_fast") ? json_object_get(rs, "beta_fast")
                                                                       : json_object_get(rs, "beta_slow"));
        }
    }
}

/* A structural rule of the forward broken by config.json (first error wins). */
static void bad_rule(cfg *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_rule(cfg *c, const char *fmt, ...)
{
    if (!c->bad) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        fs_ctx_err(c->ctx, FS_ERR_FORMAT, "%s: %s", c->where, buf);
    }
    c->bad = 1;
}

/* Every number the forward uses (forward.c, mla.c, moe.c) into m->fwd. */
static fs_status fwd_params(cfg *c, fs_model *m, const dims *d)
{
    fs_mfwd *f = &m->fwd;
    const char *fam = m->family;
    const int ds = !strncmp(fam, "deepseek", 8), v3 = !strcmp(fam, "deepseek_v3");
    const int mistral = !strcmp(fam, "mistral"), mixtral = !strcmp(fam, "mixtral");
    const int qwen = !strncmp(fam, "qwen", 4);
    const char *act = getstr(c, c->j, NULL, "hidden_act", "silu");
    if (strcmp(act, "silu")) bad_key(c, "hidden_act", "\"silu\"", json_object_get(c->j, "hidden_act"));
    f->eps = getnum(c, c->j, NULL, "rms_norm_eps", 1e-6, 1e-30, 1, 1.0, 0);
    f->max_pos = getint(c, c->j, NULL, "max_position_embeddings", 1 << 30, 1, 1ll << 31);
    rope_params(c, &f->rope);
    f->nh = d->nh;
    f->nkv = ds ? d->nh : d->nkv;
    if (ds) {
        f->hd = f->rope_dim;
        f->interleave = getbool(c, c->j, NULL, "rope_interleave", 1);
        if (f->rope_dim < 2 || f->rope_dim % 2)
            bad_rule(c, "\"qk_rope_head_dim\" must be even and >= 2, got %lld", (long long)f->rope_dim);
        f->rsf = getnum(c, c->j, NULL, "routed_scaling_factor", v3 ? 2.5 : 1.0, 0.0, 0, 1e6, 1);
        f->norm_topk = v3 ? getbool(c, c->j, NULL, "norm_topk_prob", 1) : 0;   /* v2: never (§5.5) */
        const char *method = getstr(c, c->j, NULL, "topk_method", v3 ? "noaux_tc" : "greedy");
        const char *score = getstr(c, c->j, NULL, "scoring_func", v3 ? "sigmoid" : "softmax");
        if (v3 ? (strcmp(method, "noaux_tc") || strcmp(score, "sigmoid"))
               : ((strcmp(method, "greedy") && strcmp(method, "group_limited_greedy")) || strcmp(score, "softmax")))
            bad_rule(c, "%s with topk_method '%.40s' and scoring_func '%.40s' is not supported (deepseek_v3: "
                     "noaux_tc + sigmoid; deepseek_v2: greedy or group_limited_greedy + softmax)", m->model_type,
                     method, score);
        f->group_limited = v3 || !strcmp(method, "group_limited_greedy");
        f->n_group = f->group_limited ? getint(c, c->j, NULL, "n_group", 1, 1, MAX_EXPERTS) : 1;
        f->topk_group = f->group_limited ? getint(c, c->j, NULL, "topk_group", 1, 1, MAX_EXPERTS) : 1;
        if (f->n_group == 1) f->topk_group = 1;
        const int64_t E = m->experts, K = m->top_k;
        if (!c->bad && E > 0 &&
            (K < 1 || K > E || E % f->n_group || f->topk_group > f->n_group ||
             f->topk_group * (E / f->n_group) < K || (v3 && f->n_group > 1 && E / f->n_group < 2)))
            bad_rule(c, "%lld experts, num_experts_per_tok %lld, n_group %lld, topk_group %lld: unusable (n_group "
                     "must divide the experts, topk_group <= n_group, and the chosen groups must hold the top-k)",
                     (long long)E, (long long)K, (long long)f->n_group, (long long)f->topk_group);
    } else {
        f->hd = d->hd;
        if (f->nh % f->nkv)
            bad_rule(c, "\"num_key_value_heads\" must divide num_attention_heads (%lld), got %lld", (long long)f->nh,
                     (long long)f->nkv);
        else if (f->hd < 2 || f->hd % 2)
            bad_rule(c, "\"head_dim\" (or hidden_size / num_attention_heads) must be even and >= 2, got %lld",
                     (long long)f->hd);
        if (m->experts > 0 && (m->top_k < 1 || m->top_k > m->experts))
            bad_rule(c, "\"num_experts_per_tok\" must be in 1..%d (the experts), got %d", m->experts, m->top_k);
        f->norm_topk = mixtral || (qwen && getbool(c, c->j, NULL, "norm_topk_prob", 0));
        int use_sw = getbool(c, c->j, NULL, "use_sliding_window", 0);
        if (use_sw && qwen) bad_rule(c, "use_sliding_window is not supported for %s", fam);
        json_t *sw = json_object_get(c->j, "sliding_window");
        if (mistral) f->window = !sw ? 4096 : getint(c, c->j, NULL, "sliding_window", 0, 1, 1ll << 31);
        if (mixtral) f->window = getint(c, c->j, NULL, "sliding_window", 0, 1, 1ll << 31);   /* MixtralConfig: None */
    }
    return c->bad ? c->ctx->err : FS_OK;
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

static const char *const known_types[] = {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe",
                                          "qwen3_moe", "deepseek_v2", "deepseek_v3", "kimi_k2"};

int fs_model_type_known(const void *config)
{
    json_t *mt = config ? json_object_get((const json_t *)config, "model_type") : NULL;
    for (size_t i = 0; json_is_string(mt) && i < sizeof known_types / sizeof known_types[0]; i++)
        if (!strcmp(json_string_value(mt), known_types[i])) return 1;
    return 0;
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
    if (rc == FS_OK) rc = fwd_params(&c, m, &d);
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
    if (t->dtype == FS_DT_F8_E4M3) return fs_ckpt_check_fp8(ctx, c, e);
    return FS_OK;
}

static int float_dt(fs_dtype dt, int f8)
{
    return dt == FS_DT_F32 || dt == FS_DT_F16 || dt == FS_DT_BF16 || (f8 && dt == FS_DT_F8_E4M3);
}

/* A described tensor: present (unless optional) with its shape, and a float
 * dtype (F8_E4M3 with its scale when f8, else F32/F16/BF16). */
static fs_status check_float(fs_ctx *ctx, const fs_ckpt *c, const char *name, int ndim, const int64_t *shape,
                             int optional, int f8, const char *what)
{
    fs_status rc = check_one(ctx, c, name, ndim, shape, optional);
    const fs_ckpt_entry *e = rc == FS_OK ? fs_ckpt_find(c, name) : NULL;
    if (e && !float_dt(e->t->dtype, f8))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s '%s' has dtype %s (%s expected)", c->shard_names[e->shard], what,
                        name, fs_dtype_name(e->t->dtype), f8 ? "F32, F16, BF16 or F8_E4M3" : "F32, F16 or BF16");
    return rc;
}

/* Linear `base` [out, in]: its plain weight, or (quantized checkpoints) its
 * forge / gptq set. */
static fs_status check_linear(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t out,
                              int64_t in)
{
    char w[600], q[600];
    snprintf(w, sizeof w, "%s.weight", base);
    const char *suf = fs_qread_main_suffix(c, base);
    snprintf(q, sizeof q, "%s.%s", base, suf ? suf : "qweight");
    const fs_ckpt_entry *qe = fs_ckpt_find(c, q);
    if (!qe) {
        int64_t s[2] = {out, in};
        return check_float(ctx, c, w, 2, s, 0, 1, "linear weight");
    }
    if (fs_ckpt_find(c, w))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: linear '%s' is stored twice: '%s' and '%s'", c->dir, base, w, q);
    int64_t o = 0, n = 0;
    fs_status rc = fs_qread_check(ctx, c, qi, base, &o, &n);
    if (rc == FS_OK && (o != out || n != in))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' is [%lld, %lld] but config.json says [%lld, %lld]",
                        c->shard_names[qe->shard], q, (long long)o, (long long)n, (long long)out, (long long)in);
    return rc;
}

fs_status fs_model_validate(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c, int flags)
{
    fs_qinfo qi;
    fs_status rc = fs_qinfo_from_config(ctx, c->config, &qi);
    if (rc != FS_OK) return rc;
    if (qi.quantized && !(flags & FS_CHECK_QUANTIZED))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/config.json: quantization_config.quant_method is \"%s\": the "
                          "checkpoint is already quantized (quantize reads F32, F16, BF16 or FP8 checkpoints)", c->dir,
                          fs_format_name(qi.fmt));
    for (int i = 0; rc == FS_OK && i < m->nglobal; i++) {
        const fs_mtensor *t = &m->global[i];
        int f8 = strcmp(t->name, "model.norm.weight") != 0;      /* embeddings and lm_head may be FP8 */
        rc = check_float(ctx, c, t->name, t->ndim, t->shape, t->optional, f8, f8 ? "tensor" : "norm");
    }
    for (int l = 0; rc == FS_OK && l < m->nlayers; l++) {
        const fs_mlayer *L = &m->layers[l];
        for (int i = 0; rc == FS_OK && i < L->nlin; i++)
            rc = check_linear(ctx, c, &qi, L->lin[i].name, L->lin[i].out, L->lin[i].in);
        for (int i = 0; rc == FS_OK && i < L->nother; i++)   /* norms, routers, biases: read as f32 */
            rc = check_float(ctx, c, L->other[i].name, L->other[i].ndim, L->other[i].shape, L->other[i].optional, 0,
                             "tensor");
    }
    /* every F8_E4M3 tensor (MTP layers and undescribed ones too: they are
     * dequantized when copied) has a scale of the right dtype and shape */
    for (size_t i = 0; rc == FS_OK && i < c->ntensors; i++)
        if (c->entries[i].t->dtype == FS_DT_F8_E4M3) rc = fs_ckpt_check_fp8(ctx, c, &c->entries[i]);
    return rc;
}

fs_status fs_model_check(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c)
{
    return fs_model_validate(ctx, m, c, 0);
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
