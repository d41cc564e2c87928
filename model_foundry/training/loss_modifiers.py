"""The loss modifiers under the import path users know; they live beside the criteria in
`model_foundry.models.heads.loss_modifiers`, and the task applies them (`Task.training_loss`)."""
from model_foundry.models.heads.loss_modifiers import (EntropyWeighting, LossModifier, LossModifierPipeline,
                                                       MaskRatioWeighting, TargetSmoothing,
                                                       create_loss_modifier_pipeline)

__all__ = ["EntropyWeighting", "LossModifier", "LossModifierPipeline", "MaskRatioWeighting", "TargetSmoothing",
           "create_loss_modifier_pipeline"]
