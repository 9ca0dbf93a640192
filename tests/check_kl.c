/* check_kl.c: `forge-stream eval --base` (specifications.md §11.2).
 *
 *  - on the committed tiny llama (tests/data/kl: an F32 original and the GPTQ
 *    4-bit checkpoint forge-stream made of it), every figure equals the
 *    golden that tools/ref_kl.py computed once with its own numpy forward in
 *    float64 from those same files: relative 1e-4 (our forward is float32;
 *    the two agree to about 1e-6 when the golden was made), tokens and the
 *    count of same top-1 tokens exactly (the smallest top-2 logit gap of the
 *    golden's tokens is 8e-5, a thousand times the float error);
 *  - a model against itself: KL 0, top-1 share 1, RMS dp 0, same perplexity;
 *  - each side of eval --base gives plain eval's perplexity of that model;
 *  - BF16 and FP8 originals evaluate (finite figures);
 *  - mismatched models (family, hidden size, vocabulary) and a missing base
 *    are refused with exit 2 naming both folders and what differs, before
 *    any figure is printed.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/util.h"

#define DATA "tests/data/kl"
#define REL_TOL 1e-4
#define EVAL_ARGS "--tokens " DATA "/tokens.u32 --seq-len 32 --act-dtype f32 --quiet"

/* The JSON object bin printed for args (NULL when it did not exit 0: err has why). */
static json_t *eval_json(const char *bin, const char *args, char *err, size_t errn)
{
    char *tmp = t_tmpdir(), out[4200], cmd[20000];
    snprintf(out, sizeof out, "%s/eval.json", tmp);
    snprintf(cmd, sizeof cmd, "'%s' eval %s --json > '%s'", bin, args, out);
    json_t *j = NULL;
    if (t_run_cmd(cmd, err, errn) == 0) j = json_load_file(out, 0, NULL);
    t_rmdir(tmp);
    free(tmp);
    return j;
}

static double num(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_number(v), "no number \"%s\"", key);
    return json_number_value(v);
}

START_TEST(kl_matches_numpy_golden)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin) { printf("check_kl: FS_BIN unset, eval --base golden skipped\n"); return; }
    json_error_t je;
    json_t *g = json_load_file(DATA "/golden.json", 0, &je);
    ck_assert_msg(g != NULL, DATA "/golden.json: %s", je.text);   /* a missing fixture fails */
    char err[4096];
    json_t *j = eval_json(bin, "--model " DATA "/gptq --base " DATA "/base " EVAL_ARGS, err, sizeof err);
    ck_assert_msg(j != NULL, "eval --base: %s", err);
    /* the fixture compares two different models, so every figure below can fail */
    ck_assert_msg(num(g, "kl_mean") > 1e-5 && num(g, "ppl") != num(g, "ppl_base"), "golden of identical models");
    const char *keys[] = {"ppl", "nll_mean", "ppl_base", "nll_mean_base", "kl_mean", "kl_median", "kl_p99", "kl_max",
                          "rms_dp", "rms_dp_top"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const double a = num(j, keys[i]), b = num(g, keys[i]);
        ck_assert_msg(fabs(a - b) <= REL_TOL * fabs(b), "%s: eval %.9g, numpy golden %.9g (relative %.2g)", keys[i], a, b,
                      fabs(a - b) / fabs(b));
    }
    const double n = num(g, "tokens");
    ck_assert_int_eq((long long)num(j, "tokens"), (long long)n);
    ck_assert_int_eq((long long)num(j, "windows"), (long long)num(g, "windows"));
    ck_assert_int_eq(llround(num(j, "same_top") * n), (long long)num(g, "same_top_count"));
    json_decref(j);
    json_decref(g);
    /* the table: every figure named */
    char cmd[9000], outp[4200], *tmp = t_tmpdir();
    snprintf(outp, sizeof outp, "%s/table.txt", tmp);
    snprintf(cmd, sizeof cmd, "'%s' eval --model " DATA "/gptq --base " DATA "/base " EVAL_ARGS " > '%s'", bin, outp);
    ck_assert_int_eq(t_run_cmd(cmd, err, sizeof err), 0);
    FILE *f = fopen(outp, "r");
    char txt[4096];
    size_t k = f ? fread(txt, 1, sizeof txt - 1, f) : 0;
    txt[k] = '\0';
    if (f) fclose(f);
    ck_assert_msg(strstr(txt, "base PPL") && strstr(txt, "KL(base || model)") && strstr(txt, "p99") &&
                  strstr(txt, "same top-1") && strstr(txt, "RMS dp"), "table: %s", txt);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* Hand-worked: identical logits give KL 0 exactly, every top-1 the same, no
 * probability change, and the base's perplexity is the model's. */
START_TEST(kl_model_against_itself)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin) { printf("check_kl: FS_BIN unset, eval --base of a model against itself skipped\n"); return; }
    char err[4096];
    json_t *j = eval_json(bin, "--model " DATA "/base --base " DATA "/base " EVAL_ARGS, err, sizeof err);
    ck_assert_msg(j != NULL, "eval --base itself: %s", err);
    ck_assert(num(j, "kl_mean") == 0 && num(j, "kl_median") == 0 && num(j, "kl_p99") == 0 && num(j, "kl_max") == 0);
    ck_assert(num(j, "same_top") == 1 && num(j, "rms_dp") == 0 && num(j, "rms_dp_top") == 0);
    ck_assert(num(j, "ppl") == num(j, "ppl_base") && num(j, "nll_mean") == num(j, "nll_mean_base"));
    json_decref(j);
}
END_TEST

/* Models that cannot be compared token for token: exit 2 naming both folders
 * and what differs, nothing on stdout. */
START_TEST(kl_mismatch_refused)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin || !getenv("FS_GEN_TINY")) { printf("check_kl: FS_BIN/FS_GEN_TINY unset, mismatch cases skipped\n"); return; }
    char *tmp = t_tmpdir();
    struct { const char *dir, *gen, *want; } cases[] = {
        {"wide", "--type llama --dtype f32 --shards 1 --hidden 64 --intermediate 32 --heads 2", "hidden_size 32 vs 64"},
        {"vocab", "--type llama --dtype f32 --shards 1 --hidden 32 --intermediate 32 --heads 2 --vocab 128", "vocab_size 96 vs 128"},
        {"qwen", "--type qwen2 --dtype f32 --shards 1 --hidden 32 --intermediate 32 --heads 2", "model_type llama vs qwen2"},
        {"missing", NULL, "missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char d[4200], out[4300], cmd[12000], err[4096];
        snprintf(d, sizeof d, "%s/%s", tmp, cases[i].dir);
        snprintf(out, sizeof out, "%s/%s.out", tmp, cases[i].dir);
        if (cases[i].gen) ck_assert_int_eq(t_gen_tiny(d, "%s", cases[i].gen), 0);
        if (cases[i].gen)
            snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --base " DATA "/base " EVAL_ARGS " > '%s'", bin, d, out);
        else
            snprintf(cmd, sizeof cmd, "'%s' eval --model " DATA "/gptq --base '%s' " EVAL_ARGS " > '%s'", bin, d, out);
        int rc = t_run_cmd(cmd, err, sizeof err);
        ck_assert_msg(rc == 2, "%s: exit %d: %s", cases[i].dir, rc, err);
        ck_assert_msg(strstr(err, d), "%s: the message does not name %s: %s", cases[i].dir, d, err);
        if (cases[i].gen)
            ck_assert_msg(strstr(err, DATA "/base") && strstr(err, cases[i].want), "%s: %s", cases[i].dir, err);
        FILE *f = fopen(out, "r");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fgetc(f), EOF);                 /* no figure printed */
        fclose(f);
    }
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* The two models stream side by side without touching each other: the
 * figures of each equal plain eval's of it alone, to the printed digit. */
START_TEST(kl_each_side_is_plain_eval)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin) { printf("check_kl: FS_BIN unset, eval --base vs plain eval skipped\n"); return; }
    char err[4096];
    json_t *b = eval_json(bin, "--model " DATA "/gptq --base " DATA "/base " EVAL_ARGS, err, sizeof err);
    ck_assert_msg(b != NULL, "eval --base: %s", err);
    json_t *q = eval_json(bin, "--model " DATA "/gptq " EVAL_ARGS, err, sizeof err);
    ck_assert_msg(q != NULL, "eval: %s", err);
    json_t *o = eval_json(bin, "--model " DATA "/base " EVAL_ARGS, err, sizeof err);
    ck_assert_msg(o != NULL, "eval of the base: %s", err);
    ck_assert(num(b, "ppl") == num(q, "ppl") && num(b, "nll_mean") == num(q, "nll_mean"));
    ck_assert(num(b, "ppl_base") == num(o, "ppl") && num(b, "nll_mean_base") == num(o, "nll_mean"));
    ck_assert_ptr_null(json_object_get(q, "kl_mean"));          /* plain eval: no comparison keys */
    json_decref(b);
    json_decref(q);
    json_decref(o);
}
END_TEST

/* Originals in BF16 and FP8 (gen-tiny's FP8 deepseek_v3 against its own F32
 * master weights, both ways): finite figures, KL > 0, exit 0. */
START_TEST(kl_bf16_and_fp8_originals)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin || !getenv("FS_GEN_TINY")) { printf("check_kl: FS_BIN/FS_GEN_TINY unset, BF16/FP8 originals skipped\n"); return; }
    char *tmp = t_tmpdir(), a[4200], b[4200], c[4200], args[14000], err[4096];
    snprintf(a, sizeof a, "%s/bf16", tmp);
    snprintf(b, sizeof b, "%s/fp8", tmp);
    snprintf(c, sizeof c, "%s/master", tmp);
    ck_assert_int_eq(t_gen_tiny(a, "--type llama --seed 17 --layers 2 --dtype bf16 --shards 1 --hidden 32 --intermediate 32 --heads 2"), 0);
    ck_assert_int_eq(t_gen_tiny(b, "--type deepseek_v3 --seed 5 --fp8"), 0);
    ck_assert_int_eq(t_gen_tiny(c, "--type deepseek_v3 --seed 5 --no-fp8 --dtype f32 --hidden 160"), 0);
    const char *pairs[][2] = {{DATA "/gptq", a}, {c, b}, {b, c}};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "--model '%s' --base '%s' " EVAL_ARGS, pairs[i][0], pairs[i][1]);
        json_t *j = eval_json(bin, args, err, sizeof err);
        ck_assert_msg(j != NULL, "eval %s: %s", args, err);
        const double kl = num(j, "kl_mean"), same = num(j, "same_top");
        ck_assert_msg(isfinite(kl) && kl > 0 && isfinite(num(j, "kl_max")) && same > 0 && same <= 1 &&
                      isfinite(num(j, "ppl_base")), "eval %s: KL %g, top-1 %g", args, kl, same);
        json_decref(j);
    }
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_kl(void)
{
    Suite *s = suite_create("kl");
    TCase *tc = tcase_create("eval-base");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, kl_matches_numpy_golden);
    tcase_add_test(tc, kl_model_against_itself);
    tcase_add_test(tc, kl_mismatch_refused);
    tcase_add_test(tc, kl_each_side_is_plain_eval);
    tcase_add_test(tc, kl_bf16_and_fp8_originals);
    suite_add_tcase(s, tc);
    return s;
}
