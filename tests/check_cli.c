/* check_cli.c: `forge-stream layer` run as a process (FS_BIN): exit codes,
 * error lines, no OUT after a failure, and successful runs whose outputs are
 * checked against references computed here (dequant from the qmeta bytes,
 * the loss in long double from W, dequant and H); then hostile checkpoints
 * through every command (named pipes, config.json numbers, headers that
 * disagree with config.json, non-finite data, exit codes, the token cap). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <errno.h>
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

/* found by make fuzz: one entry at float's largest makes the solve overflow
   (the report once failed as "report", exit 1) */
static void mk_hess_huge(const char *p)
{
    static float h[BC * BC];
    memcpy(h, small_h, sizeof h);
    for (int i = 0; i < BC; i++) h[i * BC + i] = f32_bits(0x7f7fffffu);
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
    {"--refine-scales 17", mk_good, {BASE, "--refine-scales", "17"}, {"--refine-scales", "17"}, 0},
    {"--refine-scales -1", mk_good, {BASE, "--refine-scales", "-1"}, {"--refine-scales", NULL}, 0},
    {"--hmse-weight foo", mk_good, {BASE, "--grid", "hmse", "--hmse-weight", "foo"}, {"--hmse-weight", "foo"}, 0},
    {"--preset foo", mk_good, {BASE, "--preset", "foo"}, {"--preset", "foo"}, 0},
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
    {"hessian at float's largest", mk_hess_huge, {BASE, "--group-size", "-1", "--act-order"}, {"not finite", NULL}, 0},
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

/* 1 when the binary under test sees a CUDA device: asked of the binary itself
 * (its --version line "cuda: N device(s), ..."), never of this process, which
 * must not initialise CUDA (Check forks it; tests/run.c). */
static int bin_has_cuda_device(const char *dir)
{
    const char *args[] = {"--version", NULL};
    run_out o;
    run_cli(dir, args, &o);
    ck_assert_msg(o.code == 0, "--version: exit %d: %s", o.code, o.err);
    const char *l = strstr(o.out, "\ncuda: ");
    ck_assert_msg(l != NULL, "--version has no cuda line: %s", o.out);
    int n = 0;
    const int has = sscanf(l + 7, "%d device", &n) == 1 && n > 0;
    run_free(&o);
    return has;
}

START_TEST(test_bad_run)
{
    const bad_run *b = &bad_runs[_i];
    small_init();
    char *dir = t_tmpdir();
    if (b->nodev && bin_has_cuda_device(dir)) {
        printf("cli: '%s' skipped (the binary sees a CUDA device)\n", b->desc);
        t_rmdir(dir);
        free(dir);
        return;
    }
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

/* --preset best: HMSE grids and 3 refinement rounds (the report says so), the
 * dequant still decodes from the codes and qmeta, and the loss is below the
 * plain GPTQ loss of the same options otherwise. */
START_TEST(test_run_preset_best)
{
    static float W[ROWS * COLS], H[COLS * COLS];
    make_layer(W, H);
    char *dir = t_tmpdir();
    char *in = join(dir, "in.safetensors"), *out = join(dir, "out.safetensors");
    tens t[] = {{"weight", FS_DT_F32, 2, {ROWS, COLS}, W},
                {"hessian", FS_DT_F32, 2, {COLS, COLS}, H}};
    write_tensors(in, t, 2);
    double loss[2];
    for (int k = 0; k < 2; k++) {
        const char *args[] = {"layer", "--in", in, "--out", out, "--bits", "3", "--group-size", "32",
                              "--act-order", k ? "--preset" : "--quiet", k ? "best" : NULL, NULL};
        run_out o;
        run_cli(dir, args, &o);
        ck_assert_msg(o.code == 0, "exit %d: %s", o.code, o.err);
        json_t *j = parse_report(o.out);
        loss[k] = num(j, "loss");
        json_t *op = json_object_get(j, "options");
        ck_assert_str_eq(json_string_value(json_object_get(op, "grid")), k ? "hmse" : "absmax");
        ck_assert_int_eq(json_integer_value(json_object_get(op, "refine_scales")), k ? 3 : 0);
        if (k) ck_assert_double_le(num(j, "loss"), num(j, "solve_loss"));
        layer_out lo;
        read_out(out, 3, 1, &lo);
        check_dequant(&lo, 3, 1, 32);
        layer_out_free(&lo);
        json_decref(j);
        run_free(&o);
    }
    ck_assert_msg(loss[1] < loss[0], "preset best %g, plain %g", loss[1], loss[0]);
    free(in);
    free(out);
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

/* ---- hostile checkpoints through every command (issue 13) ------------------------
 *
 * Tiny models from tools/gen-tiny ($FS_GEN_TINY), broken here on purpose: a
 * file replaced by a named pipe, a config.json number out of range, a header
 * that disagrees with config.json, a NaN written into a weight's bytes at the
 * offset its header gives.  Every command runs under `timeout` (a hang fails
 * the test instead of the suite), must exit 2 with one error line naming the
 * file or key, and quantize must leave no --out behind. */

#define HANG_SECONDS 20          /* a command that takes longer is hung */
#define NTOK 64                  /* token ids of the calibration / eval file (< vocab 96) */
#define VOCAB 96                 /* gen-tiny's vocabulary */
#define TOKENS_CAP 16000000000ull /* spec §11.1: files over 16 GB are refused */

/* FS_BIN under `timeout HANG_SECONDS` with printf-formatted arguments,
 * stdout dropped, stderr into err; the exit code (124: it hung). */
static int run_t(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run_t(char *err, size_t n, const char *fmt, ...)
{
    char args[8000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return t_run_fmt(err, n, "timeout %d '%s' %s > /dev/null", HANG_SECONDS, getenv("FS_BIN"), args);
}

/* dir/m: a gen-tiny model (args), dir/tok.u32: NTOK ids; 0 when gen-tiny is absent. */
static int hostile_setup(const char *dir, const char *args)
{
    char *m = join(dir, "m");
    int g = t_gen_tiny(m, "%s", args);
    free(m);
    if (g < 0) { printf("cli: FS_GEN_TINY unset, hostile cases skipped\n"); return 0; }
    ck_assert_msg(g == 0, "gen-tiny %s failed", args);
    char *tp = join(dir, "tok.u32");
    FILE *fp = fopen(tp, "wb");
    ck_assert_ptr_nonnull(fp);
    for (uint32_t i = 0; i < NTOK; i++) {
        uint32_t id = (i * 37u + 5u) % VOCAB;
        uint8_t b[4] = {(uint8_t)id, (uint8_t)(id >> 8), (uint8_t)(id >> 16), (uint8_t)(id >> 24)};
        ck_assert_uint_eq(fwrite(b, 1, 4, fp), 4);
    }
    ck_assert_int_eq(fclose(fp), 0);
    free(tp);
    return 1;
}

/* Sets config.json's key (a dotted path: "rope_scaling.factor") to the JSON text val, or deletes it (val NULL). */
static void config_set(const char *m, const char *path, const char *val)
{
    char *p = join(m, "config.json");
    json_error_t je;
    json_t *c = json_load_file(p, 0, &je), *o = c;
    ck_assert_msg(c != NULL, "%s: %s", p, je.text);
    char key[256];
    snprintf(key, sizeof key, "%s", path);
    char *k = key, *dot;
    while ((dot = strchr(k, '.')) != NULL) {
        *dot = '\0';
        json_t *sub = json_object_get(o, k);
        if (!json_is_object(sub)) { sub = json_object(); json_object_set_new(o, k, sub); }
        o = sub;
        k = dot + 1;
    }
    if (val) {
        json_t *v = json_loads(val, JSON_DECODE_ANY, &je);
        ck_assert_msg(v != NULL, "%s: %s", val, je.text);
        json_object_set_new(o, k, v);
    } else {
        json_object_del(o, k);
    }
    ck_assert_int_eq(json_dump_file(c, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(c);
    free(p);
}

/* The shard of folder m holding tensor name, and the tensor's absolute file offset and bytes. */
static char *locate(const char *m, const char *name, uint64_t *off, uint64_t *nbytes, fs_dtype *dt)
{
    const char *shards[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        char *p = join(m, shards[i]);
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_st_file *f = NULL;
        if (fs_st_open(&ctx, p, &f) == FS_OK) {
            const fs_st_tensor *t = fs_st_find(f, name);
            if (t) {
                *off = t->offset;
                *nbytes = t->nbytes;
                if (dt) *dt = t->dtype;
                fs_st_close(f);
                return p;
            }
            fs_st_close(f);
        }
        free(p);
    }
    ck_abort_msg("%s: no shard holds %s", m, name);
    return NULL;
}

/* Overwrites n bytes at offset off of path. */
static void poke(const char *path, uint64_t off, const void *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
    ck_assert_int_eq(close(fd), 0);
}

/* Rewrites the shard holding tensor `name` with that tensor replaced by zeros of dtype dt and shape. */
static void retype(const char *m, const char *name, fs_dtype dt, int ndim, int64_t d0, int64_t d1)
{
    uint64_t off, nb;
    char *p = locate(m, name, &off, &nb, NULL);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert(fs_st_open(&ctx, p, &f) == FS_OK);
    fs_st_writer *w = NULL;
    ck_assert(fs_st_writer_new(&ctx, p, &w) == FS_OK);
    void **bufs = calloc((size_t)f->ntensors + 1, sizeof *bufs);
    for (int i = 0; i < f->ntensors; i++) {
        const fs_st_tensor *t = &f->tensors[i];
        if (!strcmp(t->name, name)) continue;
        bufs[i] = malloc(t->nbytes + 1);
        ck_assert(fs_st_read(&ctx, f, t, bufs[i]) == FS_OK);
        ck_assert(fs_st_writer_add(&ctx, w, t->name, t->dtype, t->ndim, t->shape, bufs[i]) == FS_OK);
    }
    for (int i = 0; i < f->nmeta; i++) ck_assert(fs_st_writer_meta(&ctx, w, f->meta_keys[i], f->meta_vals[i]) == FS_OK);
    int64_t shape[2] = {d0, d1};
    void *z = calloc((size_t)(d0 * (ndim > 1 ? d1 : 1)), 8);
    ck_assert_msg(fs_st_writer_add(&ctx, w, name, dt, ndim, shape, z) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_st_writer_commit(&ctx, w) == FS_OK, "%s", ctx.errmsg);
    for (int i = 0; i < f->ntensors; i++) free(bufs[i]);
    free(bufs);
    free(z);
    fs_st_close(f);
    free(p);
}

/* Every command that reads a checkpoint, as printf formats over (model, tokens, out). */
enum { C_INSPECT, C_VERIFY, C_QUANT, C_EVAL, C_PLAN, C_NCMD };
static const char *const cmd_name[C_NCMD] = {"inspect", "inspect --verify", "quantize", "eval", "plan"};

static int run_cmd(int k, const char *m, const char *tok, const char *out, char *err, size_t n)
{
    switch (k) {
    case C_INSPECT: return run_t(err, n, "inspect '%s'", m);
    case C_VERIFY: return run_t(err, n, "inspect '%s' --verify", m);
    case C_QUANT:
        return run_t(err, n, "quantize --model '%s' --out '%s' --calib '%s' --samples 2 --seq-len 8 --quiet", m, out,
                     tok);
    case C_EVAL: return run_t(err, n, "eval --model '%s' --tokens '%s' --seq-len 8 --quiet", m, tok);
    default: return run_t(err, n, "plan --model '%s'", m);
    }
}

/* Runs command k and asserts: exit 2, one error line naming each needle, no --out. */
static void expect_refused(const char *desc, int k, const char *m, const char *tok, const char *out,
                           const char *n1, const char *n2)
{
    char err[4096];
    int code = run_cmd(k, m, tok, out, err, sizeof err);
    ck_assert_msg(code == 2, "%s: %s exits %d, want 2 (124: hung); stderr: %s", desc, cmd_name[k], code, err);
    ck_assert_msg(strstr(err, "forge-stream: error: ") != NULL, "%s: %s: stderr: %s", desc, cmd_name[k], err);
    ck_assert_msg(!n1 || strstr(err, n1), "%s: %s: the error does not name '%s': %s", desc, cmd_name[k], n1, err);
    ck_assert_msg(!n2 || strstr(err, n2), "%s: %s: the error does not say '%s': %s", desc, cmd_name[k], n2, err);
    ck_assert_msg(!exists(out), "%s: %s left --out %s behind", desc, cmd_name[k], out);
}

/* 1. named pipes: a shard, config.json, the index, a tokenizer file, the
 * token file, layer's --in: refused at once by every command that reads them. */
static const char *const fifo_what[] = {"model-00002-of-00002.safetensors", "config.json",
                                        "model.safetensors.index.json", "tokenizer.json", "tok.u32", "layer.in"};
#define NFIFO ((int)(sizeof fifo_what / sizeof fifo_what[0]))

START_TEST(test_fifo)
{
    char *dir = t_tmpdir();
    if (!hostile_setup(dir, "--type llama")) { t_rmdir(dir); free(dir); return; }
    char *m = join(dir, "m"), *out = join(dir, "out"), *tok = join(dir, "tok.u32");
    const char *what = fifo_what[_i];
    char *fifo = !strcmp(what, "tok.u32") || !strcmp(what, "layer.in") ? join(dir, what) : join(m, what);
    unlink(fifo);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    char err[4096];
    if (!strcmp(what, "layer.in")) {
        char *lo = join(dir, "layer.out");
        int code = run_t(err, sizeof err, "layer --in '%s' --out '%s' --quiet", fifo, lo);
        ck_assert_msg(code == 2, "layer --in FIFO exits %d (124: hung): %s", code, err);
        ck_assert_msg(strstr(err, fifo) && strstr(err, "not a regular file"), "layer: %s", err);
        ck_assert_msg(!exists(lo), "layer left its --out");
        free(lo);
    } else {
        for (int k = 0; k < C_NCMD; k++) {
            if (!strcmp(what, "tok.u32") && k != C_QUANT && k != C_EVAL) continue;    /* only they read it */
            expect_refused(what, k, m, tok, out, fifo, "not a regular file");
        }
        if (!strcmp(what, "config.json")) {            /* plan of a config.json given alone */
            int code = run_t(err, sizeof err, "plan --model '%s'", fifo);
            ck_assert_msg(code == 2 && strstr(err, "not a regular file"), "plan --model FIFO: exit %d: %s", code, err);
        }
    }
    free(fifo);
    free(m);
    free(out);
    free(tok);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* 2. config.json numbers the forward uses: wrong type or out of range is
 * refused by every command before anything is created, naming the key. */
typedef struct cfg_case {
    const char *type;        /* gen-tiny --type */
    const char *key;         /* dotted path in config.json */
    const char *val;         /* JSON text, NULL: delete */
    const char *needle;      /* the message names it */
} cfg_case;

static const cfg_case cfg_cases[] = {
    {"llama", "rms_norm_eps", "-1e-5", "\"rms_norm_eps\""},
    {"llama", "rms_norm_eps", "0", "\"rms_norm_eps\""},
    {"llama", "rms_norm_eps", "\"1e-5\"", "\"rms_norm_eps\""},
    {"llama", "rope_theta", "0", "\"rope_theta\""},
    {"llama", "rope_theta", "1", "\"rope_theta\""},
    {"llama", "rope_theta", "1e300", "\"rope_theta\""},
    {"llama", "rope_theta", "\"500000\"", "\"rope_theta\""},
    {"llama", "rope_scaling", "5", "\"rope_scaling\""},
    {"llama", "rope_scaling.factor", "0", "\"rope_scaling.factor\""},
    {"llama", "rope_scaling.factor", "-8", "\"rope_scaling.factor\""},
    {"llama", "rope_scaling.rope_type", "\"ntk-by-parts\"", "\"rope_scaling.rope_type\""},
    {"llama", "rope_scaling.rope_type", "3", "\"rope_scaling.rope_type\""},
    {"llama", "rope_scaling.high_freq_factor", "1.0", "\"rope_scaling.high_freq_factor\""},
    {"llama", "rope_scaling.low_freq_factor", "0", "\"rope_scaling.low_freq_factor\""},
    {"llama", "rope_scaling.original_max_position_embeddings", "-1", "original_max_position_embeddings"},
    {"llama", "max_position_embeddings", "1e300", "\"max_position_embeddings\""},
    {"llama", "max_position_embeddings", "0", "\"max_position_embeddings\""},
    {"llama", "max_position_embeddings", "\"131072\"", "\"max_position_embeddings\""},
    {"llama", "max_position_embeddings", "4.5", "\"max_position_embeddings\""},
    {"llama", "num_key_value_heads", "3", "\"num_key_value_heads\""},
    {"llama", "head_dim", "15", "\"head_dim\""},
    {"llama", "hidden_act", "\"gelu\"", "\"hidden_act\""},
    {"llama", "tie_word_embeddings", "\"false\"", "\"tie_word_embeddings\""},
    {"llama", "attention_bias", "0", "\"attention_bias\""},
    {"mistral", "sliding_window", "0", "\"sliding_window\""},
    {"mistral", "sliding_window", "\"4096\"", "\"sliding_window\""},
    {"mixtral", "num_experts_per_tok", "9", "\"num_experts_per_tok\""},
    {"qwen3_moe", "norm_topk_prob", "\"yes\"", "\"norm_topk_prob\""},
    {"qwen3_moe", "mlp_only_layers", "[\"0\"]", "mlp_only_layers[0]"},
    {"qwen3_moe", "use_sliding_window", "true", "use_sliding_window"},
    {"deepseek_v3", "rope_scaling.beta_fast", "0", "\"rope_scaling.beta_fast\""},
    {"deepseek_v3", "rope_scaling.beta_fast", "0.5", "\"rope_scaling.beta_fast\""},
    {"deepseek_v3", "rope_scaling.mscale", "-1", "\"rope_scaling.mscale\""},
    {"deepseek_v3", "rope_scaling.mscale_all_dim", "1e300", "\"rope_scaling.mscale_all_dim\""},
    {"deepseek_v3", "rope_scaling.attention_factor", "0", "\"rope_scaling.attention_factor\""},
    {"deepseek_v3", "rope_scaling.factor", "0", "\"rope_scaling.factor\""},
    {"deepseek_v3", "rope_scaling.truncate", "\"no\"", "\"rope_scaling.truncate\""},
    {"deepseek_v3", "routed_scaling_factor", "0", "\"routed_scaling_factor\""},
    {"deepseek_v3", "routed_scaling_factor", "\"2.5\"", "\"routed_scaling_factor\""},
    {"deepseek_v3", "n_group", "3", "n_group 3"},
    {"deepseek_v3", "n_group", "0", "\"n_group\""},
    {"deepseek_v3", "n_group", "1e300", "\"n_group\""},
    {"deepseek_v3", "topk_group", "3", "topk_group 3"},
    {"deepseek_v3", "rope_interleave", "\"no\"", "\"rope_interleave\""},
    {"deepseek_v3", "topk_method", "\"greedy\"", "topk_method"},
    {"deepseek_v3", "scoring_func", "7", "\"scoring_func\""},
    {"deepseek_v3", "qk_rope_head_dim", "7", "qk_rope_head_dim"},
    {"deepseek_v2", "n_group", "\"2\"", "\"n_group\""},        /* group_limited_greedy uses it */
    {"llama", "sliding_window", "\"x\"", NULL},   /* a key the family does not use: left alone */
};
#define NCFG ((int)(sizeof cfg_cases / sizeof cfg_cases[0]))

START_TEST(test_config_numbers)
{
    const cfg_case *cc = &cfg_cases[_i];
    char *dir = t_tmpdir(), args[64];
    snprintf(args, sizeof args, "--type %s", cc->type);
    if (!hostile_setup(dir, args)) { t_rmdir(dir); free(dir); return; }
    char *m = join(dir, "m"), *out = join(dir, "out"), *tok = join(dir, "tok.u32");
    config_set(m, cc->key, cc->val);
    char desc[256], err[4096];
    snprintf(desc, sizeof desc, "%s %s = %s", cc->type, cc->key, cc->val ? cc->val : "(deleted)");
    if (!cc->needle) {                                   /* a key the family does not use: still runs */
        int code = run_cmd(C_EVAL, m, tok, out, err, sizeof err);
        ck_assert_msg(code == 0, "%s: eval exits %d: %s", desc, code, err);
    } else {
        for (int k = 0; k < C_NCMD; k++) expect_refused(desc, k, m, tok, out, "config.json", cc->needle);
    }
    free(m);
    free(out);
    free(tok);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* 3. headers that disagree with config.json or hold non-finite data: refused
 * before work starts (every command, headers only) or by inspect --verify,
 * which decodes every float tensor (NaN/Inf named by tensor and index). */
typedef struct hdr_case {
    const char *desc;
    const char *gen;          /* gen-tiny arguments */
    const char *quant;        /* NULL, or quantize options making the model under test from the generated one */
    void (*make)(const char *m);
    int cmds;                 /* bit k: command k must refuse it; the others must accept it */
    const char *n1, *n2;      /* the error names them */
} hdr_case;

#define ALL_CMDS ((1 << C_NCMD) - 1)
#define DATA_CMDS (1 << C_VERIFY | 1 << C_EVAL)      /* what reads the weights' values (quantize: issue 13.8, not here) */

static void mk_vocab_up(const char *m) { config_set(m, "vocab_size", "128"); }
static void mk_vocab_down(const char *m) { config_set(m, "vocab_size", "64"); }   /* ids < 64 are still refused */
static void mk_inter(const char *m) { config_set(m, "intermediate_size", "176"); }
static void mk_norm_i32(const char *m) { retype(m, "model.layers.1.input_layernorm.weight", FS_DT_I32, 1, 64, 0); }
static void mk_norm_f8(const char *m) { retype(m, "model.layers.1.post_attention_layernorm.weight", FS_DT_F8_E4M3, 1, 64, 0); }
static void mk_qbias_i16(const char *m) { retype(m, "model.layers.1.self_attn.q_proj.bias", FS_DT_I16, 1, 64, 0); }
static void mk_router_shape(const char *m) { retype(m, "model.layers.1.mlp.gate.weight", FS_DT_BF16, 2, 7, 64); }
static void mk_scale_rows(const char *m)
{
    retype(m, "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv", FS_DT_F32, 2, 1, 1);   /* [2, 1] needed */
}
static void mk_scale_dtype(const char *m) { retype(m, "model.layers.1.self_attn.o_proj.weight_scale_inv", FS_DT_F16, 2, 2, 1); }
static void mk_mtp_scale(const char *m)
{
    retype(m, "model.layers.2.mlp.experts.0.gate_proj.weight_scale_inv", FS_DT_F32, 2, 2, 2);   /* an MTP layer's */
}
static void mk_block(const char *m) { config_set(m, "quantization_config.weight_block_size", "[64, 64]"); }

#define NAN_AT 77            /* flat index of the injected NaN / Inf */

static void put_u16(const char *m, const char *name, uint64_t index, uint16_t v)
{
    uint64_t off, nb;
    fs_dtype dt;
    char *p = locate(m, name, &off, &nb, &dt);
    ck_assert_msg(dt == FS_DT_BF16 || dt == FS_DT_F16, "%s is not 16-bit", name);
    ck_assert(2 * index + 2 <= nb);
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    poke(p, off + 2 * index, b, 2);
    free(p);
}

/* finite values that overflow the forward: the embeddings' first rows and an up_proj at bf16's largest */
static void mk_overflow(const char *m)
{
    for (uint64_t i = 0; i < 2 * 64; i++) put_u16(m, "model.embed_tokens.weight", i, 0x7f7f);
    for (uint64_t i = 0; i < 100; i++) put_u16(m, "model.layers.0.mlp.up_proj.weight", i, 0x7f7f);
}

/* attention scores that overflow to inf (then inf - inf in the softmax): q and k at bf16's largest */
static void mk_attn_overflow(const char *m)
{
    for (uint64_t i = 0; i < 200; i++) put_u16(m, "model.layers.0.self_attn.q_proj.weight", i, 0x7f7f);
    for (uint64_t i = 0; i < 200; i++) put_u16(m, "model.layers.0.self_attn.k_proj.weight", i, 0x7f7f);
}

static void mk_nan_weight(const char *m) { put_u16(m, "model.layers.1.mlp.up_proj.weight", NAN_AT, 0x7fc0); }
static void mk_inf_norm(const char *m) { put_u16(m, "model.norm.weight", NAN_AT % 64, 0x7f80); }
static void mk_fp8_nan(const char *m)
{
    uint64_t off, nb;
    char *p = locate(m, "model.layers.1.mlp.experts.5.up_proj.weight", &off, &nb, NULL);
    uint8_t nan = 0x7f;                                 /* E4M3FN S.1111.111 */
    poke(p, off + NAN_AT, &nan, 1);
    free(p);
}
static void mk_fp8_scale_inf(const char *m)
{
    uint64_t off, nb;
    char *p = locate(m, "model.layers.1.self_attn.q_b_proj.weight_scale_inv", &off, &nb, NULL);
    uint8_t inf[4] = {0x00, 0x00, 0x80, 0x7f};
    poke(p, off, inf, 4);
    free(p);
}
static void mk_gptq_scale_inf(const char *m) { put_u16(m, "model.layers.1.mlp.down_proj.scales", 3, 0x7c00); }
static void mk_forge_in_features(const char *m)
{
    /* the shard's metadata says in_features 64 for a [172]-wide down_proj: rewrite it through retype's copy */
    uint64_t off, nb;
    char *p = locate(m, "model.layers.0.mlp.down_proj.qweight", &off, &nb, NULL);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert(fs_st_open(&ctx, p, &f) == FS_OK);
    fs_st_writer *w = NULL;
    ck_assert(fs_st_writer_new(&ctx, p, &w) == FS_OK);
    void **bufs = calloc((size_t)f->ntensors + 1, sizeof *bufs);
    for (int i = 0; i < f->ntensors; i++) {
        const fs_st_tensor *t = &f->tensors[i];
        bufs[i] = malloc(t->nbytes + 1);
        ck_assert(fs_st_read(&ctx, f, t, bufs[i]) == FS_OK);
        ck_assert(fs_st_writer_add(&ctx, w, t->name, t->dtype, t->ndim, t->shape, bufs[i]) == FS_OK);
    }
    for (int i = 0; i < f->nmeta; i++)
        ck_assert(fs_st_writer_meta(&ctx, w, f->meta_keys[i],
                                    !strcmp(f->meta_keys[i], "in_features:model.layers.0.mlp.down_proj.qweight")
                                        ? "168" : f->meta_vals[i]) == FS_OK);
    ck_assert(fs_st_writer_commit(&ctx, w) == FS_OK);
    for (int i = 0; i < f->ntensors; i++) free(bufs[i]);
    free(bufs);
    fs_st_close(f);
    free(p);
}
static void mk_qmeta_shape(const char *m) { retype(m, "model.layers.1.self_attn.k_proj.qmeta", FS_DT_U8, 2, 32, 4); }
static void mk_qbits(const char *m) { config_set(m, "quantization_config.bits", "3"); }
static void mk_qsym(const char *m) { config_set(m, "quantization_config.sym", "\"true\""); }
static void mk_checksum(const char *m)
{
    uint64_t off, nb;
    char *p = locate(m, "model.layers.1.mlp.gate_proj.qweight", &off, &nb, NULL);
    uint8_t x = 0x5a;
    poke(p, off + nb / 2, &x, 1);
    free(p);
}

static const hdr_case hdr_cases[] = {
    {"vocab_size above the embeddings'", "--type llama", NULL, mk_vocab_up, ALL_CMDS, "model.embed_tokens.weight", "[128, 64]"},
    {"vocab_size below the embeddings'", "--type llama", NULL, mk_vocab_down, ALL_CMDS, "model.embed_tokens.weight", NULL},
    {"intermediate_size off the MLP's", "--type llama", NULL, mk_inter, ALL_CMDS, "model.layers.0.mlp.gate_proj.weight", NULL},
    {"norm of dtype I32 in layer 1", "--type llama", NULL, mk_norm_i32, ALL_CMDS, "model.layers.1.input_layernorm.weight", "I32"},
    {"norm of dtype F8_E4M3", "--type llama", NULL, mk_norm_f8, ALL_CMDS, "model.layers.1.post_attention_layernorm.weight", NULL},
    {"q_proj bias of dtype I16", "--type qwen2", NULL, mk_qbias_i16, ALL_CMDS, "model.layers.1.self_attn.q_proj.bias", "I16"},
    {"router of 7 experts for 8", "--type qwen3_moe", NULL, mk_router_shape, ALL_CMDS, "model.layers.1.mlp.gate.weight", NULL},
    {"FP8 scale of layer 1 a row short", "--type deepseek_v3", NULL, mk_scale_rows, ALL_CMDS,
     "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv", "[2, 1]"},
    {"FP8 scale of dtype F16", "--type deepseek_v3", NULL, mk_scale_dtype, ALL_CMDS,
     "model.layers.1.self_attn.o_proj.weight_scale_inv", "F16"},
    {"FP8 scale of an MTP layer's expert", "--type deepseek_v3 --mtp", NULL, mk_mtp_scale, ALL_CMDS,
     "model.layers.2.mlp.experts.0.gate_proj.weight_scale_inv", NULL},
    {"weight_block_size that no scale fits", "--type deepseek_v3", NULL, mk_block, ALL_CMDS, "_scale_inv", "64x64"},
    {"NaN in a BF16 weight of layer 1", "--type llama", NULL, mk_nan_weight, DATA_CMDS,
     "model.layers.1.mlp.up_proj.weight", "flat index 77"},
    {"Inf in the final norm", "--type llama", NULL, mk_inf_norm, DATA_CMDS, "model.norm.weight", "Inf"},
    {"finite weights whose forward overflows", "--type llama", NULL, mk_overflow, 1 << C_EVAL, "overflow", NULL},
    {"attention scores that overflow", "--type llama", NULL, mk_attn_overflow, 1 << C_EVAL, "overflow", NULL},
    {"NaN in an FP8 expert of layer 1", "--type deepseek_v3", NULL, mk_fp8_nan, DATA_CMDS,
     "model.layers.1.mlp.experts.5.up_proj.weight", "flat index 77"},
    {"Inf FP8 block scale", "--type deepseek_v3", NULL, mk_fp8_scale_inf, DATA_CMDS,
     "model.layers.1.self_attn.q_b_proj.weight", NULL},
    {"gptq: an Inf scale", "--type llama", "--format gptq", mk_gptq_scale_inf, DATA_CMDS,
     "model.layers.1.mlp.down_proj", NULL},
    {"forge: in_features metadata off", "--type llama", "", mk_forge_in_features,
     ALL_CMDS & ~(1 << C_QUANT | 1 << C_PLAN), "model.layers.0.mlp.down_proj", NULL},
    {"forge: qmeta 2-D", "--type llama", "", mk_qmeta_shape, ALL_CMDS & ~(1 << C_QUANT | 1 << C_PLAN),
     "model.layers.1.self_attn.k_proj.qmeta", NULL},
    {"forge: bits that the codes do not have", "--type llama", "", mk_qbits, ALL_CMDS & ~(1 << C_QUANT | 1 << C_PLAN),
     "qweight", NULL},
    {"forge: sym a string", "--type llama", "", mk_qsym, ALL_CMDS & ~(1 << C_QUANT | 1 << C_PLAN),
     "quantization_config.sym", NULL},
    {"forge: a qweight byte changed (checksum)", "--type llama", "", mk_checksum, 1 << C_VERIFY,
     "model.layers.1.mlp.gate_proj.qweight", "checksum"},
};
#define NHDR ((int)(sizeof hdr_cases / sizeof hdr_cases[0]))

START_TEST(test_headers)
{
    const hdr_case *h = &hdr_cases[_i];
    char *dir = t_tmpdir();
    if (!hostile_setup(dir, h->gen)) { t_rmdir(dir); free(dir); return; }
    char *m = join(dir, "m"), *out = join(dir, "out"), *tok = join(dir, "tok.u32"), err[4096];
    if (h->quant) {                                     /* the model under test is a quantized output */
        char *q = join(dir, "q");
        int code = run_t(err, sizeof err, "quantize --model '%s' --out '%s' --method rtn --quiet %s", m, q, h->quant);
        ck_assert_msg(code == 0, "%s: making the quantized model: %s", h->desc, err);
        free(m);
        m = q;
    }
    h->make(m);
    for (int k = 0; k < C_NCMD; k++) {
        if (h->quant && (k == C_QUANT || k == C_PLAN)) {
            /* a quantized checkpoint is not a source: refused as such */
            expect_refused(h->desc, k, m, tok, out, NULL, NULL);
        } else if (h->cmds & (1 << k)) {
            expect_refused(h->desc, k, m, tok, out, h->n1, k == C_EVAL && h->cmds == DATA_CMDS ? NULL : h->n2);
        } else if (k != C_QUANT) {                      /* headers only: these pass */
            int code = run_cmd(k, m, tok, out, err, sizeof err);
            ck_assert_msg(code == 0, "%s: %s exits %d: %s", h->desc, cmd_name[k], code, err);
        }
    }
    free(m);
    free(out);
    free(tok);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* 4. exit codes (§14): bad input 2 in inspect, eval, plan and layer. */
START_TEST(test_exit_codes)
{
    char *dir = t_tmpdir();
    if (!hostile_setup(dir, "--type llama")) { t_rmdir(dir); free(dir); return; }
    char *m = join(dir, "m"), *tok = join(dir, "tok.u32"), *none = join(dir, "nothing-here"), err[4096];
    int code;
    /* a missing path */
    code = run_t(err, sizeof err, "inspect '%s'", none);
    ck_assert_msg(code == 2 && strstr(err, none), "inspect of a missing path: exit %d: %s", code, err);
    code = run_t(err, sizeof err, "eval --model '%s' --tokens '%s'", none, tok);
    ck_assert_msg(code == 2 && strstr(err, none), "eval of a missing model: exit %d: %s", code, err);
    code = run_t(err, sizeof err, "eval --model '%s' --tokens '%s'", m, none);
    ck_assert_msg(code == 2 && strstr(err, none), "eval of a missing token file: exit %d: %s", code, err);
    code = run_t(err, sizeof err, "plan --model '%s'", none);
    ck_assert_msg(code == 2 && strstr(err, none), "plan of a missing model: exit %d: %s", code, err);
    /* an empty folder */
    code = run_t(err, sizeof err, "inspect '%s'", dir);
    ck_assert_msg(code == 2, "inspect of a folder without a checkpoint: exit %d: %s", code, err);
    /* a shard cut short: malformed */
    char *sh = join(m, "model-00002-of-00002.safetensors");
    struct stat st;
    ck_assert_int_eq(stat(sh, &st), 0);
    ck_assert_int_eq(truncate(sh, st.st_size - 1), 0);
    for (int k = 0; k < C_NCMD; k++) {
        code = run_cmd(k, m, tok, none, err, sizeof err);
        ck_assert_msg(code == 2 && strstr(err, "model-00002-of-00002.safetensors"), "%s of a cut shard: exit %d: %s",
                      cmd_name[k], code, err);
    }
    free(sh);
    free(m);
    free(tok);
    free(none);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* 5. token files over 16 GB (a sparse file) are refused from their size,
 * before a byte is read or allocated. */
START_TEST(test_token_cap)
{
    char *dir = t_tmpdir();
    if (!hostile_setup(dir, "--type llama")) { t_rmdir(dir); free(dir); return; }
    char *m = join(dir, "m"), *out = join(dir, "out"), err[4096];
    const char *names[] = {"big.u32", "big.jsonl"};
    const uint64_t sizes[] = {TOKENS_CAP + 4, (16ull << 30) + 4};
    for (int i = 0; i < 2; i++)
        for (int s = 0; s < 2; s++) {
            char *p = join(dir, names[i]);
            int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            ck_assert_int_ge(fd, 0);
            if (ftruncate(fd, (off_t)sizes[s]) != 0) {      /* a file system without sparse files this big */
                printf("cli: ftruncate to %llu bytes failed (%s): token cap case skipped\n",
                       (unsigned long long)sizes[s], strerror(errno));
                close(fd);
                unlink(p);
                free(p);
                continue;
            }
            close(fd);
            double t0 = fs_now();
            int code = run_t(err, sizeof err, "eval --model '%s' --tokens '%s' --seq-len 8", m, p);
            ck_assert_msg(code == 2 && strstr(err, p) && strstr(err, "16 GB"), "eval of a %llu-byte %s: exit %d: %s",
                          (unsigned long long)sizes[s], names[i], code, err);
            code = run_t(err, sizeof err, "quantize --model '%s' --out '%s' --calib '%s' --samples 2 --seq-len 8", m, out, p);
            ck_assert_msg(code == 2 && strstr(err, "16 GB") && !exists(out), "quantize --calib of a %llu-byte %s: exit %d: %s",
                          (unsigned long long)sizes[s], names[i], code, err);
            ck_assert_msg(fs_now() - t0 < HANG_SECONDS / 2, "refusing a %llu-byte token file took %.1f s: was it read?",
                          (unsigned long long)sizes[s], fs_now() - t0);
            unlink(p);
            free(p);
        }
    free(m);
    free(out);
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
    tcase_add_test(tc, test_run_preset_best);
    tcase_add_test(tc, test_run_f16);
    tcase_add_test(tc, test_help);
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_fifo, 0, NFIFO);
    tcase_add_loop_test(tc, test_config_numbers, 0, NCFG);
    tcase_add_loop_test(tc, test_headers, 0, NHDR);
    tcase_add_test(tc, test_exit_codes);
    tcase_add_test(tc, test_token_cap);
    suite_add_tcase(s, tc);
    return s;
}
