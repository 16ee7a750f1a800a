"""Runware wire parsing: both input shapes, shorthands, options, unknown keys, type errors."""

from __future__ import annotations

import uuid

import pytest
from catalog_helpers import IMG, O1, wire

from reelserve.api.runware.schema import parse_video_inference
from reelserve.errors import ValidationError
from reelserve.tasks import FrameImageInput


def test_every_option_mapped() -> None:
    task = wire(
        O1,
        negativePrompt="blur",
        width=1280,
        height=720,
        duration=5,
        fps=24,
        CFGScale=0.3,
        seed=7,
        numberResults=2,
        outputType="URL",
        outputFormat="MOV",
        outputQuality=80,
        webhookURL="https://h.example/w",
        deliveryMethod="sync",
        uploadEndpoint="https://u.example/p",
        safety={"checkContent": True, "mode": "full"},
        ttl=120,
        includeCost=True,
        inputs={"referenceVideos": ["v1"], "referenceImages": ["r1"]},
        providerSettings={
            "klingai": {
                "keepOriginalSound": True,
                "sound": False,
                "cameraControl": {"type": "down_back"},
            }
        },
    )
    req = parse_video_inference(task)
    assert req.task_uuid == task["taskUUID"] and req.model == O1
    assert (req.width, req.height, req.duration, req.fps, req.cfg_scale) == (
        1280,
        720,
        5.0,
        24,
        0.3,
    )
    assert (req.seed, req.number_results, req.negative_prompt) == (7, 2, "blur")
    assert (req.output_type, req.output_format, req.output_quality) == ("URL", "MOV", 80)
    assert (req.webhook_url, req.upload_endpoint, req.delivery_method, req.ttl) == (
        "https://h.example/w",
        "https://u.example/p",
        "sync",
        120,
    )
    assert req.include_cost and req.safety_check_content and req.safety_mode == "full"
    assert (req.reference_videos, req.reference_images) == (["v1"], ["r1"])
    assert (req.keep_original_sound, req.sound) == (True, False)
    assert req.camera_control == {"type": "down_back"}
    assert req.unsupported == []


def test_current_and_legacy_shapes() -> None:
    current = parse_video_inference(
        wire(inputs={"frameImages": ["a", {"image": "b", "frame": "last"}], "video": "v"})
    )
    assert current.frame_images == [
        FrameImageInput(image="a"),
        FrameImageInput(image="b", frame="last"),
    ]
    assert current.video == "v"
    legacy = parse_video_inference(
        wire(frameImages=[{"inputImage": "a", "frame": 0}, "b"], referenceImages=["r"])
    )
    assert legacy.frame_images == [FrameImageInput(image="a", frame=0), FrameImageInput(image="b")]
    assert legacy.reference_images == ["r"]
    # inputImage inside the current shape too (some clients mix them)
    mixed = parse_video_inference(wire(inputs={"frameImages": [{"inputImage": "a"}]}))
    assert mixed.frame_images == [FrameImageInput(image="a")]


def test_unknown_keys_collected_as_dotted_paths() -> None:
    req = parse_video_inference(
        wire(
            steps=3,
            inputs={"audio": "x", "frameImages": [{"image": IMG, "weight": 1}]},
            providerSettings={"klingai": {"mode": "pro"}, "openai": {}},
            safety={"level": 2},
            nothing=None,
        )
    )
    assert req.unsupported == [
        "steps",
        "inputs.audio",
        "inputs.frameImages.weight",
        "providerSettings.openai",
        "providerSettings.klingai.mode",
        "safety.level",
    ]


@pytest.mark.parametrize(
    ("task", "code", "parameter"),
    [
        ([1, 2], "invalidTask", None),
        (wire(width="1280"), "invalidWidth", "width"),
        (wire(seed=1.5), "invalidSeed", "seed"),
        (wire(numberResults=True), "invalidNumberResults", "numberResults"),
        (wire(inputs=[]), "invalidInputs", "inputs"),
        (wire(inputs={"frameImages": "a"}), "invalidFrameImages", "inputs.frameImages"),
        (
            wire(inputs={"frameImages": [{"image": 5}]}),
            "invalidFrameImages",
            "inputs.frameImages.image",
        ),
        (
            wire(inputs={"frameImages": [{"image": "a", "inputImage": "b"}]}),
            "invalidFrameImages",
            "inputs.frameImages.image",
        ),
        (wire(inputs={"video": ["v"]}), "invalidVideo", "inputs.video"),
        (wire(providerSettings={"klingai": []}), "invalidKlingai", "providerSettings.klingai"),
        (
            wire(providerSettings={"klingai": {"cameraControl": []}}),
            "invalidCameraControl",
            "providerSettings.klingai.cameraControl",
        ),
        (wire(safety={"checkContent": "yes"}), "invalidCheckContent", "safety.checkContent"),
        (
            wire(referenceImages=["a"], inputs={"referenceImages": ["b"]}),
            "invalidReferenceImages",
            "referenceImages",
        ),
        (wire(taskUUID=123), "invalidTaskUUID", "taskUUID"),
    ],
)
def test_type_errors_name_the_parameter(task: object, code: str, parameter: str | None) -> None:
    with pytest.raises(ValidationError) as info:
        parse_video_inference(task)  # type: ignore[arg-type]
    assert (info.value.code, info.value.parameter) == (code, parameter), info.value.message


def test_uuid_accepted_in_any_case() -> None:
    value = str(uuid.uuid4()).upper()
    assert parse_video_inference(wire(taskUUID=value)).task_uuid == value
