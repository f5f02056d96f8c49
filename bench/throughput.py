"""Throughput benchmark of the bridge: key-ordered vs partition-ordered processing (issue 4).

``python bench/throughput.py`` (full run) or ``--quick`` (CI smoke test: correctness only);
``--help`` lists the options and ``bench/README.md`` defines every column. The benchmark lives
in the development kit, by concern:

* ``bridge_devkit.throughput.workload``  the commands: valid sequences over fresh orders;
* ``bridge_devkit.throughput.runs``      what a run does and measured; ``/proc`` sampling;
* ``bridge_devkit.throughput.bench``     one run: topics, producing, a bridge process, sampling;
* ``bridge_devkit.throughput.verify``    every command, snapshot and order checked;
* ``bridge_devkit.throughput.planner``   run sizes; ``report``: the table; ``cli``: this command.
"""

import sys

from bridge_devkit.throughput.cli import main

if __name__ == "__main__":
    sys.exit(main())
