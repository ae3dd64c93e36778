#pragma once
// Discounted step returns per trajectory (GiGPO Eq. 5):
//     R_t = r_t + gamma * R_{t+1}    over the steps of one trajectory, R at its last step = r
// computed as one segmented reverse scan over the rows in trajectory order: O(N), where verl-agent's
// compute_step_discounted_returns searches the batch for every row (O(N^2)). See docs/algorithms/step_returns.md.

#include <cmath>
#include <string>
#include <variant>

#include "../advantage/common.hpp"
#include "steps.hpp"

namespace posttrain::credit {

struct step_returns_options {
    double gamma = 0.95;                                   // discount per step (GiGPO's examples use 0.95)
    trajectory_order order = trajectory_order::any;
    advantage::nonfinite nonfinite_rewards = advantage::nonfinite::raise;  // raise | propagate

    // verl-agent compute_step_discounted_returns: rows of a trajectory in batch order, any interleaving.
    static constexpr step_returns_options verl_agent(double gamma = 0.95) {
        step_returns_options o;
        o.gamma = gamma;
        o.nonfinite_rewards = advantage::nonfinite::propagate;
        return o;
    }
};

struct [[nodiscard]] step_returns_result {
    index_t trajectories = 0;
};

namespace detail {

inline void check_returns_options(const step_returns_options& o, const char* fn) {
    require(std::isfinite(o.gamma), {fn, "options.gamma"}, "must be finite, found " + std::to_string(o.gamma));
    require(o.nonfinite_rewards != advantage::nonfinite::ignore, {fn, "options.nonfinite_rewards"},
            "nonfinite::ignore has no meaning for returns; use raise or propagate");
}

// The scan of one trajectory, from its last step back: the last step's return is its reward as is
// (no "+ gamma * 0", which would turn a -0.0 reward into +0.0), then R = r + gamma * R. The Thrust
// path's sequential scan performs the same operations, hence the same bits.
template <class Rewards, class Write>
void trajectory_returns(const Rewards& r, const index_t* rows, index_t len, double gamma, Write&& write) {
    if (len == 0) return;
    double run = r(rows[len - 1]);
    write(rows[len - 1], run);
    for (index_t j = len - 2; j >= 0; --j) {
        run = r(rows[j]) + gamma * run;
        write(rows[j], run);
    }
}

template <class Policy, class R, class Out>
void step_returns_host(const Policy& p, tensor_view<const R, 1> r, const trajectory_layout& t, tensor_view<Out, 1> out,
                       double gamma) {
    const index_t trajs = t.count();
    const index_t cost = trajs > 0 ? r.extent(0) / trajs + 1 : 1;
    auto read = [&](index_t i) { return static_cast<double>(r(i)); };
    auto write = [&](index_t i, double v) { out(i) = static_cast<Out>(v); };
    posttrain::detail::for_blocks(p, trajs, cost, [&](index_t lo, index_t hi) {
        for (index_t k = lo; k < hi; ++k) {
            const index_t b = t.offsets[std::size_t(k)];
            trajectory_returns(read, t.rows.data() + b, t.offsets[std::size_t(k) + 1] - b, gamma, write);
        }
    });
}

// Validates the records and options and returns the output view; shared by the host and Thrust entries.
template <class R, class Returns>
auto prepare_step_returns(const step_records<R>& s, Returns&& returns, const step_returns_options& o, const char* fn) {
    check_records(s, fn, true);
    check_returns_options(o, fn);
    if (o.nonfinite_rewards == advantage::nonfinite::raise) advantage::detail::check_finite(s.reward, {fn, "steps.reward"});
    auto out = posttrain::detail::floating_output<1>(returns, {fn, "returns"});
    std::visit(
        [&](auto v) {
            advantage::detail::check_extent(v.extent(0), s.size(), {fn, "returns"}, "length (one return per step)");
            advantage::detail::check_no_alias(v, s.reward, {fn, "returns"}, "steps.reward");
        },
        out);
    return out;
}

}  // namespace detail

// returns[i]: the discounted return from step i to the end of its trajectory. Trajectories are
// independent, so any host policy gives the same bits.
template <class Policy, class R, class Returns>
step_returns_result step_returns(const Policy& policy, const step_records<R>& steps, Returns&& returns,
                                 const step_returns_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::credit::step_returns: host policy expected (exec::thrust: "
                                       "include <posttrain/thrust/credit.hpp>)");
    constexpr const char* fn = "posttrain::credit::step_returns";
    auto out = detail::prepare_step_returns(steps, returns, options, fn);
    const detail::trajectory_layout t = detail::make_trajectories(
        steps, options.order, [&](id_view ids) { return grouping::from_ids(policy, ids); }, fn);
    std::visit([&](auto o) { detail::step_returns_host(policy, steps.reward, t, o, options.gamma); }, out);
    return {t.count()};
}

}  // namespace posttrain::credit
