/* pack.h: the bit layouts of the two output formats, and their decoders.
 *
 * forge (native): per linear, `qweight` U8 [out, row_bytes(bits, in)]: each row
 *   is the little-endian bit stream of its `in` codes (code k in bits
 *   [k*bits, (k+1)*bits) of the row, bit 0 = the least significant bit of byte
 *   0): 4-bit = two codes per byte, low nibble first; 2-bit = four per byte,
 *   lowest bits first; 3-bit = eight codes in three bytes; 8-bit = one per
 *   byte.  row_bytes = ceil(in * bits / 8); unused high bits of the last byte
 *   are 0.  `qmeta` U8 [out, groups, 4] is qmeta4 as produced by the engine.
 *
 * gptq (the layout of AutoGPTQ / GPTQModel "gptq" v1 that vLLM and
 *   transformers load):
 *   qweight I32 [ceil(in*bits/32), out]: for each output column o, the codes
 *     code[o][0..in) along the input dimension as a little-endian bit stream
 *     cut into 32-bit words (word i of column o = qweight[i][o]); 4-bit: word
 *     i holds inputs 8i..8i+7, input 8i+k in bits 4k..4k+3; 3-bit: the stream
 *     crosses word boundaries (32 codes in 3 words), as GPTQ packs it.
 *   qzeros I32 [groups, ceil(out*bits/32)]: per group g, the values
 *     (zero[g][o] - 1) for o = 0..out-1 as a little-endian bit stream of
 *     `bits`-bit fields cut into 32-bit words (v1 stores zero - 1; a zero of
 *     0 cannot be stored, so the engine's gptq mode never produces one).
 *   scales F16 [groups, out]; g_idx I32 [in] (group of each input column).
 *   All int32 words are stored little-endian; packing works on uint32 and
 *   reinterprets.
 *
 * compressed-tensors "pack-quantized" (what its PackedQuantizationCompressor
 *   writes and vLLM's / SGLang's compressed-tensors loaders read): the same
 *   little-endian bit stream in int32 words, along the packed dimension
 *   (compressed-tensors >= 0.20 packs densely, 3-bit fields straddling
 *   words; at 2, 4 and 8 bits that is also the older packages' 32 / bits
 *   whole codes per word).  Stored code = signed code + 2^(bits-1), i.e. our
 *   unsigned code itself.
 *   weight_packed I32 [out, ceil(in * bits / 32)]: row o is the stream of
 *     its codes along the input dimension (4-bit: word i holds inputs
 *     8i..8i+7, input 8i+k at bits 4k); padding bits 0.
 *   weight_zero_point I32 [ceil(out * bits / 32), groups] (asymmetric only):
 *     column g is the stream of the zeros of group g along the OUTPUT
 *     dimension.  Symmetric: zero = 2^(bits-1) (signed 0), no tensor.
 *   weight_scale F32 [out, groups] (the solver's scale exactly);
 *   weight_shape I64 [2] = {out, in}; weight_g_idx I32 [in] only with
 *   dynamic act-order groups (actorder "group", older packages).
 */
#ifndef FS_PACK_H
#define FS_PACK_H

#include "src/quant/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ceil(in * bits / 8). Cannot fail (in <= 2^40). */
int64_t fs_forge_row_bytes(int bits, int64_t in);
/* codes [out, in] (one code per byte, values < 2^bits) -> packed [out, row_bytes]. */
void fs_forge_pack(const uint8_t *codes, int64_t out, int64_t in, int bits, uint8_t *packed);
void fs_forge_unpack(const uint8_t *packed, int64_t out, int64_t in, int bits, uint8_t *codes);

/* Rows of gptq's qweight: ceil(in * bits / 32). */
int64_t fs_gptq_qweight_rows(int bits, int64_t in);
/* Columns of gptq's qzeros: ceil(out * bits / 32). */
int64_t fs_gptq_qzeros_cols(int bits, int64_t out);
/* codes [out, in] -> qweight [qweight_rows, out] (uint32 words). */
void fs_gptq_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits,
                          uint32_t *qweight);
void fs_gptq_unpack_qweight(const uint32_t *qweight, int64_t out, int64_t in, int bits,
                            uint8_t *codes);
/* zeros [groups, out] (each in 1..2^bits-1) -> qzeros [groups, qzeros_cols]
 * holding zero - 1. */
void fs_gptq_pack_qzeros(const uint8_t *zeros, int64_t groups, int64_t out, int bits,
                         uint32_t *qzeros);
void fs_gptq_unpack_qzeros(const uint32_t *qzeros, int64_t groups, int64_t out, int bits,
                           uint8_t *zeros);

/* compressed-tensors: the int32 words of n packed codes, ceil(n * bits / 32)
 * (a weight_packed row: n = in; a weight_zero_point column: n = out). */
int64_t fs_ct_words(int bits, int64_t n);
/* codes [out, in] -> weight_packed [out, fs_ct_words(bits, in)]. */
void fs_ct_pack_weight(const uint8_t *codes, int64_t out, int64_t in, int bits, uint32_t *packed);
void fs_ct_unpack_weight(const uint32_t *packed, int64_t out, int64_t in, int bits, uint8_t *codes);
/* zeros [out, groups] -> weight_zero_point [fs_ct_words(bits, out), groups]. */
void fs_ct_pack_zeros(const uint8_t *zeros, int64_t out, int64_t groups, int bits, uint32_t *packed);
void fs_ct_unpack_zeros(const uint32_t *packed, int64_t out, int64_t groups, int bits, uint8_t *zeros);

/* The group of each input column (g_idx, [in]) from the engine's result: with
 * dynamic act-order groups column perm[k] is in group k / G, otherwise c / G
 * (G the effective group width).  perm may be NULL. Cannot fail. */
void fs_group_index(int64_t in, int64_t gw, const int32_t *perm, int static_groups,
                    int32_t *g_idx);

/* Decoders: dequant [out, in] f32 exactly as the engine computed it.
 * forge: (code - zero) * decode_q88(code16) from qmeta, group g_idx[c].
 * gptq:  (code - (qzero + 1)) * f16_to_f32(scale), group g_idx[c]. */
void fs_forge_decode(const uint8_t *packed, const uint8_t *qmeta, const int32_t *g_idx,
                     int64_t out, int64_t in, int64_t groups, int bits, float *dequant);
/* ct: (code - zero) * scale, zero from weight_zero_point (NULL: symmetric,
 * 2^(bits-1)), group g_idx[c]. */
void fs_ct_decode(const uint32_t *packed, const uint32_t *zp, const float *scale, const int32_t *g_idx,
                  int64_t out, int64_t in, int64_t groups, int bits, float *dequant);
void fs_gptq_decode(const uint32_t *qweight, const uint32_t *qzeros, const uint16_t *scales,
                    const int32_t *g_idx, int64_t out, int64_t in, int64_t groups, int bits,
                    float *dequant);

#ifdef __cplusplus
}
#endif

#endif
