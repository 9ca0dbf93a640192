/* mla.h: DeepSeek's Multi-head Latent Attention and decoder layer on the CPU
 * (ARCHITECTURES.md §5.3-§5.6), in stages so that the quantize pipeline can
 * capture the input of every MLA group ({q_a|q, kv_a} share norm(x); q_b
 * reads norm(q_a x); kv_b reads norm(c); o_proj reads the attention output).
 *
 * Invariants:
 *  1. Linear slots (fs_lw): with q LoRA q_a 0, kv_a 1, q_b 2, kv_b 3, o 4;
 *     without q_proj 0, kv_a 1, kv_b 2, o 3; MLP / shared experts from g0.
 *  2. q_a_layernorm and kv_a_layernorm use eps f->mla_eps (1e-6), the layer
 *     norms f->eps.
 *  3. RoPE on the last qk_rope_head_dim elements of every q head and on the
 *     single shared k_pe (the last rows of kv_a's output), interleaved pairs
 *     (2i, 2i+1) (half-split when f->interleave is 0), positions 0..T-1 per
 *     sequence, cos/sin times f->attn_factor.
 *  4. Scores (q_nope.k_nope + q_pe.k_pe) * f->mla_scale, causal softmax in
 *     f32; heads concatenated [n, nh * v_head_dim].
 */
#ifndef FS_MLA_H
#define FS_MLA_H

#include "src/models/forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activations of one batch of n rows. */
typedef struct fs_mla_buf {
    float *cq;               /* [n, qr]: norm(x W_q_a^T) (q LoRA only) */
    float *q;                /* [n, nh * (nope + rope)] */
    float *ckv;              /* [n, kvr + rope]: x W_kv_a^T (k_pe roped in place) */
    float *c;                /* [n, kvr]: norm(c) */
    float *kv;               /* [n, nh * (nope + vh)] */
    float *att;              /* [n, nh * vh] */
} fs_mla_buf;

fs_status fs_mla_buf_new(fs_ctx *ctx, const fs_fwd *f, int64_t n, fs_mla_buf *b);
void fs_mla_buf_free(fs_mla_buf *b);

/* Slots of invariant 1. */
int fs_mla_slot_kvb(const fs_fwd *f);
int fs_mla_slot_o(const fs_fwd *f);

/* From xn = input_layernorm(x) [n, H]: b->cq (q LoRA) and b->ckv, b->c (the
 * inputs of q_b and kv_b). */
void fs_mla_latents(const fs_fwd *f, const fs_lw *w, const float *xn, int64_t n, fs_mla_buf *b);
/* After fs_mla_latents: q, kv, rope, attention -> b->att (nseq sequences of T
 * tokens; xn needed for q_proj without q LoRA).  Errors: FS_ERR_NOMEM. */
fs_status fs_mla_attend(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, const float *xn, int64_t nseq,
                        int64_t T, fs_mla_buf *b);

/* Whole DeepSeek decoder layer in place on x [n, H] (dense MLP or MoE with
 * shared experts; scratch allocated inside). */
fs_status fs_mla_layer(fs_ctx *ctx, const fs_fwd *f, const fs_lw *w, float *x, int64_t nseq, int64_t T);

#ifdef __cplusplus
}
#endif

#endif
