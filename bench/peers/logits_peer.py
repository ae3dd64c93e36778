"""The PyTorch peers of posttrain's token log-prob benchmark (bench/logits_bench.cpp). PEERS maps a peer
name to peer(data); make_data(layout, n, seed) builds the inputs of the layouts this file owns
("logits_v<V>": float32 logits [B, 8, V] with B = n / (8 V), int64 labels uniform in [0, V), upstream
gradients 1 for the log-probs and 0.01 for the entropies), on the CPU; torch_peers.to_device() moves the
tensors, and a peer given a dict with a "device" key whose tensors are still elsewhere moves them once.

Peers (name -> formula):
  logprobs_entropy_autograd  verl's logprobs_from_logits (log_softmax(logits, -1).gather(-1, labels)) and
                entropy_from_logits (logsumexp(logits, -1) - sum(softmax(logits, -1) * logits, -1)) on a
                leaf tensor, loss = sum(gl * log_probs) + sum(gh * entropy), then loss.backward() for
                d loss / d logits: what posttrain's forward + backward computes, as a trainer runs it
"""

import numpy as np
import torch


def _on_device(d):
    dev = d.get("device")
    if dev is not None and d["z"].device != torch.device(dev):
        for k in ("z", "y", "gl", "gh"):
            d[k] = d[k].detach().to(dev)  # a leaf again on the new device
    return d


def logprobs_entropy_autograd(d):
    d = _on_device(d)
    z = d["z"]
    z.grad = None
    z.requires_grad_(True)
    logp = torch.log_softmax(z, dim=-1).gather(-1, d["y"].unsqueeze(-1)).squeeze(-1)
    p = torch.softmax(z, dim=-1)
    entropy = torch.logsumexp(z, dim=-1) - torch.sum(p * z, dim=-1)
    loss = (d["gl"] * logp).sum() + (d["gh"] * entropy).sum()
    loss.backward()
    return z.grad


PEERS = {"logprobs_entropy_autograd": logprobs_entropy_autograd}


def make_data(layout, n, seed=42):
    if not layout.startswith("logits_v"):
        return None
    v = int(layout[len("logits_v"):])
    t = 8
    b = max(1, n // (v * t))
    g = np.random.default_rng(seed)
    return {"layout": layout, "n": n,
            "z": torch.from_numpy((2.0 * g.standard_normal((b, t, v))).astype(np.float32)),
            "y": torch.from_numpy(g.integers(0, v, size=(b, t)).astype(np.int64)),
            "gl": torch.ones((b, t), dtype=torch.float32),
            "gh": torch.full((b, t), 0.01, dtype=torch.float32)}
