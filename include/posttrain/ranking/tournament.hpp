#pragma once
// Tournaments over groups of rollouts (ArenaRL): which pairs a judge compares, round by round, and
// the ranking, rank rewards and advantages that follow.
//
//     auto judge = pt::ranking::bidirectional(my_llm_judge);        // batched or pairwise callable
//     std::vector<float> adv(N);
//     auto res = pt::ranking::single_elimination(pt::exec::seq, pt::uniform_groups{16}, judge, pt::none, adv);
//     // res.comparisons: every match judged (rows, scores, round); res.order: each group best first
//
// Every topology schedules all groups together: each round collects the matches of every group
// still playing and hands them to the judge in ONE batch, so a batch of prompts costs as many judge
// calls as its longest tournament has rounds. Topologies (one options struct each; docs/algorithms):
//   single_elimination   ArenaRL's seeded bracket: an anchor round seeds it, 2N-2 comparisons
//   round_robin          every pair once, N(N-1)/2 comparisons
//   anchor               everyone against one anchor row, N-1 comparisons
//   swiss                ceil(log2 N) rounds of score-matched pairs (a seeded shuffle breaks ties)
//   double_elimination   winners and losers brackets and a grand final, 2N-2 comparisons
// Each writes rank rewards (in [0, 1]) and their group z-score (advantages) into optional [N]
// outputs (pass posttrain::none to skip one) and returns a tournament_result.
//
// A group of one row is not compared: its reward and advantage are 0. Empty groups are allowed.
// Under exec::par the per-group bookkeeping runs on several threads (a shuffle hook may then be
// called concurrently for different groups); the judge is always called from the calling thread, and
// every result is the same bits under any policy.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/random.hpp"
#include "../core/result.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"
#include "judge.hpp"
#include "rank_rewards.hpp"

namespace posttrain::ranking {

// Reorders `players` (group-local indices) in place. Replaces the seeded shuffle of Swiss and double
// elimination: to replay a recorded draw, or to use another generator. Must leave a permutation.
using shuffle_hook = std::function<void(index_t group, std::span<index_t> players)>;

// How a bracket whose size is not a power of two is filled.
enum class bye_mode {
    drop_and_repair,  // ArenaRL: the standard seed order with the missing slots dropped, the rest paired
                      // by adjacency (no byes for the top seeds; an odd round's last player advances)
    standard,         // textbook: the missing slots are byes, so the top seeds skip the first round
};

struct single_elimination_options {
    index_t anchor = 0;  // group-local row every other row plays in the seeding round
    // Textbook byes by default: ArenaRL's drop-and-repair misorders a group whose size is not a power
    // of two even under a perfect judge (Kendall tau 1/3 at N = 3, 0.87 at N = 6; docs/algorithms/
    // tournaments.md), for the same number of comparisons.
    bye_mode byes = bye_mode::standard;
    zscore_options zscore = {};

    // qqr SingleEliminationGroupRewardModel: anchor = rollout 0, drop-and-repair bracket.
    static single_elimination_options arenarl() {
        single_elimination_options o;
        o.byes = bye_mode::drop_and_repair;
        return o;
    }
};

struct round_robin_options {
    zscore_options zscore = {};
    static round_robin_options arenarl() { return {}; }
};

struct anchor_options {
    index_t anchor = 0;  // group-local row everyone plays
    zscore_options zscore = {};
    static anchor_options arenarl() { return {}; }
};

enum class swiss_variant {
    standard,       // results credited to the players who played, byes rotate, Buchholz per game
    qqr_reference,  // ArenaRL's code as written, including its bug (conformance README, quirk A1):
                    // results land on whichever player sits at the winner's index after the
                    // in-place shuffle. Near-random rankings; for reproducing its numbers only.
};

struct swiss_options {
    index_t rounds = 0;  // 0: ceil(log2 N); always capped at N - 1
    swiss_variant variant = swiss_variant::standard;
    std::uint64_t seed = 0;  // the per-round shuffle that breaks ties between equal points
    shuffle_hook shuffle = {};
    zscore_options zscore = {};

    static swiss_options arenarl_reference(std::uint64_t seed = 0) {
        swiss_options o;
        o.variant = swiss_variant::qqr_reference;
        o.seed = seed;
        return o;
    }
};

struct double_elimination_options {
    std::uint64_t seed = 0;  // every round pairs a shuffled pool (ArenaRL: no seeding)
    shuffle_hook shuffle = {};
    zscore_options zscore = {};
    static double_elimination_options arenarl(std::uint64_t seed = 0) {
        double_elimination_options o;
        o.seed = seed;
        return o;
    }
};

using topology = std::variant<single_elimination_options, round_robin_options, anchor_options, swiss_options,
                              double_elimination_options>;

struct [[nodiscard]] tournament_result {
    std::vector<comparison> comparisons;  // every match judged, in the order judged
    std::vector<bye> byes;                // rows that advanced (or scored, in Swiss) without a match
    index_t rounds = 0;                   // judge batches issued
    std::vector<index_t> order;           // each group's rows best first, groups concatenated
    std::vector<index_t> order_offsets;   // group g's rows are order[order_offsets[g] .. order_offsets[g+1])
    std::vector<index_t> tier;            // per row: 0 = best; rows of one tier were not separated by
                                          // the tournament's structure (same elimination round, same rank)
    std::vector<double> points;           // per row: what orders it within its tier (mean match score in
                                          // brackets, wins in round robin, score vs the anchor, Swiss points)
    std::vector<double> tiebreak;         // per row: Swiss Buchholz; 0 elsewhere
    group_stats_result zscore;            // what the advantages' z-score saw
};

namespace detail {

struct local_match {
    index_t first = 0;
    index_t second = 0;
};

// What a group asks for in one round, in group-local indices.
struct round_plan {
    std::vector<local_match> matches;
    std::vector<index_t> byes;
};

// A group's final standing, group-local.
struct standing {
    std::vector<index_t> order;  // best first
    std::vector<index_t> tier;
    std::vector<double> points, tiebreak, reward;
    void resize(index_t n) {
        const auto k = static_cast<std::size_t>(n);
        order.assign(k, 0);
        tier.assign(k, 0);
        points.assign(k, 0.0);
        tiebreak.assign(k, 0.0);
        reward.assign(k, 0.0);
    }
};

// A running list of match scores whose mean orders players within a tier. The mean is the naive
// left-to-right sum over the count: it reproduces every ArenaRL golden (qqr uses statistics.mean,
// which is correctly rounded; the two can differ only between mathematically equal means).
struct score_list {
    double sum = 0;
    index_t count = 0;
    void add(double v) noexcept {
        sum += v;
        ++count;
    }
    double mean() const noexcept { return count ? sum / static_cast<double>(count) : 0.0; }
};

// The seeded shuffle of one group (or the caller's hook), checked to leave a permutation.
class group_shuffler {
public:
    group_shuffler(const shuffle_hook* hook, std::uint64_t seed, index_t group, const char* fn)
        : hook_(hook && *hook ? hook : nullptr), rng_(splitmix64(seed).next() ^ static_cast<std::uint64_t>(group)),
          group_(group), fn_(fn) {}

    void operator()(std::vector<index_t>& players) {
        if (!hook_) {
            for (std::size_t i = players.size(); i > 1; --i) std::swap(players[i - 1], players[rng_.below(i)]);
            return;
        }
        std::vector<index_t> before = players;
        (*hook_)(group_, std::span<index_t>(players));
        std::sort(before.begin(), before.end());
        std::vector<index_t> after = players;
        std::sort(after.begin(), after.end());
        require(before == after, {fn_, "options.shuffle"},
                "the shuffle hook must permute its players; for group " + str(group_) + " it changed the set");
    }

private:
    const shuffle_hook* hook_;
    splitmix64 rng_;
    index_t group_;
    const char* fn_;
};

// Ties in a strict order go to position: rows of the order take position rewards.
inline void position_rewards(standing& s) {
    const index_t n = static_cast<index_t>(s.order.size());
    for (index_t k = 0; k < n; ++k) s.reward[std::size_t(s.order[std::size_t(k)])] = position_reward(k, n);
}

// Standing from one score per player: min-rank tiers, order by rank then index, min-rank rewards.
inline void standing_by_min_rank(const std::vector<double>& score, standing& s) {
    const index_t n = static_cast<index_t>(score.size());
    s.resize(n);
    std::vector<index_t> order;
    std::vector<rank_counts> counts;
    rank_rewards_of_group(tie_rule::min_rank, score.data(), n, order, counts, s.reward.data());
    for (index_t j = 0; j < n; ++j) {
        s.order[std::size_t(j)] = order[std::size_t(j)];
        s.tier[std::size_t(j)] = counts[std::size_t(j)].better;
        s.points[std::size_t(j)] = score[std::size_t(j)];
    }
}

// ---- single elimination -------------------------------------------------------------------------

class single_elimination_state {
public:
    single_elimination_state(index_t n, const single_elimination_options& o) : n_(n), o_(o), points_(std::size_t(n)) {}

    bool done() const noexcept { return n_ < 2 || (seeded_ && active_.size() <= 1); }

    void plan(round_plan& p) {
        if (!seeded_) {
            for (index_t i = 0; i < n_; ++i)
                if (i != o_.anchor) p.matches.push_back({i, o_.anchor});
            return;
        }
        // Adjacent slots play; a lone slot (drop-and-repair's odd last player, or a standard bye's
        // partner) advances and, as in qqr, is listed before the round's winners (quirk A2).
        next_.clear();
        pairs_.clear();
        for (std::size_t i = 0; i < active_.size(); i += 2) {
            const index_t a = active_[i], b = i + 1 < active_.size() ? active_[i + 1] : -1;
            if (a >= 0 && b >= 0) {
                pairs_.push_back({a, b});
                p.matches.push_back({a, b});
            } else if (a >= 0 || b >= 0) {
                const index_t lone = a >= 0 ? a : b;
                p.byes.push_back(lone);
                if (o_.byes == bye_mode::drop_and_repair) next_.push_back(lone);
            }
        }
    }

    void record(std::span<const scores> s) {
        if (!seeded_) {
            std::vector<double> anchor_scores;
            for (std::size_t k = 0; k < s.size(); ++k) {
                const index_t i = k < std::size_t(o_.anchor) ? index_t(k) : index_t(k) + 1;
                points_[std::size_t(i)].add(s[k].first);
                anchor_scores.push_back(s[k].second);
            }
            double mean = 0;
            for (double v : anchor_scores) mean += v;
            points_[std::size_t(o_.anchor)].add(mean / static_cast<double>(anchor_scores.size()));
            build_bracket();
            seeded_ = true;
            return;
        }
        if (o_.byes == bye_mode::standard) {
            // In a full bracket the next round keeps slot order: each pair's winner (or lone player)
            // takes the pair's place.
            next_.clear();
            std::size_t m = 0;
            for (std::size_t i = 0; i < active_.size(); i += 2) {
                const index_t a = active_[i], b = active_[i + 1];
                if (a >= 0 && b >= 0) next_.push_back(winner(pairs_[m], s[m])), ++m;
                else next_.push_back(a >= 0 ? a : b);
            }
        } else {
            for (std::size_t m = 0; m < pairs_.size(); ++m) next_.push_back(winner(pairs_[m], s[m]));
        }
        std::vector<index_t> losers;
        for (std::size_t m = 0; m < pairs_.size(); ++m) {
            points_[std::size_t(pairs_[m].first)].add(s[m].first);
            points_[std::size_t(pairs_[m].second)].add(s[m].second);
            losers.push_back(winner(pairs_[m], s[m]) == pairs_[m].first ? pairs_[m].second : pairs_[m].first);
        }
        if (!losers.empty()) tiers_.push_back(std::move(losers));
        active_.swap(next_);
    }

    // Champion, then the elimination tiers from the last round back to the first, each by mean
    // points (stable: equal means keep the order the round produced them).
    void finish(standing& st) const {
        st.resize(n_);
        for (index_t i = 0; i < n_; ++i) st.points[std::size_t(i)] = points_[std::size_t(i)].mean();
        if (n_ == 0) return;
        std::size_t k = 0;
        st.order[k++] = n_ < 2 ? 0 : active_.front();
        index_t tier = 1;
        for (auto t = tiers_.rbegin(); t != tiers_.rend(); ++t, ++tier) {
            std::vector<index_t> group = *t;
            std::stable_sort(group.begin(), group.end(), [&](index_t a, index_t b) {
                return st.points[std::size_t(a)] > st.points[std::size_t(b)];
            });
            for (index_t r : group) {
                st.order[k++] = r;
                st.tier[std::size_t(r)] = tier;
            }
        }
        position_rewards(st);
    }

private:
    static index_t winner(const local_match& m, const scores& s) noexcept { return s.first >= s.second ? m.first : m.second; }

    // Players by seeding score (stable), placed in the standard seed order 1vP, ...; missing slots
    // are dropped (drop_and_repair) or kept as byes (-1, standard).
    void build_bracket() {
        std::vector<index_t> seeds(static_cast<std::size_t>(n_));
        for (index_t i = 0; i < n_; ++i) seeds[std::size_t(i)] = i;
        std::stable_sort(seeds.begin(), seeds.end(), [&](index_t a, index_t b) {
            return points_[std::size_t(a)].mean() > points_[std::size_t(b)].mean();
        });
        std::vector<index_t> slots{0};
        while (index_t(slots.size()) < n_) {
            std::vector<index_t> next;
            const index_t size = static_cast<index_t>(slots.size());
            for (index_t s : slots) {
                next.push_back(s);
                next.push_back(2 * size - 1 - s);
            }
            slots.swap(next);
        }
        active_.clear();
        for (index_t s : slots) {
            if (s < n_) active_.push_back(seeds[std::size_t(s)]);
            else if (o_.byes == bye_mode::standard) active_.push_back(-1);
        }
    }

    index_t n_;
    single_elimination_options o_;
    bool seeded_ = false;
    std::vector<score_list> points_;
    std::vector<index_t> active_, next_;
    std::vector<local_match> pairs_;
    std::vector<std::vector<index_t>> tiers_;
};

// ---- round robin --------------------------------------------------------------------------------

class round_robin_state {
public:
    explicit round_robin_state(index_t n) : n_(n), wins_(std::size_t(n), 0.0) {}
    bool done() const noexcept { return n_ < 2 || played_; }
    void plan(round_plan& p) const {
        for (index_t i = 0; i < n_; ++i)
            for (index_t j = i + 1; j < n_; ++j) p.matches.push_back({i, j});
    }
    void record(std::span<const scores> s) {
        std::size_t k = 0;
        for (index_t i = 0; i < n_; ++i)
            for (index_t j = i + 1; j < n_; ++j, ++k) {
                if (s[k].first > s[k].second) wins_[std::size_t(i)] += 1.0;
                else if (s[k].second > s[k].first) wins_[std::size_t(j)] += 1.0;
                else wins_[std::size_t(i)] += 0.5, wins_[std::size_t(j)] += 0.5;
            }
        played_ = true;
    }
    void finish(standing& st) const { standing_by_min_rank(wins_, st); }

private:
    index_t n_;
    bool played_ = false;
    std::vector<double> wins_;
};

// ---- anchor -------------------------------------------------------------------------------------

class anchor_state {
public:
    anchor_state(index_t n, index_t anchor) : n_(n), anchor_(anchor), score_(std::size_t(n), 0.0) {}
    bool done() const noexcept { return n_ < 2 || played_; }
    void plan(round_plan& p) const {
        for (index_t i = 0; i < n_; ++i)
            if (i != anchor_) p.matches.push_back({i, anchor_});
    }
    void record(std::span<const scores> s) {
        std::vector<double> anchor_scores;
        for (std::size_t k = 0; k < s.size(); ++k) {
            const index_t i = k < std::size_t(anchor_) ? index_t(k) : index_t(k) + 1;
            score_[std::size_t(i)] = s[k].first;
            anchor_scores.push_back(s[k].second);
        }
        score_[std::size_t(anchor_)] =
            posttrain::detail::numpy_sum(anchor_scores.data(), index_t(anchor_scores.size())) / static_cast<double>(anchor_scores.size());
        played_ = true;
    }
    void finish(standing& st) const { standing_by_min_rank(score_, st); }

private:
    index_t n_, anchor_;
    bool played_ = false;
    std::vector<double> score_;
};

// ---- Swiss --------------------------------------------------------------------------------------

// Players are indexed by their own row; `list_` is the order of the player list, which every round
// shuffles in place. The reference variant credits a result for row i to the player at list position
// i (qqr's players[i] after the shuffle, quirk A1); the standard variant to player i.
class swiss_state {
public:
    swiss_state(index_t n, const swiss_options& o, group_shuffler shuffle)
        : n_(n), reference_(o.variant == swiss_variant::qqr_reference), shuffle_(std::move(shuffle)),
          list_(std::size_t(n)), points_(std::size_t(n), 0.0), opponents_(std::size_t(n)), had_bye_(std::size_t(n), 0) {
        for (index_t i = 0; i < n; ++i) list_[std::size_t(i)] = i;
        if (n > 1) {
            index_t r = o.rounds;
            if (r <= 0)
                for (r = 0; (index_t(1) << r) < n;) ++r;  // ceil(log2 n)
            rounds_ = std::min(r, n - 1);
        }
    }

    bool done() const noexcept { return played_ >= rounds_; }

    void plan(round_plan& p) {
        shuffle_(list_);
        std::vector<index_t> sorted = list_;
        std::stable_sort(sorted.begin(), sorted.end(),
                         [&](index_t a, index_t b) { return points_[std::size_t(a)] > points_[std::size_t(b)]; });
        bye_ = -1;
        if (sorted.size() % 2 != 0) {
            // qqr gives the bye to the last in the order every time; the standard rule gives it to the
            // lowest-placed player who has not had one yet.
            std::size_t at = sorted.size() - 1;
            if (!reference_)
                for (std::size_t k = sorted.size(); k-- > 0;)
                    if (!had_bye_[std::size_t(sorted[k])]) {
                        at = k;
                        break;
                    }
            bye_ = sorted[at];
            sorted.erase(sorted.begin() + std::ptrdiff_t(at));
            p.byes.push_back(bye_);
        }
        // Greedy: each unpaired player takes the next unpaired one it has not met, else the next one.
        std::vector<char> taken(sorted.size(), 0);
        pairs_.clear();
        for (std::size_t i = 0; i < sorted.size(); ++i) {
            if (taken[i]) continue;
            std::size_t pick = sorted.size();
            for (std::size_t j = i + 1; j < sorted.size() && pick == sorted.size(); ++j)
                if (!taken[j] && !met(sorted[i], sorted[j])) pick = j;
            for (std::size_t j = i + 1; j < sorted.size() && pick == sorted.size(); ++j)
                if (!taken[j]) pick = j;
            if (pick == sorted.size()) continue;
            taken[i] = taken[pick] = 1;
            pairs_.push_back({sorted[i], sorted[pick]});
            p.matches.push_back(pairs_.back());
        }
    }

    void record(std::span<const scores> s) {
        for (std::size_t m = 0; m < pairs_.size(); ++m) {
            const index_t i = pairs_[m].first, j = pairs_[m].second;
            const index_t pi = credited(i), pj = credited(j);
            if (s[m].first > s[m].second) points_[std::size_t(pi)] += 1.0;
            else if (s[m].second > s[m].first) points_[std::size_t(pj)] += 1.0;
            else points_[std::size_t(pi)] += 0.5, points_[std::size_t(pj)] += 0.5;
            meet(pi, j);
            meet(pj, i);
        }
        if (bye_ >= 0) {
            points_[std::size_t(credited(bye_))] += 1.0;
            had_bye_[std::size_t(bye_)] = 1;
        }
        ++played_;
    }

    void finish(standing& st) const {
        st.resize(n_);
        st.points = points_;
        for (index_t i = 0; i < n_; ++i) {
            double b = 0.0;
            for (index_t opp : opponents_[std::size_t(i)]) b += points_[std::size_t(credited(opp))];
            st.tiebreak[std::size_t(i)] = b;
        }
        // Best first by (points, Buchholz), stable over the final list order (reference) or the row
        // order (standard); a run of equal pairs shares the mean of its positions' rewards.
        std::vector<index_t> order = list_;
        if (!reference_) std::sort(order.begin(), order.end());
        auto better = [&](index_t a, index_t b) {
            return std::pair(st.points[std::size_t(a)], st.tiebreak[std::size_t(a)]) >
                   std::pair(st.points[std::size_t(b)], st.tiebreak[std::size_t(b)]);
        };
        std::stable_sort(order.begin(), order.end(), better);
        for (index_t k = 0; k < n_;) {
            index_t e = k;
            while (e < n_ && !better(order[std::size_t(k)], order[std::size_t(e)])) ++e;
            const double shared = reward_from_counts(tie_rule::average_position, {k, e - k, 1}, n_);
            for (index_t q = k; q < e; ++q) {
                const index_t r = order[std::size_t(q)];
                st.tier[std::size_t(r)] = k;
                st.reward[std::size_t(r)] = shared;
            }
            k = e;
        }
        st.order = std::move(order);
    }

private:
    index_t credited(index_t i) const noexcept { return reference_ ? list_[std::size_t(i)] : i; }
    bool met(index_t a, index_t b) const {
        const auto& o = opponents_[std::size_t(a)];
        return std::find(o.begin(), o.end(), b) != o.end();
    }
    // The reference keeps opponents as a set (a rematch counts once in Buchholz); the standard
    // Buchholz counts every game.
    void meet(index_t who, index_t opponent) {
        if (!reference_ || !met(who, opponent)) opponents_[std::size_t(who)].push_back(opponent);
    }

    index_t n_;
    bool reference_;
    group_shuffler shuffle_;
    index_t rounds_ = 0, played_ = 0, bye_ = -1;
    std::vector<index_t> list_;
    std::vector<double> points_;
    std::vector<std::vector<index_t>> opponents_;
    std::vector<char> had_bye_;
    std::vector<local_match> pairs_;
};

// ---- double elimination -------------------------------------------------------------------------

// qqr's double elimination: every round pairs a shuffled pool from its end; the winners bracket's
// losers feed the losers bracket one round's drops at a time; one grand final, no bracket reset.
class double_elimination_state {
public:
    double_elimination_state(index_t n, group_shuffler shuffle) : n_(n), shuffle_(std::move(shuffle)), points_(std::size_t(n)) {
        for (index_t i = 0; i < n; ++i) wb_.push_back(i);
        advance();
    }

    bool done() const noexcept { return stage_ == stage::done; }

    void plan(round_plan& p) {
        std::vector<index_t> pool = stage_ == stage::winners ? wb_ : stage_ == stage::losers ? lb_ : final_;
        shuffle_(pool);
        pairs_.clear();
        while (pool.size() >= 2) {
            const index_t a = pool.back();
            pool.pop_back();
            const index_t b = pool.back();
            pool.pop_back();
            pairs_.push_back({a, b});
            p.matches.push_back({a, b});
        }
        byes_ = pool;  // at most one; it is listed first among the round's winners (quirk A2)
        for (index_t r : byes_) p.byes.push_back(r);
    }

    void record(std::span<const scores> s) {
        std::vector<index_t> winners = byes_, losers;
        for (std::size_t m = 0; m < pairs_.size(); ++m) {
            points_[std::size_t(pairs_[m].first)].add(s[m].first);
            points_[std::size_t(pairs_[m].second)].add(s[m].second);
            const bool first_wins = s[m].first >= s[m].second;
            winners.push_back(first_wins ? pairs_[m].first : pairs_[m].second);
            losers.push_back(first_wins ? pairs_[m].second : pairs_[m].first);
        }
        if (stage_ == stage::winners) {
            wb_ = std::move(winners);
            if (!losers.empty()) drops_.push_back(std::move(losers));
        } else if (stage_ == stage::losers) {
            lb_ = std::move(winners);
            if (!losers.empty()) lb_out_.push_back(std::move(losers));
        } else {
            grand_winner_ = winners.front();
            grand_loser_ = losers.front();
            stage_ = stage::done;
        }
        advance();
    }

    // Grand winner, grand loser, the losers bracket's tiers from last to first (each by mean points),
    // then anyone left, by mean points.
    void finish(standing& st) const {
        st.resize(n_);
        for (index_t i = 0; i < n_; ++i) st.points[std::size_t(i)] = points_[std::size_t(i)].mean();
        std::vector<char> ranked(static_cast<std::size_t>(n_), 0);
        std::size_t k = 0;
        index_t tier = 0;
        auto place = [&](std::vector<index_t> rows) {
            std::stable_sort(rows.begin(), rows.end(), [&](index_t a, index_t b) {
                return st.points[std::size_t(a)] > st.points[std::size_t(b)];
            });
            for (index_t r : rows) {
                st.order[k++] = r;
                st.tier[std::size_t(r)] = tier;
                ranked[std::size_t(r)] = 1;
            }
            if (!rows.empty()) ++tier;
        };
        if (grand_winner_ >= 0) place({grand_winner_});
        if (grand_loser_ >= 0) place({grand_loser_});
        for (auto t = lb_out_.rbegin(); t != lb_out_.rend(); ++t) place(*t);
        std::vector<index_t> left;
        for (index_t i = 0; i < n_; ++i)
            if (!ranked[std::size_t(i)]) left.push_back(i);
        place(left);
        position_rewards(st);
    }

private:
    enum class stage { winners, losers, grand, done };

    // Moves on to the next round that needs a match (its players: wb_, lb_ or final_, by stage), or to
    // the end.
    void advance() {
        if (stage_ == stage::winners) {
            if (wb_.size() > 1) return;
            stage_ = stage::losers;
        }
        if (stage_ == stage::losers) {
            while (fed_ < drops_.size()) {
                const auto& d = drops_[fed_++];
                lb_.insert(lb_.end(), d.begin(), d.end());
                if (lb_.size() >= 2) return;
            }
            if (lb_.size() > 1) return;
            stage_ = stage::grand;
        }
        if (stage_ == stage::grand) {
            const index_t wb = wb_.empty() ? -1 : wb_.front(), lb = lb_.empty() ? -1 : lb_.front();
            if (wb >= 0 && lb >= 0 && wb != lb) {
                final_ = {wb, lb};
                return;
            }
            grand_winner_ = wb;
            grand_loser_ = lb;
            stage_ = stage::done;
        }
    }

    index_t n_;
    group_shuffler shuffle_;
    std::vector<score_list> points_;
    stage stage_ = stage::winners;
    std::vector<index_t> wb_, lb_, final_, byes_;
    std::vector<std::vector<index_t>> drops_, lb_out_;
    std::size_t fed_ = 0;
    index_t grand_winner_ = -1, grand_loser_ = -1;
    std::vector<local_match> pairs_;
};

// ---- the driver ---------------------------------------------------------------------------------

// Number of rows from the outputs (at least one must be a view; both must agree).
template <class Rewards, class Advantages>
index_t rows_of_outputs(Rewards& rewards, Advantages& advantages, const char* fn) {
    constexpr bool has_r = !std::is_same_v<std::remove_cvref_t<Rewards>, none_t>;
    constexpr bool has_a = !std::is_same_v<std::remove_cvref_t<Advantages>, none_t>;
    static_assert(has_r || has_a, "posttrain::ranking: pass a rewards or an advantages view (or both); "
                                  "the number of rows comes from them");
    const auto length = [](auto v) { return v.extent(0); };
    index_t n = -1;
    if constexpr (has_r) n = std::visit(length, posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}));
    if constexpr (has_a) {
        const index_t m = std::visit(length, posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
        if (n >= 0) advantage::detail::check_extent(m, n, {fn, "advantages"}, "length (one per row, as rewards)");
        n = m;
    }
    if constexpr (has_r && has_a)
        std::visit([&](auto r, auto a) { advantage::detail::check_no_alias(a, r, {fn, "advantages"}, "rewards"); },
                   posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}),
                   posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
    return n;
}

// Runs one tournament per group, round by round, one judge batch per round across all groups.
// make(g, n) builds group g's state; the states' standings become the result and the outputs.
template <class Policy, class Groups, class Judge, class Rewards, class Advantages, class Make>
tournament_result run_tournaments(const Policy& policy, const Groups& groups, Judge& judge, Rewards&& rewards,
                                  Advantages&& advantages, const zscore_options& z, const char* fn, Make&& make) {
    static_assert(host_policy<Policy>, "posttrain::ranking: tournaments take a host policy (exec::seq or exec::par)");
    static_assert(ranking::judge<Judge>,
                  "posttrain::ranking: the judge must be callable as judge(std::span<const ranking::match>, "
                  "std::span<ranking::scores>) or as judge(index_t first, index_t second) returning a pair of scores");
    check_zscore_options(z, fn);
    const index_t n_rows = rows_of_outputs(rewards, advantages, fn);
    const auto layout = posttrain::detail::make_layout(groups, n_rows, {fn, "groups"});
    // The rewards are written while zscore_into still reads the layout (and the advantages after).
    if constexpr (!std::is_same_v<std::remove_cvref_t<Rewards>, none_t>)
        std::visit([&](auto r) { posttrain::detail::check_apart_from_layout(groups, r, fn, "rewards"); },
                   posttrain::detail::floating_output<1>(rewards, {fn, "rewards"}));
    if constexpr (!std::is_same_v<std::remove_cvref_t<Advantages>, none_t>)
        std::visit([&](auto a) { posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages"); },
                   posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
    const index_t G = layout.num_groups();

    using state = decltype(make(index_t{}, index_t{}));
    std::vector<state> states;
    states.reserve(std::size_t(G));
    for (index_t g = 0; g < G; ++g) states.push_back(make(g, layout.size(g)));

    tournament_result res;
    std::vector<round_plan> plans(static_cast<std::size_t>(G));
    std::vector<match> batch;
    std::vector<scores> verdicts;
    std::vector<std::size_t> first_of(static_cast<std::size_t>(G) + 1);
    for (;;) {
        advantage::detail::for_each_group(policy, layout, n_rows, [&](index_t g, auto, index_t) {
            round_plan& p = plans[std::size_t(g)];
            p.matches.clear();
            p.byes.clear();
            if (!states[std::size_t(g)].done()) states[std::size_t(g)].plan(p);
        });
        batch.clear();
        bool playing = false;
        for (index_t g = 0; g < G; ++g) {
            first_of[std::size_t(g)] = batch.size();
            const auto rows = layout.rows(g);
            playing |= !states[std::size_t(g)].done();
            for (const local_match& m : plans[std::size_t(g)].matches) batch.push_back({g, rows(m.first), rows(m.second)});
            for (index_t r : plans[std::size_t(g)].byes) res.byes.push_back({g, rows(r), res.rounds});
        }
        first_of[std::size_t(G)] = batch.size();
        if (!playing) break;
        verdicts.assign(batch.size(), scores{});
        if (!batch.empty()) detail::call_judge(judge, std::span<const match>(batch), std::span<scores>(verdicts));
        for (std::size_t k = 0; k < batch.size(); ++k) {
            const scores& v = verdicts[k];
            if (detail::failed(v))
                posttrain::detail::raise_invalid_argument(fn, "judge",
                                       "returned a non-finite score (" + std::to_string(v.first) + ", " +
                                           std::to_string(v.second) + ") for rows " + str(batch[k].first) + " vs " +
                                           str(batch[k].second) + " of group " + str(batch[k].group) + " in round " +
                                           str(res.rounds) + "; wrap it in ranking::with_fallback to score failures as a tie");
            res.comparisons.push_back({batch[k].group, batch[k].first, batch[k].second, v.first, v.second, res.rounds});
        }
        advantage::detail::for_each_group(policy, layout, n_rows, [&](index_t g, auto, index_t) {
            const std::size_t lo = first_of[std::size_t(g)], hi = first_of[std::size_t(g) + 1];
            if (!states[std::size_t(g)].done())
                states[std::size_t(g)].record(std::span<const scores>(verdicts.data() + lo, hi - lo));
        });
        ++res.rounds;
    }

    // Standings -> per-row results.
    res.order.assign(std::size_t(n_rows), 0);
    res.order_offsets.assign(std::size_t(G) + 1, 0);
    for (index_t g = 0; g < G; ++g) res.order_offsets[std::size_t(g) + 1] = res.order_offsets[std::size_t(g)] + layout.size(g);
    res.tier.assign(std::size_t(n_rows), 0);
    res.points.assign(std::size_t(n_rows), 0.0);
    res.tiebreak.assign(std::size_t(n_rows), 0.0);
    std::vector<double> reward(static_cast<std::size_t>(n_rows), 0.0);
    advantage::detail::for_each_group(policy, layout, n_rows, [&](index_t g, auto rows, index_t n) {
        standing st;
        states[std::size_t(g)].finish(st);
        for (index_t j = 0; j < n; ++j) {
            const auto r = std::size_t(rows(j));
            res.order[std::size_t(res.order_offsets[std::size_t(g)] + j)] = rows(st.order[std::size_t(j)]);
            res.tier[r] = st.tier[std::size_t(j)];
            res.points[r] = st.points[std::size_t(j)];
            res.tiebreak[r] = st.tiebreak[std::size_t(j)];
            reward[r] = st.reward[std::size_t(j)];
        }
    });
    if constexpr (!std::is_same_v<std::remove_cvref_t<Rewards>, none_t>) {
        auto rv = posttrain::detail::floating_output<1>(rewards, {fn, "rewards"});
        std::visit([&](auto r) { for (index_t i = 0; i < n_rows; ++i) r(i) = static_cast<typename decltype(r)::value_type>(reward[std::size_t(i)]); }, rv);
    }
    if constexpr (!std::is_same_v<std::remove_cvref_t<Advantages>, none_t>)
        res.zscore = zscore_into(policy, reward, groups, std::forward<Advantages>(advantages), z);
    return res;
}

// The anchor must be a row of every group that plays (groups of fewer than two rows do not).
inline void check_anchor(index_t anchor, index_t group, index_t rows, const char* fn) {
    if (rows >= 2 && (anchor < 0 || anchor >= rows))
        posttrain::detail::raise_invalid_argument(fn, "options.anchor",
                               "must be a row of every group, but group " + str(group) + " has " + str(rows) +
                                   " rows and the anchor is " + str(anchor));
}

}  // namespace detail

// ---- public entry points ------------------------------------------------------------------------

// ArenaRL's seeded single elimination: everyone plays the anchor (seeding), then a bracket in the
// standard seed order; ties go to the first-listed player; the final standing is the champion, then
// each elimination round's losers (last round first), by mean score. N - 1 seeding comparisons plus
// N - 1 matches: 2N - 2 comparisons. Rewards 1 - k / (N - 1) by position k, then the z-score.
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result single_elimination(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                                     Advantages&& advantages, const single_elimination_options& options = {}) {
    constexpr const char* fn = "posttrain::ranking::single_elimination";
    return detail::run_tournaments(policy, groups, judge, std::forward<Rewards>(rewards),
                                   std::forward<Advantages>(advantages), options.zscore, fn, [&](index_t g, index_t n) {
                                       detail::check_anchor(options.anchor, g, n, fn);
                                       return detail::single_elimination_state(n, options);
                                   });
}

// Every pair once (i < j, judge(i, j)); a win scores 1, a tie 0.5 each; min-rank rewards of the wins.
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result round_robin(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                              Advantages&& advantages, const round_robin_options& options = {}) {
    return detail::run_tournaments(policy, groups, judge, std::forward<Rewards>(rewards),
                                   std::forward<Advantages>(advantages), options.zscore,
                                   "posttrain::ranking::round_robin",
                                   [](index_t, index_t n) { return detail::round_robin_state(n); });
}

// Everyone against the anchor (judge(i, anchor)); a row's score is its score in that match, the
// anchor's the mean of its N - 1 scores (np.mean's order); min-rank rewards of the scores.
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result anchor(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                         Advantages&& advantages, const anchor_options& options = {}) {
    constexpr const char* fn = "posttrain::ranking::anchor";
    return detail::run_tournaments(policy, groups, judge, std::forward<Rewards>(rewards),
                                   std::forward<Advantages>(advantages), options.zscore, fn, [&](index_t g, index_t n) {
                                       detail::check_anchor(options.anchor, g, n, fn);
                                       return detail::anchor_state(n, options.anchor);
                                   });
}

// Swiss system: each round shuffles the players, orders them by points and pairs neighbours who have
// not met; a win scores 1, a tie 0.5, a bye 1. Ranked by (points, Buchholz); equal pairs share the
// mean of their positions' rewards.
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result swiss(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                        Advantages&& advantages, const swiss_options& options = {}) {
    constexpr const char* fn = "posttrain::ranking::swiss";
    detail::require(options.rounds >= 0, {fn, "options.rounds"}, "must be >= 0 (0: ceil(log2 N)), found " + detail::str(options.rounds));
    return detail::run_tournaments(policy, groups, judge, std::forward<Rewards>(rewards),
                                   std::forward<Advantages>(advantages), options.zscore, fn, [&](index_t g, index_t n) {
                                       return detail::swiss_state(n, options,
                                                                  detail::group_shuffler(&options.shuffle, options.seed, g, fn));
                                   });
}

// Double elimination as ArenaRL's code runs it (random draws every round, one grand final).
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result double_elimination(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                                     Advantages&& advantages, const double_elimination_options& options = {}) {
    constexpr const char* fn = "posttrain::ranking::double_elimination";
    return detail::run_tournaments(policy, groups, judge, std::forward<Rewards>(rewards),
                                   std::forward<Advantages>(advantages), options.zscore, fn, [&](index_t g, index_t n) {
                                       return detail::double_elimination_state(
                                           n, detail::group_shuffler(&options.shuffle, options.seed, g, fn));
                                   });
}

// Any topology, chosen at run time (e.g. to compare them).
template <class Policy, class Groups, class Judge, class Rewards, class Advantages>
tournament_result tournament(const Policy& policy, const Groups& groups, Judge&& judge, Rewards&& rewards,
                             Advantages&& advantages, const topology& t) {
    return std::visit(
        [&](const auto& o) -> tournament_result {
            using O = std::remove_cvref_t<decltype(o)>;
            if constexpr (std::is_same_v<O, single_elimination_options>)
                return single_elimination(policy, groups, judge, rewards, advantages, o);
            else if constexpr (std::is_same_v<O, round_robin_options>)
                return round_robin(policy, groups, judge, rewards, advantages, o);
            else if constexpr (std::is_same_v<O, anchor_options>)
                return anchor(policy, groups, judge, rewards, advantages, o);
            else if constexpr (std::is_same_v<O, swiss_options>)
                return swiss(policy, groups, judge, rewards, advantages, o);
            else
                return double_elimination(policy, groups, judge, rewards, advantages, o);
        },
        t);
}

}  // namespace posttrain::ranking
