"""Predictions on new images: one at a time with Grad-CAM, in batches (here or on Ray), and
the not-a-photo check."""
