// Ranking benchmarks:
//   bradley_terry    G groups of 16 rows, each a full round robin (120 records per group) drawn from
//                    known strengths (theta ~ N(0, 1), P(i beats j) = sigmoid(theta_i - theta_j)), fitted
//                    with the default options (prior_games 1, tolerance 1e-10); N = 16 G rows,
//                    G = 2^8 .. 2^14 (N = 2^12 .. 2^18). Output: double log-strengths.
//   rank_advantages  float32 continuous scores in uniform_groups{16}, min-rank rewards then the group
//                    z-score (the defaults), N = 2^16 .. 2^22.
// under exec::seq and exec::par. Byte counters: bradley_terry reads the records (sizeof(comparison)
// each) and writes 8N; rank_advantages reads 4N and writes 4N.

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/ranking/rank_rewards.hpp>
#include <posttrain/ranking/ratings.hpp>

#include "common.hpp"

namespace pb = posttrain_bench;
namespace rk = posttrain::ranking;
using posttrain::index_t;

namespace {

constexpr index_t group_size = 16;

// Round-robin records of n / 16 groups, outcomes drawn from known strengths.
std::vector<rk::comparison> round_robin_records(index_t n, std::uint64_t seed = 5) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<double> theta(static_cast<std::size_t>(n));
    for (auto& t : theta) t = normal(gen);
    std::vector<rk::comparison> out;
    out.reserve(static_cast<std::size_t>(n / group_size * group_size * (group_size - 1) / 2));
    for (index_t g = 0; g < n / group_size; ++g)
        for (index_t i = 0; i < group_size; ++i)
            for (index_t j = i + 1; j < group_size; ++j) {
                const index_t a = g * group_size + i, b = g * group_size + j;
                const bool a_wins = u(gen) < 1.0 / (1.0 + std::exp(theta[std::size_t(b)] - theta[std::size_t(a)]));
                out.push_back({g, a, b, a_wins ? 1.0 : 0.0, a_wins ? 0.0 : 1.0, 0});
            }
    return out;
}

std::int64_t bt_bytes(index_t n) {
    return std::int64_t(n / group_size * group_size * (group_size - 1) / 2) * std::int64_t(sizeof(rk::comparison)) + 8 * n;
}

template <class Policy>
void bm_bradley_terry(benchmark::State& state, Policy policy, int threads, index_t n) {
    const std::vector<rk::comparison> records = round_robin_records(n);
    std::vector<double> theta(static_cast<std::size_t>(n));
    const posttrain::uniform_groups groups{group_size};
    rk::rating_result r = rk::bradley_terry(policy, records, groups, theta);
    for (auto _ : state) {
        r = rk::bradley_terry(policy, records, groups, theta);
        benchmark::DoNotOptimize(r);
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, bt_bytes(n), threads);
    state.counters["iterations"] = static_cast<double>(r.iterations);
}

template <class Policy>
void bm_rank_advantages(benchmark::State& state, Policy policy, int threads, index_t n) {
    const std::vector<float> scores = pb::make_rewards(n);
    std::vector<float> adv(static_cast<std::size_t>(n));
    const posttrain::uniform_groups groups{group_size};
    benchmark::DoNotOptimize(rk::rank_advantages(policy, scores, groups, adv));
    for (auto _ : state) {
        benchmark::DoNotOptimize(rk::rank_advantages(policy, scores, groups, adv));
        benchmark::ClobberMemory();
    }
    pb::set_counters(state, n, 8 * std::int64_t(n), threads);
}

template <class SeqBm, class ParBm>
void register_sizes(const std::string& base, SeqBm seq_bm, ParBm par_bm, int lo, int hi, std::int64_t (*bytes)(index_t)) {
    const int par = pb::par_threads();
    for (int e = lo; e <= hi; e += 2) {
        const index_t n = index_t{1} << e;
        benchmark::RegisterBenchmark((base + "/seq/" + std::to_string(n)).c_str(), seq_bm, posttrain::exec::seq, 1, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark((base + "/par" + std::to_string(par) + "/" + std::to_string(n)).c_str(), par_bm,
                                     posttrain::exec::par.with_threads(par), par, n)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        pb::memcpy_sizes().insert(bytes(n));
    }
}

std::int64_t rank_bytes(index_t n) { return 8 * std::int64_t(n); }

int register_all() {
    register_sizes("bradley_terry", bm_bradley_terry<posttrain::exec::sequenced_policy>,
                   bm_bradley_terry<posttrain::exec::parallel_policy>, 12, 18, bt_bytes);
    register_sizes("rank_advantages", bm_rank_advantages<posttrain::exec::sequenced_policy>,
                   bm_rank_advantages<posttrain::exec::parallel_policy>, 16, 22, rank_bytes);
    return 0;
}

const int registered = register_all();

}  // namespace
