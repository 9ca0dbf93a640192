/* opts.c: quantization options: defaults and range checks. */
#include "src/quant/quant.h"

void fs_quant_opts_default(fs_quant_opts *q)
{
    q->bits = 4;
    q->sym = 1;
    q->group_size = 128;
    q->grid = FS_GRID_ABSMAX;
    q->shrink = 0.2f;
    q->grid_n = 100;
    q->norm = 2.4f;
    q->act_order = 0;
    q->static_groups = 0;
    q->block = 128;
    q->damp = 0.01;
    q->rtn = 0;
    q->gptq_v1 = 0;
    q->loss_f32 = 0;
    q->refine_scales = 0;
    q->hmse_weight = FS_HMSE_OBS;
    q->preset_best = 0;
}

fs_status fs_quant_opts_check(fs_ctx *ctx, const fs_quant_opts *q)
{
    if (q->bits != 2 && q->bits != 3 && q->bits != 4 && q->bits != 8)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--bits %d: must be 2, 3, 4 or 8", q->bits);
    if (q->group_size != -1 && (q->group_size <= 0 || q->group_size % 32 != 0))
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "--group-size %lld: must be a positive multiple of 32, or -1",
                          (long long)q->group_size);
    if (q->grid_n < 1 || q->grid_n > 65536)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--grid-n %d: must be in 1..65536", q->grid_n);
    if (!(q->shrink > 0.0f && q->shrink <= 1.0f))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--grid-shrink %g: must be in (0, 1]",
                          (double)q->shrink);
    if (!(q->norm > 0.0f) || q->norm > 1e6f)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--grid-norm %g: must be > 0", (double)q->norm);
    if (q->refine_scales < 0 || q->refine_scales > 16)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--refine-scales %d: must be in 0..16", q->refine_scales);
    if (q->block < 1)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--block %d: must be >= 1", q->block);
    if (!(q->damp >= 0.0) || q->damp > 1e6)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--damp %g: must be >= 0", q->damp);
    return FS_OK;
}

void fs_quant_preset_best(fs_quant_opts *q)
{
    q->grid = FS_GRID_HMSE;              /* keep FS_PRESET_BEST_FLAGS in step */
    q->hmse_weight = FS_HMSE_OBS;
    q->refine_scales = 3;
    q->preset_best = 1;
}

const char *fs_grid_name(fs_grid_kind k)
{
    return k == FS_GRID_HMSE ? "hmse" : k == FS_GRID_MSE ? "mse" : "absmax";
}

int64_t fs_ngroups(int64_t in, int64_t group_size)
{
    if (group_size <= 0 || group_size >= in) return 1;
    return (in + group_size - 1) / group_size;
}

int64_t fs_group_width(int64_t in, int64_t group_size)
{
    if (group_size <= 0 || group_size >= in) return in;
    return group_size;
}
