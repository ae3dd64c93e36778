#pragma once
// Rewards that score a response's diversity or its similarity to a reference, to be added to a
// verifiable reward before an outcome estimator (grpo, rloo, ...):
//   multirole_rewards   MultiRole-R1: r = r_verif + lambda_p * perspectives (normalised) + lambda_l * lexical
//   bmas                Mixed-R1: bidirectional max-average cosine similarity of token embeddings
// See docs/algorithms/multirole_diversity.md and docs/algorithms/bmas.md.

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "tokens.hpp"

namespace posttrain::advantage {

// How a perspective count becomes a reward in [0, 1].
enum class perspective_scale {
    group_max,  // c_i / max_{j in group} c_j (0 when the group has none)
    cap,        // min(c_i / cap, 1)
};

struct multirole_options {
    double perspective_weight = 0.5;  // lambda_p (not published; posttrain's choice)
    double lexical_weight = 0.5;      // lambda_l (not published; posttrain's choice)
    perspective_scale scale = perspective_scale::group_max;
    double cap = 4.0;                 // perspective_scale::cap: this many distinct roles earn the full reward
};

// rewards[i] = verifier[i] + lambda_p * s(perspectives[i]) + lambda_l * lexical[i].
// perspectives: counts of distinct role perspectives (>= 0); lexical: a lexical-diversity score, e.g.
// per-response distinct-n from sampling::distinct_n with uniform_groups{1}.
template <class Policy, class Verifier, class Perspectives, class Lexical, class Groups, class Rewards>
void multirole_rewards(const Policy& policy, const Verifier& verifier, const Perspectives& perspectives,
                       const Lexical& lexical, const Groups& groups, Rewards&& rewards, const multirole_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::multirole_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::multirole_rewards";
    detail::require(numeric::is_finite(options.perspective_weight) && numeric::is_finite(options.lexical_weight),
                    {fn, "options"}, "weights must be finite");
    detail::require(options.scale != perspective_scale::cap || (options.cap > 0 && numeric::is_finite(options.cap)),
                    {fn, "options.cap"}, "must be > 0 and finite, found " + std::to_string(options.cap));
    std::visit(
        [&](auto v, auto c, auto l, auto r) {
            const index_t n = v.extent(0);
            detail::check_extent(c.extent(0), n, {fn, "perspectives"}, "length (one per verifier reward)");
            detail::check_extent(l.extent(0), n, {fn, "lexical"}, "length (one per verifier reward)");
            detail::check_extent(r.extent(0), n, {fn, "rewards"}, "length (one per verifier reward)");
            detail::check_no_alias(r, c, {fn, "rewards"}, "perspectives");
            detail::check_same_or_disjoint(r, v, {fn, "rewards"}, "verifier");
            detail::check_same_or_disjoint(r, l, {fn, "rewards"}, "lexical");
            detail::check_finite(v, {fn, "verifier"});
            detail::check_finite(c, {fn, "perspectives"});
            detail::check_finite(l, {fn, "lexical"});
            for (index_t i = 0; i < n; ++i)
                if (c(i) < 0)
                    posttrain::detail::raise_invalid_argument(fn, "perspectives", "counts must be >= 0, found " +
                                                                                      std::to_string(double(c(i))) + " at index " +
                                                                                      detail::str(i));
            const auto layout = posttrain::detail::make_layout(groups, n, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, r, fn, "rewards");
            using R = typename decltype(r)::value_type;
            detail::for_each_group(policy, layout, n, [&](index_t, auto rows, index_t m) {
                double top = 0;
                for (index_t j = 0; j < m; ++j) top = double(c(rows(j))) > top ? double(c(rows(j))) : top;
                // Read every input of the group before writing: rewards may alias verifier or lexical.
                for (index_t j = 0; j < m; ++j) {
                    const index_t i = rows(j);
                    const double cnt = c(i);
                    double s = 0;
                    if (options.scale == perspective_scale::group_max) s = top > 0 ? cnt / top : 0.0;
                    else s = cnt >= options.cap ? 1.0 : cnt / options.cap;
                    r(i) = static_cast<R>(double(v(i)) + options.perspective_weight * s + options.lexical_weight * double(l(i)));
                }
            });
        },
        posttrain::detail::floating_input<1>(verifier, {fn, "verifier"}),
        posttrain::detail::floating_input<1>(perspectives, {fn, "perspectives"}),
        posttrain::detail::floating_input<1>(lexical, {fn, "lexical"}),
        posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}));
}

struct bmas_options {
    bool clip_to_unit = false;  // clip the score to [0, 1] (negative similarity earns nothing)
};

namespace detail {

template <class Id, class M>
void check_token_ids(tensor_view<const Id, 2> ids, tensor_view<const M, 2> mask, index_t vocab, where w) {
    for (index_t i = 0; i < ids.extent(0); ++i)
        for (index_t t = 0; t < ids.extent(1); ++t) {
            if (mask_weight(mask(i, t)) == 0) continue;
            const auto id = ids(i, t);
            bool negative = false;
            if constexpr (std::is_signed_v<Id>) negative = id < 0;
            if (negative || static_cast<std::uint64_t>(id) >= static_cast<std::uint64_t>(vocab))
                posttrain::detail::raise_invalid_argument(w.function, w.argument,
                                                          "token id " + std::to_string(id) + " at [" + str(i) + ", " + str(t) +
                                                              "] is outside the embedding table's " + str(vocab) + " rows");
        }
}

}  // namespace detail

// scores[b] = BMAS(response b, reference b) over the rows of `embeddings` [V, d] (the policy's input
// token embeddings): the mean over response tokens of their best cosine with a reference token, and
// the mean over reference tokens of their best cosine with a response token, averaged. Masked
// positions are not tokens. An empty response or reference scores 0.
template <class Policy, class Embeddings, class Response, class ResponseMask, class Reference, class ReferenceMask, class Scores>
void bmas(const Policy& policy, const Embeddings& embeddings, const Response& response_tokens, const ResponseMask& response_mask,
          const Reference& reference_tokens, const ReferenceMask& reference_mask, Scores&& scores, const bmas_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::bmas: host policy expected");
    constexpr const char* fn = "posttrain::advantage::bmas";
    std::visit(
        [&](auto e, auto u, auto um, auto v, auto vm, auto s) {
            const index_t B = u.extent(0), V = e.extent(0), d = e.extent(1);
            detail::check_same_shape(um, u, {fn, "response_mask"}, "response_tokens");
            detail::check_same_shape(vm, v, {fn, "reference_mask"}, "reference_tokens");
            detail::check_extent(v.extent(0), B, {fn, "reference_tokens"}, "rows (one reference per response)");
            detail::check_extent(s.extent(0), B, {fn, "scores"}, "length (one score per response)");
            detail::check_no_alias(s, e, {fn, "scores"}, "embeddings");
            detail::check_finite(e, {fn, "embeddings"});
            detail::check_token_ids(u, um, V, {fn, "response_tokens"});
            detail::check_token_ids(v, vm, V, {fn, "reference_tokens"});
            using S = typename decltype(s)::value_type;
            const index_t T = u.extent(1), L = v.extent(1);
            const index_t cost = posttrain::detail::capped_work(double(T + 1) * double(L + 1) * double(d + 1));
            detail::for_each_row(policy, B, cost, [&](index_t b) {
                std::vector<index_t> a_ids, b_ids;
                for (index_t t = 0; t < T; ++t)
                    if (detail::mask_weight(um(b, t)) != 0) a_ids.push_back(index_t(u(b, t)));
                for (index_t t = 0; t < L; ++t)
                    if (detail::mask_weight(vm(b, t)) != 0) b_ids.push_back(index_t(v(b, t)));
                const index_t na = index_t(a_ids.size()), nb = index_t(b_ids.size());
                if (na == 0 || nb == 0) {
                    s(b) = S(0);
                    return;
                }
                auto norm = [&](index_t id) {
                    return std::sqrt(posttrain::detail::fixed_order_sum(d, [&](index_t k) {
                        const double x = e(id, k);
                        return x * x;
                    }));
                };
                std::vector<double> na_norm(static_cast<std::size_t>(na)), nb_norm(static_cast<std::size_t>(nb));
                for (index_t i = 0; i < na; ++i) na_norm[std::size_t(i)] = norm(a_ids[std::size_t(i)]);
                for (index_t j = 0; j < nb; ++j) nb_norm[std::size_t(j)] = norm(b_ids[std::size_t(j)]);
                std::vector<double> row_max(static_cast<std::size_t>(na), -2.0), col_max(static_cast<std::size_t>(nb), -2.0);
                for (index_t i = 0; i < na; ++i)
                    for (index_t j = 0; j < nb; ++j) {
                        const double den = na_norm[std::size_t(i)] * nb_norm[std::size_t(j)];
                        // A zero embedding has no direction: its cosine with anything is 0.
                        double c = 0;
                        if (den > 0) {
                            const index_t x = a_ids[std::size_t(i)], y = b_ids[std::size_t(j)];
                            c = posttrain::detail::fixed_order_sum(d, [&](index_t k) { return double(e(x, k)) * double(e(y, k)); }) / den;
                        }
                        row_max[std::size_t(i)] = c > row_max[std::size_t(i)] ? c : row_max[std::size_t(i)];
                        col_max[std::size_t(j)] = c > col_max[std::size_t(j)] ? c : col_max[std::size_t(j)];
                    }
                const double fwd = posttrain::detail::fixed_order_sum(row_max.data(), na) / double(na);
                const double bwd = posttrain::detail::fixed_order_sum(col_max.data(), nb) / double(nb);
                double score = 0.5 * (fwd + bwd);
                if (options.clip_to_unit) score = score < 0 ? 0.0 : (score > 1 ? 1.0 : score);
                s(b) = static_cast<S>(score);
            });
        },
        posttrain::detail::floating_input<2>(embeddings, {fn, "embeddings"}),
        posttrain::detail::id_input<2>(response_tokens, {fn, "response_tokens"}),
        posttrain::detail::mask_input<2>(response_mask, {fn, "response_mask"}),
        posttrain::detail::id_input<2>(reference_tokens, {fn, "reference_tokens"}),
        posttrain::detail::mask_input<2>(reference_mask, {fn, "reference_mask"}),
        posttrain::detail::floating_output<1>(scores, {fn, "scores"}));
}

}  // namespace posttrain::advantage
