"""A preset's model built from tensors read out of a file that anyone may have made, checked before anything is built.

A file names a preset and holds state dicts {"vqvae": ..., "var": ...}. A small file can claim a huge preset (1.5 KB
naming d30 would make a naive loader allocate 8 GB), hold tensors of other shapes or dtypes, or hold views that
repeat one stored value a billion times. So, in order:

1. ``check_against_preset``: the preset is one varlite has; the model is built on the meta device (no memory); every
   tensor has the name, shape and dtype of that model's; every tensor is backed by as many stored values as it has;
   all of them together are no more than the file's bytes and no more than the memory the machine has left.
2. ``materialise``: the meta model takes the checked tensors themselves (``load_state_dict(assign=True)``: nothing
   is copied or allocated), the buffers derived from the preset (which scale each token belongs to, the
   block-causal mask) must be the preset's, and every weight must be finite.

``model_from_states`` runs both. Messages name the file by the ``what`` the caller gives and quote nothing read from
the file (no preset text unless it is a known preset, no tensor name unless it is the preset's).

Used by the train-var checkpoint reader (``varlite.train.transformer.load_var_run``) and the walkthrough's reader of
weights exports.
"""
from __future__ import annotations

import torch

from .core.configs import PRESETS
from .core.var import VAR, block_causal_bias, scale_index_of_tokens
from .core.vqvae import VQVAE
from .device import available_memory_bytes
from .safe_io import CheckpointError, check_finite

PARTS = ("vqvae", "var")


def check_against_preset(states: dict, preset_name: object, file_bytes: int, what: str) -> tuple[VQVAE, VAR]:
    """The (vqvae, var) of preset ``preset_name`` built on the meta device (no memory) after checking that
    ``states`` = {"vqvae": state dict, "var": state dict} fits it: the same tensor names, shapes and dtypes, every
    tensor backed by as many stored values as it has (no view repeating a few values), all of them together no more
    than the ``file_bytes`` they were read from, and no more than the memory the machine has left. Raises
    CheckpointError saying what does not fit."""
    if not isinstance(preset_name, str):
        raise CheckpointError(f"{what} names no preset (a text such as 'shapes'), so its model is unknown")
    if preset_name not in PRESETS:             # the file's text is not quoted: it could be anything
        raise CheckpointError(f"{what} names an unknown preset; this varlite has {', '.join(sorted(PRESETS))}")
    preset = PRESETS[preset_name]
    with torch.device("meta"):
        vqvae = VQVAE(preset.vqvae)
        var = VAR(preset.var, vqvae)
    needed = 0
    for part, module in zip(PARTS, (vqvae, var)):
        state, expected = states.get(part), module.state_dict()
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{what} holds no {part} state dict of tensors")
        missing = sorted(set(expected) - set(state))
        unexpected = len(set(state) - set(expected))
        problems = []
        if missing:
            problems.append(f"{part} tensors missing {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                            f"({len(missing)} in all)")
        if unexpected:            # their names are the file's: counted, not quoted
            problems.append(f"{unexpected} {part} tensors of names the preset does not have")
        if problems:
            raise CheckpointError(f"{what} does not fit preset {preset_name!r}: {'; '.join(problems)}")
        for name, want in expected.items():
            got = state[name]
            if got.shape != want.shape or got.dtype != want.dtype:
                raise CheckpointError(f"{what} does not fit preset {preset_name!r}: {part} tensor `{name}` is "
                                      f"{got.dtype} {tuple(got.shape)}, the preset's is {want.dtype} "
                                      f"{tuple(want.shape)}")
            if got.untyped_storage().nbytes() < got.numel() * got.element_size():
                raise CheckpointError(f"{what}: {part} tensor `{name}` repeats fewer stored values than it has "
                                      f"(a view with stride 0), which torch.save never writes for a model")
            needed += want.numel() * want.element_size()
    if needed > file_bytes:
        raise CheckpointError(f"{what} declares {needed / 2**20:,.1f} MB of {preset_name!r} weights but the file "
                              f"has only {file_bytes / 2**20:,.1f} MB: it cannot hold them")
    free = available_memory_bytes()
    if free is not None and needed > free:
        raise CheckpointError(f"{what} needs {needed / 2**30:,.2f} GB of memory for preset {preset_name!r}; this "
                              f"machine has {free / 2**30:,.2f} GB free")
    return vqvae, var


def materialise(vqvae: VQVAE, var: VAR, states: dict, what: str, device) -> tuple[VQVAE, VAR]:
    """Give the meta-built models of ``check_against_preset`` the checked tensors themselves (``assign``: no copy,
    no fresh allocation), check the buffers derived from the preset (which scale each token belongs to, the
    block-causal mask) and that every weight is finite, then move both to ``device`` in eval mode."""
    vqvae.load_state_dict(states["vqvae"], assign=True)
    var.load_state_dict(states["var"], assign=True)
    for name, want in (("lvl_1L", scale_index_of_tokens(var.patch_nums)),
                       ("attn_bias_for_masking", block_causal_bias(var.patch_nums))):
        if not torch.equal(getattr(var, name), want.view_as(getattr(var, name))):
            raise CheckpointError(f"{what}: the buffer `{name}` is not the one of its scales {var.patch_nums}")
    check_finite(vqvae, f"{what} (VQVAE)")
    check_finite(var, f"{what} (VAR)")
    return vqvae.to(device).eval(), var.to(device).eval()


def model_from_states(states: dict, preset_name: object, file_bytes: int, what: str, device) -> tuple[VQVAE, VAR]:
    """(vqvae, var) of preset ``preset_name`` holding ``states``' tensors, on ``device`` in eval mode:
    ``check_against_preset`` then ``materialise`` (see the module docstring)."""
    vqvae, var = check_against_preset(states, preset_name, file_bytes, what)
    return materialise(vqvae, var, states, what, device)
