// grouping::from_ids against a plain reference (std::stable_sort of the rows by id) over id types,
// id distributions that take each of its paths (small-range table, partitioned large range, few and
// many groups), sizes around the bucket thresholds, strided input, and exec::seq against exec::par.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/core/groups.hpp>

#include "../support/backends.hpp"

namespace pt = posttrain;

namespace {

struct expected_grouping {
    std::vector<pt::index_t> permutation, offsets, group_of;
    std::vector<std::int64_t> ids;
};

// The contract, written the obvious way: rows stably sorted by id (signed order for signed ids).
template <class Id>
expected_grouping reference(const std::vector<Id>& ids) {
    const auto n = static_cast<pt::index_t>(ids.size());
    expected_grouping e;
    e.permutation.resize(ids.size());
    std::iota(e.permutation.begin(), e.permutation.end(), pt::index_t{0});
    std::stable_sort(e.permutation.begin(), e.permutation.end(),
                     [&](pt::index_t a, pt::index_t b) { return ids[std::size_t(a)] < ids[std::size_t(b)]; });
    e.group_of.resize(ids.size());
    e.offsets.push_back(0);
    for (pt::index_t j = 0; j < n; ++j) {
        const Id id = ids[std::size_t(e.permutation[std::size_t(j)])];
        if (j == 0 || id != ids[std::size_t(e.permutation[std::size_t(j - 1)])]) {
            if (j > 0) e.offsets.push_back(j);
            e.ids.push_back(static_cast<std::int64_t>(id));
        }
        e.group_of[std::size_t(e.permutation[std::size_t(j)])] = static_cast<pt::index_t>(e.ids.size()) - 1;
    }
    if (n > 0) e.offsets.push_back(n);
    return e;
}

template <class Id>
void check_against_reference(const std::vector<Id>& ids, const pt::grouping_result& g) {
    const expected_grouping e = reference(ids);
    CHECK(g.ids == e.ids);
    CHECK(g.offsets == e.offsets);
    CHECK(g.permutation == e.permutation);
    CHECK(g.group_of == e.group_of);
}

bool same_grouping(const pt::grouping_result& a, const pt::grouping_result& b) {
    return a.permutation == b.permutation && a.offsets == b.offsets && a.ids == b.ids && a.group_of == b.group_of;
}

enum class spread { dense, sparse, hashed, negative, extremes, clustered, constant, unique };

const char* spread_name(spread s) {
    switch (s) {
        case spread::dense: return "dense";
        case spread::sparse: return "sparse";
        case spread::hashed: return "hashed";
        case spread::negative: return "negative";
        case spread::extremes: return "extremes";
        case spread::clustered: return "clustered";
        case spread::constant: return "constant";
        case spread::unique: return "unique";
    }
    return "?";
}

// n ids of type Id drawn from `groups` distinct values chosen by the spread, rows shuffled.
template <class Id>
std::vector<Id> make_ids(std::size_t n, std::size_t groups, spread s, std::uint64_t seed) {
    using lim = std::numeric_limits<Id>;
    std::mt19937_64 gen(seed);
    groups = std::max<std::size_t>(groups, 1);
    std::vector<Id> values(groups);
    for (std::size_t k = 0; k < groups; ++k) {
        std::uint64_t r = gen();
        switch (s) {
            case spread::dense:
            case spread::unique: values[k] = static_cast<Id>(k); break;
            case spread::sparse: values[k] = static_cast<Id>(r % 1000000007u); break;
            case spread::hashed: values[k] = static_cast<Id>(r); break;  // every bit varies (wraps for 32-bit ids)
            case spread::negative:
                if constexpr (std::is_signed_v<Id>)
                    values[k] = static_cast<Id>(static_cast<std::int64_t>(r % 20001) - 10000);
                else
                    values[k] = static_cast<Id>(lim::max() - r % 20001);
                break;
            case spread::extremes: {
                const Id pick[] = {lim::min(), lim::max(), Id(0), Id(lim::min() + 1), Id(lim::max() - 1), Id(1)};
                values[k] = (k < 6) ? pick[k] : static_cast<Id>(r);
                break;
            }
            case spread::clustered:  // two tight clusters far apart: long directory slots
                values[k] = static_cast<Id>((k % 2 ? lim::max() / 2 : lim::min() / 2) + static_cast<Id>(r % 5000));
                break;
            case spread::constant: values[k] = static_cast<Id>(-7); break;
        }
    }
    std::vector<Id> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = s == spread::unique ? static_cast<Id>(i) : values[i % groups];
    std::shuffle(ids.begin(), ids.end(), gen);
    return ids;
}

template <class Id>
void check_all_spreads() {
    const std::size_t sizes[] = {0, 1, 2, 17, 1000, (std::size_t{1} << 16) + 3};
    const spread spreads[] = {spread::dense,    spread::sparse,    spread::hashed,   spread::negative,
                              spread::extremes, spread::clustered, spread::constant, spread::unique};
    std::uint64_t seed = 1;
    for (std::size_t n : sizes)
        for (spread s : spreads)
            // 1 group, a few, more than the 2^11 groups of one scatter bucket, about n / 2.
            for (std::size_t groups : {std::size_t{1}, std::size_t{13}, std::size_t{5000}, n / 2 + 1}) {
                CAPTURE(n);
                const std::string spread_label = spread_name(s);
                CAPTURE(spread_label);
                CAPTURE(groups);
                const std::vector<Id> ids = make_ids<Id>(n, groups, s, seed++);
                const pt::grouping_result g = pt::grouping::from_ids(pt::exec::seq, ids);
                check_against_reference(ids, g);
                CHECK(same_grouping(g, pt::grouping::from_ids(pt::exec::par.with_threads(4), ids)));
            }
}

}  // namespace

TEST_CASE_TEMPLATE("group_ids: from_ids matches a stable sort by id", Id, std::int64_t, std::int32_t, std::uint64_t,
                   std::uint32_t) {
    check_all_spreads<Id>();
}

TEST_CASE("group_ids: large inputs take the two-level row scatter") {
    // 2^18 + 5 rows: hashed ids in ~2^14 groups (partitioned path) and dense ids (table path), both
    // with more groups than one scatter bucket holds.
    for (spread s : {spread::hashed, spread::dense, spread::sparse}) {
        CAPTURE(spread_name(s));
        const auto ids = make_ids<std::int64_t>((std::size_t{1} << 18) + 5, std::size_t{1} << 14, s, 99);
        const pt::grouping_result g = pt::grouping::from_ids(pt::exec::seq, ids);
        check_against_reference(ids, g);
        CHECK(same_grouping(g, pt::grouping::from_ids(pt::exec::par, ids)));
    }
}

TEST_CASE_TEMPLATE("group_ids: strided ids", B, POSTTRAIN_HOST_BACKENDS) {
    // Every other element of a buffer, as a column of a row-major [N, 2] tensor.
    for (spread s : {spread::dense, spread::hashed}) {
        CAPTURE(spread_name(s));
        const auto both = make_ids<std::int64_t>(2 * 3001, 700, s, 5);
        std::vector<std::int64_t> column(3001);
        for (std::size_t i = 0; i < column.size(); ++i) column[i] = both[2 * i];
        const pt::index_t extents[1] = {3001}, strides[1] = {2};
        const pt::tensor_view<const std::int64_t, 1> view(both.data(), extents, strides);
        check_against_reference(column, pt::grouping::from_ids(B::policy(), view));
    }
}
