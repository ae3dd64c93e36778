#pragma once
// The CUDA engine of the outcome-advantage family (GRPO, RLOO, Dr. GRPO, leave-one-out GRPO): one
// launcher, one per-group body, and two team shapes that run it (a sub-warp/warp per group, or a
// block per group). The arithmetic is advantage/grpo_math.hpp, shared with the other backends.
//
// Per group: pass 1 reduces count/sum/min/max (double accumulation, also for float input), pass 2
// reduces the squared deviations from the mean (skipped unless the group std is needed), pass 3
// writes every row through the group's transform. Passes 2 and 3 re-read rows the team has just
// read, which small groups find in L1 and large ones in L2.
//
// Determinism: run to run on the same GPU (fixed launch shape and reduction trees, no atomics in
// the arithmetic). Differences from the host oracle come only from summation order.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/outcome.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cub/block/block_reduce.cuh>
#include <cub/util_ptx.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "../advantage/grpo_math.hpp"
#include "exec.cuh"
#include "groups.cuh"
#include "tuning.cuh"

namespace posttrain::advantage::detail {

// Optional device counters, in group_stats_result's order: groups, empty, singleton, zero-variance,
// ignored rows. Accumulated with atomics (counts are integers, so the order does not matter).
inline constexpr int outcome_counter_slots = 5;

template <class In, class Out>
struct outcome_args {
    const In* x = nullptr;
    index_t x_stride = 1;
    Out* y = nullptr;
    index_t y_stride = 1;
    outcome_params params;
    const double* batch_sigma = nullptr;        // device scalar under scale::batch
    std::uint32_t* status = nullptr;
    unsigned long long* counters = nullptr;     // outcome_counter_slots entries, or null
    bool report_nonfinite = false;              // nonfinite::raise: the host would have thrown
};

// A logical warp of Lanes threads working on one group.
template <int Lanes>
struct subwarp_team {
    using reduce_partial = cub::WarpReduce<outcome_partial, Lanes>;
    using reduce_double = cub::WarpReduce<double, Lanes>;
    struct storage {
        typename reduce_partial::TempStorage partial;
        typename reduce_double::TempStorage sum;
    };
    storage& s;
    int lane;
    unsigned mask;

    __device__ int rank() const { return lane; }
    __device__ int size() const { return Lanes; }
    __device__ bool leader() const { return lane == 0; }
    __device__ outcome_partial reduce(const outcome_partial& v) {
        const outcome_partial r = reduce_partial(s.partial).Reduce(v, outcome_partial_combine{});
        return cub::ShuffleIndex<Lanes>(r, 0, mask);
    }
    __device__ double sum(double v) {
        const double r = reduce_double(s.sum).Sum(v);
        return cub::ShuffleIndex<Lanes>(r, 0, mask);
    }
};

// A whole block working on one group.
template <int Threads>
struct block_team {
    using reduce_partial = cub::BlockReduce<outcome_partial, Threads>;
    using reduce_double = cub::BlockReduce<double, Threads>;
    struct storage {
        union {
            typename reduce_partial::TempStorage partial;
            typename reduce_double::TempStorage sum;
        } temp;
        outcome_partial partial_result;
        double sum_result;
    };
    storage& s;

    __device__ int rank() const { return static_cast<int>(threadIdx.x); }
    __device__ int size() const { return Threads; }
    __device__ bool leader() const { return threadIdx.x == 0; }
    __device__ outcome_partial reduce(const outcome_partial& v) {
        __syncthreads();  // the temp storage may still be read by the previous reduction
        const outcome_partial r = reduce_partial(s.temp.partial).Reduce(v, outcome_partial_combine{});
        if (threadIdx.x == 0) s.partial_result = r;
        __syncthreads();
        return s.partial_result;
    }
    __device__ double sum(double v) {
        __syncthreads();
        const double r = reduce_double(s.temp.sum).Sum(v);
        if (threadIdx.x == 0) s.sum_result = r;
        __syncthreads();
        return s.sum_result;
    }
};

// The three passes over rows [begin, end) of one group; every thread of the team calls it.
template <class Team, class In, class Out>
__device__ void outcome_group(Team& team, const outcome_args<In, Out>& a, const outcome_params& p, index_t begin,
                              index_t end) {
    const bool skip = p.skip_nan;
    outcome_partial part;
    for (index_t j = begin + team.rank(); j < end; j += team.size()) part.add(static_cast<double>(a.x[j * a.x_stride]), skip);
    part = team.reduce(part);

    const double mean = outcome_mean(part);
    double m2 = 0;
    if (p.std_scale == scale::group && part.count > 1) {
        double local = 0;
        for (index_t j = begin + team.rank(); j < end; j += team.size())
            local += outcome_sq_dev(static_cast<double>(a.x[j * a.x_stride]), mean, skip);
        m2 = team.sum(local);
    }
    const outcome_transform t = make_outcome_transform(p, finish_moments(part, m2));
    for (index_t j = begin + team.rank(); j < end; j += team.size())
        a.y[j * a.y_stride] = static_cast<Out>(t(static_cast<double>(a.x[j * a.x_stride])));

    if (team.leader()) {
        std::uint32_t bits = 0;
        if (a.report_nonfinite && (part.flags & 2u)) bits |= status_nonfinite_input;
        if (t.singleton_error) bits |= status_singleton_group;
        posttrain::detail::report_status(a.status, bits);
        if (a.counters != nullptr) {
            atomicAdd(a.counters + 0, 1ull);
            if (t.kind != group_regular) atomicAdd(a.counters + t.kind, 1ull);
            const unsigned long long ignored = static_cast<unsigned long long>(end - begin - part.count);
            if (skip && ignored != 0) atomicAdd(a.counters + 4, ignored);
        }
    }
}

template <class In, class Out>
__device__ outcome_params resolve_params(const outcome_args<In, Out>& a) {
    outcome_params p = a.params;
    if (a.batch_sigma != nullptr) p.batch_sigma = *a.batch_sigma;
    return p;
}

// Group g goes to this kernel when its size is <= max_rows; each logical warp walks the groups
// with a grid stride. Invalid layout entries are reported and skipped.
template <int Lanes, class In, class Out, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    outcome_subwarp_kernel(outcome_args<In, Out> a, Layout layout, index_t groups, index_t max_rows) {
    using team_t = subwarp_team<Lanes>;
    constexpr int teams_per_block = cuda_tuning::block_threads / Lanes;
    __shared__ typename team_t::storage storage[teams_per_block];
    const int team_id = static_cast<int>(threadIdx.x) / Lanes;
    const int lane = static_cast<int>(threadIdx.x) % Lanes;
    team_t team{storage[team_id], lane, cub::WarpMask<Lanes>(static_cast<unsigned>((threadIdx.x % 32) / Lanes))};
    const outcome_params p = resolve_params(a);
    const index_t stride = static_cast<index_t>(gridDim.x) * teams_per_block;
    for (index_t g = static_cast<index_t>(blockIdx.x) * teams_per_block + team_id; g < groups; g += stride) {
        index_t begin, end;
        if (!layout.bounds(g, begin, end)) {
            if (lane == 0) posttrain::detail::report_status(a.status, status_invalid_groups);
            continue;
        }
        if (end - begin > max_rows) continue;
        outcome_group(team, a, p, begin, end);
    }
}

// Group g goes to this kernel when its size is > min_rows; blocks walk the groups with a grid stride.
template <class In, class Out, class Layout>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    outcome_block_kernel(outcome_args<In, Out> a, Layout layout, index_t groups, index_t min_rows) {
    using team_t = block_team<cuda_tuning::block_threads>;
    __shared__ typename team_t::storage storage;
    team_t team{storage};
    const outcome_params p = resolve_params(a);
    for (index_t g = blockIdx.x; g < groups; g += gridDim.x) {
        index_t begin, end;
        if (!layout.bounds(g, begin, end)) {
            if (threadIdx.x == 0) posttrain::detail::report_status(a.status, status_invalid_groups);
            continue;
        }
        if (end - begin <= min_rows) continue;
        outcome_group(team, a, p, begin, end);
    }
}

// Batch std (scale::batch) in three deterministic steps over a fixed number of partials:
// partial count/sum per block, then partial squared deviations, then one block finishes.
template <class In>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_sum_kernel(const In* x, index_t xs, index_t n, bool skip, outcome_partial* partials) {
    using reduce_t = cub::BlockReduce<outcome_partial, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    outcome_partial part;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        part.add(static_cast<double>(x[i * xs]), skip);
    part = reduce_t(temp).Reduce(part, outcome_partial_combine{});
    if (threadIdx.x == 0) partials[blockIdx.x] = part;
}

// Every block folds the partials in the same order, so all agree on the mean.
__device__ inline outcome_partial fold_partials(const outcome_partial* partials, int count) {
    using reduce_t = cub::BlockReduce<outcome_partial, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    __shared__ outcome_partial result;
    outcome_partial part;
    for (int i = static_cast<int>(threadIdx.x); i < count; i += cuda_tuning::block_threads)
        part = outcome_partial_combine{}(part, partials[i]);
    part = reduce_t(temp).Reduce(part, outcome_partial_combine{});
    if (threadIdx.x == 0) result = part;
    __syncthreads();
    return result;
}

template <class In>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_m2_kernel(const In* x, index_t xs, index_t n, bool skip, const outcome_partial* partials, double* m2_partials) {
    using reduce_t = cub::BlockReduce<double, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    const double mean = outcome_mean(fold_partials(partials, static_cast<int>(gridDim.x)));
    double local = 0;
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step)
        local += outcome_sq_dev(static_cast<double>(x[i * xs]), mean, skip);
    local = reduce_t(temp).Sum(local);
    if (threadIdx.x == 0) m2_partials[blockIdx.x] = local;
}

__global__ void __launch_bounds__(cuda_tuning::block_threads)
    batch_finish_kernel(const outcome_partial* partials, const double* m2_partials, int count, outcome_params params,
                        double* sigma) {
    using reduce_t = cub::BlockReduce<double, cuda_tuning::block_threads>;
    __shared__ typename reduce_t::TempStorage temp;
    const outcome_partial s = fold_partials(partials, count);
    double local = 0;
    for (int i = static_cast<int>(threadIdx.x); i < count; i += cuda_tuning::block_threads) local += m2_partials[i];
    local = reduce_t(temp).Sum(local);
    if (threadIdx.x == 0) *sigma = batch_sigma_of(params, s, local);
}

// Scratch of an outcome call: only scale::batch needs any (the partials and the batch std).
inline std::size_t outcome_workspace_bytes(scale s) noexcept {
    if (s != scale::batch) return 0;
    using posttrain::detail::scratch_align;
    return scratch_align(sizeof(outcome_partial) * cuda_tuning::batch_partials) +
           scratch_align(sizeof(double) * cuda_tuning::batch_partials) + scratch_align(sizeof(double));
}

template <int Lanes, class In, class Out, class Layout>
void launch_subwarp(const exec::cuda_policy& pol, const outcome_args<In, Out>& a, const Layout& layout, index_t groups,
                    index_t max_rows) {
    constexpr index_t per_block = cuda_tuning::block_threads / Lanes;
    index_t blocks = (groups + per_block - 1) / per_block;
    if (blocks > cuda_tuning::max_grid_blocks) blocks = cuda_tuning::max_grid_blocks;
    outcome_subwarp_kernel<Lanes><<<static_cast<unsigned>(blocks), cuda_tuning::block_threads, 0, pol.stream>>>(
        a, layout, groups, max_rows);
    posttrain::detail::check_launch("posttrain::advantage (CUDA outcome kernel)");
}

// Picks the kernel shapes for a layout and launches them on the policy's stream.
template <class In, class Out, class DeviceLayout>
void launch_outcome(const exec::cuda_policy& pol, device_view<const In, 1> r, device_view<Out, 1> adv,
                    const posttrain::detail::device_layout_info<DeviceLayout>& info, const outcome_params& params,
                    bool report_nonfinite, unsigned long long* counters, posttrain::detail::where w) {
    const index_t n = r.extent(0);
    const index_t groups = info.groups;
    if (groups == 0) return;
    outcome_args<In, Out> a;
    a.x = r.data();
    a.x_stride = r.stride(0);
    a.y = adv.data();
    a.y_stride = adv.stride(0);
    a.params = params;
    a.status = pol.status;
    a.counters = counters;
    a.report_nonfinite = report_nonfinite;

    posttrain::detail::cuda_scratch scratch(pol, outcome_workspace_bytes(params.std_scale), w);
    if (params.std_scale == scale::batch) {
        using posttrain::detail::scratch_align;
        constexpr int parts = cuda_tuning::batch_partials;
        auto* partials = scratch.as<outcome_partial>();
        auto* m2 = scratch.as<double>(scratch_align(sizeof(outcome_partial) * parts));
        auto* sigma = scratch.as<double>(scratch_align(sizeof(outcome_partial) * parts) + scratch_align(sizeof(double) * parts));
        batch_sum_kernel<<<parts, cuda_tuning::block_threads, 0, pol.stream>>>(a.x, a.x_stride, n, params.skip_nan, partials);
        posttrain::detail::check_launch(w.function);
        batch_m2_kernel<<<parts, cuda_tuning::block_threads, 0, pol.stream>>>(a.x, a.x_stride, n, params.skip_nan, partials, m2);
        posttrain::detail::check_launch(w.function);
        batch_finish_kernel<<<1, cuda_tuning::block_threads, 0, pol.stream>>>(partials, m2, parts, params, sigma);
        posttrain::detail::check_launch(w.function);
        a.batch_sigma = sigma;
    }

    // Uniform layouts know every size; ragged ones only the average, so groups above warp_group_max
    // are left by the warp kernel to a block-per-group pass.
    const index_t typical = info.exact_size >= 0 ? info.exact_size : n / groups;
    const index_t no_limit = n + 1;
    bool need_block_pass = false;
    index_t block_min_rows = -1;
    if (typical > cuda_tuning::warp_group_max) {
        need_block_pass = true;
    } else {
        const index_t warp_max = info.exact_size >= 0 ? no_limit : cuda_tuning::warp_group_max;
        switch (cuda_tuning::lanes_for(typical)) {
            case 4: launch_subwarp<4>(pol, a, info.layout, groups, warp_max); break;
            case 8: launch_subwarp<8>(pol, a, info.layout, groups, warp_max); break;
            case 16: launch_subwarp<16>(pol, a, info.layout, groups, warp_max); break;
            default: launch_subwarp<32>(pol, a, info.layout, groups, warp_max); break;
        }
        need_block_pass = info.exact_size < 0;
        block_min_rows = cuda_tuning::warp_group_max;
    }
    if (need_block_pass) {
        const index_t blocks = groups < cuda_tuning::max_grid_blocks ? groups : cuda_tuning::max_grid_blocks;
        outcome_block_kernel<<<static_cast<unsigned>(blocks), cuda_tuning::block_threads, 0, pol.stream>>>(
            a, info.layout, groups, block_min_rows);
        posttrain::detail::check_launch(w.function);
    }
}

}  // namespace posttrain::advantage::detail

namespace posttrain::advantage::detail {

// The public entry shared by grpo.cuh and rloo.cuh: checks what the host can check, converts the
// arguments to device views (device_view, or DLPack tensors on a CUDA device) and launches.
// `stats`, when not empty, receives outcome_counter_slots int64 counters (added to, not overwritten).
template <class Rewards, class Groups, class Advantages>
void run_outcome_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups,
                      Advantages&& advantages, const outcome_params& params, nonfinite nonfinite_rewards,
                      device_view<index_t, 1> stats, const char* fn) {
    using posttrain::detail::require;
    auto rv = posttrain::detail::floating_input<1, device_space>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1, device_space>(advantages, {fn, "advantages"});
    require(stats.size() == 0 || stats.extent(0) == outcome_counter_slots, {fn, "stats"},
            "expected " + posttrain::detail::str(outcome_counter_slots) +
                " device counters (groups, empty, singleton, zero-variance, ignored rows), found " +
                posttrain::detail::str(stats.extent(0)));
    require(stats.size() == 0 || stats.stride(0) == 1, {fn, "stats"}, "the counters must be contiguous");
    std::visit(
        [&](auto r, auto a) {
            const posttrain::detail::where groups_arg{fn, "groups"};
            require(a.extent(0) == r.extent(0), {fn, "advantages"},
                    "expected length (one advantage per reward) " + posttrain::detail::str(r.extent(0)) + ", found " +
                        posttrain::detail::str(a.extent(0)));
            require(!views_overlap(a, r), {fn, "advantages"},
                    "the output overlaps the input 'rewards'; pass a separate buffer");
            const auto info = posttrain::detail::make_device_layout(policy, groups, r.extent(0), groups_arg);
            if (params.singleton_groups == singleton::error && info.exact_size == 1 && r.extent(0) > 0)
                posttrain::detail::raise_invalid_argument(fn, "groups",
                                                          "every group has a single row (singleton::error)");
            launch_outcome(policy, r, a, info, params, nonfinite_rewards == nonfinite::raise,
                           reinterpret_cast<unsigned long long*>(stats.data()), {fn, "policy"});
        },
        rv, av);
}

}  // namespace posttrain::advantage::detail
