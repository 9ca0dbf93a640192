/* cmd-quantize.c: `forge-stream quantize`.
 *  - with --calib (every family, DeepSeek's MLA included; MTP layers are
 *    copied unquantized): the layer-by-layer pipeline of
 *    src/pipeline.c, GPTQ (default) or RTN, calibration propagated through
 *    the quantized layers;
 *  - --method rtn without --calib (every family): each linear rounded to
 *    nearest from its weights alone, one linear resident at a time.
 * Output in the forge, gptq or compressed-tensors format; everything else is copied (FP8
 * dequantized to BF16).  Both kinds keep a journal in the work folder and
 * commit it per layer (src/resume.c); --resume's option handling is in
 * cmd-resume.c. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/threads.h"
#include "src/cli/cli.h"
#include "src/pipeline/pipeline.h"
#include "src/models/moe.h"
#include "src/pipeline/plan.h"
#include "src/pipeline/journal.h"
#include "src/pipeline/resume.h"
#include "src/cli/cmd-quantize.h"
#include "src/cli/serving.h"
#include "src/forward/layer.h"

/* Removes the work folder's files (journal, boundaries, lock) and the
 * folder itself when it is the default one (the run is over). */
static void clean_work(const char *work, int is_default, const char *out)
{
    if (!work[0]) return;
    char path[4500];
    fs_rj_remove(work);
    snprintf(path, sizeof path, "%s/lock", work);
    unlink(path);
    if (is_default) {
        rmdir(work);
        rmdir(out);                              /* only if this run left it empty */
    }
}

/* Pre-flight: the disk of --out (and of --work) must hold the output and three
 * activation boundaries (the journal's state and the one before it each name
 * one, and the next is written before the oldest is removed), and two more
 * when the activations spill.
 * An obvious shortfall is refused before any work, with the bytes needed. */
static fs_status preflight_disk(fs_ctx *ctx, qargs *a, const fs_plan *pl)
{
    uint64_t out = 0, act3 = 0;
    const int spill = fs_plan_disk(pl, a->spill > 0, &out, &act3);
    const char *dirs[2] = {a->out, a->work ? a->work : a->out};
    uint64_t need[2] = {out + (a->work ? 0 : act3), act3};
    a->need_out = need[0];
    a->need_work = a->work ? need[1] : 0;
    if (a->resume) return FS_OK;                 /* the disk already holds part of the run */
    for (int i = 0; i < (a->work ? 2 : 1); i++) {
        char probe[4200], b1[32], b2[32];
        struct statvfs sv;
        snprintf(probe, sizeof probe, "%s", dirs[i]);
        while (statvfs(probe, &sv) != 0) {           /* not created yet: ask its parent */
            char *slash = strrchr(probe, '/');
            if (!slash) { snprintf(probe, sizeof probe, "."); continue; }
            if (slash == probe) { probe[1] = '\0'; if (statvfs(probe, &sv) != 0) return FS_OK; break; }
            *slash = '\0';
        }
        uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
        if (need[i] > avail)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s %s: the disk has %s free, this run needs about %s "
                              "(the output and three activation boundaries%s)", i ? "--work" : "--out", dirs[i],
                              fs_plan_fmt_bytes(b1, sizeof b1, avail), fs_plan_fmt_bytes(b2, sizeof b2, need[i]),
                              spill ? ", and two raw files of the spilled activations" : "");
    }
    return FS_OK;
}

/* Is `name` described by the model (a linear weight or another tensor)? */
static int described(const fs_model *m, const char *name)
{
    if (fs_model_linear_of(m, name, NULL)) return 1;
    for (int i = 0; i < m->nglobal; i++)
        if (!strcmp(m->global[i].name, name)) return 1;
    int l = -1;
    if (sscanf(name, "model.layers.%d.", &l) != 1 || l < 0 || l >= m->nlayers + m->nmtp) return 0;
    if (m->layers[l].mtp) return 1;
    for (int i = 0; i < m->layers[l].nother; i++)
        if (!strcmp(m->layers[l].other[i].name, name)) return 1;
    return 0;
}

/* Layer l and everything before it are written: the journal says so. */
static fs_status commit_layer(fs_ctx *ctx, fs_run_journal *rj, int l)
{
    fs_commit_info ci = {l + 1, NULL, 0, 0, 0, NULL};
    fs_status rc = fs_rj_commit(ctx, rj, &ci);
    if (rc == FS_OK) fs_crashpoint(ctx, "committed");
    return rc;
}

/* --method rtn without calibration: layer by layer from the weights alone,
 * committed to the journal after each layer like the pipeline. */
static fs_status run(fs_ctx *ctx, const qargs *a, const fs_ckpt *c, const fs_model *m, fs_outckpt *o,
                     fs_run_journal *rj, int l0)
{
    fs_status rc = FS_OK;
    char name[1100];
    double t0 = fs_now(), err = 0.0, norm = 0.0;
    for (int i = 0; l0 == 0 && rc == FS_OK && i < m->nglobal; i++)     /* committed with layer 0 */
        if (fs_ckpt_find(c, m->global[i].name)) rc = fs_out_copy(ctx, o, c, m->global[i].name);
    for (int l = l0; rc == FS_OK && l < m->nlayers + m->nmtp; l++) {
        const fs_mlayer *L = &m->layers[l];
        if (fs_interrupted()) {
            rc = fs_ctx_err(ctx, FS_ERR_ABORTED, "interrupted by signal %d before model.layers.%d", fs_interrupted(), l);
            break;
        }
        if (L->mtp) {                                   /* copied through, never quantized */
            char pre[64];
            int n = 0;
            snprintf(pre, sizeof pre, "model.layers.%d.", l);
            for (size_t k = 0; rc == FS_OK && k < c->ntensors; k++) {
                const char *tn = c->entries[k].t->name;
                if (!strncmp(tn, pre, strlen(pre)) && !fs_ckpt_is_scale(c, tn)) {
                    rc = fs_out_copy(ctx, o, c, tn);
                    n++;
                }
            }
            fs_log(ctx, "[%3d/%3d] model.layers.%d: MTP layer, %d tensors copied unquantized", l + 1,
                   m->nlayers + m->nmtp, l, n);
            if (rc == FS_OK) rc = commit_layer(ctx, rj, l);
            continue;
        }
        double le = 0.0, ln = 0.0;
        for (int i = 0; rc == FS_OK && i < L->nlin; i++) {
            const fs_mlinear *x = &L->lin[i];
            float *W = NULL;
            fs_layer_result r;
            snprintf(name, sizeof name, "%s.weight", x->name);
            if (a->experts_only && x->expert < 0) {     /* kept as the checkpoint has it */
                rc = fs_out_copy(ctx, o, c, name);
                continue;
            }
            rc = fs_ckpt_read_f32(ctx, c, name, &W);
            if (rc == FS_OK) rc = fs_layer_quantize(ctx, W, NULL, NULL, x->out, x->in, &a->q, &r);
            fs_crashpoint(ctx, "gptq");
            if (rc == FS_OK) {
                double wn = 0.0;
                for (int64_t k = 0; k < x->out * x->in; k++) wn += (double)W[k] * W[k];
                le += r.rtn_loss;
                ln += wn;
                rc = fs_out_add_linear(ctx, o, x->name, &r);
                fs_layer_result_free(&r);
            }
            free(W);
        }
        for (int i = 0; rc == FS_OK && i < L->nother; i++)
            if (fs_ckpt_find(c, L->other[i].name)) rc = fs_out_copy(ctx, o, c, L->other[i].name);
        err += le;
        norm += ln;
        if (rc == FS_OK)
            fs_log(ctx, "[%3d/%3d] model.layers.%d: %d linears%s, relative weight error %.3e, %.1f s", l + 1,
                   m->nlayers + m->nmtp, l, L->nlin, L->moe ? " (MoE)" : "", ln > 0 ? le / ln : 0.0,
                   fs_now() - t0);
        if (rc == FS_OK) rc = commit_layer(ctx, rj, l);
    }
    /* tensors the description does not name: copied unchanged, and said */
    for (size_t k = 0; rc == FS_OK && k < c->ntensors; k++) {
        const char *tn = c->entries[k].t->name;
        if (described(m, tn) || fs_ckpt_is_scale(c, tn)) continue;
        fs_log(ctx, "warning: '%s' is not part of the %s description: copied unchanged", tn, m->family);
        rc = fs_out_copy(ctx, o, c, tn);
    }
    if (rc == FS_OK)
        fs_log(ctx, "done: relative weight error %.3e over all linears, %.1f s", norm > 0 ? err / norm : 0.0,
               fs_now() - t0);
    return rc;
}

/* compressed-tensors' `ignore`: the Linear modules its loaders must leave
 * unquantized: lm_head, the routers (and qwen2_moe's shared_expert_gate), what
 * --quantize-experts-only keeps, and the MTP layers (copied through) as one
 * "re:" pattern each.  A new array, NULL when out of memory. */
static json_t *ct_ignore(const fs_model *m, int experts_only)
{
    json_t *a = json_array();
    char buf[1200];
    if (!a || json_array_append_new(a, json_string("lm_head"))) { json_decref(a); return NULL; }
    for (int l = 0; l < m->nlayers + m->nmtp; l++) {
        const fs_mlayer *L = &m->layers[l];
        if (L->mtp) {
            snprintf(buf, sizeof buf, "re:^model\\.layers\\.%d\\.", L->index);
            if (json_array_append_new(a, json_string(buf))) { json_decref(a); return NULL; }
            continue;
        }
        for (int i = 0; i < L->nother; i++) {
            const char *n = L->other[i].name;
            size_t k = strlen(n);
            if (L->other[i].ndim != 2 || k < 8 || strcmp(n + k - 7, ".weight")) continue;
            snprintf(buf, sizeof buf, "%.*s", (int)(k - 7), n);
            if (json_array_append_new(a, json_string(buf))) { json_decref(a); return NULL; }
        }
        for (int i = 0; experts_only && i < L->nlin; i++)
            if (L->lin[i].expert < 0 && json_array_append_new(a, json_string(L->lin[i].name))) {
                json_decref(a);
                return NULL;
            }
    }
    return a;
}

int cmd_quantize(int argc, char **argv)
{
    int lock_fd = -1;                            /* the work folder's lock, held to the end */
    int out_lock = -1, created_out = 0;          /* --out's lock (fs_lock_dir), also held to the end */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_crash crash;
    qargs a = {0};
    int help = 0, code = FS_EXIT_USAGE, journal_live = 0, total = 0;
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    fs_outckpt *o = NULL;
    fs_run_journal rj;
    memset(&rj, 0, sizeof rj);
    char model_abs[PATH_MAX], out_abs[PATH_MAX], calib_abs[PATH_MAX], act[4400] = "";
    int start_layer = 0;
    fs_status rc = quantize_parse(&ctx, argc, argv, &a, &help);
    if (rc == FS_OK && help) {
        fputs(quantize_usage, stdout);
        fputs(fs_quant_flags_help, stdout);
        return FS_EXIT_OK;
    }
    int hook = rc == FS_OK ? fs_crash_from_env(&ctx, &crash) : 0;
    if (hook < 0) rc = ctx.err;
    else if (hook > 0) ctx.crash = &crash;
    if (rc == FS_OK && a.resume) rc = quantize_resume_args(&ctx, argc, argv, &a, &rj, &lock_fd);
    if (rc == FS_OK && a.finished) return FS_EXIT_OK;
    if (rc == FS_OK && !a.resume && a.threads > 0) fs_threads_set((int)a.threads);   /* a resume takes the run's */
    if (rc == FS_OK && !a.resume) rc = quantize_absolute_paths(&ctx, &a, model_abs, out_abs, calib_abs);
    /* the CPU backends' buffers are host memory: --host-mem caps them too; --gpu-mem is
     * the device's budget (cpu-async takes it as its "device" memory) */
    const int on_host = a.backend == FS_BE_CPU || a.backend == FS_BE_CPU_ASYNC ||
                        (a.backend == FS_BE_AUTO && fs_backend_cuda_devices() == 0);
    /* a resume keeps the run's batch even where the budget now allows less (the
     * bytes depend on it; said in the log), so its buffers are not capped */
    const fs_backend_opts bo = {.mem_budget = a.resume ? 0 : a.gpu_mem ? a.gpu_mem : on_host ? a.host_mem : 0,
                                .threads = 0};
    if (rc == FS_OK) rc = fs_backend_open(&ctx, a.backend, &bo, &ctx.be);
    if (rc == FS_OK) rc = fs_ckpt_open(&ctx, a.model, &c);
    if (rc == FS_OK) rc = fs_ckpt_log_reads(&ctx, c);      /* what each layer read, for the journal */
    if (rc == FS_OK && !c->config)
        rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no config.json", a.model);
    if (rc == FS_OK) rc = fs_model_from_config(&ctx, c->config, "config.json", &m);
    if (rc == FS_OK) rc = fs_model_check(&ctx, m, c);
    if (rc == FS_OK && a.experts_only && m->experts == 0)
        rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--quantize-experts-only: %s (%s) has no routed experts", a.model,
                        m->model_type);
    if (rc == FS_OK) total = m->nlayers + m->nmtp;
    if (rc == FS_OK) {                           /* the format and the engines, before anything is written */
        fs_serve_q sq = {a.fmt, a.q.bits, a.q.sym, a.q.group_size, fs_out_dynamic_groups(&a.q), a.experts_only};
        if (a.serving_static)
            fs_log(&ctx, "--serving vllm: --act-order with static groups (vLLM does not serve dynamic groups: "
                   "desc_act false, g_idx = c / G)");
        rc = fs_format_check(&ctx, &sq, m);
        if (rc == FS_OK) fs_serve_warn(&ctx, &sq, m);
        if (rc == FS_OK) rc = fs_serve_report(&ctx, &sq, m, a.serving);
    }
    /* calibration: every input check before the output folder is touched */
    fs_fwd fw = {0};
    fs_tokens tk = {0};
    uint32_t *ids = NULL;
    if (rc == FS_OK && a.calib) {
        rc = fs_fwd_init(&ctx, c->config, m, &fw);
        if (rc == FS_OK && a.seq_len > fw.max_pos)
            rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--seq-len %lld exceeds max_position_embeddings %lld of %s",
                            (long long)a.seq_len, (long long)fw.max_pos, a.model);
        if (rc == FS_OK && a.calib_text) rc = fs_cmd_tokenize_file(&ctx, a.model, a.calib, a.jsonl_field, &tk);
        else if (rc == FS_OK) rc = fs_tokens_load(&ctx, a.calib, &tk);
        if (rc == FS_OK) rc = fs_tokens_check_vocab(&ctx, &tk, a.calib, m->vocab);
        if (rc == FS_OK) rc = fs_calib_windows(&ctx, &tk, a.calib, a.samples, a.seq_len, a.seed, &ids);
        /* the memory plan: refuse a budget that cannot hold the largest layer */
        fs_plan pl;
        fs_plan_opts po;
        fs_plan_opts_default(&po);
        po.samples = a.samples;
        po.seq_len = a.seq_len;
        po.act_bytes = a.act_f32 ? 4 : 2;  /* calibration activations: bf16 by default, f32 on request */
        po.host_mem = a.host_mem;
        po.gpu_mem = a.gpu_mem;                /* the device's budget: its model (plan.h 6) */
        if (rc == FS_OK && a.gpu_mem) {          /* with the forward's own batch buffers */
            po.fwd_tok_bytes = fs_fwd_ws_bytes(&fw, 2) - fs_fwd_ws_bytes(&fw, 1);
            po.fwd_fixed_bytes = fs_fwd_ws_bytes(&fw, 1) - po.fwd_tok_bytes;
        }
        po.bits = a.q.bits;
        po.group_size = a.q.group_size;
        po.batch_tokens = a.batch_tokens;
        if (rc == FS_OK && (rc = fs_plan_compute(&ctx, m, c, &po, &pl)) == FS_OK) {
            /* the batch the budget allows (a resume takes the journal's instead) */
            rj.batch_tokens = a.batch_tokens;
            for (int l = 0; l < pl.nlayers; l++)
                if (pl.layers[l].batch_tokens > 0 && pl.layers[l].batch_tokens < rj.batch_tokens)
                    rj.batch_tokens = pl.layers[l].batch_tokens;
            rc = preflight_disk(&ctx, &a, &pl);
            int64_t w = 0;                            /* the smallest wave the budget needs */
            for (int l = 0; l < pl.nlayers; l++)
                if (pl.layers[l].waves > 1 && (w == 0 || pl.layers[l].experts_per_wave < w))
                    w = pl.layers[l].experts_per_wave;
            if (a.experts_per_wave == 0) a.experts_per_wave = w;
            int need = 0;                             /* a layer whose boundary the budget cannot hold */
            for (int l = 0; l < pl.nlayers; l++) need |= pl.layers[l].spilled;
            char b1[32], b2[32];
            fs_plan_fmt_bytes(b1, sizeof b1, pl.nlayers ? pl.layers[0].act_bytes : 0);
            fs_plan_fmt_bytes(b2, sizeof b2, pl.opts.host_mem);
            if (rc == FS_OK && need && a.spill < 0)
                rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "the calibration activations (%s per layer boundary) do not fit "
                                "the host budget (%s) and --spill never was given: lower --samples or --seq-len, "
                                "raise --host-mem, or let them spill to the work folder", b1, b2);
            if (rc == FS_OK && need && a.spill == 0) {
                fs_log(&ctx, "the calibration activations (%s per layer boundary) do not fit the host budget (%s): "
                       "they spill to the work folder", b1, b2);
                a.spill = 1;
            }
            fs_plan_free(&pl);
        }
    }
    fs_moe_report rep = {a.policy, a.min_expert_tokens, 0, NULL};
    rj.rep = &rep;
    rj.m = m;
    rj.c = c;
    rj.allow_device_change = a.allow_device_change;
    rj.calibrated = a.calib != NULL;
    if (rc == FS_OK && a.resume) {
        struct stat osb;
        if (stat(a.out, &osb) != 0 || !S_ISDIR(osb.st_mode))
            rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--out %s (the run's output folder, recorded in %s/%s): %s; the run's "
                            "partial output is there: if the folder moved, give its new place with --out NEW (with "
                            "the default work folder, --resume --work NEW/.forge-work is enough)", a.out, rj.work,
                            FS_JOURNAL_NAME, errno ? strerror(errno) : "not a folder");
        if (rc == FS_OK) rc = fs_lock_dir(&ctx, a.out, "--out", &out_lock);   /* a copy of the work folder may run */
    }
    if (rc == FS_OK && a.resume) {
        /* everything committed is checked; a damaged file restarts the run from layer 0 */
        rc = fs_rj_restore(&ctx, &rj, c, a.calib, ids, (size_t)(a.samples * a.seq_len), a.out, a.max_shard, a.fmt,
                           &a.q, a.verify_model, &rep, &o, &start_layer, act, sizeof act);
        journal_live = rc == FS_OK;
    } else if (rc == FS_OK) {
        /* a new run.  First what can be checked touching nothing: --out may take
         * a checkpoint and holds no unfinished run.  Then, before anything is
         * written or deleted (--overwrite), --out and the work folder are locked,
         * and the same is checked again under the locks. */
        char dj[4400], wj[4400];                 /* the same command again after a crash */
        snprintf(rj.work, sizeof rj.work, "%s", a.work ? a.work : a.out);
        if (!a.work) strncat(rj.work, "/.forge-work", sizeof rj.work - strlen(rj.work) - 1);
        snprintf(dj, sizeof dj, "%s/.forge-work/%s", a.out, FS_JOURNAL_NAME);
        snprintf(wj, sizeof wj, "%s/%s", rj.work, FS_JOURNAL_NAME);
        for (int locked = 0; rc == FS_OK && locked < 2; locked++) {
            if (!a.overwrite && a.work && access(wj, F_OK) == 0)
                rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--work %s holds an unfinished run (%s): continue it with "
                                "'forge-stream --resume --work %s', or pass --overwrite to start over", a.work,
                                FS_JOURNAL_NAME, a.work);
            else if (!a.overwrite && !a.work && access(dj, F_OK) == 0)
                rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--out %s holds an unfinished run: continue it with 'forge-stream "
                                "--resume --work %s/.forge-work' (every option comes from its journal), or pass "
                                "--overwrite to start over", a.out, a.out);
            else rc = fs_out_check(&ctx, a.out, a.overwrite);
            if (rc != FS_OK || locked) break;
            if (mkdir(a.out, 0755) == 0) created_out = 1;
            else if (errno != EEXIST) rc = fs_ctx_err(&ctx, FS_ERR_IO, "--out %s: cannot create: %s", a.out, strerror(errno));
            if (rc == FS_OK) rc = fs_lock_dir(&ctx, a.out, "--out", &out_lock);
            if (rc == FS_OK && mkdir(rj.work, 0755) != 0 && errno != EEXIST)
                rc = fs_ctx_err(&ctx, FS_ERR_IO, "--work %s: %s", rj.work, strerror(errno));
            if (rc == FS_OK) rc = fs_lock_folder(&ctx, rj.work, &lock_fd);   /* one run per folder */
        }
        if (rc == FS_OK) rc = fs_out_open(&ctx, a.out, a.overwrite, a.max_shard, a.fmt, &a.q, &o);
        if (rc == FS_OK) {
            fs_rj_remove(rj.work);   /* --overwrite: an old run's journal and boundaries */
            if (rc == FS_OK) {                       /* the flags first: a bare --resume can start over */
                json_t *st = json_pack("{s:s, s:i, s:o}", "format", "forge-stream-start", "version", 1, "argv",
                                       quantize_argv_json(argc, argv, &a));
                char sp[4400];
                snprintf(sp, sizeof sp, "%s/%s", rj.work, START_NAME);
                rc = st ? fs_sealed_write(&ctx, sp, st, NULL) : fs_ctx_err(&ctx, FS_ERR_NOMEM, "%s", sp);
                json_decref(st);
            }
            if (rc == FS_OK) {
                fs_out_journal(o);
                rj.o = o;
                rj.work_default = quantize_is_default_work(&a, rj.work);
                rc = fs_rj_create(&ctx, &rj, quantize_argv_json(argc, argv, &a), quantize_config_json(&a), fs_backend_name(ctx.be), c,
                                  a.calib, ids, (size_t)(a.samples * a.seq_len));
                journal_live = rc == FS_OK;
            }
        }
    }
    if (rc != FS_OK) { fs_fwd_free(&fw); fs_tokens_free(&tk); free(ids); goto out; }
    code = FS_EXIT_RUNTIME;
    fs_log(&ctx, "%s %s (%s, %d layers%s) -> %s: %s %d-bit g%lld %s%s, format %s, backend %s",
           a.resume ? "resume" : "quantize", a.model, m->model_type, m->nlayers, m->nmtp ? " + MTP" : "", a.out,
           a.q.rtn ? "rtn" : "gptq", a.q.bits, (long long)a.q.group_size, a.q.sym ? "sym" : "asym",
           fs_out_act_order_done(&a.q) ? (a.q.static_groups ? " act-order (static groups)" : " act-order") : "",
           fs_format_name(a.fmt), fs_backend_name(ctx.be));
    fs_log(&ctx, "%sgrid %s%s, refine-scales %d", a.q.preset_best ? "preset best (" FS_PRESET_BEST_FLAGS "): " : "",
           fs_grid_name(a.q.grid),
           a.q.grid == FS_GRID_HMSE ? (a.q.hmse_weight == FS_HMSE_DIAG ? " (diag weights)" : " (obs weights)") : "",
           a.q.refine_scales);
    fs_signals_install();                        /* SIGINT/SIGTERM: stop between linears */
    if (a.calib) {
        fs_log(&ctx, "calibration: %lld windows of %lld tokens from %s (seed %llu); journal %s/%s", (long long)a.samples,
               (long long)a.seq_len, a.calib, (unsigned long long)a.seed, rj.work, FS_JOURNAL_NAME);
        fs_pipe_opts po = {.q = a.q, .act_f32 = a.act_f32, .batch_tokens = rj.batch_tokens, .work = rj.work, .spill = a.spill > 0, .experts_only = a.experts_only,
                           .expert_policy = a.policy, .min_expert_tokens = a.min_expert_tokens,
                           .experts_per_wave = a.experts_per_wave, .moe_report = &rep, .start_layer = start_layer,
                           .start_act = act[0] ? act : NULL, .commit_prep = fs_rj_commit_prep,
                           .commit = fs_rj_commit, .snap_free = fs_rj_snap_free, .commit_arg = &rj};
        po.q.loss_f32 = 1;                       /* logs only: estimated (exact losses would triple the time) */
        /* a backend with queues of its own gets the next layer's weights during this layer's last pass */
        po.lookahead = fs_backend_queues_async(ctx.be);
        double tw = fs_now();
        rc = fs_trace_new(&ctx, a.profile, a.timings, &po.trace);
        if (rc == FS_OK && !fs_rj_sealed(&rj)) {
            if (start_layer < total) rc = fs_pipeline_run(&ctx, c, m, &fw, ids, a.samples, a.seq_len, &po, o);
            if (rc == FS_OK && a.gpu_mem) {     /* what the budget held (the plan's gpu column is the model of it) */
                char pk[32], bg[32];
                fs_log(&ctx, "%s memory: peak %s of the --gpu-mem budget %s; expert waves of %lld (0: all at once)",
                       fs_backend_name(ctx.be), fs_plan_fmt_bytes(pk, sizeof pk, fs_be_mem_peak(ctx.be)),
                       fs_plan_fmt_bytes(bg, sizeof bg, a.gpu_mem), (long long)a.experts_per_wave);
            }
            if (rc == FS_OK) rc = fs_rj_seal(&ctx, &rj);
        }
        if (rc == FS_OK) rc = fs_trace_finish(&ctx, po.trace, fs_now() - tw, ctx.quiet ? NULL : stderr);
        fs_trace_free(po.trace);
    } else if (!fs_rj_sealed(&rj)) {
        rc = run(&ctx, &a, c, m, o, &rj, start_layer);
        if (rc == FS_OK) rc = fs_rj_seal(&ctx, &rj);
    }
    fs_fwd_free(&fw);
    fs_tokens_free(&tk);
    free(ids);
    json_t *extra = json_pack("{s:s, s:s?, s:I, s:I}", "method", a.q.rtn ? "rtn" : "gptq",
                              "calibration", a.calib, "samples", (json_int_t)(a.calib ? a.samples : 0),
                              "seq_len", (json_int_t)(a.calib ? a.seq_len : 0));
    if (rc == FS_OK && a.fmt == FS_FMT_CT) {          /* compressed-tensors: every Linear left unquantized */
        json_t *ign = ct_ignore(m, a.experts_only);
        if (!ign || !extra || json_object_set_new(extra, "ignore", ign)) rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "ignore");
        if (rc == FS_OK && a.experts_only && json_object_set_new(extra, "quantize_experts_only", json_true()))
            rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "quantization_config");
    }
    if (rc == FS_OK && a.experts_only && a.fmt != FS_FMT_CT) {   /* what loaders must leave unquantized */
        json_t *dyn = json_object();
        char re[2400];
        for (int l = 0; dyn && l < m->nlayers; l++)
            for (int i = 0; dyn && i < m->layers[l].nlin; i++) {
                if (m->layers[l].lin[i].expert >= 0) continue;
                /* "-:^parent\.[^.]+$" for the module holding the linear, dots escaped:
                 * vLLM's and GPTQModel's `dynamic` exclusion, which also covers the
                 * fused names loaders build there (qkv_proj, gate_up_proj, ...) */
                const char *name = m->layers[l].lin[i].name, *last = strrchr(name, '.');
                size_t k = (size_t)snprintf(re, sizeof re, "-:^");
                for (const char *q = name; q < last && k < sizeof re - 16; q++) {
                    if (*q == '.') re[k++] = '\\';
                    re[k++] = *q;
                }
                snprintf(re + k, sizeof re - k, "\\.[^.]+$");
                if (json_object_set_new(dyn, re, json_object())) { json_decref(dyn); dyn = NULL; }
            }
        if (!dyn || !extra || json_object_set_new(extra, "quantize_experts_only", json_true())) {
            json_decref(dyn);
            rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "quantization_config");
        } else if (json_object_set_new(extra, "dynamic", dyn)) {      /* (takes dyn either way) */
            rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "quantization_config");
        }
    }
    if (rc == FS_OK && a.calib && m->experts > 0) {   /* per-layer expert counts and the policy */
        json_t *mj = fs_moe_report_json(&rep, m);
        if (!mj || !extra || json_object_update(extra, mj)) rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "expert report");
        json_decref(mj);
    }
    if (rc == FS_OK) {
        rc = fs_out_finish(&ctx, o, c->config, c->dir, extra);
        o = NULL;
    }
    json_decref(extra);
    if (rc == FS_OK) {
        code = FS_EXIT_OK;
        if (journal_live) clean_work(rj.work, quantize_is_default_work(&a, rj.work), a.out);
    }
out:
    fs_moe_report_free(&rep);
    if (journal_live) fs_out_detach(o);          /* kept for --resume */
    else fs_out_abort(o);                        /* removes staged and partial shards */
    fs_crash_report(&ctx);
    if (rc == FS_ERR_ABORTED) {
        fprintf(stderr, "forge-stream: %s: stopped cleanly.\n", ctx.errmsg);
        if (journal_live) quantize_resume_hint(&a, &rj, FS_OK);
        else fprintf(stderr, "forge-stream: %s holds no finished checkpoint; run the same command again.\n", a.out);
        code = 128 + fs_interrupted();           /* 130 for SIGINT, 143 for SIGTERM */
    } else if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        if (rc == FS_ERR_USAGE || rc == FS_ERR_FORMAT || rc == FS_ERR_NODEV || rc == FS_ERR_CORRUPT ||
            rc == FS_ERR_NUMERIC)
            code = FS_EXIT_USAGE;                    /* bad input: flags, model, calibration, a damaged work folder */
        else code = FS_EXIT_RUNTIME;                 /* I/O, memory, CUDA: the machine, not the input */
        if (journal_live) quantize_resume_hint(&a, &rj, rc);
    }
    if (rc != FS_OK && !journal_live && !a.resume && lock_fd >= 0) clean_work(rj.work, quantize_is_default_work(&a, rj.work), a.out);
    if (rc != FS_OK && !journal_live && created_out) rmdir(a.out);    /* only if left empty */
    if (lock_fd >= 0) close(lock_fd);
    if (out_lock >= 0) close(out_lock);
    fs_rj_free(&rj);
    fs_model_free(m);
    fs_ckpt_close(c);
    fs_backend_free(ctx.be);
    return code;
}
