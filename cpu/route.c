/* route.c: the MoE routers on the CPU from their logits (src/models/moe.h's
 * fs_moe_route and fs_moe_route_ex, whose arithmetic this is), and the
 * per-expert row lists of a routing.
 *
 * Invariants:
 *  1. Scores in F32: softmax (max subtracted, expf, sum in index order,
 *     divide) or sigmoid 1 / (1 + expf(-x)); DeepSeek-V3 chooses by sigmoid +
 *     bias and weighs by the unbiased sigmoid.
 *  2. Top-k by a strict comparison walking the experts in index order: ties
 *     go to the lower index; groups likewise (lower group).
 *  3. Tokens are independent: rows run on OpenMP threads, each with its own
 *     scratch; the logits are never modified.
 *  4. Row lists: entries by expert, tokens ascending within an expert (the
 *     order fs_moe_ffn and the pipeline gather in), one sequential pass.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

/* mixtral / qwen*_moe: p[E] scratch holding the logits. */
static void route_softmax(const fs_route_cfg *c, float *p, int32_t *idx, float *wt)
{
    const int64_t E = c->E, K = c->topk;
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t e = 0; e < E; e++) mx = p[e] > mx ? p[e] : mx;
    for (int64_t e = 0; e < E; e++) { p[e] = expf(p[e] - mx); sum += p[e]; }
    for (int64_t e = 0; e < E; e++) p[e] /= sum;
    float tot = 0.0f;
    for (int64_t k = 0; k < K; k++) {         /* k-th largest; ties: lower index */
        int32_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t j = 0; j < k; j++) taken |= idx[j] == (int32_t)e;
            if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
        }
        idx[k] = best;
        wt[k] = p[best];
        tot += p[best];
    }
    if (c->norm_topk)
        for (int64_t k = 0; k < K; k++) wt[k] /= tot;
}

/* DeepSeek: p[E] the logits (overwritten with the scores), sel[E], gsc and
 * keep[n_group] scratch. */
static void route_ds(const fs_route_cfg *c, const float *bias, float *p, float *sel, float *gsc, int *keep,
                     int32_t *idx, float *wt)
{
    const int64_t E = c->E, K = c->topk, G = c->n_group, per = E / G;
    if (c->kind == FS_ROUTE_DS_SIGMOID) {
        for (int64_t e = 0; e < E; e++) {
            p[e] = 1.0f / (1.0f + expf(-p[e]));
            sel[e] = p[e] + (bias ? bias[e] : 0.0f);
        }
    } else {
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t e = 0; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        for (int64_t e = 0; e < E; e++) { p[e] = expf(p[e] - mx); sum += p[e]; }
        for (int64_t e = 0; e < E; e++) { p[e] /= sum; sel[e] = p[e]; }
    }
    for (int64_t g = 0; g < G; g++) {              /* group scores */
        float a = -INFINITY, b = -INFINITY;         /* largest, second largest */
        for (int64_t e = g * per; e < (g + 1) * per; e++) {
            if (sel[e] > a) { b = a; a = sel[e]; }
            else if (sel[e] > b) b = sel[e];
        }
        gsc[g] = c->group_max || per < 2 ? a : a + b;
        keep[g] = G == 1;
    }
    for (int64_t k = 0; G > 1 && k < c->topk_group; k++) {
        int64_t best = -1;
        for (int64_t g = 0; g < G; g++)
            if (!keep[g] && (best < 0 || gsc[g] > gsc[best])) best = g;
        keep[best] = 1;
    }
    float tot = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        int32_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            if (!keep[e / per]) continue;
            int taken = 0;
            for (int64_t j = 0; j < k; j++) taken |= idx[j] == (int32_t)e;
            if (!taken && (best < 0 || sel[e] > sel[best])) best = (int32_t)e;
        }
        idx[k] = best;
        wt[k] = p[best];
        tot += p[best];
    }
    for (int64_t k = 0; k < K; k++) {
        if (c->kind == FS_ROUTE_DS_SIGMOID && c->norm_topk) wt[k] /= tot + 1e-20f;
        wt[k] *= c->rsf;
    }
}

fs_status fs_cpu_route(fs_ctx *ctx, const fs_route_cfg *c, const float *logits, int64_t ldl, int64_t n,
                       const float *bias, int32_t *idx, int64_t ldi, float *wt, int64_t ldw)
{
    const int64_t E = c->E, G = c->n_group, K = c->topk;
    const size_t per = (size_t)(2 * E + G);           /* p, sel, gsc (floats) per token */
    float *sc = fs_alloc2((size_t)(n ? n : 1), per * sizeof(float));
    int *keep = fs_alloc2((size_t)(n ? n : 1), (size_t)G * sizeof(int));
    int32_t *ix = fs_alloc2((size_t)(n ? n : 1), (size_t)K * sizeof(int32_t));
    float *w = fs_alloc2((size_t)(n ? n : 1), (size_t)K * sizeof(float));
    if (!sc || !keep || !ix || !w) {
        free(sc); free(keep); free(ix); free(w);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "router scores of %lld tokens", (long long)n);
    }
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        float *p = sc + (size_t)t * per;
        memcpy(p, logits + t * ldl, sizeof(float) * (size_t)E);
        if (c->kind == FS_ROUTE_SOFTMAX) route_softmax(c, p, ix + t * K, w + t * K);
        else route_ds(c, bias, p, p + E, p + 2 * E, keep + t * G, ix + t * K, w + t * K);
        memcpy(idx + t * ldi, ix + t * K, sizeof(int32_t) * (size_t)K);
        memcpy(wt + t * ldw, w + t * K, sizeof(float) * (size_t)K);
    }
    free(sc); free(keep); free(ix); free(w);
    return FS_OK;
}

fs_status fs_cpu_op_route(fs_ctx *ctx, const fs_route_args *a)
{
    return fs_cpu_route(ctx, &a->cfg, FS_CPU_F32(a->logits), a->logits.ld, a->logits.rows,
                        a->bias.buf ? FS_CPU_F32(a->bias) : NULL, (int32_t *)fs_cpu_at(&a->idx, 0, 0), a->idx.ld,
                        FS_CPU_F32(a->wt), a->wt.ld);
}

fs_status fs_cpu_op_route_lists(fs_ctx *ctx, const fs_lists_args *a)
{
    const int64_t n = a->idx.rows, K = a->idx.cols, E = a->E;
    int32_t *offs = (int32_t *)fs_cpu_at(&a->offs, 0, 0), *rows = (int32_t *)fs_cpu_at(&a->rows, 0, 0);
    float *rw = a->rw.buf ? FS_CPU_F32(a->rw) : NULL;
    int64_t *cur = calloc((size_t)E + 1, sizeof *cur);
    if (!cur) return fs_ctx_err(ctx, FS_ERR_NOMEM, "row lists of %lld experts", (long long)E);
    for (int64_t t = 0; t < n; t++) {
        const int32_t *ir = (const int32_t *)fs_cpu_at(&a->idx, t, 0);
        for (int64_t k = 0; k < K; k++) {
            if (ir[k] < 0 || ir[k] >= E) {
                free(cur);
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "route_lists: expert %d of token %lld (entry %lld) is outside "
                                  "[0, %lld)", (int)ir[k], (long long)t, (long long)k, (long long)E);
            }
            cur[ir[k] + 1]++;
        }
    }
    for (int64_t e = 0; e < E; e++) cur[e + 1] += cur[e];
    for (int64_t e = 0; e <= E; e++) offs[e] = (int32_t)cur[e];
    for (int64_t t = 0; t < n; t++) {                /* invariant 4: tokens in order */
        const int32_t *ir = (const int32_t *)fs_cpu_at(&a->idx, t, 0);
        const float *wr = a->wt.buf ? (const float *)fs_cpu_at(&a->wt, t, 0) : NULL;
        for (int64_t k = 0; k < K; k++) {
            int64_t pos = cur[ir[k]]++;
            rows[pos] = (int32_t)t;
            if (rw) rw[pos] = wr[k];
        }
    }
    free(cur);
    return FS_OK;
}
