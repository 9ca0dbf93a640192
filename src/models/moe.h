/* moe.h: the Mixture-of-Experts block of mixtral, qwen2_moe and qwen3_moe
 * (ARCHITECTURES.md §4.3) on the CPU: the router, the routed experts combined
 * with the router weights, qwen2_moe's shared expert behind its sigmoid gate;
 * and what the quantize pipeline reports about expert calibration (tokens
 * per expert, the policy for under-calibrated experts).
 *
 * Invariants:
 *  1. Router: logits = x Wgate^T, softmax in f32 over all E experts, top-k by
 *     probability; ties go to the lower expert index (a strict comparison
 *     walking the experts in index order), so routing is deterministic.
 *  2. Weights w_k = p_k; divided by sum_k p_k when f->norm_topk (mixtral
 *     always; qwen*_moe when config.json says norm_topk_prob), no epsilon.
 *  3. Experts are combined in expert-index order per token, then qwen2_moe's
 *     sigmoid(x . shared_expert_gate) * SharedMLP(x) is added (DeepSeek's
 *     shared experts: weight 1).  DeepSeek routing: fs_moe_route_ex.
 */
#ifndef FS_MOE_H
#define FS_MOE_H

#include "src/models/forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the pipeline does with an expert that received fewer than
 * --min-expert-tokens calibration tokens (experts with none always count). */
typedef enum fs_expert_policy {
    FS_EXPERT_ALL_TOKENS = 0, /* its gate/up Hessian from every token of the layer, its down
                                 Hessian from every token through its quantized gate/up */
    FS_EXPERT_RTN = 1,        /* gate, up and down rounded to nearest on the grid */
    FS_EXPERT_SHARED = 2      /* gate/up from the layer's full-input Hessian (the one of all
                                 tokens, already built); down has no layer-wide Hessian in its
                                 own intermediate space, so it is rounded to nearest */
} fs_expert_policy;

/* Default --min-expert-tokens.  256: the default calibration (128 x 2048
 * tokens) gives each expert a fair share of >= 16k tokens even for the
 * widest released routing (top-8 of 128 experts), so a healthy expert is
 * never flagged, while below 256 rows the gate/up Hessian has rank < 256 of
 * thousands of columns and GPTQ's error compensation fits a handful of tokens
 * (it can do worse than RTN on unseen text). */
#define FS_MIN_EXPERT_TOKENS_DEFAULT 256
/* Default policy: all-tokens gives a full-rank Hessian from the layer's real
 * input distribution (what llm-compressor's moe_calibrate_all_experts does for
 * every expert) at the cost of one more pass for that expert only. */
#define FS_EXPERT_POLICY_DEFAULT FS_EXPERT_ALL_TOKENS

const char *fs_expert_policy_name(fs_expert_policy p);   /* "all-tokens", "rtn", "shared" */
/* "rtn" | "all-tokens" | "shared" -> *p; -1 for anything else. */
int fs_expert_policy_parse(const char *s, fs_expert_policy *p);

/* Routing of n rows xn [n, H] by the family's router f->route (src/forward/block-moe.c,
 * on a cpu backend of its own; moe.h's invariants 1-2 for mixtral and qwen*_moe), DeepSeek's (ARCHITECTURES.md
 * §5.5), bias = deepseek_v3's e_score_correction_bias [E] (NULL: zeros):
 *  - scores s: softmax (v2) or sigmoid (v3) of the f32 logits; selection
 *    score c = s + bias (v3), c = s (v2);
 *  - n_group > 1: groups of E / n_group consecutive experts scored by the
 *    sum of their two largest c (v3) or their largest c (v2), the topk_group
 *    best kept (ties: lower group), experts of the others excluded;
 *  - top-k by c among the kept experts (ties: lower index), idx in
 *    descending c;
 *  - weights: the unbiased s, v3 divided by (sum + 1e-20) when norm_topk,
 *    then times routed_scaling_factor (v2: never renormalised).
 * Errors: FS_ERR_NOMEM. */
fs_status fs_moe_route_ex(fs_ctx *ctx, const fs_fwd *f, const float *router, const float *bias,
                          const float *xn, int64_t n, int32_t *idx, float *wt);

/* Base name of expert e of layer L, e.g. "model.layers.3.mlp.experts.7"
 * (its gate linear's name without the last component).  Cannot fail. */
void fs_moe_expert_name(const fs_mlayer *L, int e, char *buf, size_t n);

/* Calibration tokens per expert, one entry per MoE layer. */
typedef struct fs_moe_layer_stat {
    int layer;
    int nexp;
    int64_t *count;          /* [nexp] */
    int *under;              /* [nexp] 1 where the policy was applied */
} fs_moe_layer_stat;

typedef struct fs_moe_report {
    fs_expert_policy policy;
    int64_t min_tokens;
    int n;
    fs_moe_layer_stat *l;
} fs_moe_report;

/* Appends a layer (counts copied).  Errors: FS_ERR_NOMEM (report unchanged). */
fs_status fs_moe_report_add(fs_ctx *ctx, fs_moe_report *r, int layer, int nexp, const int64_t *count,
                            const int *under);
void fs_moe_report_free(fs_moe_report *r);   /* the arrays; r itself is the caller's */
/* The quantization_config keys (a new json_t * object, NULL on OOM):
 * "expert_policy", "min_expert_tokens", "expert_tokens" {layer name: {min,
 * median, max, counts}}, "under_calibrated_experts" [expert names]. */
void *fs_moe_report_json(const fs_moe_report *r, const fs_model *m);
/* Median of n counts (mean of the two middle ones when n is even). */
double fs_moe_median(const int64_t *count, int n);

#ifdef __cplusplus
}
#endif

#endif
