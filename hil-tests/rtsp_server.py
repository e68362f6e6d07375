#!/usr/bin/python3
"""A real RTSP server for tests and benchmarks: GStreamer's gst-rtsp-server on 127.0.0.1.

Usage: rtsp_server.py PORT [SOURCE]
Serves rtsp://127.0.0.1:PORT/live and prints READY when bound. SOURCE is one of:
  h264 (default)  a live 640x360 test pattern at 15 fps, encoded with x264, shared by all clients
  h265            the same pattern encoded with x265
  h264-freeze     the h264 pattern for 3 s, then no more video while the session stays up (an
                  encoder that hangs while the camera's RTSP server, RTCP reports included,
                  goes on)
  h264-auth       the h264 pattern, for user `admin` with password `p@ss:w/rd` only (RTSP
                  Digest authentication, as IP cameras ask for)
  FILE.mp4        an H.264 MP4 sent as it is (no re-encoding), in real time, from its start
                  for each client (the capacity benchmark's cameras)
Run with Debian's /usr/bin/python3 (it has the `gi` bindings).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

port = sys.argv[1]
source = sys.argv[2] if len(sys.argv) > 2 else "h264"
Gst.init(None)
pattern = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=15/1"
factory = GstRtspServer.RTSPMediaFactory()
if source == "h264-freeze":
    launch = f"{pattern} ! valve name=freeze ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1"
    factory.set_shared(True)

    def freeze_later(_factory, media):
        valve = media.get_element().get_by_name("freeze")
        GLib.timeout_add_seconds(3, lambda: valve.set_property("drop", True))

    factory.connect("media-configure", freeze_later)
elif source in ("h264", "h264-auth"):
    launch = f"{pattern} ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1"
    factory.set_shared(True)
elif source == "h265":
    launch = f"{pattern} ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph265pay name=pay0 pt=96 config-interval=1"
    factory.set_shared(True)
else:
    launch = f"filesrc location={source} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1"
factory.set_launch(f"( {launch} )")
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
if source == "h264-auth":
    auth = GstRtspServer.RTSPAuth()
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth.add_digest("admin", "p@ss:w/rd", token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_role_from_structure(
        Gst.Structure.new_from_string("viewer, media.factory.access=true, media.factory.construct=true")
    )
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit("cannot bind port " + port)
print("READY", flush=True)
GLib.MainLoop().run()
