"""AdaptiveSeg FewShotSeg core: segment a new organ in a whole volume from one annotated support slice.

RP-Net (recurrent prototypical refinement, Tang et al. ICCV 2021) trained episodically with superpixel
self-supervision, optional exemplar adaptation (ELSNet, En and Guo BMVC 2022), and the CHAOS protocol.
Shared I/O, geometry, device choice, model checks and metrics live in InteractiveRefineLib.
"""
__version__ = "0.2.0"
