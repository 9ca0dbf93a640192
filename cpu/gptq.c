/* gptq.c: CPU reference of the blocked GPTQ solver (Frantar et al. 2023,
 * Algorithm 1 with lazy batch updates): fs_gptq_cpu on host pointers (the v1
 * slot) and the gptq op on contiguous views, which builds the same job.
 *
 * Invariants:
 *  1. Columns are walked in processing order (the job's W and U are already
 *     permuted); rows are independent, so the in-block loop runs on tiles of
 *     rows with their block segments hot in L1, and the trailing update of
 *     every later column is one GEMM per block.
 *  2. Dynamic groups see the current weights: a block is cut at every group
 *     start, so when a group starts all earlier errors have reached its
 *     columns, however the group and block widths relate.
 *  3. On return job->W holds the dequantized weight and job->codes the codes,
 *     both in processing order.
 */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "src/quant/quant-math.h"

#define TILE 16   /* rows solved together: their block segments live in L1, transposed */

/* Eight floats; element-wise arithmetic, so each lane computes exactly what
 * the scalar code would (no reassociation, no contraction). */
typedef float fs_v8 __attribute__((vector_size(32), aligned(32)));

/* The in-block loop for rows [r0, r0 + nr) and block columns [i1, i2).  The
 * segment is transposed (T[c][r]) so each column step runs across the tile's
 * rows as vectors, hiding the latency of the per-row quantize-divide chain;
 * every element sees exactly the operations of the row-by-row algorithm. */
static void block_tile(const fs_gptq_job *job, int64_t r0, int nr, int64_t i1, int64_t i2,
                       float *sc, float *zc, float *Err, float *Tb)
{
    const int64_t C = job->cols, ng = job->ngroups, gw = job->gw, nb = i2 - i1;
    const int64_t ldE = job->block < C ? job->block : C;   /* fixed: slices run unsynchronised */
    const int dynamic = job->gcol == NULL;
    const float maxq = job->gp->maxq;
    float s[TILE], z[TILE], e[TILE], q[TILE];
    for (int r = 0; r < TILE; r++)                 /* rows past the end: zeros, unit scale */
        for (int64_t c = 0; c < nb; c++)
            Tb[c * TILE + r] = r < nr ? job->W[(r0 + r) * C + i1 + c] : 0.0f;
    for (int r = nr; r < TILE; r++) { s[r] = 1.0f; z[r] = 0.0f; }
    for (int64_t j = i1; j < i2; j++) {
        float *t = Tb + (j - i1) * TILE;
        if (dynamic && j % gw == 0) {        /* a group starts at a block start: W is current */
            int64_t glen = C - j < gw ? C - j : gw, g = j / gw;
            for (int r = 0; r < nr; r++)
                fs_grid_group_w(job->gp, job->W + (r0 + r) * C + j, job->colw ? job->colw + j : NULL, glen,
                              job->qmeta + ((r0 + r) * ng + g) * 4, &sc[(r0 + r) * ng + g],
                              &zc[(r0 + r) * ng + g]);
        }
        const int64_t g = dynamic ? j / gw : job->gcol[j];
        for (int r = 0; r < nr; r++) { s[r] = sc[(r0 + r) * ng + g]; z[r] = zc[(r0 + r) * ng + g]; }
        const float *u = job->U + j * C;
        const float d = u[j];
        for (int r = 0; r < TILE; r++) {
            float w = t[r];
            float qv = fs_qm_quant(w, s[r], z[r], maxq);
            float dq = fs_qm_dequant(qv, s[r], z[r]);
            q[r] = qv;
            e[r] = (w - dq) / d;
            t[r] = dq;
        }
        for (int r = 0; r < nr; r++) {
            job->codes[(r0 + r) * C + j] = (uint8_t)q[r];
            Err[(r0 + r) * ldE + (j - i1)] = e[r];
        }
        fs_v8 e0, e1;                              /* the tile's errors, two vectors */
        memcpy(&e0, e, sizeof e0);
        memcpy(&e1, e + 8, sizeof e1);
        for (int64_t c = j + 1; c < i2; c++) {
            fs_v8 *tc = (fs_v8 *)(Tb + (c - i1) * TILE);
            const float uc = u[c];
            tc[0] -= e0 * uc;                          /* element-wise: the scalar order */
            tc[1] -= e1 * uc;
        }
    }
    for (int r = 0; r < nr; r++)
        for (int64_t c = 0; c < nb; c++) job->W[(r0 + r) * C + i1 + c] = Tb[c * TILE + r];
}

/* Rows [ra, rb) through every block: in-block tiles, then this slice's part
 * of the trailing update (rows are independent, so slices never meet). */
static void solve_rows(const fs_gptq_job *job, int64_t ra, int64_t rb, float *sc, float *zc,
                       float *Err, float *Tb)
{
    const int64_t C = job->cols, gw = job->gw, n = rb - ra;
    const int64_t ldE = job->block < C ? job->block : C;
    const int dynamic = job->gcol == NULL;
    for (int64_t i1 = 0; i1 < C;) {
        int64_t i2 = i1 + job->block < C ? i1 + job->block : C;
        if (dynamic) {                                   /* invariant 2 */
            int64_t gnext = (i1 / gw + 1) * gw;
            if (gnext < i2) i2 = gnext;
        }
        const int64_t nb = i2 - i1;
        for (int64_t r0 = ra; r0 < rb; r0 += TILE)
            block_tile(job, r0, rb - r0 < TILE ? (int)(rb - r0) : TILE, i1, i2, sc, zc, Err, Tb);
        if (i2 < C)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)(C - i2),
                        (int)nb, -1.0f, Err + ra * ldE, (int)ldE, job->U + i1 * C + i2, (int)C,
                        1.0f, job->W + ra * C + i2, (int)C);
        i1 = i2;
    }
}

fs_status fs_gptq_cpu(fs_ctx *ctx, const fs_gptq_job *job)
{
    const int64_t R = job->rows, C = job->cols, ng = job->ngroups;
    const int dynamic = job->gcol == NULL;
    const size_t bmax = (size_t)(job->block < C ? job->block : C);
    const int nthr = omp_get_max_threads();
    float *Err = fs_alloc2((size_t)R, bmax * sizeof(float));
    float *sc = fs_alloc2((size_t)R * (size_t)ng, sizeof(float));
    float *zc = fs_alloc2((size_t)R * (size_t)ng, sizeof(float));
    size_t sbytes;                          /* per thread: a multiple of 64 bytes */
    float *scratch = fs_mul_size((size_t)nthr * bmax, TILE * sizeof(float), &sbytes) == 0
                         ? aligned_alloc(64, sbytes) : NULL;
    if (!Err || !sc || !zc || !scratch) {
        free(Err); free(sc); free(zc); free(scratch);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "gptq: work buffers for %lld x %lld",
                          (long long)R, (long long)C);
    }
    if (!dynamic)
        for (int64_t i = 0; i < R * ng; i++) fs_grid_unpack(job->gp, job->qmeta + 4 * i, &sc[i], &zc[i]);
    /* One slice of rows per thread, each with a single-threaded BLAS: no
     * barrier per block and no BLAS threads fighting OpenMP's for the cores.
     * Slices are at different blocks at any moment, so Err [R, block] keeps a
     * fixed row stride whatever the current block's width. */
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    int64_t per = (R + nthr - 1) / nthr;
    per = (per + TILE - 1) / TILE * TILE;
#pragma omp parallel for schedule(static, 1)
    for (int t = 0; t < nthr; t++) {
        int64_t ra = (int64_t)t * per, rb = ra + per < R ? ra + per : R;
        if (ra < rb)
            solve_rows(job, ra, rb, sc, zc, Err, scratch + (size_t)t * bmax * TILE);
    }
    openblas_set_num_threads(blas_threads);
    free(Err); free(sc); free(zc); free(scratch);
    return FS_OK;
}

fs_status fs_cpu_op_gptq(fs_ctx *ctx, const fs_gptq_args *a)
{
    const int64_t C = a->W.cols;
    fs_gptq_job job = {
        .rows = a->W.rows, .cols = C, .W = FS_CPU_F32(a->W), .U = FS_CPU_F32(a->U),
        .codes = (uint8_t *)fs_cpu_at(&a->codes, 0, 0), .qmeta = (uint8_t *)fs_cpu_at(&a->qmeta, 0, 0),
        .ngroups = (C + a->gw - 1) / a->gw, .gw = a->gw,
        .gcol = a->gcol.buf ? (const int32_t *)fs_cpu_at(&a->gcol, 0, 0) : NULL, .block = a->block, .gp = a->gp,
    };
    if (job.rows == 0 || C == 0) return FS_OK;
    return fs_gptq_cpu(ctx, &job);
}
