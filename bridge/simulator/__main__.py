"""``python -m bridge.simulator``: run the simulator (see ``bridge.simulator.cli``)."""

from bridge.simulator.cli import main

raise SystemExit(main())
