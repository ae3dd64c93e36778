#pragma once
// The credit module through Thrust (exec::thrust): step returns, anchor-state groups, GiGPO and
// SALT written against Thrust primitives and run on the CPU by thrust::omp::par:
//
//     grouping (trajectories, episode groups, anchor states, graph nodes)   stable sort by key
//     group statistics of both GiGPO levels                                 reduce by key (thrust/outcome.hpp)
//     step returns                                                          segmented reverse scan
//                                                                           (inclusive_scan_by_key over the
//                                                                           affine maps x -> r + gamma x)
//
// The GiGPO and SALT pipelines are the host's (credit/gigpo.hpp, credit/salt.hpp) with the
// operations above plugged in, so the two paths differ only where the arithmetic order does:
//   - step returns: a sequential scan (the OMP and CPP systems) performs the host's operations in
//     the host's order: bitwise equal. A parallel scan (CUDA) reassociates the affine maps: within
//     a few ulp per step of trajectory length.
//   - GiGPO: the group sums of reduce_by_key may be associated differently from the host's fixed
//     8-lane order: within 1e-12 relative in double (as advantage::grpo's Thrust path).
//   - SALT: node means are plain sums in first-occurrence order on both paths: bitwise equal.
// Data must be host-accessible (see thrust/exec.hpp).

#include <cstdint>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <thrust/binary_search.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/reverse_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/scan.h>

#include "../credit/gigpo.hpp"
#include "../credit/returns.hpp"
#include "../credit/salt.hpp"
#include "exec.hpp"
#include "groups.hpp"
#include "outcome.hpp"

namespace posttrain::credit {
namespace detail {

template <class TP>
struct thrust_ops {
    TP base;
    grouping_result group(id_view ids) const { return grouping::from_ids(exec::thrust(base), ids); }
    template <class In, class Out>
    group_stats_result grpo(tensor_view<const In, 1> values, const grouping_result& g, tensor_view<Out, 1> out,
                            const advantage::grpo_options& o) const {
        return advantage::grpo(exec::thrust(base), values, g, out, o);
    }
    template <class Body>
    void each(index_t n, Body&& body) const {
        ::thrust::for_each(base, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n), body);
    }
};

// x -> b + a x, composed along the scan: the earlier element (later step) first.
struct affine {
    double a, b;
};
struct compose_affine {
    POSTTRAIN_HD affine operator()(const affine& x, const affine& y) const { return {x.a * y.a, y.b + y.a * x.b}; }
};
template <class R>
struct step_map {
    const R* reward;
    index_t stride;
    const index_t* rows;
    double gamma;
    POSTTRAIN_HD affine operator()(index_t j) const { return {gamma, static_cast<double>(reward[rows[j] * stride])}; }
};
template <class Out>
struct write_return {
    const affine* scanned;
    const index_t* rows;
    Out* out;
    index_t stride;
    POSTTRAIN_HD void operator()(index_t j) const { out[rows[j] * stride] = static_cast<Out>(scanned[j].b); }
};

template <class TP, class R, class Out>
void thrust_step_returns(const TP& p, tensor_view<const R, 1> r, const trajectory_layout& t, tensor_view<Out, 1> out, double gamma) {
    const index_t n = r.extent(0);
    if (n == 0) return;
    // Positions in trajectory order; the scan runs over them backwards, restarting at each trajectory.
    std::vector<affine> scanned(static_cast<std::size_t>(n));
    auto maps = ::thrust::make_transform_iterator(::thrust::counting_iterator<index_t>(0),
                                                  step_map<R>{r.data(), r.stride(0), t.rows.data(), gamma});
    std::vector<index_t> seg(static_cast<std::size_t>(n));  // the trajectory of each position
    ::thrust::upper_bound(p, t.offsets.begin() + 1, t.offsets.end(), ::thrust::counting_iterator<index_t>(0),
                          ::thrust::counting_iterator<index_t>(n), seg.begin());
    ::thrust::inclusive_scan_by_key(p, seg.rbegin(), seg.rend(), ::thrust::make_reverse_iterator(maps + n), scanned.rbegin(),
                                    ::thrust::equal_to<index_t>(), compose_affine{});
    ::thrust::for_each(p, ::thrust::counting_iterator<index_t>(0), ::thrust::counting_iterator<index_t>(n),
                       write_return<Out>{scanned.data(), t.rows.data(), out.data(), out.stride(0)});
}

}  // namespace detail

// step_returns(exec::thrust(thrust::omp::par), steps, returns, options): as the host overload.
template <class TP, class R, class Returns>
step_returns_result step_returns(const exec::thrust_policy<TP>& policy, const step_records<R>& steps, Returns&& returns,
                                 const step_returns_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    constexpr const char* fn = "posttrain::credit::step_returns";
    auto out = detail::prepare_step_returns(steps, returns, options, fn);
    const detail::thrust_ops<TP> ops{policy.base};
    const detail::trajectory_layout t =
        detail::make_trajectories(steps, options.order, [&](id_view ids) { return ops.group(ids); }, fn);
    std::visit([&](auto o) { detail::thrust_step_returns(policy.base, steps.reward, t, o, options.gamma); }, out);
    return {t.count()};
}

// anchor_state_groups(exec::thrust(...), steps): as the host overload.
template <class TP, class R>
grouping_result anchor_state_groups(const exec::thrust_policy<TP>& policy, const step_records<R>& steps) {
    posttrain::detail::check_host_thrust_policy<TP>();
    detail::check_records(steps, "posttrain::credit::anchor_state_groups", false);
    return detail::anchor_groups_with(detail::thrust_ops<TP>{policy.base}, steps);
}

// gigpo(exec::thrust(...), steps, episode_returns, step_returns, advantages, options): as the host overload.
template <class TP, class R, class Episode, class StepReturns, class Advantages>
    requires(!std::is_same_v<std::remove_cvref_t<Advantages>, gigpo_options>)
gigpo_result gigpo(const exec::thrust_policy<TP>& policy, const step_records<R>& steps, const Episode& episode_returns,
                   const StepReturns& step_returns, Advantages&& advantages, const gigpo_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    constexpr const char* fn = "posttrain::credit::gigpo";
    return detail::visit_gigpo(
        [&](auto e, auto r, auto a) { return detail::gigpo_core(detail::thrust_ops<TP>{policy.base}, steps, e, r, a, options, fn); },
        episode_returns, step_returns, advantages, fn);
}

// gigpo(exec::thrust(...), steps, episode_returns, advantages, options): step returns from steps.reward.
template <class TP, class R, class Episode, class Advantages>
gigpo_result gigpo(const exec::thrust_policy<TP>& policy, const step_records<R>& steps, const Episode& episode_returns,
                   Advantages&& advantages, const gigpo_options& options = {}) {
    step_returns_options ro;
    ro.gamma = options.gamma;
    ro.order = options.order;
    ro.nonfinite_rewards = options.nonfinite_returns;
    std::vector<double> returns(static_cast<std::size_t>(steps.size()));
    static_cast<void>(credit::step_returns(policy, steps, returns, ro));
    return gigpo(policy, steps, episode_returns, returns, std::forward<Advantages>(advantages), options);
}

// salt(exec::thrust(...), steps, trajectory_advantages, advantages, options): as the host overload.
template <class TP, class R, class TrajectoryAdvantages, class Advantages>
salt_graph salt(const exec::thrust_policy<TP>& policy, const step_records<R>& steps, const TrajectoryAdvantages& trajectory_advantages,
                Advantages&& advantages, const salt_options& options = {}) {
    posttrain::detail::check_host_thrust_policy<TP>();
    constexpr const char* fn = "posttrain::credit::salt";
    return std::visit(
        [&](auto ta, auto out) { return detail::salt_core(detail::thrust_ops<TP>{policy.base}, steps, ta, out, options, fn); },
        posttrain::detail::floating_input<1>(trajectory_advantages, {fn, "trajectory_advantages"}),
        posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::credit
