/* quant.h: the quantization engine's types and entry points: options and the
 * group rule, qmeta4, grids, the GPTQ solver job and the layer driver, the
 * losses.  Matrices are row-major float32 unless said otherwise; a linear
 * layer's weight W is [out, in], its Hessian H = X^T X is [in, in], and
 * quantization groups run along the input dimension of each row. */
#ifndef FS_QUANT_H
#define FS_QUANT_H

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- quantization options ------------------------------------------------ */

/* HMSE: the MSE shrink search with each column's error weighted by its
 * Hessian weight (fs_quant_opts.hmse_weight), L2 only. */
typedef enum fs_grid_kind { FS_GRID_ABSMAX = 0, FS_GRID_MSE = 1, FS_GRID_HMSE = 2 } fs_grid_kind;

/* The column weights of the HMSE grid: OBS, 1 / [H_F^-1]_jj (GPTQ's own
 * weight of column j when it is quantized, the inverse factor's diagonal
 * squared), or diag(H). */
typedef enum fs_hmse_weight { FS_HMSE_OBS = 0, FS_HMSE_DIAG = 1 } fs_hmse_weight;

typedef struct fs_quant_opts {
    int bits;              /* 2, 3, 4 or 8 */
    int sym;               /* 1 = symmetric grid (zero fixed at 2^(bits-1)) */
    int64_t group_size;    /* multiple of 32, or -1 for one group per row */
    fs_grid_kind grid;     /* range (absmax) or MSE / L^p search */
    float shrink;          /* MSE: smallest candidate factor, in (0, 1] */
    int grid_n;            /* MSE: number of candidates, >= 1 */
    float norm;            /* MSE: exponent of the error, > 0 (2 = L2 path) */
    int act_order;         /* process columns by descending diag(H) */
    int static_groups;     /* group parameters from the original weights */
    int block;             /* GPTQ lazy-batch block width, >= 1 */
    double damp;           /* relative damping, added as damp*mean(diag H) */
    int rtn;               /* round to nearest only (no GPTQ) */
    int gptq_v1;           /* grids for the gptq format: F16 scales, asym zero >= 1 */
    int loss_f32;          /* losses for logs only (the quantize pipeline): estimated by
                              fs_quad_loss_est instead of exact in f64 */
    int refine_scales;     /* rounds of least-squares scale refinement after the solve
                              (0 = off); rounds after the first re-run GPTQ on the refined
                              grids first */
    fs_hmse_weight hmse_weight;   /* HMSE grid: which column weights */
    int preset_best;       /* --preset best was given (for the log; its options are set) */
} fs_quant_opts;

void fs_quant_opts_default(fs_quant_opts *q);
/* --preset best: the options make bench-quality showed to pay (README). */
#define FS_PRESET_BEST_FLAGS "--grid hmse --refine-scales 3"
void fs_quant_preset_best(fs_quant_opts *q);
/* "absmax", "mse" or "hmse". */
const char *fs_grid_name(fs_grid_kind k);
/* FS_ERR_USAGE naming the flag if an option is out of range. */
fs_status fs_quant_opts_check(fs_ctx *ctx, const fs_quant_opts *q);
/* Groups per row for `in` columns: ceil(in / G), 1 for G = -1 or G >= in. */
int64_t fs_ngroups(int64_t in, int64_t group_size);
/* The effective group width (in for G = -1 or G >= in). */
int64_t fs_group_width(int64_t in, int64_t group_size);

/* ---- qmeta4 ------------------------------------------------------------ */

/* One group's metadata as stored: 4 bytes, int16 LE log2(scale) in Q8.8, u8
 * zero, u8 flags (bit0 = symmetric). */
#define FS_QMETA_SYM 0x01

int16_t fs_q88_encode(float scale);     /* clamp(rint(log2(max(s,1e-20))*256)) */
float fs_q88_decode(int16_t code);      /* 2^(code/256) rounded to float */
void fs_qmeta_pack(uint8_t out[4], int16_t code, uint8_t zero, uint8_t flags);
void fs_qmeta_unpack(const uint8_t in[4], float *scale, float *zero);

/* ---- grids (CPU reference) ---------------------------------------------- */

/* Everything a grid search needs, built once per layer. */
typedef struct fs_grid_params {
    int bits, sym, mse;
    int gptq_v1;        /* scale used = F16(Q8.8 scale); asymmetric zero >= 1 */
    float maxq;
    float norm;
    int n;              /* candidates */
    float *p;           /* [n] shrink factors, owned */
    int hmse;           /* weighted L2 search (weights passed per group) */
    const float *colw;  /* HMSE: column weights of the matrix fs_grid_matrix and the
                           grid op see (NULL: unweighted); not owned */
} fs_grid_params;

fs_status fs_grid_params_init(fs_ctx *ctx, fs_grid_params *gp, const fs_quant_opts *q);
void fs_grid_params_free(fs_grid_params *gp);
/* Grid of one group x[n] (n >= 1): writes the 4 qmeta bytes and returns the
 * decoded scale and zero that quantization must use. Cannot fail. */
void fs_grid_group(const fs_grid_params *gp, const float *x, int64_t n,
                   uint8_t qmeta[4], float *scale, float *zero);
/* The same with column weights w[n] for the HMSE search (NULL: unweighted). */
void fs_grid_group_w(const fs_grid_params *gp, const float *x, const float *w, int64_t n,
                     uint8_t qmeta[4], float *scale, float *zero);
/* Grids of every row and group of W [rows, cols] with group width gw:
 * qmeta [rows, ceil(cols/gw), 4]. Cannot fail. */
void fs_grid_matrix(const fs_grid_params *gp, const float *W, int64_t rows,
                    int64_t cols, int64_t gw, uint8_t *qmeta);

/* The scale and zero that quantization uses for a stored qmeta entry: the
 * Q8.8 scale, rounded to F16 in gptq_v1 mode. Cannot fail. */
void fs_grid_unpack(const fs_grid_params *gp, const uint8_t qmeta[4], float *scale, float *zero);

/* q = clamp(rint(x/s + z), 0, maxq) */
float fs_quant1(float x, float s, float z, float maxq);

/* ---- the solver (backend-neutral description) ---------------------------- */

typedef struct fs_gptq_job {
    int64_t rows, cols;     /* out, in */
    float *W;               /* [rows, cols] in processing order; on return the dequant */
    const float *U;         /* [cols, cols] upper Cholesky factor of H^-1, processing order */
    uint8_t *codes;         /* [rows, cols] out: codes in processing order */
    uint8_t *qmeta;         /* [rows, ngroups, 4]: in (static) or out (dynamic) */
    int64_t ngroups;
    int64_t gw;             /* group width */
    const int32_t *gcol;    /* static groups: group of processing column k; NULL = dynamic */
    int block;
    const fs_grid_params *gp;
    const float *colw;      /* HMSE dynamic grids: weight of processing column k, or NULL */
} fs_gptq_job;

/* The solvers: fs_gptq_cpu (cpu/cpu.h) and the backends' gptq slots. */

/* ---- the layer driver ------------------------------------------------------ */

typedef struct fs_layer_result {
    int64_t rows, cols, ngroups;
    uint8_t *qweight;    /* [rows, cols] codes, original column order */
    uint8_t *qmeta;      /* [rows, ngroups, 4] */
    int32_t *perm;       /* [cols] with act-order, else NULL */
    float *dequant;      /* [rows, cols], original column order */
    double loss, rtn_loss;
    double seconds;      /* solver (inversion + grid + GPTQ) */
    double grid_s, chol_s, gptq_s;   /* where the time went: grids (RTN baseline and
                                        static groups), damped inversion, solve */
    double refine_s;     /* scale refinement (and its GPTQ re-runs) */
    double solve_loss;   /* loss straight after the GPTQ solve (before refinement) */
    int refine_rounds;   /* rounds of scale refinement run */
    double damp_used;
    int retries;
    int fallback_rtn;    /* every inversion failed: the result is RTN */
    int dead_cols;
} fs_layer_result;

/* Quantizes W [rows, cols] given H [cols, cols] (as given: undamped, dead
 * columns included; NULL allowed with q->rtn, the losses then being the
 * squared Frobenius norm of W - D).  H64, if not NULL, is the same Hessian accumulated in
 * double (built from raw inputs) and is what the reported losses use.  W and
 * H are not modified.  On success *res owns its arrays (fs_layer_result_free).
 * Errors: FS_ERR_NOMEM, FS_ERR_NUMERIC (non-finite input), backend errors. */
fs_status fs_layer_quantize(fs_ctx *ctx, const float *W, const float *H, const double *H64,
                            int64_t rows, int64_t cols, const fs_quant_opts *q,
                            fs_layer_result *res);
void fs_layer_result_free(fs_layer_result *res);
/* Least-squares scale refinement with the codes fixed: per row, the group
 * scales (and, asymmetric, zeros) on gp's stored grid that minimise
 * (w - w^)^T H (w - w^), w^ the dequant of codes under the row's qmeta.
 * H [cols, cols], W and codes [rows, cols] in an order where group g is
 * columns [g gw, (g + 1) gw); qmeta [rows, ng, 4] is updated in place, a row
 * only when its loss strictly drops.  lbefore / lafter [rows] (optional):
 * each row's loss before and after, in double.  Errors: FS_ERR_NOMEM. */
fs_status fs_refine_scales(fs_ctx *ctx, const fs_grid_params *gp, const float *H, const float *W,
                           const uint8_t *codes, int64_t rows, int64_t cols, int64_t gw,
                           uint8_t *qmeta, double *lbefore, double *lafter);

/* sum (W - D)^2 over n elements, in double. Cannot fail. */
double fs_frob_loss(const float *W, const float *D, size_t n);

/* trace((W - D) H (W - D)^T) accumulated in double, with H in float (H) or,
 * when H64 is not NULL, in double.  fs_quad_loss_f32: the same from an f32
 * GEMM (several times faster; for logs, not for the `layer` report).
 * D may be NULL (then D = 0: trace(W H W^T)).  Errors: FS_ERR_NOMEM. */
fs_status fs_quad_loss_f32(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss);
/* The estimate the pipeline logs: the f32 loss of FS_LOSS_EST_ROWS rows spread
 * evenly (row i * rows / S), scaled by rows / S; exact (in f32) when rows <=
 * FS_LOSS_EST_ROWS.  Three exact losses per linear (RTN, GPTQ, trace(W H W^T))
 * cost three times the GPTQ solve itself; this costs a few percent of it. */
#define FS_LOSS_EST_ROWS 128
fs_status fs_quad_loss_est(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss);
fs_status fs_quad_loss(fs_ctx *ctx, const float *W, const float *D, const float *H,
                       const double *H64, int64_t rows, int64_t cols, double *loss);

#ifdef __cplusplus
}
#endif

#endif
