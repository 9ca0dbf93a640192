/* gen-tiny.c: writes a tiny random Hugging Face checkpoint of one of the nine
 * model families of ARCHITECTURES.md (llama, mistral, qwen2, qwen3, mixtral,
 * qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3) for tests: config.json,
 * generation_config.json, placeholder tokenizer files, the safetensors
 * shards and (with more than one shard) model.safetensors.index.json.
 *
 * usage: gen-tiny --type T --out DIR [--seed N] [--layers L] [--dtype bf16|f16|f32]
 *                 [--shards K] [--fp8 | --no-fp8] [--mtp] [--tied] [--hidden H]
 *
 * Invariants:
 *  1. Deterministic: a tensor's values depend only on the seed, its name (or,
 *     for the copies the MTP layer holds, the name of the tensor it copies)
 *     and its shape, never on the shard count, the storage dtype or the order
 *     of the tensors.  So `--dtype f32` without `--fp8` writes the master
 *     weights that an FP8 checkpoint of the same seed and sizes quantized.
 *  2. Tensor names and shapes are exactly those of ARCHITECTURES.md §3-5;
 *     FP8 follows §6 (block 128, S = amax/448, code = RNE E4M3 of W/S, the
 *     stored `<name>_scale_inv` is S, dequantization multiplies).
 *  3. Tensors go round-robin over the shards in list order, so with K > 1 a
 *     weight and its scale (adjacent in the list) sit in different shards.
 *  4. DIR is created if missing and refused if not empty; every shard is
 *     written atomically by the project's safetensors writer.
 *
 * Owns: the tensor plan (names, shapes, kinds) and the encoded tensor data,
 * all freed before exit.  Errors: one line "gen-tiny: error: ..." and exit 1,
 * exit 2 for a bad flag.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "src/formats/safetensors.h"

#define NAME_LEN 200         /* longest tensor name we build, with room to spare */
#define FP8_BLOCK 128        /* weight_block_size of every DeepSeek FP8 checkpoint */
#define E4M3_MAX 448.0f      /* largest finite E4M3FN value (code 0x7E) */
#define MAX_LAYERS 256       /* --layers cap: this is a tiny-model generator */
#define MAX_SHARDS 99999     /* the file names carry five digits */
#define MAX_HIDDEN 8192      /* --hidden cap */
#define TOKENIZER_SIZE 90    /* tokens in tokenizer.json: fewer than vocab rows (padding rows) */
#define OUTLIER_COLS 2       /* outlier input channels per linear weight */
#define OUTLIER_GAIN 10.0f   /* their magnification */
#define LINEAR_STD 0.02f     /* std of linear, router and embedding weights */
#define NORM_STD 0.05f       /* norms are 1 + NORM_STD * N(0, 1) */
#define ESCB_STD 0.05f       /* std of deepseek_v3 e_score_correction_bias */

/* ---- families ------------------------------------------------------------- */

enum family {
    F_LLAMA, F_MISTRAL, F_QWEN2, F_QWEN3, F_MIXTRAL, F_QWEN2_MOE, F_QWEN3_MOE, F_DSV2, F_DSV3,
    F_COUNT
};

static const char *const family_name[F_COUNT] = {
    "llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe",
    "deepseek_v2", "deepseek_v3",
};

static const char *const family_arch[F_COUNT] = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
    "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM",
};

typedef struct model {
    enum family fam;
    int64_t H, I, nh, nkv, hd, V, L;       /* common sizes */
    int64_t E, topk, Ie, Is;               /* MoE: experts, top-k, expert / shared width */
    int64_t qlora, kvlora, nope, rope, vhd; /* deepseek MLA (qlora 0 = null -> q_proj) */
    int64_t nshared, first_dense, n_group, topk_group;
    int qwen_dense0;                       /* qwen3_moe: layer 0 in mlp_only_layers */
    int fp8, mtp, tied;
    fs_dtype dt;
    uint64_t seed;
    int64_t shards;
    const char *out;
} model;

static int is_deepseek(const model *m) { return m->fam == F_DSV2 || m->fam == F_DSV3; }
static int is_qwen_moe(const model *m) { return m->fam == F_QWEN2_MOE || m->fam == F_QWEN3_MOE; }

/* Whether layer l carries an MoE block (ARCHITECTURES.md §4.3, §5.6). */
static int layer_is_moe(const model *m, int64_t l)
{
    switch (m->fam) {
    case F_MIXTRAL: return 1;
    case F_QWEN2_MOE:
    case F_QWEN3_MOE: return !(m->qwen_dense0 && l == 0); /* decoder_sparse_step 1 */
    case F_DSV2:
    case F_DSV3: return l >= m->first_dense;             /* moe_layer_freq 1 */
    default: return 0;
    }
}

/* ---- the tensor plan ------------------------------------------------------ */

enum kind {
    K_LINEAR,      /* decoder-layer linear: N(0, 0.02) with outlier columns; FP8-able */
    K_LINEAR_BF,   /* same values, never FP8 (MTP eh_proj) */
    K_ROUTER,      /* router / shared_expert_gate: N(0, 0.02), never FP8 */
    K_EMBED,       /* embeddings and lm_head: N(0, 0.02) */
    K_NORM,        /* RMSNorm weights: around 1 */
    K_BIAS,        /* linear biases: N(0, 0.02) */
    K_ESCB         /* e_score_correction_bias: always F32 */
};

typedef struct spec {
    char name[NAME_LEN];
    char key[NAME_LEN];   /* name whose random stream the values come from */
    enum kind kind;
    int ndim;
    int64_t shape[2];
} spec;

typedef struct plan {
    spec *v;
    int n, cap;
} plan;

/* Appends a tensor named by fmt; d1 == 0 makes it 1-D.  Errors: FS_ERR_NOMEM. */
static fs_status plan_add(fs_ctx *ctx, plan *p, enum kind kind, int64_t d0, int64_t d1,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static fs_status plan_add(fs_ctx *ctx, plan *p, enum kind kind, int64_t d0, int64_t d1,
                          const char *fmt, ...)
{
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        spec *v = realloc(p->v, sizeof *v * (size_t)cap);
        if (!v) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor plan of %d entries", cap);
        p->v = v;
        p->cap = cap;
    }
    spec *s = &p->v[p->n];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    memcpy(s->key, s->name, sizeof s->key);
    s->kind = kind;
    s->ndim = d1 > 0 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1 > 0 ? d1 : 0;
    p->n++;
    return FS_OK;
}

#define ADD(kind, d0, d1, ...) \
    do { \
        fs_status st_ = plan_add(ctx, p, kind, d0, d1, __VA_ARGS__); \
        if (st_ != FS_OK) return st_; \
    } while (0)

/* gate/up/down of one gated MLP of width I under prefix pre (ends in '.'). */
static fs_status add_mlp(fs_ctx *ctx, plan *p, const model *m, const char *pre, int64_t I,
                         int mixtral_names)
{
    if (mixtral_names) {
        ADD(K_LINEAR, I, m->H, "%sw1.weight", pre);
        ADD(K_LINEAR, m->H, I, "%sw2.weight", pre);
        ADD(K_LINEAR, I, m->H, "%sw3.weight", pre);
    } else {
        ADD(K_LINEAR, I, m->H, "%sgate_proj.weight", pre);
        ADD(K_LINEAR, I, m->H, "%sup_proj.weight", pre);
        ADD(K_LINEAR, m->H, I, "%sdown_proj.weight", pre);
    }
    return FS_OK;
}

static fs_status add_attention(fs_ctx *ctx, plan *p, const model *m, const char *pre)
{
    if (is_deepseek(m)) {
        int64_t qk = m->nope + m->rope;
        if (m->qlora > 0) {
            ADD(K_LINEAR, m->qlora, m->H, "%sself_attn.q_a_proj.weight", pre);
            ADD(K_NORM, m->qlora, 0, "%sself_attn.q_a_layernorm.weight", pre);
            ADD(K_LINEAR, m->nh * qk, m->qlora, "%sself_attn.q_b_proj.weight", pre);
        } else {
            ADD(K_LINEAR, m->nh * qk, m->H, "%sself_attn.q_proj.weight", pre);
        }
        ADD(K_LINEAR, m->kvlora + m->rope, m->H, "%sself_attn.kv_a_proj_with_mqa.weight", pre);
        ADD(K_NORM, m->kvlora, 0, "%sself_attn.kv_a_layernorm.weight", pre);
        ADD(K_LINEAR, m->nh * (m->nope + m->vhd), m->kvlora, "%sself_attn.kv_b_proj.weight", pre);
        ADD(K_LINEAR, m->H, m->nh * m->vhd, "%sself_attn.o_proj.weight", pre);
        return FS_OK;
    }
    int qkv_bias = m->fam == F_QWEN2 || m->fam == F_QWEN2_MOE;
    int64_t qo = m->nh * m->hd, kvo = m->nkv * m->hd;
    ADD(K_LINEAR, qo, m->H, "%sself_attn.q_proj.weight", pre);
    if (qkv_bias) ADD(K_BIAS, qo, 0, "%sself_attn.q_proj.bias", pre);
    ADD(K_LINEAR, kvo, m->H, "%sself_attn.k_proj.weight", pre);
    if (qkv_bias) ADD(K_BIAS, kvo, 0, "%sself_attn.k_proj.bias", pre);
    ADD(K_LINEAR, kvo, m->H, "%sself_attn.v_proj.weight", pre);
    if (qkv_bias) ADD(K_BIAS, kvo, 0, "%sself_attn.v_proj.bias", pre);
    ADD(K_LINEAR, m->H, qo, "%sself_attn.o_proj.weight", pre);
    if (m->fam == F_QWEN3 || m->fam == F_QWEN3_MOE) {
        ADD(K_NORM, m->hd, 0, "%sself_attn.q_norm.weight", pre);
        ADD(K_NORM, m->hd, 0, "%sself_attn.k_norm.weight", pre);
    }
    return FS_OK;
}

static fs_status add_moe(fs_ctx *ctx, plan *p, const model *m, const char *pre)
{
    char ep[NAME_LEN];
    fs_status st;
    if (m->fam == F_MIXTRAL) {
        ADD(K_ROUTER, m->E, m->H, "%sblock_sparse_moe.gate.weight", pre);
        for (int64_t e = 0; e < m->E; e++) {
            snprintf(ep, sizeof ep, "%sblock_sparse_moe.experts.%" PRId64 ".", pre, e);
            if ((st = add_mlp(ctx, p, m, ep, m->Ie, 1)) != FS_OK) return st;
        }
        return FS_OK;
    }
    ADD(K_ROUTER, m->E, m->H, "%smlp.gate.weight", pre);
    if (m->fam == F_DSV3) ADD(K_ESCB, m->E, 0, "%smlp.gate.e_score_correction_bias", pre);
    for (int64_t e = 0; e < m->E; e++) {
        snprintf(ep, sizeof ep, "%smlp.experts.%" PRId64 ".", pre, e);
        if ((st = add_mlp(ctx, p, m, ep, m->Ie, 0)) != FS_OK) return st;
    }
    if (m->fam == F_QWEN2_MOE) {
        snprintf(ep, sizeof ep, "%smlp.shared_expert.", pre);
        if ((st = add_mlp(ctx, p, m, ep, m->Is, 0)) != FS_OK) return st;
        ADD(K_ROUTER, 1, m->H, "%smlp.shared_expert_gate.weight", pre);
    } else if (is_deepseek(m)) {
        snprintf(ep, sizeof ep, "%smlp.shared_experts.", pre);
        if ((st = add_mlp(ctx, p, m, ep, m->Ie * m->nshared, 0)) != FS_OK) return st;
    }
    return FS_OK;
}

static fs_status add_layer(fs_ctx *ctx, plan *p, const model *m, int64_t l)
{
    char pre[64], mp[80];
    fs_status st;
    snprintf(pre, sizeof pre, "model.layers.%" PRId64 ".", l);
    ADD(K_NORM, m->H, 0, "%sinput_layernorm.weight", pre);
    if ((st = add_attention(ctx, p, m, pre)) != FS_OK) return st;
    ADD(K_NORM, m->H, 0, "%spost_attention_layernorm.weight", pre);
    if (layer_is_moe(m, l)) return add_moe(ctx, p, m, pre);
    snprintf(mp, sizeof mp, "%smlp.", pre);
    return add_mlp(ctx, p, m, mp, m->I, 0);
}

/* The whole checkpoint in file-list order: embeddings, layers, final norm,
 * lm_head, then the MTP layer.  Errors: FS_ERR_NOMEM. */
static fs_status build_plan(fs_ctx *ctx, plan *p, const model *m)
{
    fs_status st;
    ADD(K_EMBED, m->V, m->H, "model.embed_tokens.weight");
    for (int64_t l = 0; l < m->L; l++)
        if ((st = add_layer(ctx, p, m, l)) != FS_OK) return st;
    ADD(K_NORM, m->H, 0, "model.norm.weight");
    if (!m->tied) ADD(K_EMBED, m->V, m->H, "lm_head.weight");
    if (m->mtp) {
        int64_t l = m->L;
        if ((st = add_layer(ctx, p, m, l)) != FS_OK) return st;
        ADD(K_NORM, m->H, 0, "model.layers.%" PRId64 ".enorm.weight", l);
        ADD(K_NORM, m->H, 0, "model.layers.%" PRId64 ".hnorm.weight", l);
        ADD(K_LINEAR_BF, m->H, 2 * m->H, "model.layers.%" PRId64 ".eh_proj.weight", l);
        ADD(K_EMBED, m->V, m->H, "model.layers.%" PRId64 ".embed_tokens.weight", l);
        snprintf(p->v[p->n - 1].key, NAME_LEN, "model.embed_tokens.weight");
        ADD(K_NORM, m->H, 0, "model.layers.%" PRId64 ".shared_head.norm.weight", l);
        ADD(K_EMBED, m->V, m->H, "model.layers.%" PRId64 ".shared_head.head.weight", l);
        snprintf(p->v[p->n - 1].key, NAME_LEN, "%s",
                 m->tied ? "model.embed_tokens.weight" : "lm_head.weight");
    }
    return FS_OK;
}

#undef ADD

/* ---- random values -------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct rng { uint64_t s; } rng;

/* xorshift64* seeded from the run seed and a tensor key (FNV-1a). */
static void rng_init(rng *r, uint64_t seed, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
        h ^= *c;
        h *= 0x100000001b3ull;
    }
    uint64_t s = seed ^ h;
    r->s = splitmix64(&s);
    if (r->s == 0) r->s = 0x2545F4914F6CDD1Dull;   /* xorshift must not start at 0 */
}

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_unif(rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }

/* Approximately N(0, 1): sum of 12 uniforms minus 6 (Irwin-Hall). */
static double rng_normal(rng *r)
{
    double s = 0.0;
    for (int i = 0; i < 12; i++) s += rng_unif(r);
    return s - 6.0;
}

/* The f32 master values of a tensor (malloc'ed, caller frees); NULL on OOM. */
static float *gen_values(const model *m, const spec *s, size_t n)
{
    float *v = fs_alloc2(n ? n : 1, sizeof *v);
    if (!v) return NULL;
    rng r;
    rng_init(&r, m->seed, s->key);
    for (size_t i = 0; i < n; i++) {
        double z = rng_normal(&r);
        switch (s->kind) {
        case K_NORM: v[i] = (float)(1.0 + NORM_STD * z); break;
        case K_ESCB: v[i] = (float)(ESCB_STD * z); break;
        default: v[i] = (float)(LINEAR_STD * z); break;
        }
    }
    if ((s->kind == K_LINEAR || s->kind == K_LINEAR_BF) && s->ndim == 2) {
        int64_t rows = s->shape[0], cols = s->shape[1];
        for (int k = 0; k < OUTLIER_COLS; k++) {
            int64_t c = (int64_t)(rng_next(&r) % (uint64_t)cols);
            for (int64_t i = 0; i < rows; i++) v[i * cols + c] *= OUTLIER_GAIN;
        }
    }
    return v;
}

/* ---- encoding ------------------------------------------------------------- */

/* E4M3FN value of a non-negative code 0..126 (exp bias 7, subnormals at exp 0). */
static float e4m3_value(int code)
{
    int e = code >> 3, mant = code & 7;
    if (e == 0) return ldexpf((float)mant / 8.0f, -6);
    return ldexpf(1.0f + (float)mant / 8.0f, e - 7);
}

/* Nearest E4M3FN code of x (ties to the even code, beyond 448 saturates to
 * 448, the sign kept even for zero).  tab holds e4m3_value(0..126). */
static uint8_t e4m3_encode(const float tab[127], float x)
{
    uint8_t sign = signbit(x) ? 0x80 : 0x00;
    double a = fabs((double)x);
    int best = 0;
    double bd = a;   /* distance to code 0 (value 0) */
    for (int c = 1; c <= 126; c++) {
        double d = fabs(a - (double)tab[c]);
        if (d < bd || (d == bd && (c & 1) == 0)) {
            bd = d;
            best = c;
        }
        if ((double)tab[c] > a) break;   /* values increase: later codes are farther */
    }
    return (uint8_t)(sign | (uint8_t)best);
}

typedef struct out_tensor {
    char name[NAME_LEN + 16];
    fs_dtype dt;
    int ndim;
    int64_t shape[2];
    uint8_t *data;
    size_t nbytes;
} out_tensor;

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static void put_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

/* Stores v[n] in dtype dt (F32, F16 or BF16) into a new buffer of o. */
static fs_status encode_plain(fs_ctx *ctx, out_tensor *o, const float *v, size_t n, fs_dtype dt)
{
    size_t isz = fs_dtype_size(dt);
    o->dt = dt;
    o->nbytes = n * isz;
    o->data = fs_alloc2(n ? n : 1, isz);
    if (!o->data) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %zu bytes", o->name, n * isz);
    for (size_t i = 0; i < n; i++) {
        if (dt == FS_DT_F32) put_f32(o->data + 4 * i, v[i]);
        else if (dt == FS_DT_F16) put_u16(o->data + 2 * i, fs_f32_to_f16(v[i]));
        else put_u16(o->data + 2 * i, fs_f32_to_bf16(v[i]));
    }
    return FS_OK;
}

/* FP8 block quantization of W [rows, cols] (ARCHITECTURES.md §6) into q
 * (F8_E4M3, same shape) and sc (F32 [ceil(rows/128), ceil(cols/128)]). */
static fs_status encode_fp8(fs_ctx *ctx, out_tensor *q, out_tensor *sc, const float *W,
                            int64_t rows, int64_t cols)
{
    _Static_assert(sizeof(float) == 4, "float must be IEEE binary32");
    float tab[127];
    for (int c = 0; c < 127; c++) tab[c] = e4m3_value(c);
    int64_t br = (rows + FP8_BLOCK - 1) / FP8_BLOCK, bc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
    q->dt = FS_DT_F8_E4M3;
    q->nbytes = (size_t)(rows * cols);
    q->data = malloc(q->nbytes ? q->nbytes : 1);
    sc->dt = FS_DT_F32;
    sc->ndim = 2;
    sc->shape[0] = br;
    sc->shape[1] = bc;
    sc->nbytes = (size_t)(br * bc) * 4;
    sc->data = malloc(sc->nbytes ? sc->nbytes : 1);
    if (!q->data || !sc->data) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: fp8 buffers", q->name);
    for (int64_t bi = 0; bi < br; bi++) {
        int64_t r0 = bi * FP8_BLOCK, r1 = r0 + FP8_BLOCK < rows ? r0 + FP8_BLOCK : rows;
        for (int64_t bj = 0; bj < bc; bj++) {
            int64_t c0 = bj * FP8_BLOCK, c1 = c0 + FP8_BLOCK < cols ? c0 + FP8_BLOCK : cols;
            float amax = 0.0f;
            for (int64_t i = r0; i < r1; i++)
                for (int64_t j = c0; j < c1; j++) amax = fmaxf(amax, fabsf(W[i * cols + j]));
            float S = amax > 0.0f ? amax / E4M3_MAX : 1.0f;
            for (int64_t i = r0; i < r1; i++)
                for (int64_t j = c0; j < c1; j++)
                    q->data[i * cols + j] = e4m3_encode(tab, W[i * cols + j] / S);
            put_f32(sc->data + 4 * (bi * bc + bj), S);
        }
    }
    return FS_OK;
}

/* Generates and encodes every planned tensor into outs (room for 2 per spec);
 * *nout receives the count.  Errors: FS_ERR_NOMEM. */
static fs_status materialize(fs_ctx *ctx, const model *m, const plan *p, out_tensor *outs,
                             int *nout)
{
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        const spec *s = &p->v[i];
        size_t n = (size_t)s->shape[0] * (size_t)(s->ndim == 2 ? s->shape[1] : 1);
        float *v = gen_values(m, s, n);
        if (!v) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %zu values", s->name, n);
        out_tensor *o = &outs[k++];
        snprintf(o->name, sizeof o->name, "%s", s->name);
        o->ndim = s->ndim;
        o->shape[0] = s->shape[0];
        o->shape[1] = s->shape[1];
        fs_status st;
        if (m->fp8 && s->kind == K_LINEAR) {
            out_tensor *sc = &outs[k++];
            snprintf(sc->name, sizeof sc->name, "%s_scale_inv", s->name);
            st = encode_fp8(ctx, o, sc, v, s->shape[0], s->shape[1]);
        } else {
            st = encode_plain(ctx, o, v, n, s->kind == K_ESCB ? FS_DT_F32 : m->dt);
        }
        free(v);
        if (st != FS_OK) {
            *nout = k;
            return st;
        }
    }
    *nout = k;
    return FS_OK;
}

/* ---- files ---------------------------------------------------------------- */

/* mkdir -p.  Errors: FS_ERR_IO naming the component. */
static fs_status mkdir_p(fs_ctx *ctx, const char *path)
{
    size_t len = strlen(path);
    char *buf = malloc(len + 1);
    if (!buf) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            fs_status st = fs_ctx_err(ctx, FS_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
            free(buf);
            return st;
        }
        buf[i] = saved;
    }
    free(buf);
    return FS_OK;
}

/* Creates DIR if missing; refuses a non-folder or a folder with entries. */
static fs_status prepare_dir(fs_ctx *ctx, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT) return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", dir, strerror(errno));
        return mkdir_p(ctx, dir);
    }
    if (!S_ISDIR(st.st_mode)) return fs_ctx_err(ctx, FS_ERR_IO, "%s exists and is not a folder", dir);
    DIR *d = opendir(dir);
    if (!d) return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char found[256] = "";
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(found, sizeof found, "%s", e->d_name);
            break;
        }
    closedir(d);
    if (found[0])
        return fs_ctx_err(ctx, FS_ERR_IO, "%s is not empty (found '%s'); refusing to write into it",
                          dir, found);
    return FS_OK;
}

static void join(char *buf, size_t n, const char *dir, const char *file)
{
    size_t l = strlen(dir);
    snprintf(buf, n, "%s%s%s", dir, (l > 0 && dir[l - 1] == '/') ? "" : "/", file);
}

static void shard_name(char *buf, size_t n, int64_t k, int64_t K)
{
    if (K == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05" PRId64 "-of-%05" PRId64 ".safetensors", k + 1, K);
}

/* Writes root (stolen) to DIR/file.  Errors: FS_ERR_NOMEM, FS_ERR_IO. */
static fs_status write_json(fs_ctx *ctx, const char *dir, const char *file, json_t *root, size_t flags)
{
    char path[4096];
    join(path, sizeof path, dir, file);
    if (!root) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: JSON", path);
    int rc = json_dump_file(root, path, flags | JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (rc != 0) return fs_ctx_err(ctx, FS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return FS_OK;
}

/* The shards (tensor i goes to shard i % K) and, for K > 1, the index. */
static fs_status write_shards(fs_ctx *ctx, const model *m, const out_tensor *outs, int nout,
                              uint64_t *total)
{
    char path[4096], file[64];
    *total = 0;
    for (int i = 0; i < nout; i++) *total += outs[i].nbytes;
    for (int64_t k = 0; k < m->shards; k++) {
        shard_name(file, sizeof file, k, m->shards);
        join(path, sizeof path, m->out, file);
        fs_st_writer *w = NULL;
        fs_status st = fs_st_writer_new(ctx, path, &w);
        if (st != FS_OK) return st;
        for (int i = (int)k; i < nout && st == FS_OK; i += (int)m->shards)
            st = fs_st_writer_add(ctx, w, outs[i].name, outs[i].dt, outs[i].ndim, outs[i].shape,
                                  outs[i].data);
        if (st == FS_OK) st = fs_st_writer_meta(ctx, w, "format", "pt");
        if (st != FS_OK) {
            fs_st_writer_abort(w);
            return st;
        }
        if ((st = fs_st_writer_commit(ctx, w)) != FS_OK) return st;
    }
    if (m->shards == 1) return FS_OK;
    json_t *map = json_object();
    for (int i = 0; map && i < nout; i++) {
        shard_name(file, sizeof file, i % m->shards, m->shards);
        if (json_object_set_new(map, outs[i].name, json_string(file)) != 0) {
            json_decref(map);
            map = NULL;
        }
    }
    json_t *root = map ? json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                                   (json_int_t)*total, "weight_map", map) : NULL;
    return write_json(ctx, m->out, "model.safetensors.index.json", root, JSON_SORT_KEYS);
}

/* ---- config.json ---------------------------------------------------------- */

static const char *torch_dtype(fs_dtype dt)
{
    return dt == FS_DT_F32 ? "float32" : dt == FS_DT_F16 ? "float16" : "bfloat16";
}

static json_t *yarn(double mscale)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I, s:s}", "beta_fast", 32.0, "beta_slow", 1.0,
                     "factor", 40.0, "mscale", mscale, "mscale_all_dim", mscale,
                     "original_max_position_embeddings", (json_int_t)4096, "type", "yarn");
}

/* Sets key to val (stolen); records NOMEM in *bad when either is NULL. */
static void put(json_t *o, const char *key, json_t *val, int *bad)
{
    if (!val || json_object_set_new(o, key, val) != 0) *bad = 1;
}

static json_t *config_json(const model *m)
{
    int bad = 0;
    json_t *c = json_object();
    if (!c) return NULL;
    const enum family f = m->fam;
    double eps = (f == F_LLAMA || f == F_MISTRAL || f == F_MIXTRAL) ? 1e-5 : 1e-6;
    double theta = f == F_LLAMA ? 500000.0 : is_deepseek(m) ? 10000.0 : 1000000.0;
    int64_t maxpos = f == F_LLAMA ? 131072 : is_deepseek(m) ? 163840 : f == F_QWEN3 ? 40960 : 32768;

    put(c, "architectures", json_pack("[s]", family_arch[f]), &bad);
    put(c, "model_type", json_string(family_name[f]), &bad);
    put(c, "hidden_size", json_integer(m->H), &bad);
    /* mixtral's intermediate_size is the expert width */
    put(c, "intermediate_size", json_integer(f == F_MIXTRAL ? m->Ie : m->I), &bad);
    put(c, "num_hidden_layers", json_integer(m->L), &bad);
    put(c, "num_attention_heads", json_integer(m->nh), &bad);
    put(c, "num_key_value_heads", json_integer(m->nkv), &bad);
    if (!is_deepseek(m)) put(c, "head_dim", json_integer(m->hd), &bad);
    put(c, "hidden_act", json_string("silu"), &bad);
    put(c, "rms_norm_eps", json_real(eps), &bad);
    put(c, "rope_theta", json_real(theta), &bad);
    if (f == F_LLAMA)
        put(c, "rope_scaling",
            json_pack("{s:f, s:f, s:f, s:I, s:s}", "factor", 8.0, "low_freq_factor", 1.0,
                      "high_freq_factor", 4.0, "original_max_position_embeddings",
                      (json_int_t)8192, "rope_type", "llama3"), &bad);
    else if (is_deepseek(m))
        put(c, "rope_scaling", yarn(f == F_DSV2 ? 0.707 : 1.0), &bad);
    else
        put(c, "rope_scaling", json_null(), &bad);
    put(c, "max_position_embeddings", json_integer(maxpos), &bad);
    put(c, "vocab_size", json_integer(m->V), &bad);
    put(c, "tie_word_embeddings", json_boolean(m->tied), &bad);
    put(c, "torch_dtype", json_string(torch_dtype(m->dt)), &bad);
    put(c, "bos_token_id", json_integer(1), &bad);
    put(c, "eos_token_id", json_integer(2), &bad);
    put(c, "initializer_range", json_real(0.02), &bad);
    put(c, "use_cache", json_true(), &bad);
    put(c, "attention_dropout", json_real(0.0), &bad);
    put(c, "transformers_version", json_string("4.46.3"), &bad);

    switch (f) {
    case F_LLAMA:
        put(c, "attention_bias", json_false(), &bad);
        put(c, "mlp_bias", json_false(), &bad);
        put(c, "pretraining_tp", json_integer(1), &bad);
        break;
    case F_MISTRAL:
        put(c, "sliding_window", json_integer(64), &bad);
        break;
    case F_QWEN2:
        put(c, "use_sliding_window", json_false(), &bad);
        put(c, "sliding_window", json_integer(4096), &bad);   /* ignored: use_sliding_window false */
        put(c, "max_window_layers", json_integer(m->L), &bad);
        break;
    case F_QWEN3:
        put(c, "attention_bias", json_false(), &bad);
        put(c, "use_sliding_window", json_false(), &bad);
        put(c, "sliding_window", json_null(), &bad);
        put(c, "max_window_layers", json_integer(m->L), &bad);
        break;
    case F_MIXTRAL:
        put(c, "num_local_experts", json_integer(m->E), &bad);
        put(c, "num_experts_per_tok", json_integer(m->topk), &bad);
        put(c, "sliding_window", json_null(), &bad);
        put(c, "router_aux_loss_coef", json_real(0.02), &bad);
        put(c, "output_router_logits", json_false(), &bad);
        break;
    case F_QWEN2_MOE:
    case F_QWEN3_MOE:
        put(c, "num_experts", json_integer(m->E), &bad);
        put(c, "num_experts_per_tok", json_integer(m->topk), &bad);
        put(c, "moe_intermediate_size", json_integer(m->Ie), &bad);
        if (f == F_QWEN2_MOE)
            put(c, "shared_expert_intermediate_size", json_integer(m->Is), &bad);
        else
            put(c, "attention_bias", json_false(), &bad);
        put(c, "norm_topk_prob", json_boolean(f == F_QWEN3_MOE), &bad);
        put(c, "decoder_sparse_step", json_integer(1), &bad);
        put(c, "mlp_only_layers", m->qwen_dense0 ? json_pack("[i]", 0) : json_array(), &bad);
        put(c, "use_sliding_window", json_false(), &bad);
        put(c, "sliding_window", f == F_QWEN2_MOE ? json_integer(32768) : json_null(), &bad);
        put(c, "max_window_layers", json_integer(m->L), &bad);
        put(c, "router_aux_loss_coef", json_real(0.001), &bad);
        put(c, "output_router_logits", json_false(), &bad);
        break;
    case F_DSV2:
    case F_DSV3:
        put(c, "attention_bias", json_false(), &bad);
        put(c, "q_lora_rank", m->qlora > 0 ? json_integer(m->qlora) : json_null(), &bad);
        put(c, "kv_lora_rank", json_integer(m->kvlora), &bad);
        put(c, "qk_nope_head_dim", json_integer(m->nope), &bad);
        put(c, "qk_rope_head_dim", json_integer(m->rope), &bad);
        put(c, "v_head_dim", json_integer(m->vhd), &bad);
        put(c, "moe_intermediate_size", json_integer(m->Ie), &bad);
        put(c, "n_routed_experts", json_integer(m->E), &bad);
        put(c, "n_shared_experts", json_integer(m->nshared), &bad);
        put(c, "num_experts_per_tok", json_integer(m->topk), &bad);
        put(c, "first_k_dense_replace", json_integer(m->first_dense), &bad);
        put(c, "moe_layer_freq", json_integer(1), &bad);
        put(c, "n_group", json_integer(m->n_group), &bad);
        put(c, "topk_group", json_integer(m->topk_group), &bad);
        put(c, "topk_method", json_string(f == F_DSV3 ? "noaux_tc" : "group_limited_greedy"), &bad);
        put(c, "scoring_func", json_string(f == F_DSV3 ? "sigmoid" : "softmax"), &bad);
        put(c, "norm_topk_prob", json_boolean(f == F_DSV3), &bad);
        put(c, "routed_scaling_factor", json_real(f == F_DSV3 ? 2.5 : 16.0), &bad);
        put(c, "aux_loss_alpha", json_real(0.001), &bad);
        put(c, "seq_aux", json_true(), &bad);
        if (f == F_DSV3) {
            put(c, "ep_size", json_integer(1), &bad);
            put(c, "num_nextn_predict_layers", json_integer(m->mtp ? 1 : 0), &bad);
        }
        break;
    default:
        break;
    }
    if (m->fp8)
        put(c, "quantization_config",
            json_pack("{s:s, s:s, s:s, s:[i,i]}", "quant_method", "fp8", "fmt", "e4m3",
                      "activation_scheme", "dynamic", "weight_block_size", FP8_BLOCK, FP8_BLOCK),
            &bad);
    if (bad) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* generation_config.json, tokenizer.json, tokenizer_config.json: tiny placeholders. */
static fs_status write_aux(fs_ctx *ctx, const model *m)
{
    fs_status st = write_json(ctx, m->out, "generation_config.json",
                              json_pack("{s:b, s:i, s:i, s:b, s:f, s:f, s:s}", "_from_model_config",
                                        1, "bos_token_id", 1, "eos_token_id", 2, "do_sample", 0,
                                        "temperature", 1.0, "top_p", 1.0, "transformers_version",
                                        "4.46.3"), JSON_PRESERVE_ORDER);
    if (st != FS_OK) return st;

    json_t *vocab = json_object();
    for (int i = 0; vocab && i < TOKENIZER_SIZE; i++) {
        char tok[16];
        if (i == 0) snprintf(tok, sizeof tok, "<unk>");
        else if (i == 1) snprintf(tok, sizeof tok, "<s>");
        else if (i == 2) snprintf(tok, sizeof tok, "</s>");
        else snprintf(tok, sizeof tok, "t%d", i);
        if (json_object_set_new(vocab, tok, json_integer(i)) != 0) {
            json_decref(vocab);
            vocab = NULL;
        }
    }
    json_t *tok = vocab ? json_pack(
        "{s:s, s:n, s:n, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}, {s:i, s:s, s:b, s:b, s:b, s:b, s:b},"
        " {s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:{s:s}, s:n, s:n, s:{s:s, s:o, s:s}}",
        "version", "1.0", "truncation", "padding", "added_tokens",
        "id", 0, "content", "<unk>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1,
        "id", 1, "content", "<s>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1,
        "id", 2, "content", "</s>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1,
        "normalizer", "pre_tokenizer", "type", "Whitespace", "post_processor", "decoder",
        "model", "type", "WordLevel", "vocab", vocab, "unk_token", "<unk>") : NULL;
    if ((st = write_json(ctx, m->out, "tokenizer.json", tok, JSON_PRESERVE_ORDER)) != FS_OK)
        return st;
    return write_json(ctx, m->out, "tokenizer_config.json",
                      json_pack("{s:s, s:s, s:s, s:s, s:I, s:b, s:b}", "tokenizer_class",
                                "PreTrainedTokenizerFast", "bos_token", "<s>", "eos_token", "</s>",
                                "unk_token", "<unk>", "model_max_length", (json_int_t)4096,
                                "add_bos_token", 1, "add_eos_token", 0),
                      JSON_PRESERVE_ORDER);
}

/* ---- command line --------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: gen-tiny --type T --out DIR [--seed N] [--layers L] [--dtype bf16|f16|f32]\n"
            "                [--shards K] [--fp8 | --no-fp8] [--mtp] [--tied] [--hidden H]\n"
            "  --type T     llama mistral qwen2 qwen3 mixtral qwen2_moe qwen3_moe deepseek_v2 deepseek_v3\n"
            "  --out DIR    created if missing; must be empty\n"
            "  --seed N     64-bit seed of the random weights (default 1)\n"
            "  --layers L   decoder layers, 1..%d (default 2)\n"
            "  --dtype D    storage of non-FP8 tensors (default bf16)\n"
            "  --shards K   safetensors files (default 2; 1 = model.safetensors, no index)\n"
            "  --fp8        block-FP8 (E4M3, 128x128, F32 _scale_inv) decoder linears;\n"
            "               default for deepseek_v3, where it also makes hidden 160\n"
            "  --no-fp8     turn the deepseek_v3 default off\n"
            "  --mtp        deepseek_v3 only: the MTP layer model.layers.L.*\n"
            "  --tied       tie_word_embeddings true, no lm_head.weight\n"
            "  --hidden H   override hidden_size (default 64; 160 for FP8 deepseek_v3)\n"
            "  --intermediate I   override intermediate_size (default 172)\n"
            "  --heads N    attention heads (kv heads N/2, head_dim hidden/N; default 4 of 16)\n"
            "  --vocab V    vocabulary rows (default 96; e.g. 32000 for a real tokenizer's size)\n"
            "  --expert-width N   MoE families: moe_intermediate_size of the routed experts\n"
            "               (default 48; 128 and up make Marlin-shaped experts)\n"
            "  --moe-every-layer  qwen3_moe: no dense layer 0; deepseek: first_k_dense_replace 0\n",
            MAX_LAYERS);
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Fills m from argv.  Errors: FS_ERR_USAGE quoting the bad value. */
static fs_status parse_args(fs_ctx *ctx, int argc, char **argv, model *m, int *help)
{
    const char *type = NULL, *dtype = "bf16";
    int64_t layers = 2, shards = 2, hidden = 0, inter = 0, heads = 0, vocab = 0, ewidth = 0;
    int every = 0;
    int fp8 = -1;
    memset(m, 0, sizeof *m);
    m->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        char flag[32];
        const char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof flag) {
            memcpy(flag, a, (size_t)(eq - a));
            flag[eq - a] = '\0';
            val = eq + 1;
            a = flag;
        }
        int takes = !strcmp(a, "--type") || !strcmp(a, "--out") || !strcmp(a, "--seed") ||
                    !strcmp(a, "--layers") || !strcmp(a, "--dtype") || !strcmp(a, "--shards") ||
                    !strcmp(a, "--hidden") || !strcmp(a, "--intermediate") || !strcmp(a, "--heads") ||
                    !strcmp(a, "--vocab") || !strcmp(a, "--expert-width");
        if (takes && !val) {
            if (i + 1 >= argc) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s needs a value", a);
            val = argv[++i];
        } else if (!takes && val) {
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s takes no value", a);
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) *help = 1;
        else if (!strcmp(a, "--type")) type = val;
        else if (!strcmp(a, "--out")) m->out = val;
        else if (!strcmp(a, "--dtype")) dtype = val;
        else if (!strcmp(a, "--fp8")) fp8 = 1;
        else if (!strcmp(a, "--no-fp8")) fp8 = 0;
        else if (!strcmp(a, "--mtp")) m->mtp = 1;
        else if (!strcmp(a, "--tied")) m->tied = 1;
        else if (!strcmp(a, "--moe-every-layer")) every = 1;
        else if (!strcmp(a, "--expert-width")) {
            if (parse_i64(val, 1, 4 * MAX_HIDDEN, &ewidth))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--expert-width '%s': want 1..%d", val, 4 * MAX_HIDDEN);
        }
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-')
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--seed '%s': not an unsigned 64-bit integer", val);
            m->seed = v;
        } else if (!strcmp(a, "--layers")) {
            if (parse_i64(val, 1, MAX_LAYERS, &layers))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--layers '%s': want 1..%d", val, MAX_LAYERS);
        } else if (!strcmp(a, "--shards")) {
            if (parse_i64(val, 1, MAX_SHARDS, &shards))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--shards '%s': want 1..%d", val, MAX_SHARDS);
        } else if (!strcmp(a, "--vocab")) {
            if (parse_i64(val, TOKENIZER_SIZE, 1 << 20, &vocab))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--vocab '%s': want %d..%d", val, TOKENIZER_SIZE, 1 << 20);
        } else if (!strcmp(a, "--intermediate")) {
            if (parse_i64(val, 1, 4 * MAX_HIDDEN, &inter))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--intermediate '%s': want 1..%d", val, 4 * MAX_HIDDEN);
        } else if (!strcmp(a, "--heads")) {
            if (parse_i64(val, 2, 256, &heads))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--heads '%s': want 2..256", val);
        } else if (!strcmp(a, "--hidden")) {
            if (parse_i64(val, 1, MAX_HIDDEN, &hidden))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--hidden '%s': want 1..%d", val, MAX_HIDDEN);
        } else {
            return fs_ctx_err(ctx, FS_ERR_USAGE, "unknown argument '%s'", argv[i]);
        }
    }
    if (*help) return FS_OK;
    if (!type) return fs_ctx_err(ctx, FS_ERR_USAGE, "--type is required");
    if (!m->out || !m->out[0]) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out is required");
    int f = 0;
    while (f < F_COUNT && strcmp(type, family_name[f]) != 0) f++;
    if (f == F_COUNT) return fs_ctx_err(ctx, FS_ERR_USAGE, "--type '%s': unknown family", type);
    m->fam = (enum family)f;
    if (!strcmp(dtype, "bf16")) m->dt = FS_DT_BF16;
    else if (!strcmp(dtype, "f16")) m->dt = FS_DT_F16;
    else if (!strcmp(dtype, "f32")) m->dt = FS_DT_F32;
    else return fs_ctx_err(ctx, FS_ERR_USAGE, "--dtype '%s': want bf16, f16 or f32", dtype);
    if (m->mtp && m->fam != F_DSV3)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--mtp is for deepseek_v3 only (not %s)", type);
    m->fp8 = fp8 >= 0 ? fp8 : m->fam == F_DSV3;
    m->L = layers;
    m->shards = shards;

    /* sizes: tiny, with non-multiple-of-32 widths, GQA and partial FP8 blocks */
    m->H = hidden ? hidden : (m->fam == F_DSV3 && m->fp8) ? 160 : 64;
    m->I = inter ? inter : 172;
    m->nh = heads ? heads : 4;
    m->nkv = is_deepseek(m) ? m->nh : m->nh / 2;
    m->hd = heads ? m->H / heads : 16;       /* --heads: head_dim = hidden / heads (bench models) */
    if (m->hd < 2 || m->hd % 2)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--heads %lld: hidden / heads must be an even number >= 2", (long long)m->nh);
    m->V = vocab ? vocab : 96;
    if (m->fam == F_MIXTRAL || is_qwen_moe(m)) {
        m->E = 4;
        m->topk = 2;
        m->Ie = 48;
        m->Is = m->fam == F_QWEN2_MOE ? 80 : 0;
        m->qwen_dense0 = m->fam == F_QWEN3_MOE && m->L >= 2 && !every;
    }
    if (is_deepseek(m)) {
        m->qlora = m->fam == F_DSV3 ? 48 : 0;
        m->kvlora = 32;
        m->nope = 16;
        m->rope = 8;
        m->vhd = 16;
        m->E = 8;
        m->topk = 2;
        m->Ie = 48;
        m->nshared = 1;
        m->first_dense = every ? 0 : 1;
        m->n_group = 2;
        m->topk_group = 1;
    }
    if (ewidth) {
        if (!m->E) return fs_ctx_err(ctx, FS_ERR_USAGE, "--expert-width is for MoE families (not %s)", type);
        m->Ie = ewidth;
    }
    if (every && !m->E) return fs_ctx_err(ctx, FS_ERR_USAGE, "--moe-every-layer is for MoE families (not %s)", type);
    return FS_OK;
}

/* ---- main ------------------------------------------------------------------- */

static int fail(const fs_ctx *ctx)
{
    fprintf(stderr, "gen-tiny: error: %s\n", ctx->errmsg);
    return ctx->err == FS_ERR_USAGE ? 2 : 1;
}

int main(int argc, char **argv)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    model m;
    int help = 0;
    if (parse_args(&ctx, argc, argv, &m, &help) != FS_OK) return fail(&ctx);
    if (help) {
        usage(stdout);
        return 0;
    }

    plan p = {0};
    out_tensor *outs = NULL;
    int nout = 0;
    uint64_t total = 0;
    fs_status st = build_plan(&ctx, &p, &m);
    if (st == FS_OK) {
        outs = calloc((size_t)p.n * 2, sizeof *outs);
        if (!outs) st = fs_ctx_err(&ctx, FS_ERR_NOMEM, "tensor table");
    }
    if (st == FS_OK) {
        int64_t ntensors = 0;
        for (int i = 0; i < p.n; i++) ntensors += (m.fp8 && p.v[i].kind == K_LINEAR) ? 2 : 1;
        if (m.shards > ntensors)
            st = fs_ctx_err(&ctx, FS_ERR_USAGE, "--shards %" PRId64 ": more than the %" PRId64
                            " tensors", m.shards, ntensors);
    }
    if (st == FS_OK) st = prepare_dir(&ctx, m.out);
    if (st == FS_OK) st = materialize(&ctx, &m, &p, outs, &nout);
    if (st == FS_OK) st = write_shards(&ctx, &m, outs, nout, &total);
    if (st == FS_OK) {
        json_t *cfg = config_json(&m);
        st = write_json(&ctx, m.out, "config.json", cfg, JSON_PRESERVE_ORDER);
    }
    if (st == FS_OK) st = write_aux(&ctx, &m);

    for (int i = 0; outs && i < nout; i++) free(outs[i].data);
    free(outs);
    free(p.v);
    if (st != FS_OK) return fail(&ctx);
    printf("gen-tiny: %s, %" PRId64 " layers, %d tensors, %" PRIu64 " bytes in %" PRId64
           " shards -> %s\n", family_name[m.fam], m.L, nout, total, m.shards, m.out);
    return 0;
}
