/* check_moe.c: the MoE forward and quantize pipeline (mixtral, qwen2_moe,
 * qwen3_moe from tools/gen-tiny), against a naive forward in double written
 * here with its own routing (softmax over all experts, top-k with ties to the
 * lower index, renormalised for mixtral and for norm_topk_prob):
 *  - each expert's gate/up Hessian equals X_e^T X_e of the rows routed to it,
 *    its down Hessian that of silu(gate) * up computed with the quantized
 *    gate/up read back from the output; the shared expert's from all tokens;
 *  - every linear's GPTQ loss is at most its RTN loss (strictly below for
 *    calibrated experts); every output tensor decodes to the solver's dequant;
 *  - an expert that receives no token follows each --expert-policy and is
 *    named in the metadata and the log;
 *  - eval of the original models equals the naive forward's NLL. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/record.h"
#include "tests/util.h"
#include "src/backend/backend.h"
#include "src/models/moe.h"
#include "src/pipeline/pipeline.h"

#define HESS_REL 1e-4    /* f32 pipeline vs double naive forward, Frobenius relative */
#define ROUTE_GAP 1e-5   /* the naive routing must not hinge on a closer probability gap */
#define NLL_TOL 2e-5     /* eval (f32 activations) vs naive double NLL, absolute in nats */

static int gen(const char *type, const char *dir)
{
    return t_gen_tiny(dir, "--type %s --shards 2 --dtype f32", type);
}

/* ---- a naive forward in double ------------------------------------------- */

typedef struct nmodel {
    fs_ckpt *c;
    fs_qinfo qi;
    json_t *cfg;
    int mixtral, q2m, q3m;
    int64_t H, nh, nkv, hd, E, K, V;
    int norm_topk;
    double eps, inv[64];
} nmodel;

static double *nw(nmodel *nm, const char *base, int64_t *o, int64_t *in)
{
    return t_read_linear(nm->c, &nm->qi, base, o, in);
}

static double *nv(nmodel *nm, const char *name)
{
    return t_read_tensor(nm->c, name, NULL);
}

static void nm_open(nmodel *nm, const char *dir)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    memset(nm, 0, sizeof *nm);
    ck_assert_int_eq(fs_ckpt_open(&ctx, dir, &nm->c), FS_OK);
    ck_assert_int_eq(fs_qinfo_from_config(&ctx, nm->c->config, &nm->qi), FS_OK);
    json_t *cfg = nm->cfg = nm->c->config;
    const char *t = json_string_value(json_object_get(cfg, "model_type"));
    nm->mixtral = !strcmp(t, "mixtral");
    nm->q2m = !strcmp(t, "qwen2_moe");
    nm->q3m = !strcmp(t, "qwen3_moe");
    nm->H = json_integer_value(json_object_get(cfg, "hidden_size"));
    nm->nh = json_integer_value(json_object_get(cfg, "num_attention_heads"));
    nm->nkv = json_integer_value(json_object_get(cfg, "num_key_value_heads"));
    nm->hd = json_integer_value(json_object_get(cfg, "head_dim"));
    nm->V = json_integer_value(json_object_get(cfg, "vocab_size"));
    nm->E = json_integer_value(json_object_get(cfg, nm->mixtral ? "num_local_experts" : "num_experts"));
    nm->K = json_integer_value(json_object_get(cfg, "num_experts_per_tok"));
    nm->norm_topk = nm->mixtral || json_is_true(json_object_get(cfg, "norm_topk_prob"));
    nm->eps = json_number_value(json_object_get(cfg, "rms_norm_eps"));
    double theta = json_number_value(json_object_get(cfg, "rope_theta"));
    for (int64_t i = 0; i < nm->hd / 2; i++) nm->inv[i] = pow(theta, -2.0 * i / nm->hd);
}

static int is_moe_layer(const nmodel *nm, int l)
{
    json_t *only = json_object_get(nm->cfg, "mlp_only_layers");
    for (size_t k = 0; json_is_array(only) && k < json_array_size(only); k++)
        if (json_integer_value(json_array_get(only, k)) == l) return 0;
    return 1;
}

/* x += attention of layer l (in place); xn gets norm(x) after it (post-norm). */
static void n_attention(nmodel *nm, int l, double *x, double *xn, int64_t nseq, int64_t T)
{
    const int64_t n = nseq * T, H = nm->H, nh = nm->nh, nkv = nm->nkv, hd = nm->hd;
    char b[256];
    snprintf(b, sizeof b, "model.layers.%d.input_layernorm.weight", l);
    double *win = nv(nm, b);
    t_rmsnorm(x, win, n, H, nm->eps, xn);
    double *Q = malloc(sizeof(double) * n * nh * hd), *Kk = malloc(sizeof(double) * n * nkv * hd);
    double *Vv = malloc(sizeof(double) * n * nkv * hd), *A = calloc(n * nh * hd, sizeof(double));
    double *P[3] = {Q, Kk, Vv};
    const char *nmz[3] = {"q_proj", "k_proj", "v_proj"};
    for (int j = 0; j < 3; j++) {
        int64_t o, in;
        snprintf(b, sizeof b, "model.layers.%d.self_attn.%s", l, nmz[j]);
        double *W = nw(nm, b, &o, &in), *bias = NULL;
        if (nm->q2m) { strcat(b, ".bias"); bias = nv(nm, b); }
        t_lin(xn, W, bias, n, H, o, P[j]);
        free(W); free(bias);
    }
    double *qn = NULL, *kn = NULL;
    if (nm->q3m) {
        snprintf(b, sizeof b, "model.layers.%d.self_attn.q_norm.weight", l);
        qn = nv(nm, b);
        snprintf(b, sizeof b, "model.layers.%d.self_attn.k_norm.weight", l);
        kn = nv(nm, b);
    }
    for (int64_t t = 0; t < n; t++) {
        int64_t p = t % T;
        for (int64_t h = 0; h < nh + nkv; h++) {
            double *v = h < nh ? Q + t * nh * hd + h * hd : Kk + t * nkv * hd + (h - nh) * hd;
            if (qn) t_rmsnorm(v, h < nh ? qn : kn, 1, hd, nm->eps, v);
            for (int64_t i = 0; i < hd / 2; i++) {
                double a = v[i], c = v[i + hd / 2], cs = cos(p * nm->inv[i]), sn = sin(p * nm->inv[i]);
                v[i] = a * cs - c * sn;
                v[i + hd / 2] = c * cs + a * sn;
            }
        }
    }
    for (int64_t s = 0; s < nseq; s++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t kh = h / (nh / nkv);
            for (int64_t i = 0; i < T; i++) {
                double sc[128], mx = -1e300, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++)
                        d += Q[(s * T + i) * nh * hd + h * hd + e] * Kk[(s * T + j) * nkv * hd + kh * hd + e];
                    sc[j] = d / sqrt((double)hd);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j <= i; j++) { sc[j] = exp(sc[j] - mx); sum += sc[j]; }
                for (int64_t j = 0; j <= i; j++)
                    for (int64_t e = 0; e < hd; e++)
                        A[(s * T + i) * nh * hd + h * hd + e] += sc[j] / sum * Vv[(s * T + j) * nkv * hd + kh * hd + e];
            }
        }
    snprintf(b, sizeof b, "model.layers.%d.self_attn.o_proj", l);
    double *Wo = nw(nm, b, NULL, NULL), *ao = malloc(sizeof(double) * n * H);
    t_lin(A, Wo, NULL, n, nh * hd, H, ao);
    for (int64_t i = 0; i < n * H; i++) x[i] += ao[i];
    snprintf(b, sizeof b, "model.layers.%d.post_attention_layernorm.weight", l);
    double *wpost = nv(nm, b);
    t_rmsnorm(x, wpost, n, H, nm->eps, xn);
    free(win); free(Q); free(Kk); free(Vv); free(A); free(qn); free(kn); free(Wo); free(ao); free(wpost);
}

/* y[n, H] = MLP(xn) of the gated MLP named pre (gate/up/down names given); act gets
 * silu(gate) * up [n, I] when not NULL (caller frees). */
static void n_mlp(nmodel *nm, const char *pre, const char *gn, const char *un, const char *dn,
                  const double *xn, int64_t n, double *y, double **act)
{
    char b[600];
    int64_t I, in;
    snprintf(b, sizeof b, "%s.%s", pre, gn);
    double *Wg = nw(nm, b, &I, &in);
    snprintf(b, sizeof b, "%s.%s", pre, un);
    double *Wu = nw(nm, b, NULL, NULL);
    snprintf(b, sizeof b, "%s.%s", pre, dn);
    double *Wd = nw(nm, b, NULL, NULL);
    double *G = malloc(sizeof(double) * (n * I + 1)), *U = malloc(sizeof(double) * (n * I + 1));
    t_lin(xn, Wg, NULL, n, nm->H, I, G);
    t_lin(xn, Wu, NULL, n, nm->H, I, U);
    for (int64_t i = 0; i < n * I; i++) G[i] = G[i] / (1 + exp(-G[i])) * U[i];
    t_lin(G, Wd, NULL, n, I, nm->H, y);
    if (act) *act = G;
    else free(G);
    free(Wg); free(Wu); free(Wd); free(U);
}

static void expert_prefix(const nmodel *nm, int l, int64_t e, char *b, size_t n)
{
    snprintf(b, n, "model.layers.%d.%s.experts.%lld", l, nm->mixtral ? "block_sparse_moe" : "mlp", (long long)e);
}

/* Routing of n rows in double: idx/wt [n, K]; returns the smallest gap between
 * the K-th and the (K+1)-th probability. */
static double n_route(nmodel *nm, int l, const double *xn, int64_t n, int *idx, double *wt)
{
    char b[256];
    snprintf(b, sizeof b, "model.layers.%d.%s.gate.weight", l, nm->mixtral ? "block_sparse_moe" : "mlp");
    double *R = nv(nm, b), gap = 1e300;
    const int64_t E = nm->E, K = nm->K;
    double *p = malloc(sizeof(double) * E);
    int *used = malloc(sizeof(int) * E);
    for (int64_t t = 0; t < n; t++) {
        t_lin(xn + t * nm->H, R, NULL, 1, nm->H, E, p);
        double mx = -1e300, s = 0, tot = 0;
        for (int64_t e = 0; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        for (int64_t e = 0; e < E; e++) { p[e] = exp(p[e] - mx); s += p[e]; }
        for (int64_t e = 0; e < E; e++) { p[e] /= s; used[e] = 0; }
        for (int64_t k = 0; k < K; k++) {
            int best = -1;
            for (int64_t e = 0; e < E; e++)
                if (!used[e] && (best < 0 || p[e] > p[best])) best = (int)e;
            used[best] = 1;
            idx[t * K + k] = best;
            wt[t * K + k] = p[best];
            tot += p[best];
        }
        double next = -1;
        for (int64_t e = 0; e < E; e++)
            if (!used[e] && p[e] > next) next = p[e];
        if (next >= 0 && p[idx[t * K + K - 1]] - next < gap) gap = p[idx[t * K + K - 1]] - next;
        if (nm->norm_topk)
            for (int64_t k = 0; k < K; k++) wt[t * K + k] /= tot;
    }
    free(R); free(p); free(used);
    return gap;
}

/* x += FFN of layer l given xn = post-norm(x). */
static void n_ffn(nmodel *nm, int l, const double *xn, double *x, int64_t n)
{
    const int64_t H = nm->H, K = nm->K;
    char pre[256];
    double *y = malloc(sizeof(double) * n * H);
    if (!is_moe_layer(nm, l)) {
        snprintf(pre, sizeof pre, "model.layers.%d.mlp", l);
        n_mlp(nm, pre, "gate_proj", "up_proj", "down_proj", xn, n, y, NULL);
        for (int64_t i = 0; i < n * H; i++) x[i] += y[i];
        free(y);
        return;
    }
    int *idx = malloc(sizeof(int) * n * K);
    double *wt = malloc(sizeof(double) * n * K), *out = calloc(n * H, sizeof(double));
    n_route(nm, l, xn, n, idx, wt);
    for (int64_t t = 0; t < n; t++)
        for (int64_t e = 0; e < nm->E; e++)
            for (int64_t k = 0; k < K; k++)
                if (idx[t * K + k] == e) {
                    expert_prefix(nm, l, e, pre, sizeof pre);
                    n_mlp(nm, pre, nm->mixtral ? "w1" : "gate_proj", nm->mixtral ? "w3" : "up_proj",
                          nm->mixtral ? "w2" : "down_proj", xn + t * H, 1, y, NULL);
                    for (int64_t i = 0; i < H; i++) out[t * H + i] += wt[t * K + k] * y[i];
                }
    if (nm->q2m) {
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_expert", l);
        n_mlp(nm, pre, "gate_proj", "up_proj", "down_proj", xn, n, y, NULL);
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_expert_gate.weight", l);
        double *sg = nv(nm, pre);
        for (int64_t t = 0; t < n; t++) {
            double z = 0;
            for (int64_t i = 0; i < H; i++) z += xn[t * H + i] * sg[i];
            for (int64_t i = 0; i < H; i++) out[t * H + i] += y[t * H + i] / (1 + exp(-z));
        }
        free(sg);
    }
    for (int64_t i = 0; i < n * H; i++) x[i] += out[i];
    free(idx); free(wt); free(out); free(y);
}

/* ---- (a), (b), (e): Hessians, losses, decode ---------------------------- */

/* The same bytes (dtype, shape, data) under name in both checkpoints. */
static int same_tensor(fs_ckpt *a, fs_ckpt *b, const char *name)
{
    const fs_ckpt_entry *x = fs_ckpt_find(a, name), *y = fs_ckpt_find(b, name);
    if (!x || !y || x->t->dtype != y->t->dtype || x->t->ndim != y->t->ndim) return 0;
    for (int d = 0; d < x->t->ndim; d++)
        if (x->t->shape[d] != y->t->shape[d]) return 0;
    void *p = NULL, *q = NULL;
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_dtype dt;
    int nd;
    int64_t sh[FS_ST_MAX_DIMS];
    int ok = fs_out_read_copy(&ctx, a, name, &dt, &nd, sh, &p) == FS_OK &&
             fs_out_read_copy(&ctx, b, name, &dt, &nd, sh, &q) == FS_OK;
    uint64_t bytes = fs_dtype_size(dt);
    for (int d = 0; ok && d < nd; d++) bytes *= (uint64_t)sh[d];
    ok = ok && !memcmp(p, q, (size_t)bytes);
    free(p);
    free(q);
    return ok;
}

/* experts_only (--quantize-experts-only): attention, dense MLPs and shared
 * experts are the source's bytes, the routed experts' Hessians still equal the
 * naive forward's (which reads those unquantized weights back). */
static void family_ex(const char *type, int experts_only)
{
    char *tmp = t_tmpdir(), src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/out", tmp);
    int g = gen(type, src);
    if (g < 0) { printf("check_moe: FS_GEN_TINY unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    const int64_t nseq = 4, T = 32, n = nseq * T;
    uint32_t ids[4 * 32];
    t_rng rg = {11};
    for (int i = 0; i < n; i++) ids[i] = t_next(&rg) % 90;
    t_rec r;
    memset(&r, 0, sizeof r);
    fs_moe_report rep = {0};
    t_run_pipeline_with(src, dst, FS_FMT_FORGE, nseq, T, ids, &r, NULL, 0, 2 * T, experts_only, FS_EXPERT_ALL_TOKENS,
                        8, &rep);

    nmodel nm;
    nm_open(&nm, dst);                            /* the quantized weights, read back */
    const int64_t H = nm.H, K = nm.K;
    int lm = nm.q3m ? 1 : 0;                      /* first MoE layer */
    double *x = malloc(sizeof(double) * n * H), *xn = malloc(sizeof(double) * n * H);
    double *E = nv(&nm, "model.embed_tokens.weight");
    for (int64_t t = 0; t < n; t++) memcpy(x + t * H, E + ids[t] * H, sizeof(double) * H);
    for (int l = 0; l < lm; l++) {
        n_attention(&nm, l, x, xn, nseq, T);
        n_ffn(&nm, l, xn, x, n);
    }
    n_attention(&nm, lm, x, xn, nseq, T);
    int *idx = malloc(sizeof(int) * n * K);
    double *wt = malloc(sizeof(double) * n * K), *Xe = malloc(sizeof(double) * n * H);
    double gap = n_route(&nm, lm, xn, n, idx, wt);
    ck_assert_msg(gap > ROUTE_GAP, "%s: a routing decision hinges on a gap of %g", type, gap);
    char pre[256], nmx[300];
    if (nm.q2m && !experts_only) {
        snprintf(nmx, sizeof nmx, "model.layers.%d.mlp.shared_expert.gate_proj", lm);
        double rel = t_hess_rel(r.H[t_rec_find(&r, nmx)], xn, n, H);
        ck_assert_msg(rel < HESS_REL, "%s: shared expert gate/up Hessian off by %g", type, rel);
    }
    int64_t total = 0;
    for (int64_t e = 0; e < nm.E; e++) {
        int64_t ne = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t k = 0; k < K; k++)
                if (idx[t * K + k] == e) memcpy(Xe + (ne++) * H, xn + t * H, sizeof(double) * H);
        ck_assert_int_eq(rep.l[0].count[e], ne);              /* the pipeline counted the same */
        total += ne;
        expert_prefix(&nm, lm, e, pre, sizeof pre);
        snprintf(nmx, sizeof nmx, "%s.%s", pre, nm.mixtral ? "w1" : "gate_proj");
        int ig = t_rec_find(&r, nmx);
        snprintf(nmx, sizeof nmx, "%s.%s", pre, nm.mixtral ? "w3" : "up_proj");
        int iu = t_rec_find(&r, nmx);
        ck_assert_msg(!memcmp(r.H[ig], r.H[iu], sizeof(float) * H * H), "%s: gate and up Hessians differ", pre);
        double rel = t_hess_rel(r.H[ig], Xe, ne, H);
        ck_assert_msg(rel < HESS_REL, "%s: gate/up Hessian off by %g (%lld tokens)", pre, rel, (long long)ne);
        double *act = NULL, *y = malloc(sizeof(double) * (ne + 1) * H);
        n_mlp(&nm, pre, nm.mixtral ? "w1" : "gate_proj", nm.mixtral ? "w3" : "up_proj",
              nm.mixtral ? "w2" : "down_proj", Xe, ne, y, &act);
        snprintf(nmx, sizeof nmx, "%s.%s", pre, nm.mixtral ? "w2" : "down_proj");
        int id = t_rec_find(&r, nmx);
        rel = t_hess_rel(r.H[id], act, ne, r.in[id]);
        ck_assert_msg(rel < HESS_REL, "%s: down Hessian off by %g", pre, rel);
        free(act); free(y);
    }
    ck_assert_int_eq(total, n * K);
    /* (b) GPTQ <= RTN, strictly for calibrated experts; (e) decode == dequant */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    for (int i = 0; i < r.n; i++) {
        ck_assert_msg(r.loss[i] < r.rtn[i], "%s %s: gptq loss %g >= rtn %g", type, r.name[i], r.loss[i], r.rtn[i]);
        float *D = NULL;
        int64_t o, in;
        ck_assert_int_eq(fs_qread_linear(&ctx, nm.c, &nm.qi, r.name[i], &D, &o, &in), FS_OK);
        ck_assert_int_eq(o * in, r.dqn[i]);
        ck_assert_msg(!memcmp(D, r.dq[i], sizeof(float) * (size_t)r.dqn[i]), "%s: decode differs", r.name[i]);
        free(D);
    }
    /* every linear of the description was quantized (experts_only: every routed
     * expert's, the rest is the source's bytes); routers stay as they were */
    if (!experts_only) ck_assert_int_eq(r.n, nm.q2m ? 2 * (4 + 3 + 12) : nm.q3m ? 7 + 4 + 12 : 2 * (4 + 12));
    else {
        ck_assert_int_eq(r.n, nm.q3m ? 12 : 2 * 12);
        fs_ckpt *sc = NULL;
        fs_model *sm = NULL;
        ck_assert_int_eq(fs_ckpt_open(&ctx, src, &sc), FS_OK);
        ck_assert_int_eq(fs_model_from_config(&ctx, sc->config, "config.json", &sm), FS_OK);
        int kept = 0;
        for (int l = 0; l < sm->nlayers; l++)
            for (int i = 0; i < sm->layers[l].nlin; i++) {
                const fs_mlinear *x = &sm->layers[l].lin[i];
                snprintf(nmx, sizeof nmx, "%s.weight", x->name);
                if (x->expert >= 0) { ck_assert_ptr_null(fs_ckpt_find(nm.c, nmx)); continue; }
                ck_assert_msg(same_tensor(sc, nm.c, nmx), "%s: not the source's bytes", nmx);
                snprintf(nmx, sizeof nmx, "%s.qweight", x->name);
                ck_assert_ptr_null(fs_ckpt_find(nm.c, nmx));
                kept++;
            }
        ck_assert_int_eq(kept, nm.q2m ? 2 * 7 : nm.q3m ? 7 + 4 : 2 * 4);
        fs_model_free(sm);
        fs_ckpt_close(sc);
    }
    snprintf(nmx, sizeof nmx, "model.layers.%d.%s.gate.weight", lm, nm.mixtral ? "block_sparse_moe" : "mlp");
    ck_assert_int_eq(fs_ckpt_find(nm.c, nmx)->t->dtype, FS_DT_F32);
    free(x); free(xn); free(E); free(idx); free(wt); free(Xe);
    fs_ckpt_close(nm.c);
    fs_moe_report_free(&rep);
    t_rec_free(&r);
    t_rmdir(tmp);
    free(tmp);
}

static void family(const char *type) { family_ex(type, 0); }

START_TEST(mixtral_hessians)   { family("mixtral"); }
END_TEST
START_TEST(qwen2_moe_hessians) { family("qwen2_moe"); }
END_TEST
START_TEST(qwen3_moe_hessians) { family("qwen3_moe"); }
END_TEST
START_TEST(experts_only_qwen2_moe) { family_ex("qwen2_moe", 1); }
END_TEST
START_TEST(experts_only_qwen3_moe) { family_ex("qwen3_moe", 1); }
END_TEST

/* ---- (c) an expert without tokens follows each policy --------------------- */

START_TEST(starved_expert_policies)
{
    char *tmp = t_tmpdir(), src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    int g = gen("mixtral", src);
    if (g < 0) { printf("check_moe: FS_GEN_TINY unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    /* one token repeated: every position has the same input, so exactly
     * top-k experts of each layer get every token and the others none */
    const int64_t nseq = 2, T = 16, n = nseq * T, K = 2;
    uint32_t ids[2 * 16];
    for (int i = 0; i < n; i++) ids[i] = 7;
    const fs_expert_policy pols[3] = {FS_EXPERT_RTN, FS_EXPERT_ALL_TOKENS, FS_EXPERT_SHARED};
    for (int pi = 0; pi < 3; pi++) {
        snprintf(dst, sizeof dst, "%s/out%d", tmp, pi);
        t_rec r;
        memset(&r, 0, sizeof r);
        fs_moe_report rep = {0};
        t_run_pipeline(src, dst, FS_FMT_FORGE, nseq, T, ids, &r, NULL, pols[pi], 0, &rep);
        ck_assert_int_eq(rep.n, 2);
        int starved = -1, fed = -1;
        for (int e = 0; e < 4; e++) {
            ck_assert(rep.l[0].count[e] == 0 || rep.l[0].count[e] == n);
            ck_assert_int_eq(rep.l[0].under[e], rep.l[0].count[e] == 0);
            if (rep.l[0].count[e] == 0 && starved < 0) starved = e;
            if (rep.l[0].count[e] == n && fed < 0) fed = e;
        }
        ck_assert_msg(starved >= 0 && fed >= 0, "no starved expert");
        char nm[300], base[200];
        snprintf(base, sizeof base, "model.layers.0.block_sparse_moe.experts.%d", starved);
        snprintf(nm, sizeof nm, "%s.w1", base);
        int ig = t_rec_find(&r, nm);
        snprintf(nm, sizeof nm, "%s.w2", base);
        int id = t_rec_find(&r, nm);
        snprintf(nm, sizeof nm, "model.layers.0.block_sparse_moe.experts.%d.w1", fed);
        const float *Hfed = r.H[t_rec_find(&r, nm)];       /* = X^T X of every token */
        double num = 0, den = 0;
        for (int64_t i = 0; i < 64 * 64; i++) {
            num += ((double)r.H[ig][i] - Hfed[i]) * ((double)r.H[ig][i] - Hfed[i]);
            den += (double)Hfed[i] * Hfed[i];
        }
        double rel = sqrt(num / den);
        if (pols[pi] == FS_EXPERT_RTN) {
            for (int i = 0; i < 64 * 64; i++) ck_assert(r.H[ig][i] == 0.0f);   /* its own: no rows */
            ck_assert(r.loss[ig] == r.rtn[ig] && r.loss[id] == r.rtn[id]);
        } else {
            /* all-tokens and shared: gate/up from every token's input */
            ck_assert_msg(rel < HESS_REL, "policy %s: starved gate Hessian off by %g", fs_expert_policy_name(pols[pi]), rel);
            ck_assert_msg(r.loss[ig] < r.rtn[ig], "policy %s: gate not GPTQ", fs_expert_policy_name(pols[pi]));
            if (pols[pi] == FS_EXPERT_SHARED) ck_assert(r.loss[id] == r.rtn[id]);
            else ck_assert_msg(r.loss[id] < r.rtn[id], "all-tokens: down not GPTQ");
        }
        for (int i = 0; i < r.n; i++) ck_assert(r.loss[i] <= r.rtn[i]);
        /* the metadata names it and the policy */
        char cp[4400];
        snprintf(cp, sizeof cp, "%s/config.json", dst);
        json_t *cfg = json_load_file(cp, 0, NULL);
        json_t *qc = json_object_get(cfg, "quantization_config");
        ck_assert_str_eq(json_string_value(json_object_get(qc, "expert_policy")), fs_expert_policy_name(pols[pi]));
        json_t *uc = json_object_get(qc, "under_calibrated_experts");
        int named = 0;
        for (size_t k = 0; k < json_array_size(uc); k++) {
            json_t *it = json_array_get(uc, k);
            if (!strcmp(json_string_value(json_object_get(it, "name")), base)) {
                named = 1;
                ck_assert_int_eq(json_integer_value(json_object_get(it, "tokens")), 0);
            }
        }
        ck_assert_msg(named, "%s not in under_calibrated_experts", base);
        json_t *c0 = json_object_get(json_object_get(json_object_get(qc, "expert_tokens"), "model.layers.0"), "counts");
        ck_assert_int_eq(json_integer_value(json_array_get(c0, starved)), 0);
        json_decref(cfg);
        fs_moe_report_free(&rep);
        t_rec_free(&r);
    }
    (void)K;
    /* through the binary: the log names the expert and the policy */
    const char *bin = getenv("FS_BIN");
    if (bin) {
        char tok[4300], cmd[20000], err[16384];
        snprintf(tok, sizeof tok, "%s/same.u32", tmp);
        FILE *f = fopen(tok, "wb");
        for (int i = 0; i < 200; i++) { uint32_t v = 7; fwrite(&v, 4, 1, f); }
        fclose(f);
        snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s/cli' --calib '%s' --samples 2 --seq-len 16 "
                 "--expert-policy rtn --min-expert-tokens 1 --backend cpu", bin, src, tmp, tok);
        ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 0);
        ck_assert_msg(strstr(err, "under-calibrated expert model.layers.0.block_sparse_moe.experts.") &&
                      strstr(err, "0 tokens (< 1): policy rtn"), "log: %s", err);
        ck_assert_msg(strstr(err, "calibration tokens per expert min 0"), "log: %s", err);
        snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s/cli2' --calib '%s' --expert-policy bogus", bin, src, tmp, tok);
        ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 2);
        ck_assert_ptr_nonnull(strstr(err, "--expert-policy 'bogus'"));
    }
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* ---- (d) eval of the original models equals the naive NLL ----------------- */

static void eval_family(const char *type)
{
    const char *bin = getenv("FS_BIN");
    char *tmp = t_tmpdir(), src[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    int g = gen(type, src);
    if (g < 0 || !bin) { printf("check_moe: FS_GEN_TINY/FS_BIN unset, eval skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    const int64_t nseq = 3, T = 24, n = nseq * T;
    uint32_t ids[3 * 24];
    t_rng rg = {23};
    for (int i = 0; i < n; i++) ids[i] = t_next(&rg) % 90;
    char tok[4300], cmd[20000], err[8192], outp[4400];
    snprintf(tok, sizeof tok, "%s/t.u32", tmp);
    snprintf(outp, sizeof outp, "%s/eval.json", tmp);
    FILE *f = fopen(tok, "wb");
    fwrite(ids, 4, (size_t)n, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --tokens '%s' --seq-len %lld --act-dtype f32 --json --quiet > '%s'",
             bin, src, tok, (long long)T, outp);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 0);
    json_t *j = json_load_file(outp, 0, NULL);
    ck_assert_ptr_nonnull(j);
    double nll = json_number_value(json_object_get(j, "nll_mean"));
    json_decref(j);

    nmodel nm;
    nm_open(&nm, src);
    const int64_t H = nm.H, V = nm.V;
    int nl = (int)json_integer_value(json_object_get(nm.cfg, "num_hidden_layers"));
    double *x = malloc(sizeof(double) * n * H), *xn = malloc(sizeof(double) * n * H);
    double *E = nv(&nm, "model.embed_tokens.weight");
    for (int64_t t = 0; t < n; t++) memcpy(x + t * H, E + ids[t] * H, sizeof(double) * H);
    for (int l = 0; l < nl; l++) {
        n_attention(&nm, l, x, xn, nseq, T);
        n_ffn(&nm, l, xn, x, n);
    }
    double *fn = nv(&nm, "model.norm.weight"), *Wh = nv(&nm, "lm_head.weight");
    double *lg = malloc(sizeof(double) * V), tot = 0;
    t_rmsnorm(x, fn, n, H, nm.eps, xn);
    for (int64_t s = 0; s < nseq; s++)
        for (int64_t t = 0; t + 1 < T; t++) {
            t_lin(xn + (s * T + t) * H, Wh, NULL, 1, H, V, lg);
            double mx = -1e300, z = 0;
            for (int64_t v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            for (int64_t v = 0; v < V; v++) z += exp(lg[v] - mx);
            tot += mx + log(z) - lg[ids[s * T + t + 1]];
        }
    double ref = tot / (double)(nseq * (T - 1));
    ck_assert_msg(fabs(nll - ref) < NLL_TOL, "%s: eval NLL %.8f vs naive %.8f", type, nll, ref);
    free(x); free(xn); free(E); free(fn); free(Wh); free(lg);
    fs_ckpt_close(nm.c);
    t_rmdir(tmp);
    free(tmp);
}

START_TEST(eval_matches_naive)
{
    eval_family("mixtral");
    eval_family("qwen2_moe");
    eval_family("qwen3_moe");
}
END_TEST

/* Waves: the experts' Hessians are gathered a wave of experts at a time;
 * 1, 3 and all experts per wave give byte-identical output folders, and the
 * profile has one "expert" span per wave and MoE layer, named with its
 * experts and rows, nested inside its layer's span. */
static int same_files(const char *a, const char *b)
{
    char cmd[20000];
    snprintf(cmd, sizeof cmd, "cmp -s '%s/model.safetensors' '%s/model.safetensors' 2>/dev/null || "
             "(for f in '%s'/*; do cmp -s \"$f\" '%s'/$(basename \"$f\") || exit 1; done)", a, b, a, b);
    return system(cmd) == 0;
}

/* --quantize-experts-only from the command line: the config tells loaders
 * (vLLM's and GPTQModel's `dynamic`) which modules stay unquantized, the
 * output verifies and evaluates, RTN without calibration keeps the same
 * modules, and a model without routed experts is refused. */
START_TEST(experts_only_cli)
{
    const char *bin = getenv("FS_BIN");
    char *tmp = t_tmpdir(), src[1000], dense[1000], cmd[20000], err[4096], o[1100];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dense, sizeof dense, "%s/dense", tmp);
    int g = gen("qwen2_moe", src);
    if (g < 0 || !bin) { printf("check_moe: FS_GEN_TINY/FS_BIN unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    snprintf(cmd, sizeof cmd, "%s/calib.u32", tmp);
    FILE *f = fopen(cmd, "wb");
    for (uint32_t i = 0; i < 512; i++) { uint32_t id = (i * 7) % 90; fwrite(&id, 4, 1, f); }
    fclose(f);
    snprintf(o, sizeof o, "%s/gptq", tmp);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s' --calib '%s/calib.u32' --samples 4 --seq-len 32 "
             "--min-expert-tokens 8 --format gptq --quantize-experts-only", bin, src, o, tmp);
    ck_assert_msg(t_run_cmd(cmd, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "7 kept unquantized"), "%s", err);    /* 4 attention + 3 shared per layer */
    snprintf(cmd, sizeof cmd, "%s/config.json", o);
    json_error_t je;
    json_t *cfg = json_load_file(cmd, 0, &je), *qc = json_object_get(cfg, "quantization_config");
    ck_assert_msg(json_is_true(json_object_get(qc, "quantize_experts_only")), "%s", cmd);
    json_t *dyn = json_object_get(qc, "dynamic");
    ck_assert_int_eq(json_object_size(dyn), 2 * 2);            /* per layer: attention, the shared expert */
    ck_assert_ptr_nonnull(json_object_get(dyn, "-:^model\\.layers\\.1\\.self_attn\\.[^.]+$"));
    ck_assert_ptr_nonnull(json_object_get(dyn, "-:^model\\.layers\\.0\\.mlp\\.shared_expert\\.[^.]+$"));
    json_decref(cfg);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --verify > /dev/null && '%s' eval --model '%s' --tokens '%s/calib.u32' "
             "--seq-len 32 > /dev/null", bin, o, bin, o, tmp);
    ck_assert_msg(t_run_cmd(cmd, err, sizeof err) == 0, "%s", err);
    /* RTN from the weights alone keeps the same modules */
    snprintf(o, sizeof o, "%s/rtn", tmp);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s' --method rtn --quantize-experts-only --quiet", bin,
             src, o);
    ck_assert_msg(t_run_cmd(cmd, err, sizeof err) == 0, "%s", err);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = NULL;
    ck_assert_int_eq(fs_ckpt_open(&ctx, o, &c), FS_OK);
    ck_assert_ptr_nonnull(fs_ckpt_find(c, "model.layers.0.self_attn.q_proj.weight"));
    ck_assert_ptr_null(fs_ckpt_find(c, "model.layers.0.self_attn.q_proj.qweight"));
    ck_assert_ptr_nonnull(fs_ckpt_find(c, "model.layers.0.mlp.experts.0.gate_proj.qweight"));
    fs_ckpt_close(c);
    /* a dense model has nothing to quantize that way */
    ck_assert_int_eq(gen("llama", dense), 0);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s/x' --method rtn --quantize-experts-only", bin, dense,
             tmp);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--quantize-experts-only") && strstr(err, "no routed experts"), "%s", err);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

START_TEST(waves_same_output_and_spans)
{
    const char *bin = getenv("FS_BIN");
    char *tmp = t_tmpdir(), src[1000], cmd[20000], err[4096], prof[1100], o[3][1100];
    snprintf(src, sizeof src, "%s/src", tmp);
    int g = gen("qwen3_moe", src);
    if (g < 0 || !bin) { printf("check_moe: FS_GEN_TINY/FS_BIN unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    snprintf(prof, sizeof prof, "%s/trace.json", tmp);
    snprintf(cmd, sizeof cmd, "%s/calib.u32", tmp);     /* calibration ids: 0..89 repeated */
    FILE *f = fopen(cmd, "wb");
    for (uint32_t i = 0; i < 512; i++) { uint32_t id = i % 90; fwrite(&id, 4, 1, f); }
    fclose(f);
    const char *wave[3] = {"", "--experts-per-wave 1", "--experts-per-wave 3 --profile"};
    for (int k = 0; k < 3; k++) {
        snprintf(o[k], sizeof o[k], "%s/out%d", tmp, k);
        snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --out '%s' --calib '%s/calib.u32' --samples 4 "
                 "--seq-len 32 --min-expert-tokens 8 --quiet %s %s", bin, src, o[k], tmp, wave[k], k == 2 ? prof : "");
        ck_assert_msg(t_run_cmd(cmd, err, sizeof err) == 0, "%s", err);
    }
    ck_assert_msg(same_files(o[0], o[1]), "1 expert per wave changed the output");
    ck_assert_msg(same_files(o[0], o[2]), "3 experts per wave changed the output");
    snprintf(cmd, sizeof cmd, "%s/config.json", src);
    json_error_t je;
    json_t *cfg = json_load_file(cmd, 0, &je);
    const int E = (int)json_integer_value(json_object_get(cfg, "num_experts"));
    const int NL = (int)json_integer_value(json_object_get(cfg, "num_hidden_layers"));
    json_decref(cfg);
    ck_assert_int_gt(E, 3);
    json_t *root = json_load_file(prof, 0, &je), *ev = json_object_get(root, "traceEvents");
    ck_assert_msg(root != NULL, "%s", je.text);
    int spans = 0, per_layer[64] = {0};
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *cat = json_string_value(json_object_get(e, "cat"));
        if (!cat || strcmp(cat, "expert")) continue;
        spans++;
        int layer = (int)json_integer_value(json_object_get(json_object_get(e, "args"), "layer"));
        ck_assert(layer >= 0 && layer < NL && layer < 64);
        char want[64];                                   /* waves of 3: experts 0-2, 3-5, ... */
        snprintf(want, sizeof want, "experts %d-%d (", 3 * per_layer[layer],
                 3 * per_layer[layer] + 2 < E - 1 ? 3 * per_layer[layer] + 2 : E - 1);
        ck_assert_msg(strstr(json_string_value(json_object_get(e, "name")), want), "%s: want %s",
                      json_string_value(json_object_get(e, "name")), want);
        per_layer[layer]++;
        double ts = json_real_value(json_object_get(e, "ts")), end = ts + json_real_value(json_object_get(e, "dur"));
        int inside = 0;
        for (size_t k = 0; k < json_array_size(ev); k++) {
            json_t *l = json_array_get(ev, k);
            const char *lc = json_string_value(json_object_get(l, "cat"));
            if (!lc || strcmp(lc, "layer") || json_integer_value(json_object_get(json_object_get(l, "args"), "layer")) != layer)
                continue;
            double lt = json_real_value(json_object_get(l, "ts")), le = lt + json_real_value(json_object_get(l, "dur"));
            inside = ts >= lt - 1 && end <= le + 1;
        }
        ck_assert_msg(inside, "wave span of layer %d outside its layer span", layer);
    }
    ck_assert_int_gt(spans, 0);
    for (int l = 0; l < NL && l < 64; l++)               /* a MoE layer: ceil(E / 3) waves */
        ck_assert_msg(per_layer[l] == 0 || per_layer[l] == (E + 2) / 3, "layer %d: %d waves", l, per_layer[l]);
    json_decref(root);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_moe(void)
{
    Suite *s = suite_create("moe");
    TCase *tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mixtral_hessians);
    tcase_add_test(tc, qwen2_moe_hessians);
    tcase_add_test(tc, qwen3_moe_hessians);
    tcase_add_test(tc, experts_only_qwen2_moe);
    tcase_add_test(tc, experts_only_qwen3_moe);
    tcase_add_test(tc, experts_only_cli);
    tcase_add_test(tc, starved_expert_policies);
    suite_add_tcase(s, tc);
    tc = tcase_create("eval");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, eval_matches_naive);
    tcase_add_test(tc, waves_same_output_and_spans);
    suite_add_tcase(s, tc);
    return s;
}
