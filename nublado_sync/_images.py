"""Lab image choices and the spawn form fields they become."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict

from ._exceptions import NubladoUsageError

__all__ = [
    "NubladoImage",
    "NubladoImageByClass",
    "NubladoImageByReference",
    "NubladoImageByTag",
    "NubladoImageClass",
    "NubladoImageSize",
]


class NubladoImageClass(str, Enum):
    """Classes of lab images Nublado can choose from."""

    RECOMMENDED = "recommended"
    """The recommended image."""

    LATEST_RELEASE = "latest-release"
    """The latest release image."""

    LATEST_WEEKLY = "latest-weekly"
    """The latest weekly image."""

    LATEST_DAILY = "latest-daily"
    """The latest daily image."""


class NubladoImageSize(str, Enum):
    """Lab sizes; the value is what the spawn form takes."""

    Fine = "Fine"
    """Fine."""

    Diminutive = "Diminutive"
    """Diminutive."""

    Tiny = "Tiny"
    """Tiny."""

    Small = "Small"
    """Small."""

    Medium = "Medium"
    """Medium."""

    Large = "Large"
    """Large, the default."""

    Huge = "Huge"
    """Huge."""

    Gargantuan = "Gargantuan"
    """Gargantuan."""

    Colossal = "Colossal"
    """Colossal."""


def _coerce(enum: Any, value: Any, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise NubladoUsageError(f"Unknown {what} {value!r}; expected one of {choices}") from None


class NubladoImage:
    """Base of the image choices `NubladoClient.spawn_lab` accepts."""

    size: NubladoImageSize
    debug: bool

    def to_spawn_form(self) -> Dict[str, str]:
        """Return the fields of the hub's spawn form for this choice.

        Returns
        -------
        dict of str to str
            Form fields.
        """
        form = self._image_fields()
        form["size"] = self.size.value
        if self.debug:
            form["enable_debug"] = "true"
        return form

    def _image_fields(self) -> Dict[str, str]:
        raise NotImplementedError

    def _check(self) -> None:
        # Frozen dataclasses: normalise through object.__setattr__. Strings
        # are accepted for the enums, as the spawn form takes them.
        object.__setattr__(self, "size", _coerce(NubladoImageSize, self.size, "size"))
        object.__setattr__(self, "debug", bool(self.debug))


@dataclass(frozen=True)
class NubladoImageByClass(NubladoImage):
    """An image chosen by its class, such as the recommended one.

    Parameters
    ----------
    image_class
        Which class of image.
    size
        Size of the lab.
    debug
        Whether to turn on debugging in the lab.

    Raises
    ------
    NubladoUsageError
        An unknown class or size.
    """

    image_class: NubladoImageClass = NubladoImageClass.RECOMMENDED
    size: NubladoImageSize = NubladoImageSize.Large
    debug: bool = False

    def __post_init__(self) -> None:
        self._check()
        image_class = _coerce(NubladoImageClass, self.image_class, "image class")
        object.__setattr__(self, "image_class", image_class)

    def _image_fields(self) -> Dict[str, str]:
        return {"image_class": self.image_class.value}


@dataclass(frozen=True)
class NubladoImageByTag(NubladoImage):
    """An image chosen by its tag.

    Parameters
    ----------
    tag
        Image tag, such as ``w_2026_40``.
    size
        Size of the lab.
    debug
        Whether to turn on debugging in the lab.

    Raises
    ------
    NubladoUsageError
        An empty tag or an unknown size.
    """

    tag: str
    size: NubladoImageSize = NubladoImageSize.Large
    debug: bool = False

    def __post_init__(self) -> None:
        self._check()
        if not self.tag:
            raise NubladoUsageError("An image tag is required")

    def _image_fields(self) -> Dict[str, str]:
        return {"image_tag": self.tag}


@dataclass(frozen=True)
class NubladoImageByReference(NubladoImage):
    """An image chosen by its full Docker reference.

    Parameters
    ----------
    reference
        Full image reference, such as ``ghcr.io/lsst-sqre/sciplat-lab:w_2026_40``.
    size
        Size of the lab.
    debug
        Whether to turn on debugging in the lab.

    Raises
    ------
    NubladoUsageError
        An empty reference or an unknown size.
    """

    reference: str
    size: NubladoImageSize = NubladoImageSize.Large
    debug: bool = False

    def __post_init__(self) -> None:
        self._check()
        if not self.reference:
            raise NubladoUsageError("An image reference is required")

    def _image_fields(self) -> Dict[str, str]:
        return {"image_list": self.reference}
