/* util.h: helpers shared by the Check suites: a seeded generator, naive
 * double-precision references, temporary folders.  Nothing here calls the
 * code under test, so the references stay independent of it. */
#ifndef FS_TEST_UTIL_H
#define FS_TEST_UTIL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "src/quant/quant.h"

typedef struct { uint64_t s; } t_rng;

static inline uint32_t t_next(t_rng *r)
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

/* uniform in [-1, 1) */
static inline float t_unif(t_rng *r)
{
    return (float)((double)t_next(r) / 2147483648.0 - 1.0);
}

/* approximately normal (sum of uniforms) */
static inline float t_gauss(t_rng *r)
{
    float s = 0;
    for (int i = 0; i < 6; i++) s += t_unif(r);
    return s * 0.7071f;
}

/* H = X^T X in double for X [n, d] float. */
static inline void t_xtx(const float *X, int n, int d, double *H)
{
    for (int i = 0; i < d * d; i++) H[i] = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) H[i * d + j] += (double)X[r * d + i] * X[r * d + j];
}

/* Correlated inputs: x = z M with M a random mixing matrix plus a diagonal, so
 * H is well away from a multiple of I. */
static inline float *t_corr_inputs(t_rng *r, int n, int d)
{
    float *M = malloc(sizeof(float) * d * d), *X = malloc(sizeof(float) * n * d);
    float *z = malloc(sizeof(float) * d);
    for (int i = 0; i < d * d; i++) M[i] = 0.3f * t_gauss(r) + (i % (d + 1) == 0 ? 1.0f : 0.0f);
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < d; i++) z[i] = t_gauss(r);
        for (int j = 0; j < d; j++) {
            float s = 0;
            for (int i = 0; i < d; i++) s += z[i] * M[i * d + j];
            X[k * d + j] = s;
        }
    }
    free(M); free(z);
    return X;
}

/* In-place Gauss-Jordan inverse of a [n, n] double matrix; 0 on success. */
static inline int t_inverse(double *A, int n)
{
    double *B = calloc((size_t)n * 2 * n, sizeof(double));
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) B[i * 2 * n + j] = A[i * n + j];
        B[i * 2 * n + n + i] = 1.0;
    }
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int i = c + 1; i < n; i++)
            if (__builtin_fabs(B[i * 2 * n + c]) > __builtin_fabs(B[p * 2 * n + c])) p = i;
        if (B[p * 2 * n + c] == 0) { free(B); return -1; }
        for (int j = 0; j < 2 * n; j++) {
            double t = B[c * 2 * n + j]; B[c * 2 * n + j] = B[p * 2 * n + j]; B[p * 2 * n + j] = t;
        }
        double piv = B[c * 2 * n + c];
        for (int j = 0; j < 2 * n; j++) B[c * 2 * n + j] /= piv;
        for (int i = 0; i < n; i++) {
            if (i == c) continue;
            double f = B[i * 2 * n + c];
            if (f != 0)
                for (int j = 0; j < 2 * n; j++) B[i * 2 * n + j] -= f * B[c * 2 * n + j];
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) A[i * n + j] = B[i * 2 * n + n + j];
    free(B);
    return 0;
}

/* trace((W-D) H (W-D)^T) in long double, straight from the definition. */
static inline double t_loss(const float *W, const float *D, const float *H, int rows, int cols)
{
    long double tot = 0;
    double *e = malloc(sizeof(double) * cols);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) e[c] = (double)W[r * cols + c] - (double)D[r * cols + c];
        for (int i = 0; i < cols; i++) {
            long double s = 0;
            for (int j = 0; j < cols; j++) s += (long double)H[i * cols + j] * e[j];
            tot += s * e[i];
        }
    }
    free(e);
    return (double)tot;
}

/* tests/helpers.c: runs cmd through the shell with stderr captured into err
 * (NUL-terminated, truncated to errn); returns the exit code, -1 if killed. */
int t_run_cmd(const char *cmd, char *err, size_t errn);
/* t_run_cmd of a printf-formatted command (at most 12000 bytes). */
int t_run_fmt(char *err, size_t errn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* tools/gen-tiny ($FS_GEN_TINY) --out dir ARGS (printf-style), its stdout
 * dropped: 0 on success, 1 on failure, -1 when FS_GEN_TINY is unset (the
 * caller then skips, saying so). */
int t_gen_tiny(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* y = w * x / sqrt(mean(x^2) + eps) per row of x [n, d], in double. */
void t_rmsnorm(const double *x, const double *w, int64_t n, int64_t d, double eps, double *y);
/* y [n, out] = x [n, in] W^T (+ b when b is not NULL), W [out, in], in double. */
void t_lin(const double *x, const double *W, const double *b, int64_t n, int64_t in, int64_t out, double *y);
/* ||H - X^T X||_F / ||X^T X||_F for the f32 H [d, d] and double X [n, d]. */
double t_hess_rel(const float *H, const double *X, int64_t n, int64_t d);

/* A fresh temporary folder (mkdtemp under $TMPDIR or /tmp); caller frees. */
char *t_tmpdir(void);
/* rm -rf of a folder made by t_tmpdir. */
void t_rmdir(const char *dir);

Suite *fs_suite_dtype(void);
Suite *fs_suite_async(void);
Suite *fs_suite_solve(void);
Suite *fs_suite_qmeta(void);
Suite *fs_suite_grid(void);
Suite *fs_suite_gptq(void);
Suite *fs_suite_refine(void);
Suite *fs_suite_hessian(void);
Suite *fs_suite_safetensors(void);
Suite *fs_suite_cli(void);
Suite *fs_suite_pack(void);
Suite *fs_suite_serve(void);
Suite *fs_suite_roundtrip(void);
Suite *fs_suite_ckpt(void);
Suite *fs_suite_actcache(void);
Suite *fs_suite_prefetch(void);
Suite *fs_suite_pipeline(void);
Suite *fs_suite_moe(void);
Suite *fs_suite_deepseek(void);
Suite *fs_suite_plan(void);
Suite *fs_suite_writer(void);
Suite *fs_suite_trace(void);
Suite *fs_suite_cuda(void);
/* Tests of fs_suite_cuda that skipped for want of a device (check_cuda.c). */
int fs_cuda_tests_skipped(void);
Suite *fs_suite_resume(void);
Suite *fs_suite_spill(void);
Suite *fs_suite_fuzz(void);
Suite *fs_suite_ops(void);
Suite *fs_suite_backend(void);
Suite *fs_suite_tokenizer(void);
Suite *fs_suite_kl(void);

#endif
