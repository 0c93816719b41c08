/* rope.c — partial rotary embedding, rotate-half (NeoX) convention.
 *
 * Only the first R = (int)(D · rotary_pct) dims of each head rotate; dim i
 * pairs with dim i + R/2 (not with its neighbour). inv_freq, angles and the
 * cos/sin tables are computed in fp32 exactly as HF does (fp32 pow, fp32
 * product of position and inv_freq), so positions far past training length
 * still agree with HF to fp32 rounding of cos/sin. */
#include "kn.h"

#include <math.h>

void kn_rope_inv_freq(float *inv_freq, int R, float base) {
    for (int j = 0; j < R / 2; j++) inv_freq[j] = 1.0f / powf(base, (float)(2 * j) / (float)R);
}

void kn_rope_table(float *cos_t, float *sin_t, const float *inv_freq, const int32_t *pos, int T, int R) {
    int h = R / 2;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < h; j++) {
            float a = (float)pos[t] * inv_freq[j];
            cos_t[(size_t)t * h + j] = cosf(a);
            sin_t[(size_t)t * h + j] = sinf(a);
        }
}

static void rope_head(float *x, int R, const float *c, const float *s) {
    int h = R / 2;
    for (int i = 0; i < h; i++) {
        float x1 = x[i], x2 = x[i + h];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + h] = x2 * c[i] + x1 * s[i];
    }
}

void kn_rope(float *x, int T, int NH, int D, size_t row_stride, int R, const float *cos_t,
             const float *sin_t) {
    int h = R / 2;
    #pragma omp parallel for collapse(2) if (T * NH > 64) schedule(static)
    for (int t = 0; t < T; t++)
        for (int hd = 0; hd < NH; hd++)
            rope_head(x + (size_t)t * row_stride + (size_t)hd * D, R, cos_t + (size_t)t * h,
                      sin_t + (size_t)t * h);
}

void kn_rope_ref(float *x, int T, int NH, int D, size_t row_stride, int R, const float *cos_t,
                 const float *sin_t) {
    int h = R / 2;
    for (int t = 0; t < T; t++)
        for (int hd = 0; hd < NH; hd++) {
            float *v = x + (size_t)t * row_stride + (size_t)hd * D;
            const float *c = cos_t + (size_t)t * h, *s = sin_t + (size_t)t * h;
            float tmp[512];
            for (int i = 0; i < R; i++) {
                float rot = i < h ? -v[i + h] : v[i - h];   /* rotate_half */
                tmp[i] = v[i] * c[i % h] + rot * s[i % h];
            }
            for (int i = 0; i < R; i++) v[i] = tmp[i];
        }
}
