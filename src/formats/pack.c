/* pack.c: packing of per-input-column codes into the output formats of
 * pack.h (forge: byte rows; gptq v1: int32 words along the input dimension,
 * one stream per output column; compressed-tensors: int32 words along the
 * input dimension, one stream per row),
 * their inverses, the g_idx of a layer, and the two decoders.
 *
 * Owns nothing: every function writes into caller-provided arrays whose sizes
 * follow from the shape helpers below, and none can fail.
 *
 * Notes on the design:
 *  1. Both formats are the same thing: a little-endian stream of `bits`-bit
 *     fields (field k in stream bits [k*bits, (k+1)*bits), stream bit 0 = bit 0
 *     of unit 0) cut into units of 8 bits (forge) or 32 bits (gptq).  One
 *     writer and one reader per unit width handle every bit count, including
 *     3-bit fields that straddle a unit boundary; there is no per-width fast
 *     path to keep in sync.
 *  2. A gptq column's units are not adjacent in memory (word i of column o is
 *     qweight[i*out + o]), so the word reader/writer takes a stride.
 *  3. Packers clear their whole output first and then OR fields in, so padding
 *     bits past the last field are 0 whatever the buffer held before.
 *  4. Field values are masked to `bits` bits before they are written, so an
 *     out-of-range code can corrupt only its own field, never a neighbour.
 *  5. The decoders stream straight from the packed data (no temporaries, no
 *     allocation), which is why they cannot fail.  Their float expressions are
 *     exactly the engine's: (code - zero) * scale, subtraction then product,
 *     both in float (the build uses -ffp-contract=off; a product of a
 *     difference cannot be fused anyway).
 *  6. All sizes and bit positions are int64_t: in * bits reaches 2^43.
 */
#include <assert.h>
#include <string.h>

#include "src/formats/pack.h"

/* ---- bit streams --------------------------------------------------------- */

/* A macro, not a function: with NDEBUG an unused static would break -Werror. */
#define VALID_BITS(b) ((b) == 2 || (b) == 3 || (b) == 4 || (b) == 8)

static uint32_t low_mask(int n)
{
    return (1u << n) - 1u;          /* n <= 8 here, never the UB shift by 32 */
}

/* ORs the low `bits` bits of v into the byte stream s at bit position pos.
 * The target bits must be 0 (the packers clear the stream first). */
static void put_bits_u8(uint8_t *s, int64_t pos, int bits, uint32_t v)
{
    v &= low_mask(bits);
    while (bits > 0) {
        int off = (int)(pos & 7);
        int n = 8 - off < bits ? 8 - off : bits;   /* bits that fit in this byte */
        s[pos >> 3] |= (uint8_t)((v & low_mask(n)) << off);
        v >>= n;
        pos += n;
        bits -= n;
    }
}

/* The `bits`-bit field at bit position pos of the byte stream s. */
static uint32_t get_bits_u8(const uint8_t *s, int64_t pos, int bits)
{
    uint32_t v = 0;
    int got = 0;
    while (got < bits) {
        int off = (int)(pos & 7);
        int n = 8 - off < bits - got ? 8 - off : bits - got;
        v |= (((uint32_t)s[pos >> 3] >> off) & low_mask(n)) << got;
        got += n;
        pos += n;
    }
    return v;
}

/* As put_bits_u8 for a stream of 32-bit words, word i at w[i * stride]. */
static void put_bits_u32(uint32_t *w, int64_t stride, int64_t pos, int bits, uint32_t v)
{
    v &= low_mask(bits);
    while (bits > 0) {
        int off = (int)(pos & 31);
        int n = 32 - off < bits ? 32 - off : bits;
        w[(pos >> 5) * stride] |= (v & low_mask(n)) << off;
        v >>= n;
        pos += n;
        bits -= n;
    }
}

/* As get_bits_u8 for a stream of 32-bit words, word i at w[i * stride]. */
static uint32_t get_bits_u32(const uint32_t *w, int64_t stride, int64_t pos, int bits)
{
    uint32_t v = 0;
    int got = 0;
    while (got < bits) {
        int off = (int)(pos & 31);
        int n = 32 - off < bits - got ? 32 - off : bits - got;
        v |= ((w[(pos >> 5) * stride] >> off) & low_mask(n)) << got;
        got += n;
        pos += n;
    }
    return v;
}

/* ---- forge ----------------------------------------------------------------- */

int64_t fs_forge_row_bytes(int bits, int64_t in)
{
    return (in * bits + 7) / 8;
}

void fs_forge_pack(const uint8_t *codes, int64_t out, int64_t in, int bits, uint8_t *packed)
{
    assert(VALID_BITS(bits));
    int64_t rb = fs_forge_row_bytes(bits, in);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++) {
        uint8_t *row = packed + o * rb;
        const uint8_t *c = codes + o * in;
        memset(row, 0, (size_t)rb);                 /* note 3: zero padding */
        for (int64_t k = 0; k < in; k++) put_bits_u8(row, k * bits, bits, c[k]);
    }
}

void fs_forge_unpack(const uint8_t *packed, int64_t out, int64_t in, int bits, uint8_t *codes)
{
    assert(VALID_BITS(bits));
    int64_t rb = fs_forge_row_bytes(bits, in);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++) {
        const uint8_t *row = packed + o * rb;
        for (int64_t k = 0; k < in; k++)
            codes[o * in + k] = (uint8_t)get_bits_u8(row, k * bits, bits);
    }
}

/* ---- gptq ------------------------------------------------------------------ */

int64_t fs_gptq_qweight_rows(int bits, int64_t in)
{
    return (in * bits + 31) / 32;
}

int64_t fs_gptq_qzeros_cols(int bits, int64_t out)
{
    return (out * bits + 31) / 32;
}

void fs_gptq_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits,
                          uint32_t *qweight)
{
    assert(VALID_BITS(bits));
    int64_t rows = fs_gptq_qweight_rows(bits, in);
    memset(qweight, 0, sizeof(uint32_t) * (size_t)(rows * out));   /* note 3 */
    /* each column o owns the words qweight[i*out + o]: columns never share one */
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < in; k++)
            put_bits_u32(qweight + o, out, k * bits, bits, codes[o * in + k]);
}

void fs_gptq_unpack_qweight(const uint32_t *qweight, int64_t out, int64_t in, int bits,
                            uint8_t *codes)
{
    assert(VALID_BITS(bits));
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < in; k++)
            codes[o * in + k] = (uint8_t)get_bits_u32(qweight + o, out, k * bits, bits);
}

void fs_gptq_pack_qzeros(const uint8_t *zeros, int64_t groups, int64_t out, int bits,
                         uint32_t *qzeros)
{
    assert(VALID_BITS(bits));
    int64_t cols = fs_gptq_qzeros_cols(bits, out);
    memset(qzeros, 0, sizeof(uint32_t) * (size_t)(groups * cols));  /* note 3 */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < out; o++) {
            uint8_t z = zeros[g * out + o];
            assert(z >= 1);             /* v1 cannot store a zero of 0 (pack.h) */
            /* v1 stores zero - 1; a 0 would wrap and be masked to 2^bits - 1 */
            put_bits_u32(qzeros + g * cols, 1, o * bits, bits, (uint32_t)(z - 1));
        }
}

void fs_gptq_unpack_qzeros(const uint32_t *qzeros, int64_t groups, int64_t out, int bits,
                           uint8_t *zeros)
{
    assert(VALID_BITS(bits));
    int64_t cols = fs_gptq_qzeros_cols(bits, out);
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < out; o++)
            /* +1 in uint8: an 8-bit stored 255 would be a zero of 256, which
             * the engine never produces (zeros are <= maxq = 255) */
            zeros[g * out + o] =
                (uint8_t)(get_bits_u32(qzeros + g * cols, 1, o * bits, bits) + 1u);
}

/* ---- compressed-tensors ------------------------------------------------------
 * The dense little-endian bit stream of `bits`-bit fields along the packed
 * dimension, cut into int32 words (compressed-tensors >= 0.20's pack_to_int32:
 * 3-bit fields straddle words; at 2, 4 and 8 bits this is also the older
 * packages' 32 / bits whole codes per word).  weight_packed: one stream per
 * row (the input dimension), rows contiguous; weight_zero_point: one stream
 * per group column along the output dimension, word i of column g at
 * [i * groups + g]. */

int64_t fs_ct_words(int bits, int64_t n)
{
    return (n * bits + 31) / 32;
}

void fs_ct_pack_weight(const uint8_t *codes, int64_t out, int64_t in, int bits, uint32_t *packed)
{
    assert(VALID_BITS(bits));
    const int64_t nw = fs_ct_words(bits, in);
    memset(packed, 0, sizeof(uint32_t) * (size_t)(nw * out));     /* note 3 */
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < in; k++) put_bits_u32(packed + o * nw, 1, k * bits, bits, codes[o * in + k]);
}

void fs_ct_unpack_weight(const uint32_t *packed, int64_t out, int64_t in, int bits, uint8_t *codes)
{
    assert(VALID_BITS(bits));
    const int64_t nw = fs_ct_words(bits, in);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < in; k++)
            codes[o * in + k] = (uint8_t)get_bits_u32(packed + o * nw, 1, k * bits, bits);
}

void fs_ct_pack_zeros(const uint8_t *zeros, int64_t out, int64_t groups, int bits, uint32_t *packed)
{
    assert(VALID_BITS(bits));
    memset(packed, 0, sizeof(uint32_t) * (size_t)(fs_ct_words(bits, out) * groups));
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < out; o++)
            put_bits_u32(packed + g, groups, o * bits, bits, zeros[o * groups + g]);
}

void fs_ct_unpack_zeros(const uint32_t *packed, int64_t out, int64_t groups, int bits, uint8_t *zeros)
{
    assert(VALID_BITS(bits));
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < out; o++)
            zeros[o * groups + g] = (uint8_t)get_bits_u32(packed + g, groups, o * bits, bits);
}

/* ---- groups and decoders ------------------------------------------------------ */

void fs_group_index(int64_t in, int64_t gw, const int32_t *perm, int static_groups,
                    int32_t *g_idx)
{
    assert(gw >= 1);
    if (perm && !static_groups) {
        /* dynamic act-order: groups are formed in processing order k */
        for (int64_t k = 0; k < in; k++) g_idx[perm[k]] = (int32_t)(k / gw);
    } else {
        /* no act-order, or static groups (built on the original columns) */
        for (int64_t c = 0; c < in; c++) g_idx[c] = (int32_t)(c / gw);
    }
}

void fs_forge_decode(const uint8_t *packed, const uint8_t *qmeta, const int32_t *g_idx,
                     int64_t out, int64_t in, int64_t groups, int bits, float *dequant)
{
    assert(VALID_BITS(bits));
    int64_t rb = fs_forge_row_bytes(bits, in);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++) {
        const uint8_t *row = packed + o * rb;
        for (int64_t c = 0; c < in; c++) {
            const uint8_t *m = qmeta + (o * groups + g_idx[c]) * 4;
            int16_t code16 = (int16_t)(uint16_t)(m[0] | (m[1] << 8));
            float scale = fs_q88_decode(code16);
            float zero = (float)m[2];
            float code = (float)get_bits_u8(row, c * bits, bits);
            dequant[o * in + c] = (code - zero) * scale;
        }
    }
}

void fs_ct_decode(const uint32_t *packed, const uint32_t *zp, const float *scale, const int32_t *g_idx,
                  int64_t out, int64_t in, int64_t groups, int bits, float *dequant)
{
    assert(VALID_BITS(bits));
    const int64_t nw = fs_ct_words(bits, in);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++) {
        for (int64_t c = 0; c < in; c++) {
            int64_t g = g_idx[c];
            float zero = zp ? (float)get_bits_u32(zp + g, groups, o * bits, bits) : (float)(1u << (bits - 1));
            float code = (float)get_bits_u32(packed + o * nw, 1, c * bits, bits);
            dequant[o * in + c] = (code - zero) * scale[o * groups + g];
        }
    }
}

void fs_gptq_decode(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                    const int32_t *g_idx, int64_t out, int64_t in, int64_t groups, int bits,
                    float *dequant)
{
    assert(VALID_BITS(bits));
    int64_t zcols = fs_gptq_qzeros_cols(bits, out);
    (void)groups;                       /* only bounds g_idx; not needed to index */
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++) {
        for (int64_t c = 0; c < in; c++) {
            int64_t g = g_idx[c];
            /* int, not uint8: an 8-bit stored 255 decodes to a zero of 256 */
            int zero = (int)get_bits_u32(qzeros + g * zcols, 1, o * bits, bits) + 1;
            float scale = fs_f16_to_f32(scales[g * out + o]);
            float code = (float)get_bits_u32(qweight + o, out, c * bits, bits);
            dequant[o * in + c] = (code - (float)zero) * scale;
        }
    }
}
