// MultiRole-R1 diversity reward and Mixed-R1 BMAS: hand-computed values, edge cases, bad input,
// seq == par bitwise.
#include <cmath>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/diversity_rewards.hpp>
#include <posttrain/advantage/grpo.hpp>
#include <posttrain/sampling/diversity.hpp>

#include "support/backends.hpp"
#include "support/data.hpp"

namespace pt = posttrain;
namespace adv = posttrain::advantage;
using pt::test::matrix;

TEST_CASE_TEMPLATE("multirole_rewards: by hand", B, POSTTRAIN_HOST_BACKENDS) {
    std::vector<double> v{1, 0, 1, 1, 0}, c{2, 4, 0, 0, 0}, l{0.5, 0.25, 1, 0, 0}, r(5);
    std::vector<std::int64_t> off{0, 3, 5};
    adv::multirole_rewards(B::policy(), v, c, l, pt::ragged(off), r);
    CHECK(r[0] == doctest::Approx(1 + 0.5 * 0.5 + 0.5 * 0.5));
    CHECK(r[1] == doctest::Approx(0 + 0.5 * 1 + 0.5 * 0.25));
    CHECK(r[2] == doctest::Approx(1 + 0 + 0.5));
    CHECK(r[3] == 1.0);  // group max 0: no perspective reward
    adv::multirole_options cap;
    cap.scale = adv::perspective_scale::cap;
    cap.cap = 3;
    cap.perspective_weight = 1;
    cap.lexical_weight = 0;
    adv::multirole_rewards(B::policy(), v, c, l, pt::ragged(off), r, cap);
    CHECK(r[0] == doctest::Approx(1 + 2.0 / 3));
    CHECK(r[1] == 1.0);  // 4 >= cap
    // In place over the verifier reward is allowed (each row reads its own inputs first).
    std::vector<double> w = v;
    adv::multirole_rewards(B::policy(), w, c, l, pt::ragged(off), w, cap);
    CHECK(w[0] == doctest::Approx(1 + 2.0 / 3));
}

TEST_CASE("multirole_rewards composes with distinct-n and grpo") {
    // Per-response distinct-2 via sampling::distinct_n with one sequence per group.
    std::vector<std::int64_t> tok{1, 2, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<double> lex(2), v{1, 1}, c{1, 1}, r(2), a(2);
    (void)pt::sampling::distinct_n(pt::exec::seq, tok, pt::uniform_groups{6}, pt::uniform_groups{1}, lex, pt::sampling::distinct_n_options{2});
    CHECK(lex[0] == doctest::Approx(2.0 / 5));  // 12 21 12 21 12
    CHECK(lex[1] == 1.0);
    adv::multirole_rewards(pt::exec::seq, v, c, lex, pt::uniform_groups{2}, r);
    (void)adv::grpo(pt::exec::seq, r, pt::uniform_groups{2}, a);
    CHECK(a[1] > 0);
    CHECK(a[0] < 0);
}

TEST_CASE("multirole_rewards: bad input") {
    std::vector<double> v{1, 0}, c{1, -1}, l{0, 0}, r(2), shortr(1);
    CHECK_THROWS_AS(adv::multirole_rewards(pt::exec::seq, v, c, l, pt::uniform_groups{2}, r), pt::invalid_argument);
    c[1] = 1;
    CHECK_THROWS_AS(adv::multirole_rewards(pt::exec::seq, v, c, l, pt::uniform_groups{2}, shortr), pt::invalid_argument);
    adv::multirole_options o;
    o.scale = adv::perspective_scale::cap;
    o.cap = 0;
    CHECK_THROWS_AS(adv::multirole_rewards(pt::exec::seq, v, c, l, pt::uniform_groups{2}, r, o), pt::invalid_argument);
    v[0] = std::nan("");
    CHECK_THROWS_AS(adv::multirole_rewards(pt::exec::seq, v, c, l, pt::uniform_groups{2}, r), pt::invalid_argument);
    v[0] = 0;
    CHECK_THROWS_AS(adv::multirole_rewards(pt::exec::seq, v, c, l, pt::uniform_groups{3}, r), pt::invalid_argument);
}

TEST_CASE_TEMPLATE("bmas: by hand", B, POSTTRAIN_HOST_BACKENDS) {
    // rows: e0 = (1,0), e1 = (0,1), e2 = (1,1), e3 = (0,0), e4 = (-1,0)
    std::vector<double> emb{1, 0, 0, 1, 1, 1, 0, 0, -1, 0};
    const auto E = matrix(emb, 5, 2);
    // row 0: response {0, 2}, reference {1}; row 1: response {4}, reference {0} (cos -1);
    // row 2: empty response; row 3: response {3} (zero vector), reference {0, 0}
    std::vector<std::int64_t> u{0, 2, 4, 9, 7, 7, 3, 0}, um{1, 1, 1, 0, 0, 0, 1, 0};
    std::vector<std::int64_t> v{1, 0, 0, 0, 0, 0, 0, 0}, vm{1, 0, 1, 0, 1, 0, 1, 1};
    std::vector<double> s(4);
    const pt::tensor_view<const std::int64_t, 2> U(u.data(), 4, 2), UM(um.data(), 4, 2), V(v.data(), 4, 2), VM(vm.data(), 4, 2);
    adv::bmas(B::policy(), E, U, UM, V, VM, s);
    const double h = 1 / std::sqrt(2.0);
    CHECK(s[0] == doctest::Approx(0.5 * ((0 + h) / 2 + h)));
    CHECK(s[1] == doctest::Approx(-1.0));
    CHECK(s[2] == 0.0);
    CHECK(s[3] == 0.0);  // a zero embedding has cosine 0 with everything
    adv::bmas(B::policy(), E, U, UM, V, VM, s, {.clip_to_unit = true});
    CHECK(s[1] == 0.0);
    // Identical sequences score 1.
    std::vector<std::int64_t> same{0, 1}, ones{1, 1};
    std::vector<double> one(1);
    const pt::tensor_view<const std::int64_t, 2> S(same.data(), 1, 2), M(ones.data(), 1, 2);
    adv::bmas(B::policy(), E, S, M, S, M, one);
    CHECK(one[0] == doctest::Approx(1.0));
}

TEST_CASE("bmas: bad input and seq == par") {
    std::vector<double> emb{1, 0, 0, 1};
    std::vector<std::int64_t> u{0, 2}, m{1, 1}, v{0, 1};
    std::vector<double> s(1);
    const pt::tensor_view<const std::int64_t, 2> U(u.data(), 1, 2), M(m.data(), 1, 2), V(v.data(), 1, 2);
    CHECK_THROWS_AS(adv::bmas(pt::exec::seq, matrix(emb, 2, 2), U, M, V, M, s), pt::invalid_argument);  // id 2 of 2 rows
    std::vector<double> s2(2);
    CHECK_THROWS_AS(adv::bmas(pt::exec::seq, matrix(emb, 2, 2), V, M, V, M, s2), pt::invalid_argument);
    emb[0] = INFINITY;
    CHECK_THROWS_AS(adv::bmas(pt::exec::seq, matrix(emb, 2, 2), V, M, V, M, s), pt::invalid_argument);

    using pt::index_t;
    const index_t Bn = 300, T = 20, d = 16, Vn = 50;
    std::vector<double> E(std::size_t(Vn * d));
    for (std::size_t i = 0; i < E.size(); ++i) E[i] = std::sin(double(i) * 0.37);
    std::vector<std::int64_t> tu(std::size_t(Bn * T)), tm(std::size_t(Bn * T));
    for (std::size_t i = 0; i < tu.size(); ++i) {
        tu[i] = std::int64_t((i * 7919) % Vn);
        tm[i] = (i % 5) != 0;
    }
    std::vector<double> a(static_cast<std::size_t>(Bn)), b(static_cast<std::size_t>(Bn));
    const pt::tensor_view<const std::int64_t, 2> TU(tu.data(), Bn, T), TM(tm.data(), Bn, T);
    adv::bmas(pt::exec::seq, matrix(E, Vn, d), TU, TM, TU, TM, a);
    adv::bmas(pt::exec::par.with_threads(4), matrix(E, Vn, d), TU, TM, TU, TM, b);
    CHECK(pt::test::bitwise_equal(a, b));
}

TEST_CASE("bmas: a work estimate (T + 1) (L + 1) (d + 1) past 2^63 does not overflow") {
    // Stride-0 views give huge T, L and d with no memory behind them; every position is masked, so each
    // row scores 0, but the estimate is formed (UBSan flags a signed overflow there).
    using pt::index_t;
    const index_t B = 2, T = index_t(1) << 21, d = index_t(1) << 22;
    const double one = 1.0;
    const std::int64_t zero = 0;
    const index_t ee[2] = {1, d}, es[2] = {0, 0}, te[2] = {B, T}, ts[2] = {0, 0};
    const pt::tensor_view<const double, 2> E(&one, ee, es);
    const pt::tensor_view<const std::int64_t, 2> tok(&zero, te, ts);
    std::vector<double> s(2, -1.0);
    adv::bmas(pt::exec::par.with_threads(2), E, tok, tok, tok, tok, s);
    CHECK(s == std::vector<double>{0, 0});
}

TEST_CASE("multirole_rewards: rewards may be the verifier or lexical input itself, not partly over it") {
    std::vector<double> buf{1, 0, 1, 0, 9}, counts{1, 2, 0, 3}, lex{0.5, 0.25, 0, 1};
    const pt::tensor_view<const double, 1> v(buf.data(), 4);
    CHECK_THROWS_WITH_AS(posttrain::advantage::multirole_rewards(pt::exec::seq, v, counts, lex, pt::uniform_groups{2},
                                                                 pt::make_view(buf.data() + 1, 4)),
                         doctest::Contains("partly overlaps the input 'verifier'"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS(posttrain::advantage::multirole_rewards(pt::exec::seq, std::vector<double>{1, 0, 1}, std::vector<double>{1, 2, 0},
                                                                 pt::tensor_view<const double, 1>(lex.data(), 3),
                                                                 pt::uniform_groups{1}, pt::make_view(lex.data() + 1, 3)),
                         doctest::Contains("partly overlaps the input 'lexical'"), pt::invalid_argument);
    std::vector<double> want(4);
    posttrain::advantage::multirole_rewards(pt::exec::seq, v, counts, lex, pt::uniform_groups{2}, want);
    posttrain::advantage::multirole_rewards(pt::exec::seq, v, counts, lex, pt::uniform_groups{2}, pt::make_view(buf.data(), 4));
    CHECK(std::vector<double>(buf.begin(), buf.begin() + 4) == want);
}
