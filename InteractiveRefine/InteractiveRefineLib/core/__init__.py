"""The shared core of both modules (FewShotSegLib takes it from here): image I/O with its geometry, crop/paste
and resampling, prompts (boxes), errors, atomic writes, output checks, device choice, torch threads, the
interaction log and its timing, Dice, the Decathlon dataset reader, the embedded sample, the worker thread.
Imports nothing from the other layers."""
