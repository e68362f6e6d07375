#!/usr/bin/python3
"""A real RTSP server for tests: GStreamer's gst-rtsp-server on 127.0.0.1.

Usage: rtsp_server.py PORT
Serves rtsp://127.0.0.1:PORT/live, a live 640x360 H.264 test pattern at 15 fps. Prints READY when bound.
Run with Debian's /usr/bin/python3 (it has the `gi` bindings).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port = sys.argv[1]
Gst.init(None)
encoder = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1"
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=15/1 ! {encoder} )"
)
factory.set_shared(True)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit("cannot bind port " + port)
print("READY", flush=True)
GLib.MainLoop().run()
