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
// order). Asynchronous on the policy's stream. Semantics are those of the
// host grpo with statistics::float64 (double accumulation on the device for float input too);
// statistics::float32_one_pass is rejected with invalid_argument on this path.
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

}  // namespace posttrain::advantage
