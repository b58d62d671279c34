"""Reading a service's metrics endpoint as Prometheus does, and free ports to serve them on."""

from __future__ import annotations

import random
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]
"""One sample of a scrape: its name (with `_total`, `_count`, `_bucket`...), labels and value."""


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that nothing listens on now."""
    while True:
        base = random.randrange(20_000, 60_000)
        sockets = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()


def scrape(port: int) -> list[Sample]:
    """Every sample the endpoint on 127.0.0.1:`port` shows now (none if it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return []
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(value for sample, shown, value in samples
               if sample == name and all(shown.get(k) == v for k, v in labels.items()))
