"""Slicer panel support: the refine controller (panel state machine over the compute process), settings,
segment names, RAS<->IJK for ROIs and slice views, extent updates, sample scenes, dependency checks, and
slicer_bridge, the one module that imports Slicer. Imports core, engine and compute."""
