// TTRV frequency and entropy rewards: hand-computed values, the group baseline cancelling a shared
// entropy reward, bad input, and seq == par bitwise.
#include <cmath>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/advantage/ttrv.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;

TEST_CASE_TEMPLATE("ttrv: frequency + per-sample entropy, by hand", B, POSTTRAIN_HOST_BACKENDS) {
    // group 0: answers 1, 1, 2, none; group 1: 5, 5, 5
    std::vector<std::int64_t> ids{1, 1, 2, -1, 5, 5, 5};
    std::vector<std::int64_t> off{0, 4, 7};
    std::vector<double> r(7);
    const adv::ttrv_options with_missing{.missing_id = -1};
    const auto res = adv::ttrv_rewards(B::policy(), ids, pt::ragged(off), r, with_missing);
    CHECK(res.groups == 2);
    CHECK(res.missing_answers == 1);
    CHECK(r[0] == doctest::Approx(0.5 + std::log(0.5)));
    CHECK(r[2] == doctest::Approx(0.25 + std::log(0.25)));
    CHECK(r[3] == 0.0);  // no answer: missing_reward
    CHECK(r[4] == 1.0);  // unanimous: p = 1, log p = 0

    std::vector<double> h(2);
    adv::answer_entropy(B::policy(), ids, pt::ragged(off), h, with_missing);
    CHECK(h[0] == doctest::Approx(std::log(2.0)));  // -(0.5 ln 0.5 + 0.25 ln 0.25) = ln 2
    CHECK(h[1] == 0.0);

    adv::ttrv_options paper = adv::ttrv_options::paper(0.5);
    paper.missing_id = -1;
    CHECK(adv::ttrv_rewards(B::policy(), ids, pt::ragged(off), r, paper).groups == 2);
    CHECK(r[0] == doctest::Approx(0.5 - 0.5 * std::log(2.0)));
    CHECK(r[2] == doctest::Approx(0.25 - 0.5 * std::log(2.0)));

    adv::ttrv_options norm = with_missing;
    norm.normalize_entropy = true;
    (void)adv::ttrv_rewards(B::policy(), ids, pt::ragged(off), r, norm);
    CHECK(r[2] == doctest::Approx(0.25 + std::log(0.25) / std::log(4.0)));  // = 0.25 - 1
}

TEST_CASE("ttrv: a group-shared entropy reward cancels under GRPO; the per-sample one does not") {
    std::vector<std::int64_t> ids{3, 3, 3, 7, 7, 1, 1, 2, 1, 9, 9, 9};
    std::vector<double> r_freq(12), r_paper(12), r_ps(12), a_freq(12), a_paper(12), a_ps(12);
    (void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{6}, r_freq, adv::ttrv_options::frequency_only());
    (void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{6}, r_paper, adv::ttrv_options::paper(2.0));
    (void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{6}, r_ps, {});
    (void)adv::grpo(pt::exec::seq, r_freq, pt::uniform_groups{6}, a_freq);
    (void)adv::grpo(pt::exec::seq, r_paper, pt::uniform_groups{6}, a_paper);
    (void)adv::grpo(pt::exec::seq, r_ps, pt::uniform_groups{6}, a_ps);
    for (int i = 0; i < 12; ++i) CHECK(a_paper[std::size_t(i)] == doctest::Approx(a_freq[std::size_t(i)]));
    CHECK(a_ps[5] != doctest::Approx(a_freq[5]));  // log p separates the lone answer further
    CHECK(r_ps[3] - r_ps[0] == doctest::Approx((1.0 / 3 + std::log(1.0 / 3)) - (0.5 + std::log(0.5))));
}

TEST_CASE("ttrv: edge cases and bad input") {
    std::vector<std::int64_t> ids{4}, off{0, 0, 1};
    std::vector<double> r(1), h(2);
    const auto res = adv::ttrv_rewards(pt::exec::seq, ids, pt::ragged(off), r);
    CHECK(res.empty_groups == 1);
    CHECK(r[0] == 1.0);  // singleton: p = 1
    adv::answer_entropy(pt::exec::seq, ids, pt::ragged(off), h);
    CHECK(h[0] == 0.0);
    std::vector<double> wrong(2);
    CHECK_THROWS_AS((void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{1}, wrong), pt::invalid_argument);
    CHECK_THROWS_AS(adv::answer_entropy(pt::exec::seq, ids, pt::uniform_groups{1}, h), pt::invalid_argument);
    adv::ttrv_options bad;
    bad.entropy_weight = std::nan("");
    CHECK_THROWS_AS((void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{1}, r, bad), pt::invalid_argument);
    std::vector<std::int64_t> bad_off{0, 2};
    CHECK_THROWS_AS((void)adv::ttrv_rewards(pt::exec::seq, ids, pt::ragged(bad_off), r), pt::invalid_argument);
    // All answers missing: every reward is missing_reward, entropy 0.
    std::vector<std::int64_t> none{-1, -1};
    std::vector<double> r2(2), h1(1);
    adv::ttrv_options o;
    o.missing_id = -1;
    o.missing_reward = -1;
    (void)adv::ttrv_rewards(pt::exec::seq, none, pt::uniform_groups{2}, r2, o);
    CHECK(r2 == std::vector<double>{-1, -1});
    adv::answer_entropy(pt::exec::seq, none, pt::uniform_groups{2}, h1, o);
    CHECK(h1[0] == 0.0);
}

TEST_CASE("ttrv: hashed (negative or unsigned) ids are answers unless they equal missing_id") {
    // Negative int64 hashes: by default every id is an answer (no "< 0 means missing" rule).
    const std::vector<std::int64_t> neg{-5, -5, -7, 3};
    std::vector<double> r(4);
    const auto res = adv::ttrv_rewards(pt::exec::seq, neg, pt::uniform_groups{4}, r, adv::ttrv_options::frequency_only());
    CHECK(res.missing_answers == 0);
    CHECK(r == std::vector<double>{0.5, 0.5, 0.25, 0.25});
    // Only the sentinel is missing; -7 stays an answer.
    adv::ttrv_options o = adv::ttrv_options::frequency_only();
    o.missing_id = -5;
    const auto res2 = adv::ttrv_rewards(pt::exec::seq, neg, pt::uniform_groups{4}, r, o);
    CHECK(res2.missing_answers == 2);
    CHECK(r == std::vector<double>{0, 0, 0.25, 0.25});
    // Unsigned ids with the top bit set are answers, and a negative sentinel never equals an unsigned id
    // (UINT64_MAX is not -1).
    const std::vector<std::uint64_t> u{~0ull, ~0ull, 1ull << 63, 1};
    o.missing_id = -1;
    const auto res3 = adv::ttrv_rewards(pt::exec::seq, u, pt::uniform_groups{4}, r, o);
    CHECK(res3.missing_answers == 0);
    CHECK(r == std::vector<double>{0.5, 0.5, 0.25, 0.25});
    o.missing_id = 1;
    const auto res4 = adv::ttrv_rewards(pt::exec::seq, u, pt::uniform_groups{4}, r, o);
    CHECK(res4.missing_answers == 1);
    CHECK(r == std::vector<double>{0.5, 0.5, 0.25, 0});
}

TEST_CASE("ttrv: seq == par bitwise") {
    const std::size_t n = 40000;
    std::vector<std::int64_t> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = std::int64_t((i * 2654435761u) % 7) - 1;
    std::vector<double> a(n), b(n), ha(n / 16), hb(n / 16);
    (void)adv::ttrv_rewards(pt::exec::seq, ids, pt::uniform_groups{16}, a);
    (void)adv::ttrv_rewards(pt::exec::par.with_threads(4), ids, pt::uniform_groups{16}, b);
    CHECK(pt::test::bitwise_equal(a, b));
    adv::answer_entropy(pt::exec::seq, ids, pt::uniform_groups{16}, ha);
    adv::answer_entropy(pt::exec::par.with_threads(4), ids, pt::uniform_groups{16}, hb);
    CHECK(pt::test::bitwise_equal(ha, hb));
}

TEST_CASE("ttrv_rewards and answer_entropy refuse an output over answer_ids before writing") {
    // A group's ids are read while its rewards are written (and other groups' while entropies are).
    std::vector<std::int64_t> ids{1, 1, 2, 5, 5, 5};
    const std::vector<std::int64_t> off{0, 3, 6};
    const std::vector<std::int64_t> before = ids;
    const pt::tensor_view<const std::int64_t, 1> in(ids.data(), 6);
    pt::tensor_view<double, 1> over(reinterpret_cast<double*>(ids.data()), 6), over2(reinterpret_cast<double*>(ids.data() + 3), 2);
    CHECK_THROWS_WITH_AS(adv::ttrv_rewards(pt::exec::seq, in, pt::ragged(off), over), doctest::Contains("'rewards': the output overlaps the input 'answer_ids'"),
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(adv::answer_entropy(pt::exec::seq, in, pt::ragged(off), over2),
                         doctest::Contains("'entropy': the output overlaps the input 'answer_ids'"), pt::invalid_argument);
    CHECK(ids == before);  // nothing written
}
