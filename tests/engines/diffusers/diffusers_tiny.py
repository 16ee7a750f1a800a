"""Tiny random diffusers pipelines of every kind, built offline from small configs.

Shapes follow diffusers' own fast tests (2-layer transformers, 3-channel VAEs); the T5/UMT5
tokenizer is a Unigram model trained here with the ``tokenizers`` library, so nothing is
downloaded. Each builder saves a complete diffusers folder with ``save_pretrained``, which the tests
then load through the real profile-loading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEXT_DIM = 32
KINDS = (
    "wan-t2v", "wan-i2v", "wan-flf2v", "wan22-i2v", "wan22-ti2v", "wan-vace", "ltx-condition", "ltx2"
)

_CORPUS = [
    "a cat dances on the moon",
    "a red car drives fast through the city at night",
    "waves crash on a rocky shore under a grey sky",
    "a lighthouse on basalt cliffs, windmill, fog, harbor, lanterns",
]


def unigram_tokenizer(style: str, corpus: Sequence[str], vocab_size: int) -> Any:
    """A fast tokenizer of ``style`` trained here on ``corpus`` (offline; ids < ``vocab_size``).

    ``"t5"``: T5/UMT5-style, ``</s>`` appended (Wan, LTX-Video); ``"gemma"``: Gemma-style,
    ``<bos>`` prepended (LTX-2). The benchmarks build their random full-size models with it too.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import GemmaTokenizerFast, T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] if style == "t5" else ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=min(vocab_size, 200), special_tokens=specials,
                                      unk_token="<unk>")
    tok.train_from_iterator(list(corpus) * 10, trainer)
    if style == "t5":
        eos = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
        return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                               unk_token="<unk>", extra_ids=0)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return GemmaTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                              bos_token="<bos>", unk_token="<unk>")


def tiny_tokenizer() -> Any:
    """A T5-style fast tokenizer (Unigram, ``</s>`` appended) trained on a few sentences."""
    return unigram_tokenizer("t5", _CORPUS, 120)


def tiny_gemma_tokenizer() -> Any:
    """A Gemma-style fast tokenizer (Unigram, ``<bos>`` prepended) trained on a few sentences."""
    return unigram_tokenizer("gemma", _CORPUS, 120)


def build_ltx2() -> Any:
    """A tiny LTX-2 pipeline: audio-video transformer, video VAE, audio VAE, vocoder, Gemma 3.

    Shaped like diffusers' own LTX-2 fast tests, except that the Gemma 3 text encoder is built
    from a small config and the tokenizer is trained here (nothing is downloaded), and the vocoder
    upsamples by the mel hop (10 x 4 x 4 = 160 at 16 kHz), so its audio lasts as long as the video
    does, as the real 24 kHz vocoder's does.
    """
    import diffusers
    import torch
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = tiny_gemma_tokenizer()
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config={
                "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                "head_dim": 8, "max_position_embeddings": 2048, "sliding_window": 64,
            },
            vision_config={
                "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
            },
            mm_tokens_per_image=4,
        )
    ).eval()
    hidden = text_encoder.config.text_config.hidden_size
    transformer = diffusers.LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=hidden,
        rope_double_precision=False, rope_type="split",
    )
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=text_encoder.config.text_config.num_hidden_layers + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_theta=10000.0, rope_double_precision=False,
        causal_temporal_positioning=False, rope_type="split",
    )
    vae = diffusers.AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
        decoder_block_out_channels=(8,), layers_per_block=(1,), decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False), downsample_type=("spatial",), upsample_residual=(False,),
        upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    audio_vae = diffusers.AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None,
        in_channels=2, resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height",
        dropout=0.0, mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160,
        is_causal=True, mel_bins=8,
    )
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32,
        out_channels=2, upsample_kernel_sizes=[20, 8, 8], upsample_factors=[10, 4, 4],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    )
    return diffusers.LTX2Pipeline(
        transformer=transformer, vae=vae, audio_vae=audio_vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
        tokenizer=tokenizer, connectors=connectors, vocoder=vocoder,
    )


def _umt5(vocab: int) -> Any:
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8,
    )
    return UMT5EncoderModel(config).eval()


def _t5(vocab: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8,
    )
    return T5EncoderModel(config).eval()


def _wan_vae(z48: bool = False) -> Any:
    from diffusers import AutoencoderKLWan

    if z48:
        return AutoencoderKLWan(
            base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
        )
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def _wan_transformer(in_channels: int, out_channels: int = 16, **extra: Any) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra,
    )


def _scheduler() -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def build_pipeline(kind: str) -> Any:
    """A tiny random pipeline of ``kind`` (seeded, so every build is identical)."""
    import diffusers
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    if kind == "ltx2":
        return build_ltx2()
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    if kind == "ltx-condition":
        transformer = diffusers.LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
            attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=TEXT_DIM,
        )
        vae = diffusers.AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
            decoder_causal=False,
        )
        vae.use_framewise_encoding = False
        vae.use_framewise_decoding = False
        return diffusers.LTXConditionPipeline(
            transformer=transformer, vae=vae, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
            text_encoder=_t5(vocab), tokenizer=tokenizer,
        )
    text = {"text_encoder": _umt5(vocab), "tokenizer": tokenizer, "scheduler": _scheduler()}
    if kind == "wan-t2v":
        return diffusers.WanPipeline(transformer=_wan_transformer(16), vae=_wan_vae(), **text)
    if kind in ("wan-i2v", "wan-flf2v"):
        encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, intermediate_size=16, patch_size=1,
            )
        )
        extra: dict[str, Any] = {"image_dim": 4}
        if kind == "wan-flf2v":
            # FLF2V adds learned positions over the two images' CLIP tokens (2 x (32*32 + 1)).
            extra["pos_embed_seq_len"] = 2 * (32 * 32 + 1)
        return diffusers.WanImageToVideoPipeline(
            transformer=_wan_transformer(36, **extra), vae=_wan_vae(), image_encoder=encoder,
            image_processor=CLIPImageProcessor(crop_size=32, size=32), **text,
        )
    if kind == "wan22-i2v":
        return diffusers.WanImageToVideoPipeline(
            transformer=_wan_transformer(36), transformer_2=_wan_transformer(36), vae=_wan_vae(),
            image_encoder=None, image_processor=None, boundary_ratio=0.875, **text,
        )
    if kind == "wan22-ti2v":
        return diffusers.WanPipeline(
            transformer=_wan_transformer(48, 48), vae=_wan_vae(z48=True), expand_timesteps=True, **text
        )
    if kind == "wan-vace":
        transformer = diffusers.WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
            out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=3,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
            vace_layers=[0, 2], vace_in_channels=96,
        )
        return diffusers.WanVACEPipeline(transformer=transformer, vae=_wan_vae(), **text)
    raise ValueError(f"unknown kind {kind!r}")


def save_tiny(kind: str, folder: Path) -> Path:
    """Build the tiny ``kind`` pipeline and save it as a diffusers folder; returns ``folder``."""
    pipe = build_pipeline(kind)
    pipe.save_pretrained(folder)
    return folder


#: The tiny profile of each kind: small native size and rate so a 5 s clip is ~20 frames.
TINY_NATIVE = {kind: ("32x32", 4) for kind in KINDS}


def profile_toml(entries: list[tuple[str, str, str, Path | str, dict[str, Any]]]) -> str:
    """TOML text for ``(model, workflow, pipeline, weights, extra)`` entries."""
    lines: list[str] = []
    for model, workflow, pipeline, weights, extra in entries:
        size, fps = TINY_NATIVE.get(pipeline, ("32x32", 4))
        body = {"pipeline": pipeline, "weights": str(weights), "steps": 2, "guidance": 3.0,
                "native_size": size, "native_fps": fps, **extra}
        lines.append(f'[models."{model}".{workflow}]')
        for key, value in body.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f"{key} = {value!r}".replace("'", '"'))
        lines.append("")
    return "\n".join(lines)


def tiny_spec(workflow: str, prompt: str, seed: int, **update: Any) -> Any:
    """A small GenerationSpec for ``workflow`` (frame images named ``first``/``last`` where the
    workflow takes them), 64x48 at 8 fps for 2 s."""
    from reelserve.tasks import FrameImage, FramePosition, GenerationSpec, Workflow

    wf = Workflow(workflow)
    frames = []
    if wf in (Workflow.I2V, Workflow.FLF2V):
        frames.append(FrameImage(image="first", position=FramePosition.FIRST))
    if wf is Workflow.FLF2V:
        frames.append(FrameImage(image="last", position=FramePosition.LAST))
    base: dict[str, Any] = dict(
        task_uuid="t", model="klingai:1@1", workflow=wf, width=64, height=48, fps=8,
        duration=2.0, positive_prompt=prompt, seeds=[seed], frame_images=frames,
    )
    return GenerationSpec(**{**base, **update})
