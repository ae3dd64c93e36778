#pragma once
// Per-token KL estimators between the policy and a reference policy, from their log-probabilities of
// the sampled token (Schulman's k1/k2/k3 and |log-ratio|), with each framework's clamps.
//
// With r = lp - ref (the policy/reference log-ratio of the sampled token) and d = -r:
//
//   k1   r                      unbiased, can be negative
//   abs  |r|
//   k2   r^2 / 2                (verl "mse")
//   k3   exp(d) - d - 1 >= 0    (verl "low_var_kl"), computed as expm1(d) - d
//
// Clamps, each optional and stated in the options: log_ratio_clamp c clamps d to [-c, c] before the
// estimator (verl k3 and NeMo: 20), value_clamp c clamps the estimate to [-c, c] (verl k3, OpenRLHF,
// NeMo: 10). straight_through keeps the estimator's value but takes the gradient of k2 (verl "k3+").

#include <cmath>

#include "../config.hpp"

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

namespace detail {

struct value_grad {
    double value;
    double grad;  // d value / d lp (d value / d ref = -grad)
};

// One token's estimate and its derivative w.r.t. the policy log-prob.
//
// Subgradients follow torch autograd, so that gradients match the frameworks at the kinks too:
// a clamp passes the gradient when its input lies inside the closed interval [-c, c] and gives 0
// strictly outside (torch.clamp); d|r|/dr at r = 0 is 0 (torch.sign). Inputs are not checked here:
// NaN propagates (the public functions reject non-finite input first).
POSTTRAIN_HD inline value_grad kl_token(double lp, double ref, const kl_options& o) noexcept {
    using std::expm1;
    double d = ref - lp;  // rounds exactly like -(lp - ref)
    double dd = -1;       // d d / d lp
    if (o.log_ratio_clamp > 0) {
        const double c = o.log_ratio_clamp;
        if (d > c) d = c, dd = 0;
        else if (d < -c) d = -c, dd = 0;
    }
    double v = 0, dv = 0;  // value and d value / d d
    switch (o.estimator) {
        case kl_estimator::k1: v = -d, dv = -1; break;
        case kl_estimator::abs: v = d < 0 ? -d : d, dv = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0); break;
        case kl_estimator::k2: v = 0.5 * d * d, dv = d; break;
        case kl_estimator::k3: {
            const double e = expm1(d);
            v = e - d, dv = e;
            break;
        }
    }
    double g = dv * dd;
    if (o.value_clamp > 0) {
        const double c = o.value_clamp;
        if (v > c) v = c, g = 0;
        else if (v < -c) v = -c, g = 0;
    }
    if (o.straight_through) g = lp - ref;
    return {v, g};
}

}  // namespace detail
}  // namespace posttrain::policy_loss
