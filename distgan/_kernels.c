/* The training stream's kernels: crops cut and scaled to float in one pass, and the noise
 * kinds fused, draw, noise and clip in one pass over a crop.
 *
 * The same kinds and the same sampling as distgan/noisebatch.py's numpy path (see its
 * docstring), compiled on first use by distgan/native.py with the host's vector units.
 * No loop here calls libm's log, exp, sin or cos, which would keep it scalar: they are the
 * Cephes single-precision polynomials (relative error ~1e-7), written so that gcc and
 * clang vectorize them.
 *
 * Random numbers: SplitMix64's output function applied to a counter, key + i * golden,
 * with a 64-bit key drawn from the caller's numpy Generator for every call and mixed per
 * crop and part. One 64-bit value gives two normals (Box-Muller from 24 + 24 bits) or two
 * 32-bit draws.
 *
 * Each noise kernel works in place on one crop of `size` floats at one level. Python calls
 * the drivers at the end: dg_noise (each crop by its own recipe) and dg_noisy_crops (cut
 * and noise, crop by crop).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#define BLOCK 2048
#define GOLDEN 0x9e3779b97f4a7c15ULL
#define EXACT_POISSON_BELOW 10.0f

typedef float f16 __attribute__((vector_size(64))); /* 16 lanes, in whatever vectors exist */
typedef int32_t i16 __attribute__((vector_size(64)));

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline float as_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t as_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* log(x) for finite x > 0 (Cephes logf). */
static inline float log_poly(float x) {
    uint32_t b = as_bits(x);
    int32_t e = (int32_t)(b >> 23) - 126; /* x = m * 2^e, m in [0.5, 1) */
    float m = as_float((b & 0x007fffffu) | 0x3f000000u);
    int below = m < 0.70710678f;
    float ef = (float)(e - below);
    float t = below ? m + m - 1.0f : m - 1.0f;
    float z = t * t;
    float y = 7.0376836292e-2f;
    y = y * t - 1.1514610310e-1f;
    y = y * t + 1.1676998740e-1f;
    y = y * t - 1.2420140846e-1f;
    y = y * t + 1.4249322787e-1f;
    y = y * t - 1.6668057665e-1f;
    y = y * t + 2.0000714765e-1f;
    y = y * t - 2.4999993993e-1f;
    y = y * t + 3.3333331174e-1f;
    y = y * t * z;
    y += -2.12194440e-4f * ef;
    y += -0.5f * z;
    return t + y + 0.693359375f * ef;
}

/* exp(x), x clamped to [-87, 88] (Cephes expf). */
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fx = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    return y * as_float((uint32_t)((int32_t)fx + 127) << 23);
}

/* Two standard normals from 64 random bits: radius from 24 bits, angle from the other 24
 * (2 bits of quadrant, 22 within it), sin and cos by polynomials on [-pi/4, pi/4]. */
static inline void box_muller(uint64_t bits, float *a, float *b) {
    float u = (float)((uint32_t)(bits >> 40) + 1u) * (1.0f / 16777216.0f); /* (0, 1] */
    float r = sqrtf(-2.0f * log_poly(u));
    uint32_t j = (uint32_t)bits & 0xffffffu;
    uint32_t q = j >> 22;
    float t = ((float)(j & 0x3fffffu) + 0.5f) * (1.0f / 4194304.0f) - 0.5f;
    t *= 1.57079632679489662f; /* (-pi/4, pi/4) */
    float z = t * t;
    float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * t + t;
    float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z
              - 0.5f * z + 1.0f;
    /* rotate by q quarter turns: (cos, sin)(t + q pi/2) */
    int odd = q & 1u;
    float c1 = odd ? s : c, s1 = odd ? c : s;
    *a = r * ((q == 1u || q == 2u) ? -c1 : c1);
    *b = r * (q >= 2u ? -s1 : s1);
}

/* n standard normals into z (room for n + 1), from counters ctr, ctr + 1, ... */
static inline __attribute__((always_inline)) void fill_normals(float *restrict z, int64_t n, uint64_t key, uint64_t ctr) {
    int64_t h = (n + 1) / 2;
    for (int64_t i = 0; i < h; i++) {
        float a, b;
        box_muller(mix64(key + (ctr + (uint64_t)i) * GOLDEN), &a, &b);
        z[i] = a;
        z[h + i] = b;
    }
}

/* n uniform 32-bit values into u (room for n + 1). */
static inline __attribute__((always_inline)) void fill_bits(uint32_t *restrict u, int64_t n, uint64_t key, uint64_t ctr) {
    int64_t h = (n + 1) / 2;
    for (int64_t i = 0; i < h; i++) {
        uint64_t b = mix64(key + (ctr + (uint64_t)i) * GOLDEN);
        u[i] = (uint32_t)b;
        u[h + i] = (uint32_t)(b >> 32);
    }
}

static inline void clip01(float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] < 0.0f ? 0.0f : x[i];
        x[i] = v > 1.0f ? 1.0f : v;
    }
}

static const float inv_k[68] = {
    0, 1.f / 1, 1.f / 2, 1.f / 3, 1.f / 4, 1.f / 5, 1.f / 6, 1.f / 7, 1.f / 8, 1.f / 9, 1.f / 10, 1.f / 11,
    1.f / 12, 1.f / 13, 1.f / 14, 1.f / 15, 1.f / 16, 1.f / 17, 1.f / 18, 1.f / 19, 1.f / 20, 1.f / 21,
    1.f / 22, 1.f / 23, 1.f / 24, 1.f / 25, 1.f / 26, 1.f / 27, 1.f / 28, 1.f / 29, 1.f / 30, 1.f / 31,
    1.f / 32, 1.f / 33, 1.f / 34, 1.f / 35, 1.f / 36, 1.f / 37, 1.f / 38, 1.f / 39, 1.f / 40, 1.f / 41,
    1.f / 42, 1.f / 43, 1.f / 44, 1.f / 45, 1.f / 46, 1.f / 47, 1.f / 48, 1.f / 49, 1.f / 50, 1.f / 51,
    1.f / 52, 1.f / 53, 1.f / 54, 1.f / 55, 1.f / 56, 1.f / 57, 1.f / 58, 1.f / 59, 1.f / 60, 1.f / 61,
    1.f / 62, 1.f / 63, 1.f / 64, 1.f / 65, 1.f / 66, 1.f / 67};

/* Poisson(lam[i]) counts into out[i] (n <= BLOCK; out may be lam): the Cornish-Fisher
 * expansion at lam >= 10, exact inversion below. */
static void poisson_block(const float *lam, float *out, int64_t n, uint64_t key, uint64_t ctr) {
    float z[BLOCK + 1];
    uint32_t u[BLOCK + 1];
    fill_normals(z, n, key, ctr);
    fill_bits(u, n, key ^ 0x5851f42d4c957f2dULL, ctr);
    /* The values with a small lam, and their lam: read before out is written, as out may
     * be lam. */
    int32_t idx[BLOCK + 32];
    float small[BLOCK + 32];
    int64_t ns = 0;
    for (int64_t i = 0; i < n; i++) {
        idx[ns] = (int32_t)i;
        small[ns] = lam[i];
        ns += lam[i] < EXACT_POISSON_BELOW;
    }
    for (int64_t j = ns; j < ns + 32; j++) { /* pad the last group */
        idx[j] = 0;
        small[j] = 0.0f;
    }
    /* Their uniforms and exp(-lam), in plain loops over the list that vectorize (per lane,
     * inside the groups below, they ran scalar). */
    float v_small[BLOCK + 32], p_small[BLOCK + 32];
    for (int64_t j = 0; j < ns + 32; j++) v_small[j] = (float)(u[idx[j]] >> 8) * (1.0f / 16777216.0f);
    for (int64_t j = 0; j < ns + 32; j++) p_small[j] = exp_poly(-small[j]);
    /* Cornish-Fisher for every value (cheaper than picking the large ones out) */
    for (int64_t i = 0; i < n; i++) {
        float l = lam[i];
        float k = l - 0.139f;
        k = k > 0.0f ? sqrtf(k) : 0.0f;
        k = floorf(l + k * z[i] + (z[i] * z[i] - 1.0f) * (1.0f / 6.0f) + 0.5f);
        out[i] = k > 0.0f ? k : 0.0f;
    }
    /* The small ones by inversion, 32 at a time: count the CDF steps below each uniform,
     * all lanes in step until every lane is past its uniform. Two vectors of 16 at once,
     * as each step waits on the last one's product and sum. A lane past its uniform
     * counts no further, so the extra steps it takes while the others finish change
     * nothing. */
    for (int64_t g = 0; g < ns; g += 32) {
        f16 l[2], v[2], p[2], cdf[2], cnt[2] = {{0}, {0}};
        for (int h = 0; h < 2; h++) {
            memcpy(&l[h], small + g + 16 * h, sizeof l[h]);
            memcpy(&v[h], v_small + g + 16 * h, sizeof v[h]);
            memcpy(&p[h], p_small + g + 16 * h, sizeof p[h]);
            cdf[h] = p[h];
        }
        for (int k = 1; k <= 64; k += 4) { /* 4 steps per test: the test costs more than a step */
            i16 below[2];
            for (int s = 0; s < 4; s++) {
                for (int h = 0; h < 2; h++) {
                    below[h] = v[h] > cdf[h]; /* -1 where the count goes on */
                    cnt[h] -= __builtin_convertvector(below[h], f16);
                    p[h] *= l[h] * inv_k[k + s];
                    cdf[h] += p[h];
                }
            }
            i16 more = below[0] | below[1];
            int32_t m = 0;
            for (int j = 0; j < 16; j++) m |= more[j];
            if (!m) break;
        }
        for (int64_t j = 0; j < 32 && g + j < ns; j++) out[idx[g + j]] = cnt[j / 16][j % 16];
    }
}

/* Walks a crop in blocks of BLOCK values; each block takes the next counters. */
#define FOR_BLOCKS(...)                                                   \
    uint64_t ctr = 0;                                                     \
    for (int64_t o = 0; o < size; o += BLOCK) {                           \
        int64_t m = size - o < BLOCK ? size - o : BLOCK;                  \
        float *restrict v = x + o;                                        \
        __VA_ARGS__;                                                      \
        ctr += (uint64_t)(m + 1) / 2;                                     \
    }

void dg_normals(float *out, int64_t n, uint64_t key) {
    float z[BLOCK + 1];
    for (int64_t o = 0, ctr = 0; o < n; o += BLOCK, ctr += BLOCK / 2) {
        int64_t m = n - o < BLOCK ? n - o : BLOCK;
        fill_normals(z, m, key, (uint64_t)ctr);
        memcpy(out + o, z, (size_t)m * sizeof(float));
    }
}

void dg_poisson_counts(const float *lam, float *out, int64_t n, uint64_t key) {
    for (int64_t o = 0, ctr = 0; o < n; o += BLOCK, ctr += BLOCK / 2) {
        int64_t m = n - o < BLOCK ? n - o : BLOCK;
        poisson_block(lam + o, out + o, m, key, (uint64_t)ctr);
    }
}

/* x += sigma / 255 * z */
static void dg_gaussian(float *x, int64_t size, float sigma, uint64_t key, int clip) {
    float s = sigma * (1.0f / 255.0f);
    float z[BLOCK + 1];
    FOR_BLOCKS({
        fill_normals(z, m, key, ctr);
        for (int64_t i = 0; i < m; i++) v[i] += s * z[i];
        if (clip) clip01(v, m);
    })
}

/* x += x * sqrt(var) * z */
static void dg_speckle(float *x, int64_t size, float var, uint64_t key, int clip) {
    float s = sqrtf(var);
    float z[BLOCK + 1];
    FOR_BLOCKS({
        fill_normals(z, m, key, ctr);
        for (int64_t i = 0; i < m; i++) v[i] += v[i] * s * z[i];
        if (clip) clip01(v, m);
    })
}

/* x = Poisson(max(x, 0) * photons) / photons */
static void dg_poisson(float *x, int64_t size, float photons, uint64_t key, int clip) {
    float ph = photons, inv = 1.0f / ph;
    float lam[BLOCK];
    FOR_BLOCKS({
        for (int64_t i = 0; i < m; i++) lam[i] = (v[i] > 0.0f ? v[i] : 0.0f) * ph;
        poisson_block(lam, lam, m, key, ctr);
        for (int64_t i = 0; i < m; i++) v[i] = lam[i] * inv;
        if (clip) clip01(v, m);
    })
}

/* A raw sensor: sRGB -> linear electrons at full well / iso, Poisson shot noise plus
 * gaussian read noise, back to sRGB. */
static void dg_camera(float *x, int64_t size, float iso, float full_well_iso100, float read_electrons,
                      uint64_t key, int clip) {
    float peak = full_well_iso100 * 100.0f / iso, inv = 1.0f / peak;
    float e[BLOCK], z[BLOCK + 1];
    uint64_t read_key = key ^ 0x2545f4914f6cdd1dULL;
    FOR_BLOCKS({
        for (int64_t i = 0; i < m; i++) {
            float s = v[i] < 0.0f ? 0.0f : (v[i] > 1.0f ? 1.0f : v[i]);
            float curve = exp_poly(2.4f * log_poly((s + 0.055f) * (1.0f / 1.055f)));
            e[i] = (s <= 0.04045f ? s * (1.0f / 12.92f) : curve) * peak;
        }
        poisson_block(e, e, m, key, ctr);
        fill_normals(z, m, read_key, ctr);
        for (int64_t i = 0; i < m; i++) {
            float l = (e[i] + z[i] * read_electrons) * inv;
            l = l > 0.0f ? l : 0.0f;
            float curve = 1.055f * exp_poly((1.0f / 2.4f) * log_poly(l > 1e-30f ? l : 1e-30f)) - 0.055f;
            v[i] = l <= 0.0031308f ? 12.92f * l : curve;
        }
        if (clip) clip01(v, m);
    })
}

/* Each value flips where its 32-bit draw is below thr (amount * 2^32): mode 0 salt (to
 * 1), 1 pepper (to the crop's low), 2 s&p (salt below thr / 2, pepper above). The low is
 * -1 in a crop that already holds negative values, else 0; the crop is clipped to [low, 1]. */
static void dg_impulse(float *x, int64_t size, uint32_t thr, int mode, uint64_t key) {
    uint32_t u[BLOCK + 1];
    int negative = 0;
    for (int64_t i = 0; i < size; i++) negative |= x[i] < 0.0f;
    float low = negative ? -1.0f : 0.0f;
    uint32_t salt = mode == 0 ? thr : (mode == 2 ? thr >> 1 : 0u), pep = mode == 0 ? 0u : thr;
    for (int64_t o = 0, ctr = 0; o < size; o += BLOCK, ctr += BLOCK / 2) {
        int64_t m = size - o < BLOCK ? size - o : BLOCK;
        float *restrict v = x + o;
        fill_bits(u, m, key, (uint64_t)ctr);
        for (int64_t i = 0; i < m; i++) {
            float w = u[i] < pep ? low : v[i];
            w = u[i] < salt ? 1.0f : w;
            w = w < low ? low : w;
            v[i] = w > 1.0f ? 1.0f : w;
        }
    }
}

/* v / 255 for every byte v, as a division (not a product with 1/255: numpy's rounding). */
static float unit[256];
__attribute__((constructor)) static void init_unit(void) {
    for (int v = 0; v < 256; v++) unit[v] = (float)v / 255.0f;
}

/* k crops of a uint8 image with ch channels as float32 in [0, 1], into out (k, chunk,
 * chunk, ch). Crop c's pixel (i, j) is the ch bytes at start[c] + i * di[c] + j * dj[c]:
 * a rotated or mirrored window is the same walk with other steps. */
void dg_crops(const uint8_t *img, int64_t ch, int64_t chunk, int64_t k, const int64_t *start,
              const int64_t *di, const int64_t *dj, float *out) {
    const float white = 255.0f;
    for (int64_t c = 0; c < k; c++) {
        float *restrict o = out + c * chunk * chunk * ch;
        for (int64_t i = 0; i < chunk; i++, o += chunk * ch) {
            const uint8_t *restrict row = img + start[c] + i * di[c];
            if (dj[c] == ch) { /* an upright row: one contiguous run, divided in vectors */
                for (int64_t t = 0; t < chunk * ch; t++) o[t] = row[t] / white;
            } else if (ch == 3) { /* a pixel at a time: the table, as a scalar division is slow */
                for (int64_t j = 0; j < chunk; j++) {
                    const uint8_t *px = row + j * dj[c];
                    o[3 * j] = unit[px[0]];
                    o[3 * j + 1] = unit[px[1]];
                    o[3 * j + 2] = unit[px[2]];
                }
            } else {
                for (int64_t j = 0; j < chunk; j++)
                    for (int64_t q = 0; q < ch; q++) o[j * ch + q] = unit[row[j * dj[c] + q]];
            }
        }
    }
}

/* Crop c's own recipe, in place on its `size` floats x: parts j = 0, 1, ... until a kind
 * < 0, kinds[j] a position in NOISE_KINDS (gaussian, poisson, speckle, salt, pepper, s&p,
 * camera) at levels[j], or for the impulse kinds at thresholds[j]
 * (noisebatch.impulse_thresholds). Each part draws from its own key, mixed from `key` and
 * (c, j), so a crop's noise does not depend on which call noised it. */
static void noise_crop(float *x, int64_t size, int64_t c, int64_t parts, const int32_t *kinds,
                       const float *levels, const uint32_t *thresholds, int clip, float full_well_iso100,
                       float read_electrons, uint64_t key) {
    for (int64_t j = 0; j < parts && kinds[j] >= 0; j++) {
        uint64_t kj = mix64(key + (uint64_t)(c * parts + j + 1) * GOLDEN);
        switch (kinds[j]) {
        case 0: dg_gaussian(x, size, levels[j], kj, clip); break;
        case 1: dg_poisson(x, size, levels[j], kj, clip); break;
        case 2: dg_speckle(x, size, levels[j], kj, clip); break;
        case 3: case 4: case 5: dg_impulse(x, size, thresholds[j], kinds[j] - 3, kj); break;
        case 6: dg_camera(x, size, levels[j], full_well_iso100, read_electrons, kj, clip); break;
        }
    }
}

/* n crops of `size` floats in x, crop c noised in place by its recipe: row c of the (n,
 * parts) kinds, levels and thresholds, clipped where clip[c]. */
void dg_noise(float *x, int64_t n, int64_t size, int64_t parts, const int32_t *kinds, const float *levels,
              const uint32_t *thresholds, const uint8_t *clip, float full_well_iso100, float read_electrons,
              uint64_t key) {
    for (int64_t c = 0; c < n; c++)
        noise_crop(x + c * size, size, c, parts, kinds + c * parts, levels + c * parts,
                   thresholds + c * parts, clip[c], full_well_iso100, read_electrons, key);
}

/* n floats from src to dst with non-temporal stores where the CPU has them: dst is a row of
 * a task's ~100 MB output, written once and not read again here, so the stores go
 * straight to memory instead of first reading each line into cache. */
static void stream_out(float *restrict dst, const float *restrict src, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i < n && ((uintptr_t)(dst + i) & 63); i++) dst[i] = src[i];
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX__)
    for (; i < n && ((uintptr_t)(dst + i) & 31); i++) dst[i] = src[i];
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#elif defined(__SSE2__)
    for (; i < n && ((uintptr_t)(dst + i) & 15); i++) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
    for (; i < n; i++) dst[i] = src[i];
}

/* The training stream's whole transform of one photo's k crops, crop by crop in a buffer
 * that stays in cache from its cut to its last noise: dg_crops into it, out to clean[c],
 * then dg_noise's recipe for crop c, out to noisy[c]: the same values as those two calls
 * with the same key. Returns -1 (nothing written) if the buffer can't be had. */
int dg_noisy_crops(const uint8_t *img, int64_t ch, int64_t chunk, int64_t k, const int64_t *start,
                   const int64_t *di, const int64_t *dj, int64_t parts, const int32_t *kinds,
                   const float *levels, const uint32_t *thresholds, const uint8_t *clip,
                   float full_well_iso100, float read_electrons, uint64_t key, float *clean, float *noisy) {
    int64_t size = chunk * chunk * ch;
    float *buf = aligned_alloc(64, ((size_t)size * sizeof(float) + 63) / 64 * 64);
    if (!buf) return -1;
    for (int64_t c = 0; c < k; c++) {
        dg_crops(img, ch, chunk, 1, start + c, di + c, dj + c, buf);
        stream_out(clean + c * size, buf, size);
        noise_crop(buf, size, c, parts, kinds + c * parts, levels + c * parts, thresholds + c * parts,
                   clip[c], full_well_iso100, read_electrons, key);
        stream_out(noisy + c * size, buf, size);
    }
#if defined(__SSE2__)
    _mm_sfence(); /* the streamed stores are seen before anything after this call */
#endif
    free(buf);
    return 0;
}
