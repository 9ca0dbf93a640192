/* serving.c: the engines' loading rules (serving.h; specifications.md §9.4
 * states them with their sources).  The rules are what the engines' loaders
 * check at tensor-parallel size 1; a larger TP divides `in` of row-parallel
 * and `out` of column-parallel linears first, which these lines do not try. */
#include <stdio.h>
#include <string.h>

#include "src/cli/serving.h"

int fs_serving_parse(const char *s)
{
    if (!strcmp(s, "vllm")) return FS_SERVE_VLLM;
    if (!strcmp(s, "sglang")) return FS_SERVE_SGLANG;
    if (!strcmp(s, "any")) return FS_SERVE_ANY;
    return -1;
}

static int quantized(const fs_serve_q *s, const fs_mlayer *L, int i)
{
    return !L->mtp && (!s->experts_only || L->lin[i].expert >= 0);
}

/* Marlin's group sizes (vLLM utils/marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES,
 * SGLang the same through its gptq.py / marlin_utils.py). */
static int marlin_group(int64_t g)
{
    return g == -1 || g == 32 || g == 64 || g == 128;
}

/* Marlin's dense shape rule (marlin_utils.py check_marlin_supports_shape):
 * out % 64, in % 128, in % group. */
static int marlin_dense_shape(int64_t out, int64_t in, int64_t g)
{
    return out % 64 == 0 && in % 128 == 0 && (g == -1 || in % g == 0);
}

/* Marlin MoE (marlin_utils.py check_moe_marlin_supports_layer): hidden % 128,
 * intermediate % max(64, group). */
static int marlin_moe_shape(const fs_mlinear *x, int64_t g)
{
    int down = strstr(x->name, "down_proj") || (strlen(x->name) > 3 && !strcmp(x->name + strlen(x->name) - 3, ".w2"));
    int64_t hidden = down ? x->out : x->in, inter = down ? x->in : x->out, k = g > 64 ? g : 64;
    return hidden % 128 == 0 && inter % k == 0;
}

static fs_serve_level worse(fs_serve_level a, fs_serve_level b)
{
    return a > b ? a : b;
}

/* One linear in one engine.  why gets the rule when the level is not fast. */
static fs_serve_level judge1(const fs_serve_q *s, const fs_mlinear *x, int engine, char *why, size_t n)
{
    const int moe = x->expert >= 0, vllm = engine == FS_SERVE_VLLM;
    const int pf = 32 / s->bits, mtype = (s->bits == 4 || s->bits == 8) && s->sym;
    const char *eng = vllm ? "vllm" : "sglang";
    if (s->fmt == FS_FMT_FORGE) {
        snprintf(why, n, "quant_method \"forge\" is forge-stream's own format: no engine reads it "
                 "(use --format gptq or compressed-tensors)");
        return FS_SERVE_NO;
    }
    if (x->in % pf != 0) {
        snprintf(why, n, "%s: in %lld is not a multiple of %d (int32 pack width at %d bits): the loaders create "
                 "in / %d packed rows", x->name, (long long)x->in, pf, s->bits, pf);
        return FS_SERVE_NO;
    }
    if (s->fmt == FS_FMT_GPTQ) {
        if (vllm && s->dyn_groups) {
            snprintf(why, n, "desc_act true (dynamic act-order groups): vLLM >= 0.32 refuses \"GPTQ group activation "
                     "ordering (desc_act=True)\" (vllm/model_executor/layers/quantization/gptq_marlin.py); use "
                     "--static-groups or --format compressed-tensors");
            return FS_SERVE_NO;
        }
        if (mtype && marlin_group(s->group_size) && (moe ? marlin_moe_shape(x, s->group_size)
                                                          : marlin_dense_shape(x->out, x->in, s->group_size)))
            return FS_SERVE_FAST;
        if (moe) {
            if (!vllm) {
                snprintf(why, n, "%s: not Marlin-compatible (sym 4/8-bit, group -1/32/64/128, Marlin shapes) and "
                         "SGLang's plain GPTQ has no MoE method (python/sglang/srt/layers/quantization/gptq.py)",
                         x->name);
                return FS_SERVE_NO;
            }
            if (s->bits == 4 || s->bits == 8) {
                snprintf(why, n, "%s: not Marlin-compatible (sym 4/8-bit, group -1/32/64/128, Marlin shapes): "
                         "MoE WNA16 fallback (vllm/.../quantization/moe_wna16.py)", x->name);
                return FS_SERVE_FALLBACK;
            }
            snprintf(why, n, "%s: %d-bit MoE: neither GPTQ Marlin MoE nor MoE WNA16 (4/8-bit) takes it "
                     "(vllm/.../quantization/gptq_marlin.py, moe_wna16.py)", x->name, s->bits);
            return FS_SERVE_NO;
        }
        snprintf(why, n, "%s: not Marlin-compatible (GPTQMarlinConfig.TYPE_MAP: sym 4/8-bit; group -1/32/64/128; "
                 "out %% 64, in %% 128): plain GPTQ kernels (%s .../quantization/gptq.py)", x->name, eng);
        return FS_SERVE_FALLBACK;
    }
    /* compressed-tensors pack-quantized: the WNA16 scheme */
    if (s->bits != 4 && s->bits != 8) {
        snprintf(why, n, "%d-bit: the WNA16 scheme takes 4 and 8 bits only (%s compressed_tensors/schemes/"
                 "compressed_tensors_wNa16.py WNA16_SUPPORTED_BITS)", s->bits, eng);
        return FS_SERVE_NO;
    }
    if (moe) {
        if (!s->sym) {
            snprintf(why, n, "asymmetric MoE: the WNA16 Marlin MoE method asserts \"Only symmetric quantization is "
                     "supported for MoE\" (%s .../compressed_tensors/compressed_tensors_moe.py)%s", eng,
                     vllm ? "; newer vLLM has a zero-point WNA16 MoE path" : "");
            return vllm ? FS_SERVE_FALLBACK : FS_SERVE_NO;
        }
        if (marlin_group(s->group_size) && marlin_moe_shape(x, s->group_size)) return FS_SERVE_FAST;
        snprintf(why, n, "%s: not Marlin MoE-compatible (group -1/32/64/128, hidden %% 128, intermediate %% "
                 "max(64, group)): %s", x->name, vllm ? "WNA16 MoE fallback (compressed_tensors_moe.py)"
                 : "no other WNA16 MoE method (compressed_tensors_moe.py)");
        return vllm ? FS_SERVE_FALLBACK : FS_SERVE_NO;
    }
    if (marlin_group(s->group_size) && marlin_dense_shape(x->out, x->in, s->group_size)) return FS_SERVE_FAST;
    snprintf(why, n, "%s: not Marlin-compatible (group -1/32/64/128, out %% 64, in %% 128): another mixed-precision "
             "kernel if the platform has one (choose_mp_linear_kernel)", x->name);
    return FS_SERVE_FALLBACK;
}

fs_serve_level fs_serve_judge(const fs_serve_q *s, const fs_model *m, int engine, char *why, size_t n)
{
    fs_serve_level lv = FS_SERVE_FAST;
    char w[600];
    why[0] = '\0';
    for (int l = 0; l < m->nlayers; l++)
        for (int i = 0; i < m->layers[l].nlin; i++) {
            if (!quantized(s, &m->layers[l], i)) continue;
            fs_serve_level x = judge1(s, &m->layers[l].lin[i], engine, w, sizeof w);
            if (x > lv) snprintf(why, n, "%s", w);
            lv = worse(lv, x);
        }
    return lv;
}

static const char *level_name(fs_serve_level l)
{
    return l == FS_SERVE_FAST ? "fast path" : l == FS_SERVE_FALLBACK ? "loads, fallback kernels" : "will not load";
}

fs_status fs_serve_report(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m, int require)
{
    static const int engines[2] = {FS_SERVE_VLLM, FS_SERVE_SGLANG};
    static const char *names[2] = {"vLLM", "SGLang"};
    char why[2][700];
    fs_serve_level lv[2];
    for (int e = 0; e < 2; e++) {
        lv[e] = fs_serve_judge(s, m, engines[e], why[e], sizeof why[e]);
        fs_log(ctx, "serving: %s: %s%s%s", names[e], level_name(lv[e]), lv[e] == FS_SERVE_FAST ? "" : ": ",
               lv[e] == FS_SERVE_FAST ? (m->experts ? " (dense and MoE)" : "") : why[e]);
    }
    for (int e = 0; e < 2; e++)
        if ((require & engines[e]) && lv[e] == FS_SERVE_NO)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "--serving %s: %s would not load this checkpoint: %s",
                              e ? "sglang" : "vllm", names[e], why[e]);
    if ((require & FS_SERVE_ANY) && lv[0] == FS_SERVE_NO && lv[1] == FS_SERVE_NO)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--serving any: neither vLLM (%s) nor SGLang (%s) would load this "
                          "checkpoint", why[0], why[1]);
    return FS_OK;
}

fs_status fs_format_check(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m)
{
    if (s->fmt == FS_FMT_CT && s->dyn_groups)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--format compressed-tensors with --act-order needs --static-groups: "
                          "compressed-tensors (0.20) removed dynamic groups (actorder \"group\": \"has been removed. "
                          "Consider using actorder='weight'\"); with --static-groups the output says actorder "
                          "\"weight\"");
    if (s->fmt != FS_FMT_CT || s->group_size == -1) return FS_OK;
    for (int l = 0; l < m->nlayers; l++)
        for (int i = 0; i < m->layers[l].nlin; i++) {
            const fs_mlinear *x = &m->layers[l].lin[i];
            if (quantized(s, &m->layers[l], i) && x->in > s->group_size && x->in % s->group_size != 0)
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--format compressed-tensors: %s.weight: in %lld is not a "
                                  "multiple of --group-size %lld; the format's groups are whole (compressed-tensors "
                                  "refuses a partial last group): use a group size dividing %lld, or -1",
                                  x->name, (long long)x->in, (long long)s->group_size, (long long)x->in);
        }
    return FS_OK;
}

void fs_serve_warn(fs_ctx *ctx, const fs_serve_q *s, const fs_model *m)
{
    if (s->fmt == FS_FMT_FORGE) return;
    const int pf = 32 / s->bits;
    const fs_mlinear *first = NULL;
    int count = 0;
    for (int l = 0; l < m->nlayers; l++)
        for (int i = 0; i < m->layers[l].nlin; i++)
            if (quantized(s, &m->layers[l], i) && m->layers[l].lin[i].in % pf != 0) {
                if (!first) first = &m->layers[l].lin[i];
                count++;
            }
    if (first)
        fs_log(ctx, "warning: %s.weight: in %lld is not a multiple of %d (the int32 pack width at %d bits; %d "
               "linear%s like it in all): the %s checkpoint stores them, but no loader accepts it (vLLM, SGLang, "
               "transformers read in / %d packed rows)", first->name, (long long)first->in, pf, s->bits, count,
               count == 1 ? "" : "s", fs_format_name(s->fmt), pf);
}
