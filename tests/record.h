/* record.h: what the pipeline suites share to drive the code under test:
 * a recorder of every linear the pipeline solves (its Hessian, losses and
 * dequantized weight), and a quantize run of a generated model into dst.
 * Kept apart from util.h, whose references never call the code under test. */
#ifndef FS_TEST_RECORD_H
#define FS_TEST_RECORD_H

#include <stdint.h>

#include "src/quant/quant.h"
#include "src/models/moe.h"
#include "src/formats/outckpt.h"
#include "src/formats/qread.h"

#define T_MAXREC 128

typedef struct t_rec {
    int n;
    char name[T_MAXREC][128];
    int layer[T_MAXREC];
    double loss[T_MAXREC], rtn[T_MAXREC];
    float *H[T_MAXREC];
    int64_t in[T_MAXREC];
    float *dq[T_MAXREC];
    int64_t dqn[T_MAXREC];
} t_rec;

/* fs_pipe_opts.on_linear: copies what the pipeline reports into a t_rec. */
void t_rec_linear(void *arg, int layer, const char *name, const float *H, int64_t in,
                  const fs_layer_result *r);
void t_rec_free(t_rec *c);
/* The index of name's record; fails the test when there is none. */
int t_rec_find(const t_rec *c, const char *name);
/* name's Hessian, or NULL when it was not recorded. */
const float *t_rec_H(const t_rec *c, const char *name);

/* Quantizes src into dst (fmt) through fs_pipeline_run on the CPU backend:
 * 4-bit, group 32, asymmetric, act-order, F32 activations, batches of 2T
 * tokens (so Hessians accumulate across batches), every linear recorded in r.
 * work may be NULL; with rep, the MoE report (policy pol, minimum minr) is
 * filled and written into the output's metadata. */
void t_run_pipeline(const char *src, const char *dst, fs_format fmt, int64_t nseq, int64_t T,
                    const uint32_t *ids, t_rec *r, const char *work, fs_expert_policy pol,
                    int64_t minr, fs_moe_report *rep);
/* The same with the activations spilled to work (spill, stream/spill.h),
 * batches of `batch` tokens, and only the routed experts quantized
 * (experts_only, --quantize-experts-only). */
void t_run_pipeline_with(const char *src, const char *dst, fs_format fmt, int64_t nseq, int64_t T,
                         const uint32_t *ids, t_rec *r, const char *work, int spill, int64_t batch,
                         int experts_only, fs_expert_policy pol, int64_t minr, fs_moe_report *rep);

/* What the naive forwards read, in double: linear `base` as the checkpoint
 * holds it (dequantized when quantized; *out, *in may be NULL), and tensor
 * `name` (*n, may be NULL, its element count).  A failure fails the test. */
double *t_read_linear(fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t *out, int64_t *in);
double *t_read_tensor(fs_ckpt *c, const char *name, int64_t *n);

#endif
