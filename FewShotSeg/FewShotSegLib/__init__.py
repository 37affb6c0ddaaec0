"""AdaptiveSeg FewShotSeg core (skeleton): few-shot segmentation from one annotated support slice.

The recurrent prototypical network (RP-Net) and exemplar adaptation (ELSNet) come in a later version;
shared I/O, geometry, device choice, logging and metrics live in InteractiveRefineLib.
"""
__version__ = "0.1.0"
