// Paper results reproduced in simulation (group_rl.md §4): GDPO's count of distinct advantage groups
// versus GRPO (§4.1, exact numbers), the rank bias the unlikeliness reward fixes (§4.5, qualitative),
// and COPO's blending weights (§4.6).
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/copo.hpp>
#include <posttrain/advantage/gdpo.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/unlikeliness.hpp>

namespace pt = posttrain;
namespace adv = posttrain::advantage;

namespace {

// Every multiset of G reward vectors from {0,1}^K, as non-decreasing sequences of pattern codes.
template <class F>
void for_each_multiset(int patterns, int G, F&& f) {
    std::vector<int> c(static_cast<std::size_t>(G), 0);
    while (true) {
        f(c);
        int i = G - 1;
        while (i >= 0 && c[std::size_t(i)] == patterns - 1) --i;
        if (i < 0) return;
        const int v = c[std::size_t(i)] + 1;
        for (int j = i; j < G; ++j) c[std::size_t(j)] = v;
    }
}

// The number of distinct sorted advantage vectors (to 1e-6) that GRPO (sum, then z-score) and GDPO
// (z-score per reward, then sum, no batch normalisation) give, epsilon 0.
struct counts {
    std::size_t grpo = 0, gdpo = 0;
};
counts distinct_advantage_groups(int K, int G) {
    std::set<std::vector<long long>> seen_grpo, seen_gdpo;
    std::vector<double> R(static_cast<std::size_t>(G * K)), sum(static_cast<std::size_t>(G)), a(static_cast<std::size_t>(G));
    auto key = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        std::vector<long long> k;
        for (double x : v) k.push_back(std::llround(x * 1e6));
        return k;
    };
    adv::gdpo_options gd;
    gd.component.epsilon = 0;
    gd.batch_normalize = false;
    for_each_multiset(1 << K, G, [&](const std::vector<int>& c) {
        for (int i = 0; i < G; ++i) {
            sum[std::size_t(i)] = 0;
            for (int k = 0; k < K; ++k) {
                const double bit = (c[std::size_t(i)] >> k) & 1;
                R[std::size_t(i * K + k)] = bit;
                sum[std::size_t(i)] += bit;
            }
        }
        (void)adv::grpo(pt::exec::seq, sum, pt::uniform_groups{G}, a, {.epsilon = 0});
        seen_grpo.insert(key(a));
        (void)adv::gdpo(pt::exec::seq, pt::tensor_view<const double, 2>(R.data(), G, K), pt::uniform_groups{G}, a, gd);
        seen_gdpo.insert(key(a));
    });
    return {seen_grpo.size(), seen_gdpo.size()};
}

}  // namespace

TEST_CASE("reproduction §4.1: GDPO keeps more distinct advantage groups than GRPO (exact figure values)") {
    // K = 2 rewards, G = 2..8 rollouts.
    const std::size_t grpo_k2[] = {2, 4, 7, 11, 16, 22, 29}, gdpo_k2[] = {3, 6, 14, 26, 38, 59, 81};
    for (int G = 2; G <= 8; ++G) {
        const auto c = distinct_advantage_groups(2, G);
        CHECK_MESSAGE(c.grpo == grpo_k2[G - 2], "GRPO K=2 G=" << G);
        CHECK_MESSAGE(c.gdpo == gdpo_k2[G - 2], "GDPO K=2 G=" << G);
    }
    // G = 4 rollouts, K = 2..5 rewards.
    const std::size_t grpo_g4[] = {7, 14, 23, 41}, gdpo_g4[] = {14, 45, 127, 318};
    for (int K = 2; K <= 5; ++K) {
        const auto c = distinct_advantage_groups(K, 4);
        CHECK_MESSAGE(c.grpo == grpo_g4[K - 2], "GRPO G=4 K=" << K);
        CHECK_MESSAGE(c.gdpo == gdpo_g4[K - 2], "GDPO G=4 K=" << K);
    }
}

TEST_CASE("reproduction §4.1: the toy example (two rollouts, two binary rewards)") {
    std::vector<double> a(2);
    adv::gdpo_options gd;
    gd.component.epsilon = 0;
    gd.batch_normalize = false;
    for (std::vector<double> totals : {std::vector<double>{0, 1}, {0, 2}, {1, 2}}) {
        (void)adv::grpo(pt::exec::seq, totals, pt::uniform_groups{2}, a, {.epsilon = 0});
        CHECK(a[0] == doctest::Approx(-0.7071067811865475));
        CHECK(a[1] == doctest::Approx(0.7071067811865475));
    }
    const std::vector<double> one{0, 0, 1, 0}, two{0, 0, 1, 1};  // rows: rollouts; columns: rewards
    (void)adv::gdpo(pt::exec::seq, pt::tensor_view<const double, 2>(one.data(), 2, 2), pt::uniform_groups{2}, a, gd);
    CHECK(a[1] == doctest::Approx(0.7071067811865475));
    (void)adv::gdpo(pt::exec::seq, pt::tensor_view<const double, 2>(two.data(), 2, 2), pt::uniform_groups{2}, a, gd);
    CHECK(a[1] == doctest::Approx(1.4142135623730951));
}

namespace {

// A one-problem softmax policy over six "proofs": 0, 1, 2 are correct (likely, middling, rare), 3..5
// wrong. Each step draws groups of G samples, computes GRPO advantages (optionally on unlikeliness-
// shaped rewards, ranked by the sample's log-probability), and ascends the policy gradient
// sum_i A_i (e_{a_i} - pi). Returns the final probabilities.
std::vector<double> train(double beta, int steps, std::uint64_t seed) {
    const int M = 6, G = 8, groups = 64;
    std::vector<double> theta{2.0, 0.5, -1.0, 1.0, 1.0, 0.5};
    std::mt19937_64 rng(seed);
    auto uniform = [&] { return double(rng() >> 11) * 0x1.0p-53; };
    std::vector<double> pi(static_cast<std::size_t>(M)), r(static_cast<std::size_t>(G * groups)), lp(r.size()), mask(r.size(), 1.0), shaped(r.size()), a(r.size());
    std::vector<int> draw(r.size());
    for (int s = 0; s < steps; ++s) {
        double z = 0;
        for (int m = 0; m < M; ++m) z += std::exp(theta[std::size_t(m)]);
        for (int m = 0; m < M; ++m) pi[std::size_t(m)] = std::exp(theta[std::size_t(m)]) / z;
        for (std::size_t i = 0; i < r.size(); ++i) {
            double u = uniform(), acc = 0;
            int m = 0;
            for (; m < M - 1; ++m) {
                acc += pi[std::size_t(m)];
                if (u < acc) break;
            }
            draw[i] = m;
            r[i] = m < 3 ? 1.0 : 0.0;
            lp[i] = std::log(pi[std::size_t(m)]);
        }
        const pt::index_t N = pt::index_t(r.size());
        (void)adv::unlikeliness_rewards(pt::exec::seq, r, pt::tensor_view<const double, 2>(lp.data(), N, 1),
                                        pt::tensor_view<const double, 2>(mask.data(), N, 1), pt::uniform_groups{G}, shaped,
                                        {.beta = beta});
        (void)adv::grpo(pt::exec::seq, shaped, pt::uniform_groups{G}, a);
        std::vector<double> grad(static_cast<std::size_t>(M), 0.0);
        for (std::size_t i = 0; i < r.size(); ++i)
            for (int m = 0; m < M; ++m) grad[std::size_t(m)] += a[i] * ((draw[i] == m) - pi[std::size_t(m)]);
        for (int m = 0; m < M; ++m) theta[std::size_t(m)] += 0.05 * grad[std::size_t(m)] / double(r.size()) * G;
    }
    double z = 0;
    for (int m = 0; m < M; ++m) z += std::exp(theta[std::size_t(m)]);
    for (int m = 0; m < M; ++m) pi[std::size_t(m)] = std::exp(theta[std::size_t(m)]) / z;
    return pi;
}

}  // namespace

TEST_CASE("reproduction §4.5: GRPO sharpens toward the likely correct proof; the unlikeliness reward moves mass to the rare one") {
    const int steps = 150;
    const double p0_rare = std::exp(-1.0), p0_likely = std::exp(2.0);  // unnormalised: only ratios matter
    const auto grpo = train(0.0, steps, 1);
    const auto unlikely = train(0.25, steps, 1);
    const double ratio0 = p0_rare / p0_likely;
    const double ratio_grpo = grpo[2] / grpo[0], ratio_unlikely = unlikely[2] / unlikely[0];
    MESSAGE("rare/likely correct mass: initial " << ratio0 << ", GRPO " << ratio_grpo << ", unlikeliness " << ratio_unlikely);
    MESSAGE("rare proof mass: GRPO " << grpo[2] << ", unlikeliness " << unlikely[2]);
    // Rank bias: GRPO's update favours the already likely correct proof.
    CHECK(ratio_grpo < ratio0);
    // The unlikeliness reward counters it: more relative and absolute mass on the rare proof, hence a
    // higher chance that N samples contain it (pass@N over distinct proofs), for every N.
    CHECK(ratio_unlikely > ratio_grpo);
    CHECK(unlikely[2] > grpo[2]);
    // Both still learn the task: the incorrect proofs lose mass.
    CHECK(grpo[3] + grpo[4] + grpo[5] < 0.25);
    CHECK(unlikely[3] + unlikely[4] + unlikely[5] < 0.25);
}

TEST_CASE("reproduction §4.6: COPO's blending weights at G = 8, k = 20, b = 0.5") {
    // lambda_8 = (1 - 1/8) / log2 8 = 0.2917; H ranges over [0, 3] bits.
    const std::vector<double> r(8, 1.0);
    std::vector<std::int64_t> distinct(8), same(8, 4);
    for (int i = 0; i < 8; ++i) distinct[std::size_t(i)] = i;
    double R = 0, H = 0;
    adv::copo_group_scores(pt::exec::seq, r, distinct, pt::uniform_groups{8}, pt::tensor_view<double, 1>(&R, 1),
                           pt::tensor_view<double, 1>(&H, 1), {.reward_coef = true});
    CHECK(H == doctest::Approx(3.0));
    CHECK(1.0 - R == doctest::Approx(0.2917 * 3).epsilon(1e-4));  // c = 1 - lambda_8 * 3 = 1/8
    adv::copo_group_scores(pt::exec::seq, r, same, pt::uniform_groups{8}, pt::tensor_view<double, 1>(&R, 1),
                           pt::tensor_view<double, 1>(&H, 1), {.reward_coef = true});
    CHECK(H == 0.0);
    CHECK(R == 1.0);
    // w = sigmoid(20 (H - 0.5)), the local loss's weight.
    const std::vector<double> Hs{0.0, 0.5, 1.0}, nonzero{1, 1, 1};
    std::vector<double> w(3);
    adv::copo_blend_weights(pt::exec::seq, Hs, nonzero, nonzero, w, {.mode = adv::copo_blend::only_soft, .k = 20, .b = 0.5});
    CHECK(w[0] == doctest::Approx(4.5e-5).epsilon(0.01));  // all answers identical: almost pure global loss
    CHECK(w[1] == 0.5);
    CHECK(w[2] == doctest::Approx(0.99995).epsilon(1e-5));  // almost pure local loss
}
