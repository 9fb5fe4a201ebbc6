"""tlcore: the transfer-learning studio's core.

Everything the dashboard and the ``python -m tlcore`` CLI do lives here. Nothing in
this package imports streamlit, prints to the screen or plots; it returns models,
DataFrames, Plotly figures and dataclasses. TensorFlow/Keras are imported lazily by
the modules that need them, so importing ``tlcore`` itself is cheap.
"""

__version__ = "0.1.0"
