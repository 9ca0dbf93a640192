/* plan.h: the memory, I/O and time model of a quantize run, computed from the
 * model description (model.h) without running anything: per decoder layer the
 * bytes read and written, the Hessians, the calibration activations, the
 * peak host and GPU memory, how many routed experts' Hessians fit at once
 * (expert "waves") and an estimated time; and the smallest budgets that can
 * hold the largest layer.  `forge-stream plan` prints it; `quantize` uses
 * fs_plan_compute to refuse a budget before any work.
 *
 * The model (every byte count is decimal-unit bytes; T = samples x seq_len
 * calibration tokens, ab = bytes per activation, B = min(batch_tokens, T)):
 *  1. read     = the layer's bytes on disk (exact from a checkpoint, else
 *                estimated from config.json: torch_dtype, FP8 block scales).
 *  2. act      = T x hidden x ab (x act_sets), the layer boundary kept in host memory; a MoE
 *                layer also holds the routing (T x top_k x 8).  When the host
 *                budget cannot hold the boundary it is spilled (stream/spill.h):
 *                two windows read ahead and two written behind, streamed from
 *                the work folder once per pass (extra disk traffic: every pass
 *                reads it, the mid-layer move and the layer's end write it).
 *  3. hessian  = the largest input group's [in, in] f32.
 *  4. solver   = U [in, in] f32 + W copy, dequant (f32) and codes (u8)
 *                [out, in] + qmeta [out, ceil(in/G), 4] of the largest linear.
 *  5. experts  = each routed expert needs its f32 weights and the largest of
 *                its Hessians ([H, H] for gate/up, [Ie, Ie] for down);
 *                experts_per_wave = what fits in the compute memory (GPU with
 *                --gpu-mem, host otherwise) beside the rest; waves =
 *                ceil(experts / experts_per_wave); every wave is two passes
 *                over the tokens.
 *  6. scratch  = batch x 4 x (2 hidden + the outputs of the dense linears (or
 *                of one expert) + the widest dense input); the batch is
 *                batch_tokens, or fewer whole windows (at least one) when the
 *                budget needs it; expert waves are sized first (beside a
 *                one-window batch), the batch gets what is left.
 *     host     = prefetch ring (this layer's and the next layer's raw bytes)
 *                + activations + (CPU backend) every f32 weight of the layer
 *                (the CPU path decodes a layer at once, experts included, so a
 *                wave there holds only its Hessians and codes) + scratch of
 *                one batch + max(dense Hessian + solver, wave of experts +
 *                solver); with a GPU those last terms are GPU memory instead
 *                (dense f32 weights, and each wave's experts uploaded with it).
 *  7. flops    = Hessians T_g x in^2 per group (T_g = T x top_k / E for an
 *                expert), Cholesky + inverse in^3 per group, GPTQ out x in^2
 *                per linear, forward 2 x (2 T_l out in) per linear plus
 *                attention 2 x (2 samples seq_len^2 width).
 *  8. seconds  = max(io, compute) per layer: the prefetcher overlaps reading
 *                layer L+1 with computing layer L; io = (read + written +
 *                spill traffic) / disk rate, compute = flops / rate (+ PCIe traffic
 *                on a GPU).  The total adds the embeddings and the first
 *                layer's read, which nothing overlaps.
 *
 * Ownership: fs_plan_compute fills a caller's fs_plan whose layers it
 * allocates; fs_plan_free releases them (accepts NULL and zeroed plans).
 */
#ifndef FS_PLAN_H
#define FS_PLAN_H

#include <stdio.h>

#include "src/models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_BATCH_TOKENS_DEFAULT 65536   /* tokens of one forward batch at most */
#define FS_PLAN_HOST_MARGIN 0.10      /* detected host memory less this fraction */
#define FS_PLAN_CPU_TFLOPS 0.2        /* default effective rates */
#define FS_PLAN_GPU_TFLOPS 50.0        /* F32 GEMMs: the solver and Hessians are F32, TF32 off */

typedef struct fs_plan_opts {
    int64_t samples, seq_len;  /* calibration windows, tokens per window */
    int act_bytes;             /* 2 (bf16) or 4 (f32) */
    int act_sets;              /* boundaries held at once: 2 for eval --base (the
                                  original's and the quantized one's); 0 or 1 = one */
    uint64_t host_mem;         /* bytes; 0 = detect (physical less FS_PLAN_HOST_MARGIN) */
    uint64_t gpu_mem;          /* bytes; 0 = CPU backend (no GPU memory planned) */
    double disk_gbps;          /* disk rate, 1e9 B/s (reads and writes share it) */
    double tflops;             /* effective compute rate; 0 = default of the backend */
    double pcie_gbps;          /* host <-> GPU rate, 1e9 B/s */
    int bits;                  /* output bits (size of what is written) */
    int64_t group_size;        /* -1 or a multiple of 32 */
    int64_t batch_tokens;      /* tokens of one scratch batch at most (fewer whole
                                  windows when the budget needs it) */
    uint64_t fwd_tok_bytes, fwd_fixed_bytes;   /* GPU: the forward's batch buffers per token and
                                  beside (fs_fwd_ws_bytes; quantize gives them), 0 = estimated */
    /* storage assumed when no checkpoint is given (fs_plan_opts_from_config) */
    int wbytes;                /* bytes per element of non-FP8 tensors */
    int fp8_block[2];          /* block of FP8 decoder linears, {0, 0} = not FP8 */
} fs_plan_opts;

typedef struct fs_plan_layer {
    int index;
    int moe, mtp;              /* MTP layers are copied through: read + written only */
    int spilled;               /* activations streamed from disk (host budget) */
    int experts, experts_per_wave, waves;   /* 0 for dense layers */
    uint64_t read_bytes;       /* on disk */
    uint64_t write_bytes;      /* quantized output, copies, activation checkpoint */
    uint64_t w32_bytes;        /* every weight of the layer as f32 */
    uint64_t hess_bytes;       /* largest Hessian [in, in] f32 */
    uint64_t solver_bytes;     /* solver buffers of the largest linear */
    uint64_t act_bytes;        /* T x hidden x act bytes (the boundary) */
    uint64_t scratch_bytes;    /* activations of one batch */
    int64_t batch_tokens;      /* tokens of that batch */
    uint64_t expert_bytes;     /* per routed expert in a wave: f32 weights + Hessian */
    uint64_t host_peak, gpu_peak;   /* under the budgets (gpu 0 on the CPU backend) */
    uint64_t host_min, gpu_min;     /* the least that holds this layer */
    double hess_flops, chol_flops, gptq_flops, fwd_flops;
    double io_s, compute_s, est_s;
} fs_plan_layer;

typedef struct fs_plan {
    char model_type[64];
    int exact;                 /* bytes on disk from a checkpoint (1) or estimated (0) */
    int gpu;                   /* GPU backend (a --gpu-mem was given) */
    int host_detected;         /* host budget detected, not given */
    fs_plan_opts opts;         /* as used: budgets and rate resolved */
    int64_t tokens;            /* samples x seq_len */
    int nlayers;               /* rows: decoder layers then MTP layers */
    fs_plan_layer *layers;
    uint64_t global_bytes;     /* embeddings, final norm, lm_head */
    uint64_t read_bytes, write_bytes;        /* totals, globals included */
    uint64_t host_peak, gpu_peak;            /* maxima over the layers */
    uint64_t host_min, gpu_min;              /* maxima of the minima */
    int host_min_layer, gpu_min_layer;       /* the layer that sets them */
    int max_waves;
    double first_read_s, total_s;
} fs_plan;

/* Defaults: 128 x 2048 tokens, bf16 activations, budgets 0 (detect / CPU),
 * 7 GB/s disk, 25 GB/s PCIe, 4 bits g128, 65536-token batches, bf16 storage.
 * Cannot fail. */
void fs_plan_opts_default(fs_plan_opts *o);
/* Storage of a checkpoint that is not there: wbytes from "torch_dtype" (or
 * "dtype"; bf16 when absent), fp8_block from an FP8 "quantization_config"
 * (weight_block_size, 128 x 128 when absent).  Errors: FS_ERR_FORMAT for an
 * unknown dtype or a malformed block size, naming `where`. */
fs_status fs_plan_opts_from_config(fs_ctx *ctx, fs_plan_opts *o, const void *config,
                                   const char *where);
/* Computes the plan of m under o; c (may be NULL) gives the exact bytes on
 * disk.  Errors: FS_ERR_USAGE for bad options, sizes that overflow, or a
 * budget that cannot hold the largest layer ("the largest layer
 * (model.layers.N) needs X of host memory (--host-mem Y given)"), leaving
 * *p zeroed; FS_ERR_NOMEM. */
fs_status fs_plan_compute(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c,
                          const fs_plan_opts *o, fs_plan *p);
void fs_plan_free(fs_plan *p);
/* The aligned table: one line per layer, totals, assumptions.  Cannot fail
 * (write errors are the stream's). */
void fs_plan_print(const fs_plan *p, FILE *f);
/* The plan as JSON text (*out malloc'ed, caller frees).  Errors: FS_ERR_NOMEM. */
fs_status fs_plan_json(fs_ctx *ctx, const fs_plan *p, char **out);
/* "1.23 GB" style (decimal units, 3 significant digits) into buf. */
const char *fs_plan_fmt_bytes(char *buf, size_t n, uint64_t bytes);
/* Disk a quantize run needs: *out for the output checkpoint, *work for the
 * work folder (three activation boundaries: the journal's state and the one
 * before it each name one, and the next is written before the oldest goes;
 * two more, the raw spill files, when spill is set or a layer is spilled).
 * Returns whether those two were counted.  Cannot fail. */
int fs_plan_disk(const fs_plan *p, int spill, uint64_t *out, uint64_t *work);

#ifdef __cplusplus
}
#endif

#endif
