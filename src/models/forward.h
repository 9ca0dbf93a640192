/* forward.h: what the decoder forward of every family (llama, mistral,
 * qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2/v3) needs from the
 * model (ARCHITECTURES.md §2-§5): its sizes, rope and routing (fs_fwd) and
 * one layer's weights on the host (fs_lw).  The forward itself, with the
 * capture taps of the quantize pipeline, is src/forward/layer.h.
 *
 * Activations are rows of f32 [n, dim] with n = nseq * T (sequences of T
 * tokens, positions 0..T-1 each, causal attention within a sequence).
 */
#ifndef FS_FORWARD_H
#define FS_FORWARD_H

#include "src/backend/backend.h"
#include "src/formats/qread.h"
#include "src/models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_fwd {
    int64_t H, nh, nkv, hd, inter, V;
    float eps;
    int qkv_bias, o_bias, mlp_bias, qk_norm, tied;
    int64_t window;          /* sliding window (keys per query incl. itself), 0 = none */
    int64_t max_pos;         /* max_position_embeddings */
    float *inv_freq;         /* [hd / 2], after rope scaling */
    float attn_factor;       /* cos/sin multiplier (yarn), else 1 */
    /* MoE (0 for dense families): experts, top-k, renormalise the top-k
     * weights (mixtral always, qwen*_moe per norm_topk_prob), expert width,
     * qwen2_moe shared-expert width (0: none); ffn_max = widest MLP of any layer */
    int64_t E, topk, Ie, Is, ffn_max;
    int norm_topk;
    /* DeepSeek (mla = 1; ARCHITECTURES.md §5): MLA sizes (qr = 0: q_proj, no
     * q LoRA), the softmax scale qk^-0.5 * M(factor, mscale_all_dim)^2, rope
     * on interleaved pairs (2i, 2i+1) unless rope_interleave is false; hd is
     * qk_rope_head_dim there (inv_freq covers the rope part only).  Routing:
     * route = FS_ROUTE_SOFTMAX (mixtral, qwen*_moe), FS_ROUTE_DS_SOFTMAX
     * (deepseek_v2), FS_ROUTE_DS_SIGMOID (deepseek_v3); group_max: v2's
     * group_limited_greedy (group score = max); n_group / topk_group (1/1 when
     * no group limit); rsf: routed_scaling_factor.  Is = the shared experts'
     * width (moe_intermediate_size * n_shared_experts). */
    int mla, interleave;
    int64_t qr, kvr, nope, rope, vh;
    float mla_eps, mla_scale;
    int route, group_max;
    int64_t n_group, topk_group;
    float rsf;
} fs_fwd;
/* f->route: fs_route_kind of src/backend/backend.h. */

/* From the model description of config.json (llama, mistral, qwen2, qwen3,
 * mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3 / kimi_k2): every
 * number comes from m->fwd, which fs_model_from_config type- and
 * range-checked (config is unused, kept for the callers).  Errors:
 * FS_ERR_NOMEM; FS_ERR_FORMAT for a description no forward fits (a family
 * without one, linears that do not match the experts). */
fs_status fs_fwd_init(fs_ctx *ctx, const void *config, const fs_model *m, fs_fwd *f);
void fs_fwd_free(fs_fwd *f);

/* One decoder layer's weights in f32 (NULL where the family has none).
 * Linears before the experts sit in w[] in fs_mlayer order: attention in
 * w[0..g0-1] (o_proj last, at g0 - 1), then the dense MLP or the shared
 * expert(s) (qwen2_moe, DeepSeek) in w[g0..g0+2] (gate, up, down: a dense MLP
 * over every token); the routed experts one array each in ex[3e + 0/1/2]
 * (gate, up, down); the layer's linear i is *fs_lw_weight(w, i).
 * Standard attention: q, k, v, o (g0 = 4).  DeepSeek MLA: q_a_proj,
 * kv_a_proj_with_mqa, q_b_proj, kv_b_proj, o_proj (g0 = 5), or without q
 * LoRA q_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj (g0 = 4). */
#define FS_LW_SLOTS 8
typedef struct fs_lw {
    float *in_norm, *post_norm, *q_norm, *k_norm;
    float *q_a_norm, *kv_a_norm;   /* DeepSeek q_a_layernorm (NULL without q LoRA), kv_a_layernorm */
    float *escb;                   /* deepseek_v3 e_score_correction_bias [E] or NULL */
    int g0;                        /* slot of the MLP's (or shared expert's) gate */
    float *w[FS_LW_SLOTS];   /* [out, in] */
    float *b[FS_LW_SLOTS];   /* their biases or NULL */
    int moe;                 /* number of routed experts (0: dense layer) */
    int e0;                  /* index of the first expert linear (nlin for dense layers) */
    float *router;           /* [E, H] */
    float *sgate;            /* qwen2_moe shared_expert_gate [1, H], else NULL */
    float **ex;              /* [3 E] expert weights */
} fs_lw;
enum { FS_Q, FS_K, FS_V, FS_O, FS_G, FS_U, FS_D };

/* Loads layer l (linears decoded if quantized, FP8 dequantized). */
fs_status fs_lw_load(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const fs_model *m,
                     const fs_fwd *f, int l, fs_lw *w);
void fs_lw_free(fs_lw *w);
/* The slot holding linear i of the layer (see fs_lw).  Cannot fail. */
float **fs_lw_weight(fs_lw *w, int i);

/* Rounds every value of x[n] through BF16 (the activation dtype between layers). */
void fs_fwd_round_bf16(float *x, size_t n);

#ifdef __cplusplus
}
#endif

#endif
