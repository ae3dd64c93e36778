// Filters: DAPO dynamic sampling with refill, PF-PPO weights / resampling / per-group selection,
// DAPO's overlong penalty and truncation masks; seq == par bitwise; bad input.

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/sampling/filters.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace sp = posttrain::sampling;
using pt::index_t;

TEST_CASE_TEMPLATE("dynamic_sampling_filter: drops zero-variance groups and refills to the target in order", B,
                   POSTTRAIN_HOST_BACKENDS) {
    // Groups of 4: the batch (groups 0-2) then a candidate pool (groups 3-6).
    const std::vector<double> r{1, 1, 1, 1,  0, 1, 0, 0,  0, 0, 0, 0,   // batch: zero var, varied, zero var
                                1, 0, 1, 1,  1, 1, 1, 1,  0, 1, 1, 1,  0.5, 0.5, 0.5, 0.25};
    std::vector<std::uint8_t> keep(7);
    auto res = sp::dynamic_sampling_filter(B::policy(), r, pt::uniform_groups{4}, keep, sp::dynamic_sampling_options::dapo(3));
    CHECK(res.eligible == 4);
    CHECK(res.zero_variance == 3);
    CHECK(res.kept == 3);
    CHECK(res.filled);
    CHECK(keep == std::vector<std::uint8_t>{0, 1, 0, 1, 0, 1, 0});
    // Not enough eligible groups: all of them, and filled = false (generate more).
    res = sp::dynamic_sampling_filter(B::policy(), r, pt::uniform_groups{4}, keep, sp::dynamic_sampling_options::dapo(6));
    CHECK(res.kept == 4);
    CHECK_FALSE(res.filled);
    CHECK(keep == std::vector<std::uint8_t>{0, 1, 0, 1, 0, 1, 1});
    // Random refill: reproducible, distinct, only eligible groups, same under every policy.
    sp::dynamic_sampling_options o = sp::dynamic_sampling_options::dapo(2);
    o.order = sp::refill::random;
    o.seed = 4;
    std::vector<std::uint8_t> a(7), b(7);
    (void)sp::dynamic_sampling_filter(B::policy(), r, pt::uniform_groups{4}, a, o);
    (void)sp::dynamic_sampling_filter(pt::exec::seq, r, pt::uniform_groups{4}, b, o);
    CHECK(a == b);
    index_t kept = 0;
    for (std::size_t g = 0; g < a.size(); ++g) {
        kept += a[g];
        if (g == 0 || g == 2 || g == 4) CHECK(a[g] == 0);
    }
    CHECK(kept == 2);
    // Over many seeds every eligible group is picked with probability 2/4.
    std::vector<index_t> hits(7, 0);
    for (std::uint64_t s = 0; s < 4000; ++s) {
        o.stream = s;
        (void)sp::dynamic_sampling_filter(B::policy(), r, pt::uniform_groups{4}, a, o);
        for (std::size_t g = 0; g < 7; ++g) hits[g] += a[g];
    }
    for (std::size_t g : {1u, 3u, 5u, 6u}) CHECK(std::fabs(double(hits[g]) - 2000) < 5 * std::sqrt(4000 * 0.25));
}

TEST_CASE("dynamic_sampling_filter: singletons, ragged groups, bad input") {
    const std::vector<double> r{3, 1, 1, 2, 5};
    const std::vector<std::int64_t> off{0, 1, 3, 3, 5};  // {3}, {1,1}, {}, {2,5}
    std::vector<float> keep(4);
    auto res = sp::dynamic_sampling_filter(pt::exec::seq, r, pt::ragged(off), keep, sp::dynamic_sampling_options::dapo(4));
    CHECK(keep == std::vector<float>{1, 0, 0, 1});
    CHECK(res.eligible == 2);
    CHECK(res.zero_variance == 2);
    sp::dynamic_sampling_options o = sp::dynamic_sampling_options::dapo(4);
    o.keep_singletons = false;
    res = sp::dynamic_sampling_filter(pt::exec::seq, r, pt::ragged(off), keep, o);
    CHECK(keep == std::vector<float>{0, 0, 0, 1});
    CHECK_THROWS_AS((void)sp::dynamic_sampling_filter(pt::exec::seq, r, pt::ragged(off), keep, sp::dynamic_sampling_options::dapo(-1)),
                    pt::invalid_argument);
    std::vector<float> short_keep(3);
    CHECK_THROWS_AS((void)sp::dynamic_sampling_filter(pt::exec::seq, r, pt::ragged(off), short_keep, o), pt::invalid_argument);
    const std::vector<double> bad{1, std::nan(""), 1, 2, 5};
    CHECK_THROWS_AS((void)sp::dynamic_sampling_filter(pt::exec::seq, bad, pt::ragged(off), keep, o), pt::invalid_argument);
}

TEST_CASE("pf_ppo_weights: pow, max_min, max_random as verl computes them") {
    const std::vector<double> s{-2, 0.5, 3, 3, -2, 1};
    std::vector<double> w(s.size());
    sp::pf_ppo_weights(pt::exec::seq, s, w, sp::pf_ppo_options::verl(sp::pf_ppo_method::pow, 2.0));
    CHECK(w == std::vector<double>{4 + 1e-8, 0.25 + 1e-8, 9 + 1e-8, 9 + 1e-8, 4 + 1e-8, 1 + 1e-8});
    sp::pf_ppo_weights(pt::exec::seq, s, w, sp::pf_ppo_options::verl(sp::pf_ppo_method::max_min));
    CHECK(w == std::vector<double>{1 + 1e-8, 1e-8, 1 + 1e-8, 1 + 1e-8, 1 + 1e-8, 1e-8});
    sp::pf_ppo_weights(pt::exec::seq, s, w, sp::pf_ppo_options::verl(sp::pf_ppo_method::max_random));
    CHECK(w == std::vector<double>{0.1 + 1e-8, 0.1 + 1e-8, 0.4 + 1e-8, 0.4 + 1e-8, 0.1 + 1e-8, 0.1 + 1e-8});
    std::vector<float> wf(s.size());
    sp::pf_ppo_weights(pt::exec::seq, s, wf, sp::pf_ppo_options::verl(sp::pf_ppo_method::pow, 1.0));
    CHECK(wf[0] == doctest::Approx(2.0));
    CHECK_THROWS_AS(sp::pf_ppo_weights(pt::exec::seq, std::vector<double>{1, std::nan("")}, w), pt::invalid_argument);
    CHECK_THROWS_AS(sp::pf_ppo_weights(pt::exec::seq, s, std::vector<double>(2)), pt::invalid_argument);
    sp::pf_ppo_options bad;
    bad.epsilon = 0;
    CHECK_THROWS_AS(sp::pf_ppo_weights(pt::exec::seq, s, w, bad), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("pf_ppo_resample: draws in proportion to the weights, seeded, seq bitwise", B, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<double> s{0, 1, 2, 3};  // pow 2: weights 1e-8, 1, 4, 9
    std::vector<index_t> idx(1 << 16), ref(1 << 16);
    sp::pf_ppo_options o;
    o.seed = 8;
    (void)sp::pf_ppo_resample(B::policy(), s, idx, o);
    (void)sp::pf_ppo_resample(pt::exec::seq, s, ref, o);
    CHECK(idx == ref);
    std::vector<double> c(4, 0);
    for (index_t i : idx) c[std::size_t(i)] += 1;
    const double n = double(idx.size()), total = 14 + 1e-8;
    for (std::size_t i = 1; i < 4; ++i) {
        const double p = (double(i * i) + 1e-8) / total;
        CHECK(std::fabs(c[i] - n * p) < 5 * std::sqrt(n * p * (1 - p)));
    }
    CHECK(c[0] <= 1);
}

TEST_CASE_TEMPLATE("pf_ppo_select: best-of-N, best + random, best + worst per group", B, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<double> r{0.1, 0.9, 0.5, 0.3,  2, 2, 2, 2,  7};
    const std::vector<std::int64_t> off{0, 4, 8, 9};
    std::vector<std::uint8_t> keep(r.size()), ref(r.size());
    sp::pf_ppo_select_options o{sp::pf_ppo_selection::best_of_n};
    CHECK(sp::pf_ppo_select(B::policy(), r, pt::ragged(off), keep, o) == 3);
    CHECK(keep == std::vector<std::uint8_t>{0, 1, 0, 0, 1, 0, 0, 0, 1});
    o.strategy = sp::pf_ppo_selection::best_worst;
    CHECK(sp::pf_ppo_select(B::policy(), r, pt::ragged(off), keep, o) == 5);
    CHECK(keep == std::vector<std::uint8_t>{1, 1, 0, 0, 1, 1, 0, 0, 1});
    o.strategy = sp::pf_ppo_selection::best_random;
    o.seed = 3;
    std::vector<index_t> hits(r.size(), 0);
    for (std::uint64_t s = 0; s < 3000; ++s) {
        o.stream = s;
        CHECK(sp::pf_ppo_select(B::policy(), r, pt::ragged(off), keep, o) == 5);
        (void)sp::pf_ppo_select(pt::exec::seq, r, pt::ragged(off), ref, o);
        CHECK(keep == ref);
        CHECK(keep[1] == 1);
        for (std::size_t i = 0; i < r.size(); ++i) hits[i] += keep[i];
    }
    for (std::size_t i : {0u, 2u, 3u}) CHECK(std::fabs(double(hits[i]) - 1000) < 5 * std::sqrt(3000 * (2.0 / 9)));
    CHECK(hits[4] == 3000);
}

TEST_CASE_TEMPLATE("overlong_penalty: DAPO's soft punishment", B, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<std::int64_t> len{0, 16, 17, 20, 24, 30};
    std::vector<double> p(len.size());
    sp::overlong_penalty(B::policy(), len, p, sp::overlong_options::dapo(24, 8, 1.0));
    // expected length 16: no penalty up to 16, -(len - 16)/8 after, -1 at L_max, beyond as verl.
    CHECK(p == std::vector<double>{0, 0, -1.0 / 8, -4.0 / 8, -1.0, -14.0 / 8});
    sp::overlong_penalty(B::policy(), len, p, sp::overlong_options::dapo(24, 8, 0.5));
    CHECK(p[4] == -0.5);
    const auto d = sp::overlong_options::dapo();
    CHECK(d.max_length == 20480);
    CHECK(d.buffer_length == 4096);
    CHECK_THROWS_AS(sp::overlong_penalty(B::policy(), len, p, sp::overlong_options{24, 0, 1.0}), pt::invalid_argument);
    CHECK_THROWS_AS(sp::overlong_penalty(B::policy(), len, p, sp::overlong_options{4, 8, 1.0}), pt::invalid_argument);
    CHECK_THROWS_AS(sp::overlong_penalty(B::policy(), std::vector<std::int64_t>{-1}, std::vector<double>(1),
                                         sp::overlong_options::dapo(24, 8)),
                    pt::invalid_argument);
    CHECK_THROWS_AS(sp::overlong_penalty(B::policy(), len, std::vector<double>(2), sp::overlong_options::dapo(24, 8)),
                    pt::invalid_argument);
}

TEST_CASE_TEMPLATE("truncated_by_length and mask_truncated", B, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<std::int32_t> len{3, 5, 2};
    std::vector<std::uint8_t> trunc(3);
    CHECK(sp::truncated_by_length(B::policy(), len, trunc, 5) == 1);
    CHECK(trunc == std::vector<std::uint8_t>{0, 1, 0});
    std::vector<float> mask(3 * 5, 1.0f);
    pt::tensor_view<float, 2> m(mask.data(), 3, 5);
    CHECK(sp::mask_truncated(B::policy(), trunc, m) == 1);
    for (index_t i = 0; i < 3; ++i)
        for (index_t j = 0; j < 5; ++j) CHECK(m(i, j) == (i == 1 ? 0.0f : 1.0f));
    CHECK_THROWS_AS((void)sp::truncated_by_length(B::policy(), len, trunc, 0), pt::invalid_argument);
    std::vector<std::uint8_t> two(2);
    CHECK_THROWS_AS((void)sp::mask_truncated(B::policy(), two, m), pt::invalid_argument);
}

TEST_CASE("overlong_penalty, truncated_by_length and mask_truncated refuse an output over their input before writing") {
    std::vector<std::int64_t> buf{0, 16, 17, 20, 24, 30, 0, 0};
    const pt::tensor_view<const std::int64_t, 1> len(buf.data(), 6);
    // The double penalties two entries on would overwrite lengths 2.. before they are read.
    CHECK_THROWS_WITH_AS(sp::overlong_penalty(pt::exec::seq, len, pt::tensor_view<double, 1>(reinterpret_cast<double*>(buf.data() + 2), 6),
                                              sp::overlong_options::dapo(24, 8)),
                         doctest::Contains("'penalty': the output overlaps the input 'lengths'"), pt::invalid_argument);
    CHECK(buf == std::vector<std::int64_t>{0, 16, 17, 20, 24, 30, 0, 0});  // nothing written

    std::vector<std::int32_t> l{5, 9, 2, 0}, in_place{5, 9, 2};
    std::vector<std::int32_t> flags(3);
    CHECK(sp::truncated_by_length(pt::exec::seq, std::vector<std::int32_t>{5, 9, 2}, flags, 5) == 2);
    // The same view in place is fine (each length is read before its flag is written) ...
    CHECK(sp::truncated_by_length(pt::exec::seq, pt::tensor_view<const std::int32_t, 1>(in_place.data(), 3),
                                  pt::tensor_view<std::int32_t, 1>(in_place.data(), 3), 5) == 2);
    CHECK(in_place == flags);
    // ... a shifted one is not: flag 0 would overwrite length 1.
    CHECK_THROWS_WITH_AS((void)sp::truncated_by_length(pt::exec::seq, pt::tensor_view<const std::int32_t, 1>(l.data(), 3),
                                                       pt::tensor_view<std::int32_t, 1>(l.data() + 1, 3), 5),
                         doctest::Contains("'truncated': the output partly overlaps the input 'lengths'"), pt::invalid_argument);
    CHECK(l == std::vector<std::int32_t>{5, 9, 2, 0});

    // A token mask one past the flags would clear flag 1 while masking row 0.
    std::vector<std::uint8_t> t{1, 1, 0, 1};
    CHECK_THROWS_WITH_AS((void)sp::mask_truncated(pt::exec::seq, pt::tensor_view<const std::uint8_t, 1>(t.data(), 3),
                                                  pt::tensor_view<std::uint8_t, 2>(t.data() + 1, 3, 1)),
                         doctest::Contains("'token_mask': the output overlaps the input 'truncated'"), pt::invalid_argument);
    CHECK(t == std::vector<std::uint8_t>{1, 1, 0, 1});
}
