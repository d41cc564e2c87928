"""Inference: loading trained runs for evaluation, prediction and generation."""
