// GiGPO benchmarks: credit::gigpo with gigpo_options::verl_agent() (mean_norm, episode statistics
// across steps, exact anchor-state groups) over N = 2^14 .. 2^24 step rows, under exec::seq and
// exec::par:
//   gigpo_steps   step returns given (as verl-agent's compute_gigpo_outcome_advantage takes them)
// The rows are a rollout loop's: episode groups of 8 trajectories of 1..16 steps, written turn by
// turn (the trajectories of a group interleaved), each step's state one of 10 per group (so states
// repeat), 64-bit hashed group / trajectory / state ids, float32 returns and advantages.
// The peer (bench/peers/verl_agent_peer.py, gigpo_verl_agent) is verl-agent's approach: dict
// grouping and per-step Python loops over the same layout, with uuid-like string ids.
//
// Bytes: group, trajectory and state keys (24N), episode and step returns (8N), advantages (4N).

#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/gigpo.hpp>

#include "common.hpp"

namespace cr = posttrain::credit;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

struct step_batch {
    std::vector<std::int64_t> group, traj, state;
    std::vector<float> episode, returns;
};

step_batch make_steps(index_t n, std::uint64_t seed = 17) {
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<int> len(1, 16), st(0, 9);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    step_batch b;
    for (std::int64_t g = 0; index_t(b.group.size()) < n; ++g) {
        const auto gid = static_cast<std::int64_t>(gen());
        int lens[8], longest = 0;
        std::int64_t ids[8];
        float ret[8];
        for (int k = 0; k < 8; ++k) {
            lens[k] = len(gen);
            longest = std::max(longest, lens[k]);
            ids[k] = static_cast<std::int64_t>(gen());
            ret[k] = u(gen) < 0.5f ? 1.0f : 0.0f;
        }
        for (int j = 0; j < longest; ++j)
            for (int k = 0; k < 8 && index_t(b.group.size()) < n; ++k)
                if (j < lens[k]) {
                    b.group.push_back(gid);
                    b.traj.push_back(ids[k]);
                    b.state.push_back(cr::combine_keys(gid, st(gen)));
                    b.episode.push_back(ret[k]);
                    b.returns.push_back(ret[k] * std::pow(0.95f, float(lens[k] - 1 - j)));
                }
    }
    return b;
}

template <class Policy>
void bm_gigpo(benchmark::State& state, Policy policy, int threads, index_t n) {
    const step_batch b = make_steps(n);
    std::vector<float> a(static_cast<std::size_t>(n));
    const auto recs = cr::steps(b.group, b.traj, b.state);
    const auto o = cr::gigpo_options::verl_agent();
    auto call = [&] { benchmark::DoNotOptimize(cr::gigpo(policy, recs, b.episode, b.returns, a, o)); };
    call();
    for (auto _ : state) {
        call();
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, 36 * std::int64_t(n), threads);
}

void register_gigpo() {
    const int par = pb::par_threads();
    for (index_t n : pb::size_ladder()) {
        benchmark::RegisterBenchmark(("gigpo_steps/seq/" + std::to_string(n)).c_str(), bm_gigpo<posttrain::exec::sequenced_policy>,
                                     posttrain::exec::seq, 1, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("gigpo_steps/par" + std::to_string(par) + "/" + std::to_string(n)).c_str(),
                                     bm_gigpo<posttrain::exec::parallel_policy>, posttrain::exec::par.with_threads(par), par, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        pb::memcpy_sizes().insert(36 * std::int64_t(n));
    }
}

const int registered = (register_gigpo(), 0);

}  // namespace
