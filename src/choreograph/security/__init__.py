"""Signed events and who may say what: identities, keys, the policy file, signing and verifying.

Pure: no broker client. The services sign what they publish (Signer) and check what they act on
(Verifier.admit); `choreo keys` manages keys and the policy.
"""

from ._identity import COORDINATOR, Identity, Role, may_announce, may_publish
from ._keys import KeyPair, key_id, parse_public, public_text
from ._local import key_path, local_key
from ._policy import Entry, Policy, PolicyFile, TrustedKey, write_policy
from ._signing import KEY_ID_HEADER, SIGNATURE_HEADER, Signer, signed_message
from ._verify import Rejected, Verifier

__all__ = [
    "COORDINATOR",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "Entry",
    "Identity",
    "KeyPair",
    "Policy",
    "PolicyFile",
    "Rejected",
    "Role",
    "Signer",
    "TrustedKey",
    "Verifier",
    "key_id",
    "key_path",
    "local_key",
    "may_announce",
    "may_publish",
    "parse_public",
    "public_text",
    "signed_message",
    "write_policy",
]
