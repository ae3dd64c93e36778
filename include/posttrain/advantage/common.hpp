#pragma once
// Vocabulary shared by the outcome-advantage family: policies for singleton, zero-variance and
// non-finite groups, and the host driver that runs a per-group kernel over any group layout.

#include <cmath>
#include <string>
#include <variant>

#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/numeric.hpp"
#include "../core/result.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain::advantage {

// What a group with exactly one (valid) row gives.
enum class singleton {
    zero,        // advantage 0 (posttrain's default: one sample carries no relative signal)
    raw,         // the group is given mean 0 and std 1, so the advantage is the reward itself (verl loop)
    nan,         // the arithmetic of an unbiased std of one value: NaN (TRL before nan_to_num)
    error,       // throw invalid_argument (verl grpo_passk)
};

// What a group of >= 2 rows whose rewards are all equal (max == min exactly) gives.
enum class zero_variance {
    zero,        // advantage exactly 0 (posttrain's default; independent of rounding)
    arithmetic,  // whatever the formula computes (frameworks; may leave 1-ulp residues)
};

// How NaN and infinite rewards are treated.
enum class nonfinite {
    raise,       // throw invalid_argument naming the first bad index (default)
    propagate,   // compute as IEEE arithmetic does (a NaN poisons its group)
    ignore,      // NaN rewards are missing: excluded from statistics, their advantage is 0 (TRL)
};

// Which denominator scales the centred reward.
enum class scale {
    group,       // the group's std (GRPO)
    batch,       // the std of every reward in the batch (LitePPO, TRL scale_rewards="batch")
    none,        // no scaling (Dr. GRPO)
};

// Precision and formula of the group statistics.
enum class statistics {
    float64,            // double accumulation, two-pass variance (posttrain)
    float32_one_pass,   // float32 sums, var = (S2 - S1^2/n)/max(n-1,1), std = sqrt(max(var, epsilon)):
                        // verl's vectorized group_mean_std, reproduced for parity
};

namespace detail {

using posttrain::detail::where;
using posttrain::detail::require;
using posttrain::detail::str;

// Throws if x holds a non-finite value, naming the first bad index.
template <class T, int R>
void check_finite(tensor_view<const T, R> x, where w) {
    if constexpr (std::is_floating_point_v<T>) {
        if constexpr (R == 1) {
            for (index_t i = 0; i < x.extent(0); ++i)
                if (!numeric::is_finite(x(i)))
                    posttrain::detail::raise_invalid_argument(
                        w.function, w.argument,
                        "non-finite value " + std::to_string(double(x(i))) + " at index " + str(i) +
                            " (set nonfinite::propagate or nonfinite::ignore to allow it)");
        } else if constexpr (R == 2) {
            for (index_t i = 0; i < x.extent(0); ++i)
                for (index_t t = 0; t < x.extent(1); ++t)
                    if (!numeric::is_finite(x(i, t)))
                        posttrain::detail::raise_invalid_argument(
                            w.function, w.argument,
                            "non-finite value " + std::to_string(double(x(i, t))) + " at index [" + str(i) + ", " +
                                str(t) + "] (set nonfinite::propagate to allow it)");
        }
    }
}

// Outputs may not overlap inputs: results are written while inputs are still being read.
template <class T, int R, class U, int Q>
void check_no_alias(tensor_view<T, R> out, tensor_view<U, Q> in, where out_arg, const char* in_name) {
    require(!views_overlap(out, in), out_arg,
            std::string("the output overlaps the input '") + in_name + "'; pass a separate buffer");
}

inline void check_extent(index_t found, index_t expected, where w, const char* what) {
    require(found == expected, w,
            std::string("expected ") + what + " " + str(expected) + ", found " + str(found));
}

// Runs kernel(g, rows, n) for every group of the layout; groups are independent, so any policy
// gives the same bits.
template <class Policy, class Layout, class Kernel>
void for_each_group(const Policy& p, const Layout& layout, index_t rows_total, Kernel&& kernel) {
    const index_t groups = layout.num_groups();
    const index_t cost = groups > 0 ? rows_total / groups + 1 : 1;
    posttrain::detail::for_blocks(p, groups, cost, [&](index_t lo, index_t hi) {
        for (index_t g = lo; g < hi; ++g) kernel(g, layout.rows(g), layout.size(g));
    });
}

// Reads element rows(j) of a 1-D view as double; unit-stride views get their own instantiation.
template <class T>
struct unit_reader {
    const T* p;
    double operator()(index_t i) const noexcept { return static_cast<double>(p[i]); }
};
template <class T>
struct strided_reader {
    const T* p;
    index_t s;
    double operator()(index_t i) const noexcept { return static_cast<double>(p[i * s]); }
};
template <class T>
struct unit_writer {
    T* p;
    void operator()(index_t i, double v) const noexcept { p[i] = static_cast<T>(v); }
};
template <class T>
struct strided_writer {
    T* p;
    index_t s;
    void operator()(index_t i, double v) const noexcept { p[i * s] = static_cast<T>(v); }
};

// Calls f(reader, writer) with unit-stride accessors when both views allow it.
template <class In, class Out, class F>
decltype(auto) with_accessors(tensor_view<const In, 1> in, tensor_view<Out, 1> out, F&& f) {
    if (in.stride(0) == 1 && out.stride(0) == 1) return f(unit_reader<In>{in.data()}, unit_writer<Out>{out.data()});
    return f(strided_reader<In>{in.data(), in.stride(0)}, strided_writer<Out>{out.data(), out.stride(0)});
}

// Moments of one group, computed in a fixed order.
struct group_moments {
    index_t count = 0;      // valid rows
    double sum = 0;
    double mean = 0;
    double m2 = 0;          // sum of squared deviations from the mean
    bool constant = false;  // max == min over the valid rows
};

template <bool SkipNaN, class Reader, class Rows>
group_moments moments_of(const Reader& x, const Rows& rows, index_t n) {
    group_moments m;
    if constexpr (SkipNaN) {
        double lo = 0, hi = 0;
        for (index_t j = 0; j < n; ++j) {
            const double v = x(rows(j));
            if (v != v) continue;
            if (m.count == 0) lo = hi = v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            ++m.count;
        }
        m.sum = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
            const double v = x(rows(j));
            return v == v ? v : 0.0;
        });
        m.mean = m.count > 0 ? m.sum / double(m.count) : 0.0;
        m.m2 = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
            const double v = x(rows(j));
            const double d = v - m.mean;
            return v == v ? d * d : 0.0;
        });
        m.constant = m.count > 0 && lo == hi;
    } else {
        m.count = n;
        if (n == 0) return m;
        m.sum = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return x(rows(j)); });
        m.mean = m.sum / double(n);
        m.m2 = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
            const double d = x(rows(j)) - m.mean;
            return d * d;
        });
        // m2 == 0 exactly iff all values equal the (rounded) mean; otherwise compare to the first value.
        bool constant = true;
        const double first = x(rows(0));
        for (index_t j = 1; j < n; ++j) constant &= (x(rows(j)) == first);
        m.constant = constant;
    }
    return m;
}

}  // namespace detail
}  // namespace posttrain::advantage
