#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/token_baseline.hpp>
#include <posttrain/core/groups.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using posttrain::index_t;
using pt::test::matrix;

namespace {

// One OTB problem: [N, T] token tensors and a string uid per row.
struct otb_problem {
    index_t N = 0, T = 0;
    std::vector<double> r, m, lp, sp, is;
    std::vector<std::string> ids;
};

// Rows in random group order with ragged group sizes (singletons included), right padding of random
// length (some rows fully masked) and, when asked, interior mask zeros (tool observations).
otb_problem random_problem(index_t N, index_t T, std::uint64_t seed, bool interior_zeros, index_t max_group = 5) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    otb_problem p;
    p.N = N;
    p.T = T;
    const std::size_t nt = std::size_t(N * T);
    p.r.resize(nt);
    p.m.resize(nt);
    p.lp.resize(nt);
    p.sp.resize(nt);
    p.is.resize(nt);
    std::uniform_int_distribution<index_t> group_size(1, max_group), length(0, T);
    index_t g = 0;
    while (index_t(p.ids.size()) < N) {
        const index_t k = group_size(rng);
        for (index_t j = 0; j < k && index_t(p.ids.size()) < N; ++j) p.ids.push_back("uid-" + std::to_string(g));
        ++g;
    }
    std::shuffle(p.ids.begin(), p.ids.end(), rng);
    for (index_t i = 0; i < N; ++i) {
        const index_t len = i % 11 == 3 ? 0 : length(rng);
        for (index_t t = 0; t < T; ++t) {
            const std::size_t k = std::size_t(i * T + t);
            bool valid = t < len;
            if (interior_zeros && valid && t > 0 && unit(rng) < 0.25) valid = false;
            p.m[k] = valid ? 1.0 : 0.0;
            p.r[k] = valid ? 0.1 * normal(rng) + (t + 1 == len ? normal(rng) : 0.0) : 0.0;
            p.lp[k] = -3.0 * unit(rng);
            p.sp[k] = 0.1 + 0.9 * unit(rng);
            p.is[k] = 0.5 + unit(rng);
        }
    }
    return p;
}

// verl b178a3c, written out naively in double: compute_optimal_token_baseline_advantage
// (multi_turn = false) and compute_multi_turn_optimal_token_baseline_advantage (multi_turn = true).
void reference(const otb_problem& p, bool multi_turn, bool use_is, bool zero_tail, double eps, std::vector<double>& A,
               std::vector<double>& G) {
    const index_t N = p.N, T = p.T;
    auto at = [&](index_t i, index_t t) { return std::size_t(i * T + t); };
    G.assign(std::size_t(N * T), 0.0);
    std::vector<double> W(std::size_t(N * T), 0.0);
    std::vector<index_t> len(std::size_t(N), 0);
    for (index_t i = 0; i < N; ++i) {
        double run = 0;
        for (index_t t = T - 1; t >= 0; --t) G[at(i, t)] = run += p.r[at(i, t)] * p.m[at(i, t)];
        double cum = 0;
        for (index_t t = 0; t < T; ++t) {
            double w = 1 - 2 * std::exp(p.lp[at(i, t)]) + p.sp[at(i, t)];
            if (use_is) w *= p.is[at(i, t)] * p.is[at(i, t)];
            W[at(i, t)] = cum += w * p.m[at(i, t)];
            len[std::size_t(i)] += p.m[at(i, t)] != 0;
        }
    }
    // Row values at slot k: column k, or the k-th valid token (multi-turn), zero past the length.
    std::vector<double> g(std::size_t(N * T), 0.0), w(std::size_t(N * T), 0.0), mk(std::size_t(N * T), 0.0);
    std::vector<index_t> col(std::size_t(N * T), 0);
    for (index_t i = 0; i < N; ++i) {
        index_t k = 0;
        for (index_t t = 0; t < T; ++t) {
            if (!multi_turn) {
                g[at(i, t)] = G[at(i, t)], w[at(i, t)] = W[at(i, t)], mk[at(i, t)] = p.m[at(i, t)], col[at(i, t)] = t;
            } else if (p.m[at(i, t)] != 0) {
                g[at(i, k)] = G[at(i, t)], w[at(i, k)] = W[at(i, t)], mk[at(i, k)] = 1.0, col[at(i, k)] = t;
                ++k;
            }
        }
    }
    std::map<std::string, std::vector<index_t>> groups;
    for (index_t i = 0; i < N; ++i)
        if (!multi_turn || len[std::size_t(i)] > 0) groups[p.ids[std::size_t(i)]].push_back(i);
    std::vector<double> B(std::size_t(N * T), 0.0);
    for (const auto& [id, rows] : groups) {
        if (rows.size() == 1) continue;
        for (index_t k = 0; k < T; ++k) {
            double num = 0, den = 0;
            for (index_t i : rows) {
                num += g[at(i, k)] * w[at(i, k)] * mk[at(i, k)];
                den += w[at(i, k)] * mk[at(i, k)];
            }
            for (index_t i : rows) B[at(i, k)] = num / (den + eps);
        }
        if (zero_tail) {
            std::vector<index_t> l;
            for (index_t i : rows) l.push_back(len[std::size_t(i)]);
            std::sort(l.begin(), l.end());
            const index_t mx = l.back(), second = l[l.size() - 2];
            index_t count = 0, longest = -1;
            for (index_t i : rows)
                if (len[std::size_t(i)] == mx) ++count, longest = i;
            if (count == 1 && mx > second)
                for (index_t k = second; k < T; ++k) B[at(longest, k)] = 0.0;
        }
    }
    A.assign(std::size_t(N * T), 0.0);
    for (index_t i = 0; i < N; ++i) {
        const index_t slots = multi_turn ? len[std::size_t(i)] : T;
        for (index_t k = 0; k < slots; ++k) {
            const index_t t = col[at(i, k)];
            A[at(i, t)] = (g[at(i, k)] - B[at(i, k)]) * p.m[at(i, t)];
        }
    }
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
    REQUIRE(got.size() == want.size());
    for (std::size_t k = 0; k < got.size(); ++k) {
        INFO("index " << k);
        CHECK(std::abs(got[k] - want[k]) <= tol * (1 + std::abs(want[k])));
    }
}

template <class Policy, class Groups>
adv::token_baseline_result run(const Policy& pol, const otb_problem& p, bool multi_turn, bool use_is, const Groups& groups,
                               std::vector<double>& a, std::vector<double>& ret, const adv::token_baseline_options& o) {
    a.assign(std::size_t(p.N * p.T), -7.0);
    ret.assign(a.size(), -7.0);
    const index_t N = p.N, T = p.T;
    auto call = [&](const auto& is) {
        if (multi_turn)
            return adv::multi_turn_optimal_token_baseline(pol, matrix(p.r, N, T), matrix(p.m, N, T), matrix(p.lp, N, T),
                                                          matrix(p.sp, N, T), is, groups, matrix(a, N, T), matrix(ret, N, T), o);
        return adv::optimal_token_baseline(pol, matrix(p.r, N, T), matrix(p.m, N, T), matrix(p.lp, N, T), matrix(p.sp, N, T), is,
                                           groups, matrix(a, N, T), matrix(ret, N, T), o);
    };
    return use_is ? call(matrix(p.is, N, T)) : call(pt::none);
}

bool throws_naming(const std::function<void()>& f, const std::string& argument) {
    try {
        f();
    } catch (const pt::invalid_argument& e) {
        return e.argument() == argument && std::string(e.what()).find("'" + argument + "'") != std::string::npos;
    }
    return false;
}

}  // namespace

TEST_CASE("optimal token baseline: a group of two by hand") {
    // Row 0: rewards [0, 1], row 1: rewards [0, 3, 0] truncated to T = 2 -> [0, 3]; pi = 1/2 everywhere
    // and sum pi^2 = 1/2, so w = 1 - 1 + 1/2 = 1/2 and W = [1/2, 1].
    const double lp = std::log(0.5);
    std::vector<double> r{0, 1, 0, 3}, m{1, 1, 1, 1}, olp{lp, lp, lp, lp}, sp{0.5, 0.5, 0.5, 0.5}, a(4), ret(4);
    adv::token_baseline_options o;
    o.epsilon = 0;
    const auto res = adv::optimal_token_baseline(pt::exec::seq, matrix(r, 2, 2), matrix(m, 2, 2), matrix(olp, 2, 2),
                                                 matrix(sp, 2, 2), pt::none, pt::uniform_groups{2}, matrix(a, 2, 2),
                                                 matrix(ret, 2, 2), o);
    CHECK(res.groups == 1);
    CHECK(res.singleton_groups == 0);
    CHECK(ret == std::vector<double>{1, 1, 3, 3});
    // Equal W across rows: the baseline is the plain mean of the returns, 2 at both positions.
    const double want[4] = {-1, -1, 1, 1};
    for (int k = 0; k < 4; ++k) CHECK(a[std::size_t(k)] == doctest::Approx(want[k]).epsilon(1e-15));
}

TEST_CASE_TEMPLATE("optimal token baseline: matches the naive verl reference (ragged, singleton, interior zeros, IS, tail)", B,
                   POSTTRAIN_HOST_BACKENDS) {
    for (bool multi_turn : {false, true})
        for (bool interior : {false, true})
            for (bool use_is : {false, true})
                for (bool tail : {false, true}) {
                    CAPTURE(multi_turn);
                    CAPTURE(interior);
                    CAPTURE(use_is);
                    CAPTURE(tail);
                    const auto p = random_problem(57, 13, 100 + 8 * multi_turn + 4 * interior + 2 * use_is + tail, interior);
                    adv::token_baseline_options o;
                    o.handle_zero_tail = tail;
                    std::vector<double> a, ret, ra, rret;
                    const auto groups = pt::grouping::from_string_ids(B::policy(), p.ids);
                    const auto res = run(B::policy(), p, multi_turn, use_is, groups, a, ret, o);
                    reference(p, multi_turn, use_is, tail, o.epsilon, ra, rret);
                    check_close(a, ra);
                    check_close(ret, rret, 0);
                    CHECK(res.groups == groups.num_groups());
                    CHECK(res.singleton_groups > 0);
                    if (tail) CHECK(res.zero_tail_groups > 0);
                    else CHECK(res.zero_tail_groups == 0);
                }
}

TEST_CASE_TEMPLATE("optimal token baseline: exec::par is bitwise equal to exec::seq", B, POSTTRAIN_HOST_BACKENDS) {
    for (bool multi_turn : {false, true}) {
        const auto p = random_problem(3000, 48, 7 + multi_turn, true, 16);
        const auto groups = pt::grouping::from_string_ids(pt::exec::seq, p.ids);
        std::vector<double> a, ret, a_seq, ret_seq;
        (void)run(B::policy(), p, multi_turn, true, groups, a, ret, {});
        (void)run(pt::exec::seq, p, multi_turn, true, groups, a_seq, ret_seq, {});
        CHECK(pt::test::bitwise_equal(a, a_seq));
        CHECK(pt::test::bitwise_equal(ret, ret_seq));
        // Run to run as well.
        (void)run(B::policy(), p, multi_turn, true, groups, a_seq, ret_seq, {});
        CHECK(pt::test::bitwise_equal(a, a_seq));
    }
}

TEST_CASE("optimal token baseline: uniform, ragged and id layouts over the same groups agree bit for bit") {
    auto p = random_problem(40, 9, 31, true);
    for (index_t i = 0; i < p.N; ++i) p.ids[std::size_t(i)] = "g" + std::to_string(i / 4);
    std::vector<std::int64_t> offsets;
    for (index_t g = 0; g <= 10; ++g) offsets.push_back(4 * g);
    for (bool multi_turn : {false, true}) {
        std::vector<double> a1, r1, a2, r2, a3, r3;
        (void)run(pt::exec::seq, p, multi_turn, true, pt::uniform_groups{4}, a1, r1, {});
        (void)run(pt::exec::seq, p, multi_turn, true, pt::ragged(offsets), a2, r2, {});
        (void)run(pt::exec::seq, p, multi_turn, true, pt::grouping::from_string_ids(pt::exec::seq, p.ids), a3, r3, {});
        CHECK(pt::test::bitwise_equal(a1, a2));
        CHECK(pt::test::bitwise_equal(a1, a3));
        CHECK(pt::test::bitwise_equal(r1, r3));
    }
}

TEST_CASE("optimal token baseline: singletons keep the reward-to-go") {
    const auto p = random_problem(6, 7, 5, true);
    for (bool multi_turn : {false, true}) {
        std::vector<double> a, ret;
        const auto res = run(pt::exec::seq, p, multi_turn, true, pt::uniform_groups{1}, a, ret, {});
        CHECK(res.singleton_groups + res.empty_groups == 6);
        for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == ret[k] * p.m[k]);
    }
}

TEST_CASE("optimal token baseline: the tail of the unique longest row") {
    // Group of three: lengths 2, 4, 6 (the longest is unique, the second-longest is 4).
    const index_t T = 6;
    std::vector<double> r(3 * T, 0.0), m(3 * T, 0.0), lp(3 * T, -1.0), sp(3 * T, 0.4);
    const index_t lens[3] = {2, 4, 6};
    for (index_t i = 0; i < 3; ++i)
        for (index_t t = 0; t < lens[i]; ++t) {
            m[std::size_t(i * T + t)] = 1;
            r[std::size_t(i * T + t)] = t + 1 == lens[i] ? double(i + 1) : 0.1;
        }
    std::vector<double> a(3 * T), ret(3 * T);
    auto call = [&](bool tail, bool multi_turn) {
        adv::token_baseline_options o;
        o.handle_zero_tail = tail;
        if (multi_turn)
            return adv::multi_turn_optimal_token_baseline(pt::exec::seq, matrix(r, 3, T), matrix(m, 3, T), matrix(lp, 3, T),
                                                          matrix(sp, 3, T), pt::none, pt::uniform_groups{3}, matrix(a, 3, T),
                                                          matrix(ret, 3, T), o);
        return adv::optimal_token_baseline(pt::exec::seq, matrix(r, 3, T), matrix(m, 3, T), matrix(lp, 3, T), matrix(sp, 3, T),
                                           pt::none, pt::uniform_groups{3}, matrix(a, 3, T), matrix(ret, 3, T), o);
    };
    for (bool multi_turn : {false, true}) {
        // Off: on positions 4 and 5 only the longest row is valid, its baseline is (almost) its own
        // return and its advantage (almost) 0.
        auto res = call(false, multi_turn);
        CHECK(res.zero_tail_groups == 0);
        CHECK(std::abs(a[2 * T + 4]) < 1e-6);
        CHECK(std::abs(a[2 * T + 5]) < 1e-6);
        // On: baseline 0 there, the advantage is the return; earlier positions are unchanged.
        const std::vector<double> before = a;
        res = call(true, multi_turn);
        CHECK(res.zero_tail_groups == 1);
        CHECK(a[2 * T + 4] == ret[2 * T + 4]);
        CHECK(a[2 * T + 5] == ret[2 * T + 5]);
        for (index_t t = 0; t < 4; ++t) CHECK(a[std::size_t(2 * T + t)] == before[std::size_t(2 * T + t)]);
        for (index_t k = 0; k < 2 * T; ++k) CHECK(a[std::size_t(k)] == before[std::size_t(k)]);
    }
    // Two rows tie for the longest: nothing is zeroed.
    for (index_t t = 4; t < T; ++t) m[std::size_t(T + t)] = 1;
    CHECK(call(true, false).zero_tail_groups == 0);
}

TEST_CASE("optimal token baseline: fully masked rows count in the column form, leave the group in the multi-turn form") {
    // Row 1 is fully masked: column form, group of 2 (row 0's baseline is ~its own return); multi-turn,
    // row 0 is a singleton (baseline 0).
    std::vector<double> r{0.5, 1.0, 0, 0}, m{1, 1, 0, 0}, lp(4, -0.7), sp(4, 0.3), a(4), ret(4);
    adv::token_baseline_options o;
    o.handle_zero_tail = false;
    auto res = adv::optimal_token_baseline(pt::exec::seq, matrix(r, 2, 2), matrix(m, 2, 2), matrix(lp, 2, 2), matrix(sp, 2, 2),
                                           pt::none, pt::uniform_groups{2}, matrix(a, 2, 2), matrix(ret, 2, 2), o);
    CHECK(res.singleton_groups == 0);
    CHECK(std::abs(a[0]) < 1e-6);
    res = adv::multi_turn_optimal_token_baseline(pt::exec::seq, matrix(r, 2, 2), matrix(m, 2, 2), matrix(lp, 2, 2),
                                                 matrix(sp, 2, 2), pt::none, pt::uniform_groups{2}, matrix(a, 2, 2),
                                                 matrix(ret, 2, 2), o);
    CHECK(res.singleton_groups == 1);
    CHECK(a == std::vector<double>{1.5, 1.0, 0, 0});
    // No valid row at all: an empty group in the multi-turn form, zeros written.
    std::vector<double> z(4, 0.0);
    res = adv::multi_turn_optimal_token_baseline(pt::exec::seq, matrix(r, 2, 2), matrix(z, 2, 2), matrix(lp, 2, 2),
                                                 matrix(sp, 2, 2), pt::none, pt::uniform_groups{2}, matrix(a, 2, 2), pt::none);
    CHECK(res.empty_groups == 1);
    CHECK(a == std::vector<double>{0, 0, 0, 0});
}

TEST_CASE("optimal token baseline: the multi-turn form is the column form on compacted rows") {
    auto p = random_problem(30, 10, 77, true);
    for (index_t i = 0; i < p.N; ++i) p.m[std::size_t(i * p.T)] = 1;  // no fully masked row
    for (index_t i = 0; i < p.N; ++i) p.r[std::size_t(i * p.T)] = 0.25;
    otb_problem c = p;
    std::vector<std::vector<index_t>> cols(std::size_t(p.N));
    for (auto* v : {&c.r, &c.m, &c.lp, &c.sp, &c.is}) std::fill(v->begin(), v->end(), 0.0);
    for (index_t i = 0; i < p.N; ++i) {
        index_t k = 0;
        for (index_t t = 0; t < p.T; ++t) {
            const std::size_t from = std::size_t(i * p.T + t);
            if (p.m[from] == 0) continue;
            const std::size_t to = std::size_t(i * p.T + k++);
            c.r[to] = p.r[from], c.m[to] = 1, c.lp[to] = p.lp[from], c.sp[to] = p.sp[from], c.is[to] = p.is[from];
            cols[std::size_t(i)].push_back(t);
        }
    }
    const auto groups = pt::grouping::from_string_ids(pt::exec::seq, p.ids);
    std::vector<double> a, ret, ca, cret;
    (void)run(pt::exec::seq, p, true, true, groups, a, ret, {});
    (void)run(pt::exec::seq, c, false, true, groups, ca, cret, {});
    // The same sums of the same terms in the same order: equal bits in a portable build. With FMA
    // contraction (-march=native) the two forms' expressions may fuse differently, hence a tolerance.
    std::vector<double> got, want;
    for (index_t i = 0; i < p.N; ++i)
        for (std::size_t k = 0; k < cols[std::size_t(i)].size(); ++k) {
            got.push_back(a[std::size_t(i * p.T + cols[std::size_t(i)][k])]);
            want.push_back(ca[std::size_t(i * p.T) + k]);
        }
    check_close(got, want, 1e-13);
}

TEST_CASE("optimal token baseline: float tensors, N = 0, T = 1") {
    const auto p = random_problem(20, 6, 3, true);
    std::vector<float> r(p.r.begin(), p.r.end()), m(p.m.begin(), p.m.end()), lp(p.lp.begin(), p.lp.end()),
        sp(p.sp.begin(), p.sp.end()), a(p.r.size());
    const auto groups = pt::grouping::from_string_ids(pt::exec::seq, p.ids);
    (void)adv::optimal_token_baseline(pt::exec::seq, matrix(r, 20, 6), matrix(m, 20, 6), matrix(lp, 20, 6), matrix(sp, 20, 6),
                                      pt::none, groups, matrix(a, 20, 6), pt::none);
    otb_problem q = p;
    q.r.assign(r.begin(), r.end()), q.lp.assign(lp.begin(), lp.end()), q.sp.assign(sp.begin(), sp.end());
    std::vector<double> ra, rret;
    reference(q, false, false, true, 1e-8, ra, rret);
    for (std::size_t k = 0; k < a.size(); ++k) CHECK(a[k] == doctest::Approx(ra[k]).epsilon(1e-5));

    std::vector<double> e;
    const auto res = adv::optimal_token_baseline(pt::exec::seq, matrix(e, 0, 4), matrix(e, 0, 4), matrix(e, 0, 4),
                                                 matrix(e, 0, 4), pt::none, pt::uniform_groups{2}, matrix(e, 0, 4), pt::none);
    CHECK(res.groups == 0);

    const auto one = random_problem(12, 1, 9, false, 3);
    std::vector<double> a1, r1, ra1, rr1;
    (void)run(pt::exec::seq, one, true, true, pt::grouping::from_string_ids(pt::exec::seq, one.ids), a1, r1, {});
    reference(one, true, true, true, 1e-8, ra1, rr1);
    check_close(a1, ra1);
}

TEST_CASE("optimal token baseline: non-finite inputs raise by default, propagate within their group under verl()") {
    auto p = random_problem(8, 5, 11, false, 4);
    for (index_t i = 0; i < p.N; ++i) p.ids[std::size_t(i)] = i < 4 ? "a" : "b";
    for (index_t t = 0; t < p.T; ++t) p.m[std::size_t(t)] = 1;
    p.lp[2] = std::nan("");
    const auto groups = pt::grouping::from_string_ids(pt::exec::seq, p.ids);
    std::vector<double> a, ret;
    CHECK(throws_naming([&] { (void)run(pt::exec::seq, p, false, false, groups, a, ret, {}); }, "old_log_probs"));
    (void)run(pt::exec::seq, p, false, false, groups, a, ret, adv::token_baseline_options::verl());
    CHECK(std::isnan(a[2]));
    for (index_t i = 0; i < p.N; ++i)
        if (p.ids[std::size_t(i)] == "b")
            for (index_t t = 0; t < p.T; ++t) CHECK(!std::isnan(a[std::size_t(i * p.T + t)]));
    p.lp[2] = -1;
    p.is[7] = INFINITY;
    CHECK(throws_naming([&] { (void)run(pt::exec::seq, p, true, true, groups, a, ret, {}); }, "rollout_is_weights"));
    p.is[7] = 1;
    p.r[9] = -INFINITY;
    CHECK(throws_naming([&] { (void)run(pt::exec::seq, p, false, true, groups, a, ret, {}); }, "token_rewards"));
    p.r[9] = 0;
    p.sp[1] = std::nan("");
    CHECK(throws_naming([&] { (void)run(pt::exec::seq, p, true, false, groups, a, ret, {}); }, "sum_pi_squared"));
}

TEST_CASE("optimal token baseline: bad arguments name the argument") {
    const index_t N = 4, T = 3;
    std::vector<double> r(N * T, 0.1), m(N * T, 1), lp(N * T, -1), sp(N * T, 0.5), is(N * T, 1), a(N * T), ret(N * T), small(N * 2);
    const auto seq = pt::exec::seq;
    const auto g = pt::uniform_groups{2};
    auto otb = [&](auto&&... x) { (void)adv::optimal_token_baseline(seq, x...); };
    auto tir = [&](auto&&... x) { (void)adv::multi_turn_optimal_token_baseline(seq, x...); };
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(small, N, 2), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(a, N, T), pt::none); }, "mask"));
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(small, N, 2), matrix(sp, N, T), pt::none, g,
                                  matrix(a, N, T), pt::none); }, "old_log_probs"));
    CHECK(throws_naming([&] { tir(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(small, N, 2), pt::none, g,
                                  matrix(a, N, T), pt::none); }, "sum_pi_squared"));
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), matrix(small, N, 2), g,
                                  matrix(a, N, T), pt::none); }, "rollout_is_weights"));
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(small, N, 2), pt::none); }, "advantages"));
    CHECK(throws_naming([&] { tir(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(a, N, T), matrix(small, N, 2)); }, "returns"));
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none,
                                  pt::uniform_groups{3}, matrix(a, N, T), pt::none); }, "groups"));
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(r, N, T), pt::none); }, "advantages"));  // aliases token_rewards
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(a, N, T), matrix(a, N, T)); }, "returns"));  // aliases advantages
    CHECK(throws_naming([&] { tir(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), matrix(is, N, T), g,
                                  matrix(a, N, T), matrix(is, N, T)); }, "returns"));  // aliases rollout_is_weights
    adv::token_baseline_options o;
    o.epsilon = -1e-8;
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none, g,
                                  matrix(a, N, T), pt::none, o); }, "options.epsilon"));
    std::vector<std::int64_t> bad_offsets{0, 3};
    CHECK(throws_naming([&] { otb(matrix(r, N, T), matrix(m, N, T), matrix(lp, N, T), matrix(sp, N, T), pt::none,
                                  pt::ragged(bad_offsets), matrix(a, N, T), pt::none); }, "groups"));
}

TEST_CASE_TEMPLATE("sum_pi_squared_from_logits: exp(logsumexp(2z) - 2 logsumexp(z)), stable", B, POSTTRAIN_HOST_BACKENDS) {
    const index_t Bn = 3, T = 700, V = 37;
    std::mt19937_64 rng(4);
    std::normal_distribution<double> normal(0.0, 3.0);
    std::vector<double> z(std::size_t(Bn * T * V));
    for (auto& x : z) x = normal(rng);
    // Extremes: huge logits (naive exp overflows), a masked vocabulary, a uniform row, a near one-hot row.
    for (index_t v = 0; v < V; ++v) {
        z[std::size_t(v)] = 900.0 + v;
        z[std::size_t(V + v)] = v % 3 == 0 ? -INFINITY : 0.5 * v;
        z[std::size_t(2 * V + v)] = -4.0;
        z[std::size_t(3 * V + v)] = v == 5 ? 60.0 : 0.0;
    }
    const pt::tensor_view<const double, 3> zv(z.data(), Bn, T, V);
    std::vector<double> out(std::size_t(Bn * T)), out_seq(out.size());
    adv::sum_pi_squared_from_logits(B::policy(), zv, matrix(out, Bn, T));
    adv::sum_pi_squared_from_logits(pt::exec::seq, zv, matrix(out_seq, Bn, T));
    CHECK(pt::test::bitwise_equal(out, out_seq));
    for (index_t k = 0; k < Bn * T; ++k) {
        // Reference in long double: sum p^2 with p = softmax(z).
        long double hi = -INFINITY, s1 = 0, s2 = 0;
        for (index_t v = 0; v < V; ++v) hi = std::max(hi, (long double)z[std::size_t(k * V + v)]);
        for (index_t v = 0; v < V; ++v) s1 += std::exp((long double)z[std::size_t(k * V + v)] - hi);
        for (index_t v = 0; v < V; ++v) {
            const long double pv = std::exp((long double)z[std::size_t(k * V + v)] - hi) / s1;
            s2 += pv * pv;
        }
        INFO("position " << k);
        CHECK(out[std::size_t(k)] == doctest::Approx(double(s2)).epsilon(1e-14));
    }
    CHECK(out[2] == doctest::Approx(1.0 / V).epsilon(1e-15));
    CHECK(out[3] == doctest::Approx(1.0).epsilon(1e-15));

    std::vector<float> zf(z.begin(), z.begin() + 2 * V), of(2);
    adv::sum_pi_squared_from_logits(B::policy(), pt::tensor_view<const float, 3>(zf.data(), 1, 2, V), matrix(of, 1, 2));
    CHECK(of[1] == doctest::Approx(out[1]).epsilon(1e-6));
}

TEST_CASE("sum_pi_squared_from_logits: bad input") {
    const index_t V = 4;
    std::vector<double> z(2 * 3 * V, 0.0), out(6), wrong(5);
    const pt::tensor_view<const double, 3> zv(z.data(), 2, 3, V);
    CHECK(throws_naming([&] { adv::sum_pi_squared_from_logits(pt::exec::seq, zv, matrix(wrong, 1, 5)); }, "out"));
    z[std::size_t((1 * 3 + 2) * V + 1)] = std::nan("");
    CHECK(throws_naming([&] { adv::sum_pi_squared_from_logits(pt::exec::seq, zv, matrix(out, 2, 3)); }, "logits"));
    try {
        adv::sum_pi_squared_from_logits(pt::exec::seq, zv, matrix(out, 2, 3));
    } catch (const pt::invalid_argument& e) {
        CHECK(std::string(e.what()).find("[1, 2]") != std::string::npos);
    }
    std::fill(z.begin(), z.end(), -INFINITY);
    CHECK(throws_naming([&] { adv::sum_pi_squared_from_logits(pt::exec::seq, zv, matrix(out, 2, 3)); }, "logits"));
    std::vector<double> empty;
    CHECK(throws_naming([&] {
        adv::sum_pi_squared_from_logits(pt::exec::seq, pt::tensor_view<const double, 3>(empty.data(), 2, 3, 0), matrix(out, 2, 3));
    }, "logits"));
}
