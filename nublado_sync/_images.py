"""Lab image choices, the spawn form fields they become, and their stored shape.

The stored shape is the one ``rubin-nublado-client``'s pydantic models read
and write (``model_dump(mode="json")``), so image choices kept in JSON or
YAML configuration for it load here unchanged: ``{"image_class":
"recommended", "size": "Large", "debug": false}``, ``{"image_class":
"by-tag", "tag": "w_2026_40"}``, ``{"image_class": "by-reference",
"reference": "..."}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Mapping, Tuple, Type, TypeVar

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

    BY_REFERENCE = "by-reference"
    """The ``image_class`` of `NubladoImageByReference`, as upstream (the
    spawn form has no such class)."""

    BY_TAG = "by-tag"
    """The ``image_class`` of `NubladoImageByTag`, as upstream (the spawn
    form has no such class)."""


SPAWN_FORM_CLASSES: Tuple[NubladoImageClass, ...] = (
    NubladoImageClass.RECOMMENDED,
    NubladoImageClass.LATEST_RELEASE,
    NubladoImageClass.LATEST_WEEKLY,
    NubladoImageClass.LATEST_DAILY,
)
"""The classes `NubladoImageByClass` takes (the spawn form's)."""

_I = TypeVar("_I", bound="NubladoImage")


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

    image_class: NubladoImageClass
    size: NubladoImageSize
    debug: bool

    @classmethod
    def from_dict(cls: Type[_I], data: Mapping[str, Any]) -> _I:
        """Read an image choice in ``rubin-nublado-client``'s stored shape.

        ``image_class`` (or ``class``) says which choice it is:
        ``by-tag`` with ``tag``, ``by-reference`` with ``reference``, or a
        class of the spawn form. When it is missing, a ``tag`` or
        ``reference`` key decides, else it is the recommended image.
        ``size`` (a size name) and ``debug`` are optional. Called on a
        subclass, the data must describe that kind of choice.

        Parameters
        ----------
        data
            The mapping, as loaded from JSON or YAML.

        Returns
        -------
        NubladoImage
            A `NubladoImageByClass`, `NubladoImageByTag` or
            `NubladoImageByReference`.

        Raises
        ------
        NubladoUsageError
            The data is not an image choice: not a mapping, an unknown key,
            class or size, a missing tag or reference, or the wrong kind for
            the subclass it was read with.
        """
        image = _from_dict(data)
        if not isinstance(image, cls):
            raise NubladoUsageError(
                f"{cls.__name__} cannot hold an image chosen by {image.image_class.value}"
            )
        return image

    @classmethod
    def model_validate(cls: Type[_I], data: Mapping[str, Any]) -> _I:
        """Read an image choice: `from_dict` under its pydantic name.

        Parameters
        ----------
        data
            The mapping.

        Returns
        -------
        NubladoImage
            The image choice.

        Raises
        ------
        NubladoUsageError
            The data is not an image choice.
        """
        return cls.from_dict(data)

    def to_dict(self) -> Dict[str, Any]:
        """Return the choice in ``rubin-nublado-client``'s stored shape.

        What its ``model_dump(mode="json")`` gives: ``image_class``, the
        tag or reference when there is one, ``size`` and ``debug``; ready
        for JSON or YAML, and read back by `from_dict`.

        Returns
        -------
        dict
            The choice as plain values.
        """
        data: Dict[str, Any] = {"image_class": self.image_class.value}
        data.update(self._own_fields())
        data["size"] = self.size.value
        data["debug"] = self.debug
        return data

    def model_dump(self, *, mode: str = "json") -> Dict[str, Any]:
        """Return the choice as plain values: `to_dict` under its pydantic name.

        Parameters
        ----------
        mode
            Only ``json`` (and ``python``, which gives the same plain
            values here).

        Returns
        -------
        dict
            The choice as plain values.

        Raises
        ------
        NubladoUsageError
            Another mode.
        """
        if mode not in ("json", "python"):
            raise NubladoUsageError(f"model_dump mode must be json or python, not {mode!r}")
        return self.to_dict()

    def _own_fields(self) -> Dict[str, Any]:
        return {}

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
        if image_class not in SPAWN_FORM_CLASSES:
            choices = ", ".join(c.value for c in SPAWN_FORM_CLASSES)
            raise NubladoUsageError(
                f"Image class {image_class.value!r} needs NubladoImageByTag or"
                f" NubladoImageByReference; NubladoImageByClass takes one of {choices}"
            )
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
    image_class: NubladoImageClass = field(default=NubladoImageClass.BY_TAG, init=False)

    def __post_init__(self) -> None:
        self._check()
        if not self.tag or not isinstance(self.tag, str):
            raise NubladoUsageError("An image tag is required")

    def _image_fields(self) -> Dict[str, str]:
        return {"image_tag": self.tag}

    def _own_fields(self) -> Dict[str, Any]:
        return {"tag": self.tag}


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
    image_class: NubladoImageClass = field(default=NubladoImageClass.BY_REFERENCE, init=False)

    def __post_init__(self) -> None:
        self._check()
        if not self.reference or not isinstance(self.reference, str):
            raise NubladoUsageError("An image reference is required")

    def _image_fields(self) -> Dict[str, str]:
        return {"image_list": self.reference}

    def _own_fields(self) -> Dict[str, Any]:
        return {"reference": self.reference}


_KINDS: Dict[NubladoImageClass, Tuple[Type[NubladoImage], str]] = {
    NubladoImageClass.BY_TAG: (NubladoImageByTag, "tag"),
    NubladoImageClass.BY_REFERENCE: (NubladoImageByReference, "reference"),
}


def _from_dict(data: Mapping[str, Any]) -> NubladoImage:
    if not isinstance(data, Mapping):
        raise NubladoUsageError(f"An image choice must be a mapping, not {type(data).__name__}")
    values = dict(data)
    if "class" in values:
        if "image_class" in values:
            raise NubladoUsageError("An image choice has both class and image_class")
        values["image_class"] = values.pop("class")
    if "image_class" in values:
        image_class = _coerce(NubladoImageClass, values.pop("image_class"), "image class")
    elif "reference" in values:
        image_class = NubladoImageClass.BY_REFERENCE
    elif "tag" in values:
        image_class = NubladoImageClass.BY_TAG
    else:
        image_class = NubladoImageClass.RECOMMENDED
    kind, key = _KINDS.get(image_class, (NubladoImageByClass, ""))
    allowed = {"size", "debug", key} if key else {"size", "debug"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise NubladoUsageError(
            f"Unknown key {', '.join(map(repr, unknown))} in an image chosen by"
            f" {image_class.value}; expected {', '.join(sorted(allowed | {'image_class'}))}"
        )
    if key and key not in values:
        raise NubladoUsageError(f"An image chosen by {image_class.value} needs a {key!r}")
    debug = values.pop("debug", False)
    if not isinstance(debug, bool):
        raise NubladoUsageError(f"debug must be true or false, not {debug!r}")
    if kind is NubladoImageByTag:
        return NubladoImageByTag(debug=debug, **values)
    if kind is NubladoImageByReference:
        return NubladoImageByReference(debug=debug, **values)
    return NubladoImageByClass(image_class, debug=debug, **values)
