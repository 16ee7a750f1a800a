"""reelserve.client"""
