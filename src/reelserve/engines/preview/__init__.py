"""The CPU preview engine: real, playable clips that honour the request, without any model.

It is honest about what it is: no generative model runs. It moves a virtual camera over the
input images, cross-fades between first and last frames, plays and grades input videos, and draws
a seeded animated scene with the prompt as a caption. Everything is deterministic for a seed.

Per workflow (see ``docs/media.md`` for the full description):

* ``i2v``: frame 0 is the first image fitted to the output size by
  :func:`~reelserve.media.frames.cover_fit` (scale to cover, centre crop); the camera then moves
  over it (``cameraControl``, or a gentle seeded drift and zoom without one). Areas the camera
  reveals beyond the image are filled by mirroring it.
* ``flf2v``: starts exactly on the fitted first image and ends exactly on the fitted last image;
  in between the first image moves with the camera while the last one settles into place, with
  a smooth (smoothstep) cross-fade.
* ``r2v``: a slideshow of the reference images and reference videos (played at the output fps),
  each with a slow push-in, joined by cross-fades.
* ``v2v``: the input video re-timed to the output fps and re-sized to the output size, with a
  visible seeded colour grade and vignette; its audio is carried with ``keepOriginalSound``.
* ``t2v``: a seeded parallax landscape with drifting shapes, the prompt as a caption.

The package follows the engine's seams: :mod:`~reelserve.engines.preview.camera` (the virtual
camera: poses, Kling's axes and presets, the homography and the supersampled canvas it samples),
:mod:`~reelserve.engines.preview.scenes` (frame sources without a camera: the t2v landscape,
re-timed input videos, cross-fades) and :mod:`~reelserve.engines.preview.engine` (the
:class:`PreviewEngine` that picks and paces them per workflow).
"""

from reelserve.engines.preview.camera import PRESETS, CameraPose, camera_pose
from reelserve.engines.preview.engine import SOUND_PARAMETER, PreviewEngine

__all__ = [
    "PRESETS",
    "SOUND_PARAMETER",
    "CameraPose",
    "PreviewEngine",
    "camera_pose",
]
