"""C++ source of the CPU LUT kernel (:mod:`.cpu_lut` writes it to its build folder and compiles it).

Kept as a Python string so that Hub remote code, which ships Python modules only, carries the same kernel
and computes the same results as the installed package.
"""

SOURCE = r"""// CPU LUT product of a FourierLinear's quantized spectrum with a spectral input (batch 1..a few rows).
//
//   y[b, o] = sum_k  s[(o*c + k) / G] * (Re T[code[o, k]] * x[b, 2k] + Im T[code[o, k]] * x[b, 2k + 1])
//
// codes: uint8, one 8-bit code per complex coefficient, row-major (m rows of c coefficients);
// s: per-group scales, float32 / float16 / bfloat16 (`scale_kind` 0 / 1 / 2), G consecutive coefficients of the
//    flattened spectrum per scale;
// T: the 256-entry code table as float32 (Re, Im) pairs (always given); for a polar table also its factors
//    (T[(a << p) | q] = lev[a] * (cosv[q] + i sinv[q]), a and p at most 5 bits: lev/cosv/sinv hold 32 floats),
//    else lev = nullptr;
// x: float32 (M, 2c), the interleaved (Re, Im) weighted, packed spectral input;
// y: float32 (M, m), overwritten.
// Requires c % 16 == 0 and G % 16 == 0 (then a 16-coefficient chunk never straddles a scale group).
//
// llava_fa_fourier_linear is the whole inference layer around that product, in one call: it takes the raw
// orthonormal rfft U of x / d (float32 (M, n / 2 + 1, 2)), builds the weighted, packed input x from it
// (x[0] = (Re U_0, Re U_{n/2} for even n, else 0), x[k] = 2 U_k), and adds the low-rank term
// [Re t, Im t] = U_flat B^T, y += [Re t, Im t] C^T (B (2r, n + 2 - n % 2), C (m, 2r) passed as C^T;
// spectral.lowrank_*_matrix)
// and the bias: no Python between the rfft and the output.
//
// llava_fa_lut_dequant writes rows [o0, o1) of W' in the planar layout [Re | Im] ((o1 - o0, 2c), float32 or
// bfloat16) for the large-batch path (the BLAS / AMX product over dequantised tiles); AVX-512 only.
//
// Variants (chosen at run time from the CPU's features; forced by `variant` for tests):
//   1 portable C++, 2 AVX2 gathers, 3 AVX-512 gathers, 4 AVX-512 polar (in-register permutes, no gathers).
// Rows are split over ATen's intra-op thread pool (at::parallel_for), so torch.set_num_threads applies.
// No dense weight and no table of partial products is ever written: one pass over the codes.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace {

constexpr int64_t kChunk = 16;
constexpr int64_t kMaxRows = 4;  // input rows handled per pass over the codes
// Codes are prefetched this many bytes ahead, one cache line per 64 codes (the hardware prefetchers alone did not
// keep up on large matrices).
constexpr int64_t kPrefetch = 4096;
// Coefficient columns per block of the polar product from 3 input rows on (its x block: 16 KB at 4 rows).
constexpr int64_t kColumnBlock = 1024;

inline void prefetch_codes(const uint8_t* code, int64_t k) {
  if ((k & 63) == 0) __builtin_prefetch(code + k + kPrefetch, 0, 3);
}

struct Args {
  const uint8_t* codes;
  const void* scales;
  int64_t scale_kind;
  int64_t group;
  const float* pairs;
  const float* lev;
  const float* cosv;
  const float* sinv;
  int64_t phase_bits;
  const float* x;
  const float* xr;  // x split into real / imaginary rows (M, c) each: filled for the polar variant only
  const float* xi;
  int64_t rows;  // M
  int64_t c;
  float* y;
  int64_t m;
};

inline float scale_at(const Args& a, int64_t i) {
  if (a.scale_kind == 1) return static_cast<float>(static_cast<const c10::Half*>(a.scales)[i]);
  if (a.scale_kind == 2) return static_cast<float>(static_cast<const c10::BFloat16*>(a.scales)[i]);
  return static_cast<const float*>(a.scales)[i];
}

// Same as scale_at with one F16C instruction for float16 and a shift for bfloat16 (SIMD variants only).
__attribute__((target("f16c"))) inline float fast_scale_at(const Args& a, int64_t i) {
  if (a.scale_kind == 1) return _cvtsh_ss(static_cast<const uint16_t*>(a.scales)[i]);
  if (a.scale_kind == 2) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(a.scales)[i]) << 16;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }
  return static_cast<const float*>(a.scales)[i];
}

// The group index and offset of the first coefficient of row o, advanced chunk by chunk.
struct GroupCursor {
  int64_t index, offset, group;
  GroupCursor(int64_t flat, int64_t group) : index(flat / group), offset(flat % group), group(group) {}
  inline void advance() {
    offset += kChunk;
    if (offset == group) {
      offset = 0;
      ++index;
    }
  }
};

void portable_rows(const Args& a, int64_t o0, int64_t o1, int64_t b0, int64_t nb) {
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* code = a.codes + o * a.c;
    float acc[kMaxRows] = {0.f, 0.f, 0.f, 0.f};
    GroupCursor cur(o * a.c, a.group);
    for (int64_t k0 = 0; k0 < a.c; k0 += kChunk) {
      float part[kMaxRows] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t k = k0; k < k0 + kChunk; ++k) {
        const float* t = a.pairs + 2 * code[k];
        for (int64_t b = 0; b < nb; ++b) {
          const float* x = a.x + (b0 + b) * 2 * a.c + 2 * k;
          part[b] += t[0] * x[0] + t[1] * x[1];
        }
      }
      const float s = scale_at(a, cur.index);
      for (int64_t b = 0; b < nb; ++b) acc[b] += s * part[b];
      cur.advance();
    }
    for (int64_t b = 0; b < nb; ++b) a.y[(b0 + b) * a.m + o] = acc[b];
  }
}

// Gathers one (Re, Im) pair per code as a 64-bit word: the pairs come out interleaved like x.
__attribute__((target("avx2,fma,f16c"))) void avx2_rows(const Args& a, int64_t o0, int64_t o1, int64_t b0, int64_t nb) {
  const double* table = reinterpret_cast<const double*>(a.pairs);
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* code = a.codes + o * a.c;
    __m256 acc[kMaxRows];
    for (int64_t b = 0; b < kMaxRows; ++b) acc[b] = _mm256_setzero_ps();
    GroupCursor cur(o * a.c, a.group);
    for (int64_t k = 0; k < a.c; k += kChunk) {
      prefetch_codes(code, k);
      const __m256 s = _mm256_set1_ps(fast_scale_at(a, cur.index));
      for (int64_t h = 0; h < kChunk; h += 4) {
        const __m128i idx = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(*reinterpret_cast<const int32_t*>(code + k + h)));
        const __m256 t = _mm256_mul_ps(_mm256_castpd_ps(_mm256_i32gather_pd(table, idx, 8)), s);
        for (int64_t b = 0; b < nb; ++b) {
          acc[b] = _mm256_fmadd_ps(t, _mm256_loadu_ps(a.x + (b0 + b) * 2 * a.c + 2 * (k + h)), acc[b]);
        }
      }
      cur.advance();
    }
    for (int64_t b = 0; b < nb; ++b) {
      __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[b]), _mm256_extractf128_ps(acc[b], 1));
      v = _mm_add_ps(v, _mm_movehl_ps(v, v));
      v = _mm_add_ss(v, _mm_movehdup_ps(v));
      a.y[(b0 + b) * a.m + o] = _mm_cvtss_f32(v);
    }
  }
}

__attribute__((target("avx512f,f16c"))) void avx512_gather_rows(const Args& a, int64_t o0, int64_t o1, int64_t b0,
                                                             int64_t nb) {
  const double* table = reinterpret_cast<const double*>(a.pairs);
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* code = a.codes + o * a.c;
    __m512 acc[kMaxRows];
    for (int64_t b = 0; b < kMaxRows; ++b) acc[b] = _mm512_setzero_ps();
    GroupCursor cur(o * a.c, a.group);
    for (int64_t k = 0; k < a.c; k += kChunk) {
      prefetch_codes(code, k);
      const __m512 s = _mm512_set1_ps(fast_scale_at(a, cur.index));
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(code + k));
      const __m512 lo = _mm512_mul_ps(_mm512_castpd_ps(_mm512_i32gather_pd(_mm256_cvtepu8_epi32(q), table, 8)), s);
      const __m512 hi = _mm512_mul_ps(
          _mm512_castpd_ps(_mm512_i32gather_pd(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8)), table, 8)), s);
      for (int64_t b = 0; b < nb; ++b) {
        const float* x = a.x + (b0 + b) * 2 * a.c + 2 * k;
        acc[b] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x), acc[b]);
        acc[b] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + 16), acc[b]);
      }
      cur.advance();
    }
    for (int64_t b = 0; b < nb; ++b) a.y[(b0 + b) * a.m + o] = _mm512_reduce_add_ps(acc[b]);
  }
}

// A polar code table in registers: the 2^a levels and the 2^p unit phasors (at most 32 each), looked up by
// in-register permutes (code = (level index << p) | phase index).
struct PolarLut {
  __m512 lev0, lev1, cos0, cos1, sin0, sin1;
  __m512i phase_mask;
  __m128i shift;
};

__attribute__((target("avx512f"))) inline void load_polar(const Args& a, PolarLut& t) {
  t.lev0 = _mm512_loadu_ps(a.lev), t.lev1 = _mm512_loadu_ps(a.lev + 16);
  t.cos0 = _mm512_loadu_ps(a.cosv), t.cos1 = _mm512_loadu_ps(a.cosv + 16);
  t.sin0 = _mm512_loadu_ps(a.sinv), t.sin1 = _mm512_loadu_ps(a.sinv + 16);
  t.phase_mask = _mm512_set1_epi32((1 << a.phase_bits) - 1);
  t.shift = _mm_cvtsi32_si128(static_cast<int>(a.phase_bits));
}

// (Re, Im) = level * (cos, sin) of 16 codes (int32 lanes).
__attribute__((target("avx512f"))) inline void polar_lookup(const PolarLut& t, __m512i q, __m512& re, __m512& im) {
  const __m512i phase = _mm512_and_si512(q, t.phase_mask);
  const __m512 level = _mm512_permutex2var_ps(t.lev0, _mm512_srl_epi32(q, t.shift), t.lev1);
  re = _mm512_mul_ps(level, _mm512_permutex2var_ps(t.cos0, phase, t.cos1));
  im = _mm512_mul_ps(level, _mm512_permutex2var_ps(t.sin0, phase, t.sin1));
}

// Polar tables: level and phase looked up with in-register permutes (no memory gathers); x read split.
// Output rows [o0, o1) over the coefficient columns [k0, k1): writes y at k0 == 0, adds to it otherwise.
template <int NB>
__attribute__((target("avx512f,f16c"))) void avx512_polar_block(const Args& a, int64_t o0, int64_t o1, int64_t b0,
                                                             int64_t k0, int64_t k1) {
  const bool blocked = k1 - k0 < a.c;
  PolarLut lut;
  load_polar(a, lut);
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* code = a.codes + o * a.c;
    __m512 acc[NB], part[NB];
    for (int b = 0; b < NB; ++b) acc[b] = part[b] = _mm512_setzero_ps();
    GroupCursor cur(o * a.c + k0, a.group);
    for (int64_t k = k0; k < k1; k += kChunk) {
      if (!blocked) {
        prefetch_codes(code, k);
      } else if ((k & 63) == 0) {  // column blocks: the same columns two rows ahead
        __builtin_prefetch(code + 2 * a.c + k, 0, 3);
      }
      const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + k)));
      __m512 re, im;
      polar_lookup(lut, q, re, im);
      for (int b = 0; b < NB; ++b) {
        part[b] = _mm512_fmadd_ps(re, _mm512_loadu_ps(a.xr + (b0 + b) * a.c + k), part[b]);
        part[b] = _mm512_fmadd_ps(im, _mm512_loadu_ps(a.xi + (b0 + b) * a.c + k), part[b]);
      }
      // a chunk never straddles a group: scale the group's partial sums once, at its last chunk or the block end
      if (cur.offset + kChunk == cur.group || k + kChunk == k1) {
        const __m512 s = _mm512_set1_ps(fast_scale_at(a, cur.index));
        for (int b = 0; b < NB; ++b) {
          acc[b] = _mm512_fmadd_ps(part[b], s, acc[b]);
          part[b] = _mm512_setzero_ps();
        }
      }
      cur.advance();
    }
    for (int b = 0; b < NB; ++b) {
      float* y = a.y + (b0 + b) * a.m + o;
      *y = (k0 == 0 ? 0.f : *y) + _mm512_reduce_add_ps(acc[b]);
    }
  }
}

// The number of input rows is a template parameter: the accumulators stay in registers. From 3 rows on, the input's
// real and imaginary rows no longer fit L1 together: the columns are walked in blocks of kColumnBlock.
__attribute__((target("avx512f,f16c"))) void avx512_polar_rows(const Args& a, int64_t o0, int64_t o1, int64_t b0,
                                                               int64_t nb) {
  const int64_t step = nb >= 3 ? kColumnBlock : a.c;
  for (int64_t k0 = 0; k0 < a.c; k0 += step) {
    const int64_t k1 = k0 + step < a.c ? k0 + step : a.c;
    switch (nb) {
      case 1: avx512_polar_block<1>(a, o0, o1, b0, k0, k1); break;
      case 2: avx512_polar_block<2>(a, o0, o1, b0, k0, k1); break;
      case 3: avx512_polar_block<3>(a, o0, o1, b0, k0, k1); break;
      default: avx512_polar_block<4>(a, o0, o1, b0, k0, k1); break;
    }
  }
}

// 16 float32 -> 16 bfloat16 (round to nearest even; AVX-512F only, no AVX512-BF16 needed).
__attribute__((target("avx512f"))) inline __m256i to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
}

// Rows [o0, o1) of the planar W' (row stride 2c, row o0 first) in float32 (BF16 false) or bfloat16.
template <bool POLAR, bool BF16>
__attribute__((target("avx512f,f16c"))) void avx512_dequant_rows(const Args& a, int64_t o0, int64_t o1, int64_t base,
                                                              void* out) {
  PolarLut lut{};
  if (POLAR) load_polar(a, lut);
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* code = a.codes + o * a.c;
    const int64_t row = (o - base) * 2 * a.c;
    GroupCursor cur(o * a.c, a.group);
    for (int64_t k = 0; k < a.c; k += kChunk) {
      prefetch_codes(code, k);
      const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + k)));
      const __m512 s = _mm512_set1_ps(fast_scale_at(a, cur.index));
      __m512 re, im;
      if (POLAR) {
        polar_lookup(lut, q, re, im);
        re = _mm512_mul_ps(re, s);
        im = _mm512_mul_ps(im, s);
      } else {
        const __m512i twice = _mm512_slli_epi32(q, 1);
        re = _mm512_mul_ps(_mm512_i32gather_ps(twice, a.pairs, 4), s);
        im = _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(twice, _mm512_set1_epi32(1)), a.pairs, 4), s);
      }
      if (BF16) {
        uint16_t* dst = static_cast<uint16_t*>(out) + row + k;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), to_bf16(re));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + a.c), to_bf16(im));
      } else {
        float* dst = static_cast<float*>(out) + row + k;
        _mm512_storeu_ps(dst, re);
        _mm512_storeu_ps(dst + a.c, im);
      }
      cur.advance();
    }
  }
}

// ---- real FFT of the input (orthonormal rfft), four-step: N = n / 2 = N1 * N2, N1 a power of two --------------
// z[j] = u[2j] + i u[2j+1] (complex length N); Z = DFT_N(z) by (1) N2-point DFTs down the columns of z viewed as
// (N2, N1), vectorised over the N1 columns, (2) twiddles w_N^(n1 k2), (3) radix-2 FFTs of the N2 rows; then the
// real spectrum X[k] = (Z[k] + conj Z[N-k]) / 2 - i w_n^k (Z[k] - conj Z[N-k]) / 2, k = 0..N, times 1 / sqrt(n).
constexpr int64_t kMaxOddFactor = 64;  // N2 above this: the caller uses another FFT (the column DFTs cost N * N2)

struct FftPlan {
  int64_t n, N, N1, N2;
  std::vector<float> w2re, w2im;      // (N2, N2): w_N2^(p q)
  std::vector<float> twre, twim;      // (N2, N1): w_N^(n1 k2)
  std::vector<float> stre, stim;      // radix-2 stage twiddles, stage of half-length h at offset h - 1: w_2h^j
  std::vector<int32_t> rev;           // bit reversal of N1
  std::vector<float> postre, postim;  // (N + 1): w_n^k
};

std::shared_ptr<const FftPlan> make_plan(int64_t n) {
  auto p = std::make_shared<FftPlan>();
  p->n = n;
  p->N = n / 2;
  p->N1 = 1;
  while (p->N % (2 * p->N1) == 0) p->N1 *= 2;
  p->N2 = p->N / p->N1;
  const int64_t N = p->N, N1 = p->N1, N2 = p->N2;
  // re[i] + i im[i] = exp(-2 pi i num / den)
  const auto unit = [](std::vector<float>& re, std::vector<float>& im, int64_t i, int64_t num, int64_t den) {
    const double ang = -2.0 * M_PI * static_cast<double>(num % den) / den;
    re[i] = static_cast<float>(std::cos(ang));
    im[i] = static_cast<float>(std::sin(ang));
  };
  p->w2re.resize(N2 * N2), p->w2im.resize(N2 * N2);
  for (int64_t a = 0; a < N2; ++a)
    for (int64_t b = 0; b < N2; ++b) unit(p->w2re, p->w2im, a * N2 + b, a * b, N2);
  p->twre.resize(N2 * N1), p->twim.resize(N2 * N1);
  for (int64_t k2 = 0; k2 < N2; ++k2)
    for (int64_t n1 = 0; n1 < N1; ++n1) unit(p->twre, p->twim, k2 * N1 + n1, n1 * k2, N);
  p->stre.resize(N1 > 1 ? N1 - 1 : 1), p->stim.resize(N1 > 1 ? N1 - 1 : 1);
  for (int64_t h = 1; h < N1; h *= 2)
    for (int64_t j = 0; j < h; ++j) unit(p->stre, p->stim, h - 1 + j, j, 2 * h);
  p->rev.resize(N1);
  int bits = 0;
  while ((int64_t{1} << bits) < N1) ++bits;
  for (int64_t i = 0; i < N1; ++i) {
    int64_t r = 0;
    for (int b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
    p->rev[i] = static_cast<int32_t>(r);
  }
  p->postre.resize(N + 1), p->postim.resize(N + 1);
  for (int64_t k = 0; k <= N; ++k) unit(p->postre, p->postim, k, k, n);
  return p;
}

// The plan of length n (even, odd part of n / 2 at most kMaxOddFactor), built once per n; nullptr otherwise.
std::shared_ptr<const FftPlan> plan_for(int64_t n) {
  if (n < 2 || n % 2 != 0) return nullptr;
  int64_t odd = n / 2;
  while (odd % 2 == 0) odd /= 2;
  if (odd > kMaxOddFactor) return nullptr;
  static std::mutex lock;
  static std::map<int64_t, std::shared_ptr<const FftPlan>> plans;
  std::lock_guard<std::mutex> guard(lock);
  auto it = plans.find(n);
  if (it != plans.end()) return it->second;
  auto plan = make_plan(n);
  plans.emplace(n, plan);
  return plan;
}

// uv (n / 2 + 1, 2) = orthonormal rfft of u = x * inv (inv may be null) for one row; re / im: 2N scratch floats.
void rfft_row(const FftPlan& p, const float* x, const float* inv, float* uv, float* re, float* im) {
  const int64_t N = p.N, N1 = p.N1, N2 = p.N2;
  float* are = re + N;  // A: the input, (N2, N1) row-major; re / im hold B, then the row FFTs in place
  float* aim = im + N;
  for (int64_t j = 0; j < N; ++j) {
    are[j] = inv ? x[2 * j] * inv[2 * j] : x[2 * j];
    aim[j] = inv ? x[2 * j + 1] * inv[2 * j + 1] : x[2 * j + 1];
  }
  for (int64_t k2 = 0; k2 < N2; ++k2) {  // (1) column DFTs and (2) twiddles
    float* bre = re + k2 * N1;
    float* bim = im + k2 * N1;
    for (int64_t n1 = 0; n1 < N1; ++n1) bre[n1] = bim[n1] = 0.f;
    for (int64_t n2 = 0; n2 < N2; ++n2) {
      const float wr = p.w2re[n2 * N2 + k2], wi = p.w2im[n2 * N2 + k2];
      const float* xr = are + n2 * N1;
      const float* xi = aim + n2 * N1;
#pragma omp simd
      for (int64_t n1 = 0; n1 < N1; ++n1) {
        bre[n1] += xr[n1] * wr - xi[n1] * wi;
        bim[n1] += xr[n1] * wi + xi[n1] * wr;
      }
    }
    const float* tr = p.twre.data() + k2 * N1;
    const float* ti = p.twim.data() + k2 * N1;
#pragma omp simd
    for (int64_t n1 = 0; n1 < N1; ++n1) {
      const float r = bre[n1] * tr[n1] - bim[n1] * ti[n1];
      bim[n1] = bre[n1] * ti[n1] + bim[n1] * tr[n1];
      bre[n1] = r;
    }
  }
  // (3) A is no longer needed: every row of B, bit-reversed into A's row, then radix-2 butterflies in place there
  for (int64_t k2 = 0; k2 < N2; ++k2) {
    float* bre = re + k2 * N1;
    float* bim = im + k2 * N1;
    float* cre = are + k2 * N1;
    float* cim = aim + k2 * N1;
    for (int64_t i = 0; i < N1; ++i) {
      cre[i] = bre[p.rev[i]];
      cim[i] = bim[p.rev[i]];
    }
    for (int64_t h = 1; h < N1; h *= 2) {
      const float* wr = p.stre.data() + h - 1;
      const float* wi = p.stim.data() + h - 1;
      for (int64_t i = 0; i < N1; i += 2 * h) {
        float* ur = cre + i;
        float* ui = cim + i;
        float* vr = cre + i + h;
        float* vi = cim + i + h;
#pragma omp simd
        for (int64_t j = 0; j < h; ++j) {
          const float tr = vr[j] * wr[j] - vi[j] * wi[j];
          const float ti = vr[j] * wi[j] + vi[j] * wr[j];
          vr[j] = ur[j] - tr;
          vi[j] = ui[j] - ti;
          ur[j] += tr;
          ui[j] += ti;
        }
      }
    }
  }
  // Z[k2 + N2 k1] = C[k2][k1]; real spectrum, orthonormal scale
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.n)));
  for (int64_t k = 0; k <= N; ++k) {
    const int64_t a = k % N, b = (N - k) % N;
    const float zr = are[(a % N2) * N1 + a / N2], zi = aim[(a % N2) * N1 + a / N2];
    const float cr = are[(b % N2) * N1 + b / N2], ci = -aim[(b % N2) * N1 + b / N2];  // conj Z[N - k]
    const float er = 0.5f * (zr + cr), ei = 0.5f * (zi + ci);
    const float dr = 0.5f * (zr - cr), di = 0.5f * (zi - ci);
    const float orr = di, oi = -dr;  // -i (Z - conj Z') / 2
    const float wr = p.postre[k], wi = p.postim[k];
    uv[2 * k] = scale * (er + wr * orr - wi * oi);
    uv[2 * k + 1] = scale * (ei + wr * oi + wi * orr);
  }
}

// rfft_row over `rows` rows of x (row stride n) into uv (row stride n + 2), rows split over the thread pool.
void rfft_rows(const FftPlan& p, const float* x, const float* inv, int64_t rows, float* uv) {
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(4 * p.N);
    for (int64_t r = r0; r < r1; ++r) {
      rfft_row(p, x + r * p.n, inv, uv + r * (p.n + 2), scratch.data(), scratch.data() + 2 * p.N);
    }
  });
}

using RowsFn = void (*)(const Args&, int64_t, int64_t, int64_t, int64_t);

bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c"); }

// Variant -> row function, or nullptr if this CPU (or this table) cannot run it.
RowsFn pick(int64_t variant, bool polar) {
  if (variant == 0) {
    if (has_avx512()) return polar ? avx512_polar_rows : avx512_gather_rows;
    if (has_avx2()) return avx2_rows;
    return portable_rows;
  }
  switch (variant) {
    case 1: return portable_rows;
    case 2: return has_avx2() ? avx2_rows : nullptr;
    case 3: return has_avx512() ? avx512_gather_rows : nullptr;
    case 4: return has_avx512() && polar ? avx512_polar_rows : nullptr;
    default: return nullptr;
  }
}

// 0 when the kernels take these arguments, 2 otherwise: 16-aligned rows and groups, a known scale type, a table,
// and for a polar table level and phase widths of at most 5 bits.
int64_t check_args(int64_t c, int64_t group, int64_t scale_kind, const float* pairs, const float* lev,
                   int64_t phase_bits) {
  if (c % kChunk != 0 || group % kChunk != 0 || group <= 0) return 2;
  if (scale_kind < 0 || scale_kind > 2 || pairs == nullptr) return 2;
  if (lev != nullptr && (phase_bits < 3 || phase_bits > 5 || 8 - phase_bits > 5)) return 2;
  return 0;
}

// Dot product of two float32 vectors, vectorised for the best ISA this CPU has (GCC function multiversioning).
__attribute__((target_clones("avx512f", "avx2", "default"))) float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// What the product adds to each output: the low-rank term ([Re t, Im t] C^T, `t` (M, 2r)) and the bias.
struct Epilogue {
  const float* t = nullptr;
  const float* lr_out_t = nullptr;  // (rank2, m): the output factor transposed, one axpy per rank
  int64_t rank2 = 0;
  const float* bias = nullptr;
};

// The product over the row range, with the epilogue; returns 0, 1 (variant not runnable) or 2 (bad shapes).
int64_t run(Args a, int64_t variant, const Epilogue& e) {
  if (a.rows < 0 || a.m < 0 || check_args(a.c, a.group, a.scale_kind, a.pairs, a.lev, a.phase_bits)) return 2;
  const bool polar = a.lev != nullptr;
  RowsFn fn = pick(variant, polar);
  if (fn == nullptr) return 1;
  if (!polar && fn == avx512_polar_rows) return 1;
  std::vector<float> split;
  if (fn == avx512_polar_rows) {  // O(M c) once per call instead of two permutes per 16 codes and output row
    split.resize(2 * a.rows * a.c);
    for (int64_t i = 0; i < a.rows * a.c; ++i) {
      split[i] = a.x[2 * i];
      split[a.rows * a.c + i] = a.x[2 * i + 1];
    }
    a.xr = split.data();
    a.xi = split.data() + a.rows * a.c;
  }
  const int64_t grain = 16;
  at::parallel_for(0, a.m, grain, [&](int64_t o0, int64_t o1) {
    for (int64_t b0 = 0; b0 < a.rows; b0 += kMaxRows) {
      const int64_t nb = a.rows - b0 < kMaxRows ? a.rows - b0 : kMaxRows;
      fn(a, o0, o1, b0, nb);
    }
    for (int64_t b = 0; b < a.rows; ++b) {
      float* y = a.y + b * a.m;
      if (e.t != nullptr) {
        for (int64_t j = 0; j < e.rank2; ++j) {
          const float tj = e.t[b * e.rank2 + j];
          const float* c = e.lr_out_t + j * a.m;
#pragma omp simd
          for (int64_t o = o0; o < o1; ++o) y[o] += tj * c[o];
        }
      }
      if (e.bias != nullptr) {
        for (int64_t o = o0; o < o1; ++o) y[o] += e.bias[o];
      }
    }
  });
  return 0;
}

}  // namespace

// The variant `variant` = 0 would run on this CPU (1..4), for tests and benchmarks.
extern "C" int64_t llava_fa_lut_variant(int64_t polar) {
  if (has_avx512()) return polar ? 4 : 3;
  return has_avx2() ? 2 : 1;
}

// The product alone, from the interleaved input x. Returns 0 on success, 1 if the variant cannot run here,
// 2 if the shapes are not supported.
extern "C" int64_t llava_fa_lut_gemv(const uint8_t* codes, const void* scales, int64_t scale_kind, int64_t group,
                                     const float* pairs, const float* lev, const float* cosv, const float* sinv,
                                     int64_t phase_bits, const float* x, int64_t rows, int64_t c, float* y, int64_t m,
                                     int64_t variant) {
  Args a{codes, scales, scale_kind, group, pairs, lev, cosv, sinv, phase_bits, x, nullptr, nullptr, rows, c, y, m};
  return run(a, variant, Epilogue{});
}

// Rows [o0, o1) of the planar W' into `out` ((o1 - o0, 2c) float32, or bfloat16 when `bf16`), rows split over
// ATen's thread pool. Returns 0, 1 (no AVX-512 on this CPU) or 2 (bad shapes).
extern "C" int64_t llava_fa_lut_dequant(const uint8_t* codes, const void* scales, int64_t scale_kind, int64_t group,
                                        const float* pairs, const float* lev, const float* cosv, const float* sinv,
                                        int64_t phase_bits, int64_t o0, int64_t o1, int64_t c, void* out,
                                        int64_t bf16) {
  if (o0 < 0 || o1 < o0 || check_args(c, group, scale_kind, pairs, lev, phase_bits)) return 2;
  const bool polar = lev != nullptr;
  if (!has_avx512()) return 1;
  Args a{codes, scales, scale_kind, group, pairs, lev, cosv, sinv, phase_bits, nullptr, nullptr, nullptr, 0, c,
         nullptr, 0};
  using DequantFn = void (*)(const Args&, int64_t, int64_t, int64_t, void*);
  const DequantFn fn = polar ? (bf16 ? avx512_dequant_rows<true, true> : avx512_dequant_rows<true, false>)
                             : (bf16 ? avx512_dequant_rows<false, true> : avx512_dequant_rows<false, false>);
  at::parallel_for(o0, o1, 8, [&](int64_t r0, int64_t r1) { fn(a, r0, r1, o0, out); });
  return 0;
}

// The whole layer from the raw rfft `uv` (M, n / 2 + 1, 2) of x / d: packed weighted input, product, low-rank
// term (lr_in (rank2, n + 2 - n % 2) and lr_out_t (rank2, m), both null at rank 0), bias (null for none).
// Same return codes as llava_fa_lut_gemv.
extern "C" int64_t llava_fa_fourier_linear(const uint8_t* codes, const void* scales, int64_t scale_kind,
                                           int64_t group, const float* pairs, const float* lev, const float* cosv,
                                           const float* sinv, int64_t phase_bits, const float* uv, int64_t rows,
                                           int64_t n, float* y, int64_t m, const float* lr_in, const float* lr_out_t,
                                           int64_t rank2, const float* bias, int64_t variant) {
  if (n < 2 || rows < 0 || rank2 < 0) return 2;
  const int64_t full = n / 2 + 1, c = n % 2 == 0 ? n / 2 : full;
  std::vector<float> x(2 * rows * c);
  for (int64_t b = 0; b < rows; ++b) {
    const float* u = uv + b * 2 * full;
    float* xb = x.data() + b * 2 * c;
    xb[0] = u[0];
    xb[1] = n % 2 == 0 ? u[2 * (n / 2)] : 0.f;
    for (int64_t i = 2; i < 2 * c; ++i) xb[i] = 2.f * u[i];
  }
  std::vector<float> t;
  Epilogue e;
  if (lr_in != nullptr && lr_out_t != nullptr && rank2 > 0) {
    t.resize(rows * rank2);
    for (int64_t b = 0; b < rows; ++b) {
      for (int64_t j = 0; j < rank2; ++j) t[b * rank2 + j] = dot(lr_in + j * 2 * full, uv + b * 2 * full, 2 * full);
    }
    e.t = t.data();
    e.lr_out_t = lr_out_t;
    e.rank2 = rank2;
  }
  e.bias = bias;
  Args a{codes, scales, scale_kind, group, pairs, lev, cosv, sinv, phase_bits, x.data(), nullptr, nullptr, rows, c,
         y, m};
  return run(a, variant, e);
}

// 1 when llava_fa_rfft takes length n (its plan is then built and cached), else 0.
extern "C" int64_t llava_fa_rfft_supports(int64_t n) { return plan_for(n) != nullptr ? 1 : 0; }

// The orthonormal rfft of x * inv (inv null: x) for `rows` rows of even length n into uv (rows, n / 2 + 1, 2).
// Returns 0, or 3 when this FFT does not take n (odd, or an odd factor of n / 2 above kMaxOddFactor).
extern "C" int64_t llava_fa_rfft(const float* x, const float* inv, int64_t rows, int64_t n, float* uv) {
  const auto plan = plan_for(n);
  if (plan == nullptr || rows < 0) return 3;
  rfft_rows(*plan, x, inv, rows, uv);
  return 0;
}

// llava_fa_fourier_linear from x itself ((rows, n) float32, inv the (n,) float32 1 / d or null): the rfft above,
// then the layer. Returns its codes, or 3 when the FFT does not take n.
extern "C" int64_t llava_fa_fourier_linear_x(const uint8_t* codes, const void* scales, int64_t scale_kind,
                                             int64_t group, const float* pairs, const float* lev, const float* cosv,
                                             const float* sinv, int64_t phase_bits, const float* x, const float* inv,
                                             int64_t rows, int64_t n, float* y, int64_t m, const float* lr_in,
                                             const float* lr_out_t, int64_t rank2, const float* bias, int64_t variant) {
  const auto plan = plan_for(n);
  if (plan == nullptr || rows < 0) return 3;
  std::vector<float> uv(rows * (n + 2));
  rfft_rows(*plan, x, inv, rows, uv.data());
  return llava_fa_fourier_linear(codes, scales, scale_kind, group, pairs, lev, cosv, sinv, phase_bits, uv.data(),
                                 rows, n, y, m, lr_in, lr_out_t, rank2, bias, variant);
}
"""

__all__ = ["SOURCE"]
