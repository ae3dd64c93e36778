#pragma once
// GRPO-S (DR-IRL, Cheng et al. 2025, arXiv 2503.18991): rewards scaled by task difficulty before
// GRPO. The paper combines a data-level hardness (text-encoder / CLIP cosine similarity) with a
// model-level responsiveness (reward gaps); its abstract gives no formula, so this is posttrain's
// RECONSTRUCTION (see docs/algorithms/grpo_s.md for what is certain and what is our reading):
//
//   d_data(g)  = hardness of prompt g in [0, 1], e.g. 1 - cos(E(x_g), E(reference))   (caller's)
//   d_model(g) = |gap_g| / max_g' |gap_g'|    (gap_g: the reward-model gap of prompt g; or raw |gap_g|)
//   s(g)       = 1 + alpha * d_data(g) * d_model(g)          (combine::product, default)
//              = 1 + alpha_data * d_data(g) + alpha * d_model(g)   (combine::sum)
//   r'_i       = r_i * s(g(i)),  then any group estimator (GRPO)
//
// Not the ByteDance "GRPO-S" (sequence-level entropy weighting, arXiv 2508.04349): a different method.

#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "common.hpp"

namespace posttrain::advantage {

enum class difficulty_combine {
    product,  // 1 + alpha d_data d_model: only prompts hard on both axes are boosted
    sum,      // 1 + alpha_data d_data + alpha d_model
};

struct difficulty_options {
    double alpha = 1.0;       // weight of the product (or of d_model under combine::sum)
    double alpha_data = 1.0;  // weight of d_data under combine::sum
    difficulty_combine combine = difficulty_combine::product;
    bool normalize_gap = true;  // d_model = |gap| / max |gap| over the batch's groups (all-zero gaps give 0)
};

struct [[nodiscard]] difficulty_result {
    index_t groups = 0;
    double max_gap = 0;  // the normaliser of d_model
};

// scaled[i] = rewards[i] * s(g(i)) from per-group hardness[G] and reward gaps gap[G] under the layout.
// In place (scaled aliasing rewards) is allowed.
template <class Policy, class Rewards, class Hardness, class Gap, class Groups, class Scaled>
difficulty_result difficulty_scaled_rewards(const Policy& policy, const Rewards& rewards, const Hardness& hardness,
                                            const Gap& gap, const Groups& groups, Scaled&& scaled,
                                            const difficulty_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::difficulty_scaled_rewards: host policy expected");
    constexpr const char* fn = "posttrain::advantage::difficulty_scaled_rewards";
    detail::require(numeric::is_finite(options.alpha) && numeric::is_finite(options.alpha_data), {fn, "options"},
                    "alpha and alpha_data must be finite");
    const int c = static_cast<int>(options.combine);
    detail::require(c == 0 || c == 1, {fn, "options.combine"}, "unknown difficulty_combine " + detail::str(c));
    return std::visit(
        [&](auto r, auto h, auto d, auto out) {
            const index_t N = r.extent(0);
            detail::check_extent(out.extent(0), N, {fn, "scaled"}, "length (one per reward)");
            detail::check_finite(r, {fn, "rewards"});
            detail::check_finite(h, {fn, "hardness"});
            detail::check_finite(d, {fn, "gap"});
            // In place over rewards is safe (row i reads r(i) before writing it); the per-group inputs are
            // read while other groups are written.
            detail::check_no_alias(out, h, {fn, "scaled"}, "hardness");
            detail::check_no_alias(out, d, {fn, "scaled"}, "gap");
            detail::check_same_or_disjoint(out, r, {fn, "scaled"}, "rewards");
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, out, fn, "scaled");
            const index_t G = layout.num_groups();
            detail::check_extent(h.extent(0), G, {fn, "hardness"}, "length (one per group):");
            detail::check_extent(d.extent(0), G, {fn, "gap"}, "length (one per group):");
            difficulty_result res;
            res.groups = G;
            for (index_t g = 0; g < G; ++g) res.max_gap = std::max(res.max_gap, std::fabs(double(d(g))));
            using O = typename decltype(out)::value_type;
            detail::for_each_group(policy, layout, N, [&](index_t g, auto rows, index_t n) {
                const double dm = options.normalize_gap ? (res.max_gap > 0 ? std::fabs(double(d(g))) / res.max_gap : 0.0)
                                                        : std::fabs(double(d(g)));
                const double dd = double(h(g));
                const double s = options.combine == difficulty_combine::product ? 1.0 + options.alpha * dd * dm
                                                                                : 1.0 + options.alpha_data * dd + options.alpha * dm;
                for (index_t j = 0; j < n; ++j) out(rows(j)) = static_cast<O>(double(r(rows(j))) * s);
            });
            return res;
        },
        posttrain::detail::floating_input<1>(rewards, {fn, "rewards"}), posttrain::detail::floating_input<1>(hardness, {fn, "hardness"}),
        posttrain::detail::floating_input<1>(gap, {fn, "gap"}), posttrain::detail::floating_output<1>(scaled, {fn, "scaled"}));
}

}  // namespace posttrain::advantage
