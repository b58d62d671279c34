"""The saga coordinator service: `python -m services.coordinator` (logic lives in the library)."""

from choreograph.runtime import run_coordinator

if __name__ == "__main__":
    run_coordinator()
