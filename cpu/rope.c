/* rope.c: rotary position embedding on the CPU, every variant of
 * ARCHITECTURES.md §2.3-§2.4 and §5.4: half-split or interleaved pairs, a
 * rotated column range of every head (the whole head, or DeepSeek's rope
 * part and its shared k_pe), frequencies after rope scaling, the attention
 * factor, positions row % T.
 *
 * Invariant: the angle is pos * inv_freq[i] in double, cos and sin of it
 * rounded to float and multiplied by the factor in float, then
 * a' = a c - b s, b' = b c + a s in float: the forward of today's arithmetic,
 * computed once per row and pair for all heads. */
#include <math.h>
#include <stdlib.h>

#include "cpu/cpu.h"

#define ROPE_MAX_PAIRS 512   /* pairs kept on the stack per row; wider rows recompute per head */

void fs_cpu_rope(float *x, int64_t ldx, int64_t n, int64_t heads, int64_t hs, int64_t c0, int64_t d,
                 int interleaved, const float *inv_freq, float attn_factor, int64_t T)
{
    const int64_t half = d / 2;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const int64_t p = t % T;
        float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
        for (int64_t i0 = 0; i0 < half; i0 += ROPE_MAX_PAIRS) {
            const int64_t i1 = i0 + ROPE_MAX_PAIRS < half ? i0 + ROPE_MAX_PAIRS : half;
            for (int64_t i = i0; i < i1; i++) {
                double ang = (double)p * (double)inv_freq[i];
                cs[i - i0] = (float)cos(ang) * attn_factor;
                sn[i - i0] = (float)sin(ang) * attn_factor;
            }
            for (int64_t h = 0; h < heads; h++) {
                float *v = x + t * ldx + h * hs + c0;
                for (int64_t i = i0; i < i1; i++) {
                    float *a = interleaved ? v + 2 * i : v + i, *b = interleaved ? v + 2 * i + 1 : v + i + half;
                    const float c = cs[i - i0], s = sn[i - i0], xa = *a, xb = *b;
                    *a = xa * c - xb * s;
                    *b = xb * c + xa * s;
                }
            }
        }
    }
}

fs_status fs_cpu_op_rope(fs_ctx *ctx, const fs_rope_args *a)
{
    (void)ctx;
    fs_cpu_rope(FS_CPU_F32(a->x), a->x.ld, a->x.rows, a->heads, a->hs, a->c0, a->d, a->interleaved,
                FS_CPU_F32(a->inv_freq), a->attn_factor, a->T);
    return FS_OK;
}
