#pragma once
// Iterative / on-policy preference methods whose per-iteration loss is a small pairwise formula:
//   dno          DNO (Rosset et al.), Alg. 1 Eq. 8: soft-target BCE against the previous iterate (§3.10)
//   apo_reference APO (He, Yuan, Gu 2024): the Nesterov-extrapolated reference log-probs (§3.11)
//   p3o          P3O (Wu et al. 2023): pairwise PPO with trajectory ratios, separate or joint clipping (§3.17)
//   dpa_select   DPA (Wang et al. 2024): the rejection-sampling choice argmax_k v^T r_k (§3.16)
// Spec: preference_losses.md. DNO-Prct (Alg. 2) is DPO with the reference slot holding the previous
// iterate pi_t (or dno() with targets 1); DPA's fine-tuning step is plain SFT on the selected
// responses (sequence_log_probs / sequence_log_probs_backward with coefficient -1 or -1/n).

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

namespace detail {

inline void check_pair_reduction(reduction r, double normalizer, double grad_scale, const char* fn) {
    require(r == reduction::mean || r == reduction::sum, {fn, "options"}, "unknown reduction");
    require(normalizer >= 0 && numeric::is_finite(normalizer), {fn, "options"}, "normalizer must be finite and >= 0");
    require(numeric::is_finite(grad_scale), {fn, "options"}, "grad_scale must be finite");
}

inline double vector_sum(const std::vector<double>& v) {
    return fixed_order_sum(index_t(v.size()), [&](index_t j) { return v[std::size_t(j)]; });
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// DNO

struct dno_options {
    double eta = 0.1;  // the paper's eta (beta of DPO); 0.1 or 0.05 in its experiments
    reduction reduce = reduction::mean;
    double normalizer = 0;
    double grad_scale = 1.0;
};

struct [[nodiscard]] dno_result {
    double loss = 0;
    index_t pairs = 0;
    double mean_prediction = 0;  // mean sigma(u)
    double mean_target = 0;      // mean q
    reward_metrics rewards;      // eta * log-ratio of y1 as "chosen", of y2 as "rejected"
};

// DNO's soft target from the win-rates r_t(y1), r_t(y2) against the current policy: sigma(r1 - r2).
POSTTRAIN_HD inline double dno_target(double win_rate_1, double win_rate_2) noexcept {
    return numeric::sigmoid(win_rate_1 - win_rate_2);
}

// DNO over B pairs (y1, y2): policy log-probs and those of the previous iterate pi_t (the reference
// slot), soft targets q [B] in [0, 1]. u = eta * ((S(y1) - S_t(y1)) - (S(y2) - S_t(y2))),
// L = q softplus(-u) + (1 - q) softplus(u), dL/du = sigma(u) - q. grad_scale * gradients into grad_1 /
// grad_2; per-pair losses into `losses` (optional [B]).
template <class Policy, class Targets>
dno_result dno(const Policy& policy, const sequence_input& policy_1, const sequence_input& policy_2,
               const sequence_input& previous_1, const sequence_input& previous_2, const Targets& targets,
               const sequence_grad& grad_1, const sequence_grad& grad_2, const batch_output& losses = {},
               const dno_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::dno: host policy expected");
    constexpr const char* fn = "posttrain::preference::dno";
    detail::require(options.eta > 0 && numeric::is_finite(options.eta), {fn, "options"}, "eta must be finite and > 0");
    detail::check_pair_reduction(options.reduce, options.normalizer, options.grad_scale, fn);
    const index_t B = policy_1.batch();
    const auto s1 = detail::reduce(policy, policy_1, B, {fn, "policy_1"});
    const auto s2 = detail::reduce(policy, policy_2, B, {fn, "policy_2"});
    const auto t1 = detail::reduce(policy, previous_1, B, {fn, "previous_1"});
    const auto t2 = detail::reduce(policy, previous_2, B, {fn, "previous_2"});
    const auto q = detail::read_dense(targets, B, {fn, "targets"});
    for (double x : q.v) detail::require(x >= 0 && x <= 1, {fn, "targets"}, "must lie in [0, 1]");
    const double f = detail::reduction_factor(options.reduce, options.normalizer, B);
    std::vector<double> loss(static_cast<std::size_t>(B)), g1(static_cast<std::size_t>(B)), g2(static_cast<std::size_t>(B)), pred(static_cast<std::size_t>(B)),
        r1(static_cast<std::size_t>(B)), r2(static_cast<std::size_t>(B));
    for (std::size_t i = 0; i < std::size_t(B); ++i) {
        r1[i] = options.eta * (s1.sum[i] - t1.sum[i]);
        r2[i] = options.eta * (s2.sum[i] - t2.sum[i]);
        const double u = r1[i] - r2[i], qi = q.v[i];
        loss[i] = qi * numeric::softplus(-u) + (1 - qi) * numeric::softplus(u);
        pred[i] = numeric::sigmoid(u);
        g1[i] = options.eta * (pred[i] - qi) * f * options.grad_scale;
        g2[i] = -g1[i];
    }
    dno_result res;
    res.pairs = B;
    res.loss = detail::vector_sum(loss) * f;
    if (B > 0) {
        res.mean_prediction = detail::vector_sum(pred) / double(B);
        res.mean_target = detail::vector_sum(q.v) / double(B);
    }
    res.rewards = detail::pair_reward_metrics(r1, r2, s1.sum, s2.sum);
    detail::check_grads_against(fn, {{grad_1, "grad_1", policy_1}, {grad_2, "grad_2", policy_2}},
                                {{policy_1, "policy_1"}, {policy_2, "policy_2"}, {previous_1, "previous_1"}, {previous_2, "previous_2"}});
    detail::check_outputs_before_writes(fn, B, {{losses, "losses"}}, {{grad_1, "grad_1"}, {grad_2, "grad_2"}});
    detail::broadcast(policy, policy_1, g1, grad_1, {fn, "grad_1"});
    detail::broadcast(policy, policy_2, g2, grad_2, {fn, "grad_2"});
    losses.write(loss, {fn, "losses"});
    return res;
}

// ---------------------------------------------------------------------------------------------
// APO

struct apo_options {
    double alpha = 0.3;  // Nesterov extrapolation weight, 0 <= alpha < 1 (0: iterative DPO)
};

// The extrapolated reference of APO, log pi_hat = (1 + alpha) log pi_t - alpha log pi_{t-1}, up to
// log Z(x) (which cancels in every pairwise loss on one prompt): out = (1 + alpha) current - alpha
// previous, element-wise, for sums [B] or per-token log-probs [B, T]. Feed `out` as the reference of
// DPO (or any pairwise loss); it is a constant, so gradients are those of the loss. With a mask
// ([B, T] form), masked positions are written 0 and may hold anything in the inputs; otherwise every
// value must be finite.
template <class Policy, class Current, class Previous, class Out>
void apo_reference(const Policy&, const Current& current, const Previous& previous, Out&& out,
                   const apo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::apo_reference: host policy expected");
    constexpr const char* fn = "posttrain::preference::apo_reference";
    detail::require(options.alpha >= 0 && options.alpha < 1, {fn, "options"},
                    "alpha must be in [0, 1), found " + std::to_string(options.alpha));
    const auto c = detail::read_dense(current, -1, {fn, "current"}, true);
    const auto p = detail::read_dense(previous, c.rows, {fn, "previous"}, true);
    detail::require(p.cols == c.cols && detail::input_rank(current) == detail::input_rank(previous), {fn, "previous"},
                    "must have the shape of 'current'");
    detail::require(detail::input_rank(out) == detail::input_rank(current), {fn, "out"}, "must have the shape of 'current'");
    std::vector<double> v(c.v.size());
    for (std::size_t j = 0; j < v.size(); ++j) v[j] = (1 + options.alpha) * c.v[j] - options.alpha * p.v[j];
    detail::write_dense(out, v, c.rows, c.cols, {fn, "out"});
}

template <class Policy, class Current, class Previous, class Mask, class Out>
void apo_reference(const Policy&, const Current& current, const Previous& previous, const Mask& mask, Out&& out,
                   const apo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::apo_reference: host policy expected");
    constexpr const char* fn = "posttrain::preference::apo_reference";
    detail::require(options.alpha >= 0 && options.alpha < 1, {fn, "options"},
                    "alpha must be in [0, 1), found " + std::to_string(options.alpha));
    auto c = detail::read_dense(current, -1, {fn, "current"}, true, true);
    const auto p = detail::read_dense(previous, c.rows, {fn, "previous"}, true, true);
    const auto m = detail::read_dense<true>(mask, c.rows, {fn, "mask"}, true);
    detail::require(detail::input_rank(current) == 2, {fn, "current"}, "must be a [B, T] view (the masked form)");
    detail::require(p.cols == c.cols, {fn, "previous"},
                    "must have the shape of 'current': " + detail::str(p.cols) + " columns, expected " + detail::str(c.cols));
    detail::require(m.cols == c.cols, {fn, "mask"},
                    "must have the shape of 'current': " + detail::str(m.cols) + " columns, expected " + detail::str(c.cols));
    for (std::size_t j = 0; j < c.v.size(); ++j) {
        if (m.v[j] == 0) {
            c.v[j] = 0;
            continue;
        }
        const index_t i = index_t(j) / c.cols, t = index_t(j) % c.cols;
        if (!numeric::is_finite(c.v[j]) || !numeric::is_finite(p.v[j]))
            detail::raise_invalid_argument(fn, numeric::is_finite(c.v[j]) ? "previous" : "current",
                                           "non-finite log-prob at a valid position [" + detail::str(i) + ", " +
                                               detail::str(t) + "]");
        c.v[j] = (1 + options.alpha) * c.v[j] - options.alpha * p.v[j];
    }
    detail::write_dense(out, c.v, c.rows, c.cols, {fn, "out"});
}

// ---------------------------------------------------------------------------------------------
// P3O

enum class p3o_clip { separate, joint };

struct p3o_options {
    p3o_clip clip = p3o_clip::joint;
    double epsilon = 0.2;
    // log-ratios are clamped to +-log_ratio_limit before exp (as verl does for token ratios), so a
    // trajectory ratio never overflows; the gradient is 0 where the clamp is active.
    double log_ratio_limit = 20.0;
    reduction reduce = reduction::mean;
    double normalizer = 0;
    double grad_scale = 1.0;
};

struct [[nodiscard]] p3o_result {
    double loss = 0;
    index_t pairs = 0;
    double clip_fraction = 0;    // ratio terms whose clipped branch is taken (no gradient), over the terms
    double mean_reward_gap = 0;  // mean delta = r(y1) - r(y2)
};

namespace detail {

// One PPO-clip term -min(rho A, clip(rho, 1 +- eps) A) with rho = exp(x), x clamped to +-limit.
// Returns the loss; d = its derivative w.r.t. x; clipped = the clipped branch was taken.
POSTTRAIN_HD inline double p3o_term(double x, double A, double eps, double limit, double& d, bool& clipped) noexcept {
    const double xc = x > limit ? limit : (x < -limit ? -limit : x);
    const double rho = std::exp(xc);
    const double rc = rho > 1 + eps ? 1 + eps : (rho < 1 - eps ? 1 - eps : rho);
    const bool active = (A >= 0 && rho <= 1 + eps) || (A < 0 && rho >= 1 - eps);
    clipped = !active;
    d = active && x == xc ? -rho * A : 0.0;
    return active ? -rho * A : -rc * A;
}

}  // namespace detail

// P3O over B pairs of responses to one prompt sampled from pi_old: policy and old log-probs
// (sequence_input), rewards [B] each (KL-shaped by the caller: r - beta_KL (S_old - S_ref)), delta =
// r1 - r2. Separate clipping: L = 1/2 [PPO(rho_1, +delta) + PPO(rho_2, -delta)]; joint clipping:
// L = PPO(rho_1 / rho_2, delta), with PPO(rho, A) = -min(rho A, clip(rho, 1 +- eps) A).
template <class Policy, class Rewards1, class Rewards2>
p3o_result p3o(const Policy& policy, const sequence_input& policy_1, const sequence_input& policy_2,
               const sequence_input& old_1, const sequence_input& old_2, const Rewards1& rewards_1,
               const Rewards2& rewards_2, const sequence_grad& grad_1, const sequence_grad& grad_2,
               const p3o_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::p3o: host policy expected");
    constexpr const char* fn = "posttrain::preference::p3o";
    detail::require(options.clip == p3o_clip::separate || options.clip == p3o_clip::joint, {fn, "options"},
                    "unknown clip mode");
    detail::require(options.epsilon > 0 && options.epsilon < 1, {fn, "options"}, "epsilon must be in (0, 1)");
    detail::require(options.log_ratio_limit > 0 && options.log_ratio_limit <= 700, {fn, "options"},
                    "log_ratio_limit must be in (0, 700]");
    detail::check_pair_reduction(options.reduce, options.normalizer, options.grad_scale, fn);
    const index_t B = policy_1.batch();
    const auto s1 = detail::reduce(policy, policy_1, B, {fn, "policy_1"});
    const auto s2 = detail::reduce(policy, policy_2, B, {fn, "policy_2"});
    const auto o1 = detail::reduce(policy, old_1, B, {fn, "old_1"});
    const auto o2 = detail::reduce(policy, old_2, B, {fn, "old_2"});
    const auto r1 = detail::read_dense(rewards_1, B, {fn, "rewards_1"});
    const auto r2 = detail::read_dense(rewards_2, B, {fn, "rewards_2"});
    const double f = detail::reduction_factor(options.reduce, options.normalizer, B);
    const double lim = options.log_ratio_limit, eps = options.epsilon;
    std::vector<double> loss(static_cast<std::size_t>(B)), g1(static_cast<std::size_t>(B)), g2(static_cast<std::size_t>(B)), clipped(static_cast<std::size_t>(B)), gap(static_cast<std::size_t>(B));
    for (std::size_t i = 0; i < std::size_t(B); ++i) {
        const double delta = r1.v[i] - r2.v[i];
        const double x1 = s1.sum[i] - o1.sum[i], x2 = s2.sum[i] - o2.sum[i];
        gap[i] = delta;
        double d1 = 0, d2 = 0;
        bool c1 = false, c2 = false;
        if (options.clip == p3o_clip::separate) {
            loss[i] = 0.5 * (detail::p3o_term(x1, delta, eps, lim, d1, c1) + detail::p3o_term(x2, -delta, eps, lim, d2, c2));
            g1[i] = 0.5 * d1;
            g2[i] = 0.5 * d2;
            clipped[i] = 0.5 * (double(c1) + double(c2));
        } else {
            loss[i] = detail::p3o_term(x1 - x2, delta, eps, lim, d1, c1);
            g1[i] = d1;
            g2[i] = -d1;
            clipped[i] = double(c1);
        }
        g1[i] *= f * options.grad_scale;
        g2[i] *= f * options.grad_scale;
    }
    p3o_result res;
    res.pairs = B;
    res.loss = detail::vector_sum(loss) * f;
    if (B > 0) {
        res.clip_fraction = detail::vector_sum(clipped) / double(B);
        res.mean_reward_gap = detail::vector_sum(gap) / double(B);
    }
    detail::check_grads_against(fn, {{grad_1, "grad_1", policy_1}, {grad_2, "grad_2", policy_2}},
                                {{policy_1, "policy_1"}, {policy_2, "policy_2"}, {old_1, "old_1"}, {old_2, "old_2"}});
    detail::broadcast(policy, policy_1, g1, grad_1, {fn, "grad_1"});
    detail::broadcast(policy, policy_2, g2, grad_2, {fn, "grad_2"});
    return res;
}

// ---------------------------------------------------------------------------------------------
// DPA

struct dpa_options {
    bool normalize_direction = true;  // v / ||v|| (the argmax does not change; the reported rewards do)
};

struct [[nodiscard]] dpa_selection {
    std::vector<index_t> selected;            // per group: the row of argmax_k v^T r_k, -1 if none is valid
    std::vector<double> directional_reward;   // per group: v^T r of the selected row (NaN if none)
    index_t dropped = 0;                      // candidates with a non-finite reward component
};

// DPA rejection-sampling selection: rewards [N, m] (m reward heads), direction v [m] (finite, nonzero),
// candidates grouped by prompt (uniform_groups, ragged, grouping_result; groups of one allowed: the
// only candidate wins). Ties break to the lowest row; candidates with a non-finite reward are dropped.
template <class Policy, class Rewards, class Direction, class Groups>
dpa_selection dpa_select(const Policy&, const Rewards& rewards, const Direction& direction, const Groups& groups,
                         const dpa_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::dpa_select: host policy expected");
    constexpr const char* fn = "posttrain::preference::dpa_select";
    const auto r = detail::read_dense(rewards, -1, {fn, "rewards"}, true, true);
    auto v = detail::read_dense(direction, -1, {fn, "direction"});
    detail::require(v.rows == r.cols, {fn, "direction"},
                    "must have one entry per reward head (" + detail::str(r.cols) + "), found " + detail::str(v.rows));
    double norm2 = 0;
    for (double x : v.v) norm2 += x * x;
    detail::require(norm2 > 0 && numeric::is_finite(norm2), {fn, "direction"}, "must be a nonzero finite vector");
    if (options.normalize_direction)
        for (double& x : v.v) x /= std::sqrt(norm2);
    const auto rows = detail::group_rows(groups, r.rows, {fn, "groups"}, 1);
    dpa_selection out;
    for (const auto& g : rows) {
        index_t best = -1;
        double best_v = 0;
        for (index_t i : g) {
            double s = 0;
            bool ok = true;
            for (index_t k = 0; k < r.cols; ++k) {
                ok &= numeric::is_finite(r(i, k));
                s += v.v[std::size_t(k)] * r(i, k);
            }
            if (!ok || !numeric::is_finite(s)) {
                ++out.dropped;
                continue;
            }
            if (best < 0 || s > best_v || (s == best_v && i < best)) {
                best = i;
                best_v = s;
            }
        }
        out.selected.push_back(best);
        out.directional_reward.push_back(best < 0 ? std::numeric_limits<double>::quiet_NaN() : best_v);
    }
    return out;
}

}  // namespace posttrain::preference
