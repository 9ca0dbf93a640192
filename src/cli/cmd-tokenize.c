/* cmd-tokenize.c: `forge-stream tokenize`: a text or JSON-lines file to a
 * .u32 token file with the model's own tokenizer.json (src/tokenizer/),
 * the documents joined as calibration from text joins them (spec §16.3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/cli.h"
#include "src/tokenizer/tokenizer.h"

static const char usage[] =
    "usage: forge-stream tokenize --model DIR --text FILE [--jsonl-field NAME] --out FILE.u32\n"
    "\n"
    "  --model DIR          folder with tokenizer.json (and tokenizer_config.json)\n"
    "  --text FILE          UTF-8 text: the whole file is one document, or JSON lines\n"
    "                       with --jsonl-field (one document per line); invalid UTF-8\n"
    "                       is replaced with U+FFFD (one per maximal invalid subpart)\n"
    "  --jsonl-field NAME   the string field of each JSON line that holds the text\n"
    "  --out FILE.u32       little-endian uint32 ids: BOS before each document when\n"
    "                       tokenizer_config.json's add_bos_token says so, EOS between two\n"
    "  --quiet              no log lines\n";

fs_status fs_cmd_tokenize_file(fs_ctx *ctx, const char *model, const char *text, const char *field, fs_tokens *tk)
{
    fs_tok *t = NULL;
    fs_status rc = fs_tok_load(ctx, model, &t);
    double t0 = fs_now();
    if (rc == FS_OK) rc = fs_tok_documents(ctx, t, text, field, tk);
    if (rc == FS_OK)
        fs_log(ctx, "tokenized %s with %s/tokenizer.json (%s, vocabulary %lld): %zu ids in %.2f s%s", text, model,
               fs_tok_kind(t), (long long)fs_tok_vocab_size(t), tk->n, fs_now() - t0,
               fs_tok_add_bos(t) ? ", BOS before each document" : "");
    fs_tok_free(t);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const char *model = NULL, *text = NULL, *field = NULL, *outp = NULL;
    fs_status rc = FS_OK;
    for (int i = 1; rc == FS_OK && i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); return FS_EXIT_OK; }
        if (!strcmp(f, "--quiet")) { ctx.quiet = 1; continue; }
        if (i + 1 >= argc) { rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f); break; }
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) model = v;
        else if (!strcmp(f, "--text")) text = v;
        else if (!strcmp(f, "--jsonl-field")) field = v;
        else if (!strcmp(f, "--out")) outp = v;
        else rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream tokenize --help)", f);
    }
    if (rc == FS_OK && (!model || !text || !outp)) rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--model, --text and --out are required");
    if (rc == FS_OK && (strlen(outp) < 4 || strcmp(outp + strlen(outp) - 4, ".u32")))
        rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--out %s: must end in .u32 (little-endian uint32 ids)", outp);
    if (rc == FS_OK && field && !*field) rc = fs_ctx_err(&ctx, FS_ERR_USAGE, "--jsonl-field: empty name");
    fs_tokens tk = {0};
    if (rc == FS_OK) rc = fs_cmd_tokenize_file(&ctx, model, text, field, &tk);
    if (rc == FS_OK) {
        for (size_t i = 0; i < tk.n; i++) {                  /* little-endian on any host */
            uint32_t v = tk.ids[i];
            uint8_t *b = (uint8_t *)&tk.ids[i];
            b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
        }
        rc = fs_write_atomic(&ctx, outp, tk.ids, tk.n * 4);
    }
    if (rc == FS_OK) fs_log(&ctx, "wrote %s: %zu ids", outp, tk.n);
    fs_tokens_free(&tk);
    if (rc != FS_OK) fprintf(stderr, "forge-stream: error: %s\n", ctx.errmsg);
    return fs_exit_code(rc);
}
