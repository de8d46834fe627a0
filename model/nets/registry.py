"""The implementations of ``MODEL.FUSE.TYPE``: one per name of ``schemas.fuse_types`` (timm's
``register_model`` pattern, with the names kept in schemas so a config validates without torch).

``register_fuse_type(name)`` decorates a function ``(channels, heads) -> fusion module`` for one scale and
records it with the spike head class the type adds (or None); a name the schema does not list, or one
registered twice, is an error at import. ``check_registered()`` (called once the registrations in
``model.nets.integrate_vrt`` have run) fails the import when a listed name has no implementation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from schemas.fuse_types import FUSE_TYPE_INFO, FUSE_TYPES, FuseTypeInfo


@dataclass(frozen=True)
class FuseType:
    """A registered ``MODEL.FUSE.TYPE``: ``fuse(channels, heads)`` builds the fusion of one scale;
    ``head(spike_channels, num_bins, head_channels)`` the spike head added to VRT's output (None: no head)."""

    info: FuseTypeInfo
    fuse: Callable[[int, int], nn.Module]
    head: Callable[[int, int, int], nn.Module] | None


_REGISTRY: dict[str, FuseType] = {}


def register_fuse_type(name: str, *, head: Callable[[int, int, int], nn.Module] | None = None):
    """Decorator: the decorated ``(channels, heads) -> nn.Module`` builds ``name``'s fusion at one scale, and
    ``head`` is the spike head class it adds. Raises ``ValueError`` for a name ``schemas.fuse_types`` does not
    list (add it there first) or one already registered."""
    if name not in FUSE_TYPE_INFO:
        raise ValueError(f"register_fuse_type({name!r}): not a name of schemas.fuse_types.FUSE_TYPE_INFO; list "
                         f"it there first (known: {', '.join(FUSE_TYPES)})")
    if name in _REGISTRY:
        raise ValueError(f"register_fuse_type({name!r}): registered twice")

    def register(fuse: Callable[[int, int], nn.Module]) -> Callable[[int, int], nn.Module]:
        _REGISTRY[name] = FuseType(FUSE_TYPE_INFO[name], fuse, head)
        return fuse

    return register


def check_registered() -> None:
    """Raise ``ImportError`` if a name of ``schemas.fuse_types`` has no registered implementation."""
    missing = [n for n in FUSE_TYPES if n not in _REGISTRY]
    disagree = [n for n, t in _REGISTRY.items() if (t.head is not None) != t.info.head]
    if disagree:
        raise ImportError(f"MODEL.FUSE.TYPE {disagree}: schemas/fuse_types.py's `head` disagrees with the spike head "
                          "registered in model/nets/integrate_vrt.py")
    if missing:
        raise ImportError(f"MODEL.FUSE.TYPE {missing} listed in schemas/fuse_types.py but not registered in "
                          "model/nets/integrate_vrt.py")


def fuse_type(name: str) -> FuseType:
    """The registered implementation of ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown MODEL.FUSE.TYPE {name!r}; choose one of {list(FUSE_TYPES)}")
    return _REGISTRY[name]
