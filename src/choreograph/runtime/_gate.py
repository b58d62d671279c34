"""What an agent acts on is checked here: signed by a trusted key of a party allowed to say it.

Only records the agent would act on are checked (its inputs, compensation requests for its step,
outcomes, the coordinator's timeouts of its step, restore markers, and its own tracking records);
the rest of the topic is skipped by its headers before any signature is looked at. A refused
record is logged with the reason (naming the signer and what it may not say) and never acted on.
It is not dead-lettered here: every agent of the workflow would write its own copy. The
coordinator reads every record and dead-letters it once. Without a verifier (CHOREO_VERIFY=off)
every record passes.
"""

from __future__ import annotations

import logging

from ..events._envelope import Envelope
from ..security._identity import Identity
from ..security._verify import Rejected, Verifier
from ..transport._port import Record

log = logging.getLogger("choreograph.security")


class Gate:
    """One agent's check of the records it acts on.

    Args:
        verifier: The agent's verifier; None: every record passes.
        name: The agent's name (for logs).

    Attributes:
        refused: Records refused so far.
    """

    __slots__ = ("_name", "_verifier", "refused")

    def __init__(self, verifier: Verifier | None, name: str) -> None:
        self._verifier = verifier
        self._name = name
        self.refused = 0

    def refusal(self, record: Record, envelope: Envelope | None = None) -> Rejected | None:
        """Why the service must not act on `record`; None if it may (or nothing is verified)."""
        verdict = self.check(record, envelope)
        return verdict if isinstance(verdict, Rejected) else None

    def check(self, record: Record, envelope: Envelope | None = None) -> Identity | Rejected | None:
        """Who signed `record` if they may say what it says, or why not; None if nothing is verified."""
        verifier = self._verifier
        if verifier is None:
            return None
        verdict = verifier.admit_record(record.key, record.value, record.headers, record.timestamp, envelope)
        if isinstance(verdict, Rejected):
            self.refused += 1
            log.warning("%s: refusing %s[%d]@%d: %s", self._name, record.topic, record.partition, record.offset,
                        verdict)
            return verdict
        return verdict

    def believed(self, record: Record) -> bool:
        """Whether `record` may be acted on (see refusal)."""
        return self._verifier is None or self.refusal(record) is None
