#include <cmath>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/ensembles.hpp>
#include <posttrain/advantage/grpo.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::bitwise_equal;

namespace {
pt::tensor_view<const double, 2> mat(const std::vector<double>& v, pt::index_t n, pt::index_t k) {
    return pt::tensor_view<const double, 2>(v.data(), n, k);
}
}  // namespace

TEST_CASE("reward_ensemble: mean, WCO and UWO by hand") {
    // Two responses, three reward models.
    const std::vector<double> r{1, 2, 3, 0, 0, 6};
    std::vector<double> c(2), u(2);
    adv::reward_ensemble(pt::exec::seq, mat(r, 2, 3), c, u);
    CHECK(c == std::vector<double>{2, 2});
    CHECK(u[0] == doctest::Approx(2.0 / 3.0));  // population variance of {1, 2, 3}
    CHECK(u[1] == doctest::Approx(8.0));        // of {0, 0, 6}
    adv::reward_ensemble(pt::exec::seq, mat(r, 2, 3), c, {.mode = adv::ensemble::worst_case});
    CHECK(c == std::vector<double>{1, 0});
    adv::reward_ensemble(pt::exec::seq, mat(r, 2, 3), c, {.mode = adv::ensemble::uncertainty_weighted, .lambda = 0.5});
    CHECK(c[0] == doctest::Approx(2 - 1.0 / 3.0));
    CHECK(c[1] == doctest::Approx(2 - 4.0));
    // The models agree on the mean, but UWO and WCO prefer the response they agree about.
    CHECK(c[0] > c[1]);
}

TEST_CASE("reward_ensemble: per-model normalisation from a reference set") {
    // Model 1 is model 0 scaled by 10 and shifted by 5: once normalised they agree exactly.
    const std::vector<double> ref{0, 5, 1, 15, 2, 25};
    const auto o = adv::reward_model_statistics(pt::exec::seq, mat(ref, 3, 2), {.mode = adv::ensemble::uncertainty_weighted});
    CHECK(o.means == std::vector<double>{1, 15});
    CHECK(o.stds[1] == doctest::Approx(10 * o.stds[0]));
    const std::vector<double> r{3, 35};
    std::vector<double> c(1), u(1);
    adv::reward_ensemble(pt::exec::seq, mat(r, 1, 2), c, u, o);
    CHECK(u[0] == doctest::Approx(0.0).epsilon(1e-12));
    CHECK(c[0] == doctest::Approx(2 / std::sqrt(2.0 / 3.0)));
    // A constant model gets std 1.
    const std::vector<double> flat{1, 7, 2, 7};
    CHECK(adv::reward_model_statistics(pt::exec::seq, mat(flat, 2, 2)).stds[1] == 1.0);
}

TEST_CASE("reward_ensemble composes with GRPO") {
    const std::vector<double> r{1, 1, 0, 3, 0, 0, 1, 1};  // 4 responses x 2 models
    std::vector<double> c(4), a(4);
    adv::reward_ensemble(pt::exec::seq, mat(r, 4, 2), c, {.mode = adv::ensemble::worst_case});
    (void)adv::grpo(pt::exec::seq, c, pt::uniform_groups{4}, a);
    CHECK(a[0] == a[3]);
    CHECK(a[1] == a[2]);
    CHECK(a[0] > a[1]);
}

TEST_CASE_TEMPLATE("reward_ensemble: seq == par bitwise", B, POSTTRAIN_HOST_BACKENDS) {
    const pt::index_t N = 3000, K = 5;
    const auto r = pt::test::random_rewards(std::size_t(N * K), 4);
    for (auto mode : {adv::ensemble::mean, adv::ensemble::worst_case, adv::ensemble::uncertainty_weighted}) {
        std::vector<double> got(N), want(N);
        adv::reward_ensemble(B::policy(), mat(r, N, K), got, {.mode = mode});
        adv::reward_ensemble(pt::exec::seq, mat(r, N, K), want, {.mode = mode});
        CHECK(bitwise_equal(got, want));
    }
}

TEST_CASE("reward_ensemble: bad input names the argument") {
    const std::vector<double> r{1, 2, 3, 4};
    std::vector<double> c(2), short_c(1);
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(r, 2, 2), short_c), doctest::Contains("combined"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(r, 2, 2), c, {.means = {1, 2, 3}}), doctest::Contains("options.means"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(r, 2, 2), c, {.stds = {1, 0}}), doctest::Contains("options.stds"),
                         pt::invalid_argument);
    const std::vector<double> nan{1, std::nan(""), 3, 4};
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(nan, 2, 2), c), doctest::Contains("rewards"), pt::invalid_argument);
    CHECK_THROWS_AS(adv::reward_ensemble(pt::exec::seq, pt::tensor_view<const double, 2>(r.data(), 2, 0), c), pt::invalid_argument);
}

TEST_CASE("reward_ensemble: uncertainty is checked before combined is written") {
    std::vector<double> r{1, 3, 2, 2}, c(2, 7.0), short_u(1);
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(r, 2, 2), c, c), doctest::Contains("overlaps the input 'combined'"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::reward_ensemble(pt::exec::seq, mat(r, 2, 2), c, short_u), doctest::Contains("uncertainty"),
                         pt::invalid_argument);
    CHECK(c == std::vector<double>(2, 7.0));  // nothing written
}
