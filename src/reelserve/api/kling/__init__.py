"""reelserve.api.kling"""
