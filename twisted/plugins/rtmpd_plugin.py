from twisted.application.service import ServiceMaker

rtmpd = ServiceMaker("rtmpd", "rtmpd.tap", "Live-streaming RTMP server: relay, recording, manhole.", "rtmpd")
