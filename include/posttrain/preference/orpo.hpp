#pragma once
// ORPO (Hong et al. 2024, "Monolithic Preference Optimization without Reference Model"): the SFT
// negative log-likelihood of the chosen responses plus lambda times an odds-ratio preference term.
//
// With a = S(y_w) / max(n_w, 1) and b = S(y_l) / max(n_l, 1) the mean-token log-probs (p = e^a is the
// geometric-mean token probability) and log1mexp(x) = log(1 - e^x):
//
//   z      = (a - b) - (log1mexp(a) - log1mexp(b))       = log odds(a) - log odds(b)
//   L_OR   = lambda softplus(-z)                          = -lambda log sigma(z)      (per pair)
//   loss   = NLL(chosen) + reduce_pairs(L_OR)
//   dL_OR/da = lambda sigma(-z) / expm1(a),  dL_OR/db = -lambda sigma(-z) / expm1(b)
//
// since d log odds(x) / dx = 1 / (1 - e^x) = -1 / expm1(x). The NLL is the SFT term of sft.hpp.
//
// Stability. log1mexp branches at -ln 2 (log(-expm1(x)) above, log1p(-exp(x)) below: no cancellation on
// either side), and every derivative is written with expm1, so nothing overflows for |a|, |b| up to
// 1e4 and beyond. At a = 0 (every token certain) log1mexp is -inf and 1/expm1 infinite, so a and b are
// clamped to at most options.log_prob_ceiling (-1e-6) first; a clamped value gets gradient 0 (the
// derivative of the clamp). TRL clamps nothing: its log1mexp yields log(0) there, and (in the version
// the conformance cases come from) a NaN gradient through the unselected torch.where branch as soon as
// exp(a) rounds to 1 in float32; posttrain returns a finite gradient instead. Tiny positive inputs
// (rounding of log_softmax) fall under the same clamp.
//
// TRL casts the log-probs to float32 inside odds_ratio_loss; options.float32 reproduces that (the
// odds-ratio arithmetic runs in float, the gradients are cast back), which the TRL conformance cases
// need to match to 1e-6. The NLL term and every sum are in double either way.

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "sequence.hpp"
#include "sft.hpp"

namespace posttrain::preference {

struct odds_ratio_options {
    double lambda = 0.1;             // weight of the odds-ratio term (TRL ORPOConfig.beta)
    bool length_normalize = true;    // a = S / max(n, 1) (TRL average_log_prob=True); false: a = S
    double log_prob_ceiling = -1e-6;  // a, b are clamped to <= this (< 0), see above
    bool float32 = false;            // TRL's .float() cast of the log-probs
    preference::reduction reduction = preference::reduction::mean;  // over pairs
    double normalizer = 0;           // > 0: the global pair count of the mean
    double grad_scale = 1.0;

    // TRL ORPOTrainer.odds_ratio_loss (experimental/orpo): beta, length-averaged log-probs, float32.
    static constexpr odds_ratio_options trl(double beta = 0.1) {
        odds_ratio_options o;
        o.lambda = beta;
        o.float32 = true;
        return o;
    }
};

struct orpo_options {
    double lambda = 0.1;
    bool length_normalize = true;
    double log_prob_ceiling = -1e-6;
    bool float32 = false;
    preference::reduction reduction = preference::reduction::mean;
    double normalizer = 0;
    // The NLL over the chosen tokens: TRL takes the token mean over the whole batch.
    sft_normalization nll_normalization = sft_normalization::token_mean;
    double nll_normalizer = 0;  // > 0: the global token (or response) count
    double grad_scale = 1.0;

    // TRL ORPOTrainer: loss = CrossEntropy(chosen tokens, token mean) - mean(beta log sigma(z)), with the
    // odds ratio in float32.
    static constexpr orpo_options trl(double beta = 0.1) {
        orpo_options o;
        o.lambda = beta;
        o.float32 = true;
        return o;
    }

    constexpr odds_ratio_options odds_ratio() const {
        return {lambda, length_normalize, log_prob_ceiling, float32, reduction, normalizer, grad_scale};
    }
};

// Optional per-pair outputs: the odds-ratio loss lambda softplus(-z) of each pair (TRL's odds_ratio_loss
// returns its negative, lambda log sigma(z)) and the rewards lambda a, lambda b.
struct odds_ratio_outputs {
    batch_output losses{};
    batch_output chosen_rewards{};
    batch_output rejected_rewards{};
};

struct [[nodiscard]] odds_ratio_result {
    double loss = 0;                 // reduce_pairs(lambda softplus(-z))
    double mean_log_sigmoid = 0;     // mean log sigma(z)  (TRL metric log_odds_ratio)
    double mean_log_odds = 0;        // mean z             (TRL metric log_odds_chosen)
    reward_metrics rewards;          // lambda a, lambda b; logps_* are the means of a and b (TRL logps/*)
    index_t pairs = 0;
};

struct [[nodiscard]] orpo_result {
    double loss = 0;             // nll_loss + odds_ratio.loss
    double nll_loss = 0;         // TRL metric nll_loss
    double nll_tokens = 0;
    odds_ratio_result odds_ratio;
};

namespace detail {

// One pair of the odds-ratio term in the arithmetic type R (double, or float for TRL's cast).
struct odds_ratio_pair {
    double loss;         // lambda softplus(-z)
    double log_sigmoid;  // log sigma(z)
    double z;
    double grad_a, grad_b;  // dloss/da, dloss/db (through the clamp)
    double reward_a, reward_b;
};

template <class R>
POSTTRAIN_HD inline R log1mexp(R x) noexcept {
    using std::exp;
    using std::expm1;
    using std::log;
    using std::log1p;
    return x > R(-0.6931471805599453) ? log(-expm1(x)) : log1p(-exp(x));
}

template <class R>
POSTTRAIN_HD inline odds_ratio_pair odds_ratio_pair_of(double a_in, double b_in, double lambda, double ceiling) noexcept {
    using std::expm1;
    const R lam = R(lambda), c = R(ceiling);
    const R a0 = R(a_in), b0 = R(b_in);
    const R a = a0 <= c ? a0 : c, b = b0 <= c ? b0 : c;  // torch clamp_max: gradient passes at equality
    // TRL's association order, so that float32 reproduces its roundings.
    const R z = (a - b) - (log1mexp(a) - log1mexp(b));
    const R ls = numeric::log_sigmoid(z);
    const R s = numeric::sigmoid(-z);
    odds_ratio_pair p;
    p.loss = double(-(lam * ls));
    p.log_sigmoid = double(ls);
    p.z = double(z);
    p.grad_a = a0 <= c ? double(lam * s / expm1(a)) : 0.0;
    p.grad_b = b0 <= c ? double(-(lam * s / expm1(b))) : 0.0;
    p.reward_a = double(lam * a0);
    p.reward_b = double(lam * b0);
    return p;
}

inline void check_odds_ratio_options(const odds_ratio_options& o, where w) {
    require(o.lambda > 0 && numeric::is_finite(o.lambda), w, "lambda must be finite and > 0");
    require(o.log_prob_ceiling < 0 && numeric::is_finite(o.log_prob_ceiling), w, "log_prob_ceiling must be finite and < 0");
    const int r = static_cast<int>(o.reduction);
    require(r == 0 || r == 1, w, "unknown reduction " + str(r));
    require(o.normalizer >= 0 && numeric::is_finite(o.normalizer), w, "normalizer must be finite and >= 0 (0: the pair count)");
    require(numeric::is_finite(o.grad_scale), w, "grad_scale must be finite");
}

// The mean-token log-probs (or the sums) of one side.
inline std::vector<double> odds_ratio_inputs(const sequence_values& v, bool length_normalize, where w) {
    std::vector<double> x(v.sum.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (length_normalize) {
            require(!std::isnan(v.length[i]), w,
                    "length_normalize needs response lengths: give sequence_input::tokens or sums(sums, lengths)");
            x[i] = v.sum[i] / std::fmax(v.length[i], 1.0);
        } else {
            x[i] = v.sum[i];
        }
    }
    return x;
}

// The odds-ratio term over reduced sequences: result, and dL/dS of each side (times grad_scale).
struct odds_ratio_terms {
    odds_ratio_result result;
    std::vector<double> coef_chosen, coef_rejected;
    std::vector<double> losses, rewards_chosen, rewards_rejected;
};

inline odds_ratio_terms odds_ratio_terms_of(const sequence_values& chosen, const sequence_values& rejected,
                                            const odds_ratio_options& o, const char* fn) {
    const index_t B = index_t(chosen.sum.size());
    const auto a = odds_ratio_inputs(chosen, o.length_normalize, {fn, "chosen"});
    const auto b = odds_ratio_inputs(rejected, o.length_normalize, {fn, "rejected"});
    const double f = reduction_factor(o.reduction, o.normalizer, B) * o.grad_scale;
    odds_ratio_terms t;
    t.coef_chosen.resize(std::size_t(B));
    t.coef_rejected.resize(std::size_t(B));
    t.losses.resize(std::size_t(B));
    t.rewards_chosen.resize(std::size_t(B));
    t.rewards_rejected.resize(std::size_t(B));
    std::vector<double> ls(static_cast<std::size_t>(B)), z(static_cast<std::size_t>(B));
    for (index_t i = 0; i < B; ++i) {
        const std::size_t k = std::size_t(i);
        const auto p = o.float32 ? odds_ratio_pair_of<float>(a[k], b[k], o.lambda, o.log_prob_ceiling)
                                 : odds_ratio_pair_of<double>(a[k], b[k], o.lambda, o.log_prob_ceiling);
        const double na = o.length_normalize ? std::fmax(chosen.length[k], 1.0) : 1.0;
        const double nb = o.length_normalize ? std::fmax(rejected.length[k], 1.0) : 1.0;
        t.coef_chosen[k] = f * p.grad_a / na;
        t.coef_rejected[k] = f * p.grad_b / nb;
        t.losses[k] = p.loss;
        ls[k] = p.log_sigmoid;
        z[k] = p.z;
        t.rewards_chosen[k] = p.reward_a;
        t.rewards_rejected[k] = p.reward_b;
    }
    auto& r = t.result;
    r.pairs = B;
    r.loss = fixed_order_sum(t.losses.data(), B) * reduction_factor(o.reduction, o.normalizer, B);
    if (B > 0) {
        r.mean_log_sigmoid = fixed_order_sum(ls.data(), B) / double(B);
        r.mean_log_odds = fixed_order_sum(z.data(), B) / double(B);
    }
    r.rewards = pair_reward_metrics(t.rewards_chosen, t.rewards_rejected, a, b);
    return t;
}

inline void check_pair_batches(const sequence_input& chosen, const sequence_input& rejected, const char* fn) {
    require(chosen.present(), {fn, "chosen"}, "is required");
    require(rejected.present(), {fn, "rejected"}, "is required");
    require(rejected.batch() == chosen.batch(), {fn, "rejected"},
            "must hold one response per pair: " + str(rejected.batch()) + " rows, 'chosen' has " + str(chosen.batch()));
}

// The per-pair outputs of odds_ratio / orpo: checked before the gradients are written, written after.
inline void check_odds_ratio_outputs(const odds_ratio_outputs& outputs, index_t B, const char* fn,
                                     std::initializer_list<written_output> grads) {
    check_outputs_before_writes(fn, B,
                                {{outputs.losses, "outputs.losses"},
                                 {outputs.chosen_rewards, "outputs.chosen_rewards"},
                                 {outputs.rejected_rewards, "outputs.rejected_rewards"}},
                                grads);
}
inline void write_odds_ratio_outputs(const odds_ratio_outputs& outputs, const odds_ratio_terms& t, const char* fn) {
    outputs.losses.write(t.losses, {fn, "outputs.losses"});
    outputs.chosen_rewards.write(t.rewards_chosen, {fn, "outputs.chosen_rewards"});
    outputs.rejected_rewards.write(t.rewards_rejected, {fn, "outputs.rejected_rewards"});
}

}  // namespace detail

// The odds-ratio term alone (TRL ORPOTrainer.odds_ratio_loss): per-pair lambda softplus(-z), reduced over
// pairs, with grad_scale * dL/d(log-probs) of the chosen and rejected responses (posttrain::none skips).
template <class Policy>
odds_ratio_result odds_ratio(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
                             const sequence_grad& grad_chosen, const sequence_grad& grad_rejected,
                             const odds_ratio_outputs& outputs = {}, const odds_ratio_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::odds_ratio: host policy expected");
    constexpr const char* fn = "posttrain::preference::odds_ratio";
    detail::check_odds_ratio_options(options, {fn, "options"});
    detail::check_pair_batches(chosen, rejected, fn);
    const index_t B = chosen.batch();
    const auto vc = detail::reduce(policy, chosen, B, {fn, "chosen"});
    const auto vr = detail::reduce(policy, rejected, B, {fn, "rejected"});
    auto t = detail::odds_ratio_terms_of(vc, vr, options, fn);
    detail::check_grads_against(fn, {{grad_chosen, "grad_chosen", chosen}, {grad_rejected, "grad_rejected", rejected}},
                                {{chosen, "chosen"}, {rejected, "rejected"}});
    detail::check_odds_ratio_outputs(outputs, B, fn, {{grad_chosen, "grad_chosen"}, {grad_rejected, "grad_rejected"}});
    detail::broadcast(policy, chosen, t.coef_chosen, grad_chosen, {fn, "grad_chosen"});
    detail::broadcast(policy, rejected, t.coef_rejected, grad_rejected, {fn, "grad_rejected"});
    detail::write_odds_ratio_outputs(outputs, t, fn);
    return t.result;
}

// ORPO: NLL over `nll_chosen` (the chosen tokens the cross-entropy covers; TRL: prompt and response) plus
// the odds-ratio term over the chosen / rejected responses. grad_nll receives the NLL gradient of
// nll_chosen. Per-pair outputs are those of the odds-ratio term.
template <class Policy>
orpo_result orpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
                 const sequence_input& nll_chosen, const sequence_grad& grad_chosen, const sequence_grad& grad_rejected,
                 const sequence_grad& grad_nll, const odds_ratio_outputs& outputs = {}, const orpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::orpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::orpo";
    const odds_ratio_options oo = options.odds_ratio();
    detail::check_odds_ratio_options(oo, {fn, "options"});
    detail::check_sft_options(options.nll_normalization, options.nll_normalizer, {fn, "options"});
    detail::check_pair_batches(chosen, rejected, fn);
    const bool separate = nll_chosen.present();
    detail::require(separate || !grad_nll.present(), {fn, "grad_nll"},
                    "given without 'nll_chosen' (the NLL gradient then goes into grad_chosen)");
    const index_t B = chosen.batch();
    const auto vc = detail::reduce(policy, chosen, B, {fn, "chosen"});
    const auto vr = detail::reduce(policy, rejected, B, {fn, "rejected"});
    const auto vn = separate ? detail::reduce(policy, nll_chosen, B, {fn, "nll_chosen"}) : vc;
    auto t = detail::odds_ratio_terms_of(vc, vr, oo, fn);
    auto nll = detail::sft_terms_of(vn, options.nll_normalization, options.nll_normalizer, {fn, separate ? "nll_chosen" : "chosen"});
    for (auto& c : nll.coef) c *= options.grad_scale;
    if (!separate)  // one broadcast: both terms are constant along each chosen response
        for (std::size_t i = 0; i < nll.coef.size(); ++i) t.coef_chosen[i] += nll.coef[i];
    detail::check_grads_against(fn,
                                {{grad_chosen, "grad_chosen", chosen},
                                 {grad_rejected, "grad_rejected", rejected},
                                 {grad_nll, "grad_nll", nll_chosen}},
                                {{chosen, "chosen"}, {rejected, "rejected"}, {nll_chosen, "nll_chosen"}});
    detail::check_odds_ratio_outputs(outputs, B, fn,
                                     {{grad_chosen, "grad_chosen"}, {grad_rejected, "grad_rejected"}, {grad_nll, "grad_nll"}});
    detail::broadcast(policy, chosen, t.coef_chosen, grad_chosen, {fn, "grad_chosen"});
    detail::broadcast(policy, rejected, t.coef_rejected, grad_rejected, {fn, "grad_rejected"});
    if (separate) detail::broadcast(policy, nll_chosen, nll.coef, grad_nll, {fn, "grad_nll"});
    detail::write_odds_ratio_outputs(outputs, t, fn);
    orpo_result r;
    r.odds_ratio = t.result;
    r.nll_loss = nll.loss;
    r.nll_tokens = nll.tokens;
    r.loss = r.nll_loss + r.odds_ratio.loss;
    return r;
}

// ORPO with the NLL over the same chosen tokens as the odds ratio (its gradient goes into grad_chosen).
template <class Policy>
orpo_result orpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
                 const sequence_grad& grad_chosen, const sequence_grad& grad_rejected, const odds_ratio_outputs& outputs = {},
                 const orpo_options& options = {}) {
    return orpo(policy, chosen, rejected, sequence_input{}, grad_chosen, grad_rejected, sequence_grad{}, outputs, options);
}

}  // namespace posttrain::preference
