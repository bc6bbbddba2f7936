"""The hub/lab URL space that confines redirects and the token."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nublado_sync._http import URLSpace


def test_plain_space() -> None:
    space = URLSpace("https://data.example.org/nb/", "alice")
    assert space.name_of("https://data.example.org/nb/hub/home") == "hub"
    assert space.name_of("https://data.example.org/nb/user/alice/lab") == "lab"
    assert space.lab_url == "https://data.example.org/nb/user/alice/"
    assert space.name_of("https://data.example.org/other") is None
    assert space.name_of("https://data.example.org.evil.com/nb/hub/home") is None
    assert space.name_of("http://data.example.org/nb/hub/home") is None


def test_subdomain_is_learned() -> None:
    space = URLSpace("https://nb.example.org/", "alice")
    lab = "https://alice.nb.example.org/user/alice/lab"
    assert space.name_of(lab) == "lab"
    assert space.name_of("https://bob.nb.example.org/user/bob/lab") is None
    assert space.name_of("https://alice.nb.example.org/hub/home") is None
    space.learn(lab)
    assert space.lab_url == "https://alice.nb.example.org/user/alice/"
    space.learn("https://evil.example.com/user/alice/")
    assert space.lab_url == "https://alice.nb.example.org/user/alice/"
    space.reset()
    assert space.lab_url == "https://nb.example.org/user/alice/"


@given(st.text(max_size=80))
def test_anything_outside_is_refused(suffix: str) -> None:
    space = URLSpace("https://nb.example.org/", "alice")
    url = "https://nb.example.org.attacker.net/" + suffix
    assert space.name_of(url) is None
    space.learn(url)
    assert space.lab_base is None
