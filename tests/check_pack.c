/* check_pack.c: the forge and gptq bit layouts of pack.h against bytes worked
 * out by hand and against naive references written here that build each
 * stream one bit at a time; the decoders against references with their own
 * Q8.8 (exp2 in double) and F16 (ldexp) conversions, compared bit for bit.
 *
 * Invariants of the suite:
 *  1. No expected value comes from the code under test: references only read
 *     the codes, zeros and scales the test generated itself.
 *  2. Output buffers are filled with 0xFF (or NaN patterns) before each call,
 *     so a function that leaves padding or an element unwritten is caught.
 *  3. Comparisons are exact (memcmp of float bits): the decoders must compute
 *     the engine's expression, so no tolerance is needed or allowed.
 */
#include <math.h>
#include <string.h>

#include "tests/util.h"
#include "src/formats/pack.h"


static const int all_bits[] = {2, 3, 4, 8};
#define NBITS (int)(sizeof all_bits / sizeof all_bits[0])

/* Shapes (out, in) with in and out not multiples of 8 or 32, and tiny ones. */
static const int64_t shapes[][2] = {{13, 172}, {1, 1}, {7, 33}, {32, 64}, {5, 3}, {3, 96}};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

/* ---- test-side references ------------------------------------------------- */

static void random_codes(t_rng *r, uint8_t *c, int64_t n, int bits)
{
    for (int64_t i = 0; i < n; i++) c[i] = (uint8_t)(t_next(r) & ((1u << bits) - 1));
}

/* forge row stream, one bit at a time: stream bit b of row o is bit (b % bits)
 * of code[o][b / bits]; stream bit b is bit (b % 8) of byte b / 8. */
static void ref_forge_pack(const uint8_t *codes, int64_t out, int64_t in, int bits,
                           uint8_t *packed, int64_t rb)
{
    memset(packed, 0, (size_t)(out * rb));
    for (int64_t o = 0; o < out; o++)
        for (int64_t b = 0; b < in * bits; b++) {
            unsigned bit = (codes[o * in + b / bits] >> (b % bits)) & 1u;
            packed[o * rb + b / 8] |= (uint8_t)(bit << (b % 8));
        }
}

/* gptq qweight, one bit at a time: stream bit b of column o is bit (b % bits)
 * of code[o][b / bits] and lands in bit (b % 32) of qweight[b / 32][o]. */
static void ref_gptq_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits,
                             uint32_t *qw, int64_t rows)
{
    memset(qw, 0, sizeof(uint32_t) * (size_t)(rows * out));
    for (int64_t o = 0; o < out; o++)
        for (int64_t b = 0; b < in * bits; b++) {
            uint32_t bit = (codes[o * in + b / bits] >> (b % bits)) & 1u;
            qw[(b / 32) * out + o] |= bit << (b % 32);
        }
}

/* gptq qzeros, one bit at a time: the stream of group g holds zero - 1. */
static void ref_gptq_qzeros(const uint8_t *zeros, int64_t groups, int64_t out, int bits,
                            uint32_t *qz, int64_t cols)
{
    memset(qz, 0, sizeof(uint32_t) * (size_t)(groups * cols));
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < out * bits; b++) {
            uint32_t v = (uint32_t)(zeros[g * out + b / bits] - 1);
            qz[g * cols + b / 32] |= ((v >> (b % bits)) & 1u) << (b % 32);
        }
}

/* F16 -> float from the definition: (-1)^s * 2^(e-15) * (1 + m/1024), or
 * m * 2^-24 for e = 0.  Only finite values are generated. */
static float ref_f16(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024 + m), e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* A random act-order-like permutation (Fisher-Yates). */
static void random_perm(t_rng *r, int32_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = t_next(r) % (uint64_t)(i + 1);
        int32_t t = p[i]; p[i] = p[j]; p[j] = t;
    }
}

static void ck_floats_identical(const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            ck_abort_msg("element %lld: got %a want %a", (long long)i, (double)got[i],
                         (double)want[i]);
}

/* ---- forge: hand-worked bytes ------------------------------------------------ */

static void pack_row_expect(const uint8_t *codes, int64_t in, int bits, const uint8_t *want,
                            int64_t nwant)
{
    uint8_t got[16];
    ck_assert_int_eq(fs_forge_row_bytes(bits, in), nwant);
    memset(got, 0xFF, sizeof got);
    fs_forge_pack(codes, 1, in, bits, got);
    for (int64_t i = 0; i < nwant; i++) ck_assert_uint_eq(got[i], want[i]);
    ck_assert_uint_eq(got[nwant], 0xFF);            /* nothing written past the row */
}

START_TEST(forge_hand_bytes)
{
    /* 4-bit: low nibble first: (2<<4)|1, (4<<4)|3, 15 with a zero high nibble */
    pack_row_expect((const uint8_t[]){1, 2, 3, 4, 15}, 5, 4,
                    (const uint8_t[]){0x21, 0x43, 0x0F}, 3);
    /* 2-bit: 1 | 2<<2 | 3<<4 | 0<<6 = 0x39, then 3 = 0x03 */
    pack_row_expect((const uint8_t[]){1, 2, 3, 0, 3}, 5, 2, (const uint8_t[]){0x39, 0x03}, 2);
    /* 3-bit: the 24-bit value sum code_k << 3k
     *   = 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 | 6<<15 | 7<<18 | 0<<21
     *   = 0x1 + 0x10 + 0xC0 + 0x800 + 0x5000 + 0x30000 + 0x1C0000 = 0x1F58D1
     * byte 0 = 11|010|001 (low 2 bits of 3, then 2, then 1)       = 0xD1
     * byte 1 = 0|101|100|0 (low bit of 6, 5, 4, high bit of 3)     = 0x58
     * byte 2 = 000|111|11 (0, 7, high 2 bits of 6)                 = 0x1F */
    pack_row_expect((const uint8_t[]){1, 2, 3, 4, 5, 6, 7, 0}, 8, 3,
                    (const uint8_t[]){0xD1, 0x58, 0x1F}, 3);
    /* 3-bit, 3 codes = 9 bits: 7 | 5<<3 | 6<<6 = 0x1AF -> 0xAF, 0x01 */
    pack_row_expect((const uint8_t[]){7, 5, 6}, 3, 3, (const uint8_t[]){0xAF, 0x01}, 2);
    /* 8-bit: identity */
    pack_row_expect((const uint8_t[]){0, 1, 0x80, 0xFF, 0x5A}, 5, 8,
                    (const uint8_t[]){0, 1, 0x80, 0xFF, 0x5A}, 5);
}
END_TEST

START_TEST(forge_rows_start_on_bytes)
{
    /* two rows of five 4-bit codes: each row is 3 bytes, the second row does
     * not continue the first one's half-used byte */
    const uint8_t codes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const uint8_t want[] = {0x21, 0x43, 0x05, 0x76, 0x98, 0x0A};
    uint8_t got[6];
    memset(got, 0xFF, sizeof got);
    fs_forge_pack(codes, 2, 5, 4, got);
    ck_assert_mem_eq(got, want, sizeof want);
    /* and the row sizes: ceil(in * bits / 8) */
    ck_assert_int_eq(fs_forge_row_bytes(3, 172), 65);       /* 516 bits */
    ck_assert_int_eq(fs_forge_row_bytes(2, 1), 1);
    ck_assert_int_eq(fs_forge_row_bytes(8, 13), 13);
    ck_assert_int_eq(fs_forge_row_bytes(4, (int64_t)1 << 40), (int64_t)1 << 39);
}
END_TEST

START_TEST(forge_vs_bitwise_reference)
{
    t_rng r = {7};
    for (int bi = 0; bi < NBITS; bi++)
        for (int si = 0; si < NSHAPES; si++) {
            int bits = all_bits[bi];
            int64_t out = shapes[si][0], in = shapes[si][1];
            int64_t rb = fs_forge_row_bytes(bits, in);
            uint8_t *codes = malloc((size_t)(out * in));
            uint8_t *got = malloc((size_t)(out * rb)), *want = malloc((size_t)(out * rb));
            random_codes(&r, codes, out * in, bits);
            memset(got, 0xFF, (size_t)(out * rb));
            fs_forge_pack(codes, out, in, bits, got);
            ref_forge_pack(codes, out, in, bits, want, rb);
            ck_assert_msg(memcmp(got, want, (size_t)(out * rb)) == 0,
                          "bits %d out %lld in %lld", bits, (long long)out, (long long)in);
            free(codes); free(got); free(want);
        }
}
END_TEST

/* ---- gptq: hand-worked words and bitwise reference ----------------------------- */

START_TEST(gptq_hand_words_4bit)
{
    /* codes [out = 2, in = 8]; each column's 8 codes fill one word, input k in
     * bits 4k..4k+3, so the word reads as the codes' hex digits reversed */
    const uint8_t codes[] = {1, 2, 3, 4, 5, 6, 7, 8,
                             15, 0, 15, 0, 1, 2, 3, 4};
    uint32_t qw[2] = {0xFFFFFFFFu, 0xFFFFFFFFu};
    ck_assert_int_eq(fs_gptq_qweight_rows(4, 8), 1);
    fs_gptq_pack_qweight(codes, 2, 8, 4, qw);
    ck_assert_uint_eq(qw[0], 0x87654321u);      /* qweight[0][0] */
    ck_assert_uint_eq(qw[1], 0x43210F0Fu);      /* qweight[0][1] */

    /* in = 9: a second row of words holding input 8 alone */
    const uint8_t codes9[] = {1, 2, 3, 4, 5, 6, 7, 8, 9,
                              0, 0, 0, 0, 0, 0, 0, 0, 14};
    uint32_t qw9[4];
    memset(qw9, 0xFF, sizeof qw9);
    ck_assert_int_eq(fs_gptq_qweight_rows(4, 9), 2);
    fs_gptq_pack_qweight(codes9, 2, 9, 4, qw9);
    ck_assert_uint_eq(qw9[0], 0x87654321u);
    ck_assert_uint_eq(qw9[1], 0x00000000u);
    ck_assert_uint_eq(qw9[2], 0x00000009u);     /* qweight[1][0] */
    ck_assert_uint_eq(qw9[3], 0x0000000Eu);     /* qweight[1][1] */
}
END_TEST

START_TEST(gptq_3bit_crosses_words)
{
    /* in = 32: 96 bits = 3 words per column; codes 10 and 21 straddle words */
    enum { OUT = 5, IN = 32 };
    t_rng r = {11};
    uint8_t codes[OUT * IN];
    uint32_t got[3 * OUT], want[3 * OUT];
    random_codes(&r, codes, OUT * IN, 3);
    for (int k = 0; k < IN; k++) codes[k] = 7;          /* column 0: all ones */
    ck_assert_int_eq(fs_gptq_qweight_rows(3, IN), 3);
    memset(got, 0xFF, sizeof got);
    fs_gptq_pack_qweight(codes, OUT, IN, 3, got);
    ref_gptq_qweight(codes, OUT, IN, 3, want, 3);
    for (int i = 0; i < 3 * OUT; i++)
        ck_assert_msg(got[i] == want[i], "word %d: %08x want %08x", i, got[i], want[i]);
    /* column 0 is all ones: every word of it is 0xFFFFFFFF */
    for (int i = 0; i < 3; i++) ck_assert_uint_eq(got[i * OUT], 0xFFFFFFFFu);
}
END_TEST

START_TEST(gptq_qweight_vs_bitwise_reference)
{
    t_rng r = {12};
    for (int bi = 0; bi < NBITS; bi++)
        for (int si = 0; si < NSHAPES; si++) {
            int bits = all_bits[bi];
            int64_t out = shapes[si][0], in = shapes[si][1];
            int64_t rows = fs_gptq_qweight_rows(bits, in);
            ck_assert_int_eq(rows, (in * bits + 31) / 32);
            uint8_t *codes = malloc((size_t)(out * in));
            uint32_t *got = malloc(sizeof(uint32_t) * (size_t)(rows * out));
            uint32_t *want = malloc(sizeof(uint32_t) * (size_t)(rows * out));
            random_codes(&r, codes, out * in, bits);
            memset(got, 0xFF, sizeof(uint32_t) * (size_t)(rows * out));
            fs_gptq_pack_qweight(codes, out, in, bits, got);
            ref_gptq_qweight(codes, out, in, bits, want, rows);
            for (int64_t i = 0; i < rows * out; i++)
                ck_assert_msg(got[i] == want[i], "bits %d shape %lldx%lld word %lld", bits,
                              (long long)out, (long long)in, (long long)i);
            free(codes); free(got); free(want);
        }
}
END_TEST

START_TEST(gptq_qzeros)
{
    /* hand-worked, 4-bit, out = 3: zeros {1, 8, 15} store {0, 7, 14} -> 0xE70 */
    const uint8_t z[] = {1, 8, 15};
    uint32_t qz = 0xFFFFFFFFu;
    ck_assert_int_eq(fs_gptq_qzeros_cols(4, 3), 1);
    fs_gptq_pack_qzeros(z, 1, 3, 4, &qz);
    ck_assert_uint_eq(qz, 0x00000E70u);

    /* out = 13 (not a multiple of 32/bits), several groups, every width */
    t_rng r = {13};
    for (int bi = 0; bi < NBITS; bi++) {
        int bits = all_bits[bi];
        int64_t groups = 4, out = 13;
        int64_t cols = fs_gptq_qzeros_cols(bits, out);
        ck_assert_int_eq(cols, (out * bits + 31) / 32);
        uint8_t zeros[4 * 13], back[4 * 13];
        uint32_t got[20], want[20];     /* 8-bit: 4 groups x 4 words, + 1 guard */
        for (int i = 0; i < groups * out; i++)          /* 1..maxq */
            zeros[i] = (uint8_t)(1 + t_next(&r) % ((1u << bits) - 1));
        memset(got, 0xFF, sizeof got);
        fs_gptq_pack_qzeros(zeros, groups, out, bits, got);
        ref_gptq_qzeros(zeros, groups, out, bits, want, cols);
        for (int64_t i = 0; i < groups * cols; i++)
            ck_assert_msg(got[i] == want[i], "bits %d word %lld", bits, (long long)i);
        ck_assert_uint_eq(got[groups * cols], 0xFFFFFFFFu);   /* nothing past the end */
        memset(back, 0, sizeof back);
        fs_gptq_unpack_qzeros(got, groups, out, bits, back);
        ck_assert_mem_eq(back, zeros, (size_t)(groups * out));
    }
}
END_TEST

/* ---- round trips ------------------------------------------------------------- */

/* 1 if every bit of the rb-byte row at stream position `used` or later is 0. */
static int padding_clear_u8(const uint8_t *row, int64_t rb, int64_t used)
{
    for (int64_t b = used; b < rb * 8; b++)
        if ((row[b / 8] >> (b % 8)) & 1) return 0;
    return 1;
}

START_TEST(round_trips)
{
    t_rng r = {21};
    for (int bi = 0; bi < NBITS; bi++)
        for (int si = 0; si < NSHAPES; si++) {
            int bits = all_bits[bi];
            int64_t out = shapes[si][0], in = shapes[si][1], n = out * in;
            int64_t rb = fs_forge_row_bytes(bits, in);
            int64_t rows = fs_gptq_qweight_rows(bits, in);
            uint8_t *codes = malloc((size_t)n), *back = malloc((size_t)n);
            uint8_t *fp = malloc((size_t)(out * rb));
            uint32_t *qw = malloc(sizeof(uint32_t) * (size_t)(rows * out));
            random_codes(&r, codes, n, bits);

            memset(fp, 0xFF, (size_t)(out * rb));
            fs_forge_pack(codes, out, in, bits, fp);
            memset(back, 0xFF, (size_t)n);
            fs_forge_unpack(fp, out, in, bits, back);
            ck_assert_msg(memcmp(back, codes, (size_t)n) == 0, "forge bits %d", bits);
            for (int64_t o = 0; o < out; o++)
                ck_assert_msg(padding_clear_u8(fp + o * rb, rb, in * bits),
                              "forge padding bits %d row %lld", bits, (long long)o);

            memset(qw, 0xFF, sizeof(uint32_t) * (size_t)(rows * out));
            fs_gptq_pack_qweight(codes, out, in, bits, qw);
            memset(back, 0xFF, (size_t)n);
            fs_gptq_unpack_qweight(qw, out, in, bits, back);
            ck_assert_msg(memcmp(back, codes, (size_t)n) == 0, "gptq bits %d", bits);
            for (int64_t o = 0; o < out; o++)       /* last word of each column */
                for (int64_t b = in * bits; b < rows * 32; b++)
                    ck_assert_msg(((qw[(b / 32) * out + o] >> (b % 32)) & 1) == 0,
                                  "gptq padding bits %d col %lld", bits, (long long)o);
            free(codes); free(back); free(fp); free(qw);
        }
}
END_TEST

/* ---- g_idx ------------------------------------------------------------------ */

START_TEST(group_index)
{
    int32_t g[7];
    /* no perm: c / gw, the last group short */
    fs_group_index(7, 3, NULL, 0, g);
    ck_assert_mem_eq(g, ((const int32_t[]){0, 0, 0, 1, 1, 1, 2}), 7 * sizeof(int32_t));
    /* one group per row (gw = in) */
    fs_group_index(7, 7, NULL, 0, g);
    ck_assert_mem_eq(g, ((const int32_t[]){0, 0, 0, 0, 0, 0, 0}), 7 * sizeof(int32_t));

    /* dynamic act-order, in = 6, gw = 2, perm = {3,0,5,1,4,2}: processing
     * steps 0,1 (columns 3,0) are group 0; 2,3 (columns 5,1) group 1;
     * 4,5 (columns 4,2) group 2 -> g = {0,1,2,0,2,1} */
    const int32_t perm[] = {3, 0, 5, 1, 4, 2};
    fs_group_index(6, 2, perm, 0, g);
    ck_assert_mem_eq(g, ((const int32_t[]){0, 1, 2, 0, 2, 1}), 6 * sizeof(int32_t));
    /* static groups: the perm is ignored, groups follow original columns */
    fs_group_index(6, 2, perm, 1, g);
    ck_assert_mem_eq(g, ((const int32_t[]){0, 0, 1, 1, 2, 2}), 6 * sizeof(int32_t));
    /* no perm with static groups set: the same */
    fs_group_index(6, 2, NULL, 1, g);
    ck_assert_mem_eq(g, ((const int32_t[]){0, 0, 1, 1, 2, 2}), 6 * sizeof(int32_t));

    /* random act-order over in = 172, gw = 32: each group has gw members
     * (the last 12), and g of perm[k] is k / gw */
    enum { IN = 172, GW = 32 };
    t_rng r = {31};
    int32_t p[IN], gi[IN], count[6] = {0};
    random_perm(&r, p, IN);
    fs_group_index(IN, GW, p, 0, gi);
    for (int k = 0; k < IN; k++) {
        ck_assert_int_eq(gi[p[k]], k / GW);
        count[gi[k]]++;
    }
    for (int j = 0; j < 5; j++) ck_assert_int_eq(count[j], GW);
    ck_assert_int_eq(count[5], IN - 5 * GW);
}
END_TEST

/* ---- decoders --------------------------------------------------------------- */

/* An act-order g_idx computed here (not by fs_group_index). */
static void test_g_idx(t_rng *r, int64_t in, int64_t gw, int32_t *g)
{
    int32_t *p = malloc(sizeof(int32_t) * (size_t)in);
    random_perm(r, p, in);
    for (int64_t k = 0; k < in; k++) g[p[k]] = (int32_t)(k / gw);
    free(p);
}

START_TEST(forge_decode_vs_exp2)
{
    t_rng r = {41};
    for (int bi = 0; bi < NBITS; bi++) {
        int bits = all_bits[bi];
        int64_t out = 13, in = 172, gw = 32, groups = (in + gw - 1) / gw, n = out * in;
        int64_t rb = fs_forge_row_bytes(bits, in);
        uint8_t *codes = malloc((size_t)n), *packed = malloc((size_t)(out * rb));
        uint8_t *qmeta = malloc((size_t)(out * groups * 4));
        int16_t *c16 = malloc(sizeof(int16_t) * (size_t)(out * groups));
        int32_t *g = malloc(sizeof(int32_t) * (size_t)in);
        float *got = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);

        random_codes(&r, codes, n, bits);
        test_g_idx(&r, in, gw, g);
        for (int64_t i = 0; i < out * groups; i++) {
            /* mostly realistic scales (2^-16 .. 2^4), some anywhere in int16 */
            int16_t c = (t_next(&r) % 4 == 0) ? (int16_t)(t_next(&r) & 0xFFFF)
                                              : (int16_t)((int)(t_next(&r) % 5120) - 4096);
            if (i == 0) c = INT16_MIN;                  /* 2^-128: subnormal scale */
            if (i == 1) c = INT16_MAX;                  /* overflows to inf times codes */
            c16[i] = c;
            qmeta[i * 4 + 0] = (uint8_t)((uint16_t)c & 0xFF);
            qmeta[i * 4 + 1] = (uint8_t)((uint16_t)c >> 8);
            qmeta[i * 4 + 2] = (uint8_t)(t_next(&r) & ((1u << bits) - 1));
            qmeta[i * 4 + 3] = (uint8_t)(t_next(&r) & 1);
        }
        ref_forge_pack(codes, out, in, bits, packed, rb);   /* packed by the reference */
        for (int64_t o = 0; o < out; o++)
            for (int64_t c = 0; c < in; c++) {
                int64_t m = o * groups + g[c];
                float scale = (float)exp2((double)c16[m] / 256.0);
                float zero = (float)qmeta[m * 4 + 2];
                want[o * in + c] = ((float)codes[o * in + c] - zero) * scale;
            }
        memset(got, 0xFF, sizeof(float) * (size_t)n);
        fs_forge_decode(packed, qmeta, g, out, in, groups, bits, got);
        ck_floats_identical(got, want, n);
        free(codes); free(packed); free(qmeta); free(c16); free(g); free(got); free(want);
    }
}
END_TEST

START_TEST(gptq_decode_vs_ldexp)
{
    t_rng r = {51};
    for (int bi = 0; bi < NBITS; bi++) {
        int bits = all_bits[bi];
        unsigned maxq = (1u << bits) - 1;
        int64_t out = 13, in = 172, gw = 32, groups = (in + gw - 1) / gw, n = out * in;
        int64_t rows = fs_gptq_qweight_rows(bits, in), zc = fs_gptq_qzeros_cols(bits, out);
        uint8_t *codes = malloc((size_t)n), *zeros = malloc((size_t)(groups * out));
        uint16_t *scales = malloc(sizeof(uint16_t) * (size_t)(groups * out));
        uint32_t *qw = malloc(sizeof(uint32_t) * (size_t)(rows * out));
        uint32_t *qz = malloc(sizeof(uint32_t) * (size_t)(groups * zc));
        int32_t *g = malloc(sizeof(int32_t) * (size_t)in);
        float *got = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);

        random_codes(&r, codes, n, bits);
        test_g_idx(&r, in, gw, g);
        for (int64_t i = 0; i < groups * out; i++) {
            zeros[i] = (uint8_t)(1 + t_next(&r) % maxq);
            /* normal F16: exponent field 1..30, any mantissa, either sign */
            uint16_t e = (uint16_t)(1 + t_next(&r) % 30), m = (uint16_t)(t_next(&r) & 0x3FF);
            scales[i] = (uint16_t)(((t_next(&r) & 1) << 15) | (e << 10) | m);
        }
        ref_gptq_qweight(codes, out, in, bits, qw, rows);     /* packed by the reference */
        ref_gptq_qzeros(zeros, groups, out, bits, qz, zc);
        for (int64_t o = 0; o < out; o++)
            for (int64_t c = 0; c < in; c++) {
                int64_t gi = g[c];
                float scale = ref_f16(scales[gi * out + o]);
                float zero = (float)zeros[gi * out + o];
                want[o * in + c] = ((float)codes[o * in + c] - zero) * scale;
            }
        memset(got, 0xFF, sizeof(float) * (size_t)n);
        fs_gptq_decode(qw, qz, scales, g, out, in, groups, bits, got);
        ck_floats_identical(got, want, n);
        free(codes); free(zeros); free(scales); free(qw); free(qz); free(g);
        free(got); free(want);
    }
}
END_TEST

START_TEST(ref_f16_sanity)
{
    /* the test's own F16 conversion on hand-worked values */
    ck_assert_float_eq(ref_f16(0x3C00), 1.0f);
    ck_assert_float_eq(ref_f16(0xC000), -2.0f);
    ck_assert_float_eq(ref_f16(0x3555), 0x1.554p-2f);      /* 0.333251953125 */
    ck_assert_float_eq(ref_f16(0x7BFF), 65504.0f);
    ck_assert_float_eq(ref_f16(0x0400), 0x1p-14f);         /* smallest normal */
    ck_assert_float_eq(ref_f16(0x0001), 0x1p-24f);         /* smallest subnormal */
}
END_TEST


/* ---- compressed-tensors pack-quantized: hand-worked words --------------------- */

START_TEST(ct_hand_words)
{
    /* 4-bit, [out = 2, in = 9]: 8 codes per word along the ROW (input dim),
     * code k at bits 4k: row 0 = 1..9 -> 0x87654321, then 0x00000009 */
    const uint8_t c4[] = {1, 2, 3, 4, 5, 6, 7, 8, 9,
                          15, 0, 15, 0, 1, 2, 3, 4, 14};
    uint32_t w4[4];
    memset(w4, 0xFF, sizeof w4);
    ck_assert_int_eq(fs_ct_words(4, 9), 2);
    fs_ct_pack_weight(c4, 2, 9, 4, w4);
    ck_assert_uint_eq(w4[0], 0x87654321u);      /* weight_packed[0][0] */
    ck_assert_uint_eq(w4[1], 0x00000009u);      /* weight_packed[0][1]: padding codes 0 */
    ck_assert_uint_eq(w4[2], 0x43210F0Fu);      /* weight_packed[1][0] */
    ck_assert_uint_eq(w4[3], 0x0000000Eu);
    /* 8-bit, 4 per word: {0x80, 0x81, 0x00, 0xFF} -> 0xFF008180 */
    const uint8_t c8[] = {0x80, 0x81, 0x00, 0xFF, 0x7F};
    uint32_t w8[2] = {~0u, ~0u};
    fs_ct_pack_weight(c8, 1, 5, 8, w8);
    ck_assert_uint_eq(w8[0], 0xFF008180u);
    ck_assert_uint_eq(w8[1], 0x0000007Fu);
    /* 3-bit, dense (compressed-tensors >= 0.20): eleven 7s = 33 one bits,
     * code 10 straddles the words: 0xFFFFFFFF then 0x1; code 10 alone = 5
     * (0b101) puts bits 30..31 = 01 in word 0 and bit 0 = 1 in word 1 */
    uint8_t c3[11];
    memset(c3, 7, sizeof c3);
    uint32_t w3[2] = {0, ~0u};
    ck_assert_int_eq(fs_ct_words(3, 11), 2);
    fs_ct_pack_weight(c3, 1, 11, 3, w3);
    ck_assert_uint_eq(w3[0], 0xFFFFFFFFu);
    ck_assert_uint_eq(w3[1], 0x00000001u);
    memset(c3, 0, sizeof c3);
    c3[10] = 5;
    fs_ct_pack_weight(c3, 1, 11, 3, w3);
    ck_assert_uint_eq(w3[0], 0x40000000u);
    ck_assert_uint_eq(w3[1], 0x00000001u);
    /* 2-bit, 16 per word: codes 0,1,2,3 repeated -> 0xE4E4E4E4 */
    uint8_t c2[16];
    for (int k = 0; k < 16; k++) c2[k] = (uint8_t)(k & 3);
    uint32_t w2 = ~0u;
    fs_ct_pack_weight(c2, 1, 16, 2, &w2);
    ck_assert_uint_eq(w2, 0xE4E4E4E4u);
}
END_TEST

START_TEST(ct_hand_zero_points)
{
    /* 4-bit zeros [out = 9, groups = 2], packed along OUT: word o / 8 of
     * column g; zeros (o, 0) = o + 1, (o, 1) = 15 - o */
    uint8_t z[18];
    for (int o = 0; o < 9; o++) { z[o * 2] = (uint8_t)(o + 1); z[o * 2 + 1] = (uint8_t)(15 - o); }
    uint32_t w[4];
    memset(w, 0xFF, sizeof w);
    fs_ct_pack_zeros(z, 9, 2, 4, w);
    ck_assert_uint_eq(w[0], 0x87654321u);       /* [0][0]: outputs 0..7 of group 0 */
    ck_assert_uint_eq(w[1], 0x89ABCDEFu);       /* [0][1]: 15, 14, ... 8 */
    ck_assert_uint_eq(w[2], 0x00000009u);       /* [1][0]: output 8 */
    ck_assert_uint_eq(w[3], 0x00000007u);
    uint8_t back[18];
    fs_ct_unpack_zeros(w, 9, 2, 4, back);
    ck_assert_mem_eq(back, z, sizeof z);
}
END_TEST

START_TEST(ct_decode_by_hand)
{
    /* 4-bit sym [2, 8], one group, scales 0.5 and 3: (code - 8) * s */
    const uint8_t c[] = {0, 8, 15, 7, 9, 1, 2, 3,
                         8, 8, 8, 8, 0, 15, 4, 12};
    uint32_t w[2];
    fs_ct_pack_weight(c, 2, 8, 4, w);
    const float sc[2] = {0.5f, 3.0f};
    int32_t g[8] = {0};
    float d[16];
    fs_ct_decode(w, NULL, sc, g, 2, 8, 1, 4, d);
    const float want[16] = {-4, 0, 3.5f, -0.5f, 0.5f, -3.5f, -3, -2.5f,
                            0, 0, 0, 0, -24, 21, -12, 12};
    for (int i = 0; i < 16; i++) ck_assert_msg(d[i] == want[i], "%d: %g want %g", i, (double)d[i], (double)want[i]);
    /* asymmetric: zeros 3 (row 0) and 0 (row 1): (code - zero) * s */
    const uint8_t z[2] = {3, 0};
    uint32_t zw;
    fs_ct_pack_zeros(z, 2, 1, 4, &zw);
    ck_assert_uint_eq(zw, 0x03u);
    fs_ct_decode(w, &zw, sc, g, 2, 8, 1, 4, d);
    ck_assert(d[0] == -1.5f && d[2] == 6.0f && d[8] == 24.0f && d[12] == 0.0f && d[13] == 45.0f);
}
END_TEST

Suite *fs_suite_pack(void)
{
    Suite *s = suite_create("pack");
    TCase *tc = tcase_create("forge_layout");
    tcase_add_test(tc, forge_hand_bytes);
    tcase_add_test(tc, forge_rows_start_on_bytes);
    tcase_add_test(tc, forge_vs_bitwise_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("gptq_layout");
    tcase_add_test(tc, gptq_hand_words_4bit);
    tcase_add_test(tc, gptq_3bit_crosses_words);
    tcase_add_test(tc, gptq_qweight_vs_bitwise_reference);
    tcase_add_test(tc, gptq_qzeros);
    suite_add_tcase(s, tc);

    tc = tcase_create("ct_layout");
    tcase_add_test(tc, ct_hand_words);
    tcase_add_test(tc, ct_hand_zero_points);
    tcase_add_test(tc, ct_decode_by_hand);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trips");
    tcase_add_test(tc, round_trips);
    suite_add_tcase(s, tc);

    tc = tcase_create("group_index");
    tcase_add_test(tc, group_index);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_add_test(tc, ref_f16_sanity);
    tcase_add_test(tc, forge_decode_vs_exp2);
    tcase_add_test(tc, gptq_decode_vs_ldexp);
    suite_add_tcase(s, tc);
    return s;
}
