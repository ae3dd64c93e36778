"""The Python peer of posttrain's GiGPO benchmark (bench/credit_bench.cpp, op gigpo_steps): verl-agent's
approach to compute_gigpo_outcome_advantage, written from its structure (gigpo/core_gigpo.py) -- dict
grouping and per-step Python loops over 0-d torch tensors:

  episode level   one pass over the rows filling a dict uid -> list of scores (all step rows: the
                  compute_mean_std_cross_steps=True default), torch.mean / torch.std per uid, then a
                  per-row loop subtracting the uid's mean
  anchor states   per unique uid, np.where over the whole batch, then a dict keyed by the observation
                  assigning a fresh uuid4 string to each cluster
  step level      the same dict-of-lists normalisation keyed by the step-group uuid
  combination     A = A^E + w * A^S, tiled over the response tokens (one token here)

mode "mean_norm", w = 1, as gigpo_options::verl_agent(). Data: the layout of credit_bench.cpp (episode
groups of 8 trajectories of 1..16 steps written turn by turn, 10 states per group), with string uids
and observations as verl-agent receives them. The anchor-state grouping scans the whole batch once per
episode group (np.where per uid, O(G N)): about 1-2 s at 2^16 rows, 15 s at 2^18 and, extrapolated,
4 minutes at 2^20 per call; sizes above GIGPO_LOOP_MAX_N are declined.
"""

import uuid
from collections import defaultdict

import numpy as np
import torch

GIGPO_LOOP_MAX_N = 1 << 18


def make_data(layout, n, seed=42):
    g = np.random.default_rng(seed)
    group, traj, state, episode, returns = [], [], [], [], []
    gi = 0
    while len(group) < n:
        lens = g.integers(1, 17, size=8)
        ret = (g.random(8) < 0.5).astype(np.float32)
        for j in range(int(lens.max())):
            for k in range(8):
                if j < lens[k] and len(group) < n:
                    group.append(gi)
                    traj.append(gi * 8 + k)
                    state.append(int(g.integers(0, 10)))
                    episode.append(ret[k])
                    returns.append(ret[k] * 0.95 ** (lens[k] - 1 - j))
        gi += 1
    d = {"layout": layout, "n": n,
         "episode": torch.tensor(np.asarray(episode, dtype=np.float32)).unsqueeze(-1),
         "returns": torch.tensor(np.asarray(returns, dtype=np.float32)),
         "mask": torch.ones((n, 1), dtype=torch.float32)}
    if n <= GIGPO_LOOP_MAX_N:  # the string ids only where the peer runs
        d["index"] = np.array([f"uid-{x:08d}" for x in group], dtype=object)
        d["traj_index"] = np.array([f"traj-{x:09d}" for x in traj], dtype=object)
        d["anchor_obs"] = np.array([f"room {x // 8}-{s}: a door, a key" for x, s in zip(traj, state)], dtype=object)
    return d


def _normalise_by(scores, keys, remove_std=True, eps=1e-6, singleton_mean_zero=True):
    """Dict-of-lists group statistics and a per-row loop, verl-agent's pattern for both levels."""
    buckets = defaultdict(list)
    for i in range(scores.shape[0]):
        buckets[keys[i]].append(scores[i])
    mean, std = {}, {}
    for k, v in buckets.items():
        if len(v) == 1:
            mean[k] = torch.tensor(0.0) if singleton_mean_zero else torch.mean(torch.tensor(v))
            std[k] = torch.tensor(1.0)
        else:
            mean[k] = torch.mean(torch.tensor(v))
            std[k] = torch.std(torch.tensor([v]))
    out = scores.clone()
    for i in range(out.shape[0]):
        out[i] = out[i] - mean[keys[i]] if remove_std else (out[i] - mean[keys[i]]) / (std[keys[i]] + eps)
    return out


def _step_groups(anchor_obs, index):
    labels = np.empty(len(anchor_obs), dtype=object)
    for uid in np.unique(index):
        rows = np.where(index == uid)[0]
        clusters = defaultdict(list)
        for r in rows:
            clusters[anchor_obs[r]].append(r)
        for members in clusters.values():
            label = str(uuid.uuid4())
            for r in members:
                labels[r] = label
    return labels


def gigpo_verl_agent(d, w=1.0):
    if d["n"] > GIGPO_LOOP_MAX_N:
        return None
    with torch.no_grad():
        scores = d["episode"].sum(dim=-1)
        episode = _normalise_by(scores, d["index"]).unsqueeze(-1) * d["mask"]
        labels = _step_groups(d["anchor_obs"], d["index"])
        step = _normalise_by(d["returns"], labels, singleton_mean_zero=False).unsqueeze(-1) * d["mask"]
        return episode + w * step


PEERS = {"gigpo_verl_agent": gigpo_verl_agent}
