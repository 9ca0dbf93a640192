/* moe.c: the MoE block on the CPU and the expert-calibration report (moe.h).
 *
 * Invariants (besides moe.h's):
 *  1. The block itself is src/forward/block-moe.c (fs_moe_route_ex too).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
