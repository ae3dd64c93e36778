#pragma once
// TTRV (test-time RL for VLMs, arXiv 2510.06783): label-free rewards from the empirical distribution
// of a prompt's sampled answers,
//     p(a) = count(a) / n                       (n = rows of the group)
//     frequency reward   r_i = p(a_i)
//     entropy reward     -H = sum_a p(a) log p(a)      (group_shared)   or   log p(a_i)   (per_sample)
//     r_i = frequency_weight * p(a_i) + entropy_weight * entropy term
// The result is a reward: pass it to grpo / rloo / any outcome estimator. See docs/algorithms/ttrv.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "common.hpp"

namespace posttrain::advantage {

// How the entropy reward reaches a sample.
enum class ttrv_entropy {
    per_sample,    // log p(a_i): its group mean is -H, and it survives a group baseline (posttrain's default)
    group_shared,  // -H for every row of the group: a constant that a group-centred estimator removes
};

struct ttrv_options {
    double frequency_weight = 1.0;
    double entropy_weight = 1.0;              // the paper's alpha (its value is not published)
    ttrv_entropy entropy_form = ttrv_entropy::per_sample;
    bool normalize_entropy = false;           // divide H (or log p) by log n, so -H lies in [-1, 0]
    // The id that means "no answer extracted" (no class of its own), compared by value with the id in its
    // own type (an unsigned id never equals a negative sentinel). None by default: every id is an answer,
    // as hashed answer ids (core/groups.hpp hash_id) take every 64-bit value, negative ones included.
    std::optional<std::int64_t> missing_id = std::nullopt;
    double missing_reward = 0.0;              // the whole reward of a row whose id is missing_id

    // The paper's reading: -H shared by the group (add it after normalisation, or it cancels).
    static constexpr ttrv_options paper(double alpha = 1.0) {
        ttrv_options o;
        o.entropy_weight = alpha;
        o.entropy_form = ttrv_entropy::group_shared;
        return o;
    }
    // TTRL's majority vote is a different reward; frequency alone is TTRV's first term.
    static constexpr ttrv_options frequency_only() {
        ttrv_options o;
        o.entropy_weight = 0.0;
        return o;
    }
};

struct [[nodiscard]] ttrv_result {
    index_t groups = 0;
    index_t empty_groups = 0;
    index_t missing_answers = 0;  // rows whose id marked "no answer"
};

namespace detail {

// Whether an id is the options' "no answer" sentinel (std::cmp_equal: by value, no wrap-around of signs).
template <class Id>
bool ttrv_missing(Id id, const ttrv_options& o) {
    return o.missing_id.has_value() && std::cmp_equal(id, *o.missing_id);
}

// One group's answer classes: (id, count) in ascending id order, plus the group's entropy.
struct answer_histogram {
    std::vector<std::pair<std::int64_t, index_t>> classes;
    index_t missing = 0;
    double entropy = 0;  // -sum_a p log p over the classes (missing rows carry mass but no class)
};

template <class Id, class Rows>
void histogram_of(tensor_view<const Id, 1> ids, const Rows& rows, index_t n, const ttrv_options& o, answer_histogram& h) {
    std::vector<std::int64_t> v;
    v.reserve(static_cast<std::size_t>(n));
    h.classes.clear();
    h.missing = 0;
    for (index_t j = 0; j < n; ++j) {
        // The class key: a uint64 id maps one-to-one onto int64, so distinct ids stay distinct classes.
        if (ttrv_missing(ids(rows(j)), o)) ++h.missing;
        else v.push_back(static_cast<std::int64_t>(ids(rows(j))));
    }
    std::sort(v.begin(), v.end());
    for (std::size_t k = 0; k < v.size();) {
        std::size_t e = k;
        while (e < v.size() && v[e] == v[k]) ++e;
        h.classes.emplace_back(v[k], index_t(e - k));
        k = e;
    }
    const double dn = double(n);
    h.entropy = -posttrain::detail::fixed_order_sum(index_t(h.classes.size()), [&](index_t c) {
        const double p = double(h.classes[std::size_t(c)].second) / dn;
        return p * std::log(p);
    });
    if (o.normalize_entropy) h.entropy = n > 1 ? h.entropy / std::log(dn) : 0.0;
}

inline void check_ttrv_options(const ttrv_options& o, const char* fn) {
    require(numeric::is_finite(o.frequency_weight) && numeric::is_finite(o.entropy_weight) &&
                numeric::is_finite(o.missing_reward),
            {fn, "options"}, "weights and missing_reward must be finite");
}

}  // namespace detail

// rewards[i] for answer_ids[i] (integer ids of the extracted answers; equal id = same answer) under
// a group layout (one group per prompt).
template <class Policy, class AnswerIds, class Groups, class Rewards>
ttrv_result ttrv_rewards(const Policy& policy, const AnswerIds& answer_ids, const Groups& groups, Rewards&& rewards,
                         const ttrv_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::ttrv_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::ttrv_rewards";
    detail::check_ttrv_options(options, fn);
    return std::visit(
        [&](auto ids, auto r) {
            detail::check_extent(r.extent(0), ids.extent(0), {fn, "rewards"}, "length (one reward per answer id)");
            detail::check_no_alias(r, ids, {fn, "rewards"}, "answer_ids");  // a group's ids are read while it writes
            const auto layout = posttrain::detail::make_layout(groups, ids.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, r, fn, "rewards");
            using R = typename decltype(r)::value_type;
            std::vector<index_t> missing(std::size_t(layout.num_groups()), 0);
            detail::for_each_group(policy, layout, ids.extent(0), [&](index_t g, auto rows, index_t n) {
                detail::answer_histogram h;
                detail::histogram_of(ids, rows, n, options, h);
                missing[std::size_t(g)] = h.missing;
                const double logn = std::log(double(n));
                for (index_t j = 0; j < n; ++j) {
                    if (detail::ttrv_missing(ids(rows(j)), options)) {
                        r(rows(j)) = static_cast<R>(options.missing_reward);
                        continue;
                    }
                    const auto id = static_cast<std::int64_t>(ids(rows(j)));
                    const auto it = std::lower_bound(h.classes.begin(), h.classes.end(), std::make_pair(id, index_t(0)));
                    const double p = double(it->second) / double(n);
                    double ent = -h.entropy;
                    if (options.entropy_form == ttrv_entropy::per_sample) {
                        ent = std::log(p);
                        if (options.normalize_entropy) ent = n > 1 ? ent / logn : 0.0;
                    }
                    r(rows(j)) = static_cast<R>(options.frequency_weight * p + options.entropy_weight * ent);
                }
            });
            ttrv_result res;
            res.groups = layout.num_groups();
            for (index_t g = 0; g < res.groups; ++g) {
                res.empty_groups += layout.size(g) == 0;
                res.missing_answers += missing[std::size_t(g)];
            }
            return res;
        },
        posttrain::detail::id_input<1>(answer_ids, {fn, "answer_ids"}),
        posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}));
}

// entropy[g] = H of group g's answer distribution (normalised by log n when the options say so): the
// quantity to log, or to add to advantages after a group-centred estimator (ttrv_entropy::group_shared).
template <class Policy, class AnswerIds, class Groups, class Entropy>
void answer_entropy(const Policy& policy, const AnswerIds& answer_ids, const Groups& groups, Entropy&& entropy,
                    const ttrv_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::answer_entropy: host policy expected");
    constexpr const char* fn = "posttrain::advantage::answer_entropy";
    std::visit(
        [&](auto ids, auto e) {
            const auto layout = posttrain::detail::make_layout(groups, ids.extent(0), {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, e, fn, "entropy");
            detail::check_extent(e.extent(0), layout.num_groups(), {fn, "entropy"}, "length (one entry per group)");
            detail::check_no_alias(e, ids, {fn, "entropy"}, "answer_ids");  // written while other groups are read
            using E = typename decltype(e)::value_type;
            detail::for_each_group(policy, layout, ids.extent(0), [&](index_t g, auto rows, index_t n) {
                detail::answer_histogram h;
                detail::histogram_of(ids, rows, n, options, h);
                e(g) = static_cast<E>(h.entropy);
            });
        },
        posttrain::detail::id_input<1>(answer_ids, {fn, "answer_ids"}),
        posttrain::detail::floating_output<1>(entropy, {fn, "entropy"}));
}

}  // namespace posttrain::advantage
