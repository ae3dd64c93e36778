#pragma once
// C-GRPO (CaRR, THUDM 2025): citation-aware rubric rewards mixed into the outcome reward before a
// group estimator.
//
//   rubric_reward:  R_rub = |supported rubrics reachable from the answer entity E0| / |rubrics|
//                   (a BFS over entities shared by supported rubrics: evidence must connect to the
//                   answer), or the plain supported fraction (connectivity off, --use-rubric-reward-nobfs)
//   rubric_mix:     per group, with alpha = rubric_reward_ratio and R~ = R_rub / max_group R_rub (if > 0):
//                   all            r = (1 - alpha) R_out + alpha R~
//                   only_positive  r = R_out if R_out == 0, else (1 - alpha) R_out + alpha R~   (paper's C-GRPO)
//                   only_negative  r = R_out if R_out > 0,  else alpha R~
//
// The mixed reward then goes through any group estimator (the released scripts: GRPO).
// See docs/algorithms/c_grpo.md.

#include <algorithm>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "common.hpp"
#include "tokens.hpp"

namespace posttrain::advantage {

// Which rollouts receive the rubric reward.
enum class rubric_branch {
    all,            // every rollout (CaRR's default flags)
    only_positive,  // only rollouts with a positive outcome (--rubric-only-positive; the paper's C-GRPO)
    only_negative,  // only rollouts with outcome 0, which get alpha * R~ alone (--rubric-only-negative)
};

struct rubric_mix_options {
    double ratio = 0.3;                      // alpha, --rubric-reward-ratio
    rubric_branch branch = rubric_branch::all;
    bool normalize = false;                  // divide by the group's largest rubric reward when it is > 0
    // CaRR's code quirk: under only_positive the mixed rubric reward is the RAW one even when
    // normalize is set (the released C-GRPO script sets both). false reproduces it.
    bool normalize_positive_branch = true;

    // scripts/training/training_run_4b-C-GRPO-rubric0.3.sh (c97e7e8): --normalize-rubric-reward
    // --rubric-only-positive, ratio 0.3, with the raw-reward quirk.
    static constexpr rubric_mix_options official(double ratio = 0.3) {
        rubric_mix_options o;
        o.ratio = ratio;
        o.branch = rubric_branch::only_positive;
        o.normalize = true;
        o.normalize_positive_branch = false;
        return o;
    }
};

// mixed[i] from outcome[i] and rubric[i] (N each) under the group layout. In place (mixed aliasing
// outcome) is allowed: each group reads before it writes.
template <class Policy, class Outcome, class Rubric, class Groups, class Mixed>
void rubric_mix(const Policy& policy, const Outcome& outcome, const Rubric& rubric, const Groups& groups, Mixed&& mixed,
                const rubric_mix_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::rubric_mix: host policy expected");
    constexpr const char* fn = "posttrain::advantage::rubric_mix";
    detail::require(options.ratio == options.ratio, {fn, "options.ratio"}, "must not be NaN");
    const int b = static_cast<int>(options.branch);
    detail::require(b >= 0 && b <= 2, {fn, "options.branch"}, "unknown rubric_branch " + detail::str(b));
    std::visit(
        [&](auto ro, auto rr, auto out) {
            const index_t N = ro.extent(0);
            detail::check_extent(rr.extent(0), N, {fn, "rubric"}, "length (one per outcome)");
            detail::check_extent(out.extent(0), N, {fn, "mixed"}, "length (one per outcome)");
            detail::check_no_alias(out, rr, {fn, "mixed"}, "rubric");
            detail::check_same_or_disjoint(out, ro, {fn, "mixed"}, "outcome");
            detail::check_finite(ro, {fn, "outcome"});
            detail::check_finite(rr, {fn, "rubric"});
            const auto layout = posttrain::detail::make_layout(groups, N, {fn, "groups"});
            posttrain::detail::check_apart_from_layout(groups, out, fn, "mixed");
            using O = typename decltype(out)::value_type;
            const double a = options.ratio;
            detail::for_each_group(policy, layout, N, [&](index_t, auto rows, index_t n) {
                double top = 0;
                for (index_t j = 0; j < n; ++j) top = std::max(top, double(rr(rows(j))));
                for (index_t j = 0; j < n; ++j) {
                    const index_t i = rows(j);
                    const double o = ro(i), raw = rr(i);
                    const double scaled = options.normalize && top > 0 ? raw / top : raw;
                    double v = (1 - a) * o + a * scaled;
                    if (options.branch == rubric_branch::only_positive)
                        v = o == 0 ? o : (1 - a) * o + a * (options.normalize_positive_branch ? scaled : raw);
                    else if (options.branch == rubric_branch::only_negative)
                        v = o > 0 ? o : a * scaled;
                    out(i) = static_cast<O>(v);
                }
            });
        },
        posttrain::detail::floating_input<1>(outcome, {fn, "outcome"}), posttrain::detail::floating_input<1>(rubric, {fn, "rubric"}),
        posttrain::detail::floating_output<1>(mixed, {fn, "mixed"}));
}

struct rubric_reward_options {
    bool connectivity = true;  // false: the plain fraction of supported rubrics (--use-rubric-reward-nobfs)
};

struct [[nodiscard]] rubric_reward_result {
    double reward = 0;       // reachable (or supported) rubrics / all rubrics; 0 when there are none
    index_t counted = 0;     // rubrics in the numerator
};

// The rubric reward of one response with R rubrics. supported[R] (any arithmetic type or bool:
// nonzero = the judge marked it supported); rubric r names the entities
// entities[entity_offsets[r] .. entity_offsets[r+1]) (R + 1 CSR offsets, integer entity ids, e.g.
// hashes of "E0", "E1", ...). connected[R] (or posttrain::none) receives 1 for the rubrics counted.
// Unsupported and unidentified rubrics stay in the denominator, as in CaRR's reward server.
template <class Policy, class Supported, class Offsets, class Entities, class Connected>
rubric_reward_result rubric_reward(const Policy&, const Supported& supported, const Offsets& entity_offsets,
                                   const Entities& entities, std::int64_t answer_entity, Connected&& connected,
                                   const rubric_reward_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::advantage::rubric_reward: host policy expected");
    constexpr const char* fn = "posttrain::advantage::rubric_reward";
    return std::visit(
        [&](auto s, auto off, auto ent) {
            const index_t R = s.extent(0), E = ent.extent(0);
            detail::check_extent(off.extent(0), R + 1, {fn, "entity_offsets"}, "length (rubrics + 1)");
            for (index_t r = 0; r <= R; ++r) {
                const auto lo = std::int64_t(off(r));
                detail::require(lo >= 0 && lo <= E && (r == 0 || lo >= std::int64_t(off(r - 1))), {fn, "entity_offsets"},
                                "offsets must be non-decreasing within [0, entities], found " + detail::str(index_t(lo)) +
                                    " at index " + detail::str(r));
            }
            detail::require(R == 0 || (std::int64_t(off(0)) == 0 && std::int64_t(off(R)) == E), {fn, "entity_offsets"},
                            "must start at 0 and end at the number of entities");
            std::vector<unsigned char> hit(static_cast<std::size_t>(R), 0);
            auto ok = [&](index_t r) { return detail::mask_weight(s(r)) != 0; };
            if (!options.connectivity) {
                for (index_t r = 0; r < R; ++r) hit[std::size_t(r)] = ok(r);
            } else {
                // Breadth-first over entities: a supported rubric naming a reached entity is reached,
                // and every entity it names is reached in turn.
                std::vector<std::int64_t> frontier{answer_entity}, reached{answer_entity};
                while (!frontier.empty()) {
                    std::vector<std::int64_t> next;
                    for (index_t r = 0; r < R; ++r) {
                        if (hit[std::size_t(r)] || !ok(r)) continue;
                        bool touches = false;
                        for (auto k = std::int64_t(off(r)); k < std::int64_t(off(r + 1)) && !touches; ++k)
                            touches = std::find(frontier.begin(), frontier.end(), std::int64_t(ent(k))) != frontier.end();
                        if (!touches) continue;
                        hit[std::size_t(r)] = 1;
                        for (auto k = std::int64_t(off(r)); k < std::int64_t(off(r + 1)); ++k) {
                            const auto e = std::int64_t(ent(k));
                            if (std::find(reached.begin(), reached.end(), e) == reached.end()) {
                                reached.push_back(e);
                                next.push_back(e);
                            }
                        }
                    }
                    frontier.swap(next);
                }
            }
            rubric_reward_result res;
            for (unsigned char h : hit) res.counted += h;
            res.reward = R > 0 ? double(res.counted) / double(R) : 0.0;
            if constexpr (!std::is_same_v<std::remove_cvref_t<Connected>, none_t>) {
                auto c = std::visit([](auto v) { return v; }, posttrain::detail::floating_output<1>(connected, {fn, "connected"}));
                detail::check_extent(c.extent(0), R, {fn, "connected"}, "length (one per rubric)");
                using C = typename decltype(c)::value_type;
                for (index_t r = 0; r < R; ++r) c(r) = static_cast<C>(hit[std::size_t(r)]);
            }
            return res;
        },
        posttrain::detail::mask_input<1>(supported, {fn, "supported"}), posttrain::detail::id_input<1>(entity_offsets, {fn, "entity_offsets"}),
        posttrain::detail::id_input<1>(entities, {fn, "entities"}));
}

}  // namespace posttrain::advantage
