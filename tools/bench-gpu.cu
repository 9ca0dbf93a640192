/* bench-gpu.cu: `make bench-gpu`: the CUDA backend's speed as ratios to what
 * it stands on, measured in the same run on the same device:
 *
 *  1. Hessian: fs_op_hess_acc of 4096 x 7168 inputs (DeepSeek-V3's hidden
 *     size) through the backend, over one cublasSsyrk of the same shape.
 *  2. GPTQ solver: fs_op_gptq of W [2048, 7168] (an expert's gate/up) with
 *     U from fs_op_cholinv, effective GFLOP/s (rows * cols^2 flops) over
 *     cublasSgemm GFLOP/s on 4096^3.
 *  3. Upload: fs_be_upload of 1 GiB from fs_be_host_alloc (pinned) staging,
 *     over a plain cudaMemcpy of the same pinned bytes (the device's H2D peak
 *     as this process sees it).
 *  4. A DeepSeek-V3-shaped MoE layer, synthetic weights: 256 experts of
 *     hidden 7168 and inter 2048 in FP8 E4M3 with 128 x 128 block scales,
 *     8 x 4096 tokens, the sigmoid router (8 groups, top-4 groups, top-8):
 *     route, row lists, and per wave of experts the upload of its FP8
 *     weights, decode, the Hessians (hess_wave for the 7168-wide gate/up
 *     inputs; gather, gate/up GEMMs, SwiGLU and hess_acc for the 2048-wide
 *     down inputs), damping and the inverse factors, the GPTQ solves, and the
 *     download of the codes.  Each stage is timed with the queue synchronised
 *     after it (so the table adds up; the pipeline's overlap of section 3 is
 *     not in this program), and wall / max(io, compute) is printed with io
 *     the upload and download stages.  --seconds bounds the run: experts
 *     past it are extrapolated linearly and the line says so.
 *
 * Output: a table on stdout and the same figures as JSON (--json FILE).
 * Exit 2 without a usable CUDA device (the message says why), 1 on an error.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend.h"

#define TRYB(expr)                                                                  \
    do {                                                                            \
        if ((expr) != FS_OK) {                                                      \
            fprintf(stderr, "bench-gpu: %s: %s\n", #expr, ctx.errmsg);              \
            exit(1);                                                                \
        }                                                                           \
    } while (0)
#define TRYC(expr)                                                                  \
    do {                                                                            \
        cudaError_t e_ = (expr);                                                    \
        if (e_ != cudaSuccess) {                                                    \
            fprintf(stderr, "bench-gpu: %s: %s\n", #expr, cudaGetErrorString(e_));  \
            exit(1);                                                                \
        }                                                                           \
    } while (0)
#define TRYBL(expr)                                                                 \
    do {                                                                            \
        cublasStatus_t s_ = (expr);                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                          \
            fprintf(stderr, "bench-gpu: %s: %s\n", #expr, cublasGetStatusName(s_)); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

static fs_ctx ctx;
static fs_backend *be;
static FILE *json;

static void put(const char *key, double v, int last)
{
    if (json) fprintf(json, "  \"%s\": %.6g%s\n", key, v, last ? "" : ",");
}

static void fill_host(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = scale * (float)((double)(seed >> 40) / (double)(1ull << 24) - 0.5);
    }
}

/* a device buffer filled from host floats */
static fs_buf *dev_floats(size_t n, uint64_t seed, float scale, const char *what)
{
    fs_buf *b;
    float *h = (float *)malloc(sizeof(float) * n);
    fill_host(h, n, seed, scale);
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * n, what, &b));
    TRYB(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, b, 0, h, sizeof(float) * n));
    TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
    free(h);
    return b;
}

static double since(double t0)
{
    return fs_now() - t0;
}

/* ---- 1-3: ratios ------------------------------------------------------------------------ */

static double cublas_sgemm_gflops(cublasHandle_t h)
{
    const int n = 4096;
    float *A, *B, *C;
    TRYC(cudaMalloc((void **)&A, sizeof(float) * n * n));
    TRYC(cudaMalloc((void **)&B, sizeof(float) * n * n));
    TRYC(cudaMalloc((void **)&C, sizeof(float) * n * n));
    TRYC(cudaMemset(A, 0x3c, sizeof(float) * n * n));
    TRYC(cudaMemset(B, 0x3c, sizeof(float) * n * n));
    const float one = 1.0f, zero = 0.0f;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        TRYC(cudaDeviceSynchronize());
        const double t0 = fs_now();
        TRYBL(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, n, B, n, &zero, C, n));
        TRYC(cudaDeviceSynchronize());
        const double t = since(t0);
        if (r > 0 && t < best) best = t;                     /* the first warms up */
    }
    cudaFree(A); cudaFree(B); cudaFree(C);
    return 2.0 * n * (double)n * n / best / 1e9;
}

static double cublas_ssyrk_gflops(cublasHandle_t h, int n, int k)
{
    float *X, *H;
    TRYC(cudaMalloc((void **)&X, sizeof(float) * (size_t)n * k));
    TRYC(cudaMalloc((void **)&H, sizeof(float) * (size_t)n * n));
    TRYC(cudaMemset(X, 0x3c, sizeof(float) * (size_t)n * k));
    TRYC(cudaMemset(H, 0, sizeof(float) * (size_t)n * n));
    const float one = 1.0f;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        TRYC(cudaDeviceSynchronize());
        const double t0 = fs_now();
        TRYBL(cublasSsyrk(h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, X, n, &one, H, n));
        TRYC(cudaDeviceSynchronize());
        const double t = since(t0);
        if (r > 0 && t < best) best = t;
    }
    cudaFree(X); cudaFree(H);
    return (double)n * n * k / best / 1e9;               /* n (n + 1) k, the usual count */
}

static void bench_ratios(void)
{
    cublasHandle_t h;
    TRYBL(cublasCreate(&h));
    const double sg = cublas_sgemm_gflops(h);
    const int n = 7168, k = 4096;
    const double sy = cublas_ssyrk_gflops(h, n, k);
    cublasDestroy(h);

    /* 1. the Hessian through the backend */
    fs_buf *X = dev_floats((size_t)n * k, 1, 1.0f, "bench X"), *H;
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (size_t)n * n, "bench H", &H));
    fs_tensor Hv = fs_tensor_2d(H, 0, FS_DT_F32, n, n), Xv = fs_tensor_2d(X, 0, FS_DT_F32, k, n);
    TRYB(fs_op_fill(&ctx, be, FS_QUEUE_COMPUTE, Hv, 0.0));
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
        const double t0 = fs_now();
        TRYB(fs_op_hess_acc(&ctx, be, FS_QUEUE_COMPUTE, Hv, Xv));
        TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
        const double t = since(t0);
        if (r > 0 && t < best) best = t;
    }
    const double hg = (double)n * n * k / best / 1e9;
    printf("| %-34s | %12.1f | %-30s | %10.1f | %6.3f |\n", "hessian (hess_acc 4096 x 7168)", hg,
           "cublasSsyrk same shape", sy, hg / sy);

    /* 2. the solver: U of H + damping, W [2048, 7168] */
    fs_buf *st;
    TRYB(fs_be_alloc(&ctx, be, 4, "bench status", &st));
    TRYB(fs_op_hess_finish(&ctx, be, FS_QUEUE_COMPUTE, Hv, 1));
    fs_damp_args da = {Hv, Hv, 1, 0.01};
    TRYB(fs_op_damp(&ctx, be, FS_QUEUE_COMPUTE, &da));
    fs_cholinv_args ca = {Hv, fs_tensor_2d(st, 0, FS_DT_I32, 1, 1), 1};
    double t0 = fs_now();
    TRYB(fs_op_cholinv(&ctx, be, FS_QUEUE_COMPUTE, &ca));
    TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
    const double tchol = since(t0);
    int32_t status = -1;
    TRYB(fs_be_download(&ctx, be, FS_QUEUE_COMPUTE, &status, st, 0, 4));
    TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
    printf("| %-34s | %12.1f | %-30s | %10s | %6s |  (status %d, %.3f s)\n", "cholinv 7168 (potrf + trtri)",
           2.0 / 3.0 * n * (double)n * n / tchol / 1e9, "-", "-", "-", (int)status, tchol);
    const int R = 2048;
    fs_buf *W = dev_floats((size_t)R * n, 7, 0.05f, "bench W"), *codes, *qm;
    TRYB(fs_be_alloc(&ctx, be, (uint64_t)R * n, "bench codes", &codes));
    TRYB(fs_be_alloc(&ctx, be, (uint64_t)R * (n / 128) * 4, "bench qmeta", &qm));
    fs_quant_opts qo;
    fs_quant_opts_default(&qo);
    qo.group_size = 128;
    fs_grid_params gp;
    TRYB(fs_grid_params_init(&ctx, &gp, &qo));
    fs_gptq_args ga = {fs_tensor_2d(W, 0, FS_DT_F32, R, n), Hv, fs_tensor_2d(codes, 0, FS_DT_U8, R, n),
                       fs_tensor_2d(qm, 0, FS_DT_U8, R, (n / 128) * 4), fs_tensor_none(), 128, qo.block, &gp};
    t0 = fs_now();
    TRYB(fs_op_gptq(&ctx, be, FS_QUEUE_COMPUTE, &ga));
    TRYB(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE));
    const double tq = since(t0), qg = (double)R * n * n / tq / 1e9;
    printf("| %-34s | %12.1f | %-30s | %10.1f | %6.3f |  (%.3f s)\n", "gptq solve [2048, 7168]", qg,
           "cublasSgemm 4096^3", sg, qg / sg, tq);
    fs_grid_params_free(&gp);
    fs_be_free(be, W); fs_be_free(be, codes); fs_be_free(be, qm); fs_be_free(be, st);
    fs_be_free(be, X); fs_be_free(be, H);

    /* 3. pinned upload through the backend vs cudaMemcpy of the same pinned bytes */
    const uint64_t bytes = 1ull << 30;
    void *host;
    fs_buf *D;
    TRYB(fs_be_host_alloc(&ctx, be, bytes, &host));
    memset(host, 0x5a, bytes);
    TRYB(fs_be_alloc(&ctx, be, bytes, "bench upload", &D));
    void *raw;
    TRYC(cudaMalloc(&raw, bytes));
    double bu = 1e30, bm = 1e30;
    for (int r = 0; r < 4; r++) {
        t0 = fs_now();
        TRYB(fs_be_upload(&ctx, be, FS_QUEUE_UPLOAD, D, 0, host, bytes));
        TRYB(fs_be_sync(&ctx, be, FS_QUEUE_UPLOAD));
        double t = since(t0);
        if (r > 0 && t < bu) bu = t;
        t0 = fs_now();
        TRYC(cudaMemcpy(raw, host, bytes, cudaMemcpyHostToDevice));
        t = since(t0);
        if (r > 0 && t < bm) bm = t;
    }
    printf("| %-34s | %9.2f GB/s | %-30s | %5.2f GB/s | %6.3f |\n", "pinned upload 1 GiB (fs_be_upload)",
           bytes / bu / 1e9, "cudaMemcpy pinned 1 GiB", bytes / bm / 1e9, bm / bu);
    cudaFree(raw);
    fs_be_free(be, D);
    fs_be_host_free(be, host);
    put("sgemm_gflops", sg, 0);
    put("ssyrk_gflops", sy, 0);
    put("hessian_gflops", hg, 0);
    put("hessian_ratio", hg / sy, 0);
    put("cholinv_7168_s", tchol, 0);
    put("gptq_gflops", qg, 0);
    put("gptq_ratio", qg / sg, 0);
    put("upload_gbs", bytes / bu / 1e9, 0);
    put("memcpy_gbs", bytes / bm / 1e9, 0);
    put("upload_ratio", bm / bu, 0);
}

/* ---- 4: the MoE layer ------------------------------------------------------------------------- */

enum { ST_ROUTE, ST_UP, ST_DECODE, ST_HESS, ST_CHOL, ST_GPTQ, ST_DOWN, ST_N };
static const char *stage_name[ST_N] = {"route + lists", "upload FP8", "decode", "hessians", "damp + cholinv",
                                       "gptq", "download codes"};

static void stage_end(double *acc, int s, double t0)
{
    if (fs_be_sync_all(&ctx, be) != FS_OK) {
        fprintf(stderr, "bench-gpu: stage %s: %s\n", stage_name[s], ctx.errmsg);
        exit(1);
    }
    acc[s] += since(t0);
}

static void bench_moe(int E, int ntok, int wave, double budget_s)
{
    const int D = 7168, I = 2048, K = 8, B = 128;
    const uint64_t wbytes = (uint64_t)I * D;                  /* one FP8 matrix */
    const int sD = D / B, sI = I / B;
    double acc[ST_N] = {0};
    /* synthetic FP8 weights (one set reused for every expert, uploaded per
     * expert as a real run would) and block scales */
    uint8_t *w8;
    TRYB(fs_be_host_alloc(&ctx, be, 3 * wbytes, (void **)&w8));
    uint64_t s = 99;
    for (uint64_t i = 0; i < 3 * wbytes; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint8_t v = (uint8_t)(s >> 56);
        w8[i] = (v & 0x7f) == 0x7f ? 0x38 : (v & 0xbf);       /* finite, |w| < 2^-1 * 1.875 */
    }
    float *scales;
    TRYB(fs_be_host_alloc(&ctx, be, sizeof(float) * (uint64_t)sI * sD, (void **)&scales));
    for (int i = 0; i < sI * sD; i++) scales[i] = 0.01f;
    uint8_t *codes_host;
    TRYB(fs_be_host_alloc(&ctx, be, 3 * wbytes * (uint64_t)wave, (void **)&codes_host));

    /* tokens and the router */
    double t0 = fs_now();
    fs_buf *x = dev_floats((size_t)ntok * D, 3, 2.0f, "moe x"), *wr = dev_floats((size_t)E * D, 4, 0.05f, "router");
    fs_buf *bias = dev_floats((size_t)E, 5, 0.01f, "router bias"), *logits, *idx, *wt, *offs, *rows, *rw;
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)ntok * E, "logits", &logits));
    TRYB(fs_be_alloc(&ctx, be, 4ull * ntok * K, "idx", &idx));
    TRYB(fs_be_alloc(&ctx, be, 4ull * ntok * K, "wt", &wt));
    TRYB(fs_be_alloc(&ctx, be, 4ull * (E + 1), "offs", &offs));
    TRYB(fs_be_alloc(&ctx, be, 4ull * ntok * K, "rows", &rows));
    TRYB(fs_be_alloc(&ctx, be, 4ull * ntok * K, "rw", &rw));
    const double tsetup = since(t0);
    t0 = fs_now();
    fs_gemm_args lg = {fs_tensor_2d(x, 0, FS_DT_F32, ntok, D), fs_tensor_2d(wr, 0, FS_DT_F32, E, D),
                       fs_tensor_2d(logits, 0, FS_DT_F32, ntok, E), 1, 1.0f, 0.0f};
    TRYB(fs_op_gemm(&ctx, be, FS_QUEUE_COMPUTE, &lg));
    fs_route_args ra = {fs_tensor_2d(logits, 0, FS_DT_F32, ntok, E), fs_tensor_2d(bias, 0, FS_DT_F32, 1, E),
                        fs_tensor_2d(idx, 0, FS_DT_I32, ntok, K), fs_tensor_2d(wt, 0, FS_DT_F32, ntok, K),
                        {FS_ROUTE_DS_SIGMOID, E, K, 1, E >= 64 ? 8 : 1, E >= 64 ? 4 : 1, 0, 2.5f}};
    TRYB(fs_op_route(&ctx, be, FS_QUEUE_COMPUTE, &ra));
    fs_lists_args la = {ra.idx, ra.wt, fs_tensor_2d(offs, 0, FS_DT_I32, 1, E + 1),
                        fs_tensor_2d(rows, 0, FS_DT_I32, 1, (int64_t)ntok * K),
                        fs_tensor_2d(rw, 0, FS_DT_F32, 1, (int64_t)ntok * K), E};
    TRYB(fs_op_route_lists(&ctx, be, FS_QUEUE_COMPUTE, &la));
    int32_t *hoffs = (int32_t *)malloc(4ull * (E + 1));
    TRYB(fs_be_download(&ctx, be, FS_QUEUE_COMPUTE, hoffs, offs, 0, 4ull * (E + 1)));
    stage_end(acc, ST_ROUTE, t0);

    /* per-wave buffers */
    fs_buf *w8d, *scd, *Wf, *H7, *H2, *xe, *g, *u, *codes, *qm, *stt;
    int maxrows = 0;
    for (int e = 0; e < E; e++) maxrows = hoffs[e + 1] - hoffs[e] > maxrows ? hoffs[e + 1] - hoffs[e] : maxrows;
    TRYB(fs_be_alloc(&ctx, be, 3 * wbytes * (uint64_t)wave, "wave FP8", &w8d));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)sI * sD, "scales", &scd));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * 3 * wbytes, "expert F32 weights", &Wf));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)wave * D * D, "wave H 7168", &H7));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)I * I, "H 2048", &H2));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)(maxrows ? maxrows : 1) * D, "expert rows", &xe));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)(maxrows ? maxrows : 1) * I, "gate out", &g));
    TRYB(fs_be_alloc(&ctx, be, sizeof(float) * (uint64_t)(maxrows ? maxrows : 1) * I, "up out", &u));
    TRYB(fs_be_alloc(&ctx, be, 3 * wbytes * (uint64_t)wave, "wave codes", &codes));
    TRYB(fs_be_alloc(&ctx, be, 4ull * 3 * wbytes / 128, "qmeta", &qm));
    /* statuses: the wave's cholinv [wave] I32, decode's I64, the down cholinv's I32 */
    const uint64_t so_dec = (4ull * wave + 7) / 8 * 8, so_c2 = so_dec + 8;
    TRYB(fs_be_alloc(&ctx, be, so_c2 + 8, "status", &stt));
    TRYB(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, scd, 0, scales, sizeof(float) * (uint64_t)sI * sD));
    fs_quant_opts qo;
    fs_quant_opts_default(&qo);
    qo.group_size = 128;
    fs_grid_params gp;
    TRYB(fs_grid_params_init(&ctx, &gp, &qo));

    const double tstart = fs_now();
    int done = 0;
    for (int e0 = 0; e0 < E; e0 += wave) {
        const int ne = E - e0 < wave ? E - e0 : wave;
        /* upload the wave's FP8 weights (gate, up: [2048, 7168]; down: [7168, 2048]) */
        t0 = fs_now();
        for (int j = 0; j < ne; j++)
            TRYB(fs_be_upload(&ctx, be, FS_QUEUE_UPLOAD, w8d, 3 * wbytes * (uint64_t)j, w8, 3 * wbytes));
        stage_end(acc, ST_UP, t0);
        /* gate/up Hessians of the wave in one call */
        t0 = fs_now();
        fs_hess_wave_args hw = {fs_tensor_2d(x, 0, FS_DT_F32, ntok, D), la.offs, la.rows,
                                fs_tensor_2d(H7, 0, FS_DT_F32, (int64_t)ne * D, D), e0, ne};
        TRYB(fs_op_fill(&ctx, be, FS_QUEUE_COMPUTE, hw.H, 0.0));
        TRYB(fs_op_hess_wave(&ctx, be, FS_QUEUE_COMPUTE, &hw));
        TRYB(fs_op_hess_finish(&ctx, be, FS_QUEUE_COMPUTE, hw.H, ne));
        stage_end(acc, ST_HESS, t0);
        t0 = fs_now();
        fs_damp_args d7 = {hw.H, hw.H, ne, 0.01};
        TRYB(fs_op_damp(&ctx, be, FS_QUEUE_COMPUTE, &d7));
        fs_cholinv_args c7 = {hw.H, fs_tensor_2d(stt, 0, FS_DT_I32, 1, ne), ne};
        TRYB(fs_op_cholinv(&ctx, be, FS_QUEUE_COMPUTE, &c7));
        stage_end(acc, ST_CHOL, t0);
        for (int j = 0; j < ne; j++) {
            const int e = e0 + j, nr = hoffs[e + 1] - hoffs[e];
            const uint64_t wo = 3 * wbytes * (uint64_t)j;
            fs_tensor Wg = fs_tensor_2d(Wf, 0, FS_DT_F32, I, D), Wu = fs_tensor_2d(Wf, 4 * wbytes, FS_DT_F32, I, D);
            fs_tensor Wd = fs_tensor_2d(Wf, 8 * wbytes, FS_DT_F32, D, I);
            t0 = fs_now();
            fs_decode_args dg = {fs_tensor_2d(w8d, wo, FS_DT_F8_E4M3, I, D), fs_tensor_2d(scd, 0, FS_DT_F32, sI, sD), Wg,
                                 fs_tensor_2d(stt, so_dec, FS_DT_I64, 1, 1), B, B};
            TRYB(fs_op_decode(&ctx, be, FS_QUEUE_COMPUTE, &dg));
            dg.src = fs_tensor_2d(w8d, wo + wbytes, FS_DT_F8_E4M3, I, D);
            dg.dst = Wu;
            TRYB(fs_op_decode(&ctx, be, FS_QUEUE_COMPUTE, &dg));
            dg.src = fs_tensor_2d(w8d, wo + 2 * wbytes, FS_DT_F8_E4M3, D, I);
            dg.scale = fs_tensor_2d(scd, 0, FS_DT_F32, sD, sI);
            dg.dst = Wd;
            TRYB(fs_op_decode(&ctx, be, FS_QUEUE_COMPUTE, &dg));
            stage_end(acc, ST_DECODE, t0);
            /* the down inputs: silu(x W_g^T) * (x W_u^T) of this expert's rows */
            t0 = fs_now();
            fs_tensor H2v = fs_tensor_2d(H2, 0, FS_DT_F32, I, I);
            TRYB(fs_op_fill(&ctx, be, FS_QUEUE_COMPUTE, H2v, 0.0));
            if (nr > 0) {
                fs_tensor xv = fs_tensor_2d(xe, 0, FS_DT_F32, nr, D), gv = fs_tensor_2d(g, 0, FS_DT_F32, nr, I),
                          uv = fs_tensor_2d(u, 0, FS_DT_F32, nr, I);
                TRYB(fs_op_gather(&ctx, be, FS_QUEUE_COMPUTE, xv, fs_tensor_2d(x, 0, FS_DT_F32, ntok, D),
                                  fs_tensor_2d(rows, 4ull * hoffs[e], FS_DT_I32, 1, nr)));
                fs_gemm_args gg = {xv, Wg, gv, 1, 1.0f, 0.0f}, gu = {xv, Wu, uv, 1, 1.0f, 0.0f};
                TRYB(fs_op_gemm(&ctx, be, FS_QUEUE_COMPUTE, &gg));
                TRYB(fs_op_gemm(&ctx, be, FS_QUEUE_COMPUTE, &gu));
                TRYB(fs_op_swiglu(&ctx, be, FS_QUEUE_COMPUTE, gv, uv, gv));
                TRYB(fs_op_hess_acc(&ctx, be, FS_QUEUE_COMPUTE, H2v, gv));
            }
            TRYB(fs_op_hess_finish(&ctx, be, FS_QUEUE_COMPUTE, H2v, 1));
            stage_end(acc, ST_HESS, t0);
            t0 = fs_now();
            fs_damp_args d2 = {H2v, H2v, 1, 0.01};
            TRYB(fs_op_damp(&ctx, be, FS_QUEUE_COMPUTE, &d2));
            fs_cholinv_args c2 = {H2v, fs_tensor_2d(stt, so_c2, FS_DT_I32, 1, 1), 1};
            TRYB(fs_op_cholinv(&ctx, be, FS_QUEUE_COMPUTE, &c2));
            stage_end(acc, ST_CHOL, t0);
            /* the three solves */
            t0 = fs_now();
            fs_tensor U7 = fs_tensor_2d(H7, sizeof(float) * (uint64_t)j * D * D, FS_DT_F32, D, D);
            fs_gptq_args q1 = {Wg, U7, fs_tensor_2d(codes, wo, FS_DT_U8, I, D), fs_tensor_2d(qm, 0, FS_DT_U8, I, sD * 4),
                               fs_tensor_none(), 128, qo.block, &gp};
            TRYB(fs_op_gptq(&ctx, be, FS_QUEUE_COMPUTE, &q1));
            q1.W = Wu;
            q1.codes = fs_tensor_2d(codes, wo + wbytes, FS_DT_U8, I, D);
            TRYB(fs_op_gptq(&ctx, be, FS_QUEUE_COMPUTE, &q1));
            fs_gptq_args q3 = {Wd, H2v, fs_tensor_2d(codes, wo + 2 * wbytes, FS_DT_U8, D, I),
                               fs_tensor_2d(qm, 0, FS_DT_U8, D, (I / 128) * 4), fs_tensor_none(), 128, qo.block, &gp};
            TRYB(fs_op_gptq(&ctx, be, FS_QUEUE_COMPUTE, &q3));
            stage_end(acc, ST_GPTQ, t0);
        }
        t0 = fs_now();
        TRYB(fs_be_download(&ctx, be, FS_QUEUE_DOWNLOAD, codes_host, codes, 0, 3 * wbytes * (uint64_t)ne));
        stage_end(acc, ST_DOWN, t0);
        done += ne;
        if (since(tstart) > budget_s && done < E) break;
    }
    const double wall_done = since(tstart) + acc[ST_ROUTE];
    const double scale = (double)E / (double)done;
    double io = 0.0, compute = 0.0;
    printf("\nMoE layer (DeepSeek-V3 shape, synthetic FP8 weights): %d experts, %d tokens, top-%d, waves of %d\n", E,
           ntok, K, wave);
    if (done < E)
        printf("  %d of %d experts ran within --seconds %.0f; the expert stages below are extrapolated x %.2f\n", done, E,
               budget_s, scale);
    printf("| %-16s | %10s |\n|------------------|------------|\n", "stage", "seconds");
    for (int st = 0; st < ST_N; st++) {
        const double v = st == ST_ROUTE ? acc[st] : acc[st] * scale;
        printf("| %-16s | %10.3f |\n", stage_name[st], v);
        if (st == ST_UP || st == ST_DOWN) io += v;
        else compute += v;
        char key[64];
        snprintf(key, sizeof key, "moe_stage_%d_s", st);
        put(key, v, 0);
    }
    const double wall = acc[ST_ROUTE] + (wall_done - acc[ST_ROUTE]) * scale;
    const double mx = io > compute ? io : compute;
    printf("wall %.3f s (setup %.3f s not counted), io %.3f s, compute %.3f s, wall / max(io, compute) = %.3f"
           " (stages serialised: section 3's overlap is not in this program)\n", wall, tsetup, io, compute, wall / mx);
    put("moe_experts", E, 0);
    put("moe_experts_ran", done, 0);
    put("moe_tokens", ntok, 0);
    put("moe_wall_s", wall, 0);
    put("moe_io_s", io, 0);
    put("moe_compute_s", compute, 0);
    put("moe_wall_over_max", wall / mx, 1);
    fs_grid_params_free(&gp);
    free(hoffs);
    fs_buf *all[] = {x, wr, bias, logits, idx, wt, offs, rows, rw, w8d, scd, Wf, H7, H2, xe, g, u, codes, qm, stt};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) fs_be_free(be, all[i]);
    fs_be_host_free(be, w8);
    fs_be_host_free(be, scales);
    fs_be_host_free(be, codes_host);
}

int main(int argc, char **argv)
{
    int E = 256, ntok = 8 * 4096, wave = 16;
    double budget = 150.0;
    const char *jpath = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--experts") && i + 1 < argc) E = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) ntok = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wave") && i + 1 < argc) wave = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) jpath = argv[++i];
        else {
            fprintf(stderr, "usage: bench-gpu [--experts N] [--tokens N] [--wave N] [--seconds S] [--json FILE]\n");
            return 2;
        }
    }
    if (E < 8 || ntok < 1 || wave < 1 || budget <= 0) {
        fprintf(stderr, "bench-gpu: --experts >= 8, --tokens >= 1, --wave >= 1, --seconds > 0\n");
        return 2;
    }
    fs_ctx_init(&ctx);
    char line[256];
    fs_backend_cuda_summary(line, sizeof line);
    if (fs_backend_cuda_devices() == 0) {
        fprintf(stderr, "bench-gpu: no GPU: %s\n", line);
        return 2;
    }
    if (fs_backend_open(&ctx, FS_BE_CUDA, NULL, &be) != FS_OK) {
        fprintf(stderr, "bench-gpu: %s\n", ctx.errmsg);
        return 2;
    }
    int rt = 0, drv = 0, blas = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    cublasGetProperty(MAJOR_VERSION, &blas);
    printf("bench-gpu: %s; runtime %d, driver %d, cuBLAS %d\n", line, rt, drv, blas);
    if (jpath && !(json = fopen(jpath, "w"))) {
        fprintf(stderr, "bench-gpu: cannot write %s\n", jpath);
        return 1;
    }
    if (json) fprintf(json, "{\n  \"device\": \"%s\",\n", line);
    printf("| %-34s | %12s | %-30s | %10s | %6s |\n", "what (ours)", "GFLOP/s", "baseline", "GFLOP/s", "ratio");
    printf("|------------------------------------|--------------|--------------------------------|------------|--------|\n");
    bench_ratios();
    bench_moe(E, ntok, wave, budget);
    if (json) {
        fprintf(json, "}\n");
        fclose(json);
    }
    fs_backend_free(be);
    return 0;
}
