#pragma once
// GPG on the GPU: the exec::cuda overloads of advantage::gpg.
//
//     pt::advantage::gpg(pt::exec::cuda.on(stream), d_rewards, pt::uniform_groups{8}, d_advantages,
//                        pt::advantage::gpg_options::verl());
//
// GPG is Dr. GRPO (centring only) scaled by alpha / f_norm, so it runs the outcome kernels of
// <grpo.cuh> with a gain: each advantage is rounded to the output type, then multiplied by the gain
// in double and rounded again, as the host scales what GRPO wrote. With options.alpha = 0 the gain
// comes from the batch, alpha = N / max(#{i : r_i != 0}, 1) (a NaN reward counts as non-zero, as in
// torch): one counting kernel (integer atomics, so the count is exact and deterministic) and a
// one-thread kernel that forms the gain on the device, where the outcome kernels read it; nothing
// comes back to the host. Rewards, groups, the status word, the `stats` overload and determinism
// are as documented in <grpo.cuh>.
//
// Scratch: gpg_workspace_bytes (the count and the gain, when alpha comes from the batch), from
// .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/gpg.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/block/block_reduce.cuh>

#include "../cuda/outcome.cuh"
#include "gpg.hpp"
#include "grpo_params.hpp"

namespace posttrain::advantage {

namespace detail {

// Adds the number of non-zero values among x[0..n) (stride xs) into *count.
template <class In>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    count_nonzero_kernel(const In* x, index_t xs, index_t n, unsigned long long* count) {
    using reduce_t = cub::BlockReduce<unsigned long long, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    unsigned long long mine = 0;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        mine += x[i * xs] != In(0);
    mine = reduce_t(temp).Sum(mine);
    if (threadIdx.x == 0 && mine != 0) atomicAdd(count, mine);
}

template <int Unused = 0>
__global__ void gpg_gain_kernel(const unsigned long long* count, index_t rows, double f_norm, bool float32_alpha,
                                double* gain) {
    *gain = gpg_gain(0.0, f_norm, float32_alpha, rows, static_cast<index_t>(*count));
}

// The gain from the batch (options.alpha == 0): counts the non-zero rewards, then forms alpha / f_norm.
struct gpg_batch_gain {
    double f_norm = 1.0;
    bool float32_alpha = false;

    static constexpr std::size_t count_bytes = posttrain::detail::scratch_align(sizeof(unsigned long long));
    std::size_t scratch_bytes() const noexcept { return count_bytes + sizeof(double); }

    template <class R>
    const double* operator()(const exec::cuda_policy& pol, R r, unsigned char* scratch, const char* fn) const {
        auto* count = reinterpret_cast<unsigned long long*>(scratch);
        auto* gain = reinterpret_cast<double*>(scratch + count_bytes);
        POSTTRAIN_CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(unsigned long long), pol.stream));
        const index_t n = r.extent(0);
        if (n > 0) {
            const index_t blocks = (n + cuda_tuning::block_threads - 1) / cuda_tuning::block_threads;
            count_nonzero_kernel<<<static_cast<unsigned>(blocks < cuda_tuning::batch_partials ? blocks
                                                                                              : cuda_tuning::batch_partials),
                                   cuda_tuning::block_threads, 0, pol.stream>>>(r.data(), r.stride(0), n, count);
            posttrain::detail::check_launch(fn);
        }
        gpg_gain_kernel<<<1, 1, 0, pol.stream>>>(count, n, f_norm, float32_alpha, gain);
        posttrain::detail::check_launch(fn);
        return gain;
    }
};

template <class Rewards, class Groups, class Advantages>
void run_gpg_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                  const gpg_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::gpg";
    check_gpg_options(options, fn);
    outcome_params params = grpo_params(gpg_centring(options), fn);
    if (options.alpha != 0.0) {
        params.gain = gpg_gain(options.alpha, options.f_norm, options.float32_alpha, 0, 0);
        run_outcome_cuda(policy, rewards, groups, advantages, params, options.nonfinite_rewards, stats, fn);
    } else {
        run_outcome_cuda(policy, rewards, groups, advantages, params, options.nonfinite_rewards, stats, fn,
                         gpg_batch_gain{options.f_norm, options.float32_alpha});
    }
}

}  // namespace detail

// Bytes of scratch gpg needs on the CUDA path: the non-zero count and the gain when alpha comes
// from the batch (options.alpha == 0), else none.
inline std::size_t gpg_workspace_bytes(index_t /*rows*/, const gpg_options& options = {}) noexcept {
    const std::size_t engine = detail::outcome_workspace_bytes(scale::none);  // GPG only centres
    return options.alpha != 0.0 ? engine
                                : engine + posttrain::detail::scratch_align(detail::gpg_batch_gain{}.scratch_bytes());
}

template <class Rewards, class Groups, class Advantages>
void gpg(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
         const gpg_options& options = {}) {
    detail::run_gpg_cuda(policy, rewards, groups, advantages, options, {});
}

// As above, and adds the group_stats_result counters into stats[5] on the device.
template <class Rewards, class Groups, class Advantages>
void gpg(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
         const gpg_options& options, device_view<index_t, 1> stats) {
    detail::run_gpg_cuda(policy, rewards, groups, advantages, options, stats);
}

}  // namespace posttrain::advantage
