#pragma once
// Token entropy from logits, and its backward, on the GPU: the exec::cuda overload of
// policy_loss::entropy_from_logits (entropy.hpp), with the same arguments and options. It is the
// logits module's CUDA primitive (<posttrain/logits/token_log_probs.cuh>) without labels: the
// forward writes H per position in one online pass over the vocabulary; with grad_logits, the
// backward writes grad_entropy * dH/dz from statistics it recomputes (two more reads of the logits,
// no softmax stored; the gradient is enqueued before the entropy). Logits [B, T, V] float, double, half or bfloat16 (accumulated in float for
// all but double); entropy a float or double [B, T] device view or posttrain::none; grad_logits the
// logits' dtype or none; grad_entropy a [B, T] device view or one number (1: the gradient of
// sum(H)), which is then stored on the device by a one-thread kernel and read through a
// broadcast view. NaN/+inf logits under nonfinite::raise set status_nonfinite_input in the policy's
// status word (the position's outputs are NaN); a -inf logit is a vocabulary entry of probability 0.
//
//     pt::policy_loss::entropy_from_logits(pt::exec::cuda.on(stream), d_logits, d_entropy, d_grad_logits);
//
// Scratch: entropy_from_logits_workspace_bytes(B, T, with_grad) (the backward's per-position
// records and the scalar upstream), from .with(workspace) or cudaMallocAsync on the stream.
//
// entropy_loss (the entropy term of the loss, aggregated with a mask as verl's compute_entropy_loss)
// runs the same primitive: H into double scratch (copied into `entropy` when given), the aggregation
// of aggregate.cuh (its gradient is d loss / d H = row_factor(n_i) * grad_scale * w), then the
// primitive's backward with that upstream and labels derived from the mask (masked positions are
// ignored: their logits are not read and their gradient rows are 0, as the host's select). Scratch:
// entropy_loss_workspace_bytes(B, T, with_grad).

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/entropy.cuh> needs nvcc: include it only from .cu files"
#endif

#include <tuple>
#include <type_traits>

#include "../cuda/tuning.cuh"
#include "../logits/token_log_probs.cuh"
#include "aggregate.cuh"
#include "entropy.hpp"

namespace posttrain::policy_loss {

namespace detail {

template <int Unused = 0>
__global__ void store_scalar_kernel(double* p, double v) {
    *p = v;
}

inline logits::token_log_probs_options primitive_options(const entropy_options& o) noexcept {
    logits::token_log_probs_options r;
    r.nonfinite_logits = o.nonfinite_logits;
    return r;
}

// The scalar upstream's slot, after the backward's records.
inline std::size_t scalar_upstream_at(index_t batch, index_t time) {
    return posttrain::detail::scratch_align(logits::token_log_probs_backward_workspace_bytes(batch, time, 0, false));
}

// The labels the logits primitive's backward takes for entropy_loss: 0 (any valid class: no log-prob
// gradient is asked) where the mask is non-zero, ignore_index elsewhere, so that masked positions get a
// zero gradient row and their logits are never read (select, never multiply).
template <class M>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    labels_from_mask_kernel(const device_view<const M, 2> mask, std::int32_t* labels, std::int32_t ignore) {
    const index_t B = mask.extent(0), T = mask.extent(1);
    const index_t step = index_t(gridDim.x) * cuda_tuning::block_threads;
    for (index_t k = index_t(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; k < B * T; k += step) {
        const index_t i = k / T, t = k - i * T;
        labels[k] = mask_value(mask.data()[i * mask.stride(0) + t * mask.stride(1)]) != 0 ? 0 : ignore;
    }
}

// y[i, t] = x[i * T + t]: a contiguous [B, T] double buffer (or zeros, x null) into the caller's
// entropy, float or double, any strides.
template <class H>
__global__ void __launch_bounds__(cuda_tuning::block_threads)
    store_tokens_kernel(const double* x, index_t B, index_t T, H* y, index_t s0, index_t s1) {
    const index_t step = index_t(gridDim.x) * cuda_tuning::block_threads;
    for (index_t k = index_t(blockIdx.x) * cuda_tuning::block_threads + threadIdx.x; k < B * T; k += step) {
        const index_t i = k / T, t = k - i * T;
        y[i * s0 + t * s1] = static_cast<H>(x != nullptr ? x[k] : 0.0);
    }
}

// Writes H (x; null: zeros) into the caller's [B, T] entropy output.
template <class Entropy>
void store_entropy(const exec::cuda_policy& policy, const double* x, Entropy&& entropy, index_t B, index_t T, const char* fn) {
    if (B * T == 0) return;
    std::visit(
        [&](auto e) {
            store_tokens_kernel<<<cuda_tuning::elementwise_blocks(B * T), cuda_tuning::block_threads, 0, policy.stream>>>(
                x, B, T, e.data(), e.stride(0), e.stride(1));
            posttrain::detail::check_launch(fn);
        },
        posttrain::detail::floating_output<2, device_space>(entropy, {fn, "entropy"}));
}

// The checks entropy_from_logits and entropy_loss both make, as the host makes them, before anything
// is allocated or launched: the primitive's options and vocabulary, the entropy output ([B, T], apart
// from the logits) and grad_logits (the logits' dtype and shape, apart from the logits and from the
// entropy); also(g) adds the caller's own overlaps with grad_logits. Returns the entropy operand.
template <class Z, class Entropy, class GradLogits, class Also>
logits::detail::operand2 check_entropy_outputs(const Z& z, const Entropy& entropy, const GradLogits& grad_logits,
                                               const logits::token_log_probs_options& prim, const char* fn,
                                               const Also& also) {
    logits::detail::check_options(prim, fn);
    logits::detail::check_vocab(z.extent(2), fn);
    const auto h = logits::detail::device_operand<false>(entropy, z.extent(0), z.extent(1), fn, "entropy");
    logits::detail::check_no_alias(h.bytes, z, {fn, "entropy"}, "logits");
    if constexpr (!std::is_same_v<std::remove_cvref_t<GradLogits>, none_t>)
        std::visit(
            [&](auto g) {
                require(std::is_same_v<typename decltype(g)::value_type, typename Z::value_type>, {fn, "grad_logits"},
                        "must have the dtype of logits");
                check_same_shape(g, z, {fn, "grad_logits"}, "logits");
                check_no_alias(g, z, {fn, "grad_logits"}, "logits");
                logits::detail::check_no_alias(h.bytes, g, {fn, "entropy"}, "grad_logits");
                also(g);
            },
            posttrain::detail::device_floats<false, 3>(grad_logits, {fn, "grad_logits"}));
    return h;
}

// entropy_loss's scratch: H and dloss/dH in double, the labels, then the aggregation's and the
// backward's own scratch, each handed to its call as that call's workspace.
struct entropy_loss_scratch_layout {
    std::size_t h = 0, up = 0, labels = 0, result = 0, aggregate = 0, aggregate_bytes = 0, backward = 0,
                backward_bytes = 0, total = 0;
    entropy_loss_scratch_layout(index_t B, index_t T, bool grad) {
        posttrain::detail::scratch_cursor c;
        const std::size_t tokens = static_cast<std::size_t>(B * T);
        h = c.take(sizeof(double) * tokens);
        result = c.take(sizeof(aggregate_result));
        up = c.take(grad ? sizeof(double) * tokens : 0);
        labels = c.take(grad ? sizeof(std::int32_t) * tokens : 0);
        aggregate_bytes = aggregate_workspace_bytes(B, T);
        aggregate = c.take(aggregate_bytes);
        backward_bytes = grad ? logits::token_log_probs_backward_workspace_bytes(B, T, 0, false) : 0;
        backward = c.take(backward_bytes);
        total = c.end;
    }
};

}  // namespace detail

inline std::size_t entropy_loss_workspace_bytes(index_t batch, index_t time, bool with_grad) {
    return detail::entropy_loss_scratch_layout(batch, time, with_grad).total;
}

namespace detail {

template <class Logits, class Mask, class Entropy, class GradLogits>
void entropy_loss_cuda(const exec::cuda_policy& policy, const Logits& logits, const Mask& mask, Entropy&& entropy,
                       GradLogits&& grad_logits, const aggregation_options& aggregation, double grad_scale,
                       const entropy_options& options, aggregate_result* d_result, aggregate_result* h_result) {
    constexpr const char* fn = "posttrain::policy_loss::entropy_loss";
    check_entropy_options(options, fn);
    check_aggregation_options(aggregation, fn);
    constexpr bool grad = !std::is_same_v<std::remove_cvref_t<GradLogits>, none_t>;
    constexpr bool has_entropy = !std::is_same_v<std::remove_cvref_t<Entropy>, none_t>;
    const auto [B, T, V] = std::visit(
        [](auto z) { return std::tuple<index_t, index_t, index_t>(z.extent(0), z.extent(1), z.extent(2)); },
        posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
    const auto prim = primitive_options(options);
    // Every argument is checked before anything is allocated or launched.
    std::visit(
        [&](auto m) {
            logits::detail::check_leading(m.extent(0), m.extent(1), B, T, {fn, "mask"});
            std::visit(
                [&](auto z) {
                    using Z = typename decltype(z)::value_type;
                    device_view<const Z, 3> gz;  // grad_logits (of the logits' dtype, checked), or empty
                    const auto h = check_entropy_outputs(z, entropy, grad_logits, prim, fn, [&](const auto& g) {
                        check_no_alias(g, m, {fn, "grad_logits"}, "mask");
                        check_result_apart(d_result, g, fn, "grad_logits");
                        if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(g)>::value_type, Z>) gz = g;
                    });
                    logits::detail::check_no_alias(h.bytes, logits::detail::byte_range(m), {fn, "entropy"}, "mask");
                    check_result_apart(d_result, z, fn, "logits");
                    check_result_apart(d_result, m, fn, "mask");
                    check_result_apart(d_result, h.bytes, fn, "entropy");
                    posttrain::detail::check_policy_apart(
                        policy, fn, std::pair{z, "logits"}, std::pair{m, "mask"}, std::pair{h.bytes, "entropy"},
                        std::pair{gz, "grad_logits"},
                        std::pair{device_view<const aggregate_result, 1>(d_result, d_result != nullptr ? 1 : 0), "result"});
                },
                posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));

            const entropy_loss_scratch_layout at(B, T, grad);
            posttrain::detail::cuda_scratch scratch(policy, at.total, {fn, "policy"});
            double* H = scratch.template as<double>(at.h);
            const device_view<double, 2> Hv(H, B, T);
            // An empty vocabulary has entropy 0 (the host's convention; the primitive finds no softmax).
            if (V == 0 && B * T > 0)
                POSTTRAIN_CUDA_CHECK(cudaMemsetAsync(H, 0, sizeof(double) * static_cast<std::size_t>(B * T), policy.stream));
            else  // the forward takes no scratch: it runs without the workspace, which holds H
                logits::detail::token_log_probs_cuda(policy.with(nullptr, 0), logits, none, none, Hv, none, prim, fn);
            if constexpr (has_entropy) store_entropy(policy, H, entropy, B, T, fn);
            const exec::cuda_policy agg = policy.with(scratch.template as<void>(at.aggregate), at.aggregate_bytes);
            const device_view<const double, 2> Hc(H, B, T);
            // The result goes to device memory; the host's copy (and the wait) come after the last launch.
            aggregate_result* out = d_result != nullptr ? d_result : scratch.template as<aggregate_result>(at.result);
            if constexpr (grad) {
                // dloss/dH = row_factor(n_i) * grad_scale * w: the aggregation's gradient, then the chain through H.
                double* up = scratch.template as<double>(at.up);
                aggregate_cuda(agg, Hc, m, device_view<double, 2>(up, B, T), aggregation, grad_scale, out, nullptr);
                auto* labels = scratch.template as<std::int32_t>(at.labels);
                if (B * T > 0 && V > 0)
                    labels_from_mask_kernel<<<cuda_tuning::elementwise_blocks(B * T), cuda_tuning::block_threads, 0,
                                              policy.stream>>>(m, labels, -100);
                posttrain::detail::check_launch(fn);
                logits::token_log_probs_options bo = prim;
                bo.ignore_index = -100;
                if (V > 0)  // else grad_logits has no element
                    logits::detail::token_log_probs_backward_cuda(
                    policy.with(scratch.template as<void>(at.backward), at.backward_bytes), logits,
                    device_view<const std::int32_t, 2>(labels, B, T), none, device_view<const double, 2>(up, B, T), grad_logits,
                    none, none, bo, fn);
            } else {
                aggregate_cuda(agg, Hc, m, none, aggregation, grad_scale, out, nullptr);
            }
            if (h_result != nullptr) {
                POSTTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_result, out, sizeof(aggregate_result), cudaMemcpyDeviceToHost, policy.stream));
                POSTTRAIN_CUDA_CHECK(cudaStreamSynchronize(policy.stream));
            }
        },
        posttrain::detail::mask_input<2, device_space>(mask, {fn, "mask"}));
}

}  // namespace detail

// The entropy term of the loss on the device (entropy_loss, entropy.hpp): H per token by the logits
// primitive (into double scratch, copied to `entropy` when given), aggregated with the mask by
// aggregate.cuh, and, with grad_logits, the chain d loss / d logits = (row_factor * grad_scale * w)
// * dH/dz by the primitive's backward, masked positions selected out (their logits are not read,
// their gradient rows are 0). Asynchronous; the aggregate_result goes to device memory.
template <class Logits, class Mask, class Entropy, class GradLogits>
void entropy_loss(const exec::cuda_policy& policy, const Logits& logits, const Mask& mask, Entropy&& entropy,
                  GradLogits&& grad_logits, const aggregation_options& aggregation, double grad_scale,
                  const entropy_options& options, device_view<aggregate_result, 0> result) {
    detail::entropy_loss_cuda(policy, logits, mask, entropy, grad_logits, aggregation, grad_scale, options, result.data(),
                              nullptr);
}

// The same, returning the aggregate_result on the host: synchronizes the policy's stream.
template <class Logits, class Mask, class Entropy, class GradLogits>
aggregate_result entropy_loss(const exec::cuda_policy& policy, const Logits& logits, const Mask& mask, Entropy&& entropy,
                              GradLogits&& grad_logits, const aggregation_options& aggregation = {}, double grad_scale = 1.0,
                              const entropy_options& options = {}) {
    aggregate_result r;
    detail::entropy_loss_cuda(policy, logits, mask, entropy, grad_logits, aggregation, grad_scale, options, nullptr, &r);
    return r;
}

inline std::size_t entropy_from_logits_workspace_bytes(index_t batch, index_t time, bool with_grad) {
    if (!with_grad) return 0;
    // The backward's own scratch (cuda_scratch takes the workspace from its start) and the scalar slot.
    return detail::scalar_upstream_at(batch, time) + posttrain::detail::scratch_align(sizeof(double));
}

template <class Logits, class Entropy, class GradLogits = none_t, class GradEntropy = double>
void entropy_from_logits(const exec::cuda_policy& policy, const Logits& logits, Entropy&& entropy,
                         GradLogits&& grad_logits = GradLogits{0}, const GradEntropy& grad_entropy = 1.0,
                         const entropy_options& options = {}) {
    constexpr const char* fn = "posttrain::policy_loss::entropy_from_logits";
    detail::check_entropy_options(options, fn);
    const auto prim = detail::primitive_options(options);
    constexpr bool grad = !std::is_same_v<std::remove_cvref_t<GradLogits>, none_t>;
    constexpr bool has_entropy = !std::is_same_v<std::remove_cvref_t<Entropy>, none_t>;
    constexpr bool scalar_up = std::is_arithmetic_v<GradEntropy>;
    // Every argument is checked here, as the host checks them (whether a gradient is asked or not),
    // before anything is allocated or launched; the calls below then find nothing to refuse.
    const auto [B, T, V] = std::visit(
        [&](auto z) {
            // The upstream: a finite number, or a [B, T] view apart from the entropy and the gradient.
            logits::detail::operand2 up;
            if constexpr (scalar_up)
                posttrain::detail::require(numeric::is_finite(double(grad_entropy)), {fn, "grad_entropy"},
                                           "must be finite, found " + std::to_string(double(grad_entropy)));
            else
                up = logits::detail::device_operand<true>(grad_entropy, z.extent(0), z.extent(1), fn, "grad_entropy");
            using Z = typename decltype(z)::value_type;
            device_view<const Z, 3> gz;  // grad_logits (of the logits' dtype, checked), or empty
            const auto h = detail::check_entropy_outputs(z, entropy, grad_logits, prim, fn, [&](const auto& g) {
                logits::detail::check_no_alias(up.bytes, g, {fn, "grad_entropy"}, "grad_logits");
                if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(g)>::value_type, Z>) gz = g;
            });
            logits::detail::check_no_alias(h.bytes, up.bytes, {fn, "entropy"}, "grad_entropy");
            posttrain::detail::check_policy_apart(policy, fn, std::pair{z, "logits"}, std::pair{up.bytes, "grad_entropy"},
                                                  std::pair{h.bytes, "entropy"}, std::pair{gz, "grad_logits"});
            return std::tuple<index_t, index_t, index_t>(z.extent(0), z.extent(1), z.extent(2));
        },
        posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
    if (V == 0) {  // an empty vocabulary has entropy 0 (the host's convention) and no gradient element
        if constexpr (has_entropy) detail::store_entropy(policy, nullptr, entropy, B, T, fn);
        return;
    }
    if constexpr (grad) {
        if constexpr (scalar_up) {
            // One scratch: the backward's records from its start (the backward runs under a policy
            // holding exactly that part), the scalar after them, read through a broadcast view.
            posttrain::detail::cuda_scratch scratch(policy, entropy_from_logits_workspace_bytes(B, T, true), {fn, "policy"});
            const std::size_t records = detail::scalar_upstream_at(B, T);
            double* up = scratch.template as<double>(records);
            detail::store_scalar_kernel<<<1, 1, 0, policy.stream>>>(up, double(grad_entropy));
            posttrain::detail::check_launch(fn);
            const index_t extents[2] = {B, T}, strides[2] = {0, 0};
            logits::detail::token_log_probs_backward_cuda(policy.with(scratch.template as<void>(), records), logits, none, none,
                                                          device_view<const double, 2>(up, extents, strides), grad_logits,
                                                          none, none, prim, fn);
        } else {
            logits::detail::token_log_probs_backward_cuda(policy, logits, none, none, grad_entropy, grad_logits, none, none,
                                                          prim, fn);
        }
    }
    if constexpr (has_entropy || !grad)  // the forward takes no scratch
        logits::detail::token_log_probs_cuda(policy.with(nullptr, 0), logits, none, none, entropy, none, prim, fn);
}

}  // namespace posttrain::policy_loss
