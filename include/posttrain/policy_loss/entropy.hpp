#pragma once
// Token entropy of the policy from its logits, with its gradient, and the entropy bonus term.
//
// For one token with logits z[0..V), p = softmax(z) and m = max z, in the shifted, overflow-free form
//
//   s  = sum_v exp(z_v - m)
//   mu = sum_v exp(z_v - m) (z_v - m) / s        (= E_p[z] - m)
//   H  = log s - mu                              (= logsumexp(z) - sum_v p_v z_v, verl/TRL's formula)
//   dH/dz_v = p_v (E_p[z] - z_v) = exp(z_v - m) / s * (mu - (z_v - m))
//
// The last line is -p_v (log p_v + H), the derivative of -sum p log p, written so that no log p (which is
// -inf for an underflowed probability) appears. Terms with exp(z_v - m) == 0 contribute exactly 0 (a
// -inf logit is a masked vocabulary entry, not a NaN; torch's softmax * logits gives NaN there).

#include <cmath>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "aggregate.hpp"

namespace posttrain::policy_loss {

struct entropy_options {
    // NaN/inf logits: raise (default, first bad index) or propagate. Under propagate a -inf logit is
    // a vocabulary entry with probability 0 (it contributes nothing); +inf or NaN give NaN.
    // nonfinite::ignore is not accepted.
    advantage::nonfinite nonfinite_logits = advantage::nonfinite::raise;
};

namespace detail {

// One token's entropy; e[0..V) receives exp(z_v - m) for the gradient pass.
struct token_entropy {
    double h = 0, s = 1, mu = 0, m = 0;
};

template <class Z>
token_entropy entropy_of(const Z& z, index_t V, double* e) noexcept {
    token_entropy r;
    if (V == 0) return r;  // an empty vocabulary has entropy 0
    double m = double(z(0));
    for (index_t v = 1; v < V; ++v) {
        const double x = double(z(v));
        m = x > m || x != x ? x : m;  // NaN wins, so that it propagates
    }
    for (index_t v = 0; v < V; ++v) e[v] = std::exp(double(z(v)) - m);
    r.m = m;
    r.s = posttrain::detail::fixed_order_sum(V, [&](index_t v) { return e[v]; });
    const double a =
        posttrain::detail::fixed_order_sum(V, [&](index_t v) { return e[v] != 0 ? e[v] * (double(z(v)) - m) : 0.0; });
    r.mu = a / r.s;
    r.h = std::log(r.s) - r.mu;
    return r;
}

// g_v = up * dH/dz_v for one token (e from entropy_of).
template <class Z, class G>
void entropy_grad(const Z& z, index_t V, const double* e, const token_entropy& r, double up, G&& write) noexcept {
    const double f = up / r.s;
    for (index_t v = 0; v < V; ++v) write(v, e[v] != 0 ? f * e[v] * (r.mu - (double(z(v)) - r.m)) : 0.0);
}

template <class T>
void check_finite_logits(tensor_view<const T, 3> z, where w) {
    const index_t B = z.extent(0), T_ = z.extent(1), V = z.extent(2);
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < T_; ++t)
            for (index_t v = 0; v < V; ++v) {
                const double x = double(z(i, t, v));
                if (numeric::is_finite(x)) continue;
                posttrain::detail::raise_invalid_argument(
                    w.function, w.argument,
                    "non-finite value " + std::to_string(x) + " at index [" + str(i) + ", " + str(t) + ", " + str(v) +
                        "] (set nonfinite_logits = nonfinite::propagate to allow it)");
            }
}

inline void check_entropy_options(const entropy_options& o, const char* fn) {
    require(o.nonfinite_logits == advantage::nonfinite::raise || o.nonfinite_logits == advantage::nonfinite::propagate,
            {fn, "options"}, "nonfinite_logits must be nonfinite::raise or nonfinite::propagate");
}

// The [B, T] extents of an output or upstream view must be the logits' first two.
template <class A, class Z>
void check_token_shape(tensor_view<A, 2> x, tensor_view<const Z, 3> z, where w) {
    for (int r = 0; r < 2; ++r)
        require(x.extent(r) == z.extent(r), w,
                "shape must match the first two dimensions of 'logits': dimension " + str(r) + " is " + str(x.extent(r)) +
                    ", expected " + str(z.extent(r)));
}

template <class Z>
auto token_logits(tensor_view<const Z, 3> z, index_t i, index_t t) noexcept {
    return [=](index_t v) { return z(i, t, v); };
}

template <class Out>
constexpr bool is_none_v = std::is_same_v<std::remove_cvref_t<Out>, none_t>;

template <class Out>
auto optional_output3(Out&& out, const char* fn, const char* name) {
    if constexpr (is_none_v<Out>) return tensor_view<double, 3>();
    else return std::visit([](auto x) { return x; }, posttrain::detail::floating_output<3>(out, {fn, name}));
}
template <class Out>
auto optional_token_output(Out&& out, const char* fn, const char* name) {
    if constexpr (is_none_v<Out>) return tensor_view<double, 2>();
    else return std::visit([](auto x) { return x; }, posttrain::detail::floating_output<2>(out, {fn, name}));
}

}  // namespace detail

// entropy[b, t] = H(softmax(logits[b, t, :])) for logits [B, T, V], and
// grad_logits[b, t, v] = grad_entropy[b, t] * dH[b, t] / dlogits[b, t, v], the backward of any objective
// whose gradient w.r.t. the entropies is grad_entropy: a [B, T] view, or one number for every token
// (1: the gradient of sum(entropy)). entropy and grad_logits may be posttrain::none.
template <class Policy, class Logits, class Entropy, class GradLogits = none_t, class GradEntropy = double>
void entropy_from_logits(const Policy& policy, const Logits& logits, Entropy&& entropy, GradLogits&& grad_logits = GradLogits{0},
                         const GradEntropy& grad_entropy = 1.0, const entropy_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::entropy_from_logits: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::entropy_from_logits";
    detail::check_entropy_options(options, fn);
    constexpr bool scalar_up = std::is_arithmetic_v<GradEntropy>;
    auto run = [&](auto z, auto up) {
        const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
        auto h = detail::optional_token_output(entropy, fn, "entropy");
        auto g = detail::optional_output3(grad_logits, fn, "grad_logits");
        if constexpr (!detail::is_none_v<Entropy>) detail::check_token_shape(h, z, {fn, "entropy"});
        if constexpr (!detail::is_none_v<GradLogits>) detail::check_same_shape(g, z, {fn, "grad_logits"}, "logits");
        if constexpr (!scalar_up) detail::check_token_shape(up, z, {fn, "grad_entropy"});
        detail::check_no_alias(h, z, {fn, "entropy"}, "logits");
        detail::check_no_alias(g, z, {fn, "grad_logits"}, "logits");
        detail::check_no_alias(g, h, {fn, "grad_logits"}, "entropy");
        if constexpr (!scalar_up) {
            detail::check_no_alias(h, up, {fn, "entropy"}, "grad_entropy");
            detail::check_no_alias(g, up, {fn, "grad_logits"}, "grad_entropy");
        } else {
            detail::require(numeric::is_finite(double(up)), {fn, "grad_entropy"},
                            "must be finite, found " + std::to_string(double(up)));
        }
        if (options.nonfinite_logits == advantage::nonfinite::raise) detail::check_finite_logits(z, {fn, "logits"});
        using H = typename decltype(h)::value_type;
        using G = typename decltype(g)::value_type;
        detail::for_each_row(policy, B, T * V, [&](index_t i) {
            std::vector<double> e(static_cast<std::size_t>(V));
            for (index_t t = 0; t < T; ++t) {
                const auto zt = detail::token_logits(z, i, t);
                const auto r = detail::entropy_of(zt, V, e.data());
                if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(r.h);
                if constexpr (!detail::is_none_v<GradLogits>) {
                    double u = 0;
                    if constexpr (scalar_up) u = double(up);
                    else u = double(up(i, t));
                    detail::entropy_grad(zt, V, e.data(), r, u, [&](index_t v, double x) { g(i, t, v) = static_cast<G>(x); });
                }
            }
        });
    };
    std::visit(
        [&](auto z) {
            if constexpr (scalar_up) run(z, static_cast<double>(grad_entropy));
            else std::visit([&](auto up) { run(z, up); }, posttrain::detail::floating_input<2>(grad_entropy, {fn, "grad_entropy"}));
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}));
}

// The entropy term of the loss: aggregate(H, mask) under the aggregation options (verl
// compute_entropy_loss), with grad_scale * d loss / d logits written into grad_logits and each
// token's entropy into entropy (either may be posttrain::none). The loss is the mean entropy, not
// its negative: a bonus enters the actor loss as -coeff * loss (verl, TRL), so pass grad_scale =
// -coeff. Masked tokens contribute nothing and get gradient 0 (their entropy is still written).
template <class Policy, class Logits, class Mask, class Entropy, class GradLogits>
aggregate_result entropy_loss(const Policy& policy, const Logits& logits, const Mask& mask, Entropy&& entropy,
                              GradLogits&& grad_logits, const aggregation_options& aggregation = {}, double grad_scale = 1.0,
                              const entropy_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::entropy_loss: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::entropy_loss";
    detail::check_entropy_options(options, fn);
    detail::check_aggregation_options(aggregation, fn);
    return std::visit(
        [&](auto z, auto m) {
            const index_t B = z.extent(0), T = z.extent(1), V = z.extent(2);
            detail::check_token_shape(m, z, {fn, "mask"});
            auto h = detail::optional_token_output(entropy, fn, "entropy");
            auto g = detail::optional_output3(grad_logits, fn, "grad_logits");
            if constexpr (!detail::is_none_v<Entropy>) detail::check_token_shape(h, z, {fn, "entropy"});
            if constexpr (!detail::is_none_v<GradLogits>) detail::check_same_shape(g, z, {fn, "grad_logits"}, "logits");
            detail::check_no_alias(h, z, {fn, "entropy"}, "logits");
            detail::check_no_alias(h, m, {fn, "entropy"}, "mask");
            detail::check_no_alias(g, z, {fn, "grad_logits"}, "logits");
            detail::check_no_alias(g, m, {fn, "grad_logits"}, "mask");
            detail::check_no_alias(g, h, {fn, "grad_logits"}, "entropy");
            if (options.nonfinite_logits == advantage::nonfinite::raise) detail::check_finite_logits(z, {fn, "logits"});
            const auto n = detail::row_token_counts(policy, m);
            const auto plan = detail::plan_aggregation(n, T, aggregation);
            using H = typename decltype(h)::value_type;
            using G = typename decltype(g)::value_type;
            std::vector<double> row_sum(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T * V, [&](index_t i) {
                std::vector<double> e(static_cast<std::size_t>(V));
                const double f = plan.row_factor(n[std::size_t(i)]);
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double w = detail::mask_weight(m(i, t));
                    const auto zt = detail::token_logits(z, i, t);
                    if (w == 0) {  // select, never multiply: masked logits may hold anything
                        if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(detail::entropy_of(zt, V, e.data()).h);
                        if constexpr (!detail::is_none_v<GradLogits>)
                            for (index_t v = 0; v < V; ++v) g(i, t, v) = G(0);
                        return 0.0;
                    }
                    const auto r = detail::entropy_of(zt, V, e.data());
                    if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(r.h);
                    if constexpr (!detail::is_none_v<GradLogits>)
                        detail::entropy_grad(zt, V, e.data(), r, f * w * grad_scale,
                                             [&](index_t v, double x) { g(i, t, v) = static_cast<G>(x); });
                    return r.h * w;
                });
                row_sum[std::size_t(i)] = s * f;
            });
            aggregate_result res = plan.totals;
            res.loss = detail::sum_rows(row_sum);
            return res;
        },
        posttrain::detail::floating_input<3>(logits, {fn, "logits"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
