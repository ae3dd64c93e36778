#pragma once
// Random multi-turn rollout batches for the credit tests: G episode groups of K trajectories with
// lengths 1..L over a small state space (so states repeat), rows emitted either as a rollout loop
// writes them (turn by turn across all environments: trajectories interleaved) or one trajectory
// after another. Trajectory ids are hashes, not dense numbers.

#include <cstdint>
#include <random>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/steps.hpp>

namespace posttrain::test {

struct rollout_batch {
    std::vector<std::int64_t> group, traj, step, state, action;
    std::vector<double> reward, episode;  // step reward; episode return (sum of the trajectory's rewards) on every row
    posttrain::index_t size() const { return posttrain::index_t(group.size()); }
    posttrain::credit::step_records<double> records() const {
        return posttrain::credit::steps(group, traj, state, reward).with_steps(step).with_actions(action);
    }
};

inline rollout_batch make_rollouts(int groups, int per_group, int max_len, int states, std::uint64_t seed, bool interleave = true) {
    std::mt19937_64 rng(seed);
    struct traj_t {
        std::int64_t g, id;
        std::vector<std::int64_t> s, a;
        std::vector<double> r;
        double total = 0;
    };
    std::vector<traj_t> ts;
    int longest = 0;
    for (int g = 0; g < groups; ++g)
        for (int k = 0; k < per_group; ++k) {
            traj_t t;
            t.g = 1000 + 7 * g;
            t.id = posttrain::credit::combine_keys(g, k);
            const int len = 1 + int(rng() % std::uint64_t(max_len));
            longest = len > longest ? len : longest;
            for (int j = 0; j < len; ++j) {
                t.s.push_back(std::int64_t(rng() % std::uint64_t(states)));
                t.a.push_back(std::int64_t(rng() % 3));
                const double r = (j == len - 1) ? double(rng() % 2) : (rng() % 4 == 0 ? 0.25 : 0.0);
                t.r.push_back(r);
                t.total += r;
            }
            ts.push_back(t);
        }
    rollout_batch b;
    auto emit = [&](const traj_t& t, int j) {
        b.group.push_back(t.g);
        b.traj.push_back(t.id);
        b.step.push_back(j);
        b.state.push_back(t.s[std::size_t(j)]);
        b.action.push_back(t.a[std::size_t(j)]);
        b.reward.push_back(t.r[std::size_t(j)]);
        b.episode.push_back(t.total);
    };
    if (interleave) {
        for (int j = 0; j < longest; ++j)
            for (const auto& t : ts)
                if (j < int(t.s.size())) emit(t, j);
    } else {
        for (const auto& t : ts)
            for (int j = 0; j < int(t.s.size()); ++j) emit(t, j);
    }
    return b;
}

}  // namespace posttrain::test
