#pragma once
// GRPO pass@k on the GPU: the exec::cuda overloads of advantage::grpo_passk.
//
//     pt::advantage::grpo_passk(pt::exec::cuda.on(stream), d_rewards, pt::uniform_groups{8}, d_advantages,
//                               pt::advantage::passk_options::verl());
//
// A team of lanes per group (cuda/group_team.cuh) finds the best row (the first in group order
// among equal maxima), the runner-up value, and under norm_by_std the group's sample std (double,
// two passes), then writes the gap to the best row and 0 elsewhere. Rewards and advantages are
// float or double device views or DLPack tensors on a CUDA device; groups uniform_groups, ragged
// device offsets or a device_permuted_groups. Asynchronous on the policy's stream; no scratch
// (passk_workspace_bytes returns 0). Values equal the host's except for the summation order of the
// std (a few ulps); the best row and the gap are exact. Run-to-run deterministic.
//
// Status bits (the host would throw): status_nonfinite_input (nonfinite::raise and a NaN/inf reward:
// computed as under nonfinite::propagate, where a NaN makes its whole group NaN),
// status_singleton_group (singleton::error and a ragged singleton: it gets NaN),
// status_invalid_groups (invalid device offsets: those groups are skipped). The `stats` overload
// adds the group_stats_result counters (groups, empty, singleton; pass@k has no zero-variance or
// ignored rows) into stats[5] on the device.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/passk.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/group_team.cuh"
#include "passk.hpp"

namespace posttrain::advantage {

namespace detail {

template <class In, class Out>
struct passk_body {
    team_io<In, Out> io;
    passk_options o;  // trivially copyable: no containers

    template <int L, class Layout>
    __device__ void operator()(int lane, bool has, index_t /*g*/, index_t begin, index_t end, const Layout& layout) const {
        const index_t n = has ? end - begin : 0;
        const auto src = layout.rows_at(io.x, io.xs, begin);
        const auto dst = layout.rows_at(io.y, io.ys, begin);
        // Pass 1: the best row, the sum (for the mean), NaN and non-finite rows.
        double best = 0, sum = 0;
        index_t at = -1;
        bool nan = false, nonfinite = false;
        for (index_t j = lane; j < n; j += L) {
            const double v = static_cast<double>(src.load(j));
            nan |= v != v;
            nonfinite |= !(v - v == v - v);
            sum += v;
            if (at < 0 || v > best) {  // rows in increasing order: strict > keeps the first maximum
                best = v;
                at = j;
            }
        }
        team_argmax<L>(best, at);
        sum = team_sum<L>(sum, nullptr);
        nan = team_any<L>(nan);
        nonfinite = team_any<L>(nonfinite);
        // Pass 2: the runner-up value and the squared deviations.
        double second = -__builtin_huge_val(), m2 = 0;
        const double mean = n > 0 ? sum / static_cast<double>(n) : 0.0;
        for (index_t j = lane; j < n; j += L) {
            const double v = static_cast<double>(src.load(j));
            if (j != at && v > second) second = v;
            const double d = v - mean;
            m2 += d * d;
        }
        second = team_max<L>(second);
        if (o.norm_by_std) m2 = team_sum<L>(m2, nullptr);
        // Pass 3: the gap to the best row, 0 elsewhere (NaN everywhere in a group holding a NaN).
        std::uint32_t bits = 0;
        double gap = (best - second);
        if (n >= 2 && o.norm_by_std) gap /= sqrt(m2 / static_cast<double>(n - 1)) + o.epsilon;
        if (n == 1) {
            gap = 0;  // singleton::zero
            if (o.singleton_groups == singleton::raw) gap = best;
            if (o.singleton_groups == singleton::nan) gap = quiet_nan();
            if (o.singleton_groups == singleton::error) {
                gap = quiet_nan();
                bits |= status_singleton_group;
            }
        }
        for (index_t j = lane; j < n; j += L) {
            const double out = nan && n >= 2 ? quiet_nan() : j == at ? gap : 0.0;
            dst.store(j, static_cast<Out>(out));
        }
        if (has && lane == 0)
            io.finish_group(bits, nonfinite, n == 0 ? group_empty : n == 1 ? group_singleton : group_regular);
    }
};

template <class Rewards, class Groups, class Advantages>
void run_passk_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                    const passk_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::grpo_passk";
    auto rv = posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1, device_space>(advantages, {fn, "advantages"});
    check_counters(stats, fn);
    std::visit(
        [&](auto r, auto a) {
            const auto info = checked_device_layout(policy, groups, r, a, stats, options.singleton_groups, fn);
            const passk_body<typename decltype(r)::value_type, typename decltype(a)::value_type> body{
                make_team_io(r, a, options.nonfinite_rewards, policy, stats), options};
            launch_team_per_group(policy, body, info, r.extent(0), fn);
        },
        rv, av);
}

}  // namespace detail

inline std::size_t passk_workspace_bytes(index_t /*rows*/, const passk_options& /*options*/ = {}) noexcept { return 0; }

template <class Rewards, class Groups, class Advantages>
void grpo_passk(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                const passk_options& options = {}) {
    detail::run_passk_cuda(policy, rewards, groups, advantages, options, {});
}

// As above, and adds the group_stats_result counters into stats[5] on the device.
template <class Rewards, class Groups, class Advantages>
void grpo_passk(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                const passk_options& options, device_view<index_t, 1> stats) {
    detail::run_passk_cuda(policy, rewards, groups, advantages, options, stats);
}

}  // namespace posttrain::advantage
