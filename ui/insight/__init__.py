"""The insight sections of the Data, Train and Evaluate pages, and what they share (``common``).

A section renders one ``tlcore.insight`` analysis. Every Evaluate section takes ``(run)``.
"""
