"""Errors raised by :mod:`aln.preprocessing`.

Every error about a request's input is a :class:`PreprocessingError` (itself a
:class:`ValueError`), so the Triton adapter answers any of them with INVALID_ARG and the CLI with
exit status 2. Faults of the configuration (crop spec, clinical schema, manifest) are
:class:`ConfigurationError`: they stop a model from loading instead. Messages name the
DICOM tag and keyword or the argument, the offending value, and what is allowed.
"""

from __future__ import annotations


class PreprocessingError(ValueError):
    """Root of every error about the input to preprocessing."""


class InvalidDicomError(PreprocessingError):
    """Not a readable DICOM object, or a required attribute is missing or malformed."""


class UnsupportedImageError(PreprocessingError):
    """A valid DICOM object that this model cannot use (SOP class, intent, colour, frames)."""


class SpacingError(PreprocessingError):
    """No usable physical pixel spacing, or an implausible one."""


class OrientationError(PreprocessingError):
    """Laterality or view missing or contradictory, with no caller override."""


class RegionError(PreprocessingError):
    """A lesion centre or bounding box that is not finite, inverted, or outside the image."""


class InvalidRequestError(PreprocessingError):
    """A request whose tensors or options are malformed (wrong shape, unknown option)."""


class ClinicalRecordError(PreprocessingError):
    """A clinical record that does not match the schema.

    Attributes:
        field: Name of the offending field (``None`` for a record-level problem).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ResourceLimitError(PreprocessingError):
    """An input beyond the configured size limits (compressed bytes, rows x columns x frames)."""


class ConfigurationError(ValueError):
    """A setting, schema or manifest that is invalid: the deployment's fault, not a request's.

    Deliberately not a :class:`PreprocessingError`: a served model refuses to load with it
    rather than answering requests with INVALID_ARG, and the command line reports it as a bad
    argument (exit status 2) naming the setting.
    """


class ManifestError(ConfigurationError):
    """A checkpoint manifest that is missing, malformed or disagrees with this code."""


def is_fatal(exc: BaseException) -> bool:
    """Whether an exception must propagate: interpreter exits and Ctrl-C, not decoder failures.

    Codecs written in Rust (pylibjpeg-rle, through pyo3) report corrupt data with a
    ``PanicException`` that derives from :class:`BaseException`, so decoder guards catch
    ``BaseException`` and re-raise only what this returns True for.
    """
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def tag_label(tag: int) -> str:
    """Format a tag the way pydicom's messages do: ``(0028,0101) 'Bits Stored'``.

    Args:
        tag: The tag as a 32-bit integer, e.g. ``0x00280101``.
    """
    from pydicom.datadict import dictionary_description  # deferred: errors stay cheap to import

    try:
        name = dictionary_description(tag)
    except KeyError:
        name = "Unknown"
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) '{name}'"
