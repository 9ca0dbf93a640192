/* args.c: strict argument parsing shared by the commands, and the exit code
 * of a status (fs_exit_code). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/cli.h"

fs_status fs_arg_i64(fs_ctx *ctx, const char *flag, const char *s, int64_t lo, int64_t hi,
                     int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s '%s': not an integer", flag, s ? s : "");
    if (v < lo || v > hi)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s %lld: must be in %lld..%lld", flag, v,
                          (long long)lo, (long long)hi);
    *out = v;
    return FS_OK;
}

fs_status fs_arg_f64(fs_ctx *ctx, const char *flag, const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s '%s': not a finite number", flag, s ? s : "");
    *out = v;
    return FS_OK;
}

fs_status fs_arg_size(fs_ctx *ctx, const char *flag, const char *s, uint64_t *out)
{
    char *end = NULL;
    double v = s ? strtod(s, &end) : 0, mul = 1;
    if (end && (*end == 'K' || *end == 'k')) mul = 1e3, end++;
    else if (end && (*end == 'M' || *end == 'm')) mul = 1e6, end++;
    else if (end && (*end == 'G' || *end == 'g')) mul = 1e9, end++;
    else if (end && (*end == 'T' || *end == 't')) mul = 1e12, end++;
    if (end && (*end == 'B' || *end == 'b')) end++;
    if (!s || !end || end == s || *end || !(v > 0) || v * mul > 1e18)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s '%s': not a size (e.g. 80G, 512M)", flag, s ? s : "");
    *out = (uint64_t)(v * mul);
    return FS_OK;
}

fs_status fs_arg_backend(fs_ctx *ctx, const char *s, fs_backend_kind *out)
{
    if (s && strcmp(s, "auto") == 0) *out = FS_BE_AUTO;
    else if (s && strcmp(s, "cpu") == 0) *out = FS_BE_CPU;
    else if (s && strcmp(s, "cpu-async") == 0) *out = FS_BE_CPU_ASYNC;
    else if (s && strcmp(s, "cuda") == 0) *out = FS_BE_CUDA;
    else return fs_ctx_err(ctx, FS_ERR_USAGE, "--backend '%s': must be auto, cpu, cpu-async or cuda", s ? s : "");
    return FS_OK;
}

const char fs_quant_flags_help[] =
    "quantization options:\n"
    "  --bits N            2, 3, 4 or 8 (default 4)\n"
    "  --group-size N      a multiple of 32, or -1 for one group per row (default 128);\n"
    "                      a group size >= in means one group per row\n"
    "  --sym | --asym      symmetric grid, zero fixed at 2^(bits-1) (default), or asymmetric\n"
    "  --grid absmax|mse|hmse  range grid (default), MSE / L^p shrink search, or the\n"
    "                      shrink search against the Hessian-weighted error (CPU backend)\n"
    "  --hmse-weight obs|diag  hmse: column weights 1/[H^-1]_jj as GPTQ sees them (obs,\n"
    "                      default) or diag(H)\n"
    "  --preset best       the options that measured better than plain GPTQ at the same\n"
    "                      bits and format (make bench-quality): " FS_PRESET_BEST_FLAGS "\n"
    "                      (flags after it still override)\n"
    "  --refine-scales N   after the solve, N rounds of least-squares group scales (and\n"
    "                      zeros, asymmetric) with the codes fixed, on the stored grid;\n"
    "                      rounds after the first re-run GPTQ on the refined grids, each\n"
    "                      row keeping its best (default 0 = off; at most 16)\n"
    "  --grid-shrink F     MSE: smallest scale factor tried, in (0, 1] (default 0.2)\n"
    "  --grid-n N          MSE: number of candidate scales, >= 1 (default 100)\n"
    "  --grid-norm F       MSE: exponent of the error, > 0 (default 2.4; 2 = plain L2)\n"
    "  --act-order         process columns by descending diag(H)\n"
    "  --static-groups     group parameters from the original weights, before the solve\n"
    "                      (with --act-order: column c stays in group c / G)\n"
    "  --block N           GPTQ lazy-batch block width, >= 1 (default 128)\n"
    "  --damp F            relative damping of H, >= 0 (default 0.01); a failed Cholesky\n"
    "                      retries with x10 damping up to 3 times, then falls back to RTN\n";

static const char *value(fs_ctx *ctx, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fs_ctx_err(ctx, FS_ERR_USAGE, "%s: missing value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

fs_status fs_arg_quant(fs_ctx *ctx, int argc, char **argv, int *i, fs_quant_opts *q, int *taken)
{
    const char *a = argv[*i], *v;
    int64_t n = 0;
    double d = 0.0;
    fs_status rc = FS_OK;
    *taken = 1;
    if (strcmp(a, "--sym") == 0) q->sym = 1;
    else if (strcmp(a, "--asym") == 0) q->sym = 0;
    else if (strcmp(a, "--act-order") == 0) q->act_order = 1;
    else if (strcmp(a, "--static-groups") == 0) q->static_groups = 1;
    else if (strcmp(a, "--preset") == 0) {
        if (!(v = value(ctx, argc, argv, i))) return FS_ERR_USAGE;
        if (strcmp(v, "best") != 0) return fs_ctx_err(ctx, FS_ERR_USAGE, "--preset '%s': must be best", v);
        fs_quant_preset_best(q);
    }
    else if (strcmp(a, "--bits") == 0 || strcmp(a, "--group-size") == 0 ||
             strcmp(a, "--grid-n") == 0 || strcmp(a, "--block") == 0 ||
             strcmp(a, "--refine-scales") == 0) {
        if (!(v = value(ctx, argc, argv, i))) return FS_ERR_USAGE;
        if ((rc = fs_arg_i64(ctx, a, v, INT32_MIN, INT32_MAX, &n)) != FS_OK) return rc;
        if (strcmp(a, "--bits") == 0) q->bits = (int)n;
        else if (strcmp(a, "--group-size") == 0) q->group_size = n;
        else if (strcmp(a, "--grid-n") == 0) q->grid_n = (int)n;
        else if (strcmp(a, "--refine-scales") == 0) q->refine_scales = (int)n;
        else q->block = (int)n;
    } else if (strcmp(a, "--grid-shrink") == 0 || strcmp(a, "--grid-norm") == 0 ||
               strcmp(a, "--damp") == 0) {
        if (!(v = value(ctx, argc, argv, i))) return FS_ERR_USAGE;
        if ((rc = fs_arg_f64(ctx, a, v, &d)) != FS_OK) return rc;
        if (strcmp(a, "--grid-shrink") == 0) q->shrink = (float)d;
        else if (strcmp(a, "--grid-norm") == 0) q->norm = (float)d;
        else q->damp = d;
    } else if (strcmp(a, "--grid") == 0) {
        if (!(v = value(ctx, argc, argv, i))) return FS_ERR_USAGE;
        if (strcmp(v, "absmax") == 0 || strcmp(v, "range") == 0) q->grid = FS_GRID_ABSMAX;
        else if (strcmp(v, "mse") == 0) q->grid = FS_GRID_MSE;
        else if (strcmp(v, "hmse") == 0) q->grid = FS_GRID_HMSE;
        else return fs_ctx_err(ctx, FS_ERR_USAGE, "--grid '%s': must be absmax, mse or hmse", v);
    } else if (strcmp(a, "--hmse-weight") == 0) {
        if (!(v = value(ctx, argc, argv, i))) return FS_ERR_USAGE;
        if (strcmp(v, "obs") == 0) q->hmse_weight = FS_HMSE_OBS;
        else if (strcmp(v, "diag") == 0) q->hmse_weight = FS_HMSE_DIAG;
        else return fs_ctx_err(ctx, FS_ERR_USAGE, "--hmse-weight '%s': must be obs or diag", v);
    } else {
        *taken = 0;
    }
    return rc;
}

int fs_exit_code(fs_status st)
{
    switch (st) {
    case FS_OK: return FS_EXIT_OK;
    case FS_ERR_USAGE:
    case FS_ERR_FORMAT:
    case FS_ERR_CORRUPT:
    case FS_ERR_NUMERIC:
    case FS_ERR_NODEV: return FS_EXIT_USAGE;
    default: return FS_EXIT_RUNTIME;
    }
}
