"""A process engine that breaks the protocol in one way, chosen by argv[1],
for tests/test_outside.c (standard library only). It writes its pid to
argv[2] first, so that the test can check compare killed and reaped it."""
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import mg_protocol  # noqa: E402

MODE = sys.argv[1]
with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))


def zeros(shape):
    n = 1
    for d in shape:
        n *= d
    return ("F64", list(shape), bytes(8 * n))


class Liar:
    name = "liar"
    device = "nowhere"

    def __init__(self, cfg, data):
        if MODE == "crash-create":
            sys.exit(3)
        self.cfg = cfg
        self.shape = None

    def step(self, data, step):
        B, T1 = data["tokens"][1]
        self.shape = [B, T1 - 1, self.cfg["vocab_size"]]
        if MODE == "crash-step":
            os.kill(os.getpid(), signal.SIGSEGV)
        if MODE == "hang":
            time.sleep(600)
        if MODE == "refuse-step":
            raise RuntimeError("out of device memory")
        if MODE == "garbage":
            sys.stdout.buffer.write(b"this is not json\n")
            sys.stdout.buffer.flush()
            time.sleep(600)
        return float("nan") if MODE == "nan" else 3.0

    def get(self, what):
        if what == "logits":
            if MODE == "short":
                sys.stdout.buffer.write(b'{"ok": true, "bytes": 4096}\n' + b"\0" * 100)
                sys.stdout.buffer.flush()
                sys.exit(0)
            if MODE == "nan":
                n = self.shape[0] * self.shape[1] * self.shape[2]
                return {"logits": ("F64", self.shape, struct.pack("<%dd" % n, *([float("nan")] * n)))}
            if MODE == "wrong-shape":
                return {"logits": zeros([self.shape[0], self.shape[1], self.shape[2] + 1])}
            if MODE == "missing":
                return {"logit": zeros(self.shape)}
            return {"logits": zeros(self.shape)}
        if what in ("grads", "params"):
            return {what + "/" + t["name"]: zeros(t["shape"]) for t in self.cfg["tensors"]}
        if what == "moments":   # lockstep compares the Adam state too
            return {k + "/" + t["name"]: zeros(t["shape"]) for k in ("adam_m", "adam_v") for t in self.cfg["tensors"]}
        raise ValueError("not asked in these tests: " + what)

    def set_state(self, data):
        pass

    def sample(self, data, temperature):
        raise ValueError("no sampling")


mg_protocol.serve(Liar)
