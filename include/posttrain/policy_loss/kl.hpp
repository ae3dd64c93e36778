#pragma once
// Per-token KL estimators between the policy and a reference policy, from their log-probabilities of
// the sampled token (Schulman's k1/k2/k3 and |log-ratio|), with each framework's clamps.
//
// With r = lp - ref (the policy/reference log-ratio of the sampled token) and d = -r:
//
//   k1   r                      unbiased, can be negative
//   abs  |r|
//   k2   r^2 / 2                (verl "mse")
//   k3   exp(d) - d - 1 >= 0    (verl "low_var_kl"), computed as (e^d - d) - 1 like the frameworks
//
// Clamps, each optional and stated in the options: log_ratio_clamp c clamps d to [-c, c] before the
// estimator (verl k3 and NeMo: 20), value_clamp c clamps the estimate to [-c, c] (verl k3, OpenRLHF,
// NeMo: 10). straight_through keeps the estimator's value but takes the gradient of k2 (verl "k3+").

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "../config.hpp"
#include "aggregate.hpp"
#include "token_math.hpp"

namespace posttrain::policy_loss {

enum class kl_estimator {
    k1,   // lp - ref (verl "kl"/"k1")
    abs,  // |lp - ref|
    k2,   // (lp - ref)^2 / 2 (verl "mse"/"k2")
    k3,   // exp(ref - lp) - (ref - lp) - 1 (verl "low_var_kl"/"k3"); posttrain's default
};

struct kl_options {
    kl_estimator estimator = kl_estimator::k3;
    // Value of the estimator, gradient of k2 = (lp - ref)^2 / 2, i.e. d/dlp = lp - ref, unclamped (verl
    // "k3+", "k1+", ...: k3's own gradient is biased as a KL gradient, k2's is the unbiased one).
    bool straight_through = false;
    double log_ratio_clamp = 0;  // > 0: clamp (ref - lp) to [-c, c] before the estimator (verl k3, NeMo: 20)
    double value_clamp = 0;      // > 0: clamp the estimate to [-c, c] (verl k3, OpenRLHF, NeMo: 10)
    // NaN/inf log-probs: raise (default) or propagate (-inf is a legitimate log-prob: with a
    // log_ratio_clamp it gives a finite estimate). nonfinite::ignore is not accepted here.
    advantage::nonfinite nonfinite_inputs = advantage::nonfinite::raise;

    // verl kl_penalty (core_algos.py): only k3 is clamped (log-ratio 20, value 10); straight_through is
    // the '+' suffix (kl_penalty strips it from Aug 2026 on; the Jan-2026 snapshot raised on it).
    static constexpr kl_options verl(kl_estimator e, bool straight_through = false) {
        kl_options o;
        o.estimator = e;
        o.straight_through = straight_through;
        if (e == kl_estimator::k3) {
            o.log_ratio_clamp = 20;
            o.value_clamp = 10;
        }
        return o;
    }
    // The same from verl's config string (algorithm.kl_penalty, actor.kl_loss_type): "kl"/"k1", "abs",
    // "mse"/"k2", "low_var_kl"/"k3", each optionally with the straight-through '+' suffix. "full" (the
    // full-vocabulary KL, which needs the logits, not per-token log-probs) and unknown names throw
    // invalid_argument.
    static kl_options verl(std::string_view name);
    // OpenRLHF's --kl_estimator string: "k1", "k2" or "k3" (invalid_argument otherwise).
    static kl_options openrlhf(std::string_view name);

    // OpenRLHF compute_approx_kl: every estimator's value clamped to [-10, 10], no log-ratio clamp.
    // (OpenRLHF computes in float32 and returns float32: pass a float output to get its dtype.)
    static constexpr kl_options openrlhf(kl_estimator e = kl_estimator::k1) {
        kl_options o;
        o.estimator = e;
        o.value_clamp = 10;
        return o;
    }
    // TRL GRPOTrainer: k3 without any clamp.
    static constexpr kl_options trl() {
        kl_options o;
        o.estimator = kl_estimator::k3;
        return o;
    }
    // NeMo-RL calculate_kl: log-ratio clamped to [-20, 20], value to [-10, 10], for every estimator
    // (its importance weight is not part of the estimator: multiply the result by it).
    static constexpr kl_options nemo(kl_estimator e = kl_estimator::k3) {
        kl_options o;
        o.estimator = e;
        o.log_ratio_clamp = 20;
        o.value_clamp = 10;
        return o;
    }
};

inline kl_options kl_options::verl(std::string_view name) {
    constexpr const char* fn = "posttrain::policy_loss::kl_options::verl";
    const bool plus = !name.empty() && name.back() == '+';
    const std::string_view base = plus ? name.substr(0, name.size() - 1) : name;
    posttrain::detail::require(base != "full", {fn, "name"},
                               "\"full\" is the full-vocabulary KL: it needs the logits of both models, not the "
                               "log-probs of the sampled tokens (verl raises NotImplementedError too)");
    kl_estimator e = kl_estimator::k1;
    if (base == "kl" || base == "k1") e = kl_estimator::k1;
    else if (base == "abs") e = kl_estimator::abs;
    else if (base == "mse" || base == "k2") e = kl_estimator::k2;
    else if (base == "low_var_kl" || base == "k3") e = kl_estimator::k3;
    else
        posttrain::detail::raise_invalid_argument(
            fn, "name", "unknown KL estimator \"" + std::string(name) + "\" (expected kl, k1, abs, mse, k2, low_var_kl, k3, "
                        "optionally with a '+' suffix)");
    return verl(e, plus);
}

inline kl_options kl_options::openrlhf(std::string_view name) {
    constexpr const char* fn = "posttrain::policy_loss::kl_options::openrlhf";
    kl_estimator e = kl_estimator::k1;
    if (name == "k1") e = kl_estimator::k1;
    else if (name == "k2") e = kl_estimator::k2;
    else if (name == "k3") e = kl_estimator::k3;
    else
        posttrain::detail::raise_invalid_argument(fn, "name",
                                                  "unknown KL estimator \"" + std::string(name) + "\" (expected k1, k2 or k3)");
    return openrlhf(e);
}

POSTTRAIN_NO_TRAPPING_MATH_BEGIN
namespace detail {

struct value_grad {
    double value;
    double grad;  // d value / d lp (d value / d ref = -grad)
};

// One token's estimate and its derivative w.r.t. the policy log-prob, for a given estimator.
//
// Subgradients follow torch autograd, so that gradients match the frameworks at the kinks too:
// a clamp passes the gradient when its input lies inside the closed interval [-c, c] and gives 0
// strictly outside (torch.clamp); d|r|/dr at r = 0 is 0 (torch.sign). k3 is computed as the frameworks
// write it, (e^d - d) - 1. Inputs are not checked here (the public functions reject non-finite input
// first). Branch-free, with policy_loss's vectorizable exp, so that the fused loss loops vectorize.
template <kl_estimator E>
POSTTRAIN_HD inline value_grad kl_token_as(double lp, double ref, const kl_options& o) noexcept {
    const double raw = ref - lp;  // rounds exactly like -(lp - ref)
    const double c = o.log_ratio_clamp > 0 ? o.log_ratio_clamp : INFINITY;
    const double d = raw > c ? c : (raw < -c ? -c : raw);
    const double dd = ((raw >= -c) & (raw <= c)) ? -1.0 : 0.0;  // d d / d lp
    double v = 0, dv = 0;                                       // value and d value / d d
    if constexpr (E == kl_estimator::k1) {
        v = -d, dv = -1;
    } else if constexpr (E == kl_estimator::abs) {
        v = d < 0 ? -d : d, dv = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
    } else if constexpr (E == kl_estimator::k2) {
        v = 0.5 * d * d, dv = d;
    } else {
        const double e = exp(d);
        v = (e - d) - 1.0, dv = e - 1.0;
    }
    const double vc = o.value_clamp > 0 ? o.value_clamp : INFINITY;
    const double g = ((v >= -vc) & (v <= vc)) ? dv * dd : 0.0;
    v = v > vc ? vc : (v < -vc ? -vc : v);
    // A bitwise blend rather than a select on the bool: GCC cannot vectorize a select whose condition is
    // a loop-invariant bool. Bits, not a 0/1 arithmetic blend, because 0 * inf is NaN: an infinite
    // log-prob (legitimate under nonfinite::propagate) must not poison the branch that is not taken.
    const std::uint64_t take_st = o.straight_through ? ~std::uint64_t(0) : std::uint64_t(0);
    const double st = lp - ref;
    std::uint64_t st_bits, g_bits;
    std::memcpy(&st_bits, &st, sizeof st_bits);
    std::memcpy(&g_bits, &g, sizeof g_bits);
    const std::uint64_t bits = (st_bits & take_st) | (g_bits & ~take_st);
    double grad;
    std::memcpy(&grad, &bits, sizeof grad);
    return {v, grad};
}

POSTTRAIN_HD inline value_grad kl_token(double lp, double ref, const kl_options& o) noexcept {
    switch (o.estimator) {
        case kl_estimator::k1: return kl_token_as<kl_estimator::k1>(lp, ref, o);
        case kl_estimator::abs: return kl_token_as<kl_estimator::abs>(lp, ref, o);
        case kl_estimator::k2: return kl_token_as<kl_estimator::k2>(lp, ref, o);
        case kl_estimator::k3: break;
    }
    return kl_token_as<kl_estimator::k3>(lp, ref, o);
}

template <class V>
void check_finite_input(V x, advantage::nonfinite policy, where w) {
    if (policy == advantage::nonfinite::raise) advantage::detail::check_finite(x, w);
}

inline void check_kl_options(const kl_options& o, const char* fn) {
    const char* arg = "options";
    const int e = static_cast<int>(o.estimator);
    require(e >= 0 && e <= static_cast<int>(kl_estimator::k3), {fn, arg}, "unknown kl_estimator " + str(e));
    require(o.log_ratio_clamp >= 0, {fn, arg},
            "log_ratio_clamp must be >= 0 (0: no clamp), found " + std::to_string(o.log_ratio_clamp));
    require(o.value_clamp >= 0, {fn, arg}, "value_clamp must be >= 0 (0: no clamp), found " + std::to_string(o.value_clamp));
    require(o.nonfinite_inputs == advantage::nonfinite::raise || o.nonfinite_inputs == advantage::nonfinite::propagate,
            {fn, arg}, "nonfinite_inputs must be nonfinite::raise or nonfinite::propagate");
}

template <class A, class B>
void check_log_probs(tensor_view<const A, 2> lp, tensor_view<const B, 2> ref, const kl_options& o, const char* fn) {
    check_same_shape(ref, lp, {fn, "ref_log_probs"}, "log_probs");
    check_finite_input(lp, o.nonfinite_inputs, {fn, "log_probs"});
    check_finite_input(ref, o.nonfinite_inputs, {fn, "ref_log_probs"});
}

template <class Out>
constexpr bool is_none = std::is_same_v<std::remove_cvref_t<Out>, none_t>;

// The writable [B, T] view of an optional output, checked against the shape of `like`; for
// posttrain::none an empty view (which overlaps nothing, so aliasing checks on it pass).
template <class Out, class L>
auto optional_output2(Out&& out, const char* fn, const char* name, tensor_view<const L, 2> like, const char* like_name) {
    if constexpr (is_none<Out>) {
        return tensor_view<double, 2>();
    } else {
        auto v = std::visit([](auto x) { return x; }, posttrain::detail::floating_output<2>(out, {fn, name}));
        check_same_shape(v, like, {fn, name}, like_name);
        return v;
    }
}

}  // namespace detail
POSTTRAIN_NO_TRAPPING_MATH_END

// kl[b, t] = the estimate for each token, and grad_log_probs[b, t] = grad_scale * d kl[b, t] / d log_probs[b, t]
// (the gradient of grad_scale * sum(kl); d / d ref_log_probs is its negative, except under
// straight_through). No mask, like verl's kl_penalty: mask or aggregate the result, or use kl_loss.
// Either output may be posttrain::none.
template <class Policy, class LogProbs, class RefLogProbs, class Kl, class Grad>
void kl_penalty(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs, Kl&& kl,
                Grad&& grad_log_probs, const kl_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::kl_penalty: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::kl_penalty";
    detail::check_kl_options(options, fn);
    std::visit(
        [&](auto lp, auto ref) {
            detail::check_log_probs(lp, ref, options, fn);
            auto k = detail::optional_output2(kl, fn, "kl", lp, "log_probs");
            auto g = detail::optional_output2(grad_log_probs, fn, "grad_log_probs", lp, "log_probs");
            detail::check_no_alias(k, lp, {fn, "kl"}, "log_probs");
            detail::check_no_alias(k, ref, {fn, "kl"}, "ref_log_probs");
            detail::check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            detail::check_no_alias(g, ref, {fn, "grad_log_probs"}, "ref_log_probs");
            detail::check_no_alias(g, k, {fn, "grad_log_probs"}, "kl");
            using K = typename decltype(k)::value_type;
            using G = typename decltype(g)::value_type;
            const index_t B = lp.extent(0), T = lp.extent(1);
            detail::for_each_row(policy, B, T, [&](index_t i) {
                for (index_t t = 0; t < T; ++t) {
                    const auto r = detail::kl_token(double(lp(i, t)), double(ref(i, t)), options);
                    if constexpr (!detail::is_none<Kl>) k(i, t) = static_cast<K>(r.value);
                    if constexpr (!detail::is_none<Grad>) g(i, t) = static_cast<G>(r.grad * grad_scale);
                }
            });
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(ref_log_probs, {fn, "ref_log_probs"}));
}

// The KL term of the loss: aggregate(kl, mask) under the aggregation options, with
// grad_scale * d loss / d log_probs written into grad_log_probs (posttrain::none skips it). The
// returned loss is not multiplied by a coefficient: verl adds kl_loss_coef * loss (pass the
// coefficient as grad_scale). Masked tokens contribute nothing and get gradient 0.
template <class Policy, class LogProbs, class RefLogProbs, class Mask, class Grad>
aggregate_result kl_loss(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs, const Mask& mask,
                         Grad&& grad_log_probs, const kl_options& options = {},
                         const aggregation_options& aggregation = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::kl_loss: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::kl_loss";
    detail::check_kl_options(options, fn);
    detail::check_aggregation_options(aggregation, fn);
    return std::visit(
        [&](auto lp, auto ref, auto m) {
            detail::check_log_probs(lp, ref, options, fn);
            detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            auto g = detail::optional_output2(grad_log_probs, fn, "grad_log_probs", lp, "log_probs");
            detail::check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            detail::check_no_alias(g, ref, {fn, "grad_log_probs"}, "ref_log_probs");
            detail::check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            using G = typename decltype(g)::value_type;
            const index_t B = lp.extent(0), T = lp.extent(1);
            const auto n = detail::row_token_counts(policy, m);
            const auto plan = detail::plan_aggregation(n, T, aggregation);
            std::vector<double> row_sum(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T, [&](index_t i) {
                const double f = plan.row_factor(n[std::size_t(i)]);
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double w = detail::mask_weight(m(i, t));
                    if (w == 0) {  // select, never multiply: masked positions may hold anything
                        if constexpr (!detail::is_none<Grad>) g(i, t) = G(0);
                        return 0.0;
                    }
                    const auto r = detail::kl_token(double(lp(i, t)), double(ref(i, t)), options);
                    if constexpr (!detail::is_none<Grad>) g(i, t) = static_cast<G>(f * w * r.grad * grad_scale);
                    return r.value * w;
                });
                row_sum[std::size_t(i)] = s * f;
            });
            aggregate_result res = plan.totals;
            res.loss = detail::sum_rows(row_sum);
            return res;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(ref_log_probs, {fn, "ref_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

// ---- KL in the reward ----

struct kl_reward_options {
    kl_options kl = kl_options::verl(kl_estimator::k1);  // the reward penalty is k1 in verl and OpenRLHF
    // Denominator of each row's mean KL in the reported mean_kl (the adaptive controller's input).
    row_mean metric_row_denominator = row_mean::exact;

    // verl apply_kl_penalty / compute_rewards: kl_penalty(old_log_prob, ref_log_prob, type) * mask;
    // the metric is masked_mean over each row (+1e-8) averaged over rows.
    static constexpr kl_reward_options verl(kl_estimator e = kl_estimator::k1, bool straight_through = false) {
        kl_reward_options o;
        o.kl = kl_options::verl(e, straight_through);
        o.metric_row_denominator = row_mean::plus_epsilon;
        return o;
    }
};

struct [[nodiscard]] kl_reward_result {
    double mean_kl = 0;  // mean over rows of each row's mean KL over its valid tokens (0 for a row without any)
    double tokens = 0;   // valid tokens (sum of mask weights)
};

namespace detail {
template <class Policy, class S, class A, class B, class M, class R>
kl_reward_result kl_rewards_impl(const Policy& policy, tensor_view<const S, 2> sc, tensor_view<const A, 2> lp,
                                 tensor_view<const B, 2> ref, const M& m, tensor_view<R, 2> out, double beta,
                                 const kl_reward_options& o) {
    const index_t rows = lp.extent(0), T = lp.extent(1);
    std::vector<double> row_kl(static_cast<std::size_t>(rows)), row_n(static_cast<std::size_t>(rows));
    aggregation_plan mean;  // each row's mean, its denominator by the options' rule
    mean.mode = aggregation::seq_mean_token_mean;
    mean.row_denominator = o.metric_row_denominator;
    mean.scale = 1;
    for_each_row(policy, rows, T, [&](index_t i) {
        double n = 0;
        const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
            double w = 1;
            if constexpr (!is_none<M>) w = mask_weight(m(i, t));
            if (w == 0) {  // the score passes through; the (unread) log-probs may hold anything
                out(i, t) = static_cast<R>(sc(i, t));
                return 0.0;
            }
            const double k = kl_token(double(lp(i, t)), double(ref(i, t)), o.kl).value * w;
            out(i, t) = static_cast<R>(double(sc(i, t)) - beta * k);
            return k;
        });
        if constexpr (is_none<M>) n = double(T);
        else n = posttrain::detail::fixed_order_sum(T, [&](index_t t) { return mask_weight(m(i, t)); });
        row_kl[std::size_t(i)] = s * mean.row_factor(n);
        row_n[std::size_t(i)] = n;
    });
    kl_reward_result r;
    r.mean_kl = rows > 0 ? sum_rows(row_kl) / double(rows) : 0.0;
    r.tokens = sum_rows(row_n);
    return r;
}
}  // namespace detail

// rewards[b, t] = scores[b, t] - beta * kl[b, t] * mask[b, t]: the KL penalty folded into the token
// rewards before the advantage (verl apply_kl_penalty under use_kl_in_reward, InstructGPT-style PPO),
// with kl the estimate between the rollout policy (log_probs, verl's old_log_prob) and the reference.
// mask may be posttrain::none (every token penalised; with k1 this is verl compute_rewards, which
// advantage::kl_penalized_rewards also gives). Returns the mean KL that an adaptive_kl_controller is
// updated with (ctl.update(r.mean_kl, batch_size)). rewards may alias scores (updated in place).
template <class Policy, class Scores, class LogProbs, class RefLogProbs, class Mask, class Rewards>
kl_reward_result apply_kl_penalty(const Policy& policy, const Scores& scores, const LogProbs& log_probs,
                                      const RefLogProbs& ref_log_probs, const Mask& mask, Rewards&& rewards, double beta,
                                      const kl_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::apply_kl_penalty: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::apply_kl_penalty";
    detail::check_kl_options(options.kl, fn);
    detail::require(numeric::is_finite(beta), {fn, "beta"}, "must be finite, found " + std::to_string(beta));
    const int rm = static_cast<int>(options.metric_row_denominator);
    detail::require(rm >= 0 && rm <= static_cast<int>(row_mean::at_least_one), {fn, "options"},
                    "unknown metric_row_denominator " + detail::str(rm));
    auto run = [&](auto sc, auto lp, auto ref, auto m, auto out) {
        detail::check_log_probs(lp, ref, options.kl, fn);
        detail::check_same_shape(sc, lp, {fn, "scores"}, "log_probs");
        detail::check_finite_input(sc, options.kl.nonfinite_inputs, {fn, "scores"});
        if constexpr (!detail::is_none<decltype(m)>) detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
        detail::check_same_shape(out, lp, {fn, "rewards"}, "log_probs");
        // In place over scores is fine (each element is read before it is written); over the
        // log-probs or the mask it is not.
        detail::check_no_alias(out, lp, {fn, "rewards"}, "log_probs");
        detail::check_no_alias(out, ref, {fn, "rewards"}, "ref_log_probs");
        if constexpr (!detail::is_none<decltype(m)>) detail::check_no_alias(out, m, {fn, "rewards"}, "mask");
        return detail::kl_rewards_impl(policy, sc, lp, ref, m, out, beta, options);
    };
    auto sc = posttrain::detail::floating_input<2>(scores, {fn, "scores"});
    auto lp = posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"});
    auto ref = posttrain::detail::floating_input<2>(ref_log_probs, {fn, "ref_log_probs"});
    auto out = posttrain::detail::floating_output<2>(rewards, {fn, "rewards"});
    if constexpr (detail::is_none<Mask>) {
        return std::visit([&](auto a, auto b, auto c, auto o) { return run(a, b, c, none, o); }, sc, lp, ref, out);
    } else {
        return std::visit(run, sc, lp, ref, posttrain::detail::mask_input<2>(mask, {fn, "mask"}), out);
    }
}

// ---- KL coefficient controllers (Ziegler et al. 2019), updated once per step with the step's KL ----

// A constant coefficient (verl kl_ctrl.type = "fixed").
struct fixed_kl_controller {
    double value = 0.001;
    constexpr void update(double /*current_kl*/, double /*n_steps*/) noexcept {}
};

// beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon: verl, OpenRLHF and TRL's
// AdaptiveKLController (n_steps = the batch size in all three).
struct adaptive_kl_controller {
    double value = 0.001;  // the current coefficient (init_kl_coef)
    double target = 0.1;   // target KL
    double horizon = 10000;

    // verl AlgoConfig kl_ctrl defaults: kl_coef 0.001, target_kl 0.1, horizon 10000.
    static constexpr adaptive_kl_controller verl(double init_kl_coef = 0.001, double target_kl = 0.1,
                                                 double horizon = 10000) {
        return {init_kl_coef, target_kl, horizon};
    }
    // TRL's (pre-1.0) PPOConfig defaults: init_kl_coef 0.2, target 6, horizon 10000.
    static constexpr adaptive_kl_controller trl(double init_kl_coef = 0.2, double target_kl = 6, double horizon = 10000) {
        return {init_kl_coef, target_kl, horizon};
    }

    // Throws invalid_argument for a non-finite or negative KL, a negative n_steps, or a target or
    // horizon that is not positive (a NaN would poison the coefficient for the rest of training).
    void update(double current_kl, double n_steps) {
        constexpr const char* fn = "posttrain::policy_loss::adaptive_kl_controller::update";
        detail::require(numeric::is_finite(current_kl), {fn, "current_kl"}, "must be finite, found " + std::to_string(current_kl));
        detail::require(n_steps >= 0 && numeric::is_finite(n_steps), {fn, "n_steps"}, "must be >= 0, found " + std::to_string(n_steps));
        detail::require(target > 0 && numeric::is_finite(target), {fn, "target"}, "must be > 0, found " + std::to_string(target));
        detail::require(horizon > 0 && numeric::is_finite(horizon), {fn, "horizon"}, "must be > 0, found " + std::to_string(horizon));
        double e = current_kl / target - 1;
        e = e < -0.2 ? -0.2 : (e > 0.2 ? 0.2 : e);
        value *= 1 + e * n_steps / horizon;
    }
};

}  // namespace posttrain::policy_loss
