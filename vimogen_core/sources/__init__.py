"""Readers of motion sources, and the sources stage that materialises their raw takes.

SOURCES are the kinds of source a take comes from; the video ones hold motion recovered from video,
whose heights and jitter curation treats with suspicion.
"""
SOURCES = ("optical_mocap", "in_the_wild_video", "synthetic_video")
VIDEO_SOURCES = ("in_the_wild_video", "synthetic_video")
