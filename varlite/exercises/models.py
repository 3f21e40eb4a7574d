"""The lessons' model loader: the built-in model when its weights ship, else the same preset with synthetic weights."""
from __future__ import annotations

from ..core.configs import get_preset
from ..core.var import VAR
from ..core.vqvae import VQVAE


def lesson_models(name: str = "shapes", seed: int = 0, verbose: bool = True) -> tuple[VQVAE, VAR]:
    """(vqvae, var) for a lesson: the shipped built-in model ``name`` if this install has its weights file, else the
    same preset with synthetic weights (``varlite.synthetic``: every computation is the real one, only the pictures
    are noise). Eval mode, CPU."""
    from ..synthetic import layout_of, synthetic_state_dict
    try:
        from .. import builtin
    except ImportError:              # a checkout without the built-in models module
        builtin, reason = None, "varlite.builtin is not installed"
    if builtin is not None:
        try:
            vqvae, var = builtin.load_builtin(name)
            if verbose:
                print(f"Loaded the built-in model {name!r} (varlite/weights/{name}.safetensors).")
            return vqvae, var
        except builtin.BuiltinError as err:
            reason = str(err)
    preset = get_preset(name)
    vqvae, var = VQVAE(preset.vqvae), None
    vqvae.load_state_dict(synthetic_state_dict(layout_of(vqvae), seed, preset.vqvae.patch_nums))
    var = VAR(preset.var, vqvae)
    var.load_state_dict(synthetic_state_dict(layout_of(var), seed, preset.var.patch_nums))
    if verbose:
        print(f"The built-in weights are not available here ({reason.split(';')[0]}).\nUsing the {name!r} preset with "
              f"SYNTHETIC weights: every tensor has the trained model's shape and every computation below is the "
              f"real one, but the pictures will be noise. Train the model yourself in lesson 6.")
    return vqvae.eval(), var.eval()
