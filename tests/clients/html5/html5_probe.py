#!/usr/bin/python3
"""The OpenStack browser console, headless: spice-html5 behind websockify in Chromium.

Used by vmm-glue/tests/spice_html5.rs. It runs the same bridge nova-spicehtml5proxy is
built on:

    Chromium --ws--> websockify (--web /usr/share/spice-html5) --tcp--> our SPICE port

and drives Chromium over the DevTools protocol on --remote-debugging-pipe (fds 3 and 4),
so no debugging TCP port is opened and only Python's standard library is needed.

Steps: pick a free loopback port and start websockify on it (own session), start headless
Chromium with a fresh --user-data-dir (own session), open
http://127.0.0.1:WS/spice_auto.html?host=127.0.0.1&port=WS[&password=PW], then poll the
spice-html5 display canvas (#spice_surface_0) every POLL seconds: its size and a CRC-32
of its R,G,B bytes (computed in the page). It stops when

  * --expect is given: the canvas equals that file (raw R,G,B rows) and --size, or
  * otherwise: the canvas has --size (if given) and its CRC has not changed for --settle s,

or when --timeout passes, a JavaScript dialog opens (spice-html5 asks for a password
after "Permission denied."), or spice-html5 reports an error. Then it writes the canvas
as raw R,G,B rows to --out (top-down, width*3 per row) and one JSON report line on
stdout, and kills every process it started (by process group).

Exit status: 0 done; 2 cannot reach the SPICE server (websockify "Failed to connect");
3 spice-html5 failed (permission denied, link error, JS exception); 4 timeout;
5 setup failure (missing chromium / websockify / spice-html5, browser did not start).

Report keys: ok, exit_code, reason, url, canvas{width,height,crc32,alpha_not_255},
timings_ms{websockify_ready, browser_ready, navigate, load_event, canvas, first_match,
settled} (all relative to the probe's start; page-load-to-frame durations are
first_match - navigate and first_match - load_event), navigate_to_match_ms,
load_to_match_ms, warnings (spice-html5 "WARNING:"/"ERROR:" lines), console,
exceptions, dialogs, message_div, websockify_log_tail.
"""

import argparse
import base64
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib

T0 = time.monotonic()


def now_ms():
    return round((time.monotonic() - T0) * 1000.0, 1)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_libc = None


def _die_with_parent():
    """preexec_fn: SIGKILL this child if the probe dies (PR_SET_PDEATHSIG)."""
    try:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def pids_mentioning(marker):
    """Processes whose command line contains `marker` (our private temp dir)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


class Procs:
    """Every process group the probe started; killed on exit.

    Anything that left its group but still names our private temp dir on its command
    line is killed by pid too: Chromium's crash handler setsid()s away, but its
    --database lies under our XDG_CONFIG_HOME (--disable-crashpad-for-testing, which
    would avoid it, makes the network service crash on an FD ownership check).
    """

    def __init__(self, marker):
        self.groups = []
        self.marker = marker

    def add(self, p):
        self.groups.append(p)

    def kill_all(self):
        for p in self.groups:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 3.0
        for p in self.groups:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # Group members (websockify's per-connection children, Chromium's helpers) too.
        for p in self.groups:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.groups = []
        for pid in pids_mentioning(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Cdp:
    """A DevTools client over Chromium's --remote-debugging-pipe (NUL-terminated JSON)."""

    def __init__(self, wfd, rfd):
        self.wfd, self.rfd = wfd, rfd
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _send(self, method, params, session):
        self.next_id += 1
        m = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            m["sessionId"] = session
        data = json.dumps(m).encode() + b"\0"
        while data:
            n = os.write(self.wfd, data)
            data = data[n:]
        return self.next_id

    def _event(self, msg):
        self.events.append(msg)
        # A page blocked in alert()/prompt() answers no Runtime.evaluate: dismiss the
        # dialog at once (the reply is ignored); the caller sees the event.
        if msg["method"] == "Page.javascriptDialogOpening":
            self._send("Page.handleJavaScriptDialog", {"accept": False}, msg.get("sessionId"))

    def _read_one(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("DevTools pipe: no message")
            r, _, _ = select.select([self.rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise EOFError("DevTools pipe closed (browser exited)")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=10.0):
        mid = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._event(msg)

    def pump(self, wait=0.0):
        """Collects events that arrived (waiting up to `wait` s for the first)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                if b"\0" not in self.buf:
                    r, _, _ = select.select(
                        [self.rfd], [], [], max(0.0, deadline - time.monotonic())
                    )
                    if not r:
                        return
                msg = self._read_one(time.monotonic() + 1.0)
            except TimeoutError:
                return
            if "method" in msg:
                self._event(msg)
            wait = 0.0
            deadline = time.monotonic()


# Page-side poll: canvas size, CRC-32 of its R,G,B bytes, alpha check.
POLL_JS = r"""
(() => {
  const div = document.getElementById('message-div');
  const msgs = div ? div.innerText : '';
  const c = document.getElementById('spice_surface_0');
  if (!c) return {canvas: false, messages: msgs};
  if (!window.__probeCrcTable) {
    const t = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let k = n;
      for (let j = 0; j < 8; j++) k = (k & 1) ? (0xEDB88320 ^ (k >>> 1)) : (k >>> 1);
      t[n] = k;
    }
    window.__probeCrcTable = t;
  }
  const T = window.__probeCrcTable;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let crc = -1, alpha = 0;
  for (let i = 0; i < d.length; i += 4) {
    crc = T[(crc ^ d[i]) & 0xff] ^ (crc >>> 8);
    crc = T[(crc ^ d[i + 1]) & 0xff] ^ (crc >>> 8);
    crc = T[(crc ^ d[i + 2]) & 0xff] ^ (crc >>> 8);
    if (d[i + 3] !== 255) alpha++;
  }
  return {canvas: true, width: c.width, height: c.height, crc: (crc ^ -1) >>> 0,
          alpha_not_255: alpha, messages: msgs};
})()
"""

DUMP_JS = r"""
(() => {
  const c = document.getElementById('spice_surface_0');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const parts = [];
  for (let i = 0; i < d.length; i += 0x8000)
    parts.push(String.fromCharCode.apply(null, d.subarray(i, i + 0x8000)));
  return btoa(parts.join(''));
})()
"""


def rgba_to_rgb(rgba):
    n = len(rgba) // 4
    out = bytearray(n * 3)
    out[0::3] = rgba[0::4]
    out[1::3] = rgba[1::4]
    out[2::3] = rgba[2::4]
    return bytes(out)


def start_websockify(args, spice_port, log_path, procs):
    """websockify on a free loopback port; retried if the port was taken meanwhile."""
    exe = shutil.which(args.websockify)
    if not exe:
        return None, None
    for _ in range(5):
        ws_port = free_port()
        log = open(log_path, "ab")
        p = subprocess.Popen(
            [exe, "--web", args.web, f"127.0.0.1:{ws_port}", f"{args.spice_host}:{spice_port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        procs.add(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", ws_port), timeout=0.5).close()
                return p, ws_port
            except OSError:
                time.sleep(0.05)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    return None, None


def start_chromium(args, home, log_path, procs):
    exe = shutil.which(args.chromium)
    if not exe:
        return None, None
    profile = os.path.join(home, "profile")
    # Nothing of the browser's may land in the real home directory.
    env = dict(
        os.environ,
        HOME=home,
        XDG_CONFIG_HOME=os.path.join(home, "config"),
        XDG_CACHE_HOME=os.path.join(home, "cache"),
        # Its singleton socket directories too (removed with `home`).
        TMPDIR=home,
    )
    # Our ends and Chromium's: it reads commands on fd 3 and writes replies on fd 4.
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    hi_r, hi_w = os.dup(cmd_r), os.dup(out_w)  # out of the way of 3 and 4

    def child_setup():
        _die_with_parent()
        os.dup2(hi_r, 3)
        os.dup2(hi_w, 4)

    log = open(log_path, "ab")
    p = subprocess.Popen(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1280,1024",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=child_setup,
        pass_fds=(3, 4),
    )
    log.close()
    procs.add(p)
    for fd in (cmd_r, out_w, hi_r, hi_w):
        os.close(fd)
    return p, Cdp(cmd_w, out_r)


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spice-port", type=int, required=True)
    ap.add_argument("--spice-host", default="127.0.0.1")
    ap.add_argument("--password")
    ap.add_argument("--size", help="WxH the canvas must have")
    ap.add_argument("--expect", help="raw R,G,B rows the canvas must equal")
    ap.add_argument("--out", help="write the canvas here as raw R,G,B rows")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--poll", type=float, default=0.02)
    ap.add_argument("--log-dir", help="keep websockify.log / chromium.log here")
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--websockify", default="websockify")
    ap.add_argument("--web", default="/usr/share/spice-html5")
    args = ap.parse_args()

    report = {
        "ok": False,
        "exit_code": 1,
        "reason": "",
        "url": None,
        "canvas": None,
        "timings_ms": {},
        "warnings": [],
        "console": [],
        "exceptions": [],
        "dialogs": [],
        "message_div": "",
    }
    timings = report["timings_ms"]
    tmp = tempfile.mkdtemp(prefix="html5-probe-")
    procs = Procs(tmp)
    log_dir = args.log_dir or tmp
    os.makedirs(log_dir, exist_ok=True)
    ws_log = os.path.join(log_dir, "websockify.log")
    cr_log = os.path.join(log_dir, "chromium.log")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def finish(code, reason):
        report["exit_code"] = code
        report["ok"] = code == 0
        report["reason"] = reason
        return code

    want_size = None
    if args.size:
        w, h = args.size.lower().split("x")
        want_size = (int(w), int(h))
    want_crc = None
    if args.expect:
        with open(args.expect, "rb") as f:
            want_crc = zlib.crc32(f.read())

    code = 1
    try:
        if not os.path.isfile(os.path.join(args.web, "spice_auto.html")):
            code = finish(5, f"{args.web}/spice_auto.html is missing (package spice-html5)")
            return code
        ws, ws_port = start_websockify(args, args.spice_port, ws_log, procs)
        if ws is None:
            code = finish(5, "websockify is missing or did not start")
            return code
        timings["websockify_ready"] = now_ms()
        browser, cdp = start_chromium(args, tmp, cr_log, procs)
        if browser is None:
            code = finish(5, "chromium is missing")
            return code
        try:
            cdp.call("Browser.getVersion", timeout=30)
        except (TimeoutError, EOFError) as e:
            code = finish(5, f"chromium did not start: {e}")
            return code
        timings["browser_ready"] = now_ms()
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sess = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        cdp.call("Page.enable", session=sess)
        cdp.call("Runtime.enable", session=sess)
        url = f"http://127.0.0.1:{ws_port}/spice_auto.html?host=127.0.0.1&port={ws_port}"
        if args.password is not None:
            url += "&password=" + "".join(
                c if c.isalnum() else "%{:02X}".format(ord(c)) for c in args.password
            )
        report["url"] = url
        timings["navigate"] = now_ms()
        cdp.call("Page.navigate", {"url": url}, session=sess)

        deadline = time.monotonic() + args.timeout
        last_crc, stable_since = None, None
        state = None
        while True:
            cdp.pump()
            for ev in cdp.events:
                m, p = ev["method"], ev.get("params", {})
                if m == "Page.loadEventFired" and "load_event" not in timings:
                    timings["load_event"] = now_ms()
                elif m == "Runtime.consoleAPICalled":
                    text = " ".join(
                        str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
                    )
                    report["console"].append(text)
                    if text.startswith("WARNING:") or text.startswith("ERROR:"):
                        report["warnings"].append(text)
                elif m == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    report["exceptions"].append(
                        d.get("exception", {}).get("description") or d.get("text", "")
                    )
                elif m == "Page.javascriptDialogOpening":
                    report["dialogs"].append(f"{p.get('type')}: {p.get('message')}")
            cdp.events.clear()
            if report["dialogs"]:
                denied = any("Permission denied" in w for w in report["warnings"])
                code = finish(
                    3,
                    "spice-html5 asked for a password"
                    + (" after Permission denied." if denied else "")
                    + f" ({report['dialogs'][0]})",
                )
                break
            if report["exceptions"]:
                code = finish(3, f"JavaScript exception: {report['exceptions'][0]}")
                break
            errors = [w for w in report["warnings"] if w.startswith("ERROR:")]
            if errors:
                failed = any("Failed to connect" in l for l in tail(ws_log, 200))
                code = finish(2 if failed else 3, f"spice-html5: {errors[0]}")
                break

            res = cdp.call(
                "Runtime.evaluate",
                {"expression": POLL_JS, "returnByValue": True},
                session=sess,
            )
            state = res.get("result", {}).get("value") or {}
            report["message_div"] = state.get("messages", "")
            t = time.monotonic()
            if state.get("canvas"):
                if "canvas" not in timings:
                    timings["canvas"] = now_ms()
                size_ok = want_size is None or (state["width"], state["height"]) == want_size
                if want_crc is not None:
                    if size_ok and state["crc"] == want_crc:
                        timings["first_match"] = now_ms()
                        code = finish(0, "canvas equals the expected picture")
                        break
                else:
                    if state["crc"] != last_crc:
                        last_crc, stable_since = state["crc"], t
                    elif size_ok and t - stable_since >= args.settle:
                        timings["settled"] = now_ms()
                        code = finish(0, f"canvas unchanged for {args.settle} s")
                        break
            if t > deadline:
                failed = any("Failed to connect" in l for l in tail(ws_log, 200))
                if failed:
                    code = finish(2, "websockify: Failed to connect to the SPICE server")
                elif not state.get("canvas"):
                    code = finish(4, f"no display canvas within {args.timeout} s")
                else:
                    code = finish(
                        4,
                        f"canvas {state['width']}x{state['height']} crc {state['crc']:#010x}"
                        f" did not reach the expected picture within {args.timeout} s",
                    )
                break
            time.sleep(args.poll)

        if state and state.get("canvas"):
            report["canvas"] = {
                "width": state["width"],
                "height": state["height"],
                "crc32": state["crc"],
                "alpha_not_255": state["alpha_not_255"],
            }
            if args.out:
                res = cdp.call(
                    "Runtime.evaluate",
                    {"expression": DUMP_JS, "returnByValue": True},
                    session=sess,
                    timeout=30,
                )
                rgba = base64.b64decode(res["result"]["value"])
                with open(args.out, "wb") as f:
                    f.write(rgba_to_rgb(rgba))
        if "first_match" in timings:
            report["navigate_to_match_ms"] = round(timings["first_match"] - timings["navigate"], 1)
            if "load_event" in timings:
                report["load_to_match_ms"] = round(
                    timings["first_match"] - timings["load_event"], 1
                )
        try:
            cdp.call("Browser.close", timeout=3)
        except Exception:
            pass
    except KeyboardInterrupt as e:
        code = finish(4, f"interrupted ({e})")
    except Exception as e:  # report, never hang
        code = finish(1, f"probe error: {type(e).__name__}: {e}")
    finally:
        procs.kill_all()
        report["websockify_log_tail"] = tail(ws_log, 10)
        if not report["ok"]:
            report["chromium_log_tail"] = tail(cr_log, 10)
        report["elapsed_ms"] = now_ms()
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(report), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
