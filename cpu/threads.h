/* threads.h: how many threads the CPU backends use (OpenMP row slices and
 * OpenBLAS).  The CPU bytes depend on both counts (rows and BLAS blocks are
 * split by them), so a run records them and a resume sets them back.  These
 * are process-wide settings of the two libraries, the only ones the project
 * changes. */
#ifndef FS_CPU_THREADS_H
#define FS_CPU_THREADS_H

/* Sets both counts to n (n >= 1).  Cannot fail. */
void fs_threads_set(int n);
/* Sets them apart (a resume restoring a run's counts).  Cannot fail. */
void fs_threads_set2(int omp, int blas);
/* The counts in use.  Cannot fail. */
void fs_threads_get(int *omp, int *blas);
/* The name of the BLAS kernels in use (OpenBLAS picks them for the CPU it
 * runs on, or as OPENBLAS_CORETYPE says): other kernels round differently,
 * so the CPU bytes depend on them too.  Cannot fail. */
const char *fs_blas_kernels(void);
/* OpenBLAS's build line (version, options), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ...". */
const char *fs_blas_config(void);

#endif
