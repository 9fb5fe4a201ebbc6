"""The model: backbone registry, preprocessing, the classifier, the cut for phase 2, model choices,
and a visitor's model file (checked before it is loaded)."""
