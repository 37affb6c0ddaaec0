"""FewShotSeg panel support: the Slicer-free panel controller, propagate_to_3d (InteractiveRefine's "Propagate
to 3D": its 2D box result propagated through the scan as one session step) and slicer_bridge (the one module
that imports Slicer)."""
