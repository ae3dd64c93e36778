#pragma once
// A deterministic double-precision exp, the same bits in its scalar and SIMD forms.
//
// The host's token_log_probs spends most of its time in exp (one per logit). std::exp is a scalar
// libm call (~5 ns) and its bits are libm's; this one is a fixed sequence of IEEE operations written
// once (exp_body) for a double and for a GCC/clang vector of eight doubles, so the vectorised loops
// and the portable ones give the same bits on every target:
//
//   k = round(x log2 e)                          (the 1.5 * 2^52 shifter: round to nearest even)
//   r = (x - k ln2_hi) - k ln2_lo                (Cody-Waite: k ln2_hi is exact, |r| <= 0.347)
//   exp(r) = 1 + (r + r^2 (1/2 + r Q(r)))        (Taylor to degree 13: truncation < 5e-18 relative;
//                                                 Q by Estrin's scheme)
//   exp(x) = exp(r) 2^k1 2^k2, k1 = floor(k/2), k2 = k - k1 (both factors normal for every k that
//            can occur, so subnormal results and overflow round once, in the last product)
//
// The argument is clamped to [-746, 710] first (exp(-746) rounds to 0, exp(710) to inf), which also
// keeps k in range; NaN is returned as NaN. Measured against a correctly rounded exp: at most 1 ulp
// (tests/logits/token_log_probs_test.cpp), with about 10% of results 1 ulp off (the rounding of r).
//
// Determinism needs every operation rounded on its own: GCC contracts a * b + c into one FMA under
// -march=native (its C++ default is -ffp-contract=fast, across statements too), which would change
// the bits with the target and between the scalar and vector forms. The host code of the logits
// module is therefore compiled with fp-contract=off (POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN/END around
// it; clang contracts only within one expression, and every step here is its own statement). On the
// device nvcc contracts as it likes: the CUDA path has its own bits (token_log_probs.cuh).

#include <cstdint>
#include <cstring>

#include "../config.hpp"

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && !defined(__INTEL_LLVM_COMPILER)
// (-Wpsabi: the eight-double vectors are passed between inline functions only, never across an ABI.)
#define POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN                                                      \
    _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")") _Pragma("GCC diagnostic push") \
        _Pragma("GCC diagnostic ignored \"-Wpsabi\"")
#define POSTTRAIN_LOGITS_NO_CONTRACT_END _Pragma("GCC diagnostic pop") _Pragma("GCC pop_options")
#elif defined(__clang__) && !defined(__CUDACC__)
// clang contracts only within one expression (-ffp-contract=on), and every step here is a statement.
#define POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wpsabi\"")
#define POSTTRAIN_LOGITS_NO_CONTRACT_END _Pragma("clang diagnostic pop")
#else
#define POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN
#define POSTTRAIN_LOGITS_NO_CONTRACT_END
#endif

// The SIMD form exists where GCC/clang vector extensions do (not in device compilations).
#if defined(__GNUC__) && !defined(__CUDACC__)
#define POSTTRAIN_LOGITS_SIMD 1
#else
#define POSTTRAIN_LOGITS_SIMD 0
#endif

POSTTRAIN_LOGITS_NO_CONTRACT_BEGIN

namespace posttrain::logits::detail {

#if POSTTRAIN_LOGITS_SIMD
// Eight doubles and eight 64-bit integers: one AVX-512 register, two AVX2 ones, four SSE2 ones; the
// lanes are independent, so the width of the hardware changes no bit.
typedef double d8 __attribute__((vector_size(8 * sizeof(double))));
typedef long long l8 __attribute__((vector_size(8 * sizeof(long long))));
typedef float f8 __attribute__((vector_size(8 * sizeof(float))));

inline l8 bits_of(const d8& x) noexcept {
    l8 r;
    std::memcpy(&r, &x, sizeof r);
    return r;
}
inline d8 double_of(const l8& x) noexcept {
    d8 r;
    std::memcpy(&r, &x, sizeof r);
    return r;
}
#endif

POSTTRAIN_HD inline long long bits_of(double x) noexcept {
#if defined(__CUDA_ARCH__)
    return __double_as_longlong(x);
#else
    long long r;
    std::memcpy(&r, &x, sizeof r);
    return r;
#endif
}
POSTTRAIN_HD inline double double_of(long long x) noexcept {
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(x);
#else
    double r;
    std::memcpy(&r, &x, sizeof r);
    return r;
#endif
}

// The one body of exp: D is double (I = long long) or d8 (I = l8). Comparisons and ?: are elementwise
// on vectors, so the text is the same for both. (Vectors by reference: a template instantiated at the
// end of a translation unit would otherwise warn -Wpsabi outside the pragma region.)
template <class D, class I>
POSTTRAIN_HD inline void exp_body(const D& x, D& out) noexcept {
    const D lo = D{} + -746.0, hi = D{} + 710.0;
    D c = x < lo ? lo : x;  // NaN stays NaN (both comparisons are false) and is restored at the end
    c = c > hi ? hi : c;
    constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
    const D scaled = c * 1.4426950408889634;         // log2(e)
    const D t = scaled + shifter;
    const D k = t - shifter;
    const I ki = bits_of(t) - bits_of(shifter);  // k as an integer, read from t's low mantissa bits
    const D khi = k * 6.93147180369123816490e-01;  // ln2_hi: 32 significant bits, k ln2_hi exact
    const D klo = k * 1.90821492927058770002e-10;  // ln2_lo = ln2 - ln2_hi
    const D r0 = c - khi;
    const D r = r0 - klo;
    // exp(r) = 1 + (r + r^2 (1/2 + r Q(r))), Q(r) = sum_(i=0..10) r^i / (i + 3)! by Estrin's scheme
    // (independent pairs combined with r^2, r^4, r^8: a short dependency chain), then the low-order
    // terms added to r before 1, so that the result is rounded essentially once, as 1 + (small).
    const D r2 = r * r;
    const D r4 = r2 * r2;
    const D r8 = r4 * r4;
    D q0 = r * 0.041666666666666664;  // 1/4!
    q0 = q0 + 0.16666666666666666;  // 1/3!
    D q1 = r * 0.001388888888888889;  // 1/6!
    q1 = q1 + 0.008333333333333333;  // 1/5!
    D q2 = r * 2.48015873015873e-05;  // 1/8!
    q2 = q2 + 0.0001984126984126984;  // 1/7!
    D q3 = r * 2.755731922398589e-07;  // 1/10!
    q3 = q3 + 2.7557319223985893e-06;  // 1/9!
    D q4 = r * 2.08767569878681e-09;  // 1/12!
    q4 = q4 + 2.505210838544172e-08;  // 1/11!
    const D q5 = D{} + 1.6059043836821613e-10;  // 1/13!
    D s0 = q1 * r2;
    s0 = s0 + q0;
    D s1 = q3 * r2;
    s1 = s1 + q2;
    D s2 = q5 * r2;
    s2 = s2 + q4;
    D t0 = s1 * r4;
    t0 = t0 + s0;
    D Q = s2 * r8;
    Q = Q + t0;
    D p = Q * r;
    p = p + 0.5;
    p = p * r2;
    p = p + r;
    p = p + 1.0;
    const I k1 = ki >> 1;  // floor(k / 2)
    const I k2 = ki - k1;
    const D f1 = double_of((k1 + 1023) << 52);
    const D f2 = double_of((k2 + 1023) << 52);
    const D y = p * f1;
    const D e = y * f2;
    out = x != x ? x : e;
}

// exp(x) for one double (host and device).
POSTTRAIN_HD inline double vexp(double x) noexcept {
    double r;
    exp_body<double, long long>(x, r);
    return r;
}

#if POSTTRAIN_LOGITS_SIMD
// exp of eight doubles: the bits of vexp in every lane. By reference: vectors passed by value change
// the ABI between instruction sets (-Wpsabi).
inline void vexp(const d8& x, d8& out) noexcept { exp_body<d8, l8>(x, out); }
#endif

}  // namespace posttrain::logits::detail

POSTTRAIN_LOGITS_NO_CONTRACT_END
