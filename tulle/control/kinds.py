"""Kind names as users type them on the command line: ``virtualservice``, ``vs``, ``dr``..."""

from __future__ import annotations

from tulle.api.kinds import KINDS

_ALIASES = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "se": "ServiceEntry",
    "pa": "PeerAuthentication",
    "ap": "AuthorizationPolicy",
    "hr": "HTTPRoute",
}


def canonical_kind(text: str) -> str | None:
    """The kind ``text`` names (case-insensitive, singular or plural, or a short alias)."""
    lowered = text.lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    for model in KINDS:
        name = model.KIND.lower()
        if lowered in (name, name + "s", name + "es"):
            return model.KIND
        if name.endswith("y") and lowered == name[:-1] + "ies":
            return model.KIND
    return None


def kind_names() -> list[str]:
    """Every kind, for error messages."""
    return sorted(model.KIND for model in KINDS)
