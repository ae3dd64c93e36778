#!/usr/bin/python3
"""PyTorch baselines for posttrain's benchmarks, written from the frameworks' formulas
(../shared/specs/frameworks.md sections 2.1, 2.2 and 10), not copied from their code.

Every peer is a function peer(data) -> tensor, where data is the dict that make_data() builds for a
layout ("uniform", "ragged", "ids", "ids_dense") of n float32 rewards. What a caller would have to
do to get from its inputs to advantages is inside the timed function: torch.unique on hashed ids,
offsets -> group index for ragged layouts. Building the inputs themselves is not timed.

Peers (name -> formula):
  reshape       TRL GRPOTrainer: view(-1, G), mean/std(dim=1) (unbiased), (r - mean) / (std + 1e-4),
                broadcast with keepdim (cheaper than TRL's repeat_interleave; see reshape_trl)
  reshape_trl   the same with TRL's literal repeat_interleave of mean and std back to rows
  scatter       verl group_mean_std style: group index (torch.unique(return_inverse) for hashed ids,
                the ids themselves when they are dense ints, repeat_interleave for offsets), then
                index_add_ of count, sum and sum of squares, gather back, (r - mean) / (std + 1e-6)
  verl_loop     verl compute_grpo_outcome_advantage: a Python loop over rows into dict-of-lists of
                0-d tensors, torch.stack/mean/std per uid, then a second loop writing scores[i].
                Very slow (about 3 tiny tensor ops per row): only run at n <= VERL_LOOP_MAX_N.
  rloo_reshape  OpenRLHF/TRL RLOO on view(-1, G): r - (sum_g - r) / (G - 1)
  rloo_scatter  verl compute_rloo_vectorized_outcome_advantage: c = bincount(inv)[inv],
                s = index_add(r)[inv], A = ((c r - s) / max(c - 1, 1)) * (c > 1)
  rloo_verl_loop verl compute_rloo_outcome_advantage (loop form), same cap as verl_loop
  gae_verl_loop verl compute_gae_advantage_return on layout "gae_t<T>" ([n / T, T] float32 rewards,
                values, mask): a Python loop over t = T-1 .. 0 of column ops (TD error, running
                advantage, next value and advantage carried through masked tokens), torch.stack of
                the columns, returns = A + V, then masked_whiten (count + 1e-8, unbiased, rsqrt(var + 1e-8))
  ppo_k3_autograd  the fused policy loss on layout "tokens_t<T>" ([n / T, T] float32 log-probs, old and
                reference log-probs, advantages, float mask with 7 padding positions per row): verl's
                compute_policy_loss_vanilla (log-ratio clamp 20, clip 0.2, dual clip 3) and kl_penalty
                "low_var_kl" (clamps 20 / 10) with coefficient 0.001, token-mean, then loss.backward() for
                d loss / d log_probs, as a trainer runs it under autograd
  dpo_autograd  TRL DPOTrainer's DPO on layout "pairs_t<T>" ([n / T, T] float32 log-probs of the chosen
                and rejected responses and of the reference, bool completion masks with right padding):
                masked_fill(~mask, 0).sum(-1) per response (the reference under no_grad), loss =
                -logsigmoid(beta ((S_w - R_w) - (S_l - R_l))).mean(), beta 0.1, then loss.backward()
  dpo_trl_autograd  TRL DPOTrainer's own masking idiom on layout "pairs_i64_t<T>" (int64 completion masks,
                as its collator produces): per_token_logps[mask == 0] = 0 on a non-leaf copy of the
                log-probs, .sum(1), the reference likewise under no_grad, the sigmoid loss, backward
  simpo_autograd  SimPO on the same layout without the reference: length-averaged log-probs,
                -logsigmoid(beta (A_w - A_l) - gamma).mean(), beta 2, gamma 0.5, then loss.backward()

Timing: time_peer() warms up, then takes the median over repeats of the mean time of an inner loop
sized to last about 50 ms (one call per repeat when a call is slower than that). On a GPU
(to_device(d, "cuda"), which records d["device"]) the timed loops are bracketed by
torch.cuda.synchronize(), so a sample is the device time of the whole loop, launches included.

Devices: make_data() always builds on the CPU (the same bits whatever the device); to_device() then
moves every tensor of the dict (including the logits module's) and every peer allocates its own
temporaries on the device of its inputs.

Run directly for a quick table:  /usr/bin/python3 bench/peers/torch_peers.py [--threads 1] [--sizes 14,22]
                                 [--device cuda]
"""

import argparse
import collections
import statistics
import time

import numpy as np
import torch

GROUP = 16
VERL_LOOP_MAX_N = 1 << 14  # the per-uid Python loop takes ~1 s at 2^14 rows; larger sizes are skipped


# ---- inputs (same distributions as bench/common.hpp; not the same bits) ----

def make_data(layout, n, seed=42):
    g = np.random.default_rng(seed)
    if layout.startswith("tokens_t"):  # [n / T, T] log-probs as a policy-loss step sees them
        t = int(layout[len("tokens_t"):])
        b = n // t
        lp = (-1.0 + 0.1 * g.standard_normal((b, t))).astype(np.float32)
        mask = np.ones((b, t), dtype=np.float32)
        mask[:, t - 7:] = 0
        return {"layout": layout, "n": n, "lp": torch.from_numpy(lp),
                "old": torch.from_numpy(lp + (0.05 * g.standard_normal((b, t))).astype(np.float32)),
                "ref": torch.from_numpy(lp + (0.05 * g.standard_normal((b, t))).astype(np.float32)),
                "adv": torch.from_numpy(g.standard_normal((b, t)).astype(np.float32)),
                "m": torch.from_numpy(mask)}
    if layout.startswith("pairs_i64_t"):  # the same with int64 masks (TRL's collator)
        d = make_data("pairs_t" + layout[len("pairs_i64_t"):], n, seed)
        for side in ("w", "l"):
            d["m" + side] = d["m" + side].to(torch.int64)
        d["layout"] = layout
        return d
    if layout.startswith("pairs_t"):  # [n / T, T] chosen / rejected log-probs, policy and reference
        t = int(layout[len("pairs_t"):])
        b = n // t
        d = {"layout": layout, "n": n}
        for side in ("w", "l"):
            ref = (-1.0 + 0.1 * g.standard_normal((b, t))).astype(np.float32)
            length = g.integers(t // 2, t + 1, size=b)
            d["r" + side] = torch.from_numpy(ref)
            d["c" + side] = torch.from_numpy(ref + (0.05 * g.standard_normal((b, t))).astype(np.float32))
            d["m" + side] = torch.from_numpy(np.arange(t)[None, :] < length[:, None])
        return d
    if layout.startswith("gae_t"):  # [n / T, T] tokens: terminal rewards, right padding, observation holes
        t = int(layout[len("gae_t"):])
        b = n // t
        length = g.integers(t // 2, t + 1, size=b)
        mask = (np.arange(t)[None, :] < length[:, None]) & (g.random((b, t)) > 0.05)
        r = np.zeros((b, t), dtype=np.float32)
        r[np.arange(b), length - 1] = g.random(b, dtype=np.float32)
        return {"layout": layout, "n": n, "r": torch.from_numpy(r),
                "v": torch.from_numpy(g.random((b, t), dtype=np.float32)),
                "m": torch.from_numpy(mask.astype(np.float32))}
    d = {"layout": layout, "n": n, "group": GROUP,
         "r": torch.from_numpy(g.random(n, dtype=np.float32))}
    if layout == "ragged":
        sizes = []
        total = 0
        while total < n:
            s = min(int(g.integers(1, 32)), n - total)
            sizes.append(s)
            total += s
        d["offsets"] = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    elif layout in ("ids", "ids_dense"):
        groups = n // GROUP
        if layout == "ids":  # 64-bit hash-like ids, as uid strings hashed to int64
            uid = g.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=groups, dtype=np.int64)
        else:
            uid = np.arange(groups, dtype=np.int64)
        ids = np.repeat(uid, GROUP)
        g.shuffle(ids)
        d["ids"] = torch.from_numpy(ids)
        d["ids_np"] = ids
    return d


def to_device(d, device):
    """d with every tensor value moved to `device` (a new dict; numpy arrays and scalars are kept).
    d["device"] records the device for time_peer; "cpu" returns d itself, untouched."""
    if device is None or str(device) == "cpu":
        return d
    out = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in d.items()}
    out["device"] = str(device)
    return out


def _is_cuda(d):
    return str(d.get("device", "cpu")).startswith("cuda")


def group_index(d):
    """Row -> dense group index, as a framework would compute it from what the caller has."""
    if d["layout"] == "ragged":
        off = d["offsets"]
        sizes = off[1:] - off[:-1]
        return torch.repeat_interleave(torch.arange(sizes.numel(), device=off.device), sizes), sizes.numel()
    if d["layout"] == "ids_dense":  # verl as_torch_index passes integer ids through
        return d["ids"], d["n"] // d["group"]
    if d["layout"] == "ids":        # verl factorizes arbitrary uids (np.unique); torch.unique is the same job
        uniq, inv = torch.unique(d["ids"], return_inverse=True)
        return inv, uniq.numel()
    n, k = d["n"], d["group"]
    return torch.arange(n, device=d["r"].device) // k, n // k


# ---- GRPO peers ----

def reshape(d, eps=1e-4):
    x = d["r"].view(-1, d["group"])
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True)
    return ((x - mean) / (std + eps)).view(-1)


def reshape_trl(d, eps=1e-4):
    r, k = d["r"], d["group"]
    mean = r.view(-1, k).mean(dim=1).repeat_interleave(k, dim=0)
    std = r.view(-1, k).std(dim=1).repeat_interleave(k, dim=0)
    return (r - mean) / (std + eps)


def scatter(d, eps=1e-6):
    r = d["r"]
    inv, groups = group_index(d)
    count = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, inv, torch.ones_like(r))
    s1 = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, inv, r)
    s2 = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, inv, r * r)
    mean = s1 / count.clamp(min=1)
    var = (s2 - s1 * mean) / (count - 1).clamp(min=1)
    std = var.clamp(min=eps).sqrt()
    single = count <= 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return (r - mean[inv]) / (std[inv] + eps)


def _ids_for_loop(d):
    if "ids_np" in d:
        return d["ids_np"]
    inv, _ = group_index(d)
    return inv.cpu().numpy()


def verl_loop(d, eps=1e-6):
    if d["n"] > VERL_LOOP_MAX_N:
        return None
    scores = d["r"].clone()
    index = _ids_for_loop(d)
    id2score = collections.defaultdict(list)
    id2mean, id2std = {}, {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx, vals in id2score.items():
            if len(vals) == 1:
                id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
            else:
                t = torch.stack(vals)
                id2mean[idx], id2std[idx] = torch.mean(t), torch.std(t)
        for i in range(bsz):
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
    return scores


# ---- the rest of the outcome family, in reshape form (uniform groups) ----
# Lengths and extra reward components are derived from r deterministically (their values do not
# change the work done).

def gpg_reshape(d):
    """verl compute_gpg_outcome_advantage without its per-uid loop: (r - mean) * N / count_nonzero."""
    r = d["r"]
    x = r.view(-1, d["group"])
    alpha = r.numel() / max(int(torch.count_nonzero(r)), 1)
    return ((x - x.mean(dim=1, keepdim=True)) * alpha).view(-1)


def passk_reshape(d, eps=1e-6):
    """verl compute_grpo_passk_outcome_advantage vectorized: the best row gets (top1 - top2) / (std + eps)."""
    x = d["r"].view(-1, d["group"])
    top = torch.topk(x, 2, dim=1)
    gap = (top.values[:, 0] - top.values[:, 1]) / (x.std(dim=1) + eps)
    out = torch.zeros_like(x)
    out.scatter_(1, top.indices[:, :1], gap[:, None])
    return out.view(-1)


def opo_reshape(d):
    """verl compute_opo_outcome_advantage vectorized: r - sum(len * r) / sum(len) per group."""
    x = d["r"].view(-1, d["group"])
    length = d.get("len")
    if length is None:
        length = d["len"] = (x * 1000).floor() + 1
    return (x - (length * x).sum(dim=1, keepdim=True) / length.sum(dim=1, keepdim=True)).view(-1)


def gdpo_reshape(d, eps=1e-6):
    """GDPO on three components: group z-scores per component, their sum, then a batch z-score."""
    k3 = d.get("k3")
    if k3 is None:
        r = d["r"]
        k3 = d["k3"] = torch.stack([r, r.roll(1), 1 - r], dim=1)
    x = k3.view(-1, d["group"], 3)
    z = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + eps)
    s = z.sum(dim=2).view(-1)
    return (s - s.mean()) / (s.std() + eps)


# ---- RLOO peers ----

def rloo_reshape(d):
    x = d["r"].view(-1, d["group"])
    k = x.shape[1]
    return (x - (x.sum(dim=1, keepdim=True) - x) / (k - 1)).view(-1)


def rloo_scatter(d):
    r = d["r"]
    inv, groups = group_index(d)
    c = torch.bincount(inv, minlength=groups)[inv].to(r.dtype)
    s = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add_(0, inv, r)[inv]
    return ((c * r - s) / (c - 1).clamp(min=1)) * (c > 1)


def rloo_verl_loop(d):
    if d["n"] > VERL_LOOP_MAX_N:
        return None
    scores = d["r"].clone()
    index = _ids_for_loop(d)
    id2score = collections.defaultdict(list)
    id2mean = {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx, vals in id2score.items():
            id2mean[idx] = torch.tensor(0.0) if len(vals) == 1 else torch.mean(torch.stack(vals))
        for i in range(bsz):
            n = len(id2score[index[i]])
            if n > 1:
                scores[i] = scores[i] * n / (n - 1) - id2mean[index[i]] * n / (n - 1)
    return scores


# ---- GAE peer ----

def gae_verl_loop(d, gamma=0.99, lam=0.95):
    r, v, m = d["r"], d["v"], d["m"]
    with torch.no_grad():
        nxt = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
        run = torch.zeros_like(nxt)
        cols = []
        for t in range(r.shape[1] - 1, -1, -1):
            mt = m[:, t]
            td = r[:, t] + gamma * nxt - v[:, t]
            new = td + gamma * lam * run
            nxt = v[:, t] * mt + (1 - mt) * nxt   # masked tokens pass the next value through
            run = new * mt + (1 - mt) * run       # ... and the running advantage
            cols.append(run)
        adv = torch.stack(cols[::-1], dim=1)
        ret = adv + v
        count = m.sum()
        mean = (adv * m).sum() / (count + 1e-8)
        var = ((adv - mean) ** 2 * m).sum() / (count + 1e-8) * (count / (count - 1))
        return (adv - mean) * torch.rsqrt(var + 1e-8), ret


# ---- policy loss peer ----

def ppo_k3_autograd(d, clip=0.2, clip_c=3.0, kl_coef=0.001):
    lp = d["lp"].clone().requires_grad_(True)
    old, ref, adv, m = d["old"], d["ref"], d["adv"], d["m"]
    log_ratio = torch.clamp(lp - old, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
    clipped = torch.maximum(l1, l2)
    dual = torch.min(-adv * clip_c, clipped)
    pg = torch.where(adv < 0, dual, clipped)
    tokens = m.sum()
    pg_loss = (pg * m).sum() / tokens
    kl_in = torch.clamp(ref - lp, -20.0, 20.0)
    kl = torch.clamp(torch.exp(kl_in) - kl_in - 1, -10.0, 10.0)
    loss = pg_loss + kl_coef * (kl * m).sum() / tokens
    loss.backward()
    return loss.detach(), lp.grad


def dpo_autograd(d, beta=0.1):
    cw = d["cw"].clone().requires_grad_(True)
    cl = d["cl"].clone().requires_grad_(True)
    mw, ml = d["mw"].bool(), d["ml"].bool()  # no-op for bool masks
    sw = cw.masked_fill(~mw, 0.0).sum(-1)
    sl = cl.masked_fill(~ml, 0.0).sum(-1)
    with torch.no_grad():
        rw = d["rw"].masked_fill(~mw, 0.0).sum(-1)
        rl = d["rl"].masked_fill(~ml, 0.0).sum(-1)
    loss = -torch.nn.functional.logsigmoid(beta * ((sw - rw) - (sl - rl))).mean()
    loss.backward()
    return loss.detach(), cw.grad, cl.grad


def dpo_trl_autograd(d, beta=0.1):
    cw = d["cw"].clone().requires_grad_(True)
    cl = d["cl"].clone().requires_grad_(True)
    mw, ml = d["mw"], d["ml"]
    # TRL's per_token_logps is the (non-leaf) output of selective_log_softmax; "* 1.0" stands for it.
    pw = cw * 1.0
    pl = cl * 1.0
    pw[mw == 0] = 0.0
    pl[ml == 0] = 0.0
    sw, sl = pw.sum(dim=1), pl.sum(dim=1)
    with torch.no_grad():
        rw, rl = d["rw"].clone(), d["rl"].clone()
        rw[mw == 0] = 0.0
        rl[ml == 0] = 0.0
        rw, rl = rw.sum(dim=1), rl.sum(dim=1)
    loss = -torch.nn.functional.logsigmoid(beta * ((sw - rw) - (sl - rl))).mean()
    loss.backward()
    return loss.detach(), cw.grad, cl.grad


def simpo_autograd(d, beta=2.0, gamma=0.5):
    cw = d["cw"].clone().requires_grad_(True)
    cl = d["cl"].clone().requires_grad_(True)
    mw, ml = d["mw"], d["ml"]
    aw = cw.masked_fill(~mw, 0.0).sum(-1) / mw.sum(-1)
    al = cl.masked_fill(~ml, 0.0).sum(-1) / ml.sum(-1)
    loss = -torch.nn.functional.logsigmoid(beta * (aw - al) - gamma).mean()
    loss.backward()
    return loss.detach(), cw.grad, cl.grad


# ---- ranking peers (bench/ranking_bench.cpp; posttrain's docs/algorithms/bradley_terry.md, rank_rewards.md) ----

BT_GROUP = 16


def _bt_records(n, seed=5):
    """Round-robin records of n / 16 groups as a caller holds them: (group, first row, second row,
    first's outcome) int64/float64 tensors; outcomes drawn from theta ~ N(0, 1) with P = sigmoid."""
    g = np.random.default_rng(seed)
    groups = n // BT_GROUP
    theta = g.standard_normal(n)
    i, j = np.triu_indices(BT_GROUP, 1)
    grp = np.repeat(np.arange(groups), i.size)
    a = grp * BT_GROUP + np.tile(i, groups)
    b = grp * BT_GROUP + np.tile(j, groups)
    wins = (g.random(a.size) < 1.0 / (1.0 + np.exp(theta[b] - theta[a]))).astype(np.float64)
    return {"g": torch.from_numpy(grp), "a": torch.from_numpy(a), "b": torch.from_numpy(b),
            "wa": torch.from_numpy(wins), "groups": groups}


def bt_mm_torch(d, prior=1.0, tol=1e-10, max_iter=10000):
    """Bradley-Terry by Hunter's MM, vectorised over [G, 16, 16] win matrices (float64): the win
    matrix is built from the records (index_put_ with accumulate), then all groups iterate together,
    p <- W / (sum_j n_ij / (p_i + p_j) + prior / (p + 1)), W = wins + prior / 2, until
    max |log p_new - log p| <= tol over the whole batch or max_iter (one host sync per iteration)."""
    dev = d["r"].device
    if "bt" not in d:  # the records are the input; built once, not timed after the warm-up call
        d["bt"] = {key: (v.to(dev) if torch.is_tensor(v) else v) for key, v in _bt_records(d["n"]).items()}
    r = d["bt"]
    G, k = r["groups"], BT_GROUP
    la, lb = r["a"] - r["g"] * k, r["b"] - r["g"] * k
    w = torch.zeros(G, k, k, dtype=torch.float64, device=dev)
    w.index_put_((r["g"], la, lb), r["wa"], accumulate=True)
    w.index_put_((r["g"], lb, la), 1.0 - r["wa"], accumulate=True)
    games = w + w.transpose(1, 2)
    wins = w.sum(-1) + 0.5 * prior
    p = torch.ones(G, k, dtype=torch.float64, device=dev)
    logp = torch.zeros_like(p)
    for _ in range(max_iter):
        den = (games / (p.unsqueeze(2) + p.unsqueeze(1))).sum(-1) + prior / (p + 1.0)
        p = wins / den
        new_logp = p.log()
        delta = (new_logp - logp).abs().max().item()
        logp = new_logp
        if delta <= tol:
            break
    return logp


def rank_adv_torch(d, eps=1e-6):
    """ArenaRL's rank -> reward -> advantage on view(-1, 16): min rank = 1 + #(strictly better) by a
    sort and searchsorted, reward (M - rank) / (M - 1) with M the group's largest rank (0 when M = 1),
    then (r - mean) / (std + eps) with the unbiased std."""
    x = d["r"].view(-1, d["group"])
    neg = -x
    rank = torch.searchsorted(torch.sort(neg, dim=1).values, neg).to(x.dtype) + 1.0
    m = rank.max(dim=1, keepdim=True).values
    reward = torch.where(m > 1, (m - rank) / (m - 1).clamp_min(1), torch.zeros_like(rank))
    return (reward - reward.mean(dim=1, keepdim=True)) / (reward.std(dim=1, keepdim=True) + eps)


PEERS = {
    "reshape": reshape,
    "reshape_trl": reshape_trl,
    "scatter": scatter,
    "verl_loop": verl_loop,
    "gpg_reshape": gpg_reshape,
    "passk_reshape": passk_reshape,
    "opo_reshape": opo_reshape,
    "gdpo_reshape": gdpo_reshape,
    "rloo_reshape": rloo_reshape,
    "rloo_scatter": rloo_scatter,
    "rloo_verl_loop": rloo_verl_loop,
    "gae_verl_loop": gae_verl_loop,
    "dpo_autograd": dpo_autograd,
    "dpo_trl_autograd": dpo_trl_autograd,
    "simpo_autograd": simpo_autograd,
    "ppo_k3_autograd": ppo_k3_autograd,
    "bt_mm_torch": bt_mm_torch,
    "rank_adv_torch": rank_adv_torch,
}


# ---- timing ----

def time_peer(fn, d, repeats=5, target_s=0.05, budget_s=3.0):
    """Median seconds per call, or None when the peer declines this size. On a GPU (d["device"]
    "cuda..."), every measured span starts and ends with torch.cuda.synchronize()."""
    sync = torch.cuda.synchronize if _is_cuda(d) else (lambda: None)
    sync()
    t0 = time.perf_counter()
    if fn(d) is None:
        return None
    sync()
    first = time.perf_counter() - t0
    if first < target_s:
        fn(d)  # second warm-up for fast peers (allocator, thread pool)
        if _is_cuda(d):  # a first CUDA call pays module loading and library setup: size the loop from a warm one
            sync()
            t0 = time.perf_counter()
            fn(d)
            sync()
            first = time.perf_counter() - t0
    inner = max(1, int(target_s / max(first, 1e-9)))
    reps = max(1, min(repeats, int(budget_s / max(first * inner, 1e-9))))
    samples = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(d)
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="14,16,18,20,22,24", help="log2 of N, comma-separated")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--layouts", default="uniform,ragged,ids,ids_dense")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:k]: data built on the CPU, then moved")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.device != "cpu" and not (a.device.startswith("cuda") and torch.cuda.is_available()):
        raise SystemExit(f"torch_peers: device {a.device} is not available (torch {torch.__version__}, "
                         f"cuda available: {torch.cuda.is_available()})")
    for layout in a.layouts.split(","):
        for e in (int(s) for s in a.sizes.split(",")):
            d = to_device(make_data(layout, 1 << e), a.device)
            for name in a.peers.split(","):
                if name.endswith("reshape") or name == "reshape_trl":
                    if layout != "uniform":
                        continue
                t = time_peer(PEERS[name], d)
                if t is not None:
                    print(f"{layout:10s} 2^{e:<3d} {name:15s} {t * 1e3:10.3f} ms", flush=True)


if __name__ == "__main__":
    main()


# ---- verl-agent GiGPO (credit module): the peer and its data live in verl_agent_peer.py ----
import verl_agent_peer as _verl_agent  # noqa: E402

PEERS.update(_verl_agent.PEERS)
_make_data_before_steps = make_data


def make_data(layout, n, seed=42):  # noqa: F811 -- the "steps" layout is verl_agent_peer's
    if layout == "steps":
        return _verl_agent.make_data(layout, n, seed)
    return _make_data_before_steps(layout, n, seed)


# ---- token log-probs from logits (logits module): peers and data live in logits_peer.py ----
import logits_peer as _logits  # noqa: E402

PEERS.update(_logits.PEERS)
_make_data_before_logits = make_data


def peer_extra_bytes(name):
    """The peak device memory beyond its inputs that peer `name` last allocated on a GPU, or None."""
    return _logits.EXTRA_BYTES.get(name)


def make_data(layout, n, seed=42):  # noqa: F811 -- the "logits_*" and "tlp_*" layouts are logits_peer's
    if layout.startswith("logits") or layout.startswith("tlp_"):
        return _logits.make_data(layout, n, seed)
    return _make_data_before_logits(layout, n, seed)
