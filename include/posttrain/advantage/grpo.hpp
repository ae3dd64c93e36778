#pragma once
// GRPO outcome advantages (and Dr. GRPO, LitePPO batch scaling, leave-one-out baselines):
//     A_i = (r_i - mu_g) / (sigma_g + epsilon)      sigma: group std, batch std, or 1 (scale::none)
// over any group layout. See docs/algorithms/grpo.md.

#include <cmath>
#include <memory>
#include <variant>

#include "common.hpp"
#include "grpo_math.hpp"

#if defined(__AVX512F__) && !defined(POSTTRAIN_NO_SIMD)
#include <immintrin.h>
#endif

namespace posttrain::advantage {

struct grpo_options {
    scale std_scale = scale::group;
    double epsilon = 1e-6;                       // added to the std, outside the square root
    posttrain::ddof ddof = posttrain::ddof::sample;
    bool leave_one_out = false;                  // baseline = mean of the other rows of the group
    singleton singleton_groups = singleton::zero;
    zero_variance zero_variance_groups = zero_variance::zero;
    nonfinite nonfinite_rewards = nonfinite::raise;
    statistics stats = statistics::float64;
    bool float32_singleton_std = false;          // verl: a singleton's std is the float32 tensor 1.0, so 1 + eps rounds in float32
    bool float32_bessel = false;                 // TRL nanstd: the factor count/(count-1) is a float32 (int64 tensor division)

    // verl compute_grpo_outcome_advantage (loop form); norm_by_std = norm_adv_by_std_in_grpo.
    static constexpr grpo_options verl(bool norm_by_std = true, double eps = 1e-6) {
        grpo_options o;
        o.std_scale = norm_by_std ? scale::group : scale::none;
        o.epsilon = eps;
        o.singleton_groups = singleton::raw;
        o.zero_variance_groups = zero_variance::arithmetic;
        o.nonfinite_rewards = nonfinite::propagate;
        o.float32_singleton_std = true;
        return o;
    }
    // verl compute_grpo_vectorized_outcome_advantage (group_mean_std in float32, variance floored at eps).
    static constexpr grpo_options verl_vectorized(bool norm_by_std = true, double eps = 1e-6) {
        grpo_options o = verl(norm_by_std, eps);
        o.stats = statistics::float32_one_pass;
        return o;
    }
    // TRL GRPOTrainer, scale_rewards = "group" | "batch" | "none" (eps 1e-4, NaN rewards are unscorable).
    static constexpr grpo_options trl(scale s = scale::group) {
        grpo_options o;
        o.std_scale = s;
        o.epsilon = 1e-4;
        o.float32_bessel = true;
        o.singleton_groups = singleton::zero;  // NaN std, then nan_to_num -> 0
        o.zero_variance_groups = zero_variance::arithmetic;
        o.nonfinite_rewards = nonfinite::ignore;
        return o;
    }
    // OpenRLHF group_norm: (r - mean) / (std + 1e-9); dr_grpo / reinforce_baseline use scale::none.
    static constexpr grpo_options openrlhf(bool norm_by_std = true) {
        grpo_options o;
        o.std_scale = norm_by_std ? scale::group : scale::none;
        o.epsilon = 1e-9;
        o.singleton_groups = singleton::nan;
        o.zero_variance_groups = zero_variance::arithmetic;
        o.nonfinite_rewards = nonfinite::propagate;
        return o;
    }
    // Dr. GRPO (Liu et al. 2025): centre only.
    static constexpr grpo_options dr_grpo() {
        grpo_options o;
        o.std_scale = scale::none;
        return o;
    }
};

namespace detail {

// Standard deviation from the sum of squared deviations of `count` values, with the options' ddof
// (TRL's float32 Bessel factor when asked).
inline double std_from_m2(double m2, double count, const grpo_options& o) {
    if (o.float32_bessel && o.ddof == posttrain::ddof::sample)
        return std::sqrt((m2 / count) * double(float(count) / float(count - 1)));
    return std::sqrt(m2 / (count - double(static_cast<int>(o.ddof))));
}

inline double singleton_denominator(const grpo_options& o) {
    if (o.float32_singleton_std) return static_cast<double>(1.0f + static_cast<float>(o.epsilon));
    return 1.0 + o.epsilon;
}

// Standard deviation over all valid rewards of the batch (scale::batch), in fixed order.
template <class Policy, class In>
double batch_std(const Policy& p, tensor_view<const In, 1> r, const grpo_options& o) {
    const bool skip = o.nonfinite_rewards == nonfinite::ignore;
    struct acc {
        double sum = 0;
        index_t count = 0;
    };
    const index_t n = r.extent(0);
    const acc s = posttrain::detail::chunked_reduce(
        p, n, acc{},
        [&](index_t lo, index_t hi) {
            acc a;
            a.sum = posttrain::detail::fixed_order_sum(hi - lo, [&](index_t j) {
                const double v = r(lo + j);
                return (skip && v != v) ? 0.0 : v;
            });
            for (index_t j = lo; j < hi; ++j) a.count += !(skip && r(j) != r(j));
            return a;
        },
        [](acc a, acc b) { return acc{a.sum + b.sum, a.count + b.count}; });
    const double mean = s.count > 0 ? s.sum / double(s.count) : 0.0;
    const double m2 = posttrain::detail::chunked_reduce(
        p, n, 0.0,
        [&](index_t lo, index_t hi) {
            return posttrain::detail::fixed_order_sum(hi - lo, [&](index_t j) {
                const double v = r(lo + j);
                const double d = v - mean;
                return (skip && v != v) ? 0.0 : d * d;
            });
        },
        [](double a, double b) { return a + b; });
    const double dof = double(s.count) - double(static_cast<int>(o.ddof));
    return dof > 0 ? std_from_m2(m2, double(s.count), o) : std::nan("");
}

// Per-block group statistics for the blocked kernel. The statistics passes run over every group of
// a block without branches, so that compilers can vectorize them (across groups when the size is a
// compile-time constant). The order of every sum is fixed_order_sum's, so results do not depend on
// which form runs.
struct block_moments {
    static constexpr index_t capacity = 32;
    double sum[capacity], mean[capacity], m2[capacity];
    double sample_std[capacity];      // sqrt(m2 / (n - 1)): std_from_m2 for ddof::sample
    unsigned char differs[capacity];  // some value differs from the group's first
};

// Groups of K consecutive rows (K a multiple of 8): groups [first, count) of the block starting at x.
template <index_t K, class In>
void uniform_block_moments_portable(const In* x, index_t first, index_t count, block_moments& m) {
    static_assert(K % 8 == 0);
    for (index_t i = first; i < count; ++i) {
        const In* v = x + i * K;
        double acc[8] = {};
        for (index_t j = 0; j < K; j += 8)
            for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(v[j + l]);
        m.sum[i] = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    }
    for (index_t i = first; i < count; ++i) {
        const In* v = x + i * K;
        unsigned differs = 0;  // an integer OR vectorizes where a bool AND does not
        for (index_t j = 1; j < K; ++j) differs |= unsigned(v[j] != v[0]);
        m.differs[i] = static_cast<unsigned char>(differs);
        m.mean[i] = m.sum[i] / double(K);
    }
    for (index_t i = first; i < count; ++i) {
        const In* v = x + i * K;
        const double mu = m.mean[i];
        double acc[8] = {};
        for (index_t j = 0; j < K; j += 8)
            for (int l = 0; l < 8; ++l) {
                const double d = static_cast<double>(v[j + l]) - mu;
                acc[l] += d * d;
            }
        m.m2[i] = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        m.sample_std[i] = std::sqrt(m.m2[i] / double(K - 1));
    }
}

#if defined(__AVX512F__) && !defined(POSTTRAIN_NO_SIMD)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_pd(), which -Wuninitialized reports.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512 {
// Transposes the 8x8 doubles held in rows r[0..7].
inline void transpose(__m512d r[8]) noexcept {
    const __m512d t0 = _mm512_unpacklo_pd(r[0], r[1]), t1 = _mm512_unpackhi_pd(r[0], r[1]);
    const __m512d t2 = _mm512_unpacklo_pd(r[2], r[3]), t3 = _mm512_unpackhi_pd(r[2], r[3]);
    const __m512d t4 = _mm512_unpacklo_pd(r[4], r[5]), t5 = _mm512_unpackhi_pd(r[4], r[5]);
    const __m512d t6 = _mm512_unpacklo_pd(r[6], r[7]), t7 = _mm512_unpackhi_pd(r[6], r[7]);
    const __m512i pairs_lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const __m512i pairs_hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    const __m512d u0 = _mm512_permutex2var_pd(t0, pairs_lo, t2), u1 = _mm512_permutex2var_pd(t1, pairs_lo, t3);
    const __m512d u2 = _mm512_permutex2var_pd(t0, pairs_hi, t2), u3 = _mm512_permutex2var_pd(t1, pairs_hi, t3);
    const __m512d u4 = _mm512_permutex2var_pd(t4, pairs_lo, t6), u5 = _mm512_permutex2var_pd(t5, pairs_lo, t7);
    const __m512d u6 = _mm512_permutex2var_pd(t4, pairs_hi, t6), u7 = _mm512_permutex2var_pd(t5, pairs_hi, t7);
    const __m512i halves_lo = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
    const __m512i halves_hi = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
    r[0] = _mm512_permutex2var_pd(u0, halves_lo, u4);
    r[1] = _mm512_permutex2var_pd(u1, halves_lo, u5);
    r[2] = _mm512_permutex2var_pd(u2, halves_lo, u6);
    r[3] = _mm512_permutex2var_pd(u3, halves_lo, u7);
    r[4] = _mm512_permutex2var_pd(u0, halves_hi, u4);
    r[5] = _mm512_permutex2var_pd(u1, halves_hi, u5);
    r[6] = _mm512_permutex2var_pd(u2, halves_hi, u6);
    r[7] = _mm512_permutex2var_pd(u3, halves_hi, u7);
}

// fixed_order_sum's combination of the lanes, for eight groups at once (one group per vector lane).
inline __m512d combine_lanes(const __m512d c[8]) noexcept {
    return _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(c[0], c[4]), _mm512_add_pd(c[2], c[6])),
                         _mm512_add_pd(_mm512_add_pd(c[1], c[5]), _mm512_add_pd(c[3], c[7])));
}
}  // namespace avx512
#endif

// out[j] = (v[j] - mean) * factor for one group; AVX-512 takes a float group of 16 in one register
// (the same operations, so the same bits).
template <class In, class Out>
inline void write_affine(const In* v, Out* out, index_t n, double mean, double factor) {
#if defined(__AVX512F__) && !defined(POSTTRAIN_NO_SIMD)
    if constexpr (std::is_same_v<In, float> && std::is_same_v<Out, float>) {
        if (n == 16) {
            const __m512 row = _mm512_loadu_ps(v);
            const __m512d mu = _mm512_set1_pd(mean), f = _mm512_set1_pd(factor);
            const __m512d lo = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(row)), mu), f);
            const __m512d hi = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(row, 1)), mu), f);
            _mm256_storeu_ps(out, _mm512_cvtpd_ps(lo));
            _mm256_storeu_ps(out + 8, _mm512_cvtpd_ps(hi));
            return;
        }
    }
#endif
    for (index_t j = 0; j < n; ++j) out[j] = static_cast<Out>((double(v[j]) - mean) * factor);
}

// The statistics of groups [0, count) of a block. For float groups of 16 rows with AVX-512, eight
// groups at a time: each group's eight accumulators are one vector, a transpose puts one group per
// lane, and the lanes are combined in fixed_order_sum's order. The same additions in the same
// order, so the same bits as the portable form.
template <index_t K, class In>
void uniform_block_moments(const In* x, index_t count, block_moments& m) {
    index_t first = 0;
#if defined(__AVX512F__) && !defined(POSTTRAIN_NO_SIMD)
    if constexpr (K == 16 && std::is_same_v<In, float>) {
        for (; first + 8 <= count; first += 8) {
            const float* v = x + first * K;
            __m512d lo[8], hi[8], acc[8];
            unsigned differs = 0;
            for (int g = 0; g < 8; ++g) {
                const __m512 row = _mm512_loadu_ps(v + 16 * g);
                differs = _mm512_cmp_ps_mask(row, _mm512_set1_ps(v[16 * g]), _CMP_NEQ_UQ);
                m.differs[first + g] = static_cast<unsigned char>((differs & 0xfffe) != 0);
                lo[g] = _mm512_cvtps_pd(_mm512_castps512_ps256(row));
                hi[g] = _mm512_cvtps_pd(_mm512_extractf32x8_ps(row, 1));
                acc[g] = _mm512_add_pd(_mm512_add_pd(_mm512_setzero_pd(), lo[g]), hi[g]);
            }
            avx512::transpose(acc);
            const __m512d sum = avx512::combine_lanes(acc);
            const __m512d mean = _mm512_div_pd(sum, _mm512_set1_pd(double(K)));
            _mm512_storeu_pd(m.sum + first, sum);
            _mm512_storeu_pd(m.mean + first, mean);
            for (int g = 0; g < 8; ++g) {
                const __m512d mu = _mm512_set1_pd(m.mean[first + g]);
                const __m512d a = _mm512_sub_pd(lo[g], mu), b = _mm512_sub_pd(hi[g], mu);
                acc[g] = _mm512_add_pd(_mm512_add_pd(_mm512_setzero_pd(), _mm512_mul_pd(a, a)), _mm512_mul_pd(b, b));
            }
            avx512::transpose(acc);
            const __m512d m2 = avx512::combine_lanes(acc);
            _mm512_storeu_pd(m.m2 + first, m2);
            _mm512_storeu_pd(m.sample_std + first, _mm512_sqrt_pd(_mm512_div_pd(m2, _mm512_set1_pd(double(K - 1)))));
        }
    }
#endif
    uniform_block_moments_portable<K>(x, first, count, m);
}
#if defined(__AVX512F__) && !defined(POSTTRAIN_NO_SIMD) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Groups of any sizes (consecutive rows from x + begin(g)). A block whose groups all have one of
// the common sizes (the usual case: a fixed number of samples per prompt, grouped by id) takes the
// uniform form; the statistics are the same either way.
template <class In, class Layout>
void ragged_block_moments(const In* x, const Layout& layout, index_t g0, index_t count, block_moments& m) {
    const index_t first_size = count > 0 ? layout.size(g0) : 0;
    bool same_size = true;
    for (index_t i = 1; i < count; ++i) same_size &= layout.size(g0 + i) == first_size;
    if (same_size && count > 0) {
        const In* block_x = x + layout.rows(g0).begin;  // consecutive groups of CSR offsets are adjacent
        switch (first_size) {
            case 8: return uniform_block_moments<8>(block_x, count, m);
            case 16: return uniform_block_moments<16>(block_x, count, m);
            case 32: return uniform_block_moments<32>(block_x, count, m);
            case 64: return uniform_block_moments<64>(block_x, count, m);
            default: break;
        }
    }
    for (index_t i = 0; i < count; ++i) {
        const index_t n = layout.size(g0 + i);
        const In* v = x + layout.rows(g0 + i).begin;
        m.sum[i] = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return static_cast<double>(v[j]); });
        unsigned differs = 0;
        for (index_t j = 1; j < n; ++j) differs |= unsigned(v[j] != v[0]);
        m.differs[i] = static_cast<unsigned char>(differs);
        m.mean[i] = n > 0 ? m.sum[i] / double(n) : 0.0;
        const double mu = m.mean[i];
        m.m2[i] = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
            const double d = static_cast<double>(v[j]) - mu;
            return d * d;
        });
        m.sample_std[i] = std::sqrt(m.m2[i] / double(n - 1));
    }
}

// The fast path for the common case: groups of consecutive rows, unit strides, float64 statistics,
// NaN not ignored. Groups are taken in blocks: the statistics of a whole block first (branch-free
// passes), then each group's scale from its statistics and the options, then the writes. Every group
// gets the general kernel's arithmetic: out = (r - mean) * factor.
template <class Policy, class In, class Out, class Layout, class General, class OnNonfinite>
void grpo_blocked(const Policy& p, const In* x, Out* y, const Layout& layout, const grpo_options& options,
                  double batch_sigma, std::vector<unsigned char>& kind, General&& general, OnNonfinite&& on_nonfinite) {
    constexpr index_t block = block_moments::capacity;
    // Local copies: the kernel's stores (and unsigned char stores in particular) may alias anything
    // reached through a reference, which would force the compiler to reload the options after each.
    const grpo_options o = options;
    const index_t groups = layout.num_groups();
    auto run = [&](auto moments) {
        posttrain::detail::for_blocks(p, (groups + block - 1) / block, 16 * block, [&](index_t lo, index_t hi) {
            block_moments m;
            for (index_t b = lo; b < hi; ++b) {
                const index_t g0 = b * block, count = std::min(groups - g0, block);
                moments(g0, count, m);
                double factor[block];
                unsigned char mode[block];  // 0 affine, 1 zeros, 2 general kernel, 3 raw singleton
                unsigned char kinds[block] = {};
                for (index_t i = 0; i < count; ++i) {
                    const index_t n = layout.size(g0 + i);
                    mode[i] = 0;
                    if (n == 0) {
                        kinds[i] = 1;
                        mode[i] = 1;
                    } else if (!numeric::is_finite(m.sum[i])) {  // a non-finite value, or an overflowing sum
                        if (o.nonfinite_rewards == nonfinite::raise) {
                            const In* v = x + layout.rows(g0 + i).begin;
                            for (index_t j = 0; j < n; ++j)
                                if (!numeric::is_finite(v[j])) on_nonfinite();  // throws, naming the first bad index
                        }
                        mode[i] = 2;
                    } else if (n == 1) {
                        kinds[i] = 2;
                        if (o.singleton_groups == singleton::raw) {
                            mode[i] = 3;  // r / denominator, divided as the general kernel does
                            factor[i] = o.std_scale == scale::group ? singleton_denominator(o)
                                        : o.std_scale == scale::batch ? batch_sigma + o.epsilon : 1.0;
                        } else {
                            mode[i] = o.singleton_groups == singleton::zero ? 1 : 2;
                        }
                    } else if (!m.differs[i] && o.zero_variance_groups == zero_variance::zero) {
                        kinds[i] = 3;
                        mode[i] = 1;
                    } else {
                        if (!m.differs[i]) kinds[i] = 3;
                        const bool plain_sample = o.ddof == posttrain::ddof::sample && !o.float32_bessel;
                        const double sigma = o.std_scale != scale::group ? batch_sigma
                                             : plain_sample          ? m.sample_std[i]  // the same sqrt(m2 / (n - 1))
                                                                     : std_from_m2(m.m2[i], double(n), o);
                        const double denom = o.std_scale == scale::none ? 1.0 : sigma + o.epsilon;
                        const double loo = o.leave_one_out ? double(n) / double(n - 1) : 1.0;
                        factor[i] = loo / denom;
                    }
                }
                // Before the writes: the general kernel records its own groups' kinds.
                for (index_t i = 0; i < count; ++i) kind[std::size_t(g0 + i)] = kinds[i];
                for (index_t i = 0; i < count; ++i) {
                    const index_t g = g0 + i, n = layout.size(g), begin = layout.rows(g).begin;
                    if (mode[i] == 2) {
                        general(g, layout.rows(g), n);
                        continue;
                    }
                    Out* out = y + begin;
                    const In* v = x + begin;
                    if (mode[i] == 1) {
                        for (index_t j = 0; j < n; ++j) out[j] = Out(0);
                    } else if (mode[i] == 3) {
                        out[0] = static_cast<Out>(double(v[0]) / factor[i]);
                    } else {
                        write_affine(v, out, n, m.mean[i], factor[i]);
                    }
                }
            }
        });
    };
    if constexpr (std::is_same_v<Layout, posttrain::detail::group_layout<uniform_groups>>) {
        // Common uniform sizes as compile-time constants: the statistics vectorize across groups.
        auto constant = [&](auto k) {
            constexpr index_t K = decltype(k)::value;
            run([&](index_t g0, index_t count, block_moments& m) { uniform_block_moments<K>(x + g0 * K, count, m); });
        };
        switch (layout.k) {
            case 8: return constant(std::integral_constant<index_t, 8>{});
            case 16: return constant(std::integral_constant<index_t, 16>{});
            case 32: return constant(std::integral_constant<index_t, 32>{});
            case 64: return constant(std::integral_constant<index_t, 64>{});
            default: break;
        }
    }
    run([&](index_t g0, index_t count, block_moments& m) { ragged_block_moments(x, layout, g0, count, m); });
}

template <class Policy, class In, class Out, class Layout>
group_stats_result grpo_impl(const Policy& p, tensor_view<const In, 1> r, const Layout& layout,
                             tensor_view<Out, 1> a, const grpo_options& o, const char* fn = "posttrain::advantage::grpo") {
    const bool skip_nan = o.nonfinite_rewards == nonfinite::ignore;
    if constexpr (std::is_same_v<Layout, posttrain::detail::group_layout<permuted_groups>>) {
        // Rows grouped through a permutation: gather the rewards into group order once, run the
        // contiguous kernel over the CSR offsets, and scatter the advantages back. Two passes of
        // independent random accesses instead of random accesses in every pass of the kernel.
        if (!skip_nan && o.stats == statistics::float64) {
            if (o.nonfinite_rewards == nonfinite::raise) check_finite(r, {fn, "rewards"});
            const index_t n = r.extent(0);
            const index_t* perm = layout.p.permutation.data();
            // Fully overwritten scratch: not value-initialised.
            const auto grouped = std::make_unique_for_overwrite<In[]>(static_cast<std::size_t>(n));
            const auto grouped_out = std::make_unique_for_overwrite<Out[]>(static_cast<std::size_t>(n));
            posttrain::detail::for_blocks(p, n, 1, [&](index_t lo, index_t hi) {
                for (index_t j = lo; j < hi; ++j) grouped[std::size_t(j)] = r(perm[j]);
            });
            grpo_options finite = o;
            finite.nonfinite_rewards = nonfinite::propagate;  // checked above, against the caller's row numbers
            const posttrain::detail::group_layout<ragged_groups<index_t>> csr{layout.p.offsets};
            const group_stats_result res = grpo_impl(p, tensor_view<const In, 1>(grouped.get(), n), csr,
                                                     tensor_view<Out, 1>(grouped_out.get(), n), finite, fn);
            posttrain::detail::for_blocks(p, n, 1, [&](index_t lo, index_t hi) {
                for (index_t j = lo; j < hi; ++j) a(perm[j]) = grouped_out[std::size_t(j)];
            });
            return res;
        }
    }
    const index_t groups = layout.num_groups();
    std::vector<unsigned char> kind(static_cast<std::size_t>(groups), 0);  // 1 empty, 2 singleton, 3 zero-var
    constexpr bool contiguous_layout = !std::is_same_v<Layout, posttrain::detail::group_layout<permuted_groups>>;
    const bool blocked = contiguous_layout && !skip_nan && o.stats == statistics::float64 && r.stride(0) == 1 &&
                         a.stride(0) == 1;
    // The blocked path finds non-finite values as it goes; the others look first.
    if (o.nonfinite_rewards == nonfinite::raise && !blocked) check_finite(r, {fn, "rewards"});
    const double batch_sigma = o.std_scale == scale::batch ? batch_std(p, r, o) : 0.0;

    with_accessors(r, a, [&](auto x, auto y) {
        auto general = [&](index_t g, auto rows, index_t n) {
            auto& k = kind[static_cast<std::size_t>(g)];
            if (n == 0) {
                k = 1;
                return;
            }
            group_buffer buffer;
            const double* v = buffer.gather(x, rows, n);
            // verl's float32 statistics; singletons take the common path below (mean 0, std 1 there too).
            if (o.stats == statistics::float32_one_pass && n > 1) {
                outcome_params f32;  // what float32_one_pass_transform reads (the option checks left no more)
                f32.std_scale = o.std_scale;
                f32.epsilon = o.epsilon;
                f32.zero_variance_groups = o.zero_variance_groups;
                const outcome_transform t = float32_one_pass_transform(f32, n, values_at{v});
                if (t.kind == group_zero_variance) k = 3;
                for (index_t j = 0; j < n; ++j) y(rows(j), t(v[j]));
                return;
            }
            const group_moments m = skip_nan ? moments_of<true>(v, n) : moments_of<false>(v, n);
            auto write_all = [&](double value) {
                for (index_t j = 0; j < n; ++j) y(rows(j), value);
            };
            if (m.count == 0) {
                k = 1;
                write_all(0.0);
                return;
            }
            if (m.count == 1) {
                k = 2;
                double value = 0;
                if (o.singleton_groups == singleton::nan) value = std::nan("");
                if (o.singleton_groups == singleton::error)
                    posttrain::detail::raise_invalid_argument(fn, "groups",
                                                              "group " + str(g) + " has a single row (singleton::error)");
                for (index_t j = 0; j < n; ++j) {
                    if (skip_nan && v[j] != v[j]) {
                        y(rows(j), 0.0);
                        continue;
                    }
                    double out = value;
                    if (o.singleton_groups == singleton::raw) {
                        if (o.std_scale == scale::group) out = v[j] / singleton_denominator(o);
                        else if (o.std_scale == scale::batch) out = v[j] / (batch_sigma + o.epsilon);
                        else out = v[j];
                    }
                    y(rows(j), out);
                }
                return;
            }
            if (m.constant) {
                k = 3;
                if (o.zero_variance_groups == zero_variance::zero) {
                    write_all(0.0);
                    return;
                }
            }
            const double sigma = o.std_scale == scale::group ? std_from_m2(m.m2, double(m.count), o) : batch_sigma;
            // (r - mean) / 1 is exact, so scale::none shares the division with the scaled forms.
            const double denom = o.std_scale == scale::none ? 1.0 : sigma + o.epsilon;
            // Leave-one-out: r - (S - r)/(n-1) = n/(n-1) * (r - mean).
            const double loo = o.leave_one_out ? double(m.count) / double(m.count - 1) : 1.0;
            // One rounding for the factor, one for the product: within an ulp of (r - mean) / denom,
            // and the per-element loop stays free of divisions.
            const double factor = loo / denom;
            const double mean = m.mean;
            if (skip_nan) {
                for (index_t j = 0; j < n; ++j) y(rows(j), v[j] != v[j] ? 0.0 : (v[j] - mean) * factor);
            } else {
                for (index_t j = 0; j < n; ++j) y(rows(j), (v[j] - mean) * factor);
            }
        };
        if constexpr (contiguous_layout) {
            if (blocked) {
                grpo_blocked(p, r.data(), a.data(), layout, o, batch_sigma, kind, general,
                             [&] { check_finite(r, {fn, "rewards"}); });
                return;
            }
        }
        for_each_group(p, layout, r.extent(0), general);
    });

    group_stats_result res;
    res.groups = groups;
    for (unsigned char k : kind) {
        res.empty_groups += k == 1;
        res.singleton_groups += k == 2;
        res.zero_variance_groups += k == 3;
    }
    if (skip_nan)
        for (index_t i = 0; i < r.extent(0); ++i) res.ignored_rows += r(i) != r(i);
    return res;
}

}  // namespace detail

namespace detail {
// The option checks of every backend.
inline void check_grpo_options(const grpo_options& options, const char* fn) {
    require(options.epsilon >= 0, {fn, "options.epsilon"}, "must be >= 0, found " + std::to_string(options.epsilon));
    if (options.stats == statistics::float32_one_pass)
        require(!options.leave_one_out && options.std_scale != scale::batch &&
                    options.nonfinite_rewards != nonfinite::ignore && options.ddof == posttrain::ddof::sample,
                {fn, "options.stats"},
                "statistics::float32_one_pass reproduces verl's group_mean_std only: it takes scale::group or "
                "scale::none, ddof::sample, no leave_one_out and no nonfinite::ignore");
}

// The public entry shared by grpo and rloo: adapts the arguments, validates them, runs the kernel.
template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result grpo_entry(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                              const grpo_options& options, const char* fn) {
    check_grpo_options(options, fn);
    auto rv = posttrain::detail::floating_input<1>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1>(advantages, {fn, "advantages"});
    return std::visit(
        [&](auto r, auto a) {
            check_outcome_args(r, a, nonfinite::propagate, fn);  // grpo_impl checks finiteness
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            return grpo_impl(policy, r, layout, a, options, fn);
        },
        rv, av);
}
}  // namespace detail

// GRPO advantages of rewards[N] under a group layout, written to advantages[N] (float or double,
// any adapted tensor). Returns counts of empty, singleton and zero-variance groups.
template <class Policy, class Rewards, class Groups, class Advantages>
group_stats_result grpo(const Policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                        const grpo_options& options = {}) {
    static_assert(host_policy<Policy>,
                  "posttrain::advantage::grpo: this overload runs on the host; include <posttrain/advantage/grpo.cuh> for exec::cuda");
    return detail::grpo_entry(policy, rewards, groups, std::forward<Advantages>(advantages), options,
                              "posttrain::advantage::grpo");
}

struct group_mean_std_options {
    double epsilon = 1e-6;  // variance floor in statistics::float32_one_pass
    posttrain::ddof ddof = posttrain::ddof::sample;
    statistics stats = statistics::float64;
    bool singleton_unit = true;  // a group of one row reports mean 0, std 1 (verl); else mean r, std NaN/0

    static constexpr group_mean_std_options verl(double eps = 1e-6) {
        group_mean_std_options o;
        o.epsilon = eps;
        o.stats = statistics::float32_one_pass;
        return o;
    }
};

namespace detail {
// The outputs of group_mean_std (host and CUDA entries): one entry per group each, apart from the
// rewards and from one another (groups write their entries while other groups still read rewards).
template <class R, class M, class S, class C>
void check_group_mean_std_views(const R& r, const M& m, const S& s, const C& c, index_t groups, const char* fn) {
    check_extent(m.extent(0), groups, {fn, "mean"}, "one entry per group:");
    check_extent(s.extent(0), groups, {fn, "std"}, "one entry per group:");
    check_extent(c.extent(0), groups, {fn, "count"}, "one entry per group:");
    check_no_alias(m, r, {fn, "mean"}, "rewards");
    check_no_alias(s, r, {fn, "std"}, "rewards");
    check_no_alias(c, r, {fn, "count"}, "rewards");
    check_no_alias(s, m, {fn, "std"}, "mean");
    check_no_alias(c, m, {fn, "count"}, "mean");
    check_no_alias(c, s, {fn, "count"}, "std");
}
}  // namespace detail

// Per-group mean, std and count (outputs have one entry per group). With singleton_unit, groups of
// zero or one row report mean 0, std 1 (verl); otherwise their std is NaN (too few rows), as torch's.
template <class Policy, class Rewards, class Groups, class Mean, class Std, class Count>
void group_mean_std(const Policy& policy, const Rewards& rewards, const Groups& groups, Mean&& mean, Std&& std_out,
                    Count&& count, const group_mean_std_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::group_mean_std: host policy expected");
    constexpr const char* fn = "posttrain::advantage::group_mean_std";
    auto rv = posttrain::detail::floating_input<1>(rewards, {fn, "rewards"});
    auto mv = posttrain::detail::floating_output<1>(mean, {fn, "mean"});
    auto sv = posttrain::detail::floating_output<1>(std_out, {fn, "std"});
    auto cv = posttrain::detail::floating_output<1>(count, {fn, "count"});
    std::visit(
        [&](auto r, auto m, auto s, auto c) {
            detail::check_finite(r, {fn, "rewards"});
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            detail::check_group_mean_std_views(r, m, s, c, layout.num_groups(), fn);
            posttrain::detail::check_apart_from_layout(groups, m, fn, "mean");
            posttrain::detail::check_apart_from_layout(groups, s, fn, "std");
            posttrain::detail::check_apart_from_layout(groups, c, fn, "count");
            const detail::strided_reader<typename decltype(r)::value_type> x{r.data(), r.stride(0)};
            detail::for_each_group(policy, layout, r.extent(0), [&](index_t g, auto rows, index_t n) {
                double mu = 0, sd = 1;
                if (options.stats == statistics::float32_one_pass && (n > 1 || options.singleton_unit)) {
                    detail::group_buffer buffer;
                    const auto st = detail::float32_one_pass_stats(n, options.epsilon, detail::values_at{buffer.gather(x, rows, n)});
                    mu = st.mean;
                    sd = st.std;
                } else if (n > 1 || !options.singleton_unit) {
                    detail::group_buffer buffer;
                    const auto mo = detail::moments_of<false>(buffer.gather(x, rows, n), n);
                    const double dof = double(n) - double(static_cast<int>(options.ddof));
                    mu = mo.mean;
                    sd = dof > 0 ? std::sqrt(mo.m2 / dof) : std::nan("");  // too few rows: NaN, as torch
                }
                using M = typename decltype(m)::value_type;
                using S = typename decltype(s)::value_type;
                using C = typename decltype(c)::value_type;
                m(g) = static_cast<M>(mu);
                s(g) = static_cast<S>(sd);
                c(g) = static_cast<C>(n);
            });
        },
        rv, mv, sv, cv);
}

}  // namespace posttrain::advantage
