#pragma once
// Vocabulary shared by the outcome-advantage family: policies for singleton, zero-variance and
// non-finite groups, and the host driver that runs a per-group kernel over any group layout.

#include <cmath>
#include <string>
#include <variant>
#include <vector>

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

// Throws if x holds a non-finite value, naming the first bad index. The scan is a vectorizable
// NaN-propagating sum of x * 0 (inf * 0 and NaN * 0 are NaN); the index is searched only on failure.
template <class T, int R>
void check_finite(tensor_view<const T, R> x, where w) {
    if constexpr (std::is_floating_point_v<T>) {
        const index_t rows = x.extent(0), cols = R == 2 ? x.extent(1) : 1;
        const double probe = posttrain::detail::fixed_order_sum(rows, [&](index_t i) {
            if constexpr (R == 1) return double(x(i)) * 0.0;
            else return posttrain::detail::fixed_order_sum(cols, [&](index_t t) { return double(x(i, t)) * 0.0; });
        });
        if (probe == 0.0) return;
        for (index_t i = 0; i < rows; ++i)
            for (index_t t = 0; t < cols; ++t) {
                double v = 0;
                if constexpr (R == 1) v = double(x(i));
                else v = double(x(i, t));
                if (numeric::is_finite(v)) continue;
                const std::string at = R == 1 ? str(i) : "[" + str(i) + ", " + str(t) + "]";
                posttrain::detail::raise_invalid_argument(
                    w.function, w.argument,
                    "non-finite value " + std::to_string(v) + " at index " + at +
                        " (set nonfinite::propagate or nonfinite::ignore to allow it)");
            }
    }
}

// Outputs may not overlap inputs: results are written while inputs are still being read. Host and
// device views alike (S: both in one memory space; the CUDA paths check their device views here).
template <class T, int R, class U, int Q, class S>
void check_no_alias(tensor_view<T, R, S> out, tensor_view<U, Q, S> in, where out_arg, const char* in_name) {
    require(!views_overlap(out, in), out_arg,
            std::string("the output overlaps the input '") + in_name + "'; pass a separate buffer");
}

// An output may be the input itself (the same elements in the same order: an in-place update where
// each element is read before it is written) but may not partly overlap it. Host and device views.
template <class T, int R, class U, int Q, class S>
void check_same_or_disjoint(tensor_view<T, R, S> out, tensor_view<U, Q, S> in, where out_arg, const char* in_name) {
    bool same = false;
    if constexpr (R == Q && std::is_same_v<std::remove_const_t<T>, std::remove_const_t<U>>) {
        same = static_cast<const void*>(out.data()) == static_cast<const void*>(in.data());
        for (int d = 0; d < R && same; ++d) same = out.extent(d) == in.extent(d) && out.stride(d) == in.stride(d);
    }
    require(same || !views_overlap(out, in), out_arg,
            std::string("the output partly overlaps the input '") + in_name + "'; pass the same view or a separate buffer");
}

inline void check_extent(index_t found, index_t expected, where w, const char* what) {
    require(found == expected, w,
            std::string("expected ") + what + " " + str(expected) + ", found " + str(found));
}

// Validates the common arguments of a rewards[N] -> advantages[N] group algorithm.
template <class In, class Out>
void check_outcome_args(tensor_view<const In, 1> r, tensor_view<Out, 1> a, nonfinite policy, const char* fn) {
    check_extent(a.extent(0), r.extent(0), {fn, "advantages"}, "length (one advantage per reward)");
    check_no_alias(a, r, {fn, "advantages"}, "rewards");
    if (policy == nonfinite::raise) check_finite(r, {fn, "rewards"});
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

// Moments of n values gathered into a contiguous buffer. SkipNaN leaves NaN values out of everything.
template <bool SkipNaN>
group_moments moments_of(const double* v, index_t n) {
    group_moments m;
    if (n == 0) return m;
    double lo = v[0], hi = v[0];
    if constexpr (SkipNaN) {
        index_t count = 0;
        for (index_t j = 0; j < n; ++j) {
            const bool ok = v[j] == v[j];
            count += ok;
            if (ok && (count == 1 || v[j] < lo)) lo = v[j];
            if (ok && (count == 1 || v[j] > hi)) hi = v[j];
        }
        m.count = count;
        m.sum = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return v[j] == v[j] ? v[j] : 0.0; });
    } else {
        bool nan = v[0] != v[0];
        for (index_t j = 1; j < n; ++j) {
            lo = v[j] < lo ? v[j] : lo;
            hi = v[j] > hi ? v[j] : hi;
            nan |= v[j] != v[j];
        }
        // Comparisons with NaN are false, so a NaN anywhere must be ruled out explicitly: a group
        // holding a NaN is never "constant" (under nonfinite::propagate the NaN reaches its results).
        if (nan) hi = std::nan("");
        m.count = n;
        m.sum = posttrain::detail::fixed_order_sum(n, [&](index_t j) { return v[j]; });
    }
    m.mean = m.count > 0 ? m.sum / double(m.count) : 0.0;
    const double mean = m.mean;
    m.m2 = posttrain::detail::fixed_order_sum(n, [&](index_t j) {
        const double d = v[j] - mean;
        if constexpr (SkipNaN) return v[j] == v[j] ? d * d : 0.0;
        else return d * d;
    });
    m.constant = m.count > 0 && lo == hi;
    return m;
}

// A group's values gathered into contiguous doubles: on the stack for small groups, else in a
// per-thread buffer. Gathering once makes the statistics passes contiguous whatever the layout.
class group_buffer {
public:
    template <class Reader, class Rows>
    const double* gather(const Reader& x, const Rows& rows, index_t n) {
        double* p = n <= index_t(small) ? local_ : heap(n);
        for (index_t j = 0; j < n; ++j) p[j] = x(rows(j));
        return p;
    }

private:
    static constexpr std::size_t small = 64;
    static double* heap(index_t n) {
        thread_local std::vector<double> big;
        if (big.size() < std::size_t(n)) big.resize(std::size_t(n));
        return big.data();
    }
    double local_[small];
};

}  // namespace detail
}  // namespace posttrain::advantage
