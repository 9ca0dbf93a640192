/* qread.c: decoding quantized linears of forge and gptq checkpoints (qread.h).
 * Every shape, dtype and group index is checked against the others before a
 * byte is decoded: a checkpoint is outside data. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/formats/pack.h"
#include "src/formats/qread.h"

/* compressed-tensors: one config group of weight-only int quantization in
 * the pack-quantized format (what --format compressed-tensors writes and
 * llm-compressor's W4A16 / W8A16 schemes are). */
static fs_status ct_from_config(fs_ctx *ctx, const json_t *qc, fs_qinfo *qi)
{
    const json_t *groups = json_object_get(qc, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) != 1)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors config_groups must hold exactly one group");
    const json_t *g = json_object_iter_value(json_object_iter((json_t *)groups));
    const json_t *w = json_object_get(g, "weights"), *ia = json_object_get(g, "input_activations");
    if (!json_is_object(w) || (ia && !json_is_null(ia)))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors group needs \"weights\" and no input_activations "
                          "(weight-only)");
    const json_t *nb = json_object_get(w, "num_bits"), *ty = json_object_get(w, "type"), *st = json_object_get(w, "strategy"),
                 *gs = json_object_get(w, "group_size"), *sy = json_object_get(w, "symmetric"), *ao = json_object_get(w, "actorder");
    const char *strat = json_is_string(st) ? json_string_value(st) : "";
    if (!json_is_integer(nb) || !json_is_string(ty) || strcmp(json_string_value(ty), "int") || !json_is_boolean(sy) ||
        (strcmp(strat, "group") && strcmp(strat, "channel")))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors weights need integer num_bits, type \"int\", "
                          "boolean symmetric and strategy \"group\" or \"channel\"");
    qi->bits = (int)json_integer_value(nb);
    qi->sym = json_is_true(sy);
    if (!strcmp(strat, "channel")) {
        /* one group per row: a group_size beside it (other than null or -1, as the
           compressed-tensors package's own validation has it) contradicts the strategy */
        if (gs && !json_is_null(gs) && !(json_is_integer(gs) && json_integer_value(gs) == -1))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors strategy \"channel\" takes no group_size "
                              "(null or -1), not %s", json_is_integer(gs) ? "an integer" : "a non-integer");
        qi->group_size = -1;
    } else if (json_is_integer(gs)) qi->group_size = json_integer_value(gs);
    else return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors strategy \"group\" needs an integer group_size");
    if (ao && !json_is_null(ao)) {
        const char *a = json_is_string(ao) ? json_string_value(ao) : "";
        if (!strcmp(a, "group") || !strcmp(a, "dynamic")) qi->act_order = 1;
        else if (!strcmp(a, "weight") || !strcmp(a, "static")) qi->act_order = qi->static_groups = 1;
        else return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: compressed-tensors actorder must be null, \"group\" or \"weight\"");
    }
    return FS_OK;
}

fs_status fs_qinfo_from_config(fs_ctx *ctx, const void *config, fs_qinfo *qi)
{
    memset(qi, 0, sizeof *qi);
    json_t *qc = config ? json_object_get((const json_t *)config, "quantization_config") : NULL;
    json_t *m = qc ? json_object_get(qc, "quant_method") : NULL;
    if (!json_is_string(m)) return FS_OK;
    const char *meth = json_string_value(m);
    if (strcmp(meth, "forge") && strcmp(meth, "gptq") && strcmp(meth, "compressed-tensors")) return FS_OK;
    const json_t *cf = json_object_get(qc, "format");
    if (!strcmp(meth, "compressed-tensors") && !(json_is_string(cf) && !strcmp(json_string_value(cf), "pack-quantized")))
        return FS_OK;                 /* another compressed-tensors format (e.g. float-quantized): not ours */
    qi->quantized = 1;
    if (fs_format_parse(meth, &qi->fmt)) return FS_OK;       /* (cannot happen: the names above) */
    fs_status rc;
    if (qi->fmt == FS_FMT_CT) {
        if ((rc = ct_from_config(ctx, qc, qi)) != FS_OK) return rc;
    } else {
        json_t *b = json_object_get(qc, "bits"), *g = json_object_get(qc, "group_size");
        if (!json_is_integer(b) || !json_is_integer(g))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: quantization_config needs integer bits and group_size");
        qi->bits = (int)json_integer_value(b);
        qi->group_size = json_integer_value(g);
    }
    if ((qi->bits != 2 && qi->bits != 3 && qi->bits != 4 && qi->bits != 8) ||
        (qi->group_size != -1 && (qi->group_size <= 0 || qi->group_size > (1ll << 30))))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: quantization_config bits %d / group_size %lld unsupported",
                          qi->bits, (long long)qi->group_size);
    if (qi->fmt == FS_FMT_CT) return FS_OK;
    const char *flags[3] = {"sym", qi->fmt == FS_FMT_GPTQ ? "desc_act" : "act_order", "static_groups"};
    int *dst[3] = {&qi->sym, &qi->act_order, &qi->static_groups};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(qc, flags[i]);
        if (v && !json_is_null(v) && !json_is_boolean(v))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "config.json: \"quantization_config.%s\" must be true or false",
                              flags[i]);
        *dst[i] = json_is_true(v);
    }
    return FS_OK;
}

static const fs_ckpt_entry *part(const fs_ckpt *c, const char *base, const char *suffix)
{
    char name[1100];
    snprintf(name, sizeof name, "%s.%s", base, suffix);
    return fs_ckpt_find(c, name);
}

const char *fs_qread_main_suffix(const fs_ckpt *c, const char *base)
{
    if (part(c, base, "qweight")) return "qweight";
    if (part(c, base, "weight_packed")) return "weight_packed";
    return NULL;
}

int fs_qread_is_quantized(const fs_ckpt *c, const char *base)
{
    return fs_qread_main_suffix(c, base) != NULL;
}

static fs_status need(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, const char *base,
                      const char *suffix, fs_dtype dt, int ndim, int64_t d0, int64_t d1)
{
    if (!e) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' has no '%s.%s'", c->dir, base, base, suffix);
    const fs_st_tensor *t = e->t;
    if (t->dtype != dt || t->ndim != ndim || (d0 >= 0 && t->shape[0] != d0) ||
        (ndim > 1 && d1 >= 0 && t->shape[1] != d1))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s' is %s of %d dims [%lld, %lld], expected %s [%lld, %lld]",
                          c->shard_names[e->shard], t->name, fs_dtype_name(t->dtype), t->ndim,
                          (long long)(t->ndim > 0 ? t->shape[0] : 0), (long long)(t->ndim > 1 ? t->shape[1] : 0),
                          fs_dtype_name(dt), (long long)d0, (long long)d1);
    return FS_OK;
}

static fs_status read_part(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, void **out)
{
    *out = malloc(e->t->nbytes ? (size_t)e->t->nbytes : 1);
    if (!*out) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", e->t->name);
    fs_status rc = fs_ckpt_read_raw(ctx, c, e, *out);
    if (rc != FS_OK) { free(*out); *out = NULL; }
    return rc;
}

static fs_status check_gidx(fs_ctx *ctx, const int32_t *g, int64_t in, int64_t ng, const char *name)
{
    for (int64_t i = 0; i < in; i++)
        if (g[i] < 0 || g[i] >= ng)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "'%s': g_idx[%lld] = %d is not a group (0..%lld)",
                              name, (long long)i, g[i], (long long)(ng - 1));
    return FS_OK;
}

/* compressed-tensors: weight_shape's two numbers are read (16 bytes): the
 * packed shape alone cannot say `in`. */
static fs_status ct_check(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t *out,
                          int64_t *in)
{
    const fs_ckpt_entry *pk = part(c, base, "weight_packed"), *sh = part(c, base, "weight_shape"),
                        *sc = part(c, base, "weight_scale"), *zp = part(c, base, "weight_zero_point"),
                        *ge = part(c, base, "weight_g_idx");
    const int bits = qi->bits;
    fs_status rc;
    if (!sh) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' has no '%s.weight_shape'", c->dir, base, base);
    if ((sh->t->dtype != FS_DT_I64 && sh->t->dtype != FS_DT_I32) || sh->t->ndim != 1 || sh->t->shape[0] != 2)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s' must be I64 (or I32) [2]", c->shard_names[sh->shard], sh->t->name);
    uint8_t raw[16];
    if ((rc = fs_ckpt_read_raw(ctx, c, sh, raw)) != FS_OK) return rc;
    int64_t d[2];
    for (int i = 0; i < 2; i++) {
        if (sh->t->dtype == FS_DT_I64) memcpy(&d[i], raw + 8 * i, 8);
        else { int32_t v; memcpy(&v, raw + 4 * i, 4); d[i] = v; }
    }
    if (d[0] < 1 || d[1] < 1 || d[0] > (1ll << 32) || d[1] > (1ll << 32))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s' = [%lld, %lld] is not a weight shape", c->shard_names[sh->shard],
                          sh->t->name, (long long)d[0], (long long)d[1]);
    const int64_t o = d[0], n = d[1], ng = fs_ngroups(n, qi->group_size);
    if ((rc = need(ctx, c, pk, base, "weight_packed", FS_DT_I32, 2, o, fs_ct_words(bits, n))))
        return rc;
    if (!sc) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' has no '%s.weight_scale'", c->dir, base, base);
    if ((sc->t->dtype != FS_DT_F32 && sc->t->dtype != FS_DT_F16 && sc->t->dtype != FS_DT_BF16) &&
        (rc = need(ctx, c, sc, base, "weight_scale", FS_DT_F32, 2, o, ng)))
        return rc;
    if ((rc = need(ctx, c, sc, base, "weight_scale", sc->t->dtype, 2, o, ng)) ||
        (!qi->sym && (rc = need(ctx, c, zp, base, "weight_zero_point", FS_DT_I32, 2, fs_ct_words(bits, o), ng))) ||
        (ge && (rc = need(ctx, c, ge, base, "weight_g_idx", FS_DT_I32, 1, n, 0))))
        return rc;
    if (qi->sym && zp)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s' in a symmetric checkpoint", c->shard_names[zp->shard], zp->t->name);
    *out = o;
    *in = n;
    return FS_OK;
}

fs_status fs_qread_check(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t *out,
                         int64_t *in)
{
    char name[1100];
    *out = *in = 0;
    if (qi->quantized && qi->fmt == FS_FMT_CT && part(c, base, "weight_packed")) return ct_check(ctx, c, qi, base, out, in);
    const fs_ckpt_entry *qw = part(c, base, "qweight");
    if (!qw) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' has no '%s.qweight'", c->dir, base, base);
    if (!qi->quantized || qi->fmt == FS_FMT_CT)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s.qweight' but config.json has no forge/gptq quantization_config",
                          c->dir, base);
    const int bits = qi->bits;
    const fs_ckpt_entry *ge = part(c, base, "g_idx");
    fs_status rc;
    if (qi->fmt == FS_FMT_FORGE) {
        const fs_ckpt_entry *qm = part(c, base, "qmeta");
        snprintf(name, sizeof name, "in_features:%s.qweight", base);
        const char *inf = fs_st_meta(c->shards[qw->shard], name);
        char *end = NULL;
        errno = 0;
        long long n = inf ? strtoll(inf, &end, 10) : 0;
        if (!inf || !*inf || *end || errno || n < 1 || n > (1ll << 32))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no valid in_features for '%s.qweight' in its metadata",
                              c->shard_names[qw->shard], base);
        const int64_t o = qw->t->ndim == 2 ? qw->t->shape[0] : 0, ng = fs_ngroups(n, qi->group_size);
        if ((rc = need(ctx, c, qw, base, "qweight", FS_DT_U8, 2, -1, fs_forge_row_bytes(bits, n))) ||
            (rc = need(ctx, c, qm, base, "qmeta", FS_DT_U8, 3, o, ng)) ||
            (qm->t->shape[2] != 4 && (rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s.qmeta' has last dim %lld, not 4",
                                                      c->shard_names[qm->shard], base, (long long)qm->t->shape[2]))) ||
            (ge && (rc = need(ctx, c, ge, base, "g_idx", FS_DT_I32, 1, n, 0))))
            return rc;
        if (o < 1)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s.qweight' has no rows", c->shard_names[qw->shard], base);
        *out = o;
        *in = n;
    } else {
        const fs_ckpt_entry *qz = part(c, base, "qzeros"), *sc = part(c, base, "scales");
        if ((rc = need(ctx, c, ge, base, "g_idx", FS_DT_I32, 1, -1, 0)) ||
            (rc = need(ctx, c, sc, base, "scales", FS_DT_F16, 2, -1, -1)))
            return rc;
        const int64_t n = ge->t->shape[0], ng = sc->t->shape[0], o = sc->t->shape[1];
        if (n < 1 || o < 1)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantized linear '%s' is [%lld, %lld] (g_idx, scales): empty",
                              c->dir, base, (long long)o, (long long)n);
        if (ng != fs_ngroups(n, qi->group_size))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s.scales' has %lld groups, but %lld inputs in groups of %lld "
                              "(quantization_config.group_size) make %lld", c->shard_names[sc->shard], base,
                              (long long)ng, (long long)n, (long long)qi->group_size,
                              (long long)fs_ngroups(n, qi->group_size));
        if ((rc = need(ctx, c, qw, base, "qweight", FS_DT_I32, 2, fs_gptq_qweight_rows(bits, n), o)) ||
            (rc = need(ctx, c, qz, base, "qzeros", FS_DT_I32, 2, ng, fs_gptq_qzeros_cols(bits, o))))
            return rc;
        *out = o;
        *in = n;
    }
    return FS_OK;
}

fs_status fs_qread_linear(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base,
                          float **W, int64_t *out, int64_t *in)
{
    char name[1100];
    *W = NULL;
    const fs_ckpt_entry *qw = part(c, base, "qweight");
    if (!qw) qw = part(c, base, "weight_packed");
    if (!qw) {
        snprintf(name, sizeof name, "%s.weight", base);
        const fs_ckpt_entry *e = fs_ckpt_find(c, name);
        if (!e || e->t->ndim != 2)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no 2-D '%s' nor '%s.qweight'", c->dir, name, base);
        *out = e->t->shape[0];
        *in = e->t->shape[1];
        return fs_ckpt_read_f32(ctx, c, name, W);
    }
    int64_t o = 0, n = 0;
    fs_status rc = fs_qread_check(ctx, c, qi, base, &o, &n);
    if (rc != FS_OK) return rc;
    *out = o;
    *in = n;
    const int bits = qi->bits;
    void *a = NULL, *b = NULL, *s = NULL, *g = NULL;
    const fs_ckpt_entry *ge = part(c, base, "g_idx");
    if (qi->fmt == FS_FMT_FORGE) {
        const fs_ckpt_entry *qm = part(c, base, "qmeta");
        const int64_t ng = fs_ngroups(n, qi->group_size);
        if ((rc = read_part(ctx, c, qw, &a)) || (rc = read_part(ctx, c, qm, &b)) ||
            (ge && (rc = read_part(ctx, c, ge, &g))))
            goto out;
        int32_t *gi = g ? g : fs_alloc2((size_t)n, sizeof(int32_t));
        if (!gi) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "g_idx"); goto out; }
        if (!g) { g = gi; fs_group_index(n, fs_group_width(n, qi->group_size), NULL, 1, gi); }
        if ((rc = check_gidx(ctx, gi, n, ng, base))) goto out;
        if (!(*W = fs_alloc2((size_t)o, (size_t)n * sizeof(float)))) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", base); goto out; }
        fs_forge_decode(a, b, gi, o, n, ng, bits, *W);
    } else if (qi->fmt == FS_FMT_GPTQ) {
        const fs_ckpt_entry *qz = part(c, base, "qzeros"), *sc = part(c, base, "scales");
        const int64_t ng = sc->t->shape[0];
        if ((rc = read_part(ctx, c, qw, &a)) || (rc = read_part(ctx, c, qz, &b)) ||
            (rc = read_part(ctx, c, sc, &s)) || (rc = read_part(ctx, c, ge, &g)))
            goto out;
        if ((rc = check_gidx(ctx, g, n, ng, base))) goto out;
        if (!(*W = fs_alloc2((size_t)o, (size_t)n * sizeof(float)))) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", base); goto out; }
        fs_gptq_decode(a, b, s, g, o, n, ng, bits, *W);
    } else {
        const fs_ckpt_entry *sc = part(c, base, "weight_scale"), *zp = part(c, base, "weight_zero_point"),
                            *ge2 = part(c, base, "weight_g_idx");
        const int64_t ng = fs_ngroups(n, qi->group_size);
        if ((rc = read_part(ctx, c, qw, &a)) || (!qi->sym && (rc = read_part(ctx, c, zp, &b))) ||
            (rc = read_part(ctx, c, sc, &s)) || (ge2 && (rc = read_part(ctx, c, ge2, &g))))
            goto out;
        int32_t *gi = g ? g : fs_alloc2((size_t)n, sizeof(int32_t));
        float *sf = sc->t->dtype == FS_DT_F32 ? s : fs_alloc2((size_t)(o * ng), sizeof(float));
        if (!gi || !sf) {
            if (!g) free(gi);
            if (sf != s) free(sf);
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", base);
            goto out;
        }
        if (!g) { g = gi; fs_group_index(n, fs_group_width(n, qi->group_size), NULL, 1, gi); }
        if (sf != s) {                                  /* F16 / BF16 scales of other writers */
            for (int64_t i = 0; i < o * ng; i++) {
                uint16_t h = ((const uint16_t *)s)[i];
                sf[i] = sc->t->dtype == FS_DT_F16 ? fs_f16_to_f32(h) : fs_bf16_to_f32(h);
            }
            free(s);
            s = sf;
        }
        if ((rc = check_gidx(ctx, gi, n, ng, base))) goto out;
        if (!(*W = fs_alloc2((size_t)o, (size_t)n * sizeof(float)))) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", base); goto out; }
        fs_ct_decode(a, b, s, gi, o, n, ng, bits, *W);
    }
    /* hostile scales or metadata decode to Inf / NaN (an F16 scale of Inf, a
     * qmeta code near 2^128 times a code): refused like any non-finite weight */
    snprintf(name, sizeof name, "%s/%s: quantized linear '%s' decoded", c->dir,
             c->shard_names[qw->shard], base);
    rc = fs_check_finite(ctx, name, *W, (size_t)(o * n));
out:
    free(a); free(b); free(s); free(g);
    if (rc != FS_OK) { free(*W); *W = NULL; }
    return rc;
}
