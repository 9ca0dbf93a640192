/* cmd-plan.c: `forge-stream plan`: prints the per-layer memory, I/O and time
 * plan of a quantize run (plan.h) without running it.  --model is a
 * checkpoint folder (bytes on disk exact from its headers), a folder holding
 * only config.json, or a config.json file (bytes estimated from torch_dtype
 * and an FP8 quantization_config).  Nothing but headers and config.json is
 * read.  Output: the table (or --json) on stdout; errors as one line on
 * stderr, exit 2 for bad flags, a bad config or a budget too small, 1 for I/O
 * errors. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "src/cli/cli.h"
#include "src/pipeline/plan.h"
#include "src/forward/layer.h"
#include "src/models/forward.h"


static const char usage[] =
    "usage: forge-stream plan --model DIR|CONFIG.json [options]\n"
    "\n"
    "Prints, without running, per decoder layer: bytes read and written, the largest\n"
    "Hessian, calibration activations, peak host and GPU memory, MoE expert waves and\n"
    "a time estimate; then totals and the assumptions.  Refuses (exit 2) budgets that\n"
    "cannot hold the largest layer, naming the minimum needed.\n"
    "\n"
    "  --model PATH         checkpoint folder (exact bytes from the safetensors headers),\n"
    "                       or a config.json alone / a folder with only config.json\n"
    "                       (bytes estimated from torch_dtype and FP8 quantization_config)\n"
    "  --samples N          calibration windows (default 128)\n"
    "  --seq-len L          tokens per window (default 2048)\n"
    "  --batch-tokens N     tokens of one forward batch at most (default 65536)\n"
    "  --act-dtype bf16|f32 activations kept between layers (default bf16)\n"
    "  --host-mem SIZE      host memory budget, suffixes K M G T (decimal); default: the\n"
    "                       machine's physical memory less 10%\n"
    "  --gpu-mem SIZE       GPU memory budget; plans the GPU backend (Hessians, solver and\n"
    "                       expert waves on the GPU).  Without it the CPU backend is planned\n"
    "  --disk-gbps F        disk rate in GB/s, shared by reads and writes (default 7)\n"
    "  --tflops F           effective compute rate (default 0.2 on CPU, 50 with --gpu-mem: F32 work)\n"
    "  --pcie-gbps F        host <-> GPU rate in GB/s (default 25)\n"
    "  --bits N             output bits, for the bytes written (default 4)\n"
    "  --group-size N       output group size, a multiple of 32 or -1 (default 128)\n"
    "  --json               the plan as one JSON object instead of the table\n"
    "  --eval-base          count two boundaries of f32 rows, as eval --base holds them\n"
    "                       (the original's and the quantized model's, --samples x --seq-len tokens)\n";

static fs_status positive(fs_ctx *ctx, const char *flag, const char *s, double *out)
{
    fs_status rc = fs_arg_f64(ctx, flag, s, out);
    if (rc == FS_OK && !(*out > 0)) rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s %s: must be > 0", flag, s);
    return rc;
}

typedef struct pargs {
    const char *model;
    int json;
    fs_plan_opts o;
} pargs;

static fs_status parse(fs_ctx *ctx, int argc, char **argv, pargs *a, int *help)
{
    fs_plan_opts_default(&a->o);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        fs_status rc = FS_OK;
        int64_t n = 0;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { *help = 1; return FS_OK; }
        if (!strcmp(f, "--json")) { a->json = 1; continue; }
        if (!strcmp(f, "--eval-base")) { a->o.act_sets = 2; continue; }
        if (strncmp(f, "--", 2) != 0)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "unexpected argument '%s' (see forge-stream plan --help)", f);
        if (i + 1 >= argc) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--samples")) { if (!(rc = fs_arg_i64(ctx, f, v, 1, 1 << 24, &n))) a->o.samples = n; }
        else if (!strcmp(f, "--seq-len")) { if (!(rc = fs_arg_i64(ctx, f, v, 1, 1 << 22, &n))) a->o.seq_len = n; }
        else if (!strcmp(f, "--batch-tokens")) { if (!(rc = fs_arg_i64(ctx, f, v, 1, 1 << 30, &n))) a->o.batch_tokens = n; }
        else if (!strcmp(f, "--act-dtype")) {
            if (!strcmp(v, "bf16")) a->o.act_bytes = 2;
            else if (!strcmp(v, "f32")) a->o.act_bytes = 4;
            else rc = fs_ctx_err(ctx, FS_ERR_USAGE, "--act-dtype '%s': must be bf16 or f32", v);
        }
        else if (!strcmp(f, "--host-mem")) rc = fs_arg_size(ctx, f, v, &a->o.host_mem);
        else if (!strcmp(f, "--gpu-mem")) rc = fs_arg_size(ctx, f, v, &a->o.gpu_mem);
        else if (!strcmp(f, "--disk-gbps")) rc = positive(ctx, f, v, &a->o.disk_gbps);
        else if (!strcmp(f, "--tflops")) rc = positive(ctx, f, v, &a->o.tflops);
        else if (!strcmp(f, "--pcie-gbps")) rc = positive(ctx, f, v, &a->o.pcie_gbps);
        else if (!strcmp(f, "--bits")) {
            if (!(rc = fs_arg_i64(ctx, f, v, 2, 8, &n))) {
                if (n == 5 || n == 6 || n == 7) rc = fs_ctx_err(ctx, FS_ERR_USAGE, "--bits %s: must be 2, 3, 4 or 8", v);
                a->o.bits = (int)n;
            }
        }
        else if (!strcmp(f, "--group-size")) {
            if (!(rc = fs_arg_i64(ctx, f, v, -1, INT32_MAX, &n)) && n != -1 && (n < 32 || n % 32))
                rc = fs_ctx_err(ctx, FS_ERR_USAGE, "--group-size %s: a multiple of 32, or -1", v);
            a->o.group_size = n;
        }
        else return fs_ctx_err(ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream plan --help)", f);
        if (rc != FS_OK) return rc;
    }
    if (a->o.act_sets > 1) a->o.act_bytes = 4;        /* eval keeps f32 rows whatever its --act-dtype */
    if (!a->model) return fs_ctx_err(ctx, FS_ERR_USAGE, "--model is required (a checkpoint folder or config.json)");
    return FS_OK;
}

/* Something (of any type: a pipe is refused when opened, never taken for absent) at path. */
static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int cmd_plan(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    pargs a = {0};
    int help = 0;
    fs_status rc = parse(&ctx, argc, argv, &a, &help);
    if (rc == FS_OK && help) {
        fputs(usage, stdout);
        return FS_EXIT_OK;
    }
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    json_t *cfg = NULL;
    fs_plan p = {0};
    char *js = NULL;
    const void *config = NULL;
    const char *where = "config.json";
    struct stat st;
    char buf[4200];
    if (rc == FS_OK) {
        /* a folder with weights: exact bytes; a folder of config.json alone or a
         * config.json file: estimates (every file through fs_open_regular) */
        if (stat(a.model, &st) != 0) {
            rc = fs_ctx_err(&ctx, fs_path_status(errno), "--model %s: %s", a.model, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            snprintf(buf, sizeof buf, "%s/model.safetensors", a.model);
            int weights = exists(buf);
            snprintf(buf, sizeof buf, "%s/model.safetensors.index.json", a.model);
            weights |= exists(buf);
            if (weights) {
                rc = fs_ckpt_open(&ctx, a.model, &c);
                if (rc == FS_OK && !c->config) rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no config.json", a.model);
            } else {
                snprintf(buf, sizeof buf, "%s/config.json", a.model);
                where = buf;
                void *j = NULL;
                rc = fs_json_load(&ctx, buf, FS_CKPT_MAX_JSON, &j);
                cfg = j;
            }
        } else if (strstr(a.model, ".safetensors")) {
            rc = fs_ckpt_open(&ctx, a.model, &c);
            if (rc == FS_OK && !c->config) rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no config.json", a.model);
        } else {
            where = a.model;
            void *j = NULL;
            rc = fs_json_load(&ctx, a.model, FS_CKPT_MAX_JSON, &j);
            cfg = j;
        }
        config = c ? c->config : cfg;
    }
    if (rc == FS_OK) rc = fs_model_from_config(&ctx, config, where, &m);
    if (rc == FS_OK && c) rc = fs_model_check(&ctx, m, c);
    if (rc == FS_OK) rc = fs_plan_opts_from_config(&ctx, &a.o, config, where);
    if (rc == FS_OK && !a.o.gpu_mem && fs_backend_cuda_devices() > 0)
        fprintf(stderr, "forge-stream: note: a CUDA device is present; planning the CPU backend "
                        "(pass --gpu-mem SIZE to plan the GPU one)\n");
    if (rc == FS_OK && a.o.gpu_mem) {          /* the forward's batch buffers, as quantize counts them */
        fs_fwd fw;
        fs_ctx lc;
        fs_ctx_init(&lc);
        if (fs_fwd_init(&lc, config, m, &fw) == FS_OK) {
            a.o.fwd_tok_bytes = fs_fwd_ws_bytes(&fw, 2) - fs_fwd_ws_bytes(&fw, 1);
            a.o.fwd_fixed_bytes = fs_fwd_ws_bytes(&fw, 1) - a.o.fwd_tok_bytes;
            fs_fwd_free(&fw);
        }
    }
    if (rc == FS_OK) rc = fs_plan_compute(&ctx, m, c, &a.o, &p);
    if (rc == FS_OK && a.json) rc = fs_plan_json(&ctx, &p, &js);
    if (rc == FS_OK) {
        if (js) printf("%s\n", js);
        else fs_plan_print(&p, stdout);
        fflush(stdout);
    }
    int code = FS_EXIT_OK;
    if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        code = fs_exit_code(rc);                  /* bad input 2, the machine 1 (§14) */
    }
    free(js);
    fs_plan_free(&p);
    fs_model_free(m);
    fs_ckpt_close(c);
    json_decref(cfg);
    return code;
}
