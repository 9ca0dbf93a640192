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
} fs_model;

/* From a parsed config.json (a json_t *).  `where` names the file in errors.
 * Errors: FS_ERR_FORMAT for an unknown model_type (listing the supported
 * ones) or missing/invalid fields (listing them); FS_ERR_NOMEM. */
fs_status fs_model_from_config(fs_ctx *ctx, const void *config, const char *where,
                               fs_model **out);
void fs_model_free(fs_model *m);             /* accepts NULL */
/* Checks every described tensor against the checkpoint: present (unless
 * optional) with the described shape.  FS_ERR_FORMAT naming the first problem. */
fs_status fs_model_check(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c);
/* The linear whose weight is `tensor` (name + ".weight"), or NULL; *layer
 * gets its layer. Linear search of the layer named by the tensor. */
const fs_mlinear *fs_model_linear_of(const fs_model *m, const char *tensor, const fs_mlayer **layer);
/* Supported model_type values, comma separated. */
extern const char fs_model_types[];

#ifdef __cplusplus
}
#endif

#endif
