/* cmd-eval.c: `forge-stream eval`: perplexity over non-overlapping windows,
 * streaming the model layer by layer (one layer's weights resident), on
 * original, forge and gptq checkpoints alike (quantized linears decoded with
 * src/qread.c).  Convention (../shared/data/README.md): windows of --seq-len
 * tokens from the start of each sequence, the last partial one dropped; in a
 * window token t predicts token t+1, so seq-len - 1 tokens are scored. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/cli.h"
#include "src/forward/layer.h"
#include "src/models/forward.h"
#include "src/formats/tokens.h"
#include "stream/layerio.h"

static const char usage[] =
    "usage: forge-stream eval --model DIR --tokens FILE [options]\n"
    "       forge-stream eval --model DIR --text FILE [--jsonl-field F] [options]\n"
    "\n"
    "  --model DIR         checkpoint folder (original, forge, gptq or compressed-tensors)\n"
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

#define BATCH_TOKENS 65536   /* tokens per forward batch: bounds the scratch memory */

int cmd_eval(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const char *model = NULL, *tokp = NULL, *textp = NULL, *field = NULL;
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
    fs_ckpt *c = NULL;
    fs_model *m = NULL;
    fs_qinfo qi;
    fs_fwd fw = {0};
    fs_tokens tk = {0};
    size_t *starts = NULL;
    float *x = NULL, *E = NULL, *head = NULL, *nrm = NULL, *xn = NULL, *logits = NULL;
    fs_layer_reader *lr = NULL;
    fs_backend *be = NULL;                   /* the reference backend: every op of the forward */
    fs_fwd_ws ws = {0};
    fs_lwb lwb = {0};
    fs_buf *hb = NULL;
    const fs_queue Q = FS_QUEUE_COMPUTE;
    if (rc == FS_OK) rc = fs_ckpt_open(&ctx, model, &c);
    if (rc == FS_OK && !c->config) rc = fs_ctx_err(&ctx, FS_ERR_FORMAT, "%s: no config.json", model);
    if (rc == FS_OK) rc = fs_model_from_config(&ctx, c->config, "config.json", &m);
    if (rc == FS_OK) rc = fs_model_validate(&ctx, m, c, FS_CHECK_QUANTIZED);   /* every size the forward trusts */
    if (rc == FS_OK) rc = fs_qinfo_from_config(&ctx, c->config, &qi);
    if (rc == FS_OK) rc = fs_fwd_init(&ctx, c->config, m, &fw);
    if (rc == FS_OK && L > fw.max_pos)
        rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--seq-len %lld exceeds max_position_embeddings %lld", (long long)L, (long long)fw.max_pos);
    if (rc == FS_OK && textp) rc = fs_cmd_tokenize_file(&ctx, model, textp, field, &tk);
    else if (rc == FS_OK) rc = fs_tokens_load(&ctx, tokp, &tk);
    if (rc == FS_OK) rc = fs_tokens_check_vocab(&ctx, &tk, textp ? textp : tokp, m->vocab);
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
    const int64_t H = fw.H, V = fw.V, n = (int64_t)nw * L;
    fs_log(&ctx, "eval %s on %s: %zu windows of %lld tokens, activations %s", model, textp ? textp : tokp, nw, (long long)L, f32 ? "f32" : "bf16");
    double t0 = fs_now();
    x = fs_alloc2((size_t)n, (size_t)H * sizeof(float));
    if (!x) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "activations of %lld tokens", (long long)n); goto out; }
    if ((rc = fs_ckpt_read_f32(&ctx, c, "model.embed_tokens.weight", &E)) != FS_OK) goto out;
    for (size_t w = 0; w < nw; w++)
        for (int64_t t = 0; t < L; t++)
            memcpy(x + ((int64_t)w * L + t) * H, E + (int64_t)tk.ids[starts[first + w] + (size_t)t] * H, sizeof(float) * (size_t)H);
    if (!f32) fs_fwd_round_bf16(x, (size_t)(n * H));
    const int64_t bw = BATCH_TOKENS / L > 0 ? BATCH_TOKENS / L : 1;        /* windows per batch */
    if ((rc = fs_backend_open(&ctx, FS_BE_CPU, NULL, &be)) != FS_OK) goto out;
    if ((rc = fs_fwd_ws_new(&ctx, be, Q, &fw, ((int64_t)nw < bw ? (int64_t)nw : bw) * L, &ws)) != FS_OK) goto out;
    if ((rc = fs_lr_new(&ctx, c, m, 2, 1, 0, &lr)) != FS_OK || (rc = fs_lr_start(&ctx, lr, 0)) != FS_OK) goto out;
    for (int l = 0; l < m->nlayers; l++) {
        fs_lw lw;
        if ((rc = fs_lr_acquire(&ctx, lr, l)) != FS_OK || (rc = fs_lr_start(&ctx, lr, l + 1)) != FS_OK) goto out;
        rc = fs_lw_load(&ctx, c, &qi, m, &fw, l, &lw);
        fs_lr_release(lr, l);
        if (rc != FS_OK) goto out;
        rc = fs_lwb_upload(&ctx, be, Q, &fw, &m->layers[l], &lw, NULL, &lwb);
        if (rc == FS_OK) rc = fs_be_sync(&ctx, be, Q);       /* the host copy goes next */
        fs_lw_free(&lw);
        for (size_t w = 0; rc == FS_OK && w < nw; w += (size_t)bw) {   /* the batch in, the layer, the batch out */
            int64_t b = (int64_t)(nw - w) < bw ? (int64_t)(nw - w) : bw;
            float *xb = x + (int64_t)w * L * H;
            const uint64_t bytes = (uint64_t)(b * L * H) * sizeof(float);
            rc = fs_be_upload(&ctx, be, Q, ws.x.buf, 0, xb, bytes);
            if (rc == FS_OK) rc = fs_fwd_layer_run(&ctx, be, Q, &fw, &lwb, &ws, b, L);
            if (rc == FS_OK) rc = fs_be_download(&ctx, be, Q, xb, ws.x.buf, 0, bytes);
            if (rc == FS_OK) rc = fs_be_sync(&ctx, be, Q);
        }
        fs_lwb_free(be, &lwb);
        if (rc != FS_OK) goto out;
        if (!f32) fs_fwd_round_bf16(x, (size_t)(n * H));
        /* finite weights can still overflow float: refused, never a perplexity of NaN */
        char what[96];
        snprintf(what, sizeof what, "%s: activations after model.layers.%d (the weights overflow float32)", model, l);
        if ((rc = fs_check_finite(&ctx, what, x, (size_t)(n * H))) != FS_OK) goto out;
        fs_log(&ctx, "[%3d/%3d] model.layers.%d  %.1f s", l + 1, m->nlayers, l, fs_now() - t0);
    }
    if ((rc = fs_ckpt_read_f32(&ctx, c, "model.norm.weight", &nrm)) != FS_OK) goto out;
    if (fs_ckpt_find(c, "lm_head.weight") && !m->tied) {
        int64_t o, k;
        if ((rc = fs_qread_linear(&ctx, c, &qi, "lm_head", &head, &o, &k)) != FS_OK) goto out;
    }
    const float *Wh = head ? head : E;
    /* the head on the backend: [V, H] weights, the final norm, a window's logits */
    #define A64(b) (((b) + 63) / 64 * 64)
    const uint64_t whb = A64((uint64_t)(V * H) * 4), nb = A64((uint64_t)H * 4), xb = A64((uint64_t)(L * H) * 4);
#undef A64
    if ((rc = fs_be_alloc(&ctx, be, whb + nb + 2 * xb + (uint64_t)(L * V) * 4, "lm_head and logits", &hb)) != FS_OK) goto out;
    if ((rc = fs_be_upload(&ctx, be, Q, hb, 0, Wh, (uint64_t)(V * H) * 4)) != FS_OK ||
        (rc = fs_be_upload(&ctx, be, Q, hb, whb, nrm, (uint64_t)H * 4)) != FS_OK ||
        (rc = fs_be_sync(&ctx, be, Q)) != FS_OK)
        goto out;
    free(head); free(E); head = E = NULL;                   /* uploaded: the host copies go */
    const fs_tensor tW = fs_tensor_2d(hb, 0, FS_DT_F32, V, H), tn = fs_tensor_2d(hb, whb, FS_DT_F32, 1, H);
    const fs_tensor tx = fs_tensor_2d(hb, whb + nb, FS_DT_F32, L, H), txn = fs_tensor_2d(hb, whb + nb + xb, FS_DT_F32, L, H);
    const fs_tensor tl = fs_tensor_2d(hb, whb + nb + 2 * xb, FS_DT_F32, L, V);
    logits = fs_alloc2((size_t)L, (size_t)V * sizeof(float));
    if (!logits) { rc = fs_ctx_err(&ctx, FS_ERR_NOMEM, "logits"); goto out; }
    double nll = 0.0;
    int64_t scored = 0;
    for (size_t w = 0; w < nw; w++) {
        fs_rmsnorm_args na = {tx, tn, txn, fw.eps};
        rc = fs_be_upload(&ctx, be, Q, hb, tx.off, x + (int64_t)w * L * H, (uint64_t)(L * H) * 4);
        if (rc == FS_OK) rc = fs_op_rmsnorm(&ctx, be, Q, &na);
        if (rc == FS_OK) rc = fs_fwd_linear_op(&ctx, be, Q, txn, tW, fs_tensor_none(), tl);
        if (rc == FS_OK) rc = fs_be_download(&ctx, be, Q, logits, hb, tl.off, (uint64_t)(L * V) * 4);
        if (rc == FS_OK) rc = fs_be_sync(&ctx, be, Q);
        if (rc != FS_OK) goto out;
        const uint32_t *ids = tk.ids + starts[first + w];
        for (int64_t t = 0; t + 1 < L; t++) {
            const float *lg = logits + t * V;
            double mx = -INFINITY, s = 0.0;
            for (int64_t j = 0; j < V; j++) mx = lg[j] > mx ? lg[j] : mx;
            for (int64_t j = 0; j < V; j++) s += exp((double)lg[j] - mx);
            nll += mx + log(s) - (double)lg[ids[t + 1]];
            scored++;
        }
    }
    double mean = nll / (double)scored, ppl = exp(mean);
    if (!isfinite(mean)) {              /* logits beyond float (lm_head or the final norm overflow) */
        rc = fs_ctx_err(&ctx, FS_ERR_NUMERIC, "%s: the logits are not finite (mean NLL %g): the weights overflow float32",
                        model, mean);
        goto out;
    }
    if (as_json) printf("{\"ppl\": %.6f, \"nll_mean\": %.8f, \"tokens\": %lld, \"windows\": %zu, \"seq_len\": %lld}\n",
                        ppl, mean, (long long)scored, nw, (long long)L);
    else printf("PPL %.4f  mean NLL %.6f  tokens scored %lld  (%zu windows of %lld)\n", ppl, mean, (long long)scored, nw, (long long)L);
    fs_log(&ctx, "eval done in %.1f s", fs_now() - t0);
    code = FS_EXIT_OK;
out:
    if (rc != FS_OK) {
        fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
        code = fs_exit_code(rc);                  /* bad input 2, the machine 1 (§14) */
    }
    fs_lr_free(lr);
    fs_lwb_free(be, &lwb);
    fs_fwd_ws_free(be, &ws);
    fs_be_free(be, hb);
    fs_backend_free(be);
    free(x); free(E); free(head); free(nrm); free(xn); free(logits); free(starts);
    fs_tokens_free(&tk);
    fs_fwd_free(&fw);
    fs_model_free(m);
    fs_ckpt_close(c);
    return code;
}
