#!/usr/bin/env python3
"""Mixed-load soak against a running vitserve (issue 14): every RPC, good and bad requests,
cancellations and short deadlines, from several threads at once, for a fixed time.

The server must serve a model repository with a classifier, a detector and a segmenter (see
scripts/sanitizers.sh --soak, which starts one under AddressSanitizer). Requests are built in
protobuf wire format by hand and sent as raw bytes, so this needs only grpcio, not generated
stubs. Every answer's status is checked against what that request may get: a bad request must
get its own error code, a good one OK (or RESOURCE_EXHAUSTED when the queue is full, or
DEADLINE_EXCEEDED / CANCELLED when the request itself asked for that). Streams (ClassifyStream,
and KServe's ModelStreamInfer with in-band errors) are checked per request. With --churned, one
more classifier is unloaded and reloaded (KServe repository API) while requests go to it. With
--sigterm-after, the server gets SIGTERM mid-load: calls begun before it must still get their
usual answers. Prints a table of outcomes; exits 1 when any answer was not one its request may
get, nothing succeeded, or (with --server-pid) the server process exited during the run unasked.

  scripts/soak.py --grpc 127.0.0.1:8001 --rest 127.0.0.1:8000 --seconds 300 --threads 6
"""
import argparse
import collections
import os
import pathlib
import random
import signal
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "e2e" / "data"
OK, BUSY = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CANCELLED, DEADLINE = grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED
# With --sigterm-after: what a call begun after SIGTERM (or within DRAIN_MARGIN_S before it: its
# bytes may not have been read by the server yet) may also get: the server takes no new calls, or
# has closed its ports. A call begun earlier was accepted and must be answered as usual.
DRAIN_MARGIN_S = 0.005
REFUSED_WHILE_DRAINING = {grpc.StatusCode.UNAVAILABLE.name, "URLError", "ConnectionRefusedError",
                          "ConnectionResetError", "RemoteDisconnected", "503"}


def varint(n):
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def ld(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def num(field, value):
    return varint(field << 3) + varint(value)


def encoded_image(data):
    return ld(1, data)


def raw_image(width, height, rgb):
    return ld(2, num(1, width) + num(2, height) + ld(3, rgb))


def vision_request(model, images, extra=b""):
    return ld(1, model) + b"".join(ld(2, image) for image in images) + extra


def infer_request(model, datatype, shape, data, request_id=""):
    tensor = ld(1, "input") + ld(2, datatype) + ld(3, b"".join(varint(d) for d in shape))
    return ld(1, model) + (ld(3, request_id) if request_id else b"") + ld(5, tensor) + ld(7, data)


def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def length_delimited_fields(data):
    """{field number: payload} of a message's length-delimited fields (the last of each)."""
    fields, at = {}, 0
    while at < len(data):
        tag, at = read_varint(data, at)
        if tag & 7 == 2:
            size, at = read_varint(data, at)
            fields[tag >> 3] = data[at:at + size]
            at += size
        elif tag & 7 == 0:
            _, at = read_varint(data, at)
        else:
            raise ValueError(f"unexpected wire type in field {tag >> 3}")
    return fields


class Soak:
    def __init__(self, args):
        self.args = args
        self.channel = grpc.insecure_channel(args.grpc, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        self.outcomes = collections.Counter()  # (action, outcome) -> count
        self.unexpected = []                   # (action, outcome, detail)
        self.lock = threading.Lock()
        self.server_gone = threading.Event()  # Set when --server-pid's process has exited.
        self.sigterm_at = None  # time.monotonic() when --sigterm-after sent SIGTERM.
        self.local = threading.local()  # .started: when this thread's current call began.
        self.drained = collections.Counter()  # outcome -> calls begun before SIGTERM, ended after
        self.images = [(path.name, path.read_bytes()) for path in sorted(DATA.iterdir())
                       if path.suffix in (".jpg", ".png", ".webp")]
        rng = random.Random(7)
        self.raw = raw_image(48, 32, bytes(rng.randrange(256) for _ in range(48 * 32 * 3)))

    def unary(self, method):
        return self.channel.unary_unary(method, request_serializer=None,
                                        response_deserializer=None)

    def begin(self):
        """Marks the start of this thread's next call (record() judges it by that time)."""
        self.local.started = time.monotonic()

    def record(self, action, outcome, allowed, detail=""):
        started = getattr(self.local, "started", None)
        in_flight_at_sigterm = False
        if self.sigterm_at is not None and started is not None:
            if started >= self.sigterm_at - DRAIN_MARGIN_S:
                allowed = set(allowed) | REFUSED_WHILE_DRAINING
            else:
                in_flight_at_sigterm = True
        with self.lock:
            if in_flight_at_sigterm:
                self.drained[outcome] += 1
            self.outcomes[(action, outcome)] += 1
            if outcome not in allowed:
                self.unexpected.append((action, outcome, detail[:300]))

    def call(self, action, method, request, allowed, timeout=60.0, cancel_after=None):
        self.begin()
        try:
            if cancel_after is None:
                self.unary(method)(request, timeout=timeout)
            else:
                future = self.unary(method).future(request, timeout=timeout)
                time.sleep(cancel_after)
                future.cancel()
                future.result()
            self.record(action, OK.name, allowed)
        except grpc.FutureCancelledError:
            self.record(action, CANCELLED.name, allowed)
        except grpc.RpcError as error:
            self.record(action, error.code().name, allowed, error.details() or "")

    def rest_call(self, action, request, allowed, timeout=60.0):
        """One REST request; its outcome is the HTTP status, or the error that replaced it."""
        self.begin()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                reply.read()
                self.record(action, str(reply.status), allowed)
        except urllib.error.HTTPError as error:
            self.record(action, str(error.code), allowed, error.read().decode(errors="replace"))
        except OSError as error:
            self.record(action, type(error).__name__, allowed, str(error))

    def image(self, rng):
        return encoded_image(rng.choice(self.images)[1])

    # --- the actions, each with the outcomes it may have -------------------------------------
    def classify(self, rng):
        images = [self.image(rng) if rng.random() < 0.7 else self.raw
                  for _ in range(rng.randint(1, 3))]
        self.call("classify", "/vitserve.v1.Vision/Classify",
                  vision_request(self.args.classifier, images, num(3, 3)), {OK.name, BUSY.name})

    def classify_bad(self, rng):
        bad = rng.choice([
            ("garbage image", vision_request(self.args.classifier,
                                             [encoded_image(b"\xff\xd8 not a jpeg")]), INVALID),
            ("raw size", vision_request(self.args.classifier, [raw_image(4, 4, b"x" * 7)]),
             INVALID),
            ("no images", vision_request(self.args.classifier, []), INVALID),
            ("top_k", vision_request(self.args.classifier, [self.raw], num(3, 100000)),
             INVALID),
            ("unknown model", vision_request("no_such_model", [self.raw]), NOT_FOUND),
            # Classify is a raw method (its bytes stay in gRPC's buffer, server/api/
            # deferred_classify.h): bytes protobuf cannot parse get INVALID_ARGUMENT naming the
            # message type. (Generated methods get UNIMPLEMENTED without a message from gRPC
            # 1.51's callback API itself.)
            ("truncated proto", vision_request(self.args.classifier, [self.raw])[:-5],
             grpc.StatusCode.INVALID_ARGUMENT),
        ])
        self.call(f"classify bad: {bad[0]}", "/vitserve.v1.Vision/Classify", bad[1],
                  {bad[2].name})

    def classify_cancelled(self, rng):
        self.call("classify cancelled", "/vitserve.v1.Vision/Classify",
                  vision_request(self.args.classifier, [self.image(rng)]),
                  {OK.name, CANCELLED.name, BUSY.name}, cancel_after=rng.uniform(0, 0.05))

    def classify_short_deadline(self, rng):
        self.call("classify 5 ms deadline", "/vitserve.v1.Vision/Classify",
                  vision_request(self.args.classifier, [self.image(rng)]),
                  {OK.name, DEADLINE.name, BUSY.name}, timeout=0.005)

    def detect(self, rng):
        self.call("detect", "/vitserve.v1.Vision/Detect",
                  vision_request(self.args.detector, [self.image(rng)]), {OK.name, BUSY.name})
        self.call("detect on a classifier", "/vitserve.v1.Vision/Detect",
                  vision_request(self.args.classifier, [self.raw]), {INVALID.name})

    def segment(self, rng):
        fmt = num(3, rng.randint(0, 1))
        self.call("segment", "/vitserve.v1.Vision/Segment",
                  vision_request(self.args.segmenter, [self.image(rng)], fmt),
                  {OK.name, BUSY.name})

    def stream(self, rng):
        method = self.channel.stream_stream("/vitserve.v1.Vision/ClassifyStream",
                                            request_serializer=None, response_deserializer=None)
        count = rng.randint(1, 4)
        requests = [vision_request(self.args.classifier, [self.raw], ld(4, f"r{i}"))
                    for i in range(count)]
        cancel = rng.random() < 0.3
        action = "classify stream (cancelled)" if cancel else "classify stream"
        self.begin()
        try:
            responses = method(iter(requests), timeout=60)
            received = 0
            for _ in responses:
                received += 1
                if cancel:
                    responses.cancel()
            self.record(action, OK.name if received == count else f"{received}/{count} answers",
                        {OK.name})
        except grpc.RpcError as error:
            allowed = {CANCELLED.name, BUSY.name} if cancel else {BUSY.name}
            self.record(action, error.code().name, allowed, error.details() or "")

    def kserve_stream(self, rng):
        """ModelStreamInfer (Triton's semantics): one answer per request, carrying its id; a bad
        request is answered in-band (error_message "INVALID_ARGUMENT: ...") and the stream goes
        on."""
        method = self.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                            request_serializer=None, response_deserializer=None)
        size = self.args.input_size
        pixels = bytes(3 * size * size)
        good_ones = [rng.random() < 0.7 for _ in range(rng.randint(1, 4))]
        requests = [infer_request(self.args.classifier, "UINT8", [1, 3, size, size],
                                  pixels if good else pixels[:100], request_id=f"s{i}")
                    for i, good in enumerate(good_ones)]
        cancel = rng.random() < 0.3
        action = "kserve stream (cancelled)" if cancel else "kserve stream"
        self.begin()
        try:
            responses = method(iter(requests), timeout=60)
            wrong = []
            answered = set()
            for response in responses:
                fields = length_delimited_fields(response)
                request_id = length_delimited_fields(fields.get(2, b"")).get(3, b"").decode()
                error = fields.get(1, b"").decode(errors="replace")
                answered.add(request_id)
                good = request_id.startswith("s") and good_ones[int(request_id[1:])]
                if good and error and not error.startswith("RESOURCE_EXHAUSTED"):
                    wrong.append(f"{request_id}: {error}")
                if not good and not error.startswith("INVALID_ARGUMENT"):
                    wrong.append(f"{request_id}: {error or 'answered without an error'}")
                if cancel:
                    responses.cancel()
            if len(answered) < len(requests):
                wrong.append(f"{len(answered)} of {len(requests)} requests answered")
            self.record(action, "wrong answers" if wrong else OK.name, {OK.name},
                        "; ".join(wrong))
        except grpc.RpcError as error:
            allowed = {CANCELLED.name, BUSY.name} if cancel else {BUSY.name}
            self.record(action, error.code().name, allowed, error.details() or "")

    def catalogue(self, rng):
        self.call("list models", "/vitserve.v1.Vision/ListModels", b"", {OK.name})
        name = rng.choice([self.args.classifier, self.args.detector, "no_such_model"])
        self.call("get model", "/vitserve.v1.Vision/GetModel", ld(1, name),
                  {NOT_FOUND.name} if name == "no_such_model" else {OK.name})
        self.call("kserve live", "/inference.GRPCInferenceService/ServerLive", b"", {OK.name})
        self.call("kserve model ready", "/inference.GRPCInferenceService/ModelReady",
                  ld(1, self.args.classifier), {OK.name})
        self.call("kserve metadata", "/inference.GRPCInferenceService/ModelMetadata",
                  ld(1, self.args.classifier), {OK.name})

    def model_infer(self, rng):
        size = self.args.input_size
        pixels = bytes(rng.randrange(256) for _ in range(64)) * (3 * size * size // 64 + 1)
        good = infer_request(self.args.classifier, "UINT8", [1, 3, size, size],
                             pixels[:3 * size * size])
        self.call("kserve infer", "/inference.GRPCInferenceService/ModelInfer", good,
                  {OK.name, BUSY.name})
        bad = infer_request(self.args.classifier, "UINT8", [1, 3, size, size], pixels[:100])
        self.call("kserve infer bad bytes", "/inference.GRPCInferenceService/ModelInfer", bad,
                  {INVALID.name})

    def model_churn(self, rng):
        """Unloads and reloads the churned model (KServe repository API, gRPC or REST) while
        other threads send it requests: both calls succeed whatever state the model is in (the
        server serialises loads and unloads), and no request may crash or hang the server."""
        model = self.args.churned
        for verb in ("Unload", "Load"):
            if rng.random() < 0.5:
                self.call(f"churn: {verb.lower()}",
                          f"/inference.GRPCInferenceService/RepositoryModel{verb}", ld(2, model),
                          {OK.name}, timeout=120)
            else:
                url = f"http://{self.args.rest}/v2/repository/models/{model}/{verb.lower()}"
                self.rest_call(f"churn: rest {verb.lower()}",
                               urllib.request.Request(url, data=b"", method="POST"), {"200"},
                               timeout=120)
            if verb == "Unload":
                time.sleep(rng.uniform(0, 0.2))  # Requests meet the unloaded model meanwhile.

    def churned_traffic(self, rng):
        """Requests to the model that model_churn unloads and reloads: served, or UNAVAILABLE
        while it is unloaded or loading (a request accepted before an unload still finishes)."""
        model, size = self.args.churned, self.args.input_size
        allowed = {OK.name, BUSY.name, grpc.StatusCode.UNAVAILABLE.name}
        self.call("churned classify", "/vitserve.v1.Vision/Classify",
                  vision_request(model, [self.image(rng), self.raw]), allowed)
        self.call("churned classify cancelled", "/vitserve.v1.Vision/Classify",
                  vision_request(model, [self.image(rng)]), allowed | {CANCELLED.name},
                  cancel_after=rng.uniform(0, 0.05))
        self.call("churned kserve infer", "/inference.GRPCInferenceService/ModelInfer",
                  infer_request(model, "UINT8", [1, 3, size, size], bytes(3 * size * size)),
                  allowed)
        self.call("churned get model", "/vitserve.v1.Vision/GetModel", ld(1, model), {OK.name})

    def rest(self, rng):
        name, data = rng.choice(self.images)
        base = f"http://{self.args.rest}"
        for action, url, body, allowed in (
                ("rest classify", f"{base}/v1/models/{self.args.classifier}:classify", data,
                 {"200", "429"}),
                ("rest classify bad body", f"{base}/v1/models/{self.args.classifier}:classify",
                 b"not an image", {"400"}),
                ("rest model metadata", f"{base}/v2/models/{self.args.classifier}", None,
                 {"200"})):
            request = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                             headers={"Content-Type": "application/octet-stream"})
            self.rest_call(action, request, allowed)

    def worker(self, seed, deadline):
        rng = random.Random(seed)
        actions = [(self.classify, 6), (self.classify_bad, 4), (self.classify_cancelled, 2),
                   (self.classify_short_deadline, 1), (self.detect, 2), (self.segment, 2),
                   (self.stream, 2), (self.catalogue, 1), (self.model_infer, 2), (self.rest, 2),
                   (self.kserve_stream, 2)]
        if self.args.churned:
            actions += [(self.model_churn, 1), (self.churned_traffic, 3)]
        functions = [f for f, _ in actions]
        weights = [w for _, w in actions]
        while time.monotonic() < deadline and not self.server_gone.is_set():
            rng.choices(functions, weights)[0](rng)

    def run(self):
        deadline = time.monotonic() + self.args.seconds
        threads = [threading.Thread(target=self.worker, args=(seed, deadline))
                   for seed in range(self.args.threads)]
        started = time.monotonic()
        for t in threads:
            t.start()
        next_progress = started + 30  # A progress line every 30 s.
        send_sigterm_at = started + self.args.sigterm_after if self.args.sigterm_after else None
        while time.monotonic() < deadline:
            time.sleep(min(0.1 if send_sigterm_at else 1.0, max(0.0, deadline - time.monotonic())))
            if (send_sigterm_at is not None and self.sigterm_at is None
                    and time.monotonic() >= send_sigterm_at):
                self.sigterm_at = time.monotonic()  # Before the signal: calls failing at once
                os.kill(self.args.server_pid, signal.SIGTERM)  # are judged by it.
                print(f"[soak] SIGTERM sent after {self.sigterm_at - started:.0f} s, the load "
                      "going on", flush=True)
            if self.args.server_pid and not process_alive(self.args.server_pid):
                self.server_gone.set()
                if self.sigterm_at is not None:
                    print(f"[soak] the server exited {time.monotonic() - self.sigterm_at:.1f} s "
                          "after SIGTERM", flush=True)
                    break
                # Every call from now on would fail to connect: stop, and say why.
                print(f"[soak] the server (pid {self.args.server_pid}) exited after "
                      f"{time.monotonic() - started:.0f} s; stopping", flush=True)
                break
            if time.monotonic() >= next_progress:
                next_progress += 30
                with self.lock:
                    done = sum(self.outcomes.values())
                print(f"[soak] {time.monotonic() - started:.0f} s: {done} calls, "
                      f"{len(self.unexpected)} unexpected", flush=True)
        for t in threads:
            t.join()
        width = max(len(a) for a, _ in self.outcomes) + 2
        for (action, outcome), count in sorted(self.outcomes.items()):
            print(f"{action:<{width}} {outcome:<20} {count}")
        for action, outcome, detail in self.unexpected[:20]:
            print(f"[soak] UNEXPECTED {action}: {outcome}: {detail}")
        if self.sigterm_at is not None:
            # Calls that ended before SIGTERM are not counted (record() ran before it was set).
            print(f"[soak] {sum(self.drained.values())} calls begun before SIGTERM ended after "
                  f"it: {dict(self.drained)}")
        served = sum(c for (a, o), c in self.outcomes.items() if o in ("OK", "200"))
        total = sum(self.outcomes.values())
        print(f"[soak] {total} calls in {time.monotonic() - started:.0f} s, {served} served, "
              f"{len(self.unexpected)} unexpected")
        if self.server_gone.is_set() and self.sigterm_at is None:
            return 1
        return 0 if not self.unexpected and served > 0 else 1


def process_alive(pid):
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", required=True, help="gRPC address, host:port")
    parser.add_argument("--rest", required=True, help="REST address, host:port")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--classifier", default="classifier")
    parser.add_argument("--detector", default="detector")
    parser.add_argument("--segmenter", default="segmenter")
    parser.add_argument("--churned", default="",
                        help="a classifier to unload and reload during the soak, with requests "
                        "to it meanwhile (none by default)")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="the server's process: the soak stops and fails when it exits")
    parser.add_argument("--sigterm-after", type=float, default=0,
                        help="send the server (--server-pid) SIGTERM after this many seconds "
                        "while the load goes on: every call begun before it must still get "
                        "its usual answer (a drain loses nothing); later ones may be refused")
    parser.add_argument("--input-size", type=int, default=224,
                        help="the classifier's input size (KServe tensors)")
    args = parser.parse_args()
    if args.sigterm_after and not args.server_pid:
        parser.error("--sigterm-after needs --server-pid")
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
