// Conformance mappings: MMR1's samplers (LengSicong/MMR1 d8161a0, verl/curriculum/samplers.py and
// utils.py). MixedCurriculumSampler draws with torch's generator (randperm, multinomial), which a C++
// library does not reproduce; each case records those draws and the mapping hands them to
// sampling::mixed_curriculum_sampler through options.replay, then replays the trainer's calls.

#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <posttrain/sampling/samplers.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace sp = posttrain::sampling;

void fill_from(const json& recorded, std::span<index_t> out, const char* what) {
    if (recorded.size() != out.size()) throw std::runtime_error(std::string("recorded ") + what + " has a different size");
    for (std::size_t k = 0; k < out.size(); ++k) out[k] = recorded[k].get<index_t>();
}

json as_json(const std::vector<index_t>& v) {
    json a = json::array();
    for (index_t x : v) a.push_back(x);
    return a;
}

// ops: "consume:k" (update_position_after_batch k times), "reset" (the trainer's epoch start:
// cached_mixed_indices = None, then iterate), "update" (update_weights(new_weights), then iterate),
// "reiter" (iterate again: the cached list).
void mixed_curriculum(const case_context& c, produced& out) {
    auto o = sp::mixed_curriculum_options::mmr1(static_cast<index_t>(c.param("batch_size")), c.param("mixture_ratio"),
                                                static_cast<std::uint64_t>(c.param("generator_seed")));
    const json& in = c.inputs;
    o.replay.random_pool = [&in](std::span<index_t> pool) { fill_from(in.at("replay_random_pool_perm"), pool, "pool"); };
    o.replay.weighted_draws = [&in](index_t k, std::span<const double>, std::span<index_t> draws) {
        fill_from(in.at("replay_weighted_draws").at(static_cast<std::size_t>(k)), draws, "weighted draws");
    };
    o.replay.weighted_shuffle = [&in](index_t k, std::span<index_t> perm) {
        fill_from(in.at("replay_weighted_perms").at(static_cast<std::size_t>(k)), perm, "weighted shuffle");
    };
    const tensor w = c.input("weights");
    sp::mixed_curriculum_sampler s(posttrain::exec::seq, w.data, o);
    if (s.size() != static_cast<index_t>(c.param("dataset_size"))) throw std::runtime_error("dataset_size != len(weights)");

    json steps = json::array();
    auto iterate = [&](const char* op) {
        const bool was_cached = s.cached();
        const std::vector<index_t>& idx = s.indices(posttrain::exec::seq);
        json step = {{"op", op},
                     {"indices", as_json(idx)},
                     {"consumed_batches", s.consumed_batches()},
                     {"random_position_start", s.random_position_start()}};
        if (was_cached) step["cached"] = true;
        else step["regeneration"] = s.regenerations() - 1;
        steps.push_back(step);
    };
    iterate("iter");
    for (const json& op_json : c.params.at("ops")) {
        const std::string op = op_json.get<std::string>();
        if (op.rfind("consume:", 0) == 0) {
            s.consume(std::stoll(op.substr(8)));
        } else if (op == "reset") {
            s.reset();
            iterate("iter_after_epoch_reset");
        } else if (op == "update") {
            s.update_weights(c.input("new_weights").data);
            iterate("iter_after_update_weights");
        } else if (op == "reiter") {
            iterate("iter_again_cached");
        } else {
            throw std::runtime_error("unknown op " + op);
        }
    }
    out.set_exact("steps", steps);
}

void padded_sequential(const case_context& c, produced& out) {
    const auto idx = sp::padded_sequential_indices(static_cast<index_t>(c.param("dataset_size")),
                                                   static_cast<index_t>(c.param("batch_size")));
    out.set_exact("indices", as_json(idx));
    out.set_exact("len", static_cast<index_t>(idx.size()));
}

void pad_list(const case_context& c, produced& out) {
    const std::vector<index_t> lst = c.inputs.at("lst").get<std::vector<index_t>>();
    out.set_exact("padded", as_json(sp::pad_list(lst, static_cast<index_t>(c.param("divisor")))));
}

}  // namespace

void register_mmr1_samplers(registry& r) {
    r.add("mmr1/MixedCurriculumSampler",
          {mixed_curriculum, float64_path,
           "sampling::mixed_curriculum_sampler(seq, weights, mixed_curriculum_options::mmr1(B, ratio, seed)) with "
           "torch's recorded randperm / multinomial draws replayed through options.replay; consume / reset / "
           "update_weights / indices replay the trainer's calls"});
    r.add("mmr1/PaddedSequentialSampler",
          {padded_sequential, float64_path, "sampling::padded_sequential_indices(N, batch_size)"});
    r.add("mmr1/pad_list", {pad_list, float64_path, "sampling::pad_list(list, divisor)"});
}

}  // namespace conformance
