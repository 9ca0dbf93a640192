/* elementwise.c: the elementwise ops on the CPU: fill, bias add, residual
 * add, copy with F32 <-> BF16 conversion (round to nearest even), SwiGLU.
 * Row by row through the views' strides; rows on OpenMP threads where the
 * work is large (an element's arithmetic never depends on the split). */
#include <math.h>
#include <string.h>

#include "cpu/cpu.h"

void fs_cpu_swiglu(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t n, int64_t inter, float *out,
                   int64_t ldo)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < inter; i++) {
            float z = g[r * ldg + i];
            out[r * ldo + i] = z / (1.0f + expf(-z)) * u[r * ldu + i];
        }
}

fs_status fs_cpu_op_swiglu(fs_ctx *ctx, const fs_swiglu_args *a)
{
    (void)ctx;
    fs_cpu_swiglu(FS_CPU_F32(a->g), a->g.ld, FS_CPU_F32(a->u), a->u.ld, a->g.rows, a->g.cols, FS_CPU_F32(a->out),
                  a->out.ld);
    return FS_OK;
}

fs_status fs_cpu_op_fill(fs_ctx *ctx, const fs_fill_args *a)
{
    (void)ctx;
    const fs_tensor *t = &a->t;
    const double v = a->value;
    for (int64_t r = 0; r < t->rows; r++) {
        void *row = fs_cpu_at(t, r, 0);
        for (int64_t c = 0; c < t->cols; c++) switch (t->dt) {
            case FS_DT_F32: ((float *)row)[c] = (float)v; break;
            case FS_DT_F64: ((double *)row)[c] = v; break;
            case FS_DT_BF16: ((uint16_t *)row)[c] = fs_f32_to_bf16((float)v); break;
            case FS_DT_I32: ((int32_t *)row)[c] = (int32_t)v; break;
            case FS_DT_I64: ((int64_t *)row)[c] = (int64_t)v; break;
            default: ((uint8_t *)row)[c] = (uint8_t)v; break;
            }
    }
    return FS_OK;
}

fs_status fs_cpu_op_bias_add(fs_ctx *ctx, const fs_bias_args *a)
{
    (void)ctx;
    const float *b = FS_CPU_F32(a->b);
    for (int64_t r = 0; r < a->y.rows; r++) {
        float *y = (float *)fs_cpu_at(&a->y, r, 0);
        for (int64_t c = 0; c < a->y.cols; c++) y[c] += b[c];
    }
    return FS_OK;
}

fs_status fs_cpu_op_add(fs_ctx *ctx, const fs_add_args *a)
{
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a->y.rows; r++) {
        float *y = (float *)fs_cpu_at(&a->y, r, 0);
        const float *x = (const float *)fs_cpu_at(&a->x, r, 0);
        for (int64_t c = 0; c < a->y.cols; c++) y[c] += x[c];
    }
    return FS_OK;
}

fs_status fs_cpu_op_copy(fs_ctx *ctx, const fs_copy_args *a)
{
    (void)ctx;
    const fs_tensor *d = &a->dst, *s = &a->src;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < d->rows; r++) {
        void *dr = fs_cpu_at(d, r, 0);
        const void *sr = fs_cpu_at(s, r, 0);
        if (d->dt == s->dt) {
            memmove(dr, sr, (size_t)d->cols * fs_dtype_size(d->dt));
        } else if (d->dt == FS_DT_BF16) {
            for (int64_t c = 0; c < d->cols; c++) ((uint16_t *)dr)[c] = fs_f32_to_bf16(((const float *)sr)[c]);
        } else {
            for (int64_t c = 0; c < d->cols; c++) ((float *)dr)[c] = fs_bf16_to_f32(((const uint16_t *)sr)[c]);
        }
    }
    return FS_OK;
}

fs_status fs_cpu_op_gate_add(fs_ctx *ctx, const fs_gate_add_args *a)
{
    (void)ctx;
    const float *g = FS_CPU_F32(a->g);
    for (int64_t r = 0; r < a->y.rows; r++) {
        const float *x = (const float *)fs_cpu_at(&a->x, r, 0), *src = (const float *)fs_cpu_at(&a->src, r, 0);
        float *y = (float *)fs_cpu_at(&a->y, r, 0);
        float z = 0.0f;
        for (int64_t i = 0; i < a->x.cols; i++) z += x[i] * g[i];
        const float s = 1.0f / (1.0f + expf(-z));
        for (int64_t c = 0; c < a->y.cols; c++) y[c] += s * src[c];
    }
    return FS_OK;
}
