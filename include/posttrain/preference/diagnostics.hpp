#pragma once
// Over-optimisation diagnostics for preference training (what to log besides the loss), after
// "Scaling Laws for Reward Model Overoptimization in Direct Alignment Algorithms" (Rafailov et al. 2024)
// and "Reward Model Ensembles Help Mitigate Overoptimization" (Coste et al. 2024):
//
//  1. kl_budget: the KL between policy and reference per sampled sequence, from token log-probs, with
//     two estimators, and sqrt(KL) (the x-axis of the over-optimisation curves):
//        k1 = sum_t [m_t] (p_t - q_t)                 unbiased, can be negative per sample
//        k3 = sum_t [m_t] (e^{d_t} - d_t - 1)         d_t = q_t - p_t; >= 0 per token, lower variance
//  2. implicit rewards beta * (S_theta - S_ref) and log-probs over a fixed held-out set (or pairs), and
//     their drift from a stored baseline (likelihood displacement shows as falling chosen log-probs);
//  3. length exploitation: mean length and the least-squares fit of the implicit reward on the length
//     (slope, intercept, R^2);
//  4. ensemble disagreement over M reward models: worst case min_i R_i, uncertainty-weighted
//     mean_i R_i - lambda Var_i R_i, and Var_i R_i itself (an over-optimisation alarm).
//
// No gradients: these are measurements. Sequence inputs are preference::sequence_input (per-token with
// a mask, or sums), reduced with the library's masked fixed-order sums; non-finite valid values raise
// invalid_argument naming the argument. Every sum has a fixed order and rows are independent, so
// exec::par gives the bits of exec::seq.

#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "common.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

// ---- 1. KL budget ----

struct [[nodiscard]] kl_budget_result {
    double k1_mean = 0;  // mean over sequences of the k1 sums (can be < 0 from sampling noise)
    double k3_mean = 0;  // mean over sequences of the k3 sums (>= 0)
    double sqrt_k1 = 0;  // sqrt(max(k1_mean, 0)): a negative k1 mean reads as no budget spent
    double sqrt_k3 = 0;
    bool k1_negative = false;  // k1_mean < 0 (too few samples for the unbiased estimator)
    double sequences = 0;
    double tokens = 0;  // valid tokens in the batch
};

namespace detail {

// e^d - d - 1 without cancellation for small |d| (expm1(d) - d); +inf when e^d overflows (d > ~709),
// which is what the KL then is in double.
inline double k3_term(double d) noexcept { return std::expm1(d) - d; }

[[noreturn]] inline void raise_nonfinite_score(where w, index_t i, index_t j) {
    raise_invalid_argument(w.function, w.argument,
                           "non-finite value at [" + str(i) + (j >= 0 ? ", " + str(j) : std::string()) + "]");
}

// The statistics of x[0..n): mean, and the min / max (for exact zero-variance tests).
struct moments {
    double mean = 0, min = 0, max = 0;
};
inline moments moments_of(const std::vector<double>& x) {
    moments m;
    const index_t n = index_t(x.size());
    if (n == 0) return m;
    m.mean = fixed_order_sum(n, [&](index_t i) { return x[std::size_t(i)]; }) / double(n);
    m.min = m.max = x[0];
    for (double v : x) m.min = v < m.min ? v : m.min, m.max = v > m.max ? v : m.max;
    return m;
}

}  // namespace detail

// Per-sequence KL of the policy against the reference on policy samples, from per-token log-probs
// [B, T] and the response mask [B, T]: k1[b] and k3[b] (either may be posttrain::none) and their means.
// A row without a valid token has KL 0. An empty batch gives zeros.
template <class Policy, class LogProbs, class RefLogProbs, class Mask, class K1 = none_t, class K3 = none_t>
kl_budget_result kl_budget(const Policy& policy, const LogProbs& log_probs, const RefLogProbs& ref_log_probs, const Mask& mask,
                           K1&& k1 = K1{0}, K3&& k3 = K3{0}) {
    static_assert(host_policy<Policy>, "posttrain::preference::kl_budget: host policy expected");
    constexpr const char* fn = "posttrain::preference::kl_budget";
    const batch_output out1(std::forward<K1>(k1)), out3(std::forward<K3>(k3));
    return std::visit(
        [&](auto p, auto q, auto m) {
            detail::check_same_shape(q, p, {fn, "ref_log_probs"}, "log_probs");
            detail::check_same_shape(m, p, {fn, "mask"}, "log_probs");
            const index_t B = p.extent(0), T = p.extent(1);
            for (index_t i = 0; i < B; ++i)
                for (index_t t = 0; t < T; ++t) {
                    if (!detail::is_valid(m(i, t))) continue;
                    if (!numeric::is_finite(double(p(i, t)))) detail::raise_nonfinite({fn, "log_probs"}, i, t);
                    if (!numeric::is_finite(double(q(i, t)))) detail::raise_nonfinite({fn, "ref_log_probs"}, i, t);
                }
            std::vector<double> s1(static_cast<std::size_t>(B)), s3(static_cast<std::size_t>(B)), n(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T, [&](index_t i) {
                s1[std::size_t(i)] = detail::fixed_order_sum(T, [&](index_t t) {
                    return detail::is_valid(m(i, t)) ? double(p(i, t)) - double(q(i, t)) : 0.0;
                });
                s3[std::size_t(i)] = detail::fixed_order_sum(T, [&](index_t t) {
                    return detail::is_valid(m(i, t)) ? detail::k3_term(double(q(i, t)) - double(p(i, t))) : 0.0;
                });
                n[std::size_t(i)] = detail::fixed_order_sum(T, [&](index_t t) { return detail::is_valid(m(i, t)) ? 1.0 : 0.0; });
            });
            detail::check_outputs_before_writes(fn, B, {{out1, "k1"}, {out3, "k3"}});
            out1.write(s1, {fn, "k1"});
            out3.write(s3, {fn, "k3"});
            kl_budget_result r;
            r.sequences = double(B);
            r.tokens = detail::fixed_order_sum(B, [&](index_t i) { return n[std::size_t(i)]; });
            if (B == 0) return r;
            r.k1_mean = detail::moments_of(s1).mean;
            r.k3_mean = detail::moments_of(s3).mean;
            r.k1_negative = r.k1_mean < 0;
            r.sqrt_k1 = std::sqrt(r.k1_mean > 0 ? r.k1_mean : 0.0);
            r.sqrt_k3 = std::sqrt(r.k3_mean);
            return r;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<2>(ref_log_probs, {fn, "ref_log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

// ---- 2. implicit-reward drift ----

// Implicit rewards over a fixed held-out set of dataset responses (evaluate the same set at every
// checkpoint): mean beta * (S_theta - S_ref), mean S_theta and mean per-token log-prob S_theta / max(n, 1)
// (the out-of-distribution mass indicator of the DAA scaling-law paper; needs lengths).
struct [[nodiscard]] held_out_stats {
    double reward_mean = 0;
    double logps_mean = 0;
    double token_logp_mean = 0;  // NaN when the inputs are sums without lengths
    double sequences = 0;
};

// The change of each statistic from a stored baseline (current - baseline).
struct [[nodiscard]] held_out_drift {
    double reward = 0;
    double logps = 0;
    double token_logp = 0;
};

// The change of the pair metrics (reward_metrics, TRL's definitions) from a stored baseline.
struct [[nodiscard]] reward_metrics_drift {
    double chosen = 0, rejected = 0, margin = 0, accuracy = 0, logps_chosen = 0, logps_rejected = 0;
};

// held_out_stats of `policy` against `reference` (both sequence_input of B sequences); rewards[b] =
// beta * (S_theta - S_ref) is written to `rewards` unless it is absent. B = 0 gives zeros.
template <class Policy>
held_out_stats held_out_implicit_rewards(const Policy& policy, const sequence_input& policy_log_probs,
                                         const sequence_input& ref_log_probs, double beta, batch_output rewards = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::held_out_implicit_rewards: host policy expected");
    constexpr const char* fn = "posttrain::preference::held_out_implicit_rewards";
    detail::require(numeric::is_finite(beta) && beta > 0, {fn, "beta"}, "must be finite and > 0, found " + std::to_string(beta));
    const index_t B = policy_log_probs.batch();
    const auto s = detail::reduce(policy, policy_log_probs, B, {fn, "policy_log_probs"});
    const auto r = detail::reduce(policy, ref_log_probs, B, {fn, "ref_log_probs"});
    std::vector<double> rew(static_cast<std::size_t>(B)), tok(static_cast<std::size_t>(B));
    for (index_t i = 0; i < B; ++i) {
        const std::size_t k = std::size_t(i);
        rew[k] = beta * (s.sum[k] - r.sum[k]);
        const double n = s.length[k];
        tok[k] = n != n ? n : s.sum[k] / (n > 1 ? n : 1.0);  // sums given without lengths: NaN
    }
    rewards.write(rew, {fn, "rewards"});
    held_out_stats h;
    h.sequences = double(B);
    if (B == 0) return h;
    h.reward_mean = detail::moments_of(rew).mean;
    h.logps_mean = detail::moments_of(s.sum).mean;
    h.token_logp_mean = detail::moments_of(tok).mean;
    return h;
}

// TRL's pair metrics (chosen / rejected rewards beta * log-ratio, margin, strict accuracy, chosen and
// rejected log-probs) of B pairs, for tracking their trend with drift().
template <class Policy>
reward_metrics pair_implicit_rewards(const Policy& policy, const sequence_input& policy_chosen, const sequence_input& policy_rejected,
                                     const sequence_input& ref_chosen, const sequence_input& ref_rejected, double beta) {
    static_assert(host_policy<Policy>, "posttrain::preference::pair_implicit_rewards: host policy expected");
    constexpr const char* fn = "posttrain::preference::pair_implicit_rewards";
    detail::require(numeric::is_finite(beta) && beta > 0, {fn, "beta"}, "must be finite and > 0, found " + std::to_string(beta));
    const index_t B = policy_chosen.batch();
    const auto pc = detail::reduce(policy, policy_chosen, B, {fn, "policy_chosen"});
    const auto pr = detail::reduce(policy, policy_rejected, B, {fn, "policy_rejected"});
    const auto rc = detail::reduce(policy, ref_chosen, B, {fn, "ref_chosen"});
    const auto rr = detail::reduce(policy, ref_rejected, B, {fn, "ref_rejected"});
    std::vector<double> c(static_cast<std::size_t>(B)), r(static_cast<std::size_t>(B));
    for (std::size_t k = 0; k < std::size_t(B); ++k) {
        c[k] = beta * (pc.sum[k] - rc.sum[k]);
        r[k] = beta * (pr.sum[k] - rr.sum[k]);
    }
    return detail::pair_reward_metrics(c, r, pc.sum, pr.sum);
}

inline held_out_drift drift(const held_out_stats& current, const held_out_stats& baseline) {
    return {current.reward_mean - baseline.reward_mean, current.logps_mean - baseline.logps_mean,
            current.token_logp_mean - baseline.token_logp_mean};
}
inline reward_metrics_drift drift(const reward_metrics& current, const reward_metrics& baseline) {
    return {current.chosen - baseline.chosen,     current.rejected - baseline.rejected,
            current.margin - baseline.margin,     current.accuracy - baseline.accuracy,
            current.logps_chosen - baseline.logps_chosen, current.logps_rejected - baseline.logps_rejected};
}

// ---- 3. length exploitation ----

// The least-squares line reward ~ intercept + slope * length over N samples, with R^2 = the squared
// correlation. Degenerate variance (decided exactly, max == min): all lengths equal -> slope 0,
// intercept = mean reward, R^2 = 0 and length_degenerate; all rewards equal (lengths not) -> slope 0,
// R^2 = 0 and reward_degenerate (no variance to explain). N = 0 gives zeros (both flags set).
struct [[nodiscard]] length_exploitation_result {
    double mean_length = 0;
    double mean_reward = 0;
    double slope = 0;
    double intercept = 0;
    double r_squared = 0;
    bool length_degenerate = false;
    bool reward_degenerate = false;
    double samples = 0;
};

namespace detail {
inline length_exploitation_result fit_length(const std::vector<double>& y, const std::vector<double>& x) {
    length_exploitation_result r;
    const index_t n = index_t(y.size());
    r.samples = double(n);
    if (n == 0) {
        r.length_degenerate = r.reward_degenerate = true;
        return r;
    }
    const moments mx = moments_of(x), my = moments_of(y);
    r.mean_length = mx.mean;
    r.mean_reward = my.mean;
    r.intercept = my.mean;
    r.length_degenerate = mx.max == mx.min;
    r.reward_degenerate = my.max == my.min;
    if (r.length_degenerate || r.reward_degenerate) return r;
    // Centred (two-pass) sums, no cancellation of large means, over deviations divided by their largest
    // magnitude (> 0, as max != min): the squares lie in [0, 1] and neither underflow (spreads near
    // 1e-170) nor overflow (near 1e200); the fit is scale-free, so the scales come back only in the slope.
    double ax = 0, ay = 0;
    for (index_t i = 0; i < n; ++i) {
        ax = std::fmax(ax, std::fabs(x[std::size_t(i)] - mx.mean));
        ay = std::fmax(ay, std::fabs(y[std::size_t(i)] - my.mean));
    }
    auto u = [&](index_t i) { return (x[std::size_t(i)] - mx.mean) / ax; };
    auto v = [&](index_t i) { return (y[std::size_t(i)] - my.mean) / ay; };
    const double suu = fixed_order_sum(n, [&](index_t i) { return u(i) * u(i); });
    const double svv = fixed_order_sum(n, [&](index_t i) { return v(i) * v(i); });
    const double suv = fixed_order_sum(n, [&](index_t i) { return u(i) * v(i); });
    r.slope = suv / suu * (ay / ax);
    r.intercept = my.mean - r.slope * mx.mean;
    const double rho2 = (suv / suu) * (suv / svv);
    r.r_squared = rho2 < 0 ? 0.0 : (rho2 > 1 ? 1.0 : rho2);  // rounding can leave [0, 1] by an ulp
    return r;
}
}  // namespace detail

// From per-sample implicit rewards [N] and lengths [N] (any floating type; lengths finite and >= 0).
template <class Policy, class Rewards, class Lengths>
length_exploitation_result length_exploitation(const Policy& policy, const Rewards& rewards, const Lengths& lengths) {
    static_assert(host_policy<Policy>, "posttrain::preference::length_exploitation: host policy expected");
    constexpr const char* fn = "posttrain::preference::length_exploitation";
    (void)policy;  // O(N): one thread
    return std::visit(
        [&](auto y, auto x) {
            detail::require(x.extent(0) == y.extent(0), {fn, "lengths"},
                            "must have one entry per reward: found " + detail::str(x.extent(0)) + ", expected " + detail::str(y.extent(0)));
            const index_t n = y.extent(0);
            std::vector<double> yy(static_cast<std::size_t>(n)), xx(static_cast<std::size_t>(n));
            for (index_t i = 0; i < n; ++i) {
                yy[std::size_t(i)] = double(y(i));
                xx[std::size_t(i)] = double(x(i));
                if (!numeric::is_finite(yy[std::size_t(i)])) detail::raise_nonfinite_score({fn, "rewards"}, i, -1);
                detail::require(numeric::is_finite(xx[std::size_t(i)]) && xx[std::size_t(i)] >= 0, {fn, "lengths"},
                                "must be finite and >= 0, found " + std::to_string(xx[std::size_t(i)]) + " at [" + detail::str(i) + "]");
            }
            return detail::fit_length(yy, xx);
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_input<1>(lengths, {fn, "lengths"}));
}

// From policy samples: reward beta * (S_theta - S_ref), length n (the policy input's mask, or its
// lengths when given as sums; sums without lengths raise).
template <class Policy>
length_exploitation_result length_exploitation(const Policy& policy, const sequence_input& policy_log_probs,
                                               const sequence_input& ref_log_probs, double beta) {
    static_assert(host_policy<Policy>, "posttrain::preference::length_exploitation: host policy expected");
    constexpr const char* fn = "posttrain::preference::length_exploitation";
    detail::require(numeric::is_finite(beta) && beta > 0, {fn, "beta"}, "must be finite and > 0, found " + std::to_string(beta));
    detail::require(!policy_log_probs.present() || policy_log_probs.has_lengths(), {fn, "policy_log_probs"},
                    "needs lengths: pass per-token log-probs with a mask, or sums with lengths");
    const index_t B = policy_log_probs.batch();
    const auto s = detail::reduce(policy, policy_log_probs, B, {fn, "policy_log_probs"});
    const auto r = detail::reduce(policy, ref_log_probs, B, {fn, "ref_log_probs"});
    std::vector<double> y(static_cast<std::size_t>(B));
    for (std::size_t k = 0; k < std::size_t(B); ++k) y[k] = beta * (s.sum[k] - r.sum[k]);
    return detail::fit_length(y, s.length);
}

// ---- 4. ensemble disagreement ----

struct ensemble_options {
    double lambda = 1.0;           // R_UWO = mean - lambda * var
    ddof variance = ddof::population;  // Var_i R_i over the M models (population: divide by M)
};

struct [[nodiscard]] ensemble_result {
    double worst_case_mean = 0;   // mean over samples of min_i R_i (R_WCO)
    double uncertainty_mean = 0;  // mean over samples of mean_i R_i - lambda Var_i R_i (R_UWO)
    double reward_mean = 0;       // mean over samples of mean_i R_i
    double variance_mean = 0;     // mean over samples of Var_i R_i (the alarm)
    double samples = 0;
};

// rewards [N, M]: M reward models' scores of N samples. Per-sample outputs (each may be absent):
// min_i, mean_i - lambda var_i, var_i. M < 2 (or M < 2 with ddof::sample) raises: one model has no
// disagreement to measure.
template <class Policy, class Rewards>
ensemble_result ensemble_disagreement(const Policy& policy, const Rewards& rewards, batch_output worst_case = {},
                                      batch_output uncertainty_weighted = {}, batch_output variance = {},
                                      const ensemble_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::ensemble_disagreement: host policy expected");
    constexpr const char* fn = "posttrain::preference::ensemble_disagreement";
    detail::require(numeric::is_finite(options.lambda), {fn, "options"}, "lambda must be finite");
    detail::require(options.variance == ddof::population || options.variance == ddof::sample, {fn, "options"}, "unknown ddof");
    return std::visit(
        [&](auto R) {
            const index_t N = R.extent(0), M = R.extent(1);
            detail::require(M >= 2, {fn, "rewards"}, "needs scores of at least 2 reward models (dimension 1), found " + detail::str(M));
            for (index_t i = 0; i < N; ++i)
                for (index_t j = 0; j < M; ++j)
                    if (!numeric::is_finite(double(R(i, j)))) detail::raise_nonfinite_score({fn, "rewards"}, i, j);
            std::vector<double> mn(static_cast<std::size_t>(N)), mu(static_cast<std::size_t>(N)), var(static_cast<std::size_t>(N)), uwo(static_cast<std::size_t>(N));
            const double denom = double(M) - (options.variance == ddof::sample ? 1.0 : 0.0);
            detail::for_each_row(policy, N, M, [&](index_t i) {
                const double m = detail::fixed_order_sum(M, [&](index_t j) { return double(R(i, j)); }) / double(M);
                double lo = double(R(i, 0)), hi = lo;
                for (index_t j = 1; j < M; ++j) lo = double(R(i, j)) < lo ? double(R(i, j)) : lo, hi = double(R(i, j)) > hi ? double(R(i, j)) : hi;
                // Two-pass variance; exactly 0 when every model agrees (max == min), whatever the rounding of m.
                const double v = hi == lo ? 0.0 : detail::fixed_order_sum(M, [&](index_t j) {
                    const double d = double(R(i, j)) - m;
                    return d * d;
                }) / denom;
                mn[std::size_t(i)] = lo;
                mu[std::size_t(i)] = m;
                var[std::size_t(i)] = v;
                uwo[std::size_t(i)] = m - options.lambda * v;
            });
            detail::check_outputs_before_writes(
                fn, N, {{worst_case, "worst_case"}, {uncertainty_weighted, "uncertainty_weighted"}, {variance, "variance"}});
            worst_case.write(mn, {fn, "worst_case"});
            uncertainty_weighted.write(uwo, {fn, "uncertainty_weighted"});
            variance.write(var, {fn, "variance"});
            ensemble_result r;
            r.samples = double(N);
            if (N == 0) return r;
            r.worst_case_mean = detail::moments_of(mn).mean;
            r.uncertainty_mean = detail::moments_of(uwo).mean;
            r.reward_mean = detail::moments_of(mu).mean;
            r.variance_mean = detail::moments_of(var).mean;
            return r;
        },
        posttrain::detail::floating_input<2>(rewards, {fn, "rewards"}));
}

}  // namespace posttrain::preference
