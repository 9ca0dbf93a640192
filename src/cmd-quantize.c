/* cmd-quantize.c: `forge-stream quantize`.
 *  - with --calib (every family, DeepSeek's MLA included; MTP layers are
 *    copied unquantized): the layer-by-layer pipeline of
 *    src/pipeline.c, GPTQ (default) or RTN, calibration propagated through
 *    the quantized layers;
 *  - --method rtn without --calib (every family): each linear rounded to
 *    nearest from its weights alone, one linear resident at a time.
 * Output in the forge or gptq format; everything else is copied (FP8
 * dequantized to BF16). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pipeline.h"
#include "moe.h"
#include "plan.h"

static const char usage[] =
    "usage: forge-stream quantize --model DIR --out DIR --calib TOKENS [options]\n"
    "       forge-stream quantize --model DIR --out DIR --method rtn [options]\n"
    "\n"
    "  --model DIR          Hugging Face checkpoint folder (config.json + safetensors)\n"
    "  --out DIR            output folder (created; must be empty unless --overwrite)\n"
    "  --calib FILE         calibration tokens: .u32 ids or JSON lines (every family;\n"
    "                       DeepSeek MTP layers are copied unquantized)\n"
    "  --samples N          calibration windows (default 128)\n"
    "  --seq-len L          tokens per window (default 2048, at most max_position_embeddings)\n"
    "  --calib-seed S       0 (default): the first N non-overlapping windows of the file;\n"
    "                       otherwise N of them chosen at random with seed S\n"
    "  --method gptq|rtn    GPTQ (default; needs --calib) or round to nearest; rtn with\n"
    "                       --calib runs the same pipeline (the baseline to compare with),\n"
    "                       without --calib it rounds every weight on its own\n"
    "  --act-dtype bf16|f32 activations kept between layers (default bf16)\n"
    "  --profile FILE       Chrome trace-event JSON of the run (Perfetto, chrome://tracing):\n"
    "                       one track per stage, spans per layer with bytes and FLOPs\n"
    "  --timings FILE       one JSON line per layer and stage: seconds, bytes, GB/s, GFLOP/s\n"
    "  --work DIR           activation cache (each layer's output, LZ4 chunks with\n"
    "                       checksums; only the latest kept; removed at the end);\n"
    "                       default OUT/.forge-work\n"
    "  --host-mem SIZE      host memory budget (default: physical memory less 10%%); a\n"
    "                       budget that cannot hold the largest layer is refused up front\n"
    "  --format forge|gptq  output layout (default forge); gptq stores F16 scales and\n"
    "                       zero - 1, so its grids use F16 scales and zeros >= 1\n"
    "  --max-shard-size N   bytes per output shard, suffixes K M G (default 5G)\n"
    "  --overwrite          replace a checkpoint already in --out\n"
    "  --backend B          auto (CUDA when a device is present), cpu or cuda\n"
    "  --quiet              no log lines\n"
    "\n"
    "MoE models (each expert's gate/up Hessian comes from the tokens routed to it,\n"
    "its down Hessian from its own intermediate activations; the counts per expert\n"
    "are logged per layer and stored in quantization_config):\n"
    "  --min-expert-tokens N  an expert routed fewer than N calibration tokens is\n"
    "                       under-calibrated (one with none always is); default 256:\n"
    "                       the default calibration (128 x 2048 tokens) gives every\n"
    "                       expert a fair share of >= 16k tokens even at top-8 of 128,\n"
    "                       and below 256 rows its Hessian has rank < 256 of thousands\n"
    "                       of columns: GPTQ would fit a handful of tokens\n"
    "  --expert-policy P    what under-calibrated experts get, named in the log:\n"
    "                       all-tokens (default): Hessians from every token of the\n"
    "                         layer, as if the expert saw all (one more pass for it);\n"
    "                       rtn: gate, up and down rounded to nearest on the grid;\n"
    "                       shared: gate/up from the layer's full-input Hessian\n"
    "                         (no extra pass), down rounded to nearest\n"
    "\n";

typedef struct qargs {
    const char *model, *out, *method, *calib, *work, *profile, *timings;
    int64_t samples, seq_len;
    uint64_t seed, host_mem;
    int act_f32;
    fs_format fmt;
    uint64_t max_shard;
    int overwrite;
    fs_backend_kind backend;
    fs_quant_opts q;
    fs_expert_policy policy;
    int64_t min_expert_tokens;
} qargs;

static fs_status parse(fs_ctx *ctx, int argc, char **argv, qargs *a, int *help)
{
    fs_quant_opts_default(&a->q);
    a->method = "gptq";
    a->samples = 128;
    a->seq_len = 2048;
    a->policy = FS_EXPERT_POLICY_DEFAULT;
    a->min_expert_tokens = FS_MIN_EXPERT_TOKENS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        int taken = 0;
        fs_status rc = fs_arg_quant(ctx, argc, argv, &i, &a->q, &taken);
        if (rc != FS_OK) return rc;
        if (taken) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { *help = 1; return FS_OK; }
        if (!strcmp(f, "--quiet")) { ctx->quiet = 1; continue; }
        if (!strcmp(f, "--overwrite")) { a->overwrite = 1; continue; }
        if (i + 1 >= argc) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--calib")) a->calib = v;
        else if (!strcmp(f, "--work")) a->work = v;
        else if (!strcmp(f, "--profile")) a->profile = v;
        else if (!strcmp(f, "--timings")) a->timings = v;
        else if (!strcmp(f, "--host-mem")) { if ((rc = fs_arg_size(ctx, f, v, &a->host_mem))) return rc; }
        else if (!strcmp(f, "--samples")) { if ((rc = fs_arg_i64(ctx, f, v, 1, 1 << 24, &a->samples))) return rc; }
        else if (!strcmp(f, "--seq-len")) { if ((rc = fs_arg_i64(ctx, f, v, 2, 1 << 22, &a->seq_len))) return rc; }
        else if (!strcmp(f, "--calib-seed")) {
            int64_t sd;
            if ((rc = fs_arg_i64(ctx, f, v, 0, INT64_MAX, &sd))) return rc;
            a->seed = (uint64_t)sd;
        } else if (!strcmp(f, "--act-dtype")) {
            if (!strcmp(v, "f32")) a->act_f32 = 1;
            else if (strcmp(v, "bf16")) return fs_ctx_err(ctx, FS_ERR_USAGE, "--act-dtype '%s': must be bf16 or f32", v);
        }
        else if (!strcmp(f, "--min-expert-tokens")) {
            if ((rc = fs_arg_i64(ctx, f, v, 0, INT64_MAX, &a->min_expert_tokens))) return rc;
        } else if (!strcmp(f, "--expert-policy")) {
            if (fs_expert_policy_parse(v, &a->policy))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--expert-policy '%s': must be rtn, all-tokens or shared", v);
        }
        else if (!strcmp(f, "--backend")) { if ((rc = fs_arg_backend(ctx, v, &a->backend))) return rc; }
        else if (!strcmp(f, "--method")) {
            if (strcmp(v, "rtn") && strcmp(v, "gptq"))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--method '%s': must be rtn or gptq", v);
            a->method = v;
        } else if (!strcmp(f, "--format")) {
            if (!strcmp(v, "forge")) a->fmt = FS_FMT_FORGE;
            else if (!strcmp(v, "gptq")) a->fmt = FS_FMT_GPTQ;
            else return fs_ctx_err(ctx, FS_ERR_USAGE, "--format '%s': must be forge or gptq", v);
        } else if (!strcmp(f, "--max-shard-size")) {
            if ((rc = fs_arg_size(ctx, f, v, &a->max_shard)) != FS_OK) return rc;
        } else return fs_ctx_err(ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream quantize --help)", f);
    }
    if (!a->model) return fs_ctx_err(ctx, FS_ERR_USAGE, "--model is required");
    if (!a->out) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out is required");
    if (strcmp(a->method, "rtn") != 0 && !a->calib)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--method gptq needs --calib TOKENS (or use --method rtn)");
    a->q.rtn = strcmp(a->method, "rtn") == 0;
    a->q.gptq_v1 = a->fmt == FS_FMT_GPTQ;
    return fs_quant_opts_check(ctx, &a->q);
}

/* Removes what a run left in its work folder (activation boundaries, the
 * lock file) and the folder itself when it is the default one: without
 * resume (a later issue) nothing there can be used again. */
static void clean_work(const char *work, int is_default, const char *out)
{
    DIR *d = work[0] ? opendir(work) : NULL;
    struct dirent *e;
    char path[4500];
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        int ours = !strcmp(e->d_name, "lock") ||
                   (!strncmp(e->d_name, "act-", 4) && (strstr(e->d_name, ".fsa") != NULL));
        if (!ours || n > 255) continue;
        snprintf(path, sizeof path, "%s/%s", work, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    if (is_default) {
        rmdir(work);
        rmdir(out);                              /* only if this run left it empty */
    }
}

/* Pre-flight: the disk of --out (and of --work) must hold the output and two
 * activation boundaries (the next is written before the previous is removed).
 * An obvious shortfall is refused before any work, with the bytes needed. */
static fs_status preflight_disk(fs_ctx *ctx, const qargs *a, const fs_plan *pl)
{
    uint64_t out = pl->global_bytes, act = 0;
    for (int l = 0; l < pl->nlayers; l++) {
        const fs_plan_layer *r = &pl->layers[l];
        out += r->write_bytes > r->act_bytes ? r->write_bytes - r->act_bytes : 0;
        act = r->act_bytes > act ? r->act_bytes : act;
    }
    const char *dirs[2] = {a->out, a->work ? a->work : a->out};
    uint64_t need[2] = {out + (a->work ? 0 : 2 * act), 2 * act};
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
                              "(the output and two activation boundaries)", i ? "--work" : "--out", dirs[i],
                              fs_plan_fmt_bytes(b1, sizeof b1, avail), fs_plan_fmt_bytes(b2, sizeof b2, need[i]));
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

static fs_status run(fs_ctx *ctx, const qargs *a, const fs_ckpt *c, const fs_model *m, fs_outckpt *o)
{
    fs_status rc = FS_OK;
    char name[1100];
    double t0 = fs_now(), err = 0.0, norm = 0.0;
    for (int i = 0; rc == FS_OK && i < m->nglobal; i++)
        if (fs_ckpt_find(c, m->global[i].name)) rc = fs_out_copy(ctx, o, c, m->global[i].name);
    for (int l = 0; rc == FS_OK && l < m->nlayers + m->nmtp; l++) {
        const fs_mlayer *L = &m->layers[l];
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
            continue;
        }
        double le = 0.0, ln = 0.0;
        for (int i = 0; rc == FS_OK && i < L->nlin; i++) {
            const fs_mlinear *x = &L->lin[i];
            float *W = NULL;
            fs_layer_result r;
            snprintf(name, sizeof name, "%s.weight", x->name);
            rc = fs_ckpt_read_f32(ctx, c, name, &W);
            if (rc == FS_OK) rc = fs_layer_quantize(ctx, W, NULL, NULL, x->out, x->in, &a->q, &r);
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

int cmd_quantize(int argc, char **argv)
{
    int lock_fd = -1;                            /* the work folder's lock, held to the end */
    char work[4200] = "";                        /* the work folder, once chosen */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    qargs a = {0};
    int help = 0, code = FS_EXIT_USAGE;
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    fs_outckpt *o = NULL;
    fs_status rc = parse(&ctx, argc, argv, &a, &help);
    if (rc == FS_OK && help) {
        fputs(usage, stdout);
        fputs(fs_quant_flags_help, stdout);
        return FS_EXIT_OK;
    }
    if (rc == FS_OK) rc = fs_backend_open(&ctx, a.backend, &ctx.be);
    if (rc == FS_OK) rc = fs_ckpt_open(&ctx, a.model, &c);
    if (rc == FS_OK && !c->config)
        rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no config.json", a.model);
    if (rc == FS_OK) rc = fs_model_from_config(&ctx, c->config, "config.json", &m);
    if (rc == FS_OK) rc = fs_model_check(&ctx, m, c);
    /* calibration: every input check before the output folder is touched */
    fs_fwd fw = {0};
    fs_tokens tk = {0};
    uint32_t *ids = NULL;
    if (rc == FS_OK && a.calib) {
        rc = fs_fwd_init(&ctx, c->config, m, &fw);
        if (rc == FS_OK && a.seq_len > fw.max_pos)
            rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--seq-len %lld exceeds max_position_embeddings %lld of %s",
                            (long long)a.seq_len, (long long)fw.max_pos, a.model);
        if (rc == FS_OK) rc = fs_tokens_load(&ctx, a.calib, &tk);
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
        po.bits = a.q.bits;
        po.group_size = a.q.group_size;
        if (rc == FS_OK && (rc = fs_plan_compute(&ctx, m, c, &po, &pl)) == FS_OK) {
            rc = preflight_disk(&ctx, &a, &pl);
            for (int l = 0; rc == FS_OK && l < pl.nlayers; l++)
                if (pl.layers[l].spilled) {
                    char b1[32], b2[32];
                    rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "the calibration activations (%s) do not fit the host "
                                    "budget (%s) and this version cannot spill them to disk yet: lower "
                                    "--samples or --seq-len, or raise --host-mem",
                                    fs_plan_fmt_bytes(b1, sizeof b1, pl.layers[l].act_bytes),
                                    fs_plan_fmt_bytes(b2, sizeof b2, pl.opts.host_mem));
                }
            fs_plan_free(&pl);
        }
    }
    /* an explicit work folder is locked before anything is written (the default
     * one lives inside --out, which must be empty anyway) */
    if (rc == FS_OK && a.calib && a.work) {
        if (mkdir(a.work, 0755) != 0 && errno != EEXIST)
            rc = fs_ctx_err(&ctx, FS_ERR_IO, "--work %s: %s", a.work, strerror(errno));
        if (rc == FS_OK) rc = fs_lock_folder(&ctx, a.work, &lock_fd);
    }
    if (rc == FS_OK) rc = fs_out_open(&ctx, a.out, a.overwrite, a.max_shard, a.fmt, &a.q, &o);
    if (rc != FS_OK) { fs_fwd_free(&fw); fs_tokens_free(&tk); free(ids); goto out; }
    code = FS_EXIT_RUNTIME;
    fs_log(&ctx, "quantize %s (%s, %d layers%s) -> %s: %s %d-bit g%lld %s%s, format %s, backend %s", a.model,
           m->model_type, m->nlayers, m->nmtp ? " + MTP" : "", a.out, a.q.rtn ? "rtn" : "gptq", a.q.bits,
           (long long)a.q.group_size, a.q.sym ? "sym" : "asym", a.q.act_order ? " act-order" : "",
           a.fmt == FS_FMT_GPTQ ? "gptq" : "forge", fs_backend_name(ctx.be));
    fs_signals_install();                        /* SIGINT/SIGTERM: stop between linears */
    fs_moe_report rep = {a.policy, a.min_expert_tokens, 0, NULL};
    if (a.calib) {
        fs_log(&ctx, "calibration: %lld windows of %lld tokens from %s (seed %llu)", (long long)a.samples,
               (long long)a.seq_len, a.calib, (unsigned long long)a.seed);
        snprintf(work, sizeof work, "%s", a.work ? a.work : a.out);
        if (!a.work) strncat(work, "/.forge-work", sizeof work - strlen(work) - 1);
        if (lock_fd < 0 && mkdir(work, 0755) != 0 && errno != EEXIST)
            rc = fs_ctx_err(&ctx, FS_ERR_IO, "--work %s: %s", work, strerror(errno));
        if (rc == FS_OK && lock_fd < 0) rc = fs_lock_folder(&ctx, work, &lock_fd);   /* one run per folder */
        fs_pipe_opts po = {a.q, a.act_f32, 65536, NULL, NULL, work, a.policy, a.min_expert_tokens, &rep, NULL};
        po.q.loss_f32 = 1;                       /* logs only: the f64 loss GEMMs would dominate */
        double tw = fs_now();
        if (rc == FS_OK) rc = fs_trace_new(&ctx, a.profile, a.timings, &po.trace);
        if (rc == FS_OK) rc = fs_pipeline_run(&ctx, c, m, &fw, ids, a.samples, a.seq_len, &po, o);
        if (rc == FS_OK) rc = fs_trace_finish(&ctx, po.trace, fs_now() - tw, ctx.quiet ? NULL : stderr);
        fs_trace_free(po.trace);
        if (rc == FS_OK) clean_work(work, !a.work, a.out);   /* no boundary is needed any more */
    } else {
        rc = run(&ctx, &a, c, m, o);
    }
    fs_fwd_free(&fw);
    fs_tokens_free(&tk);
    free(ids);
    json_t *extra = json_pack("{s:s, s:s?, s:I, s:I}", "method", a.q.rtn ? "rtn" : "gptq",
                              "calibration", a.calib, "samples", (json_int_t)(a.calib ? a.samples : 0),
                              "seq_len", (json_int_t)(a.calib ? a.seq_len : 0));
    if (rc == FS_OK && a.calib && m->experts > 0) {   /* per-layer expert counts and the policy */
        json_t *mj = fs_moe_report_json(&rep, m);
        if (!mj || !extra || json_object_update(extra, mj)) rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "expert report");
        json_decref(mj);
    }
    fs_moe_report_free(&rep);
    if (rc == FS_OK) {
        rc = fs_out_finish(&ctx, o, c->config, c->dir, extra);
        o = NULL;
    }
    json_decref(extra);
    if (rc == FS_OK) code = FS_EXIT_OK;
out:
    fs_out_abort(o);                             /* removes staged and partial shards */
    if (rc != FS_OK && work[0] && lock_fd >= 0) clean_work(work, !a.work, a.out);   /* ours only */
    if (lock_fd >= 0) close(lock_fd);
    if (rc == FS_ERR_ABORTED) {
        fprintf(stderr, "forge-stream: %s: stopped; %s holds no finished checkpoint (its partial shards were "
                "removed). This version cannot resume a run yet: run the same command again.\n", ctx.errmsg, a.out);
        code = 128 + fs_interrupted();           /* 130 for SIGINT, 143 for SIGTERM */
    } else if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        if (rc == FS_ERR_USAGE || rc == FS_ERR_FORMAT || rc == FS_ERR_NODEV) code = FS_EXIT_USAGE;
    }
    fs_model_free(m);
    fs_ckpt_close(c);
    fs_backend_free(ctx.be);
    return code;
}
