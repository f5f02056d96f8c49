"""``python -m norce_simulator``: run the simulator (see ``norce_simulator.cli``)."""

from norce_simulator.cli import main

raise SystemExit(main())
