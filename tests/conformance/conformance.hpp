#pragma once
// The conformance runner's vocabulary: tensors read from the case files, what a mapping produces,
// and the registry of mappings (one short function per reference function) and named deviations.
//
// A mapping is the documentation of "how to get <framework>'s numbers from posttrain": it reads
// the case's inputs, calls the public posttrain API with the framework's preset, and stores every
// output under the name the case file uses for it.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <posttrain/posttrain.hpp>

namespace conformance {

using json = nlohmann::json;
using posttrain::index_t;

// A case tensor, any dtype, held as double (int64 ids also kept exactly).
struct tensor {
    std::vector<std::int64_t> shape;
    std::string dtype = "float64";  // float64 | float32 | int64 | bool
    std::vector<double> data;
    std::vector<std::int64_t> ints;  // int64 and bool tensors: the exact values

    index_t numel() const { return static_cast<index_t>(data.size()); }
    index_t rows() const { return shape.empty() ? 1 : shape[0]; }
    index_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
    // Row-major rank-2 views over the data (rank-1 tensors are one column).
    posttrain::tensor_view<const double, 2> view2() const { return posttrain::tensor_view<const double, 2>(data.data(), rows(), cols()); }
    posttrain::tensor_view<const double, 1> view1() const { return posttrain::tensor_view<const double, 1>(data.data(), numel()); }
};

// A numeric JSON value or one of the strings "NaN", "Infinity", "-Infinity".
double number(const json& v);
tensor parse_tensor(const json& v);
bool is_tensor(const json& v);

// A tensor of the given shape, float64, zero-filled.
tensor zeros(std::vector<std::int64_t> shape, std::string dtype = "float64");
tensor from_values(std::vector<double> values, std::vector<std::int64_t> shape, std::string dtype = "float64");

// Group ids as written in the case files: strings or integers, in batch order.
struct group_ids {
    bool strings = false;
    std::vector<std::string> s;
    std::vector<std::int64_t> i;
    std::size_t size() const { return strings ? s.size() : i.size(); }
};
group_ids parse_ids(const json& v);

// One case as a mapping sees it.
struct case_context {
    std::string file;  // path as given on the command line (or found by the walk)
    std::string key;   // "<framework dir>/<function file stem>", e.g. "verl/compute_rloo_outcome_advantage"
    std::string id;
    const json& params;
    const json& inputs;
    const json& expected;

    tensor input(const std::string& name) const;
    group_ids ids(const std::string& name) const { return parse_ids(inputs.at(name)); }
    bool has_param(const std::string& name) const { return params.contains(name) && !params.at(name).is_null(); }
    double param(const std::string& name) const { return number(params.at(name)); }
    double param_or(const std::string& name, double fallback) const { return has_param(name) ? param(name) : fallback; }
};


// Thrown by a mapping for a case it cannot map (yet); the runner reports it as skipped, by id.
struct skip_case : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// |got - expected| <= abs + rel * |expected| (NaN matches NaN, infinities must be equal).
struct tolerance {
    double rel = 1e-12;
    double abs = 1e-12;
};
inline constexpr tolerance float64_path{1e-12, 1e-12};
inline constexpr tolerance float32_path{1e-6, 1e-6};

// What a mapping computed, by output name. A mapping may tighten or loosen the file's tolerance for
// one case (e.g. float32 inputs, or a float32 intermediate only some estimators have).
struct produced {
    std::map<std::string, tensor> values;
    std::map<std::string, json> exact;  // non-tensor outputs (lists, counts, records), compared for equality
    std::optional<tolerance> tol;
    void set(const std::string& name, tensor t) { values[name] = std::move(t); }
    void set_exact(const std::string& name, json v) { exact[name] = std::move(v); }
};

using mapping_fn = std::function<void(const case_context&, produced&)>;

struct mapping {
    mapping_fn run;
    tolerance tol = float64_path;
    std::string what;  // one line: which posttrain call with which preset
    // Outputs the reference's trace records that posttrain does not expose (internal bookkeeping of
    // the reference), by name, with why; they are not compared and --list-deviations lists them.
    std::map<std::string, std::string> internal = {};
};

// A deliberate divergence from a reference, named with its reason; --list-deviations prints the
// table. Without a tolerance the case is not compared (reported as skipped, by id, with the
// deviation's name); with one, the case is still compared, at that tolerance (a rounding difference
// posttrain does not reproduce, named so that nobody mistakes it for noise).
struct deviation {
    std::string key;       // file key
    std::string case_id;   // a case id, or a pattern where '*' matches any characters ("*" = every case)
    std::string name;
    std::string reason;
    std::optional<tolerance> tol{};
};

struct registry {
    std::map<std::string, mapping> mappings;
    std::vector<deviation> deviations;
    void add(const std::string& key, mapping m) { mappings[key] = std::move(m); }
};

void register_verl(registry& r);
void register_trl(registry& r);
void register_openrlhf(registry& r);
void register_gdpo(registry& r);
// Token-level policy optimisation (issue 3), one file each: policy losses and aggregation,
// GAE and returns, the optimal token baseline, KL / entropy / value losses.
void register_policy_loss(registry& r);
void register_returns(registry& r);
void register_token_baseline(registry& r);
void register_kl_value(registry& r);
// Preference optimisation (issue 4): the DPO family, KTO / ORPO, beyond pairs, token level, OREO.
void register_preference(registry& r);
void register_kto_orpo(registry& r);
void register_listwise(registry& r);
void register_token_preference(registry& r);
void register_oreo(registry& r);
// Tournament ranking of rollouts (issue 5): ArenaRL's topologies and its bidirectional judge.
void register_arenarl(registry& r);
// Variance-aware prompt sampling (issue 7): MMR1's curriculum metrics and weights, and its samplers.
void register_mmr1_scores(registry& r);
void register_mmr1_samplers(registry& r);
// Step-level credit assignment (issue 6): verl-agent's GiGPO.
void register_verl_agent(registry& r);
// The papers' refinements of group-relative RL (issue 8): reward shaping (unlikeliness, COPO, CaRR) and
// objectives (DisCO, TRPA).
void register_shaping(registry& r);
void register_objectives(registry& r);

// ---- helpers shared by the mappings ----

// verl's loss_agg_mode strings ("token-mean", "seq-mean-token-mean", ...).
posttrain::policy_loss::aggregation verl_agg_mode(const std::string& s);

// A group layout over string or integer ids, built with posttrain's public grouping API.
posttrain::grouping_result group_by(const group_ids& ids);

// Unbiased standard deviation of the non-NaN values of each block of `size` consecutive rows (NaN
// when a block has fewer than two), as torch's std gives it; one entry per block. Built from
// posttrain::advantage::group_mean_std over the compacted values. float32_bessel: trl's nanstd, whose
// Bessel factor count / (count - 1) is an int64 tensor division and so a float32 (what
// grpo_options::float32_bessel reproduces; group_mean_std_options has no such switch yet).
std::vector<double> block_nanstd(const std::vector<double>& values, index_t size, bool float32_bessel = false);

// torch.isclose(x, 0): |x| <= 1e-8 (NaN is not close).
inline bool isclose_zero(double x) { return x == x && (x < 0 ? -x : x) <= 1e-8; }

// Rank-2 [N, T] writable view over a std::vector (row-major).
inline posttrain::tensor_view<double, 2> view2(std::vector<double>& v, index_t rows, index_t cols) {
    return posttrain::tensor_view<double, 2>(v.data(), rows, cols);
}

// The causal shift of a language model's outputs, as views of the case tensors: logits [rows, T, V]
// from row `first`, positions 0..T-2 (each predicts the next token), and the labels [rows, T] they
// are scored against, positions 1..T-1. shifted_grad is the logits gradient's matching view (its last
// position, which predicts nothing, is left as it is: zero in a zeros() tensor).
inline posttrain::tensor_view<const double, 3> shifted_logits(const tensor& z, index_t first, index_t rows) {
    const index_t T = z.shape.at(1), V = z.shape.at(2);
    const index_t e[3] = {rows, T - 1, V}, s[3] = {T * V, V, 1};
    return posttrain::tensor_view<const double, 3>(z.data.data() + first * T * V, e, s);
}
inline posttrain::tensor_view<double, 3> shifted_grad(tensor& g, index_t first, index_t rows) {
    const index_t T = g.shape.at(1), V = g.shape.at(2);
    const index_t e[3] = {rows, T - 1, V}, s[3] = {T * V, V, 1};
    return posttrain::tensor_view<double, 3>(g.data.data() + first * T * V, e, s);
}
inline posttrain::tensor_view<const std::int64_t, 2> shifted_labels(const tensor& y, index_t first, index_t rows) {
    const index_t T = y.shape.at(1);
    const index_t e[2] = {rows, T - 1}, s[2] = {T, 1};
    return posttrain::tensor_view<const std::int64_t, 2>(y.ints.data() + first * T + 1, e, s);
}

}  // namespace conformance
