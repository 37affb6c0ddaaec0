"""The FewShotSeg module's Slicer side besides the widget: the parameter node (parameters.py) and the Logic
(logic.py), which converts MRML nodes to a request for the Slicer-free core (FewShotSegLib) and writes the
results back. These import slicer and only load inside Slicer. The module file FewShotSeg.py keeps the module
class, the widget (GUI wiring only) and the self-test."""
