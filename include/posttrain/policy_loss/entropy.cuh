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

#if !defined(__CUDACC__)
#error "<posttrain/policy_loss/entropy.cuh> needs nvcc: include it only from .cu files"
#endif

#include <type_traits>

#include "../logits/token_log_probs.cuh"
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

}  // namespace detail

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
    if constexpr (grad) {
        // The backward goes first (it checks every argument it shares with the forward), so that the
        // forward's own output is checked here, before anything is launched.
        const auto [B, T] = std::visit([](auto z) { return std::pair<index_t, index_t>(z.extent(0), z.extent(1)); },
                                       posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
        if constexpr (has_entropy) {
            const auto h = logits::detail::device_operand<false>(entropy, B, T, fn, "entropy");
            std::visit(
                [&](auto z) {
                    logits::detail::check_no_alias(h.bytes, z, {fn, "entropy"}, "logits");
                    std::visit([&](auto g) { logits::detail::check_no_alias(h.bytes, g, {fn, "entropy"}, "grad_logits"); },
                               posttrain::detail::device_floats<false, 3>(grad_logits, {fn, "grad_logits"}));
                },
                posttrain::detail::device_floats<true, 3>(logits, {fn, "logits"}));
        }
        if constexpr (std::is_arithmetic_v<GradEntropy>) {
            posttrain::detail::require(numeric::is_finite(double(grad_entropy)), {fn, "grad_entropy"},
                                       "must be finite, found " + std::to_string(double(grad_entropy)));
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
    if constexpr (has_entropy || !grad) logits::detail::token_log_probs_cuda(policy, logits, none, none, entropy, none, prim, fn);
}

}  // namespace posttrain::policy_loss
