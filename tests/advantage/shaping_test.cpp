// Reward shaping, token broadcast and the DAPO filter.
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/filters.hpp>
#include <posttrain/advantage/shaping.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::matrix;

TEST_CASE_TEMPLATE("token broadcast, row sums and lengths", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> tok{0, 0, 1, 0.5, 0.5, 0}, m{1, 1, 1, 1, 0, 0}, s(2), len(2), out(6);
    adv::sequence_scores(B::policy(), matrix(tok, 2, 3), s);
    CHECK(s[0] == 1.0);
    CHECK(s[1] == 1.0);
    adv::sequence_lengths(B::policy(), matrix(m, 2, 3), len);
    CHECK(len[0] == 3.0);
    CHECK(len[1] == 1.0);
    adv::broadcast_to_tokens(B::policy(), s, matrix(m, 2, 3), matrix(out, 2, 3));
    CHECK(out[3] == 1.0);
    CHECK(out[4] == 0.0);
}

TEST_CASE("reward shaping") {
    std::vector<double> r{-20, 0.5, 30}, c(3);
    adv::clip_rewards(pt::exec::seq, r, c, -10, 10);
    CHECK(c == std::vector<double>{-10, 0.5, 10});
    CHECK_THROWS_AS(adv::clip_rewards(pt::exec::seq, r, c, 1, -1), pt::invalid_argument);

    std::vector<double> sc{1, 2}, lp{0.5, 0.5}, ref{0.0, 1.0}, out(2);
    adv::kl_penalized_rewards(pt::exec::seq, matrix(sc, 1, 2), matrix(lp, 1, 2), matrix(ref, 1, 2), matrix(out, 1, 2), 0.1);
    CHECK(out[0] == doctest::Approx(0.95));
    CHECK(out[1] == doctest::Approx(2.05));

    std::vector<double> rr{2.0, 3.0}, kl{1, 1, 1, 1, 1, 1};
    std::vector<std::int64_t> m{1, 1, 0, 0, 0, 0};
    std::vector<double> tr(6);
    adv::outcome_token_rewards(pt::exec::seq, rr, matrix(kl, 2, 3), pt::tensor_view<const std::int64_t, 2>(m.data(), 2, 3),
                               matrix(tr, 2, 3), adv::outcome_token_reward_options::openrlhf(0.1));
    CHECK(tr[0] == doctest::Approx(-0.1));
    CHECK(tr[1] == doctest::Approx(1.9));
    CHECK(tr[5] == doctest::Approx(2.9));  // empty response: OpenRLHF puts the reward at T-1
    adv::outcome_token_rewards(pt::exec::seq, rr, pt::none, pt::tensor_view<const std::int64_t, 2>(m.data(), 2, 3),
                               matrix(tr, 2, 3));
    CHECK(tr[1] == 2.0);
    CHECK(tr[5] == 0.0);  // posttrain's default drops it
}

TEST_CASE_TEMPLATE("zero_variance_filter: DAPO keep rule", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> r{1, 1, 1, 0, 1, 7};
    std::vector<std::int64_t> off{0, 3, 5, 6, 6};
    std::vector<std::uint8_t> keep(4);
    CHECK(adv::zero_variance_filter(B::policy(), r, pt::ragged(off), keep) == 2);
    CHECK(keep == std::vector<std::uint8_t>{0, 1, 1, 0});
    std::vector<std::uint8_t> short_keep(3);
    CHECK_THROWS_AS((void)adv::zero_variance_filter(B::policy(), r, pt::ragged(off), short_keep), pt::invalid_argument);
}

TEST_CASE("reward shaping and broadcast: outputs partly over an input are refused, the input itself is allowed") {
    using V = pt::tensor_view<double, 1>;
    using CV = pt::tensor_view<const double, 1>;
    using M = pt::tensor_view<double, 2>;
    using CM = pt::tensor_view<const double, 2>;
    auto refused = [](auto&& call, const char* what) {
        CHECK_THROWS_WITH_AS(call(), doctest::Contains(what), pt::invalid_argument);
    };
    std::vector<double> r{-20, 0.5, 30, 0};
    refused([&] { adv::clip_rewards(pt::exec::seq, CV(r.data(), 3), V(r.data() + 1, 3), -10, 10); }, "overlaps the input 'rewards'");
    adv::clip_rewards(pt::exec::seq, CV(r.data(), 3), V(r.data(), 3), -10, 10);  // in place
    CHECK(r == std::vector<double>{-10, 0.5, 10, 0});

    std::vector<double> sc{1, 2}, lp{0.5, 0.5, 0}, ref{0, 1};
    refused([&] { adv::kl_penalized_rewards(pt::exec::seq, matrix(sc, 1, 2), CM(lp.data(), 1, 2), matrix(ref, 1, 2), M(lp.data() + 1, 1, 2), 0.1); },
            "overlaps the input 'logp'");

    std::vector<double> m{1, 1, 0, 1, 0, 0, 0}, s{2, 3};
    refused([&] { adv::broadcast_to_tokens(pt::exec::seq, s, CM(m.data(), 2, 3), M(m.data() + 1, 2, 3)); }, "overlaps the input 'mask'");
    refused([&] { adv::sequence_lengths(pt::exec::seq, CM(m.data(), 2, 3), V(m.data() + 4, 2)); }, "overlaps the input 'mask'");
    std::vector<double> ob{2, 3, 0, 0, 0, 0, 0};
    refused([&] { adv::outcome_token_rewards(pt::exec::seq, CV(ob.data(), 2), pt::none, CM(m.data(), 2, 3), M(ob.data() + 1, 2, 3)); },
            "overlaps the input 'rewards'");
    CHECK(m == std::vector<double>{1, 1, 0, 1, 0, 0, 0});  // nothing written
    adv::broadcast_to_tokens(pt::exec::seq, s, CM(m.data(), 2, 3), M(m.data(), 2, 3));  // in place over the mask
    CHECK(m == std::vector<double>{2, 2, 0, 3, 0, 0, 0});
}
