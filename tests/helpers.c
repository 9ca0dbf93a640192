/* helpers.c: what several suites share: running the binary, and the pieces
 * of the naive double-precision forwards the pipeline suites compare with. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/util.h"

int t_run_cmd(const char *cmd, char *err, size_t errn)
{
    char full[12000], path[] = "/tmp/fs-test-err-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    snprintf(full, sizeof full, "%s 2> %s", cmd, path);
    int st = system(full);
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(err, 1, errn - 1, f) : 0;
    err[k] = '\0';
    if (f) fclose(f);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int t_run_fmt(char *err, size_t errn, const char *fmt, ...)
{
    char cmd[12000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return t_run_cmd(cmd, err, errn);
}

int t_gen_tiny(const char *dir, const char *fmt, ...)
{
    const char *bin = getenv("FS_GEN_TINY");
    if (!bin || !*bin) return -1;
    char args[4096], cmd[12000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' --out '%s' %s > /dev/null", bin, dir, args);
    fflush(stdout);
    return system(cmd) == 0 ? 0 : 1;
}

void t_rmsnorm(const double *x, const double *w, int64_t n, int64_t d, double eps, double *y)
{
    for (int64_t r = 0; r < n; r++) {
        double s = 0;
        for (int64_t i = 0; i < d; i++) s += x[r * d + i] * x[r * d + i];
        double inv = 1.0 / sqrt(s / d + eps);
        for (int64_t i = 0; i < d; i++) y[r * d + i] = w[i] * x[r * d + i] * inv;
    }
}

void t_lin(const double *x, const double *W, const double *b, int64_t n, int64_t in, int64_t out, double *y)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (int64_t i = 0; i < in; i++) s += x[r * in + i] * W[o * in + i];
            y[r * out + o] = s;
        }
}

double t_hess_rel(const float *H, const double *X, int64_t n, int64_t d)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t r = 0; r < n; r++) s += X[r * d + i] * X[r * d + j];
            num += (H[i * d + j] - s) * (H[i * d + j] - s);
            den += s * s;
        }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
