/* bench.c: `make bench`: the engine's speed as ratios to the BLAS it stands
 * on, measured in the same run (machines here are shared and noisy).
 *
 *  - GPTQ solver (blocks, in-block loop, trailing GEMMs) on 4096x4096 and
 *    14336x4096 with an SPD H: effective GFLOP/s (out * in^2 flops: every
 *    column's error reaches every later column of every row) over the
 *    GFLOP/s of OpenBLAS sgemm on a 4096^3 product.
 *  - Hessian accumulation of 16384x4096 inputs in chunks through the backend,
 *    over one OpenBLAS ssyrk of the whole matrix.
 *  - The CUDA rows when a device is present.
 * Each timing is the best of FS_BENCH_REPS runs.
 */
#include <cblas.h>
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend.h"
#include "hessian/hessian.h"

#define REPS 2

static void fill(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / (double)(1ull << 24) - 0.5);
    }
}

static double sgemm_gflops(int n)
{
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n),
          *C = calloc((size_t)n * n, sizeof(float));
    fill(A, (size_t)n * n, 1);
    fill(B, (size_t)n * n, 2);
    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = fs_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        t = fs_now() - t;
        if (t < best) best = t;
    }
    free(A); free(B); free(C);
    return 2.0 * n * (double)n * n / best / 1e9;
}

static void row(const char *what, const char *shape, double sec, double gflops, double ratio,
                const char *base)
{
    if (ratio < 0)          /* no baseline for this row */
        printf("| %-26s | %-12s | %9.3f | %9.1f | %6s | %-26s |\n", what, shape, sec, gflops, "-", base);
    else
        printf("| %-26s | %-12s | %9.3f | %9.1f | %6.3f | %-26s |\n", what, shape, sec, gflops, ratio, base);
}

static int bench_backend(fs_ctx *ctx, fs_backend *be, double gemm_gf)
{
    const int n = 16384, in = 4096, chunk = 4096;   /* 64 MB f32 chunks */
    float *X = malloc(sizeof(float) * (size_t)n * in), *H = malloc(sizeof(float) * in * in);
    float *H2 = calloc((size_t)in * in, sizeof(float));
    fill(X, (size_t)n * in, 3);
    const char *name = fs_backend_name(be);
    char what[64];

    /* Hessian: ours (chunks through the backend) vs one ssyrk of everything */
    double ours = 1e30, base = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = fs_now();
        if (fs_hess_from_inputs(ctx, be, X, n, in, chunk, H) != FS_OK) return 1;
        t = fs_now() - t;
        if (t < ours) ours = t;
        t = fs_now();
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, in, n, 1.0f, X, in, 0.0f, H2, in);
        t = fs_now() - t;
        if (t < base) base = t;
    }
    double fl = (double)n * in * (in + 1);   /* what ssyrk computes: one triangle */
    snprintf(what, sizeof what, "hessian accum (%s)", name);
    row(what, "16384x4096", ours, fl / ours / 1e9, base / ours, "openblas ssyrk alone");
    free(X); free(H2);

    /* an SPD matrix for the solver: the Hessian above, normalised and damped */
    for (int i = 0; i < in * in; i++) H[i] /= (float)n;
    float *U = malloc(sizeof(float) * in * in);
    double used; int retries;
    double t = fs_now();
    if (fs_hess_invert(ctx, be, H, in, 0.01, 3, U, &used, &retries) != FS_OK) return 1;
    t = fs_now() - t;
    /* the baseline: the textbook route, potrf, potri, potrf (4/3 n^3 flops) */
    float *B = malloc(sizeof(float) * in * in);
    double mean = 0.0;
    for (int i = 0; i < in; i++) mean += H[i * in + i];
    memcpy(B, H, sizeof(float) * in * in);
    for (int i = 0; i < in; i++) B[i * in + i] += (float)(0.01 * mean / in);
    double tb = fs_now();
    if (LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', in, B, in) || LAPACKE_spotri(LAPACK_COL_MAJOR, 'L', in, B, in) ||
        LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', in, B, in)) return 1;
    tb = fs_now() - tb;
    free(B);
    snprintf(what, sizeof what, "cholesky inverse (%s)", name);
    row(what, "4096x4096", t, (double)in * in * in * 2.0 / 3.0 / t / 1e9, tb / t, "potrf+potri+potrf");

    fs_quant_opts q;
    fs_quant_opts_default(&q);
    fs_grid_params gp;
    if (fs_grid_params_init(ctx, &gp, &q) != FS_OK) return 1;
    int outs[2] = {4096, 14336};
    for (int k = 0; k < 2; k++) {
        int out = outs[k];
        float *W0 = malloc(sizeof(float) * (size_t)out * in), *W = malloc(sizeof(float) * (size_t)out * in);
        uint8_t *codes = malloc((size_t)out * in), *qm = malloc((size_t)out * (in / 128) * 4);
        fill(W0, (size_t)out * in, 4 + k);
        double best = 1e30;
        for (int r = 0; r < REPS; r++) {
            memcpy(W, W0, sizeof(float) * (size_t)out * in);
            fs_gptq_job job = {.rows = out, .cols = in, .W = W, .U = U, .codes = codes, .qmeta = qm,
                               .ngroups = in / 128, .gw = 128, .gcol = NULL, .block = 128, .gp = &gp};
            double t0 = fs_now();
            if (fs_be_gptq(ctx, be, &job) != FS_OK) return 1;
            t0 = fs_now() - t0;
            if (t0 < best) best = t0;
        }
        double gf = (double)out * in * in / best / 1e9;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", out, in);
        snprintf(what, sizeof what, "gptq solver 4-bit g128 (%s)", name);
        row(what, shape, best, gf, gf / gemm_gf, "openblas sgemm GFLOP/s");
        free(W0); free(W); free(codes); free(qm);
    }
    fs_grid_params_free(&gp);
    free(H); free(U);

    /* per-expert Hessians of a DeepSeek-V3-shaped MoE layer: 65536 calibration
     * tokens x top-8 of 256 experts = 2048 routed tokens per expert on average;
     * gate/up inputs of width 7168, down inputs of width 2048 */
    const int tok = 65536 * 8 / 256, widths[2] = {7168, 2048};
    for (int k = 0; k < 2; k++) {
        const int d = widths[k];
        float *Xe = malloc(sizeof(float) * (size_t)tok * d), *He = malloc(sizeof(float) * (size_t)d * d);
        fill(Xe, (size_t)tok * d, 7 + k);
        double best = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = fs_now();
            if (fs_hess_from_inputs(ctx, be, Xe, tok, d, tok, He) != FS_OK) return 1;
            t0 = fs_now() - t0;
            if (t0 < best) best = t0;
        }
        double gf = (double)tok * d * (d + 1) / best / 1e9;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", tok, d);
        snprintf(what, sizeof what, "expert hessian (%s)", name);
        row(what, shape, best, gf, gf / gemm_gf, "openblas sgemm GFLOP/s");
        free(Xe); free(He);
    }
    return 0;
}

int main(void)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    double gemm_gf = sgemm_gflops(4096);
    printf("forge-stream bench: %d BLAS threads, best of %d\n\n", openblas_get_num_threads(), REPS);
    printf("| %-26s | %-12s | %9s | %9s | %6s | %-26s |\n", "what", "shape", "seconds", "GFLOP/s", "ratio", "baseline");
    printf("|----------------------------|--------------|-----------|-----------|--------|----------------------------|\n");
    row("openblas sgemm", "4096^3", 2.0 * 4096.0 * 4096 * 4096 / gemm_gf / 1e9, gemm_gf, 1.0, "(baseline)");
    fs_backend *be = NULL;
    if (fs_backend_open(&ctx, FS_BE_CPU, NULL, &be) != FS_OK || bench_backend(&ctx, be, gemm_gf)) {
        fprintf(stderr, "bench: error: %s\n", ctx.errmsg);
        return 1;
    }
    fs_backend_free(be);
    if (fs_backend_cuda_devices() > 0) {
        fs_backend *cu = NULL;
        if (fs_backend_open(&ctx, FS_BE_CUDA, NULL, &cu) != FS_OK || bench_backend(&ctx, cu, gemm_gf)) {
            fprintf(stderr, "bench: error: %s\n", ctx.errmsg);
            return 1;
        }
        fs_backend_free(cu);
        printf("\n(CUDA rows compare with the CPU's sgemm; a cuBLAS sgemm baseline is not measured yet)\n");
    } else {
        printf("\nno CUDA device: GPU rows skipped\n");
    }
    return 0;
}
