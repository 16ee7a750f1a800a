"""reelserve.api.m2v"""
