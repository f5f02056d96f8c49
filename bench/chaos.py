"""Chaos harness: kill -9, API faults, a broker restart and zombies, then check every order.

``python bench/chaos.py`` (``--short`` is the CI form; ``--help`` lists the options). The
harness lives in the development kit, by concern (see ``bench/README.md``):

* ``bridge_devkit.chaos.plan``        what to send: per-order command sequences and poison;
* ``bridge_devkit.chaos.faults``      kill -9, a broker restart, a second instance;
* ``bridge_devkit.chaos.fencer``      the fencing steps: SIGSTOP in backoff, expulsion;
* ``bridge_devkit.chaos.checks``      every order and record checked; ``fence_checks``: writes;
* ``bridge_devkit.chaos.run``         one run per guarantee; ``cli``: this command line.
"""

from bridge_devkit.chaos.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
