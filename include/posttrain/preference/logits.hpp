#pragma once
// Per-token log-probs of the labels under a model's logits, and the backward of that map.
//
// The preference trainers (TRL DPOTrainer, SimPO, TGDPO, ...) start from logits [B, T, V] and labels
// [B, T] and take log_softmax(logits)[b, t, labels[b, t]]; their golden gradients are w.r.t. the
// logits. With m = max_v z_v and s = sum_v exp(z_v - m) (both in double, fixed summation order):
//
//   logp       = z_y - m - log s                               (never exp of a positive number)
//   dlogp/dz_v = [v == y] - exp(z_v - m) / s                   (= [v == y] - softmax(z)_v)
//
// A label equal to options.ignore_index (-100, the Hugging Face convention) marks a position that is
// not scored: its log-prob is written as 0 and its logits gradient as 0, and its logits and upstream
// gradient are never read (select, not multiply: padding may hold NaN). Any other label must lie in
// [0, V) (checked before anything is written). NaN or +inf logits at scored positions raise (found
// inside the parallel loop, raised after it for the first bad position in row-major order); -inf logits are vocabulary entries
// of probability 0 (masked vocabularies) and are allowed unless every logit of the position is -inf.
//
// Shifting for causal models (logits[:, :-1] against labels[:, 1:]) is the caller's: pass strided
// views. Host policies only; rows are independent, so exec::par gives the bits of exec::seq.
//
// Both are the logits module's primitive (logits/token_log_probs.hpp: one online, chunked, vectorised
// pass per position; the backward recomputes the statistics, so 1 - p_y = rest / s stays exact) under
// this module's names and options; the sums run in its fixed chunk-and-lane order.

#include <cstdint>
#include <variant>

#include "../advantage/tokens.hpp"
#include "../core/exec.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"
#include "../logits/token_log_probs.hpp"

namespace posttrain::preference {

struct token_log_probs_options {
    // Labels equal to this value are not scored (log-prob 0, gradient 0).
    std::int64_t ignore_index = -100;
};

namespace detail {

using namespace posttrain::detail;

inline logits::token_log_probs_options primitive_options(const token_log_probs_options& o) noexcept {
    logits::token_log_probs_options r;
    r.ignore_index = o.ignore_index;
    return r;
}

}  // namespace detail

// out[b, t] = log_softmax(logits[b, t, :])[labels[b, t]] for logits [B, T, V] and integer labels
// [B, T] (0 where labels[b, t] == options.ignore_index). out is a float or double [B, T] view.
template <class Policy, class Logits, class Labels, class Out>
void token_log_probs(const Policy& policy, const Logits& logits, const Labels& labels, Out&& out,
                     const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::token_log_probs: host policy expected");
    constexpr const char* fn = "posttrain::preference::token_log_probs";
    std::visit(
        [&](auto z, auto y, auto o) {
            logits::detail::forward<true, true, false, false>(policy, z, y, o, tensor_view<double, 2>(), tensor_view<double, 2>(),
                                                              detail::primitive_options(options), {fn, "out"});
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::id_input<2>(labels, {fn, "labels"}),
        posttrain::detail::floating_output<2>(out, {fn, "out"}));
}

// The backward of token_log_probs: grad_logits[b, t, v] = grad_logp[b, t] * ([v == labels[b, t]] -
// softmax(logits[b, t, :])_v), and 0 on every ignored position (whose grad_logp is not read).
// grad_logp must be finite at scored positions.
template <class Policy, class Logits, class Labels, class GradLogp, class GradLogits>
void token_log_probs_backward(const Policy& policy, const Logits& logits, const Labels& labels, const GradLogp& grad_logp,
                              GradLogits&& grad_logits, const token_log_probs_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::token_log_probs_backward: host policy expected");
    constexpr const char* fn = "posttrain::preference::token_log_probs_backward";
    std::visit(
        [&](auto z, auto y, auto up, auto g) {
            logits::detail::backward<true, true, false, false>(
                policy, z, y, up, tensor_view<const double, 2>(), g, tensor_view<const double, 2>(),
                tensor_view<const double, 2>(), detail::primitive_options(options), {fn, "grad_logp"});
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::id_input<2>(labels, {fn, "labels"}),
        posttrain::detail::floating_input<2>(grad_logp, {fn, "grad_logp"}),
        posttrain::detail::floating_output<3>(grad_logits, {fn, "grad_logits"}));
}

}  // namespace posttrain::preference
