/* cmd-layer.c: `forge-stream layer`: one linear layer through the engine
 * (the contract of specifications.md §layer).  Inputs are validated before
 * any work; OUT is written atomically and never exists after an error. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/cpu.h"
#include "cpu/threads.h"
#include "src/cli/cli.h"
#include "src/formats/safetensors.h"
#include "hessian/hessian.h"

#define INPUT_CHUNK_BYTES (64u << 20)  /* raw bytes of `inputs` decoded per Hessian chunk */
#define MAX_DIM (1 << 24)              /* rows or columns of a layer we accept */

static const char usage[] =
    "usage: forge-stream layer --in IN.safetensors --out OUT.safetensors [options]\n"
    "\n"
    "Quantizes one linear layer with GPTQ. IN holds `weight` [out, in] (F32, F16, BF16\n"
    "or F8_E4M3) and exactly one of `hessian` [in, in] (H = X^T X) or `inputs` [n, in]\n"
    "(H is built from them). OUT gets `qweight` U8 [out, in] (one code per byte),\n"
    "`qmeta` U8 [out, groups, 4] (qmeta4), `perm` I32 [in] (with --act-order) and\n"
    "`dequant` F32 [out, in]. A JSON report goes to stdout (and to --report FILE).\n"
    "\n"
    "  --in FILE           input safetensors file\n"
    "  --out FILE          output safetensors file (written atomically)\n"
    "  --report FILE       also write the JSON report there\n"
    "  --backend B         auto (CUDA when a device is present), cpu, cpu-async or cuda\n"
    "  --threads N         CPU threads (default: all cores)\n"
    "  --quiet             no log lines on stderr\n"
    "\n";

typedef struct layer_args {
    const char *in, *out, *report;
    fs_backend_kind backend;
    int threads;
    fs_quant_opts q;
} layer_args;

static fs_status parse(fs_ctx *ctx, int argc, char **argv, layer_args *a, int *help)
{
    fs_quant_opts_default(&a->q);
    for (int i = 1; i < argc; i++) {
        int taken = 0;
        fs_status rc = fs_arg_quant(ctx, argc, argv, &i, &a->q, &taken);
        if (rc != FS_OK) return rc;
        if (taken) continue;
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) { *help = 1; return FS_OK; }
        if (strcmp(f, "--quiet") == 0) { ctx->quiet = 1; continue; }
        if (i + 1 >= argc) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f);
        const char *v = argv[++i];
        int64_t n;
        if (strcmp(f, "--in") == 0) a->in = v;
        else if (strcmp(f, "--out") == 0) a->out = v;
        else if (strcmp(f, "--report") == 0) a->report = v;
        else if (strcmp(f, "--backend") == 0) { if ((rc = fs_arg_backend(ctx, v, &a->backend))) return rc; }
        else if (strcmp(f, "--threads") == 0) {
            if ((rc = fs_arg_i64(ctx, f, v, 0, 4096, &n))) return rc;
            a->threads = (int)n;
        } else return fs_ctx_err(ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream layer --help)", f);
    }
    if (!a->in) return fs_ctx_err(ctx, FS_ERR_USAGE, "--in is required");
    if (!a->out) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out is required");
    return fs_quant_opts_check(ctx, &a->q);
}

static int is_float_dt(fs_dtype dt)
{
    return dt == FS_DT_F32 || dt == FS_DT_F16 || dt == FS_DT_BF16 || dt == FS_DT_F8_E4M3;
}

static fs_status check_tensor(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t)
{
    if (!is_float_dt(t->dtype))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': dtype %s unsupported (F32, F16, BF16, F8_E4M3)",
                          f->path, t->name, fs_dtype_name(t->dtype));
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > MAX_DIM ||
        t->shape[1] > MAX_DIM)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': must be 2-D with dims in 1..%d",
                          f->path, t->name, MAX_DIM);
    return FS_OK;
}

/* H from `inputs`, decoded and accumulated chunk by chunk: in f32 through the
 * backend for the solver, and in double on the CPU (H64) for the reported
 * losses, so that they are the true losses of the given inputs. */
static fs_status hessian_from_file(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t,
                                   float *H, double *H64, double *seconds)
{
    const int64_t n = t->shape[0], in = t->shape[1];
    const size_t esz = fs_dtype_size(t->dtype);
    int64_t chunk = (int64_t)(INPUT_CHUNK_BYTES / ((size_t)in * esz));
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    uint8_t *raw = fs_alloc2((size_t)chunk * (size_t)in, esz);
    float *x = fs_alloc2((size_t)chunk * (size_t)in, sizeof(float));
    double *xd = fs_alloc2((size_t)chunk * (size_t)in, sizeof(double));
    void *st = NULL;
    fs_status rc = (!raw || !x || !xd) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "inputs chunk") : FS_OK;
    *seconds = 0.0;
    for (int64_t i = 0; i < in * in; i++) H64[i] = 0.0;
    if (rc == FS_OK) rc = fs_be_hess_new(ctx, ctx->be, in, &st);
    for (int64_t r = 0; rc == FS_OK && r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        fs_st_tensor part = *t;
        part.offset = t->offset + (uint64_t)r * (uint64_t)in * esz;
        part.nbytes = (uint64_t)m * (uint64_t)in * esz;
        rc = fs_st_read(ctx, f, &part, raw);
        if (rc == FS_OK) {
            char what[600];
            snprintf(what, sizeof what, "%s: tensor 'inputs' (rows from %lld)", f->path, (long long)r);
            rc = fs_decode_f32(ctx, what, t->dtype, raw, (size_t)(m * in), x);
        }
        double t0 = fs_now();
        if (rc == FS_OK) rc = fs_be_hess_add(ctx, ctx->be, st, x, m);
        *seconds += fs_now() - t0;
        if (rc == FS_OK) {
            for (int64_t i = 0; i < m * in; i++) xd[i] = x[i];
            fs_cpu_dsyrk_upper(H64, in, xd, m);
        }
    }
    double t0 = fs_now();
    if (rc == FS_OK) rc = fs_be_hess_get(ctx, ctx->be, st, H);
    *seconds += fs_now() - t0;
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < i; j++) H64[i * in + j] = H64[j * in + i];
    fs_be_hess_free(ctx->be, st);
    free(raw);
    free(x);
    free(xd);
    return rc;
}

/* A float option as the short decimal the user typed, not its binary expansion. */
static double short_real(float f)
{
    char b[32];
    snprintf(b, sizeof b, "%g", (double)f);
    return strtod(b, NULL);
}

static json_t *report_json(const layer_args *a, const fs_layer_result *r, double hess_s,
                           const char *backend, const char *hsrc)
{
    const fs_quant_opts *q = &a->q;
    json_t *opts = json_pack("{s:i, s:I, s:b, s:s, s:f, s:i, s:f, s:b, s:b, s:i, s:f}",
                             "bits", q->bits, "group_size", (json_int_t)q->group_size, "sym", q->sym,
                             "grid", fs_grid_name(q->grid),
                             "grid_shrink", short_real(q->shrink), "grid_n", q->grid_n,
                             "grid_norm", short_real(q->norm), "act_order", q->act_order,
                             "static_groups", q->static_groups, "block", q->block, "damp", q->damp);
    json_object_set_new(opts, "refine_scales", json_integer(q->refine_scales));
    json_object_set_new(opts, "hmse_weight", json_string(q->hmse_weight == FS_HMSE_DIAG ? "diag" : "obs"));
    return json_pack("{s:f, s:f, s:f, s:i, s:f, s:f, s:f, s:f, s:i, s:s?, s:s, s:s, s:I, s:I, s:I, s:I, s:o}",
                     "loss", r->loss, "rtn_loss", r->rtn_loss,
                     "solve_loss", q->refine_scales ? r->solve_loss : r->loss,
                     "refine_rounds", r->refine_rounds, "refine_seconds", r->refine_s,
                     "seconds", r->seconds,
                     "hessian_seconds", hess_s, "damp_used", r->damp_used, "retries", r->retries,
                     "fallback", r->fallback_rtn ? "rtn" : NULL, "backend", backend,
                     "hessian_source", hsrc, "out_features", (json_int_t)r->rows,
                     "in_features", (json_int_t)r->cols, "groups", (json_int_t)r->ngroups,
                     "dead_columns", (json_int_t)r->dead_cols, "options", opts);
}

static fs_status write_out(fs_ctx *ctx, const layer_args *a, const fs_layer_result *r)
{
    fs_st_writer *w = NULL;
    fs_status rc = fs_st_writer_new(ctx, a->out, &w);
    if (rc != FS_OK) return rc;
    int64_t s2[2] = {r->rows, r->cols}, s3[3] = {r->rows, r->ngroups, 4}, s1[1] = {r->cols};
    char buf[64];
    rc = fs_st_writer_add(ctx, w, "qweight", FS_DT_U8, 2, s2, r->qweight);
    if (rc == FS_OK) rc = fs_st_writer_add(ctx, w, "qmeta", FS_DT_U8, 3, s3, r->qmeta);
    if (rc == FS_OK && r->perm) rc = fs_st_writer_add(ctx, w, "perm", FS_DT_I32, 1, s1, r->perm);
    if (rc == FS_OK) rc = fs_st_writer_add(ctx, w, "dequant", FS_DT_F32, 2, s2, r->dequant);
    snprintf(buf, sizeof buf, "%d", a->q.bits);
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "bits", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)a->q.group_size);
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "group_size", buf);
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "sym", a->q.sym ? "true" : "false");
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "act_order", a->q.act_order ? "true" : "false");
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "static_groups", a->q.static_groups ? "true" : "false");
    if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, "format", "forge-layer-1");
    if (rc != FS_OK) { fs_st_writer_abort(w); return rc; }
    return fs_st_writer_commit(ctx, w);
}

static fs_status write_report(fs_ctx *ctx, const char *path, const char *text)
{
    size_t n = strlen(text);
    char *buf = malloc(n + 2);
    if (!buf) return fs_ctx_err(ctx, FS_ERR_NOMEM, "report");
    memcpy(buf, text, n);
    buf[n] = '\n';
    fs_status rc = fs_write_atomic(ctx, path, buf, n + 1);
    free(buf);
    return rc;
}

int cmd_layer(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    layer_args a = {0};
    int help = 0, exit_code = FS_EXIT_RUNTIME;
    fs_st_file *f = NULL;
    float *W = NULL, *H = NULL;
    double *H64 = NULL;
    fs_layer_result res = {0};
    char *text = NULL;
    const char *hsrc = "hessian";
    double hess_s = 0.0;

    fs_status rc = parse(&ctx, argc, argv, &a, &help);
    if (rc == FS_OK && help) {
        fputs(usage, stdout);
        fputs(fs_quant_flags_help, stdout);
        return FS_EXIT_OK;
    }
    /* input phase: every input check before any work (exit codes: fs_exit_code) */
    if (rc == FS_OK) rc = fs_st_open(&ctx, a.in, &f);
    const fs_st_tensor *tw = NULL, *th = NULL, *tx = NULL;
    if (rc == FS_OK) {
        tw = fs_st_find(f, "weight");
        th = fs_st_find(f, "hessian");
        tx = fs_st_find(f, "inputs");
        if (!tw) rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no tensor 'weight'", a.in);
        else if (!th == !tx)
            rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: needs exactly one of 'hessian' and 'inputs' (%s)",
                            a.in, th ? "both are present" : "neither is present");
    }
    if (rc == FS_OK) rc = check_tensor(&ctx, f, tw);
    const fs_st_tensor *tsrc = th ? th : tx;
    if (rc == FS_OK) rc = check_tensor(&ctx, f, tsrc);
    if (rc == FS_OK && th && (th->shape[0] != tw->shape[1] || th->shape[1] != tw->shape[1]))
        rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: 'hessian' is [%lld, %lld] but 'weight' is [%lld, %lld]: expected [%lld, %lld]",
                        a.in, (long long)th->shape[0], (long long)th->shape[1], (long long)tw->shape[0],
                        (long long)tw->shape[1], (long long)tw->shape[1], (long long)tw->shape[1]);
    if (rc == FS_OK && tx && tx->shape[1] != tw->shape[1])
        rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: 'inputs' has %lld columns but 'weight' has %lld input features",
                        a.in, (long long)tx->shape[1], (long long)tw->shape[1]);
    if (rc == FS_OK) rc = fs_st_read_f32(&ctx, f, tw, &W);
    if (rc == FS_OK && th) rc = fs_st_read_f32(&ctx, f, th, &H);
    if (rc != FS_OK) goto out;

    /* compute phase: runtime errors (exit 1) unless the inputs turn out bad (NaN inputs: 2) */
    ctx.threads = a.threads;
    if (a.threads > 0) fs_threads_set(a.threads);
    if ((rc = fs_backend_open(&ctx, a.backend, NULL, &ctx.be)) != FS_OK) goto out;
    const int64_t rows = tw->shape[0], cols = tw->shape[1];
    fs_log(&ctx, "layer %s: weight [%lld, %lld] %s, %s, %d-bit g%lld %s, backend %s", a.in,
           (long long)rows, (long long)cols, fs_dtype_name(tw->dtype), th ? "hessian" : "inputs",
           a.q.bits, (long long)a.q.group_size, a.q.sym ? "sym" : "asym", fs_backend_name(ctx.be));
    if (tx) {
        hsrc = "inputs";
        H = fs_alloc2((size_t)cols * (size_t)cols, sizeof(float));
        H64 = fs_alloc2((size_t)cols * (size_t)cols, sizeof(double));
        if (!H || !H64) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "hessian %lld x %lld", (long long)cols, (long long)cols); goto out; }
        rc = hessian_from_file(&ctx, f, tx, H, H64, &hess_s);
        if (rc != FS_OK) goto out;
    }
    rc = fs_layer_quantize(&ctx, W, H, H64, rows, cols, &a.q, &res);
    if (rc != FS_OK) goto out;
    /* JSON has no inf or NaN: a loss that overflowed comes from the input's
     * values (a Hessian near float's largest), so it is bad input, not the machine */
    if (!isfinite(res.loss) || !isfinite(res.rtn_loss) || !isfinite(res.solve_loss) || !isfinite(res.damp_used)) {
        rc = fs_ctx_err(&ctx, FS_ERR_NUMERIC, "%s: the layer loss is not finite (loss %g, RTN loss %g, damping %g): "
                        "the hessian's values overflow the arithmetic", a.in, res.loss, res.rtn_loss, res.damp_used);
        goto out;
    }
    json_t *rep = report_json(&a, &res, hess_s, fs_backend_name(ctx.be), hsrc);
    text = rep ? json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(rep);
    if (!text) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "report"); goto out; }
    if ((rc = write_out(&ctx, &a, &res)) != FS_OK) goto out;
    if (a.report && (rc = write_report(&ctx, a.report, text)) != FS_OK) {
        unlink(a.out);
        goto out;
    }
    puts(text);
    fs_log(&ctx, "loss %.6g (rtn %.6g), %.3f s, damp %g, %d retries%s -> %s", res.loss,
           res.rtn_loss, res.seconds, res.damp_used, res.retries,
           res.fallback_rtn ? ", FELL BACK TO RTN" : "", a.out);
    exit_code = FS_EXIT_OK;
out:
    if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg[0] ? ctx.errmsg : fs_status_str(rc));
        exit_code = fs_exit_code(rc);             /* bad input 2, the machine 1 (§14) */
    }
    free(text);
    fs_layer_result_free(&res);
    free(W);
    free(H);
    free(H64);
    fs_st_close(f);
    fs_backend_free(ctx.be);
    return exit_code;
}
