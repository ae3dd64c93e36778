#pragma once
// RLOO on the GPU: the exec::cuda overloads of advantage::rloo. RLOO is GRPO with a leave-one-out
// baseline and no scaling (detail::as_grpo), so it runs the same kernels as <grpo.cuh>; arguments,
// status bits, asynchrony and the `stats` overload are as documented there. No scratch is needed
// (rloo_workspace_bytes returns 0; it exists so that every CUDA algorithm can be asked).

#if !defined(__CUDACC__)
#error "<posttrain/advantage/rloo.cuh> needs nvcc: include it only from .cu files"
#endif

#include "grpo.cuh"
#include "rloo.hpp"

namespace posttrain::advantage {

inline std::size_t rloo_workspace_bytes(index_t rows, const rloo_options& options = {}) noexcept {
    return grpo_workspace_bytes(rows, detail::as_grpo(options));
}

template <class Rewards, class Groups, class Advantages>
void rloo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          const rloo_options& options = {}) {
    constexpr const char* fn = "posttrain::advantage::rloo";
    detail::run_outcome_cuda(policy, rewards, groups, advantages, detail::grpo_params(detail::as_grpo(options), fn),
                             options.nonfinite_rewards, {}, fn);
}

// As above, and adds the group_stats_result counters into stats[5] on the device.
template <class Rewards, class Groups, class Advantages>
void rloo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          const rloo_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::rloo";
    detail::run_outcome_cuda(policy, rewards, groups, advantages, detail::grpo_params(detail::as_grpo(options), fn),
                             options.nonfinite_rewards, stats, fn);
}

}  // namespace posttrain::advantage
