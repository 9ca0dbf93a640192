/* check_plan.c: the memory / I/O / time model (src/plan.h).
 *
 * The configs are written here; the expected bytes, Hessians, activations
 * and FLOPs are worked out by hand from the config sizes in this file, never
 * taken from the model description.  Generated checkpoints ($FS_GEN_TINY)
 * check that the config-only estimate and the exact header sizes agree, and
 * their per-layer bytes are summed here from the safetensors headers.  The
 * command line is checked through $FS_BIN (skipped when unset).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "src/pipeline/plan.h"
#include "tests/util.h"


/* tiny llama: H 64, I 172, 2 layers, 4 heads of 16, 2 kv heads, vocab 96 */
#define LL_H 64
#define LL_I 172
#define LL_Q (4 * 16)
#define LL_KV (2 * 16)
#define LL_V 96
static const char llama_cfg[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    " \"head_dim\": 16, \"vocab_size\": 96, \"torch_dtype\": \"bfloat16\", \"rms_norm_eps\": 1e-5}";

/* tiny qwen3_moe: H 64, 16 experts of 32, top 2 */
#define MO_H 64
#define MO_IE 32
#define MO_E 16
static const char moe_cfg[] =
    "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"moe_intermediate_size\": 32,"
    " \"num_experts\": 16, \"num_experts_per_tok\": 2, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"vocab_size\": 96,"
    " \"torch_dtype\": \"bfloat16\"}";

/* DeepSeek-V3-like, FP8 block 128 (sizes small, shapes as in the real one) */
static const char ds_cfg[] =
    "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 256, \"intermediate_size\": 512,"
    " \"moe_intermediate_size\": 128, \"n_routed_experts\": 32, \"n_shared_experts\": 1,"
    " \"num_experts_per_tok\": 4, \"num_hidden_layers\": 3, \"first_k_dense_replace\": 1,"
    " \"num_attention_heads\": 4, \"q_lora_rank\": 96, \"kv_lora_rank\": 64, \"qk_nope_head_dim\": 32,"
    " \"qk_rope_head_dim\": 16, \"v_head_dim\": 32, \"vocab_size\": 128, \"torch_dtype\": \"bfloat16\","
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}";

static fs_model *model_of(fs_ctx *ctx, const char *text, fs_plan_opts *o)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ck_assert_msg(j != NULL, "config: %s", e.text);
    fs_model *m = NULL;
    ck_assert_int_eq(fs_model_from_config(ctx, j, "test", &m), FS_OK);
    fs_plan_opts_default(o);
    ck_assert_int_eq(fs_plan_opts_from_config(ctx, o, j, "test"), FS_OK);
    json_decref(j);
    return m;
}

#define BIG (1ull << 50)          /* a budget that holds anything here */

START_TEST(llama_hand_numbers)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_plan_opts o;
    fs_model *m = model_of(&ctx, llama_cfg, &o);
    o.samples = 4;
    o.seq_len = 32;
    o.host_mem = BIG;
    fs_plan p;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    ck_assert_int_eq(p.nlayers, 2);
    const uint64_t lin = (uint64_t)LL_Q * LL_H + 2ull * LL_KV * LL_H + (uint64_t)LL_H * LL_Q +
                         3ull * LL_I * LL_H;
    const uint64_t layer_bytes = (lin + 2 * LL_H) * 2;          /* bf16, two norms */
    const uint64_t T = 4 * 32;
    for (int l = 0; l < 2; l++) {
        const fs_plan_layer *r = &p.layers[l];
        ck_assert_uint_eq(r->read_bytes, layer_bytes);
        ck_assert_uint_eq(r->hess_bytes, (uint64_t)LL_I * LL_I * 4);     /* down_proj's input */
        ck_assert_uint_eq(r->act_bytes, T * LL_H * 2);
        ck_assert_uint_eq(r->w32_bytes, (lin + 2 * LL_H) * 4);
        ck_assert_int_eq(r->moe, 0);
        ck_assert_int_eq(r->waves, 0);
        /* groups: qkv, o, gate/up (in H = 64 = Q), down (in I) */
        double hf = (double)T * (3.0 * LL_H * LL_H + (double)LL_I * LL_I);
        ck_assert_double_eq_tol(r->hess_flops, hf, 1e-6 * hf);
        double gf = (double)LL_Q * LL_H * LL_H + 2.0 * LL_KV * LL_H * LL_H + (double)LL_H * LL_Q * LL_Q +
                    2.0 * LL_I * LL_H * LL_H + (double)LL_H * LL_I * LL_I;
        ck_assert_double_eq_tol(r->gptq_flops, gf, 1e-6 * gf);
        ck_assert(r->est_s >= r->io_s && r->est_s >= r->compute_s);
        ck_assert(r->host_peak >= r->act_bytes + r->hess_bytes + 2 * r->read_bytes);
        ck_assert(r->host_peak <= BIG);
    }
    ck_assert_uint_eq(p.global_bytes, (2ull * LL_V * LL_H + LL_H) * 2);   /* embed, lm_head, norm */
    ck_assert_uint_eq(p.read_bytes, p.global_bytes + 2 * layer_bytes);
    ck_assert_int_eq(p.gpu, 0);
    ck_assert_uint_eq(p.gpu_peak, 0);
    /* f32 activations double the boundary */
    fs_plan p4;
    o.act_bytes = 4;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p4), FS_OK);
    ck_assert_uint_eq(p4.layers[0].act_bytes, 2 * p.layers[0].act_bytes);
    /* eval --base (plan --eval-base): two f32 boundaries, both in the host peak */
    fs_plan pe;
    o.act_sets = 2;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &pe), FS_OK);
    ck_assert_uint_eq(pe.layers[0].act_bytes, 2 * T * LL_H * 4);
    ck_assert_uint_eq(pe.layers[0].host_peak, p4.layers[0].host_peak + T * LL_H * 4);
    fs_plan_free(&pe);
    o.act_sets = 0;
    /* text and JSON carry the same numbers */
    char *js = NULL;
    ck_assert_int_eq(fs_plan_json(&ctx, &p, &js), FS_OK);
    json_t *j = json_loads(js, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *l0 = json_array_get(json_object_get(j, "layers"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(l0, "read_bytes")), (json_int_t)layer_bytes);
    ck_assert_int_eq(json_integer_value(json_object_get(l0, "act_bytes")), (json_int_t)(T * LL_H * 2));
    /* disk: three boundaries in the work folder (resume keeps the journal's and the one
     * before while the next is written); the output is everything written but them */
    json_t *tot = json_object_get(j, "total");
    ck_assert_int_eq(json_integer_value(json_object_get(tot, "disk_work_bytes")), (json_int_t)(3 * T * LL_H * 2));
    uint64_t dout = 0, dwork = 0;
    fs_plan_disk(&p, 0, &dout, &dwork);
    ck_assert_uint_eq(dwork, 3 * T * LL_H * 2);
    ck_assert_uint_eq(dout, p.write_bytes - 2 * T * LL_H * 2);
    ck_assert_int_eq(json_integer_value(json_object_get(tot, "disk_out_bytes")), (json_int_t)dout);
    json_decref(j);
    free(js);
    char *txt = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&txt, &n);
    fs_plan_print(&p, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(txt, "model.layers.1"));
    ck_assert_ptr_nonnull(strstr(txt, "assumptions: disk 7.0 GB/s"));
    ck_assert_ptr_nonnull(strstr(txt, "three activation boundaries"));
    free(txt);
    fs_plan_free(&p4);
    fs_plan_free(&p);
    fs_plan_free(&p);                                            /* twice: zeroed, harmless */
    fs_model_free(m);
}
END_TEST

/* Refused one byte below the minimum (naming it and the layer), accepted at it. */
START_TEST(budget_refusal)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_plan_opts o;
    fs_model *m = model_of(&ctx, llama_cfg, &o);
    o.samples = 16;
    o.seq_len = 64;
    o.batch_tokens = 64;                 /* chunks much smaller than the 1024-token boundary */
    o.host_mem = BIG;
    fs_plan p;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    uint64_t min = p.host_min;
    ck_assert(min > 0 && min <= p.host_peak);
    fs_plan_free(&p);

    o.host_mem = min - 1;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_ERR_USAGE);
    ck_assert_ptr_null(p.layers);
    char want[64];
    snprintf(want, sizeof want, "(%llu bytes) of host memory", (unsigned long long)min);
    ck_assert_msg(strstr(ctx.errmsg, want) && strstr(ctx.errmsg, "the largest layer (model.layers.") &&
                  strstr(ctx.errmsg, "--host-mem"), "message: %s", ctx.errmsg);

    fs_ctx_init(&ctx);
    o.host_mem = min;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    ck_assert(p.host_peak <= min);
    ck_assert_int_eq(p.layers[0].spilled, 1);           /* at the minimum the boundary streams */
    /* ... from two raw files in the work folder beside the three boundaries */
    uint64_t dout = 0, dwork = 0;
    fs_plan_disk(&p, 0, &dout, &dwork);
    ck_assert_uint_eq(dwork, 5 * p.layers[0].act_bytes);
    ck_assert_uint_eq(p.layers[0].act_bytes, 16ull * 64 * LL_H * 2);
    fs_plan_free(&p);

    /* GPU: the same for --gpu-mem */
    o.host_mem = BIG;
    o.gpu_mem = BIG;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    ck_assert_int_eq(p.gpu, 1);
    uint64_t gmin = p.gpu_min;
    ck_assert(gmin >= p.layers[0].hess_bytes);
    fs_plan_free(&p);
    o.gpu_mem = gmin - 1;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_ERR_USAGE);
    ck_assert_msg(strstr(ctx.errmsg, "of GPU memory (--gpu-mem"), "message: %s", ctx.errmsg);
    fs_ctx_init(&ctx);
    o.gpu_mem = gmin;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    fs_plan_free(&p);
    fs_model_free(m);
}
END_TEST

START_TEST(moe_waves)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_plan_opts o;
    fs_model *m = model_of(&ctx, moe_cfg, &o);
    o.samples = 8;
    o.seq_len = 64;
    o.host_mem = BIG;
    o.gpu_mem = BIG;
    fs_plan p;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    const fs_plan_layer *r = &p.layers[0];
    ck_assert_int_eq(r->moe, 1);
    ck_assert_int_eq(r->experts, MO_E);
    /* per expert on the GPU: the largest of its Hessians (H x H); its f32 weights are in
     * the layer's arena (the whole layer goes up at once) and its codes wait on the host */
    ck_assert_uint_eq(r->expert_bytes, (uint64_t)MO_H * MO_H * 4);
    ck_assert(r->gpu_peak >= 2 * r->w32_bytes);       /* two layers' arenas are kept */
    ck_assert_int_eq(r->waves, 1);
    ck_assert_int_eq(r->experts_per_wave, MO_E);
    /* expert Hessian FLOPs use the routed tokens: T x top_k / E per expert */
    double T = 8.0 * 64, Te = T * 2 / MO_E, H = MO_H;
    double hf = T * (H * H + 4.0 * 16 * 4 * 16) + MO_E * Te * (H * H + (double)MO_IE * MO_IE);
    ck_assert_double_eq_tol(r->hess_flops, hf, 1e-6 * hf);
    uint64_t gmin = p.gpu_min;
    fs_plan_free(&p);

    int last = 1;
    const uint64_t unit = MO_H * MO_H * 4;
    uint64_t budgets[] = {gmin + 12 * unit, gmin + 4 * unit, gmin};    /* fewer experts per wave each */
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        o.gpu_mem = budgets[i];
        ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
        ck_assert_int_ge(p.layers[0].waves, 1);
        ck_assert_int_gt(p.layers[0].waves, last);
        ck_assert_int_ge(p.layers[0].experts_per_wave * p.layers[0].waves, MO_E);
        ck_assert(p.layers[0].gpu_peak <= budgets[i]);
        last = p.layers[0].waves;
        fs_plan_free(&p);
    }
    /* at the minimum the dense phase (a Hessian and the solver beside the layer's weights)
     * sets the floor on a GPU; the waves take what room it leaves: more than one wave */
    ck_assert_int_gt(last, 1);

    /* the CPU backend sizes waves from the host budget */
    o.gpu_mem = 0;
    o.host_mem = BIG;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    ck_assert_int_eq(p.layers[0].waves, 1);
    /* the CPU path decodes every expert of the layer to f32 at once: a wave adds
     * only its Hessians and codes, and the minimum holds all the f32 weights */
    ck_assert_uint_eq(p.layers[0].expert_bytes, (uint64_t)MO_H * MO_H * 4 + 3ull * MO_IE * MO_H);
    ck_assert(p.layers[0].host_min > (uint64_t)MO_E * 3 * MO_IE * MO_H * 4 + p.layers[0].w32_bytes / 2);
    ck_assert(p.layers[0].host_min >= p.layers[0].w32_bytes + p.layers[0].expert_bytes);
    uint64_t hmin = p.host_min;
    fs_plan_free(&p);
    o.host_mem = hmin;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    ck_assert_int_eq(p.layers[0].waves, MO_E);
    fs_plan_free(&p);
    fs_model_free(m);
}
END_TEST

/* FP8: 1-byte weights + F32 128x128 block scales; experts and dense layers. */
START_TEST(fp8_config_bytes)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_plan_opts o;
    fs_model *m = model_of(&ctx, ds_cfg, &o);
    ck_assert_int_eq(o.fp8_block[0], 128);
    o.samples = 2;
    o.seq_len = 16;
    o.host_mem = BIG;
    fs_plan p;
    ck_assert_int_eq(fs_plan_compute(&ctx, m, NULL, &o, &p), FS_OK);
    /* layer 0 is dense (first_k_dense_replace 1): H 256, q_lora 96, kv_lora 64 */
    const uint64_t H = 256, I = 512, qk = 48, nh = 4;
#define F8(out, in) ((uint64_t)(out) * (in) + (((out) + 127) / 128) * (((in) + 127) / 128) * 4)
    uint64_t attn = F8(96, H) + F8(64 + 16, H) + F8(nh * qk, 96) + F8(nh * (32 + 32), 64) + F8(H, nh * 32);
    uint64_t norms = (96 + 64 + 2 * H) * 2;
    ck_assert_uint_eq(p.layers[0].read_bytes, attn + norms + 2 * F8(I, H) + F8(H, I));
    /* layer 1: router (bf16) + e_score_correction_bias (f32) + shared + 32 experts */
    uint64_t moe = 32 * H * 2 + 32 * 4 + 2 * F8(128, H) + F8(H, 128) + 32 * (2 * F8(128, H) + F8(H, 128));
#undef F8
    ck_assert_uint_eq(p.layers[1].read_bytes, attn + norms + moe);
    ck_assert_int_eq(p.layers[1].moe, 1);
    ck_assert_int_ge(p.layers[1].waves, 1);
    ck_assert_uint_eq(p.layers[1].hess_bytes, H * H * 4);
    fs_plan_free(&p);
    fs_model_free(m);
}
END_TEST

static int gen(const char *dir, const char *args)
{
    return t_gen_tiny(dir, "%s", args);
}

/* Generated checkpoints: config-only estimate == exact header bytes. */
START_TEST(config_matches_checkpoint)
{
    if (!getenv("FS_GEN_TINY") || !*getenv("FS_GEN_TINY")) {
        printf("check_plan: FS_GEN_TINY unset, config-vs-checkpoint test skipped (run via make test)\n");
        return;
    }
    static const char *cases[] = {
        "--type llama --dtype bf16", "--type qwen2 --dtype bf16 --shards 2", "--type qwen3_moe --dtype bf16",
        "--type deepseek_v3 --dtype bf16 --mtp", "--type mixtral --dtype f32 --tied",
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *dir = t_tmpdir();
        ck_assert_ptr_nonnull(dir);
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/m", dir);
        ck_assert_msg(gen(sub, cases[k]) == 0, "gen-tiny %s", cases[k]);
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_ckpt *c = NULL;
        ck_assert_msg(fs_ckpt_open(&ctx, sub, &c) == FS_OK, "%s", ctx.errmsg);
        fs_model *m = NULL;
        ck_assert_int_eq(fs_model_from_config(&ctx, c->config, "config.json", &m), FS_OK);
        fs_plan_opts o;
        fs_plan_opts_default(&o);
        ck_assert_int_eq(fs_plan_opts_from_config(&ctx, &o, c->config, "config.json"), FS_OK);
        /* gen-tiny writes no torch_dtype: say what it stored */
        if (strstr(cases[k], "f32")) o.wbytes = 4;
        o.samples = 2;
        o.seq_len = 16;
        o.host_mem = BIG;
        fs_plan pc, pe;
        ck_assert_msg(fs_plan_compute(&ctx, m, c, &o, &pc) == FS_OK, "%s", ctx.errmsg);
        ck_assert_msg(fs_plan_compute(&ctx, m, NULL, &o, &pe) == FS_OK, "%s", ctx.errmsg);
        ck_assert_int_eq(pc.exact, 1);
        ck_assert_int_eq(pe.exact, 0);
        ck_assert_int_eq(pc.nlayers, pe.nlayers);
        /* per layer, the sum of the headers' byte extents, summed here */
        uint64_t total = 0;
        for (size_t i = 0; i < c->ntensors; i++) total += c->entries[i].t->nbytes;
        for (int l = 0; l < pc.nlayers; l++) {
            char pre[64];
            snprintf(pre, sizeof pre, "model.layers.%d.", l);
            uint64_t sum = 0;
            for (size_t i = 0; i < c->ntensors; i++)
                if (!strncmp(c->entries[i].t->name, pre, strlen(pre))) sum += c->entries[i].t->nbytes;
            ck_assert_msg(pc.layers[l].read_bytes == sum, "%s layer %d: %llu vs %llu", cases[k], l,
                          (unsigned long long)pc.layers[l].read_bytes, (unsigned long long)sum);
            ck_assert_msg(pe.layers[l].read_bytes == sum, "%s layer %d: estimated %llu, on disk %llu", cases[k],
                          l, (unsigned long long)pe.layers[l].read_bytes, (unsigned long long)sum);
            ck_assert_uint_eq(pc.layers[l].hess_bytes, pe.layers[l].hess_bytes);
        }
        ck_assert_uint_eq(pc.read_bytes, total);
        ck_assert_uint_eq(pe.global_bytes, pc.global_bytes);
        fs_plan_free(&pc);
        fs_plan_free(&pe);
        fs_model_free(m);
        fs_ckpt_close(c);
        t_rmdir(dir);
        free(dir);
    }
}
END_TEST

/* `forge-stream plan` as a process: exit codes and the one-line errors. */
static int run_bin(const char *args, char *err, size_t n)
{
    char *dir = t_tmpdir();
    char cmd[8192], ef[4200];
    snprintf(ef, sizeof ef, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "'%s' plan %s >/dev/null 2>'%s'", getenv("FS_BIN"), args, ef);
    fflush(stdout);
    int st = system(cmd);
    FILE *f = fopen(ef, "r");
    size_t k = f ? fread(err, 1, n - 1, f) : 0;
    err[k] = 0;
    if (f) fclose(f);
    t_rmdir(dir);
    free(dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(cli)
{
    if (!getenv("FS_BIN") || !*getenv("FS_BIN")) {
        printf("check_plan: FS_BIN unset, plan command test skipped (run via make test)\n");
        return;
    }
    char *dir = t_tmpdir();
    char cfg[4200], args[8192], err[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *f = fopen(cfg, "w");
    ck_assert_ptr_nonnull(f);
    fputs(moe_cfg, f);
    fclose(f);
    snprintf(args, sizeof args, "--model '%s' --samples 8 --seq-len 64 --host-mem 1G", cfg);
    ck_assert_int_eq(run_bin(args, err, sizeof err), 0);
    snprintf(args, sizeof args, "--model '%s' --samples 8 --seq-len 64 --host-mem 1G --gpu-mem 1G --json", dir);
    ck_assert_int_eq(run_bin(args, err, sizeof err), 0);
    snprintf(args, sizeof args, "--model '%s' --host-mem 10K", cfg);
    ck_assert_int_eq(run_bin(args, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "forge-stream: error: the largest layer (model.layers.") && strstr(err, "needs") &&
                  strchr(err, '\n') == err + strlen(err) - 1, "stderr: %s", err);
    snprintf(args, sizeof args, "--model '%s' --gpu-mem lots", cfg);
    ck_assert_int_eq(run_bin(args, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--gpu-mem 'lots'"), "stderr: %s", err);
    snprintf(args, sizeof args, "--model '%s' --act-dtype f16", cfg);
    ck_assert_int_eq(run_bin(args, err, sizeof err), 2);
    ck_assert_int_eq(run_bin("--samples 4", err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--model is required"), "stderr: %s", err);
    t_rmdir(dir);
    free(dir);
}
END_TEST

Suite *fs_suite_plan(void)
{
    Suite *s = suite_create("plan");
    TCase *t = tcase_create("llama_hand_numbers");
    tcase_add_test(t, llama_hand_numbers);
    suite_add_tcase(s, t);
    t = tcase_create("budget_refusal");
    tcase_add_test(t, budget_refusal);
    suite_add_tcase(s, t);
    t = tcase_create("moe_waves");
    tcase_add_test(t, moe_waves);
    suite_add_tcase(s, t);
    t = tcase_create("fp8_config_bytes");
    tcase_add_test(t, fp8_config_bytes);
    suite_add_tcase(s, t);
    t = tcase_create("config_matches_checkpoint");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, config_matches_checkpoint);
    suite_add_tcase(s, t);
    t = tcase_create("cli");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, cli);
    suite_add_tcase(s, t);
    return s;
}
