/* bench-tok.c: the tokenizer's speed (part of `make bench`): MB/s of one
 * text through fs_tok_encode on one core (the tokenizer runs on one
 * thread), best of 3, after one warm-up run (as a calibration run would
 * tokenize a file once, the warm-up only fills the page cache and the word
 * cache the same way for every run).
 *     bench-tok TOKENIZER_DIR TEXT_FILE   ->  "NAME ids MB/s"
 */
#include <stdio.h>
#include <stdlib.h>

#include "src/tokenizer/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: bench-tok TOKENIZER_DIR TEXT\n"); return 2; }
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 2; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: read error\n", argv[2]); return 1; }
    fclose(f);
    double t0 = fs_now();
    fs_tok *t = NULL;
    if (fs_tok_load(&ctx, argv[1], &t) != FS_OK) { fprintf(stderr, "bench-tok: %s\n", ctx.errmsg); return 1; }
    double load = fs_now() - t0, best = 1e30;
    size_t nids = 0;
    for (int r = 0; r < 4; r++) {
        fs_ids ids = {0};
        double s = fs_now();
        if (fs_tok_encode(&ctx, t, text, (size_t)n, &ids) != FS_OK) { fprintf(stderr, "bench-tok: %s\n", ctx.errmsg); return 1; }
        s = fs_now() - s;
        if (r > 0 && s < best) best = s;
        nids = ids.n;
        fs_ids_free(&ids);
    }
    printf("%zu %.2f %.3f\n", nids, (double)n / best / 1e6, load);
    fs_tok_free(t);
    free(text);
    return 0;
}
