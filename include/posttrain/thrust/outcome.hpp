#pragma once
// GRPO and RLOO through Thrust (exec::thrust): segmented reductions by key over any group layout
// (uniform, ragged, permuted / grouping_result), written once in the shape a GPU runs and executed
// on the CPU by thrust::omp::par. The per-group arithmetic is grpo_math.hpp, as on every backend;
// argument checks and exceptions are those of the host overloads (the data is host memory).
//
//     positions j = 0..N-1 in group order; rows[j] the row at j; seg[j] its group
//     pass 1  reduce_by_key(seg, partial(r[rows[j]]))   -> count/sum/min/max per group
//     pass 2  reduce_by_key(seg, (r - mean[seg])^2)      -> m2 per group (group std only)
//     pass 3  for_each j: a[rows[j]] = transform[seg[j]](r[rows[j]])
//
// statistics::float32_one_pass computes each group's float32 statistics in one sequential pass in
// group order (float32_one_pass_transform), which gives the host's values bit for bit.

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <thrust/binary_search.h>
#include <thrust/count.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/reduce.h>
#include <thrust/scatter.h>
#include <thrust/sequence.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include "../advantage/gpg.hpp"
#include "../advantage/grpo_params.hpp"
#include "../advantage/rloo.hpp"
#include "exec.hpp"
#include "groups.hpp"

namespace posttrain::advantage::detail {

template <class In>
struct gather_as_double {
    const In* x;
    index_t stride;
    const index_t* rows;
    POSTTRAIN_HD double operator()(index_t j) const { return static_cast<double>(x[rows[j] * stride]); }
};

struct to_partial {
    bool skip_nan;
    POSTTRAIN_HD outcome_partial operator()(double v) const {
        outcome_partial p;
        p.add(v, skip_nan);
        return p;
    }
};

struct sq_dev_of {
    double mean;
    bool skip_nan;
    POSTTRAIN_HD double operator()(double v) const { return outcome_sq_dev(v, mean, skip_nan); }
};

struct sq_dev_in_group {
    const double* vals;
    const index_t* seg;
    const outcome_partial* stats;
    bool skip_nan;
    POSTTRAIN_HD double operator()(index_t j) const {
        return outcome_sq_dev(vals[j], outcome_mean(stats[seg[j]]), skip_nan);
    }
};

struct group_transform_of {
    outcome_params params;
    const outcome_partial* stats;
    const double* m2;
    const double* vals;       // in group order
    const index_t* offsets;   // of the groups in vals
    POSTTRAIN_HD outcome_transform operator()(index_t g) const {
        const index_t n = offsets[g + 1] - offsets[g];
        if (params.float32_one_pass && n > 1) return float32_one_pass_transform(params, n, values_at{vals + offsets[g]});
        return make_outcome_transform(params, finish_moments(stats[g], m2[g]));
    }
};

template <class Out>
struct write_row {
    const outcome_transform* t;
    const index_t* seg;
    const double* vals;
    const index_t* rows;
    Out* y;
    index_t stride;
    POSTTRAIN_HD void operator()(index_t j) const {
        const outcome_transform& tg = t[seg[j]];
        y[rows[j] * stride] = tg.template output<Out>(tg(vals[j]));
    }
};

struct is_nan_value {
    POSTTRAIN_HD bool operator()(double v) const { return v != v; }
};

// Whether row i of a strided input is non-zero (a NaN is, as in torch).
template <class In>
struct nonzero_at {
    const In* x;
    index_t stride;
    POSTTRAIN_HD bool operator()(index_t i) const { return x[i * stride] != In(0); }
};

// Segmented reduction whose result lands at each group's index (groups with no row keep `init`).
template <class TP, class ValueIt, class T, class Op>
std::vector<T> reduce_per_group(const TP& p, const std::vector<index_t>& seg, ValueIt values, index_t groups, T init,
                                Op op) {
    std::vector<T> out(static_cast<std::size_t>(groups), init);
    std::vector<index_t> keys(seg.size());
    std::vector<T> sums(seg.size());
    const auto ends = ::thrust::reduce_by_key(p, seg.begin(), seg.end(), values, keys.begin(), sums.begin(),
                                              ::thrust::equal_to<index_t>(), op);
    ::thrust::scatter(p, sums.begin(), ends.second, keys.begin(), out.begin());
    return out;
}

template <class TP, class In, class Out, class Layout>
group_stats_result thrust_outcome(const TP& p, tensor_view<const In, 1> r, const Layout& layout, tensor_view<Out, 1> a,
                                  outcome_params params, const char* fn) {
    const index_t n = r.extent(0);
    const index_t groups = layout.num_groups();
    group_stats_result res;
    res.groups = groups;
    if (groups == 0) return res;

    // Group order: offsets, the row at each position, the group of each position.
    std::vector<index_t> offsets(static_cast<std::size_t>(groups) + 1, 0);
    for (index_t g = 0; g < groups; ++g) offsets[std::size_t(g) + 1] = offsets[std::size_t(g)] + layout.size(g);
    std::vector<index_t> rows(static_cast<std::size_t>(n));
    if constexpr (std::is_same_v<Layout, posttrain::detail::group_layout<permuted_groups>>)
        ::thrust::copy(p, layout.p.permutation.data(), layout.p.permutation.data() + n, rows.begin());
    else
        ::thrust::sequence(p, rows.begin(), rows.end(), index_t{0});
    std::vector<index_t> seg(static_cast<std::size_t>(n));
    ::thrust::upper_bound(p, offsets.begin() + 1, offsets.end(), ::thrust::counting_iterator<index_t>(0),
                          ::thrust::counting_iterator<index_t>(n), seg.begin());
    std::vector<double> vals(static_cast<std::size_t>(n));
    ::thrust::transform(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n), vals.begin(),
                        gather_as_double<In>{r.data(), r.stride(0), rows.data()});

    const bool skip = params.skip_nan;
    const auto stats = reduce_per_group(p, seg, ::thrust::make_transform_iterator(vals.begin(), to_partial{skip}), groups,
                                        outcome_partial{}, outcome_partial_combine{});
    std::vector<double> m2(static_cast<std::size_t>(groups), 0.0);
    if (params.std_scale == scale::group)
        m2 = reduce_per_group(p, seg,
                              ::thrust::make_transform_iterator(::thrust::counting_iterator<index_t>(0),
                                                                sq_dev_in_group{vals.data(), seg.data(), stats.data(), skip}),
                              groups, 0.0, ::thrust::plus<double>());
    if (params.std_scale == scale::batch) {
        const outcome_partial all = ::thrust::transform_reduce(p, vals.begin(), vals.end(), to_partial{skip},
                                                               outcome_partial{}, outcome_partial_combine{});
        const double mean = outcome_mean(all);
        const double ss = ::thrust::transform_reduce(p, vals.begin(), vals.end(), sq_dev_of{mean, skip}, 0.0,
                                                     ::thrust::plus<double>());
        params.batch_sigma = batch_sigma_of(params, all, ss);
    }

    std::vector<outcome_transform> t(static_cast<std::size_t>(groups));
    ::thrust::transform(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(groups), t.begin(),
                        group_transform_of{params, stats.data(), m2.data(), vals.data(), offsets.data()});
    for (index_t g = 0; g < groups; ++g)
        if (t[std::size_t(g)].singleton_error)
            posttrain::detail::raise_invalid_argument(fn, "groups",
                                                      "group " + posttrain::detail::str(g) + " has a single row (singleton::error)");
    ::thrust::for_each(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n),
                       write_row<Out>{t.data(), seg.data(), vals.data(), rows.data(), a.data(), a.stride(0)});

    for (const auto& tg : t) {
        res.empty_groups += tg.kind == group_empty;
        res.singleton_groups += tg.kind == group_singleton;
        res.zero_variance_groups += tg.kind == group_zero_variance;
    }
    if (skip) res.ignored_rows = ::thrust::count_if(p, vals.begin(), vals.end(), is_nan_value{});
    return res;
}

template <class TP, class Rewards, class Groups, class Advantages>
group_stats_result run_outcome_thrust(const TP& p, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                                      const outcome_params& params, nonfinite nonfinite_rewards, const char* fn) {
    posttrain::detail::check_host_thrust_policy<TP>();
    auto rv = posttrain::detail::floating_input<1>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1>(advantages, {fn, "advantages"});
    return std::visit(
        [&](auto r, auto a) {
            check_outcome_args(r, a, nonfinite_rewards, fn);
            const auto layout = posttrain::detail::make_layout(groups, r.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages");
            return thrust_outcome(p, r, layout, a, params, fn);
        },
        rv, av);
}

}  // namespace posttrain::advantage::detail

namespace posttrain::advantage {

// grpo(exec::thrust(thrust::omp::par), rewards, groups, advantages, options): as the host overload.
template <class TP, class Rewards, class Groups, class Advantages>
group_stats_result grpo(const exec::thrust_policy<TP>& policy, const Rewards& rewards, const Groups& groups,
                        Advantages&& advantages, const grpo_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::grpo";
    return detail::run_outcome_thrust(policy.base, rewards, groups, advantages, detail::grpo_params(options, fn),
                                      options.nonfinite_rewards, fn);
}

// gpg(exec::thrust(thrust::omp::par), rewards, groups, advantages, options): as the host overload;
// the centring is GRPO's reductions, the gain (gpg_gain, from a count_if of the non-zero rewards) the
// shared transform's, as on CUDA.
template <class TP, class Rewards, class Groups, class Advantages>
group_stats_result gpg(const exec::thrust_policy<TP>& policy, const Rewards& rewards, const Groups& groups,
                       Advantages&& advantages, const gpg_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::gpg";
    detail::check_gpg_options(options, fn);
    detail::outcome_params params = detail::grpo_params(detail::gpg_centring(options), fn);
    return std::visit(
        [&](auto r) {
            using In = typename decltype(r)::value_type;
            const index_t n = r.extent(0);
            index_t nonzero = 0;
            if (options.alpha == 0.0)
                nonzero = static_cast<index_t>(::thrust::count_if(policy.base, ::thrust::counting_iterator<index_t>(0),
                                                                  ::thrust::counting_iterator<index_t>(n),
                                                                  detail::nonzero_at<In>{r.data(), r.stride(0)}));
            params.gain = detail::gpg_gain(options.alpha, options.f_norm, options.float32_alpha, n, nonzero);
            return detail::run_outcome_thrust(policy.base, r, groups, advantages, params, options.nonfinite_rewards, fn);
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}));
}

// rloo(exec::thrust(thrust::omp::par), rewards, groups, advantages, options): as the host overload.
template <class TP, class Rewards, class Groups, class Advantages>
group_stats_result rloo(const exec::thrust_policy<TP>& policy, const Rewards& rewards, const Groups& groups,
                        Advantages&& advantages, const rloo_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::rloo";
    return detail::run_outcome_thrust(policy.base, rewards, groups, advantages,
                                      detail::grpo_params(detail::as_grpo(options), fn), options.nonfinite_rewards, fn);
}

}  // namespace posttrain::advantage
