// arena_study: how well each tournament topology ranks a group of rollouts, against how many judge
// comparisons it spends (the accuracy-versus-cost study of ArenaRL, group_rl.md §4.2).
//
// The judge is simulated with a known noise level:
//   - every rollout i of a group has a true quality q_i ~ N(0, 1);
//   - one judge call on (a, b) returns (q_a + e1, q_b + e2), e1 and e2 ~ N(0, sigma^2), drawn afresh
//     per side, per direction and per call;
//   - the tournament sees ArenaRL's judge exactly: ranking::bidirectional(ranking::with_fallback(j,
//     {5, 5}, 10)), so one comparison is two calls, (a, b) and (b, a), summed per side. (The simulated
//     judge never fails; the fallback is there because that is the composition ArenaRL runs.)
//
// For each group size N, noise sigma and topology, `trials` independent groups are ranked in ONE
// library call (uniform_groups{N} over trials * N rows): the library hands the judge one batch per
// round across all groups, which is how an LLM judge is meant to be driven.
//
// Metrics, per (topology, N, sigma), as mean and standard error over the trials (groups):
//   comparisons  judged matches per group (tournament_result.comparisons, counted per group); the
//                documented counts are checked for every group and the program fails loudly if one
//                differs: single elimination 2N-2, round robin N(N-1)/2, anchor N-1, double
//                elimination 2N-2, Swiss rounds * floor(N/2); and judge calls = 2 * comparisons
//   rounds       judge batches the whole call issued (the latency of a training step, in judge round trips)
//   kendall_tau  Kendall tau-a between the topology's final order (tournament_result.order, strict,
//                best first) and the true order of q
//   top1         1 if the topology's best row is the truly best row, else 0
//   pearson_rr   Pearson correlation between the topology's advantages and the advantages of a
//                SEPARATE round-robin run on the same group: same qualities q, same sigma, but the
//                judge's noise drawn afresh (an LLM judge sampled again would not repeat its noise
//                either). For round robin itself this is its test-retest reliability: the ceiling
//                the others are measured against, not 1.
//   spearman_q   Spearman correlation between the advantages and q (ties share their mean rank), the
//                measure of group_rl.md §4.2's table
//
// Usage: arena_study [--csv PATH] [--trials T] [--sizes 4,8,16] [--sigmas 0.5,1] [--seed S] [--no-demo]
//                    [--judge scores|verdict]
// --judge verdict keeps the same noisy comparison but reports only who won each direction, (1, 0) or
// (0, 1), as a preference-only judge would: the score of a side then says nothing about its quality
// beyond the result of that one match. (With the default score judge a side's score does not depend
// on its opponent, so one match against the anchor already measures a row's quality.)
// The defaults are a quick run (CI runs examples); scripts/arena-study runs the full study and draws
// docs/algorithms/figures/arena_study.png from the CSV.
//
// Everything is seeded: one std::mt19937_64 per group (trial) for the qualities and one per group and
// topology for the judge's noise; normal draws are made here (Box-Muller), not by
// std::normal_distribution, whose algorithm differs between standard libraries. The output is the
// same run to run (and across machines up to the last bits of libm's log/sin/cos).

#include <posttrain/posttrain.hpp>
#include <posttrain/ranking/tournament.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numbers>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pt = posttrain;
namespace rk = posttrain::ranking;

namespace {

// ---- random numbers -------------------------------------------------------------------------------

// Uniform double in (0, 1): the top 53 bits of one draw, shifted off zero (the log below needs u > 0).
double uniform01_open(std::mt19937_64& rng) { return (double(rng() >> 11) + 0.5) * 0x1.0p-53; }

// Standard normal draws by Box-Muller, both halves of each pair used.
class normal_source {
public:
    explicit normal_source(std::uint64_t seed) : rng_(seed) {}
    double operator()() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double r = std::sqrt(-2.0 * std::log(uniform01_open(rng_)));
        const double t = 2.0 * std::numbers::pi * uniform01_open(rng_);
        spare_ = r * std::sin(t);
        has_spare_ = true;
        return r * std::cos(t);
    }

private:
    std::mt19937_64 rng_;
    double spare_ = 0;
    bool has_spare_ = false;
};

// A seed from several integers (splitmix64 chained), so every stream of the study is distinct.
std::uint64_t mix_seed(std::initializer_list<std::uint64_t> parts) {
    std::uint64_t h = 0x243F6A8885A308D3ull;
    for (std::uint64_t p : parts) h = pt::splitmix64(h ^ p).next();
    return h;
}

// ---- the simulated judge --------------------------------------------------------------------------

// One direction of the judge: (q_a + e1, q_b + e2). Noise comes from the group's own stream, in the
// order of the batch, so a run is reproducible whatever the other groups do.
struct noisy_judge {
    const std::vector<double>* quality = nullptr;  // [rows]
    std::vector<normal_source>* noise = nullptr;   // [groups]
    double sigma = 0;
    bool verdict = false;  // --judge verdict: only who won, (1, 0) or (0, 1)
    long long calls = 0;   // one-direction calls made

    void operator()(std::span<const rk::match> batch, std::span<rk::scores> out) {
        for (std::size_t k = 0; k < batch.size(); ++k) {
            normal_source& e = (*noise)[std::size_t(batch[k].group)];
            const double a = (*quality)[std::size_t(batch[k].first)] + sigma * e();
            const double b = (*quality)[std::size_t(batch[k].second)] + sigma * e();
            out[k] = verdict ? rk::scores{a > b ? 1.0 : 0.0, a > b ? 0.0 : 1.0} : rk::scores{a, b};
        }
        calls += static_cast<long long>(batch.size());
    }
};

// ---- metrics --------------------------------------------------------------------------------------

double pearson(const double* x, const double* y, int n) {
    double mx = 0, my = 0;
    for (int i = 0; i < n; ++i) mx += x[i], my += y[i];
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; ++i) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    if (sxx <= 0 || syy <= 0) return std::nan("");  // a constant side: undefined, left out of the mean
    return sxy / std::sqrt(sxx * syy);
}

// Ranks 1..n with ties sharing their mean rank.
std::vector<double> mean_ranks(const double* x, int n) {
    std::vector<int> idx(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) idx[std::size_t(i)] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return x[a] < x[b]; });
    std::vector<double> r(static_cast<std::size_t>(n));
    for (int k = 0; k < n;) {
        int e = k;
        while (e < n && x[idx[std::size_t(e)]] == x[idx[std::size_t(k)]]) ++e;
        for (int j = k; j < e; ++j) r[std::size_t(idx[std::size_t(j)])] = 0.5 * (k + e - 1) + 1.0;
        k = e;
    }
    return r;
}

double spearman(const double* x, const double* y, int n) {
    const auto rx = mean_ranks(x, n), ry = mean_ranks(y, n);
    return pearson(rx.data(), ry.data(), n);
}

// Kendall tau-a between a strict order (rows best first) and the qualities (no ties: continuous).
double kendall_tau(std::span<const pt::index_t> order, const double* q) {
    const std::size_t n = order.size();
    long long c = 0, d = 0;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j) (q[order[i]] > q[order[j]] ? c : d) += 1;
    return double(c - d) / double(n * (n - 1) / 2);
}

// Mean and standard error of the finite values pushed.
struct running {
    double sum = 0, sum2 = 0;
    long long n = 0;
    void add(double v) {
        if (!std::isfinite(v)) return;
        sum += v;
        sum2 += v * v;
        ++n;
    }
    double mean() const { return n ? sum / double(n) : std::nan(""); }
    double se() const {
        if (n < 2) return std::nan("");
        const double m = mean(), var = (sum2 - double(n) * m * m) / double(n - 1);
        return std::sqrt(std::max(var, 0.0) / double(n));
    }
};

// ---- the topologies -------------------------------------------------------------------------------

struct entry {
    const char* name;
    rk::topology options;
    // Documented comparisons per group of n rows (-1: not fixed).
    long long (*expected)(long long n);
    // Which judge-noise stream the topology draws from. The two single-elimination variants share
    // one, so at a power of two (no missing slots, the same bracket) they must agree exactly.
    std::uint64_t stream;
};

long long ceil_log2(long long n) {
    long long r = 0;
    while ((1LL << r) < n) ++r;
    return r;
}

std::vector<entry> topologies(std::uint64_t seed) {
    rk::single_elimination_options textbook = rk::single_elimination_options::arenarl();
    textbook.byes = rk::bye_mode::standard;
    rk::swiss_options swiss;
    swiss.seed = seed;
    return {
        {"single_elimination", rk::single_elimination_options::arenarl(), [](long long n) { return 2 * n - 2; }, 0},
        {"single_elimination_standard_byes", textbook, [](long long n) { return 2 * n - 2; }, 0},
        {"round_robin", rk::round_robin_options::arenarl(), [](long long n) { return n * (n - 1) / 2; }, 2},
        {"anchor", rk::anchor_options::arenarl(), [](long long n) { return n - 1; }, 3},
        {"swiss", swiss, [](long long n) { return std::min(ceil_log2(n), n - 1) * (n / 2); }, 4},
        {"swiss_qqr_reference", rk::swiss_options::arenarl_reference(seed),
         [](long long n) { return std::min(ceil_log2(n), n - 1) * (n / 2); }, 5},
        {"double_elimination", rk::double_elimination_options::arenarl(seed), [](long long n) { return 2 * n - 2; }, 6},
    };
}

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "arena_study: CHECK FAILED: %s\n", what.c_str());
    std::exit(2);
}

// One tournament call over every trial of a cell: `trials` groups of n rows. Returns the advantages
// (row order) and the result; checks the comparison counts of every group.
struct run_output {
    rk::tournament_result result;
    std::vector<double> advantages;
};

run_output run_cell(const entry& t, const std::vector<double>& quality, int n, int trials, double sigma,
                    bool verdict, std::uint64_t stream) {
    std::vector<normal_source> noise;
    noise.reserve(std::size_t(trials));
    for (int g = 0; g < trials; ++g) noise.emplace_back(mix_seed({stream, std::uint64_t(g)}));
    auto judge = rk::bidirectional(rk::with_fallback(noisy_judge{&quality, &noise, sigma, verdict}, {5, 5}, 10));

    run_output out;
    out.advantages.assign(quality.size(), 0.0);
    out.result = rk::tournament(pt::exec::seq, pt::uniform_groups{n}, judge, pt::none, out.advantages, t.options);

    // Counts: every group exactly as documented, every record inside its own group, two calls each.
    std::vector<long long> per_group(std::size_t(trials), 0);
    for (const rk::comparison& c : out.result.comparisons) {
        if (c.group < 0 || c.group >= trials || c.first / n != c.group || c.second / n != c.group || c.first == c.second)
            fail(std::string(t.name) + ": a comparison record is not inside its group");
        ++per_group[std::size_t(c.group)];
    }
    const long long want = t.expected(n);
    for (int g = 0; g < trials; ++g)
        if (want >= 0 && per_group[std::size_t(g)] != want)
            fail(std::string(t.name) + " made " + std::to_string(per_group[std::size_t(g)]) + " comparisons in group " +
                 std::to_string(g) + " of N = " + std::to_string(n) + "; documented: " + std::to_string(want));
    const long long calls = judge.inner().inner().calls;
    if (calls != 2 * static_cast<long long>(out.result.comparisons.size()))
        fail(std::string(t.name) + ": " + std::to_string(calls) + " one-direction judge calls for " +
             std::to_string(out.result.comparisons.size()) + " bidirectional comparisons");
    if (judge.inner().failures() != 0) fail("the simulated judge never fails, yet with_fallback counted failures");
    if (out.result.order.size() != quality.size()) fail(std::string(t.name) + ": order has the wrong length");
    return out;
}

// ---- the study ------------------------------------------------------------------------------------

struct config {
    std::vector<int> sizes{4, 8, 16};
    std::vector<double> sigmas{0.5, 1.0};
    int trials = 100;
    std::uint64_t seed = 2026;
    std::string csv = "arena_study.csv";
    bool demo = true;
    bool verdict = false;
};

struct row {
    std::string topology;
    int n = 0;
    double sigma = 0;
    int trials = 0;
    double comparisons = 0, judge_calls = 0;
    long long rounds = 0;
    running tau, top1, pearson_rr, spearman_q;
};

std::vector<row> study(const config& c) {
    std::vector<row> rows;
    const std::vector<entry> tops = topologies(c.seed);
    for (int n : c.sizes) {
        // Qualities of trial g: its own stream, shared by every sigma and topology of this N.
        std::vector<double> quality(std::size_t(n) * std::size_t(c.trials));
        for (int g = 0; g < c.trials; ++g) {
            normal_source z(mix_seed({c.seed, 1, std::uint64_t(n), std::uint64_t(g)}));
            for (int i = 0; i < n; ++i) quality[std::size_t(g) * std::size_t(n) + std::size_t(i)] = z();
        }
        for (std::size_t s = 0; s < c.sigmas.size(); ++s) {
            const double sigma = c.sigmas[s];
            // The round-robin reference: its own noise stream (topology id 99).
            const entry rr_ref{"round_robin_reference", rk::round_robin_options::arenarl(),
                               [](long long m) { return m * (m - 1) / 2; }, 99};
            const run_output ref =
                run_cell(rr_ref, quality, n, c.trials, sigma, c.verdict, mix_seed({c.seed, 2, std::uint64_t(n), s, rr_ref.stream}));
            std::vector<pt::index_t> se_order;  // single_elimination's, for the bye-mode check
            for (std::size_t t = 0; t < tops.size(); ++t) {
                const run_output o =
                    run_cell(tops[t], quality, n, c.trials, sigma, c.verdict, mix_seed({c.seed, 2, std::uint64_t(n), s, tops[t].stream}));
                if (t == 0) se_order = o.result.order;
                if (t == 1 && (n & (n - 1)) == 0 && o.result.order != se_order)
                    fail("at N = " + std::to_string(n) + " (a power of two) the two bye modes ranked differently "
                         "on the same judge noise");
                row r;
                r.topology = tops[t].name;
                r.n = n;
                r.sigma = sigma;
                r.trials = c.trials;
                r.comparisons = double(o.result.comparisons.size()) / c.trials;
                r.judge_calls = 2 * r.comparisons;
                r.rounds = o.result.rounds;
                for (int g = 0; g < c.trials; ++g) {
                    const std::size_t lo = std::size_t(g) * std::size_t(n);
                    const double* q = quality.data() + lo;
                    const std::span<const pt::index_t> order(o.result.order.data() + o.result.order_offsets[std::size_t(g)],
                                                             std::size_t(n));
                    r.tau.add(kendall_tau(order, quality.data()));
                    const auto best = std::max_element(q, q + n) - quality.data();
                    r.top1.add(order[0] == best ? 1.0 : 0.0);
                    r.pearson_rr.add(pearson(o.advantages.data() + lo, ref.advantages.data() + lo, n));
                    r.spearman_q.add(spearman(o.advantages.data() + lo, q, n));
                }
                rows.push_back(std::move(r));
            }
        }
    }
    return rows;
}

void write_csv(const std::vector<row>& rows, const std::string& path) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write " + path);
    f << "topology,N,sigma,trials,comparisons,judge_calls,rounds,kendall_tau,kendall_tau_se,top1,top1_se,"
         "pearson_rr,pearson_rr_se,spearman_q,spearman_q_se\n";
    char buf[512];
    for (const row& r : rows) {
        std::snprintf(buf, sizeof buf, "%s,%d,%g,%d,%g,%g,%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n",
                      r.topology.c_str(), r.n, r.sigma, r.trials, r.comparisons, r.judge_calls, r.rounds, r.tau.mean(),
                      r.tau.se(), r.top1.mean(), r.top1.se(), r.pearson_rr.mean(), r.pearson_rr.se(), r.spearman_q.mean(),
                      r.spearman_q.se());
        f << buf;
    }
}

void print_table(const std::vector<row>& rows) {
    std::printf("%-34s %3s %5s %6s %6s %15s %6s %15s %7s\n", "topology", "N", "sigma", "cmp", "rounds",
                "kendall_tau", "top1", "pearson_rr", "spear_q");
    double last_sigma = -1;
    int last_n = -1;
    for (const row& r : rows) {
        if (r.n != last_n || r.sigma != last_sigma) std::printf("\n");
        last_n = r.n;
        last_sigma = r.sigma;
        std::printf("%-34s %3d %5.2f %6.0f %6lld %7.3f +-%5.3f %6.3f %7.3f +-%5.3f %7.3f\n", r.topology.c_str(), r.n,
                    r.sigma, r.comparisons, r.rounds, r.tau.mean(), r.tau.se(), r.top1.mean(), r.pearson_rr.mean(),
                    r.pearson_rr.se(), r.spearman_q.mean());
    }
}

// ---- a small worked example (docs/algorithms/tournaments.md shows it) ----------------------------

void print_rows(const char* label, const std::vector<double>& v) {
    std::printf("  %-12s", label);
    for (double x : v) std::printf(" %+.3f", x);
    std::printf("\n");
}

void demo() {
    std::printf("== worked example: two prompts, 6 rollouts each, a judge that scores quality * 10 ==\n");
    // [demo-begin]
    // Two prompts, six rollouts each (rows 0-5 and 6-11); the judge sees one batch per round.
    const std::vector<double> quality = {0.1, 0.9, 0.4, 0.7, 0.2, 0.5,   0.3, 0.3, 0.8, 0.1, 0.6, 0.3};
    auto llm = [&](pt::index_t a, pt::index_t b) {  // one direction: a is shown first
        return std::pair{10 * quality[std::size_t(a)], 10 * quality[std::size_t(b)]};
    };
    auto judge = rk::bidirectional(rk::with_fallback(llm, {5, 5}, 10));  // ArenaRL's judge

    std::vector<double> rewards(12), adv(12);
    const rk::tournament_result res =
        rk::single_elimination(pt::exec::seq, pt::uniform_groups{6}, judge, rewards, adv);
    // res.comparisons.size() == 2 * (2 * 6 - 2): 10 per group
    // res.rounds == 4: the anchor round and three bracket rounds, each one batch for both groups
    // res.order: each group's rows best first
    // [demo-end]
    std::printf("  comparisons %zu, rounds %lld, byes %zu\n", res.comparisons.size(), (long long)res.rounds,
                res.byes.size());
    std::printf("  order       ");
    for (pt::index_t r : res.order) std::printf(" %lld", (long long)r);
    std::printf("\n");
    print_rows("rewards", rewards);
    print_rows("advantages", adv);

    // Every topology on the same groups, through the run-time variant.
    const std::vector<std::pair<const char*, rk::topology>> all = {
        {"round_robin", rk::round_robin_options{}},
        {"anchor", rk::anchor_options{}},
        {"swiss", rk::swiss_options{}},
        {"double_elim", rk::double_elimination_options{}},
    };
    for (const auto& [name, t] : all) {
        const rk::tournament_result r = rk::tournament(pt::exec::seq, pt::uniform_groups{6}, judge, rewards, adv, t);
        std::printf("  %-12s comparisons %2zu, rounds %lld, order", name, r.comparisons.size(), (long long)r.rounds);
        for (pt::index_t x : r.order) std::printf(" %lld", (long long)x);
        std::printf("\n");
    }

    // A judge that always ties: brackets still give a strict order (ties go to the first-listed row),
    // round robin gives every row the same rank, so all-zero advantages.
    auto tie = [](pt::index_t, pt::index_t) { return std::pair{5.0, 5.0}; };
    std::vector<double> a4(4);
    (void)rk::single_elimination(pt::exec::seq, pt::uniform_groups{4}, rk::bidirectional(tie), pt::none, a4);
    print_rows("ties: SE", a4);
    (void)rk::round_robin(pt::exec::seq, pt::uniform_groups{4}, rk::bidirectional(tie), pt::none, a4);
    print_rows("ties: RR", a4);
    std::printf("\n");
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
    std::vector<T> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) continue;
        if constexpr (std::is_integral_v<T>) out.push_back(T(std::stoll(item)));
        else out.push_back(T(std::stod(item)));
    }
    if (out.empty()) throw std::invalid_argument("empty list: " + s);
    return out;
}

config parse(int argc, char** argv) {
    config c;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        if (a == "--csv") c.csv = value();
        else if (a == "--trials") c.trials = std::stoi(value());
        else if (a == "--sizes") c.sizes = parse_list<int>(value());
        else if (a == "--sigmas") c.sigmas = parse_list<double>(value());
        else if (a == "--seed") c.seed = std::stoull(value());
        else if (a == "--no-demo") c.demo = false;
        else if (a == "--judge") {
            const std::string j = value();
            if (j != "scores" && j != "verdict") throw std::invalid_argument("--judge: scores or verdict, found " + j);
            c.verdict = j == "verdict";
        }
        else if (a == "--help" || a == "-h") {
            std::printf("usage: arena_study [--csv PATH] [--trials T] [--sizes 4,8,16] [--sigmas 0.5,1] [--seed S] "
                        "[--no-demo]\n");
            std::exit(0);
        } else throw std::invalid_argument("unknown argument " + a);
    }
    if (c.trials < 2) throw std::invalid_argument("--trials must be >= 2");
    for (int n : c.sizes)
        if (n < 2) throw std::invalid_argument("--sizes: every N must be >= 2");
    for (double s : c.sigmas)
        if (!(s >= 0)) throw std::invalid_argument("--sigmas: every sigma must be >= 0");
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const config c = parse(argc, argv);
        if (c.demo) demo();
        std::printf("== accuracy vs cost: %d trials per cell, simulated judge q + N(0, sigma^2) per side per "
                    "direction%s, bidirectional ==\n",
                    c.trials, c.verdict ? " (verdict only: 1 to the higher side)" : "");
        const std::vector<row> rows = study(c);
        print_table(rows);
        write_csv(rows, c.csv);
        std::printf("\nCSV: %s\n", c.csv.c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "arena_study: %s\n", e.what());
        return 1;
    }
    return 0;
}
