/* resume.c: the journal of a quantize run, committed layer by layer, and the
 * restoration of an interrupted run (resume.h). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cpu/cpu.h"
#include "src/pipeline/journal.h"
#include "src/pipeline/pipeline.h"
#include "src/pipeline/resume.h"
#include "stream/actcache.h"

static fs_status calib_info(fs_ctx *ctx, const char *path, const uint32_t *ids, size_t nids, json_t **out)
{
    uint64_t size = 0, sum = 0;
    fs_status rc = fs_file_xxh3(ctx, path, &size, &sum);
    if (rc != FS_OK) return rc;
    char h1[17], h2[17];
    fs_hex64(h1, sum);
    fs_hex64(h2, XXH3_64bits(ids, nids * sizeof *ids));
    *out = json_pack("{s:s, s:I, s:s, s:s}", "path", path, "size", (json_int_t)size, "xxh3", h1, "ids_xxh3", h2);
    return *out ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
}

/* Sets key of the journal (taking v); FS_ERR_NOMEM when v is NULL. */
static fs_status set(fs_ctx *ctx, json_t *root, const char *key, json_t *v)
{
    if (!v || json_object_set_new(root, key, v)) return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal: %s", key);
    return FS_OK;
}

fs_status fs_rj_create(fs_ctx *ctx, fs_run_journal *rj, void *argv, void *config, const char *backend,
                       const fs_ckpt *c, const char *calib_path, const uint32_t *ids, size_t nids)
{
    json_t *root = json_object(), *files = NULL, *calib = NULL, *state = NULL;
    fs_status rc = root ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    if (rc == FS_OK) rc = fs_fingerprint_model(ctx, c, (void **)&files);
    if (rc == FS_OK && calib_path) rc = calib_info(ctx, calib_path, ids, nids, &calib);
    else if (rc == FS_OK) calib = json_null();     /* --method rtn without calibration */
    if (rc == FS_OK) rc = fs_out_state(ctx, rj->o, (void **)&state);
    if (rc == FS_OK) rc = set(ctx, root, "format", json_string(FS_JOURNAL_FORMAT));
    if (rc == FS_OK) rc = set(ctx, root, "version", json_integer(FS_JOURNAL_VERSION));
    if (rc == FS_OK) rc = set(ctx, root, "forge_stream", json_string(FS_VERSION));
    if (rc == FS_OK) { rc = set(ctx, root, "argv", argv); argv = NULL; }
    if (rc == FS_OK) { rc = set(ctx, root, "config", config); config = NULL; }
    if (rc == FS_OK) rc = set(ctx, root, "backend", json_string(backend));
    /* the CPU results depend on how rows and BLAS blocks are split: a resume uses the same */
    if (rc == FS_OK) rc = set(ctx, root, "threads", json_pack("{s:i, s:i}", "openmp", omp_get_max_threads(),
                                                               "blas", fs_cpu_blas_threads()));
    /* so do the Hessians' sums, batch by batch: a resume under another budget keeps it */
    if (rc == FS_OK && rj->batch_tokens > 0) rc = set(ctx, root, "batch_tokens", json_integer(rj->batch_tokens));
    if (rc == FS_OK) { rc = set(ctx, root, "model", json_pack("{s:s, s:O}", "dir", c->dir, "files", files)); }
    if (rc == FS_OK) { rc = set(ctx, root, "calib", calib); calib = NULL; }
    if (rc == FS_OK) rc = set(ctx, root, "layers_done", json_integer(0));
    if (rc == FS_OK) rc = set(ctx, root, "sealed", json_false());
    if (rc == FS_OK) rc = set(ctx, root, "act", json_null());
    if (rc == FS_OK) { rc = set(ctx, root, "output", state); state = NULL; }
    if (rc == FS_OK) rc = set(ctx, root, "moe", json_array());
    if (rc == FS_OK) rc = set(ctx, root, "layers", json_array());
    if (rc == FS_OK) rc = fs_journal_write(ctx, rj->work, root);
    json_decref(argv);
    json_decref(config);
    json_decref(files);
    json_decref(calib);
    json_decref(state);
    if (rc != FS_OK) { json_decref(root); return rc; }
    rj->root = root;
    return FS_OK;
}

fs_status fs_rj_commit_prep(fs_ctx *ctx, void *arg, int layers_done, void **snap)
{
    fs_run_journal *rj = arg;
    (void)layers_done;
    json_t *a = json_array();
    int bad = !a;
    for (int i = 0; !bad && rj->rep && i < rj->rep->n; i++) {
        const fs_moe_layer_stat *s = &rj->rep->l[i];
        json_t *cnt = json_array(), *under = json_array();
        for (int e = 0; cnt && under && e < s->nexp; e++) {
            bad |= json_array_append_new(cnt, json_integer(s->count[e]));
            bad |= json_array_append_new(under, json_integer(s->under[e]));
        }
        bad |= !cnt || !under ||
               json_array_append_new(a, json_pack("{s:i, s:o, s:o}", "layer", s->layer, "count", cnt, "under", under));
    }
    if (bad) { json_decref(a); return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal: expert counts"); }
    *snap = a;
    return FS_OK;
}

void fs_rj_snap_free(void *snap)
{
    json_decref((json_t *)snap);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The state being replaced becomes "prev": one layer back stays restorable
 * (its boundary and the staging file of the shard it was gathering are kept
 * until the next commit), so a damaged boundary costs one layer, not all.
 * *keep: that shard. */
static fs_status keep_previous(fs_ctx *ctx, json_t *root, int *keep)
{
    json_t *out = json_object_get(root, "output");
    *keep = (int)json_integer_value(json_object_get(out, "nshards")) + 1;
    return set(ctx, root, "prev", json_pack("{s:O, s:O, s:O, s:O}", "layers_done", json_object_get(root, "layers_done"),
                                            "act", json_object_get(root, "act"), "output", out,
                                            "moe", json_object_get(root, "moe")));
}

fs_status fs_rj_commit(fs_ctx *ctx, void *arg, const fs_commit_info *ci)
{
    fs_run_journal *rj = arg;
    json_t *root = rj->root, *state = NULL;
    char hx[17];
    fs_status rc = fs_out_state(ctx, rj->o, (void **)&state);
    if (rc != FS_OK) return rc;
    size_t ntensors = json_array_size(json_object_get(state, "tensors")) +
                      json_array_size(json_object_get(json_object_get(state, "staging"), "tensors"));
    json_t *entry = json_pack("{s:i, s:O, s:I}", "layer", ci->layers_done - 1, "shards", json_object_get(state, "nshards"),
                              "tensors", (json_int_t)ntensors);
    int keep = 0;
    rc = keep_previous(ctx, root, &keep);
    if (rc == FS_OK) { rc = set(ctx, root, "output", state); state = NULL; }
    if (rc == FS_OK) rc = set(ctx, root, "layers_done", json_integer(ci->layers_done));
    if (rc == FS_OK && ci->snap) rc = set(ctx, root, "moe", json_incref((json_t *)ci->snap));
    if (rc == FS_OK && ci->act_path) {
        fs_hex64(hx, ci->act_sum);
        rc = set(ctx, root, "act", json_pack("{s:s, s:I, s:I, s:s}", "file", base_name(ci->act_path), "rows",
                                             (json_int_t)ci->act_rows, "row_bytes", (json_int_t)ci->act_row_bytes,
                                             "checksum", hx));
        if (rc == FS_OK && entry) rc = set(ctx, entry, "act_checksum", json_string(hx));
    }
    if (rc == FS_OK && (!entry || json_array_append(json_object_get(root, "layers"), entry)))
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    json_decref(entry);
    json_decref(state);
    if (rc == FS_OK) rc = fs_journal_write(ctx, rj->work, root);
    if (rc == FS_OK) fs_out_release(rj->o, keep);
    return rc;
}

fs_status fs_rj_seal(fs_ctx *ctx, fs_run_journal *rj)
{
    json_t *state = NULL;
    int keep = 0;
    fs_status rc = fs_out_seal(ctx, rj->o);
    if (rc == FS_OK) fs_crashpoint(ctx, "sealed");
    if (rc == FS_OK) rc = fs_out_state(ctx, rj->o, (void **)&state);
    if (rc == FS_OK) rc = keep_previous(ctx, rj->root, &keep);
    if (rc == FS_OK) { rc = set(ctx, rj->root, "output", state); state = NULL; }
    if (rc == FS_OK) rc = set(ctx, rj->root, "sealed", json_true());
    if (rc == FS_OK) rc = fs_journal_write(ctx, rj->work, rj->root);
    if (rc == FS_OK) fs_out_release(rj->o, keep);
    json_decref(state);
    return rc;
}

int fs_rj_layers_done(const fs_run_journal *rj)
{
    return (int)json_integer_value(json_object_get(rj->root, "layers_done"));
}

int fs_rj_sealed(const fs_run_journal *rj)
{
    return json_is_true(json_object_get(rj->root, "sealed"));
}

/* Removes boundary files of work other than keep and keep2 (NULL: none)
 * and temporary files. */
static void sweep_work(const char *work, const char *keep, const char *keep2)
{
    DIR *d = opendir(work);
    struct dirent *e;
    char path[4500];
    while (d && (e = readdir(d))) {
        const char *n = e->d_name;
        int act = !strncmp(n, "act-", 4) && strstr(n, ".fsa");
        int tmp = strstr(n, ".tmp.") != NULL;       /* a killed writer's: journal, flags, boundary */
        tmp |= !strncmp(n, "spill-", 6) && strstr(n, ".raw") != NULL;   /* a killed run's spilled activations */
        if ((act && !tmp && ((keep && !strcmp(n, keep)) || (keep2 && !strcmp(n, keep2)))) || (!act && !tmp)) continue;
        snprintf(path, sizeof path, "%s/%s", work, n);
        unlink(path);
    }
    if (d) closedir(d);
}

void fs_rj_remove(const char *work)
{
    char path[4500];
    sweep_work(work, NULL, NULL);
    snprintf(path, sizeof path, "%s/%s", work, FS_JOURNAL_NAME);
    unlink(path);
    snprintf(path, sizeof path, "%s/start.json", work);
    unlink(path);
}

/* The boundary the journal names, every chunk decoded and checked. */
static fs_status check_act(fs_ctx *ctx, const fs_run_journal *rj, const json_t *a, char *act, size_t act_n)
{
    if (!json_is_object(a))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: layers are done but no activation boundary is recorded", rj->work,
                          FS_JOURNAL_NAME);
    snprintf(act, act_n, "%s/%s", rj->work, json_string_value(json_object_get(a, "file")));
    uint64_t want = 0;
    fs_unhex64(json_string_value(json_object_get(a, "checksum")), &want);
    fs_act_file *f = NULL;
    fs_status rc = fs_act_open(ctx, act, &f);
    if (rc == FS_OK) rc = fs_act_verify(ctx, f);
    if (rc == FS_OK && (fs_act_checksum(f) != want ||
                        fs_act_rows(f) != (uint64_t)json_integer_value(json_object_get(a, "rows")) ||
                        fs_act_row_bytes(f) != (uint64_t)json_integer_value(json_object_get(a, "row_bytes"))))
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: not the boundary the journal recorded (checksum %016llx, "
                        "recorded %016llx)", act, (unsigned long long)fs_act_checksum(f), (unsigned long long)want);
    fs_act_close(f);
    if (rc == FS_ERR_IO || rc == FS_ERR_FORMAT) {        /* gone or unreadable: not to be trusted either */
        char msg[sizeof ctx->errmsg];
        memcpy(msg, ctx->errmsg, sizeof msg);
        fs_ctx_clear(ctx);
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s", msg);
    }
    return rc;
}

static fs_status restore_moe(fs_ctx *ctx, const fs_run_journal *rj, const json_t *moe, fs_moe_report *rep)
{
    size_t i;
    json_t *e;
    fs_moe_report_free(rep);
    rep->n = 0;
    rep->l = NULL;
    json_array_foreach(moe, i, e) {
        json_t *cnt = json_object_get(e, "count"), *under = json_object_get(e, "under");
        size_t n = json_array_size(cnt);
        if (!json_is_integer(json_object_get(e, "layer")) || !json_is_array(cnt) || !json_is_array(under) ||
            json_array_size(under) != n || n == 0 || n > 65536)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: 'moe' entry %zu is malformed", rj->work, FS_JOURNAL_NAME, i);
        int64_t *c = malloc(sizeof *c * n);
        int *u = malloc(sizeof *u * n);
        fs_status rc = c && u ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "expert counts");
        for (size_t k = 0; rc == FS_OK && k < n; k++) {
            c[k] = json_integer_value(json_array_get(cnt, k));
            u[k] = (int)json_integer_value(json_array_get(under, k));
        }
        if (rc == FS_OK)
            rc = fs_moe_report_add(ctx, rep, (int)json_integer_value(json_object_get(e, "layer")), (int)n, c, u);
        free(c);
        free(u);
        if (rc != FS_OK) return rc;
    }
    return FS_OK;
}

/* Restores one recorded state (the journal's current one or its "prev"):
 * its boundary checked first (so a failure leaves every file as it was),
 * then the output writer, then the MoE counts. */
static fs_status try_state(fs_ctx *ctx, fs_run_journal *rj, const json_t *st, int keep, const char *out_dir,
                           uint64_t max_shard, fs_format fmt, const fs_quant_opts *q, fs_moe_report *rep,
                           fs_outckpt **o, char *act, size_t act_n)
{
    const int done = (int)json_integer_value(json_object_get(st, "layers_done"));
    act[0] = '\0';
    fs_status rc = FS_OK;
    if (rj->calibrated && done > 0 && done < rj->m->nlayers)
        rc = check_act(ctx, rj, json_object_get(st, "act"), act, act_n);
    if (rc == FS_OK) rc = fs_out_resume(ctx, out_dir, max_shard, fmt, q, json_object_get(st, "output"), keep, o);
    if (rc == FS_OK) rc = restore_moe(ctx, rj, json_object_get(st, "moe"), rep);
    if (rc != FS_OK) { fs_out_detach(*o); *o = NULL; }
    return rc;
}

fs_status fs_rj_restore(fs_ctx *ctx, fs_run_journal *rj, const fs_ckpt *c, const char *calib_path,
                        const uint32_t *ids, size_t nids, const char *out_dir, uint64_t max_shard, fs_format fmt,
                        const fs_quant_opts *q, fs_moe_report *rep, fs_outckpt **o, int *start_layer,
                        char *act, size_t act_n)
{
    json_t *root = rj->root, *files = NULL, *calib = NULL;
    *o = NULL;
    *start_layer = 0;
    act[0] = '\0';
    /* the inputs must be the ones the run started with */
    fs_status rc = fs_fingerprint_model(ctx, c, (void **)&files);
    if (rc == FS_OK) rc = fs_fingerprint_check(ctx, c->dir, json_object_get(json_object_get(root, "model"), "files"), files);
    json_decref(files);
    json_t *rc_calib = json_object_get(root, "calib");
    if (rc == FS_OK && !json_is_null(rc_calib) != (calib_path != NULL))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: the calibration recorded does not match the run's flags", rj->work,
                        FS_JOURNAL_NAME);
    if (rc == FS_OK && calib_path) rc = calib_info(ctx, calib_path, ids, nids, &calib);
    if (rc == FS_OK && calib_path && !json_equal(json_object_get(calib, "xxh3"), json_object_get(rc_calib, "xxh3")))
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "calibration file %s changed since the run started (its checksum differs); "
                        "start the run again without --resume", calib_path);
    if (rc == FS_OK && calib_path && !json_equal(json_object_get(calib, "ids_xxh3"), json_object_get(rc_calib, "ids_xxh3")))
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the calibration windows taken from %s differ from the run's", calib_path);
    json_decref(calib);
    if (rc != FS_OK) return rc;
    json_t *th = json_object_get(root, "threads");
    int omp = (int)json_integer_value(json_object_get(th, "openmp")), blas = (int)json_integer_value(json_object_get(th, "blas"));
    if (omp >= 1 && blas >= 1 && omp <= 4096 && blas <= 4096 &&
        (omp != omp_get_max_threads() || blas != fs_cpu_blas_threads())) {
        fs_log(ctx, "resume: %d OpenMP and %d BLAS threads, as the run had (%d and %d here): the bytes depend on it", omp,
               blas, omp_get_max_threads(), fs_cpu_blas_threads());
        omp_set_num_threads(omp);
        fs_cpu_set_blas_threads(blas);
    }
    const json_int_t bt = json_integer_value(json_object_get(root, "batch_tokens"));
    if (bt > 0 && bt <= (1 << 30)) {
        if (rj->batch_tokens > 0 && bt != rj->batch_tokens)
            fs_log(ctx, "resume: batches of %lld tokens, as the run had (the budget now allows %lld): the bytes depend "
                   "on it", (long long)bt, (long long)rj->batch_tokens);
        rj->batch_tokens = bt;
    }
    /* what is committed, checked byte for byte: the latest state, else the one before it */
    json_t *prev = json_object_get(root, "prev");
    const int total = rj->m->nlayers + rj->m->nmtp;
    char act2[4400] = "";
    int keep = json_is_object(prev) ? (int)json_integer_value(json_object_get(json_object_get(prev, "output"), "nshards")) + 1 : 0;
    rc = try_state(ctx, rj, root, keep, out_dir, max_shard, fmt, q, rep, o, act, act_n);
    if (rc == FS_OK) {
        json_t *pa = json_object_get(prev, "act");
        if (json_is_object(pa)) snprintf(act2, sizeof act2, "%s", json_string_value(json_object_get(pa, "file")));
        rj->o = *o;
        sweep_work(rj->work, act[0] ? base_name(act) : NULL, act2[0] ? act2 : NULL);
        *start_layer = fs_rj_layers_done(rj);
        fs_log(ctx, "resume: %d of %d layers committed in %s/%s, every committed file checked", *start_layer, total,
               rj->work, FS_JOURNAL_NAME);
        return FS_OK;
    }
    if (rc != FS_ERR_CORRUPT) return rc;
    fprintf(stderr, "forge-stream: warning: %s\n", ctx->errmsg);
    fs_ctx_clear(ctx);
    json_t *back = json_is_object(prev) ? json_incref(prev) : NULL;
    if (back && (rc = try_state(ctx, rj, back, 0, out_dir, max_shard, fmt, q, rep, o, act, act_n)) == FS_OK) {
        /* one layer back: that state becomes the journal's (and has no prev of its own) */
        const char *keys[] = {"layers_done", "act", "output", "moe"};
        for (size_t i = 0; rc == FS_OK && i < 4; i++) rc = set(ctx, root, keys[i], json_incref(json_object_get(back, keys[i])));
        json_decref(back);
        if (rc == FS_OK) rc = set(ctx, root, "sealed", json_false());
        if (rc == FS_OK) json_object_del(root, "prev");
        json_t *log = json_object_get(root, "layers");             /* the rolled-back layer's entry */
        const int back_to = (int)json_integer_value(json_object_get(root, "layers_done"));
        for (size_t i = json_array_size(log); rc == FS_OK && i-- > 0;)
            if (json_integer_value(json_object_get(json_array_get(log, i), "layer")) >= back_to)
                json_array_remove(log, i);
        if (rc == FS_OK) rc = fs_journal_write(ctx, rj->work, root);
        if (rc != FS_OK) { fs_out_detach(*o); *o = NULL; return rc; }
        rj->o = *o;
        sweep_work(rj->work, act[0] ? base_name(act) : NULL, NULL);
        *start_layer = fs_rj_layers_done(rj);
        fprintf(stderr, "forge-stream: warning: recomputing from model.layers.%d, the last good boundary (%s)\n",
                *start_layer, act[0] ? base_name(act) : "the embeddings");
        return FS_OK;
    }
    if (back) {
        fprintf(stderr, "forge-stream: warning: %s\n", ctx->errmsg);
        fs_ctx_clear(ctx);
        json_decref(back);
    }
    if (rc != FS_OK && rc != FS_ERR_CORRUPT) return rc;
    /* nothing committed can be trusted: start again from the embeddings */
    fprintf(stderr, "forge-stream: warning: recomputing from model.layers.0 (the embeddings are the last good "
            "boundary)\n");
    act[0] = '\0';
    sweep_work(rj->work, NULL, NULL);
    json_t *state = NULL;
    rc = fs_out_open(ctx, out_dir, 1, max_shard, fmt, q, o);
    if (rc == FS_OK) { fs_out_journal(*o); rj->o = *o; rc = fs_out_state(ctx, *o, (void **)&state); }
    if (rc == FS_OK) { rc = set(ctx, root, "output", state); state = NULL; }
    if (rc == FS_OK) rc = set(ctx, root, "layers_done", json_integer(0));
    if (rc == FS_OK) rc = set(ctx, root, "sealed", json_false());
    if (rc == FS_OK) rc = set(ctx, root, "act", json_null());
    if (rc == FS_OK) rc = set(ctx, root, "moe", json_array());
    if (rc == FS_OK) rc = set(ctx, root, "layers", json_array());
    if (rc == FS_OK) json_object_del(root, "prev");
    if (rc == FS_OK) rc = restore_moe(ctx, rj, json_object_get(root, "moe"), rep);
    if (rc == FS_OK) rc = fs_journal_write(ctx, rj->work, root);
    json_decref(state);
    if (rc != FS_OK) { fs_out_detach(*o); *o = NULL; }
    return rc;
}

void fs_rj_free(fs_run_journal *rj)
{
    json_decref((json_t *)rj->root);
    rj->root = NULL;
    json_decref((json_t *)rj->start);
    rj->start = NULL;
}
