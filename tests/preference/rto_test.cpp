#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/preference/rto.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace pp = posttrain::preference;
using pt::test::matrix;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

double clip(double x, double c) { return c > 0 ? std::fmin(std::fmax(x, -c), c) : x; }

struct rollout {
    pt::index_t B, T;
    std::vector<double> old, ref, dpo, scores;
    std::vector<std::uint8_t> m;
};

// Log-probs with NaN garbage at masked positions; row 2 has no valid token; scores include +-25.
rollout random_rollout(pt::index_t B, pt::index_t T, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> lp(-5.0, -0.01), d(-0.4, 0.4), s(-25.0, 25.0);
    std::bernoulli_distribution keep(0.8);
    rollout r{B, T, {}, {}, {}, {}, {}};
    for (pt::index_t j = 0; j < B * T; ++j) {
        const bool valid = j / T != 2 && keep(rng);
        const double x = lp(rng);
        r.m.push_back(valid ? 1 : 0);
        r.old.push_back(valid ? x : nan_v);
        r.ref.push_back(valid ? x + d(rng) : nan_v);
        r.dpo.push_back(valid ? x + 5 * d(rng) : nan_v);
    }
    for (pt::index_t i = 0; i < B; ++i) r.scores.push_back(s(rng));
    return r;
}

}  // namespace

TEST_CASE_TEMPLATE("rto_dpo_rewards: clip(scale * (dpo - ref), +-c) on valid tokens, 0 elsewhere; seq == par bitwise", Backend,
                   POSTTRAIN_HOST_BACKENDS) {
    const auto r = random_rollout(19, 12, 4);
    for (const auto& o : {pp::rto_options{}, pp::rto_options::official(0.5, 0.0), pp::rto_options::official(1.0, 0.3),
                          pp::rto_options::official(-2.0, 0.1)}) {
        std::vector<double> d(r.old.size(), 7.0), d0(r.old.size(), 7.0);
        const auto res = pp::rto_dpo_rewards(Backend::policy(), matrix(r.dpo, 19, 12), matrix(r.ref, 19, 12), matrix(r.m, 19, 12),
                                             matrix(d, 19, 12), o);
        const auto res0 = pp::rto_dpo_rewards(pt::exec::seq, matrix(r.dpo, 19, 12), matrix(r.ref, 19, 12), matrix(r.m, 19, 12),
                                              matrix(d0, 19, 12), o);
        CHECK(pt::test::bitwise_equal(d, d0));
        CHECK(res.mean == res0.mean);
        // The fork's rule: a negative scale is ignored (treated as 1); clip only if > 0.
        const double scale = o.dpo_reward_scale > 0 ? o.dpo_reward_scale : 1.0;
        double n = 0, clipped = 0, sum = 0;
        for (std::size_t j = 0; j < d.size(); ++j) {
            if (r.m[j] == 0) {
                CHECK(d[j] == 0.0);
                continue;
            }
            const double x = scale * (r.dpo[j] - r.ref[j]);
            CHECK(d[j] == clip(x, o.dpo_reward_clip));
            ++n;
            sum += d[j];
            clipped += o.dpo_reward_clip > 0 && std::fabs(x) > o.dpo_reward_clip ? 1 : 0;
        }
        CHECK(res.tokens == n);
        CHECK(res.mean == doctest::Approx(sum / n).epsilon(1e-13));
        CHECK(res.clip_fraction == doctest::Approx(clipped / n).epsilon(1e-13));
        if (o.dpo_reward_clip > 0) CHECK(res.clip_fraction > 0);
    }
}

TEST_CASE("rto_dpo_rewards: posttrain's default vs the fork's lenient coefficients; extreme log-ratios") {
    const std::vector<double> dpo = {1e4 - 1.0, -1e4, -50.0, 49.0}, ref = {-1.0, 0.0, 0.0, -1.0};
    const std::vector<double> m = {1, 1, 1, 1};
    std::vector<double> d(4);
    (void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4));  // 0.05, 0.05
    CHECK(d[0] == 0.05);
    CHECK(d[1] == -0.05);
    CHECK(d[2] == -0.05);
    CHECK(d[3] == 0.05);
    pp::rto_options o;
    o.dpo_reward_scale = 0.0;  // posttrain: zero rewards; the fork: scale 1
    (void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4), o);
    CHECK(d[0] == 0.0);
    o.lenient = true;
    o.dpo_reward_clip = 0;
    (void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4), o);
    CHECK(d[0] == 1e4);
    CHECK(d[3] == 50.0);
    using doctest::Contains;
    o = pp::rto_options{};
    o.dpo_reward_scale = -2;
    CHECK_THROWS_WITH_AS((void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4), o),
                         Contains("posttrain::preference::rto_dpo_rewards: argument 'options': dpo_reward_scale must be >= 0"),
                         pt::invalid_argument);
    o = pp::rto_options{};
    o.dpo_reward_clip = -1;
    CHECK_THROWS_WITH_AS((void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4), o),
                         Contains("dpo_reward_clip must be >= 0"), pt::invalid_argument);
    o = pp::rto_options{};
    o.dpo_reward_scale = nan_v;
    CHECK_THROWS_WITH_AS((void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(d, 1, 4), o),
                         Contains("dpo_reward_scale must be finite"), pt::invalid_argument);
    auto bad = dpo;
    bad[2] = nan_v;
    CHECK_THROWS_WITH_AS((void)pp::rto_dpo_rewards(pt::exec::seq, matrix(bad, 2, 2), matrix(ref, 2, 2), matrix(m, 2, 2), matrix(d, 2, 2)),
                         Contains("argument 'dpo_log_probs': non-finite value at a valid position [1, 0]"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 2, 2), matrix(ref, 1, 4), matrix(m, 2, 2), matrix(d, 2, 2)),
                         Contains("argument 'ref_log_probs': shape must match 'dpo_log_probs'"), pt::invalid_argument);
    // Float output; B = 0.
    std::vector<float> f(4);
    (void)pp::rto_dpo_rewards(pt::exec::seq, matrix(dpo, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), matrix(f, 1, 4));
    CHECK(f[0] == 0.05f);
    const std::vector<double> e;
    const auto z = pp::rto_dpo_rewards(pt::exec::seq, matrix(e, 0, 3), matrix(e, 0, 3), matrix(e, 0, 3), pt::none);
    CHECK(z.tokens == 0.0);
    CHECK(z.mean == 0.0);
}

TEST_CASE_TEMPLATE("rto_rewards: clipped score on the last valid token - kl_coef * k1 + DPO token rewards; seq == par bitwise",
                   Backend, POSTTRAIN_HOST_BACKENDS) {
    const auto r = random_rollout(17, 10, 9);
    const pt::index_t B = 17, T = 10;
    const auto o = pp::rto_options::official(0.05, 0.05, 0.02);
    std::vector<double> d(r.old.size());
    (void)pp::rto_dpo_rewards(pt::exec::seq, matrix(r.dpo, B, T), matrix(r.ref, B, T), matrix(r.m, B, T), matrix(d, B, T), o);
    std::vector<double> rw(r.old.size(), 7.0), kl(r.old.size(), 7.0), rw0(r.old.size(), 7.0), kl0(r.old.size(), 7.0);
    const auto res = pp::rto_rewards(Backend::policy(), r.scores, matrix(r.old, B, T), matrix(r.ref, B, T), matrix(r.m, B, T),
                                     matrix(d, B, T), matrix(rw, B, T), matrix(kl, B, T), o);
    const auto res0 = pp::rto_rewards(pt::exec::seq, r.scores, matrix(r.old, B, T), matrix(r.ref, B, T), matrix(r.m, B, T),
                                      matrix(d, B, T), matrix(rw0, B, T), matrix(kl0, B, T), o);
    CHECK(pt::test::bitwise_equal(rw, rw0));
    CHECK(pt::test::bitwise_equal(kl, kl0));
    CHECK(res.mean_kl == res0.mean_kl);
    double tokens = 0, mean_kl = 0;
    for (pt::index_t i = 0; i < B; ++i) {
        pt::index_t last = -1;
        for (pt::index_t t = 0; t < T; ++t)
            if (r.m[std::size_t(i * T + t)]) last = t;
        if (last < 0) last = T - 1;  // an empty row: OpenRLHF's argmax of an all-zero mask
        double row_kl = 0, n = 0;
        for (pt::index_t t = 0; t < T; ++t) {
            const std::size_t j = std::size_t(i * T + t);
            const double k = r.m[j] ? r.old[j] - r.ref[j] : 0.0;
            CHECK(kl[j] == k);
            const double expect = ((t == last ? clip(r.scores[std::size_t(i)], 10) : 0.0) + -0.02 * k) + d[j];
            CHECK(rw[j] == doctest::Approx(expect).epsilon(1e-15));
            row_kl += k;
            n += r.m[j] ? 1 : 0;
        }
        tokens += n;
        mean_kl += n > 0 ? row_kl / n / double(B) : 0.0;
    }
    CHECK(res.tokens == tokens);
    CHECK(res.mean_kl == doctest::Approx(mean_kl).epsilon(1e-12));
}

TEST_CASE("rto_rewards: plain PPO (no DPO rewards), coefficients, and bad input") {
    using doctest::Contains;
    const std::vector<double> old = {-1.0, -2.0, nan_v, -1.0, -1.0, -1.0}, ref = {-1.5, -1.0, nan_v, -1.0, -3.0, -1.0};
    const std::vector<bool> mv = {true, true, false, true, true, true};
    std::vector<std::uint8_t> m(mv.begin(), mv.end());
    const std::vector<double> scores = {12.0, -0.5};
    std::vector<double> rw(6), kl(6);
    (void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none, matrix(rw, 2, 3),
                          matrix(kl, 2, 3), pp::rto_options::official(0.05, 0.05, 0.1));
    CHECK(rw[0] == doctest::Approx(-0.05));
    CHECK(rw[1] == doctest::Approx(10.0 + 0.1));  // last valid token of row 0 (position 2 is masked), score clamped to 10
    CHECK(rw[2] == 0.0);
    CHECK(rw[4] == doctest::Approx(-0.2));
    CHECK(rw[5] == doctest::Approx(-0.5));
    CHECK(kl[2] == 0.0);
    CHECK(kl[4] == 2.0);
    // The fork: a negative kl_coef is 0; posttrain's default raises. score_clip = 0: no clamp.
    (void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none, matrix(rw, 2, 3),
                          pt::none, pp::rto_options::official(0.05, 0.05, -0.1));
    CHECK(rw[0] == 0.0);
    CHECK(rw[1] == 10.0);
    pp::rto_options o;
    o.score_clip = 0;
    (void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none, matrix(rw, 2, 3),
                          pt::none, o);
    CHECK(rw[1] == doctest::Approx(12.0 + 0.01));
    o.kl_coef = -0.1;
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3), pt::none, o),
                         Contains("posttrain::preference::rto_rewards: argument 'options': kl_coef must be >= 0"), pt::invalid_argument);
    o = pp::rto_options{};
    o.score_clip = -1;
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3), pt::none, o),
                         Contains("score_clip must be >= 0"), pt::invalid_argument);
    // Non-finite values where they are used.
    auto bad = old;
    bad[4] = nan_v;
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(bad, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3)),
                         Contains("argument 'log_probs': non-finite value at a position that is used [1, 1]"), pt::invalid_argument);
    const std::vector<double> d_bad = {0, 0, nan_v, 0, 0, 0};  // added at every position, masked ones too
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3),
                                               matrix(d_bad, 2, 3), matrix(rw, 2, 3)),
                         Contains("argument 'token_rewards': non-finite value at a position that is used [0, 2]"), pt::invalid_argument);
    const std::vector<double> s_bad = {nan_v, 1.0};
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, s_bad, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3)),
                         Contains("argument 'scores': non-finite value at index 0"), pt::invalid_argument);
    const std::vector<double> s3 = {1.0, 2.0, 3.0};
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, s3, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3)),
                         Contains("argument 'scores': must have one entry per row"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 3, 2)),
                         Contains("argument 'rewards': shape must match 'log_probs'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 2, 3), matrix(ref, 2, 3), matrix(m, 2, 3), pt::none,
                                               matrix(rw, 2, 3), matrix(rw, 2, 3)),
                         Contains("argument 'kl': the output overlaps the output 'rewards'"), pt::invalid_argument);
    auto aliased = old;
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(std::as_const(aliased), 2, 3), matrix(ref, 2, 3),
                                               matrix(m, 2, 3), pt::none, matrix(aliased, 2, 3)),
                         Contains("argument 'rewards': the output overlaps the input 'log_probs'"), pt::invalid_argument);
}

TEST_CASE("rto_rewards: a mask selects (any nonzero entry is one valid token), it does not weight the KL penalty") {
    // The module's rule (sequence.hpp): a nonzero mask entry of any value counts as one token. A float
    // mask of 0.5 must give the rewards, kl, tokens and mean_kl of a mask of 1.
    const std::vector<double> old = {-1, -2, -3, -0.5}, ref = {-1.5, -1, -2, -0.7}, scores = {1.0};
    const std::vector<double> one = {1, 1, 1, 0}, half = {0.5, 0.5, 2.0, 0};
    std::vector<double> r1(4), rh(4), k1(4), kh(4);
    pp::rto_options o;
    o.kl_coef = 0.5;
    const auto a = pp::rto_rewards(pt::exec::seq, scores, matrix(old, 1, 4), matrix(ref, 1, 4), matrix(one, 1, 4), pt::none,
                                   matrix(r1, 1, 4), matrix(k1, 1, 4), o);
    const auto b = pp::rto_rewards(pt::exec::seq, scores, matrix(old, 1, 4), matrix(ref, 1, 4), matrix(half, 1, 4), pt::none,
                                   matrix(rh, 1, 4), matrix(kh, 1, 4), o);
    CHECK(rh == r1);
    CHECK(kh == k1);
    CHECK(b.tokens == a.tokens);
    CHECK(b.mean_kl == a.mean_kl);
    CHECK(r1[0] == -0.5 * 0.5);
}

TEST_CASE("rto_rewards: a kl output over the scores is refused (kl is written before the scores are read)") {
    const std::vector<double> old = {-1, -2, -3, -0.5}, ref = {-1.5, -1, -2, -0.7}, m = {1, 1, 1, 0};
    std::vector<double> rw(4), kl = {1.0, 0, 0, 0};
    const pt::tensor_view<const double, 1> scores(kl.data(), 1);
    CHECK_THROWS_WITH_AS((void)pp::rto_rewards(pt::exec::seq, scores, matrix(old, 1, 4), matrix(ref, 1, 4), matrix(m, 1, 4), pt::none,
                                               matrix(rw, 1, 4), matrix(kl, 1, 4)),
                         doctest::Contains("posttrain::preference::rto_rewards: argument 'kl': the output overlaps the input 'scores'"),
                         pt::invalid_argument);
}
