"""The test kit's keys: one for every party of its workflows, and the policy that trusts them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..events._envelope import AGENT_SOURCE_PREFIX, COORDINATOR_SOURCE, RESTORE_SOURCE
from ..runtime._agent import Agent
from ..security._identity import COORDINATOR as COORDINATOR_IDENTITY
from ..security._identity import Identity
from ..security._keys import KeyPair
from ..security._policy import Policy, PolicyFile, write_policy
from ..transport._trust import Trust

PUBLISHER = Identity.parse("publisher:testing")
OPERATOR = Identity.parse("operator:testing")


def claimed(source: str) -> Identity:
    """The party a source names: the coordinator, an agent, the operator (restores), else the kit's publisher."""
    if source == COORDINATOR_SOURCE:
        return COORDINATOR_IDENTITY
    if source == RESTORE_SOURCE:
        return OPERATOR
    if source.startswith(AGENT_SOURCE_PREFIX):
        workflow, _, step = source.removeprefix(AGENT_SOURCE_PREFIX).partition("/")
        return Identity.agent(workflow, step)
    return PUBLISHER


class Keys:
    """A key for every party of a kit's workflows, and the policy file that trusts them.

    A file (in a temporary directory, removed by `close`), read again on every check: a party a
    test adds later (an agent announced by hand) is believed by services already running, as a
    policy file an operator edits is.

    Args:
        agents: The kit's agents; the coordinator, `publisher:testing` (any workflow) and
            `operator:testing` get keys too.
    """

    def __init__(self, agents: tuple[Agent, ...]) -> None:
        parties = [COORDINATOR_IDENTITY, PUBLISHER, OPERATOR,
                   *(Identity.agent(a.workflow, a.step) for a in agents)]
        self.pairs = {identity: KeyPair.generate(identity) for identity in parties}
        policy = Policy()
        for identity, pair in self.pairs.items():
            policy = policy.trust(identity, pair.public, now_ms=0)
        self.policy = policy
        self._dir = Path(tempfile.mkdtemp(prefix="choreo-kit-"))
        write_policy(self._dir / "policy.json", policy)
        self.file = PolicyFile(self._dir / "policy.json", every_s=0.0)

    def trust(self, identity: Identity) -> Trust:
        """What a service of `identity` signs with and believes (a key is made for a party not known yet)."""
        if identity not in self.pairs:
            self.pairs[identity] = KeyPair.generate(identity)
            self.policy = self.policy.trust(identity, self.pairs[identity].public, now_ms=0)
            write_policy(self.file.path, self.policy)
        return Trust.of(self.pairs[identity], self.file)

    def close(self) -> None:
        """Remove the policy file."""
        shutil.rmtree(self._dir, ignore_errors=True)
