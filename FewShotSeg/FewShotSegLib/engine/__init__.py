"""FewShotSeg engine: RP-Net and its model files, slices, support/query segmentation, registration, query range,
propagation, exemplar adaptation (with its augmentation and losses), intensity checks, the CHAOS protocol
(folds, groups, the support chunks the automatic query range uses).
Imports InteractiveRefineLib.core and .engine only."""
