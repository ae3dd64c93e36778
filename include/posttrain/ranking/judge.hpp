#pragma once
// Judges: how posttrain asks the caller to compare rollouts, and the record of what was compared.
//
// A tournament decides which pairs to compare; the caller's judge (usually an LLM) compares them.
// LLM judges are batched and asynchronous, so the judge posttrain calls is *batched*: it receives
// every match of one round, across all groups, at once, and writes one score pair per match:
//
//     void judge(std::span<const ranking::match> matches, std::span<ranking::scores> out);
//
// A plain pairwise callable `scores judge(index_t first, index_t second)` (or one returning
// std::pair<double, double>) is accepted too and called match by match. Rows are the caller's row
// indices in the batch (not positions inside a group); `match::group` says which prompt they answer.
// Higher scores are better. A score that is not finite is a failure: the tournament raises
// invalid_argument, unless the judge is wrapped in with_fallback, which turns failures into a tie.
//
// Wrappers compose: bidirectional(with_fallback(j, {5, 5}, 10)) is ArenaRL's judge exactly — each
// direction retried up to ten times and then scored (5, 5), the two directions summed. with_cache(j,
// records) answers repeated matches from memory (or from an earlier tournament's records).

#include <concepts>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <string>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"

namespace posttrain::ranking {

// One comparison to make: rows `first` and `second` of group `group`. `first` is shown to the judge
// first (ArenaRL's "prediction" / Agent_A); order matters to judges with a position bias.
struct match {
    index_t group = 0;
    index_t first = 0;
    index_t second = 0;
};

// The judge's verdict on one match: a score for each side, higher is better.
struct scores {
    double first = 0;
    double second = 0;
};

// One judged match as the tournament saw it: who, in which order, the scores, and the round (the
// index of the judge batch it was part of, counted from 0 across the whole call).
struct comparison {
    index_t group = 0;
    index_t first = 0;
    index_t second = 0;
    double first_score = 0;
    double second_score = 0;
    index_t round = 0;
};

// A row that advanced (or, in Swiss, scored a point) without a match in a round.
struct bye {
    index_t group = 0;
    index_t row = 0;
    index_t round = 0;
};

template <class J>
concept batched_judge = std::invocable<J&, std::span<const match>, std::span<scores>>;

template <class J>
concept pairwise_judge = std::invocable<J&, index_t, index_t> && requires(J& j) {
    { j(index_t{}, index_t{}).first } -> std::convertible_to<double>;
    { j(index_t{}, index_t{}).second } -> std::convertible_to<double>;
};

template <class J>
concept judge = batched_judge<J> || pairwise_judge<J>;

namespace detail {

inline constexpr double no_score = std::numeric_limits<double>::quiet_NaN();

// Calls any judge on one batch. Entries the judge leaves unwritten stay NaN, so they are caught as
// failures instead of being read as a score of 0.
template <class J>
void call_judge(J& j, std::span<const match> batch, std::span<scores> out) {
    for (scores& s : out) s = {detail::no_score, detail::no_score};
    if constexpr (batched_judge<J>) {
        j(batch, out);
    } else {
        for (std::size_t k = 0; k < batch.size(); ++k) {
            const auto r = j(batch[k].first, batch[k].second);
            out[k] = {static_cast<double>(r.first), static_cast<double>(r.second)};
        }
    }
}

inline bool failed(const scores& s) noexcept { return !numeric::is_finite(s.first) || !numeric::is_finite(s.second); }

}  // namespace detail

// A judge that asks the inner judge in both orders and sums, as ArenaRL does: for a match (a, b) it
// asks (a, b) and (b, a) in the same batch and returns (s_a + s'_a, s_b + s'_b). Cancels a judge's
// position bias; every comparison costs two inner calls.
template <class Inner>
class bidirectional_judge {
public:
    explicit bidirectional_judge(Inner inner) : inner_(std::move(inner)) {}

    void operator()(std::span<const match> batch, std::span<scores> out) {
        both_.resize(2 * batch.size());
        both_scores_.resize(2 * batch.size());
        for (std::size_t k = 0; k < batch.size(); ++k) {
            both_[2 * k] = batch[k];
            both_[2 * k + 1] = {batch[k].group, batch[k].second, batch[k].first};
        }
        detail::call_judge(inner_, both_, both_scores_);
        for (std::size_t k = 0; k < batch.size(); ++k) {
            const scores& ab = both_scores_[2 * k];
            const scores& ba = both_scores_[2 * k + 1];
            out[k] = {ab.first + ba.second, ab.second + ba.first};
        }
    }

    Inner& inner() noexcept { return inner_; }

private:
    Inner inner_;
    std::vector<match> both_;
    std::vector<scores> both_scores_;
};

template <judge Inner>
bidirectional_judge<std::decay_t<Inner>> bidirectional(Inner&& inner) {
    return bidirectional_judge<std::decay_t<Inner>>(std::forward<Inner>(inner));
}

// A judge that survives failures: a match whose scores are not finite, or that threw (for a batched
// judge: every match of a batch that threw), is asked again (only the failed matches, in one batch) up to `retries` more times and
// then scored `tie`. ArenaRL: retries = 10 per direction, tie = (5, 5). `failures()` counts the
// matches that ended as the fallback tie.
template <class Inner>
class fallback_judge {
public:
    fallback_judge(Inner inner, scores tie, int retries) : inner_(std::move(inner)), tie_(tie), retries_(retries) {
        posttrain::detail::require(retries >= 0, {"posttrain::ranking::with_fallback", "retries"},
                                   "must be >= 0, found " + std::to_string(retries));
        posttrain::detail::require(!detail::failed(tie), {"posttrain::ranking::with_fallback", "tie"},
                                   "the fallback scores must be finite");
    }

    void operator()(std::span<const match> batch, std::span<scores> out) {
        pending_.clear();
        for (std::size_t k = 0; k < batch.size(); ++k) pending_.push_back(k);
        for (long long attempt = 0; attempt <= retries_ && !pending_.empty(); ++attempt) {
            ask_.clear();
            for (std::size_t k : pending_) ask_.push_back(batch[k]);
            answers_.resize(ask_.size());
            ask(ask_, answers_);
            std::size_t still = 0;
            for (std::size_t a = 0; a < pending_.size(); ++a) {
                if (detail::failed(answers_[a])) pending_[still++] = pending_[a];
                else out[pending_[a]] = answers_[a];
            }
            pending_.resize(still);
        }
        for (std::size_t k : pending_) out[k] = tie_;
        failures_ += static_cast<index_t>(pending_.size());
    }

    index_t failures() const noexcept { return failures_; }
    Inner& inner() noexcept { return inner_; }

private:
    // A batched judge that throws fails its whole batch; a pairwise one fails only the match it threw on.
    void ask(std::span<const match> m, std::span<scores> out) {
        if constexpr (batched_judge<Inner>) {
            try {
                detail::call_judge(inner_, m, out);
            } catch (const std::exception&) {
                for (scores& s : out) s = {detail::no_score, detail::no_score};
            }
        } else {
            for (std::size_t k = 0; k < m.size(); ++k) {
                try {
                    detail::call_judge(inner_, m.subspan(k, 1), out.subspan(k, 1));
                } catch (const std::exception&) {
                    out[k] = {detail::no_score, detail::no_score};
                }
            }
        }
    }

    Inner inner_;
    scores tie_;
    int retries_;
    index_t failures_ = 0;
    std::vector<std::size_t> pending_;
    std::vector<match> ask_;
    std::vector<scores> answers_;
};

template <judge Inner>
fallback_judge<std::decay_t<Inner>> with_fallback(Inner&& inner, scores tie, int retries = 0) {
    return fallback_judge<std::decay_t<Inner>>(std::forward<Inner>(inner), tie, retries);
}

// A judge that remembers: a match (group, first, second) judged before, in this call or in the
// `known` records (a previous tournament_result::comparisons, say), is answered from memory; only
// new matches reach the inner judge, in one batch. Worth it for a deterministic (temperature 0) LLM
// judge when topologies repeat pairings (Swiss rematches, a double-elimination grand final) or when
// several topologies are compared on the same rollouts. The order of a match matters: (a, b) and
// (b, a) are different questions to a judge with a position bias. `misses()` counts the matches
// passed to the inner judge.
template <class Inner>
class cached_judge {
public:
    cached_judge(Inner inner, std::span<const comparison> known) : inner_(std::move(inner)) {
        for (const comparison& c : known) memory_[{c.group, c.first, c.second}] = {c.first_score, c.second_score};
    }

    void operator()(std::span<const match> batch, std::span<scores> out) {
        ask_.clear();
        where_.clear();
        for (std::size_t k = 0; k < batch.size(); ++k) {
            const auto hit = memory_.find({batch[k].group, batch[k].first, batch[k].second});
            if (hit != memory_.end()) {
                out[k] = hit->second;
            } else {
                ask_.push_back(batch[k]);
                where_.push_back(k);
            }
        }
        if (ask_.empty()) return;
        answers_.resize(ask_.size());
        detail::call_judge(inner_, ask_, answers_);
        misses_ += static_cast<index_t>(ask_.size());
        for (std::size_t a = 0; a < ask_.size(); ++a) {
            out[where_[a]] = answers_[a];
            if (!detail::failed(answers_[a])) memory_[{ask_[a].group, ask_[a].first, ask_[a].second}] = answers_[a];
        }
    }

    index_t misses() const noexcept { return misses_; }
    Inner& inner() noexcept { return inner_; }

private:
    struct key {
        index_t group, first, second;
        bool operator<(const key& o) const noexcept {
            return group != o.group ? group < o.group : first != o.first ? first < o.first : second < o.second;
        }
    };
    Inner inner_;
    std::map<key, scores> memory_;
    index_t misses_ = 0;
    std::vector<match> ask_;
    std::vector<std::size_t> where_;
    std::vector<scores> answers_;
};

template <judge Inner>
cached_judge<std::decay_t<Inner>> with_cache(Inner&& inner, std::span<const comparison> known = {}) {
    return cached_judge<std::decay_t<Inner>>(std::forward<Inner>(inner), known);
}

}  // namespace posttrain::ranking
