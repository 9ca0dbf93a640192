/* check_ops.c: every op of the backend interface (src/backend/backend.h)
 * against an independent computation written here (naive loops in double,
 * bit-level encoders, hand-worked cases), on both CPU backends (`cpu` inline,
 * `cpu-async` on its queue threads), at shapes that are not multiples of the
 * group size or of the vector width (37 x 53, groups of 32 on 53 columns),
 * through strided views (ld > cols, an offset into the buffer) whose
 * surroundings are checked untouched.  One TCase per op. */
#include <math.h>
#include <string.h>

#include "tests/util.h"
#include "src/backend/backend.h"

/* ---- tolerances (each says why) ---------------------------------------------------- */

#define DOT_REL 2e-6        /* an f32 sum of <= 64 products vs double: k * 2^-24 of the sum of |terms| */
#define HESS_REL 1e-5       /* ssyrk over 60 rows in f32 vs double, relative to the largest entry */
#define INV_REL 2e-3        /* U^T U H ~ I through an f32 factorisation, cond ~ 1e2: n * eps * cond, x8 */
#define NORM_REL 2e-6       /* an f32 sum of 53 squares, a sqrtf, two products */
#define ROPE_ABS 2e-6       /* cos/sin rounded to float and two f32 products, |x| <= 4 */
#define SOFTMAX_REL 1e-5    /* exp to ~1e-7 relative, f32 sums of <= 9 terms and the T-term P V products */
#define SILU_REL 1e-6       /* expf (1 ulp) and three roundings */
#define ROUTE_REL 1e-6      /* softmax / sigmoid weights in f32 vs double */
#define LOSS_EXACT_REL 1e-12 /* the double loss vs long double: a few double ulps of the sum */
#define LOSS_F32_REL 1e-4   /* the f32 GEMM of the error: 53 * 2^-24 of terms of both signs */
#define GPTQ_LOSS_REL 0.05  /* blocked f32 solve vs the naive double one: same algorithm, rounding splits */
#define NEAR_HALF 0.01      /* a naive value this close to x.5 may round either way (check_gptq.c) */

#define Q FS_QUEUE_COMPUTE
#define NKINDS 2
static const fs_backend_kind KIND[NKINDS] = {FS_BE_CPU, FS_BE_CPU_ASYNC};

typedef struct tb { fs_ctx ctx; fs_backend *be; } tb;

static void tb_open(tb *t, fs_backend_kind k)
{
    fs_ctx_init(&t->ctx);
    ck_assert_int_eq(fs_backend_open(&t->ctx, k, NULL, &t->be), FS_OK);
}

#define OK(t, expr) ck_assert_msg((expr) == FS_OK, "%s on %s: %s", #expr, fs_backend_name((t)->be), (t)->ctx.errmsg)

/* ---- device matrices with checked surroundings ----------------------------------------- */

#define PAD 0xA5          /* bytes around a view: must survive every op */

typedef struct dm {
    fs_buf *buf;
    fs_tensor v;
    size_t bytes;
    uint8_t *shadow;      /* what was uploaded (kept until the upload surely ran) */
} dm;

/* A [rows, cols] view with row stride ld at element offset off, filled from
 * host (contiguous rows) or, without host, with 0xFF bytes (NaN in F32: an op
 * that reads an output it should only write shows). */
static dm dm_new(tb *t, fs_dtype dt, const void *host, int64_t rows, int64_t cols, int64_t ld, int64_t off)
{
    const size_t es = fs_dtype_size(dt);
    dm m;
    m.bytes = ((size_t)off + (size_t)(rows ? rows : 1) * (size_t)ld + 8) * es;
    m.shadow = malloc(m.bytes);
    memset(m.shadow, PAD, m.bytes);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *d = m.shadow + ((size_t)off + (size_t)r * (size_t)ld) * es;
        if (host) memcpy(d, (const uint8_t *)host + (size_t)r * (size_t)cols * es, (size_t)cols * es);
        else memset(d, 0xFF, (size_t)cols * es);
    }
    OK(t, fs_be_alloc(&t->ctx, t->be, m.bytes, "test matrix", &m.buf));
    OK(t, fs_be_upload(&t->ctx, t->be, Q, m.buf, 0, m.shadow, m.bytes));
    m.v = fs_tensor_ld(m.buf, (uint64_t)off * es, dt, rows, cols, ld);
    return m;
}

static dm dm_vec(tb *t, fs_dtype dt, const void *host, int64_t n)
{
    return dm_new(t, dt, host, 1, n, n, 0);
}

/* The view's elements into host (contiguous); every byte outside the view
 * must still be PAD. */
static void dm_get(tb *t, const dm *m, void *host)
{
    const size_t es = fs_dtype_size(m->v.dt), off = (size_t)(m->v.off / es);
    uint8_t *all = malloc(m->bytes);
    OK(t, fs_be_download(&t->ctx, t->be, Q, all, m->buf, 0, m->bytes));
    OK(t, fs_be_sync(&t->ctx, t->be, Q));
    for (size_t i = 0; i < m->bytes; i++) {
        size_t e = i / es;
        int inside = e >= off && m->v.cols > 0 && (e - off) / (size_t)m->v.ld < (size_t)m->v.rows &&
                     (e - off) % (size_t)m->v.ld < (size_t)m->v.cols;
        if (!inside) ck_assert_msg(all[i] == PAD, "byte %zu outside the view was written", i);
    }
    for (int64_t r = 0; r < m->v.rows; r++)
        memcpy((uint8_t *)host + (size_t)r * (size_t)m->v.cols * es, all + (off + (size_t)r * (size_t)m->v.ld) * es,
               (size_t)m->v.cols * es);
    free(all);
}

static void dm_free(tb *t, dm *m)
{
    fs_be_free(t->be, m->buf);
    free(m->shadow);
}

static float *randv(t_rng *r, size_t n, float scale)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = t_gauss(r) * scale;
    return v;
}

static int64_t i64_of(tb *t, const dm *m)
{
    int64_t v;
    dm_get(t, m, &v);
    return v;
}

/* ---- independent encoders --------------------------------------------------------- */

static uint16_t ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN stays NaN */
    uint32_t lsb = (u >> 16) & 1u;
    return (uint16_t)((u + 0x7fffu + lsb) >> 16);
}

static float bf16f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* OCP E4M3FN by its bit fields (ARCHITECTURES.md §6). */
static double ref_e4m3(uint8_t v)
{
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return NAN;
    double x = e ? (1.0 + m / 8.0) * ldexp(1.0, e - 7) : (m / 8.0) * ldexp(1.0, -6);
    return s ? -x : x;
}

static double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double x = e == 31 ? (m ? NAN : INFINITY) : e ? (1.0 + m / 1024.0) * ldexp(1.0, e - 15) : m / 1024.0 * ldexp(1.0, -14);
    return s ? -x : x;
}

/* ---- fill ------------------------------------------------------------------------------- */

START_TEST(op_fill)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        dm f = dm_new(&t, FS_DT_F32, NULL, 5, 7, 9, 3), i = dm_new(&t, FS_DT_I32, NULL, 3, 4, 4, 1);
        dm h = dm_new(&t, FS_DT_BF16, NULL, 2, 3, 5, 0), d = dm_new(&t, FS_DT_F64, NULL, 1, 2, 2, 0);
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, f.v, -2.5));
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, i.v, 7));
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, h.v, 1.0));
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, d.v, 0.1));
        float fo[35];
        int32_t io[12];
        uint16_t ho[6];
        double dd[2];
        dm_get(&t, &f, fo); dm_get(&t, &i, io); dm_get(&t, &h, ho); dm_get(&t, &d, dd);
        for (int k = 0; k < 35; k++) ck_assert_float_eq(fo[k], -2.5f);
        for (int k = 0; k < 12; k++) ck_assert_int_eq(io[k], 7);
        for (int k = 0; k < 6; k++) ck_assert_uint_eq(ho[k], 0x3F80);
        ck_assert(dd[0] == 0.1 && dd[1] == 0.1);
        dm_free(&t, &f); dm_free(&t, &i); dm_free(&t, &h); dm_free(&t, &d);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- gemm ----------------------------------------------------------------------------------- */

static void gemm_case(tb *t, fs_dtype dt, int trans_b, int strided, float beta)
{
    t_rng r = {(uint64_t)(31 + trans_b * 2 + strided + (dt == FS_DT_BF16) * 4)};
    const int64_t m = 37, k = 53, n = 19;
    float *A = randv(&r, (size_t)(m * k), 1), *B = randv(&r, (size_t)(k * n), 1), *C0 = randv(&r, (size_t)(m * n), 1);
    uint16_t *Ah = malloc(2 * (size_t)(m * k)), *Bh = malloc(2 * (size_t)(k * n));
    for (int64_t i = 0; i < m * k; i++) { Ah[i] = ref_bf16(A[i]); if (dt == FS_DT_BF16) A[i] = bf16f(Ah[i]); }
    for (int64_t i = 0; i < k * n; i++) { Bh[i] = ref_bf16(B[i]); if (dt == FS_DT_BF16) B[i] = bf16f(Bh[i]); }
    const int64_t br = trans_b ? n : k, bc = trans_b ? k : n;
    /* B as stored: [k, n], or [n, k] holding B^T */
    float *Bs = malloc(sizeof(float) * (size_t)(k * n));
    uint16_t *Bsh = malloc(2 * (size_t)(k * n));
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t at = trans_b ? j * k + i : i * n + j;
            Bs[at] = B[i * n + j];
            Bsh[at] = Bh[i * n + j];
        }
    const int64_t pad = strided ? 5 : 0, off = strided ? 3 : 0;
    dm dA = dm_new(t, dt, dt == FS_DT_F32 ? (void *)A : (void *)Ah, m, k, k + pad, off);
    dm dB = dm_new(t, dt, dt == FS_DT_F32 ? (void *)Bs : (void *)Bsh, br, bc, bc + pad, off);
    dm dC = beta == 0.0f ? dm_new(t, FS_DT_F32, NULL, m, n, n + pad, off) : dm_new(t, FS_DT_F32, C0, m, n, n + pad, off);
    fs_gemm_args g = {dA.v, dB.v, dC.v, trans_b, 0.75f, beta};
    OK(t, fs_op_gemm(&t->ctx, t->be, Q, &g));
    float *C = malloc(sizeof(float) * (size_t)(m * n));
    dm_get(t, &dC, C);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int64_t l = 0; l < k; l++) {
                s += (double)A[i * k + l] * B[l * n + j];
                mag += fabs((double)A[i * k + l] * B[l * n + j]);
            }
            double ref = 0.75 * s + (beta != 0.0f ? beta * (double)C0[i * n + j] : 0.0);
            double bound = DOT_REL * (0.75 * mag + fabs(beta * (double)C0[i * n + j])) + 1e-30;
            ck_assert_msg(fabs(C[i * n + j] - ref) <= bound, "%s %s trans %d strided %d: C[%lld][%lld] %g, naive %g",
                          fs_backend_name(t->be), fs_dtype_name(dt), trans_b, strided, (long long)i, (long long)j,
                          C[i * n + j], ref);
        }
    dm_free(t, &dA); dm_free(t, &dB); dm_free(t, &dC);
    free(A); free(B); free(C0); free(Ah); free(Bh); free(Bs); free(Bsh); free(C);
}

START_TEST(op_gemm)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        for (int tr = 0; tr <= 1; tr++)
            for (int st = 0; st <= 1; st++) {
                gemm_case(&t, FS_DT_F32, tr, st, 0.0f);   /* beta 0: C (NaN) not read */
                gemm_case(&t, FS_DT_F32, tr, st, 0.5f);
                gemm_case(&t, FS_DT_BF16, tr, st, 0.25f);
            }
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- bias, residual, copy, swiglu ---------------------------------------------------------- */

START_TEST(op_bias_add_and_add)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {41};
        const int64_t n = 37, c = 53;
        float *Y = randv(&r, (size_t)(n * c), 1), *X = randv(&r, (size_t)(n * c), 1), *B = randv(&r, (size_t)c, 1);
        dm dy = dm_new(&t, FS_DT_F32, Y, n, c, c + 4, 2), dx = dm_new(&t, FS_DT_F32, X, n, c, c + 1, 1);
        dm db = dm_vec(&t, FS_DT_F32, B, c);
        OK(&t, fs_op_bias_add(&t.ctx, t.be, Q, dy.v, db.v));
        OK(&t, fs_op_add(&t.ctx, t.be, Q, dy.v, dx.v));
        float *o = malloc(sizeof(float) * (size_t)(n * c));
        dm_get(&t, &dy, o);
        for (int64_t i = 0; i < n * c; i++) {
            volatile float s = Y[i] + B[i % c];           /* one f32 addition each: exact */
            ck_assert_float_eq(o[i], s + X[i]);
        }
        dm_free(&t, &dy); dm_free(&t, &dx); dm_free(&t, &db);
        free(Y); free(X); free(B); free(o);
        fs_backend_free(t.be);
    }
}
END_TEST

START_TEST(op_copy)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        /* hand-worked rounding: a tie to even down (1 + 2^-8), a tie up
         * (1 + 3 * 2^-8 -> 1 + 2^-6), just above a tie, a NaN */
        uint32_t bits[5] = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0x7FC00000u, 0xC0490FDBu};
        uint16_t want[5] = {0x3F80, 0x3F82, 0x3F81, 0x7FC0, 0xC049};
        float hw[5];
        memcpy(hw, bits, sizeof hw);
        dm s = dm_vec(&t, FS_DT_F32, hw, 5), d = dm_new(&t, FS_DT_BF16, NULL, 1, 5, 5, 0);
        OK(&t, fs_op_copy(&t.ctx, t.be, Q, d.v, s.v));
        uint16_t got[5];
        dm_get(&t, &d, got);
        for (int i = 0; i < 5; i++) ck_assert_uint_eq(got[i], want[i]);
        dm_free(&t, &s); dm_free(&t, &d);

        /* random F32 -> BF16 -> F32 through strided views, vs the bit-level encoder */
        t_rng r = {42};
        const int64_t n = 37, c = 53;
        float *X = randv(&r, (size_t)(n * c), 3);
        dm x = dm_new(&t, FS_DT_F32, X, n, c, c + 3, 1), h = dm_new(&t, FS_DT_BF16, NULL, n, c, c + 2, 4);
        dm y = dm_new(&t, FS_DT_F32, NULL, n, c, c, 0);
        OK(&t, fs_op_copy(&t.ctx, t.be, Q, h.v, x.v));
        OK(&t, fs_op_copy(&t.ctx, t.be, Q, y.v, h.v));
        uint16_t *hb = malloc(2 * (size_t)(n * c));
        float *yo = malloc(4 * (size_t)(n * c));
        dm_get(&t, &h, hb);
        dm_get(&t, &y, yo);
        for (int64_t i = 0; i < n * c; i++) {
            ck_assert_uint_eq(hb[i], ref_bf16(X[i]));
            ck_assert_float_eq(yo[i], bf16f(ref_bf16(X[i])));
        }
        dm_free(&t, &x); dm_free(&t, &h); dm_free(&t, &y);
        free(hb); free(yo);

        /* MLA: one shared k_pe [n, rope] into every head's last columns of K */
        const int64_t nh = 3, nope = 5, rope = 4, qk = nope + rope;
        float *kpe = randv(&r, (size_t)(n * rope), 1);
        dm dk = dm_vec(&t, FS_DT_F32, kpe, n * rope), K = dm_new(&t, FS_DT_F32, NULL, n, nh * qk, nh * qk, 0);
        fs_tensor src = fs_tensor_2d(dk.buf, 0, FS_DT_F32, n, rope);
        for (int64_t hh = 0; hh < nh; hh++)
            OK(&t, fs_op_copy(&t.ctx, t.be, Q, fs_tensor_cols(K.v, hh * qk + nope, rope), src));
        float *ko = malloc(4 * (size_t)(n * nh * qk));
        dm_get(&t, &K, ko);
        for (int64_t i = 0; i < n; i++)
            for (int64_t hh = 0; hh < nh; hh++)
                for (int64_t j = 0; j < qk; j++) {
                    float v = ko[i * nh * qk + hh * qk + j];
                    if (j < nope) ck_assert(isnan(v));     /* untouched poison */
                    else ck_assert_float_eq(v, kpe[i * rope + j - nope]);
                }
        dm_free(&t, &dk); dm_free(&t, &K);
        free(kpe); free(ko); free(X);
        fs_backend_free(t.be);
    }
}
END_TEST

START_TEST(op_swiglu)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {43};
        const int64_t n = 37, c = 53;
        float *G = randv(&r, (size_t)(n * c), 3), *U = randv(&r, (size_t)(n * c), 1);
        dm g = dm_new(&t, FS_DT_F32, G, n, c, c + 7, 0), u = dm_new(&t, FS_DT_F32, U, n, c, c, 2);
        OK(&t, fs_op_swiglu(&t.ctx, t.be, Q, g.v, u.v, g.v));     /* in place on g */
        float *o = malloc(4 * (size_t)(n * c));
        dm_get(&t, &g, o);
        for (int64_t i = 0; i < n * c; i++) {
            double z = G[i], ref = z / (1.0 + exp(-z)) * U[i];
            ck_assert_msg(fabs(o[i] - ref) <= SILU_REL * fabs(ref) + 1e-30, "silu %g vs %g", o[i], ref);
        }
        dm_free(&t, &g); dm_free(&t, &u);
        free(G); free(U); free(o);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- Hessians, damping, Cholesky ---------------------------------------------------------- */

static void naive_xtx(const float *X, const int32_t *rows, int64_t n, int64_t d, double *H)
{
    for (int64_t i = 0; i < d * d; i++) H[i] = 0;
    for (int64_t k = 0; k < n; k++) {
        const float *x = X + (rows ? rows[k] : k) * d;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) H[i * d + j] += (double)x[i] * x[j];
    }
}

static double maxabs(const double *v, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

START_TEST(op_hessian)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {44};
        const int64_t n = 61, d = 37;
        float *X = t_corr_inputs(&r, (int)n, (int)d);
        double *ref = malloc(sizeof(double) * (size_t)(d * d));
        naive_xtx(X, NULL, n, d, ref);
        const double tol = HESS_REL * maxabs(ref, d * d);
        dm dx = dm_new(&t, FS_DT_F32, X, n, d, d + 3, 1), H = dm_new(&t, FS_DT_F32, NULL, d, d, d + 2, 2);
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, H.v, 0.0));
        OK(&t, fs_op_hess_acc(&t.ctx, t.be, Q, H.v, fs_tensor_rows(dx.v, 0, 25)));    /* two chunks */
        OK(&t, fs_op_hess_acc(&t.ctx, t.be, Q, H.v, fs_tensor_rows(dx.v, 25, n - 25)));
        float *h = malloc(4 * (size_t)(d * d));
        dm_get(&t, &H, h);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                if (j < i) ck_assert_float_eq(h[i * d + j], 0.0f);   /* ssyrk leaves the lower triangle */
                else ck_assert(fabs(h[i * d + j] - ref[i * d + j]) <= tol);
            }
        OK(&t, fs_op_hess_finish(&t.ctx, t.be, Q, H.v, 1));
        dm_get(&t, &H, h);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                ck_assert_float_eq(h[i * d + j], h[j * d + i]);
                ck_assert(fabs(h[i * d + j] - ref[i * d + j]) <= tol);
            }

        /* a wave: experts 1..3 of 4 from row lists (expert 2 has no rows), H of
         * three stacked [d, d] */
        int32_t offs[5] = {0, 4, 30, 30, 45}, rows[45];
        for (int i = 0; i < 45; i++) rows[i] = (int32_t)((i * 7 + 3) % n);
        dm doffs = dm_vec(&t, FS_DT_I32, offs, 5), drows = dm_vec(&t, FS_DT_I32, rows, 45);
        dm W = dm_new(&t, FS_DT_F32, NULL, 3 * d, d, d, 0);
        OK(&t, fs_op_fill(&t.ctx, t.be, Q, W.v, 0.0));
        fs_hess_wave_args wa = {dx.v, doffs.v, drows.v, W.v, 1, 3};
        OK(&t, fs_op_hess_wave(&t.ctx, t.be, Q, &wa));
        OK(&t, fs_op_hess_finish(&t.ctx, t.be, Q, W.v, 3));
        float *w = malloc(4 * (size_t)(3 * d * d));
        dm_get(&t, &W, w);
        for (int e = 1; e <= 3; e++) {
            naive_xtx(X, rows + offs[e], offs[e + 1] - offs[e], d, ref);
            double te = HESS_REL * maxabs(ref, d * d);
            for (int64_t i = 0; i < d * d; i++)
                ck_assert_msg(fabs(w[(e - 1) * d * d + i] - ref[i]) <= te, "expert %d entry %lld", e, (long long)i);
        }
        dm_free(&t, &dx); dm_free(&t, &H); dm_free(&t, &doffs); dm_free(&t, &drows); dm_free(&t, &W);
        free(X); free(ref); free(h); free(w);
        fs_backend_free(t.be);
    }
}
END_TEST

START_TEST(op_damp)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        /* two stacked 5 x 5: diagonals 1..5 (mean 3) and 10..50 (mean 30), damp
         * 0.1: +0.3 and +3 on the diagonals, the rest unchanged */
        float H[50];
        for (int m = 0; m < 2; m++)
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 5; j++) H[m * 25 + i * 5 + j] = i == j ? (float)((i + 1) * (m ? 10 : 1)) : 0.5f;
        dm s = dm_new(&t, FS_DT_F32, H, 10, 5, 5, 0), d = dm_new(&t, FS_DT_F32, NULL, 10, 5, 6, 1);
        fs_damp_args a = {s.v, d.v, 2, 0.1};
        OK(&t, fs_op_damp(&t.ctx, t.be, Q, &a));
        float o[50];
        dm_get(&t, &d, o);
        for (int m = 0; m < 2; m++)
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 5; j++) {
                    float want = i == j ? H[m * 25 + i * 5 + j] + (m ? 3.0f : (float)(0.1 * 3.0)) : 0.5f;
                    ck_assert_float_eq(o[m * 25 + i * 5 + j], want);
                }
        fs_damp_args in_place = {s.v, s.v, 2, 1.0};
        OK(&t, fs_op_damp(&t.ctx, t.be, Q, &in_place));
        dm_get(&t, &s, o);
        ck_assert_float_eq(o[0], 4.0f);
        ck_assert_float_eq(o[25 + 6], 50.0f);
        dm_free(&t, &s); dm_free(&t, &d);
        fs_backend_free(t.be);
    }
}
END_TEST

/* An SPD [d, d] with condition ~1e1 (check_hessian.c's). */
static void spd(t_rng *r, int d, float *H)
{
    const int n = 200;
    float *X = t_corr_inputs(r, n, d);
    double *ref = malloc(sizeof(double) * d * d);
    t_xtx(X, n, d, ref);
    for (int i = 0; i < d * d; i++) H[i] = (float)(ref[i] / n);
    for (int i = 0; i < d; i++) H[i * d + i] += 1.0f;
    free(X); free(ref);
}

START_TEST(op_cholinv)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {45};
        const int d = 37, cnt = 3;
        float *H = malloc(sizeof(float) * cnt * d * d);
        spd(&r, d, H);
        spd(&r, d, H + 2 * d * d);
        for (int i = 0; i < d * d; i++) H[d * d + i] = (i % (d + 1)) == 0 ? 1.0f : 0.0f;
        H[d * d + 5 * d + 5] = -1.0f;                 /* matrix 1: not PD at column 5 */
        dm A = dm_new(&t, FS_DT_F32, H, cnt * d, d, d, 0), st = dm_new(&t, FS_DT_I32, NULL, 1, cnt, cnt, 1);
        fs_cholinv_args a = {A.v, st.v, cnt};
        OK(&t, fs_op_cholinv(&t.ctx, t.be, Q, &a));
        int32_t status[3];
        float *U = malloc(sizeof(float) * cnt * d * d);
        dm_get(&t, &st, status);
        dm_get(&t, &A, U);
        ck_assert_int_eq(status[0], 0);
        ck_assert_int_eq(status[1], 6);              /* column 5 + 1 (hand-worked) */
        ck_assert_int_eq(status[2], 0);
        double *Hi = malloc(sizeof(double) * d * d);
        for (int m = 0; m < cnt; m += 2) {
            const float *u = U + m * d * d;
            for (int i = 0; i < d * d; i++) Hi[i] = H[m * d * d + i];
            ck_assert_int_eq(t_inverse(Hi, d), 0);
            double num = 0, den = 0;
            for (int i = 0; i < d; i++) {
                ck_assert(u[i * d + i] > 0);
                for (int j = 0; j < i; j++) ck_assert_float_eq(u[i * d + j], 0.0f);
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int k = 0; k < d; k++) s += (double)u[k * d + i] * u[k * d + j];
                    num += (s - Hi[i * d + j]) * (s - Hi[i * d + j]);
                    den += Hi[i * d + j] * Hi[i * d + j];
                }
            }
            ck_assert_msg(sqrt(num / den) <= INV_REL, "U^T U vs H^-1: %g", sqrt(num / den));
        }
        dm_free(&t, &A); dm_free(&t, &st);
        free(H); free(U); free(Hi);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- grid, rtn, gptq ------------------------------------------------------------------------- */

static fs_grid_params gparams(int bits, int sym, int gptq_v1)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.bits = bits;
    q.sym = sym;
    q.gptq_v1 = gptq_v1;
    fs_grid_params gp;
    ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
    return gp;
}

/* The stored scale 2^(code/256) in double, rounded to float once. */
static float q88_scale(const uint8_t *m)
{
    int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
    return (float)exp2(code / 256.0);
}

START_TEST(op_grid_rtn)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {46};
        const int64_t R = 37, C = 53, gw = 32, ng = 2;
        float *W = randv(&r, (size_t)(R * C), 1);
        for (int sym = 0; sym <= 1; sym++) {
            fs_grid_params gp = gparams(4, sym, 0);
            dm dw = dm_new(&t, FS_DT_F32, W, R, C, C + 3, 1), qm = dm_new(&t, FS_DT_U8, NULL, R, ng * 4, ng * 4 + 5, 3);
            dm codes = dm_new(&t, FS_DT_U8, NULL, R, C, C + 1, 0), D = dm_new(&t, FS_DT_F32, NULL, R, C, C, 0);
            fs_grid_args ga = {dw.v, qm.v, gw, &gp};
            OK(&t, fs_op_grid(&t.ctx, t.be, Q, &ga));
            fs_rtn_args ra = {dw.v, qm.v, codes.v, D.v, gw, &gp};
            OK(&t, fs_op_rtn(&t.ctx, t.be, Q, &ra));
            fs_grid_params_free(&gp);    /* the op copied it (backend.h invariant 4) */
            uint8_t *m = malloc((size_t)(R * ng * 4)), *cd = malloc((size_t)(R * C));
            float *dq = malloc(4 * (size_t)(R * C));
            dm_get(&t, &qm, m);
            dm_get(&t, &codes, cd);
            dm_get(&t, &D, dq);
            for (int64_t i = 0; i < R; i++)
                for (int64_t g = 0; g < ng; g++) {
                    /* specifications.md §3.1, in this file's arithmetic */
                    const int64_t c0 = g * gw, len = C - c0 < gw ? C - c0 : gw;
                    float mn = 0, mx = 0;
                    for (int64_t k = 0; k < len; k++) {
                        mn = fminf(mn, W[i * C + c0 + k]);
                        mx = fmaxf(mx, W[i * C + c0 + k]);
                    }
                    if (sym) { float a = fmaxf(-mn, mx); mn = -a; mx = a; }
                    float s = (mx - mn) / 15.0f;
                    float z = sym ? 8.0f : fminf(fmaxf(rintf(-mn / s), 0.0f), 15.0f);
                    const uint8_t *e = m + (i * ng + g) * 4;
                    int16_t code = (int16_t)(uint16_t)(e[0] | e[1] << 8);
                    ck_assert_msg(fabs(code - log2((double)s) * 256.0) <= 0.5 + 1e-4, "row %lld group %lld code %d for "
                                  "scale %g", (long long)i, (long long)g, code, s);
                    ck_assert_uint_eq(e[2], (unsigned)z);
                    ck_assert_uint_eq(e[3], sym ? 1u : 0u);
                    const float sc = q88_scale(e);
                    for (int64_t k = 0; k < len; k++) {
                        float q = fminf(fmaxf(rintf(W[i * C + c0 + k] / sc + z), 0.0f), 15.0f);
                        ck_assert_uint_eq(cd[i * C + c0 + k], (unsigned)q);
                        ck_assert_float_eq(dq[i * C + c0 + k], (q - z) * sc);
                    }
                }
            dm_free(&t, &dw); dm_free(&t, &qm); dm_free(&t, &codes); dm_free(&t, &D);
            free(m); free(cd); free(dq);
        }
        free(W);
        fs_backend_free(t.be);
    }
}
END_TEST

/* Naive GPTQ in double (check_gptq.c's OBS form, identity order), dynamic
 * groups of gw from the current weights. */
static void naive_gptq(const fs_grid_params *gp, const float *W0, const double *Hinv, int rows, int cols, int gw,
                       uint8_t *codes, double *pre, float *deq)
{
    double *Hr = malloc(sizeof(double) * cols * cols), *w = malloc(sizeof(double) * cols);
    for (int r = 0; r < rows; r++) {
        memcpy(Hr, Hinv, sizeof(double) * cols * cols);
        for (int k = 0; k < cols; k++) w[k] = W0[r * cols + k];
        float s = 1, z = 0, grp[64];
        uint8_t qm[4];
        for (int j = 0; j < cols; j++) {
            if (j % gw == 0) {
                int n = cols - j < gw ? cols - j : gw;
                for (int i = 0; i < n; i++) grp[i] = (float)w[j + i];
                fs_grid_group(gp, grp, n, qm, &s, &z);
            }
            float x = (float)w[j], qv = fs_quant1(x, s, z, gp->maxq);
            codes[r * cols + j] = (uint8_t)qv;
            deq[r * cols + j] = (qv - z) * s;
            pre[r * cols + j] = w[j] / s + z;
            double e = ((double)x - (double)((qv - z) * s)) / Hr[j * cols + j];
            for (int c = j + 1; c < cols; c++) w[c] -= e * Hr[j * cols + c];
            for (int a = j + 1; a < cols; a++)
                for (int bb = j + 1; bb < cols; bb++) Hr[a * cols + bb] -= Hr[a * cols + j] * Hr[j * cols + bb] / Hr[j * cols + j];
        }
    }
    free(Hr); free(w);
}

START_TEST(op_gptq)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {47};
        const int R = 37, C = 53, gw = 32, ng = 2;
        float *H = malloc(sizeof(float) * C * C), *W = randv(&r, (size_t)(R * C), 0.1f);
        spd(&r, C, H);
        /* U with U^T U = H^-1, in double: the Cholesky factor L of H^-1, U = L^T */
        double *Hi = malloc(sizeof(double) * C * C), *L = calloc((size_t)C * C, sizeof(double));
        for (int i = 0; i < C * C; i++) Hi[i] = H[i];
        ck_assert_int_eq(t_inverse(Hi, C), 0);
        for (int j = 0; j < C; j++) {
            double s = Hi[j * C + j];
            for (int k = 0; k < j; k++) s -= L[j * C + k] * L[j * C + k];
            L[j * C + j] = sqrt(s);
            for (int i = j + 1; i < C; i++) {
                double v = Hi[i * C + j];
                for (int k = 0; k < j; k++) v -= L[i * C + k] * L[j * C + k];
                L[i * C + j] = v / L[j * C + j];
            }
        }
        float *U = malloc(sizeof(float) * C * C);
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) U[i * C + j] = (float)L[j * C + i];
        fs_grid_params gp = gparams(4, 0, 0);
        dm dw = dm_new(&t, FS_DT_F32, W, R, C, C, 0), du = dm_new(&t, FS_DT_F32, U, C, C, C, 0);
        dm dc = dm_new(&t, FS_DT_U8, NULL, R, C, C, 0), dq = dm_new(&t, FS_DT_U8, NULL, R, ng * 4, ng * 4, 0);
        fs_gptq_args a = {dw.v, du.v, dc.v, dq.v, fs_tensor_none(), gw, 7, &gp};
        OK(&t, fs_op_gptq(&t.ctx, t.be, Q, &a));
        uint8_t *codes = malloc((size_t)R * C), *naive = malloc((size_t)R * C), *qm = malloc((size_t)R * ng * 4);
        float *D = malloc(4 * (size_t)R * C), *Dn = malloc(4 * (size_t)R * C);
        double *pre = malloc(sizeof(double) * R * C);
        dm_get(&t, &dc, codes);
        dm_get(&t, &dw, D);
        dm_get(&t, &dq, qm);
        naive_gptq(&gp, W, Hi, R, C, gw, naive, pre, Dn);
        int split = 0;
        for (int i = 0; i < R; i++) {
            for (int k = 0; k < C; k++) {                /* the dequant is the codes on the stored grid */
                const uint8_t *e = qm + (i * ng + k / gw) * 4;
                ck_assert_float_eq(D[i * C + k], (codes[i * C + k] - (float)e[2]) * q88_scale(e));
            }
            for (int k = 0; k < C; k++) {                /* codes follow the naive path (check_gptq.c's rule) */
                if (naive[i * C + k] == codes[i * C + k]) continue;
                double v = pre[i * C + k], off = fabs(v - floor(v) - 0.5);
                ck_assert_msg(off < NEAR_HALF, "row %d col %d: %d vs naive %d (%.5f)", i, k, codes[i * C + k],
                              naive[i * C + k], v);
                split++;
                break;
            }
        }
        ck_assert(split <= 1 + R / 10);
        double lo = t_loss(W, D, H, R, C), ln = t_loss(W, Dn, H, R, C);
        ck_assert_msg(fabs(lo - ln) <= GPTQ_LOSS_REL * ln, "loss %g, naive %g", lo, ln);

        /* static groups: grids from W first (grid op), gcol maps columns to groups */
        int32_t gcol[53];
        for (int k = 0; k < C; k++) gcol[k] = k / gw;
        dm dw2 = dm_new(&t, FS_DT_F32, W, R, C, C, 0), dg = dm_vec(&t, FS_DT_I32, gcol, C);
        dm dq2 = dm_new(&t, FS_DT_U8, NULL, R, ng * 4, ng * 4, 0);
        fs_grid_args ga = {dw2.v, dq2.v, gw, &gp};
        OK(&t, fs_op_grid(&t.ctx, t.be, Q, &ga));
        uint8_t *qm0 = malloc((size_t)R * ng * 4);
        dm_get(&t, &dq2, qm0);
        fs_gptq_args s = {dw2.v, du.v, dc.v, dq2.v, dg.v, gw, 128, &gp};
        OK(&t, fs_op_gptq(&t.ctx, t.be, Q, &s));
        dm_get(&t, &dq2, qm);
        ck_assert_mem_eq(qm, qm0, (size_t)R * ng * 4);  /* static: qmeta is input only */
        dm_get(&t, &dc, codes);
        dm_get(&t, &dw2, D);
        for (int i = 0; i < R * C; i++) {
            const uint8_t *e = qm0 + ((i / C) * ng + (i % C) / gw) * 4;
            ck_assert_float_eq(D[i], (codes[i] - (float)e[2]) * q88_scale(e));
        }
        ck_assert(t_loss(W, D, H, R, C) <= 1.5 * ln);
        fs_grid_params_free(&gp);
        dm_free(&t, &dw); dm_free(&t, &du); dm_free(&t, &dc); dm_free(&t, &dq);
        dm_free(&t, &dw2); dm_free(&t, &dg); dm_free(&t, &dq2);
        free(H); free(W); free(Hi); free(L); free(U); free(codes); free(naive); free(qm); free(qm0);
        free(D); free(Dn); free(pre);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- decode, permute --------------------------------------------------------------------------- */

START_TEST(op_decode)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        /* hand-worked E4M3: 1, 448 (0x7E), the smallest subnormal 2^-9, -1.5 */
        uint8_t e4[4] = {0x38, 0x7E, 0x01, 0xBC};
        float want[4] = {1.0f, 448.0f, 0x1p-9f, -1.5f};
        dm s = dm_vec(&t, FS_DT_F8_E4M3, e4, 4), d = dm_new(&t, FS_DT_F32, NULL, 1, 4, 4, 0);
        dm st = dm_new(&t, FS_DT_I64, NULL, 1, 1, 1, 0);
        fs_decode_args a = {s.v, fs_tensor_none(), d.v, st.v, 0, 0};
        OK(&t, fs_op_decode(&t.ctx, t.be, Q, &a));
        float o[4];
        dm_get(&t, &d, o);
        for (int i = 0; i < 4; i++) ck_assert_float_eq(o[i], want[i]);
        ck_assert_int_eq(i64_of(&t, &st), 0);
        dm_free(&t, &s); dm_free(&t, &d);

        /* block-scaled F8 [37, 53] in 32 x 32 blocks (partial edges), strided */
        t_rng r = {48};
        const int64_t R = 37, C = 53, b0 = 32, b1 = 32, sr = 2, sc = 2;
        uint8_t *q = malloc((size_t)(R * C));
        for (int64_t i = 0; i < R * C; i++) { q[i] = (uint8_t)(t_next(&r) & 0xFF); if ((q[i] & 0x7F) == 0x7F) q[i] ^= 1; }
        float S[4] = {0.5f, 3.0f, 1e-3f, 7.25f};
        dm dq = dm_new(&t, FS_DT_F8_E4M3, q, R, C, C + 5, 3), ds = dm_new(&t, FS_DT_F32, S, sr, sc, sc, 0);
        dm out = dm_new(&t, FS_DT_F32, NULL, R, C, C + 1, 0);
        fs_decode_args ba = {dq.v, ds.v, out.v, st.v, b0, b1};
        OK(&t, fs_op_decode(&t.ctx, t.be, Q, &ba));
        float *w = malloc(4 * (size_t)(R * C));
        dm_get(&t, &out, w);
        for (int64_t i = 0; i < R; i++)
            for (int64_t c = 0; c < C; c++)
                ck_assert_float_eq(w[i * C + c], (float)(ref_e4m3(q[i * C + c]) * S[(i / b0) * sc + c / b1]));
        ck_assert_int_eq(i64_of(&t, &st), 0);
        /* two NaNs: the status is the first one's flat index + 1 */
        q[30 * C + 40] = 0x7F;
        q[31 * C + 2] = 0xFF;
        q[20 * C + 50] = 0x7F;
        dm dq2 = dm_new(&t, FS_DT_F8_E4M3, q, R, C, C, 0);
        fs_decode_args na = {dq2.v, ds.v, out.v, st.v, b0, b1};
        OK(&t, fs_op_decode(&t.ctx, t.be, Q, &na));
        ck_assert_int_eq(i64_of(&t, &st), 20 * C + 50 + 1);

        /* BF16 and F16 vs bit-level decoders; an F16 Inf is reported */
        uint16_t *hb = malloc(2 * (size_t)(R * C));
        for (int64_t i = 0; i < R * C; i++) hb[i] = (uint16_t)(t_next(&r) & 0xBFFF);   /* no NaN/Inf exponents */
        for (int f16 = 0; f16 <= 1; f16++) {
            if (f16) hb[36 * C + 52] = 0x7C00;
            dm dh = dm_new(&t, f16 ? FS_DT_F16 : FS_DT_BF16, hb, R, C, C + 2, 1);
            fs_decode_args ha = {dh.v, fs_tensor_none(), out.v, st.v, 0, 0};
            OK(&t, fs_op_decode(&t.ctx, t.be, Q, &ha));
            dm_get(&t, &out, w);
            for (int64_t i = 0; i < R * C; i++) {
                double ref = f16 ? ref_f16(hb[i]) : (double)bf16f(hb[i]);
                ck_assert_msg((double)w[i] == ref, "%s %lld: %g vs %g", f16 ? "F16" : "BF16", (long long)i, w[i], ref);
            }
            ck_assert_int_eq(i64_of(&t, &st), f16 ? 36 * C + 52 + 1 : 0);
            dm_free(&t, &dh);
        }
        dm_free(&t, &dq); dm_free(&t, &ds); dm_free(&t, &out); dm_free(&t, &dq2); dm_free(&t, &st);
        free(q); free(w); free(hb);
        fs_backend_free(t.be);
    }
}
END_TEST

START_TEST(op_permute)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {49};
        const int64_t R = 37, C = 53;
        int32_t perm[53];
        for (int i = 0; i < C; i++) perm[i] = i;
        for (int i = C - 1; i > 0; i--) { int j = (int)(t_next(&r) % (uint32_t)(i + 1)); int32_t x = perm[i]; perm[i] = perm[j]; perm[j] = x; }
        float *W = randv(&r, (size_t)(R * C), 1), *H = randv(&r, (size_t)(C * C), 1);
        dm dp = dm_vec(&t, FS_DT_I32, perm, C), dw = dm_new(&t, FS_DT_F32, W, R, C, C + 2, 1);
        dm o = dm_new(&t, FS_DT_F32, NULL, R, C, C, 0), back = dm_new(&t, FS_DT_F32, NULL, R, C, C + 3, 0);
        fs_permute_args fw = {dw.v, o.v, dp.v, 0, 0}, bw = {o.v, back.v, dp.v, 0, 1};
        OK(&t, fs_op_permute(&t.ctx, t.be, Q, &fw));
        OK(&t, fs_op_permute(&t.ctx, t.be, Q, &bw));
        float *x = malloc(4 * (size_t)(C * C));
        dm_get(&t, &o, x);
        for (int64_t i = 0; i < R; i++)
            for (int64_t k = 0; k < C; k++) ck_assert_float_eq(x[i * C + k], W[i * C + perm[k]]);
        dm_get(&t, &back, x);
        ck_assert_mem_eq(x, W, 4 * (size_t)(R * C));
        /* P^T H P, and the codes' way back as U8 */
        dm dh = dm_new(&t, FS_DT_F32, H, C, C, C, 0), ho = dm_new(&t, FS_DT_F32, NULL, C, C, C, 0);
        fs_permute_args sy = {dh.v, ho.v, dp.v, 1, 0};
        OK(&t, fs_op_permute(&t.ctx, t.be, Q, &sy));
        dm_get(&t, &ho, x);
        for (int64_t i = 0; i < C; i++)
            for (int64_t j = 0; j < C; j++) ck_assert_float_eq(x[i * C + j], H[perm[i] * C + perm[j]]);
        uint8_t cd[37 * 53], cb[37 * 53];
        for (int i = 0; i < R * C; i++) cd[i] = (uint8_t)(i * 13);
        dm dc = dm_new(&t, FS_DT_U8, cd, R, C, C, 0), dco = dm_new(&t, FS_DT_U8, NULL, R, C, C, 0);
        fs_permute_args cu = {dc.v, dco.v, dp.v, 0, 1};
        OK(&t, fs_op_permute(&t.ctx, t.be, Q, &cu));
        dm_get(&t, &dco, cb);
        for (int64_t i = 0; i < R; i++)
            for (int64_t k = 0; k < C; k++) ck_assert_uint_eq(cb[i * C + perm[k]], cd[i * C + k]);
        dm_free(&t, &dp); dm_free(&t, &dw); dm_free(&t, &o); dm_free(&t, &back); dm_free(&t, &dh); dm_free(&t, &ho);
        dm_free(&t, &dc); dm_free(&t, &dco);
        free(W); free(H); free(x);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- rmsnorm, rope, attention ---------------------------------------------------------------- */

START_TEST(op_rmsnorm)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {50};
        const int64_t n = 37, d = 53, heads = 3, hd = 11;
        float *X = randv(&r, (size_t)(n * d), 2), *w = randv(&r, (size_t)d, 1);
        dm dx = dm_new(&t, FS_DT_F32, X, n, d, d + 5, 2), dw = dm_vec(&t, FS_DT_F32, w, d);
        dm o = dm_new(&t, FS_DT_F32, NULL, n, d, d, 0);
        fs_rmsnorm_args a = {dx.v, dw.v, o.v, 1e-5f};
        OK(&t, fs_op_rmsnorm(&t.ctx, t.be, Q, &a));
        float *y = malloc(4 * (size_t)(n * d));
        dm_get(&t, &o, y);
        double *xd = malloc(8 * (size_t)(n * d)), *wd = malloc(8 * (size_t)d), *yd = malloc(8 * (size_t)(n * d));
        for (int64_t i = 0; i < n * d; i++) xd[i] = X[i];
        for (int64_t i = 0; i < d; i++) wd[i] = w[i];
        t_rmsnorm(xd, wd, n, d, 1e-5, yd);
        for (int64_t i = 0; i < n * d; i++) ck_assert(fabs(y[i] - yd[i]) <= NORM_REL * (fabs(yd[i]) + 1e-3));
        /* per head, in place: [n, heads * hd] as [n * heads, hd] */
        float *Xh = randv(&r, (size_t)(n * heads * hd), 1);
        dm dh = dm_new(&t, FS_DT_F32, Xh, n, heads * hd, heads * hd, 0), dwh = dm_vec(&t, FS_DT_F32, w, hd);
        fs_tensor v = fs_tensor_reshape(dh.v, n * heads, hd);
        fs_rmsnorm_args ha = {v, dwh.v, v, 1e-6f};
        OK(&t, fs_op_rmsnorm(&t.ctx, t.be, Q, &ha));
        float *yh = malloc(4 * (size_t)(n * heads * hd));
        dm_get(&t, &dh, yh);
        double *xh = malloc(8 * (size_t)(n * heads * hd)), *ydh = malloc(8 * (size_t)(n * heads * hd));
        for (int64_t i = 0; i < n * heads * hd; i++) xh[i] = Xh[i];
        t_rmsnorm(xh, wd, n * heads, hd, 1e-6, ydh);
        for (int64_t i = 0; i < n * heads * hd; i++) ck_assert(fabs(yh[i] - ydh[i]) <= NORM_REL * (fabs(ydh[i]) + 1e-3));
        dm_free(&t, &dx); dm_free(&t, &dw); dm_free(&t, &o); dm_free(&t, &dh); dm_free(&t, &dwh);
        free(X); free(w); free(y); free(xd); free(wd); free(yd); free(Xh); free(yh); free(xh); free(ydh);
        fs_backend_free(t.be);
    }
}
END_TEST

/* x's reference rope in double (ARCHITECTURES.md §2.3, §5.4). */
static void ref_rope(double *x, int64_t ld, int64_t n, int64_t heads, int64_t hs, int64_t c0, int64_t d, int il,
                     const float *inv, double af, int64_t T)
{
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < d / 2; i++) {
                double ang = (double)(t % T) * inv[i], c = cos(ang) * af, s = sin(ang) * af;
                double *v = x + t * ld + h * hs + c0;
                double *a = il ? v + 2 * i : v + i, *bb = il ? v + 2 * i + 1 : v + i + d / 2;
                double xa = *a, xb = *bb;
                *a = xa * c - xb * s;
                *bb = xb * c + xa * s;
            }
}

START_TEST(op_rope)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {51};
        const int64_t n = 27, T = 9, heads = 3;
        for (int il = 0; il <= 1; il++)
            for (int part = 0; part <= 1; part++) {
                /* whole head (hd 10) or DeepSeek's rope part (nope 5 + rope 6 of 11) */
                const int64_t hs = part ? 11 : 10, c0 = part ? 5 : 0, d = part ? 6 : 10, cols = heads * hs;
                float inv[5];
                for (int i = 0; i < d / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / (double)d) * (i == 2 ? 0.125f : 1.0f);
                const float af = part ? 1.25f : 1.0f;
                float *X = randv(&r, (size_t)(n * cols), 1);
                dm dx = dm_new(&t, FS_DT_F32, X, n, cols, cols + 2, 1), di = dm_vec(&t, FS_DT_F32, inv, d / 2);
                fs_rope_args a = {dx.v, di.v, heads, hs, c0, d, T, il, af};
                OK(&t, fs_op_rope(&t.ctx, t.be, Q, &a));
                float *y = malloc(4 * (size_t)(n * cols));
                dm_get(&t, &dx, y);
                double *ref = malloc(8 * (size_t)(n * cols));
                for (int64_t i = 0; i < n * cols; i++) ref[i] = X[i];
                ref_rope(ref, cols, n, heads, hs, c0, d, il, inv, af, T);
                for (int64_t i = 0; i < n * cols; i++) {
                    ck_assert_msg(fabs(y[i] - ref[i]) <= ROPE_ABS * 4, "il %d part %d: %lld: %g vs %g", il, part,
                                  (long long)i, y[i], ref[i]);
                    if ((i / cols) % T == 0 && af == 1.0f) ck_assert_float_eq(y[i], X[i]);   /* position 0 */
                }
                dm_free(&t, &dx); dm_free(&t, &di);
                free(X); free(y); free(ref);
            }
        fs_backend_free(t.be);
    }
}
END_TEST

static void ref_attention(const fs_attn_args *a, const float *q, int64_t ldq, const float *k, int64_t ldk,
                          const float *v, int64_t ldv, double *out, int64_t ldo)
{
    const int64_t T = a->T, rep = a->nh / a->nkv;
    double *p = malloc(8 * (size_t)T);
    for (int64_t s = 0; s < a->nseq; s++)
        for (int64_t h = 0; h < a->nh; h++)
            for (int64_t i = 0; i < T; i++) {
                const int64_t kh = h / rep;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < T; j++) {
                    int ok = j <= i && (a->window == 0 || j > i - a->window);
                    if (!ok) { p[j] = -INFINITY; continue; }
                    double d = 0;
                    for (int64_t c = 0; c < a->dqk; c++)
                        d += (double)q[(s * T + i) * ldq + h * a->q_hs + c] * k[(s * T + j) * ldk + kh * a->k_hs + c];
                    p[j] = d * a->scale;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < T; j++) { p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - mx); sum += p[j]; }
                for (int64_t c = 0; c < a->dv; c++) {
                    double o = 0;
                    for (int64_t j = 0; j < T; j++) o += p[j] / sum * v[(s * T + j) * ldv + kh * a->v_hs + c];
                    out[(s * T + i) * ldo + h * a->o_hs + c] = o;
                }
            }
    free(p);
}

START_TEST(op_attention)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {52};
        /* GQA 4 heads on 2 kv heads, qk dim 7, v dim 5, head strides wider than
         * the dims, 2 sequences of 9 tokens, window 0 and 3 */
        const int64_t nseq = 2, T = 9, n = nseq * T, nh = 4, nkv = 2, dqk = 7, dv = 5;
        const int64_t qc = nh * 8, kc = nkv * 9, vc = nkv * 6, oc = nh * 6;
        float *Qh = randv(&r, (size_t)(n * qc), 1), *Kh = randv(&r, (size_t)(n * kc), 1), *Vh = randv(&r, (size_t)(n * vc), 1);
        dm dq = dm_new(&t, FS_DT_F32, Qh, n, qc, qc + 1, 0), dk = dm_new(&t, FS_DT_F32, Kh, n, kc, kc, 2);
        dm dv_ = dm_new(&t, FS_DT_F32, Vh, n, vc, vc + 3, 0);
        for (int wi = 0; wi <= 1; wi++) {
            dm o = dm_new(&t, FS_DT_F32, NULL, n, oc, oc, 0);
            OK(&t, fs_op_fill(&t.ctx, t.be, Q, o.v, 0.0));   /* the head gaps stay 0 */
            fs_attn_args a = {dq.v, dk.v, dv_.v, o.v, nseq, T, nh, nkv, dqk, dv, 8, 9, 6, 6, 0.37f, wi ? 3 : 0};
            OK(&t, fs_op_attention(&t.ctx, t.be, Q, &a));
            float *y = malloc(4 * (size_t)(n * oc));
            double *ref = calloc((size_t)(n * oc), 8);
            dm_get(&t, &o, y);
            ref_attention(&a, Qh, qc, Kh, kc, Vh, vc, ref, oc);
            for (int64_t i = 0; i < n * oc; i++)
                ck_assert_msg(fabs(y[i] - ref[i]) <= SOFTMAX_REL * 4, "window %d: %lld: %g vs %g", wi ? 3 : 0,
                              (long long)i, y[i], ref[i]);
            dm_free(&t, &o);
            free(y); free(ref);
        }
        dm_free(&t, &dq); dm_free(&t, &dk); dm_free(&t, &dv_);
        free(Qh); free(Kh); free(Vh);
        fs_backend_free(t.be);
    }
}
END_TEST

/* fs_op_attention_libm: the same semantics (and reference) with libm's expf
 * and one running sum; on odd shapes (qk 7, v 5, 9 tokens) and a window. */
START_TEST(op_attention_libm)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {53};
        const int64_t nseq = 2, T = 9, n = nseq * T, nh = 4, nkv = 2, dqk = 7, dv = 5;
        const int64_t qc = nh * 8, kc = nkv * 9, vc = nkv * 6, oc = nh * 6;
        float *Qh = randv(&r, (size_t)(n * qc), 1), *Kh = randv(&r, (size_t)(n * kc), 1), *Vh = randv(&r, (size_t)(n * vc), 1);
        dm dq = dm_new(&t, FS_DT_F32, Qh, n, qc, qc + 1, 0), dk = dm_new(&t, FS_DT_F32, Kh, n, kc, kc, 2);
        dm dv_ = dm_new(&t, FS_DT_F32, Vh, n, vc, vc + 3, 0);
        for (int wi = 0; wi <= 1; wi++) {
            dm o = dm_new(&t, FS_DT_F32, NULL, n, oc, oc, 0);
            OK(&t, fs_op_fill(&t.ctx, t.be, Q, o.v, 0.0));
            fs_attn_args a = {dq.v, dk.v, dv_.v, o.v, nseq, T, nh, nkv, dqk, dv, 8, 9, 6, 6, 0.37f, wi ? 3 : 0};
            OK(&t, fs_op_attention_libm(&t.ctx, t.be, Q, &a));
            float *y = malloc(4 * (size_t)(n * oc));
            double *ref = calloc((size_t)(n * oc), 8);
            dm_get(&t, &o, y);
            ref_attention(&a, Qh, qc, Kh, kc, Vh, vc, ref, oc);
            for (int64_t i = 0; i < n * oc; i++)
                ck_assert_msg(fabs(y[i] - ref[i]) <= SOFTMAX_REL * 4, "window %d: %lld: %g vs %g", wi ? 3 : 0,
                              (long long)i, y[i], ref[i]);
            dm_free(&t, &o);
            free(y); free(ref);
        }
        /* its usage errors are fs_op_attention's, named after it */
        fs_attn_args bad = {dq.v, dk.v, dv_.v, dq.v, nseq, T, 3, nkv, dqk, dv, 8, 9, 6, 6, 0.37f, 0};
        ck_assert_int_eq(fs_op_attention_libm(&t.ctx, t.be, Q, &bad), FS_ERR_USAGE);
        ck_assert_msg(strstr(t.ctx.errmsg, "fs_op_attention_libm"), "%s", t.ctx.errmsg);
        dm_free(&t, &dq); dm_free(&t, &dk); dm_free(&t, &dv_);
        free(Qh); free(Kh); free(Vh);
        fs_backend_free(t.be);
    }
}
END_TEST

/* fs_op_gate_add: y += sigmoid(x . g) * src per row, against double, at 37
 * rows of 53 (y strided at an offset) with a gate of 29 columns. */
#define GATE_ABS 2e-6       /* an f32 dot of 29 terms of |.| <= ~3, expf, one product and one sum */
START_TEST(op_gate_add)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {54};
        const int64_t n = 37, c = 53, d = 29;
        float *Y = randv(&r, (size_t)(n * c), 1), *S = randv(&r, (size_t)(n * c), 1);
        float *X = randv(&r, (size_t)(n * d), 1), *G = randv(&r, (size_t)d, 0.3f);
        dm dy = dm_new(&t, FS_DT_F32, Y, n, c, c + 5, 3), ds = dm_new(&t, FS_DT_F32, S, n, c, c, 0);
        dm dx = dm_new(&t, FS_DT_F32, X, n, d, d + 1, 1), dg = dm_vec(&t, FS_DT_F32, G, d);
        fs_gate_add_args a = {dy.v, ds.v, dx.v, dg.v};
        OK(&t, fs_op_gate_add(&t.ctx, t.be, Q, &a));
        float *out = malloc(4 * (size_t)(n * c));
        dm_get(&t, &dy, out);
        for (int64_t i = 0; i < n; i++) {
            double z = 0;
            for (int64_t k = 0; k < d; k++) z += (double)X[i * d + k] * G[k];
            const double sg = 1.0 / (1.0 + exp(-z));
            for (int64_t j = 0; j < c; j++) {
                const double want = Y[i * c + j] + sg * S[i * c + j];
                ck_assert_msg(fabs(out[i * c + j] - want) <= GATE_ABS * (1 + fabs(S[i * c + j])), "%lld,%lld: %g vs %g",
                              (long long)i, (long long)j, out[i * c + j], want);
            }
        }
        dm dg2 = dm_vec(&t, FS_DT_F32, G, d - 1);              /* a gate of the wrong width */
        fs_gate_add_args bad = {dy.v, ds.v, dx.v, dg2.v};
        ck_assert_int_eq(fs_op_gate_add(&t.ctx, t.be, Q, &bad), FS_ERR_USAGE);
        ck_assert_msg(strstr(t.ctx.errmsg, "fs_op_gate_add"), "%s", t.ctx.errmsg);
        dm_free(&t, &dg2);
        dm_free(&t, &dy); dm_free(&t, &ds); dm_free(&t, &dx); dm_free(&t, &dg);
        free(Y); free(S); free(X); free(G); free(out);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- routers, lists, gather, scatter ----------------------------------------------------------- */

/* The reference router in double (ARCHITECTURES.md §4.3, §5.5). */
static void ref_route(const fs_route_cfg *c, const float *lg, const float *bias, int32_t *idx, double *wt)
{
    const int64_t E = c->E, G = c->n_group, per = E / G;
    double s[64], sel[64], gs[16];
    int keep[16];
    if (c->kind == FS_ROUTE_DS_SIGMOID) {
        for (int64_t e = 0; e < E; e++) { s[e] = 1.0 / (1.0 + exp(-(double)lg[e])); sel[e] = s[e] + (bias ? bias[e] : 0); }
    } else {
        double mx = -INFINITY, sum = 0;
        for (int64_t e = 0; e < E; e++) mx = fmax(mx, lg[e]);
        for (int64_t e = 0; e < E; e++) { s[e] = exp(lg[e] - mx); sum += s[e]; }
        for (int64_t e = 0; e < E; e++) { s[e] /= sum; sel[e] = s[e]; }
    }
    for (int64_t g = 0; g < G; g++) {
        double a = -INFINITY, bb = -INFINITY;
        for (int64_t e = g * per; e < (g + 1) * per; e++) {
            if (sel[e] > a) { bb = a; a = sel[e]; } else if (sel[e] > bb) bb = sel[e];
        }
        gs[g] = c->group_max || per < 2 ? a : a + bb;
        keep[g] = G == 1;
    }
    for (int64_t k = 0; G > 1 && k < c->topk_group; k++) {
        int64_t best = -1;
        for (int64_t g = 0; g < G; g++) if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
        keep[best] = 1;
    }
    double tot = 0;
    for (int64_t k = 0; k < c->topk; k++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t j = 0; j < k; j++) taken |= idx[j] == e;
            if (keep[e / per] && !taken && (best < 0 || sel[e] > sel[best])) best = e;
        }
        idx[k] = (int32_t)best;
        wt[k] = s[best];
        tot += s[best];
    }
    for (int64_t k = 0; k < c->topk; k++) {
        if (c->kind == FS_ROUTE_SOFTMAX && c->norm_topk) wt[k] /= tot;
        if (c->kind == FS_ROUTE_DS_SIGMOID && c->norm_topk) wt[k] /= tot + 1e-20;
        if (c->kind != FS_ROUTE_SOFTMAX) wt[k] *= c->rsf;
    }
}

static void route_case(tb *t, t_rng *r, fs_route_cfg c, int with_bias)
{
    const int64_t n = 37, E = c.E, K = c.topk;
    float *L = randv(r, (size_t)(n * E), 2), *bias = randv(r, (size_t)E, 0.3f);
    dm dl = dm_new(t, FS_DT_F32, L, n, E, E + 1, 3), db = dm_vec(t, FS_DT_F32, bias, E);
    dm di = dm_new(t, FS_DT_I32, NULL, n, K, K + 1, 0), dw = dm_new(t, FS_DT_F32, NULL, n, K, K, 0);
    fs_route_args a = {dl.v, with_bias ? db.v : fs_tensor_none(), di.v, dw.v, c};
    OK(t, fs_op_route(&t->ctx, t->be, Q, &a));
    int32_t *idx = malloc(4 * (size_t)(n * K));
    float *wt = malloc(4 * (size_t)(n * K));
    dm_get(t, &di, idx);
    dm_get(t, &dw, wt);
    for (int64_t i = 0; i < n; i++) {
        int32_t ri[16];
        double rw[16];
        ref_route(&c, L + i * E, with_bias ? bias : NULL, ri, rw);
        for (int64_t k = 0; k < K; k++) {
            ck_assert_msg(idx[i * K + k] == ri[k], "kind %d token %lld choice %lld: %d vs %d", c.kind, (long long)i,
                          (long long)k, idx[i * K + k], ri[k]);
            ck_assert(fabs(wt[i * K + k] - rw[k]) <= ROUTE_REL * fabs(rw[k]) + 1e-12);
        }
    }
    dm_free(t, &dl); dm_free(t, &db); dm_free(t, &di); dm_free(t, &dw);
    free(L); free(bias); free(idx); free(wt);
}

START_TEST(op_route)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {53};
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_SOFTMAX, 8, 2, 1, 1, 1, 0, 1.0f}, 0);      /* mixtral */
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_SOFTMAX, 13, 4, 0, 1, 1, 0, 1.0f}, 0);     /* qwen, no renorm */
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_DS_SOFTMAX, 12, 3, 0, 1, 1, 0, 1.0f}, 0);  /* v2 greedy */
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_DS_SOFTMAX, 16, 4, 0, 4, 2, 1, 16.0f}, 0); /* v2 group max */
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_DS_SIGMOID, 16, 4, 1, 4, 2, 0, 2.5f}, 1);  /* v3 */
        route_case(&t, &r, (fs_route_cfg){FS_ROUTE_DS_SIGMOID, 9, 3, 1, 1, 1, 0, 2.827f}, 1); /* kimi: 1 group */

        /* hand-worked ties: equal logits pick the lower indices; v3's groups: the
         * bias lifts expert 5's group above the others */
        float tie[2 * 4] = {1, 1, 1, 1, 0, 2, 2, 0};
        dm dl = dm_new(&t, FS_DT_F32, tie, 2, 4, 4, 0), di = dm_new(&t, FS_DT_I32, NULL, 2, 2, 2, 0);
        dm dw = dm_new(&t, FS_DT_F32, NULL, 2, 2, 2, 0);
        fs_route_args a = {dl.v, fs_tensor_none(), di.v, dw.v, {FS_ROUTE_SOFTMAX, 4, 2, 1, 1, 1, 0, 1.0f}};
        OK(&t, fs_op_route(&t.ctx, t.be, Q, &a));
        int32_t idx[4];
        float wt[4];
        dm_get(&t, &di, idx);
        dm_get(&t, &dw, wt);
        ck_assert(idx[0] == 0 && idx[1] == 1 && idx[2] == 1 && idx[3] == 2);
        ck_assert(wt[0] == 0.5f && wt[1] == 0.5f && wt[2] == 0.5f);
        float lg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, bias[8] = {0.3f, 0.2f, 0, 0, 0, 0.9f, 0, 0};
        dm l8 = dm_vec(&t, FS_DT_F32, lg, 8), b8 = dm_vec(&t, FS_DT_F32, bias, 8);
        dm i8 = dm_new(&t, FS_DT_I32, NULL, 1, 2, 2, 0), w8 = dm_new(&t, FS_DT_F32, NULL, 1, 2, 2, 0);
        /* 4 groups of 2: sums 0.5, 0, 0.9, 0; one group kept: {4, 5}; picks 5 then 4 */
        fs_route_args v3 = {fs_tensor_2d(l8.buf, 0, FS_DT_F32, 1, 8), fs_tensor_2d(b8.buf, 0, FS_DT_F32, 1, 8), i8.v, w8.v,
                            {FS_ROUTE_DS_SIGMOID, 8, 2, 1, 4, 1, 0, 2.0f}};
        OK(&t, fs_op_route(&t.ctx, t.be, Q, &v3));
        dm_get(&t, &i8, idx);
        dm_get(&t, &w8, wt);
        ck_assert(idx[0] == 5 && idx[1] == 4);
        ck_assert_float_eq_tol(wt[0], 1.0f, 1e-6f);   /* sigmoid(0) = 0.5 each, normalised to 0.5, times 2 */
        ck_assert_float_eq_tol(wt[1], 1.0f, 1e-6f);
        dm_free(&t, &dl); dm_free(&t, &di); dm_free(&t, &dw); dm_free(&t, &l8); dm_free(&t, &b8);
        dm_free(&t, &i8); dm_free(&t, &w8);
        fs_backend_free(t.be);
    }
}
END_TEST

START_TEST(op_lists_gather_scatter)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {54};
        const int64_t n = 37, K = 3, E = 6, c = 53;
        int32_t idx[37 * 3];
        float wt[37 * 3];
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < K; k++) { idx[i * K + k] = (int32_t)((i * (k + 2) + k) % (E - 1)); wt[i * K + k] = t_unif(&r); }
        for (int64_t i = 0; i < n; i++)                 /* distinct experts per token, expert 5 never */
            if (idx[i * K + 1] == idx[i * K]) idx[i * K + 1] = (idx[i * K] + 1) % (E - 1);
        for (int64_t i = 0; i < n; i++)
            while (idx[i * K + 2] == idx[i * K] || idx[i * K + 2] == idx[i * K + 1]) idx[i * K + 2] = (idx[i * K + 2] + 1) % (E - 1);
        dm di = dm_new(&t, FS_DT_I32, idx, n, K, K, 0), dw = dm_new(&t, FS_DT_F32, wt, n, K, K + 2, 1);
        dm offs = dm_new(&t, FS_DT_I32, NULL, 1, E + 1, E + 1, 0), rows = dm_new(&t, FS_DT_I32, NULL, 1, n * K, n * K, 0);
        dm rw = dm_new(&t, FS_DT_F32, NULL, 1, n * K, n * K, 0);
        fs_lists_args la = {di.v, dw.v, offs.v, rows.v, rw.v, E};
        OK(&t, fs_op_route_lists(&t.ctx, t.be, Q, &la));
        int32_t of[7], ro[111];
        float rwo[111];
        dm_get(&t, &offs, of);
        dm_get(&t, &rows, ro);
        dm_get(&t, &rw, rwo);
        int64_t p = 0;
        for (int64_t e = 0; e < E; e++) {                /* by expert, tokens ascending */
            ck_assert_int_eq(of[e], p);
            for (int64_t i = 0; i < n; i++)
                for (int64_t k = 0; k < K; k++)
                    if (idx[i * K + k] == e) { ck_assert_int_eq(ro[p], i); ck_assert_float_eq(rwo[p], wt[i * K + k]); p++; }
        }
        ck_assert_int_eq(of[E], n * K);
        ck_assert_int_eq(of[E - 1], of[E]);              /* expert 5: no rows */

        /* gather expert 2's rows, scale them, scatter-add them back with weights */
        float *X = randv(&r, (size_t)(n * c), 1), *Y0 = randv(&r, (size_t)(n * c), 1);
        const int64_t m = of[3] - of[2];
        dm dx = dm_new(&t, FS_DT_F32, X, n, c, c + 1, 0), dg = dm_new(&t, FS_DT_F32, NULL, m, c, c + 4, 2);
        fs_tensor rows2 = fs_tensor_cols(rows.v, of[2], m), w2 = fs_tensor_cols(rw.v, of[2], m);
        OK(&t, fs_op_gather(&t.ctx, t.be, Q, dg.v, dx.v, rows2));
        float *g = malloc(4 * (size_t)(m * c));
        dm_get(&t, &dg, g);
        for (int64_t i = 0; i < m; i++) ck_assert_mem_eq(g + i * c, X + ro[of[2] + i] * c, 4 * (size_t)c);
        dm dy = dm_new(&t, FS_DT_F32, Y0, n, c, c, 0);
        fs_scatter_args sa = {dy.v, dg.v, rows2, w2};
        OK(&t, fs_op_scatter_add(&t.ctx, t.be, Q, &sa));
        /* and every routed row at once (rows repeat): sums in list order */
        dm dall = dm_new(&t, FS_DT_F32, NULL, n * K, c, c, 0);
        OK(&t, fs_op_gather(&t.ctx, t.be, Q, dall.v, dx.v, rows.v));
        fs_scatter_args sb = {dy.v, dall.v, rows.v, rw.v};
        OK(&t, fs_op_scatter_add(&t.ctx, t.be, Q, &sb));
        float *y = malloc(4 * (size_t)(n * c)), *ref = malloc(4 * (size_t)(n * c));
        dm_get(&t, &dy, y);
        memcpy(ref, Y0, 4 * (size_t)(n * c));
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < c; j++) ref[ro[of[2] + i] * c + j] += rwo[of[2] + i] * X[ro[of[2] + i] * c + j];
        for (int64_t i = 0; i < n * K; i++)
            for (int64_t j = 0; j < c; j++) ref[ro[i] * c + j] += rwo[i] * X[ro[i] * c + j];
        ck_assert_mem_eq(y, ref, 4 * (size_t)(n * c));   /* the stated order, bit for bit */
        dm_free(&t, &di); dm_free(&t, &dw); dm_free(&t, &offs); dm_free(&t, &rows); dm_free(&t, &rw);
        dm_free(&t, &dx); dm_free(&t, &dg); dm_free(&t, &dy); dm_free(&t, &dall);
        free(X); free(Y0); free(g); free(y); free(ref);
        fs_backend_free(t.be);
    }
}
END_TEST

/* ---- losses, packing ------------------------------------------------------------------------- */

START_TEST(op_loss)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {55};
        const int R = 300, C = 53;
        float *W = randv(&r, (size_t)R * C, 1), *D = malloc(4 * (size_t)R * C), *H = malloc(4 * (size_t)C * C);
        for (int i = 0; i < R * C; i++) D[i] = W[i] + t_gauss(&r) * 0.01f;
        spd(&r, C, H);
        double *H64 = malloc(8 * (size_t)C * C);
        for (int i = 0; i < C * C; i++) H64[i] = (double)H[i] * (1.0 + 1e-3);   /* distinguishable from H */
        dm dw = dm_new(&t, FS_DT_F32, W, R, C, C + 2, 0), dd = dm_new(&t, FS_DT_F32, D, R, C, C, 1);
        dm dh = dm_new(&t, FS_DT_F32, H, C, C, C + 1, 0), dh64 = dm_new(&t, FS_DT_F64, H64, C, C, C, 0);
        dm out = dm_new(&t, FS_DT_F64, NULL, 1, 1, 1, 0);
        const double exact = t_loss(W, D, H, R, C);
        double got;
        fs_loss_args a = {dw.v, dd.v, dh.v, out.v, FS_LOSS_EXACT};
        OK(&t, fs_op_loss(&t.ctx, t.be, Q, &a));
        dm_get(&t, &out, &got);
        ck_assert_msg(fabs(got - exact) <= LOSS_EXACT_REL * exact, "exact %.17g vs %.17g", got, exact);
        a.H = dh64.v;
        OK(&t, fs_op_loss(&t.ctx, t.be, Q, &a));
        dm_get(&t, &out, &got);
        ck_assert(fabs(got - exact * (1.0 + 1e-3)) <= 1e-9 * exact);
        a.H = dh.v;
        a.mode = FS_LOSS_F32;
        OK(&t, fs_op_loss(&t.ctx, t.be, Q, &a));
        dm_get(&t, &out, &got);
        ck_assert(fabs(got - exact) <= LOSS_F32_REL * exact);
        /* the estimate: rows i * R / 128, scaled by R / 128 */
        a.mode = FS_LOSS_EST;
        OK(&t, fs_op_loss(&t.ctx, t.be, Q, &a));
        dm_get(&t, &out, &got);
        float *Ws = malloc(4 * 128 * (size_t)C), *Ds = malloc(4 * 128 * (size_t)C);
        for (int i = 0; i < 128; i++) {
            memcpy(Ws + i * C, W + (i * R / 128) * C, 4 * (size_t)C);
            memcpy(Ds + i * C, D + (i * R / 128) * C, 4 * (size_t)C);
        }
        double est = t_loss(Ws, Ds, H, 128, C) * R / 128.0;
        ck_assert(fabs(got - est) <= LOSS_F32_REL * est);
        /* no D: trace(W H W^T) */
        fs_loss_args nd = {dw.v, fs_tensor_none(), dh.v, out.v, FS_LOSS_EXACT};
        OK(&t, fs_op_loss(&t.ctx, t.be, Q, &nd));
        dm_get(&t, &out, &got);
        float *Z = calloc((size_t)R * C, 4);
        double wn = t_loss(W, Z, H, R, C);
        ck_assert(fabs(got - wn) <= LOSS_EXACT_REL * wn);
        dm_free(&t, &dw); dm_free(&t, &dd); dm_free(&t, &dh); dm_free(&t, &dh64); dm_free(&t, &out);
        free(W); free(D); free(H); free(H64); free(Ws); free(Ds); free(Z);
        fs_backend_free(t.be);
    }
}
END_TEST

/* Field k of `bits` bits of a little-endian stream of units (8 or 32 bits),
 * unit i at base + i * stride units: the test's own reader. */
static uint32_t field(const void *base, int unit, int64_t stride, int64_t k, int bits)
{
    uint32_t v = 0;
    for (int i = 0; i < bits; i++) {
        int64_t bit = k * bits + i, u = bit / unit;
        uint32_t w = unit == 8 ? ((const uint8_t *)base)[u * stride] : ((const uint32_t *)base)[u * stride];
        v |= ((w >> (bit % unit)) & 1u) << i;
    }
    return v;
}

START_TEST(op_pack)
{
    for (int b = 0; b < NKINDS; b++) {
        tb t;
        tb_open(&t, KIND[b]);
        t_rng r = {56};
        const int64_t out = 37, in = 53, ng = 2;
        const int bitsv[4] = {2, 3, 4, 8};
        for (int bi = 0; bi < 4; bi++) {
            const int bits = bitsv[bi];
            uint8_t codes[37 * 53];
            for (int i = 0; i < out * in; i++) codes[i] = (uint8_t)(t_next(&r) & ((1u << bits) - 1));
            const int64_t rb = (in * bits + 7) / 8, qr = (in * bits + 31) / 32, zc = (out * bits + 31) / 32;
            dm dc = dm_new(&t, FS_DT_U8, codes, out, in, in, 0), df = dm_new(&t, FS_DT_U8, NULL, out, rb, rb, 0);
            dm dq = dm_new(&t, FS_DT_I32, NULL, qr, out, out, 0);
            fs_pack_args fa = {FS_PACK_FORGE, bits, dc.v, df.v, fs_tensor_none(), fs_tensor_none()};
            fs_pack_args qa = {FS_PACK_GPTQ_QWEIGHT, bits, dc.v, dq.v, fs_tensor_none(), fs_tensor_none()};
            OK(&t, fs_op_pack(&t.ctx, t.be, Q, &fa));
            OK(&t, fs_op_pack(&t.ctx, t.be, Q, &qa));
            uint8_t *fo = malloc((size_t)(out * rb));
            uint32_t *qo = malloc(4 * (size_t)(qr * out));
            dm_get(&t, &df, fo);
            dm_get(&t, &dq, qo);
            for (int64_t o = 0; o < out; o++) {
                for (int64_t k = 0; k < in; k++) {
                    ck_assert_uint_eq(field(fo + o * rb, 8, 1, k, bits), codes[o * in + k]);
                    ck_assert_uint_eq(field(qo + o, 32, out, k, bits), codes[o * in + k]);
                }
                for (int64_t bit = in * bits; bit < rb * 8; bit++) ck_assert_uint_eq((fo[o * rb + bit / 8] >> (bit % 8)) & 1, 0);
            }
            /* qmeta -> qzeros (zero - 1) and F16 scales */
            uint8_t qm[37 * 2 * 4];
            for (int i = 0; i < out * ng; i++) {
                int16_t code = (int16_t)(-600 + (int)(t_next(&r) % 500));
                qm[4 * i] = (uint8_t)(code & 0xFF);
                qm[4 * i + 1] = (uint8_t)((uint16_t)code >> 8);
                qm[4 * i + 2] = (uint8_t)(1 + t_next(&r) % ((1u << bits) - 1));
                qm[4 * i + 3] = 0;
            }
            dm dm_ = dm_new(&t, FS_DT_U8, qm, out, ng * 4, ng * 4, 0), dz = dm_new(&t, FS_DT_I32, NULL, ng, zc, zc, 0);
            dm ds = dm_new(&t, FS_DT_F16, NULL, ng, out, out, 0), st = dm_new(&t, FS_DT_I64, NULL, 1, 1, 1, 0);
            fs_pack_args ma = {FS_PACK_GPTQ_META, bits, dm_.v, dz.v, ds.v, st.v};
            OK(&t, fs_op_pack(&t.ctx, t.be, Q, &ma));
            uint32_t *zo = malloc(4 * (size_t)(ng * zc));
            uint16_t *so = malloc(2 * (size_t)(ng * out));
            dm_get(&t, &dz, zo);
            dm_get(&t, &ds, so);
            ck_assert_int_eq(i64_of(&t, &st), 0);
            for (int64_t o = 0; o < out; o++)
                for (int64_t g = 0; g < ng; g++) {
                    const uint8_t *e = qm + (o * ng + g) * 4;
                    ck_assert_uint_eq(field(zo + g * zc, 32, 1, o, bits), e[2] - 1u);
                    /* the F16 of 2^(code/256): a float16 has 10 mantissa bits */
                    double sc = exp2((int16_t)(uint16_t)(e[0] | e[1] << 8) / 256.0);
                    ck_assert_msg(fabs(ref_f16(so[g * out + o]) - sc) <= sc * 0x1p-11 * 1.0001, "scale %g vs %g",
                                  ref_f16(so[g * out + o]), sc);
                }
            qm[(5 * ng + 1) * 4 + 2] = 0;                 /* a zero point v1 cannot store */
            qm[(9 * ng + 0) * 4 + 2] = 0;
            dm dm2 = dm_new(&t, FS_DT_U8, qm, out, ng * 4, ng * 4, 0);
            fs_pack_args mb = {FS_PACK_GPTQ_META, bits, dm2.v, dz.v, ds.v, st.v};
            OK(&t, fs_op_pack(&t.ctx, t.be, Q, &mb));
            ck_assert_int_eq(i64_of(&t, &st), 5 * ng + 1 + 1);
            dm_free(&t, &dc); dm_free(&t, &df); dm_free(&t, &dq); dm_free(&t, &dm_); dm_free(&t, &dz);
            dm_free(&t, &ds); dm_free(&t, &st); dm_free(&t, &dm2);
            free(fo); free(qo); free(zo); free(so);
        }
        fs_backend_free(t.be);
    }
}
END_TEST

Suite *fs_suite_ops(void)
{
    Suite *s = suite_create("ops");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"fill", op_fill}, {"gemm", op_gemm}, {"bias_add_and_add", op_bias_add_and_add}, {"copy", op_copy},
        {"swiglu", op_swiglu}, {"hessian", op_hessian}, {"damp", op_damp}, {"cholinv", op_cholinv},
        {"grid_rtn", op_grid_rtn}, {"gptq", op_gptq}, {"decode", op_decode}, {"permute", op_permute},
        {"rmsnorm", op_rmsnorm}, {"rope", op_rope}, {"attention", op_attention}, {"attention_libm", op_attention_libm},
        {"gate_add", op_gate_add}, {"route", op_route},
        {"lists_gather_scatter", op_lists_gather_scatter}, {"loss", op_loss}, {"pack", op_pack},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}
