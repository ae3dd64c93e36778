// credit step records: keys of strings and bytes, collision-checked key vectors, combine_keys,
// the records' optional columns and their length checks.

#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <posttrain/adapt/std.hpp>
#include <posttrain/credit/returns.hpp>

namespace pt = posttrain;
namespace cr = posttrain::credit;

TEST_CASE("steps: state keys of strings and bytes") {
    CHECK(cr::state_key("room A") == pt::grouping::hash_id("room A"));
    const char bytes[] = {'r', 'o', 'o', 'm', ' ', 'A'};
    CHECK(cr::state_key(bytes, sizeof bytes) == cr::state_key("room A"));
    CHECK(cr::state_key("room A") != cr::state_key("room B"));
    const std::vector<std::string> obs{"a", "b", "a"};
    const auto keys = cr::state_keys(obs);
    CHECK(keys.size() == 3);
    CHECK(keys[0] == keys[2]);
    CHECK(keys[0] != keys[1]);
    CHECK(cr::combine_keys(1, 2) != cr::combine_keys(2, 1));
    CHECK(cr::combine_keys(1, 2) == cr::combine_keys(1, 2));
}

TEST_CASE("steps: optional columns and their lengths") {
    std::vector<std::int64_t> g{0, 0}, t{0, 0}, s{1, 2}, step{0, 1}, act{3, 4}, short_col{0};
    std::vector<double> r{1, 2}, out(2);
    const auto recs = cr::steps(g, t, s, r);
    CHECK(recs.size() == 2);
    CHECK(recs.has_reward());
    CHECK(!recs.has_step());
    CHECK(!recs.has_action());
    const auto full = recs.with_steps(step).with_actions(act);
    CHECK(full.has_step());
    CHECK(full.has_action());
    CHECK(!cr::steps(g, t, s).has_reward());
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, recs.with_steps(short_col), out),
                         doctest::Contains("steps.step"), pt::invalid_argument);
    CHECK_THROWS_WITH_AS((void)cr::step_returns(pt::exec::seq, cr::steps(g, short_col, s, r), out),
                         doctest::Contains("steps.trajectory"), pt::invalid_argument);
}
