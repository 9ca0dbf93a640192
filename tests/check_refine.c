/* check_refine.c: the least-squares scale refinement against the normal
 * equations built and solved here (naive double loops, a direct inverse),
 * the loss never rising on random layers, and the HMSE grid against a brute
 * force search over the same candidates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/util.h"
#include "src/backend/backend.h"

static void cpu(fs_ctx *ctx)
{
    fs_ctx_init(ctx);
    ctx->quiet = 1;
    ck_assert_int_eq(fs_backend_open(ctx, FS_BE_CPU, NULL, &ctx->be), FS_OK);
}

static fs_quant_opts opts(int bits, int sym, int64_t g)
{
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.bits = bits;
    q.sym = sym;
    q.group_size = g;
    return q;
}

/* W [rows, cols] ~ 0.1 N(0,1) and H = X^T X of correlated inputs (or I). */
static void problem(uint64_t seed, int rows, int cols, int identity, float **W, float **H)
{
    t_rng r = {seed};
    *H = malloc(sizeof(float) * cols * cols);
    if (identity) {
        for (int i = 0; i < cols * cols; i++) (*H)[i] = i % (cols + 1) == 0 ? 1.0f : 0.0f;
    } else {
        int n = 3 * cols;
        float *X = t_corr_inputs(&r, n, cols);
        double *Hd = malloc(sizeof(double) * cols * cols);
        t_xtx(X, n, cols, Hd);
        for (int i = 0; i < cols * cols; i++) (*H)[i] = (float)Hd[i];
        free(X);
        free(Hd);
    }
    *W = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++) (*W)[i] = t_gauss(&r) * 0.1f;
}

/* Codes by round to nearest on the range grids (the refinement's input). */
static void rtn_codes(const fs_grid_params *gp, const float *W, int rows, int cols, int gw,
                      uint8_t *qmeta, uint8_t *codes)
{
    int ng = (cols + gw - 1) / gw;
    fs_grid_matrix(gp, W, rows, cols, gw, qmeta);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float s, z;
            fs_grid_unpack(gp, qmeta + (r * ng + c / gw) * 4, &s, &z);
            codes[r * cols + c] = (uint8_t)fs_quant1(W[r * cols + c], s, z, gp->maxq);
        }
}

/* (w - w^)^T H (w - w^) of one row in long double, w^_c = s[g] * (q_c - z[g])
 * in float when the scales are the stored ones (as a decoder computes it). */
static double row_loss_f(const float *w, const uint8_t *q, const float *H, int cols, int gw,
                         const double *s, const double *z, int f32)
{
    long double l = 0;
    long double *e = malloc(sizeof(long double) * cols);
    for (int c = 0; c < cols; c++)
        e[c] = f32 ? (long double)w[c] - (float)(((float)q[c] - (float)z[c / gw]) * (float)s[c / gw])
                   : (long double)w[c] - s[c / gw] * ((double)q[c] - z[c / gw]);
    for (int c = 0; c < cols; c++)
        for (int d = 0; d < cols; d++) l += e[c] * (long double)H[c * cols + d] * e[d];
    free(e);
    return (double)l;
}

static double row_loss(const float *w, const uint8_t *q, const float *H, int cols, int gw,
                       const double *s, const double *z)
{
    return row_loss_f(w, q, H, cols, gw, s, z, 0);
}

/* The least-squares scales of one row with zeros z fixed: M s = b,
 * M[g,h] = sum_{c in g, d in h} a_c H_cd a_d, b[g] = sum_{c in g} a_c (H w)_c. */
static void ls_scales(const float *w, const uint8_t *q, const float *H, int cols, int gw,
                      const double *z, double *s)
{
    int ng = (cols + gw - 1) / gw;
    double *M = calloc((size_t)ng * ng, sizeof(double)), *b = calloc((size_t)ng, sizeof(double));
    for (int c = 0; c < cols; c++)
        for (int d = 0; d < cols; d++) {
            double ac = q[c] - z[c / gw], ad = q[d] - z[d / gw];
            M[(c / gw) * ng + d / gw] += ac * H[c * cols + d] * ad;
            b[c / gw] += ac * H[c * cols + d] * w[d];
        }
    ck_assert_int_eq(t_inverse(M, ng), 0);
    for (int g = 0; g < ng; g++) {
        s[g] = 0;
        for (int h = 0; h < ng; h++) s[g] += M[g * ng + h] * b[h];
    }
    free(M);
    free(b);
}

/* The scales and zeros a row's qmeta decodes to. */
static void decode_row(const fs_grid_params *gp, const uint8_t *qm, int ng, double *s, double *z)
{
    for (int g = 0; g < ng; g++) {
        float sf, zf;
        fs_grid_unpack(gp, qm + 4 * g, &sf, &zf);
        s[g] = sf;
        z[g] = zf;
    }
}

/* Symmetric: the refined scales are the least-squares ones put on the Q8.8
 * grid: their loss lies between the continuous optimum's and that of the
 * nearest grid codes, and each is within two codes of the optimum. */
static void check_sym(int identity, int cols, int gw, uint64_t seed)
{
    const int rows = 4, ng = (cols + gw - 1) / gw;
    fs_ctx ctx;
    cpu(&ctx);
    float *W, *H;
    problem(seed, rows, cols, identity, &W, &H);
    fs_quant_opts q = opts(4, 1, gw);
    fs_grid_params gp;
    ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
    uint8_t *qm = malloc((size_t)rows * ng * 4), *codes = malloc((size_t)rows * cols);
    rtn_codes(&gp, W, rows, cols, gw, qm, codes);
    double lb[4], la[4];
    ck_assert_int_eq(fs_refine_scales(&ctx, &gp, H, W, codes, rows, cols, gw, qm, lb, la), FS_OK);
    for (int r = 0; r < rows; r++) {
        const float *w = W + r * cols;
        const uint8_t *qr = codes + r * cols;
        double z[8], s[8], sls[8], snear[8];
        decode_row(&gp, qm + r * ng * 4, ng, s, z);
        for (int g = 0; g < ng; g++) ck_assert_double_eq(z[g], 8.0);
        ls_scales(w, qr, H, cols, gw, z, sls);
        if (identity)                              /* H = I: s = a.w / a.a, group by group */
            for (int g = 0; g < ng; g++) {
                double aw = 0, aa = 0;
                for (int c = g * gw; c < cols && c < (g + 1) * gw; c++) {
                    aw += (qr[c] - 8.0) * w[c];
                    aa += (qr[c] - 8.0) * (qr[c] - 8.0);
                }
                ck_assert_double_le(fabs(sls[g] - aw / aa), 1e-12 * fabs(aw / aa));
            }
        for (int g = 0; g < ng; g++) {
            snear[g] = fs_q88_decode(fs_q88_encode((float)sls[g]));
            ck_assert_msg(fabs(log2(s[g] / sls[g])) * 256.0 <= 2.0 + 1e-9,
                          "row %d group %d: refined %.9g, least squares %.9g", r, g, s[g], sls[g]);
        }
        double lopt = row_loss(w, qr, H, cols, gw, sls, z), lnear = row_loss(w, qr, H, cols, gw, snear, z);
        double lref = row_loss(w, qr, H, cols, gw, s, z);
        ck_assert_msg(lopt <= lref * (1 + 1e-9), "row %d: refined %.12g below the optimum %.12g", r, lref, lopt);
        ck_assert_msg(lref <= lnear * (1 + 1e-9), "row %d: refined %.12g, nearest codes %.12g", r, lref, lnear);
        double lstored = row_loss_f(w, qr, H, cols, gw, s, z, 1);
        ck_assert_msg(fabs(la[r] - lstored) <= 1e-9 * lb[r] + 1e-15, "row %d: loss %.12g, here %.12g (before %.12g)", r,
                      la[r], lstored, lb[r]);
        ck_assert_double_le(la[r], lb[r]);
    }
    fs_grid_params_free(&gp);
    free(qm); free(codes); free(W); free(H);
    fs_backend_free(ctx.be);
}

START_TEST(ls_identity_hessian)
{
    check_sym(1, 64, 32, 11);
}
END_TEST

START_TEST(ls_correlated_two_groups)
{
    check_sym(0, 64, 32, 12);
}
END_TEST

START_TEST(ls_correlated_ragged_groups)
{
    check_sym(0, 80, 32, 13);                     /* groups of 32, 32, 16 */
}
END_TEST

/* Asymmetric: zeros from the joint optimum over (scale, offset) per group
 * (w^ = s q + o), solved here as a 2ng system, z = clamp(rint(-o / s)), then
 * the scales of the zeros held fixed. */
START_TEST(ls_asym_zeros_and_scales)
{
    const int rows = 3, cols = 64, gw = 32, ng = 2;
    fs_ctx ctx;
    cpu(&ctx);
    float *W, *H;
    problem(21, rows, cols, 0, &W, &H);
    for (int i = 0; i < rows * cols; i++) W[i] += 0.05f;   /* off-centre: zeros matter */
    fs_quant_opts q = opts(4, 0, gw);
    fs_grid_params gp;
    ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
    uint8_t qm[3 * 2 * 4], codes[3 * 64];
    rtn_codes(&gp, W, rows, cols, gw, qm, codes);
    double lb[3], la[3];
    ck_assert_int_eq(fs_refine_scales(&ctx, &gp, H, W, codes, rows, cols, gw, qm, lb, la), FS_OK);
    int changed = 0;
    for (int r = 0; r < rows; r++) {
        const float *w = W + r * cols;
        const uint8_t *qr = codes + r * cols;
        double M[16] = {0}, b[4] = {0}, x[4] = {0};
        for (int c = 0; c < cols; c++)                /* basis (g, 0) = q, (g, 1) = 1 on group g */
            for (int d = 0; d < cols; d++) {
                double pc[2] = {qr[c], 1.0}, pd[2] = {qr[d], 1.0};
                for (int t = 0; t < 2; t++) {
                    for (int u = 0; u < 2; u++)
                        M[(2 * (c / gw) + t) * 4 + 2 * (d / gw) + u] += pc[t] * H[c * cols + d] * pd[u];
                }
                for (int t = 0; t < 2; t++) b[2 * (c / gw) + t] += pc[t] * H[c * cols + d] * w[d];
            }
        ck_assert_int_eq(t_inverse(M, 4), 0);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) x[i] += M[i * 4 + j] * b[j];
        double s[2], z[2], zx[2], sls[2];
        decode_row(&gp, qm + r * ng * 4, ng, s, z);
        if (la[r] == lb[r]) continue;               /* kept: nothing better on the grid */
        changed++;
        for (int g = 0; g < ng; g++) {
            double zz = rint(-x[2 * g + 1] / x[2 * g]);
            zx[g] = zz < 0 ? 0 : zz > 15 ? 15 : zz;
            ck_assert_msg(z[g] == zx[g], "row %d group %d: zero %g, expected %g", r, g, z[g], zx[g]);
        }
        ls_scales(w, qr, H, cols, gw, zx, sls);
        for (int g = 0; g < ng; g++)
            ck_assert_msg(fabs(log2(s[g] / sls[g])) * 256.0 <= 2.0 + 1e-9, "row %d group %d: %.9g vs %.9g", r, g,
                          s[g], sls[g]);
        ck_assert_double_le(row_loss(w, qr, H, cols, gw, sls, zx), row_loss(w, qr, H, cols, gw, s, z) * (1 + 1e-9));
    }
    ck_assert_int_gt(changed, 0);
    fs_grid_params_free(&gp);
    free(W); free(H);
    fs_backend_free(ctx.be);
}
END_TEST

/* The layer driver with refinement: never a higher loss than without, lower
 * over the cases, and the dequant is what the codes and qmeta decode to. */
START_TEST(layer_refined_loss_not_worse)
{
    static const struct { int bits, sym, act, stat, v1, rounds; int64_t g; } cfg[] = {
        {4, 1, 0, 0, 0, 1, 32}, {4, 1, 1, 0, 0, 3, 32}, {3, 1, 1, 0, 0, 2, 64}, {4, 0, 0, 0, 0, 2, 32},
        {4, 0, 1, 1, 0, 3, 32}, {4, 0, 1, 0, 1, 2, 64}, {2, 1, 0, 0, 0, 4, -1}, {8, 1, 1, 0, 1, 1, 32},
    };
    fs_ctx ctx;
    cpu(&ctx);
    double gain = 0;
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        const int rows = 24, cols = 96;
        float *W, *H;
        problem(100 + i, rows, cols, 0, &W, &H);
        fs_quant_opts q = opts(cfg[i].bits, cfg[i].sym, cfg[i].g);
        q.act_order = cfg[i].act;
        q.static_groups = cfg[i].stat;
        q.gptq_v1 = cfg[i].v1;
        q.block = 16;
        fs_layer_result a, b;
        ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &a), FS_OK);
        q.refine_scales = cfg[i].rounds;
        ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &b), FS_OK);
        ck_assert_msg(b.loss <= a.loss * (1 + 1e-7), "case %zu: refined %.10g > plain %.10g", i, b.loss, a.loss);
        ck_assert_msg(fabs(b.solve_loss - a.loss) <= 1e-9 * a.loss, "case %zu: solve loss %.10g, plain %.10g", i,
                      b.solve_loss, a.loss);
        ck_assert_int_ge(b.refine_rounds, 1);
        gain += 1 - b.loss / a.loss;
        fs_grid_params gp;
        ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
        int64_t gw = fs_group_width(cols, q.group_size), ng = b.ngroups;
        int32_t inv[96];
        for (int c = 0; c < cols; c++) inv[b.perm ? b.perm[c] : c] = c;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                int64_t g = (q.act_order && !q.static_groups) ? inv[c] / gw : c / gw;
                float s, z;
                fs_grid_unpack(&gp, b.qmeta + (r * ng + g) * 4, &s, &z);
                ck_assert_float_le(b.qweight[r * cols + c], gp.maxq);
                ck_assert_float_eq(b.dequant[r * cols + c], ((float)b.qweight[r * cols + c] - z) * s);
                if (q.gptq_v1 && !q.sym) ck_assert_float_ge(z, 1.0f);
            }
        fs_grid_params_free(&gp);
        fs_layer_result_free(&a);
        fs_layer_result_free(&b);
        free(W); free(H);
    }
    ck_assert_msg(gain > 0.01, "refinement gained only %g in total", gain);
    fs_backend_free(ctx.be);
}
END_TEST

/* HMSE: the shrink factor of least weighted squared error, found here by
 * brute force over linspace(1, shrink, n) times the range scale's Q8.8 value. */
START_TEST(hmse_equals_brute_force)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    t_rng rng = {77};
    int differs = 0;
    for (int t = 0; t < 40; t++) {
        const int n = 32, bits = t % 2 ? 3 : 4, sym = t % 4 < 2;
        fs_quant_opts q = opts(bits, sym, n);
        q.grid = FS_GRID_HMSE;
        q.grid_n = 50;
        q.shrink = 0.3f;
        fs_grid_params gp, gm;
        ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
        q.grid = FS_GRID_MSE;
        q.norm = 2.0f;
        ck_assert_int_eq(fs_grid_params_init(&ctx, &gm, &q), FS_OK);
        float x[32], w[32];
        for (int i = 0; i < n; i++) {
            x[i] = t_gauss(&rng) + (sym ? 0.0f : 0.7f);
            w[i] = i == t % n ? 200.0f : 0.01f + fabsf(t_unif(&rng));   /* one heavy column */
        }
        const float maxq = (float)((1 << bits) - 1);
        float mn = 0, mx = 0;
        for (int i = 0; i < n; i++) { mn = x[i] < mn ? x[i] : mn; mx = x[i] > mx ? x[i] : mx; }
        float s0, z;
        if (sym) {
            float m = -mn > mx ? -mn : mx;
            s0 = 2 * m / maxq;
            z = (float)(1 << (bits - 1));
        } else {
            s0 = (mx - mn) / maxq;
            z = rintf(-mn / s0);
        }
        float base = fs_q88_decode(fs_q88_encode(s0)), best_s = base;
        double best = INFINITY;
        for (int k = 0; k < q.grid_n; k++) {
            float p = (float)(1.0 - (1.0 - (double)q.shrink) * k / (q.grid_n - 1)), s = base * p;
            double e = 0;
            for (int i = 0; i < n; i++) {
                float qi = rintf(x[i] / s + z);
                qi = qi < 0 ? 0 : qi > maxq ? maxq : qi;
                double d = (double)((qi - z) * s) - x[i];
                e += w[i] * d * d;
            }
            if (e < best) { best = e; best_s = s; }
        }
        uint8_t qm[4], qn[4];
        float s, zz;
        fs_grid_group_w(&gp, x, w, n, qm, &s, &zz);
        ck_assert_int_eq((int16_t)(qm[0] | qm[1] << 8), fs_q88_encode(best_s));
        ck_assert_float_eq(zz, z);
        fs_grid_group(&gm, x, n, qn, &s, &zz);
        differs += memcmp(qm, qn, 4) != 0;
        fs_grid_params_free(&gp);
        fs_grid_params_free(&gm);
    }
    ck_assert_int_gt(differs, 0);                 /* the weights change the choice */
}
END_TEST

/* The layer driver with HMSE grids (both weights), refinement on top: the
 * solves run and beat round to nearest on the same grids. */
START_TEST(hmse_layer_runs)
{
    fs_ctx ctx;
    cpu(&ctx);
    float *W, *H;
    problem(5, 16, 64, 0, &W, &H);
    for (int wk = 0; wk < 2; wk++) {
        fs_quant_opts q = opts(4, 1, 32);
        q.grid = FS_GRID_HMSE;
        q.hmse_weight = wk ? FS_HMSE_DIAG : FS_HMSE_OBS;
        q.act_order = 1;
        q.refine_scales = wk + 1;
        fs_layer_result r;
        ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, 16, 64, &q, &r), FS_OK);
        ck_assert(isfinite(r.loss));
        ck_assert_double_lt(r.loss, r.rtn_loss);
        fs_layer_result_free(&r);
    }
    free(W); free(H);
    fs_backend_free(ctx.be);
}
END_TEST

START_TEST(refine_rounds_range)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_quant_opts q = opts(4, 1, 32);
    q.refine_scales = 17;
    ck_assert_int_eq(fs_quant_opts_check(&ctx, &q), FS_ERR_USAGE);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "--refine-scales"));
}
END_TEST

Suite *fs_suite_refine(void)
{
    Suite *s = suite_create("refine");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ls_identity_hessian);
    tcase_add_test(tc, ls_correlated_two_groups);
    tcase_add_test(tc, ls_correlated_ragged_groups);
    tcase_add_test(tc, ls_asym_zeros_and_scales);
    tcase_add_test(tc, layer_refined_loss_not_worse);
    tcase_add_test(tc, hmse_equals_brute_force);
    tcase_add_test(tc, hmse_layer_runs);
    tcase_add_test(tc, refine_rounds_range);
    suite_add_tcase(s, tc);
    return s;
}
