"""Backbones: token ids in, hidden states out. They know nothing about tasks or heads."""
from model_foundry.models.backbones.transformer import (TRANSFORMER_PRESETS, TransformerBackbone, TransformerBlock,
                                                        TransformerConfig)

__all__ = ["TRANSFORMER_PRESETS", "TransformerBackbone", "TransformerBlock", "TransformerConfig"]
