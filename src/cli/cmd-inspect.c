/* cmd-inspect.c: `forge-stream inspect PATH`: a checkpoint's tensors (dtype,
 * shape, shard, bytes), its quantized linears (bits, group size, symmetry,
 * act-order), totals (bytes, bits per weight, compression vs BF16); --json
 * for machines; --verify re-reads every tensor and checks its recorded
 * checksum, that every float tensor is finite and every quantized linear
 * decodes; --dequant NAME --out F writes one linear's decoded weight as F32.
 * A config.json of a supported family is checked against the headers first
 * (fs_model_validate, as quantize and eval do); exit 2 for bad input. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "src/cli/cli.h"
#include "src/cli/serving.h"
#include "src/formats/qread.h"
#include "src/models/model.h"

static const char usage[] =
    "usage: forge-stream inspect PATH [--json] [--verify] [--dequant LINEAR --out FILE]\n"
    "\n"
    "PATH is a checkpoint folder (model.safetensors.index.json or model.safetensors) or\n"
    "one .safetensors file.\n"
    "  --json            one JSON object on stdout instead of the table\n"
    "  --verify          re-read every tensor: checksums recorded by forge-stream, every\n"
    "                    float tensor finite (FP8 with its scales), every quantized linear\n"
    "                    decodes; exit 2 naming the first problem\n"
    "  --dequant LINEAR  decode one linear (e.g. model.layers.0.mlp.up_proj) ...\n"
    "  --out FILE        ... into FILE as an F32 `weight`\n";

/* The base name of a quantized-linear part, or 0. */
static int qpart(const char *name, char *base, size_t n)
{
    static const char *suf[] = {".qweight", ".qmeta", ".qzeros", ".scales", ".g_idx", ".weight_packed",
                                ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx"};
    size_t l = strlen(name);
    for (size_t i = 0; i < sizeof suf / sizeof suf[0]; i++) {
        size_t k = strlen(suf[i]);
        if (l > k && !strcmp(name + l - k, suf[i]) && l - k < n) {
            memcpy(base, name, l - k);
            base[l - k] = '\0';
            return 1;
        }
    }
    return 0;
}

/* Whether vLLM and SGLang would load the checkpoint (serving.h), printed
 * (js NULL) or set as js.serving. */
static void serving_lines(const fs_ckpt *c, const fs_qinfo *qi, const fs_model *m, int nlin, json_t *js)
{
    if (!qi->quantized || !m || !nlin) return;
    const json_t *qc = json_object_get((const json_t *)c->config, "quantization_config");
    fs_serve_q sq = {qi->fmt, qi->bits, qi->sym, qi->group_size,
                     qi->fmt == FS_FMT_GPTQ ? qi->act_order : qi->act_order && !qi->static_groups && qi->group_size != -1,
                     json_is_true(json_object_get(qc, "quantize_experts_only"))};
    static const char *names[2] = {"vLLM", "SGLang"}, *keys[2] = {"vllm", "sglang"};
    static const char *lv[3] = {"fast", "fallback", "no"}, *words[3] = {"fast path", "loads, fallback kernels",
                                                                          "will not load"};
    json_t *sj = js ? json_object() : NULL;
    for (int e = 0; e < 2; e++) {
        char why[700];
        fs_serve_level l = fs_serve_judge(&sq, m, e ? FS_SERVE_SGLANG : FS_SERVE_VLLM, why, sizeof why);
        if (sj) json_object_set_new(sj, keys[e], json_pack("{s:s, s:s}", "level", lv[l], "why", why));
        else printf("serving: %s: %s%s%s\n", names[e], words[l], l ? ": " : "", l ? why : "");
    }
    if (sj) json_object_set_new(js, "serving", sj);
}

/* The tensor that stands for a quantized linear (one per linear). */
static int is_main(const char *name)
{
    size_t l = strlen(name);
    return (l > 8 && !strcmp(name + l - 8, ".qweight")) || (l > 14 && !strcmp(name + l - 14, ".weight_packed"));
}

/* --verify: every tensor re-read; its recorded checksum compared; every float
 * tensor decoded (F8_E4M3 with its block scales) and refused at its first
 * NaN/Inf; every quantized linear decoded (its g_idx in range, its values
 * finite).  *checked / *floats / *linears: how many of each. */
static fs_status verify(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, int *checked, int *floats, int *linears)
{
    char key[1100], base[1024];
    *checked = *floats = *linears = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const fs_ckpt_entry *e = &c->entries[i];
        const fs_st_tensor *t = e->t;
        snprintf(key, sizeof key, "xxh3:%s", t->name);
        const char *want = fs_st_meta(c->shards[e->shard], key);
        const int is_float = t->dtype == FS_DT_F32 || t->dtype == FS_DT_F16 || t->dtype == FS_DT_BF16;
        if (want || is_float) {
            void *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
            if (!buf) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->name);
            fs_status rc = fs_ckpt_read_raw(ctx, c, e, buf);
            if (rc == FS_OK && want) {
                char got[32];
                snprintf(got, sizeof got, "%016llx", (unsigned long long)XXH3_64bits(buf, (size_t)t->nbytes));
                if (strcmp(got, want) != 0)
                    rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s/%s: tensor '%s' checksum %s, recorded %s",
                                    c->dir, c->shard_names[e->shard], t->name, got, want);
                else (*checked)++;
            }
            if (rc == FS_OK && is_float) {
                float *f = fs_alloc2((size_t)t->nelem ? (size_t)t->nelem : 1, sizeof(float));
                snprintf(key, sizeof key, "%s/%s: tensor '%s'", c->dir, c->shard_names[e->shard], t->name);
                rc = f ? fs_decode_f32(ctx, key, t->dtype, buf, (size_t)t->nelem, f)
                       : fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->name);
                free(f);
                if (rc == FS_OK) (*floats)++;
            }
            free(buf);
            if (rc != FS_OK) return rc;
        }
        if (t->dtype == FS_DT_F8_E4M3) {                   /* dequantized with its scales, checked finite */
            float *W = NULL;
            fs_status rc = fs_ckpt_read_f32(ctx, c, t->name, &W);
            free(W);
            if (rc != FS_OK) return rc;
            (*floats)++;
        }
        if (is_main(t->name) && qpart(t->name, base, sizeof base)) {
            float *W = NULL;
            int64_t o, n;
            fs_status rc = fs_qread_linear(ctx, c, qi, base, &W, &o, &n);
            free(W);
            if (rc != FS_OK) return rc;
            (*linears)++;
        }
    }
    return FS_OK;
}

static fs_status dequant(fs_ctx *ctx, const fs_ckpt *c, const fs_qinfo *qi, const char *base,
                         const char *outp)
{
    float *W = NULL;
    int64_t o, n;
    fs_status rc = fs_qread_linear(ctx, c, qi, base, &W, &o, &n);
    if (rc != FS_OK) return rc;
    fs_st_writer *w = NULL;
    int64_t shape[2] = {o, n};
    rc = fs_st_writer_new(ctx, outp, &w);
    if (rc == FS_OK) rc = fs_st_writer_add(ctx, w, "weight", FS_DT_F32, 2, shape, W);
    if (rc == FS_OK) rc = fs_st_writer_commit(ctx, w);
    else fs_st_writer_abort(w);
    free(W);
    if (rc == FS_OK) fprintf(stderr, "forge-stream: %s [%lld, %lld] -> %s\n", base, (long long)o, (long long)n, outp);
    return rc;
}

static void shape_str(const fs_st_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int cmd_inspect(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const char *path = NULL, *deq = NULL, *outp = NULL;
    int as_json = 0, do_verify = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(usage, stdout); return FS_EXIT_OK; }
        else if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (!strcmp(argv[i], "--verify")) do_verify = 1;
        else if (!strcmp(argv[i], "--dequant") && i + 1 < argc) deq = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) outp = argv[++i];
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "forge-stream: error: inspect: unexpected argument '%s'\n%s", argv[i], usage);
            return FS_EXIT_USAGE;
        } else path = argv[i];
    }
    if (!path || (deq && !outp) || (outp && !deq)) {
        fprintf(stderr, "forge-stream: error: inspect needs PATH%s\n%s", deq || outp ? ", and --dequant with --out" : "", usage);
        return FS_EXIT_USAGE;
    }
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    fs_qinfo qi;
    json_t *js = NULL;
    int rcode = FS_EXIT_RUNTIME;
    fs_status rc = fs_ckpt_open(&ctx, path, &c);
    if (rc == FS_OK) rc = fs_qinfo_from_config(&ctx, c->config, &qi);
    if (rc != FS_OK) goto out;
    /* a config.json of a supported family (any, with --verify) must describe
     * the tensors: the header checks quantize and eval run (§13) */
    if (c->config && (do_verify || fs_model_type_known(c->config))) {
        rc = fs_model_from_config(&ctx, c->config, "config.json", &m);
        if (rc == FS_OK) rc = fs_model_validate(&ctx, m, c, FS_CHECK_QUANTIZED);
        if (rc != FS_OK) goto out;
    } else if (c->config) {
        json_t *mt = json_object_get((json_t *)c->config, "model_type");
        fs_log(&ctx, "warning: config.json: model_type %s%.40s%s is not supported (%s): tensors are listed without "
               "a model description", json_is_string(mt) ? "\"" : "", json_is_string(mt) ? json_string_value(mt) : "absent",
               json_is_string(mt) ? "\"" : "", fs_model_types);
    }
    if (deq) {
        rc = dequant(&ctx, c, &qi, deq, outp);
        if (rc == FS_OK) rcode = FS_EXIT_OK;
        goto out;
    }
    /* totals */
    uint64_t total = 0, qbytes = 0, qweights = 0, bf16 = 0;
    int nlin = 0;
    char base[1024], shp[128];
    js = json_object();
    json_object_set_new(js, "path", json_string(c->dir));
    json_object_set_new(js, "model_type", m ? json_string(m->model_type) : json_null());
    json_object_set_new(js, "format", qi.quantized ? json_string(fs_format_name(qi.fmt)) : json_null());
    json_object_set_new(js, "shards", json_integer(c->nshards));
    json_t *jt = json_array(), *jl = json_array();
    json_object_set_new(js, "tensors", jt);              /* owned by js from here (freed at out) */
    json_object_set_new(js, "quantized_linears", jl);
    if (!as_json) {
        printf("%s: %s, %d shard%s, %zu tensors%s%s%s%s\n", c->dir, m ? m->model_type : (c->config ? "unknown model_type" : "no config.json"),
               c->nshards, c->nshards == 1 ? "" : "s", c->ntensors, qi.quantized ? ", quantized " : "",
               qi.quantized ? "(" : "", qi.quantized ? fs_format_name(qi.fmt) : "", qi.quantized ? ")" : "");
        printf("%-64s %-8s %-20s %-38s %12s\n", "tensor", "dtype", "shape", "shard", "bytes");
    }
    for (size_t i = 0; i < c->ntensors; i++) {
        const fs_ckpt_entry *e = &c->entries[i];
        const fs_st_tensor *t = e->t;
        total += t->nbytes;
        shape_str(t, shp, sizeof shp);
        if (!as_json)
            printf("%-64s %-8s %-20s %-38s %12llu\n", t->name, fs_dtype_name(t->dtype), shp,
                   c->shard_names[e->shard], (unsigned long long)t->nbytes);
        json_array_append_new(jt, json_pack("{s:s, s:s, s:s, s:s, s:I}", "name", t->name, "dtype",
                                            fs_dtype_name(t->dtype), "shape", shp, "shard",
                                            c->shard_names[e->shard], "bytes", (json_int_t)t->nbytes));
        if (qi.quantized && qpart(t->name, base, sizeof base) && fs_qread_is_quantized(c, base)) {
            qbytes += t->nbytes;
            if (is_main(t->name)) {
                int64_t o = 0, n = 0;
                if ((rc = fs_qread_check(&ctx, c, &qi, base, &o, &n)) != FS_OK) goto out;   /* headers only */
                qweights += (uint64_t)(o * n);
                bf16 += (uint64_t)(o * n) * 2;
                nlin++;
                json_array_append_new(jl, json_pack("{s:s, s:I, s:I, s:i, s:I, s:b, s:b}", "name", base, "out",
                                                    (json_int_t)o, "in", (json_int_t)n, "bits", qi.bits,
                                                    "group_size", (json_int_t)qi.group_size, "sym", qi.sym,
                                                    "act_order", qi.act_order));
            }
        } else if (!fs_ckpt_is_scale(c, t->name)) {
            bf16 += t->nelem * 2;
        }
    }
    double bpw = qweights ? 8.0 * (double)qbytes / (double)qweights : 0.0;
    double ratio = total ? (double)bf16 / (double)total : 0.0;
    if (as_json) serving_lines(c, &qi, m, nlin, js);
    json_object_set_new(js, "total_bytes", json_integer((json_int_t)total));
    json_object_set_new(js, "bits_per_weight", json_real(bpw));
    json_object_set_new(js, "compression_vs_bf16", json_real(ratio));
    if (!as_json) {
        if (nlin)
            printf("\n%d quantized linears: %d-bit, group %lld, %s%s%s\n", nlin, qi.bits, (long long)qi.group_size,
                   qi.sym ? "sym" : "asym", qi.act_order ? ", act-order" : "", qi.static_groups ? ", static groups" : "");
        printf("total %llu bytes (%.3f GB)", (unsigned long long)total, (double)total / 1e9);
        if (nlin) printf(", %.3f bits per quantized weight (codes + metadata)", bpw);
        printf(", compression vs BF16 %.2fx\n", ratio);
        serving_lines(c, &qi, m, nlin, NULL);
    }
    if (do_verify) {
        int checked = 0, floats = 0, linears = 0;
        rc = verify(&ctx, c, &qi, &checked, &floats, &linears);
        if (rc != FS_OK) goto out;
        json_object_set_new(js, "verified_checksums", json_integer(checked));
        json_object_set_new(js, "verified_float_tensors", json_integer(floats));
        json_object_set_new(js, "verified_quantized_linears", json_integer(linears));
        if (!as_json)
            printf("verify: ok (headers, index%s, %d checksums, %d float tensors finite, %d quantized linears "
                   "decode)\n", m ? ", config.json" : "", checked, floats, linears);
    }
    if (as_json) {
        char *s = json_dumps(js, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
    }
    rcode = FS_EXIT_OK;
out:
    if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        rcode = fs_exit_code(rc);                 /* bad input 2, the machine 1 (§14) */
    }
    json_decref(js);
    fs_model_free(m);
    fs_ckpt_close(c);
    return rcode;
}
