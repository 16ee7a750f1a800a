"""reelserve.media"""
