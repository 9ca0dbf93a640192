/* refine.c: the Gram matrices of the group-scale least squares (quant.h's
 * fs_refine_scales) on the CPU.  For rows [0, nr) of a slab and basis
 * vectors that each live inside one group (columns contiguous per group),
 *   K_r[j, k] = phi_j,r^T H phi_k,r,   b_r[j] = phi_j,r^T H w_r,   c_r = w_r^T H w_r,
 * all in double: one dgemm per (group, basis) gives Y = Phi[:, g] H[g, :],
 * whose dot products with each basis give K's rows; one dgemm W H gives b.
 * The cost is two GEMMs of the layer's size per basis kind, in double. */
#include "cpu/cpu.h"

void fs_cpu_row_losses(const double *Hd, const double *Ed, int64_t nr, int64_t cols, double *Y,
                       double *out)
{
    fs_cpu_dgemm(0, nr, cols, cols, 1.0, Ed, cols, Hd, cols, 0.0, Y, cols);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nr; r++) {
        double l = 0.0;
        for (int64_t d = 0; d < cols; d++) l += Ed[r * cols + d] * Y[r * cols + d];
        out[r] = l;
    }
}

void fs_cpu_group_gram(const double *Hd, const double *Wd, const double *Phi, int nbpg,
                       int64_t nr, int64_t cols, int64_t gw, double *Y, double *K, double *b,
                       double *c)
{
    const int64_t ng = (cols + gw - 1) / gw, nb = ng * nbpg;
    const size_t plane = (size_t)nr * (size_t)cols;
    fs_cpu_dgemm(0, nr, cols, cols, 1.0, Wd, cols, Hd, cols, 0.0, Y, cols);   /* W H */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nr; r++) {
        const double *y = Y + r * cols, *w = Wd + r * cols;
        double cw = 0.0;
        for (int64_t d = 0; d < cols; d++) cw += w[d] * y[d];
        c[r] = cw;
        for (int64_t g = 0; g < ng; g++)
            for (int t = 0; t < nbpg; t++) {
                const double *p = Phi + (size_t)t * plane + r * cols;
                double s = 0.0;
                for (int64_t d = g * gw; d < cols && d < (g + 1) * gw; d++) s += p[d] * y[d];
                b[r * nb + g * nbpg + t] = s;
            }
    }
    for (int64_t g = 0; g < ng; g++) {
        const int64_t c0 = g * gw, len = cols - c0 < gw ? cols - c0 : gw;
        for (int t = 0; t < nbpg; t++) {
            const int64_t j = g * nbpg + t;
            fs_cpu_dgemm(0, nr, cols, len, 1.0, Phi + (size_t)t * plane + c0, cols, Hd + c0 * cols,
                         cols, 0.0, Y, cols);
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < nr; r++) {
                const double *y = Y + r * cols;
                for (int64_t h = 0; h < ng; h++)
                    for (int u = 0; u < nbpg; u++) {
                        const double *p = Phi + (size_t)u * plane + r * cols;
                        double s = 0.0;
                        for (int64_t d = h * gw; d < cols && d < (h + 1) * gw; d++) s += p[d] * y[d];
                        K[(size_t)r * (size_t)(nb * nb) + (size_t)(j * nb + h * nbpg + u)] = s;
                    }
            }
        }
    }
}
