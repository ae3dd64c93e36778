// advantage::trpa_preference_level and trpa_outcome_advantages: the level table, raw scores broadcast
// over the mask, the two-responses-per-prompt rule, seq == par.

#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/trpa.hpp>

#include "../support/backends.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

static_assert(adv::trpa_preference_level(adv::trpa_outcome::correct) == 1);
static_assert(adv::trpa_preference_level(adv::trpa_outcome::wrong) == 2);
static_assert(adv::trpa_preference_level(adv::trpa_outcome::unparsable) == 3);
static_assert(adv::trpa_preference_level(adv::trpa_outcome::format_error) == 4);

TEST_CASE_TEMPLATE("trpa_outcome_advantages: raw sequence scores on the valid tokens", Backend, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<double> r = {0, 0, 3, 0, -0.5, 0, 0, -1, 0, 2, 0, 0};  // [4, 3]
    const std::vector<double> m = {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1};
    const std::vector<std::int64_t> ids = {7, 9, 7, 9};
    std::vector<double> a(12, -5.0);
    const auto res = adv::trpa_outcome_advantages(Backend::policy(), pt::tensor_view<const double, 2>(r.data(), 4, 3),
                                                  pt::tensor_view<const double, 2>(m.data(), 4, 3),
                                                  pt::grouping::from_ids(pt::exec::seq, ids),
                                                  pt::tensor_view<double, 2>(a.data(), 4, 3));
    CHECK(res.groups == 2);
    CHECK(a == std::vector<double>{3, 3, 3, -0.5, -0.5, 0, -1, 0, 0, 2, 2, 2});
}

TEST_CASE("trpa_outcome_advantages: a prompt with one response is refused") {
    const std::vector<double> r = {1, 0, 0}, m = {1, 1, 1};
    const std::vector<std::int64_t> off = {0, 1, 3};
    std::vector<double> a(3);
    CHECK_THROWS_WITH_AS((void)adv::trpa_outcome_advantages(pt::exec::seq, pt::tensor_view<const double, 2>(r.data(), 3, 1),
                                                            pt::tensor_view<const double, 2>(m.data(), 3, 1), pt::ragged(off),
                                                            pt::tensor_view<double, 2>(a.data(), 3, 1)),
                         doctest::Contains("groups"), pt::invalid_argument);
    const std::vector<std::int64_t> with_empty = {0, 0, 3};  // an empty group is fine
    CHECK_NOTHROW((void)adv::trpa_outcome_advantages(pt::exec::seq, pt::tensor_view<const double, 2>(r.data(), 3, 1),
                                                     pt::tensor_view<const double, 2>(m.data(), 3, 1), pt::ragged(with_empty),
                                                     pt::tensor_view<double, 2>(a.data(), 3, 1)));
}

TEST_CASE("trpa_outcome_advantages: shape mismatches are reported under its own name") {
    const std::vector<double> r = {1, 0, 0, 1}, m = {1, 1, 1};
    std::vector<double> a(4);
    try {
        (void)adv::trpa_outcome_advantages(pt::exec::seq, pt::tensor_view<const double, 2>(r.data(), 2, 2),
                                           pt::tensor_view<const double, 2>(m.data(), 3, 1), pt::uniform_groups{2},
                                           pt::tensor_view<double, 2>(a.data(), 2, 2));
        FAIL("expected invalid_argument");
    } catch (const pt::invalid_argument& e) {
        CHECK(e.function() == "posttrain::advantage::trpa_outcome_advantages");
        CHECK(e.argument() == "mask");
    }
}
