"""How clients authenticate to and encrypt traffic with a real cluster: TLS and SASL settings.

Read from CHOREO_KAFKA_* variables and validated once at start (a bad value is one line naming the
variable, the value and what is expected; a password is never quoted). `connection_options` is the
one place that turns Settings into aiokafka's connection keyword arguments, for every producer,
consumer and admin client.

Hook for the project file (a later change): `KafkaSecurity.from_env` is the only reader; a file
source would build the same value, with the environment winning, and report its own sources.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ._variables import env as _env
from ._variables import shown as _shown

if TYPE_CHECKING:
    from ._settings import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What aiokafka speaks without extra packages; GSSAPI and OAUTHBEARER need more than a variable.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDACTED = "***"

# Field name -> variable. The order is the order `choreo config` shows them in.
VARIABLES = {
    "protocol": "CHOREO_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "CHOREO_KAFKA_SASL_MECHANISM",
    "sasl_username": "CHOREO_KAFKA_SASL_USERNAME",
    "sasl_password": "CHOREO_KAFKA_SASL_PASSWORD",
    "ssl_cafile": "CHOREO_KAFKA_SSL_CAFILE",
    "ssl_certfile": "CHOREO_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "CHOREO_KAFKA_SSL_KEYFILE",
    "ssl_key_password": "CHOREO_KAFKA_SSL_KEY_PASSWORD",
}
SECRETS = frozenset({"sasl_password", "ssl_key_password"})


@dataclass(frozen=True, repr=False)
class KafkaSecurity:
    """Transport security towards the cluster; the default is PLAINTEXT with nothing else.

    Attributes:
        protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
        sasl_mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only).
        sasl_username: The SASL user.
        sasl_password: The SASL password; never shown by repr or str.
        ssl_cafile: PEM file of the CAs to trust; the system's when None.
        ssl_certfile: PEM file of the client certificate (mutual TLS).
        ssl_keyfile: PEM file of the client certificate's key, if not in ssl_certfile.
        ssl_key_password: The key file's password; never shown by repr or str.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = None

    @property
    def uses_sasl(self) -> bool:
        """Whether the protocol authenticates with SASL."""
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        """Whether the protocol encrypts with TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    def shown(self) -> dict[str, str | None]:
        """Each field's value as it may be printed: a set secret is `***`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: REDACTED if name in SECRETS and value is not None else value for name, value in values.items()}

    def __repr__(self) -> str:
        # The dataclass repr would print the passwords into any log line or traceback that shows Settings.
        inner = ", ".join(f"{name}={value!r}" for name, value in self.shown().items() if value is not None)
        return f"KafkaSecurity({inner})"

    def ssl_context(self) -> ssl.SSLContext:
        """A new client TLS context with the CA file, certificate and key loaded (aiokafka's helper).

        Made per client rather than cached, so a rotated certificate is picked up by new clients.

        Returns:
            The context.
        """
        from aiokafka.helpers import create_ssl_context  # deferred: Settings (and the CLI) load no aiokafka

        context: ssl.SSLContext = create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile,
                                                     keyfile=self.ssl_keyfile, password=self.ssl_key_password)
        return context

    def options(self) -> dict[str, Any]:
        """Aiokafka's security keyword arguments (no more than the protocol for PLAINTEXT).

        Returns:
            security_protocol, and sasl_mechanism, sasl_plain_username, sasl_plain_password and
            ssl_context where the protocol uses them.
        """
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            # aiokafka takes the same two arguments for PLAIN and SCRAM.
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        return options

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        """The CHOREO_KAFKA_* variables, validated (an empty variable counts as unset).

        Returns:
            The security settings.

        Raises:
            ConfigurationError: A value cannot work, or a variable is set that its protocol does not
                use (a forgotten CHOREO_KAFKA_SECURITY_PROTOCOL would otherwise connect in plain text):
                one line naming it, its value (never a password's) and what is expected.
        """
        raw = {name: _env(variable) for name, variable in VARIABLES.items()}
        protocol = (raw["protocol"] or "PLAINTEXT").upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(f"CHOREO_KAFKA_SECURITY_PROTOCOL={_shown(raw['protocol'] or '')}: expected one "
                                     f"of: {', '.join(SECURITY_PROTOCOLS)}")
        security = cls(protocol=protocol, **{k: v for k, v in raw.items() if k != "protocol"})
        security._check_unused()
        if security.uses_sasl:
            security = security._checked_sasl()
        if security.uses_ssl:
            security._check_ssl()
        return security

    def _check_unused(self) -> None:
        sasl = ("sasl_mechanism", "sasl_username", "sasl_password")
        tls = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
        for name, used, protocols in ((sasl, self.uses_sasl, "SASL_PLAINTEXT or SASL_SSL"),
                                      (tls, self.uses_ssl, "SSL or SASL_SSL")):
            for field_name in name:
                value = getattr(self, field_name)
                if value is not None and not used:
                    quoted = "" if field_name in SECRETS else f"={_shown(value)}"
                    raise ConfigurationError(f"{VARIABLES[field_name]}{quoted}: expected only with "
                                             f"CHOREO_KAFKA_SECURITY_PROTOCOL {protocols} (it is {self.protocol})")

    def _checked_sasl(self) -> KafkaSecurity:
        mechanism = (self.sasl_mechanism or "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(f"CHOREO_KAFKA_SASL_MECHANISM={_shown(self.sasl_mechanism or '')}: expected one "
                                     f"of: {', '.join(SASL_MECHANISMS)}")
        for name in ("sasl_username", "sasl_password"):
            if getattr(self, name) is None:
                raise ConfigurationError(f"{VARIABLES[name]} is unset: expected a value with "
                                         f"CHOREO_KAFKA_SECURITY_PROTOCOL={self.protocol}")
        return replace(self, sasl_mechanism=mechanism)

    def _check_ssl(self) -> None:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigurationError(f"{VARIABLES[name]}={_shown(path)}: expected a readable file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigurationError(f"CHOREO_KAFKA_SSL_KEYFILE={_shown(self.ssl_keyfile)}: expected "
                                     "CHOREO_KAFKA_SSL_CERTFILE too (the certificate the key belongs to)")
        # Load the files now so a wrong file fails at start, naming its variable, not at the first connect.
        context = ssl.create_default_context()
        if self.ssl_cafile is not None:
            try:
                context.load_verify_locations(cafile=self.ssl_cafile)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(f"CHOREO_KAFKA_SSL_CAFILE={_shown(self.ssl_cafile)}: expected PEM "
                                         f"certificates ({exc.__class__.__name__})") from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(f"CHOREO_KAFKA_SSL_CERTFILE={_shown(self.ssl_certfile)}: expected a PEM "
                                         "certificate with its key (CHOREO_KAFKA_SSL_KEYFILE, "
                                         f"CHOREO_KAFKA_SSL_KEY_PASSWORD) ({exc.__class__.__name__})") from None


def connection_options(settings: Settings) -> dict[str, Any]:
    """Where and how every aiokafka client connects: the one place these options are built.

    Args:
        settings: The settings.

    Returns:
        bootstrap_servers, client_id and the security options (see KafkaSecurity.options).
    """
    return {"bootstrap_servers": settings.bootstrap_servers, "client_id": settings.client_id,
            **settings.security.options()}
