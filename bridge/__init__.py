"""norce-order-bridge: Norce Checkout order commands on Kafka, executed against the Norce Order API."""

__version__ = "0.1.0"
