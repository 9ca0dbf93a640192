/* check_serve.c: checkpoints the serving engines load, run as processes
 * (FS_BIN): every field of config.json's quantization_config checked
 * against the options given (never against what the code wrote
 * elsewhere); the compressed-tensors output through inspect --verify and
 * eval against the native format of the same run (same perplexity: both
 * decode to the solver's dequant bit for bit); its tensors per linear; its
 * refusals before anything is written; the serving lines and --serving;
 * the pack-width warning; a killed compressed-tensors run resumed to the
 * same bytes. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/util.h"

static char err[16384];
#define run(...) t_run_fmt(err, sizeof err, __VA_ARGS__)

typedef struct env {
    char *tmp;
    const char *bin;
    char model[4200], moe[4200], odd[4200], calib[4200];
} env;

/* 4096 ids below 96 (gen-tiny's vocabulary), deterministic. */
static void write_calib(const char *path)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    t_rng r = {2026};
    for (int i = 0; i < 4096; i++) {
        uint32_t v = t_next(&r) % 96;
        ck_assert_int_eq(fwrite(&v, 4, 1, f), 1);
    }
    fclose(f);
}

/* 0 when the suite cannot run (FS_BIN or FS_GEN_TINY unset: skipped, said). */
static int setup(env *e, int need_moe)
{
    memset(e, 0, sizeof *e);
    e->bin = getenv("FS_BIN");
    if (!e->bin || !*e->bin) { printf("serve: FS_BIN unset, test skipped\n"); return 0; }
    e->tmp = t_tmpdir();
    ck_assert_ptr_nonnull(e->tmp);
    snprintf(e->model, sizeof e->model, "%s/llama", e->tmp);
    snprintf(e->moe, sizeof e->moe, "%s/moe", e->tmp);
    snprintf(e->odd, sizeof e->odd, "%s/odd", e->tmp);
    snprintf(e->calib, sizeof e->calib, "%s/calib.u32", e->tmp);
    /* intermediate 192: every in divides by 32 and by 8 (the 4-bit pack width) */
    int g = t_gen_tiny(e->model, "--type llama --intermediate 192 --shards 1");
    if (g < 0) { printf("serve: FS_GEN_TINY unset, test skipped\n"); t_rmdir(e->tmp); free(e->tmp); return 0; }
    ck_assert_int_eq(g, 0);
    if (need_moe) ck_assert_int_eq(t_gen_tiny(e->moe, "--type qwen3_moe --intermediate 128 --expert-width 64 --moe-every-layer --shards 2"), 0);
    ck_assert_int_eq(t_gen_tiny(e->odd, "--type llama --shards 1"), 0);   /* intermediate 172 */
    write_calib(e->calib);
    return 1;
}

static void teardown(env *e)
{
    t_rmdir(e->tmp);
    free(e->tmp);
}

/* quantization_config of dir/config.json (a new reference). */
static json_t *qconfig(const char *dir)
{
    char p[4300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(p, 0, &je);
    ck_assert_msg(c != NULL, "%s: %s", p, je.text);
    json_t *q = json_incref(json_object_get(c, "quantization_config"));
    json_decref(c);
    ck_assert_ptr_nonnull(q);
    return q;
}

static int has_key(const json_t *o, const char *k)
{
    return json_object_get(o, k) != NULL;
}

/* The inspect table line of tensor `name ` holds dtype and shape. */
static void line_has(const char *txt, const char *name, const char *dtype, const char *shape)
{
    const char *l = strstr(txt, name);
    ck_assert_msg(l != NULL, "no %s in %s", name, txt);
    const char *end = strchr(l, '\n');
    char line[512];
    snprintf(line, sizeof line, "%.*s", end ? (int)(end - l) : 200, l);
    char d[32];
    snprintf(d, sizeof d, " %s ", dtype);
    ck_assert_msg(strstr(line, d) && strstr(line, shape), "'%s': want %s %s", line, dtype, shape);
}

/* Runs quantize with `flags` into e->tmp/name (removed first); exit code. */
static int quant(env *e, const char *model, const char *name, const char *flags)
{
    run("rm -rf '%s/%s'", e->tmp, name);
    return run("'%s' quantize --model '%s' --out '%s/%s' %s", e->bin, model, e->tmp, name, flags);
}

/* ---- deliverables 4 and 6: every field says what was done ------------------------ */

START_TEST(gptq_fields)
{
    env e;
    if (!setup(&e, 0)) return;
    char cal[4400], o[4400];
    snprintf(cal, sizeof cal, "--calib '%s' --samples 8 --seq-len 128 --quiet", e.calib);
    struct { const char *flags; int desc_act, stat; } cs[] = {
        {"--act-order --static-groups --group-size 32 --damp 0.05", 0, 1},
        {"--act-order --group-size 32 --damp 0.05", 1, 0},
        {"--act-order --group-size -1 --damp 0.05", 0, 0},   /* one group: g_idx all 0 = c / G */
        {"--group-size 64 --asym --damp 0.05", 0, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        char f[9000];
        snprintf(f, sizeof f, "%s --format gptq %s", cal, cs[i].flags);
        ck_assert_msg(quant(&e, e.model, "g", f) == 0, "%s: %s", cs[i].flags, err);
        snprintf(o, sizeof o, "%s/g", e.tmp);
        json_t *q = qconfig(o);
        ck_assert_str_eq(json_string_value(json_object_get(q, "quant_method")), "gptq");
        ck_assert_msg(json_is_true(json_object_get(q, "desc_act")) == cs[i].desc_act, "%s: desc_act", cs[i].flags);
        ck_assert(json_is_boolean(json_object_get(q, "desc_act")));          /* vLLM needs the key */
        ck_assert_msg(json_is_true(json_object_get(q, "static_groups")) == cs[i].stat, "%s", cs[i].flags);
        ck_assert(json_is_true(json_object_get(q, "sym")) == (strstr(cs[i].flags, "--asym") == NULL));
        ck_assert(json_is_true(json_object_get(q, "true_sequential")));
        ck_assert(json_real_value(json_object_get(q, "damp_percent")) == 0.05);
        ck_assert_int_eq(json_integer_value(json_object_get(q, "group_size")), strstr(cs[i].flags, "-1") ? -1 :
                         strstr(cs[i].flags, "64") ? 64 : 32);
        ck_assert_str_eq(json_string_value(json_object_get(q, "method")), "gptq");
        json_decref(q);
    }
    teardown(&e);
}
END_TEST

START_TEST(rtn_fields)
{
    env e;
    if (!setup(&e, 0)) return;
    char o[4400], f[9000];
    const char *fmts[] = {"gptq", "forge", "compressed-tensors"};
    for (int withcal = 0; withcal < 2; withcal++)
        for (int k = 0; k < 3; k++) {
            snprintf(f, sizeof f, "--method rtn --act-order --static-groups --group-size 32 --format %s%s%s%s", fmts[k],
                     withcal ? " --calib '" : "", withcal ? e.calib : "", withcal ? "' --samples 8 --seq-len 128" : "");
            ck_assert_msg(quant(&e, e.model, "r", f) == 0, "%s: %s", f, err);
            /* the header line: "rtn 4-bit g32 sym, format ..." with no act-order */
            ck_assert_msg(strstr(err, "rtn 4-bit g32 sym, format") && !strstr(err, "act-order"), "%s: %s", f, err);
            snprintf(o, sizeof o, "%s/r", e.tmp);
            json_t *q = qconfig(o);
            ck_assert_str_eq(json_string_value(json_object_get(q, "method")), "rtn");
            if (k == 0) {
                ck_assert(json_is_false(json_object_get(q, "desc_act")));
                ck_assert(json_is_false(json_object_get(q, "static_groups")));
                ck_assert(!has_key(q, "true_sequential") && !has_key(q, "damp_percent"));
            } else if (k == 1) {
                ck_assert(json_is_false(json_object_get(q, "act_order")));
                ck_assert(json_is_false(json_object_get(q, "static_groups")));
            } else {
                json_t *w = json_object_get(json_object_get(json_object_get(q, "config_groups"), "group_0"), "weights");
                ck_assert(json_is_null(json_object_get(w, "actorder")));
            }
            json_decref(q);
        }
    teardown(&e);
}
END_TEST

START_TEST(ct_fields_and_tensors)
{
    env e;
    if (!setup(&e, 0)) return;
    char o[4400], f[9000];
    struct { const char *flags; const char *actorder; int sym; int64_t g; int gidx; } cs[] = {
        {"--act-order --static-groups --group-size 32", "weight", 1, 32, 0},
        {"--act-order --group-size -1 --bits 8", "weight", 1, -1, 0},   /* one group: static order, no g_idx */
        {"--group-size 32 --asym --bits 8", NULL, 0, 32, 0},
        {"--group-size -1 --bits 2", NULL, 1, -1, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --quiet --format compressed-tensors %s", e.calib,
                 cs[i].flags);
        ck_assert_msg(quant(&e, e.model, "c", f) == 0, "%s: %s", cs[i].flags, err);
        snprintf(o, sizeof o, "%s/c", e.tmp);
        json_t *q = qconfig(o);
        ck_assert_str_eq(json_string_value(json_object_get(q, "quant_method")), "compressed-tensors");
        ck_assert_str_eq(json_string_value(json_object_get(q, "format")), "pack-quantized");
        json_t *w = json_object_get(json_object_get(json_object_get(q, "config_groups"), "group_0"), "weights");
        int bits = strstr(cs[i].flags, "--bits 8") ? 8 : strstr(cs[i].flags, "--bits 2") ? 2 : 4;
        ck_assert_int_eq(json_integer_value(json_object_get(w, "num_bits")), bits);
        ck_assert_str_eq(json_string_value(json_object_get(w, "type")), "int");
        ck_assert(json_is_true(json_object_get(w, "symmetric")) == cs[i].sym);
        ck_assert_str_eq(json_string_value(json_object_get(w, "strategy")), cs[i].g == -1 ? "channel" : "group");
        if (cs[i].g == -1) ck_assert(json_is_null(json_object_get(w, "group_size")));
        else ck_assert_int_eq(json_integer_value(json_object_get(w, "group_size")), cs[i].g);
        if (cs[i].actorder) ck_assert_str_eq(json_string_value(json_object_get(w, "actorder")), cs[i].actorder);
        else ck_assert(json_is_null(json_object_get(w, "actorder")));
        json_t *ign = json_object_get(q, "ignore");
        ck_assert_int_eq(json_array_size(ign), 1);
        ck_assert_str_eq(json_string_value(json_array_get(ign, 0)), "lm_head");
        json_decref(q);
        /* the tensors of one linear: names, dtypes and shapes (in 64, out 64) */
        ck_assert_msg(run("'%s' inspect '%s' --verify > '%s/ins.txt'", e.bin, o, e.tmp) == 0, "%s", err);
        char p[4400];
        snprintf(p, sizeof p, "%s/ins.txt", e.tmp);
        char *txt = NULL;
        FILE *fp = fopen(p, "r");
        ck_assert_ptr_nonnull(fp);
        size_t cap = 1 << 20, n = 0;
        txt = malloc(cap);
        n = fread(txt, 1, cap - 1, fp);
        txt[n] = '\0';
        fclose(fp);
        char want[256];
        int pf = 32 / bits, ng = cs[i].g == -1 ? 1 : (int)(64 / cs[i].g);
        snprintf(want, sizeof want, "[64, %d]", (64 + pf - 1) / pf);
        line_has(txt, "model.layers.0.self_attn.q_proj.weight_packed ", "I32", want);
        snprintf(want, sizeof want, "[64, %d]", ng);
        line_has(txt, "model.layers.0.self_attn.q_proj.weight_scale ", "F32", want);
        line_has(txt, "model.layers.0.self_attn.q_proj.weight_shape ", "I64", "[2]");
        ck_assert((strstr(txt, "q_proj.weight_zero_point") != NULL) == !cs[i].sym);
        ck_assert((strstr(txt, "q_proj.weight_g_idx") != NULL) == cs[i].gidx);
        ck_assert(strstr(txt, "q_proj.qweight") == NULL && strstr(txt, "q_proj.weight ") == NULL);
        ck_assert_msg(strstr(txt, "verify: ok"), "%s", txt);
        free(txt);
        if (cs[i].g == -1) {
            /* found by make fuzz: a group_size beside strategy "channel" (64, "32", -2)
               was ignored and the checkpoint read as per-row; it is refused */
            json_t *bad[] = {json_integer(64), json_string("32"), json_integer(-2)};
            char cp[4500];
            snprintf(cp, sizeof cp, "%s/config.json", o);
            for (int k = 0; k < 3; k++) {
                json_t *c = json_load_file(cp, 0, NULL);
                ck_assert_ptr_nonnull(c);
                json_t *wq = json_object_get(json_object_get(json_object_get(json_object_get(c, "quantization_config"),
                                                                             "config_groups"), "group_0"), "weights");
                ck_assert_int_eq(json_object_set_new(wq, "group_size", bad[k]), 0);
                ck_assert_int_eq(json_dump_file(c, cp, JSON_INDENT(2)), 0);
                json_object_set_new(wq, "group_size", json_null());
                ck_assert_int_eq(run("'%s' inspect '%s' > /dev/null", e.bin, o), 2);
                ck_assert_msg(strstr(err, "strategy \"channel\" takes no group_size"), "%s", err);
                ck_assert_int_eq(json_dump_file(c, cp, JSON_INDENT(2)), 0);
                json_decref(c);
            }
            ck_assert_msg(run("'%s' inspect '%s' > /dev/null", e.bin, o) == 0, "%s", err);
        }
    }
    teardown(&e);
}
END_TEST

/* ---- deliverable 1: the same model in the native and compressed-tensors
 * formats, one run's options: identical perplexity (bit-exact decodes) ------ */

static void ppl_of(env *e, const char *dir, char *buf, size_t n)
{
    ck_assert_msg(run("'%s' eval --model '%s' --tokens '%s' --seq-len 128 --skip-tokens 1024 --json --quiet > '%s/ppl.json'",
                      e->bin, dir, e->calib, e->tmp) == 0, "eval %s: %s", dir, err);
    char p[4400];
    snprintf(p, sizeof p, "%s/ppl.json", e->tmp);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    ck_assert_ptr_nonnull(j);
    snprintf(buf, n, "%.9g/%.12g", json_real_value(json_object_get(j, "ppl")),
             json_real_value(json_object_get(j, "nll_mean")));
    ck_assert(json_real_value(json_object_get(j, "ppl")) > 1.0);
    json_decref(j);
}

static void same_ppl(env *e, const char *model, const char *flags)
{
    char f[9000], a[4400], b[4400], pa[128], pb[128];
    snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --quiet %s --format forge", e->calib, flags);
    ck_assert_msg(quant(e, model, "nat", f) == 0, "%s", err);
    snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --quiet %s --format compressed-tensors", e->calib, flags);
    ck_assert_msg(quant(e, model, "ct", f) == 0, "%s", err);
    snprintf(a, sizeof a, "%s/nat", e->tmp);
    snprintf(b, sizeof b, "%s/ct", e->tmp);
    ck_assert_msg(run("'%s' inspect '%s' --verify > /dev/null", e->bin, b) == 0, "%s", err);
    ppl_of(e, a, pa, sizeof pa);
    ppl_of(e, b, pb, sizeof pb);
    printf("serve: %s %s: native %s, compressed-tensors %s (ppl/nll)\n", model, flags, pa, pb);
    ck_assert_msg(!strcmp(pa, pb), "%s: native %s vs compressed-tensors %s", flags, pa, pb);
}

START_TEST(ct_same_ppl_dense)
{
    env e;
    if (!setup(&e, 0)) return;
    same_ppl(&e, e.model, "--act-order --static-groups --group-size 32");
    same_ppl(&e, e.model, "--group-size -1 --act-order");
    same_ppl(&e, e.model, "--asym --bits 8 --group-size 64 --act-order --static-groups");
    teardown(&e);
}
END_TEST

START_TEST(ct_moe)
{
    env e;
    if (!setup(&e, 1)) return;
    same_ppl(&e, e.moe, "--group-size 32 --act-order --static-groups");
    /* experts only: ignore holds lm_head, every router and every kept linear */
    char f[9000], o[4400];
    snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --quiet --format compressed-tensors "
             "--quantize-experts-only --group-size 32", e.calib);
    ck_assert_msg(quant(&e, e.moe, "x", f) == 0, "%s", err);
    snprintf(o, sizeof o, "%s/x", e.tmp);
    json_t *q = qconfig(o), *ign = json_object_get(q, "ignore");
    const char *must[] = {"lm_head", "model.layers.0.mlp.gate", "model.layers.1.mlp.gate",   /* MoE in both layers */
                          "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj"};
    for (size_t k = 0; k < sizeof must / sizeof *must; k++) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(ign); i++)
            found |= !strcmp(json_string_value(json_array_get(ign, i)), must[k]);
        ck_assert_msg(found, "ignore lacks %s", must[k]);
    }
    for (size_t i = 0; i < json_array_size(ign); i++)
        ck_assert_msg(!strstr(json_string_value(json_array_get(ign, i)), "experts."), "an expert ignored");
    ck_assert(json_is_true(json_object_get(q, "quantize_experts_only")));
    json_decref(q);
    ck_assert_msg(run("'%s' inspect '%s' --verify > '%s/i.txt'", e.bin, o, e.tmp) == 0, "%s", err);
    ck_assert_int_eq(run("grep -q 'model.layers.0.mlp.experts.0.down_proj.weight_packed' '%s/i.txt'", e.tmp), 0);
    ck_assert_int_eq(run("grep -q 'model.layers.0.self_attn.q_proj.weight ' '%s/i.txt'", e.tmp), 0);
    teardown(&e);
}
END_TEST

/* ---- refusals, serving lines, warnings ------------------------------------- */

START_TEST(refusals)
{
    env e;
    if (!setup(&e, 0)) return;
    char o[4400];
    snprintf(o, sizeof o, "%s/no", e.tmp);
    struct { const char *model, *flags, *says; } cs[] = {
        /* in 172 of down_proj is not a multiple of 32: no whole groups */
        {e.odd, "--method rtn --format compressed-tensors --group-size 32", "down_proj.weight: in 172 is not a multiple of --group-size 32"},
        {e.model, "--method rtn --format forge --serving vllm", "--serving vllm: vLLM would not load"},
        {e.model, "--method rtn --format compressed-tensors --bits 2 --group-size 32 --serving sglang", "4 and 8 bits only"},
        {e.model, "--method rtn --format compressed-tensors --bits 3 --group-size 32 --serving any", "--serving any: neither"},
        {e.odd, "--method rtn --format gptq --group-size 32 --serving vllm", "in 172 is not a multiple of 8"},
        /* compressed-tensors 0.20 has no dynamic groups */
        {e.model, "--calib CALIB --samples 8 --seq-len 128 --format compressed-tensors --act-order --group-size 32",
         "--act-order needs --static-groups"},
        {e.model, "--method rtn --format gptq2", "--format 'gptq2': must be forge, gptq or compressed-tensors"},
        {e.model, "--method rtn --serving tgi", "--serving 'tgi': must be vllm, sglang or any"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        char fl[9000];
        const char *c = strstr(cs[i].flags, "CALIB");
        if (c) snprintf(fl, sizeof fl, "%.*s'%s'%s", (int)(c - cs[i].flags), cs[i].flags, e.calib, c + 5);
        else snprintf(fl, sizeof fl, "%s", cs[i].flags);
        int code = run("'%s' quantize --model '%s' --out '%s' %s", e.bin, cs[i].model, o, fl);
        ck_assert_msg(code == 2, "%s: exit %d: %s", cs[i].flags, code, err);
        ck_assert_msg(strstr(err, cs[i].says), "%s: says '%s', not '%s'", cs[i].flags, err, cs[i].says);
        ck_assert_msg(access(o, F_OK) != 0, "%s: %s was created", cs[i].flags, o);
    }
    teardown(&e);
}
END_TEST

START_TEST(serving_lines)
{
    env e;
    if (!setup(&e, 0)) return;
    char o[4400];
    snprintf(o, sizeof o, "%s/s", e.tmp);
    /* gptq, sym 4-bit g32, shapes 64 x 64: not Marlin's (in % 128): plain GPTQ */
    ck_assert_int_eq(quant(&e, e.model, "s", "--method rtn --format gptq --group-size 32"), 0);
    ck_assert_msg(strstr(err, "serving: vLLM: loads, fallback kernels") && strstr(err, "serving: SGLang: loads, fallback"),
                  "%s", err);
    ck_assert_int_eq(run("'%s' inspect '%s' | grep -c '^serving: ' | grep -qx 2", e.bin, o), 0);
    /* dynamic act-order groups in gptq: vLLM will not load; --serving vllm turns them static */
    char f[9000];
    snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --format gptq --group-size 32 --act-order", e.calib);
    ck_assert_int_eq(quant(&e, e.model, "s", f), 0);
    ck_assert_msg(strstr(err, "serving: vLLM: will not load: desc_act true"), "%s", err);
    ck_assert_int_eq(run("'%s' inspect '%s' | grep -q '^serving: vLLM: will not load'", e.bin, o), 0);
    strncat(f, " --serving vllm", sizeof f - strlen(f) - 1);
    ck_assert_int_eq(quant(&e, e.model, "s", f), 0);
    ck_assert_msg(strstr(err, "--serving vllm: --act-order with static groups"), "%s", err);
    json_t *q = qconfig(o);
    ck_assert(json_is_false(json_object_get(q, "desc_act")) && json_is_true(json_object_get(q, "static_groups")));
    json_decref(q);
    teardown(&e);
}
END_TEST

START_TEST(pack_width_warning)
{
    env e;
    if (!setup(&e, 0)) return;
    ck_assert_int_eq(quant(&e, e.odd, "w", "--method rtn --format gptq --group-size 32"), 0);
    ck_assert_msg(strstr(err, "warning: model.layers.0.mlp.down_proj.weight: in 172 is not a multiple of 8 "
                              "(the int32 pack width at 4 bits; 2 linears like it in all)"), "%s", err);
    ck_assert_int_eq(quant(&e, e.model, "w", "--method rtn --format gptq --group-size 32"), 0);
    ck_assert_msg(!strstr(err, "pack width"), "%s", err);
    ck_assert_int_eq(quant(&e, e.odd, "w", "--method rtn --format forge --group-size 32"), 0);
    ck_assert_msg(!strstr(err, "pack width"), "%s", err);
    teardown(&e);
}
END_TEST

/* ---- --resume of a compressed-tensors run -------------------------------------- */

START_TEST(ct_resume)
{
    env e;
    if (!setup(&e, 0)) return;
    char f[9000];
    snprintf(f, sizeof f, "--calib '%s' --samples 8 --seq-len 128 --quiet --format compressed-tensors --group-size 32 "
             "--act-order --static-groups --asym", e.calib);
    ck_assert_msg(quant(&e, e.model, "ref", f) == 0, "%s", err);
    run("rm -rf '%s/k'", e.tmp);
    int code = run("FORGE_STREAM_CRASH_AT='tensor-write:20' '%s' quantize --model '%s' --out '%s/k' %s", e.bin, e.model,
                   e.tmp, f);
    ck_assert_msg(code != 0, "the crash point was not reached: %s", err);
    ck_assert_msg(run("'%s' quantize --resume --out '%s/k' --quiet", e.bin, e.tmp) == 0, "%s", err);
    ck_assert_msg(run("cmp '%s/ref/model.safetensors' '%s/k/model.safetensors' && cmp '%s/ref/config.json' '%s/k/config.json'",
                      e.tmp, e.tmp, e.tmp, e.tmp) == 0, "resumed output differs: %s", err);
    teardown(&e);
}
END_TEST

Suite *fs_suite_serve(void)
{
    Suite *s = suite_create("serve");
    TCase *tc = tcase_create("metadata");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, gptq_fields);
    tcase_add_test(tc, rtn_fields);
    tcase_add_test(tc, ct_fields_and_tensors);
    suite_add_tcase(s, tc);
    tc = tcase_create("ct_roundtrip");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, ct_same_ppl_dense);
    tcase_add_test(tc, ct_moe);
    tcase_add_test(tc, ct_resume);
    suite_add_tcase(s, tc);
    tc = tcase_create("engines");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, serving_lines);
    tcase_add_test(tc, pack_width_warning);
    suite_add_tcase(s, tc);
    return s;
}
