"""One request just inside and one just outside every rule: right ``code`` and ``parameter``."""

from __future__ import annotations

from typing import Any

import pytest
from catalog_helpers import IMG, O1, i2v, refused, run, wire

from reelserve.errors import ErrorKind, ValidationError
from reelserve.tasks import (
    DeliveryMethod,
    FramePosition,
    OutputFormat,
    OutputType,
    Workflow,
)

VID = "https://example.com/in.mp4"


def frames(*items: Any) -> dict[str, Any]:
    return {"frameImages": list(items)}


# (id, task, code, parameter) -- each must be refused exactly so.
OUTSIDE: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("prompt-1-char", wire(positivePrompt="a"), "invalidPositivePrompt", "positivePrompt"),
    ("prompt-2501", wire(positivePrompt="a" * 2501), "invalidPositivePrompt", "positivePrompt"),
    ("prompt-empty", wire(positivePrompt=""), "invalidPositivePrompt", "positivePrompt"),
    ("prompt-blank", wire(positivePrompt="   "), "invalidPositivePrompt", "positivePrompt"),
    ("prompt-missing-t2v", wire(positivePrompt=...), "missingPositivePrompt", "positivePrompt"),
    ("negative-1", wire(negativePrompt="x"), "invalidNegativePrompt", "negativePrompt"),
    ("negative-2501", wire(negativePrompt="x" * 2501), "invalidNegativePrompt", "negativePrompt"),
    ("cfg-1.01", wire(CFGScale=1.01), "invalidCFGScale", "CFGScale"),
    ("cfg-negative", wire(CFGScale=-0.01), "invalidCFGScale", "CFGScale"),
    ("cfg-step", wire(CFGScale=0.505), "invalidCFGScale", "CFGScale"),
    ("cfg-string", wire(CFGScale="0.5"), "invalidCFGScale", "CFGScale"),
    ("duration-7", wire(duration=7), "invalidDuration", "duration"),
    ("duration-0", wire(duration=0), "invalidDuration", "duration"),
    ("duration-5.5", wire(duration=5.5), "invalidDuration", "duration"),
    ("duration-string", wire(duration="5"), "invalidDuration", "duration"),
    ("width-without-height", wire(width=1280), "invalidDimensions", "height"),
    ("height-without-width", wire(height=720), "invalidDimensions", "width"),
    ("1080p-on-720p-model", wire(width=1920, height=1080), "invalidDimensions", "width"),
    ("swapped-size", wire(width=720, height=1281), "invalidDimensions", "width"),
    ("width-on-6@0", i2v("klingai:6@0", width=1280, height=720), "unsupportedDimensions", "width"),
    ("height-on-6@0", i2v("klingai:6@0", height=720), "unsupportedDimensions", "height"),
    ("width-float", wire(width=1280.0, height=720), "invalidWidth", "width"),
    (
        "last-frame-2@1",
        wire("klingai:2@1", inputs=frames(IMG, IMG)),
        "unsupportedFramePosition",
        "inputs.frameImages.frame",
    ),
    (
        "explicit-last-2@1",
        wire("klingai:2@1", inputs=frames({"image": IMG, "frame": -1}, {"image": IMG, "frame": 0})),
        "unsupportedFramePosition",
        "inputs.frameImages.frame",
    ),
    ("text-only-2@1", wire("klingai:2@1"), "unsupportedWorkflow", "inputs.frameImages"),
    ("text-only-5@2", wire("klingai:5@2"), "unsupportedWorkflow", "inputs.frameImages"),
    ("text-only-6@0", wire("klingai:6@0"), "unsupportedWorkflow", "inputs.frameImages"),
    (
        "frame-middle",
        wire(inputs=frames({"image": IMG, "frame": "middle"})),
        "invalidFrame",
        "inputs.frameImages.frame",
    ),
    (
        "frame-1",
        wire(inputs=frames({"image": IMG, "frame": 1})),
        "invalidFrame",
        "inputs.frameImages.frame",
    ),
    (
        "frame-bool",
        wire(inputs=frames({"image": IMG, "frame": True})),
        "invalidFrame",
        "inputs.frameImages.frame",
    ),
    (
        "frame-twice-first",
        wire(
            "klingai:5@2",
            inputs=frames({"image": IMG, "frame": "first"}, {"image": IMG, "frame": 0}),
        ),
        "invalidFrame",
        "inputs.frameImages.frame",
    ),
    (
        "three-frames",
        wire("klingai:5@2", inputs=frames(IMG, IMG, IMG)),
        "invalidFrameImages",
        "inputs.frameImages",
    ),
    (
        "last-only",
        wire("klingai:5@2", inputs=frames({"image": IMG, "frame": "last"})),
        "invalidFrameImages",
        "inputs.frameImages",
    ),
    (
        "frame-item-no-image",
        wire(inputs=frames({"frame": "first"})),
        "missingFrameImage",
        "inputs.frameImages.image",
    ),
    ("frame-item-number", wire(inputs=frames(42)), "invalidFrameImages", "inputs.frameImages"),
    (
        "frame-empty-image",
        wire(inputs=frames("")),
        "invalidFrameImages",
        "inputs.frameImages.image",
    ),
    ("unknown-parameter", wire(steps=30), "unsupportedParameter", "steps"),
    ("unknown-input", wire(inputs={"audio": "x"}), "unsupportedParameter", "inputs.audio"),
    (
        "unknown-provider-key",
        wire(providerSettings={"klingai": {"mode": "pro"}}),
        "unsupportedParameter",
        "providerSettings.klingai.mode",
    ),
    (
        "unknown-provider",
        wire(providerSettings={"google": {"x": 1}}),
        "unsupportedParameter",
        "providerSettings.google",
    ),
    ("unknown-safety-key", wire(safety={"level": 1}), "unsupportedParameter", "safety.level"),
    (
        "unknown-frame-key",
        wire(inputs=frames({"image": IMG, "weight": 1})),
        "unsupportedParameter",
        "inputs.frameImages.weight",
    ),
    ("unknown-model", wire("klingai:9@9"), "modelNotFound", "model"),
    ("missing-model", {k: v for k, v in wire().items() if k != "model"}, "missingModel", "model"),
    ("number-results-0", wire(numberResults=0), "invalidNumberResults", "numberResults"),
    ("number-results-5", wire(numberResults=5), "invalidNumberResults", "numberResults"),
    ("output-format", wire(outputFormat="GIF"), "invalidOutputFormat", "outputFormat"),
    ("output-type", wire(outputType="file"), "invalidOutputType", "outputType"),
    ("quality-19", wire(outputQuality=19), "invalidOutputQuality", "outputQuality"),
    ("quality-100", wire(outputQuality=100), "invalidOutputQuality", "outputQuality"),
    ("ttl-59", wire(ttl=59), "invalidTtl", "ttl"),
    ("delivery", wire(deliveryMethod="later"), "invalidDeliveryMethod", "deliveryMethod"),
    ("webhook", wire(webhookURL="ftp://x/y"), "invalidWebhookURL", "webhookURL"),
    ("upload", wire(uploadEndpoint="not a url"), "invalidUploadEndpoint", "uploadEndpoint"),
    ("safety-mode", wire(safety={"mode": "paranoid"}), "invalidSafetyMode", "safety.mode"),
    ("seed-negative", wire(seed=-1), "invalidSeed", "seed"),
    ("seed-2^63", wire(seed=2**63), "invalidSeed", "seed"),
    ("fps-25", wire(fps=25), "invalidFps", "fps"),
    ("fps-3@1-i2v-30", wire("klingai:3@1", fps=30, inputs=frames(IMG)), "invalidFps", "fps"),
    ("task-uuid", wire(taskUUID="job-1"), "invalidTaskUUID", "taskUUID"),
    ("task-uuid-missing", wire(taskUUID=...), "missingTaskUUID", "taskUUID"),
    ("task-type", wire(taskType="imageInference"), "unsupportedTaskType", "taskType"),
    ("include-cost-string", wire(includeCost="yes"), "invalidIncludeCost", "includeCost"),
    (
        "both-frame-shapes",
        wire(inputs=frames(IMG), frameImages=[{"inputImage": IMG}]),
        "invalidFrameImages",
        "frameImages",
    ),
    # camera control
    (
        "camera-type",
        wire(providerSettings={"klingai": {"cameraControl": {"type": "spin"}}}),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.type",
    ),
    (
        "camera-0-axes",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"zoom": 0}}}
            }
        ),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config",
    ),
    (
        "camera-2-axes",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"zoom": 5, "pan": 1}}}
            }
        ),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config",
    ),
    (
        "camera-11",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"zoom": 11}}}
            }
        ),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config.zoom",
    ),
    (
        "camera-axis",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"spin": 1}}}
            }
        ),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config",
    ),
    (
        "camera-no-config",
        wire(providerSettings={"klingai": {"cameraControl": {"type": "simple"}}}),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config",
    ),
    (
        "camera-preset-config",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "down_back", "config": {"zoom": 5}}}
            }
        ),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl.config",
    ),
    (
        "camera-extra-key",
        wire(providerSettings={"klingai": {"cameraControl": {"type": "down_back", "speed": 1}}}),
        "unsupportedParameter",
        "providerSettings.klingai.cameraControl.speed",
    ),
    (
        "camera-not-object",
        wire(providerSettings={"klingai": {"cameraControl": "zoom"}}),
        "invalidCameraControl",
        "providerSettings.klingai.cameraControl",
    ),
    (
        "sound-string",
        wire(providerSettings={"klingai": {"sound": "on"}}),
        "invalidSound",
        "providerSettings.klingai.sound",
    ),
    (
        "keep-sound-on-1@1",
        wire(providerSettings={"klingai": {"keepOriginalSound": True}}),
        "unsupportedParameter",
        "providerSettings.klingai.keepOriginalSound",
    ),
    # O1
    (
        "o1-8-refs",
        wire(O1, inputs={"referenceImages": [IMG] * 8}),
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
    (
        "o1-edit-5-refs",
        wire(O1, inputs={"video": VID, "referenceImages": [IMG] * 5}),
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
    (
        "o1-2-ref-videos",
        wire(O1, inputs={"referenceVideos": [VID, VID]}),
        "invalidReferenceVideos",
        "inputs.referenceVideos",
    ),
    (
        "o1-r2v-duration-2",
        wire(O1, duration=2, inputs={"referenceImages": [IMG]}),
        "invalidDuration",
        "duration",
    ),
    (
        "o1-r2v-duration-11",
        wire(O1, duration=11, inputs={"referenceImages": [IMG]}),
        "invalidDuration",
        "duration",
    ),
    (
        "o1-frames-duration-7",
        wire(O1, duration=7, inputs=frames(IMG)),
        "invalidDuration",
        "duration",
    ),
    (
        "o1-frames-and-refs",
        wire(O1, inputs={"frameImages": [IMG], "referenceImages": [IMG]}),
        "unsupportedInputCombination",
        "inputs.referenceImages",
    ),
    (
        "o1-video-and-frames",
        wire(O1, inputs={"frameImages": [IMG], "video": VID}),
        "unsupportedInputCombination",
        "inputs.video",
    ),
    (
        "o1-video-and-ref-videos",
        wire(O1, inputs={"referenceVideos": [VID], "video": VID}),
        "unsupportedInputCombination",
        "inputs.video",
    ),
    (
        "o1-edit-width",
        wire(O1, width=1280, height=720, inputs={"video": VID}),
        "unsupportedDimensions",
        "width",
    ),
    (
        "o1-edit-duration",
        wire(O1, duration=5, inputs={"video": VID}),
        "unsupportedDuration",
        "duration",
    ),
    (
        "o1-prompt-required-i2v",
        wire(O1, positivePrompt=..., inputs=frames(IMG)),
        "missingPositivePrompt",
        "positivePrompt",
    ),
    ("o1-size-1080p", wire(O1, width=1920, height=1080), "invalidDimensions", "width"),
    (
        "o1-keep-sound-no-video",
        wire(O1, providerSettings={"klingai": {"keepOriginalSound": True}}),
        "invalidKeepOriginalSound",
        "providerSettings.klingai.keepOriginalSound",
    ),
    (
        "o1-sound",
        wire(O1, providerSettings={"klingai": {"sound": True}}),
        "unsupportedParameter",
        "providerSettings.klingai.sound",
    ),
    (
        "o1-camera",
        wire(O1, providerSettings={"klingai": {"cameraControl": {"type": "down_back"}}}),
        "unsupportedParameter",
        "providerSettings.klingai.cameraControl",
    ),
    (
        "refs-on-1@1",
        wire(inputs={"referenceImages": [IMG]}),
        "unsupportedWorkflow",
        "inputs.referenceImages",
    ),
    ("video-on-1@1", wire(inputs={"video": VID}), "unsupportedWorkflow", "inputs.video"),
    (
        "empty-ref",
        wire(O1, inputs={"referenceImages": [""]}),
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
    (
        "ref-not-string",
        wire(O1, inputs={"referenceImages": [1]}),
        "invalidReferenceImages",
        "inputs.referenceImages",
    ),
]


@pytest.mark.parametrize(
    ("task", "code", "parameter"), [o[1:] for o in OUTSIDE], ids=[o[0] for o in OUTSIDE]
)
def test_just_outside(task: dict[str, Any], code: str, parameter: str | None) -> None:
    err = refused(task)
    assert isinstance(err, ValidationError)
    assert (err.code, err.parameter) == (code, parameter), err.message
    assert err.message and len(err.message) < 800
    assert err.code.startswith(("invalid", "missing", "unsupported")) or err.code.endswith(
        "NotFound"
    )
    expected_kind = ErrorKind.NOT_FOUND if code.endswith("NotFound") else ErrorKind.INVALID
    assert err.kind is expected_kind


INSIDE: list[tuple[str, dict[str, Any]]] = [
    ("prompt-2", wire(positivePrompt="ab")),
    ("prompt-2500", wire(positivePrompt="a" * 2500)),
    ("negative-2", wire(negativePrompt="no")),
    ("negative-2500", wire(negativePrompt="n" * 2500)),
    ("cfg-0", wire(CFGScale=0)),
    ("cfg-1", wire(CFGScale=1)),
    ("cfg-0.51", wire(CFGScale=0.51)),
    ("cfg-0.07", wire(CFGScale=0.07)),
    ("duration-5", wire(duration=5)),
    ("duration-10.0", wire(duration=10.0)),
    ("size-pair", wire(width=720, height=1280)),
    ("1080p-model", i2v("klingai:2@2", width=1920, height=1080)),
    ("first-frame-2@1", wire("klingai:2@1", inputs=frames({"image": IMG, "frame": 0}))),
    ("no-prompt-i2v", i2v("klingai:1@1", positivePrompt=...)),
    ("6@0-no-size", i2v("klingai:6@0")),
    ("flf-5@2", wire("klingai:5@2", inputs=frames(IMG, IMG))),
    ("flf-mixed", wire("klingai:5@2", inputs=frames({"image": IMG, "frame": "last"}, IMG))),
    ("number-results-1", wire(numberResults=1)),
    ("number-results-4", wire(numberResults=4)),
    ("quality-20", wire(outputQuality=20)),
    ("quality-99", wire(outputQuality=99)),
    ("ttl-60", wire(ttl=60)),
    ("seed-0", wire(seed=0)),
    ("seed-max", wire(seed=2**63 - 1)),
    ("fps-30", wire(fps=30)),
    ("fps-3@1-i2v-24", wire("klingai:3@1", fps=24, inputs=frames(IMG))),
    (
        "camera-simple",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"zoom": 10, "pan": 0}}}
            }
        ),
    ),
    (
        "camera-simple-min",
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"tilt": -10}}}
            }
        ),
    ),
    (
        "camera-preset",
        wire(providerSettings={"klingai": {"cameraControl": {"type": "forward_up"}}}),
    ),
    (
        "camera-preset-empty-config",
        wire(providerSettings={"klingai": {"cameraControl": {"type": "forward_up", "config": {}}}}),
    ),
    ("sound", wire(providerSettings={"klingai": {"sound": True}})),
    ("nulls-are-absent", wire(negativePrompt=None, seed=None, inputs=None)),
    ("o1-7-refs", wire(O1, inputs={"referenceImages": [IMG] * 7})),
    ("o1-edit-4-refs", wire(O1, inputs={"video": VID, "referenceImages": [IMG] * 4})),
    ("o1-r2v-3s", wire(O1, duration=3, inputs={"referenceImages": [IMG]})),
    ("o1-r2v-10s", wire(O1, duration=10, inputs={"referenceVideos": [VID]})),
    ("o1-refs-and-videos", wire(O1, inputs={"referenceImages": [IMG], "referenceVideos": [VID]})),
    ("o1-frames-with-size", wire(O1, width=960, height=960, inputs=frames(IMG))),
    (
        "o1-keep-sound-ref-video",
        wire(
            O1,
            inputs={"referenceVideos": [VID]},
            providerSettings={"klingai": {"keepOriginalSound": True}},
        ),
    ),
    (
        "legacy-shape",
        wire(
            "klingai:2@1", frameImages=[{"inputImage": IMG, "frame": "first"}], positivePrompt=...
        ),
    ),
    ("legacy-refs", wire(O1, referenceImages=[IMG])),
    ("case-insensitive", wire(outputFormat="webm", outputType="dataURI", deliveryMethod="sync")),
]


@pytest.mark.parametrize("task", [t for _, t in INSIDE], ids=[i for i, _ in INSIDE])
def test_just_inside(task: dict[str, Any]) -> None:
    spec = run(task)
    assert spec.seeds and spec.fps > 0


def test_defaults() -> None:
    spec = run(wire())
    assert spec.workflow is Workflow.T2V
    assert (spec.width, spec.height, spec.duration, spec.fps) == (1280, 720, 5.0, 30)
    assert spec.cfg_scale == 0.5 and spec.output_quality == 95
    assert spec.output_type is OutputType.URL and spec.output_format is OutputFormat.MP4
    assert spec.delivery.method is DeliveryMethod.ASYNC and spec.ttl is None
    assert len(spec.seeds) == 1 and 1 <= spec.seeds[0] < 2**31
    assert spec.num_frames == 150
    assert (run(wire("klingai:5@3")).width, run(wire("klingai:5@3")).height) == (1920, 1080)


def test_fps_per_workflow() -> None:
    assert run(wire("klingai:3@1")).fps == 30
    assert run(i2v("klingai:3@1")).fps == 24
    assert run(wire(O1)).fps == 24


def test_seeds_derive_from_first() -> None:
    spec = run(wire(seed=41, numberResults=4))
    assert spec.seeds == [41, 42, 43, 44]
    assert run(wire(seed=2**63 - 1, numberResults=2)).seeds == [2**63 - 1, 0]
    random = run(wire(numberResults=3)).seeds
    assert len(set(random)) == 3


def test_frame_distribution() -> None:
    spec = run(wire("klingai:5@2", inputs=frames("a", "b")))
    assert spec.workflow is Workflow.FLF2V
    assert (spec.first_frame(), spec.last_frame()) == ("a", "b")
    spec = run(wire("klingai:5@2", inputs=frames({"image": "b", "frame": "last"}, "a")))
    assert (spec.first_frame(), spec.last_frame()) == ("a", "b")
    spec = run(wire("klingai:5@2", frameImages=[{"inputImage": "a", "frame": 0}]))
    assert spec.workflow is Workflow.I2V and spec.frame_images[0].position is FramePosition.FIRST


def test_camera_normalized() -> None:
    spec = run(
        wire(
            providerSettings={
                "klingai": {"cameraControl": {"type": "simple", "config": {"zoom": -3, "pan": 0}}}
            }
        )
    )
    assert spec.camera is not None
    assert (spec.camera.type, spec.camera.config) == ("simple", {"zoom": -3.0})


def test_o1_workflows_and_unresolved() -> None:
    assert run(wire(O1)).workflow is Workflow.T2V
    assert run(wire(O1, inputs={"referenceVideos": [VID]})).workflow is Workflow.R2V
    edit = run(wire(O1, inputs={"video": VID}))
    assert edit.workflow is Workflow.V2V and edit.input_video == VID
    assert (edit.width, edit.height, edit.duration) == (None, None, None)
    turbo = run(i2v("klingai:6@0"))
    assert (turbo.width, turbo.height, turbo.duration) == (None, None, 5.0)


def test_safety_and_delivery() -> None:
    spec = run(
        wire(
            safety={"checkContent": True},
            webhookURL="https://hooks.example/x",
            uploadEndpoint="http://up.example/put",
            includeCost=True,
            ttl=3600,
        )
    )
    assert (spec.safety.check_content, spec.safety.mode) == (True, "fast")
    assert spec.delivery.webhook_url == "https://hooks.example/x" and spec.delivery.include_cost
    assert spec.ttl == 3600
    spec = run(wire(safety={"mode": "full"}))
    assert (spec.safety.check_content, spec.safety.mode) == (True, "full")


def test_messages_name_value_and_allowed() -> None:
    err = refused(wire(duration=7))
    assert "7" in err.message and "5, 10" in err.message and err.allowed_values == [5, 10]
    err = refused(wire(width=1920, height=1080))
    assert "1920x1080" in err.message and err.allowed_values == ["1280x720", "720x720", "720x1280"]
    err = refused(wire("klingai:2@1", inputs=frames(IMG, IMG)))
    assert err.allowed_values == ["first"] and "klingai:5@2" in err.message
    err = refused(wire(numberResults=9))
    assert err.allowed_values == [1, 2, 3, 4]
