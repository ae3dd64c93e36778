#pragma once
// Vocabulary shared by the preference losses: optional per-example outputs, the reduction over
// examples, and the implicit-reward metrics TRL logs for every DPO-family loss.

#include <cmath>
#include <type_traits>
#include <variant>
#include <vector>

#include "sequence.hpp"

namespace posttrain::preference {

// An optional [N] output (per-pair losses, implicit rewards, ...): any writable float or double
// vector view; default-constructed or posttrain::none means "not wanted".
class batch_output {
public:
    batch_output() = default;
    batch_output(none_t) {}  // NOLINT: implicit
    template <class X>
        requires(!std::is_same_v<std::remove_cvref_t<X>, batch_output> && !std::is_same_v<std::remove_cvref_t<X>, none_t>)
    batch_output(X&& x)  // NOLINT: implicit, so that designated initializers read naturally
        : view_(detail::widen<detail::outputs_of<void, 1>>(
              posttrain::detail::floating_output<1>(x, {"posttrain::preference::batch_output", "output"}))) {}

    bool present() const noexcept { return view_.index() != 0; }
    index_t size() const noexcept {
        return std::visit(
            [](auto v) -> index_t {
                if constexpr (std::is_same_v<decltype(v), std::monostate>) return 0;
                else return v.extent(0);
            },
            view_);
    }
    // Checks the length: n entries (nothing to check when absent).
    void check(index_t n, posttrain::detail::where w) const {
        if (!present()) return;
        posttrain::detail::require(size() == n, w,
                                   "must have " + posttrain::detail::str(n) + " entries, found " + posttrain::detail::str(size()));
    }
    // f(view) with the output's view, when present.
    template <class F>
    void visit(F&& f) const {
        std::visit(
            [&](auto v) {
                if constexpr (!std::is_same_v<decltype(v), std::monostate>) f(v);
            },
            view_);
    }
    // Checks the length (n entries) naming the output, then writes values[i] to entry i.
    void write(const std::vector<double>& values, posttrain::detail::where w) const {
        if (!present()) return;
        check(index_t(values.size()), w);
        visit([&](auto v) {
            using V = typename decltype(v)::value_type;
            for (index_t i = 0; i < v.extent(0); ++i) v(i) = static_cast<V>(values[std::size_t(i)]);
        });
    }

private:
    detail::outputs_of<void, 1> view_;
};

// How per-example losses become the loss: the mean over the batch's examples (TRL, OpenRLHF, the
// papers' code) or their sum. `normalizer` > 0 replaces the example count of the mean (the global
// count across data-parallel ranks, so that every rank's gradient is a share of the global mean).
enum class reduction { mean, sum };

// The implicit-reward metrics of a pairwise batch (TRL definitions): rewards are the detached scores
// the loss logs (beta * log-ratio for DPO, beta * mean log-prob for SimPO, ...), means over the pairs.
struct reward_metrics {
    double chosen = 0;        // rewards/chosen
    double rejected = 0;      // rewards/rejected
    double margin = 0;        // rewards/margins = mean(chosen - rejected)
    double accuracy = 0;      // rewards/accuracies = mean[chosen > rejected] (strict: 0 at initialisation)
    double tie_fraction = 0;  // mean[|chosen - rejected| < 1e-12]
    double logps_chosen = 0;  // logps/chosen = mean policy S(y_w) (as reduced, LD weights included)
    double logps_rejected = 0;
};

namespace detail {

inline reward_metrics pair_reward_metrics(const std::vector<double>& chosen, const std::vector<double>& rejected,
                                          const std::vector<double>& logps_chosen,
                                          const std::vector<double>& logps_rejected) {
    reward_metrics m;
    const index_t n = index_t(chosen.size());
    if (n == 0) return m;
    auto mean = [n](auto f) { return fixed_order_sum(n, f) / double(n); };
    m.chosen = mean([&](index_t i) { return chosen[std::size_t(i)]; });
    m.rejected = mean([&](index_t i) { return rejected[std::size_t(i)]; });
    m.margin = mean([&](index_t i) { return chosen[std::size_t(i)] - rejected[std::size_t(i)]; });
    m.accuracy = mean([&](index_t i) { return chosen[std::size_t(i)] > rejected[std::size_t(i)] ? 1.0 : 0.0; });
    m.tie_fraction = mean([&](index_t i) { return std::fabs(chosen[std::size_t(i)] - rejected[std::size_t(i)]) < 1e-12 ? 1.0 : 0.0; });
    m.logps_chosen = mean([&](index_t i) { return logps_chosen[std::size_t(i)]; });
    m.logps_rejected = mean([&](index_t i) { return logps_rejected[std::size_t(i)]; });
    return m;
}

struct named_output {
    const batch_output& output;
    const char* name;
    index_t n = -1;  // its length; -1: the call's n
};

// An output written before the [n] outputs: a gradient (both of its forms) or a [B, T] output's view.
struct written_output {
    written_output(const sequence_grad& g, const char* n) : tokens(&g.token_view()), sums(&g.sums_view()), name(n) {}
    written_output(const outputs_of<void, 2>& v, const char* n) : tokens(&v), name(n) {}
    const outputs_of<void, 2>* tokens;
    const outputs_of<void, 1>* sums = nullptr;
    const char* name;
};

// The optional [n] outputs of a call, checked before anything is written: their lengths, and none
// over an output written before them (gradients, [B, T] outputs) or over another of them (they are
// written one by one).
inline void check_outputs_before_writes(const char* fn, index_t n, std::initializer_list<named_output> outputs,
                                        std::initializer_list<written_output> written = {}) {
    for (auto o = outputs.begin(); o != outputs.end(); ++o) {
        o->output.check(o->n >= 0 ? o->n : n, {fn, o->name});
        o->output.visit([&](auto v) {
            for (const written_output& g : written) {
                auto against = [&](const auto* variant) {
                    if (!variant) return;
                    std::visit(
                        [&](auto x) {
                            if constexpr (!std::is_same_v<decltype(x), std::monostate>)
                                posttrain::advantage::detail::check_no_alias(v, x, {fn, o->name}, g.name);
                        },
                        *variant);
                };
                against(g.tokens);
                against(g.sums);
            }
            for (auto p = o + 1; p != outputs.end(); ++p)
                p->output.visit([&](auto u) { posttrain::advantage::detail::check_no_alias(v, u, {fn, o->name}, p->name); });
        });
    }
}

// The factor that turns a sum over `count` examples into the reduced loss.
inline double reduction_factor(reduction r, double normalizer, index_t count) {
    if (r == reduction::sum) return 1.0;
    const double d = normalizer > 0 ? normalizer : double(count);
    return d > 0 ? 1.0 / d : 0.0;
}

}  // namespace detail
}  // namespace posttrain::preference
