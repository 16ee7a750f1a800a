"""reelserve.api.runware: the Runware task protocol (REST and WebSocket).

``schema.parse_video_inference`` turns a ``videoInference`` task into a wire-neutral
:class:`reelserve.tasks.TaskRequest`; rendering results back lives in the same module.
"""
