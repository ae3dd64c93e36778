#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/dpo.hpp>
#include <posttrain/preference/listwise.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"
#include "support/preference.hpp"

namespace pt = posttrain;
namespace pref = posttrain::preference;
using pt::test::matrix;
using pt::test::check_gradient;
using pt::test::expect_error;
using pt::test::uniform;

TEST_CASE_TEMPLATE("rankdpo: finite differences for every normalisation and tau source, ragged groups, seq == par", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto policy = Backend::policy();
    const pt::index_t N = 9, T = 6;
    // groups of 3, 0 (empty), 4, 2; psi with one tie in the second group
    const std::vector<std::int64_t> offsets{0, 3, 3, 7, 9};
    std::vector<double> psi{0.9, 0.1, 0.5, 0.25, 0.75, 0.25, 1.0, 0.0, 0.6};
    std::vector<double> lp = uniform(std::size_t(N * T), -3.0, -0.1, 1), lr = uniform(std::size_t(N * T), -3.0, -0.1, 2);
    const std::vector<double> mask = pt::test::random_mask(std::size_t(N), std::size_t(T), 3);
    for (auto tau : {pref::rank_source::model_scores, pref::rank_source::psi})
        for (auto nz : {pref::listwise_normalize::sum, pref::listwise_normalize::mean_pairs,
                        pref::listwise_normalize::divide_by_sum_delta, pref::listwise_normalize::mean_all_pairs})
            for (auto wt : {pref::pair_weighting::lambda_dcg, pref::pair_weighting::uniform}) {
                auto o = pref::rankdpo_options::paper(0.7);
                o.list.tau = tau;
                o.list.normalize = nz;
                o.list.weighting = wt;
                o.list.grad_scale = 1.3;
                auto call = [&](const auto& pol, std::vector<double>* g, double scale) {
                    auto q = o;
                    q.list.grad_scale = scale;
                    pref::sequence_grad G;
                    if (g) G = matrix(*g, N, T);
                    return pref::rankdpo(pol, pref::sequence_input::tokens(matrix(lp, N, T), matrix(mask, N, T)),
                                         pref::sequence_input::tokens(matrix(lr, N, T), matrix(mask, N, T)), psi,
                                         pt::ragged(offsets), G, q);
                };
                std::vector<double> g(std::size_t(N * T)), gs(g.size());
                const auto r = call(policy, &g, 1.3);
                CHECK(r.groups == 3);
                CHECK(r.pairs == 3 + 5 + 1);
                CHECK(r.tied_pairs == 1);
                check_gradient(lp, g, [&] { return call(pt::exec::seq, nullptr, 1.0).loss * 1.3; }, &mask);
                const auto s = call(pt::exec::seq, &gs, 1.3);
                CHECK(pt::test::bitwise_equal(g, gs));
                CHECK(std::memcmp(&s.loss, &r.loss, sizeof(double)) == 0);
            }
}

TEST_CASE("rankdpo: K = 2 is DPO weighted by |G1 - G2| |1/ln 2 - 1/ln 3|; ties give no pair") {
    const double beta = 0.1;
    // three prompts of two responses: sums form; the second response is preferred in prompt 1
    std::vector<double> s{-10.0, -12.0, -7.0, -5.0, -3.0, -3.5}, r{-11.0, -11.0, -6.0, -6.0, -3.0, -3.0};
    std::vector<double> psi{1.0, 0.0, 0.2, 0.7, 0.4, 0.4}, g(6);
    const auto res = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), psi,
                                   pt::uniform_groups{2}, g, pref::rankdpo_options::paper(beta));
    CHECK(res.groups == 2);  // the third prompt ties
    CHECK(res.pairs == 2);
    const double disc = std::fabs(1 / std::log(2.0) - 1 / std::log(3.0));
    const double w0 = (std::exp2(1.0) - std::exp2(0.0)) * disc, w1 = (std::exp2(0.7) - std::exp2(0.2)) * disc;
    const double h0 = (s[0] - r[0]) - (s[1] - r[1]), h1 = (s[3] - r[3]) - (s[2] - r[2]);
    const double dpo0 = std::log1p(std::exp(-beta * h0)), dpo1 = std::log1p(std::exp(-beta * h1));
    CHECK(res.loss == doctest::Approx((w0 * dpo0 + w1 * dpo1) / 2).epsilon(1e-14));
    CHECK(g[0] == doctest::Approx(-w0 * beta / (1 + std::exp(beta * h0)) / 2).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx(-g[0]).epsilon(1e-14));
    CHECK(g[3] == doctest::Approx(-w1 * beta / (1 + std::exp(beta * h1)) / 2).epsilon(1e-14));
    CHECK(g[4] == 0.0);
    CHECK(g[5] == 0.0);
    CHECK(res.pair_accuracy == 1.0);
    // ties in psi only: no pair anywhere, loss 0
    std::vector<double> flat(6, 0.5);
    const auto none = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), flat,
                                    pt::uniform_groups{2}, g, {});
    CHECK(none.loss == 0.0);
    CHECK(none.groups == 0);
    CHECK(g[0] == 0.0);
}

TEST_CASE("rankdpo: K = 2 equals preference::dpo (TRL sigmoid) times the DCG weight, loss and gradients") {
    const double beta = 0.3;
    std::vector<double> s{-10.0, -12.0}, r{-11.0, -11.5}, psi{0.8, 0.1}, g(2);
    const auto res = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), psi,
                                   pt::uniform_groups{2}, g, pref::rankdpo_options::paper(beta));
    std::vector<double> sw{s[0]}, sl{s[1]}, rw{r[0]}, rl{r[1]}, gw(1), gl(1);
    const auto d = pref::dpo(pt::exec::seq, pref::sequence_input::sums(sw), pref::sequence_input::sums(sl),
                             pref::sequence_input::sums(rw), pref::sequence_input::sums(rl), gw, gl,
                             pref::dpo_options::trl(pref::pair_loss::sigmoid, beta));
    const double w = (std::exp2(0.8) - std::exp2(0.1)) * std::fabs(1 / std::log(2.0) - 1 / std::log(3.0));
    CHECK(res.loss == doctest::Approx(w * d.loss).epsilon(1e-14));
    CHECK(g[0] == doctest::Approx(w * gw[0]).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx(w * gl[0]).epsilon(1e-14));
}

TEST_CASE("rankdpo: groups from unsorted prompt ids equal the contiguous layout") {
    std::vector<double> s{-1.0, -4.0, -2.0, -3.0, -0.5, -6.0}, r(6, -2.0), psi{0.9, 0.1, 0.5, 0.3, 0.7, 0.2};
    // rows 0, 2, 4 belong to prompt 7; rows 1, 3, 5 to prompt 3
    const std::vector<std::int64_t> ids{7, 3, 7, 3, 7, 3};
    const auto groups = pt::grouping::from_ids(pt::exec::seq, ids);
    std::vector<double> g(6);
    const auto a = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), psi, groups, g, {});
    std::vector<double> s2{-4.0, -3.0, -6.0, -1.0, -2.0, -0.5}, psi2{0.1, 0.3, 0.2, 0.9, 0.5, 0.7}, g2(6);
    const auto b = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s2), pref::sequence_input::sums(r), psi2,
                                 pt::uniform_groups{3}, g2, {});
    CHECK(a.loss == b.loss);
    CHECK(a.pairs == 6);
    const int to[6] = {3, 0, 4, 1, 5, 2};  // row of the permuted layout
    for (int i = 0; i < 6; ++i) CHECK(g[std::size_t(i)] == g2[std::size_t(to[i])]);
}

TEST_CASE("rankdpo: hand-computed DCG weights with the model ranking, NDCG and accuracy") {
    // one group of three; model utilities order 2 > 0 > 1 while psi orders 0 > 1 > 2
    std::vector<double> s{0.0, -1.0, 2.0}, zero(3, 0.0), psi{1.0, 0.5, 0.0}, g(3);
    const auto res = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(zero), psi,
                                   pt::uniform_groups{3}, g, pref::rankdpo_options::paper(1.0));
    const double G[3] = {1.0, std::exp2(0.5) - 1, 0.0};
    const int tau[3] = {2, 3, 1};
    auto D = [](int t) { return 1 / std::log(1.0 + t); };
    double loss = 0;
    const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    for (const auto& p : pairs) {
        const double delta = std::fabs(G[p[0]] - G[p[1]]) * std::fabs(D(tau[p[0]]) - D(tau[p[1]]));
        loss += delta * std::log1p(std::exp(-(s[std::size_t(p[0])] - s[std::size_t(p[1])])));
    }
    CHECK(res.loss == doctest::Approx(loss).epsilon(1e-14));
    CHECK(res.pair_accuracy == doctest::Approx(1.0 / 3));
    const double dcg = G[0] * D(2) + G[1] * D(3) + G[2] * D(1), idcg = G[0] * D(1) + G[1] * D(2) + G[2] * D(3);
    CHECK(res.ndcg == doctest::Approx(dcg / idcg).epsilon(1e-14));
}

TEST_CASE_TEMPLATE("rankdpo_diffusion: finite differences, lower score is better", Backend, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> s = uniform(8, -0.5, 0.5, 9), psi = uniform(8, 0.0, 1.0, 10), g(8), gs(8);
    auto o = pref::rankdpo_options::paper(5.0);
    const auto r = pref::rankdpo_diffusion(Backend::policy(), s, psi, pt::uniform_groups{4}, g, o);
    check_gradient(s, g, [&] { return pref::rankdpo_diffusion(pt::exec::seq, s, psi, pt::uniform_groups{4}, pt::none, o).loss; });
    (void)pref::rankdpo_diffusion(pt::exec::seq, s, psi, pt::uniform_groups{4}, gs, o);
    CHECK(pt::test::bitwise_equal(g, gs));
    CHECK(r.pairs == 12);
    // two items: the preferred one's score is pushed down (positive gradient)
    std::vector<double> s2{0.1, 0.1}, p2{1.0, 0.0}, g2(2);
    (void)pref::rankdpo_diffusion(pt::exec::seq, s2, p2, pt::uniform_groups{2}, g2, o);
    CHECK(g2[0] > 0);
    CHECK(g2[1] == -g2[0]);
}

TEST_CASE("rankdpo: extreme margins are finite") {
    for (double m : {50.0, -50.0, 1e4, -1e4}) {
        std::vector<double> s{m, 0.0}, r{0.0, 0.0}, psi{1.0, 0.0}, g(2);
        const auto res = pref::rankdpo(pt::exec::seq, pref::sequence_input::sums(s), pref::sequence_input::sums(r), psi,
                                       pt::uniform_groups{2}, g, pref::rankdpo_options::paper(1.0));
        CHECK(std::isfinite(res.loss));
        CHECK(std::isfinite(g[0]));
        CHECK(res.loss >= 0);
    }
}

TEST_CASE("rankdpo: bad input") {
    const std::string fn = "posttrain::preference::rankdpo";
    std::vector<double> s{-1.0, -2.0, -3.0, -4.0}, psi{1.0, 0.0, 1.0, 0.0}, g(4), psi3{1.0, 0.0, 1.0};
    auto S = [](const std::vector<double>& v) { return pref::sequence_input::sums(v); };
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), psi3, pt::uniform_groups{2}, g, {}); }, fn, "psi");
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), psi, pt::uniform_groups{3}, g, {}); }, fn, "groups");
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), psi, pt::uniform_groups{1}, g, {}); }, fn, "at least 2");
    const std::vector<std::int64_t> bad_offsets{0, 3, 2, 4};
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), psi, pt::ragged(bad_offsets), g, {}); }, fn, "non-decreasing");
    std::vector<double> nan_psi{1.0, std::nan(""), 0.0, 1.0};
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), nan_psi, pt::uniform_groups{2}, g, {}); }, fn, "non-finite");
    std::vector<double> huge{5000.0, 0.0, 1.0, 0.0};
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), huge, pt::uniform_groups{2}, g, {}); }, fn, "overflows");
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), S(s), psi, pt::uniform_groups{2}, g, {.beta = 0}); }, fn, "beta");
    expect_error([&] { (void)pref::rankdpo(pt::exec::seq, S(s), pref::sequence_input{}, psi, pt::uniform_groups{2}, g, {}); }, fn,
                 "reference_logps");
}

TEST_CASE_TEMPLATE("tpo: finite differences through step-weighted scores, skipped items, seq == par", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t N = 6, T = 10, steps = 3;
    std::vector<double> lp = uniform(std::size_t(N * T), -3.0, -0.1, 21), lr = uniform(std::size_t(N * T), -3.0, -0.1, 22);
    std::vector<double> w = uniform(std::size_t(N * steps), 0.0, 2.0, 23);
    std::vector<std::int64_t> ids(std::size_t(N * T), 0);
    std::mt19937_64 rng(24);
    std::uniform_int_distribution<int> id(0, int(steps));
    for (auto& x : ids) x = id(rng);
    // response 4 has no step tokens: excluded from every pair; response 1's step 2 weighs 0
    for (pt::index_t t = 0; t < T; ++t) ids[std::size_t(4 * T + t)] = 0;
    w[std::size_t(1 * steps + 1)] = 0.0;
    std::vector<double> psi{0.1, 0.9, 0.4, 0.6, 0.3, 0.8};
    for (auto o : {pref::tpo_options::paper(2.0), pref::tpo_options::official_ranking(2.0)}) {
        o.list.grad_scale = 0.9;
        std::vector<double> g(lp.size()), gs(lp.size());
        const auto r = pref::tpo(Backend::policy(), matrix(lp, N, T), matrix(lr, N, T), matrix(ids, N, T), matrix(w, N, steps), psi,
                                 pt::uniform_groups{3}, matrix(g, N, T), o);
        CHECK(r.skipped_items == 1);
        CHECK(r.pairs == 3 + 1);
        auto q = o;
        q.list.grad_scale = 1;
        auto f = [&] {
            return pref::tpo(pt::exec::seq, matrix(lp, N, T), matrix(lr, N, T), matrix(ids, N, T), matrix(w, N, steps), psi,
                             pt::uniform_groups{3}, pt::none, q)
                       .loss *
                   0.9;
        };
        std::vector<double> in_step(ids.size());
        for (std::size_t j = 0; j < ids.size(); ++j) in_step[j] = ids[j] != 0 ? 1.0 : 0.0;
        check_gradient(lp, g, f, &in_step);
        for (pt::index_t t = 0; t < T; ++t) CHECK(g[std::size_t(4 * T + t)] == 0.0);
        for (pt::index_t t = 0; t < T; ++t)
            if (ids[std::size_t(1 * T + t)] == 2) CHECK(g[std::size_t(1 * T + t)] == 0.0);
        (void)pref::tpo(pt::exec::seq, matrix(lp, N, T), matrix(lr, N, T), matrix(ids, N, T), matrix(w, N, steps), psi,
                        pt::uniform_groups{3}, matrix(gs, N, T), o);
        CHECK(pt::test::bitwise_equal(g, gs));
    }
}

TEST_CASE("tpo: hand-computed scores; official ranking averages all pairs with ties adding log 2") {
    // two responses of one prompt, T = 4; response 0: step 1 = tokens 0,1; step 2 = token 2; response 1: step 1 = tokens 0..3
    std::vector<double> lp{-1.0, -2.0, -0.5, 9.0, -1.0, -1.0, -1.0, -1.0}, lr{-1.5, -1.5, -1.0, 0.0, -0.5, -0.5, -0.5, -0.5};
    std::vector<std::int32_t> ids{1, 1, 2, 0, 1, 1, 1, 1};
    std::vector<double> w{1.0, 3.0, 2.0, 2.0}, psi{1.0, 0.0}, g(8);
    const double beta = 0.5;
    const double s0 = beta * (1.0 * ((0.5 - 0.5) / 2) + 3.0 * 0.5) / 4.0, s1 = beta * (-0.5);
    const auto r = pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lr, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), psi,
                             pt::uniform_groups{2}, matrix(g, 2, 4), pref::tpo_options::official_ranking(beta));
    CHECK(r.loss == doctest::Approx(std::log1p(std::exp(-(s0 - s1)))).epsilon(1e-14));
    const double dl = -1 / (1 + std::exp(s0 - s1));
    CHECK(g[0] == doctest::Approx(dl * beta * 1.0 / (4.0 * 2)).epsilon(1e-14));
    CHECK(g[2] == doctest::Approx(dl * beta * 3.0 / (4.0 * 1)).epsilon(1e-14));
    CHECK(g[3] == 0.0);
    CHECK(g[4] == doctest::Approx(-dl * beta * 2.0 / (2.0 * 4)).epsilon(1e-14));
    // a tie: mean_all_pairs counts it with log 2
    std::vector<double> tie{0.5, 0.5};
    const auto t = pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lr, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), tie,
                             pt::uniform_groups{2}, matrix(g, 2, 4), pref::tpo_options::official_ranking(beta));
    CHECK(t.loss == doctest::Approx(std::log(2.0)));
    CHECK(g[0] == 0.0);
}

TEST_CASE("tpo: bad input") {
    const std::string fn = "posttrain::preference::tpo";
    std::vector<double> lp(8, -1.0), w{1.0, 1.0, 1.0, 1.0}, psi{1.0, 0.0}, g(8);
    std::vector<std::int64_t> ids{1, 1, 2, 0, 1, 1, 1, 3};
    expect_error([&] { (void)pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), psi,
                                        pt::uniform_groups{2}, matrix(g, 2, 4), {}); }, fn, "step_ids");
    ids[7] = 1;
    std::vector<double> negw{1.0, -1.0, 1.0, 1.0};
    expect_error([&] { (void)pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(negw, 2, 2), psi,
                                        pt::uniform_groups{2}, matrix(g, 2, 4), {}); }, fn, "step_weights");
    std::vector<double> bad = lp;
    bad[1] = -std::numeric_limits<double>::infinity();
    expect_error([&] { (void)pref::tpo(pt::exec::seq, matrix(bad, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), psi,
                                        pt::uniform_groups{2}, matrix(g, 2, 4), {}); }, fn, "policy_logps");
    // a non-finite value outside every step is ignored
    std::vector<double> pad = lp;
    pad[3] = std::nan("");
    (void)pref::tpo(pt::exec::seq, matrix(pad, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), psi,
                    pt::uniform_groups{2}, matrix(g, 2, 4), {});
    std::vector<double> g6(6);
    expect_error([&] { (void)pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(w, 2, 2), psi,
                                        pt::uniform_groups{2}, matrix(g6, 2, 3), {}); }, fn, "grad_policy");
    std::vector<double> w3(6, 1.0);
    expect_error([&] { (void)pref::tpo(pt::exec::seq, matrix(lp, 2, 4), matrix(lp, 2, 4), matrix(ids, 2, 4), matrix(w3, 3, 2), psi,
                                        pt::uniform_groups{2}, matrix(g, 2, 4), {}); }, fn, "psi");
}
