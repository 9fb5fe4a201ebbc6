"""Training: the trainer (head phase, fine-tune phase), the feature cache, the head engine,
callbacks, the device strategy, the head-settings sweep and the background launchers."""
