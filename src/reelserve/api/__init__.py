"""reelserve.api"""
