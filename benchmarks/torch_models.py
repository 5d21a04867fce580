"""The package's two VAEs written in PyTorch with identical shapes: the peer of ``make bench``.

Runs under its own venv (``.venv-torch``: Python 3.11, ``torch==2.13.0`` CPU, numpy;
the Makefile creates it), so it imports nothing from ``ift6266_vae``; ``bench_steps.py``
calls it once per case in a subprocess and merges its JSON line into the table::

    .venv-torch/bin/python benchmarks/torch_models.py --one ff --steps 20 --threads 2

What "identical" means here (same as ``ift6266_vae/models``, float32):

* feedforward (``week9``, batch 1000): 784-512-512-256 (ReLU, ReLU, tanh), heads
  256 -> 384 (mu = BN(linear), sigma = softplus(BN(linear) + 1e-15)), decoder
  384-256 (linear), 256-512-512 (ReLU), 512-784 hard-tanh; every linear layer has a
  bias and is followed by BN.
* conv (``conv``, batch 128): conv 64 and 128 3x3 'same' + BN + ReLU + 2x2 max-pool,
  dense 6272-512 + BN + tanh, heads 512 -> 512, decoder dense 512-6272 + BN + ReLU, then
  twice 2x zero-insertion upsampling + conv 3x3 'same' + BN (ReLU; 1 channel hard-tanh).
  The upsampling is written the plain way (a zeros tensor, a strided copy, a dense conv).
* BN is the 2015 formula ``G (h - mean) / (std + 1e-6) + B`` with batch statistics, and
  the running averages are updated (rate 0.1); ReLU is ``x * (x > 1e-6)``.
* loss ``sum((x - y)^2) + sum(KL)``; one step = forward, backward and the 2015 update
  (rescaling RMSProp + Nesterov, ``as_published``: gradients scaled by
  ``5 / max(5, sqrt(norm))``, both running averages updated, Nesterov step along the
  rescaled gradient), learning rate ``lr / batch`` as the configs.
"""

from __future__ import annotations

import argparse
import json
import sys

from _timing import set_threads, time_steps

CASES = {"ff": 1000, "conv": 128}


def build(case: str, seed: int = 0):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)

    def uniform(shape, r):
        return ((torch.rand(shape, generator=g) * 2 - 1) * r).requires_grad_()

    params: list = []
    bn_state: list = []

    def dense(n_in, n_out, r):
        W, b = uniform((n_in, n_out), r), torch.zeros(n_out, requires_grad=True)
        params.extend([W, b])
        return lambda h: torch.addmm(b, h, W)

    def conv(n_in, n_out, r):
        W, b = uniform((n_out, n_in, 3, 3), r), torch.zeros(n_out, requires_grad=True)
        params.extend([W, b])
        return lambda h: F.conv2d(h, W, b, padding=1)

    def bn(n, spatial):
        G, B = torch.ones(n, requires_grad=True), torch.zeros(n, requires_grad=True)
        mean, var = torch.zeros(n), torch.ones(n)
        params.extend([G, B])
        bn_state.extend([mean, var])
        axes = (0, 2, 3) if spatial else (0,)
        shape = (1, n, 1, 1) if spatial else (1, n)

        def f(h):
            m = h.mean(axes)
            v = (h - m.view(shape)).square().mean(axes)
            with torch.no_grad():
                mean.mul_(0.9).add_(m, alpha=0.1)
                var.mul_(0.9).add_(v, alpha=0.1)
            a = G / (v.sqrt() + 1e-6)
            c = B - m * a
            return h * a.view(shape) + c.view(shape)

        return f

    def relu(h):
        return h * (h > 1e-6)

    def hard_tanh(h):
        return h.clamp(-1.0, 1.0)

    def identity(h):
        return h

    def upsample_zeros(h):
        n, c, hh, ww = h.shape
        z = h.new_zeros((n, c, 2 * hh, 2 * ww))
        z[:, :, ::2, ::2] = h
        return z

    if case == "ff":
        r = 0.1
        enc = [(dense(784, 512, r), bn(512, False), relu), (dense(512, 512, r), bn(512, False), relu),
               (dense(512, 256, r), bn(256, False), torch.tanh)]
        mu_head = (dense(256, 384, r), bn(384, False))
        sg_head = (dense(256, 384, r), bn(384, False))
        dec = [(dense(384, 256, r), bn(256, False), identity), (dense(256, 512, r), bn(512, False), relu),
               (dense(512, 512, r), bn(512, False), relu), (dense(512, 784, r), bn(784, False), hard_tanh)]

        def encode(x):
            h = x.flatten(1)
            for d, b, act in enc:
                h = act(b(d(h)))
            return h

        def decode(z):
            h = z
            for d, b, act in dec:
                h = act(b(d(h)))
            return h.view(-1, 1, 28, 28)

        code, lr = 384, 0.1 / 1000
    elif case == "conv":
        r = 0.05
        enc_convs = [(conv(1, 64, r), bn(64, True)), (conv(64, 128, r), bn(128, True))]
        enc_dense = (dense(128 * 49, 512, r), bn(512, False))
        mu_head = (dense(512, 512, r), bn(512, False))
        sg_head = (dense(512, 512, r), bn(512, False))
        dec_dense = (dense(512, 128 * 49, r), bn(128 * 49, False))
        dec_convs = [(conv(128, 64, r), bn(64, True), relu), (conv(64, 1, r), bn(1, True), hard_tanh)]

        def encode(x):
            h = x
            for c, b in enc_convs:
                h = F.max_pool2d(relu(b(c(h))), 2)
            d, b = enc_dense
            return torch.tanh(b(d(h.flatten(1))))

        def decode(z):
            d, b = dec_dense
            h = relu(b(d(z))).view(-1, 128, 7, 7)
            for c, b, act in dec_convs:
                h = act(b(c(upsample_zeros(h))))
            return h

        code, lr = 512, 0.01 / 128
    else:
        raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")

    def loss_fn(x, eps):
        h = encode(x)
        mu = mu_head[1](mu_head[0](h))
        sigma = F.softplus(sg_head[1](sg_head[0](h)) + 1e-15)
        log_sigma = sigma.log()
        y = decode(mu + eps * sigma)
        se = (x.flatten(1) - y.flatten(1)).square().sum(1)
        kl = -0.5 * (2 * log_sigma - (2 * log_sigma).exp() - mu.square() + 1).sum(1)
        return se.sum() + kl.sum(), kl

    state = {k: [torch.zeros_like(p) for p in params] for k in ("velocity", "mean_square", "mean")}
    return params, state, loss_fn, code, lr


def make_step(params, state, loss_fn, lr, momentum=0.9, decay=0.9, rescale=5.0):
    import torch

    def step(x, eps):
        for p in params:
            p.grad = None
        loss, kl = loss_fn(x, eps)
        loss.backward()
        with torch.no_grad():
            grads = [p.grad for p in params]
            norm = torch.stack(torch._foreach_norm(grads)).square().sum().sqrt().sqrt()
            if torch.isfinite(norm):
                torch._foreach_mul_(grads, rescale / max(rescale, float(norm)))
            else:
                grads = torch._foreach_mul(params, 0.1)
            ms, mean, vel = state["mean_square"], state["mean"], state["velocity"]
            torch._foreach_mul_(ms, decay)
            torch._foreach_addcmul_(ms, grads, grads, value=1 - decay)
            torch._foreach_mul_(mean, decay)
            torch._foreach_add_(mean, grads, alpha=1 - decay)
            # p_new = p + mu^2 v - (1 + mu) lr g ;  v_new = mu v - lr g
            torch._foreach_add_(params, vel, alpha=momentum * momentum)
            torch._foreach_add_(params, grads, alpha=-(1 + momentum) * lr)
            torch._foreach_mul_(vel, momentum)
            torch._foreach_add_(vel, grads, alpha=-lr)
        return float(loss.detach())

    return step


def run_case(case: str, steps: int, warmup: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    bs = CASES[case]
    params, state, loss_fn, code, lr = build(case)
    step = make_step(params, state, loss_fn, lr)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 1, (bs, 1, 28, 28)).astype(np.float32))
    eps = torch.from_numpy(rng.standard_normal((bs, code)).astype(np.float32))
    res = time_steps(lambda: step(x, eps), steps, warmup)
    res.update(case=case, backend="pytorch", batch_size=bs, threads=torch.get_num_threads(),
               torch=torch.__version__, python=sys.version.split()[0],
               torch_config=torch.__config__.parallel_info().splitlines()[:6])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", required=True, choices=list(CASES))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    sys.stdout.write(json.dumps(run_case(args.one, args.steps, args.warmup, args.threads)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
