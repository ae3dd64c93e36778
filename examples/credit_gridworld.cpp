// credit_gridworld: why step-level credit helps a multi-turn agent. A key-and-door grid world with
// dead ends is solved by a tabular softmax policy trained with posttrain's advantages:
//
//   grpo            advantage::grpo (default: std-normalised) over the episode returns of each episode
//                   group; the trajectory's advantage is broadcast to all of its steps (outcome-only credit)
//   grpo_mean       the same without the std (scale::none): exactly GiGPO's episode level alone
//                   (checked below), so gigpo - grpo_mean is the step level's contribution
//   gigpo           credit::gigpo, default options (mean_norm, per-trajectory episode statistics)
//   gigpo_verl      credit::gigpo, gigpo_options::verl_agent() (mean_norm, across-steps statistics)
//   gigpo_verl_std  credit::gigpo, gigpo_options::verl_agent(mean_std_norm) (verl-agent's example scripts)
//   salt            credit::salt (state_action merge, alpha = 1) over the grpo trajectory advantages
//
// The task (kMap below): a corridor with five dead-end branches hanging off it. The key 'K' is at
// the corridor's left end; the door 'D' at the bottom of the middle branch opens only with the key,
// and the goal 'G' lies behind it. Actions: up, down, left, right; walking into a wall (or the
// locked door) keeps the agent where it is. The reward is sparse: 1 on reaching the goal, which ends
// the episode, 0 otherwise; an episode ends unsolved after `horizon` turns (30; the shortest paths
// from the two start cells take 11 and 17). The observation (and the policy's state) is (cell, has
// key) without history, so the same state comes back again and again -- within one trajectory
// (bumping a wall, walking back) and across the trajectories of a group -- which is what GiGPO's
// anchor states and SALT's graph merge on. Most steps are shared; what matters is a few decisions
// (turn back for the key, skip the dead ends, take the branch with the door).
//
// Training. Each step rolls out `groups` episode groups of `group` trajectories; all trajectories
// of a group start in the same cell (the map's 'S' cells, one per group in turn). The environments
// advance in lockstep and every turn appends one row per live environment to the step records
// (episode group, trajectory, a 64-bit key of the observation text, action key, reward, step index)
// -- interleaved rows, as a batched multi-turn rollout loop produces them. The records then give
// every step an advantage A_i, and one REINFORCE step is taken on the logits:
//
//     logits[s_i] += lr / T * sum_i A_i * (onehot(a_i) - softmax(logits[s_i]))     (T trajectories)
//
// (onehot - probs is the gradient of log softmax; one update per batch, so a PPO ratio would be 1).
// All estimators use the same learning rate, batch, seeds and random streams.
//
// Metrics, after every `eval_every` training steps: the policy's exact probability of reaching the
// goal within the horizon and its exact expected episode length (capped at the horizon), averaged
// over the start cells. Both are computed by propagating the state distribution of the stochastic
// policy turn by turn (no sampling noise). Reported as mean and standard error over seeds, and the
// number of training steps until the success rate first reaches 0.9.
//
// Before training, two checks on a real batch (the program fails if either does not hold):
// exec::par gives exec::seq's bits for every estimator, and GiGPO with step_weight 0 equals grpo_mean.
//
// Usage: credit_gridworld [--csv PATH] [--seeds N] [--steps N] [--eval-every N] [--lr X] [--group G]
//                         [--groups B] [--horizon H] [--gamma X] [--seed S] [--threads N] [--map FILE]
// The defaults are a quick run (well under a second; CI builds every example). scripts/credit-study
// runs the full study and draws docs/algorithms/figures/credit_study.png; docs/algorithms/credit_study.md
// explains it. Everything is seeded (std::mt19937_64, sampling done here): the output is identical
// run to run and with any --threads (runs are independent and each is sequential).

#include <posttrain/posttrain.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pt = posttrain;
namespace adv = posttrain::advantage;
namespace cr = posttrain::credit;

namespace {

// ---- the world ------------------------------------------------------------------------------------

// '#' wall, '.' floor, 'S' a start cell (floor), 'K' the key (picked up on entering), 'D' the door
// (a wall without the key), 'G' the goal. --map FILE reads another map in the same characters
// (the border must be walls).
const std::vector<std::string> kMap = {
    "#############",
    "#K.S.....S..#",
    "##.#.#.#.#.##",
    "##.#.#.#.#.##",
    "######D######",
    "######G######",
    "#############",
};

constexpr int kActions = 4;
constexpr std::array<int, kActions> kDr{-1, 1, 0, 0};
constexpr std::array<int, kActions> kDc{0, 0, -1, 1};

struct world {
    int rows = 0, cols = 0;
    std::vector<std::string> map;
    std::vector<int> starts;  // cells
    int goal = -1, key = -1, door = -1;

    explicit world(std::vector<std::string> m) : map(std::move(m)) {
        if (map.empty()) throw std::runtime_error("empty map");
        rows = int(map.size());
        cols = int(map[0].size());
        // Every move stays inside the map because its border is wall.
        for (int r = 0; r < rows; ++r) {
            if (int(map[std::size_t(r)].size()) != cols) throw std::runtime_error("map rows differ in length");
            for (int c = 0; c < cols; ++c)
                if ((r == 0 || c == 0 || r == rows - 1 || c == cols - 1) && map[std::size_t(r)][std::size_t(c)] != '#')
                    throw std::runtime_error("the map's border must be walls ('#')");
        }
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c) {
                const char ch = map[std::size_t(r)][std::size_t(c)];
                const int cell = r * cols + c;
                if (ch == 'S') starts.push_back(cell);
                if (ch == 'G') goal = cell;
                if (ch == 'K') key = cell;
                if (ch == 'D') door = cell;
            }
        if (starts.empty() || goal < 0) throw std::runtime_error("map needs an S and a G");
    }
    int cells() const { return rows * cols; }
    int states() const { return 2 * cells(); }  // (cell, has key)
    static int state(int cell, bool has_key) { return 2 * cell + (has_key ? 1 : 0); }

    struct outcome {
        int state;
        double reward;
        bool done;
    };
    // One move. Walls and the locked door leave the agent in place.
    outcome step(int s, int a) const {
        const int cell = s / 2;
        bool has_key = s % 2 == 1;
        const int r = cell / cols + kDr[std::size_t(a)], c = cell % cols + kDc[std::size_t(a)];
        const char ch = map[std::size_t(r)][std::size_t(c)];
        int next = cell;
        if (ch != '#' && !(ch == 'D' && !has_key)) next = r * cols + c;
        if (next == key) has_key = true;
        const bool done = next == goal;
        return {state(next, has_key), done ? 1.0 : 0.0, done};
    }
    // The text an LLM agent would be shown: the anchor-state key is a hash of it.
    std::string observation(int s) const {
        const int cell = s / 2;
        return "You are at row " + std::to_string(cell / cols) + ", column " + std::to_string(cell % cols) +
               (s % 2 ? ". You carry the key." : ". Your hands are empty.");
    }
};

// ---- the policy -----------------------------------------------------------------------------------

double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

struct policy {
    std::vector<double> logits;  // states x kActions
    explicit policy(int states) : logits(std::size_t(states) * kActions, 0.0) {}
    std::array<double, kActions> probs(int s) const {
        std::array<double, kActions> p{};
        const double* l = &logits[std::size_t(s) * kActions];
        const double m = *std::max_element(l, l + kActions);
        double z = 0;
        for (int a = 0; a < kActions; ++a) z += p[std::size_t(a)] = std::exp(l[a] - m);
        for (double& x : p) x /= z;
        return p;
    }
    int sample(int s, std::mt19937_64& rng) const {
        const auto p = probs(s);
        double u = uniform01(rng);
        for (int a = 0; a < kActions - 1; ++a) {
            if (u < p[std::size_t(a)]) return a;
            u -= p[std::size_t(a)];
        }
        return kActions - 1;
    }
};

// Exact success probability within the horizon and expected episode length, from one start cell.
std::pair<double, double> evaluate(const world& w, const policy& pi, int start, int horizon) {
    std::vector<double> d(std::size_t(w.states()), 0.0), next(d.size());
    d[std::size_t(world::state(start, start == w.key))] = 1.0;
    double success = 0, length = 0;
    for (int t = 1; t <= horizon; ++t) {
        std::fill(next.begin(), next.end(), 0.0);
        for (int s = 0; s < w.states(); ++s) {
            if (d[std::size_t(s)] == 0) continue;
            const auto p = pi.probs(s);
            for (int a = 0; a < kActions; ++a) {
                const auto o = w.step(s, a);
                const double m = d[std::size_t(s)] * p[std::size_t(a)];
                if (o.done) {
                    success += m;
                    length += m * t;
                } else {
                    next[std::size_t(o.state)] += m;
                }
            }
        }
        std::swap(d, next);
    }
    return {success, length + (1.0 - success) * horizon};
}

// ---- the estimators -------------------------------------------------------------------------------

enum class estimator { grpo, grpo_mean, gigpo, gigpo_verl, gigpo_verl_std, salt };
constexpr std::array<estimator, 6> kEstimators{estimator::grpo, estimator::grpo_mean, estimator::gigpo, estimator::gigpo_verl,
                                               estimator::gigpo_verl_std, estimator::salt};
const char* name(estimator e) {
    switch (e) {
        case estimator::grpo: return "grpo";
        case estimator::grpo_mean: return "grpo_mean";
        case estimator::gigpo: return "gigpo";
        case estimator::gigpo_verl: return "gigpo_verl";
        case estimator::gigpo_verl_std: return "gigpo_verl_std";
        case estimator::salt: return "salt";
    }
    return "?";
}

// The step records of one training batch, appended turn by turn as a rollout loop does.
struct batch {
    std::vector<std::int64_t> group, trajectory, state, action, step;
    std::vector<double> reward;
    std::vector<int> policy_state;        // the policy's state index of each row (for the update)
    std::vector<double> trajectory_return;  // per trajectory

    void clear() {
        group.clear(), trajectory.clear(), state.clear(), action.clear(), step.clear(), reward.clear();
        policy_state.clear(), trajectory_return.clear();
    }
    auto records() const { return cr::steps(group, trajectory, state, reward).with_steps(step).with_actions(action); }
};

struct config {
    int seeds = 3;
    int steps = 100;
    int eval_every = 10;
    int groups = 4;   // episode groups per training step
    int group = 8;    // trajectories per episode group
    int horizon = 30;
    double lr = 1.0;
    double gamma = 0.95;  // the step-return discount of GiGPO (its default)
    std::uint64_t seed = 2026;
    int threads = 1;
    std::string csv = "credit_gridworld.csv";
    std::string map_file;  // a map of the caller's (same characters as kMap), one row per line
};

// Per-row advantages of one batch under one estimator; exec is the execution policy of every
// library call (exec::seq and exec::par give the same bits).
template <class Exec>
void advantages(const Exec& exec, estimator e, const batch& b, const config& c, std::vector<double>& out) {
    const auto n = b.group.size();
    out.assign(n, 0.0);
    const auto steps = b.records();
    // Each row carries its trajectory's return (as verl-agent's EpisodeRewardManager writes it).
    std::vector<double> episode(n);
    for (std::size_t i = 0; i < n; ++i) episode[i] = b.trajectory_return[std::size_t(b.trajectory[i])];
    auto grpo_rows = [&](adv::scale scale) {
        // Outcome-only: GRPO over the trajectories (trajectory ids are 0..T-1, G per group in
        // order), then every step of a trajectory gets its trajectory's advantage.
        std::vector<double> traj(b.trajectory_return.size());
        adv::grpo_options o;
        o.std_scale = scale;
        (void)adv::grpo(exec, b.trajectory_return, pt::uniform_groups{c.group}, traj, o);
        std::vector<double> rows(n);
        for (std::size_t i = 0; i < n; ++i) rows[i] = traj[std::size_t(b.trajectory[i])];
        return rows;
    };
    switch (e) {
        case estimator::grpo: out = grpo_rows(adv::scale::group); break;
        case estimator::grpo_mean: out = grpo_rows(adv::scale::none); break;
        case estimator::gigpo: {
            cr::gigpo_options o;
            o.gamma = c.gamma;
            (void)cr::gigpo(exec, steps, episode, out, o);
            break;
        }
        case estimator::gigpo_verl:
            (void)cr::gigpo(exec, steps, episode, out, cr::gigpo_options::verl_agent(cr::gigpo_norm::mean_norm, 1.0, 1e-6, c.gamma));
            break;
        case estimator::gigpo_verl_std:
            (void)cr::gigpo(exec, steps, episode, out, cr::gigpo_options::verl_agent(cr::gigpo_norm::mean_std_norm, 1.0, 1e-6, c.gamma));
            break;
        case estimator::salt: {
            const std::vector<double> base = grpo_rows(adv::scale::group);
            (void)cr::salt(exec, steps, base, out);
            break;
        }
    }
}

// Rolls out one batch: groups x group environments in lockstep, one row per live environment per turn.
void rollout(const world& w, const policy& pi, const config& c, int first_start, std::mt19937_64& rng, batch& b) {
    b.clear();
    const int envs = c.groups * c.group;
    std::vector<int> s(static_cast<std::size_t>(envs));
    std::vector<bool> live(static_cast<std::size_t>(envs), true);
    for (int e = 0; e < envs; ++e) {
        const int start = w.starts[std::size_t((first_start + e / c.group) % int(w.starts.size()))];
        s[std::size_t(e)] = world::state(start, start == w.key);
    }
    b.trajectory_return.assign(std::size_t(envs), 0.0);
    for (int t = 0; t < c.horizon; ++t)
        for (int e = 0; e < envs; ++e) {
            if (!live[std::size_t(e)]) continue;
            const int a = pi.sample(s[std::size_t(e)], rng);
            const auto o = w.step(s[std::size_t(e)], a);
            b.group.push_back(e / c.group);
            b.trajectory.push_back(e);
            b.state.push_back(cr::state_key(w.observation(s[std::size_t(e)])));
            b.action.push_back(a);
            b.step.push_back(t);
            b.reward.push_back(o.reward);
            b.policy_state.push_back(s[std::size_t(e)]);
            b.trajectory_return[std::size_t(e)] += o.reward;
            s[std::size_t(e)] = o.state;
            if (o.done) live[std::size_t(e)] = false;
        }
}

// One REINFORCE step on the logits from the batch's rows and their advantages.
void update(policy& pi, const batch& b, const std::vector<double>& a, double lr, int trajectories) {
    std::vector<double> grad(pi.logits.size(), 0.0);
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i] == 0) continue;
        const int s = b.policy_state[i];
        const auto p = pi.probs(s);
        for (int k = 0; k < kActions; ++k)
            grad[std::size_t(s) * kActions + std::size_t(k)] += a[i] * ((k == b.action[i] ? 1.0 : 0.0) - p[std::size_t(k)]);
    }
    const double scale = lr / trajectories;
    for (std::size_t j = 0; j < grad.size(); ++j) pi.logits[j] += scale * grad[j];
}

struct curve {
    std::vector<double> success, length;  // per evaluation point
};

curve train(const world& w, estimator e, int seed_index, const config& c) {
    policy pi(w.states());
    // The same stream for every estimator at one seed index.
    std::mt19937_64 rng(c.seed + 7919u * std::uint64_t(seed_index));
    batch b;
    std::vector<double> a;
    curve out;
    auto eval = [&] {
        double succ = 0, len = 0;
        for (int start : w.starts) {
            const auto [s, l] = evaluate(w, pi, start, c.horizon);
            succ += s;
            len += l;
        }
        out.success.push_back(succ / double(w.starts.size()));
        out.length.push_back(len / double(w.starts.size()));
    };
    eval();
    for (int step = 1; step <= c.steps; ++step) {
        rollout(w, pi, c, step * c.groups, rng, b);
        advantages(pt::exec::seq, e, b, c, a);
        update(pi, b, a, c.lr, c.groups * c.group);
        if (step % c.eval_every == 0) eval();
    }
    return out;
}

double mean(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
}
double stderr_of(const std::vector<double>& v) {
    if (v.size() < 2) return 0;
    const double m = mean(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / double(v.size() - 1) / double(v.size()));
}

// The library's exec::par must give exec::seq's bits on a real batch (rows interleaved by turn).
bool par_matches_seq(const world& w, const config& c) {
    policy pi(w.states());
    std::mt19937_64 rng(c.seed);
    batch b;
    rollout(w, pi, c, 0, rng, b);
    for (estimator e : kEstimators) {
        std::vector<double> x, y;
        advantages(pt::exec::seq, e, b, c, x);
        advantages(pt::exec::par, e, b, c, y);
        if (x != y) return false;
    }
    return true;
}

// GiGPO without its step level (omega = 0) is GRPO without the std (the grpo_mean line): the
// gap between those two lines is the step level's doing alone.
bool gigpo_without_steps_is_grpo_mean(const world& w, const config& c) {
    policy pi(w.states());
    std::mt19937_64 rng(c.seed + 1);
    batch b;
    rollout(w, pi, c, 0, rng, b);
    std::vector<double> episode(b.group.size()), x(b.group.size()), y;
    for (std::size_t i = 0; i < episode.size(); ++i) episode[i] = b.trajectory_return[std::size_t(b.trajectory[i])];
    cr::gigpo_options o;
    o.step_weight = 0.0;
    (void)cr::gigpo(pt::exec::seq, b.records(), episode, x, o);
    advantages(pt::exec::seq, estimator::grpo_mean, b, c, y);
    return x == y;
}

config parse(int argc, char** argv) {
    config c;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument("missing value after " + a);
            return argv[++i];
        };
        if (a == "--csv") c.csv = value();
        else if (a == "--seeds") c.seeds = std::stoi(value());
        else if (a == "--steps") c.steps = std::stoi(value());
        else if (a == "--eval-every") c.eval_every = std::stoi(value());
        else if (a == "--lr") c.lr = std::stod(value());
        else if (a == "--group") c.group = std::stoi(value());
        else if (a == "--groups") c.groups = std::stoi(value());
        else if (a == "--horizon") c.horizon = std::stoi(value());
        else if (a == "--gamma") c.gamma = std::stod(value());
        else if (a == "--seed") c.seed = std::stoull(value());
        else if (a == "--threads") c.threads = std::stoi(value());
        else if (a == "--map") c.map_file = value();
        else {
            std::printf("usage: credit_gridworld [--csv PATH] [--seeds N] [--steps N] [--eval-every N] [--lr X] "
                        "[--group G] [--groups B] [--horizon H] [--gamma X] [--seed S] [--threads N]\n");
            std::exit(a == "-h" || a == "--help" ? 0 : 2);
        }
    }
    if (c.seeds < 1 || c.steps < 1 || c.eval_every < 1 || c.group < 1 || c.groups < 1 || c.horizon < 1 || c.threads < 1)
        throw std::invalid_argument("counts must be >= 1");
    return c;
}

}  // namespace

int main(int argc, char** argv) try {
    const config c = parse(argc, argv);
    std::vector<std::string> map = kMap;
    if (!c.map_file.empty()) {
        std::ifstream in(c.map_file);
        if (!in) throw std::invalid_argument("cannot read " + c.map_file);
        map.clear();
        for (std::string line; std::getline(in, line);)
            if (!line.empty()) map.push_back(line);
    }
    const world w(map);
    for (const auto& line : w.map) std::printf("  %s\n", line.c_str());
    std::printf("%d start cells, %d groups x %d trajectories per step, horizon %d, lr %g, gamma %g, %d seeds, %d steps\n",
                int(w.starts.size()), c.groups, c.group, c.horizon, c.lr, c.gamma, c.seeds, c.steps);
    // Two checks of the library on a real batch; the program fails if either does not hold.
    const bool par_ok = par_matches_seq(w, c), omega0_ok = gigpo_without_steps_is_grpo_mean(w, c);
    std::printf("exec::par == exec::seq on a batch: %s\n", par_ok ? "yes (bitwise)" : "NO");
    std::printf("GiGPO with step_weight 0 == GRPO without std on a batch: %s\n", omega0_ok ? "yes (bitwise)" : "NO");
    if (!par_ok || !omega0_ok) return 1;

    // runs[e][seed]: independent, so they are spread over threads; each is sequential and seeded.
    const int ne = int(kEstimators.size());
    std::vector<curve> runs(std::size_t(ne * c.seeds));
    {
        std::vector<std::thread> pool;
        for (int t = 0; t < c.threads; ++t)
            pool.emplace_back([&, t] {
                for (int j = t; j < ne * c.seeds; j += c.threads)
                    runs[std::size_t(j)] = train(w, kEstimators[std::size_t(j / c.seeds)], j % c.seeds, c);
            });
        for (auto& th : pool) th.join();
    }

    std::ofstream csv(c.csv);
    csv << "estimator,step,success_mean,success_se,length_mean,length_se,seeds\n";
    const std::size_t points = runs[0].success.size();
    auto checkpoint = [&](std::size_t k) {
        const int step = int(k) * c.eval_every;
        return k + 1 == points || step == 50 || step == 100 || step == 200;
    };
    std::printf("\n%-15s %6s  %-17s %-17s\n", "estimator", "step", "success", "episode length");
    for (int e = 0; e < ne; ++e)
        for (std::size_t k = 0; k < points; ++k) {
            std::vector<double> s, l;
            for (int seed = 0; seed < c.seeds; ++seed) {
                s.push_back(runs[std::size_t(e * c.seeds + seed)].success[k]);
                l.push_back(runs[std::size_t(e * c.seeds + seed)].length[k]);
            }
            const int step = int(k) * c.eval_every;
            char line[256];
            std::snprintf(line, sizeof line, "%s,%d,%.6f,%.6f,%.4f,%.4f,%d\n", name(kEstimators[std::size_t(e)]), step, mean(s),
                          stderr_of(s), mean(l), stderr_of(l), c.seeds);
            csv << line;
            if (checkpoint(k))
                std::printf("%-15s %6d  %.3f +- %.3f    %5.1f +- %.1f\n", name(kEstimators[std::size_t(e)]), step, mean(s),
                            stderr_of(s), mean(l), stderr_of(l));
        }
    // Training steps until the policy first succeeds with probability >= 0.9, per seed.
    std::printf("\n%-15s  steps to 90%% success (mean +- s.e. over the seeds that got there)\n", "estimator");
    for (int e = 0; e < ne; ++e) {
        std::vector<double> reach;
        for (int seed = 0; seed < c.seeds; ++seed) {
            const auto& r = runs[std::size_t(e * c.seeds + seed)].success;
            for (std::size_t k = 0; k < r.size(); ++k)
                if (r[k] >= 0.9) {
                    reach.push_back(double(k) * c.eval_every);
                    break;
                }
        }
        if (reach.empty())
            std::printf("%-15s  never (0 of %d seeds)\n", name(kEstimators[std::size_t(e)]), c.seeds);
        else
            std::printf("%-15s  %5.1f +- %4.1f  (%d of %d seeds)\n", name(kEstimators[std::size_t(e)]), mean(reach), stderr_of(reach),
                        int(reach.size()), c.seeds);
    }
    std::printf("\nCSV: %s\n", c.csv.c_str());
    return 0;
} catch (const std::exception& ex) {
    std::fprintf(stderr, "credit_gridworld: %s\n", ex.what());
    return 1;
}
