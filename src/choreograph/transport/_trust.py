"""What one service signs with and believes: its signer and its verifier, as one value.

A service signs everything it publishes (except dead letters, which keep the original record's
signature so a redrive is still believed) and checks what it acts on. `Trust.off()` is the
explicit `CHOREO_VERIFY=off`: nothing signed, everything believed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..security._identity import Identity
from ..security._keys import KeyPair
from ..security._policy import Policy, PolicyFile
from ..security._signing import Signer
from ..security._verify import Verifier
from ._keyring import service_key, service_policy, verification_off
from ._port import Producer
from ._signed import SigningProducer

log = logging.getLogger("choreograph.security")

@dataclass(frozen=True)
class Trust:
    """A service's signer and verifier.

    Attributes:
        signer: Signs what the service publishes; None: it publishes unsigned.
        verifier: Checks what it acts on; None: it believes every record (verification off).
    """

    signer: Signer | None
    verifier: Verifier | None

    @classmethod
    def of(cls, key: KeyPair, policy: Policy | PolicyFile) -> Trust:
        """Sign with `key`, believe what `policy` allows; own records read back cost no verification."""
        verifier = Verifier(policy)
        return cls(Signer(key, remember=verifier.remember), verifier)

    @classmethod
    def from_env(cls, identity: Identity) -> Trust:
        """The environment's trust for a service signing as `identity` (see transport._keyring).

        CHOREO_VERIFY=off gives `off()`, and says so at WARNING: the service then acts on any record.

        Raises:
            ConfigurationError: No key for `identity`, or an unreadable policy or key.
        """
        if verification_off():
            log.warning("CHOREO_VERIFY=off: %s signs nothing and acts on unsigned and forged records", identity)
            return cls.off()
        key, policy = service_key(identity), service_policy()
        if policy.current().key(key.key_id) is None:
            # Not an error: the operator may be about to trust it. But say so, or every record
            # this service signs is refused without a word here.
            log.warning("%s signs with key %s, which %s does not trust: services will refuse what it publishes "
                        "until `choreo keys trust` is run", identity, key.key_id, policy.path)
        return cls.of(key, policy)

    @classmethod
    def off(cls) -> Trust:
        """Neither sign nor verify (CHOREO_VERIFY=off)."""
        return cls(None, None)

    @property
    def identity(self) -> Identity | None:
        """Who the service signs as."""
        return None if self.signer is None else self.signer.key.identity

    def producer(self, raw: Producer) -> Producer:
        """`raw`, signing what it sends if the service signs."""
        return raw if self.signer is None else SigningProducer(raw, self.signer)
