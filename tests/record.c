/* record.c: the linear recorder and pipeline runner of record.h. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/record.h"
#include "src/backend/backend.h"
#include "src/formats/ckpt.h"
#include "src/models/forward.h"
#include "src/models/model.h"
#include "src/pipeline/pipeline.h"

void t_rec_linear(void *arg, int layer, const char *name, const float *H, int64_t in,
                  const fs_layer_result *r)
{
    t_rec *c = arg;
    ck_assert_int_lt(c->n, T_MAXREC);
    int i = c->n++;
    snprintf(c->name[i], sizeof c->name[i], "%s", name);
    c->layer[i] = layer;
    c->loss[i] = r->loss;
    c->rtn[i] = r->rtn_loss;
    c->in[i] = in;
    c->H[i] = malloc(sizeof(float) * (size_t)(in * in));
    memcpy(c->H[i], H, sizeof(float) * (size_t)(in * in));
    c->dqn[i] = r->rows * r->cols;
    c->dq[i] = malloc(sizeof(float) * (size_t)c->dqn[i]);
    memcpy(c->dq[i], r->dequant, sizeof(float) * (size_t)c->dqn[i]);
}

void t_rec_free(t_rec *c)
{
    for (int i = 0; i < c->n; i++) { free(c->H[i]); free(c->dq[i]); }
}

const float *t_rec_H(const t_rec *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->name[i], name)) return c->H[i];
    return NULL;
}

int t_rec_find(const t_rec *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->name[i], name)) return i;
    ck_abort_msg("no record of %s", name);
    return -1;
}

void t_run_pipeline_with(const char *src, const char *dst, fs_format fmt, int64_t nseq, int64_t T,
                         const uint32_t *ids, t_rec *r, const char *work, int spill, int64_t batch,
                         int experts_only, fs_expert_policy pol, int64_t minr, fs_moe_report *rep)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU, NULL, &ctx.be), FS_OK);
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    fs_fwd f;
    ck_assert_msg(fs_ckpt_open(&ctx, src, &c) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_model_from_config(&ctx, c->config, "config.json", &m) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_fwd_init(&ctx, c->config, m, &f) == FS_OK, "%s", ctx.errmsg);
    fs_pipe_opts po;
    memset(&po, 0, sizeof po);
    fs_quant_opts_default(&po.q);
    po.q.bits = 4;
    po.q.group_size = 32;
    po.q.sym = 0;
    po.q.act_order = 1;
    po.q.gptq_v1 = fmt == FS_FMT_GPTQ;
    po.act_f32 = 1;
    po.batch_tokens = batch;
    po.on_linear = t_rec_linear;
    po.arg = r;
    po.work = work;
    po.spill = spill;
    po.experts_only = experts_only;
    po.expert_policy = pol;
    po.min_expert_tokens = minr;
    po.moe_report = rep;
    if (rep) { rep->policy = pol; rep->min_tokens = minr; }
    fs_outckpt *o = NULL;
    ck_assert_int_eq(fs_out_open(&ctx, dst, 0, 0, fmt, &po.q, &o), FS_OK);
    ck_assert_msg(fs_pipeline_run(&ctx, c, m, &f, ids, nseq, T, &po, o) == FS_OK, "%s", ctx.errmsg);
    json_t *extra = rep ? fs_moe_report_json(rep, m) : NULL;
    if (rep) ck_assert_ptr_nonnull(extra);
    ck_assert_msg(fs_out_finish(&ctx, o, c->config, c->dir, extra) == FS_OK, "%s", ctx.errmsg);
    json_decref(extra);
    fs_fwd_free(&f);
    fs_model_free(m);
    fs_ckpt_close(c);
    fs_backend_free(ctx.be);
}

void t_run_pipeline(const char *src, const char *dst, fs_format fmt, int64_t nseq, int64_t T,
                    const uint32_t *ids, t_rec *r, const char *work, fs_expert_policy pol,
                    int64_t minr, fs_moe_report *rep)
{
    t_run_pipeline_with(src, dst, fmt, nseq, T, ids, r, work, 0, 2 * T, 0, pol, minr, rep);
}

double *t_read_linear(fs_ckpt *c, const fs_qinfo *qi, const char *base, int64_t *out, int64_t *in)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    float *W = NULL;
    int64_t a = 0, b = 0;
    ck_assert_msg(fs_qread_linear(&ctx, c, qi, base, &W, &a, &b) == FS_OK, "%s", ctx.errmsg);
    double *d = malloc(sizeof(double) * (size_t)(a * b));
    for (int64_t i = 0; i < a * b; i++) d[i] = W[i];
    free(W);
    if (out) *out = a;
    if (in) *in = b;
    return d;
}

double *t_read_tensor(fs_ckpt *c, const char *name, int64_t *n)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    float *v = NULL;
    ck_assert_msg(fs_ckpt_read_f32(&ctx, c, name, &v) == FS_OK, "%s", ctx.errmsg);
    const fs_ckpt_entry *e = fs_ckpt_find(c, name);
    int64_t k = 1;
    for (int d = 0; d < e->t->ndim; d++) k *= e->t->shape[d];
    double *d = malloc(sizeof(double) * (size_t)k);
    for (int64_t i = 0; i < k; i++) d[i] = v[i];
    free(v);
    if (n) *n = k;
    return d;
}
