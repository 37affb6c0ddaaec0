"""FewShotSeg training: superpixel episodes, pretraining, fold training,
exact-resume checkpoints. Imports its engine and InteractiveRefineLib's core, engine and training."""
