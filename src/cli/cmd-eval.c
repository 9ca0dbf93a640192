/* cmd-eval.c: `forge-stream eval`: perplexity over non-overlapping windows,
 * streaming the model layer by layer (one layer's weights resident), on
 * original, forge and gptq checkpoints alike (quantized linears decoded with
 * src/qread.c).  Convention (../shared/data/README.md): windows of --seq-len
 * tokens from the start of each sequence, the last partial one dropped; in a
 * window token t predicts token t+1, so seq-len - 1 tokens are scored.
 * --base ORIG streams the original beside it on the same windows (two
 * boundaries, eval-model.h) and compares the two per token (§11.2). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/cli.h"
#include "src/cli/eval-model.h"

static const char usage[] =
    "usage: forge-stream eval --model DIR --tokens FILE [options]\n"
    "       forge-stream eval --model DIR --text FILE [--jsonl-field F] [options]\n"
    "\n"
    "  --model DIR         checkpoint folder (original, forge, gptq or compressed-tensors)\n"
    "  --base ORIG         also stream the original ORIG on the same windows and report\n"
    "                      its perplexity, KL(ORIG || DIR) per token (mean, median, p99,\n"
    "                      max), the share of same top-1 tokens and RMS probability changes\n"
    "  --tokens FILE       .u32 ids or JSON lines of id arrays / {\"input_ids\": [...]}\n"
    "  --text FILE         text instead, tokenized with DIR's tokenizer.json as\n"
    "                      forge-stream tokenize does (BOS per document, EOS between)\n"
    "  --jsonl-field F     with --text: JSON lines, the string field F of each one\n"
    "  --seq-len N         window length (default 512)\n"
    "  --max-windows K     score at most K windows (default: all)\n"
    "  --skip-tokens N     start after the first N tokens (held-out text after calibration)\n"
    "  --act-dtype D       bf16 (default) or f32: activations kept between layers\n"
    "  --json              one JSON object on stdout\n"
    "  --quiet             no log lines\n";

/* The figures on stdout: the model's perplexity, and with a base the
 * base's and the comparison (spec §11.2). */
static void report(const fs_evsum *s, int base, size_t nw, int64_t L, int as_json)
{
    if (as_json) {
        printf("{\"ppl\": %.6f, \"nll_mean\": %.8f, \"tokens\": %lld, \"windows\": %zu, \"seq_len\": %lld", s->ppl, s->nll,
               (long long)s->tokens, nw, (long long)L);
        if (base)
            printf(", \"ppl_base\": %.6f, \"nll_mean_base\": %.8f, \"kl_mean\": %.9g, \"kl_median\": %.9g, \"kl_p99\": %.9g, "
                   "\"kl_max\": %.9g, \"same_top\": %.9g, \"rms_dp\": %.9g, \"rms_dp_top\": %.9g",
                   s->ppl_base, s->nll_base, s->kl_mean, s->kl_median, s->kl_p99, s->kl_max, s->same_top, s->rms_dp,
                   s->rms_dp_top);
        printf("}\n");
        return;
    }
    printf("PPL %.4f  mean NLL %.6f  tokens scored %lld  (%zu windows of %lld)\n", s->ppl, s->nll, (long long)s->tokens,
           nw, (long long)L);
    if (!base) return;
    printf("base PPL %.4f  mean NLL %.6f\n", s->ppl_base, s->nll_base);
    printf("KL(base || model) per token: mean %.6f  median %.6f  p99 %.6f  max %.6f\n", s->kl_mean, s->kl_median,
           s->kl_p99, s->kl_max);
    printf("same top-1 token %.3f%%  RMS dp %.3f%% (the target's probability)  RMS dp %.3f%% (the base's top token)\n",
           100 * s->same_top, 100 * s->rms_dp, 100 * s->rms_dp_top);
}

int cmd_eval(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const char *model = NULL, *basep = NULL, *tokp = NULL, *textp = NULL, *field = NULL;
    int64_t L = 512, maxw = -1, skip = 0;
    int as_json = 0, f32 = 0, code = FS_EXIT_RUNTIME;
    fs_status rc = FS_OK;
    for (int i = 1; rc == FS_OK && i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); return FS_EXIT_OK; }
        if (!strcmp(f, "--json")) { as_json = 1; continue; }
        if (!strcmp(f, "--quiet")) { ctx.quiet = 1; continue; }
        if (i + 1 >= argc) { rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f); break; }
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) model = v;
        else if (!strcmp(f, "--base")) basep = v;
        else if (!strcmp(f, "--tokens")) tokp = v;
        else if (!strcmp(f, "--text")) textp = v;
        else if (!strcmp(f, "--jsonl-field")) field = v;
        else if (!strcmp(f, "--seq-len")) rc = fs_arg_i64(&ctx, f, v, 2, 1 << 20, &L);
        else if (!strcmp(f, "--max-windows")) rc = fs_arg_i64(&ctx, f, v, 1, INT64_MAX, &maxw);
        else if (!strcmp(f, "--skip-tokens")) rc = fs_arg_i64(&ctx, f, v, 0, INT64_MAX, &skip);
        else if (!strcmp(f, "--act-dtype")) {
            if (!strcmp(v, "f32")) f32 = 1;
            else if (strcmp(v, "bf16")) rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--act-dtype '%s': must be bf16 or f32", v);
        } else rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream eval --help)", f);
    }
    if (rc == FS_OK && (!model || !tokp == !textp))
        rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--model and one of --tokens and --text are required");
    if (rc == FS_OK && field && !textp) rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--jsonl-field is for --text");
    /* ev[0] the model, ev[1] the base (--base) */
    fs_evm ev[2];
    memset(ev, 0, sizeof ev);
    const int nm = basep ? 2 : 1;
    fs_tokens tk = {0};
    size_t *starts = NULL;
    float *logits = NULL;
    fs_backend *be = NULL;                   /* the reference backend: every op of the forward */
    fs_evstat st = {0};
    if (rc == FS_OK) rc = fs_evm_open(&ctx, model, &ev[0]);
    if (rc == FS_OK && basep) rc = fs_evm_open(&ctx, basep, &ev[1]);
    if (rc == FS_OK && basep) rc = fs_evm_same_shape(&ctx, &ev[1], &ev[0]);
    const fs_fwd *fw = &ev[0].fw;
    for (int k = 0; rc == FS_OK && k < nm; k++)
        if (L > ev[k].fw.max_pos)
            rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--seq-len %lld exceeds max_position_embeddings %lld of %s", (long long)L,
                            (long long)ev[k].fw.max_pos, ev[k].dir);
    if (rc == FS_OK && textp) rc = fs_cmd_tokenize_file(&ctx, model, textp, field, &tk);
    else if (rc == FS_OK) rc = fs_tokens_load(&ctx, tokp, &tk);
    if (rc == FS_OK) rc = fs_tokens_check_vocab(&ctx, &tk, textp ? textp : tokp, ev[0].m->vocab);
    if (rc != FS_OK) goto out;
    size_t nw_all = fs_tokens_windows(&tk, (size_t)L, NULL);
    starts = malloc(sizeof(size_t) * (nw_all ? nw_all : 1));
    if (!starts) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "windows"); goto out; }
    fs_tokens_windows(&tk, (size_t)L, starts);
    size_t first = 0;
    while (first < nw_all && starts[first] < (size_t)skip) first++;
    size_t nw = nw_all - first;
    if (maxw > 0 && (size_t)maxw < nw) nw = (size_t)maxw;
    if (nw == 0) { rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "%s: no window of %lld tokens after %lld skipped", textp ? textp : tokp, (long long)L, (long long)skip); goto out; }
    const int64_t V = fw->V;
    if (basep)
        fs_log(&ctx, "eval %s against --base %s on %s: %zu windows of %lld tokens, activations %s", model, basep,
               textp ? textp : tokp, nw, (long long)L, f32 ? "f32" : "bf16");
    else
        fs_log(&ctx, "eval %s on %s: %zu windows of %lld tokens, activations %s", model, textp ? textp : tokp, nw,
               (long long)L, f32 ? "f32" : "bf16");
    double t0 = fs_now();
    if ((rc = fs_backend_open(&ctx, FS_BE_CPU, NULL, &be)) != FS_OK) goto out;
    for (int k = 0; k < nm; k++)
        if ((rc = fs_evm_start(&ctx, &ev[k], be, &tk, starts + first, (int64_t)nw, L, f32)) != FS_OK) goto out;
    for (int l = 0; l < ev[0].m->nlayers; l++) {     /* layer l of both models before layer l + 1 */
        for (int k = 0; k < nm; k++)
            if ((rc = fs_evm_layer(&ctx, &ev[k], be, l)) != FS_OK) goto out;
        fs_log(&ctx, "[%3d/%3d] model.layers.%d  %.1f s", l + 1, ev[0].m->nlayers, l, fs_now() - t0);
    }
    for (int k = 0; k < nm; k++)
        if ((rc = fs_evm_head(&ctx, &ev[k], be)) != FS_OK) goto out;
    logits = fs_alloc2((size_t)(L * nm), (size_t)V * sizeof(float));
    if (!logits) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "logits"); goto out; }
    float *lb = logits + L * V;              /* the base's, after the model's */
    if ((rc = fs_evstat_init(&ctx, &st, basep ? (int64_t)nw * (L - 1) : 0)) != FS_OK) goto out;
    for (size_t w = 0; w < nw; w++) {
        for (int k = 0; k < nm; k++)
            if ((rc = fs_evm_logits(&ctx, &ev[k], be, (int64_t)w, k ? lb : logits)) != FS_OK) goto out;
        const uint32_t *ids = tk.ids + starts[first + w];
        for (int64_t t = 0; t + 1 < L; t++)
            fs_evstat_add(&st, logits + t * V, basep ? lb + t * V : NULL, V, ids[t + 1]);
    }
    fs_evsum s;
    fs_evstat_finish(&st, &s);
    for (int k = 0; k < nm; k++) {
        double mean = k ? s.nll_base : s.nll;
        if (!isfinite(mean)) {              /* logits beyond float (lm_head or the final norm overflow) */
            rc = fs_ctx_err(&ctx, FS_ERR_NUMERIC, "%s: the logits are not finite (mean NLL %g): the weights overflow float32",
                            ev[k].dir, mean);
            goto out;
        }
    }
    report(&s, basep != NULL, nw, L, as_json);
    fs_log(&ctx, "eval done in %.1f s", fs_now() - t0);
    code = FS_EXIT_OK;
out:
    if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        code = fs_exit_code(rc);                  /* bad input 2, the machine 1 (§14) */
    }
    for (int k = 0; k < 2; k++) fs_evm_close(be, &ev[k]);
    fs_backend_free(be);
    fs_evstat_free(&st);
    free(logits); free(starts);
    fs_tokens_free(&tk);
    return code;
}
