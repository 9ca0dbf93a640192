/* qmeta.c: qmeta4 on the host: Q8.8 scale codes and the 4-byte group record
 * (seed 000 §3): int16 little-endian log2(scale)*256, u8 zero, u8 flags. */
#include "src/quant/quant.h"
#include "src/quant/qmeta-table.h"
#include "src/quant/quant-math.h"

static const double q88_frac[256] = FS_Q88_TABLE_FRAC;
static const float q88_half[256] = FS_Q88_TABLE_HALF;

const double *fs_q88_frac_table(void) { return q88_frac; }
const float *fs_q88_half_table(void) { return q88_half; }

int16_t fs_q88_encode(float scale)
{
    return fs_qm_encode(scale, q88_half);
}

float fs_q88_decode(int16_t code)
{
    return fs_qm_decode(code, q88_frac);
}

void fs_qmeta_pack(uint8_t out[4], int16_t code, uint8_t zero, uint8_t flags)
{
    uint16_t u = (uint16_t)code;
    out[0] = (uint8_t)(u & 0xff);
    out[1] = (uint8_t)(u >> 8);
    out[2] = zero;
    out[3] = flags;
}

void fs_qmeta_unpack(const uint8_t in[4], float *scale, float *zero)
{
    int16_t code = (int16_t)(uint16_t)(in[0] | (in[1] << 8));
    *scale = fs_q88_decode(code);
    *zero = (float)in[2];
}
