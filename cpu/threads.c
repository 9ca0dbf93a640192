/* threads.c: the thread counts of OpenMP and OpenBLAS (threads.h). */
#include <cblas.h>
#include <omp.h>

#include "cpu/threads.h"

void fs_threads_set(int n)
{
    fs_threads_set2(n, n);
}

void fs_threads_set2(int omp, int blas)
{
    omp_set_num_threads(omp);
    openblas_set_num_threads(blas);
}

void fs_threads_get(int *omp, int *blas)
{
    *omp = omp_get_max_threads();
    *blas = openblas_get_num_threads();
}

const char *fs_blas_config(void)
{
    const char *s = openblas_get_config();
    return s ? s : "OpenBLAS (unknown version)";
}

const char *fs_blas_kernels(void)
{
    const char *s = openblas_get_corename();
    return s ? s : "unknown";
}
