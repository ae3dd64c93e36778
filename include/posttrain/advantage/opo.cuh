#pragma once
// OPO on the GPU: the exec::cuda overloads of advantage::opo.
//
//     pt::advantage::opo(pt::exec::cuda.on(stream), d_rewards, d_lengths, pt::uniform_groups{8}, d_advantages,
//                        pt::advantage::opo_options::verl());
//
// A team of lanes per group (cuda/group_team.cuh) sums len * r, len and r over its group (double),
// tells whether the group is constant, and writes r - b with the host's baseline b (length-weighted
// mean; the plain mean when every length is 0; the first reward for a constant group under
// zero_variance::zero; the singleton conventions). Rewards, lengths and advantages are float or
// double device views or DLPack tensors on a CUDA device; groups uniform_groups, ragged device
// offsets or a device_permuted_groups. Asynchronous on the policy's stream; no scratch
// (opo_workspace_bytes returns 0). Values equal the host's up to the summation order of the three
// sums; run-to-run deterministic.
//
// Status bits (the host would throw): status_nonfinite_input (a NaN/inf length, or a NaN/inf reward
// under nonfinite::raise: computed as IEEE arithmetic propagates it), status_invalid_value (a
// negative length: used as it is), status_singleton_group (singleton::error and a ragged
// singleton: NaN), status_invalid_groups (invalid device offsets: those groups are skipped). The
// `stats` overload adds the group_stats_result counters into stats[5] on the device.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/opo.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/group_team.cuh"
#include "opo.hpp"

namespace posttrain::advantage {

namespace detail {

template <class In, class Len, class Out>
struct opo_body {
    team_io<In, Out> io;
    const Len* len;
    index_t ls;
    opo_options o;

    template <int L, class Layout>
    __device__ void operator()(int lane, bool has, index_t /*g*/, index_t begin, index_t end, const Layout& layout) const {
        const index_t n = has ? end - begin : 0;
        const auto rewards = layout.rows_at(io.x, io.xs, begin);
        const auto lengths = layout.rows_at(len, ls, begin);
        const auto dst = layout.rows_at(io.y, io.ys, begin);
        const double first = n > 0 ? static_cast<double>(rewards.load(0)) : 0.0;
        double weighted = 0, total_len = 0, sum = 0;
        bool differs = false, bad_reward = false, bad_length = false, negative = false;
        for (index_t j = lane; j < n; j += L) {
            const double r = static_cast<double>(rewards.load(j));
            const double l = static_cast<double>(lengths.load(j));
            weighted += l * r;
            total_len += l;
            sum += r;
            differs |= r != first;  // a NaN differs from everything: never constant
            bad_reward |= !(r - r == r - r);
            bad_length |= !(l - l == l - l);
            negative |= l < 0;
        }
        weighted = team_sum<L>(weighted, nullptr);
        total_len = team_sum<L>(total_len, nullptr);
        sum = team_sum<L>(sum, nullptr);
        differs = team_any<L>(differs);
        bad_reward = team_any<L>(bad_reward);
        bad_length = team_any<L>(bad_length);
        negative = team_any<L>(negative);

        std::uint32_t bits = 0;
        double base = 0;
        unsigned char kind = n == 0 ? group_empty : group_regular;
        if (n == 1) {
            kind = group_singleton;
            if (o.singleton_groups == singleton::zero) base = first;
            if (o.singleton_groups == singleton::nan) base = quiet_nan();
            if (o.singleton_groups == singleton::error) {
                base = quiet_nan();
                bits |= status_singleton_group;
            }
        } else if (n >= 2) {
            if (!differs) kind = group_zero_variance;
            if (!differs && o.zero_variance_groups == zero_variance::zero) base = first;  // every advantage exactly 0
            else if (total_len > 0) base = weighted / total_len;
            else base = sum / static_cast<double>(n);  // every response empty: the plain mean
        }
        for (index_t j = lane; j < n; j += L) dst.store(j, static_cast<Out>(static_cast<double>(rewards.load(j)) - base));
        if (bad_length) bits |= status_nonfinite_input;
        if (negative) bits |= status_invalid_value;
        if (has && lane == 0) io.finish_group(bits, bad_reward, kind);
    }
};

template <class Rewards, class Lengths, class Groups, class Advantages>
void run_opo_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Lengths& lengths, const Groups& groups,
                  Advantages&& advantages, const opo_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::opo";
    auto rv = posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"});
    auto lv = posttrain::detail::floating_input<1, device_space>(lengths, {fn, "lengths"});
    auto av = posttrain::detail::floating_output<1, device_space>(advantages, {fn, "advantages"});
    check_counters(stats, fn);
    std::visit(
        [&](auto r, auto l, auto a) {
            check_opo_lengths(r, l, a, fn);
            const auto info =
                checked_device_layout(policy, groups, r, a, stats, options.singleton_groups, fn, std::pair{l, "lengths"});
            const opo_body<typename decltype(r)::value_type, typename decltype(l)::value_type, typename decltype(a)::value_type>
                body{make_team_io(r, a, options.nonfinite_rewards, policy, stats), l.data(), l.stride(0), options};
            launch_team_per_group(policy, body, info, r.extent(0), fn);
        },
        rv, lv, av);
}

}  // namespace detail

inline std::size_t opo_workspace_bytes(index_t /*rows*/, const opo_options& /*options*/ = {}) noexcept { return 0; }

template <class Rewards, class Lengths, class Groups, class Advantages>
void opo(const exec::cuda_policy& policy, const Rewards& rewards, const Lengths& lengths, const Groups& groups,
         Advantages&& advantages, const opo_options& options = {}) {
    detail::run_opo_cuda(policy, rewards, lengths, groups, advantages, options, {});
}

// As above, and adds the group_stats_result counters into stats[5] on the device.
template <class Rewards, class Lengths, class Groups, class Advantages>
void opo(const exec::cuda_policy& policy, const Rewards& rewards, const Lengths& lengths, const Groups& groups,
         Advantages&& advantages, const opo_options& options, device_view<index_t, 1> stats) {
    detail::run_opo_cuda(policy, rewards, lengths, groups, advantages, options, stats);
}

}  // namespace posttrain::advantage
