#pragma once
// COPO (consistency-aware policy optimisation): when every rollout of a prompt agrees, GRPO's local
// advantage vanishes; COPO adds a global signal across prompts and blends the two losses by how
// consistent each prompt's answers are.
//
//   H_g      = -sum_a p(a) log2 p(a)                  entropy (bits) of group g's extracted answers
//   lambda_G = (1 - 1/G) / log2 G                     G = the group's size (0 for G = 1 here)
//   R_g      = mean_{i in g} r_i * c_g,  c_g = 1 - lambda_G H_g (reward_coef) or 1
//   A^glob_i = (R_g(i) - mean_g' R_g') / (std_g' R_g' + eps)       a z-score ACROSS PROMPTS
//   w_i      = sigmoid(k (H_g(i) - b))                 the local loss's weight (mode-dependent, below)
//   loss     = agg( w_i * l^loc + c (1 - w_i) * l^glob )   l: the PPO-clip token loss with A^loc / A^glob
//
// The local advantage is plain GRPO (grpo.hpp); the loss is policy_loss::compute run twice with the
// blend weights as detached per-token weights (extras.is_weights), so every objective, aggregation
// and framework preset of policy_loss composes with it. See docs/algorithms/copo.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "../core/numeric.hpp"
#include "../policy_loss/policy_loss.hpp"
#include "grpo.hpp"

namespace posttrain::advantage {

struct copo_options {
    bool reward_coef = false;        // reward_coef_flg: scale the mean reward by 1 - lambda_G H_g
    double entropy_epsilon = 0;      // H = -sum p log2(p + entropy_epsilon) (official: 1e-8)
    scale global_scale = scale::group;  // scale::none: centre only (norm_adv_by_std_in_grpo = False)
    double epsilon = 1e-6;           // added to the across-prompt std
    // A batch with one prompt has no across-prompt spread: its global advantage is 0 (singleton::zero,
    // posttrain), NaN (singleton::nan: torch's std of one value, as the official code gives), R_g itself
    // (singleton::raw: mean 0 and std 1, divided by 1 + epsilon under scale::group), or an
    // invalid_argument naming 'groups' (singleton::error).
    singleton single_prompt = singleton::zero;
    // A group of one rollout: lambda_G = 0/0. false: lambda = 0 (c = 1, posttrain); true: NaN (official).
    bool nan_singleton_coef = false;
    // Official parity: the answer entropy and c_g in float32 (torch.tensor(probs, dtype=float32)), and
    // the across-prompt mean / std of a float32 tensor of the prompts' global rewards.
    bool float32 = false;

    // hijih/copo-code core_algos.py (f66883f): compute_score_global and
    // compute_grpo_outcome_advantage_with_global (reward_coef_flg, norm_adv_by_std_in_grpo, epsilon).
    static constexpr copo_options official(bool reward_coef = false, bool norm_by_std = true, double eps = 1e-6) {
        copo_options o;
        o.reward_coef = reward_coef;
        o.entropy_epsilon = 1e-8;
        o.global_scale = norm_by_std ? scale::group : scale::none;
        o.epsilon = eps;
        o.single_prompt = singleton::nan;
        o.nan_singleton_coef = true;
        o.float32 = true;
        return o;
    }
};

struct [[nodiscard]] copo_result {
    index_t groups = 0;      // prompts (non-empty groups take part in the across-prompt statistics)
    double global_mean = 0;  // mean over prompts of R_g
    double global_std = 0;   // their std (NaN for one prompt)
};

namespace detail {

// Answer entropy (bits) of n answers, summed over distinct answers in order of first appearance.
template <class Answer>
double answer_entropy(const Answer& answer, index_t n, const copo_options& o) {
    std::vector<std::pair<std::int64_t, index_t>> key(static_cast<std::size_t>(n));
    for (index_t j = 0; j < n; ++j) key[std::size_t(j)] = {answer(j), j};
    std::stable_sort(key.begin(), key.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::pair<index_t, index_t>> distinct;  // (first row, count)
    for (std::size_t j = 0; j < key.size(); ++j) {
        if (j == 0 || key[j].first != key[j - 1].first) distinct.push_back({key[j].second, 0});
        ++distinct.back().second;
    }
    std::sort(distinct.begin(), distinct.end());
    using posttrain::detail::rounded;
    if (o.float32) {
        float h = 0;
        const float eps = static_cast<float>(o.entropy_epsilon);
        for (const auto& d : distinct) {
            const float p = static_cast<float>(double(d.second) / double(n));
            h = rounded(h + rounded(p * std::log2(p + eps)));
        }
        return double(-h);
    }
    double h = 0;
    for (const auto& d : distinct) {
        const double p = double(d.second) / double(n);
        h += rounded(p * std::log2(p + o.entropy_epsilon));
    }
    return -h;
}

// R_g: the group's mean reward (summed in row order) times its consistency coefficient.
inline double copo_global_reward(double mean, double entropy, index_t n, const copo_options& o) {
    if (!o.reward_coef) return mean;
    double lambda = n > 1 ? (1.0 - 1.0 / double(n)) / std::log2(double(n)) : (o.nan_singleton_coef ? std::nan("") : 0.0);
    if (o.float32) {
        using posttrain::detail::rounded;
        const float c = 1.0f - rounded(static_cast<float>(lambda) * static_cast<float>(entropy));
        return mean * double(c);
    }
    return mean * (1.0 - lambda * entropy);
}

}  // namespace detail

// Per group g: global_reward[g] = R_g and entropy[g] = H_g (outputs [G], or posttrain::none), from
// rewards[N] and answers[N] (integer answer keys: equal keys are the same answer; hash or canonicalise
// the extracted answer strings first). Empty groups give 0.
template <class Policy, class Rewards, class Answers, class Groups, class GlobalReward, class Entropy>
void copo_group_scores(const Policy& policy, const Rewards& rewards, const Answers& answers, const Groups& groups,
                       GlobalReward&& global_reward, Entropy&& entropy, const copo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::copo_group_scores: host policy expected");
    constexpr const char* fn = "posttrain::advantage::copo_group_scores";
    std::visit(
        [&](auto r, auto ans) {
            const index_t N = r.extent(0);
            detail::check_extent(ans.extent(0), N, {fn, "answers"}, "length (one per reward)");
            detail::check_finite(r, {fn, "rewards"});
            detail::require(options.entropy_epsilon >= 0, {fn, "options.entropy_epsilon"}, "must be >= 0");
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            const index_t G = layout.num_groups();
            // Both outputs are checked (length, apart from each other) before either is written.
            auto output = [&](auto&& target, const char* name) {
                if constexpr (std::is_same_v<std::remove_cvref_t<decltype(target)>, none_t>) {
                    return none;
                } else {
                    auto v = std::visit([](auto x) { return x; }, posttrain::detail::floating_output<1>(target, {fn, name}));
                    detail::check_extent(v.extent(0), G, {fn, name}, "length (one per group):");
                    return v;
                }
            };
            const auto out_r = output(global_reward, "global_reward");
            const auto out_h = output(entropy, "entropy");
            if constexpr (!std::is_same_v<decltype(out_r), const none_t> && !std::is_same_v<decltype(out_h), const none_t>)
                detail::check_no_alias(out_r, out_h, {fn, "global_reward"}, "entropy");
            posttrain::detail::check_apart_from_layout(groups, out_r, fn, "global_reward");
            posttrain::detail::check_apart_from_layout(groups, out_h, fn, "entropy");
            auto write = [&](auto v, const std::vector<double>& x) {
                if constexpr (!std::is_same_v<decltype(v), none_t>) {
                    using V = typename decltype(v)::value_type;
                    for (index_t g = 0; g < G; ++g) v(g) = static_cast<V>(x[std::size_t(g)]);
                }
            };
            std::vector<double> R(static_cast<std::size_t>(G)), H(static_cast<std::size_t>(G));
            detail::for_each_group(policy, layout, N, [&](index_t g, auto rows, index_t n) {
                if (n == 0) return;
                double s = 0;
                for (index_t j = 0; j < n; ++j) s += double(r(rows(j)));
                const double h = detail::answer_entropy([&](index_t j) { return std::int64_t(ans(rows(j))); }, n, options);
                H[std::size_t(g)] = h;
                R[std::size_t(g)] = detail::copo_global_reward(s / double(n), h, n, options);
            });
            write(out_r, R);
            write(out_h, H);
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::id_input<1>(answers, {fn, "answers"}));
}

// Per row: global_advantages[i] = A^glob_i (the across-prompt z-score of R_g(i)) and row_entropy[i] =
// H_g(i) (or posttrain::none), from rewards[N] and answers[N]. The local advantage is grpo().
template <class Policy, class Rewards, class Answers, class Groups, class GlobalAdvantages, class RowEntropy>
copo_result copo_global_advantages(const Policy& policy, const Rewards& rewards, const Answers& answers,
                                   const Groups& groups, GlobalAdvantages&& global_advantages, RowEntropy&& row_entropy,
                                   const copo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::copo_global_advantages: host policy expected");
    constexpr const char* fn = "posttrain::advantage::copo_global_advantages";
    detail::require(options.epsilon >= 0, {fn, "options.epsilon"}, "must be >= 0, found " + std::to_string(options.epsilon));
    detail::require(options.global_scale != scale::batch, {fn, "options.global_scale"},
                    "the across-prompt statistics are already batch-wide: use scale::group or scale::none");
    const int sp = static_cast<int>(options.single_prompt);
    detail::require(sp >= 0 && sp <= static_cast<int>(singleton::error), {fn, "options.single_prompt"},
                    "unknown singleton " + detail::str(sp));
    detail::require(options.entropy_epsilon >= 0, {fn, "options.entropy_epsilon"}, "must be >= 0");
    return std::visit(
        [&](auto r, auto a) {
            const index_t N = r.extent(0);
            detail::check_extent(a.extent(0), N, {fn, "global_advantages"}, "length (one per reward)");
            detail::check_no_alias(a, r, {fn, "global_advantages"}, "rewards");
            // Validated here, so that errors name this function (copo_group_scores checks them again).
            const index_t na = std::visit([](auto x) { return x.extent(0); },
                                          posttrain::detail::id_input<1>(answers, {fn, "answers"}));
            detail::check_extent(na, N, {fn, "answers"}, "length (one per reward)");
            detail::check_finite(r, {fn, "rewards"});
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, a, fn, "global_advantages");
            const index_t G = layout.num_groups();
            auto e = [&] {
                if constexpr (std::is_same_v<std::remove_cvref_t<RowEntropy>, none_t>) return none;
                else return std::visit([](auto x) { return x; }, posttrain::detail::floating_output<1>(row_entropy, {fn, "row_entropy"}));
            }();
            if constexpr (!std::is_same_v<decltype(e), none_t>) {
                detail::check_extent(e.extent(0), N, {fn, "row_entropy"}, "length (one per reward)");
                detail::check_no_alias(e, a, {fn, "row_entropy"}, "global_advantages");
            }
            posttrain::detail::check_apart_from_layout(groups, e, fn, "row_entropy");
            std::vector<double> R(static_cast<std::size_t>(G)), H(static_cast<std::size_t>(G));
            copo_group_scores(policy, r, answers, groups, R, H, options);
            // Only non-empty groups are prompts.
            std::vector<double> prompts;
            std::vector<index_t> slot(static_cast<std::size_t>(G), -1);
            for (index_t g = 0; g < G; ++g)
                if (layout.size(g) > 0) slot[std::size_t(g)] = index_t(prompts.size()), prompts.push_back(R[std::size_t(g)]);
            const index_t P = index_t(prompts.size());
            detail::require(!(P == 1 && options.single_prompt == singleton::error), {fn, "groups"},
                            "the batch holds a single prompt: no across-prompt spread (options.single_prompt = singleton::error)");
            std::vector<double> z(static_cast<std::size_t>(P));
            copo_result res;
            res.groups = P;
            if (options.float32) {
                // torch.mean / torch.std of a float32 tensor, then float64 arithmetic on the rounded values.
                float s = 0;
                for (double v : prompts) s += static_cast<float>(v);
                const float mean = P > 0 ? s / static_cast<float>(P) : 0.0f;
                float m2 = 0;
                for (double v : prompts) {
                    const float d = static_cast<float>(v) - mean;
                    m2 = posttrain::detail::rounded(m2 + posttrain::detail::rounded(d * d));
                }
                const float sd = P > 1 ? std::sqrt(m2 / static_cast<float>(P - 1)) : std::nanf("");
                res.global_mean = mean, res.global_std = sd;
                const bool single = P == 1;
                for (index_t p = 0; p < P; ++p) {
                    const double c = prompts[std::size_t(p)] - double(mean);
                    double v = options.global_scale == scale::none ? c : c / double(sd + static_cast<float>(options.epsilon));
                    if (single && options.single_prompt == singleton::raw)  // mean 0, std 1 (as grpo's raw)
                        v = options.global_scale == scale::none ? prompts[std::size_t(p)]
                                                                : prompts[std::size_t(p)] / double(1.0f + static_cast<float>(options.epsilon));
                    else if (single && options.global_scale != scale::none)
                        v = options.single_prompt == singleton::nan ? std::nan("") : 0.0;
                    z[std::size_t(p)] = v;
                }
            } else {
                grpo_options g;
                g.std_scale = options.global_scale;
                g.epsilon = options.epsilon;
                g.singleton_groups = options.single_prompt;  // error was raised above, by this function's name
                if (options.global_scale == scale::none && P == 1 && options.single_prompt == singleton::nan)
                    g.singleton_groups = singleton::zero;
                g.zero_variance_groups = zero_variance::zero;
                // R_g is NaN by design under nan_singleton_coef (a group of one row, as the official code
                // gives); the rewards themselves were checked finite above.
                g.nonfinite_rewards = nonfinite::propagate;
                (void)grpo(posttrain::exec::seq, prompts, uniform_groups{P > 0 ? P : 1}, z, g);
                double s = 0, m2 = 0;
                for (double v : prompts) s += v;
                res.global_mean = P > 0 ? s / double(P) : 0.0;
                for (double v : prompts) m2 += (v - res.global_mean) * (v - res.global_mean);
                res.global_std = P > 1 ? std::sqrt(m2 / double(P - 1)) : std::nan("");
            }
            using A = typename decltype(a)::value_type;
            detail::for_each_group(policy, layout, N, [&](index_t g, auto rows, index_t n) {
                for (index_t j = 0; j < n; ++j) a(rows(j)) = static_cast<A>(z[std::size_t(slot[std::size_t(g)])]);
            });
            if constexpr (!std::is_same_v<decltype(e), none_t>) {
                using E = typename decltype(e)::value_type;
                detail::for_each_group(policy, layout, N, [&](index_t g, auto rows, index_t n) {
                    for (index_t j = 0; j < n; ++j) e(rows(j)) = static_cast<E>(H[std::size_t(g)]);
                });
            }
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}),
        posttrain::detail::floating_output<1>(global_advantages, {fn, "global_advantages"}));
}

// How the local and global losses are blended (COPO's global_flg).
enum class copo_blend {
    no_global,         // w = 1: GRPO alone
    only_global,       // w = 0: the global loss alone
    only_soft,         // w = sigmoid(k (H - b))
    soft_with_forced,  // w = sigmoid(k (H - b)) * [A^loc != 0]: groups with no local signal learn from the global loss only
    only_forced,       // w = [A^loc != 0]
    soft_with_zero,    // w = sigmoid(k (H - b)) * [r != 0]
    only_zero,         // w = [r != 0]
};

struct copo_blend_options {
    copo_blend mode = copo_blend::soft_with_forced;
    double k = 20;   // sigmoid steepness (launch scripts: 20 with b = 0.5, or 5 with b = 1)
    double b = 0.5;  // entropy (bits) at which the two losses weigh the same
};

// weights[i] = w_i, the local loss's weight (the global loss gets 1 - w_i), from the row's answer
// entropy H (row_entropy[N]), its local advantage A^loc (local_advantages[N]; the official code tests
// the first response token's advantage) and its reward (rewards[N]).
template <class Policy, class RowEntropy, class LocalAdvantages, class Rewards, class Weights>
void copo_blend_weights(const Policy& policy, const RowEntropy& row_entropy, const LocalAdvantages& local_advantages,
                        const Rewards& rewards, Weights&& weights, const copo_blend_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::copo_blend_weights: host policy expected");
    constexpr const char* fn = "posttrain::advantage::copo_blend_weights";
    const int m = static_cast<int>(options.mode);
    detail::require(m >= 0 && m <= static_cast<int>(copo_blend::only_zero), {fn, "options.mode"},
                    "unknown copo_blend " + detail::str(m));
    detail::require(numeric::is_finite(options.k) && numeric::is_finite(options.b), {fn, "options"}, "k and b must be finite");
    std::visit(
        [&](auto h, auto la, auto r, auto w) {
            const index_t N = h.extent(0);
            detail::check_extent(la.extent(0), N, {fn, "local_advantages"}, "length (one per row)");
            detail::check_extent(r.extent(0), N, {fn, "rewards"}, "length (one per row)");
            detail::check_extent(w.extent(0), N, {fn, "weights"}, "length (one per row)");
            detail::check_same_or_disjoint(w, h, {fn, "weights"}, "row_entropy");
            detail::check_same_or_disjoint(w, la, {fn, "weights"}, "local_advantages");
            detail::check_same_or_disjoint(w, r, {fn, "weights"}, "rewards");
            // A NaN entropy gives a NaN weight and a NaN advantage or reward reads as "nonzero": refused.
            detail::check_finite(h, {fn, "row_entropy"});
            detail::check_finite(la, {fn, "local_advantages"});
            detail::check_finite(r, {fn, "rewards"});
            using W = typename decltype(w)::value_type;
            detail::for_each_row(policy, N, 1, [&](index_t i) {
                const double soft = 1.0 / (1.0 + std::exp(-options.k * (double(h(i)) - options.b)));
                const double forced = double(la(i)) != 0 ? 1.0 : 0.0, nonzero = double(r(i)) != 0 ? 1.0 : 0.0;
                double v = soft;
                switch (options.mode) {
                    case copo_blend::no_global: v = 1; break;
                    case copo_blend::only_global: v = 0; break;
                    case copo_blend::only_soft: break;
                    case copo_blend::soft_with_forced: v = soft * forced; break;
                    case copo_blend::only_forced: v = forced; break;
                    case copo_blend::soft_with_zero: v = soft * nonzero; break;
                    case copo_blend::only_zero: v = nonzero; break;
                }
                w(i) = static_cast<W>(v);
            });
        },
        posttrain::detail::floating_input<1>(row_entropy, {fn, "row_entropy"}),
        posttrain::detail::floating_input<1>(local_advantages, {fn, "local_advantages"}),
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_output<1>(weights, {fn, "weights"}));
}

}  // namespace posttrain::advantage

namespace posttrain::policy_loss {

struct copo_loss_options {
    options loss{};            // the token loss of both parts (objective, clip, aggregation, KL, ...)
    double global_coef = 1.0;  // multiplies the global part (COPO's only-soft-with-coef: global_loss_coef)

    // hijih/copo-code compute_policy_loss_with_global (f66883f): dual-clip PPO with no log-ratio clamp,
    // aggregated by that file's agg_loss (every row is a sequence; token-mean divides by the token
    // count + 1e-8: pass count_tokens(mask).tokens + 1e-8 as aggregation.global_tokens).
    static copo_loss_options official(aggregation mode = aggregation::seq_mean_token_mean, double clip_low = 0.2,
                                      double clip_high = 0.2, double dual_clip = 3.0) {
        copo_loss_options o;
        o.loss = options::verl(objective::ppo_clip, mode);
        o.loss.log_ratio_clamp = 0;
        o.loss.clip_low = clip_low, o.loss.clip_high = clip_high, o.loss.dual_clip = dual_clip;
        o.loss.aggregation = aggregation_options::verl_agent(mode);  // old verl agg_loss: all rows, no epsilons
        return o;
    }
};

struct [[nodiscard]] copo_loss_result {
    double loss = 0;      // local.loss + global.loss
    loss_result local;    // the local part (its loss already weighted by w) plus the KL and entropy terms once;
                          // its metrics are unweighted
    loss_result global;   // the global part (weighted by global_coef (1 - w)): its policy term only
};

// loss = agg(w_i l^loc) + agg(global_coef (1 - w_i) l^glob) + kl_coef KL - entropy_coef H (once), with w = local_weights[B] (copo_blend_weights)
// entering as detached per-token weights; grad_log_probs ([B, T] or posttrain::none) receives the
// gradient of the sum. local_advantages and global_advantages are [B, T] (the per-row values broadcast
// by broadcast_to_tokens). Aggregation is linear in the token losses, so the sum of the two
// aggregates is the aggregate of the blended token loss.
template <class Policy, class LogProbs, class OldLogProbs, class LocalAdv, class GlobalAdv, class Mask, class Weights,
          class Grad>
copo_loss_result copo_loss(const Policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs,
                           const LocalAdv& local_advantages, const GlobalAdv& global_advantages, const Mask& mask,
                           const Weights& local_weights, Grad&& grad_log_probs, const copo_loss_options& opts = {},
                           const extras& extra = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::copo_loss: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::copo_loss";
    detail::require(numeric::is_finite(opts.global_coef), {fn, "opts.global_coef"}, "must be finite");
    detail::require(!extra.is_weights.present(), {fn, "extra.is_weights"},
                    "copo_loss passes the blend weights as is_weights; fold other weights into local_weights");
    return std::visit(
        [&](auto lp, auto w) {
            using T = std::remove_const_t<typename decltype(lp)::value_type>;
            const index_t B = lp.extent(0), Tn = lp.extent(1);
            posttrain::advantage::detail::check_extent(w.extent(0), B, {fn, "local_weights"}, "length (one per row of log_probs)");
            std::vector<T> wl(static_cast<std::size_t>(B)), wg(static_cast<std::size_t>(B));
            for (index_t i = 0; i < B; ++i) {
                const double x = double(w(i));
                detail::require(numeric::is_finite(x), {fn, "local_weights"}, "non-finite weight at index " + detail::str(i));
                wl[std::size_t(i)] = static_cast<T>(x);
                wg[std::size_t(i)] = static_cast<T>(opts.global_coef * (1.0 - x));
            }
            // Per-row weights broadcast along the row (stride 0), as detached importance weights.
            const index_t ext[2] = {B, Tn}, str[2] = {1, 0};
            extras xl = extra, xg = extra;
            xl.is_weights = tensor_view<const T, 2>(wl.data(), ext, str);
            xg.is_weights = tensor_view<const T, 2>(wg.data(), ext, str);
            // The blend weights scale only the policy term (compute never weighs its KL or entropy terms by
            // is_weights), so the KL and entropy terms are added once, by the local call: the global call
            // runs without them (its entropies stay when they also select tokens: top_entropy_quantile).
            options og = opts.loss;
            og.kl_coef = 0, og.entropy_coef = 0;
            xg.ref_log_probs = {};
            if (og.top_entropy_quantile >= 1) xg.entropies = {};
            copo_loss_result res;
            if constexpr (std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                res.local = compute(policy, lp, old_log_probs, local_advantages, mask, none, opts.loss, xl);
                res.global = compute(policy, lp, old_log_probs, global_advantages, mask, none, og, xg);
            } else {
                auto gv = posttrain::detail::floating_output<2>(grad_log_probs, {fn, "grad_log_probs"});
                auto* g = std::get_if<tensor_view<T, 2>>(&gv);
                detail::require(g != nullptr, {fn, "grad_log_probs"}, "must have the dtype of log_probs");
                res.local = compute(policy, lp, old_log_probs, local_advantages, mask, *g, opts.loss, xl);
                std::vector<T> scratch(static_cast<std::size_t>(B * Tn));
                res.global = compute(policy, lp, old_log_probs, global_advantages, mask,
                                     tensor_view<T, 2>(scratch.data(), B, Tn), og, xg);
                posttrain::advantage::detail::for_each_row(policy, B, Tn, [&](index_t i) {
                    for (index_t t = 0; t < Tn; ++t) (*g)(i, t) = static_cast<T>(double((*g)(i, t)) + double(scratch[std::size_t(i * Tn + t)]));
                });
            }
            res.loss = res.local.loss + res.global.loss;
            return res;
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::floating_input<1>(local_weights, {fn, "local_weights"}));
}

}  // namespace posttrain::policy_loss
