/* model.h: one model description built from config.json for the families of
 * ARCHITECTURES.md (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe,
 * qwen3_moe, deepseek_v2, deepseek_v3; kimi_k2 is deepseek_v3): per decoder
 * layer its linears in quantization order with the input group each belongs
 * to (linears of one group share an input, hence one Hessian), its experts
 * and routers, the other tensors it holds; the tensors outside the layers;
 * DeepSeek's dense first layers and MTP layers (copied through, never
 * quantized). */
#ifndef FS_MODEL_H
#define FS_MODEL_H

#include "src/formats/ckpt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_mtensor {
    char *name;              /* full tensor name */
    int ndim;
    int64_t shape[2];
    int optional;            /* may be absent (e.g. e_score_correction_bias) */
} fs_mtensor;

typedef struct fs_mlinear {
    char *name;              /* base name: the weight is name + ".weight" */
    int64_t out, in;
    int group;               /* input group within the layer, in quantization order */
    int expert;              /* routed expert index, -1 otherwise */
    int bias;                /* name + ".bias" exists (copied through) */
} fs_mlinear;

typedef struct fs_mlayer {
    int index;
    int moe;                 /* has routed experts */
    int mtp;                 /* index >= num_hidden_layers: copied through */
    int nlin, ngroups;
    fs_mlinear *lin;
    int nother;
    fs_mtensor *other;       /* norms, routers, biases: copied in their dtype */
} fs_mlayer;

/* RoPE as config.json sets it (rope_theta, rope_scaling or rope_parameters;
 * ARCHITECTURES.md §2.4), every number type- and range-checked. */
typedef enum fs_rope_type {
    FS_ROPE_DEFAULT, FS_ROPE_LINEAR, FS_ROPE_DYNAMIC, FS_ROPE_LLAMA3, FS_ROPE_YARN
} fs_rope_type;

typedef struct fs_mrope {
    fs_rope_type type;
    double theta;            /* rope_theta, > 1 (10000 when unsaid) */
    double factor;           /* rope_scaling.factor, > 0 (1 when unsaid) */
    double low, high;        /* llama3: low_freq_factor < high_freq_factor, both > 0 */
    double orig_max;         /* original_max_position_embeddings, > 0; yarn: 0 when unsaid
                                (then max_position_embeddings / factor) */
    double beta_fast, beta_slow;   /* yarn: > 0, beta_fast >= beta_slow */
    double mscale, mscale_all_dim; /* yarn: >= 0 (0 when unsaid) */
    double attention_factor;       /* yarn: > 0, 0 when unsaid */
    int truncate;                  /* yarn: the correction range rounded (unless false) */
} fs_mrope;

/* Every number of config.json the forward uses (forward.c, mla.c, moe.c),
 * read once by fs_model_from_config with its type and range checked, so no
 * command starts work on a config that the forward cannot run (§8). */
typedef struct fs_mfwd {
    int64_t nh, nkv, hd;     /* heads, kv heads (nh % nkv == 0), head_dim (even, >= 2);
                                DeepSeek: hd = qk_rope_head_dim, nkv = nh */
    double eps;              /* rms_norm_eps, in [1e-30, 1) (1e-6 when unsaid) */
    int64_t max_pos;         /* max_position_embeddings, >= 1 (2^30 when unsaid) */
    int64_t window;          /* mistral / mixtral sliding_window, 0 = none */
    int norm_topk;           /* renormalise the top-k router weights */
    fs_mrope rope;
    /* DeepSeek MLA (ARCHITECTURES.md §5): q_lora_rank (0: q_proj), kv_lora_rank,
     * qk_nope_head_dim, qk_rope_head_dim, v_head_dim; rope_interleave */
    int64_t qr, kvr, nope, rope_dim, vh;
    int interleave;
    /* DeepSeek routing: v3 sigmoid + noaux_tc, v2 softmax + greedy or
     * group_limited_greedy (group_limited); n_group / topk_group (1 / 1 without a
     * group limit); routed_scaling_factor (> 0) */
    int group_limited;
    int64_t n_group, topk_group;
    double rsf;
} fs_mfwd;

typedef struct fs_model {
    char family[32];         /* normalised model_type */
    char model_type[64];     /* as written in config.json */
    int64_t hidden, vocab;
    int nlayers;             /* decoder layers of the forward */
    int nmtp;                /* extra (MTP) layers after them */
    int tied;
    int experts, top_k;      /* 0 for dense families */
    fs_mlayer *layers;       /* nlayers + nmtp */
    int nglobal;
    fs_mtensor *global;      /* embeddings, final norm, lm_head */
    fs_mfwd fwd;             /* the forward's numbers, checked */
} fs_model;

/* From a parsed config.json (a json_t *).  `where` names the file in errors.
 * Every key the description or the forward reads is checked for type and
 * range before anything is built (a number given as a string is an error,
 * never a silent default; no double is cast to an integer or a float
 * outside its range): sizes, layer counts, heads, rms_norm_eps, rope_theta,
 * rope_scaling, max_position_embeddings, sliding_window, routing (top-k,
 * n_group, topk_group, routed_scaling_factor), booleans, hidden_act.
 * Errors: FS_ERR_FORMAT for an unknown model_type (listing the supported
 * ones), missing fields (listing them) or the first invalid key (named with
 * its path, e.g. "rope_scaling.factor", the rule and the value found);
 * FS_ERR_NOMEM. */
fs_status fs_model_from_config(fs_ctx *ctx, const void *config, const char *where,
                               fs_model **out);
void fs_model_free(fs_model *m);             /* accepts NULL */
/* The one header-level validation of a checkpoint against its description
 * (quantize, eval, plan, inspect; nothing but headers is read):
 *  - every described tensor present (unless optional) with its shape;
 *  - linear weights F32, F16, BF16 or F8_E4M3, or (with FS_CHECK_QUANTIZED,
 *    when config.json has a forge / gptq quantization_config) the quantized
 *    set of fs_qread_check of the described [out, in]; never both;
 *  - embeddings and lm_head float (F8_E4M3 allowed), norms, routers, biases
 *    and e_score_correction_bias F32, F16 or BF16;
 *  - every F8_E4M3 tensor of the checkpoint, described or not (MTP layers,
 *    copied ones), with its scale (fs_ckpt_check_fp8).
 * Without FS_CHECK_QUANTIZED a quantized checkpoint is refused (quantize
 * reads unquantized ones).  Errors: FS_ERR_FORMAT naming the file, the
 * tensor and what is wrong; FS_ERR_NOMEM.  NaN/Inf in the data need the whole
 * model read: inspect --verify does that. */
enum { FS_CHECK_QUANTIZED = 1 };
fs_status fs_model_validate(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c, int flags);
/* fs_model_validate(ctx, m, c, 0): a source checkpoint (quantize, plan). */
fs_status fs_model_check(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c);
/* The linear whose weight is `tensor` (name + ".weight"), or NULL; *layer
 * gets its layer. Linear search of the layer named by the tensor. */
const fs_mlinear *fs_model_linear_of(const fs_model *m, const char *tensor, const fs_mlayer **layer);
/* 1 when config.json (a json_t *, may be NULL) names a supported model_type. */
int fs_model_type_known(const void *config);
/* Supported model_type values, comma separated. */
extern const char fs_model_types[];

#ifdef __cplusplus
}
#endif

#endif
