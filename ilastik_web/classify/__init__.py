"""Pixel classification: features per block, the random forest, lazy predictions."""
