"""A public saga test kit: run your agents and the real coordinator on the in-memory log.

No broker and no processes: a test publishes goals (`given_goal`), injects faults (`crash`,
`restart`, `duplicate`, `hold_back`) and checks what a user would notice (`expect_outcome`,
`emitted`, `handler_runs`, `idle`). See README, "Testing your agents".
"""

from ._kit import COORDINATOR, Crash, KitError, SagaKit

__all__ = ["COORDINATOR", "Crash", "KitError", "SagaKit"]
