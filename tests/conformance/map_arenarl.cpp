// Conformance mappings: ArenaRL's tournament reward models (Alibaba-NLP/qqr 8653a9a,
// qqr/reward_models/arena/*.py) and its bidirectional judge (qqr/examples/travel/reward_model.py).
//
// Each case gives the one-direction LLM judge as a table, judge_uni[a][b] = (score of a shown as
// Agent_A, score of b shown as Agent_B). The mapping calls posttrain with that table wrapped in
// ranking::bidirectional, exactly as qqr's TravelLLMJudge.compute sums its two calls, and one group
// of N rows. Swiss and double elimination draw with Python's random.shuffle; the cases record every
// draw (inputs.shuffle_orders) and the mapping replays them through options.shuffle.

#include "conformance.hpp"

#include <posttrain/ranking/tournament.hpp>

namespace conformance {
namespace {

namespace rk = posttrain::ranking;
using posttrain::exec::seq;

// The one-direction judge of a case, counting its calls (qqr's num_llm_calls).
struct table_judge {
    const tensor* uni;
    index_t n;
    long* calls;
    rk::scores operator()(index_t a, index_t b) const {
        ++*calls;
        const std::size_t at = std::size_t((a * n + b) * 2);
        return {uni->data[at], uni->data[at + 1]};
    }
};

// Replays recorded shuffles: the k-th call leaves the players in shuffle_orders[k].
rk::shuffle_hook replay(const json& orders) {
    auto next = std::make_shared<std::size_t>(0);
    return [orders, next](index_t, std::span<index_t> players) {
        const auto& o = orders.at((*next)++);
        if (o.size() != players.size()) throw std::runtime_error("recorded shuffle has a different size");
        for (std::size_t k = 0; k < players.size(); ++k) players[k] = o[k].get<index_t>();
    };
}

json rows_json(const std::vector<index_t>& v, std::size_t lo, std::size_t hi) {
    json a = json::array();
    for (std::size_t k = lo; k < hi; ++k) a.push_back(v[k]);
    return a;
}

// Runs one topology on the case and stores what every topology reports.
template <class Run>
rk::tournament_result run_case(const case_context& c, produced& out, Run&& run) {
    const tensor uni = c.input("judge_uni");
    const index_t n = static_cast<index_t>(c.param("group_size"));
    long calls = 0;
    auto judge = rk::bidirectional(table_judge{&uni, n, &calls});
    std::vector<double> rewards(static_cast<std::size_t>(n));
    std::vector<float> advantages(static_cast<std::size_t>(n));
    rk::tournament_result res = run(posttrain::uniform_groups{std::max<index_t>(n, 1)}, judge, rewards, advantages);

    out.set("rewards", from_values(rewards, {n}));
    out.set("advantages", from_values(std::vector<double>(advantages.begin(), advantages.end()), {n}, "float32"));
    out.set_exact("final_ranking", rows_json(res.order, 0, res.order.size()));
    out.set_exact("num_judge_calls", res.comparisons.size());
    out.set_exact("num_llm_calls", calls);
    json matches = json::array();
    for (const auto& m : res.comparisons) matches.push_back({m.first, m.second});
    out.set_exact("matches", matches);
    return res;
}

std::vector<double> ranks_of(const rk::tournament_result& res) {
    std::vector<double> r;
    for (index_t t : res.tier) r.push_back(double(t + 1));
    return r;
}

void single_elimination(const case_context& c, produced& out) {
    auto o = rk::single_elimination_options::arenarl();
    o.anchor = static_cast<index_t>(c.param("anchor_index"));
    const auto res = run_case(c, out, [&](auto groups, auto& judge, auto& r, auto& a) {
        return rk::single_elimination(seq, groups, judge, r, a, o);
    });
    const index_t n = index_t(res.points.size());
    out.set("trace_mean_points", from_values(res.points, {n}));
}

void round_robin(const case_context& c, produced& out) {
    const auto res = run_case(c, out, [&](auto groups, auto& judge, auto& r, auto& a) {
        return rk::round_robin(seq, groups, judge, r, a, rk::round_robin_options::arenarl());
    });
    const index_t n = index_t(res.points.size());
    out.set("trace_wins", from_values(res.points, {n}));
    out.set("trace_ranks", from_values(ranks_of(res), {n}));
}

void anchor(const case_context& c, produced& out) {
    auto o = rk::anchor_options::arenarl();
    o.anchor = static_cast<index_t>(c.param("anchor_index"));
    const auto res = run_case(c, out, [&](auto groups, auto& judge, auto& r, auto& a) {
        return rk::anchor(seq, groups, judge, r, a, o);
    });
    const index_t n = index_t(res.points.size());
    out.set("trace_scores", from_values(res.points, {n}));
    out.set("trace_ranks", from_values(ranks_of(res), {n}));
}

void swiss(const case_context& c, produced& out) {
    auto o = rk::swiss_options::arenarl_reference();
    if (c.params.contains("ctor") && c.params.at("ctor").contains("max_num_rounds") &&
        !c.params.at("ctor").at("max_num_rounds").is_null())
        o.rounds = c.params.at("ctor").at("max_num_rounds").get<index_t>();
    const json& orders = c.inputs.at("shuffle_orders");
    o.shuffle = replay(orders);
    const auto res = run_case(c, out, [&](auto groups, auto& judge, auto& r, auto& a) {
        return rk::swiss(seq, groups, judge, r, a, o);
    });
    out.set_exact("trace_num_rounds", res.rounds);
    // Each round: the list order its shuffle left (the replayed draw), its pairings, its bye.
    json rounds = json::array();
    for (index_t k = 0; k < res.rounds; ++k) {
        json pairings = json::array();
        for (const auto& m : res.comparisons)
            if (m.round == k) pairings.push_back({m.first, m.second});
        json bye = nullptr;
        for (const auto& b : res.byes)
            if (b.round == k) bye = b.row;
        rounds.push_back({{"list_order", orders.at(std::size_t(k))}, {"pairings", pairings}, {"bye", bye}});
    }
    out.set_exact("trace_rounds", rounds);
}

void double_elimination(const case_context& c, produced& out) {
    auto o = rk::double_elimination_options::arenarl();
    o.shuffle = replay(c.inputs.at("shuffle_orders"));
    const auto res = run_case(c, out, [&](auto groups, auto& judge, auto& r, auto& a) {
        return rk::double_elimination(seq, groups, judge, r, a, o);
    });
    const index_t n = index_t(res.points.size());
    out.set("trace_mean_points", from_values(res.points, {n}));
    out.set_exact("trace_grand_winner", n > 0 ? json(res.order[0]) : json(nullptr));
    out.set_exact("trace_grand_loser", n > 1 ? json(res.order[1]) : json(nullptr));
}

// TravelLLMJudge.compute for every ordered pair: the wrapper alone.
void bidirectional_judge(const case_context& c, produced& out) {
    const tensor uni = c.input("judge_uni");
    const index_t n = static_cast<index_t>(c.param("group_size"));
    long calls = 0;
    auto judge = rk::bidirectional(table_judge{&uni, n, &calls});
    std::vector<rk::match> all;
    for (index_t a = 0; a < n; ++a)
        for (index_t b = 0; b < n; ++b)
            if (a != b) all.push_back({0, a, b});
    std::vector<rk::scores> s(all.size());
    judge(all, s);
    tensor bi = zeros({n, n, 2});
    for (std::size_t k = 0; k < all.size(); ++k) {
        const std::size_t at = std::size_t((all[k].first * n + all[k].second) * 2);
        bi.data[at] = s[k].first;
        bi.data[at + 1] = s[k].second;
    }
    out.set("judge_bi", bi);
}

const std::map<std::string, std::string> bracket_internals = {
    {"trace_seeding_scores", "the seeding round's scores are compared through `matches` order and the "
                             "final standing; the seed sort itself is internal"},
    {"trace_bracket", "the bracket order is internal; its pairings are compared through `matches`"},
    {"trace_elimination_tiers", "the tiers in elimination order are internal; their final order (by mean points) "
                                "is compared through final_ranking"},
};

}  // namespace

void register_arenarl(registry& r) {
    const tolerance adv{0.0, 2e-6};  // float32 advantages (quirk A4); everything else is exact
    r.add("arenarl/single_elimination",
          {single_elimination, adv, "ranking::single_elimination(seq, uniform_groups{N}, bidirectional(judge), ..., arenarl())",
           bracket_internals});
    r.add("arenarl/round_robin", {round_robin, adv, "ranking::round_robin(..., round_robin_options::arenarl())"});
    r.add("arenarl/anchor", {anchor, adv, "ranking::anchor(..., anchor_options::arenarl())"});
    r.add("arenarl/swiss",
          {swiss, adv, "ranking::swiss(..., swiss_options::arenarl_reference()) with the recorded shuffles replayed",
           {{"trace_player_state", "qqr's Player objects (their opponent sets) are internal; their points and "
                                   "Buchholz decide the compared rewards and final_ranking"}}});
    r.add("arenarl/double_elimination",
          {double_elimination, adv, "ranking::double_elimination(..., arenarl()) with the recorded shuffles replayed",
           {{"trace_wb_champion", "bracket internals; compared through matches and final_ranking"},
            {"trace_wb_drops", "bracket internals; compared through matches and final_ranking"},
            {"trace_lb_champion", "bracket internals; compared through matches and final_ranking"},
            {"trace_lb_eliminated", "bracket internals; compared through matches and final_ranking"}}});
    r.add("arenarl/bidirectional_judge", {bidirectional_judge, float64_path, "ranking::bidirectional(table judge)"});

    const std::string n1 =
        "a group of one row gets reward 0 and advantage 0 (posttrain's rule for singleton groups); qqr divides by "
        "N - 1 = 0 (ZeroDivisionError) or takes the std of one value (NaN), and its example's group_reward refuses N = 1";
    for (const char* key : {"arenarl/single_elimination", "arenarl/round_robin", "arenarl/anchor", "arenarl/swiss",
                            "arenarl/double_elimination"})
        r.deviations.push_back({key, "*_n1", "arenarl-singleton-group", n1});
}

}  // namespace conformance
