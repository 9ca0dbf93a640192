/* resume.h: the journal of a quantize run (src/journal.h holds the file
 * format): creating it when a run starts, committing each layer once all it
 * wrote is durable, sealing the output before the final renames, and
 * restoring an interrupted run from it.
 *
 * Order at each commit (on the writer thread, after the layer's tensors and
 * its activation boundary are written): the output writer's state (staging
 * file fsynced, new shards checksummed), the journal replaced atomically,
 * then the files the new journal no longer needs removed (the staging files
 * of shards it records as sealed, the previous boundary).  A kill at any
 * instant leaves the previous journal or the new one, and every file either
 * names. */
#ifndef FS_RESUME_H
#define FS_RESUME_H

#include "src/models/moe.h"
#include "src/formats/outckpt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_run_journal {
    char work[4200];
    void *root;                     /* json_t *: the journal as last committed */
    fs_outckpt *o;                  /* the writer whose state it records */
    const fs_moe_report *rep;       /* read on the compute thread only (commit_prep) */
    const fs_model *m;
    const fs_ckpt *c;               /* the model read (its read log: what each layer read) */
    int calibrated;                 /* a --calib run (boundaries); else rtn from the weights */
    void *start;                    /* json_t * of WORK/start.json when a resume starts over from it */
    int64_t batch_tokens;           /* tokens per forward batch: recorded by create, read back by
                                       restore (the bytes depend on it) */
    int work_default;               /* the work folder is OUT/.forge-work (recorded by create: a
                                       resume then finds the output beside it, wherever it moved) */
    int allow_device_change;        /* --allow-device-change: resume on other BLAS kernels (or GPU) */
    void *moved;                    /* json_t * {model, out, calib}: where a resume found them, when
                                       they moved since the run started (owned) */
} fs_run_journal;

/* Starts the journal of a new run in rj->work (rj->o, rj->rep, rj->m set by
 * the caller): the configuration (argv, config: json_t *, taken), the
 * backend name, the model fingerprint and the calibration checksums
 * (calib_path NULL: a run without calibration); no layer done.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_rj_create(fs_ctx *ctx, fs_run_journal *rj, void *argv, void *config, const char *backend,
                       const fs_ckpt *c, const char *calib_path, const uint32_t *ids, size_t nids);

/* fs_pipe_opts.commit_prep / commit / snap_free with arg = the fs_run_journal. */
fs_status fs_rj_commit_prep(fs_ctx *ctx, void *arg, int layers_done, void **snap);
struct fs_commit_info;
fs_status fs_rj_commit(fs_ctx *ctx, void *arg, const struct fs_commit_info *ci);
void fs_rj_snap_free(void *snap);

/* After the last layer: seals the output's last shard and commits that. */
fs_status fs_rj_seal(fs_ctx *ctx, fs_run_journal *rj);

/* Resume: with rj->root the journal read from rj->work, checks the model
 * (fingerprint) and the calibration (checksums) against it (FS_ERR_USAGE
 * naming what changed).  A model file whose identity or times changed
 * (written in place, copied, moved) is refused unless verify_model; with
 * verify_model every tensor the committed layers read is read again and
 * must give the checksums the journal recorded (then the journal takes the
 * files as they are now).  Then restores the output writer (*o) and the MoE
 * counts (rep) and says where to go on: *start_layer and, when it is not 0,
 * act (the boundary file to read, checked).  A committed file that does not
 * match its checksum is reported as a warning and the run starts over from
 * layer 0 (only the latest boundary is kept, so the embeddings are the last
 * good one).  Errors: FS_ERR_USAGE, FS_ERR_FORMAT, FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_rj_restore(fs_ctx *ctx, fs_run_journal *rj, const fs_ckpt *c, const char *calib_path,
                        const uint32_t *ids, size_t nids, const char *out_dir, uint64_t max_shard, fs_format fmt,
                        const fs_quant_opts *q, int verify_model, fs_moe_report *rep, fs_outckpt **o,
                        int *start_layer, char *act, size_t act_n);

/* Layers the journal records as done, and whether the output is sealed. */
int fs_rj_layers_done(const fs_run_journal *rj);
int fs_rj_sealed(const fs_run_journal *rj);

/* Removes the journal, the saved flags and the boundary files of work (the run
 * is finished; nothing there is needed any more). */
void fs_rj_remove(const char *work);

void fs_rj_free(fs_run_journal *rj);

#ifdef __cplusplus
}
#endif

#endif
