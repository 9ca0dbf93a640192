/* qread.h: reading quantized linears back from a checkpoint written in the
 * forge or gptq format (outckpt.h), and plain ones: the decoder used by
 * inspect --dequant, the eval of later issues and the tests.  The decoded
 * weight equals the solver's dequant bit for bit. */
#ifndef FS_QREAD_H
#define FS_QREAD_H

#include "src/formats/outckpt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_qinfo {
    int quantized;           /* quant_method forge, gptq or compressed-tensors (pack-quantized) */
    fs_format fmt;
    int bits;
    int64_t group_size;
    int sym, act_order, static_groups;
} fs_qinfo;

/* From config.json's quantization_config (json_t *, may be NULL): quantized = 0
 * for none or another method (e.g. fp8).  FS_ERR_FORMAT for a forge/gptq
 * config with bad fields. */
fs_status fs_qinfo_from_config(fs_ctx *ctx, const void *config, fs_qinfo *qi);
/* "qweight" (forge, gptq) or "weight_packed" (compressed-tensors) when
 * `base` is stored quantized in c, else NULL. */
const char *fs_qread_main_suffix(const fs_ckpt *c, const char *base);
/* 1 if `base` is stored quantized in c (base + ".qweight" or
 * ".weight_packed" exists). */
int fs_qread_is_quantized(const fs_ckpt *c, const char *base);
/* The header-level check of quantized linear `base` (base + ".qweight" and
 * its partners), nothing read but the headers: forge: qweight U8 [out,
 * ceil(in * bits / 8)] with a valid "in_features:<base>.qweight" in its
 * shard's metadata, qmeta U8 [out, groups, 4], g_idx I32 [in] if present;
 * gptq: g_idx I32 [in], scales F16 [groups, out], qweight I32
 * [ceil(in * bits / 32), out], qzeros I32 [groups, ceil(out * bits / 32)];
 * compressed-tensors: weight_shape I64 (or I32) [2] = {out, in} (its 16
 * bytes are read), weight_packed I32 [out, ceil(in * bits / 32)],
 * weight_scale F32 (or F16 / BF16) [out, groups], weight_zero_point I32
 * [ceil(out * bits / 32), groups] exactly when asymmetric, weight_g_idx
 * I32 [in] if present;
 * groups = fs_ngroups(in, group_size), out and in >= 1.  *out, *in: its
 * shape.  FS_ERR_FORMAT naming the tensor and what is wrong (also when
 * config.json has no forge/gptq quantization_config). */
fs_status fs_qread_check(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t *out,
                         int64_t *in);
/* The weight of linear `base` as f32 [*out, *in] (*W malloc'ed): decoded from
 * forge/gptq tensors, or read from base + ".weight" (FP8 dequantized).
 * FS_ERR_FORMAT naming the tensor for any inconsistent shape, dtype or index
 * (fs_qread_check, then every g_idx value); FS_ERR_NUMERIC naming the linear
 * and the flat index when a value decodes to NaN or Inf. */
fs_status fs_qread_linear(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base,
                          float **W, int64_t *out, int64_t *in);

#ifdef __cplusplus
}
#endif

#endif
