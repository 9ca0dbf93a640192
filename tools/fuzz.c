/* fuzz.c: forge-stream's own fuzzer (`make fuzz`, issue 13).  It makes seed
 * inputs (tiny checkpoints of several families through tools/gen-tiny, with
 * index and without, FP8 and MTP, forge, gptq and compressed-tensors outputs of the binary
 * itself, token files .u32 and JSON lines, `layer` inputs written here),
 * mutates one input file per case and runs one command of the binary under
 * test on it (inspect, inspect --verify, eval, quantize, plan, layer), with
 * a time limit, several cases at a time.
 *
 * A case is a finding (its files, command, stderr and reason are saved
 * under the report folder) when the command:
 *  - dies of a signal, or runs past the time limit (a hang);
 *  - prints a sanitizer report (the binary is meant to be the ASan + UBSan
 *    build: ASAN_OPTIONS / UBSAN_OPTIONS halt on the first error with exit
 *    codes of their own, EXIT_ASAN / EXIT_UBSAN);
 *  - exits with a code other than 0, 1, 2, or with 1 (every case here
 *    mutates an input file: bad input is 2, never a runtime error);
 *  - exits 0 on an input this program knows to be invalid: its JSON-aware
 *    mutations know what they broke (a config.json number out of its range,
 *    an index naming a shard that does not hold the tensor, a shape that
 *    does not match its bytes, ...), and every mutated safetensors header is
 *    checked against specifications.md §6 by the checker here (st_check);
 *    token files are judged exactly (§11.1: their ids, the vocabulary, the
 *    windows the command needs);
 *  - exits 2 on a token file known to be valid;
 *  - exits 0 with an output that is not consistent: quantize's --out must
 *    pass `inspect --verify`, eval's perplexity must be finite, layer's
 *    --out must open and its report carry a finite loss;
 *  - leaves anything in --out after a non-zero exit, or changes the model
 *    folder, or exits 2 without a "forge-stream: error: " line.
 *
 * Every case is a function of (--seed, its index): `--only I` runs case I
 * again.  Nothing here links the code under test: its checks are its own
 * (jansson parses JSON for it, as it does for the binary).
 *
 * usage: fuzz --bin BIN --gen-tiny GEN --work DIR [--n 10000] [--jobs 3]
 *             [--seed S] [--report DIR] [--timeout 30] [--only I] [--quiet]
 * Exit: 0 when no case is a finding, 1 when some are, 2 for bad usage or
 * seeds that do not pass their own commands.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_ASAN 86             /* ASAN_OPTIONS exitcode: an ASan / LSan report */
#define EXIT_UBSAN 87            /* UBSAN_OPTIONS exitcode: a UBSan report */
#define VOCAB 96                 /* gen-tiny's vocabulary */
#define SEQ 8                    /* --seq-len of eval and quantize */
#define SAMPLES 2                /* quantize --samples */
#define EVAL_WINDOWS 4           /* eval --max-windows */
#define NTOK 64                  /* ids of the seed .u32 */
#define MAX_FILE (8u << 20)      /* bytes of a file this program mutates in memory */
#define ST_MAX_HEADER (100u * 1024u * 1024u)   /* §6: N > 100 MB is refused */
#define DEEP 3000                /* nesting beyond jansson's 2048 levels */

/* ---- small helpers ---------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

typedef struct { uint64_t s; } rng;

static uint64_t next(rng *r)                    /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t below(rng *r, uint64_t n) { return n ? next(r) % n : 0; }

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) die("out of memory");
    va_end(ap);
    return s;
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) die("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || (uint64_t)st.st_size > MAX_FILE) die("%s: too big to mutate", path);
    uint8_t *b = malloc((size_t)st.st_size + 1);
    if (!b || fread(b, 1, (size_t)st.st_size, fp) != (size_t)st.st_size) die("%s: cannot read", path);
    fclose(fp);
    b[st.st_size] = 0;
    *n = (size_t)st.st_size;
    return b;
}

static void write_file(const char *path, const void *b, size_t n)
{
    unlink(path);                                /* never through a hard link to a seed */
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(b, 1, n, fp) != n) || fclose(fp) != 0) die("%s: cannot write", path);
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p) != 0 && errno != ENOENT ? -1 : 0;
}

static void rm_rf(const char *p)
{
    if (!exists(p)) return;
    chmod(p, 0755);
    if (nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "fuzz: warning: could not remove %s\n", p);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void set_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The names in folder d, sorted, joined by '\n' (for "the folder did not change"). */
static char *listing(const char *d)
{
    DIR *dir = opendir(d);
    if (!dir) return strdup("");
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && n < 4096)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(dir);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j]; names[j] = names[j - 1]; names[j - 1] = t;
        }
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(names[i]) + 1;
    char *s = malloc(len);
    s[0] = 0;
    for (int i = 0; i < n; i++) { strcat(s, names[i]); strcat(s, "\n"); free(names[i]); }
    return s;
}

/* ---- the safetensors rules of specifications.md §6, checked here ----------- */

static int dtype_size(const char *s)
{
    static const char *n1[] = {"F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"}, *n2[] = {"F16", "BF16", "I16", "U16"},
                      *n4[] = {"F32", "I32", "U32"}, *n8[] = {"F64", "I64", "U64"};
    for (int i = 0; i < 5; i++) if (!strcmp(s, n1[i])) return 1;
    for (int i = 0; i < 4; i++) if (!strcmp(s, n2[i])) return 2;
    for (int i = 0; i < 3; i++) if (!strcmp(s, n4[i])) return 4;
    for (int i = 0; i < 3; i++) if (!strcmp(s, n8[i])) return 8;
    return 0;
}

typedef struct span { uint64_t b, e; } span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b;
}

/* 1 when the bytes b[0..n) are a safetensors file §6 accepts (header, dtypes,
 * shapes, spans, overlaps, metadata), 0 otherwise; *hdr (may be NULL) gets
 * the parsed header when valid (caller json_decref's). */
static int st_check(const uint8_t *b, size_t n, json_t **hdr)
{
    if (hdr) *hdr = NULL;
    if (n < 8) return 0;
    uint64_t N = le64(b);
    if (N < 2 || N > ST_MAX_HEADER || N > n - 8) return 0;
    json_error_t je;
    json_t *h = json_loadb((const char *)b + 8, (size_t)N, JSON_REJECT_DUPLICATES, &je);
    if (!h) return 0;
    int ok = json_is_object(h) && json_object_size(h) <= (1u << 20);
    const uint64_t ndata = n - 8 - N;
    span *sp = calloc(json_object_size(h) + 1, sizeof *sp);
    size_t ns = 0;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) {
        if (!ok) break;
        if (!strcmp(k, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) { ok = 0; break; }
            json_object_foreach(v, mk, mv) if (!json_is_string(mv)) ok = 0;
            continue;
        }
        if (!k[0] || !json_is_object(v)) { ok = 0; break; }
        json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"), *of = json_object_get(v, "data_offsets");
        int isz = json_is_string(dt) ? dtype_size(json_string_value(dt)) : 0;
        if (!isz || !json_is_array(sh) || json_array_size(sh) > 8 || !json_is_array(of) || json_array_size(of) != 2) {
            ok = 0;
            break;
        }
        unsigned __int128 prod = 1;
        for (size_t d = 0; d < json_array_size(sh); d++) {
            json_t *x = json_array_get(sh, d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) { ok = 0; break; }
            prod *= (uint64_t)json_integer_value(x);
            if (prod > ((unsigned __int128)1 << 64)) { ok = 0; break; }
        }
        if (!ok) break;
        json_t *jb = json_array_get(of, 0), *jend = json_array_get(of, 1);
        if (!json_is_integer(jb) || !json_is_integer(jend) || json_integer_value(jb) < 0 || json_integer_value(jend) < 0) {
            ok = 0;
            break;
        }
        uint64_t bb = (uint64_t)json_integer_value(jb), ee = (uint64_t)json_integer_value(jend);
        if (ee < bb || (unsigned __int128)(ee - bb) != prod * (unsigned)isz || ee > ndata) { ok = 0; break; }
        if (ee > bb) sp[ns++] = (span){bb, ee};
    }
    if (ok) {
        qsort(sp, ns, sizeof *sp, cmp_span);
        for (size_t i = 1; i < ns; i++) if (sp[i].b < sp[i - 1].e) ok = 0;
    }
    free(sp);
    if (ok && hdr) *hdr = h;
    else json_decref(h);
    return ok;
}

/* A header JSON h written over the data of the original file b[0..n): a new
 * file (malloc'ed) of *out_n bytes; pad: spaces to a multiple of 8. */
static uint8_t *st_rewrite(const uint8_t *b, size_t n, json_t *h, int pad, size_t *out_n)
{
    uint64_t N = le64(b);
    const uint8_t *data = b + 8 + N;
    size_t nd = n - 8 - (size_t)N;
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) die("json_dumps");
    size_t tl = strlen(text), hl = pad ? (tl + 7) / 8 * 8 : tl;
    uint8_t *o = malloc(8 + hl + nd + 1);
    set_le64(o, hl);
    memcpy(o + 8, text, tl);
    memset(o + 8 + tl, ' ', hl - tl);
    memcpy(o + 8 + hl, data, nd);
    *out_n = 8 + hl + nd;
    free(text);
    return o;
}

/* ---- seeds ------------------------------------------------------------------- */

enum { K_HEADER, K_INDEX, K_CONFIG, K_DATA, K_U32, K_JSONL, K_LAYER, K_TOKJSON, K_N };
static const char *const kind_name[K_N] = {"safetensors header", "index", "config.json", "tensor data",
                                           "tokens .u32", "tokens .jsonl", "layer input", "tokenizer.json"};
enum { C_INSPECT, C_VERIFY, C_EVAL, C_QUANT, C_PLAN, C_LAYER, C_TOKENIZE, C_N };
static const char *const cmd_name[C_N] = {"inspect", "inspect --verify", "eval", "quantize", "plan", "layer", "tokenize"};
#define ALL_MODEL ((1 << C_INSPECT) | (1 << C_VERIFY) | (1 << C_EVAL) | (1 << C_QUANT) | (1 << C_PLAN))

typedef struct seed {
    const char *name, *gen;      /* gen-tiny arguments, or NULL for a quantized output */
    const char *quant;           /* quantize options making it from seed `from` */
    int from;
    char dir[4096];
    int quantized, has_index, layers;
    char family[32];
} seed;

static seed seeds[] = {
    {"llama", "--type llama --shards 2", NULL, 0, "", 0, 0, 0, ""},
    {"qwen3_moe", "--type qwen3_moe --shards 2", NULL, 0, "", 0, 0, 0, ""},
    {"deepseek_v3", "--type deepseek_v3 --mtp --shards 2", NULL, 0, "", 0, 0, 0, ""},
    {"mistral", "--type mistral --shards 1", NULL, 0, "", 0, 0, 0, ""},
    {"qwen2", "--type qwen2 --shards 3 --tied", NULL, 0, "", 0, 0, 0, ""},
    {"forge", NULL, "--method rtn --group-size 32", 0, "", 0, 0, 0, ""},
    {"gptq", NULL, "--method rtn --format gptq --group-size 32", 1, "", 0, 0, 0, ""},
    /* compressed-tensors: asymmetric (weight_zero_point), one group per row
     * (gen-tiny's 172 / 48 widths take no whole groups of 32) */
    {"ct", NULL, "--method rtn --format compressed-tensors --group-size -1 --asym", 1, "", 0, 0, 0, ""},
};
#define NSEED ((int)(sizeof seeds / sizeof seeds[0]))

typedef struct opts {
    const char *bin, *gen, *work, *report;
    long n, only;
    int jobs, timeout, quiet;
    uint64_t seed;
} opts;

static opts O = {NULL, NULL, NULL, NULL, 10000, -1, 3, 30, 0, 0x5eedf0220ull};

static char *tok_u32, *tok_jsonl, *layer_h, *layer_x;   /* seed files */
static char *tk_seed[2], *tk_text;                       /* tokenizer folders (SentencePiece, byte-level), text */

/* A minimal safetensors writer of F32 / BF16 tensors (the layer seeds). */
static void write_st(const char *path, int n, const char *const *names, const char *const *dts, const int64_t (*shapes)[2],
                     const float *const *data)
{
    json_t *h = json_object();
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        int isz = !strcmp(dts[i], "F32") ? 4 : 2;
        uint64_t nb = (uint64_t)(shapes[i][0] * shapes[i][1]) * (uint64_t)isz;
        json_object_set_new(h, names[i], json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", dts[i], "shape",
                                                   (json_int_t)shapes[i][0], (json_int_t)shapes[i][1], "data_offsets",
                                                   (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t tl = strlen(text), hl = (tl + 7) / 8 * 8;
    uint8_t *b = calloc(8 + hl + off + 1, 1);
    set_le64(b, hl);
    memcpy(b + 8, text, tl);
    memset(b + 8 + tl, ' ', hl - tl);
    uint8_t *p = b + 8 + hl;
    for (int i = 0; i < n; i++) {
        int64_t cnt = shapes[i][0] * shapes[i][1];
        for (int64_t k = 0; k < cnt; k++) {
            uint32_t u;
            memcpy(&u, &data[i][k], 4);
            if (!strcmp(dts[i], "F32")) { for (int q = 0; q < 4; q++) *p++ = (uint8_t)(u >> (8 * q)); }
            else { uint16_t h16 = (uint16_t)(u >> 16); *p++ = (uint8_t)h16; *p++ = (uint8_t)(h16 >> 8); }
        }
    }
    write_file(path, b, 8 + hl + off);
    free(b);
    free(text);
    json_decref(h);
}

#define LR 8                     /* layer seed: weight [LR, LC] */
#define LC 32

static void make_layer_seeds(void)
{
    static float w[LR * LC], h[LC * LC], x[20 * LC];
    rng r = {42};
    for (int i = 0; i < LR * LC; i++) w[i] = (float)((double)below(&r, 2001) / 1000.0 - 1.0);
    for (int i = 0; i < 20 * LC; i++) x[i] = (float)((double)below(&r, 2001) / 1000.0 - 1.0);
    for (int i = 0; i < LC; i++)
        for (int j = 0; j < LC; j++) {
            double s = 0;
            for (int k = 0; k < 20; k++) s += (double)x[k * LC + i] * x[k * LC + j];
            h[i * LC + j] = (float)s + (i == j ? 0.5f : 0.0f);
        }
    const char *n1[] = {"weight", "hessian"}, *d1[] = {"F32", "F32"};
    const int64_t s1[][2] = {{LR, LC}, {LC, LC}};
    const float *p1[] = {w, h};
    write_st(layer_h, 2, n1, d1, s1, p1);
    const char *n2[] = {"weight", "inputs"}, *d2[] = {"BF16", "BF16"};
    const int64_t s2[][2] = {{LR, LC}, {20, LC}};
    const float *p2[] = {w, x};
    write_st(layer_x, 2, n2, d2, s2, p2);
}

/* ---- running the binary -------------------------------------------------------- */

typedef struct result {
    int code;                    /* exit code; -1: past the time limit; 1000 + signal */
    double seconds;
} result;

/* Runs argv with stdout and stderr into files, a fresh process group, the
 * sanitizers set to halt with their own codes, one thread; killed at the limit. */
static result run(char *const *argv, const char *out_path, const char *err_path, int limit)
{
    result r = {0, 0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0) _exit(127);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        setenv("ASAN_OPTIONS", "halt_on_error=1:exitcode=86:detect_leaks=1:allocator_may_return_null=1:"
                               "abort_on_error=0:symbolize=1", 1);
        setenv("UBSAN_OPTIONS", "halt_on_error=1:exitcode=87:print_stacktrace=1", 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        unsetenv("FORGE_STREAM_CRASH_AT");
        unsetenv("FORGE_STREAM_FAIL_AT");
        execv(argv[0], argv);
        _exit(127);
    }
    setpgid(pid, pid);
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (el > limit) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            r.code = -1;
            r.seconds = el;
            return r;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL);                          /* anything the command left running */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r.seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
    return r;
}

/* argv of command c on model m, tokens tok, layer input lin; outputs under case dir cd. */
typedef struct cmdline {
    char *v[32];
    int n;
    char *out;                   /* the --out this command writes (NULL: none) */
} cmdline;

static void add(cmdline *c, const char *s) { c->v[c->n++] = strdup(s); c->v[c->n] = NULL; }

static void build_cmd(cmdline *c, int cmd, const char *m, const char *tok, const char *lin, const char *cd, rng *r)
{
    memset(c, 0, sizeof *c);
    char num[32];
    add(c, O.bin);
    switch (cmd) {
    case C_INSPECT: add(c, "inspect"); add(c, m); break;
    case C_VERIFY: add(c, "inspect"); add(c, m); add(c, "--verify"); break;
    case C_EVAL:
        add(c, "eval"); add(c, "--model"); add(c, m); add(c, "--tokens"); add(c, tok);
        snprintf(num, sizeof num, "%d", SEQ);
        add(c, "--seq-len"); add(c, num);
        snprintf(num, sizeof num, "%d", EVAL_WINDOWS);
        add(c, "--max-windows"); add(c, num); add(c, "--quiet");
        break;
    case C_QUANT:
        c->out = fmt("%s/out", cd);
        add(c, "quantize"); add(c, "--model"); add(c, m); add(c, "--out"); add(c, c->out);
        add(c, "--calib"); add(c, tok);
        snprintf(num, sizeof num, "%d", SAMPLES);
        add(c, "--samples"); add(c, num);
        snprintf(num, sizeof num, "%d", SEQ);
        add(c, "--seq-len"); add(c, num); add(c, "--quiet");
        if (below(r, 4) == 0) { add(c, "--format"); add(c, "gptq"); }
        if (below(r, 4) == 0) { add(c, "--method"); add(c, "rtn"); }
        if (below(r, 4) == 0) { add(c, "--group-size"); add(c, "32"); add(c, "--act-order"); }
        break;
    case C_PLAN: {                               /* the folder (exact bytes), or its config.json alone */
        char *cfg = fmt("%s/config.json", m);
        add(c, "plan"); add(c, "--model"); add(c, below(r, 3) == 0 ? cfg : m);
        add(c, "--samples"); add(c, "2"); add(c, "--seq-len"); add(c, "8");
        free(cfg);
        break;
    }
    case C_TOKENIZE:
        c->out = fmt("%s/tout.u32", cd);
        add(c, "tokenize"); add(c, "--model"); add(c, m); add(c, "--text"); add(c, tok); add(c, "--out"); add(c, c->out);
        add(c, "--quiet");
        break;
    default:
        c->out = fmt("%s/lout.safetensors", cd);
        add(c, "layer"); add(c, "--in"); add(c, lin); add(c, "--out"); add(c, c->out); add(c, "--quiet");
        add(c, "--group-size"); add(c, below(r, 2) ? "32" : "-1");
        if (below(r, 3) == 0) add(c, "--act-order");
        break;
    }
}

static void free_cmd(cmdline *c)
{
    for (int i = 0; i < c->n; i++) free(c->v[i]);
    free(c->out);
}

static char *cmd_text(const cmdline *c)
{
    size_t len = 1;
    for (int i = 0; i < c->n; i++) len += strlen(c->v[i]) + 3;
    char *s = malloc(len);
    s[0] = 0;
    for (int i = 0; i < c->n; i++) { strcat(s, i ? " '" : "'"); strcat(s, c->v[i]); strcat(s, "'"); }
    return s;
}

/* ---- mutations ------------------------------------------------------------------- */

/* What a mutation knows of its result: `invalid` is the set of commands
 * (bits C_*) that must refuse it; `valid` those that must accept it (token
 * files, judged exactly); anything else may go either way, but must not
 * crash, hang, exit 1 or leave a partial output. */
typedef struct expect {
    unsigned invalid, valid;
    char what[200];
} expect;

static void set_what(expect *e, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void set_what(expect *e, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(e->what, sizeof e->what, f, ap);
    va_end(ap);
}

static const char tok_chars[] = "0123456789[]{},:\"-. eEtrufalsn/\\";

/* One byte-level mutation of b[lo, hi) (insertions and deletions shift the rest). */
static void byte_mutate(rng *r, uint8_t *b, size_t *n, size_t cap, size_t lo, size_t hi, expect *e)
{
    if (hi <= lo) hi = *n;
    if (hi <= lo) { lo = 0; hi = *n; }
    if (*n == 0) { b[0] = (uint8_t)below(r, 256); *n = 1; set_what(e, "byte added to an empty file"); return; }
    size_t pos = lo + below(r, hi - lo);
    switch (below(r, 8)) {
    case 0: b[pos] ^= (uint8_t)(1u << below(r, 8)); set_what(e, "bit flip at %zu", pos); break;
    case 1: b[pos] = (uint8_t)tok_chars[below(r, sizeof tok_chars - 1)]; set_what(e, "byte %zu set", pos); break;
    case 2: b[pos] = (uint8_t)below(r, 256); set_what(e, "byte %zu random", pos); break;
    case 3: {
        size_t k = 1 + below(r, 8);
        if (*n + k > cap) return;
        memmove(b + pos + k, b + pos, *n - pos);
        for (size_t i = 0; i < k; i++) b[pos + i] = (uint8_t)tok_chars[below(r, sizeof tok_chars - 1)];
        *n += k;
        set_what(e, "%zu bytes inserted at %zu", k, pos);
        break;
    }
    case 4: {
        size_t k = 1 + below(r, 16);
        if (pos + k > *n) k = *n - pos;
        memmove(b + pos, b + pos + k, *n - pos - k);
        *n -= k;
        set_what(e, "%zu bytes deleted at %zu", k, pos);
        break;
    }
    case 5: *n = below(r, *n); set_what(e, "truncated to %zu bytes", *n); break;
    case 6: {
        size_t k = 1 + below(r, 64);
        if (*n + k > cap) return;
        for (size_t i = 0; i < k; i++) b[*n + i] = below(r, 2) ? 0 : (uint8_t)below(r, 256);
        *n += k;
        set_what(e, "%zu bytes appended", k);
        break;
    }
    default: {                                   /* a digit changed */
        size_t i = pos;
        while (i < hi && (b[i] < '0' || b[i] > '9')) i++;
        if (i >= hi) { b[pos] ^= 1; set_what(e, "bit flip at %zu", pos); break; }
        b[i] = (uint8_t)('0' + below(r, 10));
        set_what(e, "digit at %zu", i);
        break;
    }
    }
}

/* Values that break a key's contract, by the key's kind. */
enum vk { V_SIZE, V_LAYERS, V_EPS, V_THETA, V_POS, V_POSF, V_FACTOR, V_NONNEG, V_BOOL, V_STR, V_TYPE, V_GROUP,
          V_SMALLSIZE, V_TOPK, V_BLOCK, V_BITS, V_GSIZE };

static json_t *bad_value(rng *r, int kind, const json_t *old)
{
    double v = json_is_number(old) ? json_number_value(old) : 4.0;
    switch (kind) {
    case V_SIZE: case V_LAYERS: case V_SMALLSIZE: {
        /* sizes disagree with the tensors (+1), are out of range, or of another type */
        json_t *c[] = {json_integer((json_int_t)v + 1), json_integer(0), json_integer(-1), json_integer(1ll << 40),
                       json_real(1e300), json_real(v + 0.5), json_sprintf("%g", v), json_true(), json_pack("[f]", v),
                       json_pack("{s:f}", "v", v)};
        /* +1 layers is no error where an MTP layer holds a whole decoder layer's tensors */
        int k = kind == V_LAYERS ? 1 + (int)below(r, 9) : (int)below(r, 10);
        for (int i = 0; i < 10; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_EPS: {
        json_t *c[] = {json_real(0.0), json_real(-v), json_real(1.0), json_real(1e300), json_string("1e-5"), json_true(),
                       json_pack("[f]", v), json_real(-0.0)};
        int k = (int)below(r, 8);
        for (int i = 0; i < 8; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_THETA: {
        json_t *c[] = {json_real(0.0), json_real(-1.0), json_real(1.0), json_real(0.5), json_real(1e300), json_string("1e4"),
                       json_pack("[f]", v)};
        int k = (int)below(r, 7);
        for (int i = 0; i < 7; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_POS: case V_POSF: {                   /* positive integers / numbers (orig max, max_position) */
        json_t *c[] = {json_integer(0), json_integer(-5), json_real(1e300), json_string("4096"), json_integer(1ll << 40),
                       json_false(), json_pack("[i]", 1)};
        int k = (int)below(r, kind == V_POS ? 7 : 6);
        if (kind == V_POS && k == 4) k = 2;
        for (int i = 0; i < 7; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_FACTOR: {                             /* > 0 numbers */
        json_t *c[] = {json_real(0.0), json_real(-v), json_real(1e300), json_sprintf("%g", v), json_null() /* kept */};
        int k = (int)below(r, 4);
        for (int i = 0; i < 5; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_NONNEG: {                             /* >= 0 numbers (mscale) */
        json_t *c[] = {json_real(-1.0), json_real(1e300), json_string("1"), json_true()};
        int k = (int)below(r, 4);
        for (int i = 0; i < 4; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_BOOL: {
        json_t *c[] = {json_string("true"), json_integer(1), json_integer(0), json_pack("[b]", 1)};
        int k = (int)below(r, 4);
        for (int i = 0; i < 4; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_STR: {                                /* a string key given an unsupported value or type */
        json_t *c[] = {json_string("gelu_new"), json_integer(5), json_string(""), json_pack("[s]", "silu")};
        int k = (int)below(r, 4);
        for (int i = 0; i < 4; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_TYPE: {                               /* rope types */
        json_t *c[] = {json_string("ntk-by-parts"), json_integer(3), json_string("")};
        int k = (int)below(r, 3);
        for (int i = 0; i < 3; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_GROUP: {                              /* n_group of 8 experts */
        json_t *c[] = {json_integer(0), json_integer(3), json_integer(-1), json_real(1e300), json_string("2"), json_integer(16)};
        int k = (int)below(r, 6);
        for (int i = 0; i < 6; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_TOPK: {                               /* top-k of 8 experts */
        json_t *c[] = {json_integer(0), json_integer(9), json_integer(-2), json_string("2"), json_real(1e300)};
        int k = (int)below(r, 5);
        for (int i = 0; i < 5; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_BLOCK: {
        json_t *c[] = {json_pack("[i,i]", 0, 128), json_pack("[i,i]", 64, 64), json_string("128"), json_pack("[i]", 128),
                       json_pack("[i,i]", 128, -1)};
        int k = (int)below(r, 5);
        for (int i = 0; i < 5; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    case V_BITS: {                               /* the codes are 4-bit */
        json_t *c[] = {json_integer(3), json_integer(8), json_integer(5), json_string("4"), json_integer(0)};
        int k = (int)below(r, 5);
        for (int i = 0; i < 5; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    default: {                                   /* group size 32 of inputs 64..172 */
        json_t *c[] = {json_integer(64), json_integer(0), json_integer(-2), json_string("32"), json_real(1e300)};
        int k = (int)below(r, 5);
        for (int i = 0; i < 5; i++) if (i != k) json_decref(c[i]);
        return c[k];
    }
    }
}

/* The keys of a seed's config.json whose contract is known: (path, value
 * kind, commands that must refuse a bad value). */
typedef struct ckey { const char *path; int kind; } ckey;

static const ckey keys_common[] = {
    {"hidden_size", V_SIZE}, {"num_hidden_layers", V_LAYERS}, {"num_attention_heads", V_SIZE}, {"vocab_size", V_SIZE},
    {"rms_norm_eps", V_EPS}, {"rope_theta", V_THETA}, {"max_position_embeddings", V_POS}, {"hidden_act", V_STR},
    {"tie_word_embeddings", V_BOOL}, {NULL, 0}};
static const ckey keys_llama[] = {
    {"num_key_value_heads", V_SIZE}, {"head_dim", V_SIZE}, {"intermediate_size", V_SIZE}, {"attention_bias", V_BOOL},
    {"mlp_bias", V_BOOL}, {"rope_scaling.factor", V_FACTOR}, {"rope_scaling.low_freq_factor", V_FACTOR},
    {"rope_scaling.high_freq_factor", V_FACTOR}, {"rope_scaling.original_max_position_embeddings", V_POSF},
    {"rope_scaling.rope_type", V_TYPE}, {NULL, 0}};
static const ckey keys_qwen3_moe[] = {
    {"num_key_value_heads", V_SIZE}, {"head_dim", V_SIZE}, {"num_experts", V_SIZE}, {"moe_intermediate_size", V_SIZE},
    {"num_experts_per_tok", V_TOPK}, {"norm_topk_prob", V_BOOL}, {"use_sliding_window", V_BOOL}, {NULL, 0}};
static const ckey keys_ds[] = {
    {"q_lora_rank", V_SMALLSIZE}, {"kv_lora_rank", V_SMALLSIZE}, {"qk_nope_head_dim", V_SMALLSIZE},
    {"qk_rope_head_dim", V_SMALLSIZE}, {"v_head_dim", V_SMALLSIZE}, {"moe_intermediate_size", V_SIZE},
    {"n_routed_experts", V_SIZE}, {"num_experts_per_tok", V_TOPK}, {"n_group", V_GROUP}, {"routed_scaling_factor", V_FACTOR},
    {"rope_interleave", V_BOOL}, {"norm_topk_prob", V_BOOL}, {"topk_method", V_STR}, {"scoring_func", V_STR},
    {"rope_scaling.factor", V_FACTOR}, {"rope_scaling.beta_fast", V_FACTOR}, {"rope_scaling.beta_slow", V_FACTOR},
    {"rope_scaling.mscale", V_NONNEG}, {"rope_scaling.mscale_all_dim", V_NONNEG},
    {"rope_scaling.original_max_position_embeddings", V_POSF}, {"rope_scaling.type", V_TYPE},
    {"rope_scaling.truncate", V_BOOL}, {"rope_scaling.attention_factor", V_FACTOR},
    {"quantization_config.weight_block_size", V_BLOCK}, {"intermediate_size", V_SIZE}, {NULL, 0}};
static const ckey keys_mistral[] = {
    {"num_key_value_heads", V_SIZE}, {"head_dim", V_SIZE}, {"intermediate_size", V_SIZE}, {"sliding_window", V_POS},
    {NULL, 0}};
static const ckey keys_qwen2[] = {{"num_key_value_heads", V_SIZE}, {"intermediate_size", V_SIZE}, {NULL, 0}};
static const ckey keys_quant[] = {{"quantization_config.bits", V_BITS}, {"quantization_config.group_size", V_GSIZE},
                                  {"quantization_config.sym", V_BOOL}, {NULL, 0}};

static const ckey keys_ct[] = {{"quantization_config.config_groups.group_0.weights.num_bits", V_BITS},
                               {"quantization_config.config_groups.group_0.weights.group_size", V_GSIZE},
                               {"quantization_config.config_groups.group_0.weights.symmetric", V_BOOL},
                               {"quantization_config.config_groups.group_0.weights.actorder", V_BOOL},
                               {NULL, 0}};

static const ckey *family_keys(const seed *s)
{
    if (s->quantized) return strcmp(s->name, "ct") ? keys_quant : keys_ct;
    if (!strcmp(s->family, "llama")) return keys_llama;
    if (!strcmp(s->family, "qwen3_moe")) return keys_qwen3_moe;
    if (!strncmp(s->family, "deepseek", 8)) return keys_ds;
    if (!strcmp(s->family, "mistral")) return keys_mistral;
    return keys_qwen2;
}

/* The object holding dotted path p in root (created for the last step), and the last key. */
static json_t *holder(json_t *root, const char *p, char *last, size_t n)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", p);
    char *k = buf, *dot;
    json_t *o = root;
    while ((dot = strchr(k, '.')) != NULL) {
        *dot = 0;
        json_t *sub = json_object_get(o, k);
        if (!json_is_object(sub)) { sub = json_object(); json_object_set_new(o, k, sub); }
        o = sub;
        k = dot + 1;
    }
    snprintf(last, n, "%s", k);
    return o;
}

/* A random value somewhere in the JSON tree j (an object or array member), or NULL. */
static json_t *random_member(rng *r, json_t *j, json_t **parent, char *key, size_t kn, size_t *index)
{
    for (int depth = 0; depth < 4; depth++) {
        size_t n = json_is_object(j) ? json_object_size(j) : json_is_array(j) ? json_array_size(j) : 0;
        if (!n) return NULL;
        size_t k = below(r, n);
        json_t *v;
        *parent = j;
        if (json_is_object(j)) {
            const char *kk;
            json_t *vv;
            size_t i = 0;
            v = NULL;
            json_object_foreach(j, kk, vv) if (i++ == k) { snprintf(key, kn, "%s", kk); v = vv; break; }
        } else {
            v = json_array_get(j, k);
            key[0] = 0;
            *index = k;
        }
        if ((json_is_object(v) || json_is_array(v)) && below(r, 2)) { j = v; continue; }
        return v;
    }
    return NULL;
}

/* Serialises j, then (dup) repeats one top-level "key": value pair textually. */
static char *dump_dup(json_t *j, rng *r, int dup, size_t *len)
{
    char *t = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!t) die("json_dumps");
    if (dup && json_is_object(j) && json_object_size(j) > 0) {
        size_t k = below(r, json_object_size(j)), i = 0;
        const char *kk;
        json_t *vv = NULL;
        json_object_foreach(j, kk, vv) if (i++ == k) break;
        char *v = json_dumps(vv, JSON_ENCODE_ANY | JSON_COMPACT);
        json_t *ks = json_string(kk);
        char *ktext = json_dumps(ks, JSON_ENCODE_ANY);
        char *n = fmt("{%s: %s, %s", ktext, v, t + 1);
        free(v);
        free(ktext);
        json_decref(ks);
        free(t);
        t = n;
    }
    *len = strlen(t);
    return t;
}

static json_t *deep_value(void)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < DEEP; i++) v = json_pack("[o]", v);
    return v;
}

/* config.json of seed s: JSON-aware edits (known invalid where they break a
 * key's contract) or byte-level ones. */
static uint8_t *mutate_config(rng *r, const seed *s, const uint8_t *b, size_t n, size_t *out_n, expect *e)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)b, n, 0, &je);
    if (!j) die("seed config does not parse");
    const unsigned inv = s->quantized ? ((1 << C_INSPECT) | (1 << C_VERIFY) | (1 << C_EVAL)) : ALL_MODEL;
    int dup = 0;
    uint8_t *o = NULL;
    switch (below(r, 9)) {
    case 0: case 1: case 2: {                    /* a used key, a value out of its contract */
        const ckey *ks = below(r, 3) == 0 ? keys_common : family_keys(s);
        int nk = 0;
        while (ks[nk].path) nk++;
        const ckey *k = &ks[below(r, (uint64_t)nk)];
        char last[256];
        json_t *h = holder(j, k->path, last, sizeof last);
        json_t *v = bad_value(r, k->kind, json_object_get(h, last));
        char *vt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        set_what(e, "\"%s\" = %s", k->path, vt ? vt : "?");
        free(vt);
        json_object_set_new(h, last, v);
        e->invalid = inv;
        break;
    }
    case 3: {                                    /* a required key dropped */
        static const char *req[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "model_type"};
        const char *k = req[below(r, 5)];
        json_object_del(j, k);
        set_what(e, "\"%s\" dropped", k);
        e->invalid = !strcmp(k, "model_type") ? inv & ~(1u << C_INSPECT) : inv;
        break;
    }
    case 4: {                                    /* model_type */
        json_t *v = bad_value(r, V_STR, NULL);
        json_object_set_new(j, "model_type", v);
        set_what(e, "model_type replaced");
        e->invalid = inv & ~(1u << C_INSPECT);   /* inspect lists an unknown family's tensors */
        break;
    }
    case 5:                                      /* a key repeated */
        dup = 1;
        set_what(e, "a key repeated");
        e->invalid = ALL_MODEL;
        break;
    case 6: {                                    /* nesting / not an object */
        if (below(r, 2)) {
            json_t *arr = json_pack("[o]", j);
            j = arr;
            set_what(e, "config.json an array");
        } else {
            json_object_set_new(j, below(r, 2) ? "hidden_size" : "architectures", deep_value());
            set_what(e, "a value nested %d levels", DEEP);
        }
        e->invalid = ALL_MODEL;
        break;
    }
    case 7: {                                    /* any value replaced (unknown validity) */
        json_t *parent = NULL;
        char key[256];
        size_t idx = 0;
        json_t *v = random_member(r, j, &parent, key, sizeof key, &idx);
        if (v) {
            json_t *c[] = {json_integer(0), json_integer(-1), json_integer(1ll << 62), json_real(1e300), json_real(-0.5),
                           json_string("x"), json_null(), json_true(), json_pack("[]"), json_pack("{}")};
            int k = (int)below(r, 10);
            for (int i = 0; i < 10; i++) if (i != k) json_decref(c[i]);
            if (json_is_object(parent)) json_object_set_new(parent, key, c[k]);
            else json_array_set_new(parent, idx, c[k]);
            set_what(e, "value of \"%s\" replaced", key);
        }
        break;
    }
    default: {                                   /* bytes */
        size_t cap = n * 2 + 256, m = n;
        o = malloc(cap);
        memcpy(o, b, n);
        byte_mutate(r, o, &m, cap, 0, n, e);
        *out_n = m;
        json_decref(j);
        return o;
    }
    }
    size_t len;
    char *t = dump_dup(j, r, dup, &len);
    json_decref(j);
    *out_n = len;
    return (uint8_t *)t;
}

/* model.safetensors.index.json: every JSON-aware edit breaks the index. */
static uint8_t *mutate_index(rng *r, const seed *s, const uint8_t *b, size_t n, size_t *out_n, expect *e)
{
    (void)s;
    json_error_t je;
    json_t *j = json_loadb((const char *)b, n, 0, &je), *wm = json_object_get(j, "weight_map");
    if (!j || !json_is_object(wm)) die("seed index does not parse");
    int dup = 0;
    e->invalid = ALL_MODEL;
    size_t k = below(r, json_object_size(wm)), i = 0;
    const char *name = NULL;
    json_t *v;
    json_object_foreach(wm, name, v) if (i++ == k) break;
    char nm[512];
    snprintf(nm, sizeof nm, "%s", name);
    const char *shard = json_string_value(json_object_get(wm, nm));
    switch (below(r, 10)) {
    case 0: {                                    /* another shard of the model */
        const char *other = NULL, *kk;
        json_object_foreach(wm, kk, v) if (strcmp(json_string_value(v), shard)) { other = json_string_value(v); break; }
        json_object_set_new(wm, nm, json_string(other ? other : "model-00009-of-00009.safetensors"));
        set_what(e, "'%s' listed for another shard", nm);
        break;
    }
    case 1: {
        static const char *names[] = {"missing.safetensors", "../model-00001-of-00002.safetensors", "/etc/passwd", "",
                                      ".", "sub/x.safetensors", "model-00001-of-00002.safetensors/", ".."};
        const char *t = names[below(r, 8)];
        json_object_set_new(wm, nm, json_string(t));
        set_what(e, "'%s' listed for shard \"%s\"", nm, t);
        break;
    }
    case 2: json_object_set_new(wm, nm, below(r, 2) ? json_integer(1) : json_null()); set_what(e, "a shard name not a string"); break;
    case 3: json_object_del(wm, nm); set_what(e, "'%s' dropped from the index", nm); break;
    case 4: json_object_set_new(wm, "model.bogus.weight", json_string(shard)); set_what(e, "a tensor no shard holds listed"); break;
    case 5:
        json_object_set_new(j, "weight_map", below(r, 2) ? json_pack("[s]", shard) : json_string(shard));
        set_what(e, "weight_map not an object");
        break;
    case 6: dup = 1; set_what(e, "a key repeated"); break;
    case 7: json_object_set_new(j, "weight_map", deep_value()); set_what(e, "weight_map nested"); break;
    case 8: {                                    /* metadata: ignored by readers */
        json_object_set_new(j, "metadata", json_pack("{s:I}", "total_size", (json_int_t)below(r, 1ull << 40)));
        set_what(e, "metadata.total_size changed");
        e->invalid = 0;
        break;
    }
    default: {
        size_t cap = n * 2 + 256, m = n;
        uint8_t *o = malloc(cap);
        memcpy(o, b, n);
        byte_mutate(r, o, &m, cap, 0, n, e);
        e->invalid = 0;
        *out_n = m;
        json_decref(j);
        return o;
    }
    }
    if (dup) {                                   /* a weight_map key repeated */
        char *t = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        char *at = strstr(t, "\"weight_map\": {");
        if (!at) die("index layout");
        at += strlen("\"weight_map\": {");
        char *n2 = fmt("%.*s\"%s\": \"%s\",%s", (int)(at - t), t, nm, shard, at);
        free(t);
        json_decref(j);
        *out_n = strlen(n2);
        return (uint8_t *)n2;
    }
    size_t len;
    char *t = dump_dup(j, r, 0, &len);
    json_decref(j);
    *out_n = len;
    return (uint8_t *)t;
}

/* A safetensors file (a shard, or layer's input): JSON-aware edits of its
 * header or byte edits of the header region and the length field, judged by
 * st_check; index_model: every tensor of the file is listed in an index. */
static uint8_t *mutate_header(rng *r, const uint8_t *b, size_t n, int index_model, int quantized, size_t *out_n,
                              expect *e, unsigned cmds)
{
    json_t *h = NULL;
    if (!st_check(b, n, &h)) die("seed shard fails the checker");
    uint64_t N = le64(b);
    uint8_t *o = NULL;
    unsigned known = 0;                          /* commands that refuse it by a rule st_check does not see */
    size_t k = below(r, json_object_size(h)), i = 0;
    const char *name = NULL;
    json_t *t;
    json_object_foreach(h, name, t) if (i++ == k) break;
    if (!strcmp(name, "__metadata__")) {         /* a tensor instead */
        json_object_foreach(h, name, t) if (strcmp(name, "__metadata__")) break;
    }
    char nm[512];
    snprintf(nm, sizeof nm, "%s", name);
    t = json_object_get(h, nm);
    int rewrite = 1, pad = (int)below(r, 2);
    switch (below(r, 12)) {
    case 0: {
        static const char *dts[] = {"F64", "BOGUS", "f32", "I64", "BF16", "F16", "U8", "I32", "F8_E5M2"};
        const char *d = dts[below(r, 9)];
        json_object_set_new(t, "dtype", below(r, 6) ? json_string(d) : json_integer(2));
        set_what(e, "'%s' dtype -> %s", nm, d);
        break;
    }
    case 1: case 2: {
        json_t *sh = json_object_get(t, "shape");
        size_t nd = json_array_size(sh);
        if (nd == 0) break;
        size_t d = below(r, nd);
        json_int_t v = json_integer_value(json_array_get(sh, d));
        json_t *c[] = {json_integer(v + 1), json_integer(v * 2), json_integer(0), json_integer(-1), json_integer(1ll << 62),
                       json_string("4"), json_real(1.5), json_integer(v > 1 ? v - 1 : v + 2)};
        int q = (int)below(r, 8);
        for (int x = 0; x < 8; x++) if (x != q) json_decref(c[x]);
        json_array_set_new(sh, d, c[q]);
        if (below(r, 4) == 0) {                  /* or the dims swapped (may even stay consistent) */
            json_t *s2 = json_array();
            for (size_t x = nd; x-- > 0;) json_array_append(s2, json_array_get(sh, x));
            json_object_set_new(t, "shape", s2);
        }
        set_what(e, "'%s' shape edited", nm);
        break;
    }
    case 3: case 4: {
        json_t *of = json_object_get(t, "data_offsets");
        json_int_t bb = json_integer_value(json_array_get(of, 0)), ee = json_integer_value(json_array_get(of, 1));
        json_int_t dd = (json_int_t)below(r, 9) - 4;
        switch (below(r, 5)) {
        case 0: bb += dd; break;
        case 1: ee += dd; break;
        case 2: bb += dd; ee += dd; break;
        case 3: bb = ee + (json_int_t)below(r, 100); break;
        default: ee = (json_int_t)(n - 8 - N) + (json_int_t)below(r, 64); bb = ee - (json_int_t)below(r, 64); break;
        }
        json_object_set_new(t, "data_offsets", below(r, 8) ? json_pack("[I,I]", bb, ee)
                                                           : json_pack("[I,I,I]", bb, ee, ee));
        set_what(e, "'%s' data_offsets [%lld, %lld]", nm, (long long)bb, (long long)ee);
        break;
    }
    case 5:
        json_object_del(h, nm);
        set_what(e, "'%s' dropped from its header", nm);
        if (index_model) known = cmds;           /* the index lists it */
        break;
    case 6:
        json_object_set_new(h, "model.bogus.weight", json_pack("{s:s, s:[i], s:[i,i]}", "dtype", "F32", "shape", 0, "data_offsets", 0, 0));
        set_what(e, "a tensor the index does not list added");
        if (index_model) known = cmds;
        break;
    case 7: {
        json_t *m = json_object_get(h, "__metadata__");
        if (!json_is_object(m)) { m = json_object(); json_object_set_new(h, "__metadata__", m); }
        const char *mk = NULL;
        json_t *mv;
        size_t q = below(r, json_object_size(m) + 1), x = 0;
        json_object_foreach(m, mk, mv) if (x++ == q) break;
        if (mk && !strncmp(mk, "in_features:", 12) && quantized) {
            static const char *bad[] = {"0", "-1", "abc", "99999999999", "", "63 ", "1e3"};
            char keep[512];
            snprintf(keep, sizeof keep, "%s", mk);
            json_object_set_new(m, keep, json_string(bad[below(r, 7)]));
            set_what(e, "metadata %s edited", keep);
            known = cmds;                        /* a row width that no longer matches config.json */
        } else if (mk && !strncmp(mk, "xxh3:", 5)) {
            char keep[512];
            snprintf(keep, sizeof keep, "%s", mk);
            json_object_set_new(m, keep, json_string("0123456789abcdef"));
            set_what(e, "recorded checksum of %s changed", keep + 5);
            known = cmds & (1u << C_VERIFY);     /* only --verify compares checksums */
        } else {
            json_object_set_new(m, "format", below(r, 2) ? json_integer(1) : json_pack("[s]", "pt"));
            set_what(e, "metadata value not a string");
        }
        break;
    }
    case 8:
        json_object_set_new(h, nm, below(r, 2) ? json_string("x") : json_pack("[i]", 1));
        set_what(e, "'%s' entry not an object", nm);
        break;
    case 9: {
        static const char *req[] = {"dtype", "shape", "data_offsets"};
        const char *q = req[below(r, 3)];
        json_object_del(t, q);
        set_what(e, "'%s' without %s", nm, q);
        break;
    }
    case 10:
        json_object_set_new(t, "shape", deep_value());
        set_what(e, "'%s' shape nested %d levels", nm, DEEP);
        break;
    default: {                                   /* bytes of the header, or its length field */
        rewrite = 0;
        size_t cap = n + 4096, m = n;
        o = malloc(cap);
        memcpy(o, b, n);
        if (below(r, 4) == 0) {
            uint64_t L = le64(o);
            switch (below(r, 4)) {
            case 0: L += below(r, 17) - 8; break;
            case 1: L ^= 1ull << below(r, 64); break;
            case 2: L = next(r) >> below(r, 64); break;
            default: L = N - below(r, 8); break;            /* into the padding, or before it */
            }
            set_le64(o, L);
            set_what(e, "header length %llu -> %llu", (unsigned long long)N, (unsigned long long)L);
        } else {
            size_t before = m;
            byte_mutate(r, o, &m, cap, 8, 8 + (size_t)N, e);
            if (m != before && below(r, 4)) set_le64(o, le64(o) + (m - before));   /* kept in step */
        }
        *out_n = m;
        break;
    }
    }
    if (rewrite) o = st_rewrite(b, n, h, pad, out_n);
    json_decref(h);
    if (below(r, 10) == 0 && rewrite) {          /* a tensor key repeated, textually */
        uint64_t L = le64(o);
        char *text = strndup((const char *)o + 8, (size_t)L);
        char *kq = strstr(text, "\"dtype\"");
        if (kq) {
            char *open = kq;
            while (open > text && *open != '{') open--;
            char *q0 = open;                                     /* "name":{ */
            while (q0 > text && *(q0 - 1) != ',' && *(q0 - 1) != '{') q0--;
            char *close = strchr(kq, '}');
            if (close && q0 > text) {
                size_t len = (size_t)(close + 1 - q0);
                size_t nl = *out_n + len + 1;
                uint8_t *o2 = malloc(nl);
                size_t at = 8 + (size_t)(q0 - text);
                memcpy(o2, o, at);
                memcpy(o2 + at, q0, len);
                o2[at + len] = ',';
                memcpy(o2 + at + len + 1, o + at, *out_n - at);
                set_le64(o2, L + len + 1);
                free(o);
                o = o2;
                *out_n = nl;
                set_what(e, "a tensor key repeated");
            }
        }
        free(text);
    }
    e->invalid = st_check(o, *out_n, NULL) ? known : cmds;
    return o;
}

/* A float value of a described tensor set to NaN / Inf: refused by what
 * decodes it (inspect --verify, eval; quantize's mid-run refusal is not
 * judged here). */
static uint8_t *mutate_data(rng *r, const seed *s, const uint8_t *b, size_t n, size_t *out_n, expect *e)
{
    json_t *h = NULL;
    if (!st_check(b, n, &h)) die("seed shard fails the checker");
    uint64_t N = le64(b);
    const char *cands[4096];
    int nc = 0;
    const char *k;
    json_t *t;
    json_object_foreach(h, k, t) {
        if (!strcmp(k, "__metadata__") || nc == 4096) continue;
        const char *dt = json_string_value(json_object_get(t, "dtype"));
        int l = -1;
        int layer_ok = sscanf(k, "model.layers.%d.", &l) != 1 || l < s->layers;     /* not an MTP layer */
        int fl = !strcmp(dt, "F32") || !strcmp(dt, "BF16") || !strcmp(dt, "F16") || !strcmp(dt, "F8_E4M3");
        if (fl && layer_ok && strncmp(k, "model.layers.", 13) == 0) cands[nc++] = k;
        else if (fl && layer_ok && (!strcmp(k, "model.norm.weight") || !strcmp(k, "model.embed_tokens.weight")))
            cands[nc++] = k;
    }
    uint8_t *o = malloc(n + 1);
    memcpy(o, b, n);
    *out_n = n;
    if (!nc) { json_decref(h); set_what(e, "no float tensor"); return o; }
    const char *nm = cands[below(r, (uint64_t)nc)];
    t = json_object_get(h, nm);
    const char *dt = json_string_value(json_object_get(t, "dtype"));
    uint64_t bb = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
    uint64_t ee = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 1));
    int isz = dtype_size(dt);
    uint64_t cnt = (ee - bb) / (uint64_t)isz, idx = below(r, cnt);
    uint8_t *p = o + 8 + N + bb + idx * (uint64_t)isz;
    if (below(r, 3) == 0) {
        /* the largest finite values over a run of elements: nothing to refuse in the
         * file, but the forward may overflow (eval must refuse that, not print NaN) */
        uint64_t run = 1 + below(r, 256);
        for (uint64_t q = idx; q < cnt && q < idx + run; q++) {
            uint8_t *pp = o + 8 + N + bb + q * (uint64_t)isz;
            if (!strcmp(dt, "F32")) { uint32_t v = 0x7f7fffffu | (below(r, 2) ? 0x80000000u : 0); memcpy(pp, &v, 4); }
            else if (!strcmp(dt, "BF16")) { pp[0] = 0x7f; pp[1] = below(r, 2) ? 0xff : 0x7f; }
            else if (!strcmp(dt, "F16")) { pp[0] = 0xff; pp[1] = below(r, 2) ? 0xfb : 0x7b; }
            else pp[0] = below(r, 2) ? 0xfe : 0x7e;                               /* E4M3 +-448 */
        }
        set_what(e, "'%s'[%llu..+%llu] = the largest finite values", nm, (unsigned long long)idx, (unsigned long long)run);
        json_decref(h);
        return o;
    }
    int inf = (int)below(r, 2);
    if (!strcmp(dt, "F32")) { uint32_t v = inf ? 0x7f800000u : 0x7fc00000u; memcpy(p, &v, 4); }
    else if (!strcmp(dt, "BF16")) { p[0] = inf ? 0x80 : 0xc0; p[1] = 0x7f; }
    else if (!strcmp(dt, "F16")) { p[0] = inf ? 0x00 : 0x00; p[1] = inf ? 0x7c : 0x7e; }
    else p[0] = 0x7f;                                                             /* E4M3FN NaN */
    set_what(e, "'%s'[%llu] = %s", nm, (unsigned long long)idx, inf && strcmp(dt, "F8_E4M3") ? "Inf" : "NaN");
    e->invalid = (1u << C_VERIFY) | (1u << C_EVAL);
    json_decref(h);
    return o;
}

/* ---- token files, judged exactly (specifications.md §11.1) -------------------------- */

/* Windows of SEQ tokens the file holds, or -1 when §11.1 refuses it (with the
 * vocabulary VOCAB). */
static long u32_windows(const uint8_t *b, size_t n)
{
    if (n == 0 || n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t id = (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 | (uint32_t)b[i + 3] << 24;
        if (id >= VOCAB) return -1;
    }
    return (long)(n / 4 / SEQ);
}

static long jsonl_windows(const uint8_t *b, size_t n)
{
    long windows = 0, tokens = 0;
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && b[e] != '\n') e++;
        if (e < n) e++;                          /* the line with its newline, as getline gives it */
        size_t k = i;
        while (k < e && (b[k] == ' ' || b[k] == '\t' || b[k] == '\r' || b[k] == '\n')) k++;
        if (k < e) {
            json_error_t je;
            json_t *j = json_loadb((const char *)b + i, e - i, JSON_REJECT_DUPLICATES, &je);
            json_t *a = j && json_is_object(j) ? json_object_get(j, "input_ids") : j;
            if (!json_is_array(a)) { json_decref(j); return -1; }
            size_t len = json_array_size(a);
            for (size_t q = 0; q < len; q++) {
                json_t *v = json_array_get(a, q);
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0xffffffffll ||
                    json_integer_value(v) >= VOCAB) { json_decref(j); return -1; }
            }
            tokens += (long)len;
            windows += (long)(len / SEQ);
            json_decref(j);
        }
        i = e;
    }
    return tokens ? windows : -1;
}

static uint8_t *mutate_tokens(rng *r, int jsonl, const uint8_t *b, size_t n, size_t *out_n, expect *e)
{
    size_t cap = n * 2 + 4096, m = n;
    uint8_t *o = malloc(cap);
    memcpy(o, b, n);
    int rounds = 1 + (int)below(r, 2);
    for (int q = 0; q < rounds; q++) {
        if (!jsonl && below(r, 3) == 0 && m >= 4) {  /* one id set */
            size_t at = 4 * below(r, m / 4);
            uint32_t v = below(r, 2) ? (uint32_t)below(r, VOCAB + 8) : (uint32_t)next(r);
            for (int x = 0; x < 4; x++) o[at + (size_t)x] = (uint8_t)(v >> (8 * x));
            set_what(e, "id at byte %zu = %u", at, v);
        } else if (jsonl && below(r, 3) == 0) {     /* a line appended */
            static const char *lines[] = {"[1, 2, -1]\n", "[95, 96]\n", "[4294967296]\n", "[1.5]\n", "[\"3\"]\n",
                                          "{\"ids\": [1, 2]}\n", "{\"input_ids\": [1], \"input_ids\": [2]}\n",
                                          "   \n", "{\"input_ids\": []}\n", "[1, 2, 3, 4, 5, 6, 7, 8, 9]\n", "5\n",
                                          "[[1]]\n", "{\"input_ids\": [0, 1, 2, 3, 4, 5, 6, 7]}\r\n", "\t\n"};
            const char *l = lines[below(r, 14)];
            size_t ll = strlen(l);
            if (m + ll < cap) { memcpy(o + m, l, ll); m += ll; }
            set_what(e, "line %.40s appended", l);
        } else {
            byte_mutate(r, o, &m, cap, 0, m, e);
        }
    }
    *out_n = m;
    long w = jsonl ? jsonl_windows(o, m) : u32_windows(o, m);
    /* eval needs one window, quantize --samples of them; a refusal in the file is for both */
    if (w < 0) e->invalid = (1u << C_EVAL) | (1u << C_QUANT);
    else {
        if (w >= 1) e->valid |= 1u << C_EVAL; else e->invalid |= 1u << C_EVAL;
        if (w >= SAMPLES) e->valid |= 1u << C_QUANT; else e->invalid |= 1u << C_QUANT;
    }
    return o;
}

/* ---- tokenizer.json ------------------------------------------------------------- */

/* The two seed tokenizers: SentencePiece-style BPE (byte fallback, NFKC,
 * Replace, Metaspace, added tokens) and byte-level BPE (Split regex,
 * Digits, ByteLevel); the vocabularies are small and cover what the merges
 * need. */
static char *tokenizer_seed(int bytelevel)
{
    json_t *v = json_object(), *mg = json_array();
    int id = 0;
    if (!bytelevel) {
        const char *sp[] = {"<unk>", "<s>", "</s>"};
        for (int i = 0; i < 3; i++) json_object_set_new(v, sp[i], json_integer(id++));
        for (int b = 0; b < 256; b++) {
            char t[8];
            snprintf(t, sizeof t, "<0x%02X>", b);
            json_object_set_new(v, t, json_integer(id++));
        }
    }
    const char *sp_unit = bytelevel ? "\xC4\xA0" : "\xE2\x96\x81";      /* "Ġ" or "▁" */
    json_object_set_new(v, sp_unit, json_integer(id++));
    for (int c = 33; c < 127; c++) {
        char t[2] = {(char)c, 0};
        json_object_set_new(v, t, json_integer(id++));
    }
    const char *m[][2] = {{"t", "h"}, {"th", "e"}, {"", "the"}, {"a", "n"}, {"an", "d"}, {"", "and"}, {"o", "n"},
                          {"", "a"}, {"i", "n"}, {"", "in"}, {"1", "2"}, {"e", "r"}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        char *a = m[i][0][0] ? strdup(m[i][0]) : strdup(sp_unit), *b = strdup(m[i][1]);
        char *ab = fmt("%s%s", a, b);
        if (!json_object_get(v, ab)) json_object_set_new(v, ab, json_integer(id++));
        json_array_append_new(mg, json_pack("[s, s]", a, b));
        free(a); free(b); free(ab);
    }
    json_t *model = json_pack("{s:s, s:o, s:o, s:b, s:b}", "type", "BPE", "vocab", v, "merges", mg, "byte_fallback",
                              !bytelevel, "fuse_unk", !bytelevel);
    if (!bytelevel) json_object_set_new(model, "unk_token", json_string("<unk>"));
    json_t *added = json_pack("[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}, {s:i, s:s, s:b, s:b, s:b, s:b, s:b}]",
                              "id", bytelevel ? id : 1, "content", bytelevel ? "<|end|>" : "<s>", "special", 1, "normalized", 0,
                              "lstrip", 0, "rstrip", 0, "single_word", 0,
                              "id", bytelevel ? id + 1 : 2, "content", bytelevel ? "[tool]" : "</s>", "special", 1,
                              "normalized", bytelevel, "lstrip", bytelevel, "rstrip", bytelevel, "single_word", 0);
    json_t *root = json_pack("{s:s, s:o, s:o}", "version", "1.0", "added_tokens", added, "model", model);
    if (bytelevel) {
        json_object_set_new(root, "normalizer", json_null());
        json_object_set_new(root, "pre_tokenizer", json_pack(
            "{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence", "pretokenizers",
            "type", "Split", "pattern", "Regex", "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s+(?!\\S)|\\s+",
            "behavior", "Isolated", "invert", 0, "type", "Digits", "individual_digits", 1,
            "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0));
    } else {
        json_object_set_new(root, "normalizer", json_pack("{s:s, s:[{s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                                                          "normalizers", "type", "NFKC", "type", "Replace", "pattern",
                                                          "Regex", "\\s{3,}", "content", "  "));
        json_object_set_new(root, "pre_tokenizer", json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                                             "\xE2\x96\x81", "prepend_scheme", "first", "split", 1));
    }
    char *t = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return t;
}

static json_t *odd_value(rng *r)
{
    static const char *const strs[] = {"", "(", "[", "\\p{Zzz}", "(?<=a+)b", "a{99999}", "(a*)*$", "\\", "WordPiece", "Unigram",
                                       "BPE", "Split", "ByteLevel", "Metaspace", "Sequence", "Isolated", "Removed",
                                       "MergedWithNext", "Contiguous", "first", "always", "never", "\xE2\x96\x81", "<0x41>",
                                       "a b", "a  b", "x y z"};
    switch (below(r, 8)) {
    case 0: return json_integer(-1);
    case 1: return json_integer((json_int_t)1 << 40);
    case 2: return json_integer((json_int_t)below(r, 400));
    case 3: return json_null();
    case 4: return json_true();
    case 5: return json_array();
    case 6: return json_object();
    default: return json_string(strs[below(r, sizeof strs / sizeof strs[0])]);
    }
}

/* A mutated tokenizer.json (or, text = 1, a mutated text to tokenize). */
static uint8_t *mutate_tokenizer(rng *r, const uint8_t *b, size_t n, size_t *out_n, expect *e, int text)
{
    size_t cap = n + 128;
    uint8_t *o = malloc(cap);
    memcpy(o, b, n);
    *out_n = n;
    if (text || below(r, 3) == 0) {
        int k = 1 + (int)below(r, 4);
        for (int i = 0; i < k; i++) byte_mutate(r, o, out_n, cap, 0, *out_n, e);
        return o;
    }
    free(o);
    json_error_t je;
    json_t *j = json_loadb((const char *)b, n, 0, &je);
    if (!j) die("tokenizer seed does not parse: %s", je.text);
    json_t *parent = NULL;
    char key[256] = "";
    size_t index = 0;
    json_t *m = random_member(r, j, &parent, key, sizeof key, &index);
    if (below(r, 6) == 0) {
        const char *t = below(r, 2) ? "WordPiece" : "Unigram";
        json_object_set_new(json_object_get(j, "model"), "type", json_string(t));
        set_what(e, "model type %s", t);
        e->invalid = 1u << C_TOKENIZE;
    } else if (m && parent) {
        int del = below(r, 4) == 0;
        json_t *v = del ? NULL : odd_value(r);
        char *vt = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        set_what(e, "member \"%s\"[%zu] %s%s", key, index, del ? "deleted" : "= ", vt ? vt : "");
        free(vt);
        if (json_is_object(parent)) {
            if (del) json_object_del(parent, key);
            else json_object_set_new(parent, key, v);
        } else {
            if (del) json_array_remove(parent, index);
            else json_array_set_new(parent, index, v);
        }
    } else {
        set_what(e, "unchanged");
    }
    char *t = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(j);
    *out_n = strlen(t);
    o = (uint8_t *)t;
    return o;
}

/* ---- one case ------------------------------------------------------------------------- */

typedef struct record {                          /* one case's outcome, parent <- child (< PIPE_BUF) */
    long iter;
    int kind, cmd, code, finding;
    double seconds;
    char reason[240];
} record;

/* Links every file of seed folder src into dst (created). */
static void link_folder(const char *src, const char *dst)
{
    if (mkdir(dst, 0755) != 0) die("%s: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d) die("%s: %s", src, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *a = fmt("%s/%s", src, e->d_name), *b = fmt("%s/%s", dst, e->d_name);
        if (link(a, b) != 0) die("link %s: %s", a, strerror(errno));
        free(a);
        free(b);
    }
    closedir(d);
}

static int grep_file(const char *path, const char *needle)
{
    size_t n;
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size > (64 << 20)) return 0;
    uint8_t *b = read_file(path, &n);
    int hit = memmem(b, n, needle, strlen(needle)) != NULL;
    free(b);
    return hit;
}

static int sanitizer_report(const char *err)
{
    return grep_file(err, "ERROR: AddressSanitizer") || grep_file(err, "ERROR: LeakSanitizer") ||
           grep_file(err, "runtime error:") || grep_file(err, "ThreadSanitizer") || grep_file(err, "SUMMARY: ");
}

/* Saves case folder cd and what happened under the report folder. */
static void save_finding(long iter, const char *cd, const char *cmd, const char *reason, const expect *e)
{
    char *dst = fmt("%s/finding-%06ld", O.report, iter);
    rm_rf(dst);
    char *c = fmt("mkdir -p '%s' && cp -r '%s'/. '%s'/", O.report, cd, dst);
    if (system(c) != 0) fprintf(stderr, "fuzz: warning: could not save %s\n", dst);
    free(c);
    char *p = fmt("%s/FINDING.txt", dst);
    FILE *fp = fopen(p, "w");
    if (fp) {
        fprintf(fp, "case %ld (fuzz --seed %llu --only %ld)\nreason: %s\nmutation: %s\ncommand: %s\n"
                    "(stdout.txt and stderr.txt are the command's; the input files are as it saw them)\n",
                iter, (unsigned long long)O.seed, iter, reason, e->what, cmd);
        fclose(fp);
    }
    free(p);
    free(dst);
}

static const int kind_weight[K_N] = {28, 12, 24, 8, 8, 8, 12, 10};

static void one_case(long iter, record *rec)
{
    rng r = {O.seed ^ ((uint64_t)iter * 0xd1342543de82ef95ull)};
    next(&r);
    memset(rec, 0, sizeof *rec);
    rec->iter = iter;
    int tot = 0;
    for (int k = 0; k < K_N; k++) tot += kind_weight[k];
    int pick = (int)below(&r, (uint64_t)tot), kind = 0;
    while (pick >= kind_weight[kind]) pick -= kind_weight[kind++];
    rec->kind = kind;
    char *cd = fmt("%s/case-%ld", O.work, iter);
    rm_rf(cd);
    if (mkdir(cd, 0755) != 0) die("%s: %s", cd, strerror(errno));
    char *m = fmt("%s/m", cd), *tok = NULL, *lin = NULL;
    expect e = {0, 0, ""};
    int si;
    do si = (int)below(&r, NSEED);
    while ((kind == K_INDEX && !seeds[si].has_index) || ((kind == K_U32 || kind == K_JSONL) && seeds[si].quantized && below(&r, 2)));
    const seed *s = &seeds[si];
    int cmd;
    int tks = (int)below(&r, 2);                 /* K_TOKJSON: which tokenizer seed */
    if (kind == K_TOKJSON) cmd = C_TOKENIZE;
    else if (kind == K_LAYER) cmd = C_LAYER;
    else if (kind == K_U32 || kind == K_JSONL) cmd = s->quantized || below(&r, 2) ? C_EVAL : C_QUANT;
    else if (kind == K_DATA) cmd = below(&r, 2) ? C_VERIFY : C_EVAL;
    else {
        static const int w[] = {18, 26, 26, 20, 10};
        do {
            int q = (int)below(&r, 100), c = 0;
            while (q >= w[c]) q -= w[c++];
            cmd = c;
        } while (s->quantized && (cmd == C_QUANT || cmd == C_PLAN));
    }
    rec->cmd = cmd;
    link_folder(kind == K_TOKJSON ? tk_seed[tks] : s->dir, m);
    tok = kind == K_TOKJSON ? fmt("%s/text.txt", cd)
                            : fmt("%s/tok%s", cd, kind == K_JSONL || (kind != K_U32 && below(&r, 4) == 0) ? ".jsonl" : ".u32");
    {
        const char *src = kind == K_TOKJSON ? tk_text : strstr(tok, ".jsonl") ? tok_jsonl : tok_u32;
        if (link(src, tok) != 0) die("link %s: %s", src, strerror(errno));
    }
    lin = fmt("%s/layer.safetensors", cd);
    if (link(below(&r, 2) ? layer_h : layer_x, lin) != 0) die("link layer seed: %s", strerror(errno));
    /* the file to mutate */
    char *target = NULL;
    if (kind == K_CONFIG) target = fmt("%s/config.json", m);
    else if (kind == K_INDEX) target = fmt("%s/model.safetensors.index.json", m);
    else if (kind == K_U32 || kind == K_JSONL) target = strdup(tok);
    else if (kind == K_LAYER) target = strdup(lin);
    else if (kind == K_TOKJSON) target = below(&r, 4) == 0 ? strdup(tok) : fmt("%s/tokenizer.json", m);
    else {
        DIR *d = opendir(m);
        char *sh[16];
        int ns = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL && ns < 16) {
            size_t l = strlen(de->d_name);
            if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) sh[ns++] = strdup(de->d_name);
        }
        closedir(d);
        for (int i = 1; i < ns; i++)                     /* readdir order is not stable: sort */
            for (int j = i; j > 0 && strcmp(sh[j - 1], sh[j]) > 0; j--) { char *x = sh[j]; sh[j] = sh[j - 1]; sh[j - 1] = x; }
        int q = (int)below(&r, (uint64_t)ns);
        target = fmt("%s/%s", m, sh[q]);
        for (int i = 0; i < ns; i++) free(sh[i]);
    }
    size_t n, on = 0;
    uint8_t *b = read_file(target, &n), *o = NULL;
    unsigned model_cmds = s->quantized ? ((1u << C_INSPECT) | (1u << C_VERIFY) | (1u << C_EVAL)) : ALL_MODEL;
    switch (kind) {
    case K_CONFIG: o = mutate_config(&r, s, b, n, &on, &e); break;
    case K_INDEX: o = mutate_index(&r, s, b, n, &on, &e); break;
    case K_HEADER: o = mutate_header(&r, b, n, s->has_index, s->quantized, &on, &e, model_cmds); break;
    case K_DATA: o = mutate_data(&r, s, b, n, &on, &e); break;
    case K_U32: o = mutate_tokens(&r, 0, b, n, &on, &e); break;
    case K_JSONL: o = mutate_tokens(&r, 1, b, n, &on, &e); break;
    case K_TOKJSON:
        o = mutate_tokenizer(&r, b, n, &on, &e, target[strlen(target) - 1] == 't');
        if (target[strlen(target) - 1] == 't' && tks == 0 && on > 0) e.valid = 1u << C_TOKENIZE;   /* byte fallback: any text has ids */
        break;
    default: {
        if (below(&r, 5) == 0) {                         /* a NaN / Inf in weight, hessian or inputs: §5 */
            json_t *h = NULL;
            if (!st_check(b, n, &h)) die("layer seed fails the checker");
            const char *nm = below(&r, 2) ? "weight" : json_object_get(h, "hessian") ? "hessian" : "inputs";
            json_t *t = json_object_get(h, nm);
            const char *dt = json_string_value(json_object_get(t, "dtype"));
            uint64_t bb = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
            uint64_t ee = (uint64_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 1));
            int isz = dtype_size(dt);
            uint64_t idx = below(&r, (ee - bb) / (uint64_t)isz);
            o = malloc(n + 1);
            memcpy(o, b, n);
            on = n;
            uint8_t *p = o + 8 + le64(b) + bb + idx * (uint64_t)isz;
            if (below(&r, 3) == 0) {                     /* finite, the largest: may overflow, never crash */
                if (isz == 4) { uint32_t v = 0x7f7fffffu; memcpy(p, &v, 4); }
                else { p[0] = 0x7f; p[1] = 0x7f; }
                set_what(&e, "%s[%llu] the largest finite value", nm, (unsigned long long)idx);
            } else {
                if (isz == 4) { uint32_t v = below(&r, 2) ? 0x7f800000u : 0xffc00000u; memcpy(p, &v, 4); }
                else { p[0] = 0xc0; p[1] = 0x7f; }
                set_what(&e, "%s[%llu] non-finite", nm, (unsigned long long)idx);
                e.invalid = 1u << C_LAYER;
            }
            json_decref(h);
            break;
        }
        o = mutate_header(&r, b, n, 0, 0, &on, &e, 1u << C_LAYER);
        /* st_check sees the file; `layer`'s own rules: weight, exactly one of
         * hessian / inputs, float dtypes, 2-D shapes that fit each other */
        json_t *h = NULL;
        if (!(e.invalid & (1u << C_LAYER)) && st_check(o, on, &h)) {
            json_t *w = json_object_get(h, "weight"), *hh = json_object_get(h, "hessian"), *x = json_object_get(h, "inputs");
            int bad = !w || !hh == !x;
            json_t *src = hh ? hh : x;
            const char *fl[] = {"F32", "F16", "BF16", "F8_E4M3"};
            for (int q = 0; !bad && q < 2; q++) {
                json_t *t = q ? src : w, *sh = json_object_get(t, "shape");
                const char *dt = json_string_value(json_object_get(t, "dtype"));
                int okd = 0;
                for (int z = 0; z < 4; z++) okd |= !strcmp(dt, fl[z]);
                if (!okd || json_array_size(sh) != 2 || json_integer_value(json_array_get(sh, 0)) < 1 ||
                    json_integer_value(json_array_get(sh, 1)) < 1)
                    bad = 1;
            }
            if (!bad) {
                json_int_t wc = json_integer_value(json_array_get(json_object_get(w, "shape"), 1));
                json_t *ss = json_object_get(src, "shape");
                if (hh && (json_integer_value(json_array_get(ss, 0)) != wc || json_integer_value(json_array_get(ss, 1)) != wc)) bad = 1;
                if (x && json_integer_value(json_array_get(ss, 1)) != wc) bad = 1;
            }
            if (bad) e.invalid = 1u << C_LAYER;
        }
        json_decref(h);
        break;
    }
    }
    write_file(target, o, on);
    free(b);
    free(o);
    /* run it */
    cmdline c;
    build_cmd(&c, cmd, m, tok, lin, cd, &r);
    if (cmd == C_PLAN && strstr(c.v[3], "config.json"))
        e.invalid &= ~(1u << C_PLAN);            /* from config.json alone plan cannot see the tensors */
    char *po = fmt("%s/stdout.txt", cd), *pe = fmt("%s/stderr.txt", cd);
    char *before = listing(m);
    result res = run(c.v, po, pe, O.timeout);
    rec->code = res.code;
    rec->seconds = res.seconds;
    char reason[240] = "";
    if (res.code == -1) snprintf(reason, sizeof reason, "hang: still running after %d s", O.timeout);
    else if (res.code >= 1000) snprintf(reason, sizeof reason, "killed by signal %d", res.code - 1000);
    else if (res.code == EXIT_ASAN || res.code == EXIT_UBSAN || sanitizer_report(pe))
        snprintf(reason, sizeof reason, "sanitizer report (exit %d)", res.code);
    else if (res.code != 0 && res.code != 1 && res.code != 2)
        snprintf(reason, sizeof reason, "exit %d (only 0, 1, 2 are allowed)", res.code);
    else if (res.code == 1) snprintf(reason, sizeof reason, "exit 1 on a mutated input file (bad input is 2)");
    else if (res.code == 0 && (e.invalid & (1u << cmd)))
        snprintf(reason, sizeof reason, "exit 0 on an input known to be invalid");
    else if (res.code == 2 && (e.valid & (1u << cmd)))
        snprintf(reason, sizeof reason, "exit 2 on an input known to be valid");
    else if (res.code == 2 && !grep_file(pe, "forge-stream: error: "))
        snprintf(reason, sizeof reason, "exit 2 without a 'forge-stream: error:' line");
    if (!reason[0] && res.code != 0 && c.out) {         /* nothing of the output, temporary names included */
        DIR *d = opendir(cd);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL)
            if ((cmd == C_QUANT && !strncmp(de->d_name, "out", 3)) || (cmd == C_LAYER && !strncmp(de->d_name, "lout", 4)) ||
                (cmd == C_TOKENIZE && !strncmp(de->d_name, "tout", 4)))
                snprintf(reason, sizeof reason, "exit %d and %.100s left in the case folder", res.code, de->d_name);
        if (d) closedir(d);
    }
    char *after = listing(m);
    if (!reason[0] && strcmp(before, after)) snprintf(reason, sizeof reason, "the model folder changed");
    free(before);
    free(after);
    if (!reason[0] && res.code == 0) {                   /* the output must hold up */
        if (cmd == C_QUANT) {
            cmdline v = {{0}, 0, NULL};
            add(&v, O.bin); add(&v, "inspect"); add(&v, c.out); add(&v, "--verify");
            char *vo = fmt("%s/verify-stdout.txt", cd), *ve = fmt("%s/verify-stderr.txt", cd);
            result vr = run(v.v, vo, ve, O.timeout);
            if (vr.code != 0) snprintf(reason, sizeof reason, "quantize exit 0, but inspect --verify of its --out exits %d", vr.code);
            free_cmd(&v);
            free(vo);
            free(ve);
        } else if (cmd == C_EVAL) {
            size_t sn;
            uint8_t *sb = read_file(po, &sn);
            double ppl = NAN;
            char *at = strstr((char *)sb, "PPL ");
            if (!at || sscanf(at + 4, "%lf", &ppl) != 1 || !isfinite(ppl))
                snprintf(reason, sizeof reason, "eval exit 0 without a finite PPL: %.80s", (char *)sb);
            free(sb);
        } else if (cmd == C_TOKENIZE) {
            struct stat st;
            if (stat(c.out, &st) != 0 || st.st_size == 0 || st.st_size % 4)
                snprintf(reason, sizeof reason, "tokenize exit 0 without a non-empty .u32 --out");
        } else if (cmd == C_LAYER) {
            json_error_t je;
            json_t *rep = json_load_file(po, 0, &je);
            json_t *loss = json_object_get(rep, "loss");
            size_t ln;
            uint8_t *lb = exists(c.out) ? read_file(c.out, &ln) : NULL;
            if (!rep || !json_is_number(loss) || !isfinite(json_number_value(loss)))
                snprintf(reason, sizeof reason, "layer exit 0 without a report of finite loss");
            else if (!lb || !st_check(lb, ln, NULL))
                snprintf(reason, sizeof reason, "layer exit 0 but its --out is not a valid safetensors file");
            free(lb);
            json_decref(rep);
        }
    }
    if (reason[0]) {
        rec->finding = 1;
        snprintf(rec->reason, sizeof rec->reason, "%s", reason);
        char *ct = cmd_text(&c);
        save_finding(iter, cd, ct, reason, &e);
        free(ct);
    }
    free_cmd(&c);
    free(po);
    free(pe);
    free(target);
    free(tok);
    free(lin);
    free(m);
    rm_rf(cd);
    free(cd);
}

/* ---- seeds, once ------------------------------------------------------------------------- */

static void make_seeds(void)
{
    char *sd = fmt("%s/seeds", O.work);
    rm_rf(sd);
    if (mkdir(sd, 0755) != 0) die("%s: %s", sd, strerror(errno));
    for (int i = 0; i < NSEED; i++) {
        seed *s = &seeds[i];
        snprintf(s->dir, sizeof s->dir, "%s/%s", sd, s->name);
        char *c;
        if (s->gen) c = fmt("'%s' --out '%s' %s > /dev/null", O.gen, s->dir, s->gen);
        else c = fmt("OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 '%s' quantize --model '%s' --out '%s' --quiet %s",
                     O.bin, seeds[s->from].dir, s->dir, s->quant);
        if (system(c) != 0) die("making seed %s failed: %s", s->name, c);
        free(c);
        char *cfg = fmt("%s/config.json", s->dir), *idx = fmt("%s/model.safetensors.index.json", s->dir);
        json_error_t je;
        json_t *j = json_load_file(cfg, 0, &je);
        if (!j) die("%s: %s", cfg, je.text);
        snprintf(s->family, sizeof s->family, "%s", json_string_value(json_object_get(j, "model_type")));
        s->layers = (int)json_integer_value(json_object_get(j, "num_hidden_layers"));
        s->quantized = json_object_get(j, "quantization_config") &&
                       strcmp(json_string_value(json_object_get(json_object_get(j, "quantization_config"), "quant_method")), "fp8");
        s->has_index = exists(idx);
        json_decref(j);
        free(cfg);
        free(idx);
    }
    tok_u32 = fmt("%s/tok.u32", sd);
    tok_jsonl = fmt("%s/tok.jsonl", sd);
    layer_h = fmt("%s/layer-hessian.safetensors", sd);
    layer_x = fmt("%s/layer-inputs.safetensors", sd);
    uint8_t u[4 * NTOK];
    for (int i = 0; i < NTOK; i++) {
        uint32_t id = (uint32_t)(i * 37 + 5) % VOCAB;
        for (int q = 0; q < 4; q++) u[4 * i + q] = (uint8_t)(id >> (8 * q));
    }
    write_file(tok_u32, u, sizeof u);
    const char *jl = "[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 65, 69, 73, 77]\n"
                     "{\"input_ids\": [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34]}\n"
                     "\n"
                     "[95, 94, 93, 92, 91, 90, 89, 88, 87, 86, 85, 84, 83, 82, 81, 80, 79, 78, 77, 76, 75, 74, 73, 72]\n";
    write_file(tok_jsonl, jl, strlen(jl));
    make_layer_seeds();
    for (int k = 0; k < 2; k++) {
        tk_seed[k] = fmt("%s/tok-%s", sd, k ? "bytelevel" : "sentencepiece");
        if (mkdir(tk_seed[k], 0755) != 0) die("%s: %s", tk_seed[k], strerror(errno));
        char *t = tokenizer_seed(k), *p = fmt("%s/tokenizer.json", tk_seed[k]);
        write_file(p, t, strlen(t));
        free(t);
        free(p);
    }
    char *cfgp = fmt("%s/tokenizer_config.json", tk_seed[0]);
    const char *cfg = "{\"add_bos_token\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}\n";
    write_file(cfgp, cfg, strlen(cfg));
    free(cfgp);
    tk_text = fmt("%s/text.txt", sd);
    const char *txt = "The cat and the dog ran in 12 rooms.  Then  they   slept.\n<s> 123456 caf\xC3\xA9 \xEF\xAC\x81ne "
                      "\xE6\x88\x91\xE7\x88\xB1 \xF0\x9F\x91\x8B [tool] <|end|>\tit's over\r\n\x80 end";
    write_file(tk_text, txt, strlen(txt));
    free(sd);
}

/* Every seed passes the commands it is fuzzed with; otherwise the mutations test nothing. */
static void check_seeds(void)
{
    char *cd = fmt("%s/seed-check", O.work);
    for (int k = 0; k < 2; k++) {                /* the tokenizer seeds */
        rm_rf(cd);
        mkdir(cd, 0755);
        rng r = {7};
        cmdline c;
        build_cmd(&c, C_TOKENIZE, tk_seed[k], tk_text, layer_h, cd, &r);
        char *po = fmt("%s/o", cd), *pe = fmt("%s/e", cd);
        result res = run(c.v, po, pe, O.timeout * 4);
        if (res.code != 0) die("tokenizer seed %s fails tokenize (exit %d)", tk_seed[k], res.code);
        free_cmd(&c);
        free(po);
        free(pe);
    }
    for (int i = 0; i < NSEED; i++)
        for (int cmd = 0; cmd < C_N; cmd++) {
            if (cmd == C_LAYER || cmd == C_TOKENIZE || (seeds[i].quantized && (cmd == C_QUANT || cmd == C_PLAN))) continue;
            for (int t = 0; t < (cmd == C_EVAL || cmd == C_QUANT ? 2 : 1); t++) {
                rm_rf(cd);
                mkdir(cd, 0755);
                rng r = {7};
                cmdline c;
                build_cmd(&c, cmd, seeds[i].dir, t ? tok_jsonl : tok_u32, layer_h, cd, &r);
                char *po = fmt("%s/o", cd), *pe = fmt("%s/e", cd);
                result res = run(c.v, po, pe, O.timeout * 4);
                if (res.code != 0) {
                    size_t n;
                    uint8_t *eb = read_file(pe, &n);
                    die("seed %s fails %s (exit %d): %.400s", seeds[i].name, cmd_name[cmd], res.code, (char *)eb);
                }
                free_cmd(&c);
                free(po);
                free(pe);
            }
        }
    for (int t = 0; t < 2; t++) {
        rm_rf(cd);
        mkdir(cd, 0755);
        rng r = {7};
        cmdline c;
        build_cmd(&c, C_LAYER, NULL, NULL, t ? layer_x : layer_h, cd, &r);
        char *po = fmt("%s/o", cd), *pe = fmt("%s/e", cd);
        result res = run(c.v, po, pe, O.timeout * 4);
        if (res.code != 0) die("layer seed %d fails (exit %d)", t, res.code);
        free_cmd(&c);
        free(po);
        free(pe);
    }
    rm_rf(cd);
    free(cd);
}

/* ---- main: a pool of --jobs children, one case each ------------------------------------------ */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) { O.quiet = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            puts("usage: fuzz --bin BIN --gen-tiny GEN --work DIR [--n 10000] [--jobs 3] [--seed S] [--report DIR]\n"
                 "            [--timeout 30] [--only I] [--quiet]   (see the comment at the top of tools/fuzz.c)");
            return 0;
        }
        if (!v) die("%s: missing value", a);
        i++;
        char *end = NULL;
        if (!strcmp(a, "--bin")) O.bin = v;
        else if (!strcmp(a, "--gen-tiny")) O.gen = v;
        else if (!strcmp(a, "--work")) O.work = v;
        else if (!strcmp(a, "--report")) O.report = v;
        else if (!strcmp(a, "--n")) { O.n = strtol(v, &end, 10); if (*end || O.n < 1) die("--n %s", v); }
        else if (!strcmp(a, "--only")) { O.only = strtol(v, &end, 10); if (*end || O.only < 0) die("--only %s", v); }
        else if (!strcmp(a, "--jobs")) { O.jobs = (int)strtol(v, &end, 10); if (*end || O.jobs < 1 || O.jobs > 64) die("--jobs %s", v); }
        else if (!strcmp(a, "--timeout")) { O.timeout = (int)strtol(v, &end, 10); if (*end || O.timeout < 1) die("--timeout %s", v); }
        else if (!strcmp(a, "--seed")) { O.seed = strtoull(v, &end, 0); if (*end) die("--seed %s", v); }
        else die("unknown flag %s", a);
    }
    if (!O.bin || !O.gen || !O.work) die("--bin, --gen-tiny and --work are required");
    char *absb = realpath(O.bin, NULL), *absg = realpath(O.gen, NULL);
    if (!absb || !absg) die("--bin / --gen-tiny: %s", strerror(errno));
    O.bin = absb;
    O.gen = absg;
    mkdir(O.work, 0755);
    char *absw = realpath(O.work, NULL);
    if (!absw) die("--work %s: %s", O.work, strerror(errno));
    O.work = absw;
    if (!O.report) O.report = fmt("%s/report", O.work);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    make_seeds();
    check_seeds();
    long first = O.only >= 0 ? O.only : 0, last = O.only >= 0 ? O.only + 1 : O.n;
    int fd[2];
    if (pipe(fd) != 0) die("pipe: %s", strerror(errno));
    long runs[K_N][C_N] = {{0}}, exits[4] = {0}, findings = 0, done = 0, hangs = 0, signals = 0;
    double slowest = 0;
    int running = 0;
    long nexti = first;
    while (nexti < last || running > 0) {
        while (running < O.jobs && nexti < last) {
            pid_t p = fork();
            if (p < 0) die("fork: %s", strerror(errno));
            if (p == 0) {
                close(fd[0]);
                record rec;
                one_case(nexti, &rec);
                if (write(fd[1], &rec, sizeof rec) != (ssize_t)sizeof rec) _exit(3);
                _exit(0);
            }
            running++;
            nexti++;
        }
        record rec;
        ssize_t got = read(fd[0], &rec, sizeof rec);
        if (got != (ssize_t)sizeof rec) die("a case process died without a record");
        int st;
        wait(&st);
        running--;
        done++;
        runs[rec.kind][rec.cmd]++;
        if (rec.code == -1) hangs++;
        else if (rec.code >= 1000) signals++;
        else exits[rec.code <= 2 ? rec.code : 3]++;
        if (rec.seconds > slowest) slowest = rec.seconds;
        if (rec.finding) {
            findings++;
            fprintf(stderr, "fuzz: FINDING case %ld (%s, %s): %s -> %s/finding-%06ld\n", rec.iter, kind_name[rec.kind],
                    cmd_name[rec.cmd], rec.reason, O.report, rec.iter);
        }
        if (!O.quiet && done % 500 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            fprintf(stderr, "fuzz: %ld of %ld cases, %ld findings, %.0f s\n", done, last - first, findings,
                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("fuzz: %ld mutated inputs through %s (seed %llu, %d at a time, %d s limit each)\n", done, O.bin,
           (unsigned long long)O.seed, O.jobs, O.timeout);
    printf("%-20s", "inputs by kind");
    for (int c = 0; c < C_N; c++) printf(" %16s", cmd_name[c]);
    printf(" %8s\n", "total");
    for (int k = 0; k < K_N; k++) {
        long t = 0;
        printf("%-20s", kind_name[k]);
        for (int c = 0; c < C_N; c++) { printf(" %16ld", runs[k][c]); t += runs[k][c]; }
        printf(" %8ld\n", t);
    }
    printf("exits: 0: %ld, 1: %ld, 2: %ld, other: %ld, signals: %ld, hangs: %ld; slowest case %.1f s\n", exits[0],
           exits[1], exits[2], exits[3], signals, hangs, slowest);
    printf("findings: %ld%s%s\n", findings, findings ? ", saved under " : "", findings ? O.report : "");
    printf("wall time: %.1f s\n", wall);
    return findings ? 1 : 0;
}
