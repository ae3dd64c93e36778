#pragma once
// KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"): unpaired
// binary feedback. Each item is a response labelled desirable or undesirable, scored by its log-ratio
// l = S_theta(y) - S_ref(y) against a reference point z0:
//
//   desirable:    L = lambda_D (1 - sigma(beta (l - z0))) = lambda_D sigma(-beta (l - z0))
//   undesirable:  L = lambda_U (1 - sigma(beta (z0 - l))) = lambda_U sigma(-beta (z0 - l))
//   loss        = reduce over all B_D + B_U items (mean by default)
//   dL/dS_theta = -lambda_D beta sigma(x) sigma(-x)  (desirable, x = beta (l - z0))
//               = +lambda_U beta sigma(x) sigma(-x)  (undesirable, x = beta (z0 - l))
//
// sigma(x) sigma(-x) is taken as exp(-softplus(x) - softplus(-x)): no 0 * inf and an exact 0 far out.
// z0 is detached. It is the batch KL estimate from mismatched pairs (x_i, y_j), j != i:
//   z0 = max(0, mean_k [S_theta(y'_k) - S_ref(y'_k)])
// computed from the kl inputs (kto_anchor::computed, TRL calculate_KL=True), supplied by the caller
// (kto_anchor::supplied: e.g. the mean gathered across data-parallel ranks, see kto_kl_estimate;
// posttrain clamps it at 0 as TRL does after its gather), or 0 (kto_anchor::zero, calculate_KL=False).
//
// loss_type apo_zero_unpaired (TRL): desirable 1 - sigma(beta l), undesirable sigma(beta l): the KTO
// formula with z0 = 0 (the reported kl is still the estimate, as TRL reports it).
//
// Either side may be empty (TRL: an empty tensor, no NaN); the mean is over the items present. With
// no item at all the loss is 0 with no gradient (TRL's nanmean of nothing would be NaN).

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

enum class kto_loss_type {
    kto,                // Eq. (7) of the paper, reference point z0
    apo_zero_unpaired,  // anchored at 0 (D'Oosterlinck et al., "Anchored Preference Optimization")
};

enum class kto_anchor {
    computed,  // z0 = max(0, mean log-ratio of the kl inputs)
    supplied,  // z0 = max(0, options.kl)
    zero,      // z0 = 0 (TRL calculate_KL=False)
};

struct kto_options {
    double beta = 0.1;
    double desirable_weight = 1.0;    // lambda_D > 0
    double undesirable_weight = 1.0;  // lambda_U > 0
    kto_loss_type loss_type = kto_loss_type::kto;
    kto_anchor anchor = kto_anchor::computed;
    double kl = 0;  // the estimate used by kto_anchor::supplied
    preference::reduction reduction = preference::reduction::mean;
    double normalizer = 0;  // > 0: the global item count of the mean
    double grad_scale = 1.0;

    // TRL KTOTrainer.kto_loss (v0.28.0; the same math is inlined in HEAD's _compute_loss), followed by
    // the trainer's losses.nanmean(). calculate_KL=False is kto_anchor::zero.
    static constexpr kto_options trl(double beta = 0.1, kto_loss_type loss_type = kto_loss_type::kto,
                                     bool calculate_kl = true, double desirable_weight = 1.0,
                                     double undesirable_weight = 1.0) {
        kto_options o;
        o.beta = beta;
        o.loss_type = loss_type;
        o.anchor = calculate_kl ? kto_anchor::computed : kto_anchor::zero;
        o.desirable_weight = desirable_weight;
        o.undesirable_weight = undesirable_weight;
        return o;
    }
    // ContextualAI HALOs KTOTrainer with length_normalization=false: the same per-item loss and anchor,
    // averaged with losses.mean().
    static constexpr kto_options halos(double beta = 0.1, double desirable_weight = 1.0, double undesirable_weight = 1.0) {
        return trl(beta, kto_loss_type::kto, true, desirable_weight, undesirable_weight);
    }
};

// The log-probs of one side (desirable, undesirable or the mismatched kl pairs) under the policy and
// the reference model. A side with no items may be left absent (default-constructed).
struct kto_items {
    sequence_input policy{};
    sequence_input reference{};
};

// Optional per-item outputs: losses [B_D + B_U] (weighted; desirable items first, as TRL concatenates
// them), chosen_rewards [B_D] and rejected_rewards [B_U] = beta l (detached).
struct kto_outputs {
    batch_output losses{};
    batch_output chosen_rewards{};
    batch_output rejected_rewards{};
};

struct [[nodiscard]] kto_result {
    double loss = 0;
    double kl = 0;                // the clamped estimate z0 (TRL's `kl`; 0 for kto_anchor::zero)
    double rewards_chosen = 0;    // mean beta l over desirable items (0 when none)
    double rewards_rejected = 0;  // mean beta l over undesirable items (0 when none)
    double margin = 0;            // rewards_chosen - rewards_rejected when both sides have items, else 0
    double logps_chosen = 0;      // mean S_theta over desirable items (0 when none)
    double logps_rejected = 0;
    index_t desirable = 0;  // B_D
    index_t undesirable = 0;
};

namespace detail {

// Loss and dL/dl of one item whose score is x = beta * (l - z0) (desirable) or beta * (z0 - l)
// (undesirable); `sign` is -1 for desirable and +1 for undesirable.
struct kto_item {
    double loss;
    double grad;  // dL/dl
};

POSTTRAIN_HD inline kto_item kto_item_of(double x, double beta, double weight, double sign) noexcept {
    using std::exp;
    const double s = numeric::sigmoid(-x);
    const double dsig = exp(-numeric::softplus(x) - numeric::softplus(-x));
    return {weight * s, sign * weight * beta * dsig};
}

// The log-ratios of one side, and its policy values.
struct kto_side {
    index_t count = 0;
    sequence_values policy;
    std::vector<double> ratio;
};

template <class Policy>
kto_side kto_side_of(const Policy& policy, const kto_items& items, const char* fn, const char* policy_name,
                     const char* reference_name) {
    kto_side s;
    require(items.policy.present() || !items.reference.present(), {fn, policy_name}, "is required when the reference is given");
    if (!items.policy.present()) return s;
    s.count = items.policy.batch();
    require(items.reference.present() || s.count == 0, {fn, reference_name}, "is required");
    s.policy = reduce(policy, items.policy, s.count, {fn, policy_name});
    s.ratio.assign(std::size_t(s.count), 0.0);
    if (s.count == 0) {
        require(!items.reference.present() || items.reference.batch() == 0, {fn, reference_name},
                "must be empty when the policy side is");
        return s;
    }
    const auto ref = reduce(policy, items.reference, s.count, {fn, reference_name});
    for (index_t i = 0; i < s.count; ++i)
        s.ratio[std::size_t(i)] = s.policy.sum[std::size_t(i)] - ref.sum[std::size_t(i)];
    return s;
}

inline double mean_of(const std::vector<double>& v) {
    return v.empty() ? 0.0 : fixed_order_sum(v.data(), index_t(v.size())) / double(v.size());
}

}  // namespace detail

// The unclamped KL estimate mean_k [S_theta(y'_k) - S_ref(y'_k)] of mismatched pairs: what each
// data-parallel rank averages with the others before passing it as kto_options{.anchor =
// kto_anchor::supplied, .kl = ...} (TRL gathers, then clamps).
template <class Policy>
double kto_kl_estimate(const Policy& policy, const kto_items& kl) {
    static_assert(host_policy<Policy>, "posttrain::preference::kto_kl_estimate: host policy expected");
    constexpr const char* fn = "posttrain::preference::kto_kl_estimate";
    detail::require(kl.policy.present() && kl.policy.batch() > 0, {fn, "kl.policy"}, "needs at least one mismatched pair");
    const auto s = detail::kto_side_of(policy, kl, fn, "kl.policy", "kl.reference");
    return detail::mean_of(s.ratio);
}

// KTO over desirable and undesirable items, with grad_scale * dL/d(policy log-probs) written into
// grad_desirable / grad_undesirable ([B, T] for tokens, [B] for sums; posttrain::none skips). The
// reference and kl log-probs get no gradient (z0 is detached).
template <class Policy>
kto_result kto(const Policy& policy, const kto_items& desirable, const kto_items& undesirable, const kto_items& kl,
               const sequence_grad& grad_desirable, const sequence_grad& grad_undesirable, const kto_outputs& outputs = {},
               const kto_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::kto: host policy expected");
    constexpr const char* fn = "posttrain::preference::kto";
    const detail::where wo{fn, "options"};
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), wo, "beta must be finite and > 0");
    detail::require(options.desirable_weight > 0 && numeric::is_finite(options.desirable_weight), wo,
                    "desirable_weight must be finite and > 0");
    detail::require(options.undesirable_weight > 0 && numeric::is_finite(options.undesirable_weight), wo,
                    "undesirable_weight must be finite and > 0");
    const int lt = static_cast<int>(options.loss_type), an = static_cast<int>(options.anchor), rd = static_cast<int>(options.reduction);
    detail::require(lt == 0 || lt == 1, wo, "unknown loss_type " + detail::str(lt));
    detail::require(an >= 0 && an <= 2, wo, "unknown anchor " + detail::str(an));
    detail::require(rd == 0 || rd == 1, wo, "unknown reduction " + detail::str(rd));
    detail::require(options.anchor != kto_anchor::supplied || numeric::is_finite(options.kl), wo, "kl must be finite");
    detail::require(options.normalizer >= 0 && numeric::is_finite(options.normalizer), wo,
                    "normalizer must be finite and >= 0 (0: the item count)");
    detail::require(numeric::is_finite(options.grad_scale), wo, "grad_scale must be finite");

    const auto d = detail::kto_side_of(policy, desirable, fn, "desirable.policy", "desirable.reference");
    const auto u = detail::kto_side_of(policy, undesirable, fn, "undesirable.policy", "undesirable.reference");
    kto_result r;
    r.desirable = d.count;
    r.undesirable = u.count;
    if (options.anchor == kto_anchor::computed) {
        detail::require(kl.policy.present() && kl.policy.batch() > 0, {fn, "kl.policy"},
                        "needs at least one mismatched pair (or kto_anchor::supplied / zero)");
        const auto k = detail::kto_side_of(policy, kl, fn, "kl.policy", "kl.reference");
        r.kl = std::fmax(detail::mean_of(k.ratio), 0.0);
    } else if (options.anchor == kto_anchor::supplied) {
        r.kl = std::fmax(options.kl, 0.0);
    }
    const double z0 = options.loss_type == kto_loss_type::kto ? r.kl : 0.0;

    const index_t N = d.count + u.count;
    const double f = detail::reduction_factor(options.reduction, options.normalizer, N);
    const double beta = options.beta;
    std::vector<double> losses(static_cast<std::size_t>(N)), coef_d(static_cast<std::size_t>(d.count)),
        coef_u(static_cast<std::size_t>(u.count));
    std::vector<double> rew_d(static_cast<std::size_t>(d.count)), rew_u(static_cast<std::size_t>(u.count));
    for (index_t i = 0; i < d.count; ++i) {
        const double l = d.ratio[std::size_t(i)];
        const auto it = detail::kto_item_of(beta * (l - z0), beta, options.desirable_weight, -1.0);
        losses[std::size_t(i)] = it.loss;
        coef_d[std::size_t(i)] = f * options.grad_scale * it.grad;
        rew_d[std::size_t(i)] = beta * l;
    }
    for (index_t i = 0; i < u.count; ++i) {
        const double l = u.ratio[std::size_t(i)];
        const auto it = detail::kto_item_of(beta * (z0 - l), beta, options.undesirable_weight, 1.0);
        losses[std::size_t(d.count + i)] = it.loss;
        coef_u[std::size_t(i)] = f * options.grad_scale * it.grad;
        rew_u[std::size_t(i)] = beta * l;
    }
    r.loss = detail::fixed_order_sum(losses.data(), N) * f;
    r.rewards_chosen = detail::mean_of(rew_d);
    r.rewards_rejected = detail::mean_of(rew_u);
    r.margin = d.count > 0 && u.count > 0 ? r.rewards_chosen - r.rewards_rejected : 0.0;
    r.logps_chosen = detail::mean_of(d.policy.sum);
    r.logps_rejected = detail::mean_of(u.policy.sum);

    detail::require(desirable.policy.present() || !grad_desirable.present(), {fn, "grad_desirable"}, "given without desirable items");
    detail::require(undesirable.policy.present() || !grad_undesirable.present(), {fn, "grad_undesirable"},
                    "given without undesirable items");
    detail::check_grads_against(fn,
                                {{grad_desirable, "grad_desirable", desirable.policy},
                                 {grad_undesirable, "grad_undesirable", undesirable.policy}},
                                {{desirable.policy, "desirable.policy"}, {desirable.reference, "desirable.reference"},
                                 {undesirable.policy, "undesirable.policy"}, {undesirable.reference, "undesirable.reference"},
                                 {kl.policy, "kl.policy"}, {kl.reference, "kl.reference"}});
    detail::check_outputs_before_writes(fn, N,
                                        {{outputs.losses, "outputs.losses"},
                                         {outputs.chosen_rewards, "outputs.chosen_rewards", d.count},
                                         {outputs.rejected_rewards, "outputs.rejected_rewards", u.count}},
                                        {{grad_desirable, "grad_desirable"}, {grad_undesirable, "grad_undesirable"}});
    if (desirable.policy.present()) detail::broadcast(policy, desirable.policy, coef_d, grad_desirable, {fn, "grad_desirable"});
    if (undesirable.policy.present()) detail::broadcast(policy, undesirable.policy, coef_u, grad_undesirable, {fn, "grad_undesirable"});
    outputs.losses.write(losses, {fn, "outputs.losses"});
    outputs.chosen_rewards.write(rew_d, {fn, "outputs.chosen_rewards"});
    outputs.rejected_rewards.write(rew_u, {fn, "outputs.rejected_rewards"});
    return r;
}

}  // namespace posttrain::preference
