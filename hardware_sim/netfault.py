"""A TCP proxy between the agent and the broker that can break the network on purpose:
cut every connection with a reset (a link dropping mid-publish), or swallow all traffic
silently (a dead mobile link, noticed only by keep-alives)."""
from __future__ import annotations

import select
import socket
import struct
import threading


class FaultyLink:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, 0))
        self._server.listen(8)
        self.host, self.port = self._server.getsockname()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.blackhole = False  # while True, bytes are read and dropped, nothing is answered
        self.cuts = 0
        self.bytes_forwarded = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="faulty-link")

    def start(self) -> FaultyLink:
        self._thread.start()
        return self

    def cut(self) -> None:
        """Reset every connection now (RST, not FIN): whatever was in flight is lost."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                except OSError:
                    pass
        self.cuts += 1

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> FaultyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                sockets = [self._server, *(s for pair in self._pairs for s in pair)]
            try:
                readable, _, _ = select.select(sockets, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for sock in readable:
                if sock is self._server:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            return
        with self._lock:
            self._pairs.append((client, upstream))

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            pair = next((p for p in self._pairs if sock in p), None)
        if pair is None:
            return
        other = pair[1] if sock is pair[0] else pair[0]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for s in pair:
                s.close()
            return
        if self.blackhole:
            return
        try:
            other.sendall(data)
            self.bytes_forwarded += len(data)
        except OSError:
            pass
