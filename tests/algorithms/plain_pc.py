"""Predictive coding written from its equations in plain torch, on an nn.Sequential: an oracle that shares no code
with pcsim (not its Problem, ops or losses). Each layer of the Sequential is one value population x_v, predicted
by mu_v = layer_v(x_parent) from its parent's value; the input is clamped.

    F = sum_hidden 1/2 ||x_v - mu_v||^2 + precision * L(mu_out, y)    (mse: 1/2 ||mu - y||^2, ce: summed CE)

Strict IL: x <- x - gamma dF/dx over the hidden values for T steps from the feed-forward state, then the update
dF/dtheta / precision (autograd's sign; Whittington & Bogacz's learning-rate compensation). iPC (Salvatori et al.):
the weights also step, theta <- theta - lr dF/dtheta, at every step from the same state. Fixed prediction
(Millidge et al.): predictions and Jacobians stay at the feed-forward state, the output error at -dL/dmu there.
"""

import torch
import torch.nn.functional as F


def _loss(mu, y, loss):
    return 0.5 * ((mu - y) ** 2).sum() if loss == "mse" else F.cross_entropy(mu, y, reduction="sum")


def _run(layers, params, x):
    """The Sequential's layers applied with the parameters `params` (functional_call, one layer at a time)."""
    out = []
    for i, layer in enumerate(layers):
        own = {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".", 1)[0] == str(i)}
        out.append(torch.func.functional_call(layer, own, (x,)))
        x = out[-1]
    return out


def energy(seq, params, values, x, y, loss="mse", precision=1.0):
    """F at the hidden values `values` (one per layer but the last) and parameters `params`."""
    layers = list(seq)
    total = 0.0
    for i, layer in enumerate(layers):
        own = {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".", 1)[0] == str(i)}
        mu = torch.func.functional_call(layer, own, (x if i == 0 else values[i - 1],))
        last = i == len(layers) - 1
        total = total + (precision * _loss(mu, y, loss) if last else 0.5 * ((values[i] - mu) ** 2).sum())
    return total


def il(seq, x, y, loss="mse", gamma=0.1, steps=10, precision=1.0, lr=0.0):
    """(IL's update, or iPC's mean update where lr > 0; F at the start; F at the end)."""
    params = {n: p.detach().clone() for n, p in seq.named_parameters()}
    start = {n: p.clone() for n, p in params.items()}
    values = [v.detach() for v in _run(list(seq), params, x)[:-1]]
    f0 = float(energy(seq, params, values, x, y, loss, precision))
    for _ in range(steps):
        values = [v.requires_grad_(True) for v in values]
        ps = {n: p.requires_grad_(True) for n, p in params.items()}
        grads = torch.autograd.grad(energy(seq, ps, values, x, y, loss, precision), values + list(ps.values()))
        values = [(v - gamma * g).detach() for v, g in zip(values, grads, strict=False)]
        if lr:
            params = {n: (p - lr * g).detach() for (n, p), g in zip(ps.items(), grads[len(values):], strict=True)}
        else:
            params = {n: p.detach() for n, p in ps.items()}
    ps = {n: p.requires_grad_(True) for n, p in params.items()}
    f_end = energy(seq, ps, values, x, y, loss, precision)
    if lr:
        return {n: (start[n] - params[n]) / (lr * steps) for n in params}, f0, float(f_end.detach())
    grads = torch.autograd.grad(f_end, list(ps.values()))
    return {n: g / precision for n, g in zip(ps, grads, strict=True)}, f0, float(f_end.detach())


def il_fixed_prediction(seq, x, y, loss="mse", gamma=0.1, steps=10):
    """IL under the fixed-prediction assumption: e_v <- e_v + gamma (J_c^T e_c - e_v), all at the feed-forward state."""
    params = {n: p.detach().requires_grad_(True) for n, p in seq.named_parameters()}
    layers = list(seq)
    inputs, outs = [], []
    h = x
    for i, layer in enumerate(layers):  # each layer on its own detached input: a local Jacobian per layer
        h = h.detach().requires_grad_(i > 0)
        own = {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".", 1)[0] == str(i)}
        inputs.append(h)
        outs.append(torch.func.functional_call(layer, own, (h,)))
        h = outs[-1]
    mu = outs[-1].detach().requires_grad_(True)
    e_out = -torch.autograd.grad(_loss(mu, y, loss), mu)[0]
    errors = [torch.zeros_like(o) for o in outs[:-1]] + [e_out]
    for _ in range(steps):
        fb = [torch.autograd.grad(outs[i + 1], inputs[i + 1], errors[i + 1], retain_graph=True)[0]
              for i in range(len(layers) - 1)]
        errors = [e + gamma * (f - e) for e, f in zip(errors[:-1], fb, strict=True)] + [e_out]
    total = sum((o * e).sum() for o, e in zip(outs, errors, strict=True))  # -(d mu / d theta)^T e
    return {n: -g for n, g in zip(params, torch.autograd.grad(total, list(params.values())), strict=True)}
