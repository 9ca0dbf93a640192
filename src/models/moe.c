/* moe.c: the MoE block on the CPU and the expert-calibration report (moe.h).
 *
 * Invariants (besides moe.h's):
 *  1. fs_moe_ffn gathers, per expert, the rows routed to it, runs the gated
 *     MLP on those rows only (silu(gate) * up, then down) and adds w * y to
 *     each token's output; a token's contributions come in expert order.
 *  2. Memory: routing [n, k] plus one gathered [n, max width] block at a time.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "src/models/moe.h"

const char *fs_expert_policy_name(fs_expert_policy p)
{
    return p == FS_EXPERT_RTN ? "rtn" : p == FS_EXPERT_SHARED ? "shared" : "all-tokens";
}

int fs_expert_policy_parse(const char *s, fs_expert_policy *p)
{
    if (!strcmp(s, "rtn")) *p = FS_EXPERT_RTN;
    else if (!strcmp(s, "all-tokens")) *p = FS_EXPERT_ALL_TOKENS;
    else if (!strcmp(s, "shared")) *p = FS_EXPERT_SHARED;
    else return -1;
    return 0;
}

/* The router's config for cpu/route.c's kernel (the arithmetic of moe.h's
 * invariants 1-2 and fs_moe_route_ex). */
static fs_route_cfg route_cfg(const fs_fwd *f, int kind)
{
    fs_route_cfg c;
    c.kind = kind;
    c.E = f->E;
    c.topk = f->topk;
    c.norm_topk = f->norm_topk;
    c.n_group = kind == FS_ROUTE_SOFTMAX ? 1 : f->n_group;
    c.topk_group = kind == FS_ROUTE_SOFTMAX ? 1 : f->topk_group;
    c.group_max = f->group_max;
    c.rsf = f->rsf;
    return c;
}

static fs_status route(fs_ctx *ctx, const fs_fwd *f, int kind, const float *router, const float *bias,
                       const float *xn, int64_t n, int32_t *idx, float *wt)
{
    const int64_t E = f->E, K = f->topk;
    float *lg = fs_alloc2((size_t)(n ? n : 1), (size_t)E * sizeof(float));
    if (!lg) return fs_ctx_err(ctx, FS_ERR_NOMEM, "router logits of %lld tokens", (long long)n);
    fs_fwd_linear(xn, router, NULL, n, f->H, E, lg);
    const fs_route_cfg c = route_cfg(f, kind);
    fs_status rc = fs_cpu_route(ctx, &c, lg, E, n, bias, idx, K, wt, K);
    free(lg);
    return rc;
}

fs_status fs_moe_route_ex(fs_ctx *ctx, const fs_fwd *f, const float *router, const float *bias,
                          const float *xn, int64_t n, int32_t *idx, float *wt)
{
    return route(ctx, f, f->route, router, f->route == FS_ROUTE_DS_SIGMOID ? bias : NULL, xn, n, idx, wt);
}

fs_status fs_moe_route(fs_ctx *ctx, const fs_fwd *f, const float *router, const float *xn,
                       int64_t n, int32_t *idx, float *wt)
{
    return route(ctx, f, FS_ROUTE_SOFTMAX, router, NULL, xn, n, idx, wt);
}

fs_status fs_moe_ffn(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, const float *xn, int64_t n,
                     float *out)
{
    const int64_t H = f->H, K = f->topk, Ie = f->Ie, Is = f->Is;
    const int64_t wide = Is > Ie ? Is : Ie;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(n * K + 1)), *rows = malloc(sizeof(int32_t) * (size_t)(n + 1));
    float *wt = malloc(sizeof(float) * (size_t)(n * K + 1)), *rw = malloc(sizeof(float) * (size_t)(n + 1));
    float *xg = fs_alloc2((size_t)n + 1, (size_t)H * 4), *g = fs_alloc2((size_t)n + 1, (size_t)wide * 4);
    float *u = fs_alloc2((size_t)n + 1, (size_t)wide * 4), *y = fs_alloc2((size_t)n + 1, (size_t)H * 4);
    fs_status rc = FS_OK;
    if (!idx || !rows || !wt || !rw || !xg || !g || !u || !y) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "MoE activations of %lld tokens", (long long)n);
        goto out;
    }
    if ((rc = fs_moe_route_ex(ctx, f, w->router, w->escb, xn, n, idx, wt)) != FS_OK) goto out;
    memset(out, 0, sizeof(float) * (size_t)(n * H));
    for (int64_t e = 0; e < f->E; e++) {
        int64_t ne = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t k = 0; k < K; k++)
                if (idx[t * K + k] == (int32_t)e) { rows[ne] = (int32_t)t; rw[ne++] = wt[t * K + k]; }
        if (!ne) continue;
        for (int64_t r = 0; r < ne; r++) memcpy(xg + r * H, xn + (int64_t)rows[r] * H, sizeof(float) * (size_t)H);
        fs_fwd_linear(xg, w->ex[3 * e], NULL, ne, H, Ie, g);
        fs_fwd_linear(xg, w->ex[3 * e + 1], NULL, ne, H, Ie, u);
        fs_fwd_swiglu(g, u, ne, Ie, g);
        fs_fwd_linear(g, w->ex[3 * e + 2], NULL, ne, Ie, H, y);
        for (int64_t r = 0; r < ne; r++)
            for (int64_t i = 0; i < H; i++) out[(int64_t)rows[r] * H + i] += rw[r] * y[r * H + i];
    }
    if (Is > 0 && w->e0 > w->g0) {                /* shared expert(s): qwen2_moe sigmoid gate, DeepSeek 1 */
        fs_fwd_linear(xn, w->w[w->g0], NULL, n, H, Is, g);
        fs_fwd_linear(xn, w->w[w->g0 + 1], NULL, n, H, Is, u);
        fs_fwd_swiglu(g, u, n, Is, g);
        fs_fwd_linear(g, w->w[w->g0 + 2], NULL, n, Is, H, y);
        for (int64_t t = 0; t < n; t++) {
            float z = 0.0f;
            if (w->sgate)
                for (int64_t i = 0; i < H; i++) z += xn[t * H + i] * w->sgate[i];
            float s = w->sgate ? 1.0f / (1.0f + expf(-z)) : 1.0f;
            for (int64_t i = 0; i < H; i++) out[t * H + i] += s * y[t * H + i];
        }
    }
out:
    free(idx); free(rows); free(wt); free(rw); free(xg); free(g); free(u); free(y);
    return rc;
}

void fs_moe_expert_name(const fs_mlayer *L, int e, char *buf, size_t n)
{
    const char *nm = "?";
    for (int i = 0; i < L->nlin; i++)
        if (L->lin[i].expert == e) { nm = L->lin[i].name; break; }
    const char *dot = strrchr(nm, '.');
    int len = dot ? (int)(dot - nm) : (int)strlen(nm);
    snprintf(buf, n, "%.*s", len, nm);
}

fs_status fs_moe_report_add(fs_ctx *ctx, fs_moe_report *r, int layer, int nexp, const int64_t *count,
                            const int *under)
{
    fs_moe_layer_stat *l = realloc(r->l, sizeof *l * (size_t)(r->n + 1));
    if (!l) return fs_ctx_err(ctx, FS_ERR_NOMEM, "expert report");
    r->l = l;
    fs_moe_layer_stat *s = &l[r->n];
    s->layer = layer;
    s->nexp = nexp;
    s->count = malloc(sizeof(int64_t) * (size_t)(nexp ? nexp : 1));
    s->under = malloc(sizeof(int) * (size_t)(nexp ? nexp : 1));
    if (!s->count || !s->under) {
        free(s->count); free(s->under);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "expert report");
    }
    memcpy(s->count, count, sizeof(int64_t) * (size_t)nexp);
    memcpy(s->under, under, sizeof(int) * (size_t)nexp);
    r->n++;
    return FS_OK;
}

void fs_moe_report_free(fs_moe_report *r)
{
    for (int i = 0; i < r->n; i++) { free(r->l[i].count); free(r->l[i].under); }
    free(r->l);
    r->l = NULL;
    r->n = 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

double fs_moe_median(const int64_t *count, int n)
{
    if (n <= 0) return 0.0;
    int64_t *s = malloc(sizeof(int64_t) * (size_t)n);
    if (!s) return (double)count[0];
    memcpy(s, count, sizeof(int64_t) * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_i64);
    double m = ((double)s[(n - 1) / 2] + (double)s[n / 2]) / 2.0;
    free(s);
    return m;
}

void *fs_moe_report_json(const fs_moe_report *r, const fs_model *m)
{
    json_t *o = json_object(), *per = json_object(), *under = json_array();
    int bad = !o || !per || !under;
    for (int i = 0; !bad && i < r->n; i++) {
        const fs_moe_layer_stat *s = &r->l[i];
        json_t *counts = json_array();
        int64_t mn = s->nexp ? s->count[0] : 0, mx = mn;
        for (int e = 0; counts && e < s->nexp; e++) {
            mn = s->count[e] < mn ? s->count[e] : mn;
            mx = s->count[e] > mx ? s->count[e] : mx;
            bad |= json_array_append_new(counts, json_integer(s->count[e]));
            if (s->under[e] && s->layer < m->nlayers) {
                char nm[512];
                fs_moe_expert_name(&m->layers[s->layer], e, nm, sizeof nm);
                bad |= json_array_append_new(under, json_pack("{s:s, s:I}", "name", nm, "tokens",
                                                              (json_int_t)s->count[e]));
            }
        }
        char key[64];
        snprintf(key, sizeof key, "model.layers.%d", s->layer);
        json_t *ly = counts ? json_pack("{s:I, s:f, s:I, s:o}", "min", (json_int_t)mn, "median",
                                        fs_moe_median(s->count, s->nexp), "max", (json_int_t)mx,
                                        "counts", counts) : NULL;
        bad |= !ly || json_object_set_new(per, key, ly);
    }
    if (!bad) {
        bad |= json_object_set_new(o, "expert_policy", json_string(fs_expert_policy_name(r->policy)));
        bad |= json_object_set_new(o, "min_expert_tokens", json_integer(r->min_tokens));
        bad |= json_object_set_new(o, "expert_tokens", per);
        per = NULL;
        bad |= json_object_set_new(o, "under_calibrated_experts", under);
        under = NULL;
    }
    json_decref(per);
    json_decref(under);
    if (bad) { json_decref(o); return NULL; }
    return o;
}
