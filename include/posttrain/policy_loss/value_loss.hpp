#pragma once
// The PPO critic loss: squared error of the value predictions against the returns, optionally
// clipped around the rollout's values (the value analogue of the ratio clip).
//
//   v_clip = clip(v, v_old - c, v_old + c)
//   L[b, t] = max((v - R)^2, (v_clip - R)^2)          (with c = inf: v_clip = v, plain (v - R)^2)
//   loss    = 0.5 * aggregate(L, mask)
//
// verl compute_value_loss and OpenRLHF ValueLoss (v_old + clamp(v - v_old, +-c): the same value up to
// one rounding). The gradient d loss / d v is written for every token; the returns and the old values
// are constants. clipfrac is the fraction of valid tokens where the clipped branch is strictly larger.

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "aggregate.hpp"
#include "token_math.hpp"

namespace posttrain::policy_loss {

struct value_loss_options {
    // Clip range c >= 0 around the old values; infinity (the default) turns clipping off. posttrain
    // does not clip by default: large-scale studies of PPO found value clipping neutral or harmful
    // (Andrychowicz et al. 2021; Engstrom et al. 2020). The presets reproduce the frameworks.
    double clip = std::numeric_limits<double>::infinity();
    aggregation_options aggregation{};
    // Denominator of clipfrac (the mask weight sum): verl's masked_mean adds 1e-8.
    row_mean clipfrac_denominator = row_mean::exact;
    // NaN/inf in values, old_values or returns: raise (default) or propagate (masked positions never
    // reach the result). nonfinite::ignore is not accepted.
    advantage::nonfinite nonfinite_inputs = advantage::nonfinite::raise;

    // verl compute_value_loss(cliprange_value, loss_agg_mode) and agg_loss's global normalizers.
    static constexpr value_loss_options verl(double cliprange_value, policy_loss::aggregation mode = policy_loss::aggregation::token_mean,
                                             double dp_size = 1, double batch_num_tokens = 0,
                                             double global_batch_size = 0, double loss_scale_factor = 0) {
        value_loss_options o;
        o.clip = cliprange_value;
        o.aggregation = aggregation_options::verl(mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor);
        o.clipfrac_denominator = row_mean::plus_epsilon;
        return o;
    }
    // OpenRLHF ValueLoss(clip_eps, token_level_loss): clip_eps None is infinity here.
    static constexpr value_loss_options openrlhf(double clip_eps, bool token_level_loss = true, double dp_size = 1,
                                                 double batch_num_tokens = 0, double global_batch_size = 0) {
        value_loss_options o;
        o.clip = clip_eps;
        o.aggregation = aggregation_options::openrlhf(token_level_loss, dp_size, batch_num_tokens, global_batch_size);
        return o;
    }
};

struct [[nodiscard]] value_loss_result {
    double loss = 0;
    double clipfrac = 0;          // valid tokens where (v_clip - R)^2 > (v - R)^2, over the valid tokens
    aggregate_result aggregation;  // the unscaled aggregate of L (its loss is 2 * loss) and its counts
};

namespace detail {

struct value_token {
    double loss;   // max((v - R)^2, (v_clip - R)^2)
    double grad;   // its derivative w.r.t. v
    bool clipped;  // the clipped branch is strictly larger
};

// Subgradients (token_math.hpp, torch's): the clip passes the gradient on the closed interval
// [v_old - c, v_old + c] (torch.clamp; verl's min/max clip halves it exactly at the bounds); a tie of
// the two branches takes the mean of their derivatives (torch.maximum).
POSTTRAIN_HD inline value_token value_loss_token(double v, double v_old, double ret, double c) noexcept {
    const double lo = v_old - c, hi = v_old + c;
    const double d1 = v - ret, d2 = clamp(v, lo, hi) - ret;
    const double l1 = d1 * d1, l2 = d2 * d2;
    const pick w = max_weights(l1, l2);
    return {l1 > l2 ? l1 : l2, w.a * 2 * d1 + w.b * 2 * d2 * clamp_grad(v, lo, hi), l2 > l1};
}

// The option checks of every backend.
inline void check_value_loss_options(const value_loss_options& options, const char* fn) {
    require(options.clip >= 0, {fn, "options"}, "clip must be >= 0 (infinity: no clipping), found " + std::to_string(options.clip));
    require(options.nonfinite_inputs == advantage::nonfinite::raise || options.nonfinite_inputs == advantage::nonfinite::propagate,
            {fn, "options"}, "nonfinite_inputs must be nonfinite::raise or nonfinite::propagate");
    const int cd = static_cast<int>(options.clipfrac_denominator);
    require(cd >= 0 && cd <= static_cast<int>(row_mean::at_least_one), {fn, "options"},
            "unknown clipfrac_denominator " + str(cd));
    check_aggregation_options(options.aggregation, fn);
}

// clipfrac = clipped tokens / tokens, the denominator by the same rule as a row mean.
POSTTRAIN_HD inline double clip_fraction(double clipped, double tokens, row_mean denominator) noexcept {
    aggregation_plan mean;
    mean.mode = aggregation::seq_mean_token_mean;
    mean.row_denominator = denominator;
    mean.scale = 1;
    return clipped * mean.row_factor(tokens);
}

}  // namespace detail

// Clipped value loss over [B, T] values, old_values, returns and mask, with grad_scale * d loss / d
// values written into grad_values (posttrain::none skips it). Masked tokens contribute nothing and
// get gradient 0.
template <class Policy, class Values, class OldValues, class Returns, class Mask, class Grad>
value_loss_result value_loss(const Policy& policy, const Values& values, const OldValues& old_values, const Returns& returns,
                             const Mask& mask, Grad&& grad_values, const value_loss_options& options = {},
                             double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::value_loss: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::value_loss";
    detail::check_value_loss_options(options, fn);
    constexpr bool has_grad = !std::is_same_v<std::remove_cvref_t<Grad>, none_t>;
    return std::visit(
        [&](auto v, auto vo, auto R, auto m) {
            detail::check_same_shape(vo, v, {fn, "old_values"}, "values");
            detail::check_same_shape(R, v, {fn, "returns"}, "values");
            detail::check_same_shape(m, v, {fn, "mask"}, "values");
            if (options.nonfinite_inputs == advantage::nonfinite::raise) {
                advantage::detail::check_finite(v, {fn, "values"});
                advantage::detail::check_finite(vo, {fn, "old_values"});
                advantage::detail::check_finite(R, {fn, "returns"});
            }
            auto g = [&] {
                if constexpr (has_grad) {
                    auto x = std::visit([](auto y) { return y; },
                                        posttrain::detail::floating_output<2>(grad_values, {fn, "grad_values"}));
                    detail::check_same_shape(x, v, {fn, "grad_values"}, "values");
                    return x;
                } else {
                    return tensor_view<double, 2>();  // empty: overlaps nothing
                }
            }();
            detail::check_no_alias(g, v, {fn, "grad_values"}, "values");
            detail::check_no_alias(g, vo, {fn, "grad_values"}, "old_values");
            detail::check_no_alias(g, R, {fn, "grad_values"}, "returns");
            detail::check_no_alias(g, m, {fn, "grad_values"}, "mask");
            using G = typename decltype(g)::value_type;
            const index_t B = v.extent(0), T = v.extent(1);
            const auto n = detail::row_token_counts(policy, m);
            const auto plan = detail::plan_aggregation(n, T, options.aggregation);
            std::vector<double> row_sum(static_cast<std::size_t>(B)), row_clipped(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T, [&](index_t i) {
                const double f = plan.row_factor(n[std::size_t(i)]);
                double clipped = 0;
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double w = detail::mask_weight(m(i, t));
                    if (w == 0) {  // select, never multiply: masked positions may hold anything
                        if constexpr (has_grad) g(i, t) = G(0);
                        return 0.0;
                    }
                    const auto r = detail::value_loss_token(double(v(i, t)), double(vo(i, t)), double(R(i, t)), options.clip);
                    if constexpr (has_grad) g(i, t) = static_cast<G>(0.5 * f * w * r.grad * grad_scale);
                    clipped += r.clipped ? w : 0.0;
                    return r.loss * w;
                });
                row_sum[std::size_t(i)] = s * f;
                row_clipped[std::size_t(i)] = clipped;
            });
            value_loss_result res;
            res.aggregation = plan.totals;
            res.aggregation.loss = detail::sum_rows(row_sum);
            res.loss = 0.5 * res.aggregation.loss;
            res.clipfrac = detail::clip_fraction(detail::sum_rows(row_clipped), plan.totals.tokens, options.clipfrac_denominator);
            return res;
        },
        posttrain::detail::floating_input<2>(values, {fn, "values"}),
        posttrain::detail::floating_input<2>(old_values, {fn, "old_values"}),
        posttrain::detail::floating_input<2>(returns, {fn, "returns"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
