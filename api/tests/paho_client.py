#!/usr/bin/env python3
"""A small MQTT client for fleetgate's end-to-end tests (api/tests/mqtt.rs).

Built on paho-mqtt 2.2.0 (CallbackAPIVersion.VERSION2), plus a hand-built raw-socket mode for
what a library hides (a silent connection, the exact DISCONNECT reason byte). Every result is a
JSON object on its own line of standard output, flushed at once, so that the caller can react
to a line (e.g. "suback") while the process keeps running:

  {"event": "connack", "rc": 0, "session_present": false}
  {"event": "suback", "codes": [1, 128]}
  {"event": "message", "topic": "...", "payload": "...", "qos": 1, "dup": false, "mid": 1}
  {"event": "puback", "mid": 1, "rc": 0}
  {"event": "disconnect", "rc": 142, "from_server": true}
  {"event": "closed", "after": 3.02, "disconnect_rc": 141}
  {"event": "timeout", "what": "..."}
  {"event": "done", ...}

Reason codes are integers. paho reports MQTT 3.1.1 results with their MQTT 5 equivalents
(e.g. a 3.1.1 SUBACK failure 0x80 is 128, a lost connection is 128 "unspecified error" with
from_server false). Exit status: 0 when the command ran to its end (whatever the server said),
2 for a usage error, 3 when the connection could not be made at all.

Subcommands: connect, subscribe, publish, raw, device. See --help of each.
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def emit(event, **fields):
    fields = {"event": event, **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def rc_value(rc):
    """An int from a paho ReasonCode, a list of them, or an int."""
    if isinstance(rc, list):
        return [rc_value(r) for r in rc]
    if hasattr(rc, "value"):
        return int(rc.value)
    return int(rc)


def payload_text(payload):
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.hex()


class Session:
    """A paho client driven by an explicit loop on this thread (no background thread, no
    automatic reconnection), recording what the callbacks saw."""

    def __init__(self, args):
        self.args = args
        self.v5 = args.version == "5"
        kwargs = dict(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=getattr(args, "manual_ack", False),
        )
        if not self.v5:
            kwargs["clean_session"] = not args.persistent
        self.client = mqtt.Client(**kwargs)
        self.client.username_pw_set(args.username, args.password)
        if args.will_topic:
            self.client.will_set(args.will_topic, args.will_payload, qos=args.will_qos)
        self.connack = None
        self.suback = None
        self.disconnected = None
        self.messages = 0
        self.pubacks = {}
        c = self.client
        c.on_connect = self.on_connect
        c.on_subscribe = self.on_subscribe
        c.on_message = self.on_message
        c.on_publish = self.on_publish
        c.on_disconnect = self.on_disconnect

    # Callbacks (VERSION2 signatures).
    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = rc_value(reason_code)
        emit("connack", rc=self.connack, session_present=bool(flags.session_present))

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback = rc_value(reason_codes)
        emit("suback", codes=self.suback)

    def on_message(self, client, userdata, msg):
        self.messages += 1
        emit(
            "message",
            topic=msg.topic,
            payload=payload_text(msg.payload),
            qos=msg.qos,
            dup=bool(msg.dup),
            mid=msg.mid,
        )

    def on_publish(self, client, userdata, mid, reason_code, properties):
        rc = rc_value(reason_code)
        self.pubacks[mid] = rc
        if self.args.report_pubacks:
            emit("puback", mid=mid, rc=rc)

    def on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected = rc_value(reason_code)
        emit(
            "disconnect",
            rc=self.disconnected,
            from_server=bool(flags.is_disconnect_packet_from_server),
        )

    # Driving.
    def connect(self):
        a = self.args
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if a.session_expiry:
                props.SessionExpiryInterval = a.session_expiry
        try:
            if self.v5:
                self.client.connect(
                    a.host, a.port, keepalive=a.keepalive, clean_start=not a.persistent, properties=props
                )
            else:
                self.client.connect(a.host, a.port, keepalive=a.keepalive)
        except OSError as e:
            emit("error", what="connect", error=str(e))
            sys.exit(3)
        if not self.loop_until(lambda: self.connack is not None or self.disconnected is not None, a.timeout):
            emit("timeout", what="connack")
            sys.exit(0)
        return self.connack == 0

    def loop_until(self, done, seconds):
        """Runs the network loop until done() or the deadline; returns done()."""
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() >= deadline:
                return False
            if self.disconnected is not None and not done():
                # Nothing more can happen on this connection.
                return done()
            self.client.loop(timeout=0.05)
        return True

    def hold(self, seconds):
        """Keeps the connection (answering keep-alive) until the server ends it or the time is
        up; a negative time holds until the process is killed."""
        if seconds < 0:
            seconds = 1e9
        self.loop_until(lambda: self.disconnected is not None, seconds)

    def finish(self, how):
        """Ends the connection: 'disconnect' sends DISCONNECT, 'abrupt' closes the socket
        without a word (as a crashed device would), 'none' leaves it as it is."""
        if self.disconnected is not None or how == "none":
            return
        if how == "abrupt":
            sock = self.client.socket()
            if sock is not None:
                sock.close()
            os._exit(0)
        self.client.disconnect()
        self.loop_until(lambda: self.disconnected is not None, 2.0)


def cmd_connect(args):
    s = Session(args)
    if s.connect():
        s.hold(args.hold)
        s.finish(args.finish)
    emit("done")


def cmd_subscribe(args):
    s = Session(args)
    if not s.connect():
        emit("done", messages=0)
        return
    if args.topic:
        s.client.subscribe([(t, args.qos) for t in args.topic])
        if not s.loop_until(lambda: s.suback is not None, args.timeout):
            emit("timeout", what="suback")
    if args.count > 0:
        if not s.loop_until(lambda: s.messages >= args.count, args.wait):
            emit("timeout", what="messages", received=s.messages)
    elif args.wait > 0:
        s.hold(args.wait)
    s.finish(args.finish)
    emit("done", messages=s.messages)


def cmd_publish(args):
    s = Session(args)
    if not s.connect():
        emit("done", published=0, acked=0)
        return
    mids = []
    for i in range(args.count):
        if s.disconnected is not None:
            break
        if args.payload_size > 0:
            payload = "x" * args.payload_size
        elif args.count == 1:
            payload = args.payload
        else:
            payload = f"{args.payload}-{i}"
        info = s.client.publish(args.topic, payload, qos=args.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # The connection is gone (the server closed it).
            break
        mids.append(info.mid)
        if args.interval > 0:
            s.loop_until(lambda: False, args.interval)
    published = len(mids)
    if args.qos > 0:
        s.loop_until(lambda: all(m in s.pubacks for m in mids), args.timeout)
    else:
        s.loop_until(lambda: False, 0.1)
    if args.wait_disconnect > 0:
        s.loop_until(lambda: s.disconnected is not None, args.wait_disconnect)
    # For QoS 0 paho reports a publication when it is written: only QoS 1 has acknowledgements.
    acked = sum(1 for m in mids if m in s.pubacks) if args.qos > 0 else 0
    codes = sorted({rc for m, rc in s.pubacks.items() if m in mids}) if args.qos > 0 else []
    s.finish(args.finish)
    emit("done", published=published, acked=acked, puback_codes=codes)


def cmd_device(args):
    """A device of the IoTDA topic tree: optionally reports properties, then answers every
    platform request on its implicit subscriptions (commands, property set and get) until the
    time is up, and reports each downlink as a "message" line."""
    s = Session(args)
    base = f"$oc/devices/{args.username}/sys/"
    state = json.loads(args.properties) if args.properties else {}

    def answer(topic, payload):
        rest = topic[len(base):]
        if "/request_id=" not in rest:
            return
        kind, rid = rest.split("/request_id=", 1)
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        if kind == "commands":
            reply = {"result_code": 0, "response_name": "COMMAND_RESPONSE",
                     "paras": {"result": "done", "command_name": body.get("command_name")}}
        elif kind == "properties/set":
            for svc in body.get("services", []):
                state.setdefault(svc["service_id"], {}).update(svc.get("properties", {}))
            reply = {"result_code": 0, "result_desc": "success"}
        elif kind == "properties/get":
            wanted = body.get("service_id")
            reply = {"services": [{"service_id": k, "properties": v}
                                  for k, v in state.items() if wanted in (None, k)]}
        else:
            return
        if args.silent:
            return
        s.client.publish(f"{base}{kind}/response/request_id={rid}", json.dumps(reply), qos=0)

    def on_message(client, userdata, msg):
        s.messages += 1
        text = payload_text(msg.payload)
        emit("message", topic=msg.topic, payload=text, qos=msg.qos)
        answer(msg.topic, text)

    s.client.on_message = on_message
    if not s.connect():
        emit("done", messages=0)
        return
    if args.report:
        s.client.publish(base + "properties/report", args.report, qos=1)
        s.loop_until(lambda: False, 0.2)
    emit("ready")
    s.hold(args.wait)
    s.finish(args.finish)
    emit("done", messages=s.messages)


# --- raw socket -------------------------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def build_connect(args):
    v5 = args.version == "5"
    flags = 0x02 | 0x80 | 0x40  # clean session/start, user name, password
    if args.will_topic:
        flags |= 0x04 | (args.will_qos << 3)
    var = mqtt_str("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack("!H", args.keepalive)
    if v5:
        var += varint(0)
    payload = mqtt_str(args.client_id)
    if args.will_topic:
        if v5:
            payload += varint(0)
        payload += mqtt_str(args.will_topic) + mqtt_str(args.will_payload)
    payload += mqtt_str(args.username) + mqtt_str(args.password)
    body = var + payload
    return bytes([0x10]) + varint(len(body)) + body


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def packet(self, deadline):
        """The next packet as (type byte, body), or None at EOF or the deadline."""
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i : i + n]
                    self.buf = self.buf[i + n :]
                    return first, body
            if self.eof or not self.fill(deadline):
                return None


def cmd_raw(args):
    start = time.monotonic()
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as e:
        emit("error", what="connect", error=str(e))
        sys.exit(3)
    sock.sendall(build_connect(args))
    r = Reader(sock)
    p = r.packet(time.monotonic() + args.timeout)
    if p is None or p[0] >> 4 != 2:
        emit("timeout" if p is None and not r.eof else "error", what="connack", eof=r.eof)
        emit("done")
        return
    connack_at = time.monotonic()
    emit("connack", rc=p[1][1], session_present=bool(p[1][0] & 1))
    if p[1][1] != 0:
        emit("done")
        return
    if args.then == "disconnect":
        sock.sendall(bytes([0xE0, 0x00]))
    # Stay silent: no PINGREQ. Report every packet the server sends until it closes.
    disconnect_rc = None
    deadline = time.monotonic() + args.wait
    while True:
        p = r.packet(deadline)
        if p is None:
            break
        kind = p[0] >> 4
        if kind == 14:
            disconnect_rc = p[1][0] if len(p[1]) else 0
            emit("server_disconnect", rc=disconnect_rc, after=round(time.monotonic() - connack_at, 3))
        else:
            emit("packet", type=kind)
    if r.eof:
        emit(
            "closed",
            after=round(time.monotonic() - connack_at, 3),
            since_start=round(time.monotonic() - start, 3),
            disconnect_rc=disconnect_rc,
        )
    else:
        emit("timeout", what="close", waited=args.wait)
    sock.close()
    emit("done")


# --- command line ------------------------------------------------------------------------------


def common(p):
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", choices=["311", "5"], default="311")
    p.add_argument("--client-id", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for CONNACK, SUBACK, PUBACKs")
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="")
    p.add_argument("--will-qos", type=int, default=0)


def paho_common(p):
    common(p)
    p.add_argument("--persistent", action="store_true", help="3.1.1 clean session 0 / 5.0 clean start 0")
    p.add_argument("--session-expiry", type=int, default=0, help="MQTT 5 session expiry, seconds")
    p.add_argument("--report-pubacks", action="store_true")
    p.add_argument(
        "--finish",
        choices=["disconnect", "abrupt", "none"],
        default="disconnect",
        help="how the connection ends: DISCONNECT, or the socket closed without a word",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("connect", help="connect, report CONNACK, hold the connection, end it")
    paho_common(p)
    p.add_argument("--hold", type=float, default=0, help="seconds to hold; negative: until killed")
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser("subscribe", help="subscribe, report SUBACK, wait for messages")
    paho_common(p)
    p.add_argument("--topic", action="append", default=[], help="repeatable; none to only listen")
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--count", type=int, default=0, help="messages to wait for")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for them")
    p.add_argument("--manual-ack", action="store_true", help="never acknowledge QoS 1 messages")
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser("publish", help="publish COUNT messages as fast as possible")
    paho_common(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--payload", default="hello", help="suffixed with -N when COUNT > 1")
    p.add_argument("--payload-size", type=int, default=0, help="send this many 'x' bytes instead")
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--interval", type=float, default=0, help="seconds between publications")
    p.add_argument("--wait-disconnect", type=float, default=0, help="seconds to wait for the server to close")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("device", help="report properties, then answer platform requests")
    paho_common(p)
    p.add_argument("--report", help="a properties/report payload to send after connecting")
    p.add_argument("--properties", help="JSON {service_id: {name: value}} answered to properties/get")
    p.add_argument("--silent", action="store_true", help="receive requests but never answer")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to stay connected")
    p.set_defaults(func=cmd_device)

    p = sub.add_parser("raw", help="hand-built CONNECT, then silence (or DISCONNECT); report the close")
    common(p)
    p.add_argument("--then", choices=["silent", "disconnect"], default="silent")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the server to close")
    p.set_defaults(func=cmd_raw)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
