#pragma once
// Batch filters applied after rollouts are scored:
// - DAPO dynamic sampling (Yu et al. 2025): drop groups whose rewards all agree, refill the batch to a
//   target number of groups from a candidate pool;
// - PF-PPO policy filtration (verl compute_pf_ppo_reweight_data): reweight or resample the batch by
//   sequence score (pow, max_min, max_random), and the per-group selections of the paper (best-of-N,
//   best + random, best + worst);
// - overlong handling: DAPO's soft overlong penalty and truncation masks (TRL
//   mask_truncated_completions, NeMo overlong_filtering).
// Random choices are Philox draws (sampling/samplers.hpp), reproducible from (seed, stream).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <variant>
#include <vector>

#include "../advantage/filters.hpp"
#include "samplers.hpp"

namespace posttrain::sampling {

// ---------------------------------------------------------------------------------------------
// DAPO dynamic sampling.

// Which eligible groups fill the batch when the pool has more than the target.
enum class refill {
    in_order,  // the first eligible groups in layout order (DAPO: the current generation, then the
               // next generation batches, truncated to train_batch_size prompts)
    random,    // a uniform draw without replacement among the eligible groups (seeded)
};

struct dynamic_sampling_options {
    index_t target_groups = 0;     // prompts wanted in the training batch (DAPO: data.train_batch_size)
    bool keep_singletons = true;   // DAPO keeps a group if std > 0 or it has one row
    refill order = refill::in_order;
    std::uint64_t seed = 0;        // refill::random only
    std::uint64_t stream = 0;

    static dynamic_sampling_options dapo(index_t target_groups) {
        dynamic_sampling_options o;
        o.target_groups = target_groups;
        return o;
    }
};

struct [[nodiscard]] dynamic_sampling_result {
    index_t eligible = 0;       // groups with reward variance (max != min), singletons per the options
    index_t zero_variance = 0;  // groups dropped for having none (empty groups included)
    index_t kept = 0;           // groups marked in keep: min(eligible, target_groups)
    bool filled = false;        // kept == target_groups; if false the caller generates more candidates
};

// keep[g] = 1 for the groups that make up the training batch. The layout covers the batch followed by
// the candidate pool (e.g. further generation rounds), so refill::in_order takes the batch's own
// eligible groups first. Eligibility is advantage::zero_variance_filter's (max == min exactly).
template <class Policy, class Rewards, class Groups, class Keep>
    requires host_policy<Policy>
dynamic_sampling_result dynamic_sampling_filter(const Policy& policy, const Rewards& rewards, const Groups& groups,
                                                Keep&& keep, const dynamic_sampling_options& options) {
    constexpr const char* fn = "posttrain::sampling::dynamic_sampling_filter";
    detail::require(options.target_groups >= 0, {fn, "options.target_groups"}, "must be non-negative");
    detail::check_stream(options.stream, {fn, "options.stream"});
    dynamic_sampling_result r;
    r.eligible = advantage::zero_variance_filter(policy, rewards, groups, keep,
                                                 advantage::zero_variance_filter_options{options.keep_singletons, false});
    std::visit(
        [&](auto k) {
            using K = typename decltype(k)::value_type;
            const index_t g = k.extent(0);
            r.zero_variance = g - r.eligible;
            r.kept = std::min(r.eligible, options.target_groups);
            r.filled = r.kept == options.target_groups;
            if (r.kept == r.eligible) return;
            std::vector<index_t> pick;  // the eligible groups to keep, by position among the eligible
            if (options.order == refill::in_order) {
                for (index_t j = 0; j < r.kept; ++j) pick.push_back(j);
            } else {
                const detail::permutation_key key{philox4x32_10(options.seed), detail::stream_word(options.stream, purpose::filter)};
                pick = detail::smallest_keys(policy, r.eligible, r.kept, key);
            }
            std::vector<char> chosen(static_cast<std::size_t>(r.eligible), 0);
            for (index_t j : pick) chosen[static_cast<std::size_t>(j)] = 1;
            index_t seen = 0;
            for (index_t i = 0; i < g; ++i)
                if (k(i) != K(0)) k(i) = static_cast<K>(chosen[static_cast<std::size_t>(seen++)] ? 1 : 0);
        },
        posttrain::detail::dispatch_view<false, 1, host_space, posttrain::detail::mask_elems>::make(keep, {fn, "keep"}));
    return r;
}

// ---------------------------------------------------------------------------------------------
// PF-PPO.

enum class pf_ppo_method {
    pow,         // w = |s|^weight_pow
    max_min,     // w = 1 for the batch's highest and lowest scores, else 0
    max_random,  // w = 0.4 for the highest score, else 0.1
};

struct pf_ppo_options {
    pf_ppo_method method = pf_ppo_method::pow;  // verl algorithm.pf_ppo.reweight_method
    double weight_pow = 2.0;                    // verl algorithm.pf_ppo.weight_pow
    double epsilon = 1e-8;                      // w <- max(w + epsilon, epsilon): no weight is exactly 0
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;

    static pf_ppo_options verl(pf_ppo_method method = pf_ppo_method::pow, double weight_pow = 2.0) {
        pf_ppo_options o;
        o.method = method;
        o.weight_pow = weight_pow;
        return o;
    }
};

namespace detail {

// Lengths are counts: a negative one is an error, not a short response.
template <class LengthView>
void check_lengths(const LengthView& len, where at) {
    using L = std::remove_const_t<typename LengthView::value_type>;
    if constexpr (std::is_signed_v<L>)
        for (index_t i = 0; i < len.extent(0); ++i)
            require(len(i) >= 0, at, "length " + str(i) + " is negative");
}

inline std::vector<double> pf_ppo_weights_of(const std::vector<double>& s, const pf_ppo_options& o, const char* fn) {
    const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
    std::vector<double> w(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        double v = 0;
        switch (o.method) {
            case pf_ppo_method::pow: v = std::pow(std::fabs(s[i]), o.weight_pow); break;
            case pf_ppo_method::max_min: v = (s[i] == *hi || s[i] == *lo) ? 1.0 : 0.0; break;
            case pf_ppo_method::max_random: v = s[i] == *hi ? 0.4 : 0.1; break;
        }
        w[i] = std::max(v + o.epsilon, o.epsilon);
        // |s|^p overflows for large |s|, or is inf at s = 0 for p < 0: a weight must stay finite.
        if (!numeric::is_finite(w[i]))
            posttrain::detail::raise_invalid_argument(fn, "options.weight_pow",
                                   "|score|^weight_pow is not finite for score " + str(index_t(i)) + " = " +
                                       std::to_string(s[i]) + " (weight_pow " + std::to_string(o.weight_pow) + ")");
    }
    return w;
}

inline void check_pf_ppo(const pf_ppo_options& o, const char* fn) {
    require(numeric::is_finite(o.weight_pow), {fn, "options.weight_pow"}, "must be finite");
    require(numeric::is_finite(o.epsilon) && o.epsilon > 0, {fn, "options.epsilon"}, "must be positive and finite");
    check_stream(o.stream, {fn, "options.stream"});
}

}  // namespace detail

// weights[i] = PF-PPO weight of sequence score s_i (verl sums token_level_scores per row first).
template <class Policy, class Scores, class Weights>
    requires host_policy<Policy>
void pf_ppo_weights(const Policy&, const Scores& scores, Weights&& weights, const pf_ppo_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::pf_ppo_weights";
    detail::check_pf_ppo(options, fn);
    const std::vector<double> w = detail::pf_ppo_weights_of(detail::read_finite(scores, {fn, "scores"}), options, fn);
    std::visit(
        [&](auto out) {
            using E = typename decltype(out)::value_type;
            detail::require(out.extent(0) == static_cast<index_t>(w.size()), {fn, "weights"},
                            "expected " + detail::str(static_cast<index_t>(w.size())) + " entries (one per score)");
            for (index_t i = 0; i < out.extent(0); ++i) out(i) = static_cast<E>(w[static_cast<std::size_t>(i)]);
        },
        posttrain::detail::floating_output<1>(weights, {fn, "weights"}));
}

// verl's resampling: len(indices) (verl: the batch size) rows drawn with replacement in proportion to
// the PF-PPO weights; the caller gathers the batch by these indices.
template <class Policy, class Scores, class Out>
    requires host_policy<Policy>
sample_result pf_ppo_resample(const Policy& policy, const Scores& scores, Out&& indices, const pf_ppo_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::pf_ppo_resample";
    detail::check_pf_ppo(options, fn);
    const std::vector<double> w = detail::pf_ppo_weights_of(detail::read_finite(scores, {fn, "scores"}), options, fn);
    return sample_with_replacement(policy, w, std::forward<Out>(indices),
                                   weighted_options{options.seed, options.stream, zero_weights::error});
}

// The paper's per-prompt filtration: which rollouts of each group are kept.
enum class pf_ppo_selection {
    best_of_n,      // BoN: the highest reward
    best_random,    // BR: the highest and one other, uniformly at random (seeded)
    best_worst,     // BW: the highest and the lowest
};

struct pf_ppo_select_options {
    pf_ppo_selection strategy = pf_ppo_selection::best_random;
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;
};

// keep[i] = 1 for the selected rows of each group (ties: the first row in group order); a group of
// one keeps its row, an empty group keeps nothing. Returns the number of rows kept.
template <class Policy, class Rewards, class Groups, class Keep>
    requires host_policy<Policy>
index_t pf_ppo_select(const Policy& policy, const Rewards& rewards, const Groups& groups, Keep&& keep,
                      const pf_ppo_select_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::pf_ppo_select";
    detail::check_stream(options.stream, {fn, "options.stream"});
    const std::vector<double> r = detail::read_finite(rewards, {fn, "rewards"});
    const index_t n = static_cast<index_t>(r.size());
    const auto layout = posttrain::detail::make_layout(groups, n, {fn, "groups"});
    const philox4x32_10 gen(options.seed);
    const std::uint64_t stream = detail::stream_word(options.stream, purpose::pf_ppo_select);
    return std::visit(
        [&](auto k) {
            using K = typename decltype(k)::value_type;
            detail::require(k.extent(0) == n, {fn, "keep"}, "expected " + detail::str(n) + " entries (one per row)");
            posttrain::detail::check_apart_from_layout(groups, k, fn, "keep");
            for (index_t i = 0; i < n; ++i) k(i) = K(0);
            advantage::detail::for_each_group(policy, layout, n, [&](index_t g, auto rows, index_t m) {
                if (m == 0) return;
                index_t best = 0, worst = 0;
                for (index_t j = 1; j < m; ++j) {
                    if (r[static_cast<std::size_t>(rows(j))] > r[static_cast<std::size_t>(rows(best))]) best = j;
                    if (r[static_cast<std::size_t>(rows(j))] < r[static_cast<std::size_t>(rows(worst))]) worst = j;
                }
                k(rows(best)) = K(1);
                if (m == 1 || options.strategy == pf_ppo_selection::best_of_n) return;
                if (options.strategy == pf_ppo_selection::best_worst) {
                    k(rows(worst == best ? (best == 0 ? 1 : 0) : worst)) = K(1);
                    return;
                }
                // One Philox draw per group (counter = group index): any split of groups gives the same pick.
                const philox_block b = gen.block(stream, static_cast<std::uint64_t>(g));
                index_t other = static_cast<index_t>(unit_closed_open(philox_word64(b.v[1], b.v[0])) * static_cast<double>(m - 1));
                other = std::min(other, m - 2);
                k(rows(other >= best ? other + 1 : other)) = K(1);
            });
            index_t kept = 0;
            for (index_t i = 0; i < n; ++i) kept += k(i) != K(0);
            return kept;
        },
        posttrain::detail::dispatch_view<false, 1, host_space, posttrain::detail::mask_elems>::make(keep, {fn, "keep"}));
}

// ---------------------------------------------------------------------------------------------
// Overlong responses.

struct overlong_options {
    index_t max_length = 0;        // L_max (verl data.max_response_length)
    index_t buffer_length = 0;     // L_cache (verl reward_model.overlong_buffer.len)
    double penalty_factor = 1.0;   // verl reward_model.overlong_buffer.penalty_factor

    // DAPO's paper setting: L_max = 20480, L_cache = 4096, factor 1.
    static overlong_options dapo(index_t max_length = 20480, index_t buffer_length = 4096, double penalty_factor = 1.0) {
        return {max_length, buffer_length, penalty_factor};
    }
};

// DAPO's soft overlong punishment, added to the reward by the caller:
//   penalty_i = min(-(len_i - (L_max - L_cache)) / L_cache * factor, 0)
// 0 up to L_max - L_cache, falling linearly to -factor at L_max (and below it past L_max, as in verl).
// `penalty` (float) may not overlap the integer `lengths` (no in-place form: the types differ).
template <class Policy, class Lengths, class Penalty>
    requires host_policy<Policy>
void overlong_penalty(const Policy& policy, const Lengths& lengths, Penalty&& penalty, const overlong_options& options) {
    constexpr const char* fn = "posttrain::sampling::overlong_penalty";
    detail::require(options.buffer_length > 0, {fn, "options.buffer_length"}, "must be positive");
    detail::require(options.max_length >= options.buffer_length, {fn, "options.max_length"}, "must be >= buffer_length");
    detail::require(numeric::is_finite(options.penalty_factor) && options.penalty_factor >= 0, {fn, "options.penalty_factor"},
                    "must be finite and non-negative");
    const double expected = static_cast<double>(options.max_length - options.buffer_length);
    std::visit(
        [&](auto len, auto out) {
            using E = typename decltype(out)::value_type;
            detail::require(out.extent(0) == len.extent(0), {fn, "penalty"}, "expected one entry per length");
            advantage::detail::check_no_alias(out, len, {fn, "penalty"}, "lengths");
            detail::check_lengths(len, {fn, "lengths"});
            posttrain::detail::for_blocks(policy, len.extent(0), 1, [&](index_t lo, index_t hi) {
                for (index_t i = lo; i < hi; ++i) {
                    const double exceed = static_cast<double>(len(i)) - expected;
                    out(i) = static_cast<E>(std::min(-exceed / static_cast<double>(options.buffer_length) * options.penalty_factor, 0.0));
                }
            });
        },
        posttrain::detail::id_input<1>(lengths, {fn, "lengths"}), posttrain::detail::floating_output<1>(penalty, {fn, "penalty"}));
}

// truncated[i] = 1 when response i reached max_length, i.e. generation stopped at the limit rather than
// at EOS (use the engine's finish reason instead when it has one). Returns the count.
template <class Policy, class Lengths, class Truncated>
    requires host_policy<Policy>
index_t truncated_by_length(const Policy&, const Lengths& lengths, Truncated&& truncated, index_t max_length) {
    constexpr const char* fn = "posttrain::sampling::truncated_by_length";
    detail::require(max_length > 0, {fn, "max_length"}, "must be positive");
    return std::visit(
        [&](auto len, auto out) {
            using E = typename decltype(out)::value_type;
            detail::require(out.extent(0) == len.extent(0), {fn, "truncated"}, "expected one entry per length");
            advantage::detail::check_same_or_disjoint(out, len, {fn, "truncated"}, "lengths");
            detail::check_lengths(len, {fn, "lengths"});
            index_t count = 0;
            for (index_t i = 0; i < len.extent(0); ++i) {
                const bool t = static_cast<double>(len(i)) >= static_cast<double>(max_length);
                out(i) = static_cast<E>(t ? 1 : 0);
                count += t;
            }
            return count;
        },
        posttrain::detail::id_input<1>(lengths, {fn, "lengths"}),
        posttrain::detail::dispatch_view<false, 1, host_space, posttrain::detail::mask_elems>::make(truncated, {fn, "truncated"}));
}

// Truncated responses contribute no loss: token_mask[i, :] = 0 where truncated[i] is nonzero (TRL
// mask_truncated_completions, NeMo overlong_filtering). Returns the number of rows masked.
template <class Policy, class Truncated, class TokenMask>
    requires host_policy<Policy>
index_t mask_truncated(const Policy& policy, const Truncated& truncated, TokenMask&& token_mask) {
    constexpr const char* fn = "posttrain::sampling::mask_truncated";
    return std::visit(
        [&](auto t, auto m) {
            using M = typename decltype(m)::value_type;
            detail::require(m.extent(0) == t.extent(0), {fn, "token_mask"}, "expected one row per truncated flag");
            advantage::detail::check_no_alias(m, t, {fn, "token_mask"}, "truncated");
            using T = std::remove_const_t<typename decltype(t)::value_type>;
            posttrain::detail::for_blocks(policy, m.extent(0), m.extent(1), [&](index_t lo, index_t hi) {
                for (index_t i = lo; i < hi; ++i)
                    if (t(i) != T(0))
                        for (index_t j = 0; j < m.extent(1); ++j) m(i, j) = M(0);
            });
            index_t count = 0;
            for (index_t i = 0; i < t.extent(0); ++i) count += t(i) != T(0);
            return count;
        },
        posttrain::detail::mask_input<1>(truncated, {fn, "truncated"}),
        posttrain::detail::dispatch_view<false, 2, host_space, posttrain::detail::mask_elems>::make(token_mask, {fn, "token_mask"}));
}

}  // namespace posttrain::sampling
