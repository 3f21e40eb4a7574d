"""The model core of varlite: VAR and its multi-scale VQVAE, and nothing else.

    configs.py     dataclass configs and named presets (official d16 ... d36, the built-in shapes / cifar10)
    quantizer.py   the multi-scale residual quantizer and phi: encoding (the paper's Algorithm 1) and
                   reconstruction from tokens (Algorithm 2, with ``VQVAE.decode_f_hat``)
    vqvae.py       the encoder / decoder conv nets around the quantizer
    transformer.py AdaLN self-attention blocks and the explicit KV cache
    var.py         embeddings, the block-causal mask, teacher-forced training and the generation loop
    sampling.py    classifier-free guidance, top-k / top-p, Gumbel smoothing
    overrides.py   tokens fixed in advance (the primitive behind token surgery and zero-shot editing)
    trace.py       the step records (``ScaleStep``, ``EncodeStep``) the loops yield

The core imports nothing else of varlite; everything else (editing, viz, pretrained, builtin, train, the app and
the lessons) imports it. ``make test`` enforces this with import-linter (contracts in pyproject.toml).
"""
from .configs import VARConfig, VQVAEConfig, get_preset
from .trace import EncodeStep, ScaleStep
from .var import VAR
from .vqvae import VQVAE

__all__ = ["VARConfig", "VQVAEConfig", "get_preset", "EncodeStep", "ScaleStep", "VAR", "VQVAE"]
