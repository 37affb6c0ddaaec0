"""AdaptiveSeg InteractiveRefine core: box -> CNN segmentation (BIFSeg), Slicer-free.

Imports only numpy, scipy, torch, SimpleITK and pip packages; `slicer_bridge` is the one module
that talks to 3D Slicer.
"""
__version__ = "0.1.0"
