/* demo-input.c: builds the input of `make demo` from the real stories260K
 * model: the weight of one linear of decoder layer 0 and, as its inputs, the
 * RMS-normalised token embeddings (exactly what q/k/v of layer 0 see) of the
 * first N tokens of WikiText-2.
 *
 * usage: demo-input MODEL.safetensors TOKENS.u32 N LINEAR OUT.safetensors
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/safetensors.h"

#define RMS_EPS 1e-5f   /* rms_norm_eps of stories260K's config.json */

static int fail(fs_ctx *ctx)
{
    fprintf(stderr, "demo-input: error: %s\n", ctx->errmsg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: demo-input MODEL.safetensors TOKENS.u32 N LINEAR OUT.safetensors\n");
        return 2;
    }
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *m = NULL;
    if (fs_st_open(&ctx, argv[1], &m) != FS_OK) return fail(&ctx);
    char wname[256];
    snprintf(wname, sizeof wname, "model.layers.0.%s.weight", argv[4]);
    const fs_st_tensor *te = fs_st_find(m, "model.embed_tokens.weight");
    const fs_st_tensor *tn = fs_st_find(m, "model.layers.0.input_layernorm.weight");
    const fs_st_tensor *tw = fs_st_find(m, wname);
    if (!te || !tn || !tw) {
        fprintf(stderr, "demo-input: error: %s lacks the embeddings, the norm or %s\n", argv[1], wname);
        return 1;
    }
    float *E, *g, *W;
    if (fs_st_read_f32(&ctx, m, te, &E) || fs_st_read_f32(&ctx, m, tn, &g) ||
        fs_st_read_f32(&ctx, m, tw, &W))
        return fail(&ctx);
    const int64_t vocab = te->shape[0], dim = te->shape[1];
    long n = atol(argv[3]);
    FILE *fp = fopen(argv[2], "rb");
    if (!fp || n < 1) { fprintf(stderr, "demo-input: error: cannot read %s\n", argv[2]); return 1; }
    uint32_t *tok = malloc(sizeof(uint32_t) * (size_t)n);
    if (fread(tok, sizeof(uint32_t), (size_t)n, fp) != (size_t)n) {
        fprintf(stderr, "demo-input: error: %s has fewer than %ld tokens\n", argv[2], n);
        return 1;
    }
    fclose(fp);
    float *X = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    for (long i = 0; i < n; i++) {
        if (tok[i] >= vocab) {
            fprintf(stderr, "demo-input: error: %s: token %u at index %ld is outside the vocabulary (%lld)\n",
                    argv[2], tok[i], i, (long long)vocab);
            return 1;
        }
        const float *e = E + (int64_t)tok[i] * dim;
        float ss = 0;
        for (int64_t d = 0; d < dim; d++) ss += e[d] * e[d];
        float inv = 1.0f / sqrtf(ss / (float)dim + RMS_EPS);
        for (int64_t d = 0; d < dim; d++) X[i * dim + d] = e[d] * inv * g[d];
    }
    fs_st_writer *w = NULL;
    int64_t xs[2] = {n, dim};
    if (fs_st_writer_new(&ctx, argv[5], &w) ||
        fs_st_writer_add(&ctx, w, "weight", FS_DT_F32, 2, tw->shape, W) ||
        fs_st_writer_add(&ctx, w, "inputs", FS_DT_F32, 2, xs, X) ||
        fs_st_writer_meta(&ctx, w, "source", wname) || fs_st_writer_commit(&ctx, w))
        return fail(&ctx);
    fprintf(stderr, "demo-input: %s [%lld, %lld] with %ld token inputs -> %s\n", wname,
            (long long)tw->shape[0], (long long)tw->shape[1], n, argv[5]);
    free(E); free(g); free(W); free(X); free(tok);
    fs_st_close(m);
    return 0;
}
