/* cmd-quantize.h: what `forge-stream quantize` (cmd-quantize.c) and its
 * resume side (cmd-resume.c: the journal's view of the options, --resume's
 * argument handling, messages) share.  Not for other files. */
#ifndef FS_CMD_QUANTIZE_H
#define FS_CMD_QUANTIZE_H

#include <jansson.h>

#include "src/backend/backend.h"
#include "src/models/moe.h"
#include "src/formats/outckpt.h"
#include "src/pipeline/resume.h"

#define START_NAME "start.json"   /* the run's flags, saved before its journal exists */

typedef struct qargs {
    const char *model, *out, *method, *calib, *work, *profile, *timings, *backend_name;
    int calib_text;                 /* --calib-text: calib is text, tokenized with the model's tokenizer.json */
    const char *jsonl_field;        /* --jsonl-field: the text field of a JSON-lines calib-text */
    int resume, finished;
    uint64_t need_out, need_work;   /* disk the plan says the run needs (for ENOSPC messages) */
    int64_t samples, seq_len;
    int64_t batch_tokens;           /* --batch-tokens: tokens per forward batch at most */
    uint64_t seed, host_mem;
    uint64_t gpu_mem;               /* --gpu-mem: the device's memory budget (0: none) */
    int act_f32;
    int spill;                      /* --spill: -1 never, 0 auto (the plan decides), 1 always */
    fs_format fmt;
    uint64_t max_shard;
    int overwrite;
    int experts_only;               /* --quantize-experts-only */
    int serving;                    /* --serving: FS_SERVE_* bits (serving.h), 0 = none */
    int serving_static;             /* --serving vllm turned --act-order's groups static */
    int verify_model;
    int allow_device_change;        /* --allow-device-change (resume) */
    int64_t threads;                /* --threads: OpenMP and BLAS threads (0: all cores) */               /* --verify-model (resume): re-read what the run read */
    fs_backend_kind backend;
    fs_quant_opts q;
    fs_expert_policy policy;
    int64_t min_expert_tokens, experts_per_wave;
} qargs;

/* quantize --help (quantize-args.c). */
extern const char quantize_usage[];
/* Parses quantize's flags into a (defaults first).  --resume stops the
 * checks of required flags: the rest comes from the journal. */
fs_status quantize_parse(fs_ctx *ctx, int argc, char **argv, qargs *a, int *help);

/* Every option that shapes the output, defaults filled in (a new object). */
json_t *quantize_config_json(const qargs *a);
/* The flags as the journal keeps them (a new array). */
json_t *quantize_argv_json(int argc, char **argv, const qargs *a);
/* --model, --out, --calib made absolute (buffers of PATH_MAX). */
fs_status quantize_absolute_paths(fs_ctx *ctx, qargs *a, char *model, char *out, char *calib);
/* --resume: locks the work folder, reads the journal (or the saved flags)
 * into a, refusing a flag given now that would change the output. */
fs_status quantize_resume_args(fs_ctx *ctx, int argc, char **argv, qargs *a, fs_run_journal *rj, int *lock_fd);
/* Is work the default OUT/.forge-work? */
int quantize_is_default_work(const qargs *a, const char *work);
/* How to go on after a failure or a signal once the journal exists (why:
 * the failure's code: a full disk says the space needed, bad model data
 * says to repair it and resume with --verify-model). */
void quantize_resume_hint(const qargs *a, const fs_run_journal *rj, fs_status why);

#endif
