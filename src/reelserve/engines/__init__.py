"""reelserve.engines"""
