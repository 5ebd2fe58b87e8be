"""Faces, the pipeline's second stage: detect in one image, track through a video, align.

- :mod:`~avemo.face.detect`: CenterFace (bundled) and SCRFD detectors -> boxes, scores, 5
  landmarks per face.
- :mod:`~avemo.face.track`: the tracker (IoU and centre distance, Hungarian matching) and the
  choice of the dominant tracks.
- :mod:`~avemo.face.scan`: pass 1 over a video (decode, detect on every k-th frame, track) ->
  :class:`~avemo.face.scan.FaceScan`, its per-frame table, and saved crops.
- :mod:`~avemo.face.align`: crops from landmarks: ArcFace-aligned 112/224 RGB (pipelines) and
  FER-framed 64x64 gray (the expression model).
"""
