"""Training: the trainer (head phase, fine-tune phase), the feature cache (the one owner of its
file format) and extraction ahead of training (here or on Ray Data), the head engine, the
kept-weights report, callbacks, the device strategy, the head-settings sweep and the background
launchers."""
