/* pipeline.h: the quantize pipeline (dense and MoE models): calibration tokens go
 * through the model one decoder layer at a time; in each layer the linears
 * are quantized true-sequentially (q/k/v from their shared input; o from the
 * attention output computed with the quantized q/k/v; gate/up; down from the
 * quantized gate/up), and the layer's output computed with its quantized
 * weights is the next layer's input.  Only one layer's weights are resident.
 * A MoE layer quantizes attention the same way, then qwen2_moe's shared
 * expert (gate/up from every token, then down), then each routed expert:
 * gate/up from the rows routed to it, down from its own intermediate rows
 * computed with its quantized gate/up (ARCHITECTURES.md §8); routing is the
 * full-precision router's on the propagated input.
 *
 * The next layer's bytes are prefetched with io_uring while a layer
 * computes, and a writer thread drains the quantized tensors and the layer
 * boundaries (the activation cache of the work folder) behind it. */
#ifndef FS_PIPELINE_H
#define FS_PIPELINE_H

#include "src/models/forward.h"
#include "src/models/moe.h"
#include "src/formats/tokens.h"
#include "src/core/trace.h"
#include "stream/boundary.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_pipe_opts {
    fs_quant_opts q;         /* q.rtn: round to nearest (the baseline), same pipeline */
    int act_f32;             /* keep activations in f32 between layers (default bf16) */
    int64_t batch_tokens;    /* tokens per forward batch (bounds scratch memory) */
    /* (optional) called after each linear is quantized, with the Hessian it
     * used and the result; for tests and reports. */
    void (*on_linear)(void *arg, int layer, const char *name, const float *H, int64_t in,
                      const fs_layer_result *r);
    void *arg;
    const char *work;        /* (optional) folder for the activation cache: the input of
                                the next layer, act-NNNN.fsa, only the latest kept */
    int experts_only;        /* quantize the routed experts only: attention, dense MLPs and
                                shared experts are written as the checkpoint has them (FP8
                                dequantized to BF16) and the forward runs them unquantized */
    int lookahead;           /* (not with the forward on a cpu backend of its own) decode and
                                upload the next layer's weights while this layer's
                                final pass computes (an asynchronous backend: the upload
                                queue then overlaps the compute queue; two layers' weights
                                are held meanwhile) */
    int spill;               /* keep the activations in `work` (stream/spill.h), not in
                                memory: for host budgets that cannot hold a boundary;
                                the output is the same */
    /* MoE: experts with fewer than min_expert_tokens calibration tokens (and
     * always those with none) follow expert_policy; the counts of every MoE
     * layer are appended to moe_report when it is not NULL. */
    fs_expert_policy expert_policy;
    int64_t min_expert_tokens;
    /* experts whose Hessians are accumulated in one pass over the batches
     * (0: all of a layer's); the output does not depend on it */
    int64_t experts_per_wave;
    fs_moe_report *moe_report;
    fs_trace *trace;         /* (optional) where the time goes (src/trace.h) */
    /* Resume: layers before start_layer are done; their outputs (and the
     * global tensors) are already in o, and start_act names the boundary file
     * holding the input of start_layer (NULL when start_layer is 0). */
    int start_layer;
    const char *start_act;
    /* (optional) the journal: after each layer, once everything it wrote is
     * on disk, commit runs on the writer thread (in order with the writes)
     * with a snapshot commit_prep took on the compute thread when the layer
     * ended (e.g. the MoE counts so far; freed by snap_free).  The previous
     * boundary file is removed only after commit returned FS_OK. */
    fs_status (*commit_prep)(fs_ctx *ctx, void *arg, int layers_done, void **snap);
    fs_status (*commit)(fs_ctx *ctx, void *arg, const fs_commit_info *ci);
    void (*snap_free)(void *snap);
    void *commit_arg;
} fs_pipe_opts;

/* Calibration windows: nsamples non-overlapping windows of L tokens; seed 0
 * takes the first ones in file order, another seed a seeded random choice
 * among all of them.  FS_ERR_USAGE when the file has too few (saying how
 * many it has).  *ids is malloc'ed [nsamples * L]. */
fs_status fs_calib_windows(fs_ctx *ctx, const fs_tokens *t, const char *path, int64_t nsamples,
                           int64_t L, uint64_t seed, uint32_t **ids);

/* Runs the pipeline over ids [nseq * T] and writes every tensor to o.  The
 * next layer is read ahead (stream/layerio.h) while a layer computes. */
fs_status fs_pipeline_run(fs_ctx *ctx, fs_ckpt *c, const fs_model *m, const fs_fwd *f,
                          const uint32_t *ids, int64_t nseq, int64_t T, const fs_pipe_opts *po,
                          fs_outckpt *o);

#ifdef __cplusplus
}
#endif

#endif
