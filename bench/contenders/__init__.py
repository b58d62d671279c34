"""Relay services, one per contender, each started as its own process by bench.relay.

Each reads RELAY_SOURCE and writes RELAY_TARGET on KAFKA_BOOTSTRAP_SERVERS in group RELAY_GROUP,
with the settings written at its top; fetch_max_wait_ms comes from RELAY_FETCH_WAIT_MS (the broker
profile's value) so every contender polls the same broker the same way.
"""
