"""Checks of lesson 6's last two exercises, the two terms of the tokenizer's full (VQGAN-style) loss: the perceptual
distance (6.5), an LPIPS-style distance between two images' feature maps, and the adaptive weight (6.6) that scales
the adversarial term. Exercises 6.1-6.4 are checked in ``lesson06``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..train import discriminator as discriminator_module
from ..train import perceptual as perceptual_module
from ._check import CheckResult, Shortcut, _Case, _Mismatch, _Mistake, _compare_tensor, _gen, _run, exercise

exercise("perceptual_distance", "6.5",
         concept="Compare two images where a network sees them, not pixel by pixel: at every position of every tapped "
                 "layer, scale the feature vector (along the channels) to length 1 for both images, take the squared "
                 "distance of the two unit vectors, average it over the layer's positions, and add up the layers.",
         approach="For each pair (fx, fy) of (B, C, h, w) maps: u = f / (f.norm(dim=1, keepdim=True) + 1e-10); "
                  "(ux - uy).square().sum(dim=1) is (B, h, w); .mean(dim=(1, 2)) is (B,); sum those over the layers.",
         code="return sum(((x / (x.norm(dim=1, keepdim=True) + 1e-10) - y / (y.norm(dim=1, keepdim=True) + 1e-10))"
              ".square().sum(dim=1).mean(dim=(1, 2))) for x, y in zip(feats_x, feats_y))",
         shortcuts=[Shortcut(perceptual_module, "feature_distance"), Shortcut(perceptual_module, "unit_normalise"),
                    Shortcut(perceptual_module.PerceptualDistance, "forward")])
exercise("adaptive_weight", "6.6",
         concept="The adversarial gradient and the reconstruction's gradient can differ by orders of magnitude. VQGAN "
                 "measures both where they enter the decoder -- the gradient of each loss with respect to the "
                 "decoder's last layer -- and scales the adversarial term by the ratio of their norms, rec over GAN, "
                 "guarded (+1e-4), clamped to [0, 1e4] and held constant (no gradient flows through it).",
         approach="torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0] and the same for g_loss (keep the "
                  "graph: the total loss is back-propagated afterwards); lambda = norm(grad_rec) / (norm(grad_g) + "
                  "1e-4), clamped to [0, 1e4], then .detach().",
         code="grad_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]; grad_g = "
              "torch.autograd.grad(g_loss, last_weight, retain_graph=True)[0]; return (grad_rec.norm() / "
              "(grad_g.norm() + 1e-4)).clamp(0, 1e4).detach()",
         shortcuts=[Shortcut(discriminator_module, "adaptive_weight")])


def _feature_case(seed: int, B: int, layers):
    """Two images' feature maps: one (B, C, side, side) pair per layer."""
    g = _gen(700 + seed)
    return ([torch.randn(B, C, side, side, generator=g) for C, side in layers],
            [torch.randn(B, C, side, side, generator=g) for C, side in layers])


def _perceptual_reference(feats_x, feats_y, *, normalise_dim=1, space="mean", channels="sum", layers="sum",
                          root=False):
    """The LPIPS-style distance as ``perceptual.feature_distance`` computes it; the keywords give known mistakes."""
    per_layer = []
    for fx, fy in zip(feats_x, feats_y):
        if normalise_dim is not None:
            fx = fx / (fx.norm(dim=normalise_dim, keepdim=True) + perceptual_module.EPS)
            fy = fy / (fy.norm(dim=normalise_dim, keepdim=True) + perceptual_module.EPS)
        sq = (fx - fy).square()
        per_position = sq.sum(dim=1) if channels == "sum" else sq.mean(dim=1)
        per_image = per_position.mean(dim=(1, 2)) if space == "mean" else per_position.sum(dim=(1, 2))
        per_layer.append(per_image.sqrt() if root else per_image)
    stacked = torch.stack(per_layer)
    return stacked.sum(dim=0) if layers == "sum" else stacked.mean(dim=0)


def check_perceptual_distance(perceptual_distance, verbose: bool = True) -> CheckResult:
    """``perceptual_distance(feats_x, feats_y) -> (B,)``: the LPIPS-style distance with unit channel weights from two
    images' feature maps (lists of (B, C, h, w), one per layer): sum over layers of the spatial mean of the squared
    distance of the channel-normalised feature vectors. Reference: ``varlite.train.perceptual.feature_distance``."""
    specs = [(2, [(4, 5), (8, 3)], False), (3, [(6, 4), (6, 2), (10, 1)], False), (2, [(5, 6), (7, 3)], True)]
    cases = [_Case(f"B={B}, layers (C, side) = {layers}", _feature_case(n, B, layers), hidden=hidden)
             for n, (B, layers, hidden) in enumerate(specs)]

    def reference(fx, fy):
        return perceptual_module.feature_distance(fx, fy)

    def variant(**mistake):
        return lambda fx, fy: _perceptual_reference(fx, fy, **mistake)

    mistakes = [
        _Mistake("no unit normalisation (raw features compared)", variant(normalise_dim=None),
                 "Divide each position's feature vector by its length along the channels first: the distance then "
                 "compares directions (what the features say), not magnitudes."),
        _Mistake("the features normalised along a spatial axis instead of the channels", variant(normalise_dim=2),
                 "The vector to normalise is the C channels at one position: norm over dim=1, keepdim=True."),
        _Mistake("the squared distance summed over the positions instead of averaged", variant(space="sum"),
                 "Average over the h x w positions of each layer (else a fine layer outweighs a coarse one)."),
        _Mistake("the mean over channels (an MSE) instead of the squared length", variant(channels="mean"),
                 "||u_x - u_y||^2 is the sum over the channels of the squared differences."),
        _Mistake("the square root of each layer's distance", variant(root=True),
                 "LPIPS adds up the squared distances: no square root."),
        _Mistake("the layers averaged instead of summed", variant(layers="mean"),
                 "Add the layers' terms: d = sum over layers."),
    ]
    return _run("perceptual_distance", perceptual_distance, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the distances", atol=1e-6, rtol=1e-5, names=("image",)),
                mistakes, success="The same formula, on the CIFAR-10 judge's features, is train-tokenizer's "
                                  "--perceptual-weight term.", verbose=verbose)


def _adaptive_case(seed: int, B: int, C: int, side: int, rec_scale: float, g_scale: float):
    """A decoder's last 3x3 convolution (its weight ``w``) on features ``h``, a target image, and a fixed convolution
    standing in for the discriminator; ``rec_scale`` / ``g_scale`` scale the two losses."""
    g = _gen(800 + seed)
    return (torch.randn(B, C, side, side, generator=g), torch.randn(3, C, 3, 3, generator=g) * 0.2,
            torch.rand(B, 3, side, side, generator=g) * 2 - 1, torch.randn(1, 3, 4, 4, generator=g) * 0.1,
            rec_scale, g_scale)


def _adaptive_outcome(fn, h, w, target, d_w, rec_scale, g_scale):
    """Build the two losses on one graph (recon = conv(h, w); rec = rec_scale * mse(recon, target); L_G = -g_scale *
    mean D(recon)), call ``fn(rec, L_G, w)``, then back-propagate rec + lambda * L_G as the trainer does: (the weight,
    whether it carries a gradient, whether the graph was still there)."""
    w = w.clone().requires_grad_(True)
    recon = F.conv2d(h, w, padding=1)
    rec = rec_scale * F.mse_loss(recon, target)
    g_loss = -g_scale * F.conv2d(recon, d_w, stride=2).mean()
    try:
        weight = fn(rec, g_loss, w)
    except RuntimeError as err:
        if "second time" in str(err):
            raise _Mismatch("the graph was freed by the first torch.autograd.grad, so the second one failed: "
                            "pass retain_graph=True to both (the trainer back-propagates the total loss afterwards)"
                            ) from err
        raise
    if not isinstance(weight, torch.Tensor) or weight.numel() != 1:
        raise _Mismatch(f"expected the weight as a one-element torch.Tensor, got "
                        f"{type(weight).__name__ if not isinstance(weight, torch.Tensor) else tuple(weight.shape)}")
    carries_gradient = weight.requires_grad
    try:
        (rec + weight.detach() * g_loss).backward()
        graph_kept = True
    except RuntimeError:
        graph_kept = False
    return weight.detach().reshape(()).double(), carries_gradient, graph_kept


def check_adaptive_weight(adaptive_weight, verbose: bool = True) -> CheckResult:
    """``adaptive_weight(rec_loss, g_loss, last_weight) -> lambda``: VQGAN's adaptive weight, clamp(||d rec / d w|| /
    (||d L_G / d w|| + 1e-4), 0, 1e4), detached, leaving the graph usable. Checked on a decoder's last convolution
    and a fixed stand-in discriminator. Reference: ``varlite.train.discriminator.adaptive_weight``."""
    specs = [(2, 4, 6, 1.0, 1.0, False), (3, 8, 8, 1.0, 0.01, False), (2, 6, 8, 100.0, 0.0, False),
             (2, 5, 6, 3.0, 0.5, True)]
    cases = [_Case(f"B={B}, {C} channels into the last conv, {side}x{side} images, rec x {rs:g}, L_G x {gs:g}",
                   _adaptive_case(n, B, C, side, rs, gs), hidden=hidden)
             for n, (B, C, side, rs, gs, hidden) in enumerate(specs)]

    def reference(*case):
        return _adaptive_outcome(discriminator_module.adaptive_weight, *case)

    def variant(**mistake):
        return lambda *case: _adaptive_outcome(lambda r, g, w: _adaptive_mistake(r, g, w, **mistake), *case)

    def compare(got, exp):
        if got[2] != exp[2]:
            raise _Mismatch("after your function the total loss could not be back-propagated: the graph was freed "
                            "(pass retain_graph=True to torch.autograd.grad; do not call backward() inside)")
        if got[1] != exp[1]:
            raise _Mismatch("your weight carries a gradient (requires_grad=True; create_graph=True?): .detach() it, "
                            "the weight must act as a constant")
        _compare_tensor(got[0], exp[0], "the adaptive weight", atol=1e-6, rtol=1e-4)

    mistakes = [
        _Mistake("the ratio upside down (GAN over reconstruction)", variant(inverted=True),
                 "lambda = ||grad of the reconstruction loss|| / (||grad of the GAN loss|| + 1e-4)."),
        _Mistake("no clamp at 1e4", variant(clamp=False),
                 "When the GAN gradient vanishes the ratio explodes: clamp it to [0, 1e4]."),
        _Mistake("the ratio of the losses' values instead of their gradients' norms", variant(values=True),
                 "Compare the gradients at the decoder's last layer (torch.autograd.grad(loss, last_weight)), not the "
                 "loss values."),
    ]
    return _run("adaptive_weight", adaptive_weight, reference, cases, compare, mistakes,
                success="train-tokenizer's --gan-weight term is scaled by exactly this lambda.", verbose=verbose,
                call=_adaptive_outcome)


def _adaptive_mistake(rec_loss, g_loss, last_weight, *, inverted=False, clamp=True, values=False):
    """Known wrong versions of the adaptive weight."""
    if values:
        ratio = rec_loss / (g_loss.abs() + discriminator_module.ADAPTIVE_EPS)
    else:
        grad_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0].norm()
        grad_g = torch.autograd.grad(g_loss, last_weight, retain_graph=True)[0].norm()
        ratio = grad_g / (grad_rec + discriminator_module.ADAPTIVE_EPS) if inverted else \
            grad_rec / (grad_g + discriminator_module.ADAPTIVE_EPS)
    return (ratio.clamp(0, discriminator_module.ADAPTIVE_MAX) if clamp else ratio).detach()
