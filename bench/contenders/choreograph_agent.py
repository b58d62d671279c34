"""choreograph's relay: a real agent (typed Avro events, envelope headers, dedupe on), run with
`choreo agent run bench.contenders.choreograph_agent:agent` under the broker's profile."""

from pathlib import Path

from choreograph import Agent, Event, StepContext

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class BenchPing(Event, schema=SCHEMAS / "bench_ping.avsc"):
    seq: int
    body: str


class BenchPong(Event, schema=SCHEMAS / "bench_pong.avsc"):
    seq: int
    body: str


agent = Agent(workflow="bench", step="relay")


@agent.handler
async def relay(ctx: StepContext, ping: BenchPing) -> BenchPong:
    return BenchPong(seq=ping.seq, body=ping.body)
