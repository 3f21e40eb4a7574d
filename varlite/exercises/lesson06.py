"""Checks of lesson 6 -- training (exercises 6.1-6.4): the per-scale loss of the transformer, the tokenizer's vq
loss, the tokenizer's whole loss and one training step of the transformer. The two terms of the tokenizer's full
(VQGAN-style) loss, 6.5 and 6.6, are checked in ``lesson06_vqgan``."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..core.quantizer import MultiScaleQuantizer
from ..core.configs import get_preset
from ..train import metrics
from ..train import tokenizer as tokenizer_trainer
from ..train import transformer as transformer_trainer
from ..core.var import VAR
from ..core.vqvae import VQVAE
from ._check import CheckResult, Shortcut, _Case, _Mismatch, _Mistake, _compare_tensor, _gen, _run, exercise

exercise("per_scale_cross_entropy", "6.1",
         concept="Teacher forcing scores all L tokens at once; to see how well each scale is predicted, average the "
                 "cross-entropy over the positions of that scale only (scale k owns pn_k^2 consecutive positions).",
         approach="Per-token losses with F.cross_entropy(..., reduction='none') on (B*L, V) logits, reshaped to "
                  "(B, L); walk through the scales with a running start index, advancing by pn^2; one mean per slice.",
         code="loss_BL = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), reduction='none').view(B, L); "
              "for pn in patch_nums: out.append(loss_BL[:, begin:begin + pn * pn].mean()); begin += pn * pn",
         shortcuts=[Shortcut(metrics, "per_scale_loss_acc")])
exercise("train_step", "6.4",
         concept="One teacher-forced step: the true token maps give both the input (f_hat of the coarser scales, "
                 "exercise 3.1) and the target (the tokens themselves); one forward pass scores all L tokens; the mean "
                 "cross-entropy is back-propagated and the optimizer takes one step -- after forgetting the previous "
                 "step's gradients.",
         approach="x = vqvae.idx_to_var_input(token_maps) (no gradient needed); logits = var(labels_B, x); target = the "
                  "maps concatenated to (B, L); F.cross_entropy over (B*L, V) with label_smoothing; zero the "
                  "gradients, backward, optimizer.step(); return loss.item().",
         code="with torch.no_grad(): x = vqvae.idx_to_var_input(token_maps); logits = var(labels_B, x); loss = "
              "F.cross_entropy(logits.flatten(0, 1), torch.cat(token_maps, 1).flatten(), label_smoothing=label_smoothing); "
              "optimizer.zero_grad(); loss.backward(); optimizer.step(); return loss.item()",
         shortcuts=[Shortcut(transformer_trainer.VarTrainer, "compute_loss"), Shortcut(metrics, "per_scale_loss_acc")])
exercise("vq_loss", "6.2",
         concept="Choosing the nearest code has no gradient. Two losses and one trick fix that: the codebook (and "
                 "phi) is pulled towards the encoder's output, the encoder is pulled (weighted by beta, the "
                 "commitment) towards its codes, each with the other side frozen; and the decoder gets a tensor with "
                 "f_hat's value but f's gradient (the straight-through estimator).",
         approach="For each f_hat_k: beta * mse(f_hat_k.detach(), f) + mse(f_hat_k, f.detach()); average over the K "
                  "scales. Decoder input: f + (f_hat_K - f).detach(), the same value as f_hat_K, gradient only to f.",
         code="loss = sum(beta * F.mse_loss(h.detach(), f) + F.mse_loss(h, f.detach()) for h in f_hats) / len(f_hats); "
              "return (f_hats[-1].detach() - f.detach()) + f, loss",
         shortcuts=[Shortcut(MultiScaleQuantizer, "forward"), Shortcut(VQVAE, "forward")])


exercise("tokenizer_loss", "6.3",
         concept="The tokenizer's whole loss is the reconstruction error of the image decoded from the quantized "
                 "latent, plus the vq loss of exercise 6.2. The path is the one of lesson 1, with both 1x1-style convs: "
                 "f = quant_conv(encoder(x)); the decoder sees post_quant_conv of the straight-through input, so the "
                 "reconstruction error reaches the encoder too.",
         approach="f = vqvae.encode(img) (encoder + quant_conv); f_hats = vqvae.quantize.f_to_f_hats(f); decoder_input, "
                  "vq = vq_loss(f, f_hats, vqvae.quantize.beta); recon = vqvae.decoder(vqvae.post_quant_conv("
                  "decoder_input)) (not clamped); loss = F.mse_loss(recon, img) + vq.",
         code="f = vqvae.encode(img_B3HW); f_hats = vqvae.quantize.f_to_f_hats(f); x, vq = vq_loss(f, f_hats, "
              "vqvae.quantize.beta); recon = vqvae.decoder(vqvae.post_quant_conv(x)); "
              "return F.mse_loss(recon, img_B3HW) + vq, recon",
         shortcuts=[Shortcut(VQVAE, "forward"), Shortcut(MultiScaleQuantizer, "forward"),
                    Shortcut(tokenizer_trainer.TokenizerTrainer, "compute_loss")])


def _ce_case(seed: int, B: int, patch_nums, V: int):
    g = _gen(seed)
    L = sum(p * p for p in patch_nums)
    return torch.randn(B, L, V, generator=g) * 2, torch.randint(0, V, (B, L), generator=g), tuple(patch_nums)


def check_per_scale_cross_entropy(per_scale_cross_entropy, verbose: bool = True) -> CheckResult:
    """``per_scale_cross_entropy(logits_BLV, target_BL, patch_nums) -> (K,)``: the mean cross-entropy of the tokens of
    each scale (scale k owns positions [sum_{j<k} pn_j^2, sum_{j<=k} pn_j^2)).
    Reference: ``varlite.train.metrics.per_scale_loss_acc``."""
    specs = [(1, (1, 2), 5), (2, (1, 2, 3, 4), 16), (3, (1, 2, 4, 8), 32), (2, (1, 3, 5), 12)]
    cases = [_Case(f"B={B}, patch_nums={pn}, V={V}", _ce_case(s, B, pn, V), hidden=s == len(specs) - 1)
             for s, (B, pn, V) in enumerate(specs)]

    def begin_ends(pn, square=True):
        out, cur = [], 0
        for p in pn:
            n = p * p if square else p
            out.append((cur, cur + n))
            cur += n
        return out

    def reference(logits, target, pn):
        return metrics.per_scale_loss_acc(logits, target, begin_ends(pn))[1]

    def ce_BL(logits, target):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)

    mistakes = [
        _Mistake("the mean over all L tokens for every scale",
                 lambda x, t, pn: ce_BL(x, t).mean().repeat(len(pn)),
                 "Average each scale over its own positions only: loss_BL[:, begin:end].mean()."),
        _Mistake("pn_k positions per scale instead of pn_k^2",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].mean() for b, e in begin_ends(pn, square=False)]),
                 "Scale k has pn_k ** 2 tokens: begin/end advance by pn_k ** 2."),
        _Mistake("the sum over a scale's tokens instead of the mean",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].sum() for b, e in begin_ends(pn)]),
                 "Take the mean over the batch and the scale's tokens, so scales of different sizes compare."),
    ]
    return _run("per_scale_cross_entropy", per_scale_cross_entropy, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the per-scale losses", atol=1e-5, rtol=1e-5, names=("scale",)),
                mistakes, verbose=verbose)


def _vq_case(seed: int, B: int, Cv: int, H: int, K: int):
    g = _gen(seed)
    f = torch.randn(B, Cv, H, H, generator=g)
    f_hats = [f * (k + 1) / K + 0.3 * torch.randn(B, Cv, H, H, generator=g) / (k + 1) for k in range(K)]
    weight = torch.randn(B, Cv, H, H, generator=g)        # what the "decoder" does with its input, for the gradient
    return f, f_hats, 0.25 if seed % 2 == 0 else 0.4, weight


def _vq_reference(f, f_hats, beta, *, straight_through=True, swapped=False, detach=True, last_only=False,
                  sum_scales=False):
    """vq loss and decoder input as ``MultiScaleQuantizer.forward`` computes them; keywords give known mistakes."""
    sg = (lambda x: x.detach()) if detach else (lambda x: x)
    used = f_hats[-1:] if last_only else f_hats
    terms = [(F.mse_loss(fh, sg(f)) * beta + F.mse_loss(sg(fh), f)) if swapped else
             (beta * F.mse_loss(sg(fh), f) + F.mse_loss(fh, sg(f))) for fh in used]
    loss = sum(terms) if sum_scales else sum(terms) / len(used)
    decoder_input = (f_hats[-1].detach() - f.detach()) + f if straight_through else f_hats[-1]
    return decoder_input, loss


def _vq_outcome(fn, f, f_hats, beta, weight):
    """Run a vq_loss implementation on fresh leaves and back-propagate loss + <weight, decoder input>: returns the
    values and the gradients that reach f and every f_hat."""
    f = f.clone().requires_grad_(True)
    f_hats = [x.clone().requires_grad_(True) for x in f_hats]
    decoder_input, loss = fn(f, f_hats, beta)
    for value, what in ((decoder_input, "the decoder input"), (loss, "the loss")):
        if not isinstance(value, torch.Tensor):
            raise _Mismatch(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    if not (decoder_input.requires_grad or loss.requires_grad):
        raise _Mismatch("nothing you returned carries a gradient (did you call .detach() or .item() on everything, "
                        "or compute under torch.no_grad()?)")
    total = loss.sum() + (decoder_input * weight).sum() if decoder_input.shape == weight.shape else loss.sum()
    total.backward()
    zeros = torch.zeros_like(f)
    return (decoder_input.detach(), loss.detach(), f.grad if f.grad is not None else zeros,
            [x.grad if x.grad is not None else zeros for x in f_hats])


def check_vq_loss(vq_loss, verbose: bool = True) -> CheckResult:
    """``vq_loss(f_BCvHW, f_hats, beta) -> (decoder_input_BCvHW, loss)``: the tokenizer's quantization loss and the
    straight-through input of its decoder, given the encoder output f and f_hat after every scale (f_hats[k], which
    carry the gradient to the codebook and phi). Checked on values *and* on the gradients that reach f and each
    f_hat. Reference: ``MultiScaleQuantizer.forward`` (mean over scales of beta ||sg(f_hat_k) - f||^2 +
    ||f_hat_k - sg(f)||^2; decoder input sg(f_hat_K) + f - sg(f))."""
    specs = [(1, 4, 2, 2, False), (2, 8, 4, 3, False), (2, 6, 5, 4, True)]
    cases = [_Case(f"B={B}, Cv={Cv}, {H}x{H}, K={K}", _vq_case(n, B, Cv, H, K), hidden=hidden)
             for n, (B, Cv, H, K, hidden) in enumerate(specs)]

    def outcome_of(variant):
        return lambda f, f_hats, beta, weight: _vq_outcome(variant, f, f_hats, beta, weight)

    def compare(got, exp):
        value, loss, grad_f, grad_hats = got
        _compare_tensor(value, exp[0], "the decoder input (its value must be f_hat after the last scale)", atol=1e-5,
                        rtol=1e-5)
        _compare_tensor(loss.reshape(()) if loss.numel() == 1 else loss, exp[1], "the loss", atol=1e-6, rtol=1e-5)
        _compare_tensor(grad_f, exp[2], "the gradient that reaches f (the encoder)", atol=1e-6, rtol=1e-4,
                        names=("b", "channel", "row", "col"))
        for k, (g, e) in enumerate(zip(grad_hats, exp[3])):
            _compare_tensor(g, e, f"the gradient that reaches f_hat after scale {k + 1} (codebook and phi)",
                            atol=1e-6, rtol=1e-4, names=("b", "channel", "row", "col"))

    mistakes = [
        _Mistake("no straight-through estimator (the decoder gets f_hat itself)",
                 outcome_of(lambda f, h, b: _vq_reference(f, h, b, straight_through=False)),
                 "The decoder's gradient must reach the encoder, but choosing a code has no gradient. Give the decoder a "
                 "tensor whose *value* is f_hat and whose *gradient* is f's: detach the difference f_hat - f."),
        _Mistake("beta on the codebook term instead of the commitment term",
                 outcome_of(lambda f, h, b: _vq_reference(f, h, b, swapped=True)),
                 "beta weighs the commitment term, the one that moves the encoder's f (the codebook side is detached)."),
        _Mistake("no stop-gradient in the loss ((1 + beta) ||f_hat - f||^2)",
                 outcome_of(lambda f, h, b: _vq_reference(f, h, b, detach=False)),
                 "Each of the two terms must move only one side: detach f_hat in the commitment term, f in the other."),
        _Mistake("the loss of the last scale only", outcome_of(lambda f, h, b: _vq_reference(f, h, b, last_only=True)),
                 "Every scale's f_hat is pulled towards f: average the two terms over all K scales."),
        _Mistake("the sum over scales instead of the mean",
                 outcome_of(lambda f, h, b: _vq_reference(f, h, b, sum_scales=True)),
                 "Divide by the number of scales K (the official loss is the mean over scales)."),
    ]
    return _run("vq_loss", vq_loss, outcome_of(_vq_reference), cases, compare, mistakes,
                success="These two lines are why a VQ tokenizer can be trained at all.",
                verbose=verbose, call=_vq_outcome)


def _train_case(seed: int, B: int, label_smoothing: float):
    """A tiny VAR (fresh, seeded init, training mode) with its AdamW, and two batches of token maps and labels."""
    preset = get_preset("tiny")
    torch.manual_seed(seed)
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).train()
    g = _gen(400 + seed)
    batches = [([torch.randint(0, preset.vqvae.vocab_size, (B, pn * pn), generator=g) for pn in preset.var.patch_nums],
                torch.randint(0, preset.var.num_classes, (B,), generator=g)) for _ in range(2)]
    return var, vqvae, batches, label_smoothing


def _reference_train_step(var, vqvae, token_maps, labels_B, optimizer, label_smoothing, *, zero_grad=True,
                          shifted=False, smoothing=True, reduce="mean"):
    """One step as ``VarTrainer.compute_loss`` and the loop do it (no schedule, no clipping); keywords give mistakes."""
    with torch.no_grad():
        x_BLCv = vqvae.idx_to_var_input(token_maps)
    logits_BLV = var(labels_B, x_BLCv)
    target_BL = torch.cat(token_maps, dim=1)
    if shifted:                                   # the next-token habit: position i predicts token i + 1
        logits_BLV, target_BL = logits_BLV[:, :-1], target_BL[:, 1:]
    loss_BL = metrics.per_scale_loss_acc(logits_BLV, target_BL, [(0, target_BL.shape[1])],
                                         label_smoothing if smoothing else 0.0)[0]
    loss = loss_BL.mean() if reduce == "mean" else loss_BL.sum()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_outcome(step_fn, var, vqvae, batches, label_smoothing):
    """Two steps of ``step_fn`` on a copy of the model, the same global seed (class dropout) for every run: the two
    losses and the parameters afterwards."""
    var = copy.deepcopy(var)
    optimizer = torch.optim.AdamW(var.parameters(), lr=1e-3, weight_decay=0.05)
    losses = []
    for n, (token_maps, labels_B) in enumerate(batches):
        # the CPU generator alone: torch.manual_seed also queues a CUDA seeding that records a stack trace, which
        # the grading sandbox refuses while a learner's call runs (it reads the program's frames)
        torch.default_generator.manual_seed(1000 + n)
        loss = step_fn(var, vqvae, [t.clone() for t in token_maps], labels_B.clone(), optimizer, label_smoothing)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().item()
        if not isinstance(loss, (int, float)):
            raise _Mismatch(f"train_step must return the loss as a number, got {type(loss).__name__}")
        losses.append(float(loss))
    return torch.tensor(losses, dtype=torch.float64), torch.cat([p.detach().flatten() for p in var.parameters()])


def check_train_step(train_step, verbose: bool = True) -> CheckResult:
    """``train_step(var, vqvae, token_maps, labels_B, optimizer, label_smoothing) -> float``: one teacher-forced
    optimisation step of the transformer. Run twice in a row on a tiny VAR; the losses and the parameters after both
    steps must equal those of ``VarTrainer``'s step (its ``compute_loss``: the teacher-forcing input, the
    cross-entropy of all L tokens with label smoothing, the mean; then zero_grad, backward, step)."""
    specs = [(0, 2, 0.0, False), (1, 3, 0.1, False), (2, 4, 0.2, True)]
    cases = [_Case(f"tiny VAR, B={B}, label_smoothing={ls}", _train_case(seed, B, ls), hidden=hidden)
             for seed, B, ls, hidden in specs]

    def outcome_of(**mistake):
        return lambda var, vqvae, batches, ls: _train_outcome(
            lambda *a: _reference_train_step(*a, **mistake), var, vqvae, batches, ls)

    def compare(got, exp):
        _compare_tensor(got[0], exp[0], "the losses of the two steps", atol=1e-5, rtol=1e-5, names=("step",))
        _compare_tensor(got[1], exp[1], "the parameters after two steps", atol=1e-5, rtol=1e-4, names=("parameter",))

    mistakes = [
        _Mistake("no optimizer.zero_grad() (the second step adds the first step's gradients)",
                 outcome_of(zero_grad=False),
                 "Gradients accumulate in .grad until you clear them: call optimizer.zero_grad() before backward()."),
        _Mistake("next-token targets (position i scored against token i + 1)", outcome_of(shifted=True),
                 "In VAR the logits at position i predict token i itself (its input came from the coarser scales): "
                 "the target is the concatenated token maps, not shifted."),
        _Mistake("label smoothing left out", outcome_of(smoothing=False),
                 "Pass label_smoothing to F.cross_entropy (label_smoothing=...)."),
        _Mistake("the summed loss instead of the mean", outcome_of(reduce="sum"),
                 "Average the cross-entropy over all B x L tokens (the learning rate is tuned for a mean)."),
    ]
    return _run("train_step", train_step, outcome_of(), cases, compare, mistakes,
                success="This is the step VarTrainer repeats, plus its schedule, clipping and data order.",
                verbose=verbose, call=_train_outcome)


def _tokenizer_case(seed: int, B: int):
    """A seeded ``tiny`` VQVAE (training mode) and a batch of images in [-1, 1]."""
    preset = get_preset("tiny")
    torch.manual_seed(seed)
    vqvae = VQVAE(preset.vqvae).train()
    S = preset.vqvae.image_size
    img_B3HW = torch.rand(B, 3, S, S, generator=_gen(600 + seed)) * 2 - 1
    return vqvae, img_B3HW


def _tokenizer_reference(vqvae, img_B3HW, vq_loss, *, straight_through=True, quantize=True, vq=True,
                         post_quant_conv=True, quant_conv=True):
    """The loss ``TokenizerTrainer.compute_loss`` trains with (its defaults: MSE reconstruction, no edge loss),
    written out; the keywords give known mistakes. ``vq_loss`` is exercise 6.2's function."""
    f = vqvae.encode(img_B3HW) if quant_conv else vqvae.encoder(img_B3HW)
    f_hats = vqvae.quantize.f_to_f_hats(f)
    decoder_input, vq_term = vq_loss(f, f_hats, vqvae.quantize.beta)
    if not straight_through:
        decoder_input = f_hats[-1]
    if not quantize:
        decoder_input = f
    recon = vqvae.decoder(vqvae.post_quant_conv(decoder_input) if post_quant_conv else decoder_input)
    loss = F.mse_loss(recon, img_B3HW) + (vq_term if vq else 0.0)
    return loss, recon


def _tokenizer_outcome(fn, vqvae, img_B3HW):
    """Run a tokenizer_loss implementation on a copy of the model with the reference vq_loss, back-propagate the
    loss: (loss, reconstruction, {parameter name: gradient})."""
    vqvae = copy.deepcopy(vqvae)
    out = fn(vqvae, img_B3HW, lambda f, f_hats, beta: _vq_reference(f, f_hats, beta))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _Mismatch(f"tokenizer_loss must return (loss, reconstruction), got {type(out).__name__}")
    loss, recon = out
    for value, what in ((loss, "the loss"), (recon, "the reconstruction")):
        if not isinstance(value, torch.Tensor):
            raise _Mismatch(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    if not loss.requires_grad:
        raise _Mismatch("the loss carries no gradient (did you call .detach() or .item(), or work under "
                        "torch.no_grad()?)")
    loss.sum().backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
             for name, p in vqvae.named_parameters()}
    return loss.detach().reshape(()) if loss.numel() == 1 else loss.detach(), recon.detach(), grads


def check_tokenizer_loss(tokenizer_loss, verbose: bool = True) -> CheckResult:
    """``tokenizer_loss(vqvae, img_B3HW, vq_loss) -> (loss, reconstruction)``: the multi-scale VQVAE's training loss,
    ||x' - x||^2 + vq loss, with x' = decoder(post_quant_conv(straight-through f_hat)) and f = quant_conv(encoder(x)),
    using the given ``vq_loss`` (exercise 6.2). Checked on the loss, the reconstruction and the gradient of every
    parameter of a seeded tiny VQVAE. Reference: what ``TokenizerTrainer.compute_loss`` computes (refused, with
    ``VQVAE.forward``); tests/test_exercises.py proves the two agree on the same seed."""
    cases = [_Case("tiny VQVAE, B=2 images", _tokenizer_case(0, 2)),
             _Case("tiny VQVAE, B=3 images", _tokenizer_case(1, 3), hidden=True)]

    def outcome_of(**mistake):
        return lambda vqvae, img: _tokenizer_outcome(lambda *a: _tokenizer_reference(*a, **mistake), vqvae, img)

    def compare(got, exp):
        _compare_tensor(got[0], exp[0], "the loss", atol=1e-6, rtol=1e-5)
        _compare_tensor(got[1], exp[1], "the reconstruction (decoder output, not clamped)", atol=1e-5, rtol=1e-4)
        for name, grad in exp[2].items():
            _compare_tensor(got[2][name], grad, f"the gradient of {name}", atol=1e-6, rtol=1e-3)

    mistakes = [
        _Mistake("the decoder gets f_hat itself, not the straight-through input", outcome_of(straight_through=False),
                 "Decode the first value vq_loss returns: it has f_hat's value and f's gradient, so the "
                 "reconstruction error also trains the encoder."),
        _Mistake("no quantization (the decoder gets f)", outcome_of(quantize=False),
                 "The decoder must see what the tokens can represent: the straight-through f_hat, not the encoder's f."),
        _Mistake("the vq loss left out", outcome_of(vq=False),
                 "Add the vq loss of exercise 6.2: without it the codebook and phi never learn."),
        _Mistake("post_quant_conv left out", outcome_of(post_quant_conv=False),
                 "The decoder's input goes through vqvae.post_quant_conv first (lesson 1)."),
        _Mistake("quant_conv left out (f = encoder(x))", outcome_of(quant_conv=False),
                 "The latent the quantizer sees is vqvae.encode(x) = quant_conv(encoder(x)) (lesson 1)."),
    ]
    return _run("tokenizer_loss", tokenizer_loss, outcome_of(), cases, compare, mistakes,
                success="Reconstruction + vq loss + straight-through: the tokenizer trainer's whole loss.",
                verbose=verbose, call=_tokenizer_outcome)
