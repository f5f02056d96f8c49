"""What every part of one chaos run (one guarantee) shares: its plan, processes and clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bridge.codec import AvroCodec
from bridge.config import TopicSettings
from bridge_devkit.chaos.plan import Plan, Profile
from bridge_devkit.chaos.timeline import Timeline
from bridge_devkit.harness import SimulatorProcess
from bridge_devkit.localkafka import LocalKafka

API_KEY = "chaos-api-key-0123456789abcdef"
READ_TIMEOUT_S = 1.0
SESSION_TIMEOUT_S = 6.0
REVOKE_DEADLINE_S = 3.0


@dataclass
class RunContext:
    guarantee: str
    profile: Profile
    seed: int
    label: str  # eos | alo
    broker: LocalKafka
    sim: SimulatorProcess
    workdir: Path
    codec: AvroCodec
    topics: TopicSettings
    group: str
    plan: Plan
    partition_of: dict[str, int]  # order id -> partition of its commands (default partitioner)
    clock: Timeline
    rng: random.Random  # the fault schedule's

    @property
    def eos(self) -> bool:
        return self.guarantee == "exactly_once"

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers
