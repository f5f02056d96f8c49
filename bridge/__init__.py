"""norce-order-bridge: Norce Checkout order commands from Kafka, run against the Order API."""

__version__ = "0.1.0"
