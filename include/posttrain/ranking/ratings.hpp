#pragma once
// Rating models fitted from comparison records, group by group: win counts, Bradley-Terry (Hunter's
// MM iterations) and Elo, and advantages from Bradley-Terry strengths.
//
//     std::vector<double> wins_reward(N), theta(N), adv(N);
//     auto t = pt::ranking::round_robin(pt::exec::seq, pt::uniform_groups{8}, judge, wins_reward, pt::none);
//     auto fit = pt::ranking::bradley_terry(pt::exec::seq, t.comparisons, pt::uniform_groups{8}, theta);
//     auto st = pt::ranking::strength_advantages(pt::exec::seq, theta, pt::uniform_groups{8}, adv);
//
// Records are any contiguous range of ranking::comparison (a tournament_result's `comparisons`, or
// records the caller kept from earlier judging). Rows in records are the caller's row indices; the
// group layout says which rows form each group, and every record must compare two distinct rows of
// its own group. One comparison's outcome for its first row is 1 (strictly higher score), 0.5 (equal
// scores) or 0; the second row gets 1 minus that (ArenaRL's round robin: a tie is half a win each).
//
// Every group is fitted by one POSTTRAIN_HD function over plain pointers, run per group by
// exec::seq / exec::par (host blocks of groups) and by exec::thrust (<posttrain/thrust/ranking.hpp>,
// thrust::for_each over groups), so every backend writes the same bits.

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../config.hpp"
#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/numeric.hpp"
#include "../core/result.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"
#include "judge.hpp"
#include "rank_rewards.hpp"

namespace posttrain::ranking {

struct bradley_terry_options {
    // Virtual games each row plays against a fixed reference of strength 1, drawn (half a win, half a
    // loss). Any value > 0 makes the estimate exist for undefeated, winless, disconnected and unplayed
    // rows (an unplayed row gets log-strength 0) and anchors the scale. 0: the pure maximum-likelihood
    // fit, which exists only when each group's win graph is strongly connected; it is normalised to
    // mean log-strength 0 per group.
    double prior_games = 1.0;
    double tolerance = 1e-10;        // stop when max_i |log(p_i new / p_i old)| <= tolerance
    index_t max_iterations = 10000;  // a group still moving after this many is reported, not an error
};

// What a rating fit did.
struct [[nodiscard]] rating_result {
    index_t groups = 0;              // groups in the layout
    index_t iterations = 0;          // the most iterations any group took
    index_t unconverged_groups = 0;  // groups that hit max_iterations before the tolerance
};

struct elo_options {
    double initial = 1000;  // every row's rating before its group's first record
    double k = 32;          // step size
    double scale = 400;     // a rating difference of `scale` is a factor `base` in odds
    double base = 10;

    // Chatbot Arena's online Elo (FastChat elo_analysis.compute_elo: K = 4, scale 400, base 10, 1000).
    static elo_options lmsys() { return {1000, 4, 400, 10}; }
};

enum class strength_reward {
    expected_win_rate,  // r_i = mean over the other rows j of the group of sigmoid(theta_i - theta_j)
    log_strength,       // r_i = theta_i
};

struct strength_advantage_options {
    strength_reward reward = strength_reward::expected_win_rate;
    zscore_options zscore = {};
};

namespace detail {

using posttrain::detail::raise_invalid_argument;

// ---- the shared per-group math (POSTTRAIN_HD, plain pointers; no containers or lambdas) ---------

// A record in group-local terms: positions a and b inside the group, and a's outcome.
struct local_record {
    index_t a = 0;
    index_t b = 0;
    double wa = 0;  // 1, 0.5 or 0; b's outcome is 1 - wa
};

POSTTRAIN_HD inline double outcome_of(double first_score, double second_score) noexcept {
    return first_score > second_score ? 1.0 : first_score < second_score ? 0.0 : 0.5;
}

// wins[i] = init + the outcomes of row i's records, in record order.
POSTTRAIN_HD inline void accumulate_wins(const local_record* rec, index_t m, index_t n, double init, double* wins) noexcept {
    for (index_t i = 0; i < n; ++i) wins[i] = init;
    for (index_t r = 0; r < m; ++r) {
        wins[rec[r].a] += rec[r].wa;
        wins[rec[r].b] += 1.0 - rec[r].wa;
    }
}

// Marks the rows reachable from local row 0. direction 0: through any comparison; 1: along "x did
// not lose to y" edges x -> y (a win or a tie); 2: the reverse. Label propagation until nothing
// changes: O(m * diameter), small for the dense records tournaments produce.
POSTTRAIN_HD inline void reach_from_first(const local_record* rec, index_t m, index_t n, int direction,
                                          unsigned char* mark) noexcept {
    for (index_t i = 0; i < n; ++i) mark[i] = i == 0;
    bool changed = n > 0;
    while (changed) {
        changed = false;
        for (index_t r = 0; r < m; ++r) {
            const index_t a = rec[r].a, b = rec[r].b;
            const bool a_to_b = direction == 0 || (direction == 1 ? rec[r].wa > 0.0 : rec[r].wa < 1.0);
            const bool b_to_a = direction == 0 || (direction == 1 ? rec[r].wa < 1.0 : rec[r].wa > 0.0);
            if (a_to_b && mark[a] && !mark[b]) mark[b] = 1, changed = true;
            if (b_to_a && mark[b] && !mark[a]) mark[a] = 1, changed = true;
        }
    }
}

// Why a group's maximum-likelihood Bradley-Terry fit does not exist (prior_games = 0).
enum class bt_issue_kind : int { none, unplayed, never_won, never_lost, disconnected, no_win_path };
struct bt_issue {
    bt_issue_kind kind = bt_issue_kind::none;
    index_t a = 0;  // group-local rows the message names
    index_t b = 0;
};

// The ML fit exists iff the win graph (ties count both ways) is strongly connected (Hunter 2004,
// Assumption 1). Checks the simplest causes first so the message names the row at fault.
POSTTRAIN_HD inline bt_issue bt_check_group(const local_record* rec, index_t m, index_t n, double* wins, double* losses,
                                            unsigned char* mark) noexcept {
    bt_issue issue;
    if (n < 2) return issue;
    accumulate_wins(rec, m, n, 0.0, wins);
    for (index_t i = 0; i < n; ++i) losses[i] = 0.0;
    for (index_t r = 0; r < m; ++r) {
        losses[rec[r].a] += 1.0 - rec[r].wa;
        losses[rec[r].b] += rec[r].wa;
    }
    for (index_t i = 0; i < n; ++i)
        if (wins[i] + losses[i] == 0.0) return {bt_issue_kind::unplayed, i, 0};
    for (index_t i = 0; i < n; ++i)
        if (wins[i] == 0.0) return {bt_issue_kind::never_won, i, 0};
    for (index_t i = 0; i < n; ++i)
        if (losses[i] == 0.0) return {bt_issue_kind::never_lost, i, 0};
    const bt_issue_kind kinds[3] = {bt_issue_kind::disconnected, bt_issue_kind::no_win_path, bt_issue_kind::no_win_path};
    for (int direction = 0; direction < 3; ++direction) {
        reach_from_first(rec, m, n, direction, mark);
        for (index_t i = 0; i < n; ++i)
            if (!mark[i]) return direction == 2 ? bt_issue{kinds[direction], i, 0} : bt_issue{kinds[direction], 0, i};
    }
    return issue;
}

// Hunter's MM iterations for one group, all rows updated together (Jacobi):
//     p_i <- W_i / D_i,   W_i = prior/2 + sum of i's outcomes,
//     D_i = prior / (p_i + 1) + sum over i's records of 1 / (p_i + p_opponent)
// (the prior: `prior` games drawn against a reference of strength 1). With prior 0 the scale is free:
// each iterate is rescaled so the group's first row has p = 1, and the result is shifted to mean
// log-strength 0 at the end. Converged when every |log(p_new / p_old)| <= tolerance, tested as a
// ratio bound so that the loop needs no log or exp. Writes theta[i] = log p_i; returns the
// iterations made and sets *converged. Scratch p, w, den: n doubles each.
POSTTRAIN_HD inline index_t bt_fit_group(const local_record* rec, index_t m, index_t n, double prior, double tolerance,
                                         index_t max_iterations, double* p, double* w, double* den, double* theta,
                                         bool* converged) noexcept {
    using std::exp;
    using std::log;
    for (index_t i = 0; i < n; ++i) p[i] = 1.0, theta[i] = 0.0;
    *converged = true;
    if (n == 0 || (prior == 0.0 && n == 1)) return 0;
    accumulate_wins(rec, m, n, 0.5 * prior, w);
    const double lo = exp(-tolerance), hi = exp(tolerance);
    index_t it = 1;
    for (;; ++it) {
        for (index_t i = 0; i < n; ++i) den[i] = prior / (p[i] + 1.0);
        for (index_t r = 0; r < m; ++r) {
            const double inv = 1.0 / (p[rec[r].a] + p[rec[r].b]);
            den[rec[r].a] += inv;
            den[rec[r].b] += inv;
        }
        const double rescale = prior == 0.0 ? den[0] / w[0] : 1.0;
        bool still = false;
        for (index_t i = 0; i < n; ++i) {
            const double next = w[i] / den[i] * rescale;
            const double ratio = next / p[i];
            still |= !(ratio >= lo && ratio <= hi);
            p[i] = next;
        }
        if (!still) break;
        if (it == max_iterations) {
            *converged = false;
            break;
        }
    }
    double mean = 0.0;
    for (index_t i = 0; i < n; ++i) {
        theta[i] = log(p[i]);
        mean += theta[i];
    }
    mean = prior == 0.0 ? mean / static_cast<double>(n) : 0.0;
    for (index_t i = 0; i < n; ++i) theta[i] -= mean;
    return it;
}

// Online Elo over one group's records in order (FastChat's compute_elo arithmetic).
POSTTRAIN_HD inline void elo_group(const local_record* rec, index_t m, index_t n, double initial, double k, double scale,
                                   double base, double* rating) noexcept {
    using std::pow;
    for (index_t i = 0; i < n; ++i) rating[i] = initial;
    for (index_t r = 0; r < m; ++r) {
        const double ra = rating[rec[r].a], rb = rating[rec[r].b], sa = rec[r].wa;
        const double ea = 1.0 / (1.0 + pow(base, (rb - ra) / scale));
        const double eb = 1.0 / (1.0 + pow(base, (ra - rb) / scale));
        rating[rec[r].a] += k * (sa - ea);
        rating[rec[r].b] += k * (1.0 - sa - eb);
    }
}

// Rewards of one group from its log-strengths (local order). A lone row gets 0.5 (its z-score is 0
// whatever it gets).
POSTTRAIN_HD inline void strength_rewards_group(strength_reward kind, const double* theta, index_t n, double* reward) noexcept {
    for (index_t i = 0; i < n; ++i) {
        if (kind == strength_reward::log_strength) {
            reward[i] = theta[i];
            continue;
        }
        if (n < 2) {
            reward[i] = 0.5;
            continue;
        }
        double sum = 0.0;
        for (index_t j = 0; j < n; ++j)
            if (j != i) sum += numeric::sigmoid(theta[i] - theta[j]);
        reward[i] = sum / static_cast<double>(n - 1);
    }
}

// ---- per-group functors: what a backend runs for g in [0, G) -----------------------------------

// The records and rows of every group, flattened into group order: group g owns positions
// row_offsets[g] .. row_offsets[g+1] and records record_offsets[g] .. record_offsets[g+1].
struct group_spans {
    const index_t* row_offsets;
    const index_t* record_offsets;
    const local_record* records;
};

struct win_counts_kernel {
    group_spans s;
    double* out;  // group order
    POSTTRAIN_HD void operator()(index_t g) const {
        const index_t r0 = s.row_offsets[g], m0 = s.record_offsets[g];
        accumulate_wins(s.records + m0, s.record_offsets[g + 1] - m0, s.row_offsets[g + 1] - r0, 0.0, out + r0);
    }
};

struct bt_check_kernel {
    group_spans s;
    double* wins;
    double* losses;
    unsigned char* mark;
    bt_issue* issues;
    POSTTRAIN_HD void operator()(index_t g) const {
        const index_t r0 = s.row_offsets[g], m0 = s.record_offsets[g];
        issues[g] = bt_check_group(s.records + m0, s.record_offsets[g + 1] - m0, s.row_offsets[g + 1] - r0, wins + r0,
                                   losses + r0, mark + r0);
    }
};

struct bt_fit_kernel {
    group_spans s;
    double prior;
    double tolerance;
    index_t max_iterations;
    double* p;
    double* w;
    double* den;
    double* theta;  // group order
    index_t* iterations;
    unsigned char* converged;
    POSTTRAIN_HD void operator()(index_t g) const {
        const index_t r0 = s.row_offsets[g], m0 = s.record_offsets[g];
        bool ok = true;
        iterations[g] = bt_fit_group(s.records + m0, s.record_offsets[g + 1] - m0, s.row_offsets[g + 1] - r0, prior,
                                     tolerance, max_iterations, p + r0, w + r0, den + r0, theta + r0, &ok);
        converged[g] = ok;
    }
};

struct elo_kernel {
    group_spans s;
    elo_options o;
    double* out;
    POSTTRAIN_HD void operator()(index_t g) const {
        const index_t r0 = s.row_offsets[g], m0 = s.record_offsets[g];
        elo_group(s.records + m0, s.record_offsets[g + 1] - m0, s.row_offsets[g + 1] - r0, o.initial, o.k, o.scale, o.base,
                  out + r0);
    }
};

struct strength_rewards_kernel {
    const index_t* row_offsets;
    strength_reward kind;
    const double* theta;  // group order
    double* reward;       // group order
    POSTTRAIN_HD void operator()(index_t g) const {
        const index_t r0 = row_offsets[g];
        strength_rewards_group(kind, theta + r0, row_offsets[g + 1] - r0, reward + r0);
    }
};

// Per position j (group order) of a group-ordered record array: the record's local form.
struct localize_record {
    const comparison* records;
    const index_t* order;     // record index at each group-order position
    const index_t* local_of;  // position of each caller row inside its group
    local_record* out;
    POSTTRAIN_HD void operator()(index_t j) const {
        const comparison& c = records[order[j]];
        out[j] = {local_of[c.first], local_of[c.second], outcome_of(c.first_score, c.second_score)};
    }
};

// Per position j: y[rows[j]] = value[j] in the caller's type.
template <class Out>
struct scatter_rows {
    const double* value;
    const index_t* rows;
    Out* y;
    index_t stride;
    POSTTRAIN_HD void operator()(index_t j) const { y[rows[j] * stride] = static_cast<Out>(value[j]); }
};

// ---- host-side preparation, shared by every backend ---------------------------------------------

// A layout flattened: group g's rows are rows[row_offsets[g] .. row_offsets[g+1]); group_of and
// local_of give each caller row its group and its position inside it.
struct flat_layout {
    index_t groups = 0;
    std::vector<index_t> row_offsets, rows, group_of, local_of;
};

template <class Layout>
flat_layout flatten(const Layout& layout, index_t n_rows) {
    flat_layout f;
    f.groups = layout.num_groups();
    f.row_offsets.assign(std::size_t(f.groups) + 1, 0);
    f.rows.resize(std::size_t(n_rows));
    f.group_of.assign(std::size_t(n_rows), 0);
    f.local_of.assign(std::size_t(n_rows), 0);
    for (index_t g = 0; g < f.groups; ++g) {
        const index_t n = layout.size(g), begin = f.row_offsets[std::size_t(g)];
        const auto rows = layout.rows(g);
        for (index_t j = 0; j < n; ++j) {
            const index_t row = rows(j);
            f.rows[std::size_t(begin + j)] = row;
            f.group_of[std::size_t(row)] = g;
            f.local_of[std::size_t(row)] = j;
        }
        f.row_offsets[std::size_t(g) + 1] = begin + n;
    }
    return f;
}

template <class Records>
concept comparison_records = std::ranges::contiguous_range<const Records> &&
                             std::is_same_v<std::ranges::range_value_t<const Records>, comparison>;

template <class Records>
std::span<const comparison> as_records(const Records& records) {
    static_assert(comparison_records<Records>,
                  "posttrain::ranking: records must be a contiguous range of posttrain::ranking::comparison "
                  "(std::vector, std::span, an array, a tournament_result's comparisons)");
    return {std::ranges::data(records), static_cast<std::size_t>(std::ranges::size(records))};
}

// Every record compares two distinct rows of its own group, with finite scores.
inline void check_records(std::span<const comparison> records, const flat_layout& f, index_t n_rows, const char* fn) {
    const where w{fn, "records"};
    for (std::size_t k = 0; k < records.size(); ++k) {
        const comparison& c = records[k];
        const std::string at = "records[" + std::to_string(k) + "]";
        if (c.group < 0 || c.group >= f.groups)
            raise_invalid_argument(fn, w.argument, at + ".group = " + str(c.group) + " is out of range [0, " + str(f.groups) + ")");
        const index_t rows[2] = {c.first, c.second};
        const char* names[2] = {".first", ".second"};
        for (int s = 0; s < 2; ++s) {
            if (rows[s] < 0 || rows[s] >= n_rows)
                raise_invalid_argument(fn, w.argument,
                                       at + names[s] + " = " + str(rows[s]) + " is out of range [0, " + str(n_rows) + ")");
            if (f.group_of[std::size_t(rows[s])] != c.group)
                raise_invalid_argument(fn, w.argument,
                                       at + names[s] + " = row " + str(rows[s]) + " belongs to group " +
                                           str(f.group_of[std::size_t(rows[s])]) + ", not to the record's group " + str(c.group));
        }
        if (c.first == c.second) raise_invalid_argument(fn, w.argument, at + " compares row " + str(c.first) + " with itself");
        if (!numeric::is_finite(c.first_score) || !numeric::is_finite(c.second_score))
            raise_invalid_argument(fn, w.argument,
                                   at + " has a non-finite score (" + std::to_string(c.first_score) + ", " +
                                       std::to_string(c.second_score) + ")");
    }
}

// Records grouped: the local records of group g are records[record_offsets[g] .. record_offsets[g+1]),
// in the caller's order.
struct grouped_records {
    flat_layout layout;
    std::vector<index_t> record_offsets;
    std::vector<local_record> records;
    group_spans spans() const { return {layout.row_offsets.data(), record_offsets.data(), records.data()}; }
};

// A host backend: runs per-group and per-position functors over blocks of exec::seq / exec::par,
// and buckets records by group with a stable counting sort.
template <class Policy>
struct host_runner {
    Policy policy;

    template <class F>
    void each(index_t count, index_t cost, const F& f) const {
        posttrain::detail::for_blocks(policy, count, cost, [&](index_t lo, index_t hi) {
            for (index_t i = lo; i < hi; ++i) f(i);
        });
    }

    // order: record indices sorted by group, stable; offsets: G + 1.
    void bucket(const std::vector<index_t>& group_of_record, index_t groups, std::vector<index_t>& order,
                std::vector<index_t>& offsets) const {
        offsets.assign(std::size_t(groups) + 1, 0);
        for (index_t g : group_of_record) ++offsets[std::size_t(g) + 1];
        for (index_t g = 0; g < groups; ++g) offsets[std::size_t(g) + 1] += offsets[std::size_t(g)];
        std::vector<index_t> next(offsets.begin(), offsets.end() - 1);
        order.resize(group_of_record.size());
        for (std::size_t k = 0; k < group_of_record.size(); ++k)
            order[std::size_t(next[std::size_t(group_of_record[k])]++)] = index_t(k);
    }

    template <class Groups, class Advantages>
    group_stats_result zscore(const std::vector<double>& rewards, const Groups& groups, Advantages&& advantages,
                              const zscore_options& z) const {
        return zscore_into(policy, rewards, groups, std::forward<Advantages>(advantages), z);
    }
};

template <class Runner, class Groups>
grouped_records group_records(const Runner& run, std::span<const comparison> records, const Groups& groups,
                              index_t n_rows, const char* fn) {
    grouped_records out;
    out.layout = flatten(posttrain::detail::make_layout(groups, n_rows, {fn, "groups"}), n_rows);
    check_records(records, out.layout, n_rows, fn);
    std::vector<index_t> group_of_record(records.size()), order;
    for (std::size_t k = 0; k < records.size(); ++k) group_of_record[k] = records[k].group;
    run.bucket(group_of_record, out.layout.groups, order, out.record_offsets);
    out.records.resize(records.size());
    run.each(index_t(records.size()), 1,
             localize_record{records.data(), order.data(), out.layout.local_of.data(), out.records.data()});
    return out;
}

// Work per group for for_blocks' grain: records and rows per group, times an iteration guess.
inline index_t cost_per_group(const grouped_records& gr, index_t factor) {
    const index_t g = gr.layout.groups > 0 ? gr.layout.groups : 1;
    return factor * ((index_t(gr.records.size()) + index_t(gr.layout.rows.size())) / g + 1);
}

// Writes group-ordered doubles into the caller's 1-D view.
template <class Runner, class Out>
void write_out(const Runner& run, const std::vector<double>& value, const flat_layout& f, tensor_view<Out, 1> y) {
    run.each(index_t(value.size()), 1, scatter_rows<Out>{value.data(), f.rows.data(), y.data(), y.stride(0)});
}

template <class Runner, class Records, class Groups, class Wins>
void win_counts_run(const Runner& run, const Records& records, const Groups& groups, Wins&& wins, const char* fn) {
    auto wv = posttrain::detail::floating_output<1>(wins, {fn, "wins"});
    std::visit(
        [&](auto y) {
            const grouped_records gr = group_records(run, as_records(records), groups, y.extent(0), fn);
            posttrain::detail::check_apart_from_layout(groups, y, fn, "wins");
            std::vector<double> out(std::size_t(y.extent(0)), 0.0);
            run.each(gr.layout.groups, cost_per_group(gr, 1), win_counts_kernel{gr.spans(), out.data()});
            write_out(run, out, gr.layout, y);
        },
        wv);
}

inline void check_bradley_terry_options(const bradley_terry_options& o, const char* fn) {
    require(numeric::is_finite(o.prior_games) && o.prior_games >= 0, {fn, "options.prior_games"},
            "must be finite and >= 0, found " + std::to_string(o.prior_games));
    require(numeric::is_finite(o.tolerance) && o.tolerance >= 0, {fn, "options.tolerance"},
            "must be finite and >= 0, found " + std::to_string(o.tolerance));
    require(o.max_iterations >= 1, {fn, "options.max_iterations"}, "must be >= 1, found " + str(o.max_iterations));
}

inline std::string bt_issue_text(const bt_issue& is, const flat_layout& f, index_t g) {
    const auto row = [&](index_t local) { return str(f.rows[std::size_t(f.row_offsets[std::size_t(g)] + local)]); };
    switch (is.kind) {
        case bt_issue_kind::unplayed: return "row " + row(is.a) + " has no comparisons";
        case bt_issue_kind::never_won: return "row " + row(is.a) + " never won or tied (its strength goes to 0)";
        case bt_issue_kind::never_lost: return "row " + row(is.a) + " never lost or tied (its strength goes to infinity)";
        case bt_issue_kind::disconnected:
            return "its rows split into disconnected parts (no chain of comparisons links row " + row(is.a) + " to row " +
                   row(is.b) + ")";
        case bt_issue_kind::no_win_path:
            return "its win graph is not strongly connected (no chain of wins or ties leads from row " + row(is.a) +
                   " to row " + row(is.b) + ", so their strength ratio is unbounded)";
        case bt_issue_kind::none: break;
    }
    return {};
}

template <class Runner, class Records, class Groups, class LogStrengths>
rating_result bradley_terry_run(const Runner& run, const Records& records, const Groups& groups,
                                LogStrengths&& log_strengths, const bradley_terry_options& o, const char* fn) {
    check_bradley_terry_options(o, fn);
    auto tv = posttrain::detail::floating_output<1>(log_strengths, {fn, "log_strengths"});
    return std::visit(
        [&](auto y) {
            const index_t n_rows = y.extent(0);
            const grouped_records gr = group_records(run, as_records(records), groups, n_rows, fn);
            posttrain::detail::check_apart_from_layout(groups, y, fn, "log_strengths");
            const index_t G = gr.layout.groups;
            const auto nr = static_cast<std::size_t>(n_rows);
            std::vector<double> p(nr), w(nr), den(nr), theta(nr);
            if (o.prior_games == 0.0) {
                std::vector<unsigned char> mark(nr);
                std::vector<bt_issue> issues(static_cast<std::size_t>(G));
                run.each(G, cost_per_group(gr, 4), bt_check_kernel{gr.spans(), w.data(), den.data(), mark.data(), issues.data()});
                for (index_t g = 0; g < G; ++g)
                    if (issues[std::size_t(g)].kind != bt_issue_kind::none)
                        raise_invalid_argument(fn, "records",
                                               "the maximum-likelihood fit (options.prior_games = 0) does not exist for group " +
                                                   str(g) + ": " + bt_issue_text(issues[std::size_t(g)], gr.layout, g) +
                                                   "; set options.prior_games > 0 (e.g. 1) for a regularised fit");
            }
            std::vector<index_t> iterations(static_cast<std::size_t>(G));
            std::vector<unsigned char> converged(static_cast<std::size_t>(G));
            run.each(G, cost_per_group(gr, 64),
                     bt_fit_kernel{gr.spans(), o.prior_games, o.tolerance, o.max_iterations, p.data(), w.data(), den.data(),
                                   theta.data(), iterations.data(), converged.data()});
            write_out(run, theta, gr.layout, y);
            rating_result res;
            res.groups = G;
            for (index_t g = 0; g < G; ++g) {
                res.iterations = iterations[std::size_t(g)] > res.iterations ? iterations[std::size_t(g)] : res.iterations;
                res.unconverged_groups += converged[std::size_t(g)] ? 0 : 1;
            }
            return res;
        },
        tv);
}

inline void check_elo_options(const elo_options& o, const char* fn) {
    require(numeric::is_finite(o.initial), {fn, "options.initial"}, "must be finite, found " + std::to_string(o.initial));
    require(numeric::is_finite(o.k), {fn, "options.k"}, "must be finite, found " + std::to_string(o.k));
    require(numeric::is_finite(o.scale) && o.scale > 0, {fn, "options.scale"},
            "must be finite and > 0, found " + std::to_string(o.scale));
    require(numeric::is_finite(o.base) && o.base > 0 && o.base != 1, {fn, "options.base"},
            "must be finite, > 0 and != 1, found " + std::to_string(o.base));
}

template <class Runner, class Records, class Groups, class Ratings>
void elo_run(const Runner& run, const Records& records, const Groups& groups, Ratings&& ratings, const elo_options& o,
             const char* fn) {
    check_elo_options(o, fn);
    auto rv = posttrain::detail::floating_output<1>(ratings, {fn, "ratings"});
    std::visit(
        [&](auto y) {
            const grouped_records gr = group_records(run, as_records(records), groups, y.extent(0), fn);
            posttrain::detail::check_apart_from_layout(groups, y, fn, "ratings");
            std::vector<double> out(std::size_t(y.extent(0)), 0.0);
            run.each(gr.layout.groups, cost_per_group(gr, 2), elo_kernel{gr.spans(), o, out.data()});
            write_out(run, out, gr.layout, y);
        },
        rv);
}

template <class Runner, class LogStrengths, class Groups, class Advantages>
group_stats_result strength_advantages_run(const Runner& run, const LogStrengths& log_strengths, const Groups& groups,
                                           Advantages&& advantages, const strength_advantage_options& o, const char* fn) {
    check_zscore_options(o.zscore, fn);
    require(o.reward == strength_reward::expected_win_rate || o.reward == strength_reward::log_strength,
            {fn, "options.reward"}, "unknown strength_reward");
    auto tv = posttrain::detail::floating_input<1>(log_strengths, {fn, "log_strengths"});
    return std::visit(
        [&](auto t) {
            advantage::detail::check_finite(t, {fn, "log_strengths"});
            const index_t n_rows = t.extent(0);
            std::visit([&](auto a) { advantage::detail::check_extent(a.extent(0), n_rows, {fn, "advantages"}, "length (one per row)"); },
                       posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
            const flat_layout f = flatten(posttrain::detail::make_layout(groups, n_rows, {fn, "groups"}), n_rows);
            std::visit([&](auto a) { posttrain::detail::check_apart_from_layout(groups, a, fn, "advantages"); },
                       posttrain::detail::floating_output<1>(advantages, {fn, "advantages"}));
            const auto nr = static_cast<std::size_t>(n_rows);
            std::vector<double> theta(nr), reward(nr), by_row(nr);
            for (index_t j = 0; j < n_rows; ++j) theta[std::size_t(j)] = static_cast<double>(t(f.rows[std::size_t(j)]));
            // Work per group grows with its size squared.
            const double per_group = f.groups > 0 ? double(n_rows / f.groups + 1) : 1.0;
            const index_t cost = posttrain::detail::capped_work(per_group * per_group);
            run.each(f.groups, cost, strength_rewards_kernel{f.row_offsets.data(), o.reward, theta.data(), reward.data()});
            write_out(run, reward, f, tensor_view<double, 1>(by_row.data(), n_rows));
            return run.zscore(by_row, groups, std::forward<Advantages>(advantages), o.zscore);
        },
        tv);
}

}  // namespace detail

// wins[i] = row i's outcomes summed over the records (1 per strictly higher score, 0.5 per tie):
// ArenaRL's round-robin points. Rows without records get 0. With rank_rewards(tie_rule::min_rank)
// this reproduces ranking::round_robin's rewards from its own comparisons.
template <class Policy, class Records, class Groups, class Wins>
void win_counts(const Policy& policy, const Records& records, const Groups& groups, Wins&& wins) {
    static_assert(host_policy<Policy>, "posttrain::ranking::win_counts: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    detail::win_counts_run(detail::host_runner<Policy>{policy}, records, groups, std::forward<Wins>(wins),
                           "posttrain::ranking::win_counts");
}

// Bradley-Terry log-strengths theta_i = log p_i (P(i beats j) = p_i / (p_i + p_j)) per group, fitted
// by Hunter's (2004) MM iterations from the records' outcomes (a tie is half a win each).
template <class Policy, class Records, class Groups, class LogStrengths>
rating_result bradley_terry(const Policy& policy, const Records& records, const Groups& groups, LogStrengths&& log_strengths,
                            const bradley_terry_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::ranking::bradley_terry: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    return detail::bradley_terry_run(detail::host_runner<Policy>{policy}, records, groups,
                                     std::forward<LogStrengths>(log_strengths), options, "posttrain::ranking::bradley_terry");
}

// Online Elo ratings: each group's records applied one after another in the order given.
template <class Policy, class Records, class Groups, class Ratings>
void elo(const Policy& policy, const Records& records, const Groups& groups, Ratings&& ratings,
         const elo_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::ranking::elo: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    detail::elo_run(detail::host_runner<Policy>{policy}, records, groups, std::forward<Ratings>(ratings), options,
                    "posttrain::ranking::elo");
}

// Advantages from log-strengths: a reward per row (options.reward), then the group z-score.
template <class Policy, class LogStrengths, class Groups, class Advantages>
group_stats_result strength_advantages(const Policy& policy, const LogStrengths& log_strengths, const Groups& groups,
                                       Advantages&& advantages, const strength_advantage_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::ranking::strength_advantages: host policy expected "
                                       "(exec::thrust: include <posttrain/thrust/ranking.hpp>)");
    return detail::strength_advantages_run(detail::host_runner<Policy>{policy}, log_strengths, groups,
                                           std::forward<Advantages>(advantages), options,
                                           "posttrain::ranking::strength_advantages");
}

}  // namespace posttrain::ranking
