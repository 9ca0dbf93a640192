/* check_tokenizer.c: the tokenizer (src/tokenizer/) against golden ids made
 * once by the Hugging Face `tokenizers` library (tools/make-tok-goldens.py):
 * eight tokenizer.json files (stories260K's from ../shared/data; SmolLM2,
 * Qwen2, Llama-3 and Llama-2 vocabularies, and three small synthetic ones
 * using the remaining options, committed xz-compressed in tests/data/tok),
 * each on a corpus of prose, code, numbers, whitespace,
 * CJK, emoji, combining marks, invalid UTF-8 and every added token, and on
 * the whole WikiText-2 test text (count and FNV-1a hash of the ids).  Plus
 * hand-worked cases: the U+FFFD repair, BOS/EOS of documents, refused
 * tokenizer types, the tokenize command. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "src/tokenizer/tokenizer.h"
#include "tests/util.h"

#define DATA "tests/data/tok"

/* $FS_SHARED/data (make test sets FS_SHARED to ../shared), NULL when unset. */
static const char *shared_data(void)
{
    static char buf[4096];
    const char *sh = getenv("FS_SHARED");
    if (!sh || !*sh) return NULL;
    snprintf(buf, sizeof buf, "%s/data", sh);
    return buf;
}

static const char *const NAMES[] = {"stories260K", "smollm2", "qwen2", "llama3", "llama2", "synth-sp", "synth-bl", "synth-rm"};

/* The folder holding NAME's tokenizer.json: shared/ for stories260K, else a
 * temporary one with the fixture decompressed (tmp set, caller removes it).
 * NULL (and a message) when FS_SHARED is unset for stories260K. */
static char *fixture_dir(const char *name, char **tmp)
{
    char *d = malloc(4400), err[512];
    *tmp = NULL;
    if (!strcmp(name, "stories260K")) {
        const char *sh = shared_data();
        if (!sh || !*sh) { free(d); return NULL; }
        snprintf(d, 4400, "%s/stories260K", sh);
        return d;
    }
    *tmp = t_tmpdir();
    ck_assert_ptr_nonnull(*tmp);
    int rc = t_run_fmt(err, sizeof err, "xz -dc '%s/%s/tokenizer.json.xz' > '%s/tokenizer.json' && cp '%s/%s/tokenizer_config.json' '%s/'",
                       DATA, name, *tmp, DATA, name, *tmp);
    ck_assert_msg(rc == 0, "fixture %s: cannot decompress (xz-utils installed?): %s", name, err);
    snprintf(d, 4400, "%s", *tmp);
    return d;
}

static fs_tok *load(const char *name, char **dir, char **tmp)
{
    *dir = fixture_dir(name, tmp);
    if (!*dir) return NULL;
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_tok *t = NULL;
    fs_status rc = fs_tok_load(&ctx, *dir, &t);
    ck_assert_msg(rc == FS_OK, "%s: %s", name, ctx.errmsg);
    return t;
}

static void unload(fs_tok *t, char *dir, char *tmp)
{
    fs_tok_free(t);
    if (tmp) { t_rmdir(tmp); free(tmp); }
    free(dir);
}

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

static uint64_t fnv1a64(const uint32_t *ids, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= (ids[i] >> (8 * k)) & 0xff;
            h *= 0x100000001b3ull;
        }
    return h;
}

static void golden(const char *name)
{
    char *dir, *tmp, path[4400];
    fs_tok *t = load(name, &dir, &tmp);
    if (!t) { printf("check_tokenizer: FS_SHARED unset, %s goldens skipped\n", name); return; }
    snprintf(path, sizeof path, "%s/%s/golden.jsonl", DATA, name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: missing (run from the project root)", path);
    char *line = NULL;
    size_t cap = 0;
    int docs = 0, wiki = 0;
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(j != NULL, "%s: %s", path, je.text);
        const char *dn = json_string_value(json_object_get(j, "name"));
        fs_ids ids = {0};
        if (json_object_get(j, "hex")) {
            const char *h = json_string_value(json_object_get(j, "hex"));
            char *text = malloc(strlen(h) / 2 + 1);
            size_t n = unhex(h, text);
            ck_assert_msg(fs_tok_encode(&ctx, t, text, n, &ids) == FS_OK, "%s/%s: %s", name, dn, ctx.errmsg);
            const json_t *want = json_object_get(j, "ids");
            size_t k = 0;
            while (k < ids.n && k < json_array_size(want) && ids.v[k] == (uint32_t)json_integer_value(json_array_get(want, k))) k++;
            ck_assert_msg(k == ids.n && k == json_array_size(want),
                          "%s, document %s: ids differ from the tokenizers library's at %zu (%zu ids, want %zu): got %lld, want %lld",
                          name, dn, k, ids.n, json_array_size(want), k < ids.n ? (long long)ids.v[k] : -1LL,
                          k < json_array_size(want) ? (long long)json_integer_value(json_array_get(want, k)) : -1LL);
            free(text);
            docs++;
        } else {
            const char *sh = shared_data();
            if (sh && *sh) {
                char wp[4400];
                snprintf(wp, sizeof wp, "%s/wikitext2/wiki.test.raw", sh);
                FILE *w = fopen(wp, "rb");
                ck_assert_msg(w != NULL, "%s: missing", wp);
                fseek(w, 0, SEEK_END);
                long sz = ftell(w);
                fseek(w, 0, SEEK_SET);
                char *buf = malloc((size_t)sz);
                ck_assert_int_eq(fread(buf, 1, (size_t)sz, w), (size_t)sz);
                fclose(w);
                ck_assert_msg(fs_tok_encode(&ctx, t, buf, (size_t)sz, &ids) == FS_OK, "%s: %s", name, ctx.errmsg);
                char hx[17];
                snprintf(hx, sizeof hx, "%016llx", (unsigned long long)fnv1a64(ids.v, ids.n));
                ck_assert_msg(ids.n == (size_t)json_integer_value(json_object_get(j, "n")) &&
                                  !strcmp(hx, json_string_value(json_object_get(j, "fnv1a64"))),
                              "%s, WikiText-2 test: %zu ids (hash %s), the tokenizers library %lld (hash %s)", name, ids.n, hx,
                              (long long)json_integer_value(json_object_get(j, "n")), json_string_value(json_object_get(j, "fnv1a64")));
                free(buf);
                wiki = 1;
            } else {
                printf("check_tokenizer: FS_SHARED unset, %s on WikiText-2 skipped\n", name);
            }
        }
        fs_ids_free(&ids);
        json_decref(j);
    }
    free(line);
    fclose(f);
    ck_assert_msg(docs >= 27, "%s: only %d golden documents", path, docs);
    printf("check_tokenizer: %s: %d documents%s identical to the tokenizers library\n", name, docs,
           wiki ? " and WikiText-2 (1.29 MB)" : "");
    unload(t, dir, tmp);
}

START_TEST(goldens)
{
    golden(NAMES[_i]);
}
END_TEST

/* Invalid UTF-8 becomes U+FFFD, one per maximal invalid subpart (hand-worked). */
START_TEST(invalid_utf8_rule)
{
    char *dir, *tmp;
    fs_tok *t = load("smollm2", &dir, &tmp);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    static const struct { const char *bad, *good; } cases[] = {
        {"a\xed\xa0\x80z", "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz"},     /* a surrogate: 3 subparts */
        {"a\xe2\x82z", "a\xEF\xBF\xBDz"},                                  /* truncated: 1 */
        {"a\xc0\xafz", "a\xEF\xBF\xBD\xEF\xBF\xBDz"},                      /* overlong: 2 */
        {"a\xf0\x9f\x98", "a\xEF\xBF\xBD"},                                /* cut at the end: 1 */
        {"\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fs_ids a = {0}, b = {0};
        ck_assert_int_eq(fs_tok_encode(&ctx, t, cases[i].bad, strlen(cases[i].bad), &a), FS_OK);
        ck_assert_int_eq(fs_tok_encode(&ctx, t, cases[i].good, strlen(cases[i].good), &b), FS_OK);
        ck_assert_msg(a.n == b.n && !memcmp(a.v, b.v, a.n * 4), "case %zu: not the U+FFFD repair", i);
        fs_ids_free(&a);
        fs_ids_free(&b);
    }
    unload(t, dir, tmp);
}
END_TEST

/* Byte-level BPE loses nothing: decode(encode(x)) == x for valid UTF-8. */
START_TEST(bytelevel_round_trip)
{
    char *dir, *tmp;
    fs_tok *t = load(NAMES[1 + _i], &dir, &tmp);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const char *s = "Hello,  world!\n\tcode(x) == 42; 我爱北京 👨‍👩‍👧 e\xCC\x81 <|im_start|>";
    fs_ids ids = {0};
    ck_assert_int_eq(fs_tok_encode(&ctx, t, s, strlen(s), &ids), FS_OK);
    char *out;
    size_t n;
    ck_assert_int_eq(fs_tok_decode(&ctx, t, ids.v, ids.n, &out, &n), FS_OK);
    ck_assert_str_eq(out, s);
    free(out);
    fs_ids_free(&ids);
    unload(t, dir, tmp);
}
END_TEST

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(s, f);
    fclose(f);
}

/* BOS before each document, EOS between two (stories260K: add_bos_token,
 * <s> = 1, </s> = 2), against the golden ids of the documents alone. */
START_TEST(documents_bos_eos)
{
    char *dir, *tmp;
    fs_tok *t = load("stories260K", &dir, &tmp);
    if (!t) { printf("check_tokenizer: FS_SHARED unset, documents skipped\n"); return; }
    ck_assert_int_eq(fs_tok_add_bos(t), 1);
    ck_assert_int_eq(fs_tok_bos(t), 1);
    ck_assert_int_eq(fs_tok_eos(t), 2);
    /* the golden ids of "prose" and "cjk" */
    json_t *g[2] = {NULL, NULL};
    FILE *f = fopen(DATA "/stories260K/golden.jsonl", "r");
    ck_assert_ptr_nonnull(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *n = json_string_value(json_object_get(j, "name"));
        if (n && !strcmp(n, "prose") && !g[0]) g[0] = j;
        else if (n && !strcmp(n, "cjk") && !g[1]) g[1] = j;
        else json_decref(j);
    }
    free(line);
    fclose(f);
    ck_assert(g[0] && g[1]);
    char *w = t_tmpdir(), p[4400];
    snprintf(p, sizeof p, "%s/docs.jsonl", w);
    FILE *o = fopen(p, "w");
    for (int k = 0; k < 2; k++) {
        const char *h = json_string_value(json_object_get(g[k], "hex"));
        char *text = malloc(strlen(h) / 2 + 1);
        size_t n = unhex(h, text);
        json_t *line_obj = json_pack("{s:s%, s:i}", "text", text, n, "other", 7);
        char *js = json_dumps(line_obj, JSON_COMPACT);
        fprintf(o, "%s\n\n", js);
        free(js);
        json_decref(line_obj);
        free(text);
    }
    fclose(o);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_tokens tk;
    ck_assert_msg(fs_tok_documents(&ctx, t, p, "text", &tk) == FS_OK, "%s", ctx.errmsg);
    size_t k = 0;
    ck_assert_uint_eq(tk.ids[k++], 1);
    for (size_t i = 0; i < json_array_size(json_object_get(g[0], "ids")); i++)
        ck_assert_uint_eq(tk.ids[k++], json_integer_value(json_array_get(json_object_get(g[0], "ids"), i)));
    ck_assert_uint_eq(tk.ids[k++], 2);
    ck_assert_uint_eq(tk.ids[k++], 1);
    for (size_t i = 0; i < json_array_size(json_object_get(g[1], "ids")); i++)
        ck_assert_uint_eq(tk.ids[k++], json_integer_value(json_array_get(json_object_get(g[1], "ids"), i)));
    ck_assert_uint_eq(k, tk.n);
    fs_tokens_free(&tk);
    /* a line without the field names the file and line */
    write_file(p, "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
    ck_assert_int_eq(fs_tok_documents(&ctx, t, p, "text", &tk), FS_ERR_FORMAT);
    ck_assert_msg(strstr(ctx.errmsg, "line 2") && strstr(ctx.errmsg, "\"text\" is missing"), "%s", ctx.errmsg);
    json_decref(g[0]);
    json_decref(g[1]);
    t_rmdir(w);
    free(w);
    unload(t, dir, tmp);
}
END_TEST

/* BOS rules of the other fixtures: Qwen2 and SmolLM2 add none. */
START_TEST(bos_rules)
{
    char *dir, *tmp;
    fs_tok *t = load("qwen2", &dir, &tmp);
    ck_assert_int_eq(fs_tok_add_bos(t), 0);
    ck_assert_int_eq(fs_tok_eos(t), 151643);                 /* <|endoftext|> */
    unload(t, dir, tmp);
    t = load("llama2", &dir, &tmp);
    ck_assert_int_eq(fs_tok_add_bos(t), 1);
    ck_assert_int_eq(fs_tok_bos(t), 1);
    ck_assert_int_eq(fs_tok_eos(t), 2);
    unload(t, dir, tmp);
}
END_TEST

/* Types not implemented are refused by name. */
START_TEST(refused_types)
{
    char *w = t_tmpdir(), p[4400];
    fs_ctx ctx;
    fs_tok *t = NULL;
    static const struct { const char *json, *want; } cases[] = {
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "model type WordPiece is not supported"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "model type Unigram is not supported"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"BertNormalizer\"}}",
         "normalizer type BertNormalizer is not supported"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
         "pre-tokenizer type Whitespace is not supported"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", "is not in the vocabulary"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", "
         "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}", "refused at offset"},
        {"[1, 2", "tokenizer.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s/tokenizer.json", w);
        write_file(p, cases[i].json);
        fs_ctx_init(&ctx);
        ck_assert_int_eq(fs_tok_load(&ctx, w, &t), FS_ERR_FORMAT);
        ck_assert_msg(strstr(ctx.errmsg, cases[i].want), "case %zu: %s", i, ctx.errmsg);
    }
    remove(p);
    snprintf(p, sizeof p, "%s/tiktoken.model", w);
    write_file(p, "IQ== 0\n");
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_tok_load(&ctx, w, &t), FS_ERR_USAGE);
    ck_assert_msg(strstr(ctx.errmsg, "tiktoken"), "%s", ctx.errmsg);
    /* the command: exit 2, naming it, nothing written */
    const char *bin = getenv("FS_BIN");
    if (bin && *bin) {
        char err[2048], out[4400];
        snprintf(out, sizeof out, "%s/out.u32", w);
        write_file(p, "x");
        int rc = t_run_fmt(err, sizeof err, "'%s' tokenize --model '%s' --text '%s' --out '%s'", bin, w, p, out);
        ck_assert_int_eq(rc, 2);
        ck_assert_msg(strstr(err, "tiktoken"), "%s", err);
        struct stat sb;
        ck_assert_int_ne(stat(out, &sb), 0);
    }
    t_rmdir(w);
    free(w);
}
END_TEST

/* forge-stream tokenize: the whole of WikiText-2 with stories260K's
 * tokenizer is BOS + the tokenizers library's ids (their hash). */
START_TEST(tokenize_command)
{
    const char *bin = getenv("FS_BIN"), *sh = shared_data();
    if (!bin || !*bin || !sh || !*sh) { printf("check_tokenizer: FS_BIN/FS_SHARED unset, tokenize command skipped\n"); return; }
    char *w = t_tmpdir(), err[2048], out[4400];
    snprintf(out, sizeof out, "%s/wiki.u32", w);
    int rc = t_run_fmt(err, sizeof err, "'%s' tokenize --quiet --model '%s/stories260K' --text '%s/wikitext2/wiki.test.raw' --out '%s'",
                       bin, sh, sh, out);
    ck_assert_msg(rc == 0, "%s", err);
    FILE *f = fopen(out, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint32_t *ids = malloc((size_t)sz);
    ck_assert_int_eq(fread(ids, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    ck_assert_int_eq(sz, 4 * (809246 + 1));
    ck_assert_uint_eq(ids[0], 1);
    char hx[17];
    snprintf(hx, sizeof hx, "%016llx", (unsigned long long)fnv1a64(ids + 1, (size_t)sz / 4 - 1));
    /* the golden file's last line (tools/make-tok-goldens.py) */
    FILE *g = fopen(DATA "/stories260K/golden.jsonl", "r");
    char *line = NULL, *last = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, g) > 0) { free(last); last = strdup(line); }
    fclose(g);
    free(line);
    ck_assert_msg(strstr(last, hx), "hash %s, golden %s", hx, last);
    free(last);
    free(ids);
    /* ../shared/data's wiki.test.stories260K.u32 was made from the text with LF line
     * ends (another tokenizer, README there): the same bytes */
    rc = t_run_fmt(err, sizeof err, "tr -d '\\r' < '%s/wikitext2/wiki.test.raw' > '%s/lf.txt' && '%s' tokenize --quiet "
                   "--model '%s/stories260K' --text '%s/lf.txt' --out '%s/lf.u32' && cmp '%s/lf.u32' '%s/wikitext2/wiki.test.stories260K.u32'",
                   sh, w, bin, sh, w, w, w, sh);
    ck_assert_msg(rc == 0, "WikiText-2 with LF line ends: not the ids of wiki.test.stories260K.u32: %s", err);
    /* usage errors: exit 2 */
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' tokenize --model '%s/stories260K' --text x", bin, sh), 2);
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' tokenize --model '%s/stories260K' --text '%s/nope' --out '%s/a.u32'", bin, sh, w, w), 2);
    t_rmdir(w);
    free(w);
}
END_TEST


/* quantize --calib-text: the same output as --calib with the ids forge-stream
 * tokenize writes; killed after its second layer's commit, a resume finishes
 * it byte-identical; a text file changed since is refused. */
START_TEST(calib_text_resume)
{
    const char *bin = getenv("FS_BIN"), *sh = shared_data();
    if (!bin || !*bin || !sh || !*sh) { printf("check_tokenizer: FS_BIN/FS_SHARED unset, --calib-text skipped\n"); return; }
    char *w = t_tmpdir(), err[4096];
    const char *q = "--samples 8 --seq-len 128 --group-size 32 --quiet --threads 1";
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "head -c 60000 '%s/wikitext2/wiki.test.raw' > '%s/c.txt' && "
                               "'%s' tokenize --quiet --model '%s/stories260K' --text '%s/c.txt' --out '%s/c.u32'",
                               sh, w, bin, sh, w, w), 0);
    int rc = t_run_fmt(err, sizeof err, "'%s' quantize --model '%s/stories260K' --out '%s/ids' --calib '%s/c.u32' %s", bin, sh, w, w, q);
    ck_assert_msg(rc == 0, "%s", err);
    rc = t_run_fmt(err, sizeof err, "FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize --model '%s/stories260K' --out '%s/text' "
                   "--calib-text '%s/c.txt' %s", bin, sh, w, w, q);
    ck_assert_msg(rc != 0, "the crash point was not reached: %s", err);
    rc = t_run_fmt(err, sizeof err, "'%s' --resume --work '%s/text/.forge-work' --quiet", bin, w);
    ck_assert_msg(rc == 0, "resume: %s", err);
    ck_assert_msg(t_run_fmt(err, sizeof err, "cmp '%s/ids/model.safetensors' '%s/text/model.safetensors'", w, w) == 0,
                  "--calib-text after a resume differs from --calib with the same ids: %s", err);
    /* a changed text file: the journal's checksum refuses it */
    rc = t_run_fmt(err, sizeof err, "FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize --model '%s/stories260K' --out '%s/t2' "
                   "--calib-text '%s/c.txt' %s", bin, sh, w, w, q);
    ck_assert_int_ne(rc, 0);
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "echo more >> '%s/c.txt'", w), 0);
    rc = t_run_fmt(err, sizeof err, "'%s' --resume --work '%s/t2/.forge-work' --quiet", bin, w);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "changed since the run started"), "%s", err);
    /* eval --text scores the same windows as eval --tokens of the same ids */
    char a[4096], b[4096];
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' eval --json --quiet --model '%s/ids' --text '%s/c.txt' --seq-len 128 > '%s/e1'", bin, w, w, w), 0);
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' tokenize --quiet --model '%s/ids' --text '%s/c.txt' --out '%s/c2.u32' && "
                               "'%s' eval --json --quiet --model '%s/ids' --tokens '%s/c2.u32' --seq-len 128 > '%s/e2'", bin, w, w, w, bin, w, w, w), 0);
    snprintf(a, sizeof a, "%s/e1", w);
    snprintf(b, sizeof b, "%s/e2", w);
    json_t *ja = json_load_file(a, 0, NULL), *jb = json_load_file(b, 0, NULL);
    ck_assert(ja && jb && json_equal(ja, jb) && json_integer_value(json_object_get(ja, "windows")) > 0);
    json_decref(ja);
    json_decref(jb);
    t_rmdir(w);
    free(w);
}
END_TEST

Suite *fs_suite_tokenizer(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, goldens, 0, (int)(sizeof NAMES / sizeof NAMES[0]));
    tcase_add_test(tc, invalid_utf8_rule);
    tcase_add_loop_test(tc, bytelevel_round_trip, 0, 3);
    tcase_add_test(tc, documents_bos_eos);
    tcase_add_test(tc, bos_rules);
    tcase_add_test(tc, refused_types);
    tcase_add_test(tc, tokenize_command);
    tcase_add_test(tc, calib_text_resume);
    suite_add_tcase(s, tc);
    return s;
}
