"""Development kit of norce-order-bridge: local broker, demo and the shared development harness.

Nothing in the service (``bridge``) imports this package; ``import-linter`` enforces it.
"""
