"""The segmentation engine: networks and their model files, box inference, scribbles, CRF (capped for large
regions), image-specific fine-tuning, the interactive session with undo/redo, memory estimates.
Imports only core."""
