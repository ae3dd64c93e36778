#pragma once
// GDPO and the sum-then-normalize aggregation on the GPU: the exec::cuda overloads of advantage::gdpo.
//
//     pt::advantage::gdpo(pt::exec::cuda.on(stream), d_rewards /* [N, K] */, pt::uniform_groups{8},
//                         d_advantages, pt::advantage::gdpo_options::gdpo({1.0, 0.5}));
//
// Built from the outcome kernels (cuda/outcome.cuh), in the host's order:
//   normalize_then_sum   for each component k: GRPO of the column r[:, k] (any strides) into a
//                        double buffer z, then S += w_k z (in component order); then the batch
//                        z-score of S as one group spread over the whole GPU (launch_single_group:
//                        batch moments, one transform, an elementwise apply), or S itself.
//   sum_then_normalize   S = sum_k w_k r[:, k] in one pass (32 weights per launch, passed by value),
//                        then GRPO of S.
// S is formed with round-to-nearest multiplies and adds (no FMA contraction), as the host forms it,
// so S differs from the host's only through the GRPO results it sums. combined[N] (optional)
// receives S. Rewards are a float or double [N, K] device view or DLPack tensor on a CUDA device;
// advantages and combined float or double [N]; groups uniform_groups, ragged device offsets or a
// device_permuted_groups. Asynchronous on the policy's stream; run-to-run deterministic.
//
// Status bits: status_nonfinite_input (nonfinite::raise and a NaN/inf reward), status_singleton_group
// and status_invalid_groups as in <grpo.cuh>. The `stats` overload adds the group_stats_result
// counters into stats[5] on the device, as the host sums them: over the components (normalize_then_sum:
// groups counted once, the other counters per component), or those of the GRPO of S.
//
// Scratch: gdpo_workspace_bytes(N, options) (S, the component buffer, counters and the batch
// reductions), from .with(workspace) or cudaMallocAsync on the stream.

#if !defined(__CUDACC__)
#error "<posttrain/advantage/gdpo.cuh> needs nvcc: include it only from .cu files"
#endif

#include "../cuda/outcome.cuh"
#include "gdpo.hpp"
#include "grpo_params.hpp"

namespace posttrain::advantage {

namespace detail {

// The weights of up to 32 consecutive components, passed to a kernel by value.
struct gdpo_weights {
    static constexpr int capacity = 32;
    double w[capacity];
    int count = 0;
};

// Component c (0..count-1 of a launch) of row i: the raw reward (sum_then_normalize) ...
template <class In>
struct raw_component {
    const In* x;
    index_t s0, s1;
    index_t k0;
    __device__ double operator()(index_t i, int c) const { return static_cast<double>(x[i * s0 + (k0 + c) * s1]); }
};
// ... or the component's group z-score (normalize_then_sum, one component per launch).
struct z_component {
    const double* z;
    __device__ double operator()(index_t i, int) const { return z[i]; }
};

// sum[i] = (first ? 0 : sum[i]) + sum_c w_c * value(i, c), in component order. Under
// nonfinite::ignore a component is left out where its raw reward or its value (a group z-score can
// be NaN for a finite reward: an inf in the group, singleton::nan, a NaN batch std) is NaN, as the
// host's nansum leaves out NaN terms; contributed[i] carries across launches whether any component
// of row i was summed, and the last launch makes a row without one NaN (unscorable). `report` sets
// status_nonfinite_input for a NaN/inf raw reward of the launch's components.
template <class In, class Values>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    gdpo_sum_kernel(Values value, const In* raw, index_t rs0, index_t rs1, index_t n, index_t k0, gdpo_weights w,
                    bool ignore, bool first, bool last, bool report, std::uint32_t* status, double* sum,
                    unsigned char* contributed) {
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step) {
        double s = first ? 0.0 : sum[i];
        bool any = first ? false : contributed[i] != 0;
        bool nonfinite = false;
        for (int c = 0; c < w.count; ++c) {
            const double v = value(i, c);
            if (ignore || report) {
                const In r = raw[i * rs0 + (k0 + c) * rs1];
                nonfinite |= !(r - r == r - r);
                if (ignore && (r != r || v != v)) continue;
            }
            s = f64_add(s, f64_mul(w.w[c], v));  // unfused, as the host forms it
            any = true;
        }
        if (ignore && last && !any) s = quiet_nan();
        sum[i] = s;
        if (ignore && !last) contributed[i] = any ? 1 : 0;
        if (report && nonfinite) posttrain::detail::report_status(status, status_nonfinite_input);
    }
}

// y[i] = sum[i] (NaN -> 0 when nan_to_zero).
template <class Out>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    gdpo_store_kernel(const double* sum, index_t n, Out* y, index_t ys, bool nan_to_zero) {
    const index_t step = static_cast<index_t>(gridDim.x) * cuda_tuning::block_threads;
    for (index_t i = static_cast<index_t>(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; i < n; i += step) {
        const double s = sum[i];
        y[i * ys] = static_cast<Out>(nan_to_zero && s != s ? 0.0 : s);
    }
}

// Adds counters[1..4] (empty, singleton, zero-variance, ignored) into stats: components after the
// first count their groups' kinds but not the groups again.
template <int Unused = 0>
__global__ void gdpo_add_kinds_kernel(const unsigned long long* counters, unsigned long long* stats) {
    const int slot = static_cast<int>(threadIdx.x) + 1;
    if (slot < outcome_counter_slots && counters[slot] != 0) stats[slot] += counters[slot];
}

// Where gdpo's scratch goes: S, the component buffer and its counters (normalize_then_sum), and the
// region the outcome kernels and the batch z-score use one after the other.
struct gdpo_scratch_layout {
    std::size_t sum = 0, contributed = 0, z = 0, counters = 0, engine = 0, bytes = 0;
    gdpo_scratch_layout(index_t rows, const gdpo_options& o) {
        posttrain::detail::scratch_cursor c;
        const bool normalize = o.mode == aggregation::normalize_then_sum;
        const bool ignore = o.component.nonfinite_rewards == nonfinite::ignore;
        sum = c.take(sizeof(double) * static_cast<std::size_t>(rows));
        contributed = c.take(ignore ? static_cast<std::size_t>(rows) : 0);
        z = c.take(normalize ? sizeof(double) * static_cast<std::size_t>(rows) : 0);
        counters = c.take(normalize ? sizeof(unsigned long long) * outcome_counter_slots : 0);
        std::size_t shared = outcome_workspace_bytes(o.component.std_scale);
        if (normalize && o.batch_normalize && shared < batch_scratch_bytes()) shared = batch_scratch_bytes();
        engine = c.take(shared);
        bytes = c.end;
    }
};

template <class Rewards, class Groups, class Advantages, class Combined>
void run_gdpo_cuda(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
                   Combined&& combined, const gdpo_options& options, device_view<index_t, 1> stats) {
    constexpr const char* fn = "posttrain::advantage::gdpo";
    using posttrain::detail::require;
    using posttrain::detail::str;
    const bool normalize = options.mode == aggregation::normalize_then_sum;
    const bool ignore = options.component.nonfinite_rewards == nonfinite::ignore;
    const bool report = options.component.nonfinite_rewards == nonfinite::raise;
    auto rv = posttrain::detail::floating_input<2, device_space>(rewards, {fn, "rewards"});
    auto av = posttrain::detail::floating_output<1, device_space>(advantages, {fn, "advantages"});
    constexpr bool has_combined = !std::is_same_v<std::remove_cvref_t<Combined>, none_t>;
    auto cv = [&] {
        if constexpr (has_combined) return posttrain::detail::floating_output<1, device_space>(combined, {fn, "combined"});
        else return std::variant<device_view<double, 1>>{};
    }();
    check_counters(stats, fn);
    std::visit(
        [&](auto r, auto a, auto c) {
            const index_t N = r.extent(0), K = r.extent(1);
            require(options.weights.empty() || index_t(options.weights.size()) == K, {fn, "options.weights"},
                    "expected one weight per reward component (" + str(K) + "), found " + str(index_t(options.weights.size())));
            if constexpr (has_combined) {
                check_gdpo_combined(c, r, a, fn);
                check_apart_from_layout(groups, c, fn, "combined");
            }
            // The options (and singleton::error) are checked where the host uses them: the component
            // GRPO runs on each column, or once on the sum (even of no component); the batch z-score
            // only under normalize_then_sum with batch_normalize.
            const bool component_runs = !normalize || K > 0;
            const outcome_params component = component_runs ? grpo_params(options.component, fn) : outcome_params{};
            const outcome_params batch =
                normalize && options.batch_normalize ? grpo_params(gdpo_batch_options(options), fn) : outcome_params{};
            const auto info = checked_device_layout(policy, groups, r, a, stats,
                                                    component_runs ? options.component.singleton_groups : singleton::zero, fn,
                                                    std::pair{c, "combined"});

            using In = typename decltype(r)::value_type;
            using Out = typename decltype(a)::value_type;
            const gdpo_scratch_layout at(N, options);
            posttrain::detail::cuda_scratch scratch(policy, at.bytes, {fn, "policy"});
            double* sum = scratch.template as<double>(at.sum);
            auto* contributed = scratch.template as<unsigned char>(at.contributed);
            unsigned char* engine = scratch.template as<unsigned char>(at.engine);
            auto* counters = reinterpret_cast<unsigned long long*>(stats.data());
            const unsigned blocks = cuda_tuning::elementwise_blocks(N);
            auto weight = [&](index_t k) { return options.weights.empty() ? 1.0 : options.weights[std::size_t(k)]; };

            if (N > 0 && K == 0) POSTTRAIN_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double) * std::size_t(N), policy.stream));
            if (!normalize) {
                for (index_t k0 = 0; k0 < K; k0 += gdpo_weights::capacity) {
                    gdpo_weights w;
                    w.count = static_cast<int>(K - k0 < gdpo_weights::capacity ? K - k0 : gdpo_weights::capacity);
                    for (int i = 0; i < w.count; ++i) w.w[i] = weight(k0 + i);
                    if (N > 0)
                        gdpo_sum_kernel<<<blocks, cuda_tuning::block_threads, 0, policy.stream>>>(
                            raw_component<In>{r.data(), r.stride(0), r.stride(1), k0}, r.data(), r.stride(0), r.stride(1),
                            N, k0, w, ignore, k0 == 0, k0 + w.count == K, report, policy.status, sum, contributed);
                    posttrain::detail::check_launch(fn);
                }
                launch_outcome(policy, device_view<const double, 1>(sum, N), a, info, component, report, counters, engine,
                               nullptr, {fn, "policy"});
            } else {
                double* z = scratch.template as<double>(at.z);
                auto* later = scratch.template as<unsigned long long>(at.counters);
                if (counters != nullptr && K > 1)
                    POSTTRAIN_CUDA_CHECK(cudaMemsetAsync(later, 0, sizeof(unsigned long long) * outcome_counter_slots,
                                                         policy.stream));
                for (index_t k = 0; k < K; ++k) {
                    const index_t extents[1] = {N}, strides[1] = {r.stride(0)};
                    const device_view<const In, 1> column(r.data() + k * r.stride(1), extents, strides);
                    launch_outcome(policy, column, device_view<double, 1>(z, N), info, component, report,
                                   counters == nullptr ? nullptr : k == 0 ? counters : later, engine, nullptr,
                                   {fn, "policy"});
                    gdpo_weights w;
                    w.count = 1;
                    w.w[0] = weight(k);
                    if (N > 0)
                        gdpo_sum_kernel<<<blocks, cuda_tuning::block_threads, 0, policy.stream>>>(
                            z_component{z}, r.data(), r.stride(0), r.stride(1), N, k, w, ignore, k == 0, k == K - 1,
                            false, policy.status, sum, contributed);
                    posttrain::detail::check_launch(fn);
                }
                if (counters != nullptr && K > 1) {
                    gdpo_add_kinds_kernel<<<1, 32, 0, policy.stream>>>(later, counters);
                    posttrain::detail::check_launch(fn);
                }
                if (options.batch_normalize) {
                    outcome_args<double, Out> args;
                    args.x = sum;
                    args.y = a.data();
                    args.y_stride = a.stride(0);
                    args.params = batch;
                    args.status = policy.status;
                    launch_single_group(policy, args, N, engine, fn);
                } else if (N > 0) {
                    gdpo_store_kernel<<<blocks, cuda_tuning::block_threads, 0, policy.stream>>>(sum, N, a.data(), a.stride(0),
                                                                                               ignore);
                    posttrain::detail::check_launch(fn);
                }
            }
            if constexpr (has_combined) {
                if (N > 0) {
                    gdpo_store_kernel<<<blocks, cuda_tuning::block_threads, 0, policy.stream>>>(sum, N, c.data(), c.stride(0),
                                                                                               false);
                    posttrain::detail::check_launch(fn);
                }
            }
        },
        rv, av, cv);
}

}  // namespace detail

// Bytes of scratch gdpo needs on the CUDA path for N rows under these options.
inline std::size_t gdpo_workspace_bytes(index_t rows, const gdpo_options& options = {}) {
    return detail::gdpo_scratch_layout(rows, options).bytes;
}

// rewards[N, K] -> advantages[N]; combined[N] (or posttrain::none) receives S.
template <class Rewards, class Groups, class Advantages, class Combined>
void gdpo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          Combined&& combined, const gdpo_options& options) {
    detail::run_gdpo_cuda(policy, rewards, groups, advantages, combined, options, {});
}

template <class Rewards, class Groups, class Advantages>
void gdpo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          const gdpo_options& options = {}) {
    detail::run_gdpo_cuda(policy, rewards, groups, advantages, none, options, {});
}

// As the first overload, and adds the group_stats_result counters into stats[5] on the device.
template <class Rewards, class Groups, class Advantages, class Combined>
void gdpo(const exec::cuda_policy& policy, const Rewards& rewards, const Groups& groups, Advantages&& advantages,
          Combined&& combined, const gdpo_options& options, device_view<index_t, 1> stats) {
    detail::run_gdpo_cuda(policy, rewards, groups, advantages, combined, options, stats);
}

}  // namespace posttrain::advantage
