#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/core/groups.hpp>
#include <posttrain/core/random.hpp>
#include <posttrain/sampling/diversity.hpp>

#include "support/backends.hpp"

namespace pt = posttrain;
namespace smp = posttrain::sampling;
using pt::test::bitwise_equal;

namespace {

// A list of sequences as flat tokens + CSR offsets, all in one prompt unless told otherwise.
struct batch {
    std::vector<std::int64_t> tokens;
    std::vector<std::int64_t> offsets{0};
    explicit batch(const std::vector<std::vector<std::int64_t>>& seqs) {
        for (const auto& s : seqs) {
            tokens.insert(tokens.end(), s.begin(), s.end());
            offsets.push_back(std::int64_t(tokens.size()));
        }
    }
    std::vector<std::int64_t> one_prompt() const { return {0, std::int64_t(offsets.size() - 1)}; }
};

struct all_metrics {
    double distinct1, distinct2, bleu, bleu_div, edit_raw, edit_norm, edit_sq;
};

all_metrics metrics_of(const batch& b) {
    const auto prompt = b.one_prompt();
    std::vector<double> v(1);
    all_metrics m{};
    const auto run = [&](auto f) {
        (void)f(v);
        return v[0];
    };
    const auto seqs = pt::ragged(b.offsets);
    const auto groups = pt::ragged(prompt);
    m.distinct1 = run([&](auto& o) { return smp::distinct_n(pt::exec::seq, b.tokens, seqs, groups, o, {.n = 1}); });
    m.distinct2 = run([&](auto& o) { return smp::distinct_n(pt::exec::seq, b.tokens, seqs, groups, o, {.n = 2}); });
    m.bleu = run([&](auto& o) { return smp::self_bleu(pt::exec::seq, b.tokens, seqs, groups, o); });
    m.bleu_div = run([&](auto& o) { return smp::self_bleu_diversity(pt::exec::seq, b.tokens, seqs, groups, o); });
    m.edit_raw = run([&](auto& o) {
        return smp::pairwise_edit_distance(pt::exec::seq, b.tokens, seqs, groups, o, smp::edit_distance_options::mmr1());
    });
    m.edit_norm = run([&](auto& o) { return smp::pairwise_edit_distance(pt::exec::seq, b.tokens, seqs, groups, o); });
    m.edit_sq = run([&](auto& o) {
        return smp::pairwise_edit_distance(pt::exec::seq, b.tokens, seqs, groups, o, smp::edit_distance_options::paper());
    });
    return m;
}

}  // namespace

TEST_CASE("diversity: identical sequences") {
    const batch b({{5, 6, 7, 8, 9}, {5, 6, 7, 8, 9}, {5, 6, 7, 8, 9}, {5, 6, 7, 8, 9}});
    const auto m = metrics_of(b);
    CHECK(m.distinct1 == 0.25);  // 5 unique / 20
    CHECK(m.distinct2 == 0.25);  // 4 unique / 16
    CHECK(m.bleu == 1.0);        // every order matches fully, no brevity penalty: exactly 1
    CHECK(m.bleu_div == 0.0);
    CHECK(m.edit_raw == 0.0);
    CHECK(m.edit_norm == 0.0);
    CHECK(m.edit_sq == 0.0);
}

TEST_CASE("diversity: disjoint sequences") {
    const batch b({{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}});
    const auto m = metrics_of(b);
    CHECK(m.distinct1 == 1.0);
    CHECK(m.distinct2 == 1.0);
    CHECK(m.bleu == 0.0);  // no unigram match: NLTK returns 0 whatever the smoothing
    CHECK(m.bleu_div == 1.0);
    CHECK(m.edit_raw == 4.0);  // four substitutions per pair
    CHECK(m.edit_norm == 1.0);
    CHECK(m.edit_sq == 1.0);
}

TEST_CASE("diversity: fewer than two sequences give 0 (distinct-n is still computed)") {
    const batch one({{1, 2, 3, 4}});
    const auto m = metrics_of(one);
    CHECK(m.distinct1 == 1.0);
    CHECK(m.bleu == 0.0);
    CHECK(m.bleu_div == 0.0);  // not 1 - 0: no diversity without a second sequence, as MMR1's code
    CHECK(m.edit_raw == 0.0);
    CHECK(m.edit_norm == 0.0);

    // An empty prompt (no sequences at all) and a prompt of one empty sequence.
    const batch b({{}, {1, 2}});
    const std::vector<std::int64_t> prompts{0, 0, 1, 2};  // prompt 0 empty, 1: {}, 2: {1, 2}
    std::vector<double> v(3, -1.0);
    const auto res = smp::self_bleu_diversity(pt::exec::seq, b.tokens, pt::ragged(b.offsets), pt::ragged(prompts), v);
    CHECK(v == std::vector<double>{0.0, 0.0, 0.0});
    CHECK(res.groups == 3);
    CHECK(res.small_groups == 3);
    CHECK(res.empty_sequences == 1);
    (void)smp::distinct_n(pt::exec::seq, b.tokens, pt::ragged(b.offsets), pt::ragged(prompts), v, {.n = 2});
    CHECK(v == std::vector<double>{0.0, 0.0, 1.0});  // no bigram -> 0
}

TEST_CASE("diversity: empty sequences among others") {
    const batch b({{}, {1, 2, 3}, {1, 2, 4}});
    const auto m = metrics_of(b);
    CHECK(m.distinct1 == doctest::Approx(4.0 / 6.0));
    CHECK(m.edit_raw == doctest::Approx(7.0 / 3.0));          // 3, 3, 1
    CHECK(m.edit_norm == doctest::Approx((1 + 1 + 1.0 / 3) / 3));
    // The empty hypothesis scores 0; {1,2,3} vs {1,2,4} (and back): p1 = 2/3, p2 = 1/2, p3 = 0.1/1.
    const double pair = std::cbrt(2.0 / 3 * 0.5 * 0.1);
    CHECK(m.bleu == doctest::Approx(2 * pair / 3).epsilon(1e-14));

    const batch two_empty({{}, {}});
    const auto e = metrics_of(two_empty);
    CHECK(e.edit_norm == 0.0);  // two empty sequences are identical
    CHECK(e.edit_raw == 0.0);
    CHECK(e.bleu == 0.0);
    CHECK(e.distinct1 == 0.0);
}

TEST_CASE("self_bleu: hand-computed precisions, smoothing, brevity penalty and clipping") {
    // Swapped pairs: p1 = 1, p2 = 1/5, p3 = method1 0.1/4; equal lengths, bp = 1.
    CHECK(metrics_of(batch({{1, 2, 3, 4, 5, 6}, {2, 1, 3, 4, 6, 5}})).bleu == doctest::Approx(std::cbrt(0.005)).epsilon(1e-15));

    // Brevity penalty against the closest reference: the short hypothesis pays exp(1 - 6/3).
    const double shorter = std::exp(1.0 - 2.0), longer = std::cbrt(3.0 / 6 * 2.0 / 5 * 1.0 / 4);
    CHECK(metrics_of(batch({{1, 2, 3}, {1, 2, 3, 4, 5, 6}})).bleu == doctest::Approx((shorter + longer) / 2).epsilon(1e-15));

    // Clipping: [1,1,1,1] against [1,1] matches 2 of 4 unigrams; [1,1] against [1,1,1,1] matches 2 of 2
    // but pays exp(1 - 4/2).
    std::vector<double> v(1);
    const batch c({{1, 1, 1, 1}, {1, 1}});
    const auto prompt = c.one_prompt();
    (void)smp::self_bleu(pt::exec::seq, c.tokens, pt::ragged(c.offsets), pt::ragged(prompt), v,
                         smp::self_bleu_options::order_only(1));
    CHECK(v[0] == doctest::Approx((0.5 + std::exp(-1.0)) / 2).epsilon(1e-15));

    // The closest reference length breaks ties towards the shorter one: hypothesis of 4 tokens,
    // references of 3 and 5 tokens -> r = 3 < 4, so bp = 1 for it.
    const batch t({{1, 2, 3, 4}, {1, 2, 3}, {1, 2, 3, 4, 5}});
    const auto tp = t.one_prompt();
    (void)smp::self_bleu(pt::exec::seq, t.tokens, pt::ragged(t.offsets), pt::ragged(tp), v, smp::self_bleu_options::order_only(1));
    // hyp0: p1 = 1, bp 1. hyp1 (3 tokens; refs 4 and 5 -> r 4): p1 = 1, bp exp(1 - 4/3).
    // hyp2 (5 tokens; refs 4, 3 -> r 4): p1 = 4/5, bp 1.
    CHECK(v[0] == doctest::Approx((1.0 + std::exp(1.0 - 4.0 / 3.0) + 0.8) / 3).epsilon(1e-15));
}

TEST_CASE("diversity: n-grams never cross sequence boundaries; ids are any integers, negative included") {
    std::vector<double> v(1);
    const batch b({{1, 2}, {3, 4}});
    const auto prompt = b.one_prompt();
    (void)smp::distinct_n(pt::exec::seq, b.tokens, pt::ragged(b.offsets), pt::ragged(prompt), v, {.n = 2});
    CHECK(v[0] == 1.0);  // 2 bigrams, not 3
    (void)smp::distinct_n(pt::exec::seq, b.tokens, pt::ragged(b.offsets), pt::ragged(prompt), v, {.n = 3});
    CHECK(v[0] == 0.0);

    const batch pos({{1, 2, 3, 1}, {2, 2, 3, 4}, {4, 1}});
    const batch neg({{-7, -1, 9, -7}, {-1, -1, 9, 5}, {5, -7}});  // the same pattern of equalities
    const auto a = metrics_of(pos), n = metrics_of(neg);
    CHECK(a.distinct1 == n.distinct1);
    CHECK(a.distinct2 == n.distinct2);
    CHECK(a.bleu == n.bleu);
    CHECK(a.edit_raw == n.edit_raw);

    std::vector<std::uint32_t> u32(pos.tokens.begin(), pos.tokens.end());
    const auto pp = pos.one_prompt();
    (void)smp::self_bleu(pt::exec::seq, u32, pt::ragged(pos.offsets), pt::ragged(pp), v);
    CHECK(v[0] == a.bleu);
}

TEST_CASE("diversity: padded rows as uniform_groups{L} equal the same rows as ragged offsets") {
    // 2 prompts x 2 rollouts, right-padded to L = 5 with pad id 0 (padding is part of each sequence).
    const std::vector<std::int64_t> padded{3, 4, 5, 0, 0, 3, 4, 6, 7, 0, 1, 0, 0, 0, 0, 1, 2, 0, 0, 0};
    const std::vector<std::int64_t> off{0, 5, 10, 15, 20};
    std::vector<float> a(2), b(2);
    (void)smp::self_bleu(pt::exec::seq, padded, pt::uniform_groups{5}, pt::uniform_groups{2}, a);
    (void)smp::self_bleu(pt::exec::seq, padded, pt::ragged(off), pt::uniform_groups{2}, b);
    CHECK(bitwise_equal(a, b));
    (void)smp::pairwise_edit_distance(pt::exec::seq, padded, pt::uniform_groups{5}, pt::uniform_groups{2}, a,
                                      smp::edit_distance_options::mmr1());
    CHECK(a == std::vector<float>{2.0f, 1.0f});
}

TEST_CASE("diversity: bad input is invalid_argument") {
    const std::vector<std::int64_t> tokens{1, 2, 3, 4};
    const std::vector<std::int64_t> prompt{0, 2};
    std::vector<double> v(1);
    const std::vector<std::int64_t> not_csr{0, 3, 2, 4};
    const std::vector<std::int64_t> prompt3{0, 3};
    CHECK_THROWS_AS((void)smp::distinct_n(pt::exec::seq, tokens, pt::ragged(not_csr), pt::ragged(prompt3), v), pt::invalid_argument);
    const std::vector<std::int64_t> short_off{0, 1, 3};  // does not end at T = 4
    CHECK_THROWS_AS((void)smp::self_bleu(pt::exec::seq, tokens, pt::ragged(short_off), pt::ragged(prompt), v), pt::invalid_argument);
    const std::vector<std::int64_t> off{0, 2, 4};
    const std::vector<std::int64_t> wrong_prompt{0, 3};  // 3 sequences, but there are 2
    CHECK_THROWS_AS((void)smp::pairwise_edit_distance(pt::exec::seq, tokens, pt::ragged(off), pt::ragged(wrong_prompt), v),
                    pt::invalid_argument);
    std::vector<double> v2(2);
    CHECK_THROWS_AS((void)smp::distinct_n(pt::exec::seq, tokens, pt::ragged(off), pt::ragged(prompt), v2), pt::invalid_argument);
    CHECK_THROWS_AS((void)smp::distinct_n(pt::exec::seq, tokens, pt::ragged(off), pt::ragged(prompt), v, {.n = 0}),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)smp::self_bleu(pt::exec::seq, tokens, pt::ragged(off), pt::ragged(prompt), v, {.max_order = 0}),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)smp::self_bleu(pt::exec::seq, tokens, pt::ragged(off), pt::ragged(prompt), v, {.epsilon = 0.0}),
                    pt::invalid_argument);
    CHECK_THROWS_AS((void)smp::self_bleu(pt::exec::seq, tokens, pt::uniform_groups{3}, pt::uniform_groups{1}, v),
                    pt::invalid_argument);  // 4 tokens are not rows of 3
}

TEST_CASE_TEMPLATE("diversity: par is bitwise equal to seq; id layouts follow the rows", B, POSTTRAIN_HOST_BACKENDS) {
    // 400 prompts x 8 sequences of 0..40 tokens over a vocabulary of 6.
    const std::size_t P = 400, K = 8;
    std::uint64_t state = 12345;
    const auto next = [&] {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return state >> 33;
    };
    std::vector<std::int64_t> tokens, off{0};
    for (std::size_t s = 0; s < P * K; ++s) {
        const auto len = next() % 41;
        for (std::uint64_t t = 0; t < len; ++t) tokens.push_back(std::int64_t(next() % 6));
        off.push_back(std::int64_t(tokens.size()));
    }
    const auto seqs = pt::ragged(off);
    const pt::uniform_groups groups{std::int64_t(K)};
    const auto both = [&](auto f) {
        std::vector<double> got(P), want(P);
        (void)f(B::policy(), got);
        (void)f(pt::exec::seq, want);
        CHECK(bitwise_equal(got, want));
        return want;
    };
    both([&](auto p, auto& o) { return smp::distinct_n(p, tokens, seqs, groups, o); });
    const auto bleu = both([&](auto p, auto& o) { return smp::self_bleu(p, tokens, seqs, groups, o); });
    both([&](auto p, auto& o) { return smp::self_bleu_diversity(p, tokens, seqs, groups, o); });
    both([&](auto p, auto& o) { return smp::pairwise_edit_distance(p, tokens, seqs, groups, o); });
    both([&](auto p, auto& o) { return smp::pairwise_edit_distance(p, tokens, seqs, groups, o, smp::edit_distance_options::mmr1()); });
    for (double x : bleu) CHECK((x >= 0.0 && x <= 1.0));

    // The same prompts given by ids (sequence s belongs to prompt s / K): grouping::from_ids.
    std::vector<std::int64_t> ids(P * K);
    for (std::size_t s = 0; s < ids.size(); ++s) ids[s] = std::int64_t(s / K);
    const auto by_id = pt::grouping::from_ids(pt::exec::seq, ids);
    std::vector<double> got(P);
    (void)smp::self_bleu(B::policy(), tokens, seqs, by_id, got);
    CHECK(bitwise_equal(got, bleu));
}

namespace {
// The textbook dynamic programme, written independently of the library.
std::int64_t reference_levenshtein(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
    std::vector<std::vector<std::int64_t>> d(a.size() + 1, std::vector<std::int64_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = std::int64_t(i);
    for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = std::int64_t(j);
    for (std::size_t i = 1; i <= a.size(); ++i)
        for (std::size_t j = 1; j <= b.size(); ++j)
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
    return d[a.size()][b.size()];
}
}  // namespace

TEST_CASE("pairwise_edit_distance: the bit-parallel distance equals the dynamic programme") {
    std::uint64_t state = 99;
    const auto next = [&] {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return state >> 33;
    };
    std::vector<double> v(1);
    for (int trial = 0; trial < 400; ++trial) {
        // Lengths across block boundaries (63, 64, 65, 128, ...), alphabets from 2 to 1000, shared
        // prefixes and suffixes, negative ids.
        const std::uint64_t vocab = trial % 3 == 0 ? 2 : (trial % 3 == 1 ? 7 : 1000);
        const auto la = std::size_t(next() % 200), lb = trial % 5 == 0 ? la : std::size_t(next() % 200);
        std::vector<std::int64_t> a(la), b(lb);
        for (auto& x : a) x = std::int64_t(next() % vocab) - 3;
        for (auto& x : b) x = std::int64_t(next() % vocab) - 3;
        if (trial % 4 == 0)
            for (std::size_t i = 0; i < std::min(la, lb) / 2; ++i) b[i] = a[i];
        const batch pair({a, b});
        const auto prompt = pair.one_prompt();
        (void)smp::pairwise_edit_distance(pt::exec::seq, pair.tokens, pt::ragged(pair.offsets), pt::ragged(prompt), v,
                                          smp::edit_distance_options::mmr1());
        const double want = double(reference_levenshtein(a, b));
        REQUIRE(v[0] == want);
        // The sparse match-mask path (taken when the dense table would be too large).
        smp::detail::levenshtein_scratch sparse;
        sparse.dense_limit = 0;
        std::vector<double> pairs;
        const std::vector<smp::detail::seq_ref<std::int64_t>> seqs{{a.data(), 1, std::int64_t(la)}, {b.data(), 1, std::int64_t(lb)}};
        REQUIRE(smp::detail::edit_distance_of(seqs, smp::edit_distance_options::mmr1(), sparse, pairs) == want);
    }
}

TEST_CASE("diversity: out over tokens is refused before anything is written") {
    // Two prompts of two sequences of 3 tokens; out over the second prompt's tokens would overwrite them
    // with the first prompt's result before they are read.
    std::vector<std::int64_t> tok{1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const auto before = tok;
    const pt::tensor_view<const std::int64_t, 1> t(tok.data(), 12);
    CHECK_THROWS_WITH_AS((void)smp::distinct_n(pt::exec::seq, t, pt::uniform_groups{3}, pt::uniform_groups{2},
                                               pt::tensor_view<double, 1>(reinterpret_cast<double*>(tok.data() + 6), 2)),
                         doctest::Contains("'out': the output overlaps the input 'tokens'"), pt::invalid_argument);
    CHECK(tok == before);  // nothing written
}

TEST_CASE("diversity: out over either layout's offsets is refused before anything is written") {
    // Two prompts of two sequences of 3 tokens: out[0] over the prompts' offsets[1] would move the
    // second prompt's first sequence before it is read; over the sequences' offsets likewise.
    const std::vector<std::int64_t> tok{1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    std::vector<std::int64_t> seq_off{0, 3, 6, 9, 12}, prompt_off{0, 2, 4};
    const auto seq_before = seq_off, prompt_before = prompt_off;
    const pt::ragged_groups<std::int64_t> seqs{pt::tensor_view<const std::int64_t, 1>(seq_off.data(), 5)};
    const pt::ragged_groups<std::int64_t> prompts{pt::tensor_view<const std::int64_t, 1>(prompt_off.data(), 3)};
    CHECK_THROWS_WITH_AS((void)smp::distinct_n(pt::exec::seq, tok, seqs, prompts,
                                               pt::tensor_view<double, 1>(reinterpret_cast<double*>(prompt_off.data() + 1), 2)),
                         "posttrain::sampling::distinct_n: argument 'out': overlaps the layout's 'offsets'; pass a separate buffer",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)smp::self_bleu(pt::exec::seq, tok, seqs, prompts,
                                              pt::tensor_view<double, 1>(reinterpret_cast<double*>(seq_off.data() + 1), 2)),
                         doctest::Contains("argument 'out': overlaps the layout's 'offsets'"), pt::invalid_argument);
    CHECK(seq_off == seq_before);
    CHECK(prompt_off == prompt_before);
}
