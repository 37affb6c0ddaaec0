"""The InteractiveRefine module's Slicer side besides the widget: the parameter node (parameters.py) and the
Logic (logic.py), which converts MRML nodes to the core's arrays and back and drives the RefineController.
These import slicer and only load inside Slicer; the Slicer-free core is InteractiveRefineLib. The module
file InteractiveRefine.py keeps the module class, the widget (GUI wiring only) and the self-test."""
