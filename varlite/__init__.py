"""varlite: a readable VAR (Visual AutoRegressive modeling, next-scale prediction).

Tian et al., "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction",
NeurIPS 2024. Same maths and the same numbers as the official FoundationVision/VAR code, written to be read.
"""
__version__ = "0.1.0"
