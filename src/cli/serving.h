/* serving.h: whether a checkpoint will load in the serving engines (vLLM,
 * SGLang), judged from the format, the options and the model's shapes by
 * the rules of specifications.md §9.4 (each with its source file in the
 * engine); what a format cannot hold (refused before a run); and the
 * warnings a run gets before it starts.  Used by quantize (before anything
 * is written) and inspect (for an existing checkpoint). */
#ifndef FS_SERVING_H
#define FS_SERVING_H

#include "src/formats/outckpt.h"
#include "src/models/model.h"

#define FS_SERVE_VLLM   1
#define FS_SERVE_SGLANG 2
#define FS_SERVE_ANY    4          /* at least one of them */

typedef enum fs_serve_level { FS_SERVE_FAST = 0, FS_SERVE_FALLBACK = 1, FS_SERVE_NO = 2 } fs_serve_level;

/* What the judgement needs of a run's options or a checkpoint's config. */
typedef struct fs_serve_q {
    fs_format fmt;
    int bits, sym;
    int64_t group_size;
    int dyn_groups;            /* g_idx other than c / G (desc_act / actorder "group") */
    int experts_only;          /* only routed experts quantized */
} fs_serve_q;

/* "--serving vllm|sglang|any" -> FS_SERVE_* (-1: unknown). */
int fs_serving_parse(const char *s);

/* The verdict of one engine (FS_SERVE_VLLM or FS_SERVE_SGLANG): the worst
 * over the model's quantized linears; why: the first rule that decided it. */
fs_serve_level fs_serve_judge(const fs_serve_q *s, const fs_model *m, int engine, char *why, size_t n);

/* Logs one line per engine ("serving: vLLM: fast path (...)"), then, when
 * `require` (FS_SERVE_* bits, 0 = none) names an engine that would not load
 * it, FS_ERR_USAGE saying which rule. */
fs_status fs_serve_report(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m, int require);

/* What the format cannot hold, before a run: compressed-tensors needs every
 * quantized linear's `in` to be a multiple of the group size (or smaller
 * than it), and has no dynamic act-order groups any more (the package's
 * 0.20 refuses actorder "group").  FS_ERR_USAGE naming the tensor / flag. */
fs_status fs_format_check(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m);

/* Warnings before a run: a gptq / compressed-tensors linear whose `in` is
 * not a multiple of the int32 pack width (32 / bits codes; 8 at 4 bits) is
 * stored, but no loader accepts it (they read in / pack rows).  Names the
 * first such tensor and counts them. */
void fs_serve_warn(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m);

#endif
