/* ops-route.cu: the MoE routers and the per-expert row lists of the CUDA
 * backend: cpu/route.c's arithmetic, one thread per token.
 *
 * Invariants:
 *  1. Each token's thread runs cpu/route.c's sequence (softmax: max, expf of
 *     the differences, sum in index order, divide; sigmoid 1 / (1 + expf(-x));
 *     groups by their best or best two; top-k by a strict comparison in index
 *     order, ties to the lower index) on its own scratch rows in global
 *     memory.  Only expf differs (CUDA's, within 2 ulp of glibc's), so a
 *     weight may differ in its last bits and a near-tie may pick another
 *     expert: parity in tests/check_cuda.c is on data without near-ties.
 *  2. Row lists: one thread makes them in cpu/route.c's single sequential
 *     pass (entries by expert, tokens ascending), so the lists are the CPU's
 *     exactly.  A reference, not a fast path: n * k entries in one thread.
 *  3. An expert index outside [0, E) sets the queue's device error word.
 */
#include <math.h>

#include "cuda/cuda-be.h"

static __device__ void d_route_softmax(const fs_route_cfg &c, float *p, int32_t *idx, float *wt, int64_t ldk)
{
    const int64_t E = c.E, K = c.topk;
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t e = 0; e < E; e++) mx = p[e] > mx ? p[e] : mx;
    for (int64_t e = 0; e < E; e++) { p[e] = expf(p[e] - mx); sum += p[e]; }
    for (int64_t e = 0; e < E; e++) p[e] /= sum;
    float tot = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        int32_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t j = 0; j < k; j++) taken |= idx[j * ldk] == (int32_t)e;
            if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
        }
        idx[k * ldk] = best;
        wt[k * ldk] = p[best];
        tot += p[best];
    }
    if (c.norm_topk)
        for (int64_t k = 0; k < K; k++) wt[k * ldk] /= tot;
}

static __device__ void d_route_ds(const fs_route_cfg &c, const float *bias, float *p, float *sel, float *gsc, int *keep,
                                  int32_t *idx, float *wt, int64_t ldk)
{
    const int64_t E = c.E, K = c.topk, G = c.n_group, per = E / G;
    if (c.kind == FS_ROUTE_DS_SIGMOID) {
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
    for (int64_t g = 0; g < G; g++) {
        float a = -INFINITY, b = -INFINITY;
        for (int64_t e = g * per; e < (g + 1) * per; e++) {
            if (sel[e] > a) { b = a; a = sel[e]; }
            else if (sel[e] > b) b = sel[e];
        }
        gsc[g] = c.group_max || per < 2 ? a : a + b;
        keep[g] = G == 1;
    }
    for (int64_t k = 0; G > 1 && k < c.topk_group; k++) {
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
            for (int64_t j = 0; j < k; j++) taken |= idx[j * ldk] == (int32_t)e;
            if (!taken && (best < 0 || sel[e] > sel[best])) best = (int32_t)e;
        }
        idx[k * ldk] = best;
        wt[k * ldk] = p[best];
        tot += p[best];
    }
    for (int64_t k = 0; k < K; k++) {
        if (c.kind == FS_ROUTE_DS_SIGMOID && c.norm_topk) wt[k * ldk] /= tot + 1e-20f;
        wt[k * ldk] *= c.rsf;
    }
}

/* Token t's idx and wt go to scratch columns (ldk = n: coalesced across
 * threads), then to the views. */
static __global__ void k_route(fs_route_cfg c, const float *logits, int64_t ldl, int64_t n, const float *bias,
                               float *scr, int *keep, int32_t *ix, float *w, int32_t *idx, int64_t ldi, float *wt,
                               int64_t ldw)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const int64_t E = c.E, G = c.n_group, K = c.topk;
    float *p = scr + t * (2 * E + G);
    for (int64_t e = 0; e < E; e++) p[e] = logits[t * ldl + e];
    if (c.kind == FS_ROUTE_SOFTMAX) d_route_softmax(c, p, ix + t, w + t, n);
    else d_route_ds(c, bias, p, p + E, p + 2 * E, keep + t * G, ix + t, w + t, n);
    for (int64_t k = 0; k < K; k++) {
        idx[t * ldi + k] = ix[k * n + t];
        wt[t * ldw + k] = w[k * n + t];
    }
}

typedef struct route_scratch { float *scr, *w; int *keep; int32_t *ix; } route_scratch;

static fs_status route_run(fs_ctx *ctx, cuda_be *cb, int q, const fs_route_args *a, route_scratch *s)
{
    const fs_route_cfg &c = a->cfg;
    const int64_t n = a->logits.rows;
    if (n == 0) return FS_OK;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&s->scr, sizeof(float) * (size_t)(n * (2 * c.E + c.n_group)),
                            "route: scores"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&s->keep, sizeof(int) * (size_t)(n * c.n_group), "route: groups"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&s->ix, sizeof(int32_t) * (size_t)(n * c.topk), "route: indices"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&s->w, sizeof(float) * (size_t)(n * c.topk), "route: weights"));
    k_route<<<fs_cu_blocks(n, 64), 64, 0, cb->s[q]>>>(c, FS_CU_F32(a->logits), a->logits.ld, n,
                                                     a->bias.buf ? FS_CU_F32(a->bias) : NULL, s->scr, s->keep, s->ix,
                                                     s->w, (int32_t *)fs_cu_at(a->idx), a->idx.ld, FS_CU_F32(a->wt),
                                                     a->wt.ld);
    FS_LAUNCH_CHECK(ctx, k_route);
    return FS_OK;
}

fs_status fs_cu_op_route(fs_ctx *ctx, cuda_be *cb, int q, const fs_route_args *a)
{
    route_scratch s = {NULL, NULL, NULL, NULL};
    fs_status rc = route_run(ctx, cb, q, a, &s);
    fs_cu_scratch_free(cb, q, s.scr);
    fs_cu_scratch_free(cb, q, s.w);
    fs_cu_scratch_free(cb, q, s.keep);
    fs_cu_scratch_free(cb, q, s.ix);
    return rc;
}

/* invariant 2: cur [E + 1] scratch */
static __global__ void k_lists(const int32_t *idx, int64_t ldi, int64_t n, int64_t K, const float *wt, int64_t ldw,
                               int64_t E, int32_t *offs, int32_t *rows, float *rw, int64_t *cur, int *derr)
{
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    for (int64_t e = 0; e <= E; e++) cur[e] = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t k = 0; k < K; k++) {
            const int32_t x = idx[t * ldi + k];
            if (x < 0 || x >= E) {
                atomicCAS(derr, 0, FS_CU_DERR_LISTS);
                return;
            }
            cur[x + 1]++;
        }
    for (int64_t e = 0; e < E; e++) cur[e + 1] += cur[e];
    for (int64_t e = 0; e <= E; e++) offs[e] = (int32_t)cur[e];
    for (int64_t t = 0; t < n; t++)
        for (int64_t k = 0; k < K; k++) {
            const int64_t pos = cur[idx[t * ldi + k]]++;
            rows[pos] = (int32_t)t;
            if (rw) rw[pos] = wt[t * ldw + k];
        }
}

fs_status fs_cu_op_route_lists(fs_ctx *ctx, cuda_be *cb, int q, const fs_lists_args *a)
{
    int64_t *cur = NULL;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&cur, sizeof(int64_t) * (size_t)(a->E + 1), "route_lists: counts"));
    k_lists<<<1, 1, 0, cb->s[q]>>>((const int32_t *)fs_cu_at(a->idx), a->idx.ld, a->idx.rows, a->idx.cols,
                                   a->wt.buf ? FS_CU_F32(a->wt) : NULL, a->wt.buf ? a->wt.ld : 0, a->E,
                                   (int32_t *)fs_cu_at(a->offs), (int32_t *)fs_cu_at(a->rows),
                                   a->rw.buf ? FS_CU_F32(a->rw) : NULL, cur, cb->derr + q);
    cudaError_t st = cudaGetLastError();
    fs_cu_scratch_free(cb, q, cur);
    if (st != cudaSuccess)
        return fs_ctx_err(ctx, FS_ERR_CUDA, "cuda route_lists: launch: %s (device %d)", cudaGetErrorName(st),
                          fs_cuda_cur_device());
    return FS_OK;
}
