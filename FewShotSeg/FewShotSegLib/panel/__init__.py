"""FewShotSeg panel support: the Slicer-free panel controller and slicer_bridge (the one module that imports
Slicer)."""
