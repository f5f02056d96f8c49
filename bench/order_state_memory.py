"""Memory and restore CPU per order of the order state store's in-memory map.

The bridge keeps, per assigned partition, the last state it published for every order of that
partition (``bridge/state_store.py``): restored from the compacted state topic on assignment and
never evicted. This measures what one entry costs, built by the function restoring uses
(``state_store.apply_record``: the key decoded to ``str``, the value through ``decode_state``,
one ``dict`` slot) from state records that ``OrderState.of_order`` encodes for orders with
simulator-shaped ids and command ids; and the CPU per record of that decoding. It prints
figures; nothing fails on them.

Usage::

    python bench/order_state_memory.py                 # 200,000 orders
    python bench/order_state_memory.py --orders 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime

from bridge.order_state import OrderState
from bridge.state_store import apply_record

MIB = 1024 * 1024


def records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` state records (key, value) as the bridge writes them."""
    now = datetime.now(UTC)
    out = []
    for _ in range(n):
        order_id = "o_" + uuid.uuid4().hex[:26]  # the simulator's id shape: o_ + 26 characters
        order = {
            "id": order_id,
            "state": {
                "currentStatus": "processing",
                "transitions": [{"status": "checkout"}, {"status": "processing"}],
            },
        }
        state = OrderState.of_order(order, now=now, command_id=str(uuid.uuid4()))
        out.append((order_id.encode(), state.encode()))
    return out


def restore_like(recs: list[tuple[bytes, bytes]]) -> dict[str, OrderState]:
    """A partition's map, built record by record as ``state_store.restore`` builds it."""
    store: dict[str, OrderState] = {}
    for key, value in recs:
        apply_record(store, key, value)
    return store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=200_000)
    args = p.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    recs = records(args.orders)
    value_bytes = sum(len(v) for _, v in recs) / len(recs)
    gc.collect()
    tracemalloc.start()
    store = restore_like(recs)
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_order = held / len(store)
    started = time.process_time()
    restore_like(recs)
    cpu_us = (time.process_time() - started) / len(recs) * 1e6
    print(f"orders                  : {len(store):,}")
    print(f"state record value      : {value_bytes:.0f} bytes on the topic (plus the key)")
    print(f"memory per known order  : {per_order:.0f} bytes (key str + OrderState + dict slot)")
    print(f"restore CPU per record  : {cpu_us:.1f} us (decode only; fetching is extra)")
    for orders in (100_000, 1_000_000, 10_000_000):
        print(f"  {orders:>10,} known orders in one instance: {orders * per_order / MIB:8.0f} MiB")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
