"""GUI helpers both panels (InteractiveRefine, FewShotSeg) share; Slicer side (qt, slicer)."""
import contextlib
import logging

import qt
import slicer


@contextlib.contextmanager
def guarded(message, setStatus, updateButtons, name, waitCursor=False):
    """Run a GUI action: an error shows one dialog (nested actions do not add a second one, as
    slicer.util.tryWithErrorDisplay, which re-raises, would: the code after its block is skipped and an
    enclosing handler shows another), is logged under `name`, said through `setStatus`, and the buttons are
    updated (`updateButtons`) in any case."""
    if waitCursor:
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    except Exception as exc:
        logging.exception("%s: %s", name, message)
        if waitCursor:
            qt.QApplication.restoreOverrideCursor()
            waitCursor = False
        setStatus(f"{message} {exc}")
        slicer.util.errorDisplay(f"{message}\n\n{exc}")
    finally:
        if waitCursor:
            qt.QApplication.restoreOverrideCursor()
        updateButtons()
