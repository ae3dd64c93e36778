"""The PyTorch peers of posttrain's token log-prob benchmark (bench/logits_bench.cpp). PEERS maps a peer
name to peer(data); make_data(layout, n, seed) builds the inputs of the layouts this file owns
("logits_v<V>": float32 logits [B, 8, V] with B = n / (8 V), int64 labels uniform in [0, V), upstream
gradients 1 for the log-probs and 0.01 for the entropies), on the CPU; torch_peers.to_device() moves the
tensors, and a peer given a dict with a "device" key whose tensors are still elsewhere moves them once.

The CUDA bench (bench/cuda/token_log_probs_bench.cu) names its own layouts, "tlp_<dtype>_<B>x<T>x<V>"
(dtype bf16, f16 or f32): logits of that shape and dtype, built directly on the GPU when there is one (a
billion logits are too slow to draw on the CPU and copy), labels and upstream gradients as above.

Peers (name -> formula):
  logprobs_entropy_autograd  verl's logprobs_from_logits (log_softmax(logits, -1).gather(-1, labels)) and
                entropy_from_logits (logsumexp(logits, -1) - sum(softmax(logits, -1) * logits, -1)) on a
                leaf tensor, loss = sum(gl * log_probs) + sum(gh * entropy), then loss.backward() for
                d loss / d logits: what posttrain's forward + backward computes, as a trainer runs it
  log_softmax_gather  verl's logprobs_from_logits without flash-attn: log_softmax(logits.float(), -1)
                .gather(-1, labels), the log-probs alone (the issue's 8.9 ms / 7.8 GiB reference)
  log_softmax_gather_entropy  the same plus entropy_from_logits on the same float logits
Each peer's peak device memory beyond its inputs (torch.cuda.max_memory_allocated) is left in
EXTRA_BYTES[name] after it runs on a GPU.
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


EXTRA_BYTES = {}


def _peak_extra(name, f):
    """f, recording in EXTRA_BYTES[name] the device memory f allocated at its peak beyond what it found."""
    def run(d):
        d = _on_device(d)
        cuda = d["z"].is_cuda
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        out = f(d)
        if cuda:
            torch.cuda.synchronize()
            EXTRA_BYTES[name] = max(EXTRA_BYTES.get(name, 0), torch.cuda.max_memory_allocated() - base)
        return out
    return run


def log_softmax_gather(d):
    return torch.log_softmax(d["z"].float(), dim=-1).gather(-1, d["y"].unsqueeze(-1)).squeeze(-1)


def log_softmax_gather_entropy(d):
    zf = d["z"].float()
    logp = torch.log_softmax(zf, dim=-1).gather(-1, d["y"].unsqueeze(-1)).squeeze(-1)
    entropy = torch.logsumexp(zf, dim=-1) - torch.sum(torch.softmax(zf, dim=-1) * zf, dim=-1)
    return logp, entropy


PEERS = {"logprobs_entropy_autograd": _peak_extra("logprobs_entropy_autograd", logprobs_entropy_autograd),
         "log_softmax_gather": _peak_extra("log_softmax_gather", log_softmax_gather),
         "log_softmax_gather_entropy": _peak_extra("log_softmax_gather_entropy", log_softmax_gather_entropy)}

_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def _make_cuda_shape(layout, seed):
    """The "tlp_<dtype>_<B>x<T>x<V>" layouts: normal logits of scale 3 in that dtype."""
    dtype, shape = layout[len("tlp_"):].split("_")
    b, t, v = (int(x) for x in shape.split("x"))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(seed)
    z = (3.0 * torch.randn((b, t, v), generator=gen, device=dev, dtype=torch.float32)).to(_DTYPES[dtype])
    y = torch.randint(0, v, (b, t), generator=gen, device=dev)
    return {"layout": layout, "n": b * t * v, "z": z, "y": y,
            "gl": torch.ones((b, t), device=dev), "gh": torch.full((b, t), 0.01, device=dev)}


def make_data(layout, n, seed=42):
    if layout.startswith("tlp_"):
        return _make_cuda_shape(layout, seed)
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
