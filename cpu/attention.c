/* attention.c: causal (GQA, sliding-window) attention on the CPU: the core
 * the forward of today (forward.c, mla.c) and the attention op share.
 *
 * Invariants:
 *  1. Work runs per (sequence, head) on OpenMP threads, each with a
 *     single-threaded BLAS (the BLAS thread count is restored afterwards);
 *     per pair: S = scale * Q K^T (one sgemm), the masked softmax of each row
 *     in F32, O = P V (one sgemm).
 *  2. Softmax: the maximum over the allowed keys, exp of the differences,
 *     their sum in a fixed order, a multiply by its inverse; masked entries
 *     0.  Default: a vectorisable exp for arguments <= 0 and eight partial
 *     sums (forward.c's); libm_exp: expf and one running sum (mla.c's).  Both
 *     are deterministic; they differ in the last bits.
 *     fs_op_attention takes the first, fs_op_attention_libm the second.
 *  3. With kpe the key of a head is assembled contiguously [k columns ; kpe]
 *     per thread (mla.c's layout, and so its bytes); otherwise K is read in
 *     place through its row stride.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

/* e^x for x <= 0 (softmax arguments after the max is subtracted): 2^k times a
 * degree-7 Taylor polynomial on |r| <= ln2/2 (truncation 5e-9, below float's
 * ulp), branch-free so the compiler vectorises the row loop; libm's expf is
 * not vectorised without -ffast-math and made attention 8x slower. */
static inline float exp_nonpos(float x)
{
    /* a NaN (scores overflowed to inf: inf - inf) stays NaN, so the caller's
     * finiteness check sees it; converting it to an integer would be undefined */
    const int nan = x != x;
    x = nan ? 0.0f : x;
    x = x < -87.0f ? -87.0f : x;
    float k = rintf(x * 1.44269504f);
    float r = x - k * 0.693145751953125f;       /* ln2 split: exact high part */
    r = r - k * 1.428606765330187e-06f;
    float p = 1.98412698e-04f;                   /* 1/7! */
    p = p * r + 1.38888889e-03f;
    p = p * r + 8.33333333e-03f;
    p = p * r + 4.16666667e-02f;
    p = p * r + 1.66666667e-01f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t e = (uint32_t)((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return nan ? NAN : p * s;
}

/* Row i of the scores (T wide): keys [j0, i] allowed (invariant 2). */
static void softmax_fast(float *row, int64_t i, int64_t j0, int64_t T)
{
    float mx = -INFINITY;
    {   /* 8 running maxima: no loop-carried chain (max is exact in any order) */
        float m8[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        int64_t j = j0;
        for (; j + 8 <= i + 1; j += 8)
            for (int u = 0; u < 8; u++) m8[u] = row[j + u] > m8[u] ? row[j + u] : m8[u];
        for (; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        for (int u = 0; u < 8; u++) mx = m8[u] > mx ? m8[u] : mx;
    }
    for (int64_t j = j0; j <= i; j++) row[j] = exp_nonpos(row[j] - mx);
    float sum = 0.0f;
    {   /* 8 partial sums (a fixed order, so the result is deterministic) */
        float s8[8] = {0};
        int64_t j = j0;
        for (; j + 8 <= i + 1; j += 8)
            for (int u = 0; u < 8; u++) s8[u] += row[j + u];
        for (; j <= i; j++) sum += row[j];
        for (int u = 0; u < 8; u++) sum += s8[u];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = j0; j <= i; j++) row[j] *= inv;
    for (int64_t j = 0; j < j0; j++) row[j] = 0.0f;
    for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
}

static void softmax_libm(float *row, int64_t i, int64_t j0, int64_t T)
{
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t j = j0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
    for (int64_t j = j0; j <= i; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
    const float inv = 1.0f / sum;
    for (int64_t j = j0; j <= i; j++) row[j] *= inv;
    for (int64_t j = 0; j < j0; j++) row[j] = 0.0f;
    for (int64_t j = i + 1; j < T; j++) row[j] = 0.0f;
}

fs_status fs_cpu_attention(fs_ctx *ctx, const fs_cpu_attn *J)
{
    const int64_t T = J->T, nh = J->nh, rep = J->nh / J->nkv, dqk = J->dqk;
    if (J->nseq == 0 || T == 0) return FS_OK;
    const int nthr = omp_get_max_threads();
    float *S = fs_alloc2((size_t)nthr * (size_t)T, (size_t)T * sizeof(float));
    float *Kb = J->kpe ? fs_alloc2((size_t)nthr * (size_t)T, (size_t)dqk * sizeof(float)) : NULL;
    if (!S || (J->kpe && !Kb)) {
        free(S); free(Kb);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "attention scores %lld x %lld", (long long)T, (long long)T);
    }
    const int blas = fs_cpu_blas_threads();
    fs_cpu_set_blas_threads(1);
#pragma omp parallel for schedule(dynamic)
    for (int64_t sh = 0; sh < J->nseq * nh; sh++) {
        const int64_t s = sh / nh, h = sh % nh, kh = h / rep;
        const int th = omp_get_thread_num();
        float *Sc = S + (size_t)th * (size_t)(T * T);
        const float *Q = J->q + s * T * J->ldq + h * J->q_hs, *K = J->k + s * T * J->ldk + kh * J->k_hs;
        int64_t ldk = J->ldk;
        if (J->kpe) {                                  /* invariant 3 */
            float *Kt = Kb + (size_t)th * (size_t)(T * dqk);
            const int64_t dn = dqk - J->dpe;
            for (int64_t j = 0; j < T; j++) {
                memcpy(Kt + j * dqk, K + j * J->ldk, sizeof(float) * (size_t)dn);
                memcpy(Kt + j * dqk + dn, J->kpe + (s * T + j) * J->ldpe, sizeof(float) * (size_t)J->dpe);
            }
            K = Kt;
            ldk = dqk;
        }
        fs_cpu_sgemm(1, T, T, dqk, J->scale, Q, J->ldq, K, ldk, 0.0f, Sc, T);
        for (int64_t i = 0; i < T; i++) {
            const int64_t j0 = J->window > 0 && i - J->window + 1 > 0 ? i - J->window + 1 : 0;
            if (J->libm_exp) softmax_libm(Sc + i * T, i, j0, T);
            else softmax_fast(Sc + i * T, i, j0, T);
        }
        fs_cpu_sgemm(0, T, J->dv, T, 1.0f, Sc, T, J->v + s * T * J->ldv + kh * J->v_hs, J->ldv, 0.0f,
                     J->out + s * T * J->ldo + h * J->o_hs, J->ldo);
    }
    fs_cpu_set_blas_threads(blas);
    free(S);
    free(Kb);
    return FS_OK;
}

static fs_status op_attention(fs_ctx *ctx, const fs_attn_args *a, int libm_exp)
{
    fs_cpu_attn j = {
        .nseq = a->nseq, .T = a->T, .nh = a->nh, .nkv = a->nkv, .dqk = a->dqk, .dv = a->dv,
        .q = FS_CPU_F32(a->q), .ldq = a->q.ld, .q_hs = a->q_hs,
        .k = FS_CPU_F32(a->k), .ldk = a->k.ld, .k_hs = a->k_hs,
        .kpe = NULL, .ldpe = 0, .dpe = 0,
        .v = FS_CPU_F32(a->v), .ldv = a->v.ld, .v_hs = a->v_hs,
        .out = FS_CPU_F32(a->out), .ldo = a->out.ld, .o_hs = a->o_hs,
        .scale = a->scale, .window = a->window, .libm_exp = libm_exp,
    };
    return fs_cpu_attention(ctx, &j);
}

fs_status fs_cpu_op_attention(fs_ctx *ctx, const fs_attn_args *a) { return op_attention(ctx, a, 0); }
fs_status fs_cpu_op_attention_libm(fs_ctx *ctx, const fs_attn_args *a) { return op_attention(ctx, a, 1); }
