"""The MQTT library's own ceiling: paho (as the agent configures it: MQTT 5, QoS 1, 20 in flight)
publishing lines of a file, in a process of its own. Prints the seconds from the first publish
to the last PUBACK.

    python -m benchmarks._paho_pub HOST PORT TOPIC FILE
"""
from __future__ import annotations

import sys
import threading
import time

import paho.mqtt.client as mqtt


def main(host: str, port: int, topic: str, path: str) -> float:
    with open(path, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f]
    done = threading.Event()
    acked = 0

    def on_publish(client: mqtt.Client, userdata: object, mid: int, reason_code: object, properties: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(bodies):
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho-reference", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)
    client.on_publish = on_publish
    client.connect(host, port, 30)
    client.loop_start()
    started = time.perf_counter()
    for body in bodies:
        client.publish(topic, body, qos=1)
    if not done.wait(120):
        raise SystemExit(f"only {acked} of {len(bodies)} acknowledged")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


if __name__ == "__main__":
    print(f"{main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]):.6f}")
