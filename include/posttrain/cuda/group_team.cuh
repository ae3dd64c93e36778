#pragma once
// A team of lanes per group, for the per-group estimators whose arithmetic does not fit the outcome
// transform of outcome.cuh (pass@k's best-and-runner-up, OPO's length-weighted baseline): the
// groups are walked grid-stride by teams of L = 1, 4 or 32 lanes of a warp (by the expected group
// size), each team looping over its group's rows in global memory, pass after pass (a group's
// later passes are served by L1/L2). Any device layout: uniform, ragged or permuted.
//
// A body is a struct with
//     template <int L, class Layout>
//     __device__ void operator()(int lane, bool has, index_t g, index_t begin, index_t end, const Layout&) const;
// for group g (rows [begin, end) of the layout), which every lane of the warp calls the same number
// of times (has = false when its team has no group this round, or the group's bounds are invalid:
// then begin = end = 0), so that it may use
// the full-mask team collectives below and outcome.cuh's team_sum / team_any.
//
// Determinism: a group's reductions are fixed xor butterflies over lanes that each sum their rows
// in order, and no result depends on which team takes a group: run to run identical.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/group_team.cuh> needs nvcc: include it only from .cu files"
#endif

#include "groups.cuh"
#include "outcome.cuh"

namespace posttrain::advantage::detail {

// The largest value over the team (every lane gets it). Max is exact, so the order does not matter.
template <int L>
__device__ double team_max(double v) {
#pragma unroll
    for (int k = L / 2; k >= 1; k /= 2) {
        const double o = __shfl_xor_sync(0xffffffffu, v, k);
        v = o > v ? o : v;
    }
    return v;
}

// The largest value and the smallest position holding it (at < 0: none). Every lane gets the
// same pair: the order of the candidates is total (value, then position), so the butterfly's
// pairings do not matter.
template <int L>
__device__ void team_argmax(double& value, index_t& at) {
#pragma unroll
    for (int k = L / 2; k >= 1; k /= 2) {
        const double ov = __shfl_xor_sync(0xffffffffu, value, k);
        const index_t oa = __shfl_xor_sync(0xffffffffu, at, k);
        const bool take = oa >= 0 && (at < 0 || ov > value || (ov == value && oa < at));
        value = take ? ov : value;
        at = take ? oa : at;
    }
}

// What every body reads and writes besides its options: rewards in, advantages out (row order, any
// stride), the status word and the optional group counters (outcome_counter_slots).
template <class In, class Out>
struct team_io {
    const In* x;
    index_t xs;
    Out* y;
    index_t ys;
    bool report_nonfinite;  // nonfinite::raise: a non-finite reward sets status_nonfinite_input
    std::uint32_t* status;
    unsigned long long* counters;

    // The status bits and counters of one finished group (one lane of its team calls it).
    __device__ void finish_group(std::uint32_t bits, bool nonfinite_reward, unsigned char kind) const {
        if (report_nonfinite && nonfinite_reward) bits |= status_nonfinite_input;
        posttrain::detail::report_status(status, bits);
        if (counters != nullptr) {
            atomicAdd(counters + 0, 1ull);
            if (kind != group_regular) atomicAdd(counters + kind, 1ull);
        }
    }
};

template <class In, class Out>
team_io<In, Out> make_team_io(device_view<const In, 1> r, device_view<Out, 1> a, nonfinite rewards,
                              const exec::cuda_policy& policy, device_view<index_t, 1> stats) {
    return {r.data(), r.stride(0), a.data(), a.stride(0), rewards == nonfinite::raise, policy.status,
            reinterpret_cast<unsigned long long*>(stats.data())};
}

template <int L, class Body, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    team_per_group_kernel(Body body, Layout layout, index_t groups, std::uint32_t* status) {
    static_assert(L >= 1 && L <= 32 && 32 % L == 0, "a team is 1..32 lanes of one warp");
    groups = layout.live_groups(groups);  // every thread calls it (it may hold a barrier)
    constexpr index_t teams_per_block = cuda_tuning::block_threads / L;
    const int lane = static_cast<int>(threadIdx.x) % L;
    const index_t first = static_cast<index_t>(blockIdx.x) * teams_per_block + threadIdx.x / L;
    const index_t step = static_cast<index_t>(gridDim.x) * teams_per_block;
    // The lanes of a warp leave the loop together: the teams of one warp are consecutive, so the
    // warp is done when its first team is.
    const index_t warp_first = first - (threadIdx.x % 32) / L;
    for (index_t g = first, w = warp_first; w < groups; g += step, w += step) {
        index_t begin = 0, end = 0;
        bool has = g < groups;
        if (has && !layout.bounds(g, begin, end, groups)) {
            if (lane == 0) posttrain::detail::report_status(status, status_invalid_groups);
            has = false;
            begin = end = 0;
        }
        body.template operator()<L>(lane, has, g, begin, end, layout);
    }
}

// Launches `body` over the groups of a device layout with teams sized to the expected group size.
template <class Body, class DeviceLayout>
void launch_team_per_group(const exec::cuda_policy& pol, const Body& body,
                           const posttrain::detail::device_layout_info<DeviceLayout>& info, index_t rows, const char* fn) {
    const index_t groups = info.groups;
    if (groups == 0) return;
    const index_t size = info.exact_size >= 0 ? info.exact_size : info.typical_size > 0 ? info.typical_size : rows / groups;
    auto launch = [&](auto lanes) {
        constexpr int L = decltype(lanes)::value;
        team_per_group_kernel<L><<<cuda_tuning::elementwise_blocks(groups * L), cuda_tuning::block_threads, 0, pol.stream>>>(
            body, info.layout, groups, pol.status);
        posttrain::detail::check_launch(fn);
    };
    if (size < 4) launch(std::integral_constant<int, 1>{});
    else if (size <= 64) launch(std::integral_constant<int, 4>{});
    else launch(std::integral_constant<int, 32>{});
}

}  // namespace posttrain::advantage::detail
