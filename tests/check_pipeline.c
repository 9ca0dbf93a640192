/* check_pipeline.c: the quantize pipeline and eval on dense models.
 *  - the Hessians the pipeline captures equal those of a naive forward written
 *    here in double (RMSNorm, llama3 RoPE, GQA causal attention, SwiGLU) that
 *    uses the quantized weights read back from the output checkpoint: so the
 *    capture is true-sequential;
 *  - every quantized linear's loss is below its RTN loss; both formats decode
 *    back to the solver's dequant, for llama, mistral, qwen2 and qwen3;
 *  - eval of the real stories260K reproduces the reference perplexity;
 *  - bad calibration input is refused before anything is written. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/record.h"
#include "tests/util.h"
#include "src/backend/backend.h"
#include "src/pipeline/pipeline.h"
#include "stream/actcache.h"

#define HESS_REL 1e-4    /* f32 pipeline vs double naive forward, Frobenius relative */
#define PPL_REL 1e-3     /* ../shared/data/README.md: 0.1% */
#define REF_PPL 119.19
#define REF_NLL 4.78068

static int gen(const char *type, const char *dir, const char *extra)
{
    return t_gen_tiny(dir, "--type %s --shards 2 %s", type, extra);
}

/* ---- a naive forward in double ------------------------------------------- */

START_TEST(hessians_match_naive_forward)
{
    char *tmp = t_tmpdir(), src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/out", tmp);
    int g = gen("llama", src, "--dtype f32");
    if (g < 0) { printf("check_pipeline: FS_GEN_TINY unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    const int64_t nseq = 5, T = 24, n = nseq * T;
    uint32_t ids[5 * 24];
    t_rng rg = {5};
    for (int i = 0; i < n; i++) ids[i] = t_next(&rg) % 90;
    t_rec r;
    memset(&r, 0, sizeof r);
    t_run_pipeline(src, dst, FS_FMT_FORGE, nseq, T, ids, &r, NULL, FS_EXPERT_ALL_TOKENS, 0, NULL);

    /* the model: config values read here from config.json */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = NULL, *q = NULL;
    ck_assert_int_eq(fs_ckpt_open(&ctx, src, &c), FS_OK);
    ck_assert_int_eq(fs_ckpt_open(&ctx, dst, &q), FS_OK);
    fs_qinfo qi;
    ck_assert_int_eq(fs_qinfo_from_config(&ctx, q->config, &qi), FS_OK);
    json_t *cfg = c->config, *rs = json_object_get(cfg, "rope_scaling");
    const int64_t H = json_integer_value(json_object_get(cfg, "hidden_size"));
    const int64_t nh = json_integer_value(json_object_get(cfg, "num_attention_heads"));
    const int64_t nkv = json_integer_value(json_object_get(cfg, "num_key_value_heads"));
    const int64_t hd = json_integer_value(json_object_get(cfg, "head_dim"));
    const double eps = json_number_value(json_object_get(cfg, "rms_norm_eps"));
    const double theta = json_number_value(json_object_get(cfg, "rope_theta"));
    double inv[64];
    for (int64_t i = 0; i < hd / 2; i++) {
        inv[i] = pow(theta, -2.0 * i / hd);
        if (rs && !strcmp(json_string_value(json_object_get(rs, "rope_type")), "llama3")) {
            double fac = json_number_value(json_object_get(rs, "factor"));
            double lo = json_number_value(json_object_get(rs, "low_freq_factor"));
            double hi = json_number_value(json_object_get(rs, "high_freq_factor"));
            double L = json_number_value(json_object_get(rs, "original_max_position_embeddings"));
            double wl = 2 * M_PI / inv[i];
            if (wl > L / lo) inv[i] /= fac;
            else if (wl >= L / hi) {
                double s = (L / wl - lo) / (hi - lo);
                inv[i] = (1 - s) * inv[i] / fac + s * inv[i];
            }
        }
    }
    double *E = t_read_tensor(c, "model.embed_tokens.weight", NULL);
    double *x = malloc(sizeof(double) * n * H), *xn = malloc(sizeof(double) * n * H);
    for (int64_t t = 0; t < n; t++) memcpy(x + t * H, E + ids[t] * H, sizeof(double) * H);
    double *win = t_read_tensor(c, "model.layers.0.input_layernorm.weight", NULL);
    double *wpost = t_read_tensor(c, "model.layers.0.post_attention_layernorm.weight", NULL);
    t_rmsnorm(x, win, n, H, eps, xn);
    double rel = t_hess_rel(t_rec_H(&r, "model.layers.0.self_attn.q_proj"), xn, n, H);
    ck_assert_msg(rel < HESS_REL, "q/k/v Hessian off by %g", rel);
    int64_t o1, i1;
    double *Wq = t_read_linear(q, &qi, "model.layers.0.self_attn.q_proj", &o1, &i1);
    double *Wk = t_read_linear(q, &qi, "model.layers.0.self_attn.k_proj", &o1, &i1);
    double *Wv = t_read_linear(q, &qi, "model.layers.0.self_attn.v_proj", &o1, &i1);
    double *Q = malloc(sizeof(double) * n * nh * hd), *K = malloc(sizeof(double) * n * nkv * hd);
    double *V = malloc(sizeof(double) * n * nkv * hd), *A = calloc(n * nh * hd, sizeof(double));
    t_lin(xn, Wq, NULL, n, H, nh * hd, Q);
    t_lin(xn, Wk, NULL, n, H, nkv * hd, K);
    t_lin(xn, Wv, NULL, n, H, nkv * hd, V);
    for (int64_t t = 0; t < n; t++) {             /* rotate half */
        int64_t p = t % T;
        for (int64_t h = 0; h < nh + nkv; h++) {
            double *v = h < nh ? Q + t * nh * hd + h * hd : K + t * nkv * hd + (h - nh) * hd;
            for (int64_t i = 0; i < hd / 2; i++) {
                double a = v[i], b = v[i + hd / 2], cs = cos(p * inv[i]), sn = sin(p * inv[i]);
                v[i] = a * cs - b * sn;
                v[i + hd / 2] = b * cs + a * sn;
            }
        }
    }
    for (int64_t s = 0; s < nseq; s++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t kh = h / (nh / nkv);
            for (int64_t i = 0; i < T; i++) {
                double sc[64], mx = -1e300, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++)
                        d += Q[(s * T + i) * nh * hd + h * hd + e] * K[(s * T + j) * nkv * hd + kh * hd + e];
                    sc[j] = d / sqrt((double)hd);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j <= i; j++) { sc[j] = exp(sc[j] - mx); sum += sc[j]; }
                for (int64_t j = 0; j <= i; j++)
                    for (int64_t e = 0; e < hd; e++)
                        A[(s * T + i) * nh * hd + h * hd + e] += sc[j] / sum * V[(s * T + j) * nkv * hd + kh * hd + e];
            }
        }
    rel = t_hess_rel(t_rec_H(&r, "model.layers.0.self_attn.o_proj"), A, n, nh * hd);
    ck_assert_msg(rel < HESS_REL, "o_proj Hessian off by %g", rel);
    double *Wo = t_read_linear(q, &qi, "model.layers.0.self_attn.o_proj", &o1, &i1);
    double *ao = malloc(sizeof(double) * n * H);
    t_lin(A, Wo, NULL, n, nh * hd, H, ao);
    for (int64_t i = 0; i < n * H; i++) x[i] += ao[i];
    t_rmsnorm(x, wpost, n, H, eps, xn);
    rel = t_hess_rel(t_rec_H(&r, "model.layers.0.mlp.gate_proj"), xn, n, H);
    ck_assert_msg(rel < HESS_REL, "gate/up Hessian off by %g", rel);
    int64_t I;
    double *Wg = t_read_linear(q, &qi, "model.layers.0.mlp.gate_proj", &I, &i1);
    double *Wu = t_read_linear(q, &qi, "model.layers.0.mlp.up_proj", &I, &i1);
    double *G = malloc(sizeof(double) * n * I), *U = malloc(sizeof(double) * n * I);
    t_lin(xn, Wg, NULL, n, H, I, G);
    t_lin(xn, Wu, NULL, n, H, I, U);
    for (int64_t i = 0; i < n * I; i++) G[i] = G[i] / (1 + exp(-G[i])) * U[i];
    rel = t_hess_rel(t_rec_H(&r, "model.layers.0.mlp.down_proj"), G, n, I);
    ck_assert_msg(rel < HESS_REL, "down Hessian off by %g", rel);
    free(E); free(x); free(xn); free(win); free(wpost); free(Wq); free(Wk); free(Wv); free(Q); free(K);
    free(V); free(A); free(Wo); free(ao); free(Wg); free(Wu); free(G); free(U);
    fs_ckpt_close(c);
    fs_ckpt_close(q);
    t_rec_free(&r);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

static void family(const char *type, fs_format fmt)
{
    char *tmp = t_tmpdir(), src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/out", tmp);
    int g = gen(type, src, "");
    if (g < 0) { printf("check_pipeline: FS_GEN_TINY unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    const int64_t nseq = 8, T = 48;
    uint32_t ids[8 * 48];
    t_rng rg = {9};
    for (int i = 0; i < nseq * T; i++) ids[i] = t_next(&rg) % 90;
    t_rec r;
    memset(&r, 0, sizeof r);
    char work[4300];
    snprintf(work, sizeof work, "%s/work", tmp);
    ck_assert_int_eq(mkdir(work, 0755), 0);
    t_run_pipeline(src, dst, fmt, nseq, T, ids, &r, work, FS_EXPERT_ALL_TOKENS, 0, NULL);
    ck_assert_int_eq(r.n, 14);                       /* 2 layers x 7 linears */
    /* the activation cache holds the last two boundaries (a resume may go one
     * layer back), complete and intact */
    char a1[4400], a2[4400];
    snprintf(a1, sizeof a1, "%s/act-0001.fsa", work);
    snprintf(a2, sizeof a2, "%s/act-0002.fsa", work);
    struct stat st;
    ck_assert_int_eq(stat(a1, &st), 0);
    fs_ctx actx;
    fs_ctx_init(&actx);
    fs_act_file *af = NULL;
    ck_assert_msg(fs_act_open(&actx, a2, &af) == FS_OK, "%s", actx.errmsg);
    ck_assert_int_eq(fs_act_rows(af), nseq * T);
    ck_assert_int_eq(fs_act_row_bytes(af), 64 * 4);   /* hidden 64, f32 activations */
    ck_assert_int_eq(fs_act_verify(&actx, af), FS_OK);
    fs_act_close(af);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *q = NULL;
    fs_qinfo qi;
    ck_assert_int_eq(fs_ckpt_open(&ctx, dst, &q), FS_OK);
    ck_assert_int_eq(fs_qinfo_from_config(&ctx, q->config, &qi), FS_OK);
    for (int i = 0; i < r.n; i++) {
        ck_assert_msg(r.loss[i] < r.rtn[i], "%s %s: gptq loss %g >= rtn %g", type, r.name[i], r.loss[i], r.rtn[i]);
        float *D = NULL;
        int64_t o, in;
        ck_assert_int_eq(fs_qread_linear(&ctx, q, &qi, r.name[i], &D, &o, &in), FS_OK);
        ck_assert_int_eq(o * in, r.dqn[i]);
        ck_assert_msg(!memcmp(D, r.dq[i], sizeof(float) * (size_t)r.dqn[i]), "%s: decode differs", r.name[i]);
        free(D);
    }
    fs_ckpt_close(q);
    t_rec_free(&r);
    t_rmdir(tmp);
    free(tmp);
}

START_TEST(llama_both)   { family("llama", FS_FMT_FORGE); family("llama", FS_FMT_GPTQ); }
END_TEST
START_TEST(mistral_both) { family("mistral", FS_FMT_FORGE); family("mistral", FS_FMT_GPTQ); }
END_TEST
START_TEST(qwen2_both)   { family("qwen2", FS_FMT_FORGE); family("qwen2", FS_FMT_GPTQ); }
END_TEST
START_TEST(qwen3_both)   { family("qwen3", FS_FMT_FORGE); family("qwen3", FS_FMT_GPTQ); }
END_TEST

/* ---- through the binary ---------------------------------------------------- */

START_TEST(eval_reference_perplexity)
{
    const char *bin = getenv("FS_BIN"), *sh = getenv("FS_SHARED");
    if (!bin || !sh) { printf("check_pipeline: FS_BIN/FS_SHARED unset, reference perplexity skipped\n"); return; }
    char cmd[13000], err[4096], out[4096], *tmp = t_tmpdir(), js[4200];
    snprintf(js, sizeof js, "%s/eval.json", tmp);       /* per run: suites may run side by side */
    snprintf(cmd, sizeof cmd, "'%s' eval --model '%s/data/stories260K' --tokens '%s/data/wikitext2/wiki.test.stories260K.u32' "
             "--act-dtype f32 --json --quiet > '%s'", bin, sh, sh, js);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 0);
    FILE *f = fopen(js, "r");
    ck_assert_ptr_nonnull(f);
    size_t k = fread(out, 1, sizeof out - 1, f);
    out[k] = '\0';
    fclose(f);
    t_rmdir(tmp);
    free(tmp);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(j);
    double ppl = json_number_value(json_object_get(j, "ppl")), nll = json_number_value(json_object_get(j, "nll_mean"));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "tokens")), 804314);
    ck_assert_msg(fabs(ppl / REF_PPL - 1) < PPL_REL, "PPL %.4f vs reference %.2f", ppl, REF_PPL);
    ck_assert_msg(fabs(nll - REF_NLL) < 1e-4, "NLL %.6f vs reference %.5f", nll, REF_NLL);
    json_decref(j);
}
END_TEST

START_TEST(bad_calibration_input)
{
    const char *bin = getenv("FS_BIN"), *sh = getenv("FS_SHARED");
    if (!bin || !sh) { printf("check_pipeline: FS_BIN/FS_SHARED unset, bad-input cases skipped\n"); return; }
    char *tmp = t_tmpdir(), cmd[20000], err[4096], p[4600], outd[4400];
    snprintf(outd, sizeof outd, "%s/out", tmp);
    struct { const char *what, *file, *content, *flags, *expect; } cases[] = {
        {"missing file", "nope.u32", NULL, "--samples 1 --seq-len 64", "nope.u32"},
        {"too few tokens", "few.u32", NULL, "--samples 4 --seq-len 64", "--samples 4"},
        {"id outside vocab", "oov.u32", NULL, "--samples 1 --seq-len 64", "outside the vocabulary"},
        {"bad json line", "bad.jsonl", "[1, 2, 3]\n{\"x\": 1}\n", "--samples 1 --seq-len 2", "line 2"},
        {"seq-len past max positions", "few.u32", NULL, "--samples 1 --seq-len 4096", "max_position_embeddings"},
        {"samples zero", "few.u32", NULL, "--samples 0", "--samples"},
        {"host budget too small", "few.u32", NULL, "--samples 1 --seq-len 64 --host-mem 10K", "of host memory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, cases[i].file);
        if (cases[i].content) {
            FILE *f = fopen(p, "w");
            fputs(cases[i].content, f);
            fclose(f);
        } else if (strstr(cases[i].what, "vocab")) {
            FILE *f = fopen(p, "wb");
            for (uint32_t k = 0; k < 100; k++) { uint32_t v = k == 77 ? 999999u : k; fwrite(&v, 4, 1, f); }
            fclose(f);
        } else if (!strcmp(cases[i].file, "few.u32")) {       /* 100 valid ids */
            FILE *f = fopen(p, "wb");
            for (uint32_t k = 0; k < 100; k++) fwrite(&k, 4, 1, f);
            fclose(f);
        }
        snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s/data/stories260K' --out '%s' --calib '%s' %s",
                 bin, sh, outd, p, cases[i].flags);
        int code = t_run_cmd(cmd, err, sizeof err);
        ck_assert_msg(code == 2, "%s: exit %d (%s)", cases[i].what, code, err);
        ck_assert_msg(strstr(err, "forge-stream: error:") && strstr(err, cases[i].expect), "%s: '%s'", cases[i].what, err);
        struct stat st;
        ck_assert_msg(stat(outd, &st) != 0, "%s: the output folder was created", cases[i].what);
    }
    /* an output folder that holds something is refused and left as it was */
    mkdir(outd, 0755);
    snprintf(p, sizeof p, "%s/keep.txt", outd);
    FILE *f = fopen(p, "w");
    fputs("mine", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s/data/stories260K' --out '%s' --calib '%s/data/wikitext2/wiki.test.stories260K.u32' "
             "--samples 2 --seq-len 64", bin, sh, outd, sh);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "not empty"));
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/config.json", outd);
    ck_assert_int_ne(stat(p, &st), 0);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* --profile and --timings of a real run: every stage the run has appears, one
 * layer span per decoder layer, and the timings lines name the same stages. */
START_TEST(profile_of_a_run)
{
    const char *bin = getenv("FS_BIN"), *sh = getenv("FS_SHARED");
    if (!bin || !sh) { printf("check_pipeline: FS_BIN/FS_SHARED unset, profile run skipped\n"); return; }
    char *tmp = t_tmpdir(), cmd[20000], err[4096], prof[4300], tim[4300], out[4300];
    snprintf(prof, sizeof prof, "%s/trace.json", tmp);
    snprintf(tim, sizeof tim, "%s/timings.jsonl", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s/data/stories260K' --out '%s' --calib "
             "'%s/data/wikitext2/wiki.test.stories260K.u32' --samples 8 --seq-len 128 --profile '%s' --timings '%s'",
             bin, sh, out, sh, prof, tim);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "overlap ratio"));                 /* the end table */
    json_error_t je;
    json_t *root = json_load_file(prof, 0, &je);
    ck_assert_msg(root != NULL, "%s", je.text);
    json_t *ev = json_object_get(root, "traceEvents");
    const char *want[] = {"read", "forward", "hessian", "cholesky", "grid", "gptq", "write", "journal"};
    int layers = 0, found[8] = {0};
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        if (strcmp(json_string_value(json_object_get(e, "ph")), "X")) continue;
        const char *cat = json_string_value(json_object_get(e, "cat"));
        if (!strcmp(cat, "layer")) layers++;
        for (int k = 0; k < 8; k++) found[k] += !strcmp(cat, want[k]);
    }
    ck_assert_int_eq(layers, 5);
    for (int k = 0; k < 8; k++) ck_assert_msg(found[k] > 0, "no %s span", want[k]);
    ck_assert_int_eq(found[7], 5);                   /* one journal commit per layer */
    json_decref(root);
    FILE *f = fopen(tim, "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(j != NULL, "%s", je.text);
        ck_assert(json_is_number(json_object_get(j, "seconds")) && json_is_string(json_object_get(j, "stage")));
        json_decref(j);
        lines++;
    }
    fclose(f);
    ck_assert_int_ge(lines, 5 * 7);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* A work folder in use is refused naming the holder; SIGTERM in the middle of
 * a run stops it with 143, keeps what is committed and says how to resume. */
START_TEST(lock_and_signal)
{
    const char *bin = getenv("FS_BIN"), *sh = getenv("FS_SHARED");
    char *tmp = t_tmpdir(), model[4300], cmd[20000], err[4096], p[4400];
    snprintf(model, sizeof model, "%s/m", tmp);
    int g = gen("llama", model, "--layers 6 --hidden 768 --intermediate 2048 --heads 12 --vocab 512");
    if (g < 0 || !bin || !sh) {
        printf("check_pipeline: FS_GEN_TINY/FS_BIN/FS_SHARED unset, lock and signal skipped\n");
        t_rmdir(tmp); free(tmp); return;
    }
    ck_assert_int_eq(g, 0);
    /* the lock: held here, so the binary (another process) must refuse */
    snprintf(p, sizeof p, "%s/w", tmp);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/w/lock", tmp);
    int fd = open(p, O_RDWR | O_CREAT, 0644);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    ck_assert_int_eq(fcntl(fd, F_SETLK, &fl), 0);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s/o1' --work '%s/w' --calib "
             "'%s/data/wikitext2/wiki.test.stories260K.u32' --samples 4 --seq-len 128", bin, model, tmp, tmp, sh);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 2);
    char want[64];
    snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
    ck_assert_msg(strstr(err, want) != NULL, "%s", err);
    struct stat st;
    snprintf(p, sizeof p, "%s/o1", tmp);
    ck_assert_int_ne(stat(p, &st), 0);
    close(fd);
    /* SIGTERM once the first layer boundary exists */
    snprintf(cmd, sizeof cmd, "exec '%s' quantize --model '%s' --out '%s/o2' --calib "
             "'%s/data/wikitext2/wiki.test.stories260K.u32' --samples 16 --seq-len 256 2> '%s/err'",
             bin, model, tmp, sh, tmp);
    pid_t pid = fork();
    if (pid == 0) { execl("/bin/sh", "sh", "-c", cmd, (char *)NULL); _exit(127); }
    snprintf(p, sizeof p, "%s/o2/.forge-work/act-0001.fsa", tmp);
    int seen = 0;
    for (int i = 0; i < 3000 && !seen; i++) {         /* up to 30 s */
        seen = stat(p, &st) == 0;
        if (!seen) usleep(10000);
    }
    ck_assert_msg(seen, "the run never reached its first layer boundary");
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 143);
    /* the run is kept for --resume (check_resume.c compares the bytes): the
     * journal is there, no finished checkpoint is, and the log says how to go on */
    snprintf(p, sizeof p, "%s/o2/.forge-work/journal.json", tmp);
    ck_assert_msg(stat(p, &st) == 0, "an interrupted run left no journal");
    snprintf(p, sizeof p, "%s/o2/model.safetensors", tmp);
    ck_assert_msg(stat(p, &st) != 0, "an interrupted run left %s, as if finished", p);
    snprintf(p, sizeof p, "%s/err", tmp);
    FILE *f = fopen(p, "r");
    size_t k = f ? fread(err, 1, sizeof err - 1, f) : 0;
    err[k] = '\0';
    if (f) fclose(f);
    ck_assert_msg(strstr(err, "interrupted by signal 15") && strstr(err, "--resume --work"), "%s", err);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* Pre-flight: a disk that obviously cannot hold the output is refused before
 * any work (a 1 MB tmpfs when this test may mount one; skipped otherwise). */
START_TEST(preflight_full_disk)
{
    const char *bin = getenv("FS_BIN"), *sh = getenv("FS_SHARED");
    if (!bin || !sh) { printf("check_pipeline: FS_BIN/FS_SHARED unset, pre-flight skipped\n"); return; }
    char *tmp = t_tmpdir(), mnt[4300], cmd[20000], err[4096];
    snprintf(mnt, sizeof mnt, "%s/small", tmp);
    ck_assert_int_eq(mkdir(mnt, 0755), 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=1M tmpfs '%s' 2>/dev/null", mnt);
    if (system(cmd) != 0) {
        printf("check_pipeline: cannot mount a small tmpfs here, pre-flight disk test skipped\n");
        t_rmdir(tmp); free(tmp); return;
    }
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s/data/stories260K' --out '%s/out' --calib "
             "'%s/data/wikitext2/wiki.test.stories260K.u32' --samples 64 --seq-len 256", bin, sh, mnt, sh);
    int code = t_run_cmd(cmd, err, sizeof err);
    char probe[4400];
    snprintf(probe, sizeof probe, "%s/out", mnt);
    struct stat st;
    int created = stat(probe, &st) == 0;
    snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
    if (system(cmd) != 0) printf("check_pipeline: could not unmount %s\n", mnt);
    ck_assert_int_eq(code, 2);
    ck_assert_msg(strstr(err, "free") && strstr(err, "needs about"), "%s", err);
    ck_assert_msg(!created, "the refused run created its output folder");
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_pipeline(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("capture");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hessians_match_naive_forward);
    tcase_add_test(tc, llama_both);
    tcase_add_test(tc, mistral_both);
    tcase_add_test(tc, qwen2_both);
    tcase_add_test(tc, qwen3_both);
    suite_add_tcase(s, tc);
    tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, bad_calibration_input);
    tcase_add_test(tc, eval_reference_perplexity);
    tcase_add_test(tc, profile_of_a_run);
    tcase_add_test(tc, lock_and_signal);
    tcase_add_test(tc, preflight_full_disk);
    suite_add_tcase(s, tc);
    return s;
}
