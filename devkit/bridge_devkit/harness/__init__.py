"""The one development harness of tests, demo and benchmarks (``bridge_devkit.harness``).

=================  =====================================================================
``broker``         the Kafka broker of a run: ``KAFKA_BOOTSTRAP_SERVERS`` or a local one
``simulator``      the Norce API simulator in process or as a process, its admin API
``inprocess``      the bridge as an in-process service (``running_bridge``, ``Bridge``)
``bridge_process`` the bridge as ``bridge run`` processes: env, log file, signals, log tail
``topics``         unique topics and group per run; ``BridgeSettings`` and ``BRIDGE_*`` env
``kafka``          the harness's own Kafka clients: topic creation, offsets, a producer
``outputs``        reading snapshots/events/results/dead letters, filed by command and source
``verify``         checks more than one user makes (order vs simulator, one result each)
``commands``       command builders
``util``           ``poll_until``, ``free_port``, ``clean_env``, console scripts, JSON logs
=================  =====================================================================
"""

from bridge_devkit.harness.bridge_process import (
    BridgeProcess,
    LogFollower,
    assigned_partitions,
    log_count,
    metrics_text,
    scrape_metric,
    spawn_bridge,
    wait_exit,
)
from bridge_devkit.harness.broker import async_broker, broker
from bridge_devkit.harness.commands import delete, notification_delivery, refresh, set_state
from bridge_devkit.harness.inprocess import Bridge, running_bridge
from bridge_devkit.harness.kafka import (
    JSON_HEADERS,
    command_producer,
    committed_offsets,
    create_topics,
    delete_topics,
    end_offsets,
)
from bridge_devkit.harness.outputs import (
    OutputCollector,
    OutputRecord,
    Outputs,
    TopicReader,
    dead_letter_source,
    read_topic,
    result_source,
)
from bridge_devkit.harness.simulator import SimulatorAdmin, SimulatorProcess, simulator
from bridge_devkit.harness.topics import (
    API_KEY,
    deployment_env,
    fresh_topics,
    make_settings,
    process_env,
    unique,
)
from bridge_devkit.harness.util import (
    clean_env,
    console_script,
    free_port,
    log_lines,
    parse_ts,
    poll_until,
)

__all__ = [
    "API_KEY",
    "JSON_HEADERS",
    "Bridge",
    "BridgeProcess",
    "LogFollower",
    "OutputCollector",
    "OutputRecord",
    "Outputs",
    "SimulatorAdmin",
    "SimulatorProcess",
    "TopicReader",
    "assigned_partitions",
    "async_broker",
    "broker",
    "clean_env",
    "command_producer",
    "committed_offsets",
    "console_script",
    "create_topics",
    "dead_letter_source",
    "delete",
    "delete_topics",
    "deployment_env",
    "end_offsets",
    "free_port",
    "fresh_topics",
    "log_count",
    "log_lines",
    "make_settings",
    "metrics_text",
    "notification_delivery",
    "parse_ts",
    "poll_until",
    "process_env",
    "read_topic",
    "refresh",
    "result_source",
    "running_bridge",
    "scrape_metric",
    "set_state",
    "simulator",
    "spawn_bridge",
    "unique",
    "wait_exit",
]
