"""The workflow index as a faust-streaming Table (bench/faust_index.py runs it as a worker process).

One agent reads the events topic and folds each believed record (the services' verifier, as the index's)
into `table[workflow_id]` with the index's own fold (bench.faust_index.fold_value); the table is in memory
with faust's changelog topic behind it. Web pages give the driver what it measures: /index/count (rows,
statuses, events folded) and /index/rows?limit=N (the newest rows, as `choreo ls --json` prints them).

Settings a competent user would choose on this broker: in-memory store (the changelog is the durable
copy), the raw serializer for the source (records are Avro + CloudEvents headers), the broker profile's
session timeout and fetch wait (faust hard-codes fetch_max_wait_ms=1500, patched as in
bench/contenders/faust_agent.py), and the log read from its start.
"""

import os
import time
from collections import Counter
from typing import Any

import aiokafka
import faust

from bench.faust_index import fold_value, newest_rows
from choreograph.index import IndexedEvent, indexed_event
from choreograph.transport import framework_store, service_verifier

_wait = int(os.environ.get("FAUST_INDEX_FETCH_WAIT_MS", "5"))


class _Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    """faust builds its consumer as aiokafka.AIOKafkaConsumer(..., fetch_max_wait_ms=1500)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = _wait
        super().__init__(*args, **kwargs)


aiokafka.AIOKafkaConsumer = _Consumer  # type: ignore[misc]

_session_s = int(os.environ.get("FAUST_INDEX_SESSION_MS", "3000")) / 1000
app = faust.App(
    os.environ.get("FAUST_INDEX_APP", "bench-faust-index"),
    broker="kafka://" + os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    store="memory://", topic_partitions=int(os.environ.get("FAUST_INDEX_PARTITIONS", "4")),
    consumer_auto_offset_reset="earliest", broker_session_timeout=_session_s,
    broker_heartbeat_interval=max(0.1, _session_s / 3), web_host="127.0.0.1",
    web_port=int(os.environ.get("FAUST_INDEX_PORT", "6066")), web_in_thread=False,
    datadir=os.environ.get("FAUST_INDEX_DATADIR", "faust-data"), autodiscover=False,
)
source = app.topic(os.environ.get("FAUST_INDEX_TOPIC", "choreo.events"), value_serializer="raw",
                   key_serializer="raw")
# Keys are the workflow id as str, values fold_value's dicts, both JSON: with the raw record key as the
# table's key, faust wrote the changelog's keys raw and read them back as JSON on recovery ("Error in
# recovery number with leading zero is not allowed", for every record: the table never restored).
table = app.Table("workflows", partitions=int(os.environ.get("FAUST_INDEX_PARTITIONS", "4")))
_store = framework_store()
_verifier = service_verifier()
_seen = {"records": 0, "folded": 0, "last_fold_at": 0.0}


@app.agent(source)
async def index(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        _seen["records"] += 1
        indexed = indexed_event(message.key, message.value, list(message.headers or ()),
                                round(message.timestamp * 1000), _store, _verifier)
        if isinstance(indexed, IndexedEvent):
            table[indexed.workflow_id] = fold_value(table.get(indexed.workflow_id), indexed)
            _seen["folded"] += 1
            _seen["last_fold_at"] = time.time()


@app.page("/index/count")
async def count(web: Any, request: Any) -> Any:
    values = list(table.values())
    return web.json({"rows": len(values), "statuses": Counter(v["status"] for v in values),
                     "events": sum(v["events"] for v in values), **_seen})


@app.page("/index/rows")
async def rows(web: Any, request: Any) -> Any:
    limit = int(request.query.get("limit", "50"))
    return web.json(newest_rows(table.values(), limit, round(time.time() * 1000)))


@app.page("/index/all")
async def every(web: Any, request: Any) -> Any:
    return web.json({k: [v["status"], v["events"]] for k, v in table.items()})


if __name__ == "__main__":
    app.main()
