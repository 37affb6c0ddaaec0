"""Project exceptions: every user-facing failure is one of these, with a message naming the problem."""


class AdaptiveSegError(Exception):
    """Base class of all AdaptiveSeg errors."""


class ImageError(AdaptiveSegError, ValueError):
    """An image or label map that cannot be used (wrong dimension, channels, NaN/Inf, shape mismatch)."""


class PromptError(AdaptiveSegError, ValueError):
    """A box (or other prompt) that is empty, outside the image or too small."""


class ModelError(AdaptiveSegError):
    """A model file that is missing, corrupted (checksum) or does not match its manifest."""


class DatasetError(AdaptiveSegError, ValueError):
    """A dataset folder, dataset.json, split file or label id that cannot be used."""


class CancelledError(AdaptiveSegError):
    """A long call was cancelled by the user."""


class OutputError(AdaptiveSegError, ValueError):
    """An output path that cannot be written: a file where a folder is needed, read-only, one of the inputs."""


class ResourceError(AdaptiveSegError, MemoryError):
    """A request that would need more memory than the machine has; refused before computing."""
