#pragma once
// Numeric helpers shared by host and device code: stable log-sigmoid / softplus, and the fixed-order
// summation every host reduction uses (so results never depend on the execution policy).

#include <cmath>
#include <cstring>
#include <limits>

#include "../config.hpp"
#include "view.hpp"

namespace posttrain {

// Delta degrees of freedom of a variance: 0 = population (biased), 1 = sample (Bessel, torch.std).
enum class ddof : int { population = 0, sample = 1 };

namespace numeric {

// softplus(x) = log(1 + exp(x)), exact for large |x| and without overflow.
template <class T>
POSTTRAIN_HD inline T softplus(T x) noexcept {
    using std::exp;
    using std::log1p;
    return x > T(0) ? x + log1p(exp(-x)) : log1p(exp(x));
}

// log(sigmoid(x)) = -softplus(-x).
template <class T>
POSTTRAIN_HD inline T log_sigmoid(T x) noexcept {
    return -softplus(-x);
}

template <class T>
POSTTRAIN_HD inline T sigmoid(T x) noexcept {
    using std::exp;
    if (x >= T(0)) return T(1) / (T(1) + exp(-x));
    const T e = exp(x);
    return e / (T(1) + e);
}

template <class T>
POSTTRAIN_HD inline bool is_finite(T x) noexcept {
    if constexpr (std::numeric_limits<T>::is_integer) return true;
    else return x - x == x - x;  // false for inf and NaN without relying on -ffast-math-sensitive isfinite
}

}  // namespace numeric

namespace detail {

// Sum of f(j) for j in [0, n) in a fixed order: eight interleaved accumulators (lane l takes j = l mod 8),
// combined pairwise. The order is part of posttrain's determinism contract; the lanes let the compiler
// vectorize without reassociating anything.
template <class F>
inline double fixed_order_sum(index_t n, F&& f) noexcept {
    constexpr int lanes = 8;
    double acc[lanes] = {};
    index_t j = 0;
    for (; j + lanes <= n; j += lanes)
        for (int l = 0; l < lanes; ++l) acc[l] += f(j + l);
    for (int l = 0; l < lanes && j < n; ++j, ++l) acc[l] += f(j);
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// The lanes of fixed_order_sum, for sums fed a chunk at a time: accumulate_lanes adds v[0..n) (n a
// multiple of 8) lane-wise, combine_lanes gives the total; together they reproduce fixed_order_sum's
// order and bits. Written with GCC/clang vector extensions so that it runs at SIMD speed whatever the
// auto-vectorizer does (the lanes are independent, so narrower hardware vectors change no bit).
inline void accumulate_lanes(double (&acc)[8], const double* v, index_t n) noexcept {
#if defined(__GNUC__) && !defined(__CUDACC__)
    typedef double lanes_t __attribute__((vector_size(8 * sizeof(double))));
    lanes_t a;
    std::memcpy(&a, acc, sizeof a);
    for (index_t j = 0; j + 8 <= n; j += 8) {
        lanes_t x;
        std::memcpy(&x, v + j, sizeof x);
        a += x;
    }
    std::memcpy(acc, &a, sizeof a);
#else
    for (index_t j = 0; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; ++l) acc[l] += v[j + l];
#endif
}
inline double combine_lanes(const double (&acc)[8]) noexcept {
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// fixed_order_sum over an array: the same order and bits, at SIMD speed.
inline double fixed_order_sum(const double* v, index_t n) noexcept {
    double acc[8] = {};
    const index_t blocked = n - n % 8;
    accumulate_lanes(acc, v, blocked);
    for (index_t j = blocked; j < n; ++j) acc[j - blocked] += v[j];
    return combine_lanes(acc);
}

inline bool is_nan(double x) noexcept { return x != x; }

// x, rounded to T and kept apart from the arithmetic around it. GCC's C++ default
// -ffp-contract=fast fuses a product into a following addition (one FMA, one rounding) whenever
// the target has FMA (-march=native), across statements too; the float32 forms must round every
// step as torch does, and the float64 forms should not change bits with the target either.
template <class T>
inline T rounded(T x) noexcept {
    volatile T kept = x;
    return kept;
}

// numpy's float64 add.reduce order (pairwise: eight accumulators over blocks of 128, halves above),
// for results that must be np.sum's / np.mean's bits (ArenaRL's anchor score, MMR1's mean self-BLEU).
inline double numpy_sum(const double* a, index_t n) {
    if (n < 8) {
        double r = 0.0;
        for (index_t i = 0; i < n; ++i) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        for (int k = 0; k < 8; ++k) r[k] = a[k];
        index_t i = 8;
        for (; i < n - n % 8; i += 8)
            for (int k = 0; k < 8; ++k) r[k] += a[i + k];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    index_t half = n / 2;
    half -= half % 8;
    return numpy_sum(a, half) + numpy_sum(a + half, n - half);
}

}  // namespace detail
}  // namespace posttrain
