#pragma once
// Listwise preference losses over K ranked responses per prompt: RankDPO (DCG / LambdaRank-weighted
// pairwise DPO, LLM and diffusion forms) and TPO (the same listwise loss on step-weighted mean
// log-ratio scores). Spec: preference_losses.md §3.13, §3.14.
//
// Both reduce to one listwise core over per-item utilities u_i (higher = better) and preference
// scores psi_i, grouped by prompt:
//
//   L_g = c_g * sum_{(i, j) in g: psi_i > psi_j} Delta_ij * softplus(-(u_i - u_j))
//   Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|,  G = 2^psi - 1,  D(tau) = ln(1 + tau)
//
// tau is the 1-based rank of an item in its group, by the (detached) model utilities (default, as
// LiPO-lambda and RankDPO's Fig. 2) or by psi; ties break by row index (a stable sort), so Delta is
// always defined. Delta is detached: ranks are piecewise constant in the scores.
// c_g is the per-group normalisation (sum, 1 / pairs, 1 / sum Delta, or 1 / (K (K-1) / 2) with tied
// pairs adding log 2, the averaging of TPO's official code); groups are then averaged (or summed).

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/groups.hpp"
#include "common.hpp"
#include "dense.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

// Where the DCG rank tau of each item comes from.
enum class rank_source {
    model_scores,  // the current (detached) model utilities: LiPO-lambda, RankDPO Fig. 2 (default)
    psi,           // the preference scores themselves (RankDPO's OCR'd text "sorting based on psi")
};

// The per-pair weight Delta_ij.
enum class pair_weighting {
    lambda_dcg,  // |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)| (RankDPO, LiPO-lambda, the TPO paper)
    uniform,     // 1 (TPO's official loss.py)
};

// How a group's pair terms are combined.
enum class listwise_normalize {
    sum,                  // sum over pairs (the RankDPO paper)
    mean_pairs,           // / number of pairs with psi_i > psi_j
    divide_by_sum_delta,  // / sum of the pair weights (a group whose weights are all 0 contributes 0)
    mean_all_pairs,       // / (K (K-1) / 2), tied pairs adding log 2 (TPO loss.py's rank_loss average)
};

struct listwise_options {
    pair_weighting weighting = pair_weighting::lambda_dcg;
    rank_source tau = rank_source::model_scores;
    listwise_normalize normalize = listwise_normalize::sum;
    reduction reduce = reduction::mean;  // over the groups that have at least one pair
    double normalizer = 0;               // > 0: replaces the group count of the mean (global count)
    double grad_scale = 1.0;
};

struct [[nodiscard]] listwise_result {
    double loss = 0;
    index_t groups = 0;          // groups that contributed (at least one ordered pair)
    index_t pairs = 0;           // pairs with psi_i > psi_j
    index_t tied_pairs = 0;      // pairs with psi_i == psi_j (no loss term, except mean_all_pairs' log 2)
    index_t skipped_items = 0;   // items excluded from every pair (TPO: no weighted step tokens)
    double pair_accuracy = 0;    // fraction of psi-ordered pairs with u_i > u_j (strict)
    double ndcg = 0;             // mean NDCG of the model ordering over groups with a nonzero ideal DCG
};

namespace detail {

inline void check_listwise_options(const listwise_options& o, const char* fn) {
    require(o.weighting == pair_weighting::lambda_dcg || o.weighting == pair_weighting::uniform, {fn, "options"},
            "unknown weighting");
    require(o.tau == rank_source::model_scores || o.tau == rank_source::psi, {fn, "options"}, "unknown tau source");
    const int nz = int(o.normalize);
    require(nz >= 0 && nz <= int(listwise_normalize::mean_all_pairs), {fn, "options"}, "unknown normalize");
    require(o.reduce == reduction::mean || o.reduce == reduction::sum, {fn, "options"}, "unknown reduction");
    require(o.normalizer >= 0 && numeric::is_finite(o.normalizer), {fn, "options"}, "normalizer must be finite and >= 0");
    require(numeric::is_finite(o.grad_scale), {fn, "options"}, "grad_scale must be finite");
}

// DCG discount 1 / ln(1 + tau), tau 1-based.
inline double inverse_discount(index_t tau) noexcept { return 1.0 / std::log(1.0 + double(tau)); }

// 1-based ranks of `items` by descending key, ties by position (a stable sort).
inline std::vector<index_t> ranks_by(const std::vector<index_t>& items, const std::vector<double>& key) {
    std::vector<std::size_t> order(items.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return key[std::size_t(items[a])] > key[std::size_t(items[b])];
    });
    std::vector<index_t> rank(items.size());
    for (std::size_t r = 0; r < order.size(); ++r) rank[order[r]] = index_t(r) + 1;
    return rank;
}

// The listwise core: utilities u (higher = better), preference scores psi, items excluded from every
// pair (valid[i] == 0), and the groups. Writes dL/du (already reduced and times grad_scale) into du.
inline listwise_result listwise_core(const std::vector<double>& u, const std::vector<double>& psi,
                                     const std::vector<unsigned char>& valid,
                                     const std::vector<std::vector<index_t>>& groups, const listwise_options& o,
                                     std::vector<double>& du, const char* fn) {
    listwise_result res;
    const std::size_t n = u.size();
    du.assign(n, 0.0);
    std::vector<double> gain(n);
    for (std::size_t i = 0; i < n; ++i) {
        gain[i] = std::expm1(psi[i] * std::log(2.0));
        require(numeric::is_finite(gain[i]), {fn, "psi"}, "2^psi - 1 overflows at index " + str(index_t(i)));
        res.skipped_items += valid[i] ? 0 : 1;
    }
    std::vector<double> group_loss, group_scale;
    std::vector<std::vector<std::pair<std::size_t, double>>> group_grads;  // (item, unnormalised dL/du)
    index_t correct = 0;
    double ndcg_sum = 0;
    index_t ndcg_groups = 0;
    for (const auto& all : groups) {
        std::vector<index_t> items;
        for (index_t i : all)
            if (valid[std::size_t(i)]) items.push_back(i);
        const std::size_t k = items.size();
        if (k < 2) continue;
        const auto model_rank = ranks_by(items, u);
        const auto tau = o.tau == rank_source::psi ? ranks_by(items, psi) : model_rank;
        // NDCG of the model ordering (gains G, discount 1/ln(1+tau)).
        {
            const auto ideal_rank = ranks_by(items, psi);
            double dcg = 0, idcg = 0;
            for (std::size_t a = 0; a < k; ++a) {
                dcg += gain[std::size_t(items[a])] * inverse_discount(model_rank[a]);
                idcg += gain[std::size_t(items[a])] * inverse_discount(ideal_rank[a]);
            }
            if (idcg > 0) {
                ndcg_sum += dcg / idcg;
                ++ndcg_groups;
            }
        }
        double loss = 0, delta_sum = 0;
        index_t pairs = 0, ties = 0;
        std::vector<double> g(k, 0.0);
        for (std::size_t a = 0; a < k; ++a)
            for (std::size_t b = a + 1; b < k; ++b) {
                std::size_t hi = a, lo = b;
                const double pa = psi[std::size_t(items[a])], pb = psi[std::size_t(items[b])];
                if (pa == pb) {
                    ++ties;
                    continue;
                }
                if (pb > pa) std::swap(hi, lo);
                const double delta =
                    o.weighting == pair_weighting::uniform
                        ? 1.0
                        : std::fabs(gain[std::size_t(items[hi])] - gain[std::size_t(items[lo])]) *
                              std::fabs(inverse_discount(tau[hi]) - inverse_discount(tau[lo]));
                const double d = u[std::size_t(items[hi])] - u[std::size_t(items[lo])];
                loss += delta * numeric::softplus(-d);
                const double s = delta * numeric::sigmoid(-d);
                g[hi] -= s;
                g[lo] += s;
                delta_sum += delta;
                correct += d > 0 ? 1 : 0;
                ++pairs;
            }
        res.pairs += pairs;
        res.tied_pairs += ties;
        const bool active = o.normalize == listwise_normalize::mean_all_pairs ? true : pairs > 0;
        if (!active) continue;
        double c = 1.0;
        switch (o.normalize) {
            case listwise_normalize::sum: c = 1.0; break;
            case listwise_normalize::mean_pairs: c = 1.0 / double(pairs); break;
            case listwise_normalize::divide_by_sum_delta: c = delta_sum > 0 ? 1.0 / delta_sum : 0.0; break;
            case listwise_normalize::mean_all_pairs:
                c = 2.0 / (double(k) * double(k - 1));
                loss += double(ties) * std::log(2.0);
                break;
        }
        ++res.groups;
        group_loss.push_back(loss * c);
        group_scale.push_back(c);
        group_grads.emplace_back();
        for (std::size_t a = 0; a < k; ++a) group_grads.back().emplace_back(std::size_t(items[a]), g[a]);
    }
    const double f = reduction_factor(o.reduce, o.normalizer, res.groups);
    res.loss = fixed_order_sum(index_t(group_loss.size()), [&](index_t j) { return group_loss[std::size_t(j)]; }) * f;
    for (std::size_t j = 0; j < group_grads.size(); ++j)
        for (const auto& [i, g] : group_grads[j]) du[i] += g * group_scale[j] * f * o.grad_scale;
    res.pair_accuracy = res.pairs > 0 ? double(correct) / double(res.pairs) : 0.0;
    res.ndcg = ndcg_groups > 0 ? ndcg_sum / double(ndcg_groups) : 0.0;
    return res;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// RankDPO

struct rankdpo_options {
    double beta = 0.1;
    listwise_options list{};

    // The RankDPO paper (Alg. 2): DCG weights from the model's current ranking, plain sum over pairs.
    static rankdpo_options paper(double beta = 0.1) {
        rankdpo_options o;
        o.beta = beta;
        return o;
    }
};

// RankDPO, LLM form: u_i = beta * (S_theta(y_i) - S_ref(y_i)) for N responses grouped by prompt
// (uniform_groups{K}, ragged(offsets) or a grouping_result), preference scores psi [N] (higher =
// preferred). Writes grad_scale * dL/d(policy log-probs) into grad_policy (sequence_grad).
template <class Policy, class Psi, class Groups>
listwise_result rankdpo(const Policy& policy, const sequence_input& policy_logps, const sequence_input& reference_logps,
                        const Psi& psi, const Groups& groups, const sequence_grad& grad_policy,
                        const rankdpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::rankdpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::rankdpo";
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::check_listwise_options(options.list, fn);
    const index_t n = policy_logps.batch();
    const auto sp = detail::reduce(policy, policy_logps, n, {fn, "policy_logps"});
    const auto sr = detail::reduce(policy, reference_logps, n, {fn, "reference_logps"});
    const auto p = detail::read_dense(psi, n, {fn, "psi"});
    const auto rows = detail::group_rows(groups, n, {fn, "groups"});
    std::vector<double> u(static_cast<std::size_t>(n)), du;
    for (std::size_t i = 0; i < u.size(); ++i) u[i] = options.beta * (sp.sum[i] - sr.sum[i]);
    const std::vector<unsigned char> valid(std::size_t(n), 1);
    auto res = detail::listwise_core(u, p.v, valid, rows, options.list, du, fn);
    for (auto& g : du) g *= options.beta;
    detail::broadcast(policy, policy_logps, du, grad_policy, {fn, "grad_policy"});
    return res;
}

// RankDPO, diffusion form: scores s [N] are Diffusion-DPO scores
// ||eps - eps_theta||^2 - ||eps - eps_ref||^2 (lower = better), u_i = -beta * s_i, so each pair term
// is -Delta_ij log sigma(-beta (s_i - s_j)). Writes grad_scale * dL/ds into grad_scores ([N] or none).
template <class Policy, class Scores, class Psi, class Groups, class GradScores>
listwise_result rankdpo_diffusion(const Policy&, const Scores& scores, const Psi& psi, const Groups& groups,
                                  GradScores&& grad_scores, const rankdpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::rankdpo_diffusion: host policy expected");
    constexpr const char* fn = "posttrain::preference::rankdpo_diffusion";
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::check_listwise_options(options.list, fn);
    const auto s = detail::read_dense(scores, -1, {fn, "scores"});
    const index_t n = s.rows;
    const auto p = detail::read_dense(psi, n, {fn, "psi"});
    const auto rows = detail::group_rows(groups, n, {fn, "groups"});
    std::vector<double> u(static_cast<std::size_t>(n)), du;
    for (std::size_t i = 0; i < u.size(); ++i) u[i] = -options.beta * s.v[i];
    const std::vector<unsigned char> valid(std::size_t(n), 1);
    auto res = detail::listwise_core(u, p.v, valid, rows, options.list, du, fn);
    if constexpr (!std::is_same_v<std::remove_cvref_t<GradScores>, none_t>) {
        for (auto& g : du) g *= -options.beta;
        detail::write_dense(grad_scores, du, n, 1, {fn, "grad_scores"});
    }
    return res;
}

// ---------------------------------------------------------------------------------------------
// TPO

struct tpo_options {
    double beta = 0.5;  // tpo_train.py's beta
    listwise_options list{};

    // The TPO paper's lambda-weighted listwise loss (DCG weights from the model ranking, pair sum).
    static tpo_options paper(double beta = 0.5) {
        tpo_options o;
        o.beta = beta;
        return o;
    }
    // The ranking term of TPO's official loss.py (ba87a23): unweighted pairs averaged over
    // K (K-1) / 2 with ties adding log 2. The official outer -log sigma(beta * rank_loss) is NOT applied
    // (it decreases in rank_loss: minimising it would undo the ranking; see docs/algorithms/tpo.md);
    // beta scales the scores instead.
    static tpo_options official_ranking(double beta = 0.5) {
        tpo_options o;
        o.beta = beta;
        o.list.weighting = pair_weighting::uniform;
        o.list.normalize = listwise_normalize::mean_all_pairs;
        return o;
    }
};

// TPO with externally supplied, detached step weights. For N responses with per-token policy /
// reference log-probs [N, T], step ids [N, T] (integers: 0 = not in any step, k in 1..S = step k) and
// step weights [N, S] (finite, >= 0):
//   lbar_k(n) = mean over the tokens of step k of (p_t - q_t)
//   s_n = beta * sum_k w_nk lbar_k / sum_k w_nk        (k over the steps with at least one token)
// then the listwise loss of listwise_core on s_n. A response whose present steps weigh 0 in total is
// excluded from every pair (result.skipped_items). Writes grad_scale * dL/dp into grad_policy [N, T]
// (posttrain::none skips): dL/ds_n * beta * w_nk / (W_n * n_k) on the tokens of step k, 0 elsewhere.
template <class Policy, class PolicyLogps, class RefLogps, class StepIds, class StepWeights, class Psi, class Groups,
          class Grad>
listwise_result tpo(const Policy& policy, const PolicyLogps& policy_logps, const RefLogps& reference_logps,
                    const StepIds& step_ids, const StepWeights& step_weights, const Psi& psi, const Groups& groups,
                    Grad&& grad_policy, const tpo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::tpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::tpo";
    detail::require(options.beta > 0 && numeric::is_finite(options.beta), {fn, "options"}, "beta must be finite and > 0");
    detail::check_listwise_options(options.list, fn);
    constexpr bool has_grad = !std::is_same_v<std::remove_cvref_t<Grad>, none_t>;
    const auto w = detail::read_dense(step_weights, -1, {fn, "step_weights"}, true);
    const index_t n = w.rows, steps = w.cols;
    for (double x : w.v) detail::require(x >= 0, {fn, "step_weights"}, "must be >= 0");
    const auto p = detail::read_dense(psi, n, {fn, "psi"});
    const auto rows = detail::group_rows(groups, n, {fn, "groups"});
    std::vector<double> u(std::size_t(n), 0.0), du, total_w(std::size_t(n), 0.0);
    std::vector<double> count(std::size_t(n * steps), 0.0);
    std::vector<unsigned char> valid(std::size_t(n), 0);
    return std::visit(
        [&](auto lp, auto lr, auto ids) {
            detail::check_same_shape(lr, lp, {fn, "reference_logps"}, "policy_logps");
            detail::check_same_shape(ids, lp, {fn, "step_ids"}, "policy_logps");
            detail::require(lp.extent(0) == n, {fn, "policy_logps"},
                            "must have one row per response (" + detail::str(n) + " rows of step_weights), found " +
                                detail::str(lp.extent(0)));
            const index_t T = lp.extent(1);
            // Per row: the mean log-ratio of each step, in token order (rows are independent).
            std::vector<index_t> bad(std::size_t(n), -1);
            std::vector<unsigned char> bad_id(std::size_t(n), 0);
            detail::for_each_row(policy, n, T, [&](index_t i) {
                std::vector<double> sum(std::size_t(steps), 0.0);
                double* cnt = count.data() + i * steps;
                for (index_t t = 0; t < T; ++t) {
                    const auto id = ids(i, t);
                    if (id == 0) continue;
                    if (!(id > 0) || std::uint64_t(id) > std::uint64_t(steps)) {
                        if (!bad_id[std::size_t(i)]) bad[std::size_t(i)] = t;
                        bad_id[std::size_t(i)] = 1;
                        continue;
                    }
                    const double d = double(lp(i, t)) - double(lr(i, t));
                    if (!numeric::is_finite(d) && bad[std::size_t(i)] < 0) bad[std::size_t(i)] = t;
                    sum[std::size_t(id - 1)] += d;
                    cnt[id - 1] += 1;
                }
                double num = 0, den = 0;
                for (index_t k = 0; k < steps; ++k)
                    if (cnt[k] > 0) {
                        num += w(i, k) * (sum[std::size_t(k)] / cnt[k]);
                        den += w(i, k);
                    }
                total_w[std::size_t(i)] = den;
                valid[std::size_t(i)] = den > 0 ? 1 : 0;
                u[std::size_t(i)] = den > 0 ? options.beta * num / den : 0.0;
            });
            for (index_t i = 0; i < n; ++i) {
                if (bad_id[std::size_t(i)])
                    detail::raise_invalid_argument(fn, "step_ids",
                                                   "id out of range [0, " + detail::str(steps) + "] at [" + detail::str(i) +
                                                       ", " + detail::str(bad[std::size_t(i)]) + "]");
                if (bad[std::size_t(i)] >= 0) {
                    const index_t t = bad[std::size_t(i)];
                    detail::raise_invalid_argument(fn, numeric::is_finite(double(lp(i, t))) ? "reference_logps" : "policy_logps",
                                                   "non-finite log-prob at a step token [" + detail::str(i) + ", " +
                                                       detail::str(t) + "]");
                }
            }
            auto res = detail::listwise_core(u, p.v, valid, rows, options.list, du, fn);
            if constexpr (has_grad) {
                auto g = std::visit([](auto x) { return x; },
                                    posttrain::detail::floating_output<2>(grad_policy, {fn, "grad_policy"}));
                detail::check_same_shape(g, lp, {fn, "grad_policy"}, "policy_logps");
                posttrain::advantage::detail::check_no_alias(g, lp, {fn, "grad_policy"}, "policy_logps");
                posttrain::advantage::detail::check_no_alias(g, lr, {fn, "grad_policy"}, "reference_logps");
                posttrain::advantage::detail::check_no_alias(g, ids, {fn, "grad_policy"}, "step_ids");
                using G = typename decltype(g)::value_type;
                detail::for_each_row(policy, n, T, [&](index_t i) {
                    const double c = valid[std::size_t(i)] ? du[std::size_t(i)] * options.beta / total_w[std::size_t(i)] : 0.0;
                    const double* cnt = count.data() + i * steps;
                    for (index_t t = 0; t < T; ++t) {
                        const auto id = ids(i, t);
                        g(i, t) = id == 0 ? G(0) : static_cast<G>(c * w(i, index_t(id) - 1) / cnt[id - 1]);
                    }
                });
            }
            return res;
        },
        posttrain::detail::floating_input<2>(policy_logps, {fn, "policy_logps"}),
        posttrain::detail::floating_input<2>(reference_logps, {fn, "reference_logps"}),
        posttrain::detail::id_input<2>(step_ids, {fn, "step_ids"}));
}

}  // namespace posttrain::preference
