#!/usr/bin/env python3
"""An HTTP/2 (h2c, prior knowledge) echo server on the `h2` library (not lb's code) that answers
as it reads and pushes back as a real streaming server does: each stream's request data is sent
back as response data, and the request data is acknowledged (its flow-control window given back)
only once its echo is sent. A proxy that stops reading the answer while it writes the request
(or the other way round) therefore stalls for good: this server waits for window to send, and
gives none back until it can. Each answer also says the request's `:scheme` and `:authority`
(`x-seen-scheme`, `x-seen-authority`).

  duplex_echo.py PORT      prints "ready" once listening; one thread per connection
"""

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve(sock):
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    # stream id -> [[bytes still to echo, flow-controlled length to acknowledge once echoed]]
    pending = {}
    ended = set()

    def echo():
        for sid in list(pending):
            queue = pending[sid]
            while queue:
                data, length = queue[0]
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                n = min(room, len(data))
                if n:
                    conn.send_data(sid, data[:n])
                if n == len(data):
                    queue.pop(0)
                    conn.acknowledge_received_data(length, sid)
                else:
                    queue[0][0] = data[n:]
            if not queue and sid in ended:
                conn.end_stream(sid)
                del pending[sid]
                ended.discard(sid)

    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                # The request's :scheme and :authority come back as response fields.
                got = dict(ev.headers)
                conn.send_headers(
                    ev.stream_id,
                    [
                        (b":status", b"200"),
                        (b"x-seen-scheme", got.get(b":scheme", b"")),
                        (b"x-seen-authority", got.get(b":authority", b"")),
                    ],
                )
                pending[ev.stream_id] = []
            elif isinstance(ev, h2.events.DataReceived):
                pending.setdefault(ev.stream_id, []).append([ev.data, ev.flow_controlled_length])
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                pending.pop(ev.stream_id, None)
                ended.discard(ev.stream_id)
        echo()
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(16)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
