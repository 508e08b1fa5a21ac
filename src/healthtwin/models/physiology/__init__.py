"""Physiology models for patient twins (pure maths, vectorised over patients)."""
