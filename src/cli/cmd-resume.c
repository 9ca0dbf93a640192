/* cmd-resume.c: quantize's resume side: the journal's view of the options
 * (the canonical config, the flags kept), --resume's argument handling
 * (conflicts, the backend, a run stopped before its journal) and the
 * messages that say how to go on. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/cli/cli.h"
#include "src/cli/cmd-quantize.h"
#include "src/pipeline/journal.h"
#include "src/pipeline/plan.h"

/* ---- the journal's view of the options ------------------------------------ */

/* Every option that shapes the output, defaults filled in: two runs with the
 * same config write the same bytes (on one backend). */
json_t *quantize_config_json(const qargs *a)
{
    const fs_quant_opts *q = &a->q;
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:I, s:i, s:I, s:b, s:s, s:f, s:i, s:f,"
                     " s:b, s:b, s:i, s:f, s:s, s:I, s:I, s:b}",
                     "model", a->model ? a->model : "", "out", a->out ? a->out : "", "calib", a->calib ? a->calib : "",
                     "samples", (json_int_t)a->samples, "seq_len", (json_int_t)a->seq_len,
                     "calib_seed", (json_int_t)a->seed, "method", a->method, "act_dtype", a->act_f32 ? "f32" : "bf16",
                     "format", fs_format_name(a->fmt),
                     "max_shard_size", (json_int_t)(a->max_shard ? a->max_shard : FS_DEFAULT_MAX_SHARD),
                     "bits", q->bits, "group_size", (json_int_t)q->group_size, "sym", q->sym,
                     "grid", fs_grid_name(q->grid), "grid_shrink", (double)q->shrink,
                     "grid_n", q->grid_n, "grid_norm", (double)q->norm, "act_order", q->act_order,
                     "static_groups", q->static_groups, "block", q->block, "damp", q->damp,
                     "expert_policy", fs_expert_policy_name(a->policy), "min_expert_tokens",
                     (json_int_t)a->min_expert_tokens, "batch_tokens", (json_int_t)a->batch_tokens,
                     "experts_only", a->experts_only);
    /* the options added later only when set: older journals still compare equal */
    if (j && q->refine_scales && json_object_set_new(j, "refine_scales", json_integer(q->refine_scales))) {
        json_decref(j);
        return NULL;
    }
    if (j && q->grid == FS_GRID_HMSE &&
        json_object_set_new(j, "hmse_weight", json_string(q->hmse_weight == FS_HMSE_DIAG ? "diag" : "obs"))) {
        json_decref(j);
        return NULL;
    }
    if (j && a->calib_text && json_object_set_new(j, "calib_text", json_true())) {
        json_decref(j);
        return NULL;
    }
    if (j && a->jsonl_field && json_object_set_new(j, "jsonl_field", json_string(a->jsonl_field))) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Flags that do not touch the output: free to differ on --resume. */
static int free_flag(const char *f, int *has_value)
{
    static const char *with[] = {"--work", "--profile", "--timings", "--host-mem", "--gpu-mem", "--backend", "--experts-per-wave", "--spill",
                                 "--threads"};
    static const char *without[] = {"--quiet", "--resume", "--overwrite", "--help", "-h", "--verify-model",
                                    "--allow-device-change"};
    for (size_t i = 0; i < sizeof with / sizeof *with; i++)
        if (!strcmp(f, with[i])) { *has_value = 1; return 1; }
    for (size_t i = 0; i < sizeof without / sizeof *without; i++)
        if (!strcmp(f, without[i])) { *has_value = 0; return 1; }
    return 0;
}

/* The user's flags as the journal keeps them: free flags dropped, the paths
 * of --model, --out and --calib made absolute (a resume may run elsewhere). */
json_t *quantize_argv_json(int argc, char **argv, const qargs *a)
{
    json_t *j = json_array();
    for (int i = 1; j && i < argc; i++) {
        int hv = 0;
        if (free_flag(argv[i], &hv)) { i += hv; continue; }
        const char *v = argv[i];
        if (i > 1 && (!strcmp(argv[i - 1], "--model") || !strcmp(argv[i - 1], "--out") || !strcmp(argv[i - 1], "--calib") ||
                      !strcmp(argv[i - 1], "--calib-text")))
            v = !strcmp(argv[i - 1], "--model") ? a->model : !strcmp(argv[i - 1], "--out") ? a->out : a->calib;
        if (json_array_append_new(j, json_string(v))) { json_decref(j); return NULL; }
    }
    return j;
}

/* --model, --out and --calib as absolute paths (buffers of PATH_MAX). */
fs_status quantize_absolute_paths(fs_ctx *ctx, qargs *a, char *model, char *out, char *calib)
{
    if (!realpath(a->model, model)) return fs_ctx_err(ctx, FS_ERR_USAGE, "--model %s: %s", a->model, strerror(errno));
    if (a->calib && !realpath(a->calib, calib)) return fs_ctx_err(ctx, FS_ERR_USAGE, "--calib %s: %s", a->calib, strerror(errno));
    if (!realpath(a->out, out)) {                 /* not created yet: its parent then */
        char tmp[PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s", a->out);
        char *slash = strrchr(tmp, '/');
        const char *base = slash ? slash + 1 : tmp;
        if (strlen(base) >= PATH_MAX - 1) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out: path too long");
        if (slash == tmp) {
            out[0] = '/';
            memcpy(out + 1, base, strlen(base) + 1);
        } else {
            if (slash) *slash = '\0';
            char parent[PATH_MAX];
            if (!realpath(slash ? tmp : ".", parent))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--out %s: %s", a->out, strerror(errno));
            if (snprintf(out, PATH_MAX, "%s/%s", parent, base) >= PATH_MAX)
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--out: path too long");
        }
    }
    a->model = model;
    a->out = out;
    if (a->calib) a->calib = calib;
    return FS_OK;
}

/* --resume: the options come from the journal of the work folder (locked
 * first); a flag given now that would change them is an error naming it. */
/* {"quantize", the strings of arr..., extra NULLs} pointing into arr (kept
 * alive by the caller), or NULL when arr is not an array of strings. */
static char **argv_of(const json_t *arr, size_t extra)
{
    size_t n = json_array_size(arr);
    char **av = json_is_array(arr) ? calloc(n + 2 + extra, sizeof *av) : NULL;
    if (av) av[0] = "quantize";
    for (size_t i = 0; av && i < n; i++)
        if (!(av[i + 1] = (char *)json_string_value(json_array_get(arr, i)))) { free(av); av = NULL; }
    return av;
}

/* A run stopped before its first commit, resumed without its flags: the
 * ones it saved in start.json (kept in rj->start: a's strings point into
 * it), with the work folder and the free flags u gives now. */
static fs_status saved_flags(fs_ctx *ctx, fs_run_journal *rj, const qargs *u, qargs *a, int damaged)
{
    char sp[4400];
    int help = 0;
    snprintf(sp, sizeof sp, "%s/%s", rj->work, START_NAME);
    fs_ctx pc;
    fs_ctx_init(&pc);
    json_t *st = NULL;
    fs_status src = fs_sealed_read(&pc, sp, (void **)&st);
    json_t *sa = json_object_get(st, "argv");
    const char *fmt = json_string_value(json_object_get(st, "format"));
    char **av = src == FS_OK && fmt && !strcmp(fmt, "forge-stream-start") ? argv_of(sa, 0) : NULL;
    qargs f = {0};
    if (!av || quantize_parse(&pc, (int)json_array_size(sa) + 1, av, &f, &help) != FS_OK || f.resume) {
        free(av);
        json_decref(st);
        if (src == FS_ERR_CORRUPT || damaged)
            return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: the journal is damaged and %s %s: nothing there can be "
                              "trusted: start the run again with its flags and --overwrite", rj->work, START_NAME,
                              src == FS_ERR_CORRUPT ? "too" : "is missing or unreadable");
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: no journal and no readable %s: the run was stopped before it saved "
                          "its flags; start it again with its flags and --overwrite", rj->work, START_NAME);
    }
    free(av);
    f.work = u->work;                              /* the folder given now (the flags never hold it) */
    f.profile = u->profile;
    f.timings = u->timings;
    f.host_mem = u->host_mem;
    f.gpu_mem = u->gpu_mem;
    f.spill = u->spill;
    *a = f;
    rj->start = st;
    return FS_OK;
}

/* Applies the places the run's files moved to (moved: {model, out, calib}
 * of absolute paths) to a and to the journal (argv and config), so the next
 * commit records them; each move is logged. */
static fs_status follow_moves(fs_ctx *ctx, fs_run_journal *rj, qargs *a, json_t *moved)
{
    const char *key;
    json_t *v;
    json_t *argv = json_object_get(rj->root, "argv");
    json_object_foreach(moved, key, v) {
        const char *now = json_string_value(v);
        const char **slot = !strcmp(key, "model") ? &a->model : !strcmp(key, "out") ? &a->out : &a->calib;
        fs_log(ctx, "resume: --%s moved since the run started: %s -> %s", key, *slot ? *slot : "(none)", now);
        *slot = now;
        char flag[16];
        snprintf(flag, sizeof flag, "--%s", key);
        for (size_t i = 0; i + 1 < json_array_size(argv); i++)
            if (!strcmp(json_string_value(json_array_get(argv, i)), flag) &&
                json_array_set_new(argv, i + 1, json_string(now)))
                return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    }
    json_t *cfg = quantize_config_json(a);
    if (!cfg || json_object_set_new(rj->root, "config", cfg)) return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    return FS_OK;
}

fs_status quantize_resume_args(fs_ctx *ctx, int argc, char **argv, qargs *a, fs_run_journal *rj, int *lock_fd)
{
    qargs u = *a;                                  /* what was given now */
    if (u.work) snprintf(rj->work, sizeof rj->work, "%s", u.work);
    else if (u.out) snprintf(rj->work, sizeof rj->work, "%s/.forge-work", u.out);
    else return fs_ctx_err(ctx, FS_ERR_USAGE, "--resume needs --work DIR (or --out OUT for the default OUT/.forge-work)");
    struct stat sb;
    char fin[4400], *slash = strrchr(rj->work, '/');
    if (slash && !strcmp(slash, "/.forge-work") && stat(rj->work, &sb) != 0) {
        /* the default work folder is removed when the run finishes */
        snprintf(fin, sizeof fin, "%.*s/model.safetensors.index.json", (int)(slash - rj->work), rj->work);
        int done = access(fin, F_OK) == 0;
        snprintf(fin, sizeof fin, "%.*s/model.safetensors", (int)(slash - rj->work), rj->work);
        if (done || access(fin, F_OK) == 0) {
            fs_log(ctx, "resume: nothing to do: %.*s holds a finished checkpoint", (int)(slash - rj->work), rj->work);
            a->finished = 1;
            return FS_OK;
        }
    }
    if (stat(rj->work, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--resume: %s is not a work folder (%s): if the run was stopped before "
                          "it wrote anything, run its quantize command again", rj->work,
                          errno ? strerror(errno) : "not a folder");
    fs_status rc = fs_lock_folder(ctx, rj->work, lock_fd);
    char jp[4400];
    snprintf(jp, sizeof jp, "%s/%s", rj->work, FS_JOURNAL_NAME);
    int no_journal = rc == FS_OK && access(jp, F_OK) != 0 && errno == ENOENT, from_prev = 0;
    if (rc == FS_OK && !no_journal) {
        rc = fs_journal_read(ctx, rj->work, &rj->root, &from_prev);
        if (rc == FS_ERR_CORRUPT) {          /* both journals damaged: what can be proven is the flags */
            fprintf(stderr, "forge-stream: warning: %s: nothing committed can be trusted\n", ctx->errmsg);
            fs_ctx_clear(ctx);
            rc = FS_OK;
            no_journal = 2;
        }
    }
    if (rc == FS_OK && no_journal) {
        /* killed before its first commit (or nothing committed can be trusted):
         * the run starts over, with the flags given again or those it saved */
        if ((no_journal == 2 || !u.model || !u.out || (!u.calib && strcmp(u.method, "rtn") != 0)) &&
            (rc = saved_flags(ctx, rj, &u, a, no_journal == 2)) != FS_OK)
            return rc;
        if (no_journal == 2) fs_log(ctx, "resume: starting over from the flags the run saved (%s)", START_NAME);
        else fs_log(ctx, "resume: %s holds no journal yet (the run stopped before its first commit): starting over",
                    rj->work);
        close(*lock_fd);
        *lock_fd = -1;
        a->resume = 0;
        a->overwrite = 1;
        rj->work[0] = '\0';
        return FS_OK;
    }
    if (rc != FS_OK) return rc;
    json_t *jargv = json_object_get(rj->root, "argv"), *jcfg = json_object_get(rj->root, "config");
    size_t n = json_array_size(jargv);
    char **av = argv_of(jargv, 2);                 /* room for one flag and its value */
    if (!av) return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal argv");
    int help = 0;
    qargs j = {0};
    fs_ctx pc;
    fs_ctx_init(&pc);
    if (quantize_parse(&pc, (int)n + 1, av, &j, &help) != FS_OK)
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: its flags do not parse: %s", rj->work, FS_JOURNAL_NAME, pc.errmsg);
    json_t *mine = rc == FS_OK ? quantize_config_json(&j) : NULL;
    const char *wrote = json_string_value(json_object_get(rj->root, "forge_stream"));
    if (rc == FS_OK && !json_equal(mine, jcfg) && wrote && strcmp(wrote, FS_VERSION))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: this forge-stream (%s) reads its flags differently from the one that "
                        "wrote it (%s): finish the run with that version", rj->work, FS_JOURNAL_NAME, FS_VERSION, wrote);
    else if (rc == FS_OK && !json_equal(mine, jcfg))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: its 'config' does not match its 'argv' (the journal was edited and "
                        "sealed again, or written by a build that reads its flags differently): it cannot be resumed",
                        rj->work, FS_JOURNAL_NAME);
    /* each flag given now, applied on top of the journal's: it must change nothing */
    json_t *moved = json_object();
    if (!moved) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    for (int i = 1; rc == FS_OK && i < argc; i++) {
        int hv = 0;
        if (free_flag(argv[i], &hv)) { i += hv; continue; }
        hv = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0;
        if (hv && (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--out") || !strcmp(argv[i], "--calib"))) {
            /* where the run's files are now: a folder moved since the run started is
             * followed (its contents are checked as always: fingerprints, checksums) */
            char now[PATH_MAX];
            const char *key = argv[i] + 2, *then = !strcmp(key, "model") ? j.model : !strcmp(key, "out") ? j.out : j.calib;
            if (!realpath(argv[i + 1], now)) rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s %s: %s", argv[i], argv[i + 1], strerror(errno));
            else if (!then || strcmp(now, then)) rc = json_object_set_new(moved, key, json_string(now)) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "journal") : FS_OK;
            i++;
            continue;
        }
        av[n + 1] = argv[i];
        av[n + 2] = hv ? argv[i + 1] : NULL;
        qargs t = {0};
        fs_ctx_init(&pc);
        fs_status prc = quantize_parse(&pc, (int)n + 2 + hv, av, &t, &help);
        json_t *theirs = prc == FS_OK ? quantize_config_json(&t) : NULL;
        char model[PATH_MAX], out[PATH_MAX], calib[PATH_MAX];
        if (theirs && (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--out") || !strcmp(argv[i], "--calib") ||
                       !strcmp(argv[i], "--calib-text")) && hv) {
            /* a path given again: the same place, however written, is no conflict */
            qargs t2 = t;
            if (quantize_absolute_paths(&pc, &t2, model, out, calib) == FS_OK) {
                json_decref(theirs);
                theirs = quantize_config_json(&t2);
            }
        }
        if (prc != FS_OK) rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s", pc.errmsg);
        else if (!json_equal(theirs, mine))
            rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s%s%s conflicts with the run being resumed in %s (--resume takes every "
                            "option from its journal: leave %s out, or start a new run)", argv[i], hv ? " " : "",
                            hv ? argv[i + 1] : "", rj->work, argv[i]);
        json_decref(theirs);
        i += hv;
    }
    json_decref(mine);
    free(av);
    /* the default work folder moved with its output folder: the output is beside it */
    char wabs[PATH_MAX], parent[PATH_MAX + 8];
    if (rc == FS_OK && json_is_true(json_object_get(rj->root, "work_default")) && !json_object_get(moved, "out") &&
        realpath(rj->work, wabs)) {
        snprintf(parent, sizeof parent, "%s", wabs);
        char *sl = strrchr(parent, '/');
        int named = sl && !strcmp(sl, "/.forge-work");     /* a copy named otherwise is not inside an output */
        if (sl && sl != parent) *sl = '\0';
        if (named && j.out && strcmp(parent, j.out) && json_object_set_new(moved, "out", json_string(parent)))
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    }
    if (rc == FS_OK && json_object_size(moved)) rc = follow_moves(ctx, rj, &j, moved);
    if (rc != FS_OK) { json_decref(moved); return rc; }
    rj->moved = moved;
    /* the backend must be the run's: another one would not give the same bytes */
    const char *be = json_string_value(json_object_get(rj->root, "backend"));
    fs_backend_kind want;
    if (fs_arg_backend(ctx, be, &want) != FS_OK)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: unknown backend '%s'", rj->work, FS_JOURNAL_NAME, be);
    if (u.backend_name && u.backend != FS_BE_AUTO && u.backend != want)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--backend %s conflicts with the run being resumed, which ran on %s "
                          "(another backend would not write the same bytes)", u.backend_name, be);
    /* the thread counts shape the CPU bytes too: a resume runs with the run's */
    json_t *th = json_object_get(rj->root, "threads");
    if (u.threads > 0 && (json_integer_value(json_object_get(th, "openmp")) != u.threads ||
                          json_integer_value(json_object_get(th, "blas")) != u.threads))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--threads %lld conflicts with the run being resumed, which ran with %lld "
                          "OpenMP and %lld BLAS threads (the bytes depend on them): leave --threads out",
                          (long long)u.threads, (long long)json_integer_value(json_object_get(th, "openmp")),
                          (long long)json_integer_value(json_object_get(th, "blas")));
    j.backend = want;
    j.resume = 1;
    j.work = rj->work;
    j.profile = u.profile;
    j.timings = u.timings;
    j.host_mem = u.host_mem;
    j.gpu_mem = u.gpu_mem;
    j.experts_per_wave = u.experts_per_wave;
    j.spill = u.spill;
    j.verify_model = u.verify_model;
    j.allow_device_change = u.allow_device_change;
    *a = j;
    return FS_OK;
}

/* Is work the default OUT/.forge-work (removed with the run's end)? */
int quantize_is_default_work(const qargs *a, const char *work)
{
    char w[PATH_MAX], d[PATH_MAX + 16], o[PATH_MAX];
    if (!work[0] || !a->out || !realpath(work, w) || !realpath(a->out, o)) return 0;
    snprintf(d, sizeof d, "%s/.forge-work", o);
    return strcmp(w, d) == 0;
}

/* Says how to go on after a failure or a signal once the journal exists. */
void quantize_resume_hint(const qargs *a, const fs_run_journal *rj, fs_status why)
{
    char b1[32], b2[32];
    const int done = rj->root ? fs_rj_layers_done(rj) : 0;
    if (why == FS_ERR_NOSPACE)
        fprintf(stderr, "forge-stream: the whole run needs about %s free on %s%s%s%s; free some space, then\n",
                fs_plan_fmt_bytes(b1, sizeof b1, a->need_out), a->out, a->need_work ? " and " : "",
                a->need_work ? fs_plan_fmt_bytes(b2, sizeof b2, a->need_work) : "", a->need_work ? " on --work" : "");
    if (why == FS_ERR_NUMERIC || why == FS_ERR_FORMAT) {
        /* the model itself is bad there: the same resume would stop at the same place */
        fprintf(stderr, "forge-stream: %d layer(s) are committed; the run cannot go on with the model as it is.  "
                "Repair the file named above (e.g. download that shard again), then continue with:\n"
                "  forge-stream --resume --work %s --verify-model\n"
                "(--verify-model checks that what the committed layers read is unchanged)\n", done, rj->work);
        return;
    }
    fprintf(stderr, "forge-stream: %d layer(s) are committed; continue with:\n  forge-stream --resume --work %s\n",
            done, rj->work);
}
