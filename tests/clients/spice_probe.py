#!/usr/bin/python3
"""A scriptable real SPICE client: spice-gtk's SpiceClientGLib through GObject introspection.

Used by spice-server/tests/spice_gtk.rs. It connects a session, opens the channels the
server announces (those named in --channels), and talks a line protocol:

stdout (one event per line, flushed):
  OPENED <type>:<id>          a channel finished linking
  EVENT <type>:<id> <n>       any other channel event (20 connect error, 22 link, 23 auth, 24 io, 6 closed...)
  PRIMARY <w> <h> <stride> <format>
  INVALIDATE <x> <y> <w> <h>
  MARK
  MONITORS max=<n>            the display channel's monitors config changed (max_allowed)
  MOUSE_MODE <n>
  CURSOR_SET <w> <h> <hot_x> <hot_y> <hex of the w*h*4 BGRA bytes, or - when absent or large>
  CURSOR_MOVE <x> <y> | CURSOR_HIDE | CURSOR_RESET
  KEY_MODIFIERS <n>           the server reported the guest keyboard LEDs (inputs-modifiers)
  DUMPED <path>               the primary's raw bytes (B,G,R,X rows, stride*height) were written
  SENT                        an input command was sent
  DISCONNECTED
  TIMING first_invalidate_ms <ms>   time from session connect to the first display invalidate
  ERROR <text>

stdin (one command per line):
  dump <path> | key_press <code> | key_release <code> | motion <dx> <dy> <buttons>
  position <x> <y> <display> <buttons> | button_press <b> <buttons> | button_release <b> <buttons>
  mouse_mode <1 server | 2 client>
  quit
"""

import argparse
import ctypes
import os
import sys

try:
    import gi

    gi.require_version("SpiceClientGLib", "2.0")
    from gi.repository import GLib, GObject, SpiceClientGLib as Spice
except (ImportError, ValueError) as e:  # pragma: no cover - environment problem
    print("ERROR cannot load SpiceClientGLib: %s" % e, flush=True)
    sys.exit(5)

TYPE_NAMES = {1: "main", 2: "display", 3: "inputs", 4: "cursor"}


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Probe:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.session = Spice.Session()
        self.session.set_property("host", args.host)
        self.session.set_property("port", str(args.port))
        if args.password is not None:
            self.session.set_property("password", args.password)
        if args.cache_size is not None:
            self.session.set_property("cache-size", args.cache_size)
        if args.glz_window_size is not None:
            self.session.set_property("glz-window-size", args.glz_window_size)
        if args.preferred_compression is not None:
            self.session.set_property("preferred-compression", args.preferred_compression)
        self.wanted = set(args.channels.split(",")) if args.channels else set()
        self.channels = {}
        self.primary = None  # (ptr, w, h, stride, fmt)
        self.inputs = None
        self.main = None
        self.t0 = None
        self.first_invalidate = False
        GObject.Object.connect(self.session, "channel-new", self.on_channel_new)
        GObject.Object.connect(self.session, "disconnected", self.on_disconnected)

    def key(self, ch):
        return "%s:%d" % (
            TYPE_NAMES.get(ch.get_property("channel-type"), "other"),
            ch.get_property("channel-id"),
        )

    def on_channel_new(self, session, ch):
        name = TYPE_NAMES.get(ch.get_property("channel-type"), "other")
        GObject.Object.connect(ch, "channel-event", self.on_event)
        if isinstance(ch, Spice.MainChannel):
            self.main = ch
            GObject.Object.connect(ch, "main-mouse-update", self.on_mouse_update)
            return
        if name not in self.wanted:
            return
        self.channels[self.key(ch)] = ch
        if isinstance(ch, Spice.DisplayChannel):
            GObject.Object.connect(ch, "display-primary-create", self.on_primary_create)
            GObject.Object.connect(ch, "display-primary-destroy", self.on_primary_destroy)
            GObject.Object.connect(ch, "display-invalidate", self.on_invalidate)
            GObject.Object.connect(ch, "display-mark", self.on_mark)
            GObject.Object.connect(ch, "notify::monitors", self.on_monitors)
            GObject.Object.connect(ch, "notify::monitors-max", self.on_monitors)
        if isinstance(ch, Spice.CursorChannel):
            GObject.Object.connect(ch, "cursor-set", self.on_cursor_set)
            GObject.Object.connect(ch, "cursor-move", lambda c, x, y: out("CURSOR_MOVE %d %d" % (x, y)))
            GObject.Object.connect(ch, "cursor-hide", lambda c: out("CURSOR_HIDE"))
            GObject.Object.connect(ch, "cursor-reset", lambda c: out("CURSOR_RESET"))
        if isinstance(ch, Spice.InputsChannel):
            self.inputs = ch
            GObject.Object.connect(
                ch,
                "inputs-modifiers",
                lambda c: out("KEY_MODIFIERS %d" % c.get_property("key-modifiers")),
            )
        Spice.Channel.connect(ch)

    def on_event(self, ch, event):
        ev = int(event)
        if ev == int(Spice.ChannelEvent.OPENED):
            out("OPENED " + self.key(ch))
        else:
            out("EVENT %s %d" % (self.key(ch), ev))

    def on_mouse_update(self, ch):
        out("MOUSE_MODE %d" % ch.get_property("mouse-mode"))

    def on_disconnected(self, session):
        out("DISCONNECTED")

    def on_primary_create(self, ch, fmt, w, h, stride, shmid, imgdata):
        self.primary = (imgdata, w, h, stride, fmt)
        out("PRIMARY %d %d %d %d" % (w, h, stride, fmt))

    def on_monitors(self, ch, _pspec):
        # The "monitors" GArray of structs does not convert through GI; the
        # maximum (the guest's max_allowed) is what changes visibly.
        out("MONITORS max=%d" % ch.get_property("monitors-max"))

    def on_cursor_set(self, ch, w, h, hx, hy, rgba):
        data = "-"
        if rgba and w * h * 4 <= 4096:
            data = ctypes.string_at(rgba, w * h * 4).hex()
        out("CURSOR_SET %d %d %d %d %s" % (w, h, hx, hy, data))

    def on_primary_destroy(self, ch):
        self.primary = None
        out("PRIMARY_DESTROY")

    def on_invalidate(self, ch, x, y, w, h):
        if not self.first_invalidate and self.t0 is not None:
            self.first_invalidate = True
            out("TIMING first_invalidate_ms %.1f" % ((GLib.get_monotonic_time() - self.t0) / 1000.0))
        out("INVALIDATE %d %d %d %d" % (x, y, w, h))

    def on_mark(self, ch, mark):
        out("MARK")

    def command(self, line):
        parts = line.split()
        if not parts:
            return True
        cmd, a = parts[0], [int(x, 0) for x in parts[1:] if cmd_is_numeric(x)]
        if cmd == "quit":
            self.loop.quit()
            return False
        if cmd == "dump":
            if self.primary is None:
                out("ERROR no primary")
                return True
            ptr, w, h, stride, fmt = self.primary
            data = ctypes.string_at(ptr, stride * h)
            with open(parts[1], "wb") as f:
                f.write(data)
            out("DUMPED " + parts[1])
            return True
        if cmd == "mouse_mode":
            Spice.MainChannel.request_mouse_mode(self.main, a[0])
            out("SENT")
            return True
        if self.inputs is None:
            out("ERROR no inputs channel")
            return True
        i = self.inputs
        if cmd == "key_press":
            Spice.InputsChannel.key_press(i, a[0])
        elif cmd == "key_release":
            Spice.InputsChannel.key_release(i, a[0])
        elif cmd == "motion":
            Spice.InputsChannel.motion(i, a[0], a[1], a[2])
        elif cmd == "position":
            Spice.InputsChannel.position(i, a[0], a[1], a[2], a[3])
        elif cmd == "button_press":
            Spice.InputsChannel.button_press(i, a[0], a[1])
        elif cmd == "button_release":
            Spice.InputsChannel.button_release(i, a[0], a[1])
        else:
            out("ERROR unknown command " + cmd)
            return True
        out("SENT")
        return True

    def on_stdin(self, source, condition):
        if condition & (GLib.IOCondition.HUP | GLib.IOCondition.ERR):
            line = sys.stdin.readline()
            if not line:
                self.loop.quit()
                return False
        else:
            line = sys.stdin.readline()
            if not line:
                self.loop.quit()
                return False
        try:
            return self.command(line.strip())
        except Exception as e:  # report, keep going
            out("ERROR %s" % e)
            return True

    def run(self):
        GLib.io_add_watch(
            sys.stdin.fileno(),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            self.on_stdin,
        )
        GLib.timeout_add_seconds(self.args.timeout, self.on_timeout)
        self.t0 = GLib.get_monotonic_time()
        if not Spice.Session.connect(self.session):
            out("ERROR session connect failed")
            return 2
        self.loop.run()
        Spice.Session.disconnect(self.session)
        return 0

    def on_timeout(self):
        out("ERROR timeout")
        self.loop.quit()
        return False


def cmd_is_numeric(x):
    try:
        int(x, 0)
        return True
    except ValueError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password")
    p.add_argument("--channels", default="display,inputs,cursor")
    p.add_argument("--timeout", type=int, default=60)
    p.add_argument("--cache-size", type=int, help="session cache-size (bytes; pixmap cache = /4 pixels)")
    p.add_argument("--glz-window-size", type=int, help="session glz-window-size (bytes)")
    p.add_argument("--preferred-compression", type=int,
                   help="SpiceImageCompression to ask for (1 off .. 7 lz4)")
    args = p.parse_args()
    os.environ.setdefault("SPICE_DISABLE_GL_SCANOUT", "1")
    sys.exit(Probe(args).run())


if __name__ == "__main__":
    main()
