// Group layouts: uniform, ragged (validated CSR offsets), permuted, and grouping by unsorted ids.

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/core/groups.hpp>

namespace pt = posttrain;

namespace {

constexpr pt::detail::where here{"posttrain::test_fn", "groups"};

// The (group, rows) pairs a validated layout enumerates.
template <class Layout>
std::vector<std::vector<pt::index_t>> rows_of(const Layout& layout) {
    std::vector<std::vector<pt::index_t>> out;
    for (pt::index_t g = 0; g < layout.num_groups(); ++g) {
        std::vector<pt::index_t> rows;
        const auto r = layout.rows(g);
        for (pt::index_t j = 0; j < layout.size(g); ++j) rows.push_back(r(j));
        out.push_back(rows);
    }
    return out;
}

// Checks the invariants of a grouping result against a brute-force reference.
template <class Id>
void check_grouping(const std::vector<Id>& ids, const pt::grouping_result& g) {
    const auto n = static_cast<pt::index_t>(ids.size());
    REQUIRE(g.permutation.size() == ids.size());
    REQUIRE(g.group_of.size() == ids.size());
    REQUIRE(g.offsets.size() == g.ids.size() + 1);
    CHECK(g.offsets.front() == 0);
    CHECK(g.offsets.back() == n);
    for (std::size_t k = 1; k < g.ids.size(); ++k) CHECK(g.ids[k - 1] < g.ids[k]);
    for (pt::index_t grp = 0; grp < g.num_groups(); ++grp) {
        const auto lo = g.offsets[std::size_t(grp)], hi = g.offsets[std::size_t(grp) + 1];
        CHECK(lo < hi);  // groups from ids are never empty
        for (pt::index_t j = lo; j < hi; ++j) {
            const auto row = g.permutation[std::size_t(j)];
            CHECK(static_cast<std::int64_t>(ids[std::size_t(row)]) == g.ids[std::size_t(grp)]);
            CHECK(g.group_of[std::size_t(row)] == grp);
            if (j > lo) CHECK(g.permutation[std::size_t(j - 1)] < row);  // stable
        }
    }
}

}  // namespace

TEST_CASE("groups: uniform layout") {
    const auto l = pt::detail::make_layout(pt::uniform_groups{3}, 9, here);
    CHECK(l.num_groups() == 3);
    CHECK(rows_of(l) == std::vector<std::vector<pt::index_t>>{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}});
    CHECK(pt::detail::make_layout(pt::uniform_groups{4}, 0, here).num_groups() == 0);
    CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::uniform_groups{0}, 9, here),
                         "posttrain::test_fn: argument 'groups': uniform group size must be >= 1, found 0",
                         pt::invalid_argument);
    CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::uniform_groups{4}, 9, here),
                         "posttrain::test_fn: argument 'groups': the number of rows 9 is not a multiple of the uniform "
                         "group size 4",
                         pt::invalid_argument);
}

TEST_CASE("groups: ragged offsets") {
    SUBCASE("valid, with empty groups") {
        std::vector<std::int64_t> off{0, 2, 2, 5};
        const auto l = pt::detail::make_layout(pt::ragged(off), 5, here);
        CHECK(l.num_groups() == 3);
        CHECK(rows_of(l) == std::vector<std::vector<pt::index_t>>{{0, 1}, {}, {2, 3, 4}});
    }
    SUBCASE("any integer type") {
        std::vector<std::int32_t> off32{0, 1, 3};
        std::vector<std::uint64_t> off64{0, 1, 3};
        CHECK(pt::detail::make_layout(pt::ragged(off32), 3, here).num_groups() == 2);
        CHECK(pt::detail::make_layout(pt::ragged(off64), 3, here).num_groups() == 2);
    }
    SUBCASE("zero groups over zero rows") {
        std::vector<std::int64_t> off{0};
        CHECK(pt::detail::make_layout(pt::ragged(off), 0, here).num_groups() == 0);
    }
    SUBCASE("64-bit offsets are kept exact") {
        // Validation reads only the offsets, so sizes beyond 2^32 can be checked without the data.
        const std::int64_t big = (std::int64_t{1} << 33) + 3;
        std::vector<std::int64_t> off{0, big - 1, big};
        const auto l = pt::detail::make_layout(pt::ragged(off), big, here);
        CHECK(l.size(0) == big - 1);
        CHECK(l.rows(1)(0) == big - 1);
    }
    const std::string p = "posttrain::test_fn: argument 'groups': ";
    SUBCASE("empty offsets") {
        std::vector<std::int64_t> off;
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::ragged(off), 0, here),
                             (p + "offsets must have at least one entry (G + 1 entries for G groups), found 0").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("offsets[0] != 0") {
        std::vector<std::int64_t> off{1, 3};
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::ragged(off), 3, here), (p + "offsets[0] must be 0, found 1").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("offsets[G] != N") {
        std::vector<std::int64_t> off{0, 2, 4};
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::ragged(off), 5, here),
                             (p + "offsets[G] must equal the number of rows 5, found 4").c_str(), pt::invalid_argument);
    }
    SUBCASE("decreasing") {
        std::vector<std::int64_t> off{0, 3, 1, 4};
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::ragged(off), 4, here),
                             (p + "offsets must be non-decreasing, but offsets[2] = 1 < offsets[1] = 3").c_str(),
                             pt::invalid_argument);
    }
}

TEST_CASE("groups: permuted layout validation") {
    std::vector<pt::index_t> perm{2, 0, 1, 3}, off{0, 1, 4};
    pt::permuted_groups pg{pt::tensor_view<const pt::index_t, 1>(perm.data(), 4),
                           pt::tensor_view<const pt::index_t, 1>(off.data(), 3)};
    const auto l = pt::detail::make_layout(pg, 4, here);
    CHECK(rows_of(l) == std::vector<std::vector<pt::index_t>>{{2}, {0, 1, 3}});

    const std::string p = "posttrain::test_fn: argument 'groups': ";
    SUBCASE("wrong length") {
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pt::permuted_groups{pt::tensor_view<const pt::index_t, 1>(perm.data(), 3),
                                                                         pt::tensor_view<const pt::index_t, 1>(off.data(), 3)},
                                                     4, here),
                             (p + "permutation must have one entry per row (4), found 3").c_str(), pt::invalid_argument);
    }
    SUBCASE("out of range") {
        perm[1] = 4;
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pg, 4, here),
                             (p + "permutation[1] = 4 is out of range [0, 4)").c_str(), pt::invalid_argument);
        perm[1] = -1;
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pg, 4, here),
                             (p + "permutation[1] = -1 is out of range [0, 4)").c_str(), pt::invalid_argument);
    }
    SUBCASE("repeated row") {
        perm[1] = 2;
        CHECK_THROWS_WITH_AS(pt::detail::make_layout(pg, 4, here), (p + "permutation repeats row 2").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("bad offsets") {
        off[2] = 3;
        CHECK_THROWS_AS(pt::detail::make_layout(pg, 4, here), pt::invalid_argument);
    }
}

TEST_CASE("groups: from_ids on unsorted ids") {
    SUBCASE("int64 with negative ids, stable") {
        std::vector<std::int64_t> ids{5, -3, 5, 0, -3, 5, 7};
        const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
        check_grouping(ids, g);
        CHECK(g.ids == std::vector<std::int64_t>{-3, 0, 5, 7});
        CHECK(g.offsets == std::vector<pt::index_t>{0, 2, 3, 6, 7});
        CHECK(g.permutation == std::vector<pt::index_t>{1, 4, 3, 0, 2, 5, 6});
        CHECK(g.group_of == std::vector<pt::index_t>{2, 0, 2, 1, 0, 2, 3});
        // The result is itself a group layout.
        const auto l = pt::detail::make_layout(g, 7, here);
        CHECK(rows_of(l)[2] == std::vector<pt::index_t>{0, 2, 5});
    }
    SUBCASE("int32") {
        std::vector<std::int32_t> ids{3, 1, 3, -2, 1};
        const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
        check_grouping(ids, g);
        CHECK(g.ids == std::vector<std::int64_t>{-2, 1, 3});
    }
    SUBCASE("uint64 beyond 2^63 and large ids beyond 2^40") {
        std::vector<std::uint64_t> ids{(std::uint64_t{1} << 41) + 9, 3, (std::uint64_t{1} << 41) + 9, std::uint64_t{1} << 40, 3};
        const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
        check_grouping(ids, g);
        CHECK(g.num_groups() == 3);
        CHECK(g.offsets == std::vector<pt::index_t>{0, 2, 3, 5});
    }
    SUBCASE("int64 ids spanning the whole range") {
        std::vector<std::int64_t> ids{INT64_MAX, INT64_MIN, 0, -1, INT64_MAX, (std::int64_t{1} << 40) + 1, INT64_MIN};
        const auto g = pt::grouping::from_ids(pt::exec::seq, ids);
        check_grouping(ids, g);
        CHECK(g.ids.front() == INT64_MIN);
        CHECK(g.ids.back() == INT64_MAX);
    }
    SUBCASE("N = 0 and N = 1") {
        std::vector<std::int64_t> none;
        const auto g0 = pt::grouping::from_ids(pt::exec::seq, none);
        CHECK(g0.num_groups() == 0);
        CHECK(g0.offsets == std::vector<pt::index_t>{0});
        CHECK(pt::detail::make_layout(g0, 0, here).num_groups() == 0);
        std::vector<std::int64_t> one{42};
        const auto g1 = pt::grouping::from_ids(pt::exec::par, one);
        CHECK(g1.offsets == std::vector<pt::index_t>{0, 1});
        CHECK(g1.ids == std::vector<std::int64_t>{42});
    }
    SUBCASE("random ids, seq and par agree with the reference") {
        std::mt19937_64 rng(1234);
        for (int trial = 0; trial < 4; ++trial) {
            CAPTURE(trial);
            const std::size_t n = 1000 + 3000 * std::size_t(trial);
            std::vector<std::int64_t> ids(n);
            const std::int64_t span = trial == 3 ? INT64_MAX : std::int64_t{50} << (12 * trial);
            std::uniform_int_distribution<std::int64_t> d(-span, span);
            std::vector<std::int64_t> pool(37);
            for (auto& p : pool) p = d(rng);
            std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
            for (auto& x : ids) x = pool[pick(rng)];
            const auto gs = pt::grouping::from_ids(pt::exec::seq, ids);
            const auto gp = pt::grouping::from_ids(pt::exec::par.with_threads(4), ids);
            check_grouping(ids, gs);
            CHECK(gs.permutation == gp.permutation);
            CHECK(gs.offsets == gp.offsets);
        }
    }
}

TEST_CASE("groups: from_dense_ids keeps empty groups and refuses ids outside [0, G)") {
    const std::vector<std::int64_t> ids{2, 0, 2, 4, 0};
    const auto g = pt::grouping::from_dense_ids(pt::exec::seq, ids, 6);
    CHECK(g.offsets == std::vector<pt::index_t>{0, 2, 2, 4, 4, 5, 5});
    CHECK(g.permutation == std::vector<pt::index_t>{1, 4, 0, 2, 3});
    CHECK(g.group_of == std::vector<pt::index_t>{2, 0, 2, 4, 0});
    CHECK(g.ids == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5});
    // Unsigned ids take the same path (no sign to test).
    const std::vector<std::uint64_t> unsigned_ids{2, 0, 2, 4, 0};
    CHECK(pt::grouping::from_dense_ids(pt::exec::seq, unsigned_ids, 6).permutation == g.permutation);
    const std::vector<std::int64_t> negative{1, -1};
    CHECK_THROWS_WITH_AS((void)pt::grouping::from_dense_ids(pt::exec::seq, negative, 3),
                         doctest::Contains("ids[1] = -1 is out of range [0, 3)"), pt::invalid_argument);
    const std::vector<std::uint64_t> too_large{1, 3};
    CHECK_THROWS_WITH_AS((void)pt::grouping::from_dense_ids(pt::exec::seq, too_large, 3),
                         doctest::Contains("ids[1] = 3 is out of range [0, 3)"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)pt::grouping::from_dense_ids(pt::exec::seq, ids, -1),
                         doctest::Contains("num_groups"), pt::invalid_argument);
}

TEST_CASE("groups: string ids") {
    CHECK(pt::grouping::hash_id("prompt-1") == pt::grouping::hash_id(std::string("prompt-1")));
    CHECK(pt::grouping::hash_id("prompt-1") != pt::grouping::hash_id("prompt-2"));
    CHECK(pt::grouping::hash_id("") != pt::grouping::hash_id(std::string_view("\0", 1)));
    const std::vector<std::string> uids{"b", "a", "b", "c", "a", "b"};
    const auto h = pt::grouping::hash_ids(uids);
    REQUIRE(h.size() == uids.size());
    CHECK(h[0] == h[2]);
    CHECK(h[1] == h[4]);
    const auto g = pt::grouping::from_string_ids(pt::exec::seq, uids);
    CHECK(g.num_groups() == 3);
    // Rows of one string end up in one group, in their original order.
    CHECK(g.group_of[0] == g.group_of[2]);
    CHECK(g.group_of[2] == g.group_of[5]);
    CHECK(g.group_of[1] == g.group_of[4]);
    CHECK(g.group_of[0] != g.group_of[1]);
    CHECK(g.group_of[3] != g.group_of[0]);
    const auto grp_b = g.group_of[0];
    CHECK(std::vector<pt::index_t>(g.permutation.begin() + g.offsets[std::size_t(grp_b)],
                                   g.permutation.begin() + g.offsets[std::size_t(grp_b) + 1]) ==
          std::vector<pt::index_t>{0, 2, 5});
    const std::vector<std::string> empty;
    CHECK(pt::grouping::from_string_ids(pt::exec::seq, empty).num_groups() == 0);
}
