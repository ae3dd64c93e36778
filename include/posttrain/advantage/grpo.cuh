#pragma once
// GRPO on the GPU: the exec::cuda overloads of advantage::grpo.
//
//     pt::advantage::grpo(pt::exec::cuda.on(stream), d_rewards, pt::uniform_groups{16}, d_advantages);
//     pt::advantage::grpo(pt::exec::cuda.on(stream).with_status(d_status), d_rewards,
//                         pt::ragged(d_offsets), d_advantages, pt::advantage::grpo_options::verl());
//
// Rewards and advantages are device_view<const float|double, 1> / device_view<float|double, 1> or
// DLPack tensors on a CUDA device; groups are uniform_groups, ragged device offsets or a
// device_permuted_groups (<posttrain/cuda/groups.cuh>; grouping::from_ids in
// <posttrain/cuda/grouping.cuh> makes one from unsorted ids, and advantages come back in row
// order). Asynchronous on the policy's stream. Semantics are those of the host grpo: under
// statistics::float64 with double accumulation on the device for float input too (results differ
// from the host's by summation order); statistics::float32_one_pass (verl's vectorized form) runs a
// thread per group through the host's own function, so its advantages are the host's bit for bit.
//
// What only the device can see is reported through the policy's status word, not thrown:
// status_nonfinite_input (nonfinite::raise and a NaN/inf reward: the result is computed as under
// nonfinite::propagate), status_invalid_groups (bad ragged offsets or permuted layout: those groups
// are skipped),
// status_singleton_group (singleton::error with ragged groups: the singleton gets NaN). The
// group_stats_result counters are available, asynchronously, through the `stats` overload.
//
// Scratch: only scale::batch needs any (grpo_workspace_bytes); it comes from .with(workspace) or
// from cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/grpo.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/group_team.cuh"
#include "../cuda/outcome.cuh"
#include "grpo.hpp"
#include "grpo_params.hpp"

namespace posttrain::advantage {

// Bytes of scratch grpo needs on the CUDA path for these options (0 unless scale::batch).
inline std::size_t grpo_workspace_bytes(index_t /*rows*/, const grpo_options& options = {}) noexcept {
    return detail::outcome_workspace_bytes(options.std_scale);
}

template <class Rewards, class Groups, class Advantages>
void grpo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          const grpo_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::grpo";
    detail::run_outcome_cuda(policy, rewards, groups, advantages, detail::grpo_params(options, fn),
                             options.nonfinite_rewards, {}, fn);
}

// As above, and adds the group_stats_result counters (groups, empty, singleton, zero-variance,
// ignored rows) into stats[5] on the device.
template <class Rewards, class Groups, class Advantages>
void grpo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          const grpo_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::grpo";
    detail::run_outcome_cuda(policy, rewards, groups, advantages, detail::grpo_params(options, fn),
                             options.nonfinite_rewards, stats, fn);
}

namespace detail {

// One float or double output entry per group (the dtype is a run-time fact of the caller's tensor).
struct group_value_out {
    void* p = nullptr;
    index_t stride = 1;
    bool dbl = false;
    __device__ void store(index_t g, double v) const {
        if (dbl) static_cast<double*>(p)[g * stride] = v;
        else static_cast<float*>(p)[g * stride] = static_cast<float>(v);
    }
};

template <class V>
group_value_out group_output(V v) {
    return {v.data(), v.stride(0), std::is_same_v<typename V::value_type, double>};
}

// A group's mean, std and count, as the host's group_mean_std computes them: float64 statistics
// by the team (sum, then squared deviations), or float32_one_pass by the team's first lane alone,
// in row order (the host's function, bit for bit).
template <class In>
struct group_mean_std_body {
    const In* x;
    index_t xs;
    group_value_out mean, std_out, count;
    group_mean_std_options o;
    std::uint32_t* status;

    template <int L, class Layout>
    __device__ void operator()(int lane, bool has, index_t g, index_t begin, index_t end, const Layout& layout) const {
        const index_t n = has ? end - begin : 0;
        const auto src = layout.rows_at(x, xs, begin);
        const bool f32 = o.stats == statistics::float32_one_pass;  // the same in every thread
        double sum = 0;
        bool nonfinite = false;
        for (index_t j = lane; j < n; j += L) {
            const double v = static_cast<double>(src.load(j));
            sum += v;
            nonfinite |= !(v - v == v - v);
        }
        sum = team_sum<L>(sum, nullptr);
        nonfinite = team_any<L>(nonfinite);
        const double mu64 = n > 0 ? sum / static_cast<double>(n) : 0.0;
        double m2 = 0;
        if (!f32) {
            for (index_t j = lane; j < n; j += L) {
                const double d = static_cast<double>(src.load(j)) - mu64;
                m2 += d * d;
            }
            m2 = team_sum<L>(m2, nullptr);
        }
        if (!has || lane != 0) return;
        double mu = 0, sd = 1;  // a group of 0 or 1 rows under singleton_unit (verl)
        if (f32 && (n > 1 || o.singleton_unit)) {
            const float32_group_stats s = float32_one_pass_stats(n, o.epsilon, rows_as_double<decltype(src)>{src});
            mu = s.mean;
            sd = s.std;
        } else if (n > 1 || !o.singleton_unit) {
            const double dof = static_cast<double>(n) - static_cast<double>(static_cast<int>(o.ddof));
            mu = mu64;
            sd = dof > 0 ? sqrt(m2 / dof) : quiet_nan();  // too few rows: NaN, as torch
        }
        mean.store(g, mu);
        std_out.store(g, sd);
        count.store(g, static_cast<double>(n));
        if (nonfinite) posttrain::detail::report_status(status, status_nonfinite_input);  // the host throws
    }
};

}  // namespace detail

// Per-group mean, std and count on the GPU (the exec::cuda overload of group_mean_std): a team of
// lanes per group (cuda/group_team.cuh) over uniform, ragged-device or device_permuted_groups
// layouts. mean, std and count are float or double device views with one entry per group of the
// layout (for a device-held group count: offsets.extent(0) - 1 entries, those past the count left
// unwritten). A non-finite reward (the host throws) sets status_nonfinite_input; its group's
// statistics are computed as IEEE arithmetic gives them. float64 statistics differ from the host's
// by summation order; float32_one_pass equals the host's bit for bit. No scratch; asynchronous;
// run-to-run deterministic.
template <class Rewards, class Groups, class Mean, class Std, class Count>
void group_mean_std(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Mean&& mean,
                    Std&& std_out, Count&& count, const group_mean_std_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::group_mean_std";
    auto rv = posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"});
    auto mv = posttrain::detail::floating_output<1, device_space>(mean, {fn, "mean"});
    auto sv = posttrain::detail::floating_output<1, device_space>(std_out, {fn, "std"});
    auto cv = posttrain::detail::floating_output<1, device_space>(count, {fn, "count"});
    std::visit(
        [&](auto r, auto m, auto s, auto c) {
            posttrain::detail::check_policy_apart(policy, fn, std::pair{r, "rewards"}, std::pair{m, "mean"},
                                                  std::pair{s, "std"}, std::pair{c, "count"});
            posttrain::detail::check_policy_apart_from_layout(policy, groups, fn);
            const auto info = posttrain::detail::make_device_layout(policy, groups, r.extent(0), {fn, "groups"});
            detail::check_group_mean_std_views(r, m, s, c, info.groups, fn);
            auto output = [&](const auto& v, const char* name) {
                detail::check_apart_from_layout(groups, v, fn, name);
                return detail::group_output(v);
            };
            const detail::group_value_out mo = output(m, "mean"), so = output(s, "std"), co = output(c, "count");
            const detail::group_mean_std_body<typename decltype(r)::value_type> body{r.data(), r.stride(0), mo, so, co,
                                                                                    options, policy.status};
            detail::launch_team_per_group(policy, body, info, r.extent(0), fn);
        },
        rv, mv, sv, cv);
}

}  // namespace posttrain::advantage
