#pragma once
// REINFORCE++ and REINFORCE++-baseline on the GPU: the exec::cuda overloads of
// advantage::reinforce_pp and advantage::reinforce_pp_baseline.
//
//     pt::advantage::reinforce_pp(pt::exec::cuda.on(stream), d_token_rewards, d_mask, d_advantages, d_returns_or_none,
//                                 pt::advantage::reinforce_pp_options::verl(0.99));
//     pt::advantage::reinforce_pp_baseline(pt::exec::cuda.on(stream), d_rewards, pt::uniform_groups{8}, d_mask,
//                                          d_advantages, pt::advantage::reinforce_pp_baseline_options::verl());
//
// Views and semantics as on the host (reinforce_pp.hpp); asynchronous on the policy's stream. The
// whitening statistics the host returns come back through the `stats` overloads (device {mean,
// variance, count}).
//
// reinforce_pp is gae.cuh's returns scan (returns_problem) leaving per-tile moments of the returns
// as stored in `advantages`, then gae.cuh's finalize and in-place apply: three launches for rows of
// at most 2048 tokens, five for longer rows (the chunk passes). reinforce_pp_baseline runs the CUDA
// grpo (grpo.cuh, options.centring) into scratch, broadcasts c_i * m[i, t] into the advantages
// while taking the tiles' moments (whiten.cuh), then finalize and apply. Deterministic run to run,
// as gae.cuh and grpo.cuh are. Status word: too few valid tokens under degenerate::raise (where the
// host throws) set status_empty_reduction and the advantages are zeros (returns are still written);
// grpo's own bits for reinforce_pp_baseline (e.g. status_nonfinite_input under the centring's
// nonfinite::raise). The host has no non-finite check in reinforce_pp and neither has the device
// (non-finite returns stay non-finite, though an inf can come out as NaN: gae.cuh).
// Stricter than the host, because the device writes while other blocks read: `returns` may not
// overlap token_rewards or mask, nor advantages the mask.
//
// Scratch (reinforce_pp_workspace_bytes, reinforce_pp_baseline_workspace_bytes) from .with(workspace)
// or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/reinforce_pp.cuh> needs nvcc: include it only from .cu files"
#endif

#include "gae.cuh"
#include "grpo.cuh"
#include "reinforce_pp.hpp"
#include "whiten.cuh"

namespace posttrain::advantage {
namespace detail {

template <class TokenRewards, class Mask, class Advantages, class Returns>
void reinforce_pp_cuda(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Mask& mask, Advantages&& advantages,
                       Returns&& returns, const reinforce_pp_options& options, device_view<double, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::reinforce_pp";
    using posttrain::detail::floating_output;
    std::visit(
        [&](auto r, auto m, auto a) {
            check_reinforce_pp_views(r, m, a, fn);
            const index_t rows = r.extent(0), cols = r.extent(1);
            using R = typename decltype(r)::value_type;
            using M = typename decltype(m)::value_type;
            using A = typename decltype(a)::value_type;
            const scan_tiles s = make_scan_tiles(rows, cols);
            const scan_scratch_layout l = scan_scratch(rows, cols, true, false);
            auto run = [&](auto ret, bool has_returns) {
                using Ret = typename decltype(ret)::value_type;
                check_whitening_apart(policy, stats, fn, std::pair{r, "token_rewards"}, std::pair{m, "mask"},
                                      std::pair{a, "advantages"}, std::pair{ret, "returns"});
                posttrain::detail::cuda_scratch scratch(policy, l.total, {fn, "policy"});
                returns_problem<R, M, A, Ret> p{r, m, a, options.returns.masking, options.returns.gamma};
                p.ret = ret;
                p.write_ret = has_returns;
                p.staged = all_dense(r, m, a, ret);
                auto* moments = scratch.as<tile_moments>(l.moments);
                launch_scan(policy, p, s, scratch, l, moments, fn);
                launch_whiten(policy, moments, s.tiles, make_whiten_params(options.whitening, options.mask_output),
                              scratch.as<whiten_transform>(l.transform), stats.data(), device_view<const A, 2>(a), a, m, fn);
            };
            visit_returns<A>(
                returns, fn,
                [&](auto ret) { check_returns_output(ret, r, m, a, fn); }, run);
        },
        posttrain::detail::floating_input<2, device_space>(token_rewards, {fn, "token_rewards"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        floating_output<2, device_space>(advantages, {fn, "advantages"}));
}

// reinforce_pp_baseline's moments source: writes a = c_i * m (rounded as the host's broadcast_to_tokens
// stores it) and yields that stored value under the mask.
template <class M, class A>
struct broadcast_values {
    const double* c;
    device_view<const M, 2> m;
    device_view<A, 2> a;
    bool staged = false;  // m and a dense: gae.cuh's staged tiles
    __device__ void item(index_t i, index_t t, double& v, double& w) const {
        w = double(m(i, t));
        const A stored = static_cast<A>(c[i] * w);
        a(i, t) = stored;
        v = double(stored);
    }
    __device__ void items_staged(tile_stage& st, const scan_tiles& s, const tile_span& sp, index_t e0, int count,
                                 double (&xs)[scan_items], double (&ws)[scan_items]) const {
        const index_t base = tile_base(s, sp);
        stage_in(st.out[1], m.data(), base, sp.n, e0, count, ws);
        for_each_item(s, sp, e0, count, [&](int j, index_t i, index_t, bool) {
            xs[j] = double(static_cast<A>(c[i] * ws[j]));
            st.out[0][item_slot(sp.n, e0 + j)] = xs[j];
        });
        stage_out(st.out[0], a.data(), base, sp.n);
    }
};

// Scratch: grpo's own (first, so that it keeps the workspace's alignment), the centred rewards [N],
// then the whitening's.
struct baseline_scratch_layout {
    std::size_t grpo = 0, grpo_bytes = 0, centred = 0;
    whiten_scratch_layout whiten;
};
inline baseline_scratch_layout baseline_scratch(index_t rows, index_t cols, const grpo_options& centring) {
    baseline_scratch_layout l;
    posttrain::detail::scratch_cursor c;
    l.grpo_bytes = posttrain::advantage::grpo_workspace_bytes(rows, centring);
    l.grpo = c.take(l.grpo_bytes);
    l.centred = c.take(static_cast<std::size_t>(rows) * sizeof(double));
    l.whiten = whiten_scratch(rows, cols, c);
    return l;
}

template <class Rewards, class Groups, class Mask, class Advantages>
void reinforce_pp_baseline_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, const Mask& mask,
                                Advantages&& advantages, const reinforce_pp_baseline_options& options,
                                device_view<double, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::reinforce_pp_baseline";
    std::visit(
        [&](auto r, auto m, auto a) {
            check_baseline_views(r, m, a, fn);
            check_whitening_apart(policy, stats, fn, std::pair{r, "rewards"}, std::pair{m, "mask"}, std::pair{a, "advantages"});
            posttrain::detail::check_policy_apart_from_layout(policy, groups, fn);
            const index_t rows = m.extent(0), cols = m.extent(1);
            using M = typename decltype(m)::value_type;
            using A = typename decltype(a)::value_type;
            const baseline_scratch_layout l = baseline_scratch(rows, cols, options.centring);
            posttrain::detail::cuda_scratch scratch(policy, l.whiten.total, {fn, "policy"});
            double* centred = scratch.as<double>(l.centred);
            // grpo carves its own scratch from the region set aside for it (none when it needs none).
            const exec::cuda_policy inner =
                l.grpo_bytes > 0 ? policy.with(scratch.as<void>(l.grpo), l.grpo_bytes) : policy.with(nullptr, 0);
            posttrain::advantage::grpo(inner, r, groups, device_view<double, 1>(centred, rows), options.centring);
            broadcast_values<M, A> src{centred, m, a};
            src.staged = all_dense(m, a);
            whiten_cuda(policy, src, scratch, l.whiten,
                        make_whiten_params(options.whitening, options.mask_output), stats.data(), device_view<const A, 2>(a), a, m,
                        fn);
        },
        posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"}),
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}),
        posttrain::detail::floating_output<2, device_space>(advantages, {fn, "advantages"}));
}

}  // namespace detail

// Bytes of scratch reinforce_pp needs on the CUDA path for an [rows, cols] batch.
inline std::size_t reinforce_pp_workspace_bytes(index_t rows, index_t cols) { return detail::scan_scratch(rows, cols, true, false).total; }

// Bytes of scratch reinforce_pp_baseline needs on the CUDA path for an [rows, cols] mask and these options.
inline std::size_t reinforce_pp_baseline_workspace_bytes(index_t rows, index_t cols, const reinforce_pp_baseline_options& options = {}) {
    return detail::baseline_scratch(rows, cols, options.centring).whiten.total;
}

template <class TokenRewards, class Mask, class Advantages, class Returns>
void reinforce_pp(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Mask& mask, Advantages&& advantages,
                  Returns&& returns, const reinforce_pp_options& options = {}) {
    detail::reinforce_pp_cuda(policy, token_rewards, mask, advantages, returns, options, {});
}

// As above, and writes the whitening statistics {mean, variance, count} into stats[3] on the device.
template <class TokenRewards, class Mask, class Advantages, class Returns>
void reinforce_pp(const exec::cuda_policy& policy, const TokenRewards& token_rewards, const Mask& mask, Advantages&& advantages,
                  Returns&& returns, const reinforce_pp_options& options, device_view<double, 1> stats) {
    detail::check_whiten_stats(stats, "posttrain::advantage::reinforce_pp");
    detail::reinforce_pp_cuda(policy, token_rewards, mask, advantages, returns, options, stats);
}

template <class Rewards, class Groups, class Mask, class Advantages>
void reinforce_pp_baseline(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, const Mask& mask,
                           Advantages&& advantages, const reinforce_pp_baseline_options& options = {}) {
    detail::reinforce_pp_baseline_cuda(policy, rewards, groups, mask, advantages, options, {});
}

// As above, and writes the whitening statistics {mean, variance, count} into stats[3] on the device.
template <class Rewards, class Groups, class Mask, class Advantages>
void reinforce_pp_baseline(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, const Mask& mask,
                           Advantages&& advantages, const reinforce_pp_baseline_options& options, device_view<double, 1> stats) {
    detail::check_whiten_stats(stats, "posttrain::advantage::reinforce_pp_baseline");
    detail::reinforce_pp_baseline_cuda(policy, rewards, groups, mask, advantages, options, stats);
}

}  // namespace posttrain::advantage
