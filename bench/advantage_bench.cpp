// Outcome-advantage benchmarks: GRPO and RLOO on float32 rewards over
//   uniform  uniform_groups{16}
//   ragged   CSR offsets of random group sizes in [1, 31] (mean 16), int64 offsets
//   ids      shuffled int64 ids (hash-like 64-bit values, 16 rows per id): grouping::from_ids is timed
//            together with the advantage call, since a caller holding only ids pays for both
//   ids_dense shuffled dense ids 0..G-1 grouped with grouping::from_dense_ids (timed with the call; the
//            peer passes such ids straight to index_add_, as verl's as_torch_index does for ints)
// for N = 2^14 .. 2^24, under exec::seq and exec::par. Options are posttrain's defaults (what a user
// gets without a preset: non-finite rewards are checked, float64 statistics).
//
// Byte counters count what the call reads and writes through its arguments: rewards (4N) and
// advantages (4N), plus the offsets (8(G+1)) or the ids (8N). scripts/bench divides the time of a
// memcpy of the same bytes by ours to report the fraction of copy bandwidth we reach.

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/rloo.hpp>
#include <posttrain/core/groups.hpp>

#include "common.hpp"

namespace pa = posttrain::advantage;
namespace pb = posttrain_bench;
using posttrain::index_t;

namespace {

constexpr index_t group_size = 16;

enum class layout_kind { uniform, ragged, ids, ids_dense };

const char* layout_name(layout_kind k) {
    switch (k) {
        case layout_kind::uniform: return "uniform";
        case layout_kind::ragged: return "ragged";
        case layout_kind::ids: return "ids";
        case layout_kind::ids_dense: return "ids_dense";
    }
    return "?";
}

// One call of the algorithm under test: grpo or rloo with default options.
struct grpo_op {
    static constexpr const char* name = "grpo";
    template <class P, class G>
    static void run(const P& p, const std::vector<float>& r, const G& groups, std::vector<float>& a) {
        benchmark::DoNotOptimize(pa::grpo(p, r, groups, a));
    }
};
struct rloo_op {
    static constexpr const char* name = "rloo";
    template <class P, class G>
    static void run(const P& p, const std::vector<float>& r, const G& groups, std::vector<float>& a) {
        benchmark::DoNotOptimize(pa::rloo(p, r, groups, a));
    }
};

template <class Op, class Policy>
void bm_advantage(benchmark::State& state, Policy policy, int threads, layout_kind kind, index_t n) {
    const std::vector<float> r = pb::make_rewards(n);
    std::vector<float> a(static_cast<std::size_t>(n), 0.0f);
    std::int64_t bytes = 2 * 4 * std::int64_t(n);
    switch (kind) {
        case layout_kind::uniform: {
            const posttrain::uniform_groups groups{group_size};
            Op::run(policy, r, groups, a);  // warm the output pages
            for (auto _ : state) {
                Op::run(policy, r, groups, a);
                benchmark::ClobberMemory();
            }
            break;
        }
        case layout_kind::ragged: {
            const std::vector<std::int64_t> off = pb::make_ragged_offsets(n);
            bytes += 8 * std::int64_t(off.size());
            const auto groups = posttrain::ragged(off);
            Op::run(policy, r, groups, a);
            for (auto _ : state) {
                Op::run(policy, r, groups, a);
                benchmark::ClobberMemory();
            }
            break;
        }
        case layout_kind::ids:
        case layout_kind::ids_dense: {
            const bool dense = kind == layout_kind::ids_dense;
            const std::vector<std::int64_t> ids = pb::make_shuffled_ids(n, group_size, !dense);
            const index_t groups = n / group_size;
            auto group = [&] {
                return dense ? posttrain::grouping::from_dense_ids(policy, ids, groups)
                             : posttrain::grouping::from_ids(policy, ids);
            };
            bytes += 8 * std::int64_t(n);
            Op::run(policy, r, group(), a);
            for (auto _ : state) {
                const posttrain::grouping_result g = group();
                Op::run(policy, r, g, a);
                benchmark::ClobberMemory();
            }
            break;
        }
    }
    pb::set_counters(state, n, bytes, threads);
}

// Bytes a call moves for a layout at size n (must match bm_advantage's accounting).
std::int64_t bytes_of(layout_kind kind, index_t n) {
    std::int64_t b = 2 * 4 * std::int64_t(n);
    if (kind == layout_kind::ragged) b += 8 * std::int64_t(pb::make_ragged_offsets(n).size());
    if (kind == layout_kind::ids || kind == layout_kind::ids_dense) b += 8 * std::int64_t(n);
    return b;
}

template <class Op>
void register_op() {
    const int par = pb::par_threads();
    for (layout_kind kind : {layout_kind::uniform, layout_kind::ragged, layout_kind::ids, layout_kind::ids_dense}) {
        const std::string base = std::string(Op::name) + "_" + layout_name(kind);
        for (index_t n : pb::size_ladder()) {
            const std::string seq_name = base + "/seq/" + std::to_string(n);
            benchmark::RegisterBenchmark(seq_name.c_str(), bm_advantage<Op, posttrain::exec::sequenced_policy>,
                                         posttrain::exec::seq, 1, kind, n)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            const std::string par_name = base + "/par" + std::to_string(par) + "/" + std::to_string(n);
            benchmark::RegisterBenchmark(par_name.c_str(), bm_advantage<Op, posttrain::exec::parallel_policy>,
                                         posttrain::exec::par.with_threads(par), par, kind, n)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            pb::memcpy_sizes().insert(bytes_of(kind, n));
        }
    }
}

const int registered = (register_op<grpo_op>(), register_op<rloo_op>(), 0);

}  // namespace
