#!/usr/bin/env python3
"""A gRPC server and client for lb's integration tests, on Python grpcio (not lb's code).

Methods work on raw bytes (identity serializers), so no .proto or protoc is needed:

  /lb.test.LoadTest/Process   unary: answers b"<name>:" + the request
  /lb.test.LoadTest/Stream    server streaming: the request is a count N; N answers b"<name>:<i>"
  /lb.test.LoadTest/Chat      bidirectional: every message answered at once with b"<name>:" + it
  /lb.test.LoadTest/Fail      unary: fails with INVALID_ARGUMENT and a message
  /lb.test.LoadTest/Slow      unary: the request is milliseconds to sleep before answering
  /grpc.health.v1.Health/Check  SERVING (or NOT_SERVING after /lb.test.LoadTest/Down)
  /lb.test.LoadTest/Down      flips this server's health to NOT_SERVING

  peer.py server --port P --name N [--cert F --key F]
  peer.py client --target HOST:PORT [--ca F] [--authority NAME] CASE
      prints one JSON line: {"ok": ..., ...} per CASE (unary, stream, chat, fail, deadline,
      unavailable, many, down; sb-unary, sb-stream, sb-chat, sb-health against sample-backend's
      lb.LoadTest API)
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SVC = "/lb.test.LoadTest/"
HEALTH = "/grpc.health.v1.Health/Check"


def ident(b):
    return b


def serve(args):
    name = args.name.encode()
    serving = {"up": True}

    def process(req, ctx):
        return name + b":" + req

    def stream(req, ctx):
        for i in range(int(req or b"0")):
            yield name + b":" + str(i).encode()

    def chat(it, ctx):
        for m in it:
            yield name + b":" + m

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request from the test: " + req.decode())

    def slow(req, ctx):
        time.sleep(int(req) / 1000)
        return name + b":slept"

    def down(req, ctx):
        serving["up"] = False
        return b""

    def health(req, ctx):
        # HealthCheckResponse { status = 1 SERVING | 2 NOT_SERVING }
        return b"\x08\x01" if serving["up"] else b"\x08\x02"

    h = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Process": h(process, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
        "Fail": h(fail, ident, ident),
        "Slow": h(slow, ident, ident),
        "Down": h(down, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("lb.test.LoadTest", handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": h(health, ident, ident)}),
        )
    )
    addr = f"127.0.0.1:{args.port}"
    if args.cert:
        creds = grpc.ssl_server_credentials([(open(args.key, "rb").read(), open(args.cert, "rb").read())])
        server.add_secure_port(addr, creds)
    else:
        server.add_insecure_port(addr)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def channel(args):
    if args.ca:
        creds = grpc.ssl_channel_credentials(open(args.ca, "rb").read())
        opts = [("grpc.ssl_target_name_override", args.authority)] if args.authority else []
        return grpc.secure_channel(args.target, creds, options=opts)
    opts = [("grpc.default_authority", args.authority)] if args.authority else []
    return grpc.insecure_channel(args.target, options=opts)


def code_of(e):
    return {"code": e.code().name, "details": e.details()}


def reply_fields(msg):
    """Decodes lb.LoadTestReply { string backend = 1; uint64 bytes = 2; string checksum = 3 }."""
    out, i = {}, 0
    while i < len(msg):
        key = msg[i]
        i += 1
        value, shift = 0, 0
        while True:
            b = msg[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if key & 7 == 2:
            out[key >> 3] = msg[i : i + value].decode()
            i += value
        else:
            out[key >> 3] = value
    return {"backend": out.get(1), "bytes": out.get(2), "checksum": out.get(3)}


def sample_backend(ch, case):
    """Calls lb's sample-backend gRPC API (src/bin/sample-backend/loadtest.proto)."""
    svc = "/lb.LoadTest/"
    if case == "unary":
        r = ch.unary_unary(svc + "Process", ident, ident)(b"\x0a\x05hello", timeout=10)
        return {"reply": reply_fields(r)}
    if case == "stream":
        call = ch.unary_stream(svc + "ProcessStream", ident, ident)
        return {"replies": [reply_fields(r) for r in call(b"\x08\x03\x12\x02hi", timeout=10)]}
    if case == "chat":
        call = ch.stream_stream(svc + "Chat", ident, ident)
        msgs = (b"\x0a" + bytes([len(p)]) + p for p in (b"a", b"bb", b"ccc"))
        return {"replies": [reply_fields(r) for r in call(msgs, timeout=10)]}
    if case == "health":
        r = ch.unary_unary("/grpc.health.v1.Health/Check", ident, ident)(b"", timeout=10)
        return {"serving": r == b"\x08\x01"}
    raise SystemExit(f"unknown sample-backend case {case}")


def expect_error(out, call):
    """Records the status of a call that must fail (ok = false when it succeeds)."""
    try:
        call()
        out["ok"] = False
    except grpc.RpcError as e:
        out.update(code_of(e))


def client(args):
    ch = channel(args)
    uu = lambda m: ch.unary_unary(SVC + m, ident, ident)
    out = {"ok": True}
    try:
        if args.case == "unary":
            out["reply"] = uu("Process")(b"hello", timeout=10).decode()
        elif args.case == "many":
            replies = [uu("Process")(str(i).encode(), timeout=10).decode() for i in range(200)]
            out["backends"] = sorted({r.split(":")[0] for r in replies})
            out["count"] = len(replies)
        elif args.case == "stream":
            call = ch.unary_stream(SVC + "Stream", ident, ident)
            out["replies"] = [r.decode() for r in call(b"5", timeout=10)]
        elif args.case == "chat":
            # Each answer arrives before the next message is sent: both directions flow at once.
            call = ch.stream_stream(SVC + "Chat", ident, ident)
            cond = threading.Condition()
            state = {"sent": 0, "got": []}

            def requests():
                for i in range(5):
                    with cond:
                        if not cond.wait_for(lambda: len(state["got"]) == i, timeout=10):
                            return
                        state["sent"] += 1
                    yield f"m{i}".encode()

            for r in call(requests(), timeout=15):
                with cond:
                    state["got"].append(r.decode())
                    cond.notify_all()
            out["replies"] = state["got"]
        elif args.case.startswith("sb-"):
            out.update(sample_backend(ch, args.case[3:]))
        elif args.case == "down":
            uu("Down")(b"", timeout=10)
        elif args.case == "fail":
            expect_error(out, lambda: uu("Fail")(b"x", timeout=10))
        elif args.case == "deadline":
            expect_error(out, lambda: uu("Slow")(b"3000", timeout=0.5))
        elif args.case == "unavailable":
            expect_error(out, lambda: uu("Process")(b"x", timeout=10))
        else:
            raise SystemExit(f"unknown case {args.case}")
    except grpc.RpcError as e:
        out["ok"] = False
        out.update(code_of(e))
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--cert")
    s.add_argument("--key")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--ca")
    c.add_argument("--authority")
    c.add_argument("case")
    args = p.parse_args()
    (serve if args.mode == "server" else client)(args)


if __name__ == "__main__":
    sys.exit(main())
