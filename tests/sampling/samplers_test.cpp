// Samplers: Philox known answers; empirical frequencies within binomial bounds (fixed seeds, so the
// checks are deterministic); no duplicates without replacement; reproducibility from a seed; seq ==
// par bitwise; MMR1's mixed sampler composition; edge cases and bad input.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/sampling/samplers.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace sp = posttrain::sampling;
using pt::index_t;

namespace {

// |count - n p| within 5 standard deviations of Binomial(n, p).
void check_binomial(index_t count, index_t n, double p) {
    const double mean = double(n) * p, sd = std::sqrt(double(n) * p * (1 - p));
    INFO("count " << count << " expected " << mean << " +- 5 * " << sd);
    CHECK(std::fabs(double(count) - mean) <= 5 * sd + 1e-9);
}

std::vector<index_t> counts_of(const std::vector<index_t>& idx, std::size_t n) {
    std::vector<index_t> c(n, 0);
    for (index_t i : idx) ++c[std::size_t(i)];
    return c;
}

bool is_permutation_of_n(std::vector<index_t> v) {
    std::sort(v.begin(), v.end());
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v[i] != index_t(i)) return false;
    return true;
}

}  // namespace

TEST_CASE("philox4x32_10: Random123 known-answer vectors and the documented uniform conversions") {
    const auto b0 = pt::philox4x32_10(0)(pt::philox_block{{0, 0, 0, 0}});
    CHECK(b0.v[0] == 0x6627e8d5u);
    CHECK(b0.v[1] == 0xe169c58du);
    CHECK(b0.v[2] == 0xbc57ac4cu);
    CHECK(b0.v[3] == 0x9b00dbd8u);
    const auto b1 = pt::philox4x32_10(~0ull)(pt::philox_block{{~0u, ~0u, ~0u, ~0u}});
    CHECK(b1.v[0] == 0x408f276du);
    CHECK(b1.v[3] == 0x6d5451fdu);
    const auto b2 = pt::philox4x32_10(0x299f31d0a4093822ull)(pt::philox_block{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}});
    CHECK(b2.v[0] == 0xd16cfe09u);
    CHECK(b2.v[1] == 0x94fdccebu);
    CHECK(b2.v[2] == 0x5001e420u);
    CHECK(b2.v[3] == 0x24126ea1u);
    // block(stream, index) is the raw bijection of {lo(index), hi(index), lo(stream), hi(stream)}.
    const auto g = pt::philox4x32_10(7);
    const auto viaBlock = g.block(0x0000000500000003ull, 0x0000000200000001ull);
    const auto raw = g(pt::philox_block{{1, 2, 3, 5}});
    CHECK(viaBlock.v[0] == raw.v[0]);
    CHECK(viaBlock.v[3] == raw.v[3]);
    static_assert(pt::unit_closed_open(0) == 0.0);
    static_assert(pt::unit_closed_open(~0ull) == 1.0 - 0x1.0p-53);
    static_assert(pt::unit_open_closed(0) == 0x1.0p-53);
    static_assert(pt::unit_open_closed(~0ull) == 1.0);
    // splitmix64 is unchanged (other modules' seeds depend on it).
    CHECK(pt::splitmix64(0).next() == 0xE220A8397B1DCDAFull);
}

TEST_CASE_TEMPLATE("sample_with_replacement: frequencies within binomial bounds, zero weights never drawn, seq bitwise",
                   B, POSTTRAIN_HOST_BACKENDS) {
    const std::vector<double> w{1, 2, 3, 4, 0, 10};
    const double total = 20;
    const index_t n = 1 << 17;  // above the parallel grain, so par really splits
    std::vector<index_t> idx(n), ref(n);
    const sp::weighted_options o{42, 0};
    const auto r = sp::sample_with_replacement(B::policy(), w, idx, o);
    CHECK(r.drawn == n);
    CHECK_FALSE(r.uniform_fallback);
    (void)sp::sample_with_replacement(pt::exec::seq, w, ref, o);
    CHECK(idx == ref);
    const auto c = counts_of(idx, w.size());
    CHECK(c[4] == 0);
    for (std::size_t i = 0; i < w.size(); ++i) check_binomial(c[i], n, w[i] / total);

    // float weights and int32 output give the same draws; a table built once gives them too.
    const std::vector<float> wf{1, 2, 3, 4, 0, 10};
    std::vector<std::int32_t> idx32(n);
    (void)sp::sample_with_replacement(B::policy(), wf, idx32, o);
    CHECK(std::equal(idx32.begin(), idx32.end(), ref.begin()));
    const sp::alias_table t = sp::make_alias_table(w);
    (void)sp::sample_with_replacement(B::policy(), t, idx, o);
    CHECK(idx == ref);

    // Same seed, same draws; another seed or stream, other draws.
    (void)sp::sample_with_replacement(B::policy(), w, idx, sp::weighted_options{43, 0});
    CHECK(idx != ref);
    (void)sp::sample_with_replacement(B::policy(), w, idx, sp::weighted_options{42, 1});
    CHECK(idx != ref);
    // Draw d does not depend on how many are drawn: a prefix of a longer draw.
    std::vector<index_t> few(10);
    (void)sp::sample_with_replacement(B::policy(), w, few, o);
    CHECK(std::equal(few.begin(), few.end(), ref.begin()));
}

TEST_CASE("sample_with_replacement: skewed and single-item weights") {
    std::vector<double> w(1000, 1e-6);
    w[17] = 1.0;
    std::vector<index_t> idx(1 << 16);
    (void)sp::sample_with_replacement(pt::exec::seq, w, idx, {3});
    const auto c = counts_of(idx, w.size());
    const double total = 1.0 + 999e-6;
    check_binomial(c[17], index_t(idx.size()), 1.0 / total);
    std::vector<double> one{0.5};
    (void)sp::sample_with_replacement(pt::exec::seq, one, idx, {3});
    CHECK(std::all_of(idx.begin(), idx.end(), [](index_t i) { return i == 0; }));
}

TEST_CASE("weighted samplers: all weights zero -> uniform fallback (default) or an error") {
    const std::vector<double> w(5, 0.0);
    std::vector<index_t> idx(50000);
    const auto r = sp::sample_with_replacement(pt::exec::seq, w, idx, {9});
    CHECK(r.uniform_fallback);
    for (index_t c : counts_of(idx, 5)) check_binomial(c, index_t(idx.size()), 0.2);
    std::vector<index_t> k3(3);
    CHECK(sp::sample_without_replacement(pt::exec::seq, w, k3, {9}).uniform_fallback);
    CHECK(std::set<index_t>(k3.begin(), k3.end()).size() == 3);
    CHECK_THROWS_WITH_AS((void)sp::sample_with_replacement(pt::exec::seq, w, idx, {9, 0, sp::zero_weights::error}),
                         doctest::Contains("every weight is zero"), pt::invalid_argument);
}

TEST_CASE("weighted samplers: bad input gives invalid_argument naming the function and argument") {
    std::vector<index_t> idx(4);
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_AS((void)sp::sample_with_replacement(pt::exec::seq, std::vector<double>{1, -1, 2}, idx),
                         "posttrain::sampling::sample_with_replacement: argument 'weights': weight 1 is negative",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)sp::sample_with_replacement(pt::exec::seq, std::vector<double>{1, nan}, idx),
                         "posttrain::sampling::sample_with_replacement: argument 'weights': weight 1 is not finite",
                         pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_without_replacement(pt::exec::seq, std::vector<double>{inf, 1}, idx), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(pt::exec::seq, std::vector<double>{}, idx), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(pt::exec::seq, std::vector<double>{1e308, 1e308}, idx), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::sample_with_replacement(pt::exec::seq, std::vector<double>{1}, idx, {0, std::uint64_t{1} << 56}),
                    pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)sp::sample_without_replacement(pt::exec::seq, std::vector<double>{1, 0, 2}, std::vector<index_t>(3)),
                         doctest::Contains("only 2 have a positive weight"), pt::invalid_argument);
    sp::alias_table broken;
    CHECK_THROWS_AS((void)sp::sample_with_replacement(pt::exec::seq, broken, idx), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("sample_without_replacement: distinct, weighted first draws, reproducible, seq bitwise", B,
                   POSTTRAIN_HOST_BACKENDS) {
    const std::vector<double> w{1, 2, 3, 4, 0, 10};
    const double total = 20;
    std::vector<index_t> k5(5), ref(5);
    std::vector<index_t> first(w.size(), 0);
    const index_t trials = 20000;
    for (index_t s = 0; s < trials; ++s) {
        (void)sp::sample_without_replacement(B::policy(), w, k5, {11, std::uint64_t(s)});
        CHECK(std::set<index_t>(k5.begin(), k5.end()).size() == 5);
        CHECK(std::find(k5.begin(), k5.end(), 4) == k5.end());
        ++first[std::size_t(k5[0])];
    }
    for (std::size_t i = 0; i < w.size(); ++i) check_binomial(first[i], trials, w[i] / total);

    // A large draw: par equals seq bitwise, and every index is distinct.
    std::vector<double> big(1 << 16);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = double(i % 7);
    std::vector<index_t> a(4000), b(4000);
    (void)sp::sample_without_replacement(B::policy(), big, a, {5, 2});
    (void)sp::sample_without_replacement(pt::exec::seq, big, b, {5, 2});
    CHECK(a == b);
    CHECK(std::set<index_t>(a.begin(), a.end()).size() == a.size());
    CHECK(std::none_of(a.begin(), a.end(), [](index_t i) { return i % 7 == 0; }));
    // k = every positive weight: all of them.
    (void)sp::sample_without_replacement(B::policy(), w, ref, {1});
    std::sort(ref.begin(), ref.end());
    CHECK(ref == std::vector<index_t>{0, 1, 2, 3, 5});
}

TEST_CASE_TEMPLATE("random_permutation: a permutation, uniform positions, seq bitwise", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<index_t> p(1 << 16), q(1 << 16);
    sp::random_permutation(B::policy(), p, {3, 1});
    sp::random_permutation(pt::exec::seq, q, {3, 1});
    CHECK(p == q);
    CHECK(is_permutation_of_n(p));
    std::vector<index_t> small(4), at0(4, 0);
    for (index_t s = 0; s < 8000; ++s) {
        sp::random_permutation(B::policy(), small, {3, std::uint64_t(s)});
        ++at0[std::size_t(small[0])];
    }
    for (index_t c : at0) check_binomial(c, 8000, 0.25);
    std::vector<index_t> empty;
    sp::random_permutation(B::policy(), empty);
}

TEST_CASE_TEMPLATE("mixed_curriculum_sampler: composition, interleaving, pool cycling, reproducibility", B,
                   POSTTRAIN_HOST_BACKENDS) {
    const index_t n = 40, bs = 8;
    std::vector<double> w(n);
    for (index_t i = 0; i < n; ++i) w[std::size_t(i)] = double(i % 5);  // every 5th item has weight 0
    sp::mixed_curriculum_options o;
    o.batch_size = bs;
    o.mixture_ratio = 0.5;
    o.seed = 123;
    sp::mixed_curriculum_sampler s(B::policy(), w, o);
    CHECK(s.weighted_per_batch() == 4);
    CHECK(s.random_per_batch() == 4);
    CHECK(is_permutation_of_n(s.random_pool()));
    const std::vector<index_t> first = s.indices(B::policy());
    REQUIRE(first.size() == std::size_t(n));
    // Odd positions of each batch are consecutive pool entries; even positions are weighted draws.
    for (index_t j = 0; j < n; ++j) {
        if (j % 2 == 1) CHECK(first[std::size_t(j)] == s.random_pool()[std::size_t(j / 2)]);
        else CHECK(first[std::size_t(j)] % 5 != 0);
    }
    CHECK(s.cached());
    CHECK(&s.indices(B::policy()) == &s.indices(B::policy()));
    // Reproducible from the seed, and seq == par.
    sp::mixed_curriculum_sampler t(pt::exec::seq, w, o);
    CHECK(t.indices(pt::exec::seq) == first);
    // Three batches trained, then an epoch reset: the pool resumes at 3 * 4 and wraps at its end
    // (restarting at 0 when a slice would run past it).
    s.consume(3);
    s.reset();
    const std::vector<index_t> second = s.indices(B::policy());
    CHECK(s.regenerations() == 2);
    CHECK(s.random_position_start() == 12);
    std::vector<index_t> expected_random;
    index_t pos = 12;
    for (index_t b = 0; b < n / bs; ++b) {
        if (pos + 4 > n) pos = 0;
        for (index_t j = 0; j < 4; ++j) expected_random.push_back(s.random_pool()[std::size_t(pos + j)]);
        pos += 4;
    }
    for (index_t j = 0; j < n / 2; ++j) CHECK(second[std::size_t(2 * j + 1)] == expected_random[std::size_t(j)]);
    CHECK(second != first);  // a regeneration draws new weighted indices
    // update_weights drops the cache; the weighted half follows the new weights.
    std::vector<double> only7(n, 0.0);
    only7[7] = 1.0;
    s.update_weights(only7);
    CHECK_FALSE(s.cached());
    const std::vector<index_t> third = s.indices(B::policy());
    for (index_t j = 0; j < n; j += 2) CHECK(third[std::size_t(j)] == 7);
    CHECK_THROWS_AS(s.update_weights(std::vector<double>(n + 1, 1.0)), pt::invalid_argument);
}

TEST_CASE("mixed_curriculum_sampler: weighted half follows the weights over many regenerations") {
    const std::vector<double> w{0, 1, 2, 3, 4, 0, 0, 0, 0, 0};
    sp::mixed_curriculum_options o;
    o.batch_size = 10;
    o.mixture_ratio = 0.6;
    o.seed = 5;
    sp::mixed_curriculum_sampler s(pt::exec::seq, w, o);
    const index_t epochs = 3000;
    // One batch of 10: w0 r0 w1 r1 w2 r2 w3 r3 w4 w5, so the weighted slots are 0, 2, 4, 6, 8, 9.
    std::vector<index_t> wc(w.size(), 0);
    for (index_t e = 0; e < epochs; ++e) {
        const auto& idx = s.indices();
        for (std::size_t j : {0u, 2u, 4u, 6u, 8u, 9u}) ++wc[std::size_t(idx[j])];
        s.reset();
    }
    for (std::size_t i = 0; i < w.size(); ++i) check_binomial(wc[i], 6 * epochs, w[i] / 10.0);
}

TEST_CASE("mixed_curriculum_sampler: dataset smaller than the batch, ratio 0 and 1, tail batch split") {
    // N < B: one tail batch of N, split int(N * ratio) weighted / the rest from the pool.
    sp::mixed_curriculum_options o = sp::mixed_curriculum_options::mmr1(8, 0.5, 1);
    sp::mixed_curriculum_sampler s(pt::exec::seq, std::vector<double>{1, 1, 1, 1, 1}, o);
    const auto idx = s.indices();
    REQUIRE(idx.size() == 5);
    CHECK(idx[1] == s.random_pool()[0]);
    CHECK(idx[3] == s.random_pool()[1]);
    CHECK(idx[4] == s.random_pool()[2]);
    // ratio 0: the pool in order; ratio 1: no pool entry consumed.
    o.mixture_ratio = 0.0;
    sp::mixed_curriculum_sampler r0(pt::exec::seq, std::vector<double>(9, 1.0), o);
    CHECK(r0.indices() == r0.random_pool());
    // 100 * 0.29 truncates to 28 (Python's int of 28.999999999999996).
    o = sp::mixed_curriculum_options::mmr1(100, 0.29, 1);
    sp::mixed_curriculum_sampler t(pt::exec::seq, std::vector<double>(230, 1.0), o);
    CHECK(t.weighted_per_batch() == 28);
    CHECK(t.indices().size() == 230);
}

TEST_CASE("mixed_curriculum_sampler: all-zero weights, bad options, bad replay hooks") {
    const std::vector<double> zero(6, 0.0);
    sp::mixed_curriculum_options o;
    o.batch_size = 2;
    sp::mixed_curriculum_sampler uniform(pt::exec::seq, zero, o);  // default: uniform fallback
    CHECK(uniform.indices().size() == 6);
    sp::mixed_curriculum_sampler strict(pt::exec::seq, zero, sp::mixed_curriculum_options::mmr1(2));
    CHECK_THROWS_WITH_AS((void)strict.indices(), doctest::Contains("invalid multinomial distribution"), pt::invalid_argument);
    o.batch_size = 0;
    CHECK_THROWS_AS(sp::mixed_curriculum_sampler(pt::exec::seq, zero, o), pt::invalid_argument);
    o.batch_size = 2;
    o.mixture_ratio = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(sp::mixed_curriculum_sampler(pt::exec::seq, zero, o), pt::invalid_argument);
    o.mixture_ratio = 1.5;
    CHECK_THROWS_AS(sp::mixed_curriculum_sampler(pt::exec::seq, zero, o), pt::invalid_argument);
    o.mixture_ratio = 0.5;
    CHECK_THROWS_AS(sp::mixed_curriculum_sampler(pt::exec::seq, std::vector<double>{1, -1}, o), pt::invalid_argument);
    CHECK_THROWS_AS(sp::mixed_curriculum_sampler(pt::exec::seq, std::vector<double>{}, o), pt::invalid_argument);
    o.replay.random_pool = [](std::span<index_t> p) { std::fill(p.begin(), p.end(), 0); };
    CHECK_THROWS_WITH_AS(sp::mixed_curriculum_sampler(pt::exec::seq, std::vector<double>{1, 1}, o),
                         doctest::Contains("options.replay.random_pool"), pt::invalid_argument);
    o.replay.random_pool = {};
    o.replay.weighted_draws = [](index_t, std::span<const double>, std::span<index_t> d) { std::fill(d.begin(), d.end(), 9); };
    sp::mixed_curriculum_sampler bad(pt::exec::seq, std::vector<double>{1, 1}, o);
    CHECK_THROWS_WITH_AS((void)bad.indices(), doctest::Contains("options.replay.weighted_draws"), pt::invalid_argument);
    CHECK_THROWS_AS(bad.consume(-1), pt::invalid_argument);
}

TEST_CASE("refresh_schedule: every T_update steps, or at each epoch's end when 0") {
    const sp::refresh_schedule every4{4}, per_epoch{0};
    CHECK_FALSE(every4.after_step(3));
    CHECK(every4.after_step(4));
    CHECK(every4.after_step(8));
    CHECK_FALSE(every4.at_epoch_end());
    CHECK_FALSE(per_epoch.after_step(4));
    CHECK(per_epoch.at_epoch_end());
}

TEST_CASE_TEMPLATE("stratified_sample: allocation per bucket, distinct, bucket order, seq bitwise", B, POSTTRAIN_HOST_BACKENDS) {
    // Scores 0..99: four equal-width buckets of 25.
    std::vector<double> s(100);
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = double(i);
    std::vector<index_t> idx(10), ref(10);
    const auto r = sp::stratified_sample(B::policy(), s, idx, {4, sp::bucketing::equal_width, sp::allocation::proportional, 7});
    (void)sp::stratified_sample(pt::exec::seq, s, ref, {4, sp::bucketing::equal_width, sp::allocation::proportional, 7});
    CHECK(idx == ref);
    CHECK(r.bucket_size == std::vector<index_t>{25, 25, 25, 25});
    CHECK(r.bucket_drawn == std::vector<index_t>{3, 3, 2, 2});  // largest remainders, ties to lower buckets
    CHECK(std::set<index_t>(idx.begin(), idx.end()).size() == 10);
    for (std::size_t j = 0; j < 10; ++j) {
        const index_t bucket = j < 3 ? 0 : j < 6 ? 1 : j < 8 ? 2 : 3;
        CHECK(idx[j] / 25 == bucket);
    }
    // Skewed scores: proportional follows the counts, equal allocation caps the small bucket.
    std::vector<double> skew(20, 0.0);
    skew[0] = 1.0;  // bucket 1 (top) has one item
    std::vector<index_t> six(6);
    auto p = sp::stratified_sample(B::policy(), skew, six, {2});
    CHECK(p.bucket_drawn == std::vector<index_t>{6, 0});
    p = sp::stratified_sample(B::policy(), skew, six, {2, sp::bucketing::equal_width, sp::allocation::equal});
    CHECK(p.bucket_drawn == std::vector<index_t>{5, 1});
    CHECK(six[5] == 0);
    // Quantile buckets split by rank.
    p = sp::stratified_sample(B::policy(), skew, six, {4, sp::bucketing::quantile});
    CHECK(p.bucket_size == std::vector<index_t>{5, 5, 5, 5});
    // All-equal scores: one bucket.
    p = sp::stratified_sample(B::policy(), std::vector<double>(8, 0.5), six, {3});
    CHECK(p.bucket_size == std::vector<index_t>{8, 0, 0});
    // Uniform within a bucket: each item of 25 drawn with probability 3/25.
    std::vector<index_t> hits(100, 0);
    for (index_t t = 0; t < 4000; ++t) {
        (void)sp::stratified_sample(B::policy(), s, idx, {4, sp::bucketing::equal_width, sp::allocation::proportional, 7, std::uint64_t(t)});
        for (index_t i : idx) ++hits[std::size_t(i)];
    }
    check_binomial(hits[0], 4000, 3.0 / 25);
    check_binomial(hits[99], 4000, 2.0 / 25);
}

TEST_CASE("stratified_sample: bad input") {
    std::vector<index_t> idx(3);
    CHECK_THROWS_AS((void)sp::stratified_sample(pt::exec::seq, std::vector<double>{1, 2}, idx), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::stratified_sample(pt::exec::seq, std::vector<double>{1, std::nan(""), 3}, idx), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::stratified_sample(pt::exec::seq, std::vector<double>{1, 2, 3}, idx, {0}), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::stratified_sample(pt::exec::seq, std::vector<double>{}, idx), pt::invalid_argument);
}

TEST_CASE("pad_list and padded_sequential_indices (MMR1)") {
    CHECK(sp::pad_list(std::vector<int>{1, 2, 3}, 2) == std::vector<int>{1, 2, 3, 3});
    CHECK(sp::pad_list(std::vector<int>{5, 6}, 5) == std::vector<int>{5, 6, 6, 6, 6});
    CHECK(sp::pad_list(std::vector<int>{}, 3).empty());
    CHECK(sp::padded_sequential_indices(10, 4) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9});
    CHECK(sp::padded_sequential_indices(0, 4).empty());
    CHECK_THROWS_AS((void)sp::pad_list(std::vector<int>{1}, 0), pt::invalid_argument);
    CHECK_THROWS_AS((void)sp::padded_sequential_indices(-1, 4), pt::invalid_argument);
}
