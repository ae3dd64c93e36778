#pragma once
// ReMax on the GPU: the exec::cuda overload of advantage::remax.
//
//     pt::advantage::remax(pt::exec::cuda.on(stream), d_token_rewards, d_baselines, d_mask, d_advantages, d_returns_or_none);
//
// token_rewards [N, T] and baselines [N] device_view<const float|double> (or DLPack on a CUDA
// device), mask bool or any arithmetic type, advantages [N, T] and returns [N, T] (or posttrain::none)
// device_view<float|double, 2>; any strides. Semantics as on the host (remax.hpp): G = the
// undiscounted returns of the mask-zeroed rewards (gamma 1, masked_tokens::zero_rewards),
// advantages = G - b_i * m, returns = G. One pass: gae.cuh's returns scan writes both outputs
// (returns_problem with subtract_baseline), with the chunk passes first for rows longer than 2048
// tokens. Deterministic run to run (gae.cuh). No status bits: the host checks nothing the device
// could only see (NaN propagates through its row; an inf reward can give NaN where the host gives
// +-inf: the scan composes maps, gae.cuh). Stricter than the host, because the device writes
// while other blocks read: returns may not overlap token_rewards, baselines or mask, nor advantages
// the mask.
//
// Scratch (remax_workspace_bytes): none for rows of at most 2048 tokens, else the chunk maps and
// carries; from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/remax.cuh> needs nvcc: include it only from .cu files"
#endif

#include "gae.cuh"
#include "remax.hpp"

namespace posttrain::advantage {

// Bytes of scratch remax needs on the CUDA path for an [rows, cols] batch (0 when rows fit a tile).
inline std::size_t remax_workspace_bytes(index_t rows, index_t cols) { return discounted_returns_workspace_bytes(rows, cols); }

template <class TokenRewards, class Baselines, class Mask, class Advantages, class Returns>
void remax(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Baselines& baselines, const Mask& mask,
           Advantages&& advantages, Returns&& returns) {
    constexpr const char* fn = "posttrain::advantage::remax";
    using posttrain::detail::floating_output;
    std::visit(
        [&](auto r, auto b, auto m, auto a) {
            detail::check_remax_views(r, b, m, a, fn);
            const index_t rows = r.extent(0), cols = r.extent(1);
            using R = typename decltype(r)::value_type;
            using B = typename decltype(b)::value_type;
            using M = typename decltype(m)::value_type;
            using A = typename decltype(a)::value_type;
            auto run = [&](auto ret, bool has_returns) {
                using Ret = typename decltype(ret)::value_type;
                posttrain::detail::check_policy_apart(policy, fn, std::pair{r, "token_rewards"}, std::pair{b, "baselines"},
                                                      std::pair{m, "mask"}, std::pair{a, "advantages"},
                                                      std::pair{ret, "returns"});
                const detail::scan_tiles s = detail::make_scan_tiles(rows, cols);
                const detail::scan_scratch_layout l = detail::scan_scratch(rows, cols, false, false);
                posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
                detail::returns_problem<R, M, A, Ret, B> p{r, m, a, masked_tokens::zero_rewards, 1.0};
                p.ret = ret;
                p.write_ret = has_returns;
                p.staged = detail::all_dense(r, m, a, ret);
                p.base = b;
                p.subtract_baseline = true;
                detail::launch_scan(policy, p, s, scratch, l, nullptr, fn);
            };
            detail::visit_returns<A>(
                returns, fn,
                [&](auto ret) { detail::check_remax_returns(ret, r, b, m, a, fn); },
                run);
        },
        posttrain::detail::floating_input<2, device_space>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::floating_input<1, device_space>(baselines, {fn, "baselines"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        floating_output<2, device_space>(advantages, {fn, "advantages"}));
}

}  // namespace posttrain::advantage
