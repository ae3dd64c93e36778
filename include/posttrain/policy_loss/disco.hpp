#pragma once
// DisCO: discriminative constrained optimisation (Li et al. 2025, arXiv 2505.12366; code
// Optimization-AI/DisCO bd2b078, verl/verl/trainer/ppo/core_algos.py compute_policy_loss_disco*).
//
// A sequence-level objective: each response gets a score s_i from its tokens, and for every group
// (question) holding at least one positive and one negative response
//
//   DisCO-b   J_q = mean_{i in P} s_i - mean_{j in N} s_j
//   DisCO     J_q = mean_{i in P} s_i - tau * log mean_{j in N} exp(s_j / tau)      (DRO over negatives)
//
//   J = sum_{mixed q} J_q / Q        Q = every non-empty group of the batch (mixed or not), as the code divides
//   loss = -J + beta/2 * max(KL - delta, 0)^2                       (squared-hinge trust region)
//
// with s_i = token mean of log pi (log-L) or of pi / pi_old (L-ratio), and KL the token mean over the
// whole batch of an estimator of KL(pi_old || pi) (k1: log pi_old - log pi, the scripts' 'kl'; k3:
// 'low_var_kl'). Groups that are all positive or all negative give no signal (DisCO's point: GRPO's
// weight sqrt(p(1-p)) becomes a constant). See docs/algorithms/disco.md.
//
// Also the home of the sequence-score helpers the other sequence-level group objectives of this
// issue (TRPA, Reg-GRPO) share: token means of a per-token quantity, and the gradient broadcast.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../advantage/tokens.hpp"
#include "../core/groups.hpp"
#include "kl.hpp"

namespace posttrain::policy_loss {

// The per-response score.
enum class disco_score {
    log_likelihood,    // log-L: s = token mean of log pi(o_t)
    likelihood_ratio,  // L-ratio: s = token mean of pi(o_t) / pi_old(o_t)
};

// The discriminative objective.
enum class disco_objective {
    mean_difference,  // DisCO-b: mean positive score - mean negative score
    log_sum_exp,      // DisCO: mean positive score - tau * log mean_j exp(s_j / tau) over the negatives
};

// Which responses are positive and negative.
enum class disco_labels {
    threshold,     // r > threshold: positive, else negative (posttrain: non-binary rewards are usable)
    exact_binary,  // r == 1: positive, r == 0: negative, anything else in neither set (the code's == 1 / == 0)
};

struct disco_options {
    disco_score score = disco_score::log_likelihood;
    disco_objective objective = disco_objective::log_sum_exp;
    double tau = 10;     // DRO temperature (scripts: 10 for log-L, 1 for L-ratio)
    double delta = 1e-4; // trust-region radius of the KL constraint
    double beta = 1e3;   // squared-hinge penalty weight
    // Estimator of KL(pi_old || pi) per token, called as kl_token(old, new): k1 = log pi_old - log pi
    // (DisCO 'kl', the scripts' choice), k3 = exp(d) - d - 1 with d = log pi - log pi_old ('low_var_kl').
    kl_estimator kl = kl_estimator::k1;
    disco_labels labels = disco_labels::threshold;
    double threshold = 0.5;
    // The code's values (the gradients are the same either way, up to the code's eps): the DRO term
    // is written as tau * S / (S.detach() + eps), S = sum_j exp(s_j / tau - max), whose value is ~tau
    // rather than the log-mean-exp, and the penalty as max(beta (KL - delta), 0).detach() * KL rather
    // than beta/2 max(KL - delta, 0)^2. Off: the paper's objective values.
    bool reference_values = false;
    // > 0: the number of questions Q of the whole step (the code all-gathers the batch; a caller that
    // splits one step's groups over several calls passes the total). 0: this call's group count.
    double num_questions = 0;

    // The released scripts (scripts/train/run_disco*.sh): delta 1e-4, beta 1e3, tau 10 (log-L) or 1
    // (L-ratio), kl_type 'kl', rewards compared with == 1 / == 0, the code's surrogate values.
    static constexpr disco_options official(disco_score s = disco_score::log_likelihood,
                                            disco_objective obj = disco_objective::log_sum_exp,
                                            kl_estimator kl = kl_estimator::k1) {
        disco_options o;
        o.score = s;
        o.objective = obj;
        o.tau = s == disco_score::log_likelihood ? 10.0 : 1.0;
        o.kl = kl;
        o.labels = disco_labels::exact_binary;
        o.reference_values = true;
        return o;
    }
};

struct [[nodiscard]] disco_result {
    double loss = 0;                // -objective + penalty (the reduced loss the gradient is of)
    double objective = 0;           // J = sum over mixed groups of J_q, divided by Q
    double log_mean_exp = 0;        // DRO: sum over mixed groups of tau * log mean exp(s_j / tau), / Q (0 for DisCO-b)
    double kl = 0;                  // the batch KL estimate (DisCO's ppo_kl)
    double penalty = 0;             // the constraint term of the loss
    bool constraint_active = false; // kl > delta (DisCO logs it as pg_clipfrac)
    index_t groups = 0;             // Q (the non-empty groups of this call)
    index_t mixed_groups = 0;       // groups with at least one positive and one negative response
};

namespace detail {

// ---- sequence scores shared by the sequence-level group objectives ----

// The per-token quantity whose token mean is a response's score.
enum class token_term {
    log_prob,  // log pi
    ratio,     // exp(log pi - log pi_other)
};

POSTTRAIN_HD inline double term_value(token_term k, double lp, double other) noexcept {
    return k == token_term::ratio ? std::exp(lp - other) : lp;
}
// d term / d lp.
POSTTRAIN_HD inline double term_grad(token_term k, double lp, double other) noexcept {
    return k == token_term::ratio ? std::exp(lp - other) : 1.0;
}

// Token means of a per-token quantity over the selected (mask != 0) tokens of each row: the score of
// every sequence-level objective here. Masks select, they do not weigh: a selected token counts once
// whatever the mask value, a masked one contributes nothing whatever it holds. A row with no selected
// token has count 0 and mean 0; `bad` flags rows holding a non-finite selected value.
struct row_means {
    std::vector<double> mean, count;
    std::vector<unsigned char> bad;
};

template <class Policy, class A, class B, class M>
row_means token_means(const Policy& policy, tensor_view<const A, 2> lp, tensor_view<const B, 2> other,
                      tensor_view<const M, 2> m, token_term k) {
    const index_t rows = lp.extent(0), T = lp.extent(1);
    row_means r;
    r.mean.assign(std::size_t(rows), 0.0);
    r.count.assign(std::size_t(rows), 0.0);
    r.bad.assign(std::size_t(rows), 0);
    for_each_row(policy, rows, T, [&](index_t i) {
        double n = 0;
        const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
            if (mask_weight(m(i, t)) == 0) return 0.0;
            n += 1;
            return term_value(k, double(lp(i, t)), double(other(i, t)));
        });
        r.count[std::size_t(i)] = n;
        r.mean[std::size_t(i)] = n > 0 ? s / n : 0.0;
        r.bad[std::size_t(i)] = numeric::is_finite(s) ? 0 : 1;
    });
    return r;
}

// Raises on the first row flagged by token_means, naming the argument it came from.
inline void check_rows_finite(const row_means& r, where w) {
    for (std::size_t i = 0; i < r.bad.size(); ++i)
        if (r.bad[i])
            posttrain::detail::raise_invalid_argument(w.function, w.argument,
                                   "row " + str(index_t(i)) + " has a non-finite value at a selected (mask != 0) token");
}

// The batch token mean of a KL estimator and, per token, its derivative w.r.t. log pi: the trust-region
// terms of DisCO (reversed: KL(pi_old || pi), estimator called as kl_token(old, new)) and TRPA
// (kl_token(new, old)). Token mean over every selected token of the batch; 0 when there is none.
struct batch_kl {
    double value = 0, tokens = 0;
};

POSTTRAIN_HD inline value_grad sequence_kl_token(double lp, double old, const kl_options& o, bool reversed) noexcept {
    if (!reversed) return kl_token(lp, old, o);
    const auto r = kl_token(old, lp, o);
    return {r.value, -r.grad};  // d / d(second argument) of every unclamped non-straight-through estimator
}

template <class Policy, class A, class B, class M>
batch_kl batch_kl_mean(const Policy& policy, tensor_view<const A, 2> lp, tensor_view<const B, 2> old,
                       tensor_view<const M, 2> m, const kl_options& o, bool reversed) {
    const index_t rows = lp.extent(0), T = lp.extent(1);
    std::vector<double> sum(static_cast<std::size_t>(rows)), cnt(static_cast<std::size_t>(rows));
    for_each_row(policy, rows, T, [&](index_t i) {
        double n = 0;
        sum[std::size_t(i)] = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
            if (mask_weight(m(i, t)) == 0) return 0.0;
            n += 1;
            return sequence_kl_token(double(lp(i, t)), double(old(i, t)), o, reversed).value;
        });
        cnt[std::size_t(i)] = n;
    });
    batch_kl k;
    k.tokens = sum_rows(cnt);
    k.value = k.tokens > 0 ? sum_rows(sum) / k.tokens : 0.0;
    return k;
}

// grad[i, t] = grad_scale * (coef[i] * d term / d lp + kl_weight * d kl / d lp) on selected tokens, 0
// elsewhere: the broadcast of a sequence-level loss's d loss / d score[i] (coef[i] already divided by
// the row's token count) plus a batch-mean KL term (kl_weight = d loss / d KL / tokens, 0 for none).
template <class Policy, class G, class A, class B, class C, class M>
void write_sequence_grad(const Policy& policy, tensor_view<G, 2> g, tensor_view<const A, 2> lp,
                         tensor_view<const B, 2> other, tensor_view<const C, 2> kl_other, tensor_view<const M, 2> m,
                         token_term k, const std::vector<double>& coef, double kl_weight, const kl_options& ko,
                         bool kl_reversed, double grad_scale) {
    const index_t rows = lp.extent(0), T = lp.extent(1);
    for_each_row(policy, rows, T, [&](index_t i) {
        const double c = coef[std::size_t(i)];
        for (index_t t = 0; t < T; ++t) {
            if (mask_weight(m(i, t)) == 0) {
                g(i, t) = G(0);
                continue;
            }
            const double x = double(lp(i, t));
            double d = c != 0 ? c * term_grad(k, x, double(other(i, t))) : 0.0;
            if (kl_weight != 0) d += kl_weight * sequence_kl_token(x, double(kl_other(i, t)), ko, kl_reversed).grad;
            g(i, t) = static_cast<G>(d * grad_scale);
        }
    });
}

// Rows of a group split by label, for the DisCO / Reg-GRPO style group kernels.
inline bool disco_positive(double r, const disco_options& o) {
    return o.labels == disco_labels::threshold ? r > o.threshold : r == 1.0;
}
inline bool disco_negative(double r, const disco_options& o) {
    return o.labels == disco_labels::threshold ? !(r > o.threshold) : r == 0.0;
}

inline void check_disco_options(const disco_options& o, const char* fn) {
    const char* arg = "options";
    require(o.tau > 0 && std::isfinite(o.tau), {fn, arg}, "tau must be a finite number > 0, found " + std::to_string(o.tau));
    require(o.beta >= 0 && std::isfinite(o.beta), {fn, arg}, "beta must be finite and >= 0, found " + std::to_string(o.beta));
    require(std::isfinite(o.delta), {fn, arg}, "delta must be finite, found " + std::to_string(o.delta));
    require(std::isfinite(o.threshold), {fn, arg}, "threshold must be finite, found " + std::to_string(o.threshold));
    require(o.num_questions >= 0 && std::isfinite(o.num_questions), {fn, arg},
            "num_questions must be finite and >= 0 (0: this call's groups)");
    const int s = static_cast<int>(o.score), j = static_cast<int>(o.objective), l = static_cast<int>(o.labels);
    require(s >= 0 && s <= 1, {fn, arg}, "unknown disco_score " + str(s));
    require(j >= 0 && j <= 1, {fn, arg}, "unknown disco_objective " + str(j));
    require(l >= 0 && l <= 1, {fn, arg}, "unknown disco_labels " + str(l));
    const int e = static_cast<int>(o.kl);
    require(e >= 0 && e <= static_cast<int>(kl_estimator::k3), {fn, arg}, "unknown kl_estimator " + str(e));
}

// Rewards as doubles (one visit, so the loss body is instantiated once per log-prob/mask type).
template <class Rewards>
std::vector<double> read_rewards(const Rewards& rewards, index_t n, const char* fn, const char* name = "rewards") {
    return std::visit(
        [&](auto r) {
            posttrain::advantage::detail::check_extent(r.extent(0), n, {fn, name}, "length (one entry per row of 'log_probs')");
            posttrain::advantage::detail::check_finite(r, {fn, name});
            std::vector<double> v(static_cast<std::size_t>(r.extent(0)));
            for (index_t i = 0; i < r.extent(0); ++i) v[std::size_t(i)] = double(r(i));
            return v;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, name}));
}

}  // namespace detail

// Per-response DisCO scores: scores[i] = token mean of log pi (log-L) or of pi / pi_old (L-ratio)
// over the selected tokens of row i (0 for a row with none). old_log_probs is read only for L-ratio.
template <class Policy, class LogProbs, class OldLogProbs, class Mask, class Scores>
void disco_scores(const Policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs, const Mask& mask,
                  Scores&& scores, disco_score score = disco_score::log_likelihood) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::disco_scores: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::disco_scores";
    std::visit(
        [&](auto lp, auto old, auto m, auto s) {
            detail::check_same_shape(old, lp, {fn, "old_log_probs"}, "log_probs");
            detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            posttrain::advantage::detail::check_extent(s.extent(0), lp.extent(0), {fn, "scores"}, "length (one per row)");
            detail::check_no_alias(s, lp, {fn, "scores"}, "log_probs");
            const auto k = score == disco_score::likelihood_ratio ? detail::token_term::ratio : detail::token_term::log_prob;
            const auto r = detail::token_means(policy, lp, old, m, k);
            detail::check_rows_finite(r, {fn, "log_probs"});
            using S = typename decltype(s)::value_type;
            for (index_t i = 0; i < s.extent(0); ++i) s(i) = static_cast<S>(r.mean[std::size_t(i)]);
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}), posttrain::detail::floating_output<1>(scores, {fn, "scores"}));
}

// The DisCO loss of a batch: log-probs, behaviour log-probs and mask [B, T], one reward per row, the
// group (question) layout over the B rows; grad_log_probs [B, T] (or posttrain::none) receives
// grad_scale * d loss / d log_probs. Rows with no selected token take part in no set. Throws
// invalid_argument on bad shapes, layouts, options, non-finite rewards or selected log-probs.
template <class Policy, class LogProbs, class OldLogProbs, class Mask, class Rewards, class Groups, class Grad>
disco_result disco(const Policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs, const Mask& mask,
                   const Rewards& rewards, const Groups& groups, Grad&& grad_log_probs, const disco_options& options = {},
                   double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::disco: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::disco";
    detail::check_disco_options(options, fn);
    return std::visit(
        [&](auto lp, auto old, auto m) {
            detail::check_same_shape(old, lp, {fn, "old_log_probs"}, "log_probs");
            detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            auto g = detail::optional_output2(grad_log_probs, fn, "grad_log_probs", lp, "log_probs");
            detail::check_no_alias(g, lp, {fn, "grad_log_probs"}, "log_probs");
            detail::check_no_alias(g, old, {fn, "grad_log_probs"}, "old_log_probs");
            detail::check_no_alias(g, m, {fn, "grad_log_probs"}, "mask");
            const index_t B = lp.extent(0);
            const std::vector<double> r = detail::read_rewards(rewards, B, fn);
            const auto layout = posttrain::detail::make_layout(groups, B, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, g, fn, "grad_log_probs");

            const auto term = options.score == disco_score::likelihood_ratio ? detail::token_term::ratio
                                                                            : detail::token_term::log_prob;
            const auto sc = detail::token_means(policy, lp, old, m, term);
            detail::check_rows_finite(sc, {fn, "log_probs"});
            kl_options ko;
            ko.estimator = options.kl;
            const auto kl = detail::batch_kl_mean(policy, lp, old, m, ko, true);
            posttrain::detail::require(std::isfinite(kl.value), {fn, "old_log_probs"}, "the KL estimate is not finite (non-finite selected old log-probs)");

            // Per group: J_q and dJ_q / d s_i (into coef, rows of other groups untouched).
            const index_t Qn = layout.num_groups();
            // Q counts the questions, mixed or not, as the code's num_questions (its unique uids) does; a
            // layout's empty group holds no question and does not dilute J.
            index_t questions = 0;
            for (index_t q = 0; q < Qn; ++q) questions += layout.size(q) > 0;
            const double Q = options.num_questions > 0 ? options.num_questions : double(questions);
            std::vector<double> coef(std::size_t(B), 0.0), jq(std::size_t(Qn), 0.0), lme(std::size_t(Qn), 0.0);
            std::vector<unsigned char> mixed(std::size_t(Qn), 0);
            const double tau = options.tau;
            posttrain::advantage::detail::for_each_group(policy, layout, B, [&](index_t q, auto rows, index_t n) {
                double npos = 0, nneg = 0, neg_sum = 0, neg_max = -INFINITY;
                for (index_t j = 0; j < n; ++j) {
                    const auto i = std::size_t(rows(j));
                    if (sc.count[i] == 0) continue;
                    if (detail::disco_positive(r[i], options)) npos += 1;
                    else if (detail::disco_negative(r[i], options)) {
                        nneg += 1;
                        neg_sum += sc.mean[i];
                        if (sc.mean[i] / tau > neg_max) neg_max = sc.mean[i] / tau;
                    }
                }
                if (npos == 0 || nneg == 0) return;
                mixed[std::size_t(q)] = 1;
                // The negatives' term D and its weights dD / d s_j.
                double D = 0, S = 0;
                if (options.objective == disco_objective::mean_difference) {
                    D = neg_sum / nneg;
                } else {
                    for (index_t j = 0; j < n; ++j) {
                        const auto i = std::size_t(rows(j));
                        if (sc.count[i] != 0 && !detail::disco_positive(r[i], options) && detail::disco_negative(r[i], options))
                            S += std::exp(sc.mean[i] / tau - neg_max);
                    }
                    lme[std::size_t(q)] = tau * (neg_max + std::log(S) - std::log(nneg));
                    // The code's surrogate tau * S / (S.detach() + eps): value ~tau, gradient the softmax / (1 + eps / S).
                    D = options.reference_values ? tau * (S / (S + DBL_EPSILON)) : lme[std::size_t(q)];
                }
                const double Sd = options.reference_values ? S + DBL_EPSILON : S;
                double pos_sum = 0;
                for (index_t j = 0; j < n; ++j) {
                    const auto i = std::size_t(rows(j));
                    if (sc.count[i] == 0) continue;
                    if (detail::disco_positive(r[i], options)) {
                        pos_sum += sc.mean[i] - D;  // the code's mean over positives of (s_i - D)
                        coef[i] = 1.0 / npos;
                    } else if (detail::disco_negative(r[i], options)) {
                        coef[i] = options.objective == disco_objective::mean_difference
                                      ? -1.0 / nneg
                                      : -std::exp(sc.mean[i] / tau - neg_max) / Sd;
                    }
                }
                jq[std::size_t(q)] = pos_sum / npos;
            });

            disco_result res;
            res.groups = questions;
            double J = 0, L = 0;
            for (index_t q = 0; q < Qn; ++q) {  // fixed order: the same bits under every policy
                J += jq[std::size_t(q)];
                L += lme[std::size_t(q)];
                res.mixed_groups += mixed[std::size_t(q)];
            }
            res.objective = Q > 0 ? J / Q : 0.0;
            res.log_mean_exp = Q > 0 ? L / Q : 0.0;
            res.kl = kl.value;
            res.constraint_active = kl.value > options.delta;
            const double hinge = std::max(options.beta * (kl.value - options.delta), 0.0);  // d penalty / d KL
            const double excess = std::max(kl.value - options.delta, 0.0);
            res.penalty = options.reference_values ? hinge * kl.value : 0.5 * options.beta * excess * excess;
            res.loss = -res.objective + res.penalty;

            if constexpr (!detail::is_none<Grad>) {
                for (index_t i = 0; i < B; ++i) {
                    const double n = sc.count[std::size_t(i)];
                    coef[std::size_t(i)] = n > 0 && Q > 0 ? -coef[std::size_t(i)] / (Q * n) : 0.0;
                }
                const double kw = kl.tokens > 0 ? hinge / kl.tokens : 0.0;
                detail::write_sequence_grad(policy, g, lp, old, old, m, term, coef, kw, ko, true, grad_scale);
            }
            return res;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(old_log_probs, {fn, "old_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
