"""The integration tests' harness is the development kit's: ``bridge_devkit.harness``.

This module only re-exports it under the names the tests use; nothing is defined here.
"""

from bridge_devkit.harness import (
    API_KEY,
    Bridge,
    OutputRecord,
    Outputs,
    TopicReader,
    assigned_partitions,
    clean_env,
    delete,
    free_port,
    log_lines,
    make_settings,
    poll_until,
    process_env,
    running_bridge,
    set_state,
    simulator,
    spawn_bridge,
    wait_exit,
)
from bridge_devkit.harness import console_script as order_bridge_script

__all__ = [
    "API_KEY",
    "Bridge",
    "OutputRecord",
    "Outputs",
    "TopicReader",
    "assigned_partitions",
    "clean_env",
    "delete",
    "free_port",
    "log_lines",
    "make_settings",
    "order_bridge_script",
    "poll_until",
    "process_env",
    "running_bridge",
    "set_state",
    "simulator",
    "spawn_bridge",
    "wait_exit",
]
