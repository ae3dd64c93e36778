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
//
// entropy_from_logits and entropy_loss compute each token's entropy and gradient with the logits
// module's primitive (logits/token_log_probs.hpp: an online, chunked, vectorised pass for H, a second
// pass for the gradient; softmax_math.hpp's formulas); entropy_of below is the one-buffer form that the
// ORPO/OREO vocabulary terms use.

#include <cmath>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../logits/token_log_probs.hpp"
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

// The entropy of token (i, t) and, where Grad, g[i, t, :] = up * dH/dz by the logits module's
// per-position pass (position_forward, then position_backward recomputing exp(z_v - lse)). A NaN or
// +inf logit (only under nonfinite::propagate: raise checks first) or an all -inf vocabulary makes both
// NaN; an empty vocabulary has entropy 0. buf: 2 * min(chunk, V) doubles (used for strided views).
template <bool Grad, class Z, class G>
double token_entropy_with_grad(tensor_view<const Z, 3> z, tensor_view<G, 3> g, index_t i, index_t t, double up,
                               std::vector<double>& buf) noexcept {
    const index_t V = z.extent(2);
    if (V == 0) return 0.0;
    constexpr index_t default_chunk = logits::token_log_probs_options{}.chunk;
    const index_t chunk = V < default_chunk ? V : default_chunk;
    const Z* zp = &z(i, t, 0);
    const auto s = logits::detail::position_forward(zp, z.stride(2), V, index_t(-1), chunk, true, buf.data());
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if constexpr (Grad) {
        G* gp = &g(i, t, 0);
        if (!s.ok()) {
            for (index_t v = 0; v < V; ++v) gp[v * g.stride(2)] = static_cast<G>(nan);
        } else {
            logits::detail::position_grad_args a;
            a.hi = s.out.m;
            a.lo = s.out.log_s;
            a.entropy = s.out.entropy;
            a.gh = up;
            logits::detail::position_backward(zp, z.stride(2), gp, g.stride(2), V, index_t(-1), chunk, a, buf.data(),
                                              buf.data() + chunk);
        }
    }
    return s.ok() ? s.out.entropy : nan;
}

// Scratch for token_entropy_with_grad over logits of vocabulary V.
inline std::vector<double> entropy_scratch(index_t V) {
    constexpr index_t default_chunk = logits::token_log_probs_options{}.chunk;
    return std::vector<double>(static_cast<std::size_t>(2 * (V < default_chunk ? V : default_chunk)));
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
        if constexpr (!detail::is_none_v<Entropy>) logits::detail::check_leading_shape(h, z, {fn, "entropy"});
        if constexpr (!detail::is_none_v<GradLogits>) detail::check_same_shape(g, z, {fn, "grad_logits"}, "logits");
        if constexpr (!scalar_up) logits::detail::check_leading_shape(up, z, {fn, "grad_entropy"});
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
        constexpr bool grad = !detail::is_none_v<GradLogits>;
        detail::for_each_row(policy, B, T * V, [&](index_t i) {
            std::vector<double> buf = detail::entropy_scratch(V);
            for (index_t t = 0; t < T; ++t) {
                double u = 0;
                if constexpr (grad && scalar_up) u = double(up);
                else if constexpr (grad) u = double(up(i, t));
                const double ht = detail::token_entropy_with_grad<grad>(z, g, i, t, u, buf);
                if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(ht);
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
            logits::detail::check_leading_shape(m, z, {fn, "mask"});
            auto h = detail::optional_token_output(entropy, fn, "entropy");
            auto g = detail::optional_output3(grad_logits, fn, "grad_logits");
            if constexpr (!detail::is_none_v<Entropy>) logits::detail::check_leading_shape(h, z, {fn, "entropy"});
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
                std::vector<double> buf = detail::entropy_scratch(V);
                const double f = plan.row_factor(n[std::size_t(i)]);
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double w = detail::mask_weight(m(i, t));
                    constexpr bool grad = !detail::is_none_v<GradLogits>;
                    if (w == 0) {  // select, never multiply: masked logits may hold anything
                        const double ht = detail::token_entropy_with_grad<false>(z, g, i, t, 0.0, buf);
                        if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(ht);
                        if constexpr (grad)
                            for (index_t v = 0; v < V; ++v) g(i, t, v) = G(0);
                        return 0.0;
                    }
                    const double ht = detail::token_entropy_with_grad<grad>(z, g, i, t, f * w * grad_scale, buf);
                    if constexpr (!detail::is_none_v<Entropy>) h(i, t) = static_cast<H>(ht);
                    return ht * w;
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
