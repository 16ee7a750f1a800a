"""reelserve.engines.diffusers"""
