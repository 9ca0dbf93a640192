/* check_roundtrip.c: whole tiny checkpoints (from tools/gen-tiny) quantized
 * through the engine with real GPTQ (Hessians of random correlated inputs),
 * written in the forge and gptq formats, read back: every quantized linear
 * decodes to the solver's dequant bit for bit, everything else is copied
 * (FP8 as BF16, scales consumed), and config.json says what was done. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/util.h"
#include "src/backend/backend.h"
#include "src/formats/qread.h"
#include "src/models/model.h"
#include "hessian/hessian.h"

static int gen(const char *type, const char *dir, const char *extra)
{
    return t_gen_tiny(dir, "--type %s --shards 3 %s", type, extra);
}

typedef struct saved {
    char *base;
    float *dequant;
    int64_t n;
} saved;

static void roundtrip(const char *type, const char *extra, fs_format fmt, int bits, int64_t g, int sym,
                      int act, int stat)
{
    char *tmp = t_tmpdir(), src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/out", tmp);
    int gr = gen(type, src, extra);
    if (gr < 0) {
        printf("check_roundtrip: FS_GEN_TINY unset, %s round trip skipped\n", type);
        t_rmdir(tmp); free(tmp);
        return;
    }
    ck_assert_int_eq(gr, 0);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU, NULL, &ctx.be), FS_OK);
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    ck_assert_msg(fs_ckpt_open(&ctx, src, &c) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_model_from_config(&ctx, c->config, "config.json", &m) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_model_check(&ctx, m, c) == FS_OK, "%s", ctx.errmsg);
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.bits = bits; q.group_size = g; q.sym = sym; q.act_order = act; q.static_groups = stat;
    q.gptq_v1 = fmt == FS_FMT_GPTQ;
    fs_outckpt *o = NULL;
    ck_assert_msg(fs_out_open(&ctx, dst, 0, 20000, fmt, &q, &o) == FS_OK, "%s", ctx.errmsg);
    saved sv[512];
    int ns = 0;
    t_rng r = {77};
    for (int i = 0; i < m->nglobal; i++)
        if (fs_ckpt_find(c, m->global[i].name)) ck_assert_int_eq(fs_out_copy(&ctx, o, c, m->global[i].name), FS_OK);
    for (int l = 0; l < m->nlayers + m->nmtp; l++) {
        const fs_mlayer *L = &m->layers[l];
        if (L->mtp) {
            for (size_t k = 0; k < c->ntensors; k++) {
                const char *tn = c->entries[k].t->name;
                if (!strncmp(tn, "model.layers.2.", 15) && !fs_ckpt_is_scale(c, tn))
                    ck_assert_int_eq(fs_out_copy(&ctx, o, c, tn), FS_OK);
            }
            continue;
        }
        for (int i = 0; i < L->nlin; i++) {
            const fs_mlinear *x = &L->lin[i];
            char name[1100];
            float *W = NULL;
            snprintf(name, sizeof name, "%s.weight", x->name);
            ck_assert_int_eq(fs_ckpt_read_f32(&ctx, c, name, &W), FS_OK);
            float *X = t_corr_inputs(&r, (int)(2 * x->in), (int)x->in);
            float *H = malloc(sizeof(float) * (size_t)(x->in * x->in));
            ck_assert_int_eq(fs_hess_from_inputs(&ctx, ctx.be, X, 2 * x->in, x->in, 64, H), FS_OK);
            fs_layer_result res;
            ck_assert_msg(fs_layer_quantize(&ctx, W, H, NULL, x->out, x->in, &q, &res) == FS_OK, "%s", ctx.errmsg);
            ck_assert(res.loss <= res.rtn_loss);
            ck_assert_int_eq(fs_out_add_linear(&ctx, o, x->name, &res), FS_OK);
            ck_assert_int_lt(ns, 512);
            sv[ns].base = strdup(x->name);
            sv[ns].n = x->out * x->in;
            sv[ns].dequant = malloc(sizeof(float) * (size_t)sv[ns].n);
            memcpy(sv[ns].dequant, res.dequant, sizeof(float) * (size_t)sv[ns].n);
            ns++;
            fs_layer_result_free(&res);
            free(W); free(X); free(H);
        }
        for (int i = 0; i < L->nother; i++)
            if (fs_ckpt_find(c, L->other[i].name)) ck_assert_int_eq(fs_out_copy(&ctx, o, c, L->other[i].name), FS_OK);
    }
    ck_assert_msg(fs_out_finish(&ctx, o, c->config, c->dir, NULL) == FS_OK, "%s", ctx.errmsg);

    /* read back through the project's decoder */
    fs_ckpt *d = NULL;
    fs_qinfo qi;
    ck_assert_msg(fs_ckpt_open(&ctx, dst, &d) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_gt(d->nshards, 1);                      /* 20 kB shards: several */
    ck_assert_int_eq(fs_qinfo_from_config(&ctx, d->config, &qi), FS_OK);
    ck_assert_int_eq(qi.quantized, 1);
    ck_assert_int_eq(qi.fmt, fmt);
    ck_assert_int_eq(qi.bits, bits);
    json_t *qc = json_object_get(d->config, "quantization_config");
    ck_assert_str_eq(json_string_value(json_object_get(qc, "quant_method")), fmt == FS_FMT_GPTQ ? "gptq" : "forge");
    if (fmt == FS_FMT_GPTQ) {
        ck_assert_str_eq(json_string_value(json_object_get(qc, "checkpoint_format")), "gptq");
        /* desc_act: g_idx may differ from c / G (dynamic groups), never with static ones */
        ck_assert(json_is_true(json_object_get(qc, "desc_act")) == (act && !stat && g != -1));
    }
    for (int i = 0; i < ns; i++) {
        float *D = NULL;
        int64_t out = 0, in = 0;
        ck_assert_msg(fs_qread_linear(&ctx, d, &qi, sv[i].base, &D, &out, &in) == FS_OK, "%s", ctx.errmsg);
        ck_assert_int_eq(out * in, sv[i].n);
        ck_assert_msg(memcmp(D, sv[i].dequant, sizeof(float) * (size_t)sv[i].n) == 0,
                      "%s: decoded weight differs from the solver's dequant", sv[i].base);
        free(D);
        free(sv[i].base);
        free(sv[i].dequant);
    }
    /* scales consumed, FP8 copied as BF16, every non-linear tensor present */
    for (size_t k = 0; k < d->ntensors; k++) {
        const char *tn = d->entries[k].t->name;
        size_t n = strlen(tn);
        ck_assert_msg(n < 10 || strcmp(tn + n - 10, "_scale_inv"), "%s copied", tn);
        ck_assert(d->entries[k].t->dtype != FS_DT_F8_E4M3);
    }
    for (int i = 0; i < m->nglobal; i++)
        if (fs_ckpt_find(c, m->global[i].name)) ck_assert_ptr_nonnull(fs_ckpt_find(d, m->global[i].name));
    fs_ckpt_close(d);
    fs_model_free(m);
    fs_ckpt_close(c);
    fs_backend_free(ctx.be);
    t_rmdir(tmp);
    free(tmp);
}

START_TEST(llama_forge)       { roundtrip("llama", "--dtype bf16", FS_FMT_FORGE, 4, 32, 0, 1, 0); }
END_TEST
START_TEST(llama_gptq)        { roundtrip("llama", "--dtype f16", FS_FMT_GPTQ, 4, 32, 0, 1, 0); }
END_TEST
START_TEST(qwen3_moe_gptq_3b) { roundtrip("qwen3_moe", "", FS_FMT_GPTQ, 3, 64, 1, 0, 1); }
END_TEST
START_TEST(deepseek_forge)    { roundtrip("deepseek_v3", "--mtp", FS_FMT_FORGE, 2, -1, 0, 0, 0); }
END_TEST
START_TEST(deepseek_gptq)     { roundtrip("deepseek_v3", "--mtp", FS_FMT_GPTQ, 8, 32, 1, 1, 1); }
END_TEST
START_TEST(qwen2_gptq_asym2b) { roundtrip("qwen2", "--dtype f32", FS_FMT_GPTQ, 2, 32, 0, 0, 0); }
END_TEST

Suite *fs_suite_roundtrip(void)
{
    Suite *s = suite_create("roundtrip");
    TCase *tc = tcase_create("formats");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, llama_forge);
    tcase_add_test(tc, llama_gptq);
    tcase_add_test(tc, qwen3_moe_gptq_3b);
    tcase_add_test(tc, deepseek_forge);
    tcase_add_test(tc, deepseek_gptq);
    tcase_add_test(tc, qwen2_gptq_asym2b);
    suite_add_tcase(s, tc);
    return s;
}
