/* loss.c: the layer losses of quant.h on contiguous host arrays; the
 * arithmetic (BLAS GEMMs in f32 or double) is cpu/loss.c's. */
#include "cpu/cpu.h"
#include "src/quant/quant.h"

fs_status fs_quad_loss_f32(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss)
{
    return fs_cpu_loss_f32(ctx, W, cols, D, cols, H, cols, rows, cols, loss);
}

fs_status fs_quad_loss_est(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss)
{
    return fs_cpu_loss_est(ctx, W, cols, D, cols, H, cols, rows, cols, loss);
}

fs_status fs_quad_loss(fs_ctx *ctx, const float *W, const float *D, const float *H,
                       const double *H64, int64_t rows, int64_t cols, double *loss)
{
    return fs_cpu_loss_exact(ctx, W, cols, D, cols, H, H64, cols, rows, cols, loss);
}
