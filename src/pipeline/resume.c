/* resume.c: the journal of a quantize run, committed layer by layer, and the
 * restoration of an interrupted run (resume.h). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cpu/threads.h"
#include "src/backend/backend.h"
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
    int nomp = 0, nblas = 0;
    fs_threads_get(&nomp, &nblas);
    if (rc == FS_OK) rc = set(ctx, root, "threads", json_pack("{s:i, s:i}", "openmp", nomp, "blas", nblas));
    if (rc == FS_OK) rc = set(ctx, root, "blas_kernels", json_string(fs_blas_kernels()));
    /* and on the device (GPU model and CUDA / driver / cuBLAS versions, or the CPU's BLAS) */
    char dev[512] = "";
    if (ctx->be) fs_backend_device(ctx->be, dev, sizeof dev);
    if (rc == FS_OK && ctx->be) rc = set(ctx, root, "device", json_string(dev));
    /* so do the Hessians' sums, batch by batch: a resume under another budget keeps it */
    if (rc == FS_OK && rj->batch_tokens > 0) rc = set(ctx, root, "batch_tokens", json_integer(rj->batch_tokens));
    if (rc == FS_OK) rc = set(ctx, root, "work_default", json_boolean(rj->work_default));
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
    /* what the layer read (and, at the first commit, what was read outside the
     * layers): a resume on a model file touched since proves these unchanged */
    char hx2[17];
    uint64_t rs = 0;
    if (entry && rj->c && (rc = fs_read_xxh3(ctx, rj->c, rj->m, ci->layers_done - 1, 0, &rs, NULL)) == FS_OK) {
        fs_hex64(hx2, rs);
        rc = set(ctx, entry, "read_xxh3", json_string(hx2));
    }
    if (rc == FS_OK && rj->c && !json_object_get(root, "globals_xxh3") &&
        (rc = fs_read_xxh3(ctx, rj->c, rj->m, -1, 0, &rs, NULL)) == FS_OK) {
        fs_hex64(hx2, rs);
        rc = set(ctx, root, "globals_xxh3", json_string(hx2));
    }
    if (rc == FS_OK) rc = keep_previous(ctx, root, &keep);
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
    static const char *names[] = {FS_JOURNAL_NAME, FS_JOURNAL_PREV, FS_JOURNAL_DAMAGED, "start.json"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", work, names[i]);
        unlink(path);
    }
}

/* The boundary the journal names for a state of `done` layers, every chunk
 * decoded and checked, and labelled as the input of layer `done`. */
static fs_status check_act(fs_ctx *ctx, const fs_run_journal *rj, const json_t *a, int done, char *act, size_t act_n)
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
    if (rc == FS_OK && fs_act_tag(f) != (uint64_t)done)
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: holds the input of model.layers.%lld, but the journal resumes at "
                        "model.layers.%d", act, (long long)fs_act_tag(f), done);
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
/* A recorded state of `done` layers must agree with the journal's log: one
 * entry per layer 0 .. done-1 (the current state: exactly those), and the
 * entry of its last layer names its shards, tensors and boundary (but after
 * the seal, which adds no entry).  A journal rewritten with a consistent
 * checksum but a wrong count is caught here. */
static fs_status check_log(fs_ctx *ctx, const fs_run_journal *rj, const json_t *st, int done, int current)
{
    const json_t *log = json_object_get(rj->root, "layers");
    const size_t n = json_array_size(log);
    if (done < 0 || (size_t)done > n || (current && (size_t)done != n))
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s/%s: %d layers done but %zu in its log", rj->work, FS_JOURNAL_NAME,
                          done, n);
    for (int i = 0; i < done; i++)
        if (json_integer_value(json_object_get(json_array_get(log, (size_t)i), "layer")) != i)
            return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s/%s: log entry %d is not layer %d", rj->work, FS_JOURNAL_NAME, i, i);
    if (done == 0 || json_is_true(json_object_get(st, "sealed"))) return FS_OK;
    const json_t *e = json_array_get(log, (size_t)(done - 1)), *out = json_object_get(st, "output");
    const size_t tensors = json_array_size(json_object_get(out, "tensors")) +
                           json_array_size(json_object_get(json_object_get(out, "staging"), "tensors"));
    const json_t *act = json_object_get(st, "act");
    if (json_integer_value(json_object_get(e, "tensors")) != (json_int_t)tensors ||
        !json_equal(json_object_get(e, "shards"), json_object_get(out, "nshards")) ||
        (json_is_object(act) && !json_equal(json_object_get(e, "act_checksum"), json_object_get(act, "checksum"))))
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s/%s: the state of %d layers does not match its log entry", rj->work,
                          FS_JOURNAL_NAME, done);
    return FS_OK;
}

static fs_status try_state(fs_ctx *ctx, fs_run_journal *rj, const json_t *st, int keep, const char *out_dir,
                           uint64_t max_shard, fs_format fmt, const fs_quant_opts *q, fs_moe_report *rep,
                           fs_outckpt **o, char *act, size_t act_n)
{
    const int done = (int)json_integer_value(json_object_get(st, "layers_done"));
    act[0] = '\0';
    fs_status rc = check_log(ctx, rj, st, done, st == rj->root);
    if (rc == FS_OK && rj->calibrated && done > 0 && done < rj->m->nlayers)
        rc = check_act(ctx, rj, json_object_get(st, "act"), done, act, act_n);
    if (rc == FS_OK) rc = fs_out_resume(ctx, out_dir, max_shard, fmt, q, json_object_get(st, "output"), keep, o);
    if (rc == FS_OK) rc = restore_moe(ctx, rj, json_object_get(st, "moe"), rep);
    if (rc != FS_OK) { fs_out_detach(*o); *o = NULL; }
    return rc;
}

/* --verify-model: every layer the journal records as read, read again from
 * the model as it is now, must give the recorded checksum; then the journal
 * takes the model's files as they are now (files: their fingerprint). */
static fs_status verify_reads(fs_ctx *ctx, fs_run_journal *rj, const fs_ckpt *c, json_t *files)
{
    json_t *root = rj->root, *log = json_object_get(root, "layers"), *e;
    size_t i;
    uint64_t want = 0, got = 0, bytes = 0;
    int n = 0;
    double t0 = fs_now();
    const char *g = json_string_value(json_object_get(root, "globals_xxh3"));
    fs_status rc = FS_OK;
    if (g && (rc = fs_read_xxh3(ctx, c, rj->m, -1, 1, &got, &bytes)) == FS_OK && (fs_unhex64(g, &want) || want != got))
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "--verify-model: a tensor outside the layers (embeddings, final norm, lm_head) "
                        "of %s is not what the run read: start the run again without --resume", c->dir);
    json_array_foreach(log, i, e) {
        const char *h = json_string_value(json_object_get(e, "read_xxh3"));
        const json_int_t l = json_integer_value(json_object_get(e, "layer"));
        if (rc != FS_OK) break;
        if (!h) continue;
        if (l < 0 || l >= rj->m->nlayers + rj->m->nmtp || fs_unhex64(h, &want))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: 'layers' entry %zu is malformed", rj->work, FS_JOURNAL_NAME, i);
        if ((rc = fs_read_xxh3(ctx, c, rj->m, (int)l, 1, &got, &bytes)) == FS_OK && got != want)
            rc = fs_ctx_err(ctx, FS_ERR_USAGE, "--verify-model: a tensor of model.layers.%lld in %s is not what the run "
                            "read before it stopped (the output would mix two models): start the run again without "
                            "--resume", (long long)l, c->dir);
        n++;
    }
    if (rc != FS_OK) return rc;
    fs_log(ctx, "resume: --verify-model: what the %d committed layers read is unchanged (%.3f GB read again in %.1f s)",
           n, (double)bytes / 1e9, fs_now() - t0);
    json_t *model = json_object_get(root, "model");
    if (json_object_set(model, "files", files) || json_object_set_new(model, "dir", json_string(c->dir)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "journal");
    return fs_journal_write(ctx, rj->work, root);
}

fs_status fs_rj_restore(fs_ctx *ctx, fs_run_journal *rj, const fs_ckpt *c, const char *calib_path,
                        const uint32_t *ids, size_t nids, const char *out_dir, uint64_t max_shard, fs_format fmt,
                        const fs_quant_opts *q, int verify_model, fs_moe_report *rep, fs_outckpt **o,
                        int *start_layer, char *act, size_t act_n)
{
    json_t *root = rj->root, *files = NULL, *calib = NULL;
    *o = NULL;
    *start_layer = 0;
    act[0] = '\0';
    /* the inputs must be the ones the run started with */
    char touched[4600] = "";
    fs_status rc = fs_fingerprint_model(ctx, c, (void **)&files);
    if (rc == FS_OK) rc = fs_fingerprint_check(ctx, c->dir, json_object_get(json_object_get(root, "model"), "files"), files,
                                               touched, sizeof touched);
    if (rc == FS_OK && touched[0] && !verify_model)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s: the output would mix two models if what the run already "
                        "read changed.  Resume with --verify-model to read again every tensor the committed layers "
                        "read and check it against the journal (the run then goes on with the model as it is now), "
                        "or start the run again without --resume", touched);
    if (rc == FS_OK && (touched[0] || verify_model)) rc = verify_reads(ctx, rj, c, files);
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
    int omp_now = 0, blas_now = 0;
    fs_threads_get(&omp_now, &blas_now);
    if (omp >= 1 && blas >= 1 && omp <= 4096 && blas <= 4096 && (omp != omp_now || blas != blas_now)) {
        fs_log(ctx, "resume: %d OpenMP and %d BLAS threads, as the run had (%d and %d here): the bytes depend on it", omp,
               blas, omp_now, blas_now);
        fs_threads_set2(omp, blas);
    }
    const char *kern = json_string_value(json_object_get(root, "blas_kernels"));
    if (kern && strcmp(kern, fs_blas_kernels()) && !rj->allow_device_change)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "the run used OpenBLAS's %s kernels, this machine's are %s: they round "
                          "differently, so the output would not be the bytes of an uninterrupted run.  Resume with "
                          "OPENBLAS_CORETYPE=%s in the environment (a CPU with the instructions they use runs them), "
                          "or pass --allow-device-change to accept the difference", kern, fs_blas_kernels(), kern);
    if (kern && strcmp(kern, fs_blas_kernels()))
        fs_log(ctx, "resume: OpenBLAS's %s kernels here, %s in the run (--allow-device-change): the output will not be "
               "byte-identical to an uninterrupted run", fs_blas_kernels(), kern);
    /* the device: another GPU, CUDA, driver, cuBLAS or BLAS may round differently */
    const char *dev = json_string_value(json_object_get(root, "device"));
    char here[512] = "";
    if (ctx->be) fs_backend_device(ctx->be, here, sizeof here);
    if (dev && ctx->be && strcmp(dev, here) && !rj->allow_device_change)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "the run ran on [%s], this one would run on [%s]: the bytes could "
                          "differ, so the output would not be an uninterrupted run's.  Resume on the run's device, or "
                          "pass --allow-device-change to accept the difference", dev, here);
    if (dev && ctx->be && strcmp(dev, here))
        fs_log(ctx, "warning: resume: the run ran on [%s], this part runs on [%s] (--allow-device-change): the bytes "
               "may differ from an uninterrupted run's", dev, here);
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
    json_decref(back);
    if (rc != FS_OK && rc != FS_ERR_CORRUPT) return rc;        /* (with its message) */
    if (back) {
        fprintf(stderr, "forge-stream: warning: %s\n", ctx->errmsg);
        fs_ctx_clear(ctx);
    }
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
    json_decref((json_t *)rj->moved);
    rj->moved = NULL;
}
