"""FewShotSeg engine: RP-Net and its model files, slices, support/query segmentation, registration, query range,
propagation, exemplar adaptation (with its augmentation and losses), intensity checks.
Imports InteractiveRefineLib.core and .engine only."""
