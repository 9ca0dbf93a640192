/* check_cli.c: `forge-stream layer` run as a process (FS_BIN): exit codes,
 * error lines, no OUT after a failure, and successful runs whose outputs are
 * checked against references computed here (dequant from the qmeta bytes,
 * the loss in long double from W, dequant and H). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/util.h"
#include "src/backend/backend.h"
#include "src/formats/safetensors.h"

extern char **environ;

/* the reported loss is fs_quad_loss (dgemm in double) of the same W, D, H:
 * only summation order differs from the long double reference */
#define LOSS_RTOL_HESSIAN 1e-6
/* with `inputs` the binary builds H in float; the reference H is X^T X in
 * double, so the loss differs by float rounding of H's 200-term sums */
#define LOSS_RTOL_INPUTS 1e-4

#define ROWS 16
#define COLS 96
#define NSAMPLES 200        /* rows of `inputs` in case (b) */
#define HSAMPLES 256        /* rows of X behind the hessian of case (a) */
#define SEED 0xc11c0deull

/* ---- process and file helpers ----------------------------------------------- */

typedef struct run_out {
    int code;       /* exit code; 1000 + signal if killed */
    char *out, *err;
} run_out;

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char *read_text(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return strdup("");
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t k;
    while ((k = fread(b + n, 1, cap - n - 1, fp)) > 0) {
        n += k;
        if (cap - n < 2) b = realloc(b, cap *= 2);
    }
    fclose(fp);
    b[n] = '\0';
    return b;
}

static int count_named(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    ck_assert(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* Runs FS_BIN with args (NULL-terminated), stdout and stderr to files in dir. */
static void run_cli(const char *dir, const char *const *args, run_out *o)
{
    const char *bin = getenv("FS_BIN");
    ck_assert_ptr_nonnull(bin);
    int na = 0;
    while (args[na]) na++;
    char **argv = calloc((size_t)na + 2, sizeof(char *));
    argv[0] = (char *)bin;
    for (int i = 0; i < na; i++) argv[i + 1] = (char *)args[i];
    char *po = join(dir, "stdout.txt"), *pe = join(dir, "stderr.txt");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, po, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    ck_assert_msg(rc == 0, "cannot run %s: %s", bin, strerror(rc));
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    o->code = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
    o->out = read_text(po);
    o->err = read_text(pe);
    unlink(po);
    unlink(pe);
    free(po);
    free(pe);
    free(argv);
}

static void run_free(run_out *o)
{
    free(o->out);
    free(o->err);
}

typedef struct tens {
    const char *name;
    fs_dtype dt;
    int ndim;
    int64_t shape[2];
    const void *data;
} tens;

/* An input file through the project's writer. */
static void write_tensors(const char *path, const tens *t, int n)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_writer *w = NULL;
    ck_assert(fs_st_writer_new(&ctx, path, &w) == FS_OK);
    for (int i = 0; i < n; i++)
        ck_assert_msg(fs_st_writer_add(&ctx, w, t[i].name, t[i].dt, t[i].ndim, t[i].shape,
                                       t[i].data) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_st_writer_commit(&ctx, w) == FS_OK, "%s", ctx.errmsg);
}

static float f32_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- bad inputs --------------------------------------------------------------- */

#define BR 4               /* rows of the small layer used by the failure cases */
#define BC 32              /* its columns */

static float small_w[BR * BC], small_h[BC * BC], small_x[10 * BC];

static void small_init(void)
{
    t_rng r = {SEED};
    for (int i = 0; i < BR * BC; i++) small_w[i] = t_gauss(&r);
    for (int i = 0; i < 10 * BC; i++) small_x[i] = t_gauss(&r);
    for (int i = 0; i < BC; i++)
        for (int j = 0; j < BC; j++) small_h[i * BC + j] = i == j ? 2.0f : 0.01f;
}

#define TW {"weight", FS_DT_F32, 2, {BR, BC}, small_w}
#define TH {"hessian", FS_DT_F32, 2, {BC, BC}, small_h}
#define TX {"inputs", FS_DT_F32, 2, {10, BC}, small_x}

static void mk_good(const char *p) { tens t[] = {TW, TH}; write_tensors(p, t, 2); }
static void mk_no_weight(const char *p) { tens t[] = {TH}; write_tensors(p, t, 1); }
static void mk_both(const char *p) { tens t[] = {TW, TH, TX}; write_tensors(p, t, 3); }
static void mk_neither(const char *p) { tens t[] = {TW}; write_tensors(p, t, 1); }

static void mk_hess_shape(const char *p)
{
    static float h[(BC + 1) * (BC + 1)];
    for (int i = 0; i < BC + 1; i++) h[i * (BC + 2)] = 1.0f;
    tens t[] = {TW, {"hessian", FS_DT_F32, 2, {BC + 1, BC + 1}, h}};
    write_tensors(p, t, 2);
}

static void mk_inputs_cols(const char *p)
{
    tens t[] = {TW, {"inputs", FS_DT_F32, 2, {10, BC - 1}, small_x}};
    write_tensors(p, t, 2);
}

static void mk_weight_i32(const char *p)
{
    static int32_t w[BR * BC];
    tens t[] = {{"weight", FS_DT_I32, 2, {BR, BC}, w}, TH};
    write_tensors(p, t, 2);
}

static void mk_weight_1d(const char *p)
{
    tens t[] = {{"weight", FS_DT_F32, 1, {BR * BC, 0}, small_w}, TH};
    write_tensors(p, t, 2);
}

static void mk_hess_i32(const char *p)
{
    static int32_t h[BC * BC];
    tens t[] = {TW, {"hessian", FS_DT_I32, 2, {BC, BC}, h}};
    write_tensors(p, t, 2);
}

static void mk_garbage(const char *p)
{
    FILE *fp = fopen(p, "wb");
    ck_assert(fp != NULL);
    const char g[] = "\x17\x00\x00\x00\x00\x00\x00\x00this is not a json header at all";
    fwrite(g, 1, sizeof g - 1, fp);
    fclose(fp);
}

#define NAN_INDEX 101       /* flat index of the NaN put into `weight` */
#define INF_INDEX 777       /* flat index of the Inf put into `hessian` */

static void mk_weight_nan(const char *p)
{
    static float w[BR * BC];
    memcpy(w, small_w, sizeof w);
    w[NAN_INDEX] = f32_bits(0x7fc00000u);
    tens t[] = {{"weight", FS_DT_F32, 2, {BR, BC}, w}, TH};
    write_tensors(p, t, 2);
}

static void mk_hess_inf(const char *p)
{
    static float h[BC * BC];
    memcpy(h, small_h, sizeof h);
    h[INF_INDEX] = f32_bits(0x7f800000u);
    tens t[] = {TW, {"hessian", FS_DT_F32, 2, {BC, BC}, h}};
    write_tensors(p, t, 2);
}

static void mk_inputs_nan(const char *p)
{
    static uint16_t x[10 * BC];
    for (int i = 0; i < 10 * BC; i++) x[i] = 0x3f80;
    x[45] = 0x7fc0;                                   /* BF16 NaN */
    tens t[] = {TW, {"inputs", FS_DT_BF16, 2, {10, BC}, x}};
    write_tensors(p, t, 2);
}

/* "@IN" and "@OUT" in args and needles stand for the paths of this case. */
typedef struct bad_run {
    const char *desc;
    void (*make)(const char *path);     /* NULL: IN does not exist */
    const char *args[12];
    const char *needle[2];
    int nodev;                          /* only without a CUDA device */
} bad_run;

#define BASE "layer", "--in", "@IN", "--out", "@OUT"

static const bad_run bad_runs[] = {
    {"--bits 5", mk_good, {BASE, "--bits", "5"}, {"--bits", "5"}, 0},
    {"--group-size 48", mk_good, {BASE, "--group-size", "48"}, {"--group-size", "48"}, 0},
    {"--group-size 0", mk_good, {BASE, "--group-size", "0"}, {"--group-size", "0"}, 0},
    {"--group-size -32", mk_good, {BASE, "--group-size", "-32"}, {"--group-size", "-32"}, 0},
    {"--grid-n 0", mk_good, {BASE, "--grid", "mse", "--grid-n", "0"}, {"--grid-n", NULL}, 0},
    {"--grid-shrink 0", mk_good, {BASE, "--grid-shrink", "0"}, {"--grid-shrink", NULL}, 0},
    {"--grid-shrink 1.5", mk_good, {BASE, "--grid-shrink", "1.5"}, {"--grid-shrink", "1.5"}, 0},
    {"--grid-norm 0", mk_good, {BASE, "--grid-norm", "0"}, {"--grid-norm", NULL}, 0},
    {"--grid-norm nan", mk_good, {BASE, "--grid-norm", "nan"}, {"--grid-norm", "nan"}, 0},
    {"--block 0", mk_good, {BASE, "--block", "0"}, {"--block", NULL}, 0},
    {"--bits abc", mk_good, {BASE, "--bits", "abc"}, {"--bits", "abc"}, 0},
    {"--bits 4x", mk_good, {BASE, "--bits", "4x"}, {"--bits", "4x"}, 0},
    {"--bits without a value", mk_good, {BASE, "--bits"}, {"--bits", NULL}, 0},
    {"--damp -1", mk_good, {BASE, "--damp", "-1"}, {"--damp", NULL}, 0},
    {"--grid foo", mk_good, {BASE, "--grid", "foo"}, {"--grid", "foo"}, 0},
    {"--backend gpu", mk_good, {BASE, "--backend", "gpu"}, {"--backend", "gpu"}, 0},
    {"--threads -1", mk_good, {BASE, "--threads", "-1"}, {"--threads", NULL}, 0},
    {"unknown flag", mk_good, {BASE, "--frobnicate", "7"}, {"--frobnicate", NULL}, 0},
    {"unknown flag last", mk_good, {BASE, "--frobnicate"}, {"--frobnicate", NULL}, 0},
    {"missing --in", mk_good, {"layer", "--out", "@OUT"}, {"--in", NULL}, 0},
    {"missing --out", mk_good, {"layer", "--in", "@IN"}, {"--out", NULL}, 0},
    {"flag error before I/O", NULL, {BASE, "--bits", "5"}, {"--bits", NULL}, 0},
    {"input without weight", mk_no_weight, {BASE}, {"weight", "@IN"}, 0},
    {"input with hessian and inputs", mk_both, {BASE}, {"hessian", "inputs"}, 0},
    {"input with neither", mk_neither, {BASE}, {"hessian", "inputs"}, 0},
    {"hessian [in+1, in+1]", mk_hess_shape, {BASE}, {"hessian", "33"}, 0},
    {"inputs with in-1 columns", mk_inputs_cols, {BASE}, {"inputs", "31"}, 0},
    {"weight dtype I32", mk_weight_i32, {BASE}, {"weight", "I32"}, 0},
    {"hessian dtype I32", mk_hess_i32, {BASE}, {"hessian", "I32"}, 0},
    {"weight 1-D", mk_weight_1d, {BASE}, {"weight", NULL}, 0},
    {"nonexistent input", NULL, {BASE}, {"@IN", NULL}, 0},
    {"garbage input", mk_garbage, {BASE}, {"@IN", NULL}, 0},
    {"NaN in weight", mk_weight_nan, {BASE}, {"weight", "101"}, 0},
    {"Inf in hessian", mk_hess_inf, {BASE}, {"hessian", "777"}, 0},
    {"NaN in inputs", mk_inputs_nan, {BASE}, {"inputs", "NaN"}, 0},
    {"--backend cuda without a device", mk_good, {BASE, "--backend", "cuda"}, {"cuda", NULL}, 1},
};
#define NBAD_RUNS ((int)(sizeof bad_runs / sizeof bad_runs[0]))

static const char *subst(const char *s, const char *in, const char *out)
{
    if (s && strcmp(s, "@IN") == 0) return in;
    if (s && strcmp(s, "@OUT") == 0) return out;
    return s;
}

START_TEST(test_bad_run)
{
    const bad_run *b = &bad_runs[_i];
    if (b->nodev && fs_backend_cuda_devices() > 0) {
        printf("cli: '%s' skipped (a CUDA device is present)\n", b->desc);
        return;
    }
    small_init();
    char *dir = t_tmpdir();
    char *in = join(dir, "in.safetensors"), *out = join(dir, "out.safetensors");
    if (b->make) b->make(in);
    const char *args[16] = {0};
    for (int i = 0; b->args[i]; i++) args[i] = subst(b->args[i], in, out);
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 2, "%s: exit %d, want 2; stderr: %s", b->desc, o.code, o.err);
    ck_assert_msg(strstr(o.err, "forge-stream: error:") != NULL, "%s: stderr: %s", b->desc, o.err);
    for (int k = 0; k < 2; k++) {
        const char *nd = subst(b->needle[k], in, out);
        if (nd) ck_assert_msg(strstr(o.err, nd) != NULL, "%s: stderr does not name '%s': %s",
                              b->desc, nd, o.err);
    }
    ck_assert_msg(o.out[0] == '\0', "%s: stdout not empty: %s", b->desc, o.out);
    ck_assert_msg(!exists(out), "%s: OUT exists after an error", b->desc);
    ck_assert_msg(count_named(dir, ".tmp") == 0, "%s: temp file left", b->desc);
    ck_assert_msg(count_named(dir, "out.safetensors") == 0, "%s: partial OUT left", b->desc);
    run_free(&o);
    free(in);
    free(out);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* ---- successful runs ------------------------------------------------------------ */

typedef struct layer_out {
    int64_t ngroups;
    uint8_t *qweight, *qmeta;
    int32_t *perm;       /* NULL if absent */
    float *dequant;
} layer_out;

static uint8_t *read_raw(fs_st_file *f, const char *name, fs_dtype dt, int ndim,
                         const int64_t *shape)
{
    const fs_st_tensor *t = fs_st_find(f, name);
    ck_assert_msg(t != NULL, "OUT has no '%s'", name);
    ck_assert_msg(t->dtype == dt, "'%s' is %s", name, fs_dtype_name(t->dtype));
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(t->shape[d] == shape[d], "'%s' dim %d is %lld, want %lld", name, d,
                      (long long)t->shape[d], (long long)shape[d]);
    uint8_t *b = malloc(t->nbytes + 1);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_msg(fs_st_read(&ctx, f, t, b) == FS_OK, "%s", ctx.errmsg);
    return b;
}

static void read_out(const char *path, int64_t ngroups, int want_perm, layer_out *lo)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert_msg(fs_st_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    int64_t s2[2] = {ROWS, COLS}, s3[3] = {ROWS, ngroups, 4}, s1[1] = {COLS};
    lo->ngroups = ngroups;
    lo->qweight = read_raw(f, "qweight", FS_DT_U8, 2, s2);
    lo->qmeta = read_raw(f, "qmeta", FS_DT_U8, 3, s3);
    uint8_t *d = read_raw(f, "dequant", FS_DT_F32, 2, s2);
    lo->dequant = malloc(sizeof(float) * ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++)
        lo->dequant[i] = f32_bits((uint32_t)d[4 * i] | (uint32_t)d[4 * i + 1] << 8 |
                                  (uint32_t)d[4 * i + 2] << 16 | (uint32_t)d[4 * i + 3] << 24);
    free(d);
    lo->perm = NULL;
    if (want_perm) {
        uint8_t *p = read_raw(f, "perm", FS_DT_I32, 1, s1);
        lo->perm = malloc(sizeof(int32_t) * COLS);
        for (int i = 0; i < COLS; i++)
            lo->perm[i] = (int32_t)((uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                                    (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24);
        free(p);
    } else {
        ck_assert_msg(fs_st_find(f, "perm") == NULL, "'perm' without --act-order");
    }
    ck_assert_int_eq(f->ntensors, want_perm ? 4 : 3);
    fs_st_close(f);
}

static void layer_out_free(layer_out *lo)
{
    free(lo->qweight);
    free(lo->qmeta);
    free(lo->perm);
    free(lo->dequant);
}

/* dequant == (qweight - zero) * scale, bit for bit, from the qmeta bytes;
 * column c belongs to group (position of c in processing order) / gw. */
static void check_dequant(const layer_out *lo, int bits, int sym, int64_t gw)
{
    int inv[COLS];
    for (int c = 0; c < COLS; c++) inv[c] = lo->perm ? -1 : c;
    if (lo->perm) {
        for (int k = 0; k < COLS; k++) {
            int32_t c = lo->perm[k];
            ck_assert_msg(c >= 0 && c < COLS && inv[c] == -1, "perm is not a permutation");
            inv[c] = k;
        }
    }
    const int maxq = (1 << bits) - 1;
    for (int r = 0; r < ROWS; r++) {
        for (int g = 0; g < lo->ngroups; g++) {
            const uint8_t *m = lo->qmeta + ((size_t)r * (size_t)lo->ngroups + (size_t)g) * 4;
            ck_assert_int_eq(m[3] & 1, sym);
            if (sym) ck_assert_int_eq(m[2], 1 << (bits - 1));
            else ck_assert_int_le(m[2], maxq);
        }
        for (int c = 0; c < COLS; c++) {
            int64_t g = inv[c] / gw;
            ck_assert_int_lt(g, lo->ngroups);
            const uint8_t *m = lo->qmeta + ((size_t)r * (size_t)lo->ngroups + (size_t)g) * 4;
            int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
            float scale = (float)exp2((double)code / 256.0);
            float zero = (float)m[2];
            uint8_t q = lo->qweight[r * COLS + c];
            ck_assert_int_le(q, maxq);
            float want = ((float)q - zero) * scale;
            float got = lo->dequant[r * COLS + c];
            ck_assert_msg(bits_f32(want) == bits_f32(got),
                          "dequant[%d,%d] = %a, (q %u - z %g) * s %a = %a", r, c, (double)got, q,
                          (double)zero, (double)scale, (double)want);
        }
    }
}

/* trace((W-D) H (W-D)^T) in long double with a double H */
static double loss_ld(const float *W, const float *D, const double *H)
{
    long double tot = 0;
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < COLS; i++) {
            long double ei = (long double)W[r * COLS + i] - D[r * COLS + i], s = 0;
            for (int j = 0; j < COLS; j++)
                s += (long double)H[i * COLS + j] *
                     ((long double)W[r * COLS + j] - D[r * COLS + j]);
            tot += s * ei;
        }
    return (double)tot;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_number(v), "report field '%s' missing or not a number", key);
    return json_number_value(v);
}

static json_t *parse_report(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ck_assert_msg(j != NULL, "stdout is not one JSON value: %s: %s", e.text, text);
    ck_assert_msg(json_is_object(j), "stdout is not a JSON object");
    const char *keys[] = {"loss", "rtn_loss", "seconds", "hessian_seconds", "damp_used", "retries"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) (void)num(j, keys[i]);
    ck_assert(json_is_string(json_object_get(j, "backend")));
    return j;
}

/* the layer of cases (a) and (b): W and correlated inputs */
static void make_layer(float *W, float *Hf)
{
    t_rng r = {SEED + 1};
    for (int i = 0; i < ROWS * COLS; i++) W[i] = t_gauss(&r);
    float *X = t_corr_inputs(&r, HSAMPLES, COLS);
    double *Hd = malloc(sizeof(double) * COLS * COLS);
    t_xtx(X, HSAMPLES, COLS, Hd);
    for (int i = 0; i < COLS * COLS; i++) Hf[i] = (float)Hd[i];
    free(Hd);
    free(X);
}

START_TEST(test_run_hessian)
{
    static float W[ROWS * COLS], H[COLS * COLS];
    make_layer(W, H);
    char *dir = t_tmpdir();
    char *in = join(dir, "in.safetensors"), *out = join(dir, "out.safetensors");
    char *rep = join(dir, "R.json");
    tens t[] = {{"weight", FS_DT_F32, 2, {ROWS, COLS}, W},
                {"hessian", FS_DT_F32, 2, {COLS, COLS}, H}};
    write_tensors(in, t, 2);
    const char *args[] = {"layer", "--in", in, "--out", out, "--bits", "4", "--group-size", "32",
                          "--asym", "--act-order", "--report", rep, NULL};
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 0, "exit %d: %s", o.code, o.err);
    json_t *j = parse_report(o.out);
    double loss = num(j, "loss"), rtn = num(j, "rtn_loss");
    json_error_t e;
    json_t *jr = json_load_file(rep, 0, &e);
    ck_assert_msg(jr != NULL, "R.json: %s", e.text);
    ck_assert_msg(num(jr, "loss") == loss, "R.json loss %.17g != stdout loss %.17g",
                  num(jr, "loss"), loss);
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);

    layer_out lo;
    read_out(out, 3, 1, &lo);
    /* act-order: processing order is by descending diag(H) */
    for (int k = 1; k < COLS; k++)
        ck_assert(H[lo.perm[k - 1] * (COLS + 1)] >= H[lo.perm[k] * (COLS + 1)]);
    check_dequant(&lo, 4, 0, 32);
    double *Hd = malloc(sizeof(double) * COLS * COLS);
    for (int i = 0; i < COLS * COLS; i++) Hd[i] = H[i];
    double ref = loss_ld(W, lo.dequant, Hd);
    ck_assert_msg(ref > 0, "reference loss %g", ref);
    ck_assert_msg(fabs(loss - ref) <= LOSS_RTOL_HESSIAN * ref, "loss %.17g, reference %.17g",
                  loss, ref);
    ck_assert_msg(loss <= rtn, "GPTQ loss %g > RTN loss %g", loss, rtn);
    free(Hd);
    layer_out_free(&lo);
    json_decref(j);
    json_decref(jr);
    run_free(&o);
    free(in);
    free(out);
    free(rep);
    t_rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_run_inputs)
{
    static float W[ROWS * COLS], Hunused[COLS * COLS];
    make_layer(W, Hunused);
    t_rng r = {SEED + 2};
    float *X = t_corr_inputs(&r, NSAMPLES, COLS);
    uint16_t *xb = malloc(sizeof(uint16_t) * NSAMPLES * COLS);
    for (int i = 0; i < NSAMPLES * COLS; i++) {
        xb[i] = (uint16_t)(bits_f32(X[i]) >> 16);          /* truncate to BF16 */
        X[i] = f32_bits((uint32_t)xb[i] << 16);             /* what the file holds */
    }
    double *Hd = malloc(sizeof(double) * COLS * COLS);
    t_xtx(X, NSAMPLES, COLS, Hd);
    char *dir = t_tmpdir();
    char *in = join(dir, "in.safetensors"), *out = join(dir, "out.safetensors");
    tens t[] = {{"weight", FS_DT_F32, 2, {ROWS, COLS}, W},
                {"inputs", FS_DT_BF16, 2, {NSAMPLES, COLS}, xb}};
    write_tensors(in, t, 2);
    const char *args[] = {"layer", "--in", in, "--out", out, "--bits", "4", "--group-size", "32",
                          "--asym", "--act-order", NULL};
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 0, "exit %d: %s", o.code, o.err);
    json_t *j = parse_report(o.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "hessian_source")), "inputs");
    double loss = num(j, "loss");
    layer_out lo;
    read_out(out, 3, 1, &lo);
    check_dequant(&lo, 4, 0, 32);
    double ref = loss_ld(W, lo.dequant, Hd);
    ck_assert(ref > 0);
    ck_assert_msg(fabs(loss - ref) <= LOSS_RTOL_INPUTS * ref, "loss %.17g, reference %.17g",
                  loss, ref);
    ck_assert(loss <= num(j, "rtn_loss"));
    layer_out_free(&lo);
    json_decref(j);
    run_free(&o);
    free(X);
    free(xb);
    free(Hd);
    free(in);
    free(out);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* F16 bits of a float that F16 holds exactly (normal or zero). */
static uint16_t f16_exact(float x)
{
    uint32_t u = bits_f32(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    if ((u & 0x7fffffff) == 0) return sign;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    ck_assert(e >= 1 && e <= 30);
    ck_assert((u & 0x1fff) == 0);
    return (uint16_t)(sign | (uint16_t)(e << 10) | (uint16_t)((u >> 13) & 0x3ff));
}

START_TEST(test_run_f16)
{
    static float W[ROWS * COLS], H[COLS * COLS];
    make_layer(W, H);
    uint16_t *wh = malloc(sizeof(uint16_t) * ROWS * COLS);
    for (int i = 0; i < ROWS * COLS; i++) {
        float v = rintf(W[i] * 64.0f) / 64.0f;             /* k/64: exact in F16 */
        if (v > 4.0f) v = 4.0f;
        if (v < -4.0f) v = -4.0f;
        W[i] = v;
        wh[i] = f16_exact(v);
    }
    char *dir = t_tmpdir();
    char *in = join(dir, "in.safetensors"), *out = join(dir, "out.safetensors");
    tens t[] = {{"weight", FS_DT_F16, 2, {ROWS, COLS}, wh},
                {"hessian", FS_DT_F32, 2, {COLS, COLS}, H}};
    write_tensors(in, t, 2);
    const char *args[] = {"layer", "--in", in, "--out", out, "--bits", "8", "--group-size", "-1",
                          NULL};
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 0, "exit %d: %s", o.code, o.err);
    json_t *j = parse_report(o.out);
    layer_out lo;
    read_out(out, 1, 0, &lo);
    check_dequant(&lo, 8, 1, COLS);
    double *Hd = malloc(sizeof(double) * COLS * COLS);
    for (int i = 0; i < COLS * COLS; i++) Hd[i] = H[i];
    double ref = loss_ld(W, lo.dequant, Hd), loss = num(j, "loss");
    ck_assert(ref > 0);
    ck_assert_msg(fabs(loss - ref) <= LOSS_RTOL_HESSIAN * ref, "loss %.17g, reference %.17g",
                  loss, ref);
    ck_assert(loss <= num(j, "rtn_loss"));
    free(Hd);
    layer_out_free(&lo);
    json_decref(j);
    run_free(&o);
    free(wh);
    free(in);
    free(out);
    t_rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_help)
{
    char *dir = t_tmpdir();
    const char *args[] = {"layer", "--help", NULL};
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 0, "exit %d: %s", o.code, o.err);
    ck_assert(strstr(o.out, "--group-size") != NULL);
    ck_assert(strstr(o.out, "--in") != NULL);
    run_free(&o);
    t_rmdir(dir);
    free(dir);
}
END_TEST

Suite *fs_suite_cli(void)
{
    Suite *s = suite_create("cli");
    if (!getenv("FS_BIN") || !*getenv("FS_BIN")) {
        printf("cli: FS_BIN is not set, suite skipped\n");
        return s;
    }
    TCase *tc = tcase_create("bad");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_bad_run, 0, NBAD_RUNS);
    suite_add_tcase(s, tc);
    tc = tcase_create("run");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_run_hessian);
    tcase_add_test(tc, test_run_inputs);
    tcase_add_test(tc, test_run_f16);
    tcase_add_test(tc, test_help);
    suite_add_tcase(s, tc);
    return s;
}
