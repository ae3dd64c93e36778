// Conformance mappings: MMR1's curriculum metrics and weights (LengSicong/MMR1 d8161a0,
// verl/curriculum/metrics.py and RayPPOTrainer._compute_curriculum_weights / _update_curriculum_weights
// in verl/trainer/ray_trainer.py), with NLTK 3.8's sentence_bleu behind the self-BLEU metrics.
//
// The list-of-sequences functions (calculate_distinct_n, ...) are one prompt: its sequences are a
// ragged layout over the flat tokens and one group holds them all. The ray wrappers take padded
// responses [B * n, L]: sequences are uniform_groups{L} (the padding is part of every sequence, as
// responses.tolist() passes it, quirk M1) and prompts uniform_groups{n}; their output is float32.

#include "conformance.hpp"

#include <posttrain/sampling/diversity.hpp>
#include <posttrain/sampling/scores.hpp>

namespace conformance {
namespace {

namespace smp = posttrain::sampling;
using posttrain::exec::seq;

// A list of token lists as flat tokens + CSR offsets.
struct ragged_tokens {
    std::vector<std::int64_t> tokens;
    std::vector<std::int64_t> offsets{0};
};

ragged_tokens read_sequences(const json& v) {
    ragged_tokens r;
    for (const auto& s : v) {
        for (const auto& t : s) r.tokens.push_back(t.get<std::int64_t>());
        r.offsets.push_back(std::int64_t(r.tokens.size()));
    }
    return r;
}

// One prompt holding every sequence of the case.
template <class Metric>
void one_prompt(const case_context& c, produced& out, const char* name, Metric&& metric) {
    const ragged_tokens r = read_sequences(c.inputs.at("tokenized_sequences"));
    const std::vector<std::int64_t> prompt{0, std::int64_t(r.offsets.size() - 1)};
    std::vector<double> v(1);
    (void)metric(r.tokens, posttrain::ragged(r.offsets), posttrain::ragged(prompt), v);
    out.set(name, from_values(v, {}));
}

// The ray wrappers: padded responses [B * n, L], n rollouts per prompt, float32 per prompt.
template <class Metric>
void padded_prompts(const case_context& c, produced& out, const char* name, Metric&& metric) {
    const tensor responses = c.input("responses");
    const index_t B = index_t(c.param("batch_size")), n = index_t(c.param("curriculum_rollout_n"));
    std::vector<float> v(static_cast<std::size_t>(B));
    (void)metric(responses.ints, posttrain::uniform_groups{responses.cols()}, posttrain::uniform_groups{n}, v);
    out.set(name, from_values(std::vector<double>(v.begin(), v.end()), {B}, "float32"));
}

void distinct(const case_context& c, produced& out) {
    const smp::distinct_n_options o{index_t(c.param("n"))};
    one_prompt(c, out, "distinct_n", [&](auto& t, auto s, auto g, auto& v) { return smp::distinct_n(seq, t, s, g, v, o); });
}

void self_bleu_n(const case_context& c, produced& out) {
    const auto o = smp::self_bleu_options::order_only(int(c.param("n")));
    one_prompt(c, out, "self_bleu_n", [&](auto& t, auto s, auto g, auto& v) { return smp::self_bleu(seq, t, s, g, v, o); });
}

void self_bleu_123(const case_context& c, produced& out) {
    one_prompt(c, out, "self_bleu_123", [&](auto& t, auto s, auto g, auto& v) {
        return smp::self_bleu(seq, t, s, g, v, smp::self_bleu_options::mmr1());
    });
}

void edit_distance(const case_context& c, produced& out) {
    one_prompt(c, out, "edit_distance", [&](auto& t, auto s, auto g, auto& v) {
        return smp::pairwise_edit_distance(seq, t, s, g, v, smp::edit_distance_options::mmr1());
    });
}

void distinct_metric(const case_context& c, produced& out) {
    const smp::distinct_n_options o{index_t(c.param_or("n", 3))};
    padded_prompts(c, out, "distinct_3", [&](auto& t, auto s, auto g, auto& v) { return smp::distinct_n(seq, t, s, g, v, o); });
}

void self_bleu_metric(const case_context& c, produced& out) {
    padded_prompts(c, out, "self_bleu_123", [&](auto& t, auto s, auto g, auto& v) {
        return smp::self_bleu(seq, t, s, g, v, smp::self_bleu_options::mmr1());
    });
}

void edit_distance_metric(const case_context& c, produced& out) {
    padded_prompts(c, out, "edit_distance", [&](auto& t, auto s, auto g, auto& v) {
        return smp::pairwise_edit_distance(seq, t, s, g, v, smp::edit_distance_options::mmr1());
    });
}

// Accuracies in prompt-major order (prompt i's rollouts are rows i*n .. i*n+n-1).
void learnability(const case_context& c, produced& out) {
    const tensor acc = c.input("accuracy");
    const index_t B = index_t(c.param("batch_size")), n = index_t(c.param("curriculum_rollout_n"));
    std::vector<float> v(static_cast<std::size_t>(B));
    (void)smp::outcome_variance(seq, acc.data, posttrain::uniform_groups{n}, v, smp::outcome_options::mmr1());
    out.set("learnability", from_values(std::vector<double>(v.begin(), v.end()), {B}, "float32"));
}

// M per-prompt metric tensors stacked as the rows of a [M, P] matrix.
std::vector<float> stack(const json& list, index_t& M, index_t& P) {
    std::vector<float> m;
    M = 0;
    for (const auto& t : list) {
        const tensor x = parse_tensor(t);
        P = x.numel();
        for (double d : x.data) m.push_back(float(d));
        ++M;
    }
    return m;
}

std::vector<double> weights_of(const json& list) {
    std::vector<double> w;
    for (const auto& x : list) w.push_back(number(x));
    return w;
}

void combine(const case_context& c, produced& out) {
    index_t M = 0, P = 0;
    std::vector<float> m = stack(c.inputs.at("results"), M, P);
    std::vector<float> combined(static_cast<std::size_t>(P));
    smp::combine_metrics(seq, posttrain::tensor_view<const float, 2>(m.data(), M, P), weights_of(c.params.at("weights")),
                         combined, smp::combine_options::mmr1());
    out.set("combined", from_values(std::vector<double>(combined.begin(), combined.end()), {P}, "float32"));
}

// The scoring batches (PaddedSequentialSampler) only decide which rollouts run together; the
// weights are combine_metrics over every prompt, then min-max over the dataset.
void compute_weights(const case_context& c, produced& out) {
    index_t M = 0, P = 0;
    std::vector<float> m = stack(c.inputs.at("metric_values"), M, P);
    std::vector<float> w(static_cast<std::size_t>(P));
    smp::combine_metrics(seq, posttrain::tensor_view<const float, 2>(m.data(), M, P),
                         weights_of(c.params.at("curriculum_metric_weights")), w, smp::combine_options::mmr1());
    (void)smp::minmax_weights(seq, w, w, smp::minmax_options::mmr1());
    out.set("curriculum_weights", from_values(std::vector<double>(w.begin(), w.end()), {P}, "float32"));
}

json float32_tensor(const std::vector<float>& v) {
    json data = json::array();
    for (float x : v) data.push_back(double(x));
    return {{"shape", {v.size()}}, {"dtype", "float32"}, {"data", data}};
}

// Three calls: the first stores the new weights as they are (no prior state), later ones blend.
void update_weights(const case_context& c, produced& out) {
    smp::ema_options o = smp::ema_options::mmr1();
    o.momentum = c.param("curriculum_momentum");
    std::vector<float> state;
    json after = json::array();
    for (const auto& t : c.inputs.at("new_weights")) {
        const tensor x = parse_tensor(t);
        std::vector<float> fresh(x.data.begin(), x.data.end());
        if (state.empty()) state = fresh;
        else smp::ema_update(seq, state, fresh, o);
        after.push_back(float32_tensor(state));
    }
    out.set_exact("weights_after_update", after);
}

}  // namespace

void register_mmr1_scores(registry& r) {
    const tolerance exact{0.0, 0.0};
    r.add("mmr1/calculate_distinct_n", {distinct, exact, "sampling::distinct_n(seq, tokens, ragged(offsets), one prompt, out, {n})"});
    r.add("mmr1/calculate_self_bleu_n",
          {self_bleu_n, float64_path, "sampling::self_bleu(seq, ..., self_bleu_options::order_only(n))"});
    r.add("mmr1/calculate_self_bleu_123",
          {self_bleu_123, float64_path, "sampling::self_bleu(seq, ..., self_bleu_options::mmr1())"});
    r.add("mmr1/calculate_pairwise_edit_distance",
          {edit_distance, exact, "sampling::pairwise_edit_distance(seq, ..., edit_distance_options::mmr1())"});
    r.add("mmr1/calculate_distinct_n_metric",
          {distinct_metric, exact, "sampling::distinct_n(seq, responses, uniform_groups{L}, uniform_groups{n}, float out, {n})"});
    r.add("mmr1/calculate_self_bleu_metric",
          {self_bleu_metric, exact, "sampling::self_bleu(seq, responses, uniform_groups{L}, uniform_groups{n}, float out, mmr1())"});
    r.add("mmr1/calculate_edit_distance_metric",
          {edit_distance_metric, exact,
           "sampling::pairwise_edit_distance(seq, responses, uniform_groups{L}, uniform_groups{n}, float out, mmr1())"});
    r.add("mmr1/calculate_learnability_metric",
          {learnability, exact, "sampling::outcome_variance(seq, accuracy, uniform_groups{n}, float out, outcome_options::mmr1())"});
    r.add("mmr1/combine_metric_results",
          {combine, exact, "sampling::combine_metrics(seq, metrics[M, P], weights, float out, combine_options::mmr1())"});
    r.add("mmr1/RayPPOTrainer._compute_curriculum_weights",
          {compute_weights, exact,
           "sampling::combine_metrics(..., combine_options::mmr1()) then sampling::minmax_weights(..., minmax_options::mmr1())",
           {{"trace_batches", "the PaddedSequentialSampler batches only group the rollout work; the weights are "
                              "computed over every prompt at once (the sampler is mapped in map_mmr1_samplers)"}}});
    r.add("mmr1/RayPPOTrainer._update_curriculum_weights",
          {update_weights, exact, "first call: copy; then sampling::ema_update(seq, state, new, ema_options::mmr1() with momentum)"});
}

}  // namespace conformance
