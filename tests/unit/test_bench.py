"""The bench harness's arithmetic (no timing here: benchmarks print figures, tests never time)."""

from __future__ import annotations

from bench.report import headline

REQUIRED = {"relay_ratio", "hop_overhead_ms", "sagas_per_s", "saga_p50_ms", "saga_p99_ms",
            "compensated_sagas_per_s", "vs_faust", "vs_faststream", "codec_us"}


def _relay(rate: float, p50: float) -> dict[str, float]:
    return {"events_per_s": rate, "hop_p50_ms": p50, "hop_p99_ms": p50 * 2, "hops_lost": 0, "relay_cpu": 1.0}


def _saga(rate: float, p50: float) -> dict[str, object]:
    return {"in_flight": 32, "sagas": 1000, "seconds": 1000 / rate, "sagas_per_s": rate, "p50_ms": p50,
            "p99_ms": p50 * 2, "statuses": {"completed": 1000}}


def test_the_headline_line_has_every_acceptance_figure_as_a_ratio_or_difference() -> None:
    results = {
        "relay": {"aiokafka": _relay(10_000, 8.0), "choreograph": _relay(6_000, 8.5),
                  "faust": _relay(1_000, 12.0), "faststream": _relay(300, 12.0)},
        "saga": {"headline": _saga(210.0, 45.0), "compensated": _saga(190.0, 50.0)},
        "codec": {"encode_us": 20.0, "decode_us": 15.0, "payload_bytes": 180, "header_bytes": 350},
    }
    figures = headline(results)
    assert figures.keys() >= REQUIRED
    assert figures["relay_ratio"] == 0.6
    assert figures["hop_overhead_ms"] == 0.5
    assert figures["vs_faust"] == 6.0
    assert figures["vs_faststream"] == 20.0
    assert figures["codec_us"] == 35.0


def test_a_scenario_that_did_not_run_leaves_its_figures_out_instead_of_inventing_them() -> None:
    assert headline({"codec": {"encode_us": 1.0, "decode_us": 2.0}}) == {"codec_us": 3.0}
