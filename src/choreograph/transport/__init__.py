"""The only code that talks to a broker: settings and broker profiles, the Kafka client factory,
offsets and commit pins, dead letters, the registry of step contracts, restore brackets, the
group-member lifecycle and the embedded Tansu broker.

Importing this package loads no aiokafka; names backed by aiokafka load it on first use.
"""

from typing import TYPE_CHECKING, Any

from ._settings import PROFILES, BrokerProfile, Settings

if TYPE_CHECKING:
    from ._broker import EmbeddedBroker, LocalBroker, terminate
    from ._kafka import Kafka
    from ._registry import Contracts, Registry, announce, framework_store

_LAZY = {"EmbeddedBroker": "._broker", "LocalBroker": "._broker", "terminate": "._broker", "Kafka": "._kafka",
         "announce": "._registry", "framework_store": "._registry", "Registry": "._registry",
         "Contracts": "._registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # deferred: only a caller that needs a broker client pays for aiokafka

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROFILES",
    "BrokerProfile",
    "Contracts",
    "EmbeddedBroker",
    "Kafka",
    "LocalBroker",
    "Registry",
    "Settings",
    "announce",
    "framework_store",
    "terminate",
]
